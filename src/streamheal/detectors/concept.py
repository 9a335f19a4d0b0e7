"""Concept drift: River's detectors on the prequential error stream (0 right, 1 wrong).

A *rise* of the error rate is concept drift that hurts (signal ``error``). A significant
*fall* is reported too (signal ``error_fall``, ``direction: "improved"``): the world
changed in the model's favour, which is worth knowing (the label mix or the population
probably moved) but needs no healing. Falls are watched by an ADWIN of their own (same
confidence), started only once the serving model has settled: a learning model's error
falls as it learns, and an ADWIN that had seen the learning phase would report it (see
:class:`~streamheal.detectors.suite.DriftSuite`).
"""

from __future__ import annotations

from collections import deque

from river import drift

from streamheal.detectors.base import Evidence, Level, Stateful


def build_detector(name: str, delta: float) -> drift.base.DriftDetector:
    if name == "adwin":
        return drift.ADWIN(delta=delta)
    if name == "page_hinkley":
        return drift.PageHinkley(mode="up")
    if name == "ddm":
        return drift.binary.DDM()
    if name == "hddm_a":
        return drift.binary.HDDMA(drift_confidence=delta)
    raise ValueError(f"unknown concept detector {name!r}")


MIN_FALL = 0.01  # a fall of the error rate smaller than this is not worth a record


def _bare_adwin(detector: drift.base.DriftDetector) -> bool:
    """River's own ADWIN with the window its methods wrap (checked, not assumed: the
    fast path reads it directly, and a River that changed it takes the careful one)."""
    return type(detector) is drift.ADWIN and hasattr(detector, "_helper")


class ErrorMonitor(Stateful):
    RECENT = 50  # errors compared with the longer window when a detector fires

    def __init__(self, detector: str, delta: float, window: int) -> None:
        self.name = detector
        self.detector = build_detector(detector, delta)
        self.delta = delta
        self.window: deque[int] = deque(maxlen=window)
        self.recent: deque[int] = deque(maxlen=self.RECENT)
        self.fired_at: int | None = None
        self.warned = False  # DDM / HDDM_A warning level since the last take_warning()
        self.error_before = 0.0
        self.falls: drift.ADWIN | None = None  # watches for falls once the model settled
        self.fell_at: int | None = None
        self.error_before_fall = 0.0

    def observe(self, errors: list[int], learned_at: list[int]) -> None:
        """``errors[i]`` is 1 for a wrong prediction, learned after ``learned_at[i]`` feature
        events (so a firing is dated by its own event, however the stream was cut)."""
        # The windows take the chunk at once, after it; a firing (rare) reads them as they
        # would have stood at its own error (see _windows_at).
        if _bare_adwin(self.detector) and (self.falls is None or _bare_adwin(self.falls)):
            self._observe_adwins(errors, learned_at)
        else:
            self._observe_any(errors, learned_at)
        self.window.extend(errors)
        self.recent.extend(errors)

    def _observe_any(self, errors: list[int], learned_at: list[int]) -> None:
        detector, falls = self.detector, self.falls
        warns = hasattr(detector, "warning_detected")
        for i, (error, at) in enumerate(zip(errors, learned_at, strict=True)):
            detector.update(error)
            if falls is not None:
                width = falls.width  # falls.estimation, with one property call less
                before = falls.total / width if width else 0.0
                falls.update(error)
                if falls.drift_detected:
                    self._fell(falls.estimation, before, at)
            if warns and detector.warning_detected:
                self.warned = True
            if detector.drift_detected:
                self._rose(errors[: i + 1], at)

    def _observe_adwins(self, errors: list[int], learned_at: list[int]) -> None:
        """:meth:`_observe_any` for River's ADWINs (the default), on their windows directly:
        ``ADWIN.update`` and the properties read around it wrap one call of its window
        each, and cost about as much as the window's own work, twice per label. What
        ``ADWIN.update`` does besides is done here: after a detection, the next update
        starts a new window."""
        detector, falls = self.detector, self.falls
        window = detector._helper
        fall_window = falls._helper if falls is not None else None
        for i, (error, at) in enumerate(zip(errors, learned_at, strict=True)):
            if detector._drift_detected:
                detector._reset()
                window = detector._helper
            detector._drift_detected = window.update(error)
            if fall_window is not None:
                if falls._drift_detected:
                    falls._reset()
                    fall_window = falls._helper
                width = fall_window.get_width()
                before = fall_window.get_total() / width if width else 0.0
                falls._drift_detected = fall_window.update(error)
                if falls._drift_detected:
                    width = fall_window.get_width()
                    self._fell(fall_window.get_total() / width if width else 0.0, before, at)
            if detector._drift_detected:
                self._rose(errors[: i + 1], at)

    def _fell(self, estimation: float, before: float, at: int) -> None:
        """The fall detector fired at feature event ``at``: a fall worth a record?"""
        if estimation < before - MIN_FALL:
            self.fell_at = at
            self.error_before_fall = before

    def _rose(self, seen: list[int], at: int) -> None:
        """The error detector fired at feature event ``at``, after the errors ``seen`` of
        this chunk (rare: the window sums are taken only here); a rise, not an
        improvement, is a concept drift."""
        long, short = self._windows_at(seen)
        before = sum(long) / len(long)
        if sum(short) / len(short) > before:
            self.fired_at = at
            self.error_before = before

    def _windows_at(self, seen: list[int]) -> tuple[list[int], list[int]]:
        """The long and the recent window as they stand after the errors ``seen`` of the
        chunk being observed (the windows take the chunk only after it)."""
        window, recent = self.window, self.recent
        return (list(window) + seen)[-window.maxlen :], (list(recent) + seen)[-recent.maxlen :]

    def watch_falls(self, on: bool) -> None:
        """Start (a settled model) or stop (a new, young model) watching for falls."""
        if on and self.falls is None:
            self.falls = drift.ADWIN(delta=self.delta)
        elif not on:
            self.falls = None
            self.fell_at = None

    def take_warning(self) -> str | None:
        """The warning level was reached since the last call (DDM, HDDM_A only)."""
        warned, self.warned = self.warned, False
        return f"{self.name} warning" if warned else None

    def evidence(self, watched: bool, watched_fall: bool = False) -> list[Evidence]:
        """Readings of both directions: a rise (``error``), a fall (``error_fall``)."""
        evidence = self._rise(watched)
        fell, self.fell_at = self.fell_at, None
        if fell is not None or watched_fall:
            rate = sum(self.window) / max(len(self.window), 1)
            evidence.append(
                Evidence(
                    "concept",
                    "error_fall",
                    None,
                    self.name,
                    Level.RAISE if fell is not None else Level.CLEAR,
                    rate,
                    None,
                    self.delta,
                    started_index=fell,
                    reference={"error_rate": round(self.error_before_fall, 6)},
                    current={"error_rate": round(rate, 6), "n": len(self.window)},
                    extra={"direction": "improved"},
                )
            )
        return evidence

    def _rise(self, watched: bool) -> list[Evidence]:
        fired, self.fired_at = self.fired_at, None
        if fired is None and not watched:
            return []
        rate = sum(self.window) / max(len(self.window), 1)
        return [
            Evidence(
                "concept",
                "error",
                None,
                self.name,
                Level.RAISE if fired is not None else Level.CLEAR,
                rate,
                None,
                self.delta,
                started_index=fired,
                reference={"error_rate": round(self.error_before, 6)},
                current={"error_rate": round(rate, 6), "n": len(self.window)},
                extra={"direction": "worse"},
            )
        ]
