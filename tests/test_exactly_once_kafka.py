"""Exactly-once and durable state on the real broker (issue 9).

The reference for "what an uninterrupted run does" is the pure Engine fed each partition's
records in offset order: the Engine is deterministic and, in per-event mode, independent
of how batches are cut, so a worker that survives crashes and rebalances must produce
*exactly* the same predictions, alerts, actions and final models.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from streamheal.config import Config
from streamheal.detectors.suite import Drift
from streamheal.engine import Engine, Prediction
from streamheal.events import decode
from streamheal.kafka import records
from streamheal.kafka.checkpoints import CheckpointReader
from streamheal.policy import Action
from streamheal.producer import EventProducer
from streamheal.scenarios import SCENARIOS
from streamheal.state.checkpoint import assemble
from tests.conftest import read_all, wait_for

pytestmark = pytest.mark.kafka


def write_config(config: Config, path: Path, **sections: dict) -> Path:
    topics = config.topics
    lines = [
        "[kafka]",
        f'bootstrap_servers = "{config.kafka.bootstrap_servers}"',
        f'group_id = "{config.kafka.group_id}"',
        "[topics]",
        *(
            f'{n} = "{getattr(topics, n)}"'
            for n in ("events", "predictions", "alerts", "metrics", "dlq", "state", "control")
        ),
        f"partitions = {topics.partitions}",
        "[registry]",
        f'path = "{config.registry.path}"',
        "[worker]",
        "poll_timeout_seconds = 0.2",
        "transaction_timeout_seconds = 20",
    ]
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {orjson.dumps(v).decode()}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def start_worker(config_file: Path, worker_id: str, log: Path, env: dict | None = None):
    return subprocess.Popen(
        [sys.executable, "-m", "streamheal.cli", "run", "-c", str(config_file)],
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "STREAMHEAL_WORKER__ID": worker_id, **(env or {})},
    )


def committed_total(config: Config, partitions: int) -> int:
    consumer = Consumer(
        {"bootstrap.servers": config.kafka.bootstrap_servers, "group.id": config.kafka.group_id}
    )
    try:
        found = consumer.committed(
            [TopicPartition(config.topics.events, p) for p in range(partitions)], timeout=10
        )
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in found)


def reference_run(config: Config, partitions: int) -> tuple[dict[int, Engine], list]:
    """One Engine per partition over that partition's records in offset order."""
    engines = {p: Engine(config) for p in range(partitions)}
    outputs = []
    by_partition: dict[int, list] = {p: [] for p in range(partitions)}
    for message in read_all(config.kafka.bootstrap_servers, config.topics.events, partitions):
        source = records_source(message)
        by_partition[message.partition()].append(
            decode(message.value(), source, config.events.max_bytes, message.key(), config.events)
        )
    for p, items in by_partition.items():
        items.sort(key=lambda r: r.source.offset)
        for i in range(0, len(items), 500):
            outputs += engines[p].process(items[i : i + 500])
    return engines, outputs


def records_source(message):
    from streamheal.events import Source

    return Source(message.topic(), message.partition(), message.offset())


def alert_signature(record: dict) -> tuple:
    """What must match between runs (actions' registry bookkeeping aside)."""
    if record.get("type") == "action":
        return (
            "action",
            record["action"],
            record["index"],
            record["model_version"],
            record["cause"],
            record["partition"],
        )
    return (
        "drift",
        record.get("key"),
        record.get("status"),
        record.get("confirmed_index"),
        record.get("partition"),
    )


def reference_alerts(outputs: list) -> Counter:
    found = Counter()
    for output in outputs:
        if type(output) is Action:
            found[alert_signature(output.to_record())] += 1
        elif type(output) is Drift:
            record = output.to_record()
            record.setdefault("key", output.key)
            found[alert_signature(record)] += 1
    return found


def final_models(config: Config, partitions: int) -> dict[int, Engine]:
    reader = CheckpointReader(config)
    try:
        engines = {}
        for p in range(partitions):
            manifest, chunks = reader.latest(config.topics.events, p, timeout=60)
            engine = Engine(config)
            engine.load_bytes(assemble(manifest, chunks, None))
            engines[p] = engine
        return engines
    finally:
        reader.close()


def probe_rows(scenario_name: str) -> list[dict]:
    scenario = SCENARIOS[scenario_name](events=300, seed=99)
    return [e["features"] for e in scenario.events if e.get("features")][:200]


def test_sigkill_five_times_loses_nothing_duplicates_nothing_and_changes_nothing(
    config: Config, tmp_path: Path
) -> None:
    partitions, events = 2, 50_000
    scenario = SCENARIOS["sea"](events=events, drift_at=25_000, label_delay=200, seed=11)
    with EventProducer(config.kafka.bootstrap_servers, config.topics.events) as producer:
        for event in scenario.events:
            producer.send_event(event)
    total_records = len(scenario.events)
    config_file = write_config(config, tmp_path / "worker.toml")
    log = tmp_path / "worker.log"
    rng = random.Random(5)
    kill_points = sorted(rng.sample(range(total_records // 10, total_records * 9 // 10), 5))
    for point in kill_points:
        worker = start_worker(config_file, "crashy", log)
        try:
            wait_for(
                lambda p=point, w=worker: (
                    committed_total(config, partitions) >= p or w.poll() is not None
                ),
                timeout=600,
                what=f"{point} records committed",
            )
            assert worker.poll() is None, log.read_text()[-3000:]
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=60)
    worker = start_worker(config_file, "crashy", log)
    try:
        wait_for(
            lambda: committed_total(config, partitions) >= total_records,
            timeout=600,
            what="every record committed",
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=120) == 0, log.read_text()[-3000:]

    feature_ids = {e["id"] for e in scenario.events if e.get("features")}
    predictions = read_all(config.kafka.bootstrap_servers, config.topics.predictions)
    counts = Counter(m.key().decode() for m in predictions)
    assert set(counts) == feature_ids and set(counts.values()) == {1}  # 0 lost, 0 twice

    engines, outputs = reference_run(config, partitions)
    expected = {o.id: (o.prediction, o.model_version) for o in outputs if type(o) is Prediction}
    got = {}
    for message in predictions:
        record = orjson.loads(message.value())
        got[record["id"]] = (record["prediction"], record["model_version"])
    assert got == expected  # the same answers as an uninterrupted run, event by event

    dead = read_all(config.kafka.bootstrap_servers, config.topics.dlq)
    reasons = Counter(records.header_map(m.headers())[records.DLQ_REASON] for m in dead)
    expected_reasons = Counter(
        o.reason.value for o in outputs if o.__class__.__name__ == "Rejection"
    )
    assert reasons == expected_reasons  # no unknown_label_id from a lost join buffer

    alerts = [
        orjson.loads(m.value())
        for m in read_all(config.kafka.bootstrap_servers, config.topics.alerts)
    ]
    got_alerts = Counter(
        alert_signature({**a, "key": a.get("key")})
        for a in alerts
        if a.get("type") in ("action", "drift")
    )
    assert got_alerts == reference_alerts(outputs)
    # A partition starts cold only while nothing of it was committed yet (librdkafka may
    # drain one partition's backlog before it fetches the other's); after that, always
    # from its checkpoint: the identical predictions above prove the state came back.
    cold = [a["message"] for a in alerts if a.get("notice") == "cold_start"]
    assert len(cold) >= partitions and all(m.startswith("no checkpoint") for m in cold), cold

    probes = probe_rows("sea")
    for p, engine in final_models(config, partitions).items():
        assert [engine.model.predict_proba_one(x) for x in probes] == [
            engines[p].model.predict_proba_one(x) for x in probes
        ]
