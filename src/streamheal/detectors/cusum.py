"""A two-sided CUSUM (Page-Hinkley form) for many series at once, a whole chunk at a time.

For each series, ``S_t = max(0, S_{t-1} + (z_t - mean_t) - k)`` (and the mirror image
for a downward shift), where ``mean_t`` is the running mean of the scores (Page-Hinkley's
centring; it starts from 0 with a prior weight, and absorbs a small bias of the scores
that a finite reference sample leaves). With ``W_t = S_0 + sum_{i<=t}(z_i - mean_i - k)``
the recursion is ``S_t = W_t - min(0, min_{i<=t} W_i)``: a cumulative sum and a running
minimum, so a chunk of ``n`` events for ``m`` features costs a few numpy passes over an
``n x m`` array instead of ``n * m`` Python steps. Missing values (NaN) leave ``S``
unchanged.

The running sums and minima are the suite's largest cost (numpy's ``accumulate`` along
an axis takes about 5 ns per element, and each chunk makes a dozen temporaries), so
``_loops.c`` does them in one pass when it was built (``setup.py``; optional). It gives
numpy's numbers bit for bit (a test holds it to that), so a detector crosses its
threshold at the same event whichever path ran.

>>> import numpy as np
>>> cusum = VectorCusum(n_series=2, k=0.5, threshold=5.0)
>>> z = np.zeros((20, 2)); z[:, 1] = 1.5            # series 1 shifts by 1.5 sd
>>> peak = cusum.update(z, first_index=0)
>>> (peak > 5.0).tolist(), cusum.level().tolist()
([False, True], [0, 2])
"""

from __future__ import annotations

import math

import numpy as np

from streamheal.detectors.base import Level, Stateful

try:  # the compiled inner loops (see _loops.c); numpy does the same where it was not built
    from streamheal.detectors import _loops as compiled
except ImportError:  # pragma: no cover - a build without a C compiler
    compiled = None

# Siegmund's correction for the overshoot of a Gaussian random walk over a boundary.
_OVERSHOOT = 1.166


def average_run_length(k: float, h: float) -> float:
    """Siegmund's approximation of a one-sided CUSUM's in-control ARL on N(0, 1) scores."""
    b = h + _OVERSHOOT
    return (math.exp(2 * k * b) - 2 * k * b - 1) / (2 * k * k)


def threshold_for_run_length(k: float, run_length: float) -> float:
    """The smallest ``h`` whose in-control ARL (Siegmund) reaches ``run_length``."""
    low, high = 0.0, 1.0
    while average_run_length(k, high) < run_length:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        if average_run_length(k, mid) < run_length:
            low = mid
        else:
            high = mid
    return high


