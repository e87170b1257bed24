"""The engine's gate: the playbook's answer per order, from memory, and a dead man's switch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from supervisor.config import ControlConfig
from supervisor.control.gate import Gate, GateView, SyncGate, decide

from .deskenv import open_desk, wait_for

NORMAL = GateView(mode="NORMAL", size_multiplier=1.0)


def test_the_status_gate_fields_become_the_view() -> None:
    from supervisor.control.gate import view_from_status

    view = view_from_status({"mode": "NORMAL", "size_multiplier": 1.0, "gate": {
        "suppressed": ["AAPL"], "model_blocked": None, "model_disabled": None,
        "config_paused": {"strategy.yml": "hash mismatch"}}})
    assert view.suppressed == frozenset({"AAPL"})
    assert view.model_stopped == "config paused: strategy.yml"


@pytest.mark.parametrize(("view", "symbol", "side", "qty", "position", "allowed"), [
    (NORMAL, "AAPL", "buy", 100, 0, 100),
    (GateView(mode="THROTTLED", size_multiplier=0.25), "AAPL", "buy", 100, 0, 25),
    (GateView(mode="RECOVERING", size_multiplier=0.25), "AAPL", "sell", 100, 0, 25),
    # Reducing risk is never throttled, but never goes past flat.
    (GateView(mode="THROTTLED", size_multiplier=0.25), "AAPL", "sell", 100, 300, 100),
    (NORMAL, "AAPL", "buy", 50, -80, 50),
    # Past flat is new exposure: 300 reduce in full, the other 200 at the multiplier.
    (NORMAL, "AAPL", "sell", 500, 300, 500),
    (GateView(mode="THROTTLED", size_multiplier=0.25), "AAPL", "sell", 500, 300, 350),
    # HALTED and DISARMED stop everything, reducing orders included (playbook 02 P0).
    (GateView(mode="HALTED", size_multiplier=0.0), "AAPL", "sell", 10, 300, 0),
    (GateView(mode="DISARMED", size_multiplier=0.0), "AAPL", "buy", 10, 0, 0),
    # A suppressed symbol takes reducing orders only (playbook 03 missing-data).
    (GateView(mode="NORMAL", size_multiplier=1.0, suppressed=frozenset({"AAPL"})),
     "AAPL", "buy", 10, 0, 0),
    (GateView(mode="NORMAL", size_multiplier=1.0, suppressed=frozenset({"AAPL"})),
     "AAPL", "sell", 10, 30, 10),
    (GateView(mode="NORMAL", size_multiplier=1.0, suppressed=frozenset({"AAPL"})),
     "AAPL", "sell", 50, 30, 30),
    (GateView(mode="NORMAL", size_multiplier=1.0, suppressed=frozenset({"AAPL"})),
     "MSFT", "buy", 10, 0, 10),
    # A model stopped by gate D2, drift or config drift: reducing only.
    (GateView(mode="NORMAL", size_multiplier=1.0, model_stopped="D2 mismatch"),
     "AAPL", "buy", 10, 0, 0),
    (GateView(mode="NORMAL", size_multiplier=1.0, model_stopped="D2 mismatch"),
     "AAPL", "sell", 10, 30, 10),
    # A per-symbol cap ([compliance] max_order_qty) on new exposure, scaled alike;
    # reducing stays uncapped.
    (GateView(mode="THROTTLED", size_multiplier=0.5, max_order_qty={"AAPL": 100.0}),
     "AAPL", "buy", 500, 0, 50),
    (GateView(mode="NORMAL", size_multiplier=1.0, max_order_qty={"AAPL": 100.0}),
     "AAPL", "sell", 500, 300, 400),
    (GateView(mode="NORMAL", size_multiplier=1.0, max_order_qty={"AAPL": 100.0}),
     "MSFT", "buy", 500, 0, 500),
    # Closed (never heard from the supervisor, or lost it) and nonsense: nothing.
    (None, "AAPL", "buy", 10, 0, 0),
    (NORMAL, "AAPL", "hold", 10, 0, 0),
    (NORMAL, "AAPL", "buy", -5, 0, 0),
    (NORMAL, "AAPL", "buy", float("nan"), 0, 0),
])
def test_decide(view: GateView | None, symbol: str, side: str, qty: float, position: float,
                allowed: float) -> None:
    assert decide(view, symbol, side, qty, position) == allowed


async def test_the_gate_follows_the_desk_and_closes_on_a_kill(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",)) as env:
            gate = Gate(env.socket, grace_s=5.0)
            env.nursery.start_soon(gate.run)
            await wait_for(lambda: gate.view is not None)
            assert gate.allowed("AAPL", "buy", 100) == 100
            await gate.send_telemetry([{"kind": "position", "symbol": "AAPL", "qty": 40}])
            assert env.desk.book.positions == {"AAPL": 40}
            await env.request("kill", reason="drill")
            await wait_for(lambda: gate.view is not None and gate.view.mode == "HALTED", 1)
            assert gate.allowed("AAPL", "buy", 100) == 0
            assert gate.allowed("AAPL", "sell", 10) == 0


async def test_a_lost_supervisor_closes_the_gate_after_its_grace(tmp_path: Path) -> None:
    """docs/architecture.md principle 4: a restart shorter than the grace does not stop the engine;
    a longer loss closes the gate until a fresh status arrives."""
    with trio.fail_after(10):
        gate = Gate(str(tmp_path / "c.sock"), grace_s=0.5)
        async with trio.open_nursery() as outer:
            async with open_desk(tmp_path, ("alpha",)):
                outer.start_soon(gate.run)
                await wait_for(lambda: gate.view is not None)
            lost = trio.current_time()
            # The desk is gone; within the grace the gate still answers...
            assert gate.allowed("AAPL", "buy", 1) == 1
            # ...and past it, it refuses everything.
            await wait_for(lambda: gate.view is None, 2)
            assert trio.current_time() - lost >= 0.4
            assert gate.allowed("AAPL", "buy", 1) == 0
            # A new supervisor on the same socket: open again once its status arrived.
            async with open_desk(tmp_path / "again", ("alpha",),
                                 control=ControlConfig(socket=str(tmp_path / "c.sock"))):
                await wait_for(lambda: gate.view is not None, 3)
                assert gate.allowed("AAPL", "buy", 1) == 1
            outer.cancel_scope.cancel()


async def test_a_silent_supervisor_closes_the_gate_after_its_grace(tmp_path: Path) -> None:
    """A wedged supervisor keeps its socket open but says nothing: the dead man's switch."""
    path = tmp_path / "wedged.sock"
    listener = trio.socket.socket(trio.socket.AF_UNIX)
    await listener.bind(str(path))
    listener.listen()
    status = {"ok": True, "result": {"event": "status", "status": {
        "mode": "NORMAL", "size_multiplier": 1.0, "gate": {"suppressed": []}}}}

    async def wedged() -> None:
        conn, _ = await listener.accept()
        with conn:
            await conn.recv(100)
            await conn.send(json.dumps(status).encode() + b"\n")
            await trio.sleep_forever()

    with trio.fail_after(10), listener:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wedged)
            gate = Gate(str(path), grace_s=0.3)
            await nursery.start(gate.run)
            assert gate.allowed("AAPL", "buy", 7) == 7
            t0 = trio.current_time()
            await wait_for(lambda: gate.view is None, 2)
            assert 0.3 <= trio.current_time() - t0 < 1.0
            nursery.cancel_scope.cancel()


