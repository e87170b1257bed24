"""The trading calendar: holidays, early closes, a DST change, the venue's own calendar
first; and what follows it: the freshness deadlines (a closed day with a silent feed
opens nothing), "one full session" of recovery, the end-of-day run, deskctl calendar."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors.base import Finding
from actors.freshness import FreshnessActor
from actors.reconciliation import Reconciler, ReconciliationConfig
from simulators.venue import Outage, VenueSimulator
from supervisor.config import CalendarConfig, Config, FlattenConfig, FreshnessConfig
from supervisor.core.book import Book
from supervisor.core.calendar import Calendar
from supervisor.runtime.calendars import CalendarService, build
from supervisor.venues.alpaca import HttpVenue

from .deskenv import open_desk, run_deskctl

NY = dt.timezone(dt.timedelta(hours=-5))  # EST (winter)


def ny(y: int, mo: int, d: int, h: int, mi: int = 0, tz: dt.tzinfo = NY) -> float:
    return dt.datetime(y, mo, d, h, mi, tzinfo=tz).timestamp()


def test_nyse_from_the_holidays_library_closes_christmas_and_new_year() -> None:
    cal = build(CalendarConfig(calendar="NYSE"), ny(2026, 12, 24, 12))
    session, why = cal.day(dt.date(2026, 12, 25))
    assert session is None and why == "holiday: Christmas Day (holidays NYSE)"
    assert cal.day(dt.date(2027, 1, 1))[0] is None
    # Thursday 24th, then Monday 28th: the holiday and the weekend are skipped
    assert [s.date for s in cal.sessions(ny(2026, 12, 24, 17), 2)] == ["2026-12-28",
                                                                       "2026-12-29"]


def test_an_early_close_from_the_config_and_closed_dates() -> None:
    cal = build(CalendarConfig(calendar="NYSE", early_closes={"2026-11-27": "13:00"},
                               closed_dates=["2026-12-31"]), ny(2026, 11, 26, 12))
    friday, why = cal.day(dt.date(2026, 11, 27))
    assert friday is not None and friday.early_close and why == "early close (config)"
    assert friday.close == ny(2026, 11, 27, 13)
    assert cal.period(ny(2026, 11, 27, 13, 30))[0] is False  # closed after 13:00
    assert cal.day(dt.date(2026, 12, 31)) == (None, "closed (config closed_dates)")


def test_the_session_follows_the_exchange_across_a_dst_change() -> None:
    cal = Calendar(session="09:30-16:00", zone="America/New_York")
    # Friday 2026-03-06 (EST, UTC-5) and Monday 2026-03-09 (EDT, UTC-4, from Sunday 8th)
    friday, _ = cal.day(dt.date(2026, 3, 6))
    monday, _ = cal.day(dt.date(2026, 3, 9))
    assert friday is not None and monday is not None
    assert dt.datetime.fromtimestamp(friday.open, dt.UTC).hour == 14  # 09:30 EST
    assert dt.datetime.fromtimestamp(monday.open, dt.UTC).hour == 13  # 09:30 EDT
    assert monday.close - monday.open == 6.5 * 3600


def test_the_venues_calendar_wins_over_the_library_within_its_range() -> None:
    venue = ("alpha", {dt.date(2026, 12, 24): (dt.time(9, 30), dt.time(13, 0))},
             (dt.date(2026, 12, 20), dt.date(2026, 12, 27)))
    cal = build(CalendarConfig(calendar="NYSE"), ny(2026, 12, 22, 12), venue=venue)
    early, why = cal.day(dt.date(2026, 12, 24))
    assert early is not None and early.close == ny(2026, 12, 24, 13) and why == "venue alpha"
    # in its range but not listed: closed, as the venue says
    assert cal.day(dt.date(2026, 12, 23)) == (None, "closed (venue alpha)")
    # past its range: the library and the weekly session again
    assert cal.day(dt.date(2026, 12, 28))[1] == "weekly session"


def test_always_is_always_in_session() -> None:
    cal = build(CalendarConfig(), ny(2026, 12, 25, 3))
    assert cal.always and cal.period(ny(2026, 12, 25, 3))[0] is True
    assert cal.first_full_session_after(0.0) is None


async def test_the_service_asks_the_venue_first_and_falls_back_when_it_cannot(
        autojump_clock: trio.abc.Clock) -> None:
    now = ny(2026, 12, 22, 12)
    sim = VenueSimulator("alpha", wall_clock=lambda: now)
    sim.set_calendar(session="09:30-16:00", timezone="America/New_York",
                     days=[0, 1, 2, 3, 4], closed=["2026-12-23"])  # not in the library
    async with HttpVenue("alpha", "http://alpha.sim", transport=httpx.ASGITransport(app=sim),
                         timeout_s=1.0) as venue:
        seen: list[Calendar] = []
        service = CalendarService(CalendarConfig(calendar="NYSE"), [venue],
                                  wall_clock=lambda: now, on_change=seen.append)
        status = await service.refresh()
        assert service.calendar.day(dt.date(2026, 12, 23)) == (None, "closed (venue alpha)")
        assert status["venue"] == "alpha" and seen == [service.calendar]
        sim.faults.set(Outage())
        status = await service.refresh()
    assert status["venue"] == "alpha"  # the last answer's time stays in status
    assert "503" in status["errors"]["alpha"]
    # the venue did not answer: the library's calendar, which knows nothing of the 23rd
    assert service.calendar.day(dt.date(2026, 12, 23))[1] == "weekly session"
    assert service.calendar.day(dt.date(2026, 12, 25))[0] is None


class Reports:
    def __init__(self) -> None:
        self.items: list[Finding] = []

    async def __call__(self, item: object) -> None:
        if isinstance(item, Finding):
            self.items.append(item)


async def test_a_closed_day_with_a_silent_feed_opens_nothing_and_the_next_open_judges(
        autojump_clock: trio.abc.Clock) -> None:
    """Christmas Day 2026 (a Friday), NYSE: the feed is silent all day and nothing is
    stale; at Monday's open, a silent feed is stale within 2x the bar interval."""
    start = ny(2026, 12, 24, 17)  # Thursday, after the close
    t0 = trio.current_time()

    def wall() -> float:
        return start + trio.current_time() - t0

    reports = Reports()
    actor = FreshnessActor(FreshnessConfig(bar_interval_s=60.0, symbols=["AAPL"]),
                           Book(clock=trio.current_time), reports, wall_clock=wall)
    actor.set_calendar(build(CalendarConfig(calendar="NYSE"), start))
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await trio.sleep(ny(2026, 12, 28, 9, 29) - start)  # through Christmas and Sunday
        assert reports.items == [] and actor.in_session is False
        await trio.sleep(60 + 120 + 1)  # the open, then 2x the 60 s bar interval
        nursery.cancel_scope.cancel()
    assert reports.items and reports.items[0].incident_class == "stale-data"
    opened = ny(2026, 12, 28, 9, 30)
    assert actor.status()["in_session"] is True
    assert opened + 120 <= wall()


