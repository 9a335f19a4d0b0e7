"""Replay a topic or a JSONL file through the production Engine, offline, deterministically.

Each config drives an Engine of its own over the same decoded records, exactly as the
worker would (one Engine sees the whole input: a multi-partition topic is merged in
record-timestamp order, ties by partition and offset). A throw-away consumer reads the
topic with ``assign`` + ``seek``: it never joins a consumer group and never commits, so
production offsets are untouched. The result is scored by :mod:`streamheal.evaluation`
(``report.json``) and drawn by :mod:`streamheal.report_html` (``report.html``).
"""

from __future__ import annotations

import itertools
import sys
import time
import tomllib
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from streamheal.config import Config, ConfigError, load_config
from streamheal.detectors.suite import Drift
from streamheal.engine import Engine, Prediction
from streamheal.events import Event, Rejection, Source, decode
from streamheal.kafka.records import drift_record
from streamheal.policy import Action

BATCH = 500
MAX_TIMELINE_POINTS = 1000
MAX_CHECK_LOG = 200_000
MAX_PROFILED_FEATURES = 500
PROGRESS_LINE_SECONDS = 10.0  # a plain progress line this often when stderr is no terminal

Record = tuple[bytes | None, Source, bytes | None]


# -------------------------------------------------------------------- inputs


def file_records(path: str | Path) -> Iterator[Record]:
    """Lines of a JSONL file (blank lines skipped); offset = 0-based line number."""
    name = Path(path).name
    with open(path, "rb") as handle:
        for number, line in enumerate(handle):
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line, Source(name, 0, number), None


def count_file_records(path: str | Path) -> int:
    """How many records :func:`file_records` will yield (non-blank lines), for progress."""
    count = 0
    with open(path, "rb") as handle:
        for line in handle:
            count += bool(line.strip())
    return count


def parse_time(text: str) -> int:
    """ISO-8601 (``2026-11-27T10:00:00Z``) to epoch milliseconds."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r}: give a time zone, e.g. 2026-11-27T10:00:00Z")
    return int(moment.timestamp() * 1000)


def topic_records(
    config: Config,
    topic: str,
    from_offset: int | None = None,
    from_time: str | None = None,
    to_time: str | None = None,
    max_buffered: int = 50_000,
    on_size: Callable[[dict[str, int]], None] | None = None,
) -> Iterator[Record]:
    """The topic's records up to its end at the time of the call (or ``to_time``).

    ``on_size`` is told ``{"records": n}`` once the offsets are known: an upper bound
    (transaction markers take offsets too), for a progress line.
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": config.kafka.bootstrap_servers,
            # assign() never joins this group; nothing is ever committed under it.
            "group.id": f"streamheal-replay-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # Only what producers committed (the worker's outputs are transactional).
            "isolation.level": "read_committed",
            **config.kafka.common,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None:
            raise ValueError(f"topic {topic!r}: {metadata.error}")
        partitions = sorted(metadata.partitions)
        marks = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in partitions
        }
        ends = {p: high for p, (_, high) in marks.items()}
        if to_time is not None:
            found = consumer.offsets_for_times(
                [TopicPartition(topic, p, parse_time(to_time)) for p in partitions], timeout=10
            )
            ends = {
                tp.partition: tp.offset if tp.offset >= 0 else ends[tp.partition] for tp in found
            }
        if from_time is not None:
            found = consumer.offsets_for_times(
                [TopicPartition(topic, p, parse_time(from_time)) for p in partitions], timeout=10
            )
            first = {
                tp.partition: tp.offset if tp.offset >= 0 else ends[tp.partition] for tp in found
            }
        else:
            first = {p: max(from_offset or 0, low) for p, (low, _) in marks.items()}
        starts = [TopicPartition(topic, p, first[p]) for p in partitions]
        if on_size is not None:
            on_size({"records": sum(max(ends[p] - first[p], 0) for p in partitions)})
        consumer.assign(starts)
        yield from _merge_partitions(consumer, topic, starts, ends, max_buffered)
    finally:
        consumer.close()


