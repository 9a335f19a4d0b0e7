"""The worker on the real broker: scenario end to end, dead letters, counts, shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from streamheal.config import Config
from streamheal.events import InvalidEvent, Reason
from streamheal.kafka import records
from streamheal.producer import EventProducer
from streamheal.scenarios import breast_cancer
from tests.conftest import read_all, read_topic, running_worker, wait_for

pytestmark = pytest.mark.kafka

BAD_RECORDS: list[tuple[bytes, Reason]] = [
    (b"this is not json", Reason.NOT_JSON),
    (b'"just a string"', Reason.NOT_AN_OBJECT),
    (b'{"ts": 1.0, "features": {"x": 1}}', Reason.MISSING_ID),
    (b'{"id": 42, "ts": 1.0, "features": {"x": 1}}', Reason.BAD_ID),
    (b'{"id": "bad-ts", "features": {"x": 1}}', Reason.BAD_TS),
    (b'{"id": "bad-f", "ts": 1.0, "features": [1, 2, 3]}', Reason.BAD_FEATURES),
    (b'{"id": "bad-v", "ts": 1.0, "features": {"x": [1]}}', Reason.BAD_FEATURE_VALUE),
    (b'{"id": "bad-l", "ts": 1.0, "features": {"x": 1}, "label": {"a": 1}}', Reason.BAD_LABEL),
    (b'{"id": "empty", "ts": 1.0}', Reason.NO_FEATURES_OR_LABEL),
    (b'{"id": "ghost", "ts": 1.0, "label": 1}', Reason.UNKNOWN_LABEL_ID),
    (b'{"id": "big", "ts": 1.0, "features": {"x": "' + b"y" * 70000 + b'"}}', Reason.TOO_LARGE),
]


def produce_scenario(config: Config, events: int, label_delay: int) -> list[dict]:
    scenario = breast_cancer(events=events, label_delay=label_delay, seed=5)
    with EventProducer(config.kafka.bootstrap_servers, config.topics.events) as producer:
        for event in scenario.events:
            producer.send_event(event)
    return scenario.events


def test_worker_scores_learns_and_dead_letters_a_scenario_end_to_end(config: Config) -> None:
    events = produce_scenario(config, events=1200, label_delay=30)
    with EventProducer(config.kafka.bootstrap_servers, config.topics.events) as producer:
        for raw, _ in BAD_RECORDS:
            producer.send_raw(b"bad", raw)
    feature_ids = {e["id"] for e in events if "features" in e}
    bootstrap = config.kafka.bootstrap_servers

    with running_worker(config) as worker:
        predictions = read_topic(
            bootstrap, config.topics.predictions, lambda m: len(m) >= len(feature_ids)
        )
        dead = read_topic(bootstrap, config.topics.dlq, lambda m: len(m) >= len(BAD_RECORDS))
        wait_for(lambda: worker.stats.consumed == len(events) + len(BAD_RECORDS), what="consumed")
        counters = [engine.counters for engine in dict(worker.engines).values()]

    values = [orjson.loads(m.value()) for m in predictions]
    assert {v["id"] for v in values} == feature_ids
    assert all(m.key().decode() == v["id"] for m, v in zip(predictions, values, strict=True))
    assert all(v["prediction"] in (0, 1) and v["model_version"] == 1 for v in values)

    by_value = {m.value(): records.header_map(m.headers()) for m in dead}
    for raw, reason in BAD_RECORDS:
        headers = by_value[raw]  # the original bytes, untouched
        assert headers[records.DLQ_REASON] == reason.value
        assert headers[records.DLQ_TOPIC] == config.topics.events
        assert int(headers[records.DLQ_OFFSET]) >= 0
    # Nothing lost: every consumed record was scored, joined as a label, or dead-lettered.
    dead_lettered = sum(c.dead_lettered_total for c in counters)
    scored = sum(c.feature_events for c in counters)
    labels_joined = sum(c.labels_joined for c in counters)
    assert sum(c.records for c in counters) == worker.stats.consumed
    assert scored + labels_joined + dead_lettered == worker.stats.consumed
    assert dead_lettered == worker.stats.dead_lettered == len(BAD_RECORDS)
    assert sum(c.labeled for c in counters) == len(feature_ids)
    accuracy = sum(c.correct for c in counters) / len(feature_ids)
    assert accuracy > 0.85


def test_labels_land_in_the_partition_of_their_features(config: Config) -> None:
    events = produce_scenario(config, events=200, label_delay=20)
    messages = read_topic(
        config.kafka.bootstrap_servers, config.topics.events, lambda m: len(m) >= len(events)
    )
    partitions: dict[str, set[int]] = {}
    for message in messages:
        partitions.setdefault(message.key().decode(), set()).add(message.partition())
    assert all(len(p) == 1 for p in partitions.values())
    assert len({p for ps in partitions.values() for p in ps}) == 2


def test_the_producer_helper_refuses_an_invalid_event(config: Config) -> None:
    with EventProducer(config.kafka.bootstrap_servers, config.topics.events) as producer:
        with pytest.raises(InvalidEvent) as err:
            producer.send("a", features={"x": [1, 2]})
        assert err.value.reason == Reason.BAD_FEATURE_VALUE
        producer.send("a", features={"x": float("nan")})  # NaN is a missing value: fine
        assert producer.sent == 1


def test_sigterm_mid_stream_then_restart_loses_no_event(config: Config, tmp_path: Path) -> None:
    # A slow model and small batches so that SIGTERM lands while records are still waiting.
    config_file = tmp_path / "worker.toml"
    config_file.write_text(
        f"""
