"""The Prometheus exporter: what the worker and the notifier did, and what the Engines hold.

Everything lives in one :class:`~prometheus_client.CollectorRegistry` per process (not
prometheus_client's global one, so several exporters can live in one test process), served
with ``/healthz`` and ``/readyz`` on one port by :class:`MetricsServer`.

The worker feeds :class:`WorkerMetrics` through a few calls, all on its own thread and all
cheap (no I/O, no locks on the hot path):

- :meth:`WorkerMetrics.observe_batch` after each batch (latencies, records consumed),
- :meth:`WorkerMetrics.observe_engines` between batches: a copy of every Engine's counters,
  buffers, model version, windowed accuracy and detector state, taken on the worker's
  thread, so a scrape never reads an Engine while it changes,
- :meth:`WorkerMetrics.observe_drift` and :meth:`WorkerMetrics.count_action` for the
  records it publishes,
- :meth:`WorkerMetrics.observe_loop` once per loop turn (liveness and lag per partition,
  from the consumer's cached watermarks: no broker round trip),
- :meth:`WorkerMetrics.snapshot_if_due` for the JSON snapshot on the metrics topic, built
  from the very samples a scrape shows.

Label cardinality is bounded: partitions are bounded by the topic, reasons, kinds and
actions by the code, and feature names by ``metrics.max_feature_labels`` (the first names
seen keep a label of their own, the rest share ``feature="other"``).

>>> from streamheal.config import Config
>>> metrics = WorkerMetrics(Config())
>>> metrics.observe_batch(0.02, consumed=500)
>>> metrics.count_action("snapshot")
>>> sample_value(metrics.registry, "streamheal_records_consumed_total")
500.0
>>> sample_value(metrics.registry, "streamheal_policy_actions_total", action="snapshot")
1.0
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from streamheal.config import Config
from streamheal.events import Reason

if TYPE_CHECKING:
    from streamheal.detectors.suite import Drift
    from streamheal.engine import Engine

log = logging.getLogger("streamheal.metrics")

OTHER = "other"
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Per-record processing time: a batch's duration spread over its records (10 µs .. 100 ms).
RECORD_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.1)
_DRIFT_LABELS = ("partition", "kind", "signal", "feature", "detector")
# Copying 4 Engines' numbers takes about 0.5 ms: once a second is plenty for scrapes.
ENGINE_REFRESH_SECONDS = 1.0


def sample_value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """The value of one sample as a scrape would show it (None when absent); for tests
    and the CLI. ``labels`` must match the sample's labels exactly."""
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


