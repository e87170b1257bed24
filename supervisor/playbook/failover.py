"""The broker-failover checks of playbook 01 (procedure broker-failover), against one venue.

``check_failover_venue`` runs steps 02 and 03 on the venue the route flips to:

- 02 "Confirm authentication on the secondary; check rate-limit headroom": ``GET
  /v2/account`` answers with an active account, and the budget its answer states
  (``X-RateLimit-*``, ``HttpVenue.rate_limit``) has at least ``min_headroom`` left;
- 03 "Open a single-share test order on a liquid symbol; cancel immediately": a limit
  buy far below the market (so it rests), cancelled at once, and confirmed closed by the
  venue's open-order list.

The failover drill (``supervisor.playbook.drills``) and the runbook checklist both call
it. It never raises a ``VenueError``: every failure is a step with ``ok`` false and the
venue's own words in ``detail``.
"""

from __future__ import annotations

import uuid

import msgspec
import trio

from supervisor.core.errors import VenueError
from supervisor.runtime.killswitch import SUPERVISOR_ORDER_PREFIX
from supervisor.venues.alpaca import HttpVenue
from supervisor.venues.base import RateLimit

__all__ = ["CHECK_ORDER_PREFIX", "CHECK_STEPS", "DRILL_ORDER_PREFIX", "DrillStep",
           "FailoverCheck", "check_failover_venue"]

# The steps, in order; the check passes only when every one ran and passed.
CHECK_STEPS = ("auth", "rate-limit headroom", "test order", "test cancel")

# client_order_id prefix of the orders the kill-switch drill places on paper venues (after
# the venue's own prefix): in the paper executor's scope, which must cancel them.
DRILL_ORDER_PREFIX = "desk-drill-"
# client_order_id prefix of the check's one-share test order: the supervisor's own
# (``supervisor.runtime.killswitch.in_scope`` leaves it out), because the broker-failover runbook
# may verify on a LIVE venue while the desk is HALTED, and the live kill verifier must
# not take the test order for the engine breaking the halt (a false "order(s) appeared
# after the switch" page, and the quiet period started again).
CHECK_ORDER_PREFIX = f"{SUPERVISOR_ORDER_PREFIX}failover-check-"


class DrillStep(msgspec.Struct, frozen=True):
    """One step of a drill or check: ``seconds`` since the drill began when it ended."""

    name: str
    ok: bool
    seconds: float
    detail: str


class FailoverCheck(msgspec.Struct, frozen=True):
    """Whether ``venue`` can take the route now (playbook 01 broker-failover steps 02-03)."""

    venue: str
    ok: bool
    steps: tuple[DrillStep, ...]
    rate_limit: RateLimit | None


async def check_failover_venue(
    venue: HttpVenue,
    symbol: str,
    *,
    qty: float = 1.0,
    limit_price: float = 1.0,
    min_headroom: float = 0.5,
    confirm_within_s: float = 5.0,
    poll_s: float = 0.2,
    started_at: float | None = None,
) -> FailoverCheck:
    """Check auth, rate-limit headroom and a test order on ``venue``.

    Args:
        venue: the venue the route flips to (a paper account in a drill).
        symbol: a liquid symbol (playbook 01 broker-failover step 03).
        qty: the test order's size: one share.
        limit_price: the test buy's limit, far below the market so that it rests.
        min_headroom: the share of the per-minute budget that must be left.
        confirm_within_s: how long the cancel may take to show in the open-order list.
        poll_s: how often the open-order list is read meanwhile.
        started_at: trio time the steps' ``seconds`` count from (default: now).

    Cancellation: a test order already placed may be left resting; its id is in the
    venue's order list under the ``desk-supervisor-failover-check-`` client_order_id
    prefix. Being the supervisor's own, it is neither counted nor cancelled by a kill-switch
    on a "prefix" scope venue (an "account" scope cancel-all takes it with the rest): it is
    a one-share buy far below the market, cancel it by hand.
    """
    t0 = trio.current_time() if started_at is None else started_at
    steps: list[DrillStep] = []

    def step(name: str, ok: bool, detail: str) -> bool:
        steps.append(DrillStep(name, ok, round(trio.current_time() - t0, 3), detail))
        return ok

    def done() -> FailoverCheck:
        ok = [s.name for s in steps if s.ok] == list(CHECK_STEPS)
        return FailoverCheck(venue.name, ok, tuple(steps), venue.rate_limit)

    # 02 "Confirm authentication on the secondary"
    try:
        account = await venue.account()
    except VenueError as exc:
        step("auth", False, f"GET /v2/account failed: {exc}")
        return done()
    status = str(account.get("status", "?"))
    blocked = [k for k in ("trading_blocked", "account_blocked") if account.get(k) is True]
    if status != "ACTIVE" or blocked:
        step("auth", False, f"account {account.get('account_number', '?')} is {status}"
             + (f" ({', '.join(blocked)})" if blocked else "") + ": it cannot trade")
        return done()
    step("auth", True, f"GET /v2/account: account {account.get('account_number', '?')} "
         f"{status}")

    # 02 "check rate-limit headroom"
    budget = venue.rate_limit
    if budget is None:
        step("rate-limit headroom", False, "the venue stated no budget (no X-RateLimit-* "
             "headers): headroom unknown")
        return done()
    if not step("rate-limit headroom", budget.headroom >= min_headroom,
                f"{budget.remaining} of {budget.limit} requests/min left "
                f"({budget.headroom:.0%}, need {min_headroom:.0%})"):
        return done()

    # 03 "Open a single-share test order on a liquid symbol; cancel immediately"
    client_id = f"{CHECK_ORDER_PREFIX}{uuid.uuid4().hex[:20]}"
    sent = trio.current_time()
    try:
        order = await venue.submit_order(symbol=symbol, qty=qty, side="buy", type="limit",
                                         limit_price=limit_price, client_order_id=client_id)
    except VenueError as exc:
        step("test order", False, f"{symbol} buy {qty:g} @ {limit_price:g} failed: {exc}")
        return done()
    ack_ms = (trio.current_time() - sent) * 1000
    if not step("test order", order.is_open,
                f"{symbol} buy {qty:g} @ {limit_price:g} acknowledged in {ack_ms:.0f} ms as "
                f"{order.status} (id {order.id})"
                + ("" if order.is_open else ": it did not rest, lower test_limit_price and "
                   "flatten the position it left")):
        return done()
    sent = trio.current_time()
    try:
        await venue.cancel_order(order.id)
    except VenueError as exc:
        step("test cancel", False, f"cancel of {order.id} failed: {exc}; the order may "
             "still rest")
        return done()
    still_open = True
    error = ""
    with trio.move_on_after(confirm_within_s):
        while True:
            try:
                still_open = any(o.id == order.id for o in await venue.open_orders())
                error = ""
            except VenueError as exc:
                error = f" (last read failed: {exc})"
            if not still_open:
                break
            await trio.sleep(poll_s)
    took_ms = (trio.current_time() - sent) * 1000
    step("test cancel", not still_open,
         f"cancelled, gone from the open orders in {took_ms:.0f} ms" if not still_open else
         f"order {order.id} still open {confirm_within_s:g} s after its cancel{error}")
    return done()