def _merge_partitions(consumer, topic, starts, ends, max_buffered) -> Iterator[Record]:
    from confluent_kafka import TopicPartition

    positions = {tp.partition: tp.offset for tp in starts}
    buffers: dict[int, deque] = {p: deque() for p in ends}
    done = {p for p in ends if positions[p] >= ends[p]}
    paused: set[int] = set()
    while True:
        # Emit while every unfinished partition has a head: a k-way merge by timestamp.
        while all(buffers[p] or p in done for p in ends) and any(buffers.values()):
            heads = [(buffers[p][0][0], p) for p in ends if buffers[p]]
            _, p = min(heads)
            _, record = buffers[p].popleft()
            if p in paused and len(buffers[p]) < max_buffered // 2:
                consumer.resume([TopicPartition(topic, p)])
                paused.discard(p)
            yield record
        if len(done) == len(ends) and not any(buffers.values()):
            return
        messages = consumer.consume(num_messages=1000, timeout=1.0)
        for message in messages:
            if message.error() is not None:
                continue
            p, offset = message.partition(), message.offset()
            if p in done or offset >= ends[p]:
                done.add(p)
                continue
            source = Source(message.topic(), p, offset)
            stamp = (message.timestamp()[1], p, offset)
            buffers[p].append((stamp, (message.value(), source, message.key())))
            if offset + 1 >= ends[p]:
                done.add(p)
            if len(buffers[p]) >= max_buffered and p not in paused:
                consumer.pause([TopicPartition(topic, p)])  # bound memory: others catch up
                paused.add(p)
        if len(messages) < 1000:
            # On a transactional topic the last offsets are commit markers that are never
            # delivered: a partition is done once its position (after what was just taken)
            # reached its end.
            waiting = [TopicPartition(topic, p) for p in ends if p not in done]
            for tp in consumer.position(waiting) if waiting else []:
                if tp.offset >= ends[tp.partition]:
                    done.add(tp.partition)


# ------------------------------------------------------------------- configs


def expand_configs(paths: list[str | Path]) -> list[tuple[str, Config]]:
    """One config per file, or a grid: a ``[grid]`` table of ``"section.key" = [values]``
    expands into every combination over the file's other settings."""
    if not paths:
        return [("default", load_config(None))]
    configs: list[tuple[str, Config]] = []
    for path in paths:
        file = Path(path)
        try:
            table = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {str(file)!r} does not exist") from None
        except OSError as err:
            raise ConfigError(f"config file {str(file)!r} cannot be read: {err.strerror}") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{file}: not valid TOML: {err}") from err
        grid = table.pop("grid", None)
        base = load_config(file if grid is None else None, env={})
        if grid is None:
            configs.append((file.stem, base))
            continue
        configs += grid_configs(base.replace(**table), grid, file.stem)
    return configs


def grid_configs(
    base: Config, grid: dict[str, list[Any]], name: str = "grid"
) -> list[tuple[str, Config]]:
    """Every combination of ``grid`` (``{"section.key": [values]}``) over ``base``, each
    named ``name[key=value,...]``; the same expansion as a ``[grid]`` table in a file.

    >>> [n for n, _ in grid_configs(Config(), {"detectors.cusum_k": [0.25, 0.5]}, "k")]
    ['k[detectors.cusum_k=0.25]', 'k[detectors.cusum_k=0.5]']
    """
    keys = sorted(grid)
    configs = []
    for key in keys:
        if not isinstance(grid[key], list | tuple) or not grid[key]:
            raise ConfigError(f"grid.{key}: expected a non-empty list of values")
    for values in itertools.product(*(grid[k] for k in keys)):
        changes: dict[str, dict[str, Any]] = {}
        for key, value in zip(keys, values, strict=True):
            section, _, field_name = key.partition(".")
            if not field_name:
                raise ConfigError(f"grid.{key}: expected 'section.key', e.g. 'detectors.cusum_k'")
            changes.setdefault(section, {})[field_name] = value
        label = ",".join(f"{k}={v}" for k, v in zip(keys, values, strict=True))
        configs.append((f"{name}[{label}]", base.replace(**changes)))
    return configs


# ------------------------------------------------------------------- running


