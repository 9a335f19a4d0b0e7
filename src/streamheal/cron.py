"""Cron schedules and their catch-up rule.

A schedule is a cron expression read in UTC by croniter: five fields (minute, hour,
day of month, month, day of week), or six with a trailing seconds field
(``"* * * * * */5"``: every five seconds, handy in tests).

The catch-up rule is what makes a schedule safe to stop: the service remembers the last
*slot* (a time the expression names) it has dealt with. When it looks again, every slot
that fell since, while it was stopped or busy with a run, is folded into **one** run:
never skipped, never run twice.

>>> from datetime import datetime, timezone
>>> daily = CronSchedule("0 3 * * *")
>>> at = lambda text: datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()
>>> slot = daily.due(last_slot=at("2026-11-25T03:00"), now=at("2026-11-28T10:00"))
>>> datetime.fromtimestamp(slot, timezone.utc).isoformat()   # three missed slots, one run
'2026-11-28T03:00:00+00:00'
>>> daily.due(last_slot=slot, now=at("2026-11-28T10:00")) is None
True
"""

from __future__ import annotations

from datetime import UTC, datetime

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from streamheal.errors import StreamhealError


class ScheduleError(StreamhealError, ValueError):
    """A cron expression croniter cannot read."""


class CronSchedule:
    """A cron expression in UTC.

    Parameters
    ----------
    expression
        Five fields, or six with seconds last; croniter's extensions (``@daily``,
        ``L``, ``#``) are accepted.
    """

    def __init__(self, expression: str) -> None:
        text = expression.strip()
        if not text or not croniter.is_valid(text):
            raise ScheduleError(
                f"{expression!r} is not a cron expression (5 fields: minute hour day month "
                'weekday, e.g. "0 3 * * *"; or 6 with seconds last, e.g. "* * * * * */5")'
            )
        self.expression = text
        try:  # is_valid accepts a few expressions that can never fire ("0 0 31 2 *")
            self.next_after(0.0)
        except (CroniterBadCronError, CroniterBadDateError) as err:
            raise ScheduleError(f"{expression!r} never fires: {err}") from None

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r})"

    def next_after(self, moment: float) -> float:
        """The first slot strictly after ``moment`` (seconds since the epoch)."""
        return float(croniter(self.expression, _utc(moment)).get_next(float))

    def last_at_or_before(self, moment: float) -> float:
        """The latest slot at or before ``moment``."""
        nxt = self.next_after(moment)
        return float(croniter(self.expression, _utc(nxt)).get_prev(float))

    def due(self, last_slot: float, now: float) -> float | None:
        """The slot to run for now, or None: every slot after ``last_slot`` up to ``now``
        is one run, named by the latest of them (what the caller remembers afterwards)."""
        if self.next_after(last_slot) > now:
            return None
        return self.last_at_or_before(now)


def _utc(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, UTC)
