"""Prior drift: the class mix of arriving labels against the reference class mix."""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

import numpy as np

from streamheal.detectors import stats
from streamheal.detectors.base import Evidence, Stateful
from streamheal.detectors.covariate import _shares


class LabelMonitor(Stateful):
    """Chi-square and PSI of class frequencies: first ``reference_size`` labels vs the last
    ``window_size`` labels."""

    def __init__(self, reference_size: int, window_size: int) -> None:
        self.reference_size = reference_size
        self.reference: Counter[Any] = Counter()
        self.window: deque[Any] = deque(maxlen=window_size)

    def observe(self, labels: list[Any]) -> None:
        need = self.reference_size - self.reference.total()
        if need > 0:  # the first labels fill the reference, the rest go to the window
            self.reference.update(labels[:need])
            labels = labels[need:]
        self.window.extend(labels)

    def reset(self) -> None:
        self.reference.clear()
        self.window.clear()

    @property
    def warm(self) -> bool:
        return len(self.window) == self.window.maxlen

    def window_evidence(self, alpha: float, clear_p: float, psi_threshold: float) -> list[Evidence]:
        if not self.warm:
            return []
        current = Counter(self.window)
        classes = sorted(set(self.reference) | set(current), key=str)
        ref_counts = np.array([self.reference[c] for c in classes])
        cur_counts = np.array([current[c] for c in classes])
        names = [str(c) for c in classes]
        summaries = {"reference": _shares(names, ref_counts), "current": _shares(names, cur_counts)}
        statistic, p = stats.chi2_homogeneity(ref_counts, cur_counts)
        value = stats.psi(ref_counts, cur_counts)
        return [
            Evidence.from_p_value(
                "prior", "label", None, "chi2", statistic, p, alpha, clear_p, **summaries
            ),
            Evidence.from_threshold(
                "prior", "label", None, "psi", value, psi_threshold, **summaries
            ),
        ]
