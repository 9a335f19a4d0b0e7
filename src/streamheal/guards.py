"""Guards: what one hostile or careless event may do to a partition's Engine.

Three small pieces, each owning one thing, each pure and restorable:

- :class:`InputGuard` caps the feature names a partition learns (a producer sending a
  new name per event would otherwise grow the model, the detectors and the counters
  without bound), caps the distinct values of a string feature (each becomes a one-hot
  weight), and clips numeric values far outside what the feature has looked like (one
  1e308 would otherwise overflow the scaler's variance and turn every weight into NaN).
- :class:`EventClock` is the partition's event-time high-water mark; a ``ts`` far ahead
  of it does not move it, so a single far-future event cannot expire every feature
  event that is waiting for its label.
- :class:`ModelWatch` notices at once when learning left the model with non-finite
  weights or probabilities, and keeps the last good state to return to.

>>> from streamheal.config import GuardsConfig
>>> guard = InputGuard(GuardsConfig(reference_size=10, outlier_scales=10.0))
>>> for i in range(10):
...     _ = guard.admit({"x": float(i)})
>>> guard.admit({"x": 5.0})
{'x': 5.0}
>>> guard.admit({"x": 1e308}), guard.clipped["x"]
({'x': 97.11}, 1)
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from operator import le
from typing import Any

import numpy as np

from streamheal.block import FeatureBlock
from streamheal.config import GuardsConfig
from streamheal.detectors import stats
from streamheal.detectors.base import Stateful

OTHER_CATEGORY = "__other__"
_PROVISIONAL_FROM = 32  # values of a feature before it gets provisional bounds
_FLOAT_ONLY = {float}


@dataclass
class Notice:
    """A guard stepped in (once per kind and feature per partition), for the alerts topic."""

    notice: str  # outlier_clipped | type_mismatch | feature_cap_reached | future_ts
    feature: str | None
    index: int
    message: str
    detail: dict[str, Any] = field(default_factory=dict)
    partition: int | None = None


@dataclass
class LearnedBlock:
    """What :meth:`InputGuard.admit_learning` did to a block's rows, by row position: the
    admitted copies of the rows it clipped, and the names clipped for the first time."""

    replaced: dict[int, dict[str, Any]]
    first_clips: dict[int, list[str]]


class InputGuard(Stateful):
    """Bounds the feature names, string values and numeric ranges a partition learns from.

    Parameters
    ----------
    cfg
        ``max_distinct_features``, ``max_categories``, ``clip_outliers``,
        ``outlier_scales``, ``max_abs_value`` and ``reference_size`` are used.

    A numeric feature's bounds come from its first ``reference_size`` values: with
    ``q01``/``q99`` their 1st and 99th percentiles and ``spread = q99 - q01`` (or
    ``max(|median|, 1)`` for a constant feature), values outside
    ``[q01 - k * spread, q99 + k * spread]`` (``k = outlier_scales``) are clipped to it.
    While the reference fills, provisional bounds from the values so far (from 32 values
    on) apply; always, ``|x| <= max_abs_value`` holds.
    """

    def __init__(self, cfg: GuardsConfig) -> None:
        self.cfg = cfg
        # Per known name: a list of values (learning its bounds), a (lo, hi) tuple, or None
        # for a name seen only with string values so far.
        self.features: dict[str, Any] = {}
        self.categories: dict[str, set[str]] = {}
        self.provisional: dict[str, tuple[float, float]] = {}  # while the reference fills
        # (names, lower bounds, upper bounds) of the last event when all were bounded.
        self._fast: tuple[tuple[str, ...], list[float], list[float]] | None = None
        self.clipped: Counter[str] = Counter()
        self.ignored_names = 0  # feature values dropped because the name cap was reached
        self.folded_values = 0  # string values replaced by OTHER_CATEGORY
        self.first_clip: list[str] = []  # names clipped for the first time (for notices)
        # Values of the other kind than their feature's first (a string for a numeric
        # feature, a number for a string one): left out, counted per feature.
        self.mismatched: Counter[str] = Counter()
        self.first_mismatch: list[str] = []
        # "integer" or "string", from the first label (a model's classes must sort: a tree
        # that learned both raised on every prediction after); None until a label comes.
        self.label_kind: str | None = None
        self.cap_reached = False

    def admit(self, features: dict[str, Any]) -> dict[str, Any]:
        """``features`` itself when nothing needed changing, else a guarded copy."""
        fast = self._fast
        if fast is not None:
            names, lows, highs = fast
            if tuple(features) == names:
                # Same names as the last event, every one bounded: two C-level sweeps.
                values = features.values()
                try:
                    if all(map(le, lows, values)) and all(map(le, values, highs)):
                        return features
                except TypeError:  # a string where a number was: the full path decides
                    pass
        out = self._admit(features)
        self._remember_layout(out)
        return out

    def unchanged_rows(self, block: FeatureBlock) -> list[bool] | None:
        """Per row of ``block``, True when :meth:`admit` would return it unchanged (with
        nothing counted): it carries the bounded names of the last layout, every value
        inside its bounds. One numpy comparison for the whole batch instead of one
        :meth:`admit` per row; None when the block's names are not that layout's."""
        fast = self._fast
        inside = None if fast is None else block.rows_within(*fast)
        return None if inside is None else inside.tolist()

    def admit_learning(self, block: FeatureBlock) -> LearnedBlock | None:
        """:meth:`admit` for each row of ``block`` in order, in a few array operations, while the
        guard is learning the bounds of some of its features (a new partition's first
        rows): the same values appended and clipped, the same provisional and final bounds
        at the same counts, the same counts and first clips. 500 rows of 30 features: 2.7
        ms, against 9.6 one by one.

        Only for a block whose every name is known as numeric or new within the name cap,
        each row in the first row's order, floats only in the rows the features learn
        from; None otherwise (or when no name is learning), and nothing changed: then the
        rows go through :meth:`admit` one by one. The caller
        notes the batch's missing names first (so only a batch without any may come here:
        :meth:`note_missing` between rows could take the cap from a new name).

        The learning features go in lockstep (they came together, so their bounds change
        at the same rows, each count at once for all of them); a block whose learning
        features have seen different counts goes row by row."""
        cfg, known, names = self.cfg, self.features, block.names
        states = [known.get(name) for name in names]
        if not cfg.clip_outliers or all(state.__class__ is tuple for state in states):
            return None
        for name, state in zip(names, states, strict=True):
            # Numeric (learning or bounded), or to become numeric at its first value here.
            numeric = state.__class__ in (list, tuple)
            if not numeric and (state is not None or name in self.categories):
                return None
        if len(known) + sum(name not in known for name in names) > cfg.max_distinct_features:
            return None
        # Learning features in lockstep (as many values each, the common case: they came
        # together), so their bounds change at the same rows, in column order.
        learning = [j for j, state in enumerate(states) if state.__class__ is not tuple]
        counts = {len(states[j] or ()) for j in learning}
        if len(counts) != 1:
            return None
        # Each row in the first row's order (admit meets a row's clips in its own order).
        # The rows the features learn from must be floats only: an int is kept as it came
        # (a checkpoint holds it so). Past them the bounds hold, which treat both alike.
        still_learning = cfg.reference_size - counts.pop()
        for i, row in enumerate(block.rows):
            if tuple(row) != names:
                return None
            if i < still_learning and set(map(type, row.values())) != _FLOAT_ONLY:
                return None
        for name in names:  # in the first row's order, as admit() would meet them
            if known.get(name) is None:
                known[name] = []
        matrix = block.matrix.copy()  # clipped in place: the block stays what came
        outside = np.zeros(matrix.shape, dtype=bool)
        self._learn_columns(names, learning, matrix, outside)
        bounded = [j for j, state in enumerate(states) if state.__class__ is tuple]
        if bounded:
            self._clip_bounded(names, bounded, 0, matrix, outside)
        return self._learned(block, matrix, outside)

    def _learn_columns(
        self, names: tuple[str, ...], columns: list[int], matrix: np.ndarray, outside: np.ndarray
    ) -> None:
        """:meth:`_number` for every value of ``columns`` (learning features with as many
        values so far), row after row, in segments between the counts where their bounds
        change; then, once bounded, admit's float path for the rows left."""
        cfg = self.cfg
        learning = [names[j] for j in columns]
        states = [self.features[name] for name in learning]
        cap = (-cfg.max_abs_value, cfg.max_abs_value)
        at, end = 0, len(matrix)
        while at < end:
            n = len(states[0])
            stop = min(end, at + _next_bounds_count(n, cfg.reference_size) - n)
            lows, highs = zip(*(self.provisional.get(name, cap) for name in learning), strict=True)
            segment = matrix[at:stop, columns]
            lo, hi = np.array(lows), np.array(highs)
            out = (segment < lo) | (segment > hi)  # NaN stays, as in _number
            _put_clipped(matrix, outside, slice(at, stop), columns, segment, out, lo, hi)
            for state, values in zip(states, segment.T.tolist(), strict=True):
                state.extend(values)
            n += stop - at
            at = stop
            if n >= cfg.reference_size:
                for name, bounds in zip(learning, _bounds_many(states, cfg), strict=True):
                    self.features[name] = bounds
                    self.provisional.pop(name, None)
                self._clip_bounded(names, columns, at, matrix, outside)
                return
            if _provisional_at(n):
                self.provisional.update(zip(learning, _bounds_many(states, cfg), strict=True))

    def _clip_bounded(
        self,
        names: tuple[str, ...],
        columns: list[int],
        start: int,
        matrix: np.ndarray,
        outside: np.ndarray,
    ) -> None:
        """Admit's float path for ``columns`` (bounded features) from row ``start`` on: a
        value outside its bounds (or NaN) is clipped to the nearer one (NaN to the upper)."""
        if start >= len(matrix):
            return
        lo = np.array([self.features[names[j]][0] for j in columns])
        hi = np.array([self.features[names[j]][1] for j in columns])
        segment = matrix[start:, columns]
        out = ~((lo <= segment) & (segment <= hi))
        _put_clipped(matrix, outside, slice(start, None), columns, segment, out, lo, hi)

    def _learned(
        self, block: FeatureBlock, matrix: np.ndarray, outside: np.ndarray
    ) -> LearnedBlock:
        """Counts, first clips (row by row, then column, as admit() meets them) and the
        admitted copies of the clipped rows."""
        names = block.names
        replaced: dict[int, dict[str, Any]] = {}
        first_clips: dict[int, list[str]] = {}
        rows, columns = np.nonzero(outside)  # row-major: admit's order
        for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
            name = names[column]
            value = block.rows[row][name]
            if value.__class__ is not float:  # an int past the learning rows: as _number
                lo, hi = self.features[name]  # compares it (NaN bounds clip no int)
                if not (value < lo or value > hi):
                    continue
            if not self.clipped[name]:
                self.first_clip.append(name)
                first_clips.setdefault(row, []).append(name)
            self.clipped[name] += 1
            copy = replaced.get(row)
            if copy is None:
                copy = replaced[row] = dict(block.rows[row])
            copy[name] = float(matrix[row, column])
        self._remember_layout(block.rows[-1])
        return LearnedBlock(replaced, first_clips)

    def _remember_layout(self, features: dict[str, Any]) -> None:
        known = self.features
        bounds = [known.get(name) for name in features]
        if all(b.__class__ is tuple for b in bounds) and bounds:
            self._fast = (tuple(features), [b[0] for b in bounds], [b[1] for b in bounds])
        else:
            self._fast = None

    def _admit(self, features: dict[str, Any]) -> dict[str, Any]:
        known = self.features
        out: dict[str, Any] | None = None
        for name, value in features.items():
            state = known.get(name)
            # The hot path: a float feature whose bounds are known, inside them.
            if state.__class__ is tuple and value.__class__ is float:
                if state[0] <= value <= state[1]:
                    continue
                guarded = self._clip(name, state[0] if value < state[0] else state[1])
                out = _copy_with(features, out, name, guarded)
                continue
            if state is None and name not in known:
                if len(known) >= self.cfg.max_distinct_features:
                    self.ignored_names += 1
                    self.cap_reached = True
                    out = _copy_without(features, out, name)
                    continue
                known[name] = None
            if type(value) is str:
                if state is not None:  # a numeric feature: a string here is a producer bug
                    out = self._mismatch(features, out, name)
                    continue
                admitted = self._category(name, value)
                if admitted is not value:
                    out = _copy_with(features, out, name, admitted)
                continue
            if state is None:
                if name in self.categories:  # a string feature: a number here is a bug
                    out = self._mismatch(features, out, name)
                    continue
                state = known[name] = []
            guarded = self._number(name, value, state)
            if guarded is not value:
                out = _copy_with(features, out, name, guarded)
        return features if out is None else out

    def note_missing(self, names: tuple[str, ...]) -> None:
        """Names seen only as missing values count towards the name cap too."""
        known = self.features
        for name in names:
            if name not in known and len(known) < self.cfg.max_distinct_features:
                known[name] = None

    def _number(self, name: str, value: float | int, state: Any) -> float | int:
        cfg = self.cfg
        if not cfg.clip_outliers:
            return value
        if type(state) is list:
            lo, hi = self.provisional.get(name, (-cfg.max_abs_value, cfg.max_abs_value))
            if value < lo or value > hi:
                value = self._clip(name, lo if value < lo else hi)
            state.append(value)
            n = len(state)
            if n >= cfg.reference_size:
                self.features[name] = _bounds(state, cfg.outlier_scales, cfg.max_abs_value)
                self.provisional.pop(name, None)
            elif _provisional_at(n):
                # Until the reference is complete, bounds from the values so far (at 32, 64,
                # 128, ... values) keep one early extreme from wrecking a scaler's variance
                # for good (few values already give wide percentiles).
                self.provisional[name] = _bounds(state, cfg.outlier_scales, cfg.max_abs_value)
            return value
        lo, hi = state  # an int (floats take the fast path in admit)
        if value < lo:
            return self._clip(name, lo)
        if value > hi:
            return self._clip(name, hi)
        return value

    def _mismatch(
        self, features: dict[str, Any], out: dict[str, Any] | None, name: str
    ) -> dict[str, Any]:
        """A value of the other kind than the feature's first: left out (a tree model
        cannot mix numbers and strings in one feature, and a linear one would learn a
        one-hot weight for a number's text), counted, noticed once."""
        if not self.mismatched[name]:
            self.first_mismatch.append(name)
        self.mismatched[name] += 1
        return _copy_without(features, out, name)

    def take_first_mismatches(self) -> list[str]:
        names, self.first_mismatch = self.first_mismatch, []
        return names

    def _clip(self, name: str, bound: float) -> float:
        if not self.clipped[name]:
            self.first_clip.append(name)
        self.clipped[name] += 1
        return bound

    def _category(self, name: str, value: str) -> str:
        seen = self.categories.get(name)
        if seen is None:
            seen = self.categories[name] = set()
        if value in seen:
            return value
        if len(seen) >= self.cfg.max_categories:
            self.folded_values += 1
            return OTHER_CATEGORY
        seen.add(value)
        return value

    def take_first_clips(self) -> list[str]:
        names, self.first_clip = self.first_clip, []
        return names