@dataclass
class Run:
    """What one config's Engine did, collected as it goes (every part bounded)."""

    name: str
    engine: Engine
    detections: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    resolved: int = 0
    closed: dict[str, int] = field(default_factory=dict)  # episode id -> index it closed at
    # Cumulative (events, labeled, right, sum of top-class p, sum of p * (1 - p)) per batch:
    # windowed realized accuracy and the label-free estimate with its sampling error.
    timeline: list[tuple[int, int, int, float, float]] = field(default_factory=list)
    # (events, {series: CUSUM peak since the last check / its threshold}) per batch.
    cusum_trace: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    # Every prediction, for a notebook's table (None: not kept, the bounded default).
    predictions: list[Prediction] | None = None
    seconds: float = 0.0
    top_sum: float = 0.0
    top_var_sum: float = 0.0

    def take(self, outputs: list) -> None:
        for output in outputs:
            kind = type(output)
            if kind is Prediction:
                top = max(output.probabilities.values()) if output.probabilities else 0.0
                self.top_sum += top
                self.top_var_sum += top * (1.0 - top)
                if self.predictions is not None:
                    self.predictions.append(output)
            elif kind is Action:
                self.actions.append(
                    {
                        "index": output.index,
                        "action": output.action,
                        "model_version": output.model_version,
                        "cause": output.cause,
                    }
                )
            elif kind is Drift:
                if output.status != "firing":
                    self.resolved += 1
                    if output.role == "closed" and output.episode is not None:
                        self.closed[output.episode] = output.confirmed_index
                    continue
                self.detections.append(detection_record(output))
        c = self.engine.counters
        self.timeline.append(
            (c.feature_events, c.labeled, c.correct, self.top_sum, self.top_var_sum)
        )
        self.cusum_trace.append((c.feature_events, cusum_reading(self.engine)))
        if len(self.timeline) > 2 * MAX_TIMELINE_POINTS:
            self.timeline = self.timeline[1::2]  # halve the resolution, keep the bound
            self.cusum_trace = self.cusum_trace[1::2]


def detection_record(drift: Drift) -> dict[str, Any]:
    """A declaration as report.json lists it: the alert record, indexed by feature event."""
    record = drift_record(drift)
    out: dict[str, Any] = {"index": drift.confirmed_index}
    out.update((k, v) for k, v in record.items() if k not in ("type", "status", "confirmed_index"))
    return out


def cusum_reading(engine: Engine) -> dict[str, float]:
    """Every CUSUM's peak since its last check over its threshold (1.0 = declaring level).

    Read from the detectors between batches, never written: decisions are unchanged.
    """
    suite = engine.drift
    if suite is None:
        return {}
    reading: dict[str, float] = {}
    covariate = suite.covariate
    if covariate is not None and covariate.cusum.threshold > 0:
        ratios = covariate.cusum.peak / covariate.cusum.threshold
        for name, ratio in zip(covariate.reference.numeric_names, ratios, strict=True):
            reading[name] = round(float(ratio), 4)
    for label, mix in (("label mix", suite.label_mix), ("predicted-class mix", suite.class_mix)):
        cusum = mix.cusum
        if cusum is not None and len(cusum.peak) and cusum.threshold > 0:
            reading[label] = round(float(cusum.peak.max() / cusum.threshold), 4)
    return reading


@dataclass
class DatasetProfile:
    """Rows, feature types and missing shares of the input, counted as it streams by."""

    records: int = 0
    feature_events: int = 0
    label_events: int = 0
    rejected: int = 0
    # name -> [numeric values, categorical values, missing]
    features: dict[str, list[int]] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    truncated: bool = False  # more than MAX_PROFILED_FEATURES names: the rest not counted

    def add(self, decoded: list[Event | Rejection]) -> None:
        for item in decoded:
            self.records += 1
            if type(item) is not Event:
                self.rejected += 1
                continue
            if item.label is not None:
                name = str(item.label)
                if name in self.labels or len(self.labels) < MAX_PROFILED_FEATURES:
                    self.labels[name] = self.labels.get(name, 0) + 1
            if item.features is None:
                self.label_events += 1
                continue
            self.feature_events += 1
            for name, value in item.features.items():
                self._counts(name)[0 if isinstance(value, int | float) else 1] += 1
            for name in item.missing:
                self._counts(name)[2] += 1

    def _counts(self, name: str) -> list[int]:
        counts = self.features.get(name)
        if counts is None:
            if len(self.features) >= MAX_PROFILED_FEATURES:  # bounded: wide inputs are cut
                self.truncated = True
                return [0, 0, 0]
            counts = self.features[name] = [0, 0, 0]
        return counts


