"""Batch retraining without a broker: the gate, cron slots and catch-up, the lock, the
bounded window, the label join against the worker's Engine, the CLI, the examples."""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamheal.config import Config, ConfigError, RetrainConfig, load_config
from streamheal.cron import CronSchedule, ScheduleError
from streamheal.engine import Engine
from streamheal.events import Source as EventSource
from streamheal.events import decode, encode
from streamheal.retrain import EXIT_BUSY, EXIT_FAILED, EXIT_PROMOTED, EXIT_REJECTED
from streamheal.retrain.evaluate import Scores, score, split
from streamheal.retrain.gate import Gate
from streamheal.retrain.lock import RetrainLock, TriggerState, lock_path, state_path
from streamheal.retrain.run import log_line
from streamheal.retrain.service import RetrainService
from streamheal.retrain.window import BoundedWindow, Example, WindowJoin, WindowTooLarge

ROOT = Path(__file__).resolve().parent.parent


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# ---------------------------------------------------------------------- gate
def scores(accuracy: float, holdout: int = 500, **extra: Any) -> Scores:
    return Scores(accuracy=accuracy, log_loss=extra.pop("log_loss", 0.3), holdout=holdout, **extra)


def test_the_first_model_ever_passes_on_the_absolute_floors_alone() -> None:
    gate = Gate(RetrainConfig(min_accuracy=0.8))
    assert gate.judge(scores(0.85), None).passed
    verdict = gate.judge(scores(0.75), None)
    assert not verdict.passed and "retrain.min_accuracy" in verdict.reasons[0]


@pytest.mark.parametrize(
    ("kind", "margin", "champion", "candidate", "passed"),
    [
        ("absolute", 0.02, 0.90, 0.92, True),  # exactly the margin is enough
        ("absolute", 0.02, 0.90, 0.919, False),
        ("relative", 0.05, 0.80, 0.84, True),  # 0.80 * 1.05
        ("relative", 0.05, 0.80, 0.839, False),
        ("absolute", 0.0, 0.90, 0.90, True),  # margin 0: a tie promotes
    ],
)
def test_a_candidate_must_beat_the_champion_by_the_margin(
    kind: str, margin: float, champion: float, candidate: float, passed: bool
) -> None:
    gate = Gate(RetrainConfig(margin=margin, margin_kind=kind))
    verdict = gate.judge(scores(candidate), scores(champion))
    assert verdict.passed is passed
    assert verdict.required_accuracy == pytest.approx(
        champion + margin if kind == "absolute" else champion * (1 + margin)
    )
    if not passed:
        assert "does not beat the champion" in verdict.reasons[0]


def test_the_gate_refuses_a_small_holdout_a_weak_class_and_a_high_log_loss() -> None:
    gate = Gate(RetrainConfig(min_holdout=200, min_class_recall=0.5, max_log_loss=0.5))
    weak = scores(0.95, holdout=150, log_loss=0.9, recall={"0": 0.2, "1": 0.99})
    reasons = gate.judge(weak, None).reasons
    assert len(reasons) == 3
    assert "retrain.min_holdout" in reasons[0]
    assert "class 0" in reasons[1] and "retrain.min_class_recall" in reasons[1]
    assert "retrain.max_log_loss" in reasons[2]


class _Constant:
    """A classifier that always says P(True) = 0.8."""

    def predict_proba_one(self, x: dict) -> dict:
        return {False: 0.2, True: 0.8}


def test_holdout_scores_are_accuracy_log_loss_recall_and_size() -> None:
    holdout = [Example(float(i), {}, i < 3, 0) for i in range(4)]  # 3 True, 1 False
    result = score(_Constant(), holdout)
    assert result.accuracy == 0.75 and result.holdout == 4
    assert result.log_loss == pytest.approx(-(3 * math.log(0.8) + math.log(0.2)) / 4, abs=1e-6)
    assert result.recall == {"0": 0.0, "1": 1.0}


