"""One typed configuration for every streamheal command.

Values come from a TOML file (``config/streamheal.toml`` by default) and are then
overridden by ``STREAMHEAL_<SECTION>__<KEY>`` environment variables, e.g.
``STREAMHEAL_KAFKA__BOOTSTRAP_SERVERS=broker:9092``. Any unknown key or badly typed
value stops the program at start with a message that names the key and the form it
expects.

>>> cfg = load_config(None, env={})
>>> cfg.engine.mode
'per_event'
>>> load_config(None, env={"STREAMHEAL_ENGINE__BATCH_SIZE": "zero"})
Traceback (most recent call last):
...
streamheal.config.ConfigError: engine.batch_size: expected an integer >= 1, got 'zero'
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_PATH = Path("config/streamheal.toml")
ENV_PREFIX = "STREAMHEAL_"


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong form."""


def _rule(expect: str, check: Callable[[Any], bool] = lambda _: True) -> dict[str, Any]:
    return {"expect": expect, "check": check}


def _positive(expect: str = "an integer >= 1") -> dict[str, Any]:
    return _rule(expect, lambda v: v >= 1)


def _choice(*options: str) -> dict[str, Any]:
    return _rule("one of " + ", ".join(repr(o) for o in options), lambda v: v in options)


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:19092"
    group_id: str = "streamheal"
    client_id: str = "streamheal-worker"
    # Extra librdkafka properties passed through verbatim: `common` to every client
    # (security settings), the others to consumers or producers only (tuning).
    common: dict[str, Any] = field(default_factory=dict)
    consumer: dict[str, Any] = field(default_factory=dict)
    producer: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicsConfig:
    events: str = "streamheal.events"
    predictions: str = "streamheal.predictions"
    alerts: str = "streamheal.alerts"
    metrics: str = "streamheal.metrics"
    dlq: str = "streamheal.dlq"
    state: str = "streamheal.state"
    control: str = "streamheal.control"
    partitions: int = field(default=4, metadata=_positive())
    replication_factor: int = field(default=1, metadata=_positive())
    create: bool = True


@dataclass(frozen=True)
class EventsConfig:
    max_bytes: int = field(default=65536, metadata=_positive())


@dataclass(frozen=True)
class ModelConfig:
    name: str = field(
        default="logistic_regression",
        metadata=_choice("logistic_regression", "hoeffding_tree", "arf"),
    )
    # Keyword arguments of the River estimator, e.g. {grace_period = 100}.
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineConfig:
    mode: str = field(default="per_event", metadata=_choice("per_event", "mini_batch"))
    batch_size: int = field(default=500, metadata=_positive())
    seed: int = 42
    join_buffer_size: int = field(default=100_000, metadata=_positive())
    join_max_age_seconds: float = field(
        default=3600.0, metadata=_rule("a number of seconds > 0", lambda v: v > 0)
    )


