"""The one flatten path against the venue simulator (its HTTP app in process, on trio's
autojump clock): positions from the venues, reduce-only marketable limits, partial
fills re-priced, a rejecting venue, a submit that gets no answer, an unreadable venue."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from simulators.venue import Outage, PartialFill, Reject, SilentAcks, VenueSimulator
from supervisor.cli.deskctl import EXIT_REFUSED
from supervisor.config import FlattenConfig
from supervisor.control.authz import Caller
from supervisor.core.protocol import Position
from supervisor.runtime.flatten import FLATTEN_PREFIX, Flattener, reduce_order
from supervisor.venues.alpaca import HttpVenue

from .deskenv import open_desk, run_deskctl, wait_for

WALL = 1_795_000_000.0


class Notes(list[str]):
    async def __call__(self, text: str) -> None:
        self.append(text)


@pytest.fixture
async def sims() -> dict[str, VenueSimulator]:
    return {n: VenueSimulator(n, wall_clock=lambda: WALL + trio.current_time())
            for n in ("alpha", "beta")}


@pytest.fixture
async def venues(sims: dict[str, VenueSimulator]) -> AsyncIterator[list[HttpVenue]]:
    out = [HttpVenue(n, f"http://{n}.sim", transport=httpx.ASGITransport(app=sim),
                     timeout_s=1.0) for n, sim in sims.items()]
    yield out
    for v in out:
        await v.aclose()


def flatten_orders(sim: VenueSimulator) -> list[dict[str, object]]:
    return [o for o in sim.orders() if str(o["client_order_id"]).startswith(FLATTEN_PREFIX)]


def positions(sim: VenueSimulator) -> dict[str, float]:
    """The venue's open positions (a flat one is not listed, as at Alpaca)."""
    return {str(p["symbol"]): float(str(p["qty"])) for p in sim.positions()}


# --- the order a position gets ---------------------------------------------------------


def test_the_order_reduces_without_crossing_the_target_and_is_a_marketable_limit() -> None:
    assert reduce_order(100, 0, 50.0, 0.01) == ("sell", 100, 49.5)
    assert reduce_order(-30, 0, 50.0, 0.01) == ("buy", 30, 50.5)
    assert reduce_order(100, 40, 50.0, 0.01) == ("sell", 60, 49.5)  # to a compliant size
    assert reduce_order(-30, -10, 0.5, 0.01) == ("buy", 20, 0.505)  # sub-dollar: 4 places
    assert reduce_order(100, 100, 50.0, 0.01) is None  # at target
    assert reduce_order(100, 150, 50.0, 0.01) is None  # a "target" above is no reduction
    assert reduce_order(100, -10, 50.0, 0.01) is None  # never through zero to the other side
    assert reduce_order(float("nan"), 0, 50.0, 0.01) is None


# --- against the simulators --------------------------------------------------------------


async def test_every_position_at_every_venue_goes_flat_with_limit_orders(
    autojump_clock: trio.abc.Clock, sims: dict[str, VenueSimulator], venues: list[HttpVenue],
) -> None:
    sims["alpha"].place("AAPL", 100, "buy", type="market")
    sims["alpha"].place("MSFT", 40, "sell", type="market")
    sims["beta"].place("AAPL", 25, "buy", type="market")
    notes = Notes()
    result = await Flattener(venues, FlattenConfig()).flatten(note=notes)
    assert result["done"] is True
    assert positions(sims["alpha"]) == positions(sims["beta"]) == {}
    sent = flatten_orders(sims["alpha"]) + flatten_orders(sims["beta"])
    assert len(sent) == 3  # one order per position and venue
    assert {o["type"] for o in sent} == {"limit"}  # never a bare market order
    assert {(leg["venue"], leg["symbol"], leg["position"], leg["state"])
            for leg in result["legs"]} == {("alpha", "AAPL", 100.0, "done"),
                                           ("alpha", "MSFT", -40.0, "done"),
                                           ("beta", "AAPL", 25.0, "done")}
    assert notes[-1].startswith("flatten complete: 3 of 3 position(s) at target")
    assert any("sell 100 limit" in n and "reducing position 100 to 0" in n for n in notes)


async def test_symbols_and_venue_narrow_the_flatten(
    autojump_clock: trio.abc.Clock, sims: dict[str, VenueSimulator], venues: list[HttpVenue],
) -> None:
    sims["alpha"].place("AAPL", 10, "buy", type="market")
    sims["alpha"].place("MSFT", 10, "buy", type="market")
    sims["beta"].place("AAPL", 10, "buy", type="market")
    flattener = Flattener(venues, FlattenConfig())
    result = await flattener.flatten(note=Notes(), symbols=["aapl"], venue="alpha")
    assert result["done"] and list(result["venues"]) == ["alpha"]
    assert positions(sims["alpha"]) == {"MSFT": 10.0}
    assert positions(sims["beta"]) == {"AAPL": 10.0}
    with pytest.raises(ValueError, match="unknown venue 'gamma'; venues: alpha, beta"):
        await flattener.flatten(note=Notes(), venue="gamma")


