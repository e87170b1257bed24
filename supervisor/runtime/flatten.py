"""One flatten path (playbook 05 gate P1 "flattens all positions in < 60 s"; playbook 06
principle 04: broker position is truth): positions are read from the venues, never from
the engine's book; each is reduced by one reduce-only marketable-limit order per venue
and symbol, and the positions are re-read until they reach their target or the deadline.

Rules that keep it from making things worse:
- Never a bare market order: a limit ``limit_band`` through the venue's own current
  price (the book's last price when the venue states none; no price, no order).
- Reduce-only: an order never asks for more than the distance from the position to its
  target, on the side that reduces it.
- Never re-sent blind: an order whose submit got no answer is looked up by its
  client_order_id before anything is sent again ("duplicate fills are the single most
  expensive recovery mistake"); a venue that cannot be asked leaves its legs "unknown",
  never "done".
- An order still open after ``reprice_s`` is cancelled, and only once the venue says it
  is closed is the remainder sent again at a fresh price.

Every order, outcome and the summary go to ``note`` (the desk journals them on the
incident's timeline, with who and why).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Literal

import msgspec
import trio

from supervisor.config import FlattenConfig
from supervisor.core.errors import VenueError, VenueRejected
from supervisor.runtime.killswitch import SUPERVISOR_ORDER_PREFIX
from supervisor.venues.base import Venue, read_positions

log = logging.getLogger("desk.flatten")

FLATTEN_PREFIX = f"{SUPERVISOR_ORDER_PREFIX}flatten-"
SENT_KEPT = 10_000
_EPS = 1e-9

LegState = Literal["working", "done", "unknown", "rejected", "unpriced", "timeout"]


class Leg(msgspec.Struct, kw_only=True):
    """One position at one venue and what the flatten did to it."""

    venue: str
    symbol: str
    position: float  # at the start, as the venue said
    target: float = 0.0
    now: float | None = None  # the last position read; None: not known
    state: LegState = "working"
    orders: list[str] = []  # the client_order_ids sent, in order
    detail: str = ""


class _Working:
    """A leg's bookkeeping while it runs."""

    def __init__(self, leg: Leg, price: float | None) -> None:
        self.leg = leg
        self.price = price
        self.pending: str | None = None  # the client_order_id of the order in flight
        self.sent_at = 0.0
        self.cancel_sent = False


def to_reduce(position: float, target: float) -> bool:
    """Whether ``position`` is still to be reduced towards ``target`` (the same sign and
    smaller, or zero); False at the target, past it, or for a target that is no reduction."""
    if not (math.isfinite(position) and math.isfinite(target)):
        return False
    if abs(position - target) <= _EPS or (target != 0 and (target > 0) != (position > 0)):
        return False
    return abs(target) < abs(position)


def reduce_order(position: float, target: float, price: float, band: float
                 ) -> tuple[str, float, float] | None:
    """(side, qty, limit price) of the order that takes ``position`` to ``target`` without
    crossing it, or None when there is nothing to reduce. The limit is ``band`` through
    ``price``: marketable, never a market order."""
    if not (price > 0 and to_reduce(position, target)):
        return None
    remaining = position - target
    side = "sell" if remaining > 0 else "buy"
    limit = price * (1 - band) if side == "sell" else price * (1 + band)
    limit = round(limit, 2 if limit >= 1 else 4)
    return side, round(abs(remaining), 9), limit


