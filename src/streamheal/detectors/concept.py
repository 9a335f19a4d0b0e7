"""Concept drift: River's detectors on the prequential error stream (0 right, 1 wrong).

A *rise* of the error rate is concept drift that hurts (signal ``error``). A significant
*fall* is reported too (signal ``error_fall``, ``direction: "improved"``): the world
changed in the model's favour, which is worth knowing (the label mix or the population
probably moved) but needs no healing. Falls are watched by an ADWIN of their own (same
confidence), started only once the serving model has settled: a learning model's error
falls as it learns, and an ADWIN that had seen the learning phase would report it (see
:class:`~streamheal.detectors.suite.DriftSuite`).

A *warning* is a rise seen at a looser confidence: DDM and HDDM_A have their own warning
level; beside an ADWIN a second ADWIN at ``warning_delta`` plays that part. A warning is
not a drift (no record): the policy may start a challenger on it, so that the challenger
has learned the new concept by the time the drift is confirmed.
"""

from __future__ import annotations

from collections import deque

import numpy as np
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


def _advance(adwin: drift.ADWIN, error: int) -> float | None:
    """``adwin.update(error)`` on a bare River ADWIN's window directly (see
    :meth:`ErrorMonitor._observe_adwins`): the mean of its window before ``error`` when it
    fired (its window then holds the newer part only), else None."""
    if adwin._drift_detected:
        adwin._reset()
    window = adwin._helper
    width = window.get_width()
    before = window.get_total() / width if width else 0.0
    adwin._drift_detected = fired = window.update(error)
    return before if fired else None


def _held(adwin: drift.ADWIN) -> tuple[float, float]:
    """An ADWIN's window width and sum as its next ``update`` finds them: emptied after a
    firing (River resets it then)."""
    return (0, 0.0) if adwin.drift_detected else (adwin.width, adwin.total)


def _advance_any(adwin: drift.ADWIN, error: int) -> float | None:
    """:func:`_advance` through River's own ADWIN methods."""
    width, total = _held(adwin)
    adwin.update(error)
    return (total / width if width else 0.0) if adwin.drift_detected else None


def _mean(adwin: drift.ADWIN) -> float:
    window = adwin._helper
    width = window.get_width()
    return window.get_total() / width if width else 0.0


MIN_FALL = 0.01  # a fall of the error rate smaller than this is not worth a record


def _bare_adwin(detector: drift.base.DriftDetector) -> bool:
    """River's own ADWIN with the window its methods wrap (checked, not assumed: the
    fast path reads it directly, and a River that changed it takes the careful one)."""
    return type(detector) is drift.ADWIN and hasattr(detector, "_helper")