async def test_a_target_reduces_to_a_compliant_size_not_to_zero(
    autojump_clock: trio.abc.Clock, sims: dict[str, VenueSimulator], venues: list[HttpVenue],
) -> None:
    sims["alpha"].place("AAPL", 100, "buy", type="market")
    result = await Flattener(venues, FlattenConfig()).flatten(
        note=Notes(), targets={("alpha", "AAPL"): 40.0})
    assert result["done"]
    assert positions(sims["alpha"]) == {"AAPL": 40.0}


async def test_a_partial_fill_is_cancelled_and_the_remainder_sent_at_a_fresh_price(
    autojump_clock: trio.abc.Clock, sims: dict[str, VenueSimulator], venues: list[HttpVenue],
) -> None:
    sims["alpha"].place("AAPL", 100, "buy", type="market")
    sims["alpha"].faults.set(PartialFill(fraction=0.5))
    notes = Notes()
    async with trio.open_nursery() as nursery:
        async def clear_later() -> None:
            await trio.sleep(7)  # after the first re-price: the rest fills in full
            sims["alpha"].faults.clear()
        nursery.start_soon(clear_later)
        result = await Flattener(venues[:1], FlattenConfig(reprice_s=5.0)).flatten(note=notes)
    assert result["done"], result
    assert positions(sims["alpha"]) == {}
    sent = flatten_orders(sims["alpha"])
    # 100 -> 50 (partial, rests) -> cancelled -> 50 -> 25 (partial) -> cancelled -> 25 filled
    assert [float(str(o["qty"])) for o in sent] == [100.0, 50.0, 25.0]
    assert [o["status"] for o in sent] == ["canceled", "canceled", "filled"]
    assert sum("cancelled to re-price the remainder" in n for n in notes) == 2


async def test_a_rejecting_venue_leaves_its_leg_rejected_and_the_others_flat(
    autojump_clock: trio.abc.Clock, sims: dict[str, VenueSimulator], venues: list[HttpVenue],
) -> None:
    sims["alpha"].place("AAPL", 10, "buy", type="market")
    sims["beta"].place("AAPL", 10, "buy", type="market")
    sims["beta"].faults.set(Reject())
    result = await Flattener(venues, FlattenConfig()).flatten(note=Notes())
    assert result["done"] is False
    states = {(leg["venue"], leg["state"]) for leg in result["legs"]}
    assert states == {("alpha", "done"), ("beta", "rejected")}
    assert positions(sims["alpha"]) == {}
    assert positions(sims["beta"]) == {"AAPL": 10.0}


async def test_an_unanswered_order_is_looked_up_never_sent_twice(
    autojump_clock: trio.abc.Clock, sims: dict[str, VenueSimulator], venues: list[HttpVenue],
) -> None:
    """The venue takes the order (and fills it) but its answer never comes: the flatten
    finds it by its client_order_id and sends nothing more."""
    sims["alpha"].place("AAPL", 10, "buy", type="market")
    sims["alpha"].faults.set(SilentAcks())
    notes = Notes()
    async with trio.open_nursery() as nursery:
        async def clear_later() -> None:
            await trio.sleep(3)
            sims["alpha"].faults.clear()
        nursery.start_soon(clear_later)
        result = await Flattener(venues[:1], FlattenConfig()).flatten(note=notes)
    assert result["done"]
    assert len(flatten_orders(sims["alpha"])) == 1
    assert any("no answer" in n and "looked up before anything is sent again" in n
               for n in notes)


async def test_a_venue_that_cannot_be_read_is_unknown_never_done(
    autojump_clock: trio.abc.Clock, sims: dict[str, VenueSimulator], venues: list[HttpVenue],
) -> None:
    sims["alpha"].place("AAPL", 10, "buy", type="market")
    sims["beta"].place("AAPL", 10, "buy", type="market")
    sims["beta"].faults.set(Outage())
    notes = Notes()
    result = await Flattener(venues, FlattenConfig()).flatten(note=notes)
    assert result["done"] is False
    assert result["venues"]["beta"]["ok"] is False
    assert "503" in result["venues"]["beta"]["error"]
    assert "venue beta unreadable" in notes[-1]