class VectorCusum(Stateful):
    """Two-sided CUSUM on standardized scores for ``n_series`` series.

    Parameters
    ----------
    k
        Allowance (half the shift, in sd, the detector is tuned for).
    threshold
        Raising threshold ``h``; the statistic clears below ``clear_ratio * h``.
    cap_ratio
        The statistic is capped at ``cap_ratio * h`` at each check, so a detector that saw
        a long drift clears within a bounded number of events after it ends.
    prior_weight
        Weight of the prior mean 0 in the running mean that centres the scores.
    sides
        ``"both"``, or ``"up"`` / ``"down"`` to watch one direction only.
    """

    def __init__(
        self,
        n_series: int,
        k: float,
        threshold: float,
        clear_ratio: float = 0.5,
        cap_ratio: float = 2.0,
        prior_weight: float = 500.0,
        sides: str = "both",
    ) -> None:
        self.k = k
        self.threshold = threshold
        self.clear_ratio = clear_ratio
        self.cap_ratio = cap_ratio
        # "up" or "down" watches one direction only (e.g. confidence may only fall).
        self.watch_up, self.watch_down = sides in ("both", "up"), sides in ("both", "down")
        self.total = np.zeros(n_series)  # sum of scores seen (the running mean's numerator)
        self.count = np.full(n_series, prior_weight)  # prior weight on a mean of 0
        self.upper = np.zeros(n_series)
        self.lower = np.zeros(n_series)
        self.zero_upper = np.zeros(n_series, dtype=np.int64)  # where each excursion began
        self.zero_lower = np.zeros(n_series, dtype=np.int64)
        self.peak = np.zeros(n_series)  # highest statistic since the last check
        self._batch: dict | None = None  # a batch prepared by `begin`, consumed by `advance`

    @property
    def statistic(self) -> np.ndarray:
        return np.maximum(self.upper, self.lower)

    @property
    def last_zero(self) -> np.ndarray:
        """Estimated start of the excursion in progress (the change point) per series."""
        return np.where(self.upper >= self.lower, self.zero_upper, self.zero_lower)

    def update(
        self, scores: np.ndarray, first_index: int, indices: np.ndarray | None = None
    ) -> np.ndarray:
        """Feed an ``n x m`` chunk (event ``first_index`` first); return the chunk's peaks."""
        self.begin(scores, first_index, indices)
        return self.advance(len(scores))

    def begin(
        self, scores: np.ndarray, first_index: int, indices: np.ndarray | None = None
    ) -> None:
        """Prepare a whole batch at once; :meth:`advance` then walks it check by check.

        The increments and their cumulative sum are computed once per batch; the path only
        has to be recomputed when a cap or a reset changes the state mid-batch (rare).
        Row ``i`` is event ``first_index + i``, unless ``indices`` gives each row's event
        index (labels: the feature event each was learned after).
        """
        n = len(scores)
        m = scores.shape[1]
        if compiled is not None and n:
            cumulative = np.empty((n, 2 * m))
            total = np.empty(m)
            scores = np.ascontiguousarray(scores, dtype=float)
            count = np.asarray(self.count, dtype=float)  # an int prior weight makes it int64
            k = float(self.k)
            if compiled.increments(scores, self.total, count, k, cumulative, total, n, m):
                self.total, self.count = total, self.count + n
                self._prepare(cumulative, first_index, indices)
                return
            # A missing value: the masked path below.
        ramp = np.arange(1.0, n + 1.0)[:, None]
        missing = np.isnan(scores)
        if not missing.any():  # the common case: no missing value, no masking needed
            sums = np.cumsum(scores, axis=0)
            sums += self.total
            steps = scores - sums / (self.count + ramp)
            shrink = self.k * ramp
            self.total, self.count = sums[-1].copy(), self.count + n
        else:
            finite = ~missing
            values = np.where(finite, scores, 0.0)
            counts = self.count + np.cumsum(finite, axis=0)
            sums = self.total + np.cumsum(values, axis=0)
            steps = np.where(finite, values - sums / counts, 0.0)
            shrink = self.k * np.cumsum(finite, axis=0)
            self.total, self.count = sums[-1].copy(), counts[-1].astype(float)
        moved = np.cumsum(steps, axis=0)
        # Cumulative increments of the upper and the lower statistic, side by side.
        cumulative = np.empty((n, 2 * m))
        np.subtract(moved, shrink, out=cumulative[:, :m])
        np.negative(moved, out=cumulative[:, m:])
        cumulative[:, m:] -= shrink
        self._prepare(cumulative, first_index, indices)

    def _prepare(
        self, cumulative: np.ndarray, first_index: int, indices: np.ndarray | None
    ) -> None:
        n = len(cumulative)
        self._batch = {
            "cumulative": cumulative,
            "indices": (
                np.arange(first_index, first_index + n)
                if indices is None
                else np.asarray(indices, dtype=np.int64)
            )[:, None],
            "position": 0,
        }
        self._walk_from(0)

    def advance(self, n: int) -> np.ndarray:
        """Consume the next ``n`` rows of the prepared batch; return their peaks."""
        batch = self._batch
        m = len(self.upper)
        if batch is None or n == 0:
            return np.zeros(m)
        position = batch["position"]
        indices = batch["indices"][position : position + n]
        zeros = np.concatenate([self.zero_upper, self.zero_lower])
        if compiled is not None:  # the path of these rows only (see _walk_from)
            moved = np.empty(2 * m, dtype=np.int64)
            peaks, end = np.empty(2 * m), np.empty(2 * m)
            cumulative = batch["cumulative"]
            compiled.walk_summarize(
                cumulative, batch["path_from"], batch["state"], batch["floor"], position, n,
                indices, zeros, moved, peaks, end, len(cumulative), 2 * m,
            )  # fmt: skip
            zeros = moved
        else:
            at = position - batch["path_from"]
            path = batch["path"]
            segment = path[at : at + n]
            touched = np.where(segment <= 0.0, indices, -1).max(axis=0)
            zeros = np.where(touched >= 0, touched + 1, zeros)
            peaks = segment.max(axis=0)
            end = segment[-1]
        self.zero_upper, self.zero_lower = zeros[:m], zeros[m:]
        self.upper = end[:m].copy() if self.watch_up else np.zeros(m)
        self.lower = end[m:].copy() if self.watch_down else np.zeros(m)
        chunk_peak = np.maximum(
            peaks[:m] if self.watch_up else 0.0, peaks[m:] if self.watch_down else 0.0
        )
        self.peak = np.maximum(self.peak, chunk_peak)
        batch["position"] += n
        if batch["position"] >= len(batch["cumulative"]):
            self._batch = None  # consumed: nothing stale travels in a checkpoint
        return chunk_peak

    def _walk_from(self, row: int) -> None:
        # S_t = W_t - min(0, min W) with W the state plus the increments since `row`.
        batch = self._batch
        cumulative = batch["cumulative"]
        state = np.concatenate([self.upper, self.lower])
        if compiled is not None:
            # Walked lazily, as far as `advance` consumes it (compiled.walk_summarize): a
            # cap or a re-arm mid-batch starts a new walk here instead of walking the
            # rest of the batch again.
            batch["path_from"], batch["state"], batch["floor"] = row, state, np.empty(len(state))
            return
        since = cumulative[row:] - cumulative[row - 1] if row else cumulative
        walk = since + state
        floor = np.minimum.accumulate(walk, axis=0)
        np.minimum(floor, 0.0, out=floor)
        walk -= floor
        batch["path"] = walk
        batch["path_from"] = row

    def all_clear(self) -> bool:
        """Whether :meth:`level` would read CLEAR for every series (a NaN is not clear)."""
        if not len(self.peak):
            return True
        clear = self.clear_ratio * self.threshold
        return bool(self.peak.max() <= self.threshold and self.statistic.max() < clear)

    def level(self) -> np.ndarray:
        """Per-series :class:`Level` at a check (peak since the last check vs thresholds)."""
        level = np.full(len(self.upper), int(Level.HOLD))
        level[self.peak > self.threshold] = Level.RAISE
        level[
            (self.peak <= self.threshold) & (self.statistic < self.clear_ratio * self.threshold)
        ] = Level.CLEAR
        return level

    def end_check(self) -> None:
        """Close a check: cap the statistics (only here, so where a batch ended cannot
        change them) and start the next check's peaks from them."""
        cap = self.cap_ratio * self.threshold
        if (self.upper > cap).any() or (self.lower > cap).any():
            self.upper = np.minimum(self.upper, cap)
            self.lower = np.minimum(self.lower, cap)
            if self._batch is not None:
                self._walk_from(self._batch["position"])
        self.peak = self.statistic.copy()

    def reset_series(self, j: int) -> None:
        """Re-arm series ``j`` (after its drift was declared); a persisting shift re-raises."""
        self.upper[j] = self.lower[j] = 0.0
        if self._batch is not None:
            self._walk_from(self._batch["position"])