class Flattener:
    """``prices`` gives the book's last price of a symbol (None: unknown), used only when a
    venue does not state its own."""

    def __init__(
        self,
        venues: Sequence[Venue],
        config: FlattenConfig,
        *,
        prices: Callable[[str], float | None] = lambda symbol: None,
    ) -> None:
        self.venues = venues
        self.config = config
        self._prices = prices
        # The client_order_ids this flattener sent (the compliance watch exempts them).
        self._sent: deque[str] = deque(maxlen=SENT_KEPT)
        self._sent_set: set[str] = set()

    def sent(self, client_order_id: str) -> bool:
        """Whether this flattener sent the order with that client_order_id (of its last
        ``SENT_KEPT``)."""
        return client_order_id in self._sent_set

    async def flatten(
        self,
        *,
        note: Callable[[str], Awaitable[None]],
        symbols: Collection[str] = (),
        venue: str | None = None,
        targets: Mapping[tuple[str, str], float] | None = None,
    ) -> dict[str, Any]:
        """Take every position (of ``symbols``, at ``venue``; all when empty) to zero, or,
        given ``targets`` by (venue, symbol), exactly those positions to their targets
        (the risk service's cut to a compliant size). Returns the result per venue
        and leg; ``done`` only when every venue was read and every leg reached its target.

        Raises:
            ValueError: ``venue`` is not a configured venue.
        """
        chosen = [v for v in self.venues if venue is None or v.name == venue]
        if not chosen:
            names = ", ".join(v.name for v in self.venues) or "none"
            raise ValueError(f"unknown venue {venue!r}; venues: {names}")
        started = trio.current_time()
        deadline = started + self.config.deadline_s
        wanted = {s.upper() for s in symbols}
        read = await read_positions(chosen)
        reports: dict[str, dict[str, Any]] = {}
        work: list[_Working] = []
        for v in chosen:
            got = read[v.name]
            if isinstance(got, VenueError):
                reports[v.name] = {"ok": False, "error": str(got)}
                await note(f"flatten: venue {v.name} positions unreadable, its positions are "
                           f"unknown: {got}")
                continue
            reports[v.name] = {"ok": True}
            for p in got:
                if wanted and p.symbol not in wanted:
                    continue
                if targets is not None and (v.name, p.symbol) not in targets:
                    continue  # given targets: exactly those legs, nothing else
                target = (targets or {}).get((v.name, p.symbol), 0.0)
                if not to_reduce(p.qty, target):
                    continue
                work.append(_Working(Leg(venue=v.name, symbol=p.symbol, position=p.qty,
                                         target=target, now=p.qty), p.price))
        by_name = {v.name: v for v in chosen}
        first = True
        while any(w.leg.state == "working" for w in work):
            if not first:
                left = deadline - trio.current_time()
                if left <= 0:
                    break
                await trio.sleep(min(self.config.poll_s, left))
                read = await read_positions([by_name[n] for n in
                                         {w.leg.venue for w in work if w.leg.state == "working"}])
            first = False
            for w in work:
                if w.leg.state != "working":
                    continue
                got = read.get(w.leg.venue)
                if isinstance(got, VenueError):
                    w.leg.now = None
                    w.leg.detail = f"positions unreadable: {got}"
                else:
                    pos = next((p for p in got or () if p.symbol == w.leg.symbol), None)
                    w.leg.now = pos.qty if pos is not None else 0.0
                    if pos is not None and pos.price is not None:
                        w.price = pos.price
                await self._step(w, by_name[w.leg.venue], note)
        for w in work:
            if w.leg.state == "working":
                w.leg.state = "unknown" if w.leg.now is None or w.pending else "timeout"
                w.leg.detail = "; ".join(filter(None, [
                    w.leg.detail, f"deadline of {self.config.deadline_s:g} s passed"]))
                await note(f"flatten {w.leg.symbol} at {w.leg.venue}: {w.leg.state}, "
                           f"position {_num(w.leg.now)} (target {_num(w.leg.target)}): "
                           f"{w.leg.detail}")
        legs = [w.leg for w in work]
        done = all(r["ok"] for r in reports.values()) and all(g.state == "done" for g in legs)
        result = {
            "done": done, "seconds": round(trio.current_time() - started, 3),
            "venues": reports, "legs": msgspec.to_builtins(legs)}
        flat = sum(g.state == "done" for g in legs)
        await note(f"flatten {'complete' if done else 'INCOMPLETE'}: {flat} of {len(legs)} "
                   f"position(s) at target in {result['seconds']:g} s"
                   + "".join(f"; {g.venue} {g.symbol} {g.state}" for g in legs
                             if g.state != "done")
                   + "".join(f"; venue {n} unreadable" for n, r in reports.items()
                             if not r["ok"]))
        return result

    async def _step(self, w: _Working, venue: Venue,
                    note: Callable[[str], Awaitable[None]]) -> None:
        leg = w.leg
        where = f"flatten {leg.symbol} at {leg.venue}"
        if w.pending is not None:
            try:
                order = await venue.order_by_client_id(w.pending)
            except VenueError as exc:
                leg.detail = f"order {w.pending} not found out: {exc}"
                return  # unknown: nothing is sent until the venue says
            if order is not None and order.is_open:
                if (not w.cancel_sent
                        and trio.current_time() - w.sent_at >= self.config.reprice_s):
                    try:
                        await venue.cancel_order(order.id)
                        w.cancel_sent = True
                        await note(f"{where}: order {w.pending} open after "
                                   f"{self.config.reprice_s:g} s, cancelled to re-price the "
                                   f"remainder")
                    except VenueError as exc:
                        leg.detail = f"cancel of {w.pending} failed: {exc}"
                return
            if order is not None and order.status == "rejected":
                leg.state, leg.detail = "rejected", f"order {w.pending} rejected by the venue"
                await note(f"{where}: {leg.detail}")
                return
            w.pending = None  # closed (filled, cancelled, expired) or never received
            w.cancel_sent = False
        if leg.now is None:
            return  # the position is not known this round
        price = w.price if w.price is not None else self._prices(leg.symbol)
        if not to_reduce(leg.now, leg.target):
            leg.state, leg.detail = "done", ""
            await note(f"{where}: position {_num(leg.now)} (was {_num(leg.position)}, "
                       f"target {_num(leg.target)})")
            return
        order_args = reduce_order(leg.now, leg.target, price or 0.0, self.config.limit_band)
        if price is None or order_args is None:
            leg.state = "unpriced"
            leg.detail = "no price known for the symbol: no order sent (never a market order)"
            await note(f"{where}: {leg.detail}")
            return
        side, qty, limit = order_args
        cid = f"{FLATTEN_PREFIX}{uuid.uuid4().hex}"
        w.pending, w.sent_at = cid, trio.current_time()
        leg.orders.append(cid)
        if len(self._sent) == self._sent.maxlen:
            self._sent_set.discard(self._sent[0])
        self._sent.append(cid)
        self._sent_set.add(cid)
        what = (f"{where}: {side} {_num(qty)} limit {limit:g} reducing position "
                f"{_num(leg.now)} to {_num(leg.target)} (client_order_id {cid})")
        try:
            order = await venue.submit_order(symbol=leg.symbol, qty=qty, side=side,
                                             type="limit", limit_price=limit,
                                             time_in_force="day", client_order_id=cid)
        except VenueRejected as exc:
            w.pending = None
            leg.state, leg.detail = "rejected", str(exc)
            await note(f"{what}: rejected: {exc}")
            return
        except VenueError as exc:
            # It may exist: looked up by its client_order_id before anything is re-sent.
            leg.detail = f"order {cid} unanswered: {exc}"
            await note(f"{what}: no answer ({exc}); looked up before anything is sent again")
            return
        leg.detail = ""
        await note(f"{what}: order {order.id} {order.status}")


def _num(value: float | None) -> str:
    return "unknown" if value is None else f"{value:g}"
