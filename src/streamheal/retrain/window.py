"""The data of a retrain: the last window of labeled events, joined as the worker joins them.

Records come from the events topic (from ``retrain.window_seconds`` ago by record time:
``offsets_for_times`` on every partition, merged in timestamp order by
:func:`streamheal.replay.topic_records`, ``read_committed``) or from a JSONL file. Each
partition gets what a worker's Engine has for it: the input guard
(:class:`~streamheal.guards.InputGuard`, so the model learns the clipped values it will be
served), the event clock and the label join (:class:`~streamheal.joins.LabelJoin`, the
worker's own class and bounds), so a feature event pairs with its later label exactly as
in the worker; a label the worker would dead-letter (unknown, expired, duplicate, not 0/1
for a binary model) is counted and left out here. The Engine has no call that joins without
scoring, so :class:`WindowJoin` makes the Engine's calls in the Engine's order (guard,
clock, ``LabelJoin.remember`` / ``find`` / ``take`` / ``close``, label mapping); a test
checks that it yields exactly the pairs an Engine learns from the same records.

Memory is bounded by :class:`BoundedWindow`: past ``retrain.max_examples`` examples or
``retrain.max_memory_mb`` (estimated like the join buffer's bytes), a run either stops
with :class:`WindowTooLarge` (``overflow = "refuse"``) or keeps a seeded uniform sample
that fits (``"sample"``). With ``retrain.window_count`` it keeps the newest N examples
and reads only the end of the topic (:func:`count_start`).
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import TopicPartition

from streamheal import models
from streamheal.config import Config
from streamheal.errors import StreamhealError
from streamheal.events import Event, Label, Reason, decode
from streamheal.guards import EventClock, InputGuard
from streamheal.joins import BYTES_PER_RAW_BYTE, ENTRY_OVERHEAD_BYTES, LabelJoin, Pending
from streamheal.kafka.connect import partitions_of, topic_reader
from streamheal.replay import Record, file_records, topic_records


class WindowTooLarge(StreamhealError, RuntimeError):
    """The window holds more than the configured caps and ``overflow = "refuse"``."""


class OutOfTime(StreamhealError, RuntimeError):
    """The run went past ``retrain.time_budget_seconds``."""


@dataclass(slots=True)
class Example:
    """One labeled example: the features' event time, features, label (as the model takes
    it) and estimated bytes held."""

    ts: float
    features: dict[str, Any]
    label: Label
    size: int


class BoundedWindow:
    """Examples within a count and a byte cap.

    Parameters
    ----------
    max_examples, max_bytes
        The caps.
    overflow
        ``"refuse"``: :class:`WindowTooLarge` as soon as a cap is passed; ``"sample"``:
        keep a uniform random sample (each example gets a seeded random priority and the
        lowest leave first, bottom-k sampling), so the result does not depend on the order
        of arrival.
    newest
        Keep the ``newest`` most recent examples (by ``ts``) instead; caps still apply.
    seed
        The sample's seed.

    >>> window = BoundedWindow(max_examples=3, max_bytes=10**6, overflow="sample", seed=1)
    >>> for i in range(100):
    ...     window.add(Example(float(i), {"x": i}, i % 2 == 0, 10))
    >>> len(window.examples()), window.seen, window.sampled
    (3, 100, True)
    >>> strict = BoundedWindow(max_examples=2, max_bytes=10**6, overflow="refuse")
    >>> for i in range(3):
    ...     strict.add(Example(float(i), {}, True, 10))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamheal.retrain.window.WindowTooLarge: the window holds more than 2 labeled examples...
    """

    def __init__(
        self,
        max_examples: int,
        max_bytes: int,
        overflow: str = "refuse",
        newest: int = 0,
        seed: int = 0,
    ) -> None:
        self.max_examples = min(max_examples, newest) if newest else max_examples
        self.max_bytes = max_bytes
        self.refuse = overflow == "refuse" and not newest
        self.newest = newest > 0
        self.seen = 0
        self.bytes = 0
        self.sampled = False
        self._rng = np.random.default_rng(seed)
        self._heap: list[tuple[float, int, Example]] = []

    def add(self, example: Example) -> None:
        self.seen += 1
        if self.newest:
            priority = example.ts
        elif self.refuse:
            priority = 0.0
        else:
            priority = float(self._rng.random())
        heapq.heappush(self._heap, (priority, self.seen, example))
        self.bytes += example.size
        while len(self._heap) > self.max_examples or self.bytes > self.max_bytes:
            if self.refuse:
                raise WindowTooLarge(self._refusal())
            _, _, dropped = heapq.heappop(self._heap)
            self.bytes -= dropped.size
            self.sampled = True

    def examples(self) -> list[Example]:
        """What was kept, in time order (ties in arrival order)."""
        kept = sorted(self._heap, key=lambda item: (item[2].ts, item[1]))
        return [example for _, _, example in kept]

    def _refusal(self) -> str:
        if len(self._heap) > self.max_examples:
            what = f"more than {self.max_examples} labeled examples (retrain.max_examples)"
        else:
            what = (
                f"more than {self.max_bytes / 2**20:.0f} MiB of examples (estimated; "
                "retrain.max_memory_mb)"
            )
        return (
            f"the window holds {what}; narrow retrain.window_seconds or set "
            'retrain.window_count, raise the cap, or set retrain.overflow = "sample"'
        )


@dataclass
class _Partition:
    """What a worker's Engine holds for one partition, as far as learning is concerned."""

    join: LabelJoin
    clock: EventClock
    guard: InputGuard


