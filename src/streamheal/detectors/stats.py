"""Vectorized two-sample statistics: Kolmogorov-Smirnov, PSI, chi-square.

The KS statistic and p-value match :func:`scipy.stats.ks_2samp` (two-sided, method
``auto``: exact for samples up to 10,000, else Smirnov's asymptotic form). For a given
pair of sample sizes the p-value depends only on the statistic, which lives on the
lattice ``k / (n1 * n2)``, so p-values are cached: with full windows a check costs a
``searchsorted`` per feature, not a scipy call.

>>> import numpy as np, scipy.stats
>>> rng = np.random.default_rng(0)
>>> a, b = rng.normal(size=300), rng.normal(0.3, 1, size=200)
>>> d, p = ks_2samp(np.sort(a), b)
>>> bool(np.isclose(p, scipy.stats.ks_2samp(a, b).pvalue, rtol=0, atol=1e-12))
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import special
from scipy.stats import distributions

try:  # the compiled inner loops (see _loops.c); numpy does the same where it was not built
    from streamheal.detectors import _loops as compiled
except ImportError:  # pragma: no cover - a build without a C compiler
    compiled = None

# scipy's own switch between the exact and the asymptotic p-value (ks_2samp, mode="auto").
EXACT_MAX_N = 10_000
# Grid points per column for KsColumns.upper_bounds: with about 1/64 of the reference's
# mass between two points, a quiet window's bound stays below the clear level.
BOUND_GRID_POINTS = 64
PSI_EPSILON = 1e-4  # added to empty bins' shares before the log (Evidently's convention)


def searchsorted_rows(haystack: np.ndarray, needles: np.ndarray, side: str) -> np.ndarray:
    """``np.searchsorted(haystack[r], needles[r], side)`` for every row ``r`` (each row of
    ``haystack`` sorted, NaN last), as one ``int64`` array shaped like ``needles``.

    >>> searchsorted_rows(np.array([[1.0, 2, 3], [0, 0, np.nan]]),
    ...                   np.array([[2.0, 9], [0, np.inf]]), "right").tolist()
    [[2, 3], [2, 2]]
    """
    haystack = np.ascontiguousarray(haystack, dtype=float)
    needles = np.ascontiguousarray(needles, dtype=float)
    (rows, length), count = haystack.shape, needles.shape[1]
    out = np.empty((rows, count), dtype=np.int64)
    if compiled is not None:
        compiled.searchsorted_rows(haystack, needles, side == "right", out, rows, length, count)
    else:
        for r in range(rows):
            out[r] = np.searchsorted(haystack[r], needles[r], side=side)
    return out


def ks_2samp(sorted_reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sided KS statistic and p-value; the reference must be sorted and NaN-free."""
    current = np.sort(current)
    n1, n2 = len(sorted_reference), len(current)
    pooled = np.concatenate([sorted_reference, current])
    cdf1 = np.searchsorted(sorted_reference, pooled, side="right") / n1
    cdf2 = np.searchsorted(current, pooled, side="right") / n2
    diffs = cdf1 - cdf2
    d = max(float(diffs.max()), float(np.clip(-diffs.min(), 0, 1)))
    return d, ks_pvalue(d, n1, n2)