def test_the_end_of_day_run_is_after_the_exchanges_close(tmp_path: Path) -> None:
    now = ny(2026, 11, 27, 12)  # the early close (13:00) day
    cal = build(CalendarConfig(calendar="NYSE", early_closes={"2026-11-27": "13:00"}), now)

    async def store(kind: str, path: Path, data: bytes) -> bool:
        return True

    async def submit(event: object) -> None:
        return None

    rec = Reconciler([], Book(clock=lambda: 0.0), ReconciliationConfig(), tmp_path,
                     submit=submit, wall_clock=lambda: now, store=store,
                     calendar=lambda: cal)
    assert rec.seconds_until_end_of_day() == pytest.approx(ny(2026, 11, 27, 13, 15) - now)


async def test_a_resume_at_15h_stays_at_25_percent_through_the_whole_next_session(
        tmp_path: Path) -> None:
    async with open_desk(tmp_path, calendar=CalendarConfig(calendar="NYSE",
                                                            venue=False)) as env:
        desk = env.desk
        resumed = ny(2026, 12, 22, 15)  # Tuesday 15:00 New York
        assert desk.recovery_ends_at(resumed) == ny(2026, 12, 23, 16)  # Wednesday's close
        friday = ny(2026, 12, 24, 15)  # Thursday 15:00: Friday is Christmas
        assert desk.recovery_ends_at(friday) == ny(2026, 12, 28, 16)  # Monday's close
    async with open_desk(tmp_path / "b") as env:  # 24/7: recovery.session_s of clock
        assert env.desk.recovery_ends_at(100.0) == 100.0 + env.config.recovery.session_s


