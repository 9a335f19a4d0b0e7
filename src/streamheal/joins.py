"""The label join: feature events waiting for the label event that carries their id.

Labels often arrive later than the features they belong to (a fraud verdict days after
the payment). :class:`LabelJoin` keeps each unlabeled feature event until its label comes,
bounded three ways: a count (``engine.join_buffer_size``), an estimated byte budget
(``engine.join_buffer_max_bytes``) and an age in event time
(``engine.join_max_age_seconds``). Ids that left the buffer are remembered (bounded by
the same count) so a late or repeated label gets the right dead-letter reason.

The worker's Engine and batch retraining (:mod:`streamheal.retrain`) join through this one
class, so a retrained model sees exactly the (features, label) pairs the worker learned.

Checkpoints take the join as a change log cut into segments (:meth:`LabelJoin.log_state`,
:meth:`LabelJoin.segments`): every change is stamped with a sequence number, a segment
is sealed once :data:`SEGMENT_CHANGES` changes have passed, and a sealed segment never
changes again, so a checkpoint writes it once. Written whole, the join was most of a
long-running partition's checkpoint (100,000 closed ids: 1.7 MB and about 30 ms to pickle
at every batch), and the worker slowed as it filled.

>>> from streamheal.events import Reason
>>> join = LabelJoin(max_entries=2, max_bytes=1 << 20, max_age_seconds=60.0)
>>> join.remember("a", ts=1.0, raw_size=20, features={"x": 1.0}, prediction=0, now=1.0)
>>> join.take("a", label_ts=5.0).features
{'x': 1.0}
>>> join.take("a", label_ts=6.0) is Reason.DUPLICATE_LABEL
True
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

from streamheal.events import Label, Reason

# Estimated bytes of one entry: Python objects take several times the JSON they came from
# (measured: about 2.5x for 30 numeric features, plus the entry itself).
ENTRY_OVERHEAD_BYTES = 300
BYTES_PER_RAW_BYTE = 3
# Changes per sealed segment of the change log (an unlabeled 30-feature event's entry is
# about 400 bytes pickled, so a segment of such entries is about 1.6 MB).
SEGMENT_CHANGES = 4096
# Kinds of change in the log.
_REMEMBERED, _LEFT, _CLOSED = 0, 1, 2


@dataclass(slots=True)
class Pending:
    """A feature event waiting for its label."""

    features: dict[str, Any]
    prediction: Label | None
    ts: float
    size: int  # estimated bytes, for the byte budget
    seq: int = 0  # the change that put it here (see LabelJoin.log_state)


class Segment(NamedTuple):
    """Sealed changes ``first`` <= seq < ``end`` of a join, in order, as (seq, kind, id,
    value) tuples; immutable, so a checkpoint writes it once (under ``name``)."""

    name: str
    first: int
    end: int
    changes: tuple[tuple[int, int, str, Any], ...]


class LabelJoin:
    """Feature events by id, oldest first, until their label arrives or they age out
    (``expired`` counts those that left unlabeled, for age or for space)."""

    __slots__ = (
        "_left",
        "_ordinal",
        "_sealed",
        "_stale",
        "bytes",
        "closed",
        "expired",
        "max_age",
        "max_bytes",
        "max_entries",
        "pending",
        "seq",
    )

    def __init__(self, max_entries: int, max_bytes: int, max_age_seconds: float) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_age = max_age_seconds
        # Oldest first. OrderedDicts, not dicts: a dict whose oldest entry is deleted over
        # and over keeps the holes at the front of its table, and finding the oldest entry
        # again (next(iter(d))) steps over every one of them: 30 us per closed id at the
        # default 100,000, more than half a River step, from the 100,000th label of a
        # partition on. An OrderedDict finds its oldest entry through its linked list.
        self.pending: OrderedDict[str, Pending] = OrderedDict()
        # id -> (why it left, the change that closed it)
        self.closed: OrderedDict[str, tuple[Reason, int]] = OrderedDict()
        self.bytes = 0
        self.expired = 0
        self.seq = 0  # the next change's number
        self._left: list[tuple[int, str]] = []  # ids that left `pending` since the last seal
        self._sealed: list[Segment] = []
        self._ordinal = 0  # segments sealed so far: the next one's name
        self._stale = False  # departures were not all logged: compact at the next checkpoint

    @classmethod
    def from_config(cls, engine_config: Any) -> LabelJoin:
        """The join an Engine under ``engine_config`` (the ``[engine]`` section) keeps."""
        return cls(
            engine_config.join_buffer_size,
            engine_config.join_buffer_max_bytes,
            engine_config.join_max_age_seconds,
        )

    def __len__(self) -> int:
        return len(self.pending)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self.pending

    def remember(
        self,
        event_id: str,
        ts: float,
        raw_size: int,
        features: dict[str, Any],
        prediction: Label | None,
        now: float,
    ) -> None:
        """Keep a feature event (a repeated id replaces its earlier entry); ``now`` is the
        partition's event time: older entries age out, the oldest leave for space."""
        pending = self.pending
        size = ENTRY_OVERHEAD_BYTES + BYTES_PER_RAW_BYTE * raw_size
        old = pending.pop(event_id, None)
        if old is not None:
            self.bytes -= old.size
        # A far-future ts is stored as the clock's time, so it ages like its neighbours.
        seq = self.seq
        self.seq = seq + 1
        pending[event_id] = Pending(features, prediction, min(ts, now), size, seq)
        self.bytes += size
        while len(pending) > self.max_entries or self.bytes > self.max_bytes:
            self._evict(next(iter(pending)))
        self.expire(now)

    def expire(self, now: float) -> None:
        """Drop entries older than the age limit at event time ``now``."""
        # The buffer is in arrival order; ts mostly grows with it, so age out from the front.
        pending = self.pending
        horizon = now - self.max_age
        while pending:
            oldest_id, oldest = next(iter(pending.items()))
            if oldest.ts >= horizon:
                break
            self._evict(oldest_id)

    def find(self, event_id: str, label_ts: float) -> Pending | Reason:
        """The waiting entry a label with ``label_ts`` joins, or why there is none. An entry
        older than the age limit by the label's own time is dropped; the label cannot expire
        anything else."""
        pending = self.pending.get(event_id)
        if pending is not None and label_ts - pending.ts > self.max_age:
            self._evict(event_id)
            pending = None
        if pending is None:
            closed = self.closed.get(event_id)
            return Reason.UNKNOWN_LABEL_ID if closed is None else closed[0]
        return pending

    def take(self, event_id: str, label_ts: float) -> Pending | Reason:
        """:meth:`find`, and on a match the entry leaves the buffer (a second label for the
        id is then a duplicate)."""
        found = self.find(event_id, label_ts)
        if type(found) is Pending:
            del self.pending[event_id]
            self.bytes -= found.size
            self._left_pending(event_id)
            self.close(event_id, Reason.DUPLICATE_LABEL)
        return found

    def close(self, event_id: str, reason: Reason) -> None:
        """Remember that ``event_id`` left (and why) for the labels that come too late."""
        closed = self.closed
        closed.pop(event_id, None)  # re-insert at the young end
        closed[event_id] = (reason, self.seq)
        self.seq += 1
        if len(closed) > self.max_entries:
            closed.popitem(last=False)

    def state(self) -> dict[str, Any]:
        """The live entries, closed ids and count (not copied: the caller pickles or copies)."""
        return {"pending": self.pending, "closed": self.closed, "expired": self.expired}

    def load(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state` output; this join's bounds apply from here on.
        Checkpoints before 2026-11-29 hold dicts, closed ids without their change."""
        self.pending = OrderedDict(state["pending"])
        closed = state["closed"]
        if closed and type(next(iter(closed.values()))) is not tuple:
            closed = {event_id: (reason, 0) for event_id, reason in closed.items()}
        self.closed = OrderedDict(closed)
        self.expired = state["expired"]
        self.bytes = sum(entry.size for entry in self.pending.values())
        self._compact()  # numbered afresh (entries of older checkpoints have no number)

    # ------------------------------------------------------------- the change log
    def checkpoint_segments(self) -> dict[str, Segment]:
        """The sealed segments the next :meth:`log_state` names, by name: seals the changes
        since the last seal once :data:`SEGMENT_CHANGES` have passed, forgets segments no
        live entry needs, and compacts the log when it holds more than its ring of names
        (or lost track of departures, see :meth:`_left_pending`)."""
        if self._stale:
            self._compact()
        else:
            start = self._sealed[-1].end if self._sealed else 0
            if self.seq - start >= SEGMENT_CHANGES:
                self._seal(start, self._changes_since(start))
            oldest = self._oldest_live()
            while self._sealed and self._sealed[0].end <= oldest:
                self._sealed.pop(0)
            if len(self._sealed) > self._ring() - 2:
                self._compact()
        return {segment.name: segment for segment in self._sealed}

    def log_state(self) -> dict[str, Any]:
        """This join as a checkpoint writes it: the names of its sealed segments (see
        :meth:`checkpoint_segments`, each written once) and the changes since the last
        seal. Changes nothing."""
        if self._stale:  # no usable log: every live entry, as changes
            segments, start = [], 0
        else:
            segments = [(s.name, s.first, s.end) for s in self._sealed]
            start = self._sealed[-1].end if self._sealed else 0
        return {
            "format": "log",
            "segments": segments,
            "tail": self._changes_since(start),
            "live": (self._oldest(self.pending), self._oldest(self.closed)),
            "seq": self.seq,
            "ordinal": self._ordinal,
            "stale": self._stale,
            "expired": self.expired,
        }

    def load_log(self, state: dict[str, Any], segments: dict[str, Segment]) -> None:
        """Continue from :meth:`log_state` output and the segments it names: the changes
        are replayed in order, and each map keeps the entries changed at or after its
        oldest live entry's change (older ones in the log had been evicted since)."""
        named = []
        for name, first, end in state["segments"]:
            segment = segments.get(name)
            if segment is None or (segment.first, segment.end) != (first, end):
                raise ValueError(f"the join's segment {name!r} ({first}-{end}) was not given")
            named.append(segment)
        pending: OrderedDict[str, Pending] = OrderedDict()
        closed: OrderedDict[str, tuple[Reason, int]] = OrderedDict()
        for changes in [*(segment.changes for segment in named), state["tail"]]:
            for seq, kind, event_id, value in changes:
                if kind == _REMEMBERED:
                    pending.pop(event_id, None)
                    pending[event_id] = value
                elif kind == _LEFT:
                    pending.pop(event_id, None)
                else:
                    closed.pop(event_id, None)
                    closed[event_id] = (value, seq)
        oldest_pending, oldest_closed = state["live"]
        self.pending = OrderedDict((k, e) for k, e in pending.items() if e.seq >= oldest_pending)
        self.closed = OrderedDict((k, c) for k, c in closed.items() if c[1] >= oldest_closed)
        self.expired = state["expired"]
        self.seq = state["seq"]
        self._ordinal = state["ordinal"]
        self.bytes = sum(entry.size for entry in self.pending.values())
        self._left = [(seq, event_id) for seq, kind, event_id, _ in state["tail"] if kind == _LEFT]
        self._sealed = named
        self._stale = state["stale"]

    def _changes_since(self, start: int) -> tuple[tuple[int, int, str, Any], ...]:
        """The changes numbered ``start`` or later that still matter, in order: the newest
        change of each live entry made since (an entry changed since but gone is in
        neither map) and the ids that left ``pending`` since."""
        changes: list[tuple[int, int, str, Any]] = []
        for event_id, entry in reversed(self.pending.items()):
            if entry.seq < start:
                break
            changes.append((entry.seq, _REMEMBERED, event_id, entry))
        for event_id, (reason, seq) in reversed(self.closed.items()):
            if seq < start:
                break
            changes.append((seq, _CLOSED, event_id, reason))
        if not self._stale:
            changes += [
                (seq, _LEFT, event_id, None) for seq, event_id in self._left if seq >= start
            ]
        changes.sort(key=_first)
        return tuple(changes)

    def _seal(
        self, start: int, changes: tuple[tuple[int, int, str, Any], ...], end: int | None = None
    ) -> None:
        """Seal ``changes`` (numbered ``start`` up to ``end``, by default the next) as the
        next segment; the ids that left are in it now."""
        name = f"join.{self._ordinal % self._ring()}"
        self._ordinal += 1
        self._sealed.append(Segment(name, start, self.seq if end is None else end, changes))
        self._left = []

    def _compact(self) -> None:
        """Number the live entries afresh, in order, and seal them (nothing else is
        needed to rebuild the join): the log shrinks to what is live."""
        seq = 0
        changes: list[tuple[int, int, str, Any]] = []
        for event_id, entry in self.pending.items():
            entry.seq = seq
            changes.append((seq, _REMEMBERED, event_id, entry))
            seq += 1
        for event_id, (reason, _) in self.closed.items():
            self.closed[event_id] = (reason, seq)
            changes.append((seq, _CLOSED, event_id, reason))
            seq += 1
        self.seq = seq
        self._sealed = []
        self._stale = False
        for first in range(0, len(changes), SEGMENT_CHANGES):
            part = tuple(changes[first : first + SEGMENT_CHANGES])
            self._seal(first, part, first + len(part))
        self._left = []

    def _left_pending(self, event_id: str) -> None:
        """Log that ``event_id`` left ``pending``. A join nobody checkpoints (replay,
        retraining) would log without end: past a bound the log is marked stale instead,
        and the next checkpoint compacts it."""
        left = self._left
        left.append((self.seq, event_id))
        self.seq += 1
        if len(left) > 4 * SEGMENT_CHANGES:
            left.clear()
            self._sealed = []
            self._stale = True

    def _oldest_live(self) -> int:
        return min(self._oldest(self.pending), self._oldest(self.closed))

    def _oldest(self, table: OrderedDict) -> int:
        if not table:
            return self.seq
        first = next(iter(table.values()))
        return first.seq if type(first) is Pending else first[1]

    def _ring(self) -> int:
        """How many names segments cycle through: more than the log ever needs (an entry
        lives through at most about ``max_entries`` changes of each kind), and past
        ``ring - 2`` segments the log is compacted."""
        return 8 + math.ceil(6 * self.max_entries / SEGMENT_CHANGES)

    def _evict(self, event_id: str) -> None:
        entry = self.pending.pop(event_id)
        self.bytes -= entry.size
        self.expired += 1
        self._left_pending(event_id)
        self.close(event_id, Reason.EXPIRED_LABEL_ID)


def _first(change: tuple[int, int, str, Any]) -> int:
    return change[0]
