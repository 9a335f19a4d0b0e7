"""A real Prometheus (Debian's package) scrapes a running worker on the real broker and
answers a drift query through its HTTP API; the alert rules load and evaluate there."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamheal.config import Config
from streamheal.producer import EventProducer
from streamheal.scenarios import breast_cancer
from tests.conftest import SMALL_DETECTORS, running_worker, wait_for

pytestmark = pytest.mark.kafka

RULES = Path(__file__).resolve().parent.parent / "config" / "prometheus" / "alerts.yml"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def api(port: int, path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}{query}", timeout=10) as response:
        return json.loads(response.read())


def answer(port: int, promql: str) -> list[dict[str, Any]]:
    try:
        return api(port, "/api/v1/query", query=promql)["data"]["result"]
    except OSError:  # not up yet
        return []


def test_a_real_prometheus_scrapes_a_running_worker_and_answers_a_drift_query(
    config: Config, tmp_path: Path
) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (Debian's `prometheus`; `make test` installs it)")
    config = config.replace(detectors=SMALL_DETECTORS, metrics={"port": 0, "address": "127.0.0.1"})
    scenario = breast_cancer(events=2400, drift_at=1200, label_delay=10, seed=3)
    with EventProducer(config.kafka.bootstrap_servers, config.topics.events) as producer:
        for event in scenario.events:
            producer.send_event(event)
    with running_worker(config) as worker:
        wait_for(lambda: worker.metrics.port, what="the worker's metrics endpoint")
        settings = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": "streamheal",
                    "static_configs": [{"targets": [f"127.0.0.1:{worker.metrics.port}"]}],
                }
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(settings))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("w")
        prometheus = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            drift = 'streamheal_drift_firing{job="streamheal", feature="mean radius"} == 1'
            wait_for(lambda: answer(port, drift), timeout=120, what="the drift through PromQL")
            firing = answer(port, drift)
            assert {r["metric"]["kind"] for r in firing} == {"covariate"}
            assert answer(port, 'up{job="streamheal"}')[0]["value"][1] == "1"
            wait_for(
                lambda: answer(port, "sum(streamheal_events_scored_total) == 2400"),
                timeout=60,
                what="every event scored, as Prometheus saw it",
            )
            assert answer(port, "streamheal_consumer_lag_records")  # lag per partition
            groups = api(port, "/api/v1/rules")["data"]["groups"]
            rules = {r["name"]: r for g in groups for r in g["rules"]}
            assert all(r["health"] == "ok" for r in rules.values()), rules
            wait_for(
                lambda: any(
                    a["labels"].get("feature") == "mean radius"
                    for a in api(port, "/api/v1/alerts")["data"]["alerts"]
                ),
                timeout=60,
                what="StreamhealDriftFiring pending on the real series",
            )
        finally:
            prometheus.terminate()
            try:
                prometheus.wait(30)
            except subprocess.TimeoutExpired:
                prometheus.kill()
                prometheus.wait(30)
            log.close()