def test_the_holdout_is_the_newest_share_and_never_trained_on() -> None:
    rows = [Example(float(i), {}, True, 0) for i in range(10)]
    train, holdout = split(rows, 0.3)
    assert [r.ts for r in holdout] == [7.0, 8.0, 9.0]
    assert max(r.ts for r in train) < min(r.ts for r in holdout)


# ------------------------------------------------------------ cron and catch-up
def test_a_cron_expression_names_its_slots_in_utc_with_optional_seconds() -> None:
    daily = CronSchedule("0 3 * * *")
    assert daily.next_after(at("2026-11-28T03:00")) == at("2026-11-29T03:00")
    assert daily.last_at_or_before(at("2026-11-28T03:00")) == at("2026-11-28T03:00")
    every_five = CronSchedule("* * * * * */5")
    assert every_five.next_after(at("2026-11-28T10:00:01")) == at("2026-11-28T10:00:05")


@pytest.mark.parametrize("text", ["", "61 * * * *", "* * *", "0 0 31 2 *", "every day"])
def test_a_bad_cron_expression_is_refused(text: str) -> None:
    with pytest.raises(ScheduleError):
        CronSchedule(text)


def test_missed_slots_fold_into_one_run_and_none_runs_twice() -> None:
    hourly = CronSchedule("0 * * * *")
    slot = hourly.due(at("2026-11-28T01:00"), at("2026-11-28T05:30"))
    assert slot == at("2026-11-28T05:00")  # 02:00 .. 05:00 missed: one run, named by 05:00
    assert hourly.due(slot, at("2026-11-28T05:59")) is None
    assert hourly.due(slot, at("2026-11-28T06:00")) == at("2026-11-28T06:00")


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def fake_runner(clock: FakeClock, runs: list[str], takes: float = 0.0) -> Any:
    def run(config: Config, trigger: str) -> dict[str, Any]:
        started = clock.now
        runs.append(trigger)
        clock.now += takes
        return {
            "run_id": f"r{len(runs)}",
            "trigger": trigger,
            "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
            "outcome": "promoted",
            "exit_code": 0,
            "seconds": takes,
            "candidate_version": len(runs),
            "champion_after": len(runs),
            "window": {"examples": 10},
            "metrics": {"candidate": None, "champion": None},
            "budget": {"peak_rss_bytes": 1},
        }

    return run


def service(tmp_path: Path, clock: FakeClock, runs: list[str], takes: float = 0.0):
    config = Config().replace(retrain={"lock_path": str(tmp_path / "retrain.lock")})
    return RetrainService(
        config, CronSchedule("0 * * * *"), False, fake_runner(clock, runs, takes), clock
    )


def test_a_schedule_counts_from_its_first_start_and_runs_each_slot_once(tmp_path: Path) -> None:
    clock, runs = FakeClock(at("2026-11-28T10:20")), []
    scheduler = service(tmp_path, clock, runs)
    assert scheduler.tick() is None  # nothing before the first start was ever due
    clock.now = at("2026-11-28T10:59")
    assert scheduler.tick() is None
    clock.now = at("2026-11-28T11:00:01")
    assert scheduler.tick()["trigger"] == "schedule"
    assert scheduler.tick() is None
    assert runs == ["schedule"]


def test_a_run_due_while_the_scheduler_was_stopped_runs_once_when_it_starts(
    tmp_path: Path,
) -> None:
    clock, runs = FakeClock(at("2026-11-28T10:20")), []
    service(tmp_path, clock, runs).tick()  # first start, then stopped for three slots
    clock.now = at("2026-11-28T13:30")
    restarted = service(tmp_path, clock, [])
    restarted.runner = fake_runner(clock, runs)
    assert restarted.tick()["trigger"] == "schedule"
    assert restarted.tick() is None
    assert runs == ["schedule"]
    state = TriggerState.load(state_path(restarted.lock.path))
    assert state.last_slot == at("2026-11-28T13:00")


