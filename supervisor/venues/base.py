"""What every venue adapter offers, whatever its wire: the records it returns and the
``Venue`` interface that the kill-switch, the actors and the drills program against.

One module per venue kind implements it (``alpaca``: the Alpaca Trading API v2 subset
over HTTP, with its warm cancel line in ``warmline``). Errors are the ``VenueError``
family of ``supervisor.core.errors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec
import trio

from supervisor.core.errors import VenueError

# Alpaca's terminal statuses. Anything else (new, accepted, partially_filled,
# pending_cancel, pending_new, accepted_for_bidding, held, pending_replace, stopped,
# suspended, a status added tomorrow...) counts as open: unknown is the worse case.
CLOSED_STATUSES = frozenset({"filled", "canceled", "expired", "replaced", "rejected"})

class VenueOrder(msgspec.Struct, frozen=True):
    """An order as the venue reports it; quantities as floats, times in epoch seconds."""

    id: str
    client_order_id: str
    symbol: str
    side: str
    qty: float
    filled_qty: float
    status: str
    submitted_at: float

    @property
    def is_open(self) -> bool:
        """True unless the status is terminal (unknown statuses count as open)."""
        return self.status not in CLOSED_STATUSES


class VenuePosition(msgspec.Struct, frozen=True):
    """A position at the venue; `qty` is signed (short is negative); `price` is the
    venue's current price of the symbol when it states one (Alpaca ``current_price``)."""

    symbol: str
    qty: float
    price: float | None = None


class CancelEntry(msgspec.Struct, frozen=True):
    """One order's cancel outcome: its HTTP status, or 0 when no answer came."""

    order_id: str
    status: int


class CancelReport(msgspec.Struct, frozen=True):
    """What a cancel-all asked for and which entries did not succeed."""

    venue: str
    requested: int
    failed: tuple[CancelEntry, ...]
    scope: str


class RateLimit(msgspec.Struct, frozen=True):
    """The venue's request budget as its last answer stated it (Alpaca's
    ``X-RateLimit-Limit``, ``-Remaining``, ``-Reset``: requests per minute, requests left,
    and the epoch second at which the budget refills); ``ts`` is when it was read (epoch)."""

    limit: int
    remaining: int
    reset: float
    ts: float

    @property
    def headroom(self) -> float:
        """The share of the budget left, 0.0 to 1.0."""
        return max(0.0, min(1.0, self.remaining / self.limit)) if self.limit > 0 else 0.0


class Venue(Protocol):
    """A venue as the desk uses it. Every call is bounded by the adapter's own timeout
    and raises a ``VenueError`` (never anything else) when the venue fails."""

    name: str

    async def ping(self) -> float:
        """One round trip; its latency in seconds."""
        ...

    async def open_orders(self) -> list[VenueOrder]: ...

    async def orders_since(self, after_epoch: float) -> list[VenueOrder]: ...

    async def positions(self) -> list[VenuePosition]: ...

    async def submit_order(self, *, symbol: str, qty: float, side: str, type: str = "limit",
                           limit_price: float | None = None, time_in_force: str = "day",
                           client_order_id: str | None = None) -> VenueOrder: ...

    async def cancel_order(self, order_id: str) -> None: ...

    async def order_by_client_id(self, client_order_id: str) -> VenueOrder | None:
        """The order sent with that client_order_id; None when the venue has none."""
        ...

    async def cancel_all(self) -> CancelReport: ...


class PositionSource(Protocol):
    name: str

    async def positions(self) -> list[VenuePosition]: ...


async def read_positions(venues: Sequence[PositionSource]
                         ) -> dict[str, list[VenuePosition] | VenueError]:
    """Every venue's positions, asked at once: its list, or the ``VenueError`` it raised
    (broker truth; a venue that cannot say is never taken as flat)."""
    out: dict[str, list[VenuePosition] | VenueError] = {}

    async def one(venue: PositionSource) -> None:
        try:
            out[venue.name] = await venue.positions()
        except VenueError as exc:
            out[venue.name] = exc

    async with trio.open_nursery() as nursery:
        for venue in venues:
            nursery.start_soon(one, venue)
    return out
