"""What every detector shares: evidence levels, evidence records, checkpointable state."""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class Level(IntEnum):
    """A detector's verdict at one check (hysteresis: raising needs more than holding)."""

    CLEAR = 0  # below the lower (clearing) threshold
    HOLD = 1  # between the clearing and the raising threshold
    RAISE = 2  # beyond the raising threshold


@dataclass
class Evidence:
    """One detector's reading for one signal at one check."""

    kind: str  # covariate | prior | concept | model | confidence
    signal: str  # feature | missing_rate | label | error | prediction | predicted_class | ...
    feature: str | None
    detector: str  # cusum | ks | psi | chi2 | adwin | page_hinkley | ddm | hddm_a
    level: Level
    statistic: float
    p_value: float | None = None
    threshold: float | None = None
    started_index: int | None = None
    reference: dict[str, Any] = field(default_factory=dict)
    current: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    # Window summaries cost more than the test itself: computed only if a record is written.
    describe: Callable[[], tuple[dict[str, Any], dict[str, Any]]] | None = None

    @classmethod
    def from_p_value(
        cls,
        kind: str,
        signal: str,
        feature: str | None,
        detector: str,
        statistic: float,
        p_value: float,
        alpha: float,
        clear_p: float,
        **summaries: Any,
    ) -> Evidence:
        """A test's reading: raises below ``alpha``, clears above ``clear_p`` (hysteresis)."""
        level = _level(raise_=p_value < alpha, clear=p_value > clear_p)
        return cls(kind, signal, feature, detector, level, statistic, p_value, alpha, **summaries)

    @classmethod
    def from_threshold(
        cls,
        kind: str,
        signal: str,
        feature: str | None,
        detector: str,
        value: float,
        threshold: float,
        **summaries: Any,
    ) -> Evidence:
        """A thresholded statistic (PSI): raises above it, clears below half of it."""
        level = _level(raise_=value > threshold, clear=value < threshold / 2)
        return cls(kind, signal, feature, detector, level, value, None, threshold, **summaries)

    def summaries(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.describe() if self.describe is not None else (self.reference, self.current)

    @property
    def key(self) -> tuple[str, str, str | None, str]:
        return (self.kind, self.signal, self.feature, self.detector)


def _level(raise_: bool, clear: bool) -> Level:
    if raise_:
        return Level.RAISE
    return Level.CLEAR if clear else Level.HOLD


class Stateful:
    """``state_dict`` / ``load_state_dict`` for checkpoints, in River's and PyTorch's spirit.

    The state is a deep copy of the instance's attributes (numpy arrays, River detectors,
    plain Python values): restoring it into a fresh instance continues exactly where the
    original was. What comes from the configuration is not state: the attributes named in
    ``_settings`` keep the *current* instance's values, and every bounded deque keeps the
    current instance's ``maxlen`` (a restored policy honours a changed
    ``promotion_window``; the newest items are kept).
    """

    _settings: tuple[str, ...] = ("cfg",)

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy(vars(self))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        current = vars(self)
        settings = {name: current[name] for name in self._settings if name in current}
        bounds = {name: v.maxlen for name, v in current.items() if isinstance(v, deque)}
        current.update(copy.deepcopy(state))
        current.update(settings)
        for name, maxlen in bounds.items():
            restored = current.get(name)
            if isinstance(restored, deque) and restored.maxlen != maxlen:
                current[name] = deque(restored, maxlen=maxlen)
