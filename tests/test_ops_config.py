"""The ops files in config/: Prometheus config and rules (promtool), their unit tests,
Alertmanager (amtool), and Grafana queries that name only metrics the exporter exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from streamheal.detectors.suite import Drift
from streamheal.metrics import MetricsServer, NotifierMetrics, WorkerMetrics
from streamheal.policy import Action
from tests.conftest import drifted_engine

CONFIG = Path(__file__).resolve().parent.parent / "config"
PROMETHEUS = CONFIG / "prometheus"
GRAFANA = CONFIG / "grafana"
METRIC = re.compile(r"\bstreamheal_[a-z0-9_]+\b")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(
            f"{name} not installed (Debian's prometheus / prometheus-alertmanager; "
            "`make test` installs them)"
        )
    return path


def run(*command: str, cwd: Path) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_promtool_checks_the_prometheus_config_and_rules() -> None:
    promtool = tool("promtool")
    run(promtool, "check", "config", "prometheus.yml", cwd=PROMETHEUS)
    out = run(promtool, "check", "rules", "alerts.yml", cwd=PROMETHEUS)
    assert "SUCCESS" in out


def test_promtool_rule_unit_tests_pass() -> None:
    out = run(tool("promtool"), "test", "rules", "alerts.test.yml", cwd=PROMETHEUS)
    assert "SUCCESS" in out


def test_every_alert_rule_has_a_for_duration_and_a_severity() -> None:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {r["alert"] for r in rules} >= {
        "StreamhealWorkerDown",
        "StreamhealConsumerLagGrowing",
        "StreamhealDeadLetterRate",
        "StreamhealRealizedAccuracyDrop",
        "StreamhealDriftFiring",
        "StreamhealSlackFailing",
    }
    assert all(r.get("for") and r["labels"]["severity"] in ("warning", "critical") for r in rules)


def test_amtool_accepts_the_alertmanager_config() -> None:
    out = run(tool("amtool"), "check-config", "alertmanager.yml", cwd=CONFIG / "alertmanager")
    assert "SUCCESS" in out


@pytest.fixture(scope="module")
def exposed() -> set[str]:
    """Every sample name a worker with an embedded notifier exposes once it has seen a
    drift, acted, lagged and sent (and failed to send) notifications: scraped over HTTP."""
    from streamheal.config import Config
    from tests.conftest import SMALL_DETECTORS

    config = Config().replace(detectors=SMALL_DETECTORS)
    engine, outputs = drifted_engine(config)
    registry = CollectorRegistry()
    worker = WorkerMetrics(config, registry=registry)
    for output in outputs:
        if type(output) is Drift:
            worker.observe_drift(output)
        elif type(output) is Action:
            worker.count_action(output.action)
    worker.observe_engines({0: engine})
    worker.observe_batch(0.05, 100)
    worker.observe_loop()
    worker.set_lag(0, 12)
    notifier = NotifierMetrics(registry)
    notifier.delivered("slack", "firing")
    notifier.failed("slack")
    notifier.silenced.inc()
    notifier.records.labels("drift").inc()
    notifier.transitions.labels("firing").inc()
    notifier.clicks.labels("accepted").inc()
    server = MetricsServer(registry, "127.0.0.1", 0)
    port = server.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        server.close()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def dashboard_queries() -> list[str]:
    dashboard = json.loads((GRAFANA / "dashboards" / "streamheal.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    queries += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    return queries


def test_every_grafana_query_names_a_metric_the_exporter_exposes(exposed: set[str]) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 20
    named = {name for query in queries for name in METRIC.findall(query)}
    assert named, "no streamheal metric in the dashboard"
    assert named <= exposed, f"not exposed: {sorted(named - exposed)}"


def test_every_alert_rule_names_a_metric_the_exporter_exposes(exposed: set[str]) -> None:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    named = {n for g in groups for r in g["rules"] for n in METRIC.findall(r["expr"])}
    assert named <= exposed, f"not exposed: {sorted(named - exposed)}"


def test_grafana_is_provisioned_with_the_dashboard_and_its_data_source() -> None:
    dashboard = json.loads((GRAFANA / "dashboards" / "streamheal.json").read_text())
    source = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    uids = {d["uid"] for d in source["datasources"]}
    used = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    assert used <= uids
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("throughput", "lag", "realized", "estimated", "drift statistic", "model version"):
        assert topic in titles, topic
    names = {a["name"] for a in dashboard["annotations"]["list"]}
    assert {"Model version changes", "Policy actions"} <= names
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/streamheal.yml").read_text())
    compose = yaml.safe_load((CONFIG.parent / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    path = provider["providers"][0]["options"]["path"]
    assert any(m.endswith(":" + path) or f":{path}:" in m for m in mounts)