class EventClock(Stateful):
    """A partition's event time, as the majority of its recent events tell it.

    The clock is the lower median of the last ``WINDOW`` event timestamps (recomputed every
    ``EVERY`` events, and at every event while fewer have been seen). It only moves
    forward, unless the recent majority lies more than ``max_skew`` behind it: then it
    follows them back (a far-future first event must not stand). A few hostile
    timestamps, whether far ahead or stepping a day at a time, cannot move it; an event
    more than ``max_skew`` ahead of it is counted as suspicious.

    >>> clock = EventClock(max_skew=60.0)
    >>> clock.advance(100.0), clock.advance(90.0), clock.advance(1e15), clock.suspicious
    (100.0, 100.0, 100.0, 1)
    """

    _settings = ("max_skew",)
    WINDOW = 63
    EVERY = 16

    def __init__(self, max_skew: float) -> None:
        self.max_skew = max_skew
        self.now: float | None = None
        self.recent: deque[float] = deque(maxlen=self.WINDOW)
        self.seen = 0
        self.suspicious = 0  # events whose ts was too far ahead to be believed

    def advance(self, ts: float) -> float:
        """Take ``ts`` into account; return the clock's time afterwards."""
        recent = self.recent
        recent.append(ts)
        self.seen += 1
        now = self.now
        if now is not None and ts > now + self.max_skew:
            self.suspicious += 1
        if len(recent) < self.EVERY or self.seen % self.EVERY == 0:
            ordered = sorted(recent)
            median = ordered[(len(ordered) - 1) // 2]
            if now is None or median > now or median < now - self.max_skew:
                self.now = now = median
        return now


GOOD_STATE_BYTES_PER_EVENT = 64


class ModelWatch:
    """Detects a model that learning has broken (non-finite state) and keeps a good copy.

    Linear models are checked after every learning step through their intercept (a NaN
    anywhere in the gradient reaches it) and the sum of their weights; every model's
    probabilities are checked where they are computed anyway. The last good state is the
    pickled model, refreshed every ``good_state_every`` labeled events while healthy (a
    model whose pickle is large less often: see :meth:`keep`).
    """

    def __init__(self, every: int) -> None:
        self.every = every
        self.good: bytes | None = None
        self.good_version = 0
        self.since_good = 0
        self.restores = 0

    def keep(self, model_bytes: bytes, version: int) -> None:
        self.good, self.good_version, self.since_good = model_bytes, version, 0

    @property
    def interval(self) -> int:
        """Labeled events between good states. A good state costs a pickle of the model
        (about 60 MB/s here): a tree of 700 kB kept every 1,000 events cost 12 us per
        event, more than its learning step. A large model keeps one every (bytes of the
        last one / GOOD_STATE_BYTES_PER_EVENT) events, about a microsecond per event, and
        a restore goes back that far. In whole multiples of ``every``: the same state
        pickles to a few bytes more or less depending on how its objects share strings,
        which must not move the next keep."""
        every = self.every
        size = len(self.good) if self.good is not None else 0
        return every * max(1, size // (GOOD_STATE_BYTES_PER_EVENT * every))

    def state_dict(self) -> dict[str, Any]:
        # The good copy is left out of checkpoints (it would double their size): a restored
        # Engine keeps a new one at its next learning step.
        return {"restores": self.restores}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.good, self.good_version = None, 0
        self.restores = state["restores"]
        self.since_good = self.every


def label_kind(label: Any) -> str:
    """``"string"`` for a string label, ``"integer"`` for the rest (ints and booleans)."""
    return "string" if type(label) is str else "integer"


def finite_probabilities(proba: dict[Any, float]) -> bool:
    """True when every probability is a finite number: a NaN or an infinity makes the sum
    non-finite (one C-level pass; probabilities are at most 1, so a finite sum cannot
    overflow).

    >>> finite_probabilities({0: 0.25, 1: 0.75}), finite_probabilities({0: float("nan"), 1: 1.0})
    (True, False)
    >>> finite_probabilities({0: float("inf"), 1: float("-inf")}), finite_probabilities({})
    (False, True)
    """
    return math.isfinite(sum(proba.values()))


def healthy(linear: list[Any], weights: bool = True) -> bool:
    """True when every linear model in ``linear`` (from :func:`linear_parts`) is finite.

    The intercept alone is the per-step check: its update uses the same loss gradient as
    the weights, so a NaN anywhere in ``w . x`` reaches it in the same step. ``weights``
    adds every weight (before a state is kept as good)."""
    for part in linear:
        if not math.isfinite(part.intercept):
            return False
        if weights and not math.isfinite(sum(part._weights.values())):
            return False
    return True


def linear_parts(model: Any) -> list[Any]:
    """The generalized linear models inside ``model`` (the parts a NaN can poison for good)."""
    from river import linear_model, multiclass

    from streamheal.models import final_step

    last = final_step(model)
    if isinstance(last, linear_model.base.GLM):
        return [last]
    if isinstance(last, multiclass.OneVsRestClassifier):
        return [c for c in last.classifiers.values() if isinstance(c, linear_model.base.GLM)]
    return []


def _put_clipped(
    matrix: np.ndarray,
    outside: np.ndarray,
    rows: slice,
    columns: list[int],
    segment: np.ndarray,
    out: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
) -> None:
    """``segment`` (a copy of ``matrix[rows, columns]``) clipped where ``out``: below its
    column's ``lo`` to it, anything else (above, or NaN) to ``hi``; written back, and the
    cells marked in ``outside``."""
    if out.any():
        segment[out] = np.where(segment < lo, lo, hi)[out]
        matrix[rows, columns] = segment
        outside[rows, columns] = out


def _provisional_at(n: int) -> bool:
    """Whether a learning feature gets new provisional bounds at its ``n``-th value: at
    :data:`_PROVISIONAL_FROM` and each power of two after it (below the reference size)."""
    return n >= _PROVISIONAL_FROM and n & (n - 1) == 0


def _next_bounds_count(n: int, reference_size: int) -> int:
    """The smallest count of values above ``n`` at which a learning feature's bounds change:
    the next power of two from :data:`_PROVISIONAL_FROM` on, or ``reference_size``."""
    final = max(reference_size, n + 1)
    power = max(_PROVISIONAL_FROM, 1 << n.bit_length())  # the next power of two above n
    return min(final, power)


def _bounds(values: list[float], scales: float, cap: float) -> tuple[float, float]:
    """``[q01 - scales * spread, q99 + scales * spread]`` of ``values``, within ``cap``."""
    return _bounds_of_rows(np.asarray([values], dtype=float), scales, cap)[0]


def _bounds_many(states: list[list[float]], cfg: GuardsConfig) -> list[tuple[float, float]]:
    """:func:`_bounds` of each of ``states`` (as many values each), in one sort."""
    return _bounds_of_rows(np.asarray(states, dtype=float), cfg.outlier_scales, cfg.max_abs_value)


def _bounds_of_rows(matrix: np.ndarray, scales: float, cap: float) -> list[tuple[float, float]]:
    quantiles = stats.sorted_quantiles(np.sort(matrix, axis=1), [0.01, 0.5, 0.99])
    bounds = []
    for q01, median, q99 in quantiles.tolist():
        spread = q99 - q01 or max(abs(median), 1.0)
        bounds.append((max(q01 - scales * spread, -cap), min(q99 + scales * spread, cap)))
    return bounds


def _copy_with(
    features: dict[str, Any], out: dict[str, Any] | None, name: str, value: Any
) -> dict[str, Any]:
    out = dict(features) if out is None else out
    out[name] = value
    return out


def _copy_without(
    features: dict[str, Any], out: dict[str, Any] | None, name: str
) -> dict[str, Any]:
    out = dict(features) if out is None else out
    del out[name]
    return out
