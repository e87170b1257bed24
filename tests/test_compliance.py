"""The compliance watch: every order the venues report is judged by the gate's rules as
they stood when it was made; an order the gate would have refused is cancelled and is a
runaway-engine P0. Against the venue simulator (in process on trio's autojump clock, then
a running desk on 127.0.0.1 in real time)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors.base import Finding, Report
from simulators.venue import VenueSimulator
from supervisor.config import ComplianceConfig
from supervisor.core.gatepolicy import GateView
from supervisor.runtime.compliance import ComplianceWatch, GateHistory, VenueWatch
from supervisor.venues.alpaca import HttpVenue

from .deskenv import open_desk, run_deskctl, wait_for

WALL = 1_795_000_000.0
NORMAL = GateView(mode="NORMAL", size_multiplier=1.0)
HALTED = GateView(mode="HALTED", size_multiplier=0.0)


def wall() -> float:
    return WALL + trio.current_time()


class World:
    """One simulated venue, a watch over it, and the gate view the test sets."""

    def __init__(self, venue: HttpVenue, sim: VenueSimulator, config: ComplianceConfig,
                 ours: set[str]) -> None:
        self.sim, self.venue = sim, venue
        self.view = NORMAL
        self.findings: list[Finding] = []
        self.watch = ComplianceWatch([venue], config, view=lambda: self.view,
                                     ours=ours.__contains__, report=self.report,
                                     wall_clock=wall)

    async def report(self, item: Report) -> None:
        assert isinstance(item, Finding)
        self.findings.append(item)

    def set_view(self, view: GateView) -> None:
        self.view = view
        self.watch.note_view()  # as the desk does on every event

    async def check(self) -> None:
        await self.watch.check(self.venue)


@pytest.fixture
async def world(autojump_clock: trio.abc.Clock) -> AsyncIterator[World]:
    sim = VenueSimulator("alpha", wall_clock=wall)
    async with HttpVenue("alpha", "http://alpha.sim", transport=httpx.ASGITransport(app=sim),
                         timeout_s=1.0) as venue:
        w = World(venue, sim, ComplianceConfig(max_order_qty={"AAPL": 100.0}),
                  {"desk-supervisor-flatten-ours"})
        w.watch.note_view()
        w.watch.watches["alpha"] = VenueWatch(wall())  # as run() starts it
        await trio.sleep(1)
        yield w


def test_the_history_gives_every_view_in_force_during_a_window() -> None:
    history = GateHistory(keep_s=100)
    throttled = GateView(mode="THROTTLED", size_multiplier=0.25)
    history.note(NORMAL, 10.0)
    history.note(NORMAL, 11.0)  # unchanged: not a new view
    history.note(throttled, 20.0)
    history.note(HALTED, 30.0)
    assert history.seq == 3
    assert history.in_force(21.0, 25.0) == [(2, throttled)]
    assert history.in_force(19.0, 30.0) == [(1, NORMAL), (2, throttled), (3, HALTED)]
    assert history.in_force(5.0, 6.0) == [(1, NORMAL)]  # before the first: the oldest kept
    history.note(NORMAL, 200.0)  # the older ones fall out after keep_s
    assert history.in_force(150.0, 150.0) == [(3, HALTED)]


async def test_an_order_the_gate_allowed_passes(
        autojump_clock: trio.abc.Clock, world: World) -> None:
    world.sim.place("AAPL", 50, "buy", type="market", client_order_id="eng-1")
    await world.check()
    status = world.watch.status()["venues"]["alpha"]
    assert (status["orders_seen"], status["orders_judged"], status["violations"]) == (1, 1, 0)
    assert world.findings == []


async def test_an_order_sent_while_halted_is_cancelled_and_a_runaway_engine_p0(
        autojump_clock: trio.abc.Clock, world: World) -> None:
    world.set_view(HALTED)
    await trio.sleep(2)  # past the grace: the engine's gate has heard of the halt
    placed = world.sim.place("MSFT", 10, "buy", limit_price=1.0, client_order_id="eng-2")
    await world.check()
    (finding,) = world.findings
    assert (finding.incident_class, finding.scope) == ("runaway-engine", "venue:alpha")
    assert "the engine ignored its gate: buy 10 MSFT" in finding.summary
    assert "sent while HALTED; order cancelled" in finding.summary
    assert finding.evidence["gate_seq"] == world.watch.history.seq
    assert world.sim.order(str(placed["id"]))["status"] == "canceled"
    assert world.watch.status()["venues"]["alpha"]["violations"] == 1


async def test_an_order_within_the_grace_of_a_halt_is_not_a_violation(
        autojump_clock: trio.abc.Clock, world: World) -> None:
    world.set_view(HALTED)
    await trio.sleep(0.5)  # the engine's gate may not have heard yet
    world.sim.place("MSFT", 10, "buy", type="market", client_order_id="eng-3")
    await world.check()
    assert world.findings == []


async def test_new_exposure_in_a_suppressed_symbol_is_caught_reducing_passes(
        autojump_clock: trio.abc.Clock, world: World) -> None:
    world.sim.place("AAPL", 40, "buy", type="market", client_order_id="eng-4")
    await world.check()
    world.set_view(GateView(mode="NORMAL", size_multiplier=1.0, suppressed=frozenset({"AAPL"})))
    await trio.sleep(2)
    world.sim.place("AAPL", 30, "sell", type="market", client_order_id="eng-5")  # reduces
    await world.check()
    assert world.findings == []
    world.sim.place("AAPL", 20, "sell", type="market", client_order_id="eng-6")  # 10 too far
    await world.check()
    (finding,) = world.findings
    assert "new exposure in suppressed symbol AAPL" in finding.summary
    assert finding.evidence["client_order_id"] == "eng-6"


async def test_an_order_over_the_throttled_size_is_caught(
        autojump_clock: trio.abc.Clock, world: World) -> None:
    world.set_view(GateView(mode="THROTTLED", size_multiplier=0.25,
                            max_order_qty={"AAPL": 100.0}))
    await trio.sleep(2)
    world.sim.place("AAPL", 25, "buy", type="market", client_order_id="eng-7")  # = 0.25 x 100
    await world.check()
    assert world.findings == []
    world.sim.place("AAPL", 30, "buy", type="market", client_order_id="eng-8")
    await world.check()
    (finding,) = world.findings
    assert "larger than the gate allows: 0.25 x max_order_qty 100 = 25" in finding.summary
    assert "order already closed" in finding.summary  # a market order filled at once


async def test_an_order_off_the_route_and_a_stopped_model_are_caught(
        autojump_clock: trio.abc.Clock, world: World) -> None:
    world.set_view(GateView(mode="NORMAL", size_multiplier=1.0, route="beta"))
    await trio.sleep(2)
    world.sim.place("SPY", 5, "buy", type="market", client_order_id="eng-9")
    await world.check()
    world.set_view(GateView(mode="NORMAL", size_multiplier=1.0, model_stopped="D2 mismatch"))
    await trio.sleep(2)
    world.sim.place("SPY", 5, "buy", type="market", client_order_id="eng-10")
    await world.check()
    whys = [f.evidence["why"] for f in world.findings]
    assert whys == ["new exposure at alpha, off the route to beta",
                    "new exposure while the model is stopped (D2 mismatch)"]


async def test_the_supervisors_prefix_is_exempt_only_for_its_own_orders(
        autojump_clock: trio.abc.Clock, world: World) -> None:
    world.set_view(HALTED)
    await trio.sleep(2)
    world.sim.place("AAPL", 1, "buy", limit_price=1.0,
                    client_order_id="desk-supervisor-flatten-ours")
    await world.check()
    assert world.findings == []
    world.sim.place("AAPL", 1, "buy", limit_price=1.0,
                    client_order_id="desk-supervisor-flatten-forged")
    await world.check()
    (finding,) = world.findings
    assert finding.evidence["why"] == ("carries the supervisor's prefix but the supervisor "
                                       "did not send it")


async def test_orders_made_before_the_watch_began_are_not_judged(
        autojump_clock: trio.abc.Clock) -> None:
    sim = VenueSimulator("alpha", wall_clock=wall)
    sim.place("AAPL", 1, "buy", limit_price=1.0, client_order_id="old")
    await trio.sleep(1)
    async with HttpVenue("alpha", "http://alpha.sim", transport=httpx.ASGITransport(app=sim),
                         timeout_s=1.0) as venue:
        w = World(venue, sim, ComplianceConfig(), set())
        w.view = HALTED
        async with trio.open_nursery() as nursery:
            await nursery.start(w.watch.run)
            await trio.sleep(3)
            nursery.cancel_scope.cancel()
    assert w.findings == [] and w.watch.status()["venues"]["alpha"]["orders_seen"] == 0


async def test_the_watch_keeps_to_its_share_of_the_venues_budget(
        autojump_clock: trio.abc.Clock, world: World) -> None:
    world.sim.place("AAPL", 1, "buy", type="market", client_order_id="eng-11")
    await world.check()  # the venue states its budget: 200 a minute
    # two requests a poll (orders, positions) in 25% of 200 a minute: every 2.4 s
    assert world.watch.paced_interval(world.venue, 2) == pytest.approx(2.4)
    assert world.watch.paced_interval(world.venue, 1) == pytest.approx(1.2)


# --- a rogue engine against a running desk ------------------------------------------------


@pytest.mark.parametrize("rogue", ["over-the-throttle", "suppressed-symbol", "halted"])
async def test_a_rogue_engine_is_caught_cancelled_and_halts_the_desk_within_2_s(
        rogue: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An engine that ignores its gate: its order is cancelled and the desk halted within
    2 s of the order reaching the venue; orders the gate allowed pass untouched."""
    async with open_desk(tmp_path, compliance=ComplianceConfig(
            max_order_qty={"AAPL": 100.0})) as env:
        alpha, beta = env.sims["alpha"], env.sims["beta"]
        if rogue == "over-the-throttle":
            assert await run_deskctl(env.socket, "throttle", "--multiplier", "0.5",
                                     "--reason", "test") == 0
            why, symbol, qty = "larger than the gate allows: 0.5 x max_order_qty 100", \
                "AAPL", 80
        elif rogue == "suppressed-symbol":
            # as the freshness actor suppresses a stale symbol (playbook 03 missing-data)
            env.desk.freshness.suppressed["MSFT"] = "stale: no primary bar in 2 s"
            why, symbol, qty = "new exposure in suppressed symbol MSFT", "MSFT", 5
        else:
            assert await run_deskctl(env.socket, "kill", "--reason", "test") == 0
            why, symbol, qty = "sent while HALTED", "SPY", 5
        await trio.sleep(1.5)  # past the grace: a gate would have heard
        if rogue != "halted":
            alpha.place("AAPL", 40, "buy", type="market", client_order_id="e-ok")  # allowed
            await trio.sleep(1.5)
            assert not any(i.incident_class == "runaway-engine"
                           for i in env.desk.state.incidents)
        placed = beta.place(symbol, qty, "buy", limit_price=1.0, client_order_id="e-rogue")
        t0 = trio.current_time()
        await wait_for(lambda: env.desk.state.mode == "HALTED" and any(
            i.incident_class == "runaway-engine" for i in env.desk.state.incidents), 2.0)
        caught = trio.current_time() - t0
        await wait_for(lambda: beta.order(str(placed["id"]))["status"] == "canceled", 2.0)
        capsys.readouterr()
        assert await run_deskctl(env.socket, "--json", "status") == 0
        status: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert caught < 2.0
    (inc,) = [i for i in status["incidents"] if i["class"] == "runaway-engine"]
    assert (inc["severity"], inc["scope"]) == ("P0", "venue:beta")
    assert f"buy {qty} {symbol}" in inc["summary"] and why in inc["summary"]
    watch = status["compliance"]["venues"]
    assert watch["beta"]["violations"] == 1 and watch["alpha"]["violations"] == 0
    assert status["gate"]["seq"] == status["compliance"]["gate_seq"] >= 2