class KsColumns:
    """Sorted reference columns made ready for the KS tests of many windows.

    For every reference value ``v`` it keeps the reference's counts at ``v`` and just
    before it; a window's counts at the same points come from two ``searchsorted`` per
    column. The supremum of ``|F_ref - F_window|`` over the pooled sample is reached at a
    reference value or just before one (between two reference values ``F_ref`` is flat
    and ``F_window`` only grows), so these points give scipy's statistic, ties included,
    without sorting the pooled sample.

    >>> rng = np.random.default_rng(1)
    >>> ref, cur = np.sort(rng.integers(0, 9, (300, 3)), axis=0), rng.integers(1, 9, (200, 3))
    >>> many = KsColumns(ref.astype(float)).statistics(cur.astype(float))
    >>> bool(np.allclose(many, [ks_2samp(ref[:, j], cur[:, j])[0] for j in range(3)]))
    True
    """

    def __init__(self, sorted_reference: np.ndarray) -> None:
        # One row per column: searching contiguous rows is faster than strided columns.
        self.columns = np.ascontiguousarray(np.asarray(sorted_reference, float).T)
        n1 = self.columns.shape[1]
        self.at = np.empty(self.columns.shape)  # F_ref(v) per reference value v
        self.before = np.empty(self.columns.shape)  # F_ref just below v
        for j, values in enumerate(self.columns):
            self.at[j] = np.searchsorted(values, values, side="right") / n1
            self.before[j] = np.searchsorted(values, values, side="left") / n1
        # A coarse grid of reference values for :meth:`upper_bounds`, with the reference's
        # counts at or below each point, framed by 0 (below all) and n1 (above all).
        step = max(1, n1 // BOUND_GRID_POINTS)
        points = np.unique(np.r_[np.arange(step - 1, n1, step), n1 - 1])
        self.grid = np.ascontiguousarray(self.columns[:, points])
        self.grid_at = np.zeros((len(self.columns), len(points) + 2), dtype=np.int64)
        self.grid_at[:, -1] = n1
        for j, values in enumerate(self.columns):
            self.grid_at[j, 1:-1] = np.searchsorted(values, self.grid[j], side="right")

    def statistics(self, current: np.ndarray, which: np.ndarray | None = None) -> np.ndarray:
        """Two-sided KS statistics of the window ``current`` (``n2`` rows, no NaN): one
        column per reference column, or per column selected by the mask ``which``."""
        return self.statistics_of_sorted(np.sort(current.T, axis=1), which)

    def upper_bounds(self, window: np.ndarray, which: np.ndarray | None = None) -> np.ndarray:
        """An upper bound of each KS statistic :meth:`statistics_of_sorted` would give,
        from a search of a few dozen grid points per column instead of two searches of
        every reference value: what a quiet check needs, since a bound whose p-value is
        clear proves the statistic's is.

        Between two grid points ``g_i <= x < g_{i+1}`` both CDFs only grow, so
        ``|F_ref(x) - F_window(x)| <= max(F_ref(g_{i+1}) - F_window(g_i),
        F_window(g_{i+1}) - F_ref(g_i))``; below the first point and above the last the
        CDFs start at 0 and end at 1. The bound lies on the KS lattice (integer counts).

        >>> rng = np.random.default_rng(2)
        >>> ref = np.sort(rng.normal(size=(500, 4)), axis=0)
        >>> cur = np.sort(rng.normal(0.2, 1, size=(300, 4)).T, axis=1)
        >>> ready = KsColumns(ref)
        >>> bool((ready.upper_bounds(cur) >= ready.statistics_of_sorted(cur)).all())
        True
        """
        picked = np.arange(len(self.columns)) if which is None else np.flatnonzero(which)
        n1, n2 = self.columns.shape[1], window.shape[1]
        counts = np.zeros((len(picked), self.grid.shape[1] + 2), dtype=np.int64)
        counts[:, -1] = n2
        counts[:, 1:-1] = searchsorted_rows(window, self.grid[picked], "right")
        at = self.grid_at[picked]
        gaps = np.maximum(
            at[:, 1:] * n2 - counts[:, :-1] * n1, counts[:, 1:] * n1 - at[:, :-1] * n2
        )
        return gaps.max(axis=1) / (n1 * n2)

    def statistics_of_sorted(
        self, window: np.ndarray, which: np.ndarray | None = None
    ) -> np.ndarray:
        """:meth:`statistics` of a window given as sorted rows (one row per column)."""
        picked = np.arange(len(self.columns)) if which is None else np.flatnonzero(which)
        n2 = window.shape[1]
        if compiled is not None and n2 and len(picked):
            out = np.empty(len(picked))
            total, n1 = self.columns.shape
            window = np.ascontiguousarray(window, dtype=float)
            picked = picked.astype(np.int64)
            compiled.ks_statistics(
                self.columns, self.at, self.before, picked, window, out, len(picked), total, n1, n2
            )
            return out
        values = self.columns[picked]
        at = searchsorted_rows(window, values, "right")
        before = searchsorted_rows(window, values, "left")
        at_gap = np.abs(self.at[picked] - at / n2).max(axis=1)
        before_gap = np.abs(self.before[picked] - before / n2).max(axis=1)
        return np.maximum(at_gap, before_gap)


def ks_pvalue(d: float, n1: int, n2: int) -> float:
    """The p-value scipy's ks_2samp gives for statistic ``d`` (cached on the KS lattice)."""
    lattice = round(d * n1 * n2)  # d = |i*n2 - j*n1| / (n1*n2) for integers i, j
    return _ks_pvalue_cached(lattice, n1, n2)


@lru_cache(maxsize=65_536)
def _ks_pvalue_cached(lattice: int, n1: int, n2: int) -> float:
    d = lattice / (n1 * n2)
    if max(n1, n2) <= EXACT_MAX_N:
        try:
            from scipy.stats._stats_py import _attempt_exact_2kssamp

            success, _, prob = _attempt_exact_2kssamp(n1, n2, math.gcd(n1, n2), d, "two-sided")
            if success:
                return float(np.clip(prob, 0, 1))
        except ImportError:  # a scipy without the private helper: use the asymptotic form
            pass
    m, n = sorted([float(n1), float(n2)], reverse=True)
    return float(np.clip(distributions.kstwo.sf(d, np.round(m * n / (m + n))), 0, 1))


def sorted_quantiles(values: np.ndarray, q: Sequence[float] | np.ndarray) -> np.ndarray:
    """``np.quantile(values, q)`` (method "linear") of sorted, finite, non-empty
    ``values``, bit for bit: numpy's own index and interpolation arithmetic, without
    the copy, the partition and the argument handling around it (about 40 us a call,
    which a new reference and an input guard learning its bounds pay hundreds of times).

    >>> v = np.sort(np.random.default_rng(3).normal(size=101))
    >>> q = [0.01, 0.25, 0.5, 0.99]
    >>> sorted_quantiles(v, q).tobytes() == np.quantile(v, q).tobytes()
    True
    """
    n = values.shape[-1]  # a matrix: the quantiles of each row, each as its own call's
    virtual = (n - 1) * np.asarray(q, dtype=float)
    lower = np.floor(virtual).astype(np.intp)
    upper = lower + 1
    beyond = virtual >= n - 1  # numpy takes the last value there
    lower[beyond] = upper[beyond] = -1
    gamma = virtual - lower
    a, b = values[..., lower], values[..., upper]
    difference = b - a
    result = a + difference * gamma
    np.subtract(b, difference * (1 - gamma), out=result, where=gamma >= 0.5)
    return result


def quantile_edges(sorted_reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (duplicates dropped for discrete data)."""
    inner = sorted_quantiles(sorted_reference, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(inner)


def psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Population stability index, ``sum((c - r) * ln(c / r))`` over bin shares.

    Empty bins get ``PSI_EPSILON`` added to their share before the log.

    >>> round(psi(np.array([50, 50]), np.array([50, 50])), 6)
    0.0
    >>> round(psi(np.array([50, 50]), np.array([90, 10])), 4)
    0.8789
    """
    r = reference_counts / max(reference_counts.sum(), 1)
    c = current_counts / max(current_counts.sum(), 1)
    r = np.where(r == 0, PSI_EPSILON, r)
    c = np.where(c == 0, PSI_EPSILON, c)
    return float(np.sum((c - r) * np.log(c / r)))


def psi_of_sorted(edges: np.ndarray, reference_counts: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """PSI of many columns at once, each equal to :func:`psi` of :func:`binned_counts` of
    its finite values: ``edges`` is ``k x b`` inner edges padded with +inf,
    ``reference_counts`` ``k x (b + 1)`` padded with 0 (a padded bin is empty on both sides
    and adds 0), ``rows`` the window as sorted rows (one per column, NaN last). A bin's
    count is a difference of two ``searchsorted`` positions, so a check costs one search
    of the few edges per column, not a pass over the window per edge.

    >>> edges = np.array([[1.0, 2.0, np.inf]]); counts = np.array([[30, 30, 40, 0]])
    >>> cur = np.array([0.5, 1.5, 2.5, np.nan, 2.5])
    >>> bool(np.isclose(psi_of_sorted(edges, counts, np.sort(cur)[None, :])[0],
    ...                 psi(counts[0, :3], binned_counts(edges[0, :2], cur[~np.isnan(cur)]))))
    True
    """
    k, width = edges.shape
    finite = rows.shape[1] - np.isnan(rows).sum(axis=1)
    at_most = np.empty((k, width + 2), dtype=np.int64)  # values <= each edge, per column
    at_most[:, 0] = 0
    at_most[:, -1] = finite
    at_most[:, 1:-1] = searchsorted_rows(rows, edges, "right")  # NaN sorts last: never counted
    np.minimum(at_most, finite[:, None], out=at_most)
    counts = np.diff(at_most, axis=1)
    return _psi_rows(reference_counts, counts)


def _psi_rows(reference_counts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    r = reference_counts / np.maximum(reference_counts.sum(axis=1, keepdims=True), 1)
    c = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    r = np.where(r == 0, PSI_EPSILON, r)
    c = np.where(c == 0, PSI_EPSILON, c)
    return np.sum((c - r) * np.log(c / r), axis=1)


def binned_counts(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Counts of ``values`` in the bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    return np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)


def chi2_sf(statistic: float | np.ndarray, df: int) -> float | np.ndarray:
    """``scipy.stats.chi2.sf(statistic, df)`` for the non-negative statistics here: the
    same special function, without the distribution object's argument checks (about 30
    us a call, which a check every few hundred events pays many times).

    >>> from scipy.stats import chi2
    >>> bool(chi2_sf(3.2, 1) == chi2.sf(3.2, 1))
    True
    """
    return special.chdtrc(df, statistic)


def chi2_homogeneity(
    reference_counts: np.ndarray, current_counts: np.ndarray
) -> tuple[float, float]:
    """Chi-square test that two count vectors come from the same distribution.

    Categories empty in both samples are dropped; returns (statistic, p-value).

    >>> stat, p = chi2_homogeneity(np.array([40, 60]), np.array([80, 20]))
    >>> round(stat, 2), p < 1e-6
    (33.33, True)
    """
    table = np.vstack([reference_counts, current_counts]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    return statistic, float(chi2_sf(statistic, table.shape[1] - 1))


def chi2_2x2_many(
    a_hits: np.ndarray, a_total: int, b_hits: np.ndarray, b_total: int
) -> tuple[np.ndarray, np.ndarray]:
    """Chi-square (no continuity correction) of ``hits/total`` in two samples, for many
    rates at once; (statistics, p-values). Equal to :func:`chi2_homogeneity` per pair.

    >>> s, p = chi2_2x2_many(np.array([40]), 100, np.array([80]), 100)
    >>> float(s[0]) == chi2_homogeneity(np.array([40, 60]), np.array([80, 20]))[0]
    True
    """
    a_hits, b_hits = np.asarray(a_hits, float), np.asarray(b_hits, float)
    hits = a_hits + b_hits
    total = a_total + b_total
    misses = total - hits
    if not hits.any():  # nothing missing on either side (the common case): nothing to test
        return np.zeros(len(hits)), np.ones(len(hits))
    with np.errstate(divide="ignore", invalid="ignore"):
        numerator = total * (a_hits * (b_total - b_hits) - b_hits * (a_total - a_hits)) ** 2
        statistic = numerator / (a_total * b_total * hits * misses)
    degenerate = (hits == 0) | (misses == 0)
    statistic = np.where(degenerate, 0.0, statistic)
    p_values = np.where(degenerate, 1.0, chi2_sf(statistic, 1))
    return statistic, p_values


def summary(values: np.ndarray) -> dict[str, float | int]:
    """Mean, std and quantiles of the finite values (for drift evidence)."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return {"n": 0}
    q = np.quantile(finite, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "n": len(finite),
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "q05": float(q[0]),
        "q25": float(q[1]),
        "q50": float(q[2]),
        "q75": float(q[3]),
        "q95": float(q[4]),
    }