def test_a_slot_that_falls_during_a_run_runs_once_after_it(tmp_path: Path) -> None:
    clock, runs = FakeClock(at("2026-11-28T10:20")), []
    scheduler = service(tmp_path, clock, runs, takes=2 * 3600)  # a run takes two hours
    scheduler.tick()
    clock.now = at("2026-11-28T11:00")
    scheduler.tick()  # runs until 13:00: 12:00 and 13:00 fell meanwhile
    scheduler.runner = fake_runner(clock, runs)  # quick from now on
    assert scheduler.tick()["started_at"].startswith("2026-11-28T13:00")  # both, once
    assert scheduler.tick() is None
    assert runs == ["schedule", "schedule"]


def test_a_trigger_that_finds_the_lock_held_skips_and_counts_it(tmp_path: Path) -> None:
    clock, runs = FakeClock(at("2026-11-28T10:20")), []
    scheduler = service(tmp_path, clock, runs)
    scheduler.tick()
    clock.now = at("2026-11-28T11:00")
    with RetrainLock(tmp_path / "retrain.lock") as other:
        assert other.acquire()
        assert scheduler.tick() is None and scheduler.tick() is None
    assert runs == []
    assert scheduler.tick() is not None  # still due once the lock is free
    assert runs == ["schedule"]


# ---------------------------------------------------------------------- lock
def test_the_lock_admits_one_holder_and_frees_itself_when_its_holder_dies(
    tmp_path: Path,
) -> None:
    path = tmp_path / "deep" / "retrain.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from streamheal.retrain.lock import RetrainLock; "
            f"lock = RetrainLock({str(path)!r}); assert lock.acquire(); print('held', flush=True); "
            "sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        mine = RetrainLock(path)
        assert not mine.acquire()
        assert mine.holder() == str(holder.pid)
    finally:
        holder.kill()
        holder.wait(timeout=600)
    assert mine.acquire()  # the kernel dropped the dead holder's lock
    mine.release()


def test_the_lock_defaults_beside_the_registry_and_keeps_its_state_beside_it() -> None:
    config = Config().replace(registry={"path": "/srv/registry", "model_name": "fraud"})
    assert lock_path(config) == Path("/srv/registry/fraud.retrain.lock")
    assert state_path(lock_path(config)).name == "fraud.retrain.lock.state.json"


