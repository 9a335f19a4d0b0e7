"""Batch retraining on the real broker: a scheduled run promotes a better candidate that a
running worker serves within one batch; a candidate trained on shuffled labels is rejected
(exit 3, an alert record, the champion keeps serving); three drift alerts make one run,
and overlapping triggers make one; a slot missed while the scheduler was stopped runs
once when it starts."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.request import urlopen

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from streamheal import models
from streamheal.config import Config
from streamheal.cron import CronSchedule
from streamheal.detectors.suite import Drift
from streamheal.kafka import records
from streamheal.registry import CHAMPION, Registry
from streamheal.retrain import EXIT_BUSY, EXIT_REJECTED, RetrainService, retrain_once
from streamheal.retrain.lock import RetrainLock, TriggerState, lock_path, state_path
from streamheal.scenarios import SCENARIOS
from tests.conftest import produce, read_all, read_topic, running_worker, values, wait_for

pytestmark = pytest.mark.kafka

TOPICS = ("events", "predictions", "alerts", "metrics", "dlq", "state", "control")
SUBPROCESS_DEADLINE = 600


def retrain_config(config: Config, tmp_path: Path) -> tuple[Config, Path]:
    """The test's config with a quick retrain service, and the same as a TOML file."""
    config = config.replace(
        retrain={"metrics_port": 0, "poll_seconds": 0.2, "min_holdout": 50},
        engine={"batch_size": 200},
        # The worker serves what it is told: no healing of its own to blur the versions.
        policy={"enabled": False},
        detectors={"enabled": False},
    )
    topics = config.topics
    path = tmp_path / "retrain.toml"
    path.write_text(
        f'[kafka]\nbootstrap_servers = "{config.kafka.bootstrap_servers}"\n'
        f'group_id = "{config.kafka.group_id}"\n[topics]\n'
        + "".join(f'{n} = "{getattr(topics, n)}"\n' for n in TOPICS)
        + f'partitions = 2\n[registry]\npath = "{config.registry.path}"\n'
        + "[retrain]\nmetrics_port = 0\npoll_seconds = 0.2\nmin_holdout = 50\n"
        + "[policy]\nenabled = false\n[detectors]\nenabled = false\n"
    )
    return config, path


def trained(events: list[dict], flip: bool = False) -> bytes:
    model = models.build_model(Config().model, seed=1)
    for event in events:
        if event.get("features") and event.get("label") is not None:
            label = bool(event["label"])
            model.learn_one(event["features"], not label if flip else label)
    return models.dumps(model)


def champion(config: Config, model: bytes) -> int:
    registry = Registry(config.registry.path, config.registry.model_name)
    version = registry.register(model, cause="trained offline")
    registry.promote(version)
    return version


def streamheal(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamheal.cli", *args]


@contextmanager
def service(args: list[str], tmp_path: Path, name: str) -> Iterator[dict]:
    """``streamheal retrain`` as a service; yields where its output goes and its metrics
    URL; stopped with SIGTERM (exit 0 expected) on the way out."""
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        process = subprocess.Popen(streamheal(*args), stdout=stdout, stderr=stderr)
    found: dict = {"out": out, "err": err}

    def metrics_url() -> bool:
        match = re.search(r"metrics on (http://\S+/metrics)", err.read_text())
        if match:
            found["metrics"] = match.group(1)
        assert process.poll() is None, err.read_text()
        return match is not None

    try:
        wait_for(metrics_url, timeout=120, what=f"{name} to serve its metrics")
        yield found
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=SUBPROCESS_DEADLINE)
        assert code == 0, err.read_text()


