"""Covariate drift: every input feature against its reference, all features at once.

Numeric features: a two-sided CUSUM on winsorized robust z-scores (fast, for shifts of
location) plus windowed KS and PSI on reference-quantile bins (for changes of shape).
Categorical features: chi-square and PSI on category shares. Every feature: a
chi-square test on its missing rate. The current window is a numpy ring buffer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from streamheal.detectors import stats
from streamheal.detectors.base import Evidence, Level, Stateful
from streamheal.detectors.cusum import VectorCusum
from streamheal.detectors.reference import Reference


class CovariateMonitor(Stateful):
    def __init__(
        self, reference: Reference, window_size: int, cusum_k: float, cusum_threshold: float
    ) -> None:
        self.reference = reference
        self.window_size = window_size
        n_num, n_cat = len(reference.numeric_names), len(reference.categorical_names)
        self.numeric_window = np.full((window_size, n_num), np.nan)
        self.category_window = np.full((window_size, n_cat), -1, dtype=np.int64)
        self.cursor = 0  # next row of the ring to write
        self.seen = 0  # rows observed since the reference was set
        self.cusum = VectorCusum(n_num, cusum_k, cusum_threshold, prior_weight=window_size)
        # Caches derived from the reference: see _ks_all_columns and _psi_all_columns.
        self._dense: tuple[list[int], stats.KsColumns | None] | None = None
        self._bins: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def warm(self) -> bool:
        return self.seen >= self.window_size

    def __getstate__(self) -> dict[str, Any]:
        # The vectorized tests' caches are derived from the reference (as large as it):
        # rebuilt on first use, never carried in a checkpoint.
        return {**vars(self), "_dense": None, "_bins": None}

    # ---------------------------------------------------------------- updates
    def encode(
        self, rows: list[dict[str, Any]], numeric: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Numeric matrix, normal scores and category codes for a batch of rows (the
        numeric matrix is ``numeric`` when the caller has it already)."""
        ref = self.reference
        matrix = ref.numeric_matrix(rows) if numeric is None else numeric
        scores = ref.robust_scores(matrix)
        return matrix, scores, ref.category_codes(rows)

    def begin(self, scores: np.ndarray, first_index: int) -> None:
        """Prepare the CUSUM for a batch of scores (see :meth:`VectorCusum.begin`)."""
        self.cusum.begin(scores, first_index)

    def observe(self, matrix: np.ndarray, codes: np.ndarray) -> None:
        """Add the next chunk of the batch to the window, and walk the CUSUM over it."""
        self.cusum.advance(len(matrix))
        n = len(matrix)
        if n >= self.window_size:
            matrix, codes, n = (
                matrix[-self.window_size :],
                codes[-self.window_size :],
                self.window_size,
            )
        end = self.cursor + n
        if end <= self.window_size:
            self.numeric_window[self.cursor : end] = matrix
            self.category_window[self.cursor : end] = codes
        else:
            split = self.window_size - self.cursor
            self.numeric_window[self.cursor :] = matrix[:split]
            self.numeric_window[: n - split] = matrix[split:]
            self.category_window[self.cursor :] = codes[:split]
            self.category_window[: n - split] = codes[split:]
        self.cursor = end % self.window_size
        self.seen += len(matrix)

    # ----------------------------------------------------------------- checks
    def sequential_evidence(self, watched: set[str]) -> list[Evidence]:
        """CUSUM readings (every cheap check): features not clear, and those in ``watched``."""
        cusum = self.cusum
        levels = cusum.level()
        evidence = []
        for j in np.flatnonzero(levels).tolist() if not watched else range(len(levels)):
            name = self.reference.numeric_names[j]
            if not levels[j] and name not in watched:
                continue
            evidence.append(
                Evidence(
                    "covariate",
                    "feature",
                    name,
                    "cusum",
                    Level(int(levels[j])),
                    float(cusum.peak[j]),
                    threshold=cusum.threshold,
                    started_index=int(cusum.last_zero[j]),
                    # Summaries of the reference and of the current window, computed only
                    # if a record is written (at this check: the window is as it is now).
                    describe=self._describer(j),
                )
            )
        cusum.end_check()
        return evidence

    def _current(self, j: int) -> np.ndarray:
        """The finite values of numeric feature ``j`` in the current window (a copy)."""
        column = self.numeric_window[: min(self.seen, self.window_size), j]
        return column[np.isfinite(column)]

    def _describer(self, j: int) -> Callable[[], tuple[dict[str, Any], dict[str, Any]]]:
        """Summaries of numeric feature ``j``'s reference and current window, made when
        called: a watched feature's clear reading at a check rarely becomes a record."""
        return lambda: (stats.summary(self.reference.sorted[j]), stats.summary(self._current(j)))

    def reset_sequential(self, feature: str) -> None:
        self.cusum.reset_series(self.reference.numeric_names.index(feature))

    def window_evidence(
        self, alpha: float, clear_p: float, psi_threshold: float, watched: set[tuple] | None
    ) -> list[Evidence]:
        """KS, PSI and missing-rate tests on the current window (every windowed check).

        Only readings that are not clear, or whose signal is in ``watched`` (an alarm to
        feed), are returned; ``watched=None`` returns every reading. The tests run on every
        column at once and their levels are decided as arrays, so a quiet check (the common
        case) builds no evidence at all.
        """
        if not self.warm:
            return []
        ref = self.reference
        evidence: list[Evidence] = []

        def wanted(level: int, signal: str, feature: str, detector: str) -> bool:
            if watched is None:  # everything (replay logs every p-value)
                return True
            return bool(level) or ("covariate", signal, feature, detector) in watched

        def keep(levels: np.ndarray, detector: str, names: list[str], signal: str) -> list[int]:
            """The readings ``wanted``, in order: those not clear, and the watched ones."""
            if watched is None:
                return list(range(len(names)))
            kept = set(np.flatnonzero(levels).tolist())  # CLEAR is 0
            if watched:
                kept.update(
                    j
                    for j, name in enumerate(names)
                    if ("covariate", signal, name, detector) in watched
                )
            return sorted(kept)

        names = ref.numeric_names + ref.categorical_names
        missing = np.concatenate(
            [np.isnan(self.numeric_window).sum(axis=0), (self.category_window < 0).sum(axis=0)]
        )
        evidence += self._missing_rates(names, missing, alpha, clear_p, keep)
        numeric = ref.numeric_names
        if numeric:
            rows = np.sort(self.numeric_window.T, axis=1)  # one sorted row per feature, NaN last
            measure = None
            if watched is not None:
                measure = np.array([("covariate", "feature", n, "ks") in watched for n in numeric])
            d, p, tested = self._ks_all_columns(rows, clear_p, measure)
            psi = self._psi_all_columns(rows)
            ks_levels = np.where(tested, _p_levels(p, alpha, clear_p), Level.CLEAR)
            psi_levels = np.where(tested, _threshold_levels(psi, psi_threshold), Level.CLEAR)
            ks_kept = set(keep(ks_levels, "ks", numeric, "feature"))
            psi_kept = set(keep(psi_levels, "psi", numeric, "feature"))
            for j in sorted(ks_kept | psi_kept):
                if not tested[j]:
                    continue
                describe = self._describer(j)
                if j in ks_kept:
                    evidence.append(
                        Evidence(
                            "covariate", "feature", numeric[j], "ks", Level(int(ks_levels[j])),
                            float(d[j]), float(p[j]), alpha, describe=describe,
                        )
                    )  # fmt: skip
                if j in psi_kept:
                    evidence.append(
                        Evidence(
                            "covariate", "feature", numeric[j], "psi", Level(int(psi_levels[j])),
                            float(psi[j]), None, psi_threshold, describe=describe,
                        )
                    )  # fmt: skip
        for j, name in enumerate(ref.categorical_names):
            codes = self.category_window[:, j]
            present = codes[codes >= 0]
            reference_counts = ref.category_counts[j]
            current_counts = np.bincount(present, minlength=len(reference_counts))
            labels = [*ref.categories[j], "__unseen__"]
            summaries = {
                "reference": _shares(labels, reference_counts),
                "current": _shares(labels, current_counts),
            }
            statistic, p_value = stats.chi2_homogeneity(reference_counts, current_counts)
            value = stats.psi(reference_counts, current_counts)
            for item in (
                Evidence.from_p_value(
                    "covariate", "feature", name, "chi2", statistic, p_value, alpha, clear_p,
                    **summaries,
                ),
                Evidence.from_threshold(
                    "covariate", "feature", name, "psi", value, psi_threshold, **summaries
                ),
            ):  # fmt: skip
                if wanted(item.level, item.signal, name, item.detector):
                    evidence.append(item)
        return evidence

    def _ks_all_columns(
        self, rows: np.ndarray, clear_p: float = 1.0, measure: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """KS statistic and p-value of every numeric feature, and whether it was tested
        (at least 2 finite values in the window and in the reference). Columns with no
        missing value in the reference or the window go through ``stats.KsColumns``
        together; the others one by one on their finite values. ``rows``: the window,
        sorted, one row per feature.

        With ``measure`` (a mask of the features whose exact reading is wanted whatever
        its level), a feature outside it whose statistic's upper bound already has a
        p-value above ``clear_p`` gets that bound and its p-value instead: its level is
        CLEAR either way, and nobody reads a clear, unwatched statistic."""
        ref = self.reference
        n = len(ref.numeric_names)
        d, p, tested = np.zeros(n), np.ones(n), np.zeros(n, dtype=bool)
        if self._dense is None:  # the reference's NaN-free columns made ready, once
            full = [j for j, s in enumerate(ref.sorted) if len(s) == ref.rows and ref.rows >= 2]
            columns = [ref.sorted[j] for j in full]
            ready = stats.KsColumns(np.column_stack(columns)) if full else None
            self._dense = (full, ready)
        full, ready = self._dense
        if ready is not None:
            window = rows[full]
            present = ~np.isnan(window[:, -1])  # NaN sorts last: a row ending in one has one
            n1, n2 = ref.rows, window.shape[1]
            exact = present.copy()
            if measure is not None and present.any():
                complete = np.asarray(full)[present]
                bounds = ready.upper_bounds(window[present], which=present)
                bound_p = np.array([stats.ks_pvalue(x, n1, n2) for x in bounds.tolist()])
                proven = (bound_p > clear_p) & ~measure[complete]
                d[complete[proven]], p[complete[proven]] = bounds[proven], bound_p[proven]
                tested[complete[proven]] = True
                exact[np.flatnonzero(present)[proven]] = False
            if exact.any():
                complete = np.asarray(full)[exact]
                d[complete] = ready.statistics_of_sorted(window[exact], which=exact)
                p[complete] = [stats.ks_pvalue(x, n1, n2) for x in d[complete].tolist()]
                tested[complete] = True
        for j in np.flatnonzero(~tested).tolist():
            finite = self._current(j)
            if len(finite) >= 2 and len(ref.sorted[j]) >= 2:
                d[j], p[j] = stats.ks_2samp(ref.sorted[j], finite)
                tested[j] = True
        return d, p, tested

    def _psi_all_columns(self, rows: np.ndarray) -> np.ndarray:
        """PSI of every numeric feature's window (``rows``: sorted, one row per feature)
        against its reference bins, at once."""
        ref = self.reference
        if self._bins is None:  # every feature's edges and counts padded to one width
            width = max((len(e) for e in ref.edges), default=0)
            edges = np.full((len(ref.edges), width), np.inf)
            counts = np.zeros((len(ref.edges), width + 1), dtype=np.int64)
            for j, (e, c) in enumerate(zip(ref.edges, ref.bin_counts, strict=True)):
                edges[j, : len(e)] = e
                counts[j, : len(c)] = c
            self._bins = (edges, counts)
        edges, counts = self._bins
        if not len(edges):
            return np.zeros(0)
        return stats.psi_of_sorted(edges, counts, rows)

    def _missing_rates(
        self,
        names: list[str],
        missing: np.ndarray,
        alpha: float,
        clear_p: float,
        keep: Callable[[np.ndarray, str, list[str], str], list[int]],
    ) -> list[Evidence]:
        """Chi-square on each feature's missing rate, reference vs window, all at once."""
        ref_rows = self.reference.rows
        ref_missing = np.array([self.reference.missing.get(n, 0) for n in names])
        statistics, p_values = stats.chi2_2x2_many(ref_missing, ref_rows, missing, self.window_size)
        levels = _p_levels(p_values, alpha, clear_p)
        return [
            Evidence(
                "covariate",
                "missing_rate",
                names[j],
                "chi2",
                Level(int(levels[j])),
                float(statistics[j]),
                float(p_values[j]),
                alpha,
                reference={"missing_rate": int(ref_missing[j]) / max(ref_rows, 1)},
                current={"missing_rate": int(missing[j]) / self.window_size},
            )
            for j in keep(levels, "chi2", names, "missing_rate")
        ]

    @property
    def windowed_tests(self) -> int:
        """How many p-value tests one windowed check runs (for the multiple-testing budget)."""
        ref = self.reference
        return 2 * len(ref.numeric_names) + 2 * len(ref.categorical_names)


def _p_levels(p_values: np.ndarray, alpha: float, clear_p: float) -> np.ndarray:
    """:meth:`Evidence.from_p_value`'s levels for many p-values at once."""
    return np.where(
        p_values < alpha, Level.RAISE, np.where(p_values > clear_p, Level.CLEAR, Level.HOLD)
    )


def _threshold_levels(values: np.ndarray, threshold: float) -> np.ndarray:
    """:meth:`Evidence.from_threshold`'s levels for many values at once."""
    return np.where(
        values > threshold,
        Level.RAISE,
        np.where(values < threshold / 2, Level.CLEAR, Level.HOLD),
    )


def _shares(labels: list[str], counts: np.ndarray) -> dict[str, float]:
    total = max(int(counts.sum()), 1)
    return {label: round(int(c) / total, 6) for label, c in zip(labels, counts, strict=True) if c}


def _describe(reference: np.ndarray, current: np.ndarray):
    return lambda: (stats.summary(reference), stats.summary(current))