class FeatureLabels:
    """Bounded feature label values: the first ``cap`` names keep theirs, others share one.

    >>> labels = FeatureLabels(2)
    >>> [labels.label(n) for n in ("a", "b", "c", "a")]
    ['a', 'b', 'other', 'a']
    >>> labels.label(None)
    ''
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._kept: set[str] = set()

    def label(self, name: str | None) -> str:
        if name is None:
            return ""
        kept = self._kept
        if name in kept:
            return name
        if len(kept) < self.cap:
            kept.add(name)
            return name
        return OTHER


class SpreadHistogram:
    """A histogram that takes ``count`` equal observations at once (a batch's duration
    spread over its records), rendered as a Prometheus histogram. Thread-safe.

    >>> h = SpreadHistogram("x_seconds", "doc", (0.001, 0.01))
    >>> h.observe(0.002, 10)
    >>> [(s.labels.get("le"), s.value) for s in next(iter(h.collect())).samples][:3]
    [('0.001', 0.0), ('0.01', 10.0), ('+Inf', 10.0)]
    """

    def __init__(self, name: str, documentation: str, buckets: Iterable[float]) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = tuple(buckets)
        self._counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float, count: int = 1) -> None:
        if count <= 0:
            return
        slot = next((i for i, bound in enumerate(self.bounds) if value <= bound), len(self.bounds))
        with self._lock:
            self._counts[slot] += count
            self._sum += value * count

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, count in zip((*map(_float_text, self.bounds), "+Inf"), counts, strict=True):
            running += count
            cumulative.append((bound, float(running)))
        yield HistogramMetricFamily(
            self.name,
            self.documentation,
            buckets=cumulative,
            sum_value=total,
        )


def _float_text(value: float) -> str:
    # prometheus_client writes le="0.001", not le="1e-03"; match it so queries look alike.
    return repr(float(value))


class WorkerMetrics:
    """The worker's metrics, their HTTP endpoint and the metrics-topic snapshot.

    Parameters
    ----------
    config
        ``metrics.*`` (port, address, feature cap, snapshot interval, stall limit) and, for
        the info metric, ``model`` and ``engine``.
    registry
        Where to register (a fresh one by default; the embedded notifier adds its own).
    clock
        Seconds, monotonic (tests pass their own).

    Examples
    --------
    >>> from streamheal.config import Config
    >>> from streamheal.engine import Engine
    >>> metrics = WorkerMetrics(Config())
    >>> metrics.observe_engines({0: Engine(Config())})
    >>> sample_value(metrics.registry, "streamheal_model_version", partition="0")
    1.0
    >>> metrics.snapshot()["metrics"]["streamheal_model_version"]
    [{'labels': {'partition': '0'}, 'value': 1.0}]
    """

    def __init__(
        self,
        config: Config,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.registry = registry or CollectorRegistry()
        self.features = FeatureLabels(config.metrics.max_feature_labels)
        self._clock = clock
        self._server: MetricsServer | None = None
        self._last_loop = clock()
        self._last_snapshot = clock()
        self._lagging: set[int] = set()
        self._engines_copied = float("-inf")
        r = self.registry
        self.consumed = Counter(
            "streamheal_records_consumed", "Records consumed from the events topic.", registry=r
        )
        self.batch_seconds = Histogram(
            "streamheal_batch_duration_seconds",
            "Wall time of one batch: decode, Engine, produce, commit.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.record_seconds = SpreadHistogram(
            "streamheal_record_duration_seconds",
            "Processing time per record (each batch's duration spread over its records).",
            RECORD_BUCKETS,
        )
        r.register(self.record_seconds)
        self.lag = Gauge(
            "streamheal_consumer_lag_records",
            "Records behind the high watermark, per assigned partition.",
            ["partition"],
            registry=r,
        )
        self.actions = Counter(
            "streamheal_policy_actions", "Model actions taken, by kind.", ["action"], registry=r
        )
        self.drifts = Counter(
            "streamheal_drift_changes",
            "Drift state changes declared by the detectors (firing, resolved).",
            ["kind", "status"],
            registry=r,
        )
        self.drift_statistic = Gauge(
            "streamheal_drift_statistic",
            "Statistic of the last declared drift state change, per signal.",
            _DRIFT_LABELS,
            registry=r,
        )
        self.drift_p_value = Gauge(
            "streamheal_drift_p_value",
            "p-value of the last declared drift state change (p-value tests only).",
            _DRIFT_LABELS,
            registry=r,
        )
        self.drift_threshold = Gauge(
            "streamheal_drift_threshold",
            "Raising threshold of that detector (a level for p-value tests).",
            _DRIFT_LABELS,
            registry=r,
        )
        self.last_loop = Gauge(
            "streamheal_last_loop_timestamp_seconds",
            "Unix time of the consume loop's last turn.",
            registry=r,
        )
        Info("streamheal_worker", "The worker's configuration.", registry=r).info(
            {
                "model": config.model.name,
                "mode": config.engine.mode,
                "group": config.kafka.group_id,
                "client": config.kafka.client_id,
            }
        )
        self._engines = _EngineView(self.features)
        r.register(self._engines)

    # ------------------------------------------------------------------ serving
    def start(self, ready: Callable[[], bool] = lambda: True) -> int:
        """Serve ``/metrics``, ``/healthz`` and ``/readyz``; return the port (useful with
        ``metrics.port = 0``). Raises OSError when the port is taken."""
        cfg = self.config.metrics
        self._server = MetricsServer(self.registry, cfg.address, cfg.port, ready, self.healthy)
        port = self._server.start()
        log.info("metrics on http://%s:%d/metrics", _shown_host(cfg.address), port)
        return port

    def serve(self, ready: Callable[[], bool] = lambda: True) -> int | None:
        """:meth:`start` when ``metrics.enabled``; a port already taken is logged, not
        raised: metrics are a side channel, and scoring goes on without them."""
        if not self.config.metrics.enabled:
            return None
        try:
            return self.start(ready)
        except OSError as err:
            cfg = self.config.metrics
            log.error(
                "metrics not served on %s:%d (%s); scoring goes on without them "
                "(set metrics.port, one per worker process)",
                cfg.address,
                cfg.port,
                err.strerror or err,
            )
            return None

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    @property
    def port(self) -> int | None:
        return self._server.port if self._server is not None else None

    def healthy(self) -> bool:
        """The consume loop turned within ``metrics.stall_seconds``."""
        return self._clock() - self._last_loop < self.config.metrics.stall_seconds

    # ------------------------------------------------------------------ hooks
    def observe_batch(self, seconds: float, consumed: int) -> None:
        """One batch done: its wall time and how many records it consumed."""
        self.consumed.inc(consumed)
        self.batch_seconds.observe(seconds)
        if consumed:
            self.record_seconds.observe(seconds / consumed, consumed)

    def observe_loop(self, consumer: Any = None) -> None:
        """Once per loop turn: liveness, and the lag of each assigned partition from the
        consumer's cached high watermarks (no broker round trip)."""
        self._last_loop = self._clock()
        self.last_loop.set_to_current_time()
        if consumer is None:
            return
        try:
            positions = consumer.position(consumer.assignment())
            seen = set()
            for tp in positions:
                _, high = consumer.get_watermark_offsets(tp, cached=True)
                if high < 0 or tp.offset < 0:
                    continue  # nothing fetched yet for this partition
                self.lag.labels(str(tp.partition)).set(max(0, high - tp.offset))
                seen.add(tp.partition)
        except Exception as err:  # a metrics side channel never stops the loop
            log.debug("lag not measured: %s", err)
            return
        for gone in self._lagging - seen:  # revoked: its lag is another worker's now
            self.lag.remove(str(gone))
        self._lagging = seen

    def set_lag(self, partition: int, lag: int) -> None:
        self.lag.labels(str(partition)).set(lag)
        self._lagging.add(partition)

    def observe_engines(self, engines: Mapping[int, Engine], force: bool = False) -> None:
        """Copy what the Engines hold (call between batches, on the worker's thread); at
        most every ``ENGINE_REFRESH_SECONDS`` unless ``force``d: scrapes come every few
        seconds, batches many times a second."""
        now = self._clock()
        if not force and now - self._engines_copied < ENGINE_REFRESH_SECONDS:
            return
        self._engines_copied = now
        self._engines.update(engines)

    def observe_drift(self, drift: Drift) -> None:
        """A drift state change the worker publishes."""
        self.drifts.labels(drift.kind, drift.status).inc()
        labels = (
            str(drift.partition),
            drift.kind,
            drift.signal,
            self.features.label(drift.feature),
            drift.detector,
        )
        self.drift_statistic.labels(*labels).set(drift.statistic)
        if drift.p_value is not None:
            self.drift_p_value.labels(*labels).set(drift.p_value)
        if drift.threshold is not None:
            self.drift_threshold.labels(*labels).set(drift.threshold)

    def count_action(self, kind: str) -> None:
        self.actions.labels(kind).inc()

    # ------------------------------------------------------------------ snapshots
    def snapshot(self) -> dict[str, Any]:
        """Every sample a scrape would show right now, as JSON-ready data."""
        families: dict[str, list[dict[str, Any]]] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue  # prometheus_client's creation stamps: not numbers anyone plots
                families.setdefault(sample.name, []).append(
                    {"labels": sample.labels, "value": sample.value}
                )
        return {
            "type": "metrics",
            "ts": time.time(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "client_id": self.config.kafka.client_id,
            "metrics": families,
        }

    def snapshot_if_due(self) -> bytes | None:
        """The encoded snapshot every ``metrics.snapshot_interval_seconds``, else None."""
        interval = self.config.metrics.snapshot_interval_seconds
        now = self._clock()
        if not interval or now - self._last_snapshot < interval:
            return None
        self._last_snapshot = now
        return orjson.dumps(self.snapshot())


class _EngineView:
    """A collector over a copy of the Engines' numbers, replaced whole by each update."""

    def __init__(self, features: FeatureLabels) -> None:
        self.features = features
        self._families: list[Metric] = []

    def update(self, engines: Mapping[int, Engine]) -> None:
        feature = self.features.label
        counters = {
            name: CounterMetricFamily(name, doc, labels=labels)
            for name, doc, labels in _ENGINE_COUNTERS
        }
        gauges = {
            name: GaugeMetricFamily(name, doc, labels=labels)
            for name, doc, labels in _ENGINE_GAUGES
        }
        info = InfoMetricFamily(
            "streamheal_model",
            "The model each partition serves.",
            labels=["partition"],
        )
        for partition, engine in sorted(engines.items()):
            p = str(partition)
            c = engine.counters
            for name, value in (
                ("streamheal_events_scored", c.feature_events),
                ("streamheal_labels_joined", c.labels_joined),
                ("streamheal_labeled_events", c.labeled),
                ("streamheal_labeled_correct", c.correct),
                ("streamheal_labels_expired", c.unlabeled_expired),
                ("streamheal_future_timestamps", c.future_ts),
                ("streamheal_model_restores", c.model_restores),
                ("streamheal_guard_ignored_features", engine.guard.ignored_names),
                ("streamheal_guard_folded_categories", engine.guard.folded_values),
            ):
                counters[name].add_metric([p], float(value))
            # Every reason from 0, so rate() sees the first dead letter of each one.
            for reason in Reason:
                counters["streamheal_records_dead_lettered"].add_metric(
                    [p, reason.value], float(c.dead_lettered.get(reason, 0))
                )
            for name, source in (
                ("streamheal_missing_values", c.missing),
                ("streamheal_guard_clipped_values", engine.guard.clipped),
                ("streamheal_guard_type_mismatches", engine.guard.mismatched),
            ):
                for label, value in _folded(source, feature).items():
                    counters[name].add_metric([p, label], float(value))
            gauges["streamheal_join_buffer_events"].add_metric([p], float(engine.pending_labels))
            gauges["streamheal_join_buffer_bytes"].add_metric([p], float(engine.pending_bytes))
            gauges["streamheal_model_version"].add_metric([p], float(engine.model_version))
            info.add_metric(
                [p],
                {"version": str(engine.model_version), "model": engine.config.model.name},
            )
            policy = engine.policy
            gauges["streamheal_challenger_active"].add_metric(
                [p], float(policy is not None and policy.challenger is not None)
            )
            gauges["streamheal_rollback_watch_active"].add_metric(
                [p], float(policy is not None and policy.shadow is not None)
            )
            suite = engine.drift
            if suite is None:
                continue
            for name, value in (
                ("streamheal_accuracy_realized_ratio", suite.predictions.realized_accuracy),
                ("streamheal_accuracy_estimated_ratio", suite.predictions.estimated_accuracy),
            ):
                if value is not None:
                    gauges[name].add_metric([p], value)
            firing: dict[tuple[str, ...], float] = {}
            for (kind, signal, name, detector), alarm in suite.alarms.items():
                key = (p, kind, signal, feature(name), detector)
                firing[key] = max(firing.get(key, 0.0), float(alarm.firing))
            for key, value in sorted(firing.items()):
                gauges["streamheal_drift_firing"].add_metric(list(key), value)
            covariate = suite.covariate
            if covariate is not None:
                cusum = covariate.cusum
                statistics = dict(
                    zip(covariate.reference.numeric_names, cusum.statistic.tolist(), strict=True)
                )
                for label, value in _folded(statistics, feature, max).items():
                    gauges["streamheal_feature_cusum_statistic"].add_metric([p, label], value)
                gauges["streamheal_feature_cusum_threshold"].add_metric([p], cusum.threshold)
        self._families = [*counters.values(), *gauges.values(), info]

    def collect(self) -> Iterator[Metric]:
        yield from self._families  # a reference read: never a half-updated list


def _folded(
    values: Mapping[str, float],
    label: Callable[[str], str],
    combine: Callable[[float, float], float] = lambda a, b: a + b,
) -> dict[str, float]:
    """``values`` by bounded feature label, those past the cap combined under "other"."""
    out: dict[str, float] = {}
    for name, value in values.items():
        key = label(name)
        out[key] = combine(out[key], value) if key in out else value
    return out


_P = ["partition"]
_ENGINE_COUNTERS = (
    ("streamheal_events_scored", "Feature events scored.", _P),
    ("streamheal_labels_joined", "Label events joined to buffered feature events.", _P),
    ("streamheal_labeled_events", "Labeled events learned from.", _P),
    ("streamheal_labeled_correct", "Labeled events the model had predicted right.", _P),
    ("streamheal_labels_expired", "Feature events whose label never came (evicted).", _P),
    ("streamheal_future_timestamps", "Events whose ts was too far ahead to move the clock.", _P),
    ("streamheal_model_restores", "Non-finite models replaced by their last good state.", _P),
    ("streamheal_guard_ignored_features", "Values of names past the distinct-name cap.", _P),
    ("streamheal_guard_folded_categories", "String values folded into __other__.", _P),
    ("streamheal_records_dead_lettered", "Records sent to the DLQ, by reason.", [*_P, "reason"]),
    ("streamheal_missing_values", "Missing feature values.", [*_P, "feature"]),
    ("streamheal_guard_clipped_values", "Numeric values clipped by the guard.", [*_P, "feature"]),
    (
        "streamheal_guard_type_mismatches",
        "Values of the other kind than their feature's first, left out.",
        [*_P, "feature"],
    ),
)
_ENGINE_GAUGES = (
    ("streamheal_join_buffer_events", "Feature events waiting for their label.", _P),
    ("streamheal_join_buffer_bytes", "Estimated bytes of the label-join buffer.", _P),
    ("streamheal_model_version", "Version of the model serving the partition.", _P),
    ("streamheal_challenger_active", "1 while a challenger model is being evaluated.", _P),
    ("streamheal_rollback_watch_active", "1 while a replaced champion is kept for rollback.", _P),
    (
        "streamheal_accuracy_realized_ratio",
        "Accuracy over the last window of labeled events.",
        _P,
    ),
    (
        "streamheal_accuracy_estimated_ratio",
        "Label-free accuracy estimate: mean top-class probability over the last window.",
        _P,
    ),
    ("streamheal_drift_firing", "1 while a detector's drift alarm is firing.", list(_DRIFT_LABELS)),
    (
        "streamheal_feature_cusum_statistic",
        "Current CUSUM statistic of each numeric feature (fires past the threshold).",
        [*_P, "feature"],
    ),
    ("streamheal_feature_cusum_threshold", "The CUSUM threshold.", _P),
)


class NotifierMetrics:
    """What the notifier did: deliveries, failures, its outbox, the alerts it tracks and
    the Slack button clicks it accepted or refused.

    Examples
    --------
    >>> metrics = NotifierMetrics()
    >>> metrics.delivered("slack", "firing")
    >>> metrics.refused_click("bad signature")
    >>> sample_value(metrics.registry, "streamheal_notifications_total", sink="slack",
    ...              kind="firing")
    1.0
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.sent = Counter(
            "streamheal_notifications",
            "Notifications a sink accepted, by sink and kind (firing, resolved, repeat, update).",
            ["sink", "kind"],
            registry=r,
        )
        self.failures = Counter(
            "streamheal_notification_failures",
            "Delivery attempts a sink refused or that failed (each retry counts).",
            ["sink"],
            registry=r,
        )
        self.outbox = Gauge(
            "streamheal_notifier_outbox_notifications",
            "Notifications waiting for delivery (their alert records are not committed yet).",
            registry=r,
        )
        self.alerts = Gauge(
            "streamheal_alerts",
            "Grouped alerts by state (pending, firing) and severity.",
            ["state", "severity"],
            registry=r,
        )
        self.transitions = Counter(
            "streamheal_alert_transitions",
            "Grouped alert state changes written to the alerts topic.",
            ["state"],
            registry=r,
        )
        self.silenced = Counter(
            "streamheal_notifications_silenced",
            "Notifications not sent because a silence matched.",
            registry=r,
        )
        self.records = Counter(
            "streamheal_notifier_records",
            "Alert-topic records the notifier read, by type.",
            ["type"],
            registry=r,
        )
        self.clicks = Counter(
            "streamheal_interactive_requests",
            "Slack button requests, by outcome (accepted, refused, failed).",
            ["outcome"],
            registry=r,
        )
        self.last_loop = Gauge(
            "streamheal_notifier_last_loop_timestamp_seconds",
            "Unix time of the notifier loop's last turn.",
            registry=r,
        )
        for state in ("pending", "firing"):
            for severity in ("info", "warning", "critical"):
                self.alerts.labels(state, severity).set(0)
        for outcome in ("accepted", "refused", "failed"):
            self.clicks.labels(outcome)

    def delivered(self, sink: str, kind: str) -> None:
        self.sent.labels(sink, kind).inc()

    def failed(self, sink: str) -> None:
        self.failures.labels(sink).inc()

    def refused_click(self, why: str) -> None:
        log.warning("slack request refused: %s", why)
        self.clicks.labels("refused").inc()

    def set_alert_counts(self, counts: Mapping[tuple[str, str], int]) -> None:
        for state in ("pending", "firing"):
            for severity in ("info", "warning", "critical"):
                self.alerts.labels(state, severity).set(counts.get((state, severity), 0))


# ---------------------------------------------------------------------- HTTP
class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a hung scraper never keeps the process alive


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # every scrape is not news
        pass


class MetricsServer:
    """``/metrics`` (Prometheus text or OpenMetrics, gzip when asked), ``/healthz`` (the
    loop is alive) and ``/readyz`` (ready to serve) on one port, on a daemon thread.

    Examples
    --------
    >>> from urllib.request import urlopen
    >>> server = MetricsServer(CollectorRegistry(), "127.0.0.1", 0, ready=lambda: True)
    >>> port = server.start()
    >>> urlopen(f"http://127.0.0.1:{port}/readyz").read()
    b'ready\\n'
    >>> server.close()
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        address: str,
        port: int,
        ready: Callable[[], bool] = lambda: True,
        healthy: Callable[[], bool] = lambda: True,
    ) -> None:
        self.address, self.port = address, port
        self._metrics_app = make_wsgi_app(registry)
        self._ready, self._healthy = ready, healthy
        self._server: WSGIServer | None = None

    def start(self) -> int:
        server_class = _ThreadingWSGIServer
        if ":" in self.address:  # an IPv6 address such as "::"
            server_class = type("_V6Server", (_ThreadingWSGIServer,), {})
            server_class.address_family = socket.AF_INET6
        self._server = make_server(
            self.address, self.port, self._app, server_class, handler_class=_QuietHandler
        )
        self.port = self._server.server_port
        threading.Thread(
            target=self._server.serve_forever, name=f"metrics-{self.port}", daemon=True
        ).start()
        return self.port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        if path in ("/healthz", "/readyz"):
            ok = (self._healthy if path == "/healthz" else self._ready)()
            word = {"/healthz": ("ok", "stalled"), "/readyz": ("ready", "not ready")}[path][not ok]
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [word.encode() + b"\n"]
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            links = "".join(
                f'<a href="{p}">{p}</a><br>' for p in ("/metrics", "/healthz", "/readyz")
            )
            return [f"<html><body><h1>streamheal</h1>{links}</body></html>".encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]


def _shown_host(address: str) -> str:
    return "127.0.0.1" if address in ("0.0.0.0", "::", "") else address
