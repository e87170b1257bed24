"""Reconciliation to broker truth (playbook 01 reconciliation; gate D4; principle 04)."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from actors.reconciliation import classify
from simulators.venue import Outage
from supervisor.core.protocol import Fill, Order

from .deskenv import open_desk


def order(oid: str, side: str = "buy", qty: float = 10) -> Order:
    return Order(order_id=oid, symbol="AAPL", side=side, qty=qty, ts=1.0)  # type: ignore[arg-type]


def fill(oid: str, side: str = "buy", qty: float = 10) -> Fill:
    return Fill(order_id=oid, symbol="AAPL", side=side, qty=qty, price=100.0, ts=2.0)  # type: ignore[arg-type]


def test_filled_but_not_reported() -> None:
    d = classify("AAPL", 10, 0, [order("o1")], {})
    assert (d.classification, d.orders, d.diff) == ("filled-but-not-reported", ["o1"], 10)


def test_partly_reported_fill_is_filled_but_not_reported_for_the_rest() -> None:
    d = classify("AAPL", 10, 4, [order("o1")], {"o1": [fill("o1", qty=4)]})
    assert d.classification == "filled-but-not-reported"


def test_reported_but_not_filled() -> None:
    d = classify("AAPL", 0, -5, [order("o2", "sell", 5)], {"o2": [fill("o2", "sell", 5)]})
    assert (d.classification, d.orders) == ("reported-but-not-filled", ["o2"])


def test_duplicate_fill_report() -> None:
    d = classify("AAPL", 10, 20, [order("o1")], {"o1": [fill("o1"), fill("o1")]})
    assert (d.classification, d.orders) == ("duplicate", ["o1"])
    assert d.explanation == "order o1: fill reported 2 times"


def test_anything_else_is_unknown_until_manually_confirmed() -> None:
    d = classify("AAPL", 7, 0, [order("o1")], {})
    assert d.classification == "unknown"
    assert d.explanation == "broker holds 7, engine 0: unknown until manually confirmed"


async def test_reconcile_against_the_simulated_broker_writes_a_report(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_desk(tmp_path) as env:
            env.sims["alpha"].place("AAPL", 10, "buy", type="market")
            env.sims["beta"].place("AAPL", 5, "buy", type="market")
            env.sims["beta"].place("MSFT", 3, "sell", type="market")
            await env.request("telemetry", events=[
                {"kind": "order", "order_id": "o1", "symbol": "MSFT", "side": "sell", "qty": 3,
                 "ts": 1.0},
                {"kind": "position", "symbol": "AAPL", "qty": 15},
            ])
            report = await env.request("reconcile")
            assert report["clean"] is False
            assert report["broker"] == {"AAPL": 15.0, "MSFT": -3.0}
            (diff,) = report["differences"]
            assert diff["symbol"] == "MSFT"
            assert diff["classification"] == "filled-but-not-reported"
            saved = json.loads(Path(report["path"]).read_text())
            assert saved["id"] == report["id"]
            st = env.desk.state.last_reconciliation
            assert st is not None and not st.clean and st.differences == 1
            await env.request("telemetry", events=[
                {"kind": "position", "symbol": "MSFT", "qty": -3}])
            assert (await env.request("reconcile"))["clean"] is True


async def test_an_unreachable_venue_is_never_clean(tmp_path: Path) -> None:
    """NautilusTrader #4736: unknown is not flat."""
    with trio.fail_after(10):
        async with open_desk(tmp_path) as env:
            env.sims["beta"].faults.set(Outage())
            report = await env.request("reconcile")
            assert report["clean"] is False
            assert report["venues"]["beta"]["ok"] is False
            assert "503" in report["venues"]["beta"]["error"]
            assert env.desk.state.last_reconciliation.differences == 1  # type: ignore[union-attr]
