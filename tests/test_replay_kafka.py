"""Replay from a real topic: the same report as from a file, production offsets untouched."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamheal.config import Config
from streamheal.evaluation import build_report
from streamheal.events import encode
from streamheal.kafka.connect import committed_offsets
from streamheal.producer import EventProducer
from streamheal.replay import file_records, replay, topic_records
from streamheal.scenarios import SCENARIOS
from tests.conftest import read_topic, running_worker, wait_for, without_timing

pytestmark = pytest.mark.kafka


def write_and_produce(config: Config, topic: str, path: Path, events: int) -> int:
    scenario = SCENARIOS["breast-cancer"](events=events, drift_at=events // 2, label_delay=15)
    lines = [encode(e) for e in scenario.events]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    with EventProducer(config.kafka.bootstrap_servers, topic) as producer:
        for event, line in zip(scenario.events, lines, strict=True):
            producer.send_raw(event["id"].encode(), line)
    return len(lines)


def report_of(records, truth=None) -> dict:
    runs, baseline, meta = replay(records, [("default", Config())], progress=False)
    return build_report(runs, baseline, meta, {"kind": "test"}, truth, 1000)


def test_replay_from_a_topic_equals_replay_from_the_same_events_in_a_file(
    config: Config, tmp_path: Path
) -> None:
    topic = f"replay-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": config.kafka.bootstrap_servers})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
    path = tmp_path / "events.jsonl"
    count = write_and_produce(config, topic, path, 6000)

    from_topic = report_of(topic_records(config, topic))
    from_file = report_of(file_records(path))
    assert from_topic["input"]["records"] == from_file["input"]["records"] == count
    assert without_timing(from_topic["configs"]) == without_timing(from_file["configs"])
    assert from_topic["configs"][0]["detections"]  # the shift was seen, at the same offsets

    later = report_of(topic_records(config, topic, from_offset=count - 1000))
    assert later["input"]["records"] == 1000


def test_a_replay_leaves_the_production_group_offsets_untouched(
    config: Config, tmp_path: Path
) -> None:
    count = write_and_produce(config, config.topics.events, tmp_path / "e.jsonl", 3000)
    with running_worker(config) as worker:
        read_topic(
            config.kafka.bootstrap_servers, config.topics.predictions, lambda m: len(m) >= 3000
        )
        wait_for(lambda: worker.stats.consumed == count, what="worker done")
    probe = Consumer(
        {"bootstrap.servers": config.kafka.bootstrap_servers, "group.id": config.kafka.group_id}
    )
    partitions = [TopicPartition(config.topics.events, p) for p in range(2)]
    before = [(tp.partition, tp.offset) for tp in committed_offsets(probe, partitions)]
    assert sum(offset for _, offset in before) == count

    report = report_of(topic_records(config, config.topics.events))  # two partitions, merged
    assert report["input"]["records"] == count
    assert report["configs"][0]["events"] == 3000

    after = [(tp.partition, tp.offset) for tp in committed_offsets(probe, partitions)]
    probe.close()
    assert after == before
    groups = AdminClient({"bootstrap.servers": config.kafka.bootstrap_servers})
    listed = groups.list_consumer_groups(request_timeout=10).result()
    replay_groups = [g.group_id for g in listed.valid if g.group_id.startswith("streamheal-replay")]
    for group in replay_groups:  # assign() without commits leaves no offsets behind
        consumer = Consumer(
            {"bootstrap.servers": config.kafka.bootstrap_servers, "group.id": group}
        )
        assert all(tp.offset < 0 for tp in committed_offsets(consumer, partitions))
        consumer.close()
