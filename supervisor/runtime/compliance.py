"""The compliance watch: the venues' own order records enforce the gate (playbook 06
principle 04: broker position is truth).

An engine is supposed to ask its gate before every order; an engine that ignores it, or
a bug in the gate client, would otherwise never be noticed. So the supervisor reads every
venue's new orders continuously (``orders_since``, within a share of the venue's request
budget) and judges each by the gate's own rules (``supervisor.core.gatepolicy.complies``:
could an engine obeying ``decide`` have sent it?)
as they stood when the order was made: the gate views are kept, numbered, for
``history_s``, and an order is judged by the most permissive view in force during the
``grace_s`` before its venue time (the time a gate takes to hear of a change).

An order the gate would have refused (HALTED or DISARMED, new exposure in a suppressed
symbol, while the model is stopped, on a venue off the route, or more than the
multiplier times the symbol's ``max_order_qty``) is cancelled at once (its own cancel)
and reported as a ``runaway-engine`` finding, a P0: an engine that ignores its gate cannot
be trusted with the rest of its orders, and the kill-switch takes them all.

Orders carrying the supervisor's own prefix (flatten, drills) are exempt if the
supervisor sent them (``ours``); one it did not send is itself a violation. With a
venue's ``cancel_scope = "prefix"``, only the engine's prefixed orders are judged.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from actors.base import Finding, Report
from supervisor.config import ComplianceConfig
from supervisor.core.errors import VenueError
from supervisor.core.gatepolicy import CLOSED_MODES, GateView, complies
from supervisor.runtime.killswitch import SUPERVISOR_ORDER_PREFIX
from supervisor.venues.base import Venue, VenueOrder

log = logging.getLogger("desk.compliance")

RATE_WINDOW_S = 60.0
# Orders are asked for from a little before the newest one seen: venues stamp orders
# with their own clock, and two orders can share a stamp.
OVERLAP_S = 2.0
SEEN_KEPT = 10_000


class GateHistory:
    """The gate views in force, numbered, for ``keep_s`` of wall time (the newest always
    kept)."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self.seq = 0
        self._views: deque[tuple[float, int, GateView]] = deque()

    def note(self, view: GateView, at: float) -> None:
        """Record ``view`` as in force from ``at`` (nothing when it is the current one)."""
        if self._views and self._views[-1][2] == view:
            return
        self.seq += 1
        self._views.append((at, self.seq, view))
        while len(self._views) > 1 and self._views[1][0] < at - self.keep_s:
            self._views.popleft()

    @property
    def current(self) -> tuple[float, int, GateView] | None:
        return self._views[-1] if self._views else None

    def in_force(self, start: float, end: float) -> list[tuple[int, GateView]]:
        """The views in force at some time in [start, end]: the one at ``start`` and
        every one that began after it, up to ``end``."""
        out: list[tuple[int, GateView]] = []
        for at, seq, view in self._views:
            if at <= start:
                out = [(seq, view)]
            elif at <= end:
                out.append((seq, view))
        if not out and self._views:  # older than anything kept: the oldest kept
            _, seq, view = self._views[0]
            out = [(seq, view)]
        return out


def why_refused(view: GateView, order: VenueOrder, venue: str) -> str:
    """The rule the order breaks under ``view`` (one line)."""
    if view.mode in CLOSED_MODES:
        return f"sent while {view.mode}"
    if order.symbol in view.suppressed:
        return f"new exposure in suppressed symbol {order.symbol}"
    if view.model_stopped is not None:
        return f"new exposure while the model is stopped ({view.model_stopped})"
    if view.route is not None and venue != view.route:
        return f"new exposure at {venue}, off the route to {view.route}"
    cap = view.max_order_qty.get(order.symbol, math.inf)
    return (f"larger than the gate allows: {_num(view.size_multiplier)} x max_order_qty "
            f"{_num(cap)} = {_num(view.size_multiplier * cap)}")