@dataclass(frozen=True)
class DetectorsConfig:
    """Drift detection on every signal, under one family-wise false-alarm budget."""

    enabled: bool = True
    # Expected false drift declarations per 10,000 stationary events, all signals together.
    false_alarms_per_10k: float = field(
        default=0.5, metadata=_rule("a number > 0", lambda v: v > 0)
    )
    reference_size: int = field(default=500, metadata=_rule("an integer >= 50", lambda v: v >= 50))
    window_size: int = field(default=500, metadata=_rule("an integer >= 50", lambda v: v >= 50))
    # Cheap checks (sequential detectors, confirmation bookkeeping) every `check_every` events;
    # windowed tests (KS, PSI, chi-square, re-scored predictions) every `window_check_every`.
    check_every: int = field(default=100, metadata=_positive())
    window_check_every: int = field(default=2500, metadata=_positive())
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
    concept_detector: str = field(
        default="adwin", metadata=_choice("adwin", "page_hinkley", "ddm", "hddm_a")
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


_ACTIONS = ("snapshot", "reset", "fork")


def _actions_rule() -> dict[str, Any]:
    return _rule(
        "a list of actions from 'snapshot', 'reset', 'fork'",
        lambda v: isinstance(v, list) and all(a in _ACTIONS for a in v),
    )


@dataclass(frozen=True)
class PolicyConfig:
    """What to do when a drift is confirmed, per drift kind; champion/challenger rules."""

    enabled: bool = True
    covariate: list = field(default_factory=lambda: ["snapshot"], metadata=_actions_rule())
    prior: list = field(default_factory=lambda: ["snapshot"], metadata=_actions_rule())
    concept: list = field(default_factory=lambda: ["snapshot", "fork"], metadata=_actions_rule())
    model: list = field(default_factory=lambda: ["snapshot"], metadata=_actions_rule())
    confidence: list = field(default_factory=lambda: ["snapshot"], metadata=_actions_rule())
    # A challenger (and a reset model) starts "fresh", as a "copy" of the champion, or
    # "warm": fresh and trained on the last `warm_start` labeled events.
    challenger: str = field(default="warm", metadata=_choice("fresh", "copy", "warm"))
    warm_start: int = field(default=200, metadata=_rule("an integer >= 0", lambda v: v >= 0))
    # Promote when the challenger's accuracy over the last `promotion_window` labeled events
    # beats the champion's by `promotion_margin` ("margin"), or a one-sided two-proportion
    # z-test at level 0.05 says so ("one_sided"), with at least `promotion_min_samples`.
    promotion_test: str = field(default="margin", metadata=_choice("margin", "one_sided"))
    promotion_window: int = field(default=300, metadata=_positive())
    promotion_min_samples: int = field(default=100, metadata=_positive())
    promotion_margin: float = field(default=0.02, metadata=_rule("a number >= 0", lambda v: v >= 0))
    challenger_timeout: int = field(default=5000, metadata=_positive())  # labeled events
    # After a reset or promotion the old champion is kept as a shadow for
    # `rollback_window` labeled events; if it beats the new one by `rollback_margin`, it
    # comes back.
    rollback_window: int = field(default=300, metadata=_positive())
    rollback_margin: float = field(default=0.05, metadata=_rule("a number >= 0", lambda v: v >= 0))
    # Start the challenger on the concept detector's warning (DDM, HDDM_A) already.
    fork_on_warning: bool = True


@dataclass(frozen=True)
class RegistryConfig:
    backend: str = field(default="local", metadata=_choice("local", "mlflow"))
    path: str = "~/.local/share/streamheal/registry"  # local backend; MLflow's artifacts
    model_name: str = "streamheal"
    tracking_uri: str = ""  # mlflow backend, e.g. "sqlite:///mlflow.db" or "http://mlflow:5000"


@dataclass(frozen=True)
class WorkerConfig:
    poll_timeout_seconds: float = field(
        default=0.5, metadata=_rule("a number of seconds > 0", lambda v: v > 0)
    )
    progress_interval_seconds: float = field(
        default=10.0, metadata=_rule("a number of seconds > 0", lambda v: v > 0)
    )


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
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    detectors: DetectorsConfig = field(default_factory=DetectorsConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
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
        if not file.is_file():
            raise ConfigError(f"config file {str(file)!r} does not exist")
        table = _read_toml(file)
    elif DEFAULT_CONFIG_PATH.is_file():
        table = _read_toml(DEFAULT_CONFIG_PATH)
    overrides = _env_overrides(os.environ if env is None else env)
    return _build(Config, _merge(table, overrides), "")


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{file}: not valid TOML: {err}") from err


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        overrides.setdefault(section, {})[key] = _parse_env_value(raw)
    return overrides


def _parse_env_value(raw: str) -> Any:
    # Read the value as a TOML literal (numbers, booleans, inline tables); fall back to a string.
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


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
        raise ConfigError(f"{where or 'config'}: expected a table, got {table!r}")
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
    origin = typing.get_origin(hint) or hint
    if isinstance(origin, types.UnionType):
        origin = typing.get_args(hint)[0]
    expect = meta.get("expect") or _DEFAULT_EXPECT.get(origin, origin.__name__)
    ok = _TYPE_CHECKS.get(origin, lambda v: isinstance(v, origin))(value)
    if ok and origin is float:
        value = float(value)
    if not ok or not meta.get("check", lambda _: True)(value):
        raise ConfigError(f"{key}: expected {expect}, got {value!r}")
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
