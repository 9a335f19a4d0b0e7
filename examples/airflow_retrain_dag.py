"""An Airflow DAG that runs ``streamheal retrain --once`` every night and acts on its exit code.

    0   promoted: the task succeeds (running workers already serve the new champion)
    3   rejected by the gate: the task is *skipped* (the champion keeps serving; the
        rejection is an alert record on the alerts topic, so on-call hears of it there)
    75  another retrain holds the lock: skipped too (that run serves this one)
    1   failed (broker, data, time budget, ...): the task fails and Airflow retries it

Copy it into your DAGs folder and set ``STREAMHEAL_CONFIG`` (and the signing keys) in the
worker's environment. Airflow's own scheduler owns the timing here, so the retrain runs
with ``--once`` (no ``--schedule``), one at a time (``max_active_runs=1``), and a night
Airflow missed is not replayed (``catchup=False``): the next run trains on the newest
window anyway.

The file imports without Airflow (the import is guarded), so it can be linted and tested
anywhere; ``dag`` is None then.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

CONFIG = os.environ.get("STREAMHEAL_CONFIG", "/etc/streamheal/streamheal.toml")
COMMAND = f"streamheal retrain --once -c {CONFIG}"
SCHEDULE = "0 3 * * *"  # 03:00 UTC every day
EXIT_PROMOTED, EXIT_FAILED, EXIT_REJECTED, EXIT_BUSY = 0, 1, 3, 75
SKIP_ON = [EXIT_REJECTED, EXIT_BUSY]

try:
    from airflow import DAG

    try:  # Airflow 3 moved the bash operator to the standard provider
        from airflow.providers.standard.operators.bash import BashOperator
    except ImportError:
        from airflow.operators.bash import BashOperator
except ImportError:  # not on an Airflow host: nothing to schedule, the module still imports
    DAG = None


def outcome(exit_code: int) -> str:
    """What an exit code of ``streamheal retrain --once`` means for this DAG."""
    if exit_code == EXIT_PROMOTED:
        return "success"
    if exit_code in SKIP_ON:
        return "skipped"
    return "failed"


dag = None
if DAG is not None:
    with DAG(
        dag_id="streamheal_retrain",
        description="Batch retraining gated by offline evaluation",
        schedule=SCHEDULE,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
        tags=["streamheal", "ml"],
    ) as dag:
        BashOperator(
            task_id="retrain",
            # The JSON run summary goes to the task log (stdout) and to XCom (last line).
            bash_command=COMMAND,
            skip_on_exit_code=SKIP_ON,
            do_xcom_push=True,
            execution_timeout=timedelta(hours=1),  # above retrain.time_budget_seconds
        )
