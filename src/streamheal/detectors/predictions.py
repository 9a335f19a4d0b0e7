"""Model drift and confidence decay: what the model says, not what it is fed.

A model that keeps learning changes its outputs even on unchanged inputs, so comparing
today's predictions with last week's false-alarms. At each windowed check the *current*
model re-scores a sample of the reference rows and a sample of the latest rows, and the
two output distributions are compared: KS and PSI on the predicted probability (of the
positive class for binary models, of the top class otherwise), chi-square on the
predicted class shares, and a one-sided comparison of confidence (top-class
probability). A downward Page-Hinkley on each event's confidence watches in between
(vectorized per batch).
Estimated accuracy (mean top-class probability, needs no labels) is reported beside the
realized accuracy of the last labeled events.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from streamheal import models
from streamheal.detectors import stats
from streamheal.detectors.base import Evidence, Level, Stateful
from streamheal.detectors.covariate import _describe, _shares
from streamheal.detectors.cusum import VectorCusum


class PredictionMonitor(Stateful):
    def __init__(self, sample_size: int, window_size: int, confidence_threshold: float) -> None:
        self.sample_size = sample_size
        self.reference_rows: list[dict[str, Any]] = []
        self.current_rows: deque[dict[str, Any]] = deque(maxlen=sample_size)
        self.confidence: deque[float] = deque(maxlen=window_size)
        self.correct: deque[int] = deque(maxlen=window_size)
        self.threshold = confidence_threshold
        # Page-Hinkley, downward: sum of (running mean - confidence - delta), vectorized per
        # batch by the same machinery as the feature CUSUMs (delta = River's default).
        self.page_hinkley = VectorCusum(
            1, k=0.005, threshold=confidence_threshold, prior_weight=1e-9, sides="down"
        )

    def set_reference(self, rows: list[dict[str, Any]]) -> None:
        self.reference_rows = list(rows[: self.sample_size])

    def observe(self, rows: list[dict[str, Any]], top: list[float], first_index: int) -> None:
        self.current_rows.extend(rows[-self.sample_size :])
        self.confidence.extend(top)
        self.page_hinkley.update(np.asarray(top, dtype=float)[:, None], first_index)

    def observe_outcomes(self, correct: list[int]) -> None:
        self.correct.extend(correct)

    @property
    def estimated_accuracy(self) -> float | None:
        return sum(self.confidence) / len(self.confidence) if self.confidence else None

    @property
    def realized_accuracy(self) -> float | None:
        return sum(self.correct) / len(self.correct) if self.correct else None

    def accuracy_report(self) -> dict[str, float | None]:
        estimated, realized = self.estimated_accuracy, self.realized_accuracy
        return {
            "estimated_accuracy": None if estimated is None else round(estimated, 6),
            "realized_accuracy": None if realized is None else round(realized, 6),
        }

    # ----------------------------------------------------------------- checks
    def sequential_evidence(self, watched: bool) -> list[Evidence]:
        page_hinkley = self.page_hinkley
        level = Level(int(page_hinkley.level()[0]))
        peak = float(page_hinkley.peak[0])
        page_hinkley.end_check()
        if level == Level.CLEAR and not watched:
            return []
        mean = self.estimated_accuracy or 0.0
        return [
            Evidence(
                "confidence",
                "confidence",
                None,
                "page_hinkley",
                level,
                peak,
                None,
                self.threshold,
                started_index=int(page_hinkley.last_zero[0]),
                current={"mean_confidence": round(mean, 6)},
                extra=self.accuracy_report(),
            )
        ]

    @property
    def warm(self) -> bool:
        return bool(self.reference_rows) and len(self.current_rows) == self.current_rows.maxlen

    def window_evidence(
        self, model: Any, alpha: float, clear_p: float, psi_threshold: float
    ) -> list[Evidence]:
        if not self.warm:
            return []
        # One call for both samples: the batch call's fixed cost is most of its cost.
        classes, both = models.predict_proba_matrix(
            model, self.reference_rows + list(self.current_rows)
        )
        if not classes:
            return []  # the model has not learned anything yet
        ref_matrix, cur_matrix = both[: len(self.reference_rows)], both[len(self.reference_rows) :]
        column = len(classes) - 1 if len(classes) == 2 else None  # positive class if binary
        ref_score = ref_matrix[:, column] if column is not None else ref_matrix.max(axis=1)
        cur_score = cur_matrix[:, column] if column is not None else cur_matrix.max(axis=1)
        sorted_ref = np.sort(ref_score)
        score_summaries = {"describe": _describe(ref_score, cur_score)}
        d, p = stats.ks_2samp(sorted_ref, cur_score)
        edges = stats.quantile_edges(sorted_ref, 10)
        value = stats.psi(
            stats.binned_counts(edges, sorted_ref), stats.binned_counts(edges, cur_score)
        )
        names = [str(c) for c in classes]
        ref_classes = np.bincount(ref_matrix.argmax(axis=1), minlength=len(classes))
        cur_classes = np.bincount(cur_matrix.argmax(axis=1), minlength=len(classes))
        chi, p_classes = stats.chi2_homogeneity(ref_classes, cur_classes)
        ref_top, cur_top = ref_matrix.max(axis=1), cur_matrix.max(axis=1)
        d_top, p_top = stats.ks_2samp(np.sort(ref_top), cur_top)
        lower = cur_top.mean() < ref_top.mean()  # only a fall of confidence is decay
        return [
            Evidence.from_p_value(
                "model", "prediction", None, "ks", d, p, alpha, clear_p, **score_summaries
            ),
            Evidence.from_threshold(
                "model", "prediction", None, "psi", value, psi_threshold, **score_summaries
            ),
            Evidence.from_p_value(
                "model",
                "predicted_class",
                None,
                "chi2",
                chi,
                p_classes,
                alpha,
                clear_p,
                reference=_shares(names, ref_classes),
                current=_shares(names, cur_classes),
            ),
            # Only a fall of confidence is decay: a rise reads as p = 1.
            Evidence.from_p_value(
                "confidence",
                "confidence",
                None,
                "ks",
                d_top,
                p_top if lower else 1.0,
                alpha,
                clear_p,
                describe=_describe(ref_top, cur_top),
                extra=self.accuracy_report(),
            ),
        ]

    windowed_tests = 3  # KS on scores, chi-square on classes, KS on confidence
