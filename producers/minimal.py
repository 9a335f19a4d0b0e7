"""The smallest useful producer: one feature event now, its label later.

Any language works: key the record by ``id`` and send the JSON of
``src/streamheal/schema/event.schema.json``. This is the Python way with the helper.
"""

from __future__ import annotations

import time

from streamheal.producer import EventProducer

with EventProducer("127.0.0.1:19092") as producer:
    producer.send("order-1", features={"amount": 12.5, "country": "NL", "age": None})
    producer.flush()  # raises DeliveryError if the broker did not take it
    time.sleep(1.0)  # ... the truth becomes known later ...
    producer.send("order-1", label=0)