class VenueWatch:
    """One venue's counters, for ``status``."""

    def __init__(self, since: float) -> None:
        self.since = since  # orders made before the watch began are not judged
        self.cursor = since  # venue time of the newest order seen
        self.seen: deque[str] = deque(maxlen=SEEN_KEPT)
        self.seen_set: set[str] = set()
        self.orders_seen = 0
        self.orders_judged = 0
        self.violations = 0
        self.last_ok: float | None = None  # wall time of the last complete read
        self.error: str | None = None
        self.interval_s = 0.0
        self.last_violation: dict[str, Any] | None = None

    def mark(self, order_id: str) -> bool:
        """False when already seen; else remember it."""
        if order_id in self.seen_set:
            return False
        if len(self.seen) == self.seen.maxlen:
            self.seen_set.discard(self.seen[0])
        self.seen.append(order_id)
        self.seen_set.add(order_id)
        return True


class ComplianceWatch:
    """``view`` gives the gate view in force now; ``ours`` says whether the supervisor sent
    the order with that client_order_id; ``report`` takes the findings."""

    name = "compliance"
    # Down, the gate is unenforced but the engine still has its gate: a P1 actor-failure.
    critical = False

    def __init__(
        self,
        venues: Sequence[Venue],
        config: ComplianceConfig,
        *,
        view: Callable[[], GateView],
        ours: Callable[[str], bool],
        report: Callable[[Report], Awaitable[None]],
        wall_clock: Callable[[], float],
    ) -> None:
        self.venues = list(venues)
        self.config = config
        self._view = view
        self._ours = ours
        self.report = report
        self.wall = wall_clock
        self.history = GateHistory(config.history_s)
        self.watches: dict[str, VenueWatch] = {}

    def note_view(self) -> None:
        """Record the gate view in force now (the desk calls it on every change)."""
        self.history.note(self._view(), self.wall())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Watch every venue until cancelled; orders made before the start are not judged."""
        start = self.wall()
        self.note_view()
        for v in self.venues:  # a restart (after a crash) goes on from where it was
            self.watches.setdefault(v.name, VenueWatch(start))
        async with trio.open_nursery() as nursery:
            for venue in self.venues:
                nursery.start_soon(self._watch, venue)
            task_status.started()

    def paced_interval(self, venue: Venue, requests: int) -> float:
        """The poll interval that keeps ``requests`` a poll within the watch's share of the
        venue's stated budget (none stated: ``interval_s``); the refill time when the
        budget is all but spent."""
        interval = self.config.interval_s
        rl = getattr(venue, "rate_limit", None)
        if rl is not None and rl.limit > 0:
            interval = max(interval, requests * RATE_WINDOW_S
                           / (rl.limit * self.config.budget_share))
            if rl.remaining < requests:
                interval = max(interval, rl.reset - self.wall())
        return min(interval, RATE_WINDOW_S)

    async def _watch(self, venue: Venue) -> None:
        w = self.watches[venue.name]
        while True:
            requests = await self.check(venue)
            w.interval_s = self.paced_interval(venue, max(requests, 1))
            await trio.sleep(w.interval_s)

    async def check(self, venue: Venue) -> int:
        """Read and judge the venue's new orders once; the number of requests it took."""
        w = self.watches[venue.name]
        self.note_view()
        requests = 1
        try:
            orders = await venue.orders_since(w.cursor - OVERLAP_S)
        except VenueError as exc:
            w.error = str(exc)
            return requests
        new = [o for o in orders if o.submitted_at >= w.since and w.mark(o.id)]
        w.orders_seen += len(new)
        if new:
            w.cursor = max(w.cursor, max(o.submitted_at for o in new))
        judged = {o.id for o in new if self._judged(venue, o)}
        # The position before each order, for what reduces (None: unknown).
        position: dict[str, float] | None = {}
        if any(not o.client_order_id.startswith(SUPERVISOR_ORDER_PREFIX)
               for o in new if o.id in judged):
            requests += 1
            try:
                position = {p.symbol: p.qty for p in await venue.positions()}
            except VenueError as exc:
                log.warning("compliance: positions at %s unreadable: %s", venue.name, exc)
                position = None
            else:
                # What was just read includes these orders' fills: back them out.
                for o in new:
                    position[o.symbol] = position.get(o.symbol, 0.0) - _signed_fill(o)
        for order in sorted(new, key=lambda o: o.submitted_at):
            before = None if position is None else position.get(order.symbol, 0.0)
            if position is not None:
                position[order.symbol] = (before or 0.0) + _signed_fill(order)
            if order.id not in judged:
                continue
            w.orders_judged += 1
            problem = self._problem(venue, order, before)
            if problem is not None:
                await self._violation(venue, order, problem)
        w.error = None
        w.last_ok = self.wall()
        return requests

    def _judged(self, venue: Venue, order: VenueOrder) -> bool:
        if getattr(venue, "cancel_scope", "account") == "prefix":
            prefix = getattr(venue, "client_order_prefix", "")
            return (order.client_order_id.startswith(prefix)
                    or order.client_order_id.startswith(SUPERVISOR_ORDER_PREFIX))
        return True

    def _problem(self, venue: Venue, order: VenueOrder, before: float | None
                 ) -> tuple[str, int] | None:
        """(why, gate view seq) when the order breaks the gate; None when it does not.
        ``before``: the position before the order; None: unknown."""
        if order.client_order_id.startswith(SUPERVISOR_ORDER_PREFIX):
            if self._ours(order.client_order_id):
                return None
            seq = self.history.current[1] if self.history.current else 0
            return ("carries the supervisor's prefix but the supervisor did not send it",
                    seq)
        views = self.history.in_force(order.submitted_at - self.config.grace_s,
                                      order.submitted_at)
        # With the position unknown, any position could make (part of) it reducing: the
        # most permissive one, the order's full size in the opposite direction.
        positions = ([before] if before is not None else
                     [order.qty if order.side == "sell" else -order.qty])
        if any(complies(view, order.symbol, order.side, order.qty, pos, venue.name)
               for _, view in views for pos in positions):
            return None
        seq, view = views[-1]
        return why_refused(view, order, venue.name), seq

    async def _violation(self, venue: Venue, order: VenueOrder,
                         problem: tuple[str, int]) -> None:
        why, seq = problem
        w = self.watches[venue.name]
        w.violations += 1
        what = (f"{order.side} {_num(order.qty)} {order.symbol} (order {order.id}, "
                f"client_order_id {order.client_order_id})")
        cancelled = "already closed"
        if order.is_open:
            try:
                await venue.cancel_order(order.id)
                cancelled = "cancelled"
            except VenueError as exc:
                cancelled = f"cancel failed ({exc}): the kill-switch takes it"
        w.last_violation = {"at": self.wall(), "order_id": order.id,
                            "client_order_id": order.client_order_id, "symbol": order.symbol,
                            "side": order.side, "qty": order.qty, "why": why,
                            "gate_seq": seq, "order": cancelled}
        log.error("compliance: venue %s: %s %s; %s", venue.name, what, why, cancelled)
        await self.report(Finding(
            actor=self.name, incident_class="runaway-engine", scope=f"venue:{venue.name}",
            summary=(f"venue {venue.name}: the engine ignored its gate: {what} {why}; "
                     f"order {cancelled}"),
            evidence={"venue": venue.name, "order_id": order.id,
                      "client_order_id": order.client_order_id, "symbol": order.symbol,
                      "side": order.side, "qty": order.qty,
                      "submitted_at": order.submitted_at, "why": why, "gate_seq": seq,
                      "order": cancelled}))

    def status(self) -> dict[str, Any]:
        now = self.wall()
        current = self.history.current
        return {
            "enabled": self.config.enabled,
            "gate_seq": current[1] if current else 0,
            "budget_share": self.config.budget_share,
            "venues": {
                name: {"orders_seen": w.orders_seen, "orders_judged": w.orders_judged,
                       "violations": w.violations,
                       "lag_s": None if w.last_ok is None else round(now - w.last_ok, 3),
                       "interval_s": round(w.interval_s, 3), "error": w.error,
                       "last_violation": w.last_violation}
                for name, w in self.watches.items()},
        }


def _signed_fill(order: VenueOrder) -> float:
    return order.filled_qty if order.side == "buy" else -order.filled_qty


def _num(value: float) -> str:
    return f"{value:g}"
