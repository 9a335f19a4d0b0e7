"""One typed configuration for every streamheal command.

Values come from a TOML file (``config/streamheal.toml`` by default) and are then
overridden by ``STREAMHEAL_<SECTION>__<KEY>`` environment variables, e.g.
``STREAMHEAL_KAFKA__BOOTSTRAP_SERVERS=broker:9092``. Any unknown key or badly typed
value stops the program at start with a message that names the key and the form it
expects. An environment value is read as its key's type: a string key (or one of a set
of names) takes the raw text, a list key a TOML array or bare comma-separated names
(``snapshot,fork``), any other key a TOML literal (``250``, ``true``,
``{"linger.ms" = 5}``). Rules that tie two keys together (a cadence that must be a
multiple of ``detectors.check_every``, ``policy.promotion_min_samples <=
policy.promotion_window``, ...) are checked at load too, and their message names both.

Secrets never leave this module in clear: a key whose name contains ``password``,
``secret``, ``token`` or ``key`` (e.g. ``kafka.common."sasl.password"``) shows as ``'***'``
in error messages and in ``repr``, and is left out of :func:`config_hash`.

>>> cfg = load_config(None, env={})
>>> cfg.engine.mode
'per_event'
>>> load_config(None, env={"STREAMHEAL_ENGINE__BATCH_SIZE": "zero"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
streamheal.config.ConfigError: engine.batch_size: expected an integer between 1 and 100000, ...
>>> load_config(None, env={"STREAMHEAL_KAFKA__GROUP_ID": "123"}).kafka.group_id
'123'
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from streamheal.errors import StreamhealError

DEFAULT_CONFIG_PATH = Path("config/streamheal.toml")
ENV_PREFIX = "STREAMHEAL_"
REDACTED = "***"
_SECRET_NAME = re.compile("password|secret|token|key", re.IGNORECASE)
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")

# The enumerations: a value outside one stops the program at start, naming the key.
ModelName = Literal["logistic_regression", "hoeffding_tree", "arf"]
EngineMode = Literal["per_event", "mini_batch"]
ConceptDetector = Literal["adwin", "page_hinkley", "ddm", "hddm_a"]
PolicyAction = Literal["snapshot", "reset", "fork"]
ChallengerStart = Literal["fresh", "copy", "warm"]
PromotionTest = Literal["margin", "one_sided"]
RegistryBackendName = Literal["local", "mlflow"]
ProcessingGuarantee = Literal["exactly-once", "at-least-once"]
DriftKind = Literal["covariate", "prior", "concept", "model", "confidence"]
OverflowPolicy = Literal["refuse", "sample"]
MarginKind = Literal["absolute", "relative"]


class ConfigError(StreamhealError, ValueError):
    """A configuration value is missing, unknown or of the wrong form."""


def _rule(expect: str, check: Callable[[Any], bool] = lambda _: True) -> dict[str, Any]:
    return {"expect": expect, "check": check}


def _positive(expect: str = "an integer >= 1") -> dict[str, Any]:
    return _rule(expect, lambda v: v >= 1)


def _between(low: int, high: int, expect: str = "") -> dict[str, Any]:
    return _rule(expect or f"an integer between {low} and {high}", lambda v: low <= v <= high)


def _non_empty() -> dict[str, Any]:
    return _rule("a non-empty string", lambda v: v.strip() != "")


def _topic_name() -> dict[str, Any]:
    return _rule(
        "a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -, not '.' or '..')",
        lambda v: _TOPIC_NAME.fullmatch(v) is not None and v not in (".", ".."),
    )


def _client_properties() -> dict[str, Any]:
    return _rule(
        "a table of librdkafka properties (strings, numbers or booleans)",
        lambda v: all(isinstance(x, str | int | float) for x in v.values()),
    )


def is_secret(name: str) -> bool:
    """Whether a key's value must never be shown or hashed (``sasl.password``, ...)."""
    return _SECRET_NAME.search(name) is not None


