"""Exactly-once and durable state on the real broker (issue 9).

The reference for "what an uninterrupted run does" is the pure Engine fed each partition's
records in offset order: the Engine is deterministic and, in per-event mode, independent
of how batches are cut, so a worker that survives crashes and rebalances must produce
*exactly* the same predictions, alerts, actions and final models.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from uuid import uuid4

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from streamheal.config import Config
from streamheal.detectors.suite import Drift
from streamheal.dev.bench import bench_events
from streamheal.engine import Engine, Prediction
from streamheal.events import Rejection, decode
from streamheal.kafka import records
from streamheal.kafka import worker as worker_module
from streamheal.kafka.admin import ensure_topics
from streamheal.kafka.checkpoints import CheckpointReader, StateUnreadable
from streamheal.kafka.committer import CommitFailed, Committer
from streamheal.kafka.connect import admin_settings, committed_offsets
from streamheal.kafka.records import record_of
from streamheal.kafka.worker import EXIT_KAFKA_FAILURE, Worker, WorkerError
from streamheal.policy import Action
from streamheal.producer import EventProducer
from streamheal.replay import topic_records
from streamheal.scenarios import SCENARIOS
from streamheal.signing import STATE_KEY_ENV, Signer
from streamheal.state.checkpoint import Part, assemble, assemble_parts, encode, stream_name
from tests.conftest import produce, read_all, running_on_thread, running_worker, wait_for

pytestmark = pytest.mark.kafka


def write_config(config: Config, path: Path, **sections: dict) -> Path:
    topics = config.topics
    tables: dict[str, dict] = {
        "kafka": {
            "bootstrap_servers": config.kafka.bootstrap_servers,
            "group_id": config.kafka.group_id,
        },
        "topics": {
            **{
                n: getattr(topics, n)
                for n in ("events", "predictions", "alerts", "metrics", "dlq", "state", "control")
            },
            "partitions": topics.partitions,
        },
        "registry": {"path": config.registry.path},
        "worker": {"poll_timeout_seconds": 0.2, "transaction_timeout_seconds": 20},
    }
    for section, values in sections.items():
        tables.setdefault(section, {}).update(values)
    lines = []
    for section, values in tables.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {orjson.dumps(v).decode()}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def until_committed(config: Config, count: int, workers: list, log: Path) -> None:
    """Wait until ``count`` records are committed; fail at once if a worker died."""

    def done() -> bool:
        for worker in workers:
            if worker is not None and worker.poll() not in (None, 0):
                raise AssertionError(f"a worker exited: {log.read_text()[-3000:]}")
        return committed_total(config, config.topics.partitions) >= count

    wait_for(done, timeout=600, what=f"{count} records committed")


def start_worker(config_file: Path, worker_id: str, log: Path, env: dict | None = None):
    return subprocess.Popen(
        [sys.executable, "-m", "streamheal.cli", "run", "-c", str(config_file)],
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "STREAMHEAL_WORKER__ID": worker_id, **(env or {})},
    )


def stop_worker(worker: subprocess.Popen, log: Path) -> int:
    """SIGTERM, and the exit code. A worker that has not stopped after 10 minutes is
    asked for its threads' stacks (SIGUSR1), killed, and the test fails with them."""
    worker.send_signal(signal.SIGTERM)
    try:
        return worker.wait(timeout=600)
    except subprocess.TimeoutExpired:
        worker.send_signal(signal.SIGUSR1)
        wait_for(lambda: "most recent call first" in log.read_text(), 60, "the stacks")
        worker.kill()
        worker.wait(timeout=600)
        raise AssertionError(f"the worker did not stop: {log.read_text()[-6000:]}") from None