def test_a_corrupt_state_file_reads_as_a_fresh_state(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text("{not json")
    assert TriggerState.load(path) == TriggerState()
    TriggerState(last_run_started_at=5.0).save(path)
    assert TriggerState.load(path).last_run_started_at == 5.0


# --------------------------------------------------------------------- window
def test_a_window_past_its_caps_is_refused_with_the_keys_to_change() -> None:
    strict = BoundedWindow(max_examples=100, max_bytes=1000, overflow="refuse")
    with pytest.raises(WindowTooLarge, match=r"retrain\.max_memory_mb.*retrain\.overflow"):
        for i in range(20):
            strict.add(Example(float(i), {}, True, 100))


def test_a_sampled_window_is_seeded_uniform_bounded_and_in_time_order() -> None:
    def sample(seed: int) -> list[float]:
        window = BoundedWindow(max_examples=50, max_bytes=10**9, overflow="sample", seed=seed)
        for i in range(5000):
            window.add(Example(float(i), {}, True, 10))
        assert len(window._heap) == 50 and window.bytes == 500
        return [e.ts for e in window.examples()]

    first = sample(1)
    assert first == sample(1) and first != sample(2)
    assert first == sorted(first)
    assert 1000 < sum(first) / len(first) < 4000  # from all over the stream, not its end


def test_a_count_window_keeps_the_newest_examples() -> None:
    window = BoundedWindow(max_examples=1000, max_bytes=10**9, newest=3)
    for ts in [5.0, 1.0, 9.0, 7.0, 2.0, 8.0]:
        window.add(Example(ts, {}, True, 1))
    assert [e.ts for e in window.examples()] == [7.0, 8.0, 9.0]


class _Recorder:
    """Stands in for the Engine's model and records what it learns."""

    def __init__(self, model: Any, learned: list) -> None:
        self.model, self.learned = model, learned

    def learn_one(self, x: dict, y: Any) -> None:
        self.learned.append((dict(x), y))
        self.model.learn_one(x, y)

    def predict_proba_one(self, x: dict) -> dict:
        return self.model.predict_proba_one(x)


def test_the_window_joins_exactly_the_pairs_the_worker_learns() -> None:
    config = Config().replace(
        engine={"join_max_age_seconds": 50.0, "join_buffer_size": 1000},
        detectors={"enabled": False},
        policy={"enabled": False},
        guards={"check_model": False, "reference_size": 20},
    )
    events: list[dict] = []
    for i in range(300):
        x = 1e6 if i == 150 else float(i % 7)  # one outlier the guard clips
        events.append({"id": f"e{i}", "ts": float(i), "features": {"x": x, "c": "ab"[i % 2]}})
        if i % 3 == 0:
            events.append({"id": f"e{i}", "ts": float(i), "label": i % 2})  # on time
        elif i % 3 == 1 and i >= 5:
            events.append({"id": f"e{i - 5}", "ts": float(i), "label": (i - 5) % 2})  # late
    events += [
        {"id": "nobody", "ts": 300.0, "label": 1},  # unknown id
        {"id": "e0", "ts": 300.0, "label": 1},  # duplicate
        {"id": "e299", "ts": 300.0, "label": 2},  # not 0/1: features keep waiting
        {"id": "e298", "ts": 301.0, "features": {"x": 1.0}, "label": 1},  # labeled inline
        {"id": "e1", "ts": 302.0, "label": 1},  # expired long ago
    ]
    decoded = [decode(encode(e), EventSource("t", 0, n)) for n, e in enumerate(events)]
    engine = Engine(config)
    learned: list = []
    engine.serving.repair(_Recorder(engine.model, learned))  # the same version, recorded
    engine.process(decoded)
    joiner = WindowJoin(config)
    examples = [x for x in (joiner.take(e) for e in decoded) if x is not None]
    assert [(e.features, e.label) for e in examples] == learned
    assert len(learned) > 150 and {True, False} == {label for _, label in learned}
    assert max(e.features["x"] for e in examples) < 1e6  # clipped as the worker clips it
    # What the window leaves out is what the worker dead-letters, reason by reason.
    assert joiner.skipped == {str(k): v for k, v in engine.counters.dead_lettered.items()}
    assert set(joiner.skipped) == {
        "unknown_label_id",
        "duplicate_label",
        "bad_label",
        "expired_label_id",
    }


# ---------------------------------------------------------------- CLI, config
def streamheal(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "streamheal.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["retrain", "--schedule", "61 * * * *"],
        ["retrain", "--once", "--schedule", "0 3 * * *"],
        ["retrain", "--once", "--on-drift"],
        ["retrain", "--bogus"],
    ],
)
def test_a_bad_retrain_command_line_prints_usage_and_exits_2(args: list[str]) -> None:
    result = streamheal(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: streamheal")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('schedule = "0 25 * * *"', "retrain.schedule: expected a cron expression"),
        ('drift_kinds = ["concept", "weather"]', "retrain.drift_kinds: expected a non-empty"),
        ('margin_kind = "percent"', "retrain.margin_kind: expected one of 'absolute'"),
        ("holdout_share = 1.0", "retrain.holdout_share: expected a number in (0, 1)"),
        ('overflow = "drop"', "retrain.overflow: expected one of 'refuse', 'sample'"),
        ("window_seconds = 0", "retrain.window_seconds: expected a number of seconds >= 1"),
    ],
)
def test_a_bad_retrain_config_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[retrain]\n{text}\n")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(path, env={})


def test_a_service_with_nothing_to_wait_for_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[retrain]\ndrift_alerts = 0\n")
    result = streamheal("retrain", "-c", str(path))
    assert result.returncode == 78
    assert "retrain.drift_alerts" in result.stderr


def test_the_shipped_config_documents_every_retrain_key() -> None:
    shipped = load_config(ROOT / "config" / "streamheal.toml", env={})
    assert shipped.retrain == RetrainConfig()
    rows = [
        line.split("|")[1]
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith("| `retrain.")
    ]
    documented = set()
    for row in rows:  # "`retrain.min_holdout` / `.min_accuracy`" names both
        documented.update(re.findall(r"`(?:retrain)?\.(\w+)`", row))
    assert documented == set(RetrainConfig.__dataclass_fields__)