def redact(value: Any, name: str = "") -> Any:
    """``value`` with every secret, at any depth, replaced by ``'***'``.

    >>> redact({"sasl.username": "me", "sasl.password": "hunter2"})
    {'sasl.username': 'me', 'sasl.password': '***'}
    """
    if is_secret(name):
        return REDACTED
    if isinstance(value, dict):
        return {key: redact(item, str(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


# librdkafka properties the worker owns (kafka.common / consumer / producer refuse them).
_OWNED_PROPERTIES = {
    "bootstrap.servers": "set kafka.bootstrap_servers instead",
    "group.id": "set kafka.group_id instead",
    "group.instance.id": "it is worker.id (static membership)",
    "enable.auto.commit": "offsets are committed with the outputs, never on a timer",
    "isolation.level": "the worker reads committed records only (read_committed)",
    "partition.assignment.strategy": "partitions move incrementally (cooperative-sticky)",
    "transactional.id": "it is <kafka.group_id>-<worker.id>, which fences a stale worker",
    "transaction.timeout.ms": "set worker.transaction_timeout_seconds instead",
    "enable.idempotence": "outputs must not be duplicated by retries",
    "acks": "an output is written only once every in-sync replica has it (acks=all)",
}

_PROPERTY_ALIASES = {
    "request.required.acks": "acks",
    "auto.commit.enable": "enable.auto.commit",
}


@dataclass(frozen=True, repr=False)
class KafkaConfig:
    bootstrap_servers: str = field(default="127.0.0.1:19092", metadata=_non_empty())
    group_id: str = field(default="streamheal", metadata=_non_empty())
    client_id: str = field(default="streamheal-worker", metadata=_non_empty())
    # How long `run` waits for the cluster at start before it gives up (exit 69).
    connect_timeout_seconds: float = field(
        default=30.0, metadata=_rule("a number of seconds > 0 and <= 3600", lambda v: 0 < v <= 3600)
    )
    # Extra librdkafka properties passed through verbatim: `common` to every client
    # (security settings), the others to consumers or producers only (tuning).
    common: dict[str, Any] = field(default_factory=dict, metadata=_client_properties())
    consumer: dict[str, Any] = field(default_factory=dict, metadata=_client_properties())
    producer: dict[str, Any] = field(default_factory=dict, metadata=_client_properties())

    def __post_init__(self) -> None:
        # Properties the worker sets itself because exactly-once or the group depends on
        # them: overridden here, a worker would commit offsets its transactions do not
        # cover, read aborted records, or lose its transactional fencing.
        for table in ("common", "consumer", "producer"):
            for name in getattr(self, table):
                # librdkafka's aliases and its "topic." prefix name the same property.
                canonical = name.strip().lower().removeprefix("topic.")
                why = _OWNED_PROPERTIES.get(_PROPERTY_ALIASES.get(canonical, canonical))
                if why is not None:
                    raise ConfigError(f'kafka.{table}."{name}": the worker sets it; {why}')

    def __repr__(self) -> str:
        # The dataclass repr would print `sasl.password` and friends into any log line.
        shown = ", ".join(
            f"{f.name}={redact(getattr(self, f.name), f.name)!r}" for f in dataclasses.fields(self)
        )
        return f"{type(self).__name__}({shown})"


TOPIC_KEYS = ("events", "predictions", "alerts", "metrics", "dlq", "state", "control")


@dataclass(frozen=True)
class TopicsConfig:
    events: str = field(default="streamheal.events", metadata=_topic_name())
    predictions: str = field(default="streamheal.predictions", metadata=_topic_name())
    alerts: str = field(default="streamheal.alerts", metadata=_topic_name())
    metrics: str = field(default="streamheal.metrics", metadata=_topic_name())
    dlq: str = field(default="streamheal.dlq", metadata=_topic_name())
    state: str = field(default="streamheal.state", metadata=_topic_name())
    control: str = field(default="streamheal.control", metadata=_topic_name())
    partitions: int = field(default=4, metadata=_between(1, 10_000))
    replication_factor: int = field(default=1, metadata=_positive())
    create: bool = True

    def __post_init__(self) -> None:
        # A worker whose predictions topic is its events topic would feed on its own output.
        seen: dict[str, str] = {}
        for key, topic in self.names().items():
            # Kafka refuses two topics that differ only by '.' against '_' (metric names).
            folded = topic.replace(".", "_")
            if folded in seen:
                raise ConfigError(
                    f"topics.{key}: {topic!r} collides with topics.{seen[folded]} (Kafka "
                    "treats '.' and '_' alike in topic names); every topic must be distinct"
                )
            seen[folded] = key

    def names(self) -> dict[str, str]:
        """Every topic streamheal reads or writes, by its config key."""
        return {key: getattr(self, key) for key in TOPIC_KEYS}


@dataclass(frozen=True)
class EventsConfig:
    max_bytes: int = field(
        default=65536,
        metadata=_between(1, 10 * 2**20, "an integer between 1 and 10485760 (10 MiB)"),
    )
    # Bounds on one event; past them the event is dead-lettered (README: "Limits and guards").
    max_id_length: int = field(default=256, metadata=_positive())
    max_features: int = field(default=1000, metadata=_positive())
    max_feature_name_length: int = field(default=256, metadata=_positive())


@dataclass(frozen=True)
class ModelConfig:
    name: ModelName = "logistic_regression"
    # Keyword arguments of the River estimator, e.g. {grace_period = 100}.
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineConfig:
    mode: EngineMode = "per_event"
    # librdkafka's consume() refuses more than 1,000,000 records; a batch is also one
    # transaction and one Engine call, so far fewer make sense.
    # 2,000: one transaction (and checkpoint) per 2,000 records; two worker processes on
    # two cores reached 1.3-1.9x one at 2,000 and 1.2x at 500 (bench/README.md).
    batch_size: int = field(default=2000, metadata=_between(1, 100_000))
    seed: int = 42
    join_buffer_size: int = field(default=100_000, metadata=_between(1, 1_000_000))
    join_max_age_seconds: float = field(
        default=3600.0, metadata=_rule("a number of seconds > 0", lambda v: v > 0)
    )
    # Byte budget of the label-join buffer (estimated), per partition; oldest evicted first.
    join_buffer_max_bytes: int = field(default=256 * 1024 * 1024, metadata=_positive())


@dataclass(frozen=True)
class DetectorsConfig:
    """Drift detection on every signal, under one family-wise false-alarm budget."""

    enabled: bool = True
    # Expected false drift declarations per 10,000 stationary events, all signals together.
    false_alarms_per_10k: float = field(
        default=0.5,
        metadata=_rule("a number between 0.000001 and 10000", lambda v: 1e-6 <= v <= 1e4),
    )
    reference_size: int = field(default=500, metadata=_between(50, 1_000_000))
    window_size: int = field(default=500, metadata=_between(50, 1_000_000))
    # Cheap checks (sequential detectors, confirmation bookkeeping) every `check_every` events;
    # windowed tests (KS, PSI, chi-square, re-scored predictions) every `window_check_every`.
    check_every: int = field(default=100, metadata=_positive())
    window_check_every: int = field(default=500, metadata=_positive())
    # A drift is declared when `confirm_checks` of the last `confirm_window` checks raise,
    # and cleared when the last `confirm_window` checks are all below the clearing level.
    confirm_checks: int = field(default=2, metadata=_positive())
    confirm_window: int = field(default=3, metadata=_positive())
    cooldown_events: int = field(default=1000, metadata=_rule("an integer >= 0", lambda v: v >= 0))
    # Hysteresis: p-value tests clear above `clear_p_value`; thresholds clear below half.
    clear_p_value: float = field(
        default=0.05, metadata=_rule("a probability in (0, 1)", lambda v: 0 < v < 1)
    )
    cusum_k: float = field(default=0.25, metadata=_rule("a number > 0", lambda v: v > 0))
    psi_threshold: float = field(default=0.25, metadata=_rule("a number > 0", lambda v: v > 0))
    psi_bins: int = field(default=10, metadata=_rule("an integer >= 2", lambda v: v >= 2))
    max_categories: int = field(default=50, metadata=_positive())
    max_features: int = field(default=200, metadata=_positive())
    concept_detector: ConceptDetector = "adwin"
    # An ADWIN's warning level: a second ADWIN at this looser confidence; a rise it sees
    # lets the policy start a challenger before the drift is confirmed (as DDM's warning
    # level does). 0 turns it off; DDM and HDDM_A keep their own warning levels.
    warning_delta: float = field(
        default=0.0, metadata=_rule("a number >= 0 and < 1", lambda v: 0 <= v < 1)
    )
    # Concept detectors decide on their own statistics: confirm on the first firing by default.
    concept_confirm_checks: int = field(default=1, metadata=_positive())
    # Page-Hinkley threshold on the top-class probability stream (River's default is 50).
    confidence_threshold: float = field(
        default=50.0, metadata=_rule("a number > 0", lambda v: v > 0)
    )
    # Rows re-scored by the current model for the model-drift and confidence comparisons,
    # every `model_check_every` events (re-scoring is the costliest check).
    model_sample_size: int = field(
        default=200, metadata=_rule("an integer >= 20", lambda v: v >= 20)
    )
    model_check_every: int = field(default=5000, metadata=_positive())
    reference_profile: str = ""  # a profile JSON written by DriftSuite.profile(); "" = learn it
    roll_reference_on_drift: bool = False
    # A new reference whose two halves differ (KS, any numeric feature) slides: its first
    # half is dropped and collected again, at most this many times (0 = take it as it is).
    reference_stability_checks: int = field(
        default=4, metadata=_rule("an integer >= 0", lambda v: isinstance(v, int) and v >= 0)
    )

    def __post_init__(self) -> None:
        # Windowed tests and model re-scoring run at check boundaries only: a cadence that
        # is not a multiple of check_every would silently run at their common multiple.
        for cadence in ("window_check_every", "model_check_every"):
            every = getattr(self, cadence)
            if every % self.check_every:
                raise ConfigError(
                    f"detectors.{cadence} ({every}) must be a multiple of detectors.check_every "
                    f"({self.check_every}): checks run only every check_every events"
                )
        # "k of the last n checks" with k > n would ask for more raising checks than it keeps.
        for confirm in ("confirm_checks", "concept_confirm_checks"):
            if getattr(self, confirm) > self.confirm_window:
                raise ConfigError(
                    f"detectors.{confirm} ({getattr(self, confirm)}) must be <= "
                    f"detectors.confirm_window ({self.confirm_window}): a drift is confirmed "
                    "by that many of the last confirm_window checks"
                )


_ACTIONS = typing.get_args(PolicyAction)


def _actions_rule() -> dict[str, Any]:
    return _rule(
        "a list of actions from 'snapshot', 'reset', 'fork'",
        lambda v: isinstance(v, list) and all(a in _ACTIONS for a in v),
    )


@dataclass(frozen=True)
class PolicyConfig:
    """What to do when a drift is confirmed, per drift kind; champion/challenger rules."""

    enabled: bool = True
    covariate: list[PolicyAction] = field(
        default_factory=lambda: ["snapshot"], metadata=_actions_rule()
    )
    prior: list[PolicyAction] = field(
        default_factory=lambda: ["snapshot"], metadata=_actions_rule()
    )
    concept: list[PolicyAction] = field(
        default_factory=lambda: ["snapshot", "fork"], metadata=_actions_rule()
    )
    model: list[PolicyAction] = field(
        default_factory=lambda: ["snapshot"], metadata=_actions_rule()
    )
    confidence: list[PolicyAction] = field(
        default_factory=lambda: ["snapshot"], metadata=_actions_rule()
    )
    # A challenger (and a reset model) starts "fresh", as a "copy" of the champion, or
    # "warm": fresh and trained on the last `warm_start` labeled events (after a rise of the
    # error rate, only those since the rise began, each scored before it is learned).
    challenger: ChallengerStart = "warm"
    warm_start: int = field(default=200, metadata=_rule("an integer >= 0", lambda v: v >= 0))
    # Promote when the challenger's accuracy over the last `promotion_window` labeled events
    # beats the champion's by `promotion_margin` ("margin"), or a one-sided two-proportion
    # z-test at level 0.05 says so ("one_sided"), with at least `promotion_min_samples`.
    promotion_test: PromotionTest = "margin"
    promotion_window: int = field(default=300, metadata=_positive())
    promotion_min_samples: int = field(default=100, metadata=_positive())
    promotion_margin: float = field(
        default=0.02,
        metadata=_rule("an accuracy difference >= 0 and < 1", lambda v: 0 <= v < 1),
    )
    # From `promotion_early_samples` labeled events on, a lead significant at the 0.001 level
    # (one-sided two-proportion z-test) promotes at once; 0 turns early promotion off.
    promotion_early_samples: int = field(
        default=30, metadata=_rule("an integer >= 0", lambda v: v >= 0)
    )
    challenger_timeout: int = field(default=5000, metadata=_positive())  # labeled events
    # Catch-up: a model started after a drift (a fresh or warm challenger, a reset model)
    # learns its first `catch_up_events` labeled events, warm start included, with sample
    # weight `catch_up_weight`, when its learner counts evidence (River's Hoeffding trees:
    # an event of weight w counts as w events, so the young tree splits w times sooner, as
    # ARF's online bagging does with its Poisson(6) weights). Gradient learners (logistic
    # regression) always learn at weight 1. Off (1) by default: on abrupt drifts 10 recovers
    # as fast as ARF, but on a noisy gradual drift the hurried splits overfit (bench/README).
    catch_up_weight: float = field(
        default=1.0, metadata=_rule("a number between 1 and 100", lambda v: 1 <= v <= 100)
    )
    catch_up_events: int = field(default=5000, metadata=_rule("an integer >= 0", lambda v: v >= 0))
    # After a reset or promotion the old champion is kept as a shadow for
    # `rollback_window` labeled events; if it beats the new one by `rollback_margin`, it
    # comes back.
    rollback_window: int = field(default=300, metadata=_positive())
    rollback_margin: float = field(default=0.05, metadata=_rule("a number >= 0", lambda v: v >= 0))
    # Start the challenger on the concept detector's warning already. Until a drift
    # confirms it, such a challenger is promoted only by the early test's clear lead, and
    # it is discarded after `warning_patience` labeled events without a confirmation.
    fork_on_warning: bool = True
    warning_patience: int = field(default=500, metadata=_positive())

    def __post_init__(self) -> None:
        # The comparison window holds at most promotion_window results: a larger minimum
        # could never be met, and no challenger would ever be promoted.
        if self.promotion_min_samples > self.promotion_window:
            raise ConfigError(
                f"policy.promotion_min_samples ({self.promotion_min_samples}) must be <= "
                f"policy.promotion_window ({self.promotion_window}): the comparison keeps only "
                "the last promotion_window labeled events"
            )


@dataclass(frozen=True)
class RegistryConfig:
    backend: RegistryBackendName = "local"
    # local backend; MLflow's artifacts
    path: str = field(default="~/.local/share/streamheal/registry", metadata=_non_empty())
    model_name: str = field(default="streamheal", metadata=_non_empty())
    tracking_uri: str = ""  # mlflow backend, e.g. "sqlite:///mlflow.db" or "http://mlflow:5000"


@dataclass(frozen=True)
class GuardsConfig:
    """What one hostile or careless value may do to a partition's Engine (README: "Limits
    and guards")."""

    # Numeric inputs: a value beyond `outlier_scales` spreads of the feature's reference
    # (its first `reference_size` values, central 98%) or beyond `max_abs_value` is clipped.
    clip_outliers: bool = True
    outlier_scales: float = field(default=3.0, metadata=_rule("a number > 0", lambda v: v > 0))
    max_abs_value: float = field(
        default=1e15, metadata=_rule("a finite number > 0", lambda v: 0 < v < math.inf)
    )
    reference_size: int = field(default=500, metadata=_rule("an integer >= 10", lambda v: v >= 10))
    # Distinct feature names per partition, and distinct values per string feature; past
    # them a new name is ignored (not fed to the model or detectors), a new value becomes
    # "__other__".
    max_distinct_features: int = field(default=1000, metadata=_positive())
    max_categories: int = field(default=1000, metadata=_positive())
    # An event whose ts is more than this ahead of the partition's event-time high-water mark
    # is scored but does not move the Engine's clock (so it cannot expire waiting labels).
    max_future_skew_seconds: float = field(
        default=86400.0, metadata=_rule("a number of seconds > 0", lambda v: v > 0)
    )
    # After learning, a model with non-finite weights or probabilities is replaced by its
    # last good state, kept every `good_state_every` labeled events.
    check_model: bool = True
    good_state_every: int = field(default=1000, metadata=_positive())


@dataclass(frozen=True)
class WorkerConfig:
    poll_timeout_seconds: float = field(
        default=0.5, metadata=_rule("a number of seconds > 0", lambda v: v > 0)
    )
    progress_interval_seconds: float = field(
        default=10.0, metadata=_rule("a number of seconds > 0", lambda v: v > 0)
    )
    # "exactly-once": outputs, checkpoints and offsets commit in one Kafka transaction;
    # "at-least-once": outputs are acknowledged, then offsets committed (a crash re-scores).
    guarantee: ProcessingGuarantee = "exactly-once"
    # A stable name for this worker process: its transactional.id is "<group_id>-<id>", so a
    # restarted worker fences its previous incarnation at once. "" = "<hostname>-0";
    # `run --workers N` gives each process "<id or hostname>-<i>".
    id: str = field(
        default="",
        metadata=_rule(
            "letters, digits, '.', '_' or '-' (at most 100)",
            lambda v: re.fullmatch(r"[A-Za-z0-9._-]{0,100}", v) is not None,
        ),
    )
    # Each assigned partition's Engine goes to the state topic every N batches (and on
    # revoke); between checkpoints, recovery re-processes the gap without emitting.
    checkpoint_every_batches: int = field(
        default=1, metadata=_rule("an integer between 1 and 10000", lambda v: 1 <= v <= 10000)
    )
    checkpoint_chunk_bytes: int = field(
        default=512 * 1024,
        metadata=_rule(
            "bytes between 1024 and 900000 (below the broker's 1 MB record limit)",
            lambda v: 1024 <= v <= 900_000,
        ),
    )
    # Kafka aborts a transaction older than this; also how long a partition's restore may
    # wait for a dead worker's open transaction to be aborted.
    transaction_timeout_seconds: float = field(
        default=60.0, metadata=_rule("seconds between 1 and 900", lambda v: 1 <= v <= 900)
    )
    # How long the group waits for a worker that stopped heartbeating (killed, or left:
    # static members do not announce leaving) before its partitions move.
    session_timeout_seconds: float = field(
        default=15.0, metadata=_rule("seconds between 6 and 300", lambda v: 6 <= v <= 300)
    )


def _port(zero: str = "") -> dict[str, Any]:
    return _rule(
        "a TCP port" + (f" (0 = {zero})" if zero else ""), lambda v: (0 if zero else 1) <= v < 65536
    )


def _seconds(low: float = 0.0) -> dict[str, Any]:
    return _rule(f"a number of seconds >= {low:g}", lambda v: v >= low)


def _silences_rule() -> dict[str, Any]:
    allowed = {"match", "starts", "until", "comment"}
    return _rule(
        'a list of tables like {match = "kind=covariate,feature=mean radius", '
        'until = "2026-12-01T00:00Z", comment = "..."} (match required)',
        lambda v: (
            isinstance(v, list)
            and all(
                isinstance(s, dict)
                and isinstance(s.get("match"), str)
                and set(s) <= allowed
                and all(isinstance(x, str) for x in s.values())
                for s in v
            )
        ),
    )


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus exporter of ``streamheal run`` (README: "Metrics")."""

    enabled: bool = True
    # /metrics, /healthz and /readyz share this port; several workers on one host need one
    # port each (0 = any free port, logged at start).
    port: int = field(default=9108, metadata=_port("any free port"))
    address: str = field(default="0.0.0.0", metadata=_non_empty())
    # Feature names with a label of their own; the rest are folded into "other".
    max_feature_labels: int = field(default=50, metadata=_between(1, 10_000))
    # JSON snapshots of the same numbers on the metrics topic (0 = none).
    snapshot_interval_seconds: float = field(default=15.0, metadata=_seconds())
    # /healthz answers 503 when the consume loop has not turned for this long.
    stall_seconds: float = field(default=120.0, metadata=_seconds(1.0))


@dataclass(frozen=True)
class AlertsConfig:
    """Alert grouping and tuning, and the notifier (README: "Alerts and Slack")."""

    # Alerts of one kind that start within this window are one notification.
    group_window_seconds: float = field(default=30.0, metadata=_seconds())
    # A still-firing alert is reminded in its thread this often.
    repeat_interval_seconds: float = field(default=14400.0, metadata=_seconds(1.0))
    # An alert resolves once no partition has fired for this long (hysteresis across them).
    resolve_hold_seconds: float = field(default=60.0, metadata=_seconds())
    # Severity: one step up for a fall of realized accuracy this large, one for an effect
    # this many times past its detector's threshold.
    critical_accuracy_drop: float = field(
        default=0.05, metadata=_rule("a number in (0, 1]", lambda v: 0 < v <= 1)
    )
    large_effect: float = field(default=5.0, metadata=_rule("a number >= 1", lambda v: v >= 1))
    notifier_group_id: str = ""  # "" = "<kafka.group_id>-notifier"
    # `streamheal run` starts a notifier thread when Slack credentials are set.
    embedded_notifier: bool = True
    # /metrics, /healthz, /readyz of `streamheal notify` (0 = any free port).
    # Below metrics.port: `run --workers N` gives its workers metrics.port + i.
    notifier_port: int = field(default=9107, metadata=_port("any free port"))
    notifier_address: str = field(default="0.0.0.0", metadata=_non_empty())
    # The longest wait between two delivery attempts while a sink is down.
    retry_max_seconds: float = field(default=60.0, metadata=_seconds(0.01))
    grafana_url: str = ""  # dashboard link in every message
    runbook_url: str = ""
    # Permanent silences; by default a worker's cold start (first start, or no usable
    # checkpoint) and a clipped outlier are recorded on the alerts topic but not sent: the
    # worker logs each one and the metrics count them.
    silences: list = field(
        default_factory=lambda: [
            {"match": "kind=notice,signal=cold_start", "comment": "recorded, not sent"},
            {"match": "kind=notice,signal=outlier_clipped", "comment": "counted, not sent"},
        ],
        metadata=_silences_rule(),
    )


DRIFT_KINDS = typing.get_args(DriftKind)


def _cron_rule() -> dict[str, Any]:
    def valid(text: str) -> bool:
        if not text:
            return True
        from streamheal.cron import CronSchedule, ScheduleError

        try:
            CronSchedule(text)
        except ScheduleError:
            return False
        return True

    return _rule(
        'a cron expression in UTC ("0 3 * * *"; a 6th field is seconds), or "" for none', valid
    )


@dataclass(frozen=True)
class RetrainConfig:
    """Batch retraining gated by offline evaluation (README: "Batch retraining")."""

    # Triggers of `streamheal retrain` as a service; `--schedule CRON` overrides `schedule`.
    schedule: str = field(default="", metadata=_cron_rule())
    # A run after `drift_alerts` confirmed drift alerts of `drift_kinds` within
    # `drift_window_seconds` (0 = no drift trigger); one drift seen by several partitions
    # within alerts.group_window_seconds counts once.
    drift_alerts: int = field(default=3, metadata=_rule("an integer >= 0", lambda v: v >= 0))
    drift_kinds: list[DriftKind] = field(
        default_factory=lambda: ["concept", "prior", "covariate"],
        metadata=_rule(
            "a non-empty list of drift kinds from " + ", ".join(repr(k) for k in DRIFT_KINDS),
            lambda v: bool(v) and all(k in DRIFT_KINDS for k in v),
        ),
    )
    drift_window_seconds: float = field(default=3600.0, metadata=_seconds(1.0))
    poll_seconds: float = field(
        default=1.0, metadata=_rule("a number of seconds in (0, 60]", lambda v: 0 < v <= 60)
    )
    # Data: the events topic from `window_seconds` ago (record time), the newest
    # `window_count` labeled examples of it when > 0 (0 = the whole time window).
    window_seconds: float = field(default=7 * 86400.0, metadata=_seconds(1.0))
    window_count: int = field(default=0, metadata=_rule("an integer >= 0", lambda v: v >= 0))
    # Bounds on the window held in memory; past one, "refuse" (fail the run) or "sample"
    # (a seeded uniform sample that fits).
    max_examples: int = field(default=200_000, metadata=_between(10, 100_000_000))
    max_memory_mb: int = field(default=1024, metadata=_between(1, 1_000_000))
    overflow: OverflowPolicy = "refuse"
    # The newest share of the window, never trained on, judges candidate and champion.
    holdout_share: float = field(
        default=0.2, metadata=_rule("a number in (0, 1)", lambda v: 0 < v < 1)
    )
    # The gate: absolute floors, then beating the champion by `margin` accuracy
    # ("absolute": + margin; "relative": x (1 + margin)).
    min_holdout: int = field(default=100, metadata=_positive())
    min_accuracy: float = field(
        default=0.0, metadata=_rule("a number in [0, 1]", lambda v: 0 <= v <= 1)
    )
    min_class_recall: float = field(
        default=0.0, metadata=_rule("a number in [0, 1]", lambda v: 0 <= v <= 1)
    )
    max_log_loss: float = field(
        default=0.0, metadata=_rule("a number >= 0 (0 = no bound)", lambda v: v >= 0)
    )
    margin: float = field(default=0.01, metadata=_rule("a number >= 0", lambda v: v >= 0))
    margin_kind: MarginKind = "absolute"
    time_budget_seconds: float = field(default=1800.0, metadata=_seconds(1.0))
    # One retrain at a time on this host; "" = <registry.path>/<registry.model_name>.retrain.lock
    # (its trigger state is kept beside it, in <lock_path>.state.json).
    lock_path: str = ""
    # /metrics, /healthz, /readyz of the service (0 = any free port, printed at start).
    metrics_port: int = field(default=9106, metadata=_port("any free port"))
    metrics_address: str = field(default="0.0.0.0", metadata=_non_empty())


@dataclass(frozen=True)
class LocalKafkaConfig:
    version: str = "4.1.1"
    port: int = field(default=19092, metadata=_rule("a TCP port", lambda v: 0 < v < 65536))
    controller_port: int = field(
        default=19093, metadata=_rule("a TCP port", lambda v: 0 < v < 65536)
    )
    home: str = "~/.cache/streamheal/kafka"
    heap: str = "512m"


@dataclass(frozen=True)
class Config:
    """The whole configuration: one frozen section per table of ``streamheal.toml``.

    Build it from a file with :func:`load_config`, or in Python: every section defaults
    to the documented values, and :meth:`replace` returns a validated copy.

    Parameters
    ----------
    kafka, topics, events, model, engine, detectors, policy, registry, guards, worker, \
metrics, alerts, retrain, local_kafka
        The sections, each a frozen dataclass of its keys.

    Examples
    --------
    >>> cfg = Config().replace(engine={"mode": "mini_batch"}, detectors={"check_every": 50})
    >>> cfg.engine.mode, cfg.detectors.check_every, cfg.engine.batch_size
    ('mini_batch', 50, 2000)
    >>> Config().replace(policy={"challenger": "lukewarm"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamheal.config.ConfigError: policy.challenger: expected one of 'fresh', 'copy', ...
    """

    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    detectors: DetectorsConfig = field(default_factory=DetectorsConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    guards: GuardsConfig = field(default_factory=GuardsConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    local_kafka: LocalKafkaConfig = field(default_factory=LocalKafkaConfig)

    def replace(self, **sections: Mapping[str, Any]) -> Config:
        """A validated copy with some keys changed: ``replace(engine={"mode": ...})``."""
        merged = _merge(dataclasses.asdict(self), {k: dict(v) for k, v in sections.items()})
        return _build(Config, merged, "")


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (or the default file if it exists), apply env overrides, validate."""
    table: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if not file.exists():
            raise ConfigError(f"config file {str(file)!r} does not exist")
        if not file.is_file():
            raise ConfigError(f"config file {str(file)!r} is a directory, not a TOML file")
        table = _read_toml(file)
    elif DEFAULT_CONFIG_PATH.is_file():
        table = _read_toml(DEFAULT_CONFIG_PATH)
    overrides = _env_overrides(os.environ if env is None else env)
    return _build(Config, _merge(table, overrides), "")


def apply_env(config: Config, env: Mapping[str, str] | None = None) -> Config:
    """``config`` with the ``STREAMHEAL_*`` overrides applied, as :func:`load_config` would.

    >>> apply_env(Config(), {"STREAMHEAL_KAFKA__GROUP_ID": "replayer"}).kafka.group_id
    'replayer'
    """
    overrides = _env_overrides(os.environ if env is None else env)
    return config.replace(**overrides) if overrides else config


def config_hash(config: Config) -> str:
    """A short fingerprint of the whole config but its secrets (16 hex digits of SHA-256).

    Stored with every registered model, so two models can be told apart by the config
    that produced them; a changed password alone does not change it.

    >>> one = Config().replace(kafka={"common": {"sasl.password": "one"}})
    >>> two = Config().replace(kafka={"common": {"sasl.password": "two"}})
    >>> config_hash(one) == config_hash(two), len(config_hash(one))
    (True, 16)
    >>> config_hash(one) == config_hash(one.replace(engine={"seed": 7}))
    False
    """
    canonical = json.dumps(
        redact(dataclasses.asdict(config)), sort_keys=True, separators=(",", ":"), default=repr
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{file}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8"
        ) from err
    except OSError as err:
        raise ConfigError(f"{file}: cannot be read: {err.strerror}") from err
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{file}: not valid TOML: {err}") from err


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        overrides.setdefault(section, {})[key] = _parse_env_value(raw, _key_type(section, key))
    return overrides


def _key_type(section: str, key: str) -> Any:
    """The declared type of ``section.key``, or None for an unknown key (reported later)."""
    section_type = typing.get_type_hints(Config).get(section)
    if section_type is None:
        return None
    return typing.get_type_hints(section_type).get(key)


def _parse_env_value(raw: str, hint: Any) -> Any:
    # A string key (or one of a set of names) takes the text as it is:
    # STREAMHEAL_KAFKA__GROUP_ID=123 means "123", not the number 123.
    if hint is str or typing.get_origin(hint) is Literal:
        return raw
    # A list of names may be given bare: STREAMHEAL_POLICY__CONCEPT=snapshot,fork.
    if typing.get_origin(hint) is list and not raw.lstrip().startswith("["):
        return [part.strip() for part in raw.split(",") if part.strip()]
    # Anything else is read as a TOML literal (numbers, booleans, inline tables); a value
    # that is not one stays a string, so the error names the key and the expected form.
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        # Echoed by the error that follows: never with a secret in it.
        return "***" if _SECRET_NAME.search(raw) else raw


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _build(cls: type, table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where or 'config'}: expected a table, got {redact(table, where)!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"{key}: unknown key; expected one of {', '.join(sorted(fields))}")
    values = {}
    for name, value in table.items():
        key = f"{where}.{name}" if where else name
        values[name] = _coerce(hints[name], value, key, fields[name].metadata)
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str, meta: Mapping[str, Any]) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if typing.get_origin(hint) is Literal:
        options = typing.get_args(hint)
        if not isinstance(value, str) or value not in options:
            expect = "one of " + ", ".join(repr(o) for o in options)
            raise ConfigError(f"{key}: expected {expect}, got {redact(value, key)!r}")
        return value
    origin = typing.get_origin(hint) or hint
    if isinstance(origin, types.UnionType):
        origin = typing.get_args(hint)[0]
    expect = meta.get("expect") or _DEFAULT_EXPECT.get(origin, origin.__name__)
    ok = _TYPE_CHECKS.get(origin, lambda v: isinstance(v, origin))(value)
    if ok and origin is float:
        value = float(value)
    if not ok or not meta.get("check", lambda _: True)(value):
        raise ConfigError(f"{key}: expected {expect}, got {redact(value, key)!r}")
    if origin is str and "\x00" in value:  # a path or name with NUL breaks every OS call
        raise ConfigError(f"{key}: must not contain a NUL character")
    return value


_TYPE_CHECKS: dict[Any, Callable[[Any], bool]] = {
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    bool: lambda v: isinstance(v, bool),
    str: lambda v: isinstance(v, str),
    dict: lambda v: isinstance(v, dict),
    list: lambda v: isinstance(v, list),
}
_DEFAULT_EXPECT = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
    dict: "a table",
    list: "a list",
}
