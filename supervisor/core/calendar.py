"""The desk's trading calendar: when the exchange is in session (pure: reads no clock).

A session opens on a day at the exchange's local time and closes at its close (an end
before the start closes the next day: an overnight session). What a day is, in order:
1. ``explicit``: the venue's own calendar (Alpaca ``GET /v2/calendar``) for the dates it
   answered for: a date it lists has that session, a date in its range it does not list
   is closed;
2. otherwise ``closed`` (the holiday library's and the config's closed dates) and
   ``early_closes`` (the config's), over the weekly template (``session`` on ``days``).
``always``: a 24/7 venue, always in session (crypto).

Every answer says where it came from (``source``), for ``deskctl calendar``.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from collections.abc import Iterable, Mapping

import msgspec

_INF = math.inf


def parse_hhmm(text: str) -> dt.time:
    """``"HH:MM"`` (00:00 to 23:59; ``"24:00"`` is the end of the day: 23:59:59.999999)."""
    hh, sep, mm = text.partition(":")
    if not (sep and 1 <= len(hh) <= 2 and len(mm) == 2 and (hh + mm).isascii()
            and (hh + mm).isdigit()):
        raise ValueError(f"time must be 'HH:MM', got {text!r}")
    if (int(hh), int(mm)) == (24, 0):
        return dt.time.max
    if int(hh) > 23 or int(mm) > 59:
        raise ValueError(f"time must be 'HH:MM', got {text!r}")
    return dt.time(int(hh), int(mm))


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """One trading session: the day it opens on, its open and close (epoch seconds)."""

    date: str  # YYYY-MM-DD, the exchange's local date of the open
    open: float
    close: float
    source: str  # "venue alpha", "config", "weekly session", "always"
    early_close: bool = False


class Calendar:
    """``session``: ``"HH:MM-HH:MM"`` in ``zone`` on ``days`` (Monday 0); ``closed``:
    date -> why (e.g. "holiday: Christmas Day (holidays NYSE)"); ``early_closes``: date ->
    the close that day; ``explicit``: date -> (open, close) local times from the venue,
    authoritative for every date in ``explicit_range`` (inclusive), named
    ``explicit_source``.

    Raises:
        ValueError: a malformed session or an unknown zone.
    """

    def __init__(
        self,
        *,
        always: bool = False,
        session: str = "09:30-16:00",
        zone: str = "America/New_York",
        days: Iterable[int] = range(5),
        closed: Mapping[dt.date, str] | None = None,
        early_closes: Mapping[dt.date, dt.time] | None = None,
        explicit: Mapping[dt.date, tuple[dt.time, dt.time]] | None = None,
        explicit_range: tuple[dt.date, dt.date] | None = None,
        explicit_source: str = "venue",
    ) -> None:
        self.always = always
        start, _, end = session.partition("-")
        self.start, self.end = parse_hhmm(start), parse_hhmm(end)
        if self.start == self.end:
            raise ValueError(f"session {session!r}: the start and end must differ")
        self.spec = session
        self.zone_name = zone
        # "UTC" needs no tz database, so the defaults run on a host without one.
        self.zone: dt.tzinfo = dt.UTC if zone == "UTC" else zoneinfo.ZoneInfo(zone)
        self.days = frozenset(days)
        if not self.days and not always:
            raise ValueError("a calendar needs at least one session weekday")
        self.closed = dict(closed or {})
        self.early_closes = dict(early_closes or {})
        self.explicit = dict(explicit or {})
        self.explicit_range = explicit_range
        self.explicit_source = explicit_source
        self.overnight = self.end < self.start
        span = (self.end.hour - self.start.hour) * 60 + self.end.minute - self.start.minute
        self.length_s = 86_400.0 if always else (span % 1440) * 60.0

    # --- one day ---------------------------------------------------------------------

    def day(self, day: dt.date) -> tuple[Session | None, str]:
        """The session that opens on ``day`` (None: closed) and why."""
        rng = self.explicit_range
        if rng is not None and rng[0] <= day <= rng[1]:
            hours = self.explicit.get(day)
            if hours is None:
                return None, f"closed ({self.explicit_source})"
            return self._session(day, hours[0], hours[1], self.explicit_source,
                                 early=hours[1] < self.end and not self.overnight), \
                self.explicit_source
        if day in self.closed:
            return None, self.closed[day]
        if day.weekday() not in self.days:
            return None, "closed (weekend)"
        if day in self.early_closes:
            return self._session(day, self.start, self.early_closes[day], "config",
                                 early=True), "early close (config)"
        return self._session(day, self.start, self.end, "weekly session"), "weekly session"

    def _session(self, day: dt.date, start: dt.time, end: dt.time, source: str, *,
                 early: bool = False) -> Session:
        close_day = day + dt.timedelta(days=1) if end < start else day
        return Session(date=day.isoformat(), source=source, early_close=early,
                       open=dt.datetime.combine(day, start, self.zone).timestamp(),
                       close=dt.datetime.combine(close_day, end, self.zone).timestamp())

    # --- around an instant ---------------------------------------------------------------

    def period(self, t: float) -> tuple[bool, float, float]:
        """Whether epoch ``t`` is in a session, and the span ``[lo, hi)`` around ``t``
        with the same answer: the session's open and close, or the previous close and
        the next open (infinite when there is none within a year)."""
        if self.always:
            return True, -_INF, _INF
        today = dt.datetime.fromtimestamp(t, self.zone).date()
        prev_close = -_INF
        for i in range(-10, 370):
            session, _ = self.day(today + dt.timedelta(days=i))
            if session is None:
                continue
            if t < session.open:
                return False, prev_close, session.open
            if t < session.close:
                return True, session.open, session.close
            prev_close = session.close
        return False, prev_close, _INF

    def sessions(self, t: float, n: int) -> list[Session]:
        """The session in progress at ``t`` (if any) and the following ones, ``n`` in all."""
        if self.always:
            return [Session(date=dt.datetime.fromtimestamp(t, dt.UTC).date().isoformat(),
                            open=-_INF, close=_INF, source="always")][:n]
        out: list[Session] = []
        today = dt.datetime.fromtimestamp(t, self.zone).date()
        for i in range(-1, 400):
            session, _ = self.day(today + dt.timedelta(days=i))
            if session is not None and session.close > t:
                out.append(session)
                if len(out) >= n:
                    break
        return out

    def first_full_session_after(self, t: float) -> Session | None:
        """The first session that opens at or after ``t`` (playbook 03 post-incident
        "one full session" begun after a resume at ``t``); None on a 24/7 calendar."""
        if self.always:
            return None
        return next((s for s in self.sessions(t, 3) if s.open >= t), None)