async def test_deskctl_calendar_shows_today_the_next_sessions_and_the_source(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with open_desk(tmp_path, calendar=CalendarConfig(calendar="custom",
                                                            session="00:00-24:00",
                                                            timezone="UTC",
                                                            days=[0, 1, 2, 3, 4, 5, 6])) as env:
        today = dt.datetime.now(dt.UTC).date()
        for sim in env.sims.values():  # the venues close tomorrow
            sim.set_calendar(closed=[(today + dt.timedelta(days=1)).isoformat()])
        assert await run_deskctl(env.socket, "calendar", "--refresh", "--days", "3") == 0
        out = capsys.readouterr().out
        assert await run_deskctl(env.socket, "--json", "calendar") == 0
        data = json.loads(capsys.readouterr().out)
    assert out.startswith("calendar    custom (UTC)\n")
    assert "now         in session until " in out
    assert "sessions from venue alpha" in out
    dates = [s["date"] for s in data["sessions"]]
    assert dates[0] == today.isoformat()
    assert (today + dt.timedelta(days=1)).isoformat() not in dates  # the venue's closure
    assert data["sessions"][0]["source"] == "venue alpha"


# --- stale-data: "flatten by EOD if data does not recover" --------------------------------


async def _both_vendors_down(desk: Any) -> None:
    await desk.report(Finding(actor="freshness", incident_class="stale-data", scope="feed",
                              severity="P0", summary="both vendors down (test)"))


def test_the_eod_flatten_is_due_ten_minutes_before_the_exchanges_close() -> None:
    from supervisor.runtime.desk import Desk

    desk = Desk.__new__(Desk)  # only the calendar and the config are read
    desk.calendar = CalendarService(CalendarConfig(calendar="NYSE", venue=False,
                                                   early_closes={"2026-11-27": "13:00"}),
                                    [], wall_clock=lambda: ny(2026, 11, 27, 9))
    desk.config = Config()
    assert desk.next_eod_flatten(ny(2026, 11, 27, 9)) == ny(2026, 11, 27, 12, 50)
    assert desk.next_eod_flatten(ny(2026, 11, 27, 12, 55)) == ny(2026, 11, 30, 15, 50)


async def test_a_live_stale_data_p0_flattens_every_position_by_the_close(
        tmp_path: Path) -> None:
    """The session closes at the next minute; the EOD flatten is due 2 s from now."""
    now = dt.datetime.now(dt.UTC)
    close = (now + dt.timedelta(seconds=70)).replace(second=0, microsecond=0)
    before = (close - now).total_seconds() - 2.0
    calendar = CalendarConfig(calendar="custom", session=f"00:00-{close:%H:%M}",
                              timezone="UTC", days=list(range(7)), venue=False)
    if close.date() != now.date() or (close.hour == 0 and close.minute == 0):
        pytest.skip("too close to midnight UTC for a same-day session")
    async with open_desk(tmp_path, calendar=calendar,
                         flatten=FlattenConfig(eod_before_close_s=before)) as env:
        env.sims["alpha"].place("AAPL", 20, "buy", type="market")
        env.sims["beta"].place("MSFT", 7, "sell", type="market")
        await _both_vendors_down(env.desk)
        assert env.desk.state.mode == "HALTED"
        with trio.fail_after(10):
            while env.desk.last_flatten is None:  # noqa: ASYNC110 - the loop's own result
                await trio.sleep(0.1)
        result = env.desk.last_flatten
        inc = next(i for i in env.desk.state.incidents if i.incident_class == "stale-data")
    assert result["done"] and result["by"] == "supervisor:stale-data EOD"
    assert env.sims["alpha"].positions() == [] and env.sims["beta"].positions() == []
    texts = [e.text for e in inc.timeline]
    assert any("data did not recover by the end of the session" in t for t in texts)
    assert any(t.startswith("flatten complete: 2 of 2") for t in texts)


async def test_no_eod_flatten_without_a_live_stale_data_p0(tmp_path: Path) -> None:
    async with open_desk(tmp_path) as env:
        env.sims["alpha"].place("AAPL", 20, "buy", type="market")
        assert await env.desk.eod_flatten() is None
        assert len(env.sims["alpha"].positions()) == 1


def test_a_calendar_without_a_session_day_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="a calendar needs at least one session weekday"):
        CalendarConfig(calendar="custom", days=[])
    assert CalendarConfig(calendar="always", days=[]).days == []  # 24/7 needs none
