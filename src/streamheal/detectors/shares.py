"""Sequential tests on the shares of a categorical stream: the labels (prior drift) and the
model's predicted classes (model drift).

Windowed chi-square and PSI on class counts need a full window of new values before the
shift can show; a CUSUM on each class's share reacts within a few dozen values. Each
value ``v`` becomes, for every watched class ``c`` with reference share ``p_c``, the
standardized indicator ``z_c = (1[v = c] - p_c) / sqrt(p_c (1 - p_c))`` (mean 0, sd 1
under the reference mix), and the per-class scores run through the same
:class:`~streamheal.detectors.cusum.VectorCusum` as the feature scores, with a threshold
from its share of the suite's false-alarm budget (Siegmund's approximation, Bonferroni
over classes and sides).

Classes whose reference share is below ``MIN_SHARE`` are not watched (their indicator is
too skewed for a Gaussian run-length approximation: one rare value would jump the
statistic by several units), and at most ``MAX_CLASSES`` of the most common are. Scores
are clipped at ``±Z_CLIP``. A binary stream needs one series (the second is its mirror).
A reference with a single class watches nothing (the windowed chi-square still tests it).

>>> monitor = ShareMonitor("prior", "label", reference_size=200, window_size=200, k=0.25,
...                        false_alarms_per_10k=0.05)
>>> monitor.observe([0, 1, 1] * 100, list(range(300)))          # reference: 1/3 zeros
>>> monitor.observe([0] * 60, list(range(300, 360)))            # then only zeros
>>> [(e.kind, e.signal, e.detector, e.level.name) for e in monitor.evidence(watched=False)]
[('prior', 'label', 'cusum', 'RAISE')]
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from itertools import repeat
from typing import Any

import numpy as np

from streamheal.detectors.base import Evidence, Level, Stateful
from streamheal.detectors.covariate import _shares
from streamheal.detectors.cusum import VectorCusum, threshold_for_run_length

MIN_SHARE = 0.02
MAX_CLASSES = 20
Z_CLIP = 4.0


class ShareMonitor(Stateful):
    """CUSUMs on class shares: reference from the first ``reference_size`` values."""

    _settings = ("kind", "signal", "reference_size", "k", "rate")

    def __init__(
        self,
        kind: str,
        signal: str,
        reference_size: int,
        window_size: int,
        k: float,
        false_alarms_per_10k: float,
    ) -> None:
        self.kind = kind
        self.signal = signal
        self.reference_size = reference_size
        self.k = k
        self.rate = false_alarms_per_10k / 10_000  # this monitor's share of the budget
        self.reference: Counter[Any] = Counter()
        self.recent: deque[Any] = deque(maxlen=window_size)  # for the record's summaries
        self.classes: list[Any] = []
        self.centre = np.zeros(0)
        self.scale = np.ones(0)
        self.cusum: VectorCusum | None = None

    @property
    def warm(self) -> bool:
        return self.cusum is not None

    def reset(self) -> None:
        """Learn a new reference mix from the next values (a new model, a new reference)."""
        self.reference.clear()
        self.recent.clear()
        self.classes = []
        self.cusum = None

    def observe(self, values: list[Any], indices: Sequence[int]) -> None:
        """Values in order; ``indices[i]`` is the feature event index value ``i`` belongs to
        (a ``range`` when they are consecutive: the CUSUM then numbers them itself)."""
        if not values:
            return
        self.recent.extend(values)
        start = 0
        if not self.classes:
            need = self.reference_size - sum(self.reference.values())
            self.reference.update(values[:need])
            start = len(values[:need])
            if start == need:
                self._start()
        if self.cusum is None or start >= len(values):
            return
        code, columns, hit, miss = self._prepared()
        rest_values = values[start:]
        codes = np.fromiter(map(code.get, rest_values, repeat(-1)), int, len(rest_values))
        scores = np.where(codes[:, None] == columns, hit, miss)
        rest = indices[start:]
        consecutive = isinstance(rest, range) and rest.step == 1
        self.cusum.update(scores, indices[start], None if consecutive else np.asarray(rest))

    def evidence(self, watched: bool) -> list[Evidence]:
        """One reading for the whole stream at a check: the most moved class decides."""
        cusum = self.cusum
        if cusum is None:
            return []
        level = Level(int(cusum.level().max()))  # any class raising raises; all clear clears
        if level == Level.CLEAR and not watched:
            cusum.end_check()
            return []
        j = int(np.argmax(cusum.peak))
        peak = float(cusum.peak[j])
        started = int(cusum.last_zero[j])
        cusum.end_check()
        reference, recent = dict(self.reference), tuple(self.recent)  # as they stand now

        def describe() -> tuple[dict[str, Any], dict[str, Any]]:
            # The mixes, counted only if a record is written: a check while an alarm is
            # open reads the shares at every check, and counting 500 values cost more.
            classes = sorted(reference, key=str)
            names = [str(c) for c in classes]
            current = Counter(recent)
            return (
                _shares(names, np.array([reference[c] for c in classes])),
                _shares(names, np.array([current[c] for c in classes])),
            )

        moved = self.classes[j]
        return [
            Evidence(
                self.kind,
                self.signal,
                None,
                "cusum",
                level,
                peak,
                None,
                cusum.threshold,
                started_index=started,
                describe=describe,
                extra={
                    "moved_class": str(moved),
                    "direction": "up" if cusum.upper[j] >= cusum.lower[j] else "down",
                },
            )
        ]

    def rearm(self) -> None:
        """After a declaration: the statistics start over, so a persisting shift re-raises."""
        if self.cusum is not None:
            for j in range(len(self.classes)):
                self.cusum.reset_series(j)

    # ---------------------------------------------------------------- internals
    # What scoring a chunk needs that depends only on the reference: each class's code,
    # the row of codes to compare with, and the clipped score of a hit and of a miss for
    # each class (each score is one of the two: computed per class, then picked, the same
    # numbers as standardizing every cell). Made once per reference, keyed by its arrays'
    # identity; a class attribute, so monitors pickled before it existed load.
    _scoring: tuple | None = None

    def _prepared(self) -> tuple[dict[Any, int], np.ndarray, np.ndarray, np.ndarray]:
        scoring = self._scoring
        if scoring is None or scoring[0] is not self.classes or scoring[1] is not self.centre:
            code = {c: i for i, c in enumerate(self.classes)}
            columns = np.arange(len(self.classes))[None, :]
            hit, miss = (
                np.clip((h - self.centre) / self.scale, -Z_CLIP, Z_CLIP) for h in (1.0, 0.0)
            )
            scoring = self._scoring = (self.classes, self.centre, code, columns, hit, miss)
        return scoring[2:]

    def _start(self) -> None:
        total = sum(self.reference.values())
        common = [c for c, n in self.reference.most_common(MAX_CLASSES) if n / total >= MIN_SHARE]
        if len(common) == 2 and len(self.reference) == 2:
            common = common[1:]  # binary: one series says it all
        if len(self.reference) < 2:
            # One class only (a model that predicts one class, a one-class label stream):
            # no share can be standardized; the windowed chi-square still sees a change.
            self.classes = [None]  # started, nothing watched
            return
        shares = np.array([self.reference[c] / total for c in common])
        self.classes = common
        self.centre = shares
        self.scale = np.sqrt(np.maximum(shares * (1 - shares), 1e-12))
        run_length = 2 * len(common) / self.rate  # two sides per class
        threshold = threshold_for_run_length(self.k, run_length)
        # A prior weight of one window: the centring mean follows the reference mix first.
        self.cusum = VectorCusum(len(common), self.k, threshold, prior_weight=self.recent.maxlen)
