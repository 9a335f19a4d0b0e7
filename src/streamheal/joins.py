"""The label join: feature events waiting for the label event that carries their id.

Labels often arrive later than the features they belong to (a fraud verdict days after
the payment). :class:`LabelJoin` keeps each unlabeled feature event until its label comes,
bounded three ways: a count (``engine.join_buffer_size``), an estimated byte budget
(``engine.join_buffer_max_bytes``) and an age in event time
(``engine.join_max_age_seconds``). Ids that left the buffer are remembered (bounded by
the same count) so a late or repeated label gets the right dead-letter reason.

The worker's Engine and batch retraining (:mod:`streamheal.retrain`) join through this one
class, so a retrained model sees exactly the (features, label) pairs the worker learned.

>>> from streamheal.events import Reason
>>> join = LabelJoin(max_entries=2, max_bytes=1 << 20, max_age_seconds=60.0)
>>> join.remember("a", ts=1.0, raw_size=20, features={"x": 1.0}, prediction=0, now=1.0)
>>> join.take("a", label_ts=5.0).features
{'x': 1.0}
>>> join.take("a", label_ts=6.0) is Reason.DUPLICATE_LABEL
True
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from streamheal.events import Label, Reason

# Estimated bytes of one entry: Python objects take several times the JSON they came from
# (measured: about 2.5x for 30 numeric features, plus the entry itself).
ENTRY_OVERHEAD_BYTES = 300
BYTES_PER_RAW_BYTE = 3


@dataclass(slots=True)
class Pending:
    """A feature event waiting for its label."""

    features: dict[str, Any]
    prediction: Label | None
    ts: float
    size: int  # estimated bytes, for the byte budget


class LabelJoin:
    """Feature events by id, oldest first, until their label arrives or they age out
    (``expired`` counts those that left unlabeled, for age or for space)."""

    __slots__ = ("bytes", "closed", "expired", "max_age", "max_bytes", "max_entries", "pending")

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
        self.closed: OrderedDict[str, Reason] = OrderedDict()
        self.bytes = 0
        self.expired = 0

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
        pending[event_id] = Pending(features, prediction, min(ts, now), size)
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
            return self.closed.get(event_id, Reason.UNKNOWN_LABEL_ID)
        return pending

    def take(self, event_id: str, label_ts: float) -> Pending | Reason:
        """:meth:`find`, and on a match the entry leaves the buffer (a second label for the
        id is then a duplicate)."""
        found = self.find(event_id, label_ts)
        if type(found) is Pending:
            del self.pending[event_id]
            self.bytes -= found.size
            self.close(event_id, Reason.DUPLICATE_LABEL)
        return found

    def close(self, event_id: str, reason: Reason) -> None:
        """Remember that ``event_id`` left (and why) for the labels that come too late."""
        closed = self.closed
        closed.pop(event_id, None)  # re-insert at the young end
        closed[event_id] = reason
        if len(closed) > self.max_entries:
            closed.popitem(last=False)

    def state(self) -> dict[str, Any]:
        """The live entries, closed ids and count (not copied: the caller pickles or copies)."""
        return {"pending": self.pending, "closed": self.closed, "expired": self.expired}

    def load(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state` output; this join's bounds apply from here on."""
        self.pending = OrderedDict(state["pending"])  # checkpoints before 2026-11-29: dicts
        self.closed = OrderedDict(state["closed"])
        self.expired = state["expired"]
        self.bytes = sum(entry.size for entry in self.pending.values())

    def _evict(self, event_id: str) -> None:
        entry = self.pending.pop(event_id)
        self.bytes -= entry.size
        self.expired += 1
        self.close(event_id, Reason.EXPIRED_LABEL_ID)