@dataclass
class Window:
    """The examples of one run and where they came from."""

    examples: list[Example]
    source: dict[str, Any]
    records: int = 0
    seen: int = 0  # labeled examples found, before any sampling
    sampled: bool = False
    bytes: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # by reason, as the worker's DLQ

    def describe(self) -> dict[str, Any]:
        return {
            **self.source,
            "records": self.records,
            "labeled": self.seen,
            "examples": len(self.examples),
            "sampled": self.sampled,
            "bytes_estimate": self.bytes,
            "skipped": dict(self.skipped),
            "first_ts": self.examples[0].ts if self.examples else None,
            "last_ts": self.examples[-1].ts if self.examples else None,
        }


class WindowJoin:
    """Feature events paired with their labels, partition by partition, as in the worker."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.binary = models.is_binary_bool(models.build_model(config.model, config.engine.seed))
        self.skipped: Counter[str] = Counter()
        self._partitions: dict[int, _Partition] = {}

    def take(self, event: Event) -> Example | None:
        """The example ``event`` completes, if any (a feature event without a label waits)."""
        part = self._partition(event.source.partition)
        features = event.features
        if features is None:
            return self._label(part, event)
        if event.missing:
            part.guard.note_missing(event.missing)
        features = part.guard.admit(features)
        if event.label is None:
            part.join.remember(
                event.id, event.ts, len(event.raw), features, None, part.clock.advance(event.ts)
            )
            return None
        label = self._model_label(event.label)
        if label is None:
            return None
        part.join.close(event.id, Reason.DUPLICATE_LABEL)
        return Example(event.ts, features, label, _size(len(event.raw)))

    def _label(self, part: _Partition, event: Event) -> Example | None:
        join = part.join
        # As the Engine: only a label that matches waiting features moves the clock.
        if event.id in join:
            join.expire(part.clock.advance(event.ts))
        found = join.find(event.id, event.ts)
        if type(found) is not Pending:
            self.skipped[str(found)] += 1
            return None
        label = self._model_label(event.label)
        if label is None:
            return None  # the features keep waiting: a valid label may still come
        pending = join.take(event.id, event.ts)
        assert type(pending) is Pending
        return Example(pending.ts, pending.features, label, pending.size)

    def _model_label(self, label: Any) -> Label | None:
        if self.binary:
            if label not in (0, 1):  # True/False compare equal to 1/0
                self.skipped[str(Reason.BAD_LABEL)] += 1
                return None
            return bool(label)
        return label

    def _partition(self, number: int) -> _Partition:
        part = self._partitions.get(number)
        if part is None:
            guards = self.config.guards
            part = _Partition(
                LabelJoin.from_config(self.config.engine),
                EventClock(guards.max_future_skew_seconds),
                InputGuard(guards),
            )
            self._partitions[number] = part
        return part


def _size(raw_bytes: int) -> int:
    return ENTRY_OVERHEAD_BYTES + BYTES_PER_RAW_BYTE * raw_bytes


def window_source(
    config: Config, file: str | Path | None, now: float
) -> tuple[Iterator[Record], dict[str, Any]]:
    """The records of the window and how to describe where they came from."""
    if file is not None:
        return file_records(file), {"kind": "file", "path": str(file)}
    since = now - config.retrain.window_seconds
    if config.retrain.window_count:
        since = max(since, count_start(config, config.retrain.window_count) or since)
    from_time = datetime.fromtimestamp(since, UTC).isoformat().replace("+00:00", "Z")
    records = topic_records(config, config.topics.events, from_time=from_time)
    described = {
        "kind": "topic",
        "topic": config.topics.events,
        "from_time": from_time,
        "to_time": datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z"),
    }
    return records, described


def count_start(config: Config, count: int, timeout: float = 30.0) -> float | None:
    """The record time after which every partition of the events topic still holds its
    last ``2 x count`` records (a label is a record of its own), so a count window need not
    read the whole time window; None when some partition holds fewer (read it all)."""
    topic = config.topics.events
    reader = topic_reader(config, f"{config.kafka.group_id}-retrain-window")
    try:
        starts = []
        for partition in partitions_of(reader, topic, timeout):
            low, high = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout)
            offset = high - 2 * count
            if offset <= low:
                return None
            reader.assign([TopicPartition(topic, partition, offset)])
            deadline = time.monotonic() + timeout
            message = None
            while message is None and time.monotonic() < deadline:
                for candidate in reader.consume(num_messages=1, timeout=1.0):
                    if candidate.error() is None:
                        message = candidate
            if message is None:
                return None
            starts.append(message.timestamp()[1] / 1000.0)
        return min(starts) if starts else None
    finally:
        reader.close()


def read_window(
    config: Config,
    records: Iterable[Record],
    source: dict[str, Any],
    deadline: float = float("inf"),
) -> Window:
    """Decode, join and bound ``records``; :class:`WindowTooLarge` or :class:`OutOfTime`
    when a cap or the time budget (``deadline``, monotonic seconds) is passed."""
    cfg = config.retrain
    bounded = BoundedWindow(
        cfg.max_examples,
        cfg.max_memory_mb * 2**20,
        cfg.overflow,
        newest=cfg.window_count,
        seed=config.engine.seed,
    )
    joiner = WindowJoin(config)
    offsets: dict[int, list[int]] = {}
    count = 0
    for raw, src, key in records:
        count += 1
        if count % 1024 == 0 and time.monotonic() > deadline:
            raise OutOfTime(f"time budget spent reading the window ({count} records read)")
        span = offsets.setdefault(src.partition, [src.offset, src.offset])
        span[1] = src.offset
        event = decode(raw, src, key=key, limits=config.events)
        if type(event) is not Event:
            joiner.skipped[str(event.reason)] += 1
            continue
        example = joiner.take(event)
        if example is not None:
            bounded.add(example)
    if source.get("kind") == "topic":
        source = {**source, "offsets": {str(p): span for p, span in sorted(offsets.items())}}
    return Window(
        bounded.examples(),
        source,
        records=count,
        seen=bounded.seen,
        sampled=bounded.sampled,
        bytes=bounded.bytes,
        skipped=joiner.skipped,
    )
