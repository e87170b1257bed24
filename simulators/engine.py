"""A paper trading engine for the demo: it trades against the simulated venues and tells
the supervisor everything, the way a real engine wired to desk-supervisor would.

Every cycle it reads the newest bars from the feed, makes a prediction per symbol, keeps
one resting limit order per symbol at every venue (far from the market, so it rests),
and sends a small marketable order now and then so that acks, fills and positions
flow. It streams bars, orders, acks, fills, positions, pnl and predictions as telemetry
batches over the control socket, and it obeys the supervisor through the engine gate
(``supervisor.control.gate``): every order is sized by ``gate.allowed``, so orders stop on a
halt, shrink on a throttle, and stop when the supervisor cannot be reached.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import trio

from supervisor.control.client import open_control_client
from supervisor.control.gate import CLOSED_MODES, Gate
from supervisor.core.errors import ControlError, SupervisorUnreachable, VenueError
from supervisor.venues.alpaca import HttpVenue
from supervisor.venues.base import VenueOrder

log = logging.getLogger("desk.paper_engine")

MAX_OUTBOX = 20_000


class PaperEngine:
    """Trades on paper and streams telemetry. Run ``run`` in a nursery."""

    def __init__(
        self,
        socket_path: str,
        venues: dict[str, str],
        feed_url: str,
        symbols: Sequence[str],
        *,
        cycle_s: float = 1.0,
        bar_poll_s: float = 0.2,
        base_qty: int = 100,
        trade_every: int = 2,
        grace_s: float = 2.0,
        model_hash: str = "sha256:demo-model-v1",
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.socket_path = socket_path
        self.venue_urls = venues
        self.feed_url = feed_url
        self.symbols = list(symbols)
        self.cycle_s = cycle_s
        self.bar_poll_s = bar_poll_s
        self.base_qty = base_qty
        self.trade_every = trade_every
        self.model_hash = model_hash
        self.wall = wall_clock
        self.gate = Gate(socket_path, grace_s=grace_s)
        self.positions: dict[str, float] = {s: 0.0 for s in self.symbols}
        self.realised = 0.0
        self.last_price: dict[str, float] = {}
        self.resting: dict[tuple[str, str], str] = {}  # (venue, symbol) -> client order id
        self._ids = itertools.count(1)
        self._outbox: list[dict[str, Any]] = []
        self._pending: set[str] = set()
        self.orders_sent = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        venues = [HttpVenue(name, url, timeout_s=30.0) for name, url in self.venue_urls.items()]
        try:
            async with (
                httpx.AsyncClient(base_url=self.feed_url, timeout=5.0) as feed,
                trio.open_nursery() as nursery,
            ):
                await nursery.start(self.gate.run)
                nursery.start_soon(self._telemetry_pump)
                nursery.start_soon(self._bars, feed)
                self._emit({"kind": "model", "model_hash": self.model_hash, "ts": self.wall()})
                task_status.started()
                for cycle in itertools.count():
                    await self._cycle(cycle, feed, venues, nursery)
                    await trio.sleep(self.cycle_s)
        finally:
            with trio.CancelScope(shield=True):
                for v in venues:
                    await v.aclose()

    # --- the supervisor side -----------------------------------------------------

    def _emit(self, event: dict[str, Any]) -> None:
        self._outbox.append(event)

    async def _telemetry_pump(self) -> None:
        while True:
            try:
                async with open_control_client(self.socket_path) as client:
                    while True:
                        await trio.sleep(0.1)
                        if not self._outbox:
                            continue
                        batch = self._outbox[:500]
                        del self._outbox[:500]
                        try:
                            await client.request("telemetry", events=batch)
                        except ControlError as exc:
                            # A rejected batch is a bug in this engine: say so, drop it.
                            log.error("paper engine: telemetry rejected: %s", exc.message)
                        except BaseException:
                            self._outbox[:0] = batch  # not delivered: send it again
                            raise
            except (SupervisorUnreachable, OSError, trio.BrokenResourceError) as exc:
                log.debug("paper engine: telemetry connection lost: %s", exc)
            # Keep memory bounded while the supervisor is away: the newest events win.
            del self._outbox[:-MAX_OUTBOX]
            await trio.sleep(0.5)

    # --- trading -------------------------------------------------------------------

    async def _cycle(
        self,
        cycle: int,
        feed: httpx.AsyncClient,
        venues: list[HttpVenue],
        nursery: trio.Nursery,
    ) -> None:
        now = self.wall()
        for i, symbol in enumerate(self.symbols):
            value = math.sin(now / 60.0 + i)
            self._emit({"kind": "prediction", "symbol": symbol, "value": value, "ts": now})
        self._emit({"kind": "pnl", "ts": now, "value": self.realised})
        # What an engine's inference path and job queue report (playbook 04 "Inference
        # latency", "Job queue depth"): a few milliseconds a call, a short queue.
        for i in range(len(self.symbols)):
            self._emit({"kind": "inference", "ts": now, "latency_s": 0.004 + 0.001 * i})
        self._emit({"kind": "queue", "ts": now, "depth": 3})
        view = self.gate.view
        if view is None or view.mode in CLOSED_MODES:
            return  # closed: not even a look at the venues
        for venue in venues:
            await self._refresh_resting(venue)
            if view.route is not None and venue.name != view.route:
                continue  # playbook 01 broker-failover: new orders go to the routed venue
                # (and the gate would refuse them new exposure elsewhere anyway)
            for symbol in self.symbols:
                if (venue.name, symbol) not in self.resting:
                    nursery.start_soon(self._rest, venue, symbol)
            if cycle % self.trade_every == 0:
                symbol = self.symbols[cycle % len(self.symbols)]
                side = "buy" if (cycle // self.trade_every) % 2 == 0 else "sell"
                nursery.start_soon(self._trade, venue, symbol, side)

    async def _bars(self, feed: httpx.AsyncClient) -> None:
        # Bars are forwarded as soon as the feed shows them (polled every bar_poll_s,
        # well inside the bar interval): the supervisor judges their age, so a late
        # forward would look like a stale feed.
        last: dict[tuple[str, str], float] = {}
        while True:
            for vendor in ("primary", "backup"):
                try:
                    r = await feed.get("/v1/bars/latest", params={
                        "vendor": vendor, "symbols": ",".join(self.symbols)})
                    bars = r.json().get("bars", []) if r.status_code == 200 else []
                except (httpx.HTTPError, ValueError):
                    bars = []
                for bar in bars:
                    key = (bar["symbol"], bar["vendor"])
                    if last.get(key) == bar["ts"]:
                        continue
                    last[key] = bar["ts"]
                    self._emit({"kind": "bar", "symbol": bar["symbol"], "ts": bar["ts"],
                                "vendor": bar["vendor"]})
                    if vendor == "primary":
                        self.last_price[bar["symbol"]] = float(bar["c"])
            await trio.sleep(self.bar_poll_s)

    async def _refresh_resting(self, venue: HttpVenue) -> None:
        # Orders the supervisor cancelled (a kill) are no longer resting: re-learn the
        # truth from the venue rather than from our own memory.
        try:
            open_orders = await venue.open_orders()
        except VenueError:
            return
        live = {o.client_order_id for o in open_orders}
        for key, client_id in list(self.resting.items()):
            if key[0] == venue.name and client_id not in live and client_id not in self._pending:
                del self.resting[key]


    async def _rest(self, venue: HttpVenue, symbol: str) -> None:
        price = self.last_price.get(symbol)
        if price is None:
            return
        client_id = f"desk-{venue.name}-{next(self._ids)}"
        self.resting[(venue.name, symbol)] = client_id
        await self._send(
            venue, symbol, "buy", self.base_qty, client_id, limit_price=round(price * 0.9, 2)
        )

    async def _trade(self, venue: HttpVenue, symbol: str, side: str) -> None:
        client_id = f"desk-{venue.name}-{next(self._ids)}"
        await self._send(venue, symbol, side, max(1, self.base_qty // 10), client_id)

    async def _send(
        self,
        venue: HttpVenue,
        symbol: str,
        side: str,
        qty: int,
        client_id: str,
        *,
        limit_price: float | None = None,
    ) -> None:
        # The gate decides how much of this order may go (playbook 02: P0 stops, P1 shrinks;
        # playbook 01 broker-failover: new exposure on the routed venue only).
        qty = int(self.gate.allowed(symbol, side, qty, venue=venue.name))
        if qty < 1:
            if (venue.name, symbol) in self.resting and limit_price is not None:
                del self.resting[(venue.name, symbol)]
            return
        self.orders_sent += 1
        self._pending.add(client_id)
        self._emit(
            {
                "kind": "order",
                "order_id": client_id,
                "symbol": symbol,
                "side": side,
                "qty": qty,
                "ts": self.wall(),
                "venue": venue.name,
                "client_order_id": client_id,
            }
        )
        try:
            order: VenueOrder = await venue.submit_order(
                symbol=symbol,
                qty=qty,
                side=side,
                type="limit" if limit_price is not None else "market",
                limit_price=limit_price,
                client_order_id=client_id,
            )
        except VenueError as exc:
            log.debug("paper engine: order %s at %s failed: %s", client_id, venue.name, exc)
            self.resting = {k: v for k, v in self.resting.items() if v != client_id}
            return
        finally:
            self._pending.discard(client_id)
        self._emit({"kind": "ack", "order_id": client_id, "ts": self.wall()})
        if order.filled_qty > 0:
            price = self.last_price.get(symbol, 100.0)
            self._emit(
                {
                    "kind": "fill",
                    "order_id": client_id,
                    "symbol": symbol,
                    "side": side,
                    "qty": order.filled_qty,
                    "price": price,
                    "ts": self.wall(),
                    "venue": venue.name,
                }
            )
            signed = order.filled_qty if side == "buy" else -order.filled_qty
            self.positions[symbol] = self.positions.get(symbol, 0.0) + signed
            self.gate.set_position(symbol, self.positions[symbol])
            self._emit(
                {
                    "kind": "position",
                    "symbol": symbol,
                    "qty": self.positions[symbol],
                    "ts": self.wall(),
                }
            )
