"""The gate's rules, pure: what the playbook lets an order do given the desk's state.

The engine's gate client (``supervisor.control.gate``) asks ``decide`` before every order;
the supervisor's compliance watch (``supervisor.runtime.compliance``) asks the same
function afterwards, of every order the venues report, with the view that was in force
when the order was made. One rule book, two sides.

Rules (``decide``):
- HALTED, DISARMED, or closed: nothing (playbook 02: "P0 means stop trading").
- The part of an order that brings the position towards flat passes in full outside
  those modes, whatever the throttle: reducing risk is never throttled.
- The part that adds exposure (past flat, or away from it) is scaled by the size
  multiplier (playbook 02: "P1 means degrade"), capped at the multiplier times the
  symbol's ``max_order_qty`` when one is configured, and is refused in a suppressed
  symbol (playbook 03 missing-data: stale data, "let existing flat by EOD"), while the
  model is stopped, and on a venue off the route.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

CLOSED_MODES = frozenset({"HALTED", "DISARMED"})


class GateView(msgspec.Struct, frozen=True, kw_only=True):
    """What the gate knows of the desk, from the newest status."""

    mode: str
    size_multiplier: float
    suppressed: frozenset[str] = frozenset()
    # Why the model may not add exposure now (D2 mismatch, disabled by drift, paused by
    # config drift); None: it may.
    model_stopped: str | None = None
    # playbook 01 broker-failover: send new orders to this venue only; None: any venue.
    route: str | None = None
    # The largest new exposure one order may add per symbol at full size ([compliance]
    # max_order_qty); a symbol not listed has no cap.
    max_order_qty: dict[str, float] = {}


def view_from_status(status: dict[str, Any]) -> GateView:
    gate = status.get("gate") or {}
    stopped = gate.get("model_blocked") or gate.get("model_disabled") or (
        "config paused: " + ", ".join(gate["config_paused"]) if gate.get("config_paused")
        else None)
    return GateView(
        mode=str(status.get("mode", "HALTED")),
        size_multiplier=float(status.get("size_multiplier", 0.0)),
        suppressed=frozenset(gate.get("suppressed") or ()),
        model_stopped=str(stopped) if stopped else None,
        route=str(gate["route"]) if gate.get("route") else None,
        max_order_qty={str(k): float(v) for k, v in (gate.get("max_order_qty") or {}).items()},
    )


def _split(view: GateView, symbol: str, side: str, qty: float, position: float,
           venue: str | None) -> tuple[float, float, bool] | None:
    """An order as the rules see it: (the part that brings the position towards flat, the
    part that adds exposure, whether new exposure may go at all); None when nothing may
    (closed modes, a nonsense side or quantity)."""
    if view.mode in CLOSED_MODES or not qty > 0 or math.isnan(qty):
        return None
    signed = qty if side == "buy" else -qty if side == "sell" else math.nan
    if math.isnan(signed):
        return None
    reduces = position != 0 and (signed < 0) == (position > 0)
    reducing = min(qty, abs(position)) if reduces else 0.0
    off_route = venue is not None and view.route is not None and venue != view.route
    adds = not (symbol in view.suppressed or view.model_stopped is not None or off_route)
    return reducing, qty - reducing, adds


def decide(view: GateView | None, symbol: str, side: str, qty: float, position: float,
           venue: str | None = None) -> float:
    """The quantity of this order the playbook allows (0.0: refuse). Pure.

    Args:
        view: the desk as the gate knows it; None when the gate is closed.
        side: "buy" or "sell".
        qty: the order's quantity (> 0).
        position: the engine's current signed position in ``symbol``.
        venue: where the order goes, if the engine says: while an operator has flipped
            the route (playbook 01 broker-failover), another venue gets reducing orders only.
    """
    split = None if view is None else _split(view, symbol, side, qty, position, venue)
    if view is None or split is None:
        return 0.0
    # The part that brings the position towards flat passes in full; the part past flat
    # is new exposure: scaled by the multiplier (and capped), none where it may not go.
    reducing, new_exposure, adds = split
    if not adds:
        return float(reducing)
    cap = view.max_order_qty.get(symbol, math.inf)
    return float(reducing + min(new_exposure, cap) * view.size_multiplier)


def complies(view: GateView, symbol: str, side: str, qty: float, position: float,
             venue: str | None = None) -> bool:
    """Whether an engine that obeyed ``decide`` under ``view`` could have sent this order
    (what the compliance watch asks of an order a venue reports). ``decide`` scales the
    quantity the engine asked for, which the venue never sees: so the part that adds
    exposure complies when it is at most the multiplier times the symbol's cap (no cap:
    any size while the multiplier is above zero). Pure."""
    split = _split(view, symbol, side, qty, position, venue)
    if split is None:
        return False
    _, new_exposure, adds = split
    if new_exposure <= 1e-9:
        return True
    if not adds or not view.size_multiplier > 0:
        return False
    cap = view.max_order_qty.get(symbol, math.inf)
    return new_exposure <= cap * view.size_multiplier + 1e-9
