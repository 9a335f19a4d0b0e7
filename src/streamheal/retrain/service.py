"""``streamheal retrain``: once, or as a service on a schedule and on repeated drift.

Every run, whatever triggered it, goes through one lock (:class:`RetrainLock`): a trigger
that finds it held skips, because the run in progress serves it. Under the lock the
service re-reads the trigger state (:class:`TriggerState`) and checks again, so two
triggers that overlap (the schedule and a drift, or two services on one host) make one
run. A run records when it started (drift alerts up to then are served) and the schedule
slot it covered (slots missed while stopped or busy are folded into one catch-up run).
The state is written after the run: a process killed mid-run runs again when restarted.

A run prints its summary as one JSON line on stdout and logs one line on stderr. As a
service, the same numbers are Prometheus metrics on ``retrain.metrics_port``.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from streamheal.config import Config, ConfigError
from streamheal.cron import CronSchedule
from streamheal.metrics import MetricsServer
from streamheal.retrain.drift import AlertWatcher, DriftCount
from streamheal.retrain.lock import RetrainLock, TriggerState, lock_path, state_path
from streamheal.retrain.report import RetrainMetrics
from streamheal.retrain.run import log_line, retrain_once

log = logging.getLogger("streamheal.retrain")

EXIT_BUSY = 75  # sysexits.h EX_TEMPFAIL: another retrain holds the lock; nothing was done

Runner = Callable[[Config, str], dict[str, Any]]


def _default_runner(file: str | Path | None) -> Runner:
    return lambda config, trigger: retrain_once(config, trigger, file)


def emit(summary: dict[str, Any]) -> None:
    """The run's JSON line on stdout and its log line on stderr."""
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    sys.stdout.flush()
    level = logging.ERROR if summary["outcome"] == "failed" else logging.WARNING
    log.log(level, "%s", log_line(summary))


def run_once_locked(config: Config, file: str | Path | None = None) -> int:
    """``--once``: run now unless another retrain holds the lock (then exit 75 at once)."""
    lock = RetrainLock(lock_path(config))
    if not lock.acquire():
        print(
            f"streamheal retrain: another retrain is running (lock {lock.path} held by pid "
            f"{lock.holder() or '?'}); nothing done",
            file=sys.stderr,
        )
        return EXIT_BUSY
    try:
        summary = retrain_once(config, "once", file)
        state_file = state_path(lock.path)
        state = TriggerState.load(state_file)
        # Drift alerts before this run are served by it: a drift trigger does not repeat it.
        state.last_run_started_at = _epoch(summary["started_at"])
        state.save(state_file)
    finally:
        lock.release()
    emit(summary)
    return int(summary["exit_code"])