def scrape(url: str, name: str, **labels: str) -> float:
    wanted = name + (
        "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    )
    for line in urlopen(url, timeout=10).read().decode().splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def summaries(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_a_scheduled_run_promotes_a_better_candidate_that_a_running_worker_serves(
    config: Config, tmp_path: Path
) -> None:
    config, path = retrain_config(config, tmp_path)
    events = SCENARIOS["stationary"](events=5000, seed=11, label_delay=20).events
    first, second = events[:8000], events[8000:]
    bad = champion(config, trained(first, flip=True))
    bootstrap = config.kafka.bootstrap_servers
    registry = Registry(config.registry.path, config.registry.model_name)
    with running_worker(config):
        produce(config, first)
        read_topic(bootstrap, config.topics.predictions, lambda m: len(m) >= 4000)
        with service(["retrain", "-c", str(path), "--schedule", "* * * * * */3"], tmp_path, "s"):
            wait_for(lambda: registry.alias(CHAMPION) != bad, timeout=120, what="a promotion")
            promoted = registry.alias(CHAMPION)
            read_topic(
                bootstrap,
                config.topics.alerts,
                lambda m: sum(v.get("action") == "install" for v in values(m)) == 2,
            )
        produce(config, second)
        predictions = read_topic(
            bootstrap, config.topics.predictions, lambda m: len(m) >= 5000, timeout=120
        )
    run = summaries(tmp_path / "s.out")[0]
    assert run["trigger"] == "schedule" and run["outcome"] == "promoted"
    assert run["candidate_version"] == promoted and run["champion_version"] == bad
    assert run["metrics"]["candidate"]["accuracy"] > run["metrics"]["champion"]["accuracy"] + 0.5
    assert run["window"]["labeled"] >= 3900  # delayed labels joined with their features
    meta = registry.meta(promoted)
    assert meta["tags"]["candidate"] == "true" and meta["tags"]["decision"] == "promoted"
    assert meta["metrics"]["candidate"]["holdout"] == run["window"]["holdout"]
    fresh = {e["id"] for e in second if e.get("features")}  # scored after the promotion
    later = [v for v in values(predictions) if v["id"] in fresh]
    assert later and all(v["model_version"] == promoted for v in later)
    assert registry.alias(CHAMPION) == promoted  # later runs on the same data do not win


def test_a_candidate_trained_on_shuffled_labels_is_rejected_and_the_champion_keeps_serving(
    config: Config, tmp_path: Path
) -> None:
    config, path = retrain_config(config, tmp_path)
    events = SCENARIOS["stationary"](events=3000, seed=12).events  # labels inline
    good = champion(config, trained(events[:1000]))
    # A labeling bug, fixed late: the first 80% of the window have their labels shuffled,
    # the newest 20% (the holdout) are right.
    labels = np.random.default_rng(3).permutation([e["label"] for e in events[:2400]])
    window = [{**e, "label": int(y)} for e, y in zip(events[:2400], labels, strict=True)]
    window += events[2400:]
    bootstrap = config.kafka.bootstrap_servers
    with running_worker(config):
        produce(config, window)
        result = subprocess.run(
            streamheal("retrain", "-c", str(path), "--once"),
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_DEADLINE,
        )
        assert result.returncode == EXIT_REJECTED, result.stderr
        assert "rejected" in result.stderr  # the log line
        more = SCENARIOS["stationary"](events=400, seed=13).events
        produce(config, [{**e, "id": "late-" + e["id"]} for e in more])
        predictions = read_topic(
            bootstrap, config.topics.predictions, lambda m: len(m) >= 3400, timeout=120
        )
    summary = orjson.loads(result.stdout)
    assert summary["outcome"] == "rejected" and summary["exit_code"] == EXIT_REJECTED
    candidate, held = summary["metrics"]["candidate"], summary["metrics"]["champion"]
    assert candidate["holdout"] == 600 and held["accuracy"] > candidate["accuracy"] + 0.1
    assert "does not beat the champion" in summary["gate"]["reasons"][0]
    registry = Registry(config.registry.path, config.registry.model_name)
    assert registry.alias(CHAMPION) == good
    assert registry.meta(summary["candidate_version"])["tags"]["decision"] == "rejected"
    notices = [v for v in values(read_all(bootstrap, config.topics.alerts)) if "notice" in v]
    rejected = [n for n in notices if n["notice"] == "retrain_rejected"]
    assert len(rejected) == 1
    assert rejected[0]["detail"]["candidate"]["accuracy"] == candidate["accuracy"]
    assert rejected[0]["model_version"] == good and "retraining rejected" in rejected[0]["message"]
    assert read_all(bootstrap, config.topics.control, partitions=1) == []  # no command
    assert {v["model_version"] for v in values(predictions)} == {good}


def drift_alert(kind: str, feature: str | None, partition: int) -> bytes:
    drift = Drift(
        status="firing",
        kind=kind,
        signal="feature" if feature else "error",
        feature=feature,
        detector="cusum" if feature else "adwin",
        statistic=9.0,
        p_value=None,
        threshold=3.0,
        started_index=100,
        confirmed_index=200,
        offset=200,
        partition=partition,
        model_version=1,
    )
    return records.drift(drift)


def send_alerts(config: Config, alerts: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": config.kafka.bootstrap_servers, "acks": "all"})
    for value in alerts:
        producer.produce(config.topics.alerts, value, b"drift")
    assert producer.flush(30) == 0


def test_three_drift_alerts_inside_the_window_trigger_one_retrain(
    config: Config, tmp_path: Path
) -> None:
    config, path = retrain_config(config, tmp_path)
    produce(config, SCENARIOS["stationary"](events=2000, seed=14).events)
    registry = Registry(config.registry.path, config.registry.model_name)
    send_alerts(
        config,
        [
            drift_alert("covariate", "mean radius", 0),
            drift_alert("covariate", "mean radius", 1),  # the same drift in partition 1
            drift_alert("confidence", None, 0),  # a kind retrain.drift_kinds leaves out
            drift_alert("concept", None, 0),
        ],
    )
    with service(["retrain", "-c", str(path), "--on-drift"], tmp_path, "d") as svc:
        url = svc["metrics"]
        wait_for(lambda: scrape(url, "streamheal_retrain_drift_alerts") == 2, what="2 alerts")
        assert registry.versions() == []
        send_alerts(config, [drift_alert("prior", None, 1)])
        wait_for(lambda: len(registry.versions()) == 1, timeout=120, what="one retrain")

        def settled() -> bool:  # a turn of the loop after the run, the alerts used up
            return (
                scrape(url, "streamheal_retrain_runs_total", outcome="promoted") == 1
                and scrape(url, "streamheal_retrain_drift_alerts") == 0
                and scrape(url, "streamheal_retrain_last_check_timestamp_seconds")
                > scrape(url, "streamheal_retrain_last_run_timestamp_seconds")
            )

        wait_for(settled, what="the service to look again after its run")
        assert scrape(url, "streamheal_retrain_holdout_examples") == 400
        assert urlopen(url.replace("/metrics", "/healthz"), timeout=10).read() == b"ok\n"
    assert len(registry.versions()) == 1
    [run] = summaries(tmp_path / "d.out")
    assert run["trigger"] == "drift" and run["outcome"] == "promoted"


def test_two_overlapping_triggers_produce_one_retrain(config: Config, tmp_path: Path) -> None:
    config, path = retrain_config(config, tmp_path)
    produce(config, SCENARIOS["stationary"](events=2000, seed=15).events)
    send_alerts(config, [drift_alert(k, None, 0) for k in ("concept", "prior", "covariate")])
    inside, release = threading.Event(), threading.Event()

    def slow_run(cfg: Config, trigger: str) -> dict:
        inside.set()
        assert release.wait(SUBPROCESS_DEADLINE)
        return retrain_once(cfg, trigger)

    first = RetrainService(config, None, True, slow_run)
    second = RetrainService(config, None, True, lambda cfg, trigger: retrain_once(cfg, trigger))
    for svc in (first, second):
        wait_for(
            lambda svc=svc: svc.watcher.poll() >= 0 and svc.drift.due(time.time(), None),
            what="the drift alerts",
        )
    running = threading.Thread(target=first.tick)
    running.start()
    try:
        assert inside.wait(SUBPROCESS_DEADLINE)
        assert second.tick() is None  # the lock is held: the run in progress serves it
        busy = subprocess.run(
            streamheal("retrain", "-c", str(path), "--once"),
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_DEADLINE,
        )
        assert busy.returncode == EXIT_BUSY, busy.stderr
    finally:
        release.set()
        running.join(timeout=SUBPROCESS_DEADLINE)
    assert second.tick() is None and first.tick() is None  # served by the one run
    registry = Registry(config.registry.path, config.registry.model_name)
    assert len(registry.versions()) == 1
    assert first.runs == 1 and second.runs == 0
    for svc in (first, second):
        svc.watcher.close()


def test_a_run_due_while_the_scheduler_was_stopped_runs_once_after_it_starts(
    config: Config, tmp_path: Path
) -> None:
    config, path = retrain_config(config, tmp_path)
    produce(config, SCENARIOS["stationary"](events=2000, seed=16).events)
    daily = CronSchedule("0 0 * * *")
    now = time.time()
    # The scheduler last ran two days ago and was stopped since: two midnights missed.
    two_days_ago = daily.last_at_or_before(now - 2 * 86400)
    TriggerState(last_slot=two_days_ago, schedule=daily.expression).save(
        state_path(lock_path(config))
    )
    registry = Registry(config.registry.path, config.registry.model_name)
    with service(["retrain", "-c", str(path), "--schedule", "0 0 * * *"], tmp_path, "c") as svc:
        wait_for(lambda: len(registry.versions()) == 1, timeout=120, what="the catch-up run")
        url = svc["metrics"]
        wait_for(
            lambda: (
                scrape(url, "streamheal_retrain_last_check_timestamp_seconds")
                > scrape(url, "streamheal_retrain_last_run_timestamp_seconds")
                and scrape(url, "streamheal_retrain_runs_total", outcome="promoted") == 1
            ),
            what="a turn of the loop after the run",
        )
        next_slot = scrape(url, "streamheal_retrain_next_scheduled_timestamp_seconds")
    assert len(registry.versions()) == 1  # one run for both missed midnights
    [run] = summaries(tmp_path / "c.out")
    assert run["trigger"] == "schedule"
    state = TriggerState.load(state_path(lock_path(config)))
    assert state.last_slot == daily.last_at_or_before(now)
    assert next_slot == daily.next_after(now)
    assert datetime.fromtimestamp(next_slot, UTC) - datetime.now(UTC) < timedelta(days=1)


def test_a_run_from_a_jsonl_file_ignores_a_stale_lock_file(config: Config, tmp_path: Path) -> None:
    config, _ = retrain_config(config, tmp_path)
    window = tmp_path / "window.jsonl"
    events = SCENARIOS["stationary"](events=1000, seed=17, label_delay=10).events
    window.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    lock = RetrainLock(lock_path(config))
    assert lock.acquire()
    lock.release()
    lock.path.write_text(f"{os.getpid() + 10**6}\n")  # a pid nobody has: only flock counts
    summary = retrain_once(config, "once", window)
    assert summary["outcome"] == "promoted", summary["error"]
    assert summary["window"]["kind"] == "file" and summary["window"]["labeled"] == 1000


def test_a_count_window_reads_only_the_end_of_the_topic_and_keeps_the_newest(
    config: Config, tmp_path: Path
) -> None:
    config, _ = retrain_config(config, tmp_path)
    events = SCENARIOS["stationary"](events=3000, seed=18).events  # labels inline
    produce(config, events)
    summary = retrain_once(config.replace(retrain={"window_count": 200, "min_holdout": 20}))
    assert summary["outcome"] == "promoted", summary["error"]
    window = summary["window"]
    assert window["examples"] == 200 and window["train"] == 160 and window["holdout"] == 40
    assert window["records"] < 3000  # not the whole topic: about 2 x 200 per partition
    assert window["last_ts"] == max(e["ts"] for e in events)
    assert window["first_ts"] == sorted(e["ts"] for e in events)[-200]


def test_a_service_whose_topics_are_missing_with_create_false_stops_with_exit_78(
    config: Config, tmp_path: Path
) -> None:
    path = tmp_path / "missing.toml"
    path.write_text(
        f'[kafka]\nbootstrap_servers = "{config.kafka.bootstrap_servers}"\n'
        f'[topics]\ncreate = false\nalerts = "{config.topics.alerts}-missing"\n'
        f'[registry]\npath = "{tmp_path / "registry"}"\n'
    )
    result = subprocess.run(
        streamheal("retrain", "-c", str(path), "--on-drift"),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_DEADLINE,
    )
    assert result.returncode == 78
    assert f"topics.alerts = '{config.topics.alerts}-missing'" in result.stderr