def test_a_run_summary_makes_one_log_line() -> None:
    summary = {
        "run_id": "r1",
        "trigger": "drift",
        "outcome": "rejected",
        "candidate_version": 4,
        "champion_version": 3,
        "metrics": {"candidate": {"accuracy": 0.6, "holdout": 400}, "champion": {"accuracy": 0.9}},
        "window": {"examples": 2000},
        "seconds": 1.5,
        "error": None,
    }
    assert log_line(summary) == (
        "retrain r1 (drift) rejected v4: accuracy 0.6 vs champion v3 0.9 on 400 holdout "
        "examples; 2000 examples in 1.5s"
    )


# ------------------------------------------------------------------- examples
def test_the_airflow_dag_imports_without_airflow_and_maps_exit_codes(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "airflow", None)  # `import airflow` raises ImportError
    spec = importlib.util.spec_from_file_location("dag", ROOT / "examples/airflow_retrain_dag.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.DAG is None and module.dag is None
    assert "streamheal retrain --once" in module.COMMAND
    assert (module.EXIT_PROMOTED, module.EXIT_FAILED, module.EXIT_REJECTED, module.EXIT_BUSY) == (
        EXIT_PROMOTED,
        EXIT_FAILED,
        EXIT_REJECTED,
        EXIT_BUSY,
    )
    assert [module.outcome(c) for c in (0, 3, 75, 1, 69)] == [
        "success",
        "skipped",
        "skipped",
        "failed",
        "failed",
    ]
    CronSchedule(module.SCHEDULE)


def test_the_github_actions_workflow_parses_and_acts_on_the_exit_code() -> None:
    workflow = yaml.safe_load((ROOT / "examples/github-actions-retrain.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    CronSchedule(triggers["schedule"][0]["cron"])
    assert workflow["concurrency"]["cancel-in-progress"] is False
    steps = workflow["jobs"]["retrain"]["steps"]
    script = next(s["run"] for s in steps if s.get("id") == "retrain")
    assert "streamheal retrain --once" in script
    for code in (EXIT_PROMOTED, EXIT_REJECTED, EXIT_BUSY):
        assert f"\n  {code})" in script


def test_a_locked_once_run_exits_busy_without_touching_anything(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    lock = tmp_path / "r.lock"
    path.write_text(f'[retrain]\nlock_path = "{lock}"\n')
    held = RetrainLock(lock)
    assert held.acquire()
    try:
        result = streamheal("retrain", "-c", str(path), "--once")
    finally:
        held.release()
    assert result.returncode == EXIT_BUSY
    assert "another retrain is running" in result.stderr and result.stdout == ""


def test_concurrent_ticks_share_one_lock(tmp_path: Path) -> None:
    clock, runs = FakeClock(at("2026-11-28T10:20")), []
    first = service(tmp_path, clock, runs)
    second = service(tmp_path, clock, runs)
    first.tick()
    clock.now = at("2026-11-28T11:00")
    threads = [threading.Thread(target=s.tick) for s in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert runs == ["schedule"]


def test_the_schedule_and_a_drift_due_together_make_one_run(tmp_path: Path) -> None:
    from streamheal.retrain.drift import DriftCount

    clock, runs = FakeClock(at("2026-11-28T10:20")), []
    both = service(tmp_path, clock, runs)
    both.drift = DriftCount(needed=2, window_seconds=3600, group_seconds=30)
    both.tick()
    fire = {"type": "drift", "status": "firing", "kind": "concept"}
    both.drift.take({**fire, "key": "a"}, at=at("2026-11-28T10:50"))
    both.drift.take({**fire, "key": "b"}, at=at("2026-11-28T10:55"))
    clock.now = at("2026-11-28T11:00")
    assert both.tick()["trigger"] == "schedule+drift"
    assert both.tick() is None
    assert runs == ["schedule+drift"]