class RetrainService:
    """The long-running form: looks at its triggers every ``retrain.poll_seconds``.

    Parameters
    ----------
    config
        The whole config (``retrain``, ``registry``, ``topics``, ``model``, ...).
    schedule
        A cron schedule, or None.
    on_drift
        Whether to run after ``retrain.drift_alerts`` drift alerts (0 there turns it off).
    runner
        What a run is (tests and the CLI pass :func:`retrain_once` with its data source).
    clock
        Seconds since the epoch.
    """

    def __init__(
        self,
        config: Config,
        schedule: CronSchedule | None,
        on_drift: bool,
        runner: Runner | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        cfg = config.retrain
        self.config = config
        self.schedule = schedule
        self.runner = runner or _default_runner(None)
        self.clock = clock
        self.lock = RetrainLock(lock_path(config))
        self.state_file = state_path(self.lock.path)
        self.metrics = RetrainMetrics(cfg)
        self.drift: DriftCount | None = None
        self.watcher: AlertWatcher | None = None
        if on_drift and cfg.drift_alerts > 0:
            self.drift = DriftCount(
                cfg.drift_alerts,
                cfg.drift_window_seconds,
                config.alerts.group_window_seconds,
                cfg.drift_kinds,
            )
            self.watcher = AlertWatcher(config, self.drift, clock())
        self.runs = 0
        self.last_turn = time.monotonic()
        self._stop = threading.Event()
        self._busy_logged = False

    # ------------------------------------------------------------------ loop
    def run(self) -> None:
        """Until :meth:`stop` (a run in progress finishes first)."""
        try:
            while not self._stop.is_set():
                self.tick()
                self._stop.wait(self.config.retrain.poll_seconds)
        finally:
            if self.watcher is not None:
                self.watcher.close()

    def stop(self) -> None:
        self._stop.set()

    def healthy(self) -> bool:
        """The loop turned lately; a run may hold it for up to its time budget."""
        budget = self.config.retrain.time_budget_seconds
        return time.monotonic() - self.last_turn < budget + 60 * self.config.retrain.poll_seconds

    def tick(self) -> dict[str, Any] | None:
        """One look at the triggers; the run's summary when one ran."""
        self.last_turn = time.monotonic()
        if self.watcher is not None:
            self.watcher.poll()
        now = self.clock()
        state = TriggerState.load(self.state_file)
        self._report(state, now)
        if not self._origin_set(state) or not self._triggers(state, now):
            return None
        if not self.lock.acquire():
            if not self._busy_logged:  # once per busy spell, not once a second
                log.warning(
                    "retrain due but another one is running (lock %s, pid %s); it serves "
                    "this trigger",
                    self.lock.path,
                    self.lock.holder() or "?",
                )
                self.metrics.skipped.inc()
            self._busy_logged = True
            return None
        self._busy_logged = False
        try:
            # Under the lock, what the other holder did is on disk: judge again.
            state = TriggerState.load(self.state_file)
            now = self.clock()
            triggers = self._triggers(state, now)
            if not triggers:
                return None
            # The slots due now; one that falls during the run is due after it.
            slot = self.schedule.due(state.last_slot, now) if "schedule" in triggers else None
            summary = self.runner(self.config, "+".join(triggers))
            state.last_run_started_at = _epoch(summary["started_at"])
            if slot is not None:
                state.last_slot = slot
            state.save(self.state_file)
        finally:
            self.lock.release()
        self.runs += 1
        self.metrics.observe(summary)
        emit(summary)
        self._report(state, self.clock())
        return summary

    # ------------------------------------------------------------- triggers
    def _triggers(self, state: TriggerState, now: float) -> list[str]:
        due = []
        schedule = self.schedule
        last = state.last_slot
        if schedule is not None and last is not None and schedule.due(last, now) is not None:
            due.append("schedule")
        if self.drift is not None and self.drift.due(now, state.last_run_started_at):
            due.append("drift")
        return due

    def _origin_set(self, state: TriggerState) -> bool:
        """A schedule counts its slots from the first start (or from a change of the
        expression): nothing before that was ever due. False while that cannot be saved."""
        schedule = self.schedule
        if schedule is None or (
            state.last_slot is not None and state.schedule == schedule.expression
        ):
            return True
        if not self.lock.acquire():
            return False
        try:
            fresh = TriggerState.load(self.state_file)
            if fresh.last_slot is None or fresh.schedule != schedule.expression:
                fresh.last_slot = schedule.last_at_or_before(self.clock())
                fresh.schedule = schedule.expression
                fresh.save(self.state_file)
                log.info("schedule %r starts counting now", schedule.expression)
            state.last_slot, state.schedule = fresh.last_slot, fresh.schedule
        finally:
            self.lock.release()
        return True

    def _report(self, state: TriggerState, now: float) -> None:
        recent = self.drift.recent(now, state.last_run_started_at) if self.drift else 0
        next_slot = None
        if self.schedule is not None:
            next_slot = self.schedule.next_after(max(state.last_slot or now, 0.0))
        self.metrics.checked(recent, next_slot)


def retrain_command(
    config: Config,
    once: bool,
    schedule: str | None,
    on_drift: bool,
    file: Path | None,
) -> int:
    """The CLI's ``retrain``; raises :class:`ConfigError` for nothing to wait for."""
    if file is not None and not file.is_file():
        print(f"streamheal retrain: no such file {file}", file=sys.stderr)
        return 1
    if once:
        return run_once_locked(config, file)
    expression = (
        schedule if schedule is not None else (None if on_drift else config.retrain.schedule)
    )
    cron = CronSchedule(expression) if expression else None
    drift = on_drift or (schedule is None and config.retrain.drift_alerts > 0)
    if cron is None and not (drift and config.retrain.drift_alerts > 0):
        raise ConfigError(
            "retrain.drift_alerts: 0 turns the drift trigger off, and there is no "
            "retrain.schedule either: nothing to wait for (or give --once, --schedule CRON)"
        )
    from streamheal.kafka.admin import ensure_topics
    from streamheal.kafka.connect import BrokerUnavailable, require_topics, wait_for_cluster

    try:
        metadata = wait_for_cluster(config)
    except BrokerUnavailable as err:
        print(f"streamheal: {err}", file=sys.stderr)
        return 69
    # The alerts topic is read from the start; the others are read or written by each run.
    if config.topics.create:
        ensure_topics(config)
    else:
        require_topics(config, metadata, keys=["events", "alerts", "control"])
    service = RetrainService(config, cron, drift, _default_runner(file))
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: service.stop())
    cfg = config.retrain
    server = MetricsServer(
        service.metrics.registry, cfg.metrics_address, cfg.metrics_port, healthy=service.healthy
    )
    try:
        port = server.start()
        print(f"retrain: metrics on http://127.0.0.1:{port}/metrics", file=sys.stderr, flush=True)
    except OSError as err:
        log.error("retrain metrics not served on port %d: %s", cfg.metrics_port, err)
    log.warning(
        "retrain service: schedule %s, drift trigger %s",
        cron.expression if cron else "none",
        f"{cfg.drift_alerts} alerts of {'/'.join(cfg.drift_kinds)} in {cfg.drift_window_seconds:g}s"
        if drift
        else "off",
    )
    try:
        service.run()
    finally:
        server.close()
    return 0


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