def replay(
    records: Iterable[Record],
    configs: list[tuple[str, Config]],
    progress: bool | None = None,
    total: int | Callable[[], int | None] | None = None,
    keep_predictions: bool = False,
) -> tuple[list[Run], Run, dict[str, Any]]:
    """Drive one Engine per config (plus a no-adaptation baseline) over the records.

    Progress goes to stderr (``progress=None``: a redrawn line on a terminal, a plain line
    every :data:`PROGRESS_LINE_SECONDS` otherwise; ``False``: none). ``total``, the number
    of records or a function that learns it once reading started, adds a percentage and
    an estimated time left. ``keep_predictions`` keeps every config's predictions in
    ``Run.predictions`` (memory grows with the input: for notebooks, not topics).
    """
    runs = [Run(name, _engine(cfg, log_checks=True)) for name, cfg in configs]
    if keep_predictions:
        for run in runs:
            run.predictions = []
    base_config = configs[0][1].replace(detectors={"enabled": False}, policy={"enabled": False})
    baseline = Run("no_adaptation", Engine(base_config))
    everyone = [*runs, baseline]
    # Decode once for every config when they share the event limits (the usual case).
    limits = {cfg.events for _, cfg in configs}
    shared_limits = limits.pop() if len(limits) == 1 else None
    meter = _Progress(progress, total)
    profile = DatasetProfile()
    count = 0
    started = time.perf_counter()
    batch: list[Record] = []
    for record in itertools.chain(records, [None]):
        if record is not None:
            batch.append(record)
            if len(batch) < BATCH:
                continue
        if not batch:
            break
        shared = (
            [decode(raw, src, key=key, limits=shared_limits) for raw, src, key in batch]
            if shared_limits
            else None
        )
        for run in everyone:
            own = run.engine.config.events
            decoded = shared or [decode(raw, src, key=key, limits=own) for raw, src, key in batch]
            if run is everyone[0]:
                profile.add(decoded)
            tick = time.perf_counter()
            run.take(run.engine.process(decoded))
            run.seconds += time.perf_counter() - tick
        count += len(batch)
        meter.update(count)
        batch = []
    elapsed = time.perf_counter() - started
    meter.done(count)
    return runs, baseline, {"records": count, "seconds": elapsed, "dataset": profile}


def _engine(config: Config, log_checks: bool) -> Engine:
    engine = Engine(config)
    if log_checks and engine.drift is not None:
        engine.drift.check_log = deque(maxlen=MAX_CHECK_LOG)
    return engine


class _Progress:
    """Records done, rate, and (with a known total) share done and time left, on stderr.

    On a terminal one line is redrawn twice a second; elsewhere (a log file, CI) a plain
    line is printed every PROGRESS_LINE_SECONDS, so a long replay still shows it is alive.
    """

    def __init__(self, enabled: bool | None, total: int | Callable[[], int | None] | None):
        self.terminal = sys.stderr.isatty()
        self.enabled = enabled is not False
        self.every = 0.5 if self.terminal else PROGRESS_LINE_SECONDS
        self.total = total
        self.started = self.last = time.perf_counter()

    def update(self, count: int) -> None:
        now = time.perf_counter()
        if self.enabled and now - self.last >= self.every:
            self._show(count, now, "")
            self.last = now

    def done(self, count: int) -> None:
        if self.enabled and (self.terminal or self.last > self.started):
            self._show(count, time.perf_counter(), "done")

    def _show(self, count: int, now: float, state: str) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = count / elapsed
        total = self.total() if callable(self.total) else self.total
        text = f"replay: {count:,} records"
        if total and not state:
            share = min(count / total, 1.0)
            left = (total - count) / rate if rate > 0 and count < total else 0.0
            text = f"replay: {count:,} of {total:,} records ({share:.0%}), ETA {_duration(left)}"
        text += f", {rate:,.0f}/s" + (f", {state} in {_duration(elapsed)}" if state else "")
        if self.terminal:
            print(f"\r{text}\x1b[K", end="\n" if state else "", file=sys.stderr, flush=True)
        else:
            print(text, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``: short enough for a progress line."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