async def test_a_venue_lost_midway_leaves_the_leg_unknown_at_the_deadline(
    autojump_clock: trio.abc.Clock, sims: dict[str, VenueSimulator], venues: list[HttpVenue],
) -> None:
    sims["alpha"].place("AAPL", 10, "buy", type="market")
    sims["alpha"].faults.set(PartialFill(fraction=0.5))
    async with trio.open_nursery() as nursery:
        async def lose_it() -> None:
            await trio.sleep(1)
            sims["alpha"].faults.set(Outage())
        nursery.start_soon(lose_it)
        start = trio.current_time()
        result = await Flattener(venues[:1], FlattenConfig(deadline_s=20)).flatten(
            note=Notes())
    assert trio.current_time() - start < 22
    (leg,) = result["legs"]
    assert (leg["state"], leg["now"]) == ("unknown", None)
    assert "deadline of 20 s passed" in leg["detail"]
    assert result["done"] is False


# --- deskctl flatten on a running desk (real sockets, real time) ------------------------


async def _halted_desk_with_positions(env: Any) -> None:
    env.sims["alpha"].place("AAPL", 30, "buy", type="market")
    env.sims["beta"].place("MSFT", 12, "sell", type="market")
    assert await run_deskctl(env.socket, "kill", "--reason", "test") == 0
    await wait_for(lambda: env.desk.state.kill.verified, 10)


async def test_deskctl_flatten_needs_a_halt_then_a_clean_reconciliation(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with open_desk(tmp_path) as env:
        assert await run_deskctl(env.socket, "flatten", "--reason", "eod") == EXIT_REFUSED
        assert "flatten runs only while HALTED" in capsys.readouterr().err
        await _halted_desk_with_positions(env)
        # the engine's book never heard of these positions: reconciliation is not clean
        assert await run_deskctl(env.socket, "reconcile") != 0
        assert await run_deskctl(env.socket, "flatten", "--reason", "eod") == EXIT_REFUSED
        assert "have not reconciled clean to broker truth" in capsys.readouterr().err
        assert positions(env.sims["alpha"]) == {"AAPL": 30.0}
        # the engine reports what the venues hold: clean, and the flatten runs
        env.desk.book.ingest([Position(symbol="AAPL", qty=30), Position(symbol="MSFT",
                                                                         qty=-12)])
        assert await run_deskctl(env.socket, "reconcile") == 0
        capsys.readouterr()
        assert await run_deskctl(env.socket, "flatten", "--reason", "end of day") == 0
        out = capsys.readouterr().out
    assert out.startswith("flatten complete in ")
    assert "alpha      AAPL             30 -> 0        target 0  done" in out
    assert positions(env.sims["alpha"]) == positions(env.sims["beta"]) == {}
    last = env.desk.status()["flatten"]["last"]
    assert (last["done"], last["reason"], last["forced"]) == (True, "end of day", False)
    timeline = env.desk.state.incident(env.desk.state.kill.incident_id).timeline
    texts = [e.text for e in timeline]
    assert any(t.startswith("flatten started: every symbol at every venue; reason: end of "
                            "day") for t in texts)
    assert any(t.startswith("flatten complete: 2 of 2 position(s)") for t in texts)
    assert {e.actor for e in timeline if e.text.startswith("flatten")} == {
        Caller(uid=os.getuid()).actor}


async def test_a_forced_flatten_before_reconciliation_is_journaled_as_forced(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with open_desk(tmp_path) as env:
        await _halted_desk_with_positions(env)
        capsys.readouterr()
        assert await run_deskctl(env.socket, "--json", "flatten", "--reason", "stuck",
                                 "--venue", "alpha", "--force") == 0
        result = json.loads(capsys.readouterr().out)
    assert (result["done"], result["forced"], list(result["venues"])) == (True, True,
                                                                          ["alpha"])
    assert positions(env.sims["alpha"]) == {}
    assert positions(env.sims["beta"]) == {"MSFT": -12.0}  # not its venue
    timeline = env.desk.state.incident(env.desk.state.kill.incident_id).timeline
    assert any("FORCED before a clean reconciliation" in e.text for e in timeline)


async def test_an_incomplete_flatten_exits_1_and_names_the_unknown_venue(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with open_desk(tmp_path, flatten=FlattenConfig(deadline_s=2.0)) as env:
        await _halted_desk_with_positions(env)
        env.sims["beta"].faults.set(Outage())
        capsys.readouterr()
        assert await run_deskctl(env.socket, "flatten", "--reason", "x", "--force") == 1
        out = capsys.readouterr().out
    assert out.startswith("flatten INCOMPLETE"), out
    assert "beta       positions UNKNOWN: " in out
    assert positions(env.sims["alpha"]) == {}
