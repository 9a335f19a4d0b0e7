"""Hostile input against a running worker on the real broker (issue 8): control commands
that used to stop every worker, signed commands, a registry that cannot serve its
champion, and memory under an endless stream of new feature names."""

from __future__ import annotations

import pickle
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from streamheal import models
from streamheal.commands import Command, encode
from streamheal.config import Config
from streamheal.kafka import records
from streamheal.kafka.control import publish
from streamheal.producer import EventProducer
from streamheal.registry import Registry
from streamheal.scenarios import breast_cancer
from streamheal.signing import CONTROL_KEY_ENV, Signer
from tests.conftest import read_all, read_topic, running_worker, wait_for

pytestmark = pytest.mark.kafka


def produce_events(config: Config, events: list[dict]) -> None:
    with EventProducer(config.kafka.bootstrap_servers, config.topics.events) as producer:
        for event in events:
            producer.send_event(event)


def produce_control(config: Config, values: list[bytes | None]) -> None:
    producer = Producer({"bootstrap.servers": config.kafka.bootstrap_servers})
    for value in values:
        producer.produce(config.topics.control, value, key=b"hostile")
    assert producer.flush(30) == 0


def registry_with_two_versions(config: Config) -> Registry:
    registry = Registry(config.registry.path, config.registry.model_name)
    for seed in (1, 2):
        model = models.build_model(config.model, seed=seed)
        model.learn_one({"mean radius": 14.0}, True)
        registry.register(models.dumps(model), cause=f"test {seed}")
    return registry


def fresh_version(config: Config, stored: int = 2) -> int:
    """The number the registry issued for a fresh model built from config (the worker
    serves one when the registry has no champion): the next after the stored versions."""
    registry = Registry(config.registry.path, config.registry.model_name)
    entry = registry.lineage(stored + 1)
    assert entry is not None and entry["action"] == "initial", entry
    return stored + 1


def json_records(messages: list) -> list[dict]:
    return [orjson.loads(m.value()) for m in messages]


def model_versions(config: Config) -> dict[str, int]:
    """The model version that scored each event id."""
    messages = read_all(config.kafka.bootstrap_servers, config.topics.predictions)
    return {r["id"]: r["model_version"] for r in json_records(messages)}


HOSTILE = [
    orjson.dumps({"command": "promote", "version": 99}),
    # The fresh model's number (issued by the registry at assignment): no stored model.
    orjson.dumps({"command": "promote", "version": 3}),
    orjson.dumps({"command": "promote", "version": -1}),
    orjson.dumps({"command": "promote", "version": True}),
    orjson.dumps({"command": "rollback", "version": 0}),
    b"[1, 2]",
    b'"promote"',
    b"null",
    b"not json at all",
    orjson.dumps({"command": "self-destruct", "version": 1}),
    orjson.dumps({"command": "promote", "version": 2, "reason": "x" * 600_000}),
    None,  # a tombstone
    # Looks like a silence (the notifier's records share the topic) but is not one.
    b'{"type":"silence garbage',
]


def test_hostile_control_commands_are_refused_as_alerts_and_the_worker_keeps_scoring(
    config: Config,
) -> None:
    registry_with_two_versions(config)
    events = breast_cancer(events=600, seed=2).events
    bootstrap = config.kafka.bootstrap_servers
    with running_worker(config) as worker:
        produce_events(config, events[:300])
        read_topic(bootstrap, config.topics.predictions, lambda m: len(m) >= 300)
        produce_control(config, HOSTILE)
        refusals = read_topic(
            bootstrap,
            config.topics.alerts,
            lambda m: (
                sum(r.get("type") == "control_refused" for r in json_records(m)) >= len(HOSTILE)
            ),
        )
        produce_events(config, events[300:])
        read_topic(bootstrap, config.topics.predictions, lambda m: len(m) >= 600)
        # After all that, a valid command is still applied.
        produce_control(config, [orjson.dumps({"command": "promote", "version": 2})])
        # Commands apply between batches: events sent before the install is committed could
        # still be scored by v1, so wait for both partitions' install first.
        wait_for(lambda: worker.stats.actions >= 2, what="the promotion installed")
        produce_events(config, [{**e, "id": f"after-{e['id']}"} for e in events[:100]])
        wait_for(lambda: worker.stats.consumed == 700, what="events sent after the commands")
        read_topic(bootstrap, config.topics.predictions, lambda m: len(m) >= 700)
    refused = [r for r in json_records(refusals) if r.get("type") == "control_refused"]
    assert len(refused) == len(HOSTILE)
    reasons = " | ".join(r["reason"] for r in refused)
    for expected in (
        "no version 99",
        "no stored model",
        "integer >= 1",
        "expected a JSON object",
        "not JSON",
    ):
        assert expected in reasons
    assert "unknown command" in reasons and "tombstone" in reasons and "limit is 8192" in reasons
    assert all(len(orjson.dumps(r)) < 4096 for r in refused)  # bounded, whatever came in
    versions = model_versions(config)
    assert len(versions) == 700
    fresh = fresh_version(config)
    assert all(v == (2 if i.startswith("after-") else fresh) for i, v in versions.items())


