"""The label join: feature events waiting for the label event that carries their id.

Labels often arrive later than the features they belong to (a fraud verdict days after
the payment). :class:`LabelJoin` keeps each unlabeled feature event until its label comes,
bounded three ways: a count (``engine.join_buffer_size``), an estimated byte budget
(``engine.join_buffer_max_bytes``) and an age in event time
(``engine.join_max_age_seconds``). Ids that left the buffer are remembered (bounded by
the same count) so a late or repeated label gets the right dead-letter reason.

The worker's Engine and batch retraining (:mod:`streamheal.retrain`) join through this one
class, so a retrained model sees exactly the (features, label) pairs the worker learned.

Checkpoints take the join as two change logs, one per table, cut into segments
(:meth:`LabelJoin.checkpoint_segments`, :meth:`LabelJoin.log_state`,
:meth:`LabelJoin.load_log`): every change is stamped with a sequence number, a segment
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

import itertools
import math
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
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
# What log_state() writes: one change log per table, the closed ids' changes packed
# (see Packed). Read too: "logs", the same with the closed ids' changes as three
# tuples (before 2026-11-29). (A build that was never released wrote "log", one log for
# both tables; Engine.load_state_dict refuses anything else.)
LOG_FORMAT = "logs.packed"
LOG_FORMATS_READ = ("logs", LOG_FORMAT)
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
    """Sealed changes ``first`` <= seq < ``end`` of one table of a join, in order:
    (seq, kind, id, entry) tuples for the waiting entries, :data:`Packed` changes for
    the closed ids. Immutable, so a checkpoint writes it once (under ``name``)."""

    name: str
    first: int
    end: int
    changes: Any


@dataclass(slots=True)
class _Log:
    """One table's change log: where its unsealed changes start, how many segments it
    has sealed (the next one's name) and the sealed segments still needed."""

    start: int
    ordinal: int
    sealed: list[Segment]
    prefix: str = ""


# Closed ids' changes, in order, packed so that pickling them costs a few copies of memory
# rather than a step per id (a tuple of 2,000 ids took 75 us to pickle, at every
# checkpoint): the ids end to end; each one's length (an array("I")'s bytes); their change
# numbers (an array("q")'s bytes); their reasons as runs of (reason, how many). A plain
# tuple, so a checkpoint's pickle names no class of this module.
Packed = tuple[str, bytes, bytes, tuple[tuple[str, int], ...]]


@dataclass(slots=True)
class _Tail:
    """The closed ids' changes from ``start`` up to ``end`` as last read (_closed_since):
    the ids' text in pieces, their lengths, numbers and reason runs, and the packed form
    of all that once asked for."""

    start: int
    end: int
    pieces: list[str]
    lengths: array
    seqs: array
    runs: list[list[Any]]
    packed: Packed | None = None


class LabelJoin:
    """Feature events by id, oldest first, until their label arrives or they age out
    (``expired`` counts those that left unlabeled, for age or for space)."""

    __slots__ = (
        "_closed_tail",
        "_left",
        "_logs",
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
        # id -> (why it left, the change that closed it). The reason is kept as its plain
        # string: a tuple of a str and an int drops out of the garbage collector's
        # tracking, one holding an enum member does not, and the 100,000 closed ids of a
        # long-running partition were then scanned at every full collection (1.5-3 us per
        # event of mini-batch mode went to those scans).
        self.closed: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self.bytes = 0
        self.expired = 0
        self.seq = 0  # the next change's number
        self._left: list[tuple[int, str]] = []  # ids that left `pending` since its last seal
        self._logs = (_Log(0, 0, [], "p"), _Log(0, 0, [], "c"))  # pending's, closed's
        self._stale = False  # departures were not all logged: compact at the next checkpoint
        self._closed_tail: _Tail | None = None  # see _closed_since

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
            return Reason.UNKNOWN_LABEL_ID if closed is None else Reason(closed[0])
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
        self.close_all((event_id,), reason)

    def close_all(self, event_ids: Iterable[str], reason: Reason) -> None:
        """:meth:`close` for each of ``event_ids`` in order, in one call (a run of feature
        events that carried their own labels). The ids beyond the bound leave at the end
        instead of one per close: either way the newest ``max_entries`` stay, in order."""
        closed, value, seq = self.closed, reason._value_, self.seq  # .value: a slow property
        pop = closed.pop
        for event_id in event_ids:
            pop(event_id, None)  # re-insert at the young end
            closed[event_id] = (value, seq)
            seq += 1
        self.seq = seq
        for _ in range(len(closed) - self.max_entries):
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
        self.closed = OrderedDict((k, (_plain(r), seq)) for k, (r, seq) in closed.items())
        self.expired = state["expired"]
        self.bytes = sum(entry.size for entry in self.pending.values())
        self._compact()  # numbered afresh (entries of older checkpoints have no number)

    # ------------------------------------------------------------- the change log
    # Two logs, one per table, each cut into segments and shedding them on its own: the
    # waiting entries' log keeps only what the oldest waiting entry needs, however far
    # back the closed ids go (one log for both kept every evicted entry alive as long as
    # the oldest closed id: twice the memory on a stream without labels).
    def checkpoint_segments(self) -> dict[str, Segment]:
        """The sealed segments the next :meth:`log_state` names, by name: seals each
        table's changes once :data:`SEGMENT_CHANGES` changes have passed since its last
        seal, sheds segments no live entry needs, and compacts when a log holds more
        segments than its ring of names (or lost track of departures, see
        :meth:`_left_pending`)."""
        if self._stale:
            self._compact()
        else:
            for log, changes_since, table in self._tables():
                if self.seq - log.start >= SEGMENT_CHANGES:
                    changes = changes_since(log.start)
                    if changes:
                        self._seal(log, log.start, changes, self.seq)
                    log.start = self.seq
                oldest = self._oldest(table)
                while log.sealed and log.sealed[0].end <= oldest:
                    log.sealed.pop(0)
            self._left = [(seq, i) for seq, i in self._left if seq >= self._logs[0].start]
            self._shed_taken()
            if any(len(log.sealed) > self._ring() - 2 for log in self._logs):
                self._compact()
        return {segment.name: segment for log in self._logs for segment in log.sealed}

    def _shed_taken(self) -> None:
        """Re-seal the waiting table's live entries when its log holds far more than them.
        One event whose label never comes keeps every segment since its own, and with
        them every entry remembered and taken since (features and all: hundreds of MB at
        the default bounds); the live entries, numbered as they are, are all a restore
        needs of the changes before the unsealed ones."""
        held = sum(len(segment.changes) for segment in self._logs[0].sealed)
        if held > 2 * (len(self.pending) + SEGMENT_CHANGES):
            self._reseal_pending()

    def _reseal_pending(self) -> None:
        """The waiting table's log as segments of its live entries changed before the
        unsealed changes, in order, and nothing else."""
        log = self._logs[0]
        live = [
            (entry.seq, _REMEMBERED, event_id, entry)
            for event_id, entry in self.pending.items()
            if entry.seq < log.start
        ]
        log.sealed = []
        for first in range(0, len(live), SEGMENT_CHANGES):
            part = tuple(live[first : first + SEGMENT_CHANGES])
            after = first + SEGMENT_CHANGES
            self._seal(log, part[0][0], part, live[after][0] if after < len(live) else log.start)

    def log_state(self) -> dict[str, Any]:
        """This join as a checkpoint writes it: for each table, the names of its sealed
        segments (see :meth:`checkpoint_segments`, each written once) and its changes
        since the last seal. Changes nothing."""
        stale = self._stale  # no usable log: every live entry, as changes
        return {
            "format": LOG_FORMAT,
            "logs": [
                {
                    "segments": [] if stale else [(s.name, s.first, s.end) for s in log.sealed],
                    "tail": changes_since(0 if stale else log.start),
                    "start": log.start,
                    "ordinal": log.ordinal,
                }
                for log, changes_since, _ in self._tables()
            ],
            "live": (self._oldest(self.pending), self._oldest(self.closed)),
            "seq": self.seq,
            "stale": self._stale,
            "expired": self.expired,
        }

    def load_log(self, state: dict[str, Any], segments: dict[str, Segment]) -> None:
        """Continue from :meth:`log_state` output and the segments it names: the changes
        are replayed in order, and each table keeps the entries changed at or after its
        oldest live entry's change (older ones in the log had been evicted since)."""
        logs = []
        replayed: list[list[Segment]] = []
        for saved, prefix in zip(state["logs"], ("p", "c"), strict=True):
            named = []
            for name, first, end in saved["segments"]:
                segment = segments.get(name)
                if segment is None or (segment.first, segment.end) != (first, end):
                    raise ValueError(f"the join's segment {name!r} ({first}-{end}) was not given")
                named.append(segment)
            replayed.append(named)
            logs.append(_Log(saved["start"], saved["ordinal"], named, prefix))
        pending_state, closed_state = state["logs"]
        pending: OrderedDict[str, Pending] = OrderedDict()
        for changes in [*(s.changes for s in replayed[0]), pending_state["tail"]]:
            for _, kind, event_id, value in changes:
                pending.pop(event_id, None)
                if kind == _REMEMBERED:
                    pending[event_id] = value
        closed: OrderedDict[str, tuple[str, int]] = OrderedDict()
        for changes in [*(s.changes for s in replayed[1]), closed_state["tail"]]:
            for event_id, seq, reason in _closed_changes(changes):
                closed.pop(event_id, None)
                closed[event_id] = (_plain(reason), seq)
        oldest_pending, oldest_closed = state["live"]
        self.pending = OrderedDict((k, e) for k, e in pending.items() if e.seq >= oldest_pending)
        self.closed = OrderedDict((k, c) for k, c in closed.items() if c[1] >= oldest_closed)
        self.expired = state["expired"]
        self.seq = state["seq"]
        self.bytes = sum(entry.size for entry in self.pending.values())
        self._logs = (logs[0], logs[1])
        self._stale = state["stale"]
        self._closed_tail = None
        self._left = [
            (seq, event_id)
            for seq, kind, event_id, _ in pending_state["tail"]
            if kind == _LEFT and not self._stale
        ]

    def _pending_since(self, start: int) -> tuple[tuple[int, int, str, Any], ...]:
        """The waiting table's changes numbered ``start`` or later that still matter, in
        order: the newest change of each entry remembered since (one remembered since but
        gone is no longer in the table) and the ids that left it since."""
        changes: list[tuple[int, int, str, Any]] = []
        for event_id, entry in reversed(self.pending.items()):
            if entry.seq < start:
                break
            changes.append((entry.seq, _REMEMBERED, event_id, entry))
        if not self._stale:
            left = self._left
            changes += [(seq, _LEFT, event_id, None) for seq, event_id in left if seq >= start]
        changes.sort(key=_first)
        return tuple(changes)

    def _closed_since(self, start: int) -> Packed:
        """The closed ids' changes numbered ``start`` or later, in order, packed (see
        :data:`Packed`). Read once per change: the tail read last time is kept and the
        changes since appended, so a checkpoint every batch costs what the batch closed,
        not the whole tail (up to :data:`SEGMENT_CHANGES` ids). An id closed again, or
        forgotten for space, since it was read keeps its older change in the tail:
        replaying the log re-inserts an id at its newest change, and drops what is older
        than the oldest id still remembered, so the join restored is the same."""
        tail = self._closed_tail
        if tail is None or tail.start != start or len(tail.lengths) > 2 * SEGMENT_CHANGES:
            tail = self._closed_tail = _Tail(start, start, [], array("I"), array("q"), [])
        newest: list[tuple[str, tuple[str, int]]] = []
        for item in reversed(self.closed.items()):
            if item[1][1] < tail.end:
                break
            newest.append(item)
        tail.end = self.seq
        if newest or tail.packed is None:
            newest.reverse()
            ids = [event_id for event_id, _ in newest]
            tail.pieces.append("".join(ids))
            tail.lengths.extend(map(len, ids))
            tail.seqs.extend([seq for _, (_, seq) in newest])
            _add_runs(tail.runs, [reason for _, (reason, _) in newest])
            tail.packed = _packed("".join(tail.pieces), tail.lengths, tail.seqs, tail.runs)
        return tail.packed

    def _seal(self, log: _Log, start: int, changes: Any, end: int) -> None:
        name = f"join.{log.prefix}{log.ordinal % self._ring()}"
        log.ordinal += 1
        log.sealed.append(Segment(name, start, end, changes))

    def _compact(self) -> None:
        """Number the live entries afresh, in order, and seal them (nothing else is
        needed to rebuild the join): the logs shrink to what is live."""
        seq = 0
        for entry in self.pending.values():
            entry.seq = seq
            seq += 1
        first_closed = seq
        for event_id, (reason, _) in self.closed.items():
            self.closed[event_id] = (reason, seq)
            seq += 1
        self.seq = seq
        self._stale = False
        self._left = []
        for log in self._logs:
            log.start = seq
        self._reseal_pending()
        closed_log = self._logs[1]
        closed_log.sealed = []
        self._closed_tail = None  # read under the old numbers
        live = list(self.closed.items())
        for first in range(0, len(live), SEGMENT_CHANGES):
            part = live[first : first + SEGMENT_CHANGES]
            packed = _pack(
                [event_id for event_id, _ in part],
                [seq for _, (_, seq) in part],
                [reason for _, (reason, _) in part],
            )
            self._seal(closed_log, first_closed + first, packed, first_closed + first + len(part))

    def _left_pending(self, event_id: str) -> None:
        """Log that ``event_id`` left ``pending``. A join nobody checkpoints (replay,
        retraining) would log without end: past a bound the log is marked stale instead,
        and the next checkpoint compacts it."""
        left = self._left
        left.append((self.seq, event_id))
        self.seq += 1
        if len(left) > 4 * SEGMENT_CHANGES:
            left.clear()
            for log in self._logs:
                log.sealed = []
            self._stale = True

    def _tables(self) -> tuple[tuple[_Log, Callable[[int], Any], OrderedDict], ...]:
        """Each table with its log and the function that reads its changes since."""
        return (
            (self._logs[0], self._pending_since, self.pending),
            (self._logs[1], self._closed_since, self.closed),
        )

    def _oldest(self, table: OrderedDict) -> int:
        """The number of the oldest entry's change (the next change's when empty)."""
        if not table:
            return self.seq
        first = next(iter(table.values()))
        return first.seq if type(first) is Pending else first[1]

    def _ring(self) -> int:
        """How many names each log's segments cycle through: more than a log ever needs
        (an entry lives through at most about ``max_entries`` changes of each kind), and
        past ``ring - 2`` segments the logs are compacted."""
        return 8 + math.ceil(6 * self.max_entries / SEGMENT_CHANGES)

    def _evict(self, event_id: str) -> None:
        entry = self.pending.pop(event_id)
        self.bytes -= entry.size
        self.expired += 1
        self._left_pending(event_id)
        self.close(event_id, Reason.EXPIRED_LABEL_ID)


def _add_runs(runs: list[list[Any]], reasons: Iterable[str]) -> None:
    """Append ``reasons`` to ``runs`` of [reason, how many]."""
    for reason in reasons:
        if runs and runs[-1][0] == reason:
            runs[-1][1] += 1
        else:
            runs.append([reason, 1])


def _pack(ids: list[str], seqs: list[int], reasons: list[str]) -> Packed:
    """Closed ids' changes, packed (see :data:`Packed`)."""
    runs: list[list[Any]] = []
    _add_runs(runs, reasons)
    return _packed("".join(ids), array("I", map(len, ids)), array("q", seqs), runs)


def _packed(text: str, lengths: array, seqs: array, runs: list[list[Any]]) -> Packed:
    """The :data:`Packed` tuple of ids end to end, their lengths, numbers and reason runs."""
    return text, lengths.tobytes(), seqs.tobytes(), tuple((reason, n) for reason, n in runs)


def _closed_changes(changes: Any) -> Iterator[tuple[str, int, str]]:
    """(id, number, reason) of each closed id's change in a closed-id segment or tail:
    packed (see :data:`Packed`), or three tuples (ids, numbers, reasons) as written
    before 2026-11-29."""
    if len(changes) == 3:  # (ids, numbers, reasons)
        yield from zip(*changes, strict=True)
        return
    text, lengths, seqs = changes[0], array("I"), array("q")
    lengths.frombytes(changes[1])
    seqs.frombytes(changes[2])
    reasons = itertools.chain.from_iterable(
        itertools.repeat(reason, count) for reason, count in changes[3]
    )
    counts = sum(count for _, count in changes[3])
    if not (len(lengths) == len(seqs) == counts and sum(lengths) == len(text)):
        raise ValueError("a packed segment of closed ids does not add up")
    end = 0
    for length, seq, reason in zip(lengths, seqs, reasons):  # noqa: B905 (checked above)
        start, end = end, end + length
        yield text[start:end], seq, reason


def _first(change: tuple[int, int, str, Any]) -> int:
    return change[0]


def _plain(reason: str) -> str:
    """A closed id's reason as the join keeps it (see ``LabelJoin.closed``): checkpoints
    written before 2026-11-29 hold :class:`Reason` members."""
    return Reason(reason).value
