"""A whole desk in one trio run on MockClock: the real Desk, the real venue simulators
spoken to over HTTP through httpx's in-process ASGI transport (no sockets, so virtual
time is exact), the feed simulator, and a small engine that streams bars, orders, acks
and fills and asks the gate's pure ``decide`` before every order."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from simulators.demo import monitor_sections
from simulators.feed import FeedSimulator
from simulators.scenarios import DEMO_MAX_ORDER_QTY, MonitorFiles, prepare_monitor_files
from simulators.venue import VenueSimulator
from supervisor.config import (
    ComplianceConfig,
    Config,
    ControlConfig,
    FreshnessConfig,
    HeartbeatConfig,
    KillConfig,
    ReconciliationConfig,
    RecoveryConfig,
)
from supervisor.control.authz import Caller
from supervisor.control.gate import decide, view_from_status
from supervisor.control.server import ControlServer, check_monitor
from supervisor.core.errors import ControlError, VenueError
from supervisor.core.protocol import TelemetryEvent
from supervisor.playbook.gates import GatesConfig
from supervisor.runtime.desk import Desk
from supervisor.runtime.journal import open_journal
from supervisor.venues.alpaca import HttpVenue

from .deskenv import TEST_RATE_LIMIT

T0 = 1_795_000_000.0
SYMBOLS = ("AAPL", "MSFT", "SPY")


class InProcessWorld:
    """The scenario World (simulators.scenarios.World) over an in-process desk."""

    def __init__(self, desk: Desk, venues: dict[str, VenueSimulator], feed: FeedSimulator,
                 nursery: trio.Nursery, monitor_files: MonitorFiles | None = None) -> None:
        self.desk = desk
        self.venues = venues
        self.feed = feed
        self.nursery = nursery
        self.monitor_files = monitor_files
        self.orders_sent = 0

    async def telemetry(self, events: list[dict[str, Any]]) -> None:
        self.desk.book.ingest(msgspec.convert(events, list[TelemetryEvent]))

    async def status(self) -> dict[str, Any]:
        return self.desk.status()

    async def check(self, monitor: str) -> dict[str, Any]:
        # The control command's own code, on the desk directly (no socket).
        return await check_monitor(self.desk, monitor)  # type: ignore[arg-type]

    def wall(self) -> float:
        return self.desk.wall()

    async def request(self, cmd: str, **args: Any) -> Any:
        # The control server's own dispatch, on the desk directly (no socket), as the
        # daemon's own user.
        line = msgspec.json.encode({"cmd": cmd, **args})
        caller = Caller(uid=os.getuid(), gid=os.getgid(), pid=os.getpid())
        answer = msgspec.json.decode(
            await ControlServer(self.desk).dispatch(line, caller, None))  # type: ignore[arg-type]
        if not answer["ok"]:
            raise ControlError(answer["error"]["code"], answer["error"]["message"])
        return answer["result"]


def world_config(tmp_path: Path, **overrides: Any) -> Config:
    return Config(
        state_dir=str(tmp_path / "state"),
        control=ControlConfig(socket=str(tmp_path / "unused.sock")),
        heartbeat=overrides.pop("heartbeat", HeartbeatConfig(
            interval_s=1.0, failures=3, window_s=5.0, timeout_s=1.0, latency_window_s=5.0,
            ack_min_latency_s=2.0, ack_min_samples=10)),
        kill=overrides.pop("kill", KillConfig(quiet_s=5.0)),
        compliance=overrides.pop("compliance", ComplianceConfig(
            max_order_qty=dict(DEMO_MAX_ORDER_QTY))),
        reconciliation=ReconciliationConfig(end_of_day=""),
        freshness=overrides.pop("freshness", FreshnessConfig(bar_interval_s=1.0)),
        recovery=RecoveryConfig(session_s=60.0),
        gates=overrides.pop("gates", GatesConfig(start_disarmed=False)),
        **overrides,
    )


async def _engine(world: InProcessWorld, venues: list[HttpVenue]) -> None:
    desk, ids = world.desk, itertools.count(1)
    positions: dict[str, float] = {}

    async def send(venue: HttpVenue, symbol: str, side: str) -> None:
        view = view_from_status(desk.status())
        qty = int(decide(view, symbol, side, 10, positions.get(symbol, 0.0)))
        if qty < 1:
            return
        oid = f"desk-{venue.name}-{next(ids)}"
        world.orders_sent += 1
        await world.telemetry([{"kind": "order", "order_id": oid, "symbol": symbol,
                                "side": side, "qty": qty, "ts": desk.wall(),
                                "venue": venue.name}])
        try:
            order = await venue.submit_order(symbol=symbol, qty=qty, side=side, type="market",
                                             client_order_id=oid)
        except VenueError:
            return
        signed = order.filled_qty if side == "buy" else -order.filled_qty
        positions[symbol] = positions.get(symbol, 0.0) + signed
        await world.telemetry([
            {"kind": "ack", "order_id": oid, "ts": desk.wall()},
            {"kind": "fill", "order_id": oid, "symbol": symbol, "side": side,
             "qty": order.filled_qty, "price": 100.0, "ts": desk.wall(), "venue": venue.name},
            {"kind": "position", "symbol": symbol, "qty": positions[symbol]},
        ])

    async with trio.open_nursery() as nursery:
        for cycle in itertools.count():
            bars = []
            for vendor in world.feed.vendors:
                for symbol in world.feed.symbols:
                    bar = world.feed.latest(vendor, symbol)
                    if bar is not None:
                        bars.append({"kind": "bar", "symbol": symbol, "ts": bar.ts,
                                     "vendor": vendor})
            if bars:
                await world.telemetry(bars)
            for venue in venues:
                symbol = SYMBOLS[cycle % len(SYMBOLS)]
                nursery.start_soon(send, venue, symbol, "buy" if cycle % 2 else "sell")
            await trio.sleep(0.5)


async def _inline(fn: Any, *args: Any) -> Any:
    """Run SQLite inline: on MockClock a worker thread would let virtual time run ahead
    of the write (autojump sees every task blocked while the thread works)."""
    await trio.lowlevel.checkpoint()
    return fn(*args)


@asynccontextmanager
async def open_world(tmp_path: Path, *, engine: bool = True, monitors: bool = False,
                     **overrides: Any) -> AsyncIterator[InProcessWorld]:
    """``monitors``: also the model, PnL and config-drift monitors, over a training
    reference, a backtest band and a git repository built in ``tmp_path``."""

    def wall() -> float:
        return T0 + trio.current_time()

    files = None
    if monitors:
        files = prepare_monitor_files(tmp_path / "monitors")
        # Every git call runs in a real process, and the autojump clock moves on while
        # it runs (a check can take a virtual minute): the git deadline is far beyond
        # that, and the scheduled check is rare (scenarios run a check when they need one).
        overrides = {**monitor_sections(files, config_interval_s=3600.0,
                                        git_timeout_s=86_400.0), **overrides}
    config = world_config(tmp_path, **overrides)
    # The world's engine orders twice a second per venue and the heartbeat pings every
    # second, on a clock ten times the playbook's: the budget is scaled alike (as the
    # demo's), so that the compliance watch's share fits beside them.
    sims = {n: VenueSimulator(n, wall_clock=wall, rate_limit=TEST_RATE_LIMIT)
            for n in ("alpha", "beta")}
    feed = FeedSimulator(list(SYMBOLS), bar_interval_s=1.0, wall_clock=wall)
    feed.start()
    venues = [HttpVenue(n, f"http://{n}.sim", transport=httpx.ASGITransport(app=sim),
                        timeout_s=1.0) for n, sim in sims.items()]
    journal = await open_journal(Path(config.state_dir) / "journal.sqlite3", run_sync=_inline)
    try:
        desk = Desk(config, journal, venues, wall_clock=wall)
        # No state or history files: their writes run in worker threads, during which
        # the autojump clock would let virtual time run ahead.
        desk.pnl.history_path = None
        desk.model.state_path = None
        desk.arming.run_sync = _inline
        desk.walks.path = None
        desk.deploys.state_path = None
        desk.deploys.run_sync = _inline
        async with trio.open_nursery() as nursery:
            await nursery.start(desk.run)
            world = InProcessWorld(desk, sims, feed, nursery, files)
            if engine:
                nursery.start_soon(_engine, world, venues)
            yield world
            nursery.cancel_scope.cancel()
    finally:
        for v in venues:
            await v.aclose()
        await journal.aclose()
