"""Development tools, apart from the runtime package: the worker never imports them.

- :mod:`streamheal.dev.local_broker`: a real single-node Kafka for development and tests
  (``streamheal kafka up | down | status``);
- :mod:`streamheal.dev.demo`: the end-to-end demo (``make demo``);
- :mod:`streamheal.dev.bench` and :mod:`streamheal.dev.bench_kafka`: the throughput
  figures of ``streamheal bench``.
"""