def test_with_a_control_key_only_signed_fresh_commands_are_applied(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry_with_two_versions(config)
    monkeypatch.setenv(CONTROL_KEY_ENV, "control-secret")
    bootstrap = config.kafka.bootstrap_servers
    events = breast_cancer(events=200, seed=3).events
    with running_worker(config) as worker:
        produce_events(config, events[:100])
        read_topic(bootstrap, config.topics.predictions, lambda m: len(m) >= 100)
        forged = encode(Command("promote", 2, "mallory", "trust me"), Signer(b"wrong key"))
        stale = encode(
            Command("promote", 2, "eve", "replayed", issued_at=1.0), Signer(b"control-secret")
        )
        produce_control(config, [orjson.dumps({"command": "promote", "version": 2}), forged, stale])
        read_topic(
            bootstrap,
            config.topics.alerts,
            lambda m: sum(r.get("type") == "control_refused" for r in json_records(m)) >= 3,
        )
        publish(config, "promote", 2, reason="signed by the CLI", by="ops")  # signs: key is set
        wait_for(lambda: worker.stats.actions >= 2, what="the signed promotion applied")
        produce_events(config, events[100:])
        wait_for(lambda: worker.stats.consumed == 200, what="events after the signed command")
        read_topic(bootstrap, config.topics.predictions, lambda m: len(m) >= 200)
    alerts = json_records(read_all(bootstrap, config.topics.alerts))
    refused = [r["reason"] for r in alerts if r.get("type") == "control_refused"]
    assert len(refused) == 3
    assert refused[0].startswith("unsigned") and refused[1].startswith("bad signature")
    assert refused[2].startswith("stale")
    installs = [r for r in alerts if r.get("action") == "install"]
    assert installs and all("signed by the CLI" in r["cause"] for r in installs)
    later = {e["id"] for e in events[100:]}
    fresh = fresh_version(config)
    assert all(v == (2 if i in later else fresh) for i, v in model_versions(config).items())


def test_a_corrupt_registry_never_stops_the_worker(config: Config, tmp_path: Path) -> None:
    registry = registry_with_two_versions(config)
    registry.promote(2)
    (Path(config.registry.path) / config.registry.model_name / "aliases.json").write_text("{oops")
    bootstrap = config.kafka.bootstrap_servers
    with running_worker(config) as worker:
        produce_events(config, breast_cancer(events=100, seed=4).events)
        wait_for(lambda: worker.stats.consumed == 100, what="events with a corrupt registry")
        # The champion's model file vanishes: a promotion naming it is refused, not fatal.
        (Path(config.registry.path) / config.registry.model_name / "versions/1/model.pkl").unlink()
        produce_control(config, [orjson.dumps({"command": "promote", "version": 1})])
        read_topic(
            bootstrap,
            config.topics.alerts,
            lambda m: any(r.get("type") == "control_refused" for r in json_records(m)),
        )
    # The aliases are unreadable: a fresh model served, under a number of its own (the
    # corrupt aliases file does not stop the registry from numbering).
    assert set(model_versions(config).values()) == {fresh_version(config)}


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_memory_levels_off_under_an_endless_stream_of_new_feature_names(config: Config) -> None:
    total, names_per_event = 50_000, 20
    events = (
        {
            "id": f"n{i}",
            "ts": 1_764_201_600.0 + i,
            "features": {f"f{i}_{k}": float(k) for k in range(names_per_event)},
            "label": i % 2,
        }
        for i in range(total)
    )
    produce_events(config, events)
    samples: dict[int, float] = {}
    with running_worker(config) as worker:
        for mark in (10_000, 25_000, total):
            wait_for(lambda m=mark: worker.stats.consumed >= m, timeout=600, what=f"{mark} events")
            samples[mark] = _rss_mib()
        guards = [engine.guard for engine in dict(worker.engines).values()]
    cap = config.guards.max_distinct_features
    assert all(len(g.features) <= cap for g in guards)
    assert sum(g.ignored_names for g in guards) >= total * names_per_event - 2 * cap
    # Without the caps this grew by hundreds of MiB; with them the second half adds little.
    growth = samples[total] - samples[25_000]
    print("rss MiB by events consumed:", samples)
    assert growth < 40, samples


POISON = [
    # Deeply nested JSON with NaN: the strict parser refuses it, the fallback recursed.
    (b'{"id": "deep", "ts": 1, "features": {"x": NaN}, "y": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
    # An object where a feature value belongs, on the NaN-tolerant path.
    b'{"id": "nested", "ts": 1, "features": {"a": NaN, "b": {"c": 1' + b"0" * 400 + b"}}}",
    orjson.dumps({"id": "wide", "ts": 1.0, "features": {f"w{k}": 1.0 for k in range(3000)}}),
    orjson.dumps({"id": "ms", "ts": 1_764_201_600_250, "features": {"mean radius": 14.0}}),
]


def test_poison_records_are_dead_lettered_and_the_worker_scores_on(config: Config) -> None:
    events = breast_cancer(events=400, seed=6, label_delay=50).events
    features = dict(events[0]["features"])
    extreme = {
        "id": "extreme",
        "ts": events[0]["ts"],
        "features": {**features, "mean radius": 1e308},
    }
    future = {"id": "future", "ts": 1e10, "features": features}
    bootstrap = config.kafka.bootstrap_servers
    with running_worker(config) as worker:
        with EventProducer(bootstrap, config.topics.events) as producer:
            for event in events[:200]:
                producer.send_event(event)
            for raw in POISON:
                producer.send_raw(b"poison", raw)
            producer.send_raw(b"extreme", orjson.dumps({**extreme, "label": 1}))
            producer.send_raw(b"future", orjson.dumps(future))
            for event in events[200:]:
                producer.send_event(event)
        total = len(events) + len(POISON) + 2
        wait_for(lambda: worker.stats.consumed == total, what="every record consumed")
        counters = [e.counters for e in dict(worker.engines).values()]
    dead = read_all(bootstrap, config.topics.dlq)

    reasons = sorted(records.header_map(m.headers())[records.DLQ_REASON] for m in dead)
    assert reasons == ["bad_feature_value", "bad_ts", "too_deep", "too_many_features"]
    predictions = json_records(read_all(bootstrap, config.topics.predictions))
    assert len(predictions) == sum(1 for e in events if "features" in e) + 2
    probabilities = [p for r in predictions for p in r["probabilities"].values()]
    assert all(isinstance(p, int | float) and p - p == 0 for p in probabilities)
    assert sum(c.future_ts for c in counters) == 1
    assert sum(c.dead_lettered.get("expired_label_id", 0) for c in counters) == 0


def test_a_record_too_big_for_the_dead_letter_topic_is_cut_and_the_worker_goes_on(
    config: Config,
) -> None:
    producer = Producer(
        {"bootstrap.servers": config.kafka.bootstrap_servers, "message.max.bytes": 1_048_000}
    )
    huge = b'{"id": "huge", "ts": 1.0, "features": {"x": "' + b"y" * 999_000 + b'"}}'
    producer.produce(config.topics.events, huge, b"huge")
    assert producer.flush(30) == 0
    events = breast_cancer(events=50, seed=7).events
    with running_worker(config) as worker:
        produce_events(config, events)
        wait_for(lambda: worker.stats.consumed == 51, what="the huge record and the rest")
    [dead] = read_all(config.kafka.bootstrap_servers, config.topics.dlq)
    headers = records.header_map(dead.headers())
    assert headers[records.DLQ_REASON] == "too_large"
    assert (
        int(headers[records.DLQ_TRUNCATED]) == len(huge)
        and dead.value() == huge[: len(dead.value())]
    )


def test_commands_naming_no_classifier_or_forging_log_lines_are_refused(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = registry_with_two_versions(config)
    not_a_model = registry.register(pickle.dumps({"not": "a model"}), cause="junk")
    monkeypatch.setenv(CONTROL_KEY_ENV, "k")
    forged_by = encode(Command("promote", 2, "ops\nERROR forged line", "x"), Signer(b"k"))
    bad_signature = orjson.dumps({"command": "promote", "version": 2, "signature": "é"})
    junk = encode(Command("promote", not_a_model, "ops", "junk"), Signer(b"k"))
    with running_worker(config) as worker:
        produce_events(config, breast_cancer(events=50, seed=8).events)
        wait_for(lambda: worker.stats.consumed == 50, what="events")
        produce_control(config, [forged_by, bad_signature, junk])
        refused = read_topic(
            config.kafka.bootstrap_servers,
            config.topics.alerts,
            lambda m: sum(r.get("type") == "control_refused" for r in json_records(m)) >= 3,
        )
        produce_events(
            config,
            [{**e, "id": f"more-{e['id']}"} for e in breast_cancer(events=20, seed=9).events],
        )
        wait_for(lambda: worker.stats.consumed == 70, what="events after the commands")
    reasons = [r["reason"] for r in json_records(refused) if r.get("type") == "control_refused"]
    assert "control characters" in reasons[0] and reasons[1].startswith("bad signature")
    assert "not a River classifier" in reasons[2]
