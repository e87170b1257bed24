"""The venue-side dead man's switch: the simulator's POST /v2/cancel_after, the
supervisor re-arming it only while healthy, and a real daemon frozen by SIGSTOP whose
venue goes flat on its own."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors.base import Finding, Report
from simulators.venue import CancelAfterFails, VenueSimulator
from supervisor.control.client import ControlClient
from supervisor.core.errors import VenueError
from supervisor.runtime.deadman import DeadMan
from supervisor.venues.alpaca import HttpVenue

from .daemonproc import (
    http,
    open_orders,
    place_order,
    start_daemon,
    venue_process,
    wait_until,
    write_config,
)

WALL = 1_795_000_000.0


def wall() -> float:
    return WALL + trio.current_time()


@pytest.fixture
async def sim(autojump_clock: trio.abc.Clock) -> VenueSimulator:
    return VenueSimulator("alpha", wall_clock=wall)


@pytest.fixture
async def venue(sim: VenueSimulator) -> AsyncIterator[HttpVenue]:
    async with HttpVenue("alpha", "http://alpha.sim", transport=httpx.ASGITransport(app=sim),
                         timeout_s=1.0) as v:
        yield v


# --- the simulator's timer ---------------------------------------------------------------


async def test_the_venue_cancels_everything_when_its_timer_runs_out(
        autojump_clock: trio.abc.Clock, sim: VenueSimulator, venue: HttpVenue) -> None:
    sim.place("AAPL", 5, "buy", limit_price=1.0)
    await venue.cancel_after(2.0)
    await trio.sleep(1.5)
    await venue.cancel_after(2.0)  # re-armed in time: the clock starts again
    await trio.sleep(1.5)
    assert len(sim.open_orders()) == 1
    await trio.sleep(0.6)  # 2.1 s after the last re-arm
    assert sim.open_orders() == [] and sim.dead_man_fired == 1
    sim.place("AAPL", 5, "buy", limit_price=1.0)
    await trio.sleep(5)  # it fired once; a new order is not touched until re-armed
    assert len(sim.open_orders()) == 1


async def test_zero_disarms_and_a_bad_body_is_refused(
        autojump_clock: trio.abc.Clock, sim: VenueSimulator, venue: HttpVenue) -> None:
    sim.place("AAPL", 5, "buy", limit_price=1.0)
    await venue.cancel_after(1.0)
    await venue.cancel_after(0)
    await trio.sleep(3)
    assert len(sim.open_orders()) == 1 and sim.dead_man_fired == 0
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim),
                                 base_url="http://alpha.sim") as client:
        bad = await client.post("/v2/cancel_after", json={"timeout_ms": -5})
        garbage = await client.post("/v2/cancel_after", content=b"{nope")
    assert bad.status_code == 422 and "timeout_ms" in bad.json()["message"]
    assert garbage.status_code == 400


async def test_a_failing_cancel_after_arms_nothing(
        autojump_clock: trio.abc.Clock, sim: VenueSimulator, venue: HttpVenue) -> None:
    sim.place("AAPL", 5, "buy", limit_price=1.0)
    await venue.cancel_after(2.0)
    sim.faults.set(CancelAfterFails())
    await trio.sleep(1.5)
    with pytest.raises(VenueError, match="500"):
        await venue.cancel_after(2.0)  # not re-armed: the first timer runs on
    await trio.sleep(0.6)
    assert sim.open_orders() == []


# --- the supervisor re-arms it only while healthy -----------------------------------------


class Desk:
    def __init__(self) -> None:
        self.healthy: tuple[bool, str, bool] = (True, "", False)
        self.findings: list[Finding] = []

    def health(self) -> tuple[bool, str, bool]:
        return self.healthy

    async def report(self, item: Report) -> None:
        assert isinstance(item, Finding)
        self.findings.append(item)


async def _running(dead: DeadMan, nursery: trio.Nursery) -> None:
    await nursery.start(dead.run)


def watched(venue: HttpVenue, sim: VenueSimulator) -> tuple[Desk, DeadMan]:
    """A desk stand-in, the dead man's switch over ``venue`` (3 s), one resting order."""
    desk = Desk()
    dead = DeadMan([venue], {"alpha": 3.0}, health=desk.health, report=desk.report,
                   wall_clock=wall)
    sim.place("AAPL", 5, "buy", limit_price=1.0)
    return desk, dead