async def test_the_sync_gate_answers_from_a_plain_thread(tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with open_desk(tmp_path, ("alpha",)) as env:
            gate = await trio.to_thread.run_sync(SyncGate, env.socket)
            try:
                await wait_for(lambda: gate.view is not None)
                allowed = await trio.to_thread.run_sync(gate.allowed, "AAPL", "buy", 10)
                assert allowed == 10
                await trio.to_thread.run_sync(gate.send_telemetry, [
                    {"kind": "position", "symbol": "AAPL", "qty": 5}])
                await env.request("kill", reason="drill")
                await wait_for(lambda: gate.view is not None and gate.view.mode == "HALTED", 2)
                assert await trio.to_thread.run_sync(gate.allowed, "AAPL", "sell", 5) == 0
            finally:
                await trio.to_thread.run_sync(gate.close)
            assert gate.view is None


def test_the_view_carries_the_route_of_a_broker_failover() -> None:
    from supervisor.control.gate import view_from_status

    status = {"mode": "NORMAL", "size_multiplier": 1.0, "gate": {"route": "beta"}}
    assert view_from_status(status).route == "beta"
    assert view_from_status({"mode": "NORMAL", "size_multiplier": 1.0}).route is None



def test_off_the_route_only_reducing_orders_pass() -> None:
    """playbook 01 broker-failover: "Flip the broker_route flag to the secondary venue": while
    a route is set, another venue gets no new exposure; flattening there still passes."""
    view = GateView(mode="NORMAL", size_multiplier=1.0, route="beta")
    assert decide(view, "AAPL", "buy", 100, 0.0, venue="beta") == 100
    assert decide(view, "AAPL", "buy", 100, 0.0, venue="alpha") == 0
    assert decide(view, "AAPL", "sell", 100, 300.0, venue="alpha") == 100  # reducing
    assert decide(view, "AAPL", "sell", 100, 50.0, venue="alpha") == 50  # up to flat
    assert decide(view, "AAPL", "buy", 100, 0.0) == 100  # venue unknown: the engine's part
    no_route = GateView(mode="NORMAL", size_multiplier=1.0)
    assert decide(no_route, "AAPL", "buy", 100, 0.0, venue="alpha") == 100


@pytest.mark.parametrize(("view", "side", "qty", "position", "ok"), [
    # an obedient engine asked for more and got 25: the venue sees 25, which complies
    (GateView(mode="THROTTLED", size_multiplier=0.25), "buy", 25, 0, True),
    (GateView(mode="THROTTLED", size_multiplier=0.25, max_order_qty={"AAPL": 100.0}),
     "buy", 25, 0, True),
    (GateView(mode="THROTTLED", size_multiplier=0.25, max_order_qty={"AAPL": 100.0}),
     "buy", 26, 0, False),
    (GateView(mode="THROTTLED", size_multiplier=0.25, max_order_qty={"AAPL": 100.0}),
     "sell", 325, 300, True),  # 300 reduce, 25 new
    (GateView(mode="HALTED", size_multiplier=0.0), "sell", 10, 300, False),
    (GateView(mode="NORMAL", size_multiplier=1.0, suppressed=frozenset({"AAPL"})),
     "sell", 10, 30, True),
    (GateView(mode="NORMAL", size_multiplier=1.0, suppressed=frozenset({"AAPL"})),
     "buy", 1, 0, False),
    (GateView(mode="NORMAL", size_multiplier=1.0, route="beta"), "buy", 1, 0, False),
])
def test_complies_is_what_an_engine_obeying_decide_could_have_sent(
        view: GateView, side: str, qty: float, position: float, ok: bool) -> None:
    from supervisor.core.gatepolicy import complies

    assert complies(view, "AAPL", side, qty, position, "alpha") is ok
