"""Where the desk's trading calendar comes from (docs/operations.md "Trading calendar").

In this order: the venue's own calendar (Alpaca ``GET /v2/calendar``, the first venue
that answers, for the dates it answered for); the ``holidays`` library's closed days of
the configured exchange (``[calendar] calendar = "NYSE"``); the config's
``closed_dates`` and ``early_closes``. ``calendar = "always"``: 24/7 (crypto).

The ``holidays`` library was chosen over ``exchange_calendars``: it is pure Python with
one small dependency and is released monthly, where ``exchange_calendars`` pulls in
pandas; what it lacks (early closes, one-off closures) the venue's calendar and the
config give.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import trio

from supervisor.config import CalendarConfig
from supervisor.core.calendar import Calendar, parse_hhmm
from supervisor.core.errors import VenueError

log = logging.getLogger("desk.calendar")

# The venue is asked for this many days back and ahead.
PAST_DAYS, AHEAD_DAYS = 7, 45


class CalendarVenue(Protocol):
    name: str

    async def calendar(self, start: dt.date, end: dt.date
                       ) -> list[tuple[dt.date, dt.time, dt.time]]: ...


def library_closed(exchange: str, years: Sequence[int]) -> dict[dt.date, str]:
    """The ``holidays`` library's closed days of ``exchange`` in ``years``."""
    import holidays

    days = holidays.financial_holidays(exchange, years=list(years))
    return {day: f"holiday: {name} (holidays {exchange})" for day, name in days.items()}


def build(config: CalendarConfig, now: float, *,
          venue: tuple[str, dict[dt.date, tuple[dt.time, dt.time]],
                       tuple[dt.date, dt.date]] | None = None) -> Calendar:
    """The calendar ``config`` describes at ``now``, over the venue's answer if any."""
    if config.calendar == "always":
        return Calendar(always=True)
    year = dt.datetime.fromtimestamp(now, dt.UTC).year
    closed: dict[dt.date, str] = {}
    if config.calendar != "custom":
        closed.update(library_closed(config.calendar, range(year - 1, year + 3)))
    closed.update({dt.date.fromisoformat(d): "closed (config closed_dates)"
                   for d in config.closed_dates})
    early = {dt.date.fromisoformat(d): parse_hhmm(c) for d, c in config.early_closes.items()}
    return Calendar(session=config.session, zone=config.timezone, days=config.days,
                    closed=closed, early_closes=early,
                    explicit=venue[1] if venue else None,
                    explicit_range=venue[2] if venue else None,
                    explicit_source=f"venue {venue[0]}" if venue else "venue")


class CalendarService:
    """Keeps ``calendar`` current; ``on_change`` hears every new one."""

    def __init__(self, config: CalendarConfig, venues: Sequence[Any], *,
                 wall_clock: Callable[[], float],
                 on_change: Callable[[Calendar], None] = lambda calendar: None) -> None:
        self.config = config
        self.venues = [v for v in venues if hasattr(v, "calendar")]
        self.wall = wall_clock
        self.on_change = on_change
        self.calendar = build(config, wall_clock())
        self.venue_source: str | None = None
        self.fetched_at: float | None = None
        self.errors: dict[str, str] = {}

    name = "calendar"
    critical = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        await self.refresh()
        task_status.started()
        while True:
            await trio.sleep(self.config.refresh_s)
            await self.refresh()

    async def refresh(self) -> dict[str, Any]:
        """Ask the venues (when configured), rebuild, tell ``on_change``; the status."""
        now = self.wall()
        venue = None
        if self.config.calendar != "always" and self.config.venue:
            today = dt.datetime.fromtimestamp(now, dt.UTC).date()
            start, end = today - dt.timedelta(days=PAST_DAYS), today + dt.timedelta(
                days=AHEAD_DAYS)
            for v in self.venues:
                try:
                    with trio.fail_after(max(1.0, getattr(v, "timeout_s", 2.0) * 2)):
                        days = await v.calendar(start, end)
                except (VenueError, trio.TooSlowError) as exc:
                    self.errors[v.name] = str(exc) or "no answer"
                    continue
                self.errors.pop(v.name, None)
                venue = (v.name, {d: (o, c) for d, o, c in days}, (start, end))
                self.venue_source, self.fetched_at = v.name, now
                break
            else:
                if self.venues:
                    log.warning("calendar: no venue answered (%s); using the %s calendar",
                                "; ".join(f"{n}: {e}" for n, e in self.errors.items()),
                                self.config.calendar)
        self.calendar = build(self.config, now, venue=venue)
        self.on_change(self.calendar)
        return self.status()

    def status(self, n: int = 5) -> dict[str, Any]:
        now = self.wall()
        cal = self.calendar
        inside, _, boundary = cal.period(now)
        if cal.always:
            today = "always in session (24/7)"
        else:
            day = dt.datetime.fromtimestamp(now, cal.zone).date()
            session, why = cal.day(day)
            today = (f"{day.isoformat()}: closed, {why}" if session is None else
                     f"{day.isoformat()}: {_local(session.open, cal)}-"
                     f"{_local(session.close, cal)} {cal.zone_name} ({why})")
        return {
            "calendar": self.config.calendar,
            "timezone": None if cal.always else cal.zone_name,
            "in_session": inside,
            "next_change": None if boundary == float("inf") else boundary,
            "today": today,
            "sessions": [] if cal.always else [
                {"date": s.date, "open": s.open, "close": s.close, "source": s.source,
                 "early_close": s.early_close} for s in cal.sessions(now, n)],
            "venue": self.venue_source, "fetched_at": self.fetched_at,
            "errors": dict(self.errors),
        }


def _local(ts: float, cal: Calendar) -> str:
    return dt.datetime.fromtimestamp(ts, cal.zone).strftime("%H:%M")