class ErrorMonitor(Stateful):
    RECENT = 50  # errors compared with the longer window when a detector fires

    def __init__(
        self, detector: str, delta: float, window: int, warning_delta: float = 0.0
    ) -> None:
        self.name = detector
        self.detector = build_detector(detector, delta)
        self.delta = delta
        # An ADWIN's warning level: an ADWIN at the looser warning_delta (0: no warnings).
        self.warns: drift.ADWIN | None = (
            drift.ADWIN(delta=warning_delta) if detector == "adwin" and warning_delta else None
        )
        self.window: deque[int] = deque(maxlen=window)
        self.recent: deque[int] = deque(maxlen=self.RECENT)
        self.fired_at: int | None = None
        self.warned = False  # a warning-level rise since the last take_warning()
        self.error_before = 0.0
        self.falls: drift.ADWIN | None = None  # watches for falls once the model settled
        self.fell_at: int | None = None
        self.error_before_fall = 0.0

    def observe(self, errors: list[int], learned_at: list[int]) -> None:
        """``errors[i]`` is 1 for a wrong prediction, learned after ``learned_at[i]`` feature
        events (so a firing is dated by its own event, however the stream was cut)."""
        # The windows take the chunk at once, after it; a firing (rare) reads them as they
        # would have stood at its own error (see _windows_at).
        adwins = (self.detector, self.falls, self.warns)
        if all(d is None or _bare_adwin(d) for d in adwins):
            self._observe_adwins(errors, learned_at)
        else:
            self._observe_any(errors, learned_at)
        self.window.extend(errors)
        self.recent.extend(errors)

    def _observe_any(self, errors: list[int], learned_at: list[int]) -> None:
        detector, falls, warns = self.detector, self.falls, self.warns
        warning_level = hasattr(detector, "warning_detected")  # DDM, HDDM_A
        two_sided = isinstance(detector, drift.ADWIN)
        for i, (error, at) in enumerate(zip(errors, learned_at, strict=True)):
            if two_sided:
                held, held_total = _held(detector)
            detector.update(error)
            if warns is not None and (before := _advance_any(warns, error)) is not None:
                self.warned |= warns.estimation > before
            if falls is not None and (before := _advance_any(falls, error)) is not None:
                self._fell(falls.estimation, before, at)
            if warning_level and detector.warning_detected:
                self.warned = True
            if detector.drift_detected:
                if two_sided:
                    self._cut(held, held_total, error, detector.width, detector.total, at)
                else:
                    self._rose(errors[: i + 1], at)

    def _observe_adwins(self, errors: list[int], learned_at: list[int]) -> None:
        """:meth:`_observe_any` for River's ADWINs (the default), on their windows directly:
        ``ADWIN.update`` and the properties read around it wrap one call of its window
        each, and cost about as much as the window's own work, twice per label. What
        ``ADWIN.update`` does besides is done here: after a detection, the next update
        starts a new window."""
        detector, falls, warns = self.detector, self.falls, self.warns
        window = detector._helper
        # The window's width and sum before each update, without asking it twice per
        # label: between firings it grows by one error at a time.
        base, base_width, base_total = 0, window.get_width(), window.get_total()
        for i, (error, at) in enumerate(zip(errors, learned_at, strict=True)):
            if detector._drift_detected:
                detector._reset()
                window = detector._helper
                base, base_width, base_total = i, 0, 0.0
            detector._drift_detected = window.update(error)
            if warns is not None and (before := _advance(warns, error)) is not None:
                self.warned |= _mean(warns) > before  # a rise: the newer, worse part kept
            if falls is not None and (before := _advance(falls, error)) is not None:
                self._fell(_mean(falls), before, at)
            if detector._drift_detected:
                width, total = base_width + i - base, base_total + sum(errors[base:i])
                self._cut(width, total, error, window.get_width(), window.get_total(), at)

    def _cut(
        self, width: float, total: float, error: int, kept: float, kept_total: float, at: int
    ) -> None:
        """The error ADWIN fired at feature event ``at``: it held ``width`` errors summing
        to ``total`` before ``error`` came, and kept the newest ``kept`` (summing to
        ``kept_total``). A rise, when the errors kept are worse than the ones dropped."""
        dropped = width + 1 - kept
        if dropped <= 0 or not kept:
            return
        before = (total + error - kept_total) / dropped
        if kept_total / kept > before:
            self.fired_at = at
            self.error_before = before

    def _fell(self, estimation: float, before: float, at: int) -> None:
        """The fall detector fired at feature event ``at``: a fall worth a record?"""
        if estimation < before - MIN_FALL:
            self.fell_at = at
            self.error_before_fall = before

    def _rose(self, seen: list[int], at: int) -> None:
        """A one-sided error detector (Page-Hinkley, DDM, HDDM_A) fired at feature event
        ``at``, after the errors ``seen`` of this chunk (rare: the window sums are taken
        only here); a rise, not an improvement, is a concept drift."""
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

    def since_change(self) -> list[int]:
        """The serving model's errors (1 = wrong, oldest first) since the most likely rise
        of its error rate in the window (call it after a rise or a warning): the rows of
        the new concept, as far as the errors tell."""
        window = list(self.window)
        return window[len(window) - rise_start(window) :]

    def take_warning(self) -> str | None:
        """A warning-level rise was seen since the last call (DDM, HDDM_A, or the warning
        ADWIN beside an ADWIN)."""
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


MIN_SEGMENT = 10  # errors on each side of a change point, at least


def rise_start(errors: list[int]) -> int:
    """How many of the newest ``errors`` (0 right, 1 wrong) follow the most likely rise of
    the error rate: the split into an older and a newer Bernoulli segment, the newer one
    worse, of highest likelihood. A detector's own placement is coarser (ADWIN cuts at its
    buckets' edges, which grow exponentially), and a warm start on the old concept's rows
    would teach a new model the concept it is replacing. All of ``errors`` when no split
    with ``MIN_SEGMENT`` errors on each side is a rise."""
    n = len(errors)
    if n < 2 * MIN_SEGMENT:
        return n
    wrong = np.cumsum(errors, dtype=float)
    older = np.arange(MIN_SEGMENT, n - MIN_SEGMENT + 1, dtype=float)  # errors before a split
    wrong_older = wrong[MIN_SEGMENT - 1 : n - MIN_SEGMENT]
    newer, wrong_newer = n - older, wrong[-1] - wrong_older
    rise = wrong_newer / newer > wrong_older / older
    if not rise.any():
        return n
    likelihood = _bernoulli_log_likelihood(wrong_older, older) + _bernoulli_log_likelihood(
        wrong_newer, newer
    )
    best = int(np.argmax(np.where(rise, likelihood, -np.inf)))
    return int(newer[best])


def _bernoulli_log_likelihood(wrong: np.ndarray, count: np.ndarray) -> np.ndarray:
    rate = np.clip(wrong / count, 1e-12, 1 - 1e-12)
    return wrong * np.log(rate) + (count - wrong) * np.log1p(-rate)