def committed_total(config: Config, partitions: int) -> int:
    consumer = Consumer(
        {"bootstrap.servers": config.kafka.bootstrap_servers, "group.id": config.kafka.group_id}
    )
    try:
        found = committed_offsets(
            consumer, [TopicPartition(config.topics.events, p) for p in range(partitions)]
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
            decode(message.value(), source, key=message.key(), limits=config.events)
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
            found[alert_signature(records.action_record(output))] += 1
        elif type(output) is Drift:
            record = records.drift_record(output)
            record.setdefault("key", output.key)
            found[alert_signature(record)] += 1
    return found


def write_checkpoints(config: Config, partition: int, *checkpoints: list) -> None:
    """Each checkpoint's records into state partition ``partition``, one transaction each
    (as a worker writes them)."""
    producer = Producer(
        {"bootstrap.servers": config.kafka.bootstrap_servers, "transactional.id": f"t-{uuid4()}"}
    )
    producer.init_transactions(30)
    for records_of_one in checkpoints:
        producer.begin_transaction()
        for key, value, headers in records_of_one:
            producer.produce(config.topics.state, value, key, headers=headers, partition=partition)
        producer.commit_transaction(30)


def latest_checkpoint(config: Config, partition: int) -> tuple:
    reader = CheckpointReader(config)
    try:
        return reader.latest(config.topics.events, partition, timeout=60)
    finally:
        reader.close()


def final_models(config: Config, partitions: int) -> dict[int, Engine]:
    reader = CheckpointReader(config)
    try:
        engines = {}
        for p in range(partitions):
            manifest, chunks, parts = reader.latest(config.topics.events, p, timeout=60)
            engine = Engine(config)
            engine.load_bytes(
                assemble(manifest, chunks, None), parts=assemble_parts(manifest, parts, None)
            )
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
            worker.wait(timeout=600)
    # The workers are fast: the last one killed may have committed everything already.
    # This one is stopped once it holds its partitions (its handler is in place), not
    # during its start-up, when SIGTERM ends a process before Python can handle it.
    assigned_before = log.read_text().count("assigned partitions")
    worker = start_worker(config_file, "crashy", log)
    try:
        wait_for(
            lambda: (
                committed_total(config, partitions) >= total_records
                and log.read_text().count("assigned partitions") > assigned_before
            ),
            timeout=600,
            what="every record committed",
        )
    finally:
        assert stop_worker(worker, log) == 0, log.read_text()[-3000:]

    feature_ids = {e["id"] for e in scenario.events if e.get("features")}
    predictions = read_all(config.kafka.bootstrap_servers, config.topics.predictions)
    counts = Counter(m.key().decode() for m in predictions)
    assert set(counts) == feature_ids and set(counts.values()) == {1}  # 0 lost, 0 twice

    engines, outputs = reference_run(config, partitions)
    expected = {o.id: o.prediction for o in outputs if type(o) is Prediction}
    expected_version = {o.id: o.model_version for o in outputs if type(o) is Prediction}
    got, versions = {}, set()
    for message in predictions:
        record = orjson.loads(message.value())
        got[record["id"]] = record["prediction"]
        versions.add((expected_version[record["id"]], record["model_version"]))
    assert got == expected  # the same answers as an uninterrupted run, event by event
    # ... from the same models: the registry numbers them (a number a killed worker took
    # is not reused), so a model's number may differ, never which events it answered.
    assert len({mine for mine, _ in versions}) == len(versions) == len({n for _, n in versions})

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
    as_reference = {mine: theirs for theirs, mine in versions}  # registry number -> reference
    got_alerts = Counter(
        alert_signature(
            {**a, "key": a.get("key"), "model_version": as_reference.get(a.get("model_version"))}
        )
        for a in alerts
        if a.get("type") in ("action", "drift")
    )
    assert got_alerts == reference_alerts(outputs)
    # A partition starts cold only while nothing of it was committed yet (librdkafka may
    # drain one partition's backlog before it fetches the other's); after that, always
    # from its checkpoint: the identical predictions above prove the state came back.
    # Its notice is committed with its first offsets, so once, as in an uninterrupted run
    # (an adversarial run found one notice per restart before that first commit).
    cold = [a for a in alerts if a.get("notice") == "cold_start"]
    assert sorted(a["partition"] for a in cold) == list(range(partitions)), cold
    assert all(a["message"].startswith("no checkpoint") for a in cold), cold

    probes = probe_rows("sea")
    for p, engine in final_models(config, partitions).items():
        assert [engine.model.predict_proba_one(x) for x in probes] == [
            engines[p].model.predict_proba_one(x) for x in probes
        ]


def four_partition_config(config: Config) -> Config:
    tag = config.topics.events.split(".")[0] + "x4"
    names = ["events", "predictions", "alerts", "metrics", "dlq", "state", "control"]
    wide = config.replace(topics={**{n: f"{tag}.{n}" for n in names}, "partitions": 4})
    ensure_topics(wide)
    return wide


def assigned_in_group(config: Config) -> dict[str, set[int]]:
    """The group's members and their partitions, as the broker hands them out."""
    admin = AdminClient(admin_settings(config))
    group = config.kafka.group_id
    description = admin.describe_consumer_groups([group])[group].result(30)
    return {
        member.member_id: {tp.partition for tp in member.assignment.topic_partitions}
        for member in description.members
    }


def test_partitions_handed_over_while_the_worker_closes_are_left_not_restored(
    config: Config, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A rebalance that completes after the loop's last consume() (a peer leaves, or its
    # session expires, as the worker is told to stop) hands partitions over inside
    # consumer.close(). Restoring them asked for committed offsets a closing consumer
    # no longer gets: a wait of the handover's whole deadline, then exit 74.
    monkeypatch.setattr(worker_module, "HANDOVER_GRACE_SECONDS", 1.0)
    cfg = config.replace(worker={"transaction_timeout_seconds": 5})
    worker = Worker(cfg)
    peer = Consumer(
        {
            "bootstrap.servers": cfg.kafka.bootstrap_servers,
            "group.id": cfg.kafka.group_id,
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.commit": False,
        }
    )
    final_save = worker._save

    def save_once_the_peer_has_left(partitions: list[int], *args: object) -> None:
        if worker._stop.is_set() and peer is not None:
            peer.close()  # a dynamic member: it leaves the group at once
            wait_for(
                lambda: list(assigned_in_group(cfg).values()) == [{0, 1}],
                120,
                "the group to hand the worker the peer's partition",
            )
        final_save(partitions, *args)

    caplog.set_level(logging.INFO, logger="streamheal.worker")
    with running_on_thread(worker, "streamheal-worker"):
        wait_for(lambda: set(worker.engines) == {0, 1}, 120, "the worker to own both")
        peer.subscribe([cfg.topics.events])
        wait_for(
            lambda: (
                peer.consume(timeout=0.2) is not None
                and bool(peer.assignment())
                and len(worker.engines) == 1
            ),
            120,
            "the peer to take a partition",
        )
        monkeypatch.setattr(worker, "_save", save_once_the_peer_has_left)
    # Leaving the block stopped the worker and raised whatever run() raised: nothing.
    assert "arrived during close: left to their next owner" in caplog.text
    assert "not restored" not in caplog.text


def test_partitions_move_between_workers_with_their_state(config: Config, tmp_path: Path) -> None:
    config = four_partition_config(config)
    partitions = 4
    scenario = SCENARIOS["agrawal"](events=24_000, drift_at=12_000, label_delay=50, seed=3)
    thirds = scenario.events
    cut = [0, len(thirds) // 3, 2 * len(thirds) // 3, len(thirds)]

    def produce(part: int) -> None:
        with EventProducer(config.kafka.bootstrap_servers, config.topics.events) as producer:
            for event in thirds[cut[part] : cut[part + 1]]:
                producer.send_event(event)

    config_file = write_config(
        config,
        tmp_path / "worker.toml",
        worker={"session_timeout_seconds": 6},
        metrics={"port": 0},
    )
    log = tmp_path / "workers.log"
    produce(0)
    first = start_worker(config_file, "first", log)
    second = None
    try:
        until_committed(config, cut[1], [first], log)
        second = start_worker(config_file, "second", log)  # joins mid-stream
        wait_for(lambda: log.read_text().count("assigned partitions") >= 2, timeout=120)
        produce(1)
        until_committed(config, cut[2], [first, second], log)
        assert stop_worker(first, log) == 0, log.read_text()[-3000:]  # the first one leaves
        produce(2)
        until_committed(config, cut[3], [second], log)
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                stop_worker(worker, log)
    text = log.read_text()
    assert "restored from checkpoint" in text  # partitions really moved with their state

    feature_ids = {e["id"] for e in scenario.events if e.get("features")}
    predictions = read_all(config.kafka.bootstrap_servers, config.topics.predictions, partitions)
    counts = Counter(m.key().decode() for m in predictions)
    assert set(counts) == feature_ids and set(counts.values()) == {1}
    _, outputs = reference_run(config, partitions)
    expected = {o.id: o.prediction for o in outputs if type(o) is Prediction}
    got = {r["id"]: r["prediction"] for r in map(orjson.loads, (m.value() for m in predictions))}
    assert got == expected  # each partition's accuracy after each move: as if it never moved


@pytest.mark.parametrize("guarantee", ["exactly-once", "at-least-once"])
def test_a_worker_whose_worker_id_a_second_process_takes_exits_75_in_one_line(
    config: Config, tmp_path: Path, guarantee: str
) -> None:
    """Two processes with one worker.id: the newer one fences the older (its transactional
    producer, and its static group membership). The older stops with exit code 75 and
    one line saying why: not a traceback from closing its fenced producer (exit 1), and
    not, at-least-once, an idle loop behind a consumer that will deliver nothing more."""
    config_file = write_config(config, tmp_path / "worker.toml", worker={"guarantee": guarantee})
    log, newer_log = tmp_path / "older.log", tmp_path / "newer.log"
    events = iter(SCENARIOS["sea"](events=200_000, seed=8).events)
    older = start_worker(config_file, "twin", log)
    newer = None
    try:
        produce(config, [next(events) for _ in range(500)])
        wait_for(lambda: committed_total(config, 2) >= 500, 300, "the older worker committing")
        newer = start_worker(config_file, "twin", newer_log)
        with EventProducer(config.kafka.bootstrap_servers, config.topics.events) as producer:
            for event in events:  # traffic, so that the older one has something to commit
                if older.poll() is not None:
                    break
                producer.send_event(event)
                producer.flush()
        assert older.wait(timeout=600) == 75, log.read_text()[-3000:]
    finally:
        for worker, its_log in ((older, log), (newer, newer_log)):
            if worker is not None and worker.poll() is None:
                stop_worker(worker, its_log)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    reason = [line for line in text.splitlines() if line.startswith("streamheal: worker stopped")]
    assert len(reason) == 1 and "fenced" in reason[0], text[-3000:]


def test_a_checkpoint_with_a_wrong_signature_is_refused_and_the_partition_starts_fresh(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STATE_KEY_ENV, "state-secret")
    events = SCENARIOS["sea"](events=2000, label_delay=20, seed=4).events
    with EventProducer(config.kafka.bootstrap_servers, config.topics.events) as producer:
        for event in events[:1000]:
            producer.send_event(event)
    with running_worker(config) as worker:
        wait_for(lambda: worker.stats.consumed >= 1000, what="first half")
    # Someone with write access to the state topic, but not the key, plants a checkpoint
    # whose pickle would leave a mark if it were ever loaded.
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(_Mark(str(marker)))
    stream = stream_name(config.kafka.group_id, config.topics.events)
    forged = encode(stream, 0, 10**9, payload, config, Signer(b"not the key"), 1024)
    producer = Producer({"bootstrap.servers": config.kafka.bootstrap_servers})
    for key, value, headers in forged:
        producer.produce(config.topics.state, value, key, headers=headers, partition=0)
    assert producer.flush(30) == 0
    with EventProducer(config.kafka.bootstrap_servers, config.topics.events) as producer:
        for event in events[1000:]:
            producer.send_event(event)
    with running_worker(config) as worker:
        wait_for(lambda: worker.stats.consumed >= len(events) - 1000, what="second half")
        assert worker.stats.restored == 1 and worker.stats.cold_starts == 1
    assert not marker.exists()
    alerts = [
        orjson.loads(m.value())
        for m in read_all(config.kafka.bootstrap_servers, config.topics.alerts)
    ]
    refused = [a for a in alerts if a.get("notice") == "cold_start" and a["partition"] == 0]
    assert any("bad signature" in a["message"] for a in refused), refused
    predictions = read_all(config.kafka.bootstrap_servers, config.topics.predictions)
    got = Counter(m.key().decode() for m in predictions)
    want = Counter(e["id"] for e in events if e.get("features"))
    assert got == want  # the fallback resumes at the committed offset: nothing lost, nothing twice


class _Mark:
    """A pickle that touches a file when it is loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_a_partition_without_a_checkpoint_is_checkpointed_in_its_first_transaction(
    config: Config, tmp_path: Path
) -> None:
    # With checkpoints every N > 1 batches a partition that started cold wrote none before
    # its N-th batch, yet its offsets were committed: killed then, it started cold again
    # at those offsets, and what it had learned was lost.
    config_file = write_config(
        config, tmp_path / "worker.toml", worker={"checkpoint_every_batches": 1000}
    )
    records = SCENARIOS["sea"](events=400, seed=3).events
    worker = start_worker(config_file, "w", tmp_path / "first.log")
    try:
        produce(config, records)
        wait_for(lambda: committed_total(config, 2) == len(records), 300, "all committed")
    finally:
        worker.kill()  # SIGKILL: no final checkpoint
        worker.wait()
    assert all(latest_checkpoint(config, p) is not None for p in (0, 1))
    log = tmp_path / "restart.log"
    restarted = start_worker(config_file, "w", log)
    try:
        wait_for(lambda: "assigned partitions" in log.read_text(), 300, "the restart's assignment")
    finally:
        assert stop_worker(restarted, log) == 0
    text = log.read_text()
    assert text.count("restored from checkpoint") == 2 and "no checkpoint" not in text


def test_a_partitions_cold_start_is_noticed_once_when_the_worker_dies_before_it_commits(
    config: Config, tmp_path: Path
) -> None:
    # Found by an adversarial run: every partition's cold_start notice went out in the
    # first transaction, whichever partitions it committed. Killed before partition 0
    # committed anything, the worker left a notice of a start its restart made again.
    config_file = write_config(config, tmp_path / "worker.toml")
    producer = Producer({"bootstrap.servers": config.kafka.bootstrap_servers})
    rows = SCENARIOS["sea"](events=300, seed=5).events

    def send(partition: int, part: list[dict]) -> None:
        for event in part:
            producer.produce(config.topics.events, orjson.dumps(event), partition=partition)
        assert producer.flush(30) == 0

    worker = start_worker(config_file, "w", tmp_path / "first.log")
    try:
        send(1, rows[:150])  # partition 0 gets nothing before the kill
        wait_for(lambda: committed_total(config, 2) == 150, 300, "partition 1 committed")
    finally:
        worker.kill()
        worker.wait()
    log = tmp_path / "restart.log"
    restarted = start_worker(config_file, "w", log)
    try:
        send(0, rows[150:])
        until_committed(config, 300, [restarted], log)
    finally:
        assert stop_worker(restarted, log) == 0
    alerts = read_all(config.kafka.bootstrap_servers, config.topics.alerts)
    cold = Counter(
        a["partition"]
        for a in map(orjson.loads, (m.value() for m in alerts))
        if a.get("notice") == "cold_start"
    )
    assert cold == {0: 1, 1: 1}
    assert "partition 0: no checkpoint" in log.read_text()  # it did start cold again


def test_a_state_larger_than_a_record_is_chunked_and_restored_whole(config: Config) -> None:
    # An adaptive random forest of 10 trees after 20,000 events: megabytes of state.
    arf = Config().replace(
        model={"name": "arf", "params": {"n_models": 10}},
        detectors={"enabled": False},
        policy={"enabled": False},
    )
    engine = Engine(arf)
    events = bench_events(20_000)
    for i in range(0, len(events), 500):
        engine.process(events[i : i + 500])
    payload = engine.to_bytes()
    assert len(payload) > 2 * 1024 * 1024
    stream = stream_name(config.kafka.group_id, config.topics.events)
    parts = encode(stream, 1, 20_000, payload, arf, None, 512 * 1024)
    assert len(parts) > 4
    write_checkpoints(config, 1, parts)
    manifest, chunks, _ = latest_checkpoint(config, 1)
    restored = Engine(arf)
    restored.load_bytes(assemble(manifest, chunks, None))
    probes = [e.features for e in bench_events(200, seed=99)]
    assert [restored.model.predict_proba_one(x) for x in probes] == [
        engine.model.predict_proba_one(x) for x in probes
    ]


def test_stray_records_on_the_state_topic_do_not_cost_a_partition_its_checkpoint(
    config: Config,
) -> None:
    # Compaction keeps every key for good: a record under a key no worker writes (a typo,
    # a hostile or broken producer) must be passed over, not make every restart cold.
    engine = Engine(Config())
    engine.process(bench_events(600))
    stream = stream_name(config.kafka.group_id, config.topics.events)
    good = encode(stream, 0, 600, engine.to_bytes(), Config(), None, 512 * 1024)
    base = f"{stream}:0".encode()
    stray = [
        (base + b"#x", b"junk", []),
        (base + b"#123456789012345678901234567890", b"junk", []),
        (base + b"$\xd9\xff#0", b"junk", []),
        (base + b"$name#", b"junk", []),
    ]
    write_checkpoints(config, 0, good, stray)
    manifest, chunks, _ = latest_checkpoint(config, 0)
    restored = Engine(Config())
    restored.load_bytes(assemble(manifest, chunks, None))
    assert restored.counters.feature_events == 600


def delete_topic(config: Config, topic: str) -> None:
    admin = AdminClient(admin_settings(config))
    admin.delete_topics([topic])[topic].result(30)
    wait_for(lambda: topic not in admin.list_topics(timeout=10).topics, 30, f"{topic} deleted")


def test_a_broker_error_while_reading_state_is_asked_again_not_taken_for_no_checkpoint(
    config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    # Broker errors come and go (NOT_LEADER_FOR_PARTITION while a leader moves in a
    # rolling restart; here UNKNOWN_TOPIC_OR_PART until the topic is back). Taken for a
    # checkpoint that does not load, one started the partition cold, and that cold
    # state's first checkpoint shadowed the good one on the compacted topic.
    reader = CheckpointReader(config)
    caplog.set_level(logging.INFO, logger="streamheal.checkpoints")

    gave_up = threading.Event()  # the reader raised: nothing will be asked again

    def put_the_topic_back_once_refused() -> None:
        wait_for(lambda: "asking again" in caplog.text or gave_up.is_set(), 60, "a refusal")
        ensure_topics(config)  # empty, as an operator recreates it to start over

    try:
        delete_topic(config, config.topics.state)
        with ThreadPoolExecutor(1) as pool:
            back = pool.submit(put_the_topic_back_once_refused)
            try:
                found = reader.latest(config.topics.events, 1, timeout=120)
            finally:
                gave_up.set()
            back.result()
    finally:
        reader.close()
    assert found is None  # read to its end: no checkpoint, rightly


def test_a_state_partition_that_cannot_be_read_is_unreadable_not_empty(config: Config) -> None:
    reader = CheckpointReader(config)
    try:
        delete_topic(config, config.topics.state)
        with pytest.raises(StateUnreadable) as err:
            reader.latest(config.topics.events, 1, timeout=2)
    finally:
        reader.close()
    assert str(err.value).startswith(f"state partition {config.topics.state}:1 not readable: ")


def test_a_partition_whose_state_cannot_be_read_stops_the_worker_instead_of_starting_cold(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cold start would write a checkpoint over the one the broker could not hand over;
    # exit 74 lets a supervisor restart the worker, which reads again.
    monkeypatch.setattr(worker_module, "HANDOVER_GRACE_SECONDS", 1.0)
    cfg = config.replace(worker={"transaction_timeout_seconds": 1})
    worker = Worker(cfg)
    worker._reader = CheckpointReader(cfg)  # as run() makes it, before any assignment
    try:
        delete_topic(cfg, cfg.topics.state)
        with pytest.raises(WorkerError) as err:
            worker._restore(0)
    finally:
        worker._reader.close()
    assert err.value.exit_code == EXIT_KAFKA_FAILURE == 74
    assert str(err.value).startswith(
        f"partition 0 not restored: state partition {cfg.topics.state}:0"
    )
    assert worker.stats.cold_starts == 0
    assert worker._outbox == [] and worker._held == {}  # no cold_start notice either


def test_replay_of_a_transactional_topic_ends_at_its_commit_marker(config: Config) -> None:
    events = SCENARIOS["sea"](events=300, seed=2).events
    producer = Producer(
        {"bootstrap.servers": config.kafka.bootstrap_servers, "transactional.id": f"t-{uuid4()}"}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for event in events:
        producer.produce(config.topics.events, orjson.dumps(event), event["id"].encode())
    producer.commit_transaction(30)
    # The coordinator writes the commit markers after commit_transaction returns, so the
    # last stable offset can lag a moment; each replay must still end (at the end it saw).
    replayed: list = []

    def replayed_all() -> bool:
        replayed[:] = topic_records(config, config.topics.events)
        return len(replayed) >= len(events)

    wait_for(replayed_all, 120, "a replay that reads the committed transaction")
    assert sorted(orjson.loads(raw)["id"] for raw, _, _ in replayed) == sorted(
        e["id"] for e in events
    )


def start_pair(config: Config, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """`streamheal run --workers 2` (workers pair-0 and pair-1), logging to a file."""
    config_file = write_config(config, tmp_path / "worker.toml", metrics={"port": 0})
    log = tmp_path / "supervisor.log"
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "streamheal.cli", "run", "--workers", "2", "-c", str(config_file)],
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "STREAMHEAL_WORKER__ID": "pair"},
    )
    return supervisor, log


def pair_started(log: Path) -> dict[str, int]:
    """Once both workers of :func:`start_pair` are running: their pids by worker id."""
    wait_for(
        lambda: all(f"worker pair-{i} starting" in log.read_text() for i in (0, 1)),
        timeout=600,
        what="both workers started",
    )
    return {
        line.split("worker ")[1].split(" started")[0]: int(line.split("(pid ")[1].rstrip(")"))
        for line in log.read_text().splitlines()
        if " started (pid " in line
    }


def test_run_with_two_workers_shares_the_partitions_and_stops_cleanly(
    config: Config, tmp_path: Path
) -> None:
    events = SCENARIOS["sea"](events=3000, label_delay=10, seed=6).events
    with EventProducer(config.kafka.bootstrap_servers, config.topics.events) as producer:
        for event in events:
            producer.send_event(event)
    supervisor, log = start_pair(config, tmp_path)
    try:
        until_committed(config, len(events), [supervisor], log)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=600) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "worker pair-0 starting" in text and "worker pair-1 starting" in text
    predictions = read_all(config.kafka.bootstrap_servers, config.topics.predictions)
    counts = Counter(m.key().decode() for m in predictions)
    assert set(counts.values()) == {1} and len(counts) == sum(
        1 for e in events if e.get("features")
    )


def test_a_worker_that_dies_under_run_workers_stops_the_set_with_its_exit_code(
    config: Config, tmp_path: Path
) -> None:
    # The supervisor does not restart a child (systemd or Kubernetes does, on its exit
    # code): so it must not sit on with one worker of two, looking healthy.
    supervisor, log = start_pair(config, tmp_path)
    try:
        pids = pair_started(log)
        os.kill(pids["pair-1"], signal.SIGKILL)
        assert supervisor.wait(timeout=600) == 128 + signal.SIGKILL, log.read_text()[-3000:]
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    text = log.read_text()
    assert "stopped unasked: stopping the others" in text
    assert "streamheal worker stopped" in text  # pair-0 committed and left cleanly
    with pytest.raises(ProcessLookupError):
        os.kill(pids["pair-0"], 0)


def test_a_stopped_worker_does_not_hang_the_supervisors_shutdown(
    config: Config, tmp_path: Path
) -> None:
    # SIGSTOP (a debugger, a stuck container runtime) would hold the forwarded SIGTERM
    # pending forever: the supervisor continues its children so they stop cleanly.
    supervisor, log = start_pair(config, tmp_path)
    try:
        os.kill(pair_started(log)["pair-1"], signal.SIGSTOP)
        supervisor.send_signal(signal.SIGTERM)
        code = supervisor.wait(timeout=600)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    text = log.read_text()
    # Both stop cleanly, or (when the stop caught the group mid-rebalance and the other
    # worker's leave waited on its stopped peer) the laggard is killed after the grace
    # period and the supervisor says so in its exit code: never a hang.
    assert code == 0 or (code == 128 + signal.SIGKILL and "after stop: killed" in text), text
    assert "streamheal worker stopped" in text


def test_bench_measures_the_worker_against_the_hand_written_loop_through_the_broker(
    config: Config,
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamheal.cli",
            "bench",
            "--events",
            "500",
            "--rounds",
            "1",
            "--kafka-events",
            "1500",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=1800,  # only catches a hang: a loaded machine is slower, never wrong
        env={**os.environ, "STREAMHEAL_KAFKA__BOOTSTRAP_SERVERS": config.kafka.bootstrap_servers},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = orjson.loads(result.stdout)
    for key in (
        "kafka_eps",
        "kafka_alo_eps",
        "kafka_core_eps",
        "kafka_bare_eps",
        "kafka_one_process_eps",
        "kafka_two_processes_eps",
    ):
        assert figures[key] > 0, key
    assert figures["kafka_over_engine"] > 0 and figures["kafka_two_workers_speedup"] > 0


def test_unchanged_references_are_written_once_and_restored_from_an_earlier_checkpoint(
    config: Config,
) -> None:
    # The detectors' references are most of a checkpoint and change rarely: a second
    # checkpoint names them (written by the first) instead of writing them again.
    engine = Engine(config)
    events = bench_events(3000)
    for i in range(0, 3000, 500):
        engine.process(events[i : i + 500])
    stream = stream_name(config.kafka.group_id, config.topics.events)
    parts = {
        name: Part.of(pickle.dumps(obj), None, 512 * 1024)
        for name, obj in engine.stable_parts().items()
    }
    assert set(parts) == {"covariate_reference", "prediction_reference"}
    first = encode(stream, 0, 3000, engine.to_bytes(True), config, None, 512 * 1024, 1, parts)
    more = bench_events(500, seed=5)
    engine.process(more)
    named = {name: part.written() for name, part in parts.items()}
    second = encode(stream, 0, 3500, engine.to_bytes(True), config, None, 512 * 1024, 1, named)
    assert [key for key, _, _ in first if b"$" in key]  # the parts' own records
    assert not [key for key, _, _ in second if b"$" in key]  # named, not written again
    references = sum(part.size for part in parts.values())
    # (The join's changes since its last seal weigh a little more than the join itself.)
    assert sum(len(v) for _, v, _ in second) < len(engine.to_bytes()) - 0.5 * references
    write_checkpoints(config, 0, first, second)
    manifest, chunks, found = latest_checkpoint(config, 0)
    assert manifest.offset == 3500 and set(manifest.parts) == set(parts)
    restored = Engine(config)
    restored.load_bytes(
        assemble(manifest, chunks, None), parts=assemble_parts(manifest, found, None)
    )
    assert restored.state_dict()["drift"]["covariate"].reference.profile() == (
        engine.drift.covariate.reference.profile()
    )
    later = bench_events(2000, seed=11)
    outputs = [
        [record_of(o) for o in e.process(later) if type(o) is not Rejection]
        for e in (engine, restored)
    ]
    assert outputs[0] == outputs[1]


def _set_max_message_bytes(config: Config, topic: str, limit: int) -> None:
    admin = AdminClient({"bootstrap.servers": config.kafka.bootstrap_servers})
    entry = ConfigEntry(
        "max.message.bytes", str(limit), incremental_operation=AlterConfigOpType.SET
    )
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)

    def applied() -> bool:  # the controller accepted it; wait until the broker applies it
        described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])
        settings = next(iter(described.values())).result(30)
        return settings["max.message.bytes"].value == str(limit)

    wait_for(applied, 60, f"max.message.bytes={limit} on {topic}")


def test_a_first_transaction_the_broker_refuses_is_redone_from_the_partitions_start(
    config: Config,
) -> None:
    """Nothing committed and no checkpoint yet when the broker refuses the first batch's
    predictions (larger than the topic's max.message.bytes): the transaction aborts, each
    partition is rewound to its first offset, and the batch is retried with a backoff. Once
    the broker accepts again, every event has exactly one committed prediction: none
    skipped (the fetch position, left alone, would have stood past the aborted batch), none
    twice. The worker used to exit 74 here: after the failed delivery, produce() reports
    only "Erroneous state", which was taken for a fatal error."""
    # Every batch of predictions refused; 128 bytes still takes the small control records
    # (transaction markers) that complete an abort.
    _set_max_message_bytes(config, config.topics.predictions, 128)
    events = SCENARIOS["sea"](events=400, seed=3).events
    produce(config, events)
    with running_worker(config) as worker:
        wait_for(lambda: worker.stats.aborted >= 2, 120, "the refused transactions aborting")
        assert worker.stats.consumed == 0  # nothing committed while the broker refuses
        _set_max_message_bytes(config, config.topics.predictions, 1_048_588)  # the default
        wait_for(lambda: worker.stats.consumed >= len(events), 120, "every event committed")
    predictions = read_all(config.kafka.bootstrap_servers, config.topics.predictions)
    ids = Counter(orjson.loads(m.value())["id"] for m in predictions)
    assert set(ids) == {e["id"] for e in events}
    assert max(ids.values()) == 1


def test_commits_aborted_in_the_background_rewind_and_redo_exactly_once(config: Config) -> None:
    """Full batches commit on a thread while the next batch is fetched and decoded. When
    such a commit aborts (its predictions refused by the broker), its partitions are
    rewound, what was fetched of them meanwhile is dropped and read again, the other
    partitions' records go on; once the broker accepts again, every event has exactly one
    committed prediction and the checkpoints carry on from the committed state."""
    config = config.replace(engine={"batch_size": 25})  # every batch full: in the background
    _set_max_message_bytes(config, config.topics.predictions, 128)
    events = SCENARIOS["sea"](events=1500, seed=4).events
    produce(config, events)
    with running_worker(config) as worker:
        wait_for(lambda: worker.stats.aborted >= 4, 120, "the refused transactions aborting")
        assert worker.stats.consumed == 0
        _set_max_message_bytes(config, config.topics.predictions, 1_048_588)
        wait_for(lambda: worker.stats.consumed >= len(events), 120, "every event committed")
        assert worker.stats.batches >= len(events) // 25  # full batches went through
    predictions = read_all(config.kafka.bootstrap_servers, config.topics.predictions)
    ids = Counter(orjson.loads(m.value())["id"] for m in predictions)
    assert set(ids) == {e["id"] for e in events}
    assert max(ids.values()) == 1


def test_at_least_once_an_output_the_broker_refuses_fails_the_commit_naming_it(
    config: Config,
) -> None:
    """Delivery reports reach the committer through the producer's one callback: an
    output the broker refuses (over the topic's max.message.bytes) is not taken for
    delivered, and the commit says so instead of committing the offsets past it."""
    _set_max_message_bytes(config, config.topics.predictions, 128)
    settings = {"bootstrap.servers": config.kafka.bootstrap_servers, "acks": "all"}
    committer = Committer(config.replace(worker={"guarantee": "at-least-once"}), settings, "w")
    consumer = Consumer({"bootstrap.servers": config.kafka.bootstrap_servers, "group.id": "x"})
    try:
        committer.start()
        committer.begin()
        committer.produce(config.topics.predictions, b"x" * 1000, b"too-big")
        with pytest.raises(CommitFailed, match=r"^1 outputs not acknowledged, .*too large"):
            committer.commit(consumer, [])
    finally:
        consumer.close()
        committer.close()


def test_a_background_commit_completes_while_a_rebalance_callback_waits_for_it(
    config: Config,
) -> None:
    """confluent-kafka serialises a Consumer's calls across threads: one made from another
    thread waits until the loop's consume() returns. The worker's rebalance callbacks run
    inside consume() and wait for the commit in flight, so a commit that asked the
    consumer for anything (it once asked for the group metadata) deadlocked there: a CI
    run's worker hung for 20 minutes. Committer.finish takes the metadata from the loop
    and touches no consumer, so it completes while the callback waits."""
    settings = {"bootstrap.servers": config.kafka.bootstrap_servers, "acks": "all"}
    committer = Committer(config, settings, f"gate-{uuid4().hex[:6]}")
    consumer = Consumer(
        {
            "bootstrap.servers": config.kafka.bootstrap_servers,
            "group.id": f"gate-{uuid4().hex[:6]}",
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    outcome: dict[str, BaseException | None] = {}

    def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        group = committer.group_metadata(consumer)  # on the consumer's thread, as the loop does
        offsets = [TopicPartition(tp.topic, tp.partition, 0) for tp in partitions]
        committer.begin()
        committer.produce(config.topics.predictions, b"{}", b"e1")
        commits = ThreadPoolExecutor(1)
        commit = commits.submit(committer.finish, offsets, group)
        try:
            outcome["error"] = commit.exception(timeout=120)
        except TimeoutError as err:  # the deadlock: this consume() holds the consumer
            outcome["error"] = err
        finally:
            commits.shutdown(wait=False)  # a deadlocked commit goes on once consume() returns
        consumer.incremental_assign(partitions)

    def assigned() -> bool:
        consumer.consume(1, 0.5)  # serves the rebalance, and with it on_assign
        return "error" in outcome

    try:
        committer.start()
        consumer.subscribe([config.topics.events], on_assign=on_assign)
        wait_for(assigned, 300, "the assignment and its commit")
        assert outcome["error"] is None
        mine = [TopicPartition(config.topics.events, p) for p in range(config.topics.partitions)]
        committed = consumer.committed(mine, timeout=30)
        assert [tp.offset for tp in committed] == [0] * len(mine)  # went in with the commit
    finally:
        consumer.close()
        committer.close()


def test_a_partition_handed_over_while_background_commits_abort_is_done_exactly_once(
    config: Config,
) -> None:
    """Every batch full (so committed in the background) and every commit refused while a
    second worker joins: the first worker's revoke settles a commit in flight that
    aborts, rewinds, and hands the partition over as of its last committed checkpoint.
    Once the broker accepts again, every event has exactly one committed prediction."""
    config = config.replace(engine={"batch_size": 25})
    _set_max_message_bytes(config, config.topics.predictions, 128)
    events = SCENARIOS["sea"](events=3000, seed=6).events
    produce(config, events)
    partitions = config.topics.partitions
    with running_worker(config.replace(worker={"id": "first"})) as first:
        wait_for(lambda: first.stats.aborted >= 2, 120, "the first worker's commits aborting")
        with running_worker(config.replace(worker={"id": "second"})) as second:
            wait_for(
                lambda: second.engines and len(first.engines) < partitions,
                120,
                "a partition handed over",
            )
            assert committed_total(config, partitions) == 0  # nothing went through yet
            _set_max_message_bytes(config, config.topics.predictions, 1_048_588)
            wait_for(
                lambda: committed_total(config, partitions) >= len(events),
                120,
                "every record committed",
            )
    predictions = read_all(config.kafka.bootstrap_servers, config.topics.predictions)
    ids = Counter(orjson.loads(m.value())["id"] for m in predictions)
    assert set(ids) == {e["id"] for e in events}
    assert max(ids.values()) == 1
