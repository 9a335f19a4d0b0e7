"""The demo's read-back of the alerts topic (needs the real local broker)."""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import Producer

from streamheal.config import Config
from streamheal.dev.demo import read_alerts

pytestmark = pytest.mark.kafka


def test_the_demo_reads_every_alert_record_not_only_the_first(config: Config) -> None:
    producer = Producer({"bootstrap.servers": config.kafka.bootstrap_servers})
    sent = [{"type": "drift", "status": "firing", "key": f"k{i}"} for i in range(5)]
    for i, record in enumerate(sent):
        producer.produce(config.topics.alerts, orjson.dumps(record), partition=i % 2)
    assert producer.flush(30) == 0
    got = read_alerts(config)
    assert sorted(r["key"] for r in got) == [f"k{i}" for i in range(5)]
