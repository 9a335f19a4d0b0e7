"""Throughput through a real broker: the worker against the loop a user would write by hand.

Measured on one pre-produced topic (the 30-feature breast-cancer stream, labels inline,
``topics.partitions`` partitions), each variant reading all of it under a consumer group of
its own, one after the other in the same run:

- ``kafka_eps``: the worker end to end, exactly-once with a checkpoint of every touched
  partition every batch, per-event mode, every detector and the policy on (the defaults);
- ``kafka_alo_eps``: the same, at-least-once;
- ``kafka_core_eps``: at-least-once, detectors and policy off;
- ``kafka_bare_eps``: consume a batch → ``orjson.loads`` → River ``predict_proba_one`` /
  ``learn_one`` → produce the probability → flush → commit.

Rates are wall-clock events per second from the first consumed record to the last
committed one (the broker shares the machine's cores, so CPU time would flatter). The
four variants run in turn, ``rounds`` times over; each ratio is the median of the
per-round ratios, each rate the best round's.
``kafka_two_workers_speedup`` runs ``streamheal run`` as one process and as two processes
in one group on the same topic (twice the records, ``kafka_process_events``), and divides
their rates, each measured from 20% to 90% of the topic committed (after the group
formed); it too is the median over ``rounds``.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streamheal import models
from streamheal.config import Config
from streamheal.dev.bench import bench_events
from streamheal.errors import StreamhealError
from streamheal.kafka.admin import ensure_topics
from streamheal.kafka.connect import admin_settings, committed_offsets
from streamheal.kafka.worker import Worker


class BenchError(StreamhealError, RuntimeError):
    """The broker benchmark could not finish (events lost, a worker died or stalled)."""


_TOPICS = ("events", "predictions", "alerts", "metrics", "dlq", "state", "control")


def run_kafka_bench(
    config: Config, events: int = 30_000, processes: bool = True, rounds: int = 3
) -> dict[str, Any]:
    """The Kafka figures; raises when the broker cannot be reached.

    The four single-process variants run one after the other, ``rounds`` times over: a
    ratio is the median of its per-round ratios (the two sides of a round run seconds
    apart, so a busy stretch of the machine slows both), a rate the best round's.
    """
    bench = _bench_config(config)
    ensure_topics(bench)
    _produce(bench, events)
    quiet = {"progress_interval_seconds": 3600.0, "poll_timeout_seconds": 0.1}
    alo = {"guarantee": "at-least-once", **quiet}
    core = bench.replace(worker=alo, detectors={"enabled": False}, policy={"enabled": False})
    variants: dict[str, Callable[[], float]] = {
        "kafka_eps": lambda: _through_worker(bench.replace(worker=quiet), events),
        "kafka_alo_eps": lambda: _through_worker(bench.replace(worker=alo), events),
        "kafka_core_eps": lambda: _through_worker(core, events),
        "kafka_bare_eps": lambda: _bare_loop(bench, events),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, measure in variants.items():
            rates[name].append(measure())
    figures: dict[str, Any] = {name: max(values) for name, values in rates.items()}
    bare = rates["kafka_bare_eps"]
    figures.update(
        kafka_core_over_bare=_median_ratio(rates["kafka_core_eps"], bare),
        kafka_over_bare=_median_ratio(rates["kafka_eps"], bare),
        kafka_rounds=rounds,
        # The per-round rate of the full worker: `kafka_over_engine` takes its median.
        kafka_eps_median=round(statistics.median(rates["kafka_eps"]), 1),
    )
    if processes:
        # Twice the records for the process runs: a hand-over (join, revoke, restore) costs
        # about a second, which on 30,000 records is a fifth of the two processes' run.
        # One process, then two, `rounds` times over: the speedup is the median of the
        # per-round ratios (single runs gave 1.24 to 2.03 for the same code).
        _produce(bench, events)
        ones, twos = [], []
        for _ in range(rounds):
            ones.append(_through_processes(bench, 2 * events, 1))
            twos.append(_through_processes(bench, 2 * events, 2))
        figures.update(
            kafka_one_process_eps=max(ones),
            kafka_two_processes_eps=max(twos),
            kafka_two_workers_speedup=_median_ratio(twos, ones, digits=2),
            kafka_process_events=2 * events,
        )
    figures.update(
        kafka_events=events,
        kafka_partitions=bench.topics.partitions,
        kafka_batch_size=bench.engine.batch_size,
    )
    return figures


def _median_ratio(side: list[float], base: list[float], digits: int = 3) -> float:
    return round(statistics.median(a / b for a, b in zip(side, base, strict=True)), digits)


def _bench_config(config: Config) -> Config:
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    return config.replace(
        kafka={"group_id": tag},
        topics={name: f"{tag}.{name}" for name in _TOPICS},
        registry={"path": tempfile.mkdtemp(prefix="streamheal-bench-registry-")},
        metrics={"enabled": False},
    )


def _produce(config: Config, count: int) -> None:
    producer = Producer(
        {
            "bootstrap.servers": config.kafka.bootstrap_servers,
            "linger.ms": 20,
            **config.kafka.common,
        }
    )
    for event in bench_events(count):
        record = {"id": event.id, "ts": event.ts, "features": event.features, "label": event.label}
        while True:
            try:
                producer.produce(config.topics.events, orjson.dumps(record), event.id.encode())
                break
            except BufferError:
                producer.poll(0.1)
    if producer.flush(60):
        raise BenchError("bench events not delivered")


def _through_worker(config: Config, total: int) -> float:
    group = f"{config.kafka.group_id}-{uuid.uuid4().hex[:6]}"
    worker = Worker(config.replace(kafka={"group_id": group}, worker={"id": group}))
    failure: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as err:  # reported below, not swallowed
            failure.append(err)

    thread = threading.Thread(target=target, name="bench-worker", daemon=True)
    thread.start()
    try:
        return _rate(lambda: worker.stats.consumed, total, failure)
    finally:
        worker.stop()
        thread.join(120)


def _bare_loop(config: Config, total: int) -> float:
    """What a user writes by hand: no validation, no detectors, no transactions."""
    kafka = config.kafka
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": f"{kafka.group_id}-bare-{uuid.uuid4().hex[:6]}",  # per round
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **kafka.common,
        }
    )
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, **kafka.common})
    consumer.subscribe([config.topics.events])
    model = models.build_model(config.model, seed=config.engine.seed)
    consumed = 0
    started: float | None = None
    first = 0
    try:
        while consumed < total:
            messages = consumer.consume(num_messages=config.engine.batch_size, timeout=1.0)
            if not messages:
                continue
            if started is None:  # from the first batch received, as for the worker
                started, first = time.perf_counter(), len(messages)
            for message in messages:
                event = orjson.loads(message.value())
                proba = model.predict_proba_one(event["features"])
                model.learn_one(event["features"], bool(event["label"]))
                producer.produce(
                    config.topics.predictions,
                    orjson.dumps({"id": event["id"], "p": proba.get(True, 0.0)}),
                    message.key(),
                )
            producer.flush()
            consumer.commit(asynchronous=False)
            consumed += len(messages)
        # The records after the first batch over the time since it arrived (the worker's
        # rule); all of them when the first batch was the whole topic.
        counted = consumed - first if consumed > first else consumed
        return round(counted / (time.perf_counter() - started), 1)
    finally:
        consumer.close()


def _through_processes(config: Config, total: int, count: int) -> float:
    """``streamheal run --workers count`` on the topic, rate read off committed offsets."""
    group = f"{config.kafka.group_id}-p{count}-{uuid.uuid4().hex[:6]}"
    folder = Path(tempfile.mkdtemp(prefix="streamheal-bench-"))
    path = folder / "worker.toml"
    lines = [
        "[kafka]",
        f'bootstrap_servers = "{config.kafka.bootstrap_servers}"',
        f'group_id = "{group}"',
        "[topics]",
        *(f'{n} = "{getattr(config.topics, n)}"' for n in _TOPICS),
        f"partitions = {config.topics.partitions}",
        "[registry]",
        f'path = "{config.registry.path}"',
        "[metrics]",
        "enabled = false",
        "[worker]",
        "poll_timeout_seconds = 0.1",
        "progress_interval_seconds = 3600",
    ]
    path.write_text("\n".join(lines) + "\n")
    log = (folder / "workers.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamheal.cli", "run", "--workers", str(count), "-c", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "STREAMHEAL_WORKER__ID": group},
    )
    probe = Consumer({"bootstrap.servers": config.kafka.bootstrap_servers, "group.id": group})
    partitions = [TopicPartition(config.topics.events, p) for p in range(config.topics.partitions)]

    def committed() -> int:
        return sum(max(tp.offset, 0) for tp in committed_offsets(probe, partitions, timeout=10))

    failure: list[BaseException] = []
    try:
        # From when every process holds partitions (and 20% is committed) to 90%: the joins
        # and the rebalance they cause are start-up, not throughput, and no member idles.
        return _rate(
            committed,
            total,
            failure,
            process,
            between=(0.2, 0.9),
            ready=_formed(config, group, count),
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)
        probe.close()
        log.close()


def _formed(config: Config, group: str, count: int) -> Any:
    """A check that ``group`` has ``count`` members holding partitions (true from then on)."""
    admin = AdminClient(admin_settings(config))
    formed = False

    def check() -> bool:
        nonlocal formed
        if not formed:
            try:
                [future] = admin.describe_consumer_groups([group], request_timeout=5).values()
                members = future.result().members
            except KafkaException:
                return False
            holding = [m for m in members if m.assignment and m.assignment.topic_partitions]
            formed = len(holding) >= count
        return formed

    return check


def _rate(
    progress: Any,
    total: int,
    failure: list[BaseException],
    process: Any = None,
    between: tuple[float, float] = (0.0, 1.0),
    ready: Any = None,
) -> float:
    """Records per second from when ``progress()`` passes ``between[0]`` of ``total`` (the
    first record by default) to when it reaches ``between[1]`` of it. Progress comes in
    steps (a batch commits at once): when one step crosses the whole interval, the rate
    is taken from the first progress instead, or from the start."""
    deadline = time.monotonic() + 900
    start = time.perf_counter()
    marks: list[tuple[float, int]] = []  # (time, done) at the first progress, at `begin`
    begin, end = max(1, int(between[0] * total)), max(1, int(between[1] * total))
    while True:
        if failure:
            raise BenchError(f"bench worker failed: {failure[0]}") from failure[0]
        if process is not None and process.poll() is not None:
            raise BenchError(f"bench workers exited with {process.returncode}")
        done = progress()
        now = time.perf_counter()
        if (not marks and done > 0) or (
            len(marks) == 1 and between[0] > 0 and done >= begin and (ready is None or ready())
        ):
            marks.append((now, done))
        if done >= end:
            for at, first in reversed(marks):
                if done > first and now > at:
                    return round((done - first) / (now - at), 1)
            return round(done / (now - start), 1)
        if time.monotonic() > deadline:
            raise BenchError(f"bench stalled at {done} of {total} records")
        time.sleep(0.02)
