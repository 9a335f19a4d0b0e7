"""The Prometheus exporter, scraped over HTTP: what it shows of a real Engine that saw a
drift, bounded feature labels, /healthz and /readyz, and the metrics-topic snapshot."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamheal.config import Config
from streamheal.detectors.suite import Drift
from streamheal.engine import Engine
from streamheal.metrics import WorkerMetrics
from streamheal.policy import Action
from tests.conftest import SMALL_DETECTORS, drifted_engine

# Small windows, so 1,200 events have a reference, a warm-up and a shift at 600.


@pytest.fixture(scope="module")
def drifted() -> tuple[Config, Engine, list[Any]]:
    config = Config().replace(
        detectors=SMALL_DETECTORS, metrics={"port": 0, "address": "127.0.0.1"}
    )
    engine, outputs = drifted_engine(config)
    return config, engine, outputs


def fed(config: Config, engine: Engine, outputs: list[Any], **options: Any) -> WorkerMetrics:
    metrics = WorkerMetrics(config, **options)
    for output in outputs:
        if type(output) is Drift:
            metrics.observe_drift(output)
        elif type(output) is Action:
            metrics.count_action(output.action)
    metrics.observe_engines({0: engine})
    metrics.observe_batch(0.05, consumed=100)
    return metrics


@pytest.fixture
def served(drifted: tuple[Config, Engine, list[Any]]) -> Iterator[tuple[WorkerMetrics, int]]:
    metrics = fed(*drifted)
    port = metrics.start()
    yield metrics, port
    metrics.close()


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scraped: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    return scraped[(name, tuple(sorted(labels.items())))]


def test_a_scrape_shows_the_engines_counts_accuracy_drift_and_model(
    served: tuple[WorkerMetrics, int], drifted: tuple[Config, Engine, list[Any]]
) -> None:
    _, engine, outputs = drifted
    _, port = served
    status, text = get(port, "/metrics")
    assert status == 200
    scraped = samples(text)
    counters = engine.counters
    assert (
        value(scraped, "streamheal_events_scored_total", partition="0") == counters.feature_events
    )
    assert value(scraped, "streamheal_labeled_events_total", partition="0") == counters.labeled
    assert value(scraped, "streamheal_records_consumed_total") == 100
    realized = value(scraped, "streamheal_accuracy_realized_ratio", partition="0")
    estimated = value(scraped, "streamheal_accuracy_estimated_ratio", partition="0")
    assert 0.5 < realized <= 1 and 0.5 < estimated <= 1
    firing = {"partition": "0", "kind": "covariate", "signal": "feature", "feature": "mean radius"}
    assert value(scraped, "streamheal_drift_firing", **firing, detector="cusum") == 1
    statistic = value(scraped, "streamheal_drift_statistic", **firing, detector="cusum")
    declared = next(o for o in outputs if type(o) is Drift and o.feature == "mean radius")
    assert statistic > 0 and declared.statistic > declared.threshold
    cusum = value(
        scraped, "streamheal_feature_cusum_statistic", partition="0", feature="mean radius"
    )
    assert cusum >= 0 and value(scraped, "streamheal_feature_cusum_threshold", partition="0") > 0
    snapshots = sum(1 for o in outputs if type(o) is Action and o.action == "snapshot")
    assert value(scraped, "streamheal_policy_actions_total", action="snapshot") == snapshots
    info = {"partition": "0", "version": "1", "model": "logistic_regression"}
    assert value(scraped, "streamheal_model_info", **info) == 1
    assert value(scraped, "streamheal_batch_duration_seconds_count") == 1
    assert value(scraped, "streamheal_record_duration_seconds_count") == 100


def test_feature_labels_are_capped_and_the_rest_folded_into_other(
    drifted: tuple[Config, Engine, list[Any]],
) -> None:
    config, engine, outputs = drifted
    capped = config.replace(metrics={"max_feature_labels": 3})
    metrics = fed(capped, engine, outputs)
    features = {
        s.labels["feature"]
        for family in metrics.registry.collect()
        for s in family.samples
        if s.labels.get("feature")
    }
    assert "other" in features and len(features - {"other"}) <= 3


def test_healthz_turns_503_when_the_loop_stalls_and_readyz_follows_the_worker(
    drifted: tuple[Config, Engine, list[Any]],
) -> None:
    config, _, _ = drifted
    now = [1000.0]
    ready = [False]
    metrics = WorkerMetrics(config.replace(metrics={"stall_seconds": 60}), clock=lambda: now[0])
    port = metrics.start(ready=lambda: ready[0])
    try:
        assert get(port, "/healthz") == (200, "ok\n")
        assert get(port, "/readyz") == (503, "not ready\n")
        ready[0] = True
        assert get(port, "/readyz") == (200, "ready\n")
        now[0] += 61
        assert get(port, "/healthz") == (503, "stalled\n")
        metrics.observe_loop()
        assert get(port, "/healthz")[0] == 200
        assert get(port, "/nothing")[0] == 404
    finally:
        metrics.close()


def test_the_metrics_topic_snapshot_holds_the_numbers_a_scrape_shows(
    served: tuple[WorkerMetrics, int],
) -> None:
    metrics, port = served
    scraped = samples(get(port, "/metrics")[1])
    snapshot = orjson.loads(orjson.dumps(metrics.snapshot()))
    assert snapshot["type"] == "metrics"
    for name, series in snapshot["metrics"].items():
        for sample in series:
            key = (name, tuple(sorted(sample["labels"].items())))
            if name == "streamheal_last_loop_timestamp_seconds":
                continue
            assert scraped[key] == pytest.approx(sample["value"]), key


def test_snapshots_come_every_interval_and_not_at_all_with_interval_zero(
    drifted: tuple[Config, Engine, list[Any]],
) -> None:
    config, _, _ = drifted
    now = [0.0]
    metrics = WorkerMetrics(
        config.replace(metrics={"snapshot_interval_seconds": 10}), clock=lambda: now[0]
    )
    assert metrics.snapshot_if_due() is None
    now[0] = 10.0
    assert orjson.loads(metrics.snapshot_if_due())["type"] == "metrics"
    assert metrics.snapshot_if_due() is None
    off = WorkerMetrics(
        config.replace(metrics={"snapshot_interval_seconds": 0}), clock=lambda: now[0]
    )
    now[0] = 1e9
    assert off.snapshot_if_due() is None
