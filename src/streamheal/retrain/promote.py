"""What a decided run leaves behind: the candidate in the registry either way; on a pass the
``champion`` alias and a promote command for running workers; on a fail an alert record.

The promote command goes through :func:`streamheal.kafka.control.publish`, the same call
``streamheal registry promote`` makes (signed with ``STREAMHEAL_CONTROL_KEY`` when set), so
workers hot-swap the new champion between two batches.

The rejection is a ``notice`` record on the alerts topic (``notice = "retrain_rejected"``,
keyed ``notice:retrain_rejected``): the notifier turns it into a one-shot alert like any
guard notice, with the numbers in ``detail``.
"""

from __future__ import annotations

from typing import Any

import orjson

from streamheal import models
from streamheal.config import Config, config_hash
from streamheal.kafka.connect import deliver
from streamheal.kafka.control import publish
from streamheal.registry import RegistryBackend

BY = "streamheal-retrain"
REJECTED_NOTICE = "retrain_rejected"


def register_candidate(
    registry: RegistryBackend,
    config: Config,
    model: Any,
    summary: dict[str, Any],
    decision: str,
) -> int:
    """Store the candidate with its numbers, window and decision; return its version."""
    window = summary["window"]
    tags = {
        "candidate": "true",
        "decision": decision,
        "trigger": summary["trigger"],
        "run_id": summary["run_id"],
        "window": f"{window.get('first_ts')}..{window.get('last_ts')}",
        "accuracy": str(summary["metrics"]["candidate"]["accuracy"]),
    }
    return registry.register(
        models.dumps(model),
        cause=f"retrain ({summary['trigger']}): {decision}",
        metrics={
            **summary["metrics"],
            "gate": summary["gate"],
            "window": {k: v for k, v in window.items() if k != "offsets"},
        },
        offsets=window.get("offsets") or {},
        config_hash=config_hash(config),
        tags=tags,
    )


def promote(registry: RegistryBackend, config: Config, version: int, reason: str) -> None:
    """``champion`` -> ``version``, then tell running workers (RuntimeError if the command
    was not delivered: the alias has moved, workers serve it after a restart)."""
    registry.promote(version)
    publish(config, "promote", version, reason, BY)


def alert_rejection(config: Config, summary: dict[str, Any]) -> None:
    """The "retraining rejected" alert record; RuntimeError if the broker did not take it."""
    candidate = summary["metrics"]["candidate"]
    champion = summary["metrics"].get("champion")
    versus = (
        f" vs champion v{summary['champion_version']} {champion['accuracy']:g}" if champion else ""
    )
    record = {
        "type": "notice",
        "notice": REJECTED_NOTICE,
        "feature": None,
        "index": None,
        "partition": None,
        "model_version": summary["champion_version"],
        "message": (
            f"retraining rejected: candidate v{summary['candidate_version']} accuracy "
            f"{candidate['accuracy']:g}{versus} on {candidate['holdout']} holdout examples; "
            + "; ".join(summary["gate"]["reasons"])
        )[:1000],
        "detail": {
            "run_id": summary["run_id"],
            "trigger": summary["trigger"],
            "candidate_version": summary["candidate_version"],
            "champion_version": summary["champion_version"],
            "candidate": candidate,
            "champion": champion,
            "gate": summary["gate"],
        },
    }
    deliver(
        config,
        config.topics.alerts,
        orjson.dumps(record),
        f"notice:{REJECTED_NOTICE}".encode(),
        "rejection alert",
    )
