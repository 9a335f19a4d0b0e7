"""`streamheal kafka up|down|status`: a second broker on its own ports, started and stopped here."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streamheal.config import LocalKafkaConfig
from streamheal.dev.local_broker import LocalKafka

pytestmark = pytest.mark.kafka


def test_up_is_idempotent_and_down_stops_exactly_the_recorded_broker(tmp_path: Path) -> None:
    shared_jars = Path(LocalKafkaConfig().home).expanduser()
    broker = LocalKafka(LocalKafkaConfig(port=19392, controller_port=19393, home=str(shared_jars)))
    try:
        first = broker.up()
        assert first.running and first.pid is not None
        started = time.monotonic()
        second = broker.up()
        assert second.pid == first.pid  # no second process
        assert time.monotonic() - started < 10
        assert Path(f"/proc/{first.pid}/cmdline").read_bytes().find(b"kafka.Kafka") >= 0
    finally:
        broker.down(purge=True)
    assert not broker.status().running
    assert (
        not Path(f"/proc/{first.pid}").exists()
        or b"kafka.Kafka" not in Path(f"/proc/{first.pid}/cmdline").read_bytes()
    )


def test_cluster_ids_never_start_with_a_dash() -> None:
    from streamheal.dev.local_broker import _cluster_id

    ids = [_cluster_id() for _ in range(5000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
