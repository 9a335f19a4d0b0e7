"""Batch retraining on a schedule or on repeated drift, gated by offline evaluation.

``streamheal retrain --once`` (or a scheduled or drift-triggered run of the service)
reads the last window of labeled events, trains the configured model over it in time
order, scores it and the registry champion on the newest part of the window, and
promotes it only through the gate. One module per step:

========================  ==========================================================
:mod:`streamheal.cron`    cron slots in UTC and the catch-up rule (shared with config)
:mod:`.drift`             N confirmed drift alerts within a window, from the alerts topic
:mod:`.lock`              one run at a time; the trigger state kept beside the lock
:mod:`.window`            the window's examples, joined as the worker joins them, bounded
:mod:`.evaluate`          training, the time-ordered holdout, accuracy / log loss / recall
:mod:`.gate`              absolute floors and the margin over the champion
:mod:`.promote`           registry, control topic, the "retraining rejected" alert
:mod:`.run`               one run, and its summary
:mod:`.report`            the service's Prometheus metrics
:mod:`.service`           ``--once``, the service loop, the CLI entry
========================  ==========================================================

Exit codes of a run: 0 promoted, 3 rejected by the gate, 1 failed; 75 when another
retrain holds the lock (nothing done).
"""

from streamheal.cron import CronSchedule, ScheduleError
from streamheal.retrain.gate import Gate, Verdict
from streamheal.retrain.run import EXIT_FAILED, EXIT_PROMOTED, EXIT_REJECTED, retrain_once
from streamheal.retrain.service import EXIT_BUSY, RetrainService, retrain_command

__all__ = [
    "EXIT_BUSY",
    "EXIT_FAILED",
    "EXIT_PROMOTED",
    "EXIT_REJECTED",
    "CronSchedule",
    "Gate",
    "RetrainService",
    "ScheduleError",
    "Verdict",
    "retrain_command",
    "retrain_once",
]
