"""One retraining run: window, train, evaluate, gate, then promote or reject.

:func:`retrain_once` never raises for what can go wrong in a run (a broker that does not
answer, a window past its caps, the time budget spent, a registry that refuses): it
returns the run's summary with ``outcome`` ``"promoted"``, ``"rejected"`` or ``"failed"``
and the matching exit code (0, 3, 1). The summary is the JSON a run prints; its numbers
are also the service's Prometheus metrics (:mod:`streamheal.retrain.report`).
"""

from __future__ import annotations

import logging
import resource
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException

from streamheal import models
from streamheal.config import Config
from streamheal.errors import NotDelivered, StreamhealError
from streamheal.registry import CHAMPION, open_registry
from streamheal.retrain.evaluate import score, split, train_model
from streamheal.retrain.gate import Gate
from streamheal.retrain.promote import alert_rejection, promote, register_candidate
from streamheal.retrain.window import read_window, window_source

log = logging.getLogger("streamheal.retrain")

EXIT_PROMOTED = 0
EXIT_FAILED = 1
EXIT_REJECTED = 3
EXIT_CODES = {"promoted": EXIT_PROMOTED, "rejected": EXIT_REJECTED, "failed": EXIT_FAILED}


class RetrainFailed(StreamhealError, RuntimeError):
    """The run cannot produce a candidate (no labeled data, say)."""


def retrain_once(
    config: Config, trigger: str = "once", file: str | Path | None = None
) -> dict[str, Any]:
    """Run once; the summary (``outcome``, ``exit_code``, numbers) whatever happens."""
    started = time.time()
    clock = time.monotonic()
    cfg = config.retrain
    deadline = clock + cfg.time_budget_seconds
    summary: dict[str, Any] = {
        "run_id": datetime.fromtimestamp(started, UTC).strftime("%Y%m%dT%H%M%SZ")
        + "-"
        + uuid.uuid4().hex[:6],
        "trigger": trigger,
        "started_at": _iso(started),
        "outcome": "failed",
        "exit_code": EXIT_FAILED,
        "candidate_version": None,
        "champion_version": None,
        "champion_after": None,
        "window": {},
        "metrics": {"candidate": None, "champion": None},
        "gate": None,
        "error": None,
    }
    try:
        _decide(config, summary, started, deadline, file)
    except RuntimeError as err:  # WindowTooLarge, OutOfTime, RetrainFailed, RegistryError, ...
        summary["error"] = str(err)
    # A broker or a file that fails, a topic that is gone, a champion that is no classifier.
    except (KafkaException, OSError, ValueError, TypeError) as err:
        summary["error"] = f"{type(err).__name__}: {err}"
    summary["exit_code"] = EXIT_CODES[summary["outcome"]]
    seconds = time.monotonic() - clock
    summary["finished_at"] = _iso(time.time())
    summary["seconds"] = round(seconds, 3)
    summary["budget"] = {
        "time_budget_seconds": cfg.time_budget_seconds,
        "seconds": round(seconds, 3),
        "memory_cap_bytes": cfg.max_memory_mb * 2**20,
        "max_examples": cfg.max_examples,
        "window_bytes_estimate": summary["window"].get("bytes_estimate"),
        # ru_maxrss is KiB on Linux: the process's peak, interpreter and libraries included.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    return summary


def _decide(
    config: Config,
    summary: dict[str, Any],
    started: float,
    deadline: float,
    file: str | Path | None,
) -> None:
    cfg = config.retrain
    records, source = window_source(config, file, started)
    window = read_window(config, records, source, deadline)
    summary["window"] = window.describe()
    train, holdout = split(window.examples, cfg.holdout_share)
    if not train:
        raise RetrainFailed(
            f"the window has {len(window.examples)} labeled examples: nothing to train on "
            f"({window.records} records read from {_where(source)})"
        )
    summary["window"].update(train=len(train), holdout=len(holdout))
    candidate = train_model(models.build_model(config.model, config.engine.seed), train, deadline)
    candidate_scores = score(candidate, holdout, deadline)
    summary["metrics"]["candidate"] = candidate_scores.to_dict()

    registry = open_registry(config.registry)
    champion_version = registry.alias(CHAMPION)
    summary["champion_version"] = champion_version
    champion_scores = None
    if champion_version is not None:
        champion = registry.load(champion_version)  # RegistryError: refuse to judge blind
        champion_scores = score(champion, holdout, deadline)
        summary["metrics"]["champion"] = champion_scores.to_dict()
    verdict = Gate(cfg).judge(candidate_scores, champion_scores)
    summary["gate"] = verdict.to_dict()
    decision = "promoted" if verdict.passed else "rejected"
    version = register_candidate(registry, config, candidate, summary, decision)
    summary["candidate_version"] = version
    if verdict.passed:
        reason = f"retrain {summary['run_id']}: accuracy {candidate_scores.accuracy:g}" + (
            f" vs v{champion_version} {champion_scores.accuracy:g}" if champion_scores else ""
        )
        summary["champion_after"] = version
        try:
            promote(registry, config, version, reason)
        except RuntimeError as err:
            raise NotDelivered(
                f"v{version} passed the gate and is the champion, but running workers were "
                f"not told ({err}); they serve it after a restart"
            ) from None
    else:
        summary["champion_after"] = champion_version
        alert_rejection(config, summary)
    summary["outcome"] = decision


def log_line(summary: dict[str, Any]) -> str:
    """The one line a run logs."""
    outcome = summary["outcome"]
    candidate = summary["metrics"].get("candidate") or {}
    champion = summary["metrics"].get("champion") or {}
    if outcome == "failed":
        what = f"failed: {summary['error']}"
    else:
        versus = (
            f" vs champion v{summary['champion_version']} {champion.get('accuracy')}"
            if champion
            else " (no champion)"
        )
        what = (
            f"{outcome} v{summary['candidate_version']}: accuracy {candidate.get('accuracy')}"
            f"{versus} on {candidate.get('holdout')} holdout examples"
        )
    return (
        f"retrain {summary['run_id']} ({summary['trigger']}) {what}; "
        f"{summary['window'].get('examples', 0)} examples in {summary['seconds']}s"
    )


def _iso(moment: float) -> str:
    return (
        datetime.fromtimestamp(moment, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _where(source: dict[str, Any]) -> str:
    if source.get("kind") == "file":
        return f"file {source['path']}"
    return f"topic {source.get('topic')} since {source.get('from_time')}"
