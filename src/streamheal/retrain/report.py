"""The service's Prometheus metrics: the numbers of every run summary, and its triggers.

>>> metrics = RetrainMetrics()
>>> metrics.observe({"outcome": "rejected", "seconds": 2.5, "candidate_version": 4,
...                  "champion_after": 3, "window": {"examples": 900},
...                  "metrics": {"candidate": {"accuracy": 0.5, "log_loss": 0.7, "holdout": 180},
...                              "champion": {"accuracy": 0.9, "log_loss": 0.3, "holdout": 180}},
...                  "budget": {"peak_rss_bytes": 1e8}})
>>> sample_value(metrics.registry, "streamheal_retrain_runs_total", outcome="rejected")
1.0
>>> sample_value(metrics.registry, "streamheal_retrain_holdout_accuracy", model="champion")
0.9
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from streamheal.config import RetrainConfig
from streamheal.metrics import sample_value

__all__ = ["RetrainMetrics", "sample_value"]

OUTCOMES = ("promoted", "rejected", "failed")


class RetrainMetrics:
    """Gauges and counters of ``streamheal retrain`` as a service (one registry per instance)."""

    def __init__(self, cfg: RetrainConfig | None = None) -> None:
        self.registry = r = CollectorRegistry()
        self.runs = Counter(
            "streamheal_retrain_runs", "Retraining runs, by outcome.", ["outcome"], registry=r
        )
        self.skipped = Counter(
            "streamheal_retrain_busy_skips",
            "Triggers that found another retrain holding the lock (that run serves them).",
            registry=r,
        )
        self.last_run = Gauge(
            "streamheal_retrain_last_run_timestamp_seconds",
            "Unix time the last run finished.",
            registry=r,
        )
        self.duration = Gauge(
            "streamheal_retrain_last_duration_seconds", "How long the last run took.", registry=r
        )
        self.accuracy = Gauge(
            "streamheal_retrain_holdout_accuracy",
            "Accuracy on the last run's holdout (model = candidate or champion).",
            ["model"],
            registry=r,
        )
        self.log_loss = Gauge(
            "streamheal_retrain_holdout_log_loss",
            "Log loss on the last run's holdout (model = candidate or champion).",
            ["model"],
            registry=r,
        )
        self.holdout = Gauge(
            "streamheal_retrain_holdout_examples", "Examples in the last holdout.", registry=r
        )
        self.examples = Gauge(
            "streamheal_retrain_window_examples",
            "Labeled examples in the last run's window (after any sampling).",
            registry=r,
        )
        self.candidate = Gauge(
            "streamheal_retrain_candidate_version",
            "Registry version of the last candidate.",
            registry=r,
        )
        self.champion = Gauge(
            "streamheal_retrain_champion_version",
            "The champion after the last run.",
            registry=r,
        )
        self.peak_rss = Gauge(
            "streamheal_retrain_peak_rss_bytes",
            "Peak resident memory of the process so far.",
            registry=r,
        )
        self.drift_alerts = Gauge(
            "streamheal_retrain_drift_alerts",
            "Confirmed drift alerts counted towards the next triggered run.",
            registry=r,
        )
        self.next_slot = Gauge(
            "streamheal_retrain_next_scheduled_timestamp_seconds",
            "Unix time of the next schedule slot (0 without a schedule).",
            registry=r,
        )
        self.last_check = Gauge(
            "streamheal_retrain_last_check_timestamp_seconds",
            "Unix time the service last looked at its triggers (liveness).",
            registry=r,
        )
        cfg = cfg or RetrainConfig()
        Gauge(
            "streamheal_retrain_time_budget_seconds", "retrain.time_budget_seconds.", registry=r
        ).set(cfg.time_budget_seconds)
        Gauge(
            "streamheal_retrain_memory_cap_bytes", "retrain.max_memory_mb in bytes.", registry=r
        ).set(cfg.max_memory_mb * 2**20)
        for outcome in OUTCOMES:
            self.runs.labels(outcome)

    def observe(self, summary: dict[str, Any]) -> None:
        """Take a run summary (see :func:`streamheal.retrain.run.retrain_once`)."""
        self.runs.labels(summary["outcome"]).inc()
        self.last_run.set(time.time())
        self.duration.set(summary["seconds"])
        for model in ("candidate", "champion"):
            scores = summary["metrics"].get(model)
            if scores is not None:
                self.accuracy.labels(model).set(scores["accuracy"])
                self.log_loss.labels(model).set(scores["log_loss"])
        candidate = summary["metrics"].get("candidate")
        if candidate is not None:
            self.holdout.set(candidate["holdout"])
        self.examples.set(summary["window"].get("examples") or 0)
        if summary.get("candidate_version") is not None:
            self.candidate.set(summary["candidate_version"])
        if summary.get("champion_after") is not None:
            self.champion.set(summary["champion_after"])
        self.peak_rss.set(summary["budget"]["peak_rss_bytes"])

    def checked(self, drift_alerts: int, next_slot: float | None) -> None:
        """A turn of the service loop: what the triggers stand at."""
        self.last_check.set(time.time())
        self.drift_alerts.set(drift_alerts)
        self.next_slot.set(next_slot or 0)
