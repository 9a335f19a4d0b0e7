"""Alarm tuning: M-of-N confirmation, hysteresis and cooldown, one state machine per signal.

A detector reports a :class:`Level` at each check. A drift is *declared* when ``m`` of
the last ``n`` checks raised, *resolved* when the last ``n`` checks were all clear, and
after a resolution the same signal stays quiet for ``cooldown`` events.

>>> alarm = Alarm(confirm_checks=2, confirm_window=3, cooldown=0)
>>> [alarm.update(level, index) for index, level in enumerate([2, 0, 2, 2, 1, 0, 0, 0])]
[None, None, 'firing', None, None, None, None, 'resolved']
"""

from __future__ import annotations

from collections import deque

from streamheal.detectors.base import Level, Stateful


class Alarm(Stateful):
    def __init__(self, confirm_checks: int, confirm_window: int, cooldown: int) -> None:
        self.confirm_checks = confirm_checks
        self.history: deque[int] = deque(maxlen=max(confirm_window, confirm_checks))
        self.cooldown = cooldown
        self.firing = False
        self.quiet_until = -1
        self.first_raise_index: int | None = None

    def takes_clear_quietly(self) -> bool:
        """Whether a CLEAR reading now is sure to change nothing but the history: the
        alarm is not firing (so it cannot resolve) and has no raise on record (so it
        cannot fire)."""
        return not self.firing and Level.RAISE not in self.history

    def at_rest(self, index: int) -> bool:
        """Whether this alarm acts from event ``index`` on exactly as a new one would, so
        the suite can forget it: not firing, out of its cooldown, and no raise on record
        (the checks it holds count only by their raises, and a new alarm records every
        reading from its first one that is not clear, as this one does)."""
        return not self.firing and index >= self.quiet_until and Level.RAISE not in self.history

    def update(self, level: int, index: int) -> str | None:
        """Record one check's level at event ``index``; return a state change or None."""
        self.history.append(level)
        if level == Level.RAISE and self.first_raise_index is None:
            self.first_raise_index = index
        if not self.firing:
            raised = sum(1 for h in self.history if h == Level.RAISE)
            if raised >= self.confirm_checks and index >= self.quiet_until:
                self.firing = True
                return "firing"
            if raised == 0:
                self.first_raise_index = None
            return None
        if len(self.history) == self.history.maxlen and all(h == Level.CLEAR for h in self.history):
            self.firing = False
            self.quiet_until = index + self.cooldown
            self.first_raise_index = None
            self.history.clear()
            return "resolved"
        return None