async def test_a_healthy_supervisor_keeps_the_orders_alive(
        autojump_clock: trio.abc.Clock, sim: VenueSimulator, venue: HttpVenue) -> None:
    desk, dead = watched(venue, sim)
    async with trio.open_nursery() as nursery:
        await _running(dead, nursery)
        await trio.sleep(30)
        assert len(sim.open_orders()) == 1 and sim.dead_man_fired == 0
        status = dead.status()["alpha"]
        assert status["armed"] and status["fires_at"] > wall()
        nursery.cancel_scope.cancel()
    assert desk.findings == []


@pytest.mark.parametrize(("hold", "deliberate", "expect"), [
    ("the journal is failing: disk full", False, "not re-armed: the journal is failing"),
    ("the kill-switch is latched", True, None),
])
async def test_an_unhealthy_supervisor_stops_re_arming_and_the_venue_goes_flat(
        autojump_clock: trio.abc.Clock, sim: VenueSimulator, venue: HttpVenue, hold: str,
        deliberate: bool, expect: str | None) -> None:
    desk, dead = watched(venue, sim)
    async with trio.open_nursery() as nursery:
        await _running(dead, nursery)
        await trio.sleep(2)
        desk.healthy = (False, hold, deliberate)
        await trio.sleep(3.5)  # past the timeout after the last re-arm
        assert sim.open_orders() == [] and sim.dead_man_fired == 1
        await trio.sleep(1.5)  # the supervisor's next tick notices
        assert dead.status()["alpha"]["held"] == hold
        nursery.cancel_scope.cancel()
    if expect is None:
        assert desk.findings == []  # a latched kill's own doing: status only
    else:
        (finding,) = desk.findings
        assert (finding.incident_class, finding.scope) == ("supervisor-stalled", "venue:alpha")
        assert expect in finding.summary
        assert "the venue cancelled every open order there" in finding.summary


async def test_re_arming_that_keeps_failing_is_a_supervisor_stalled_p0(
        autojump_clock: trio.abc.Clock, sim: VenueSimulator, venue: HttpVenue) -> None:
    desk = Desk()
    dead = DeadMan([venue], {"alpha": 3.0}, health=desk.health, report=desk.report,
                   wall_clock=wall)
    async with trio.open_nursery() as nursery:
        await _running(dead, nursery)
        await trio.sleep(1)
        sim.faults.set(CancelAfterFails())
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    (finding,) = desk.findings
    assert "re-arming failed: venue alpha: POST /v2/cancel_after answered 500" in finding.summary
    assert dead.status()["alpha"]["error"] is not None


# --- a real daemon, frozen -----------------------------------------------------------------


def test_a_frozen_daemons_venue_goes_flat_on_its_own_and_the_daemon_notices(
        tmp_path: Path) -> None:
    """SIGSTOP: nothing re-arms the venue's timer; the venue is flat within dead_man_s
    + 1 s. SIGCONT: the daemon finds the timer ran out while it was stalled and opens a
    supervisor-stalled P0."""
    dead_man_s = 2.0
    with venue_process() as url:
        config, sock, _ = write_config(tmp_path, url,
                                       venue_extra=f"dead_man_s = {dead_man_s}\n")
        proc = start_daemon(config, sock, tmp_path / "daemon.log")
        try:
            def status() -> dict[str, Any]:
                with ControlClient(str(sock), timeout=5) as c:
                    return c.request("status")  # type: ignore[no-any-return]

            wait_until(lambda: status()["dead_man"]["alpha"]["armed"], what="the first arm")
            place_order(url, "engine-1")
            place_order(url, "engine-2")
            time.sleep(dead_man_s)  # re-armed meanwhile: still there
            assert len(open_orders(url)) == 2
            os.killpg(proc.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            try:
                wait_until(lambda: not open_orders(url), timeout=dead_man_s + 1.5,
                           what="the venue to go flat on its own")
                flat_after = time.monotonic() - stopped
            finally:
                os.killpg(proc.pid, signal.SIGCONT)
            assert flat_after <= dead_man_s + 1.0
            sim_orders = http("GET", f"{url}/v2/orders?status=all")
            assert {o["status"] for o in sim_orders} == {"canceled"}

            def stalled() -> list[dict[str, Any]]:
                return [i for i in status()["incidents"]
                        if i["class"] == "supervisor-stalled"]

            wait_until(stalled, timeout=10, what="the supervisor-stalled incident")
            (inc,) = stalled()
            assert (inc["severity"], inc["scope"]) == ("P0", "venue:alpha")
            assert "the supervisor was stalled for" in inc["summary"]
            assert status()["mode"] == "HALTED"
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