[kafka]
bootstrap_servers = "{config.kafka.bootstrap_servers}"
group_id = "{config.kafka.group_id}"
[topics]
events = "{config.topics.events}"
predictions = "{config.topics.predictions}"
dlq = "{config.topics.dlq}"
alerts = "{config.topics.alerts}"
metrics = "{config.topics.metrics}"
state = "{config.topics.state}"
control = "{config.topics.control}"
partitions = 2
[model]
name = "arf"
params = {{n_models = 5}}
[engine]
batch_size = 50
[registry]
path = "{config.registry.path}"
"""
    )
    events = produce_scenario(config, events=6000, label_delay=0)
    feature_ids = {e["id"] for e in events}
    bootstrap = config.kafka.bootstrap_servers

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "streamheal.cli", "run", "-c", str(config_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    first = start()
    read_topic(bootstrap, config.topics.predictions, lambda m: len(m) >= 200)
    os.kill(first.pid, signal.SIGTERM)
    output, _ = first.communicate(timeout=600)
    assert first.returncode == 0, output
    assert "streamheal worker stopped" in output
    done_by_first = read_all(bootstrap, config.topics.predictions)
    assert len(done_by_first) < len(feature_ids), "the first worker finished: no mid-stream stop"

    second = start()
    try:
        predictions = read_topic(
            bootstrap,
            config.topics.predictions,
            lambda m: {x.key().decode() for x in m} >= feature_ids,
            timeout=120,
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=600)
    counts = Counter(m.key().decode() for m in predictions)
    assert set(counts) == feature_ids  # at-least-once: every event scored, none lost


def test_a_confirmed_drift_reaches_the_alerts_topic_with_its_evidence(config: Config) -> None:
    scenario = breast_cancer(events=6000, drift_at=4000, label_delay=20, seed=8)
    with EventProducer(config.kafka.bootstrap_servers, config.topics.events) as producer:
        for event in scenario.events:
            producer.send_event(event)

    def radius_firing(messages: list) -> list[dict]:
        values = [orjson.loads(m.value()) for m in messages]
        return [
            v
            for v in values
            if v["type"] == "drift" and v["status"] == "firing" and v["feature"] == "mean radius"
        ]

    def openers(messages: list) -> dict[int, dict]:
        return {v["partition"]: v for v in radius_firing(messages) if v["role"] == "opened"}

    with running_worker(config):
        alerts = read_topic(
            config.kafka.bootstrap_servers,
            config.topics.alerts,
            lambda m: len(openers(m)) == 2,
        )
    # Drift records are keyed by signal, so the alerts topic interleaves them in any order:
    # in each input partition the CUSUM opens the episode, and the windowed KS/PSI
    # readings of the same shift confirm that episode.
    opened = openers(alerts)
    for value in opened.values():
        assert value["detector"] == "cusum", value
    for value in radius_firing(alerts):
        assert value["episode"] == opened[value["partition"]]["episode"], value
    record = opened[min(opened)]
    assert record["type"] == "drift" and record["kind"] == "covariate"
    assert record["statistic"] > record["threshold"]
    assert record["confirmed_index"] > record["started_index"] > 0
    assert record["model_version"] == 1 and record["offset"] >= 0
    assert "estimated_accuracy" in record and "realized_accuracy" in record
    keys = {m.key().decode() for m in alerts}
    assert "covariate:feature:mean radius:cusum" in keys
