"""A simulated broker venue speaking the Alpaca Trading API v2 subset the desk uses.

`VenueSimulator` is an ASGI app; `serve_venue` serves it on 127.0.0.1. Quantities and
prices travel as decimal strings and timestamps as RFC 3339 UTC, as Alpaca sends them.
Errors under `/v2/` are Alpaca-shaped, `{"code": int, "message": str}`; errors under
`/sim/` are `{"error": str}`.

Run standalone: `python -m simulators.venue --port 8101 --name alpha`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hmac
import logging
import math
import os
import random
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Annotated

import msgspec
import trio

from simulators.faults import Fault, FaultBook, FaultError
from simulators.http import (
    Receive,
    Request,
    Scope,
    Send,
    receive_request,
    run_until_interrupted,
    send_json,
    serve_asgi,
)
from supervisor.core.calendar import Calendar, parse_hhmm

__all__ = [
    "VENUE_FAULTS",
    "CancelOneFails",
    "Hang",
    "Latency",
    "Outage",
    "PartialCancel",
    "PartialFill",
    "PendingCancel",
    "RateLimited",
    "Reject",
    "SilentAcks",
    "VenueSimulator",
    "serve_venue",
]

_log = logging.getLogger(__name__)

NonNegativeMs = Annotated[int, msgspec.Meta(ge=0)]
Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class Outage(Fault, tag="outage", frozen=True):
    """Every /v2/ request answers 503."""


class Hang(Fault, tag="hang", frozen=True):
    """/v2/ requests get no answer until the fault is cleared."""


class Latency(Fault, tag="latency", frozen=True):
    """`ms` milliseconds are added before every /v2/ answer."""

    ms: NonNegativeMs


class SilentAcks(Fault, tag="silent_acks", frozen=True):
    """POST /v2/orders creates the order but answers only once the fault is cleared."""


class Reject(Fault, tag="reject", frozen=True):
    """POST /v2/orders answers 403 and creates nothing."""


class PartialCancel(Fault, tag="partial_cancel", frozen=True):
    """On DELETE /v2/orders, round(fraction * n) entries get status 500 and stay open."""

    fraction: Fraction


class CancelOneFails(Fault, tag="cancel_one_fails", frozen=True):
    """DELETE /v2/orders/{id} answers 500 and the order stays open (a venue whose
    per-order cancel is broken too: the kill-switch keeps retrying it with backoff)."""


class PendingCancel(Fault, tag="pending_cancel", frozen=True):
    """A cancelled order stays pending_cancel (open) for `ms` of trio time."""

    ms: NonNegativeMs


class PartialFill(Fault, tag="partial_fill", frozen=True):
    """New orders fill `fraction` of their quantity at once (status partially_filled)."""

    fraction: Fraction


class CancelAfterFails(Fault, tag="cancel_after_fails", frozen=True):
    """POST /v2/cancel_after answers 500 and arms nothing (a dead man's switch that
    cannot be re-armed: the armed timer, if any, runs out)."""


class RateLimited(Fault, tag="rate_limit", frozen=True):
    """Only `remaining` /v2/ requests are left in the budget of each one-minute window
    (from the moment the fault is set); beyond them requests answer 429."""

    remaining: Annotated[int, msgspec.Meta(ge=0)]


VENUE_FAULTS: tuple[type[Fault], ...] = (
    Outage,
    Hang,
    Latency,
    SilentAcks,
    Reject,
    PartialCancel,
    CancelOneFails,
    PendingCancel,
    PartialFill,
    RateLimited,
    CancelAfterFails,
)

OPEN_STATUSES = frozenset({"new", "accepted", "partially_filled", "pending_cancel"})
_TIME_IN_FORCE = frozenset({"day", "gtc", "opg", "cls", "ioc", "fok"})
_MAX_LIMIT = 500  # Alpaca's page size cap for GET /v2/orders
_DEFAULT_LIMIT = 50  # Alpaca's default page size
_START_CASH = 100_000.0
# Alpaca's Trading API budget: 200 requests per minute per account.
ALPACA_RATE_LIMIT = 200
_RATE_WINDOW_S = 60.0


class _Order(msgspec.Struct):
    seq: int
    id: str
    client_order_id: str
    symbol: str
    qty: float
    side: str
    type: str
    time_in_force: str
    limit_price: float | None
    submitted_at: float
    updated_at: float
    status: str = "new"
    filled_qty: float = 0.0
    filled_avg_price: float | None = None
    filled_at: float | None = None
    canceled_at: float | None = None
    cancel_due: float | None = None  # trio time at which pending_cancel turns canceled

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


class _Position(msgspec.Struct):
    qty: float = 0.0
    avg_entry_price: float = 0.0


class _OrderRequest(msgspec.Struct):
    """The POST /v2/orders body; Alpaca accepts numbers as strings or JSON numbers."""

    symbol: str
    side: str
    type: str
    time_in_force: str
    qty: str | float | None = None
    limit_price: str | float | None = None
    client_order_id: str | None = None


class _CancelAfterRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The POST /v2/cancel_after body (modelled on BitMEX cancelAllAfter): 0 disarms."""

    timeout_ms: Annotated[int, msgspec.Meta(ge=0, le=86_400_000)]


class _CalendarRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The PUT /sim/calendar body (``VenueSimulator.set_calendar``)."""

    session: str = "00:00-24:00"
    timezone: str = "UTC"
    days: list[int] | None = None
    closed: list[str] = []
    early_closes: dict[str, str] = {}


class _PriceRequest(msgspec.Struct):
    symbol: str
    price: float


class _HttpError(Exception):
    """Ends a request with an error response."""

    def __init__(self, status: int, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code if code is not None else status * 100_000 + 10_000


Reply = tuple[int, object]
_Handler = Callable[[Request, str], Reply]


class VenueSimulator:
    """A simulated Alpaca-like venue with fault injection and in-process test verbs.

    Args:
        name: the venue's name (also seeds its account id).
        key_id: if given with `secret_key`, /v2/ requests must carry both headers.
        secret_key: see `key_id`.
        accepted_keys: key id -> secret of more credentials the venue accepts (a broker
            account with several API keys, for credential rotation); with neither these
            nor `key_id`, any credentials or none are accepted (docs/architecture.md).
        seed: seeds ids, prices and the choice of partial_cancel failures.
        wall_clock: epoch seconds for timestamps; intervals use trio time.
        rate_limit: /v2/ requests allowed per one-minute window (Alpaca: 200), stated in
            X-RateLimit-* headers on every /v2/ answer; beyond it requests answer 429
            until the window ends. None: unlimited, no headers.
    """

    def __init__(
        self,
        name: str,
        *,
        key_id: str | None = None,
        secret_key: str | None = None,
        seed: int = 0,
        wall_clock: Callable[[], float] = time.time,
        accepted_keys: Mapping[str, str] | None = None,
        rate_limit: int | None = ALPACA_RATE_LIMIT,
    ) -> None:
        if (key_id is None) != (secret_key is None):
            raise ValueError(f"venue {name}: give both key_id and secret_key, or neither")
        if rate_limit is not None and rate_limit < 1:
            raise ValueError(f"venue {name}: rate_limit must be >= 1 or None, got {rate_limit}")
        self.name = name
        # Every credential the account accepts; None: any (the default, docs/architecture.md).
        self._keys: dict[str, str] | None = None
        if key_id is not None and secret_key is not None:
            self._keys = {key_id: secret_key}
        if accepted_keys is not None:
            self._keys = {**(self._keys or {}), **accepted_keys}
        self._seed = seed
        self._wall_clock = wall_clock
        self._rng = random.Random(f"{seed}:{name}")
        self._account_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        self._created_at = wall_clock()
        self._orders: dict[str, _Order] = {}
        self._positions: dict[str, _Position] = {}
        self._prices: dict[str, float] = {}
        self._walks: dict[str, random.Random] = {}
        self._cash = _START_CASH
        self.rate_limit = rate_limit
        self._window_start: float | None = None  # trio time the current window opened
        # The dead man's switch (POST /v2/cancel_after): the trio time at which every
        # open order is cancelled unless re-armed first; None: disarmed.
        self._cancel_at: float | None = None
        self._cancel_after_ms = 0
        self.dead_man_fired = 0
        self.set_calendar()
        """How many times the dead man's switch ran out and cancelled everything."""
        self._window_used = 0
        self._fault_marker: float | None = None  # set_at of the rate_limit fault counted
        self._fault_used = 0
        self.faults = FaultBook(VENUE_FAULTS, check=self._check_fault)
        self.requests: Counter[str] = Counter()
        """Requests per route, e.g. `requests["DELETE /v2/orders"]`, counted on arrival."""
        self.connections: set[tuple[str, int]] = set()
        """Client (host, port) pairs seen on /v2/ requests: one per TCP connection."""
        self._routes: dict[str, dict[str, _Handler]] = {
            "/v2/account": {"GET": self._get_account},
            "/v2/clock": {"GET": self._get_clock},
            "/v2/calendar": {"GET": self._get_calendar},
            "/v2/orders": {
                "GET": self._list_orders,
                "POST": self._post_order,
                "DELETE": self._cancel_all,
            },
            "/v2/orders:by_client_order_id": {"GET": self._get_by_client_order_id},
            "/v2/orders/{id}": {"GET": self._get_order, "DELETE": self._cancel_one},
            "/v2/positions": {"GET": self._list_positions, "DELETE": self._close_all},
            "/v2/positions/{symbol}": {"DELETE": self._close_one},
            "/v2/cancel_after": {"POST": self._cancel_after},
            "/sim/requests": {"GET": self._sim_requests},
            "/sim/orders": {"GET": self._sim_orders, "POST": self._sim_place},
            "/sim/positions": {"GET": self._sim_positions},
            "/sim/price": {"PUT": self._sim_price},
            "/sim/calendar": {"PUT": self._sim_calendar},
        }

    def __repr__(self) -> str:
        return f"VenueSimulator(name={self.name!r})"

    def _check_fault(self, fault: Fault) -> None:
        if isinstance(fault, RateLimited) and self.rate_limit is None:
            raise FaultError(f"venue {self.name} has no rate limit to exhaust "
                             "(started with rate_limit None)")

    def _spend(self) -> tuple[bool, list[tuple[bytes, bytes]]]:
        """Take one request from the budget: (allowed, the X-RateLimit-* headers)."""
        if self.rate_limit is None:
            return True, []
        now = trio.current_time()
        if self._window_start is None or now >= self._window_start + _RATE_WINDOW_S:
            self._window_start, self._window_used, self._fault_used = now, 0, 0
        left = self.rate_limit - self._window_used
        fault = self.faults.get(RateLimited)
        if fault is not None:
            marker = self.faults.set_at(RateLimited)
            if marker != self._fault_marker:
                self._fault_marker, self._fault_used = marker, 0
            left = min(left, fault.remaining - self._fault_used)
        allowed = left > 0
        if allowed:
            self._window_used += 1
            self._fault_used += 1
            left -= 1
        reset = math.ceil(self._wall_clock() + self._window_start + _RATE_WINDOW_S - now)
        return allowed, [(b"x-ratelimit-limit", str(self.rate_limit).encode()),
                         (b"x-ratelimit-remaining", str(max(0, left)).encode()),
                         (b"x-ratelimit-reset", str(reset).encode())]

    # ---- test verbs (sync: they never block) ----

    def price(self, symbol: str) -> float:
        """The symbol's simulated price: 100.0, then a seeded random walk per fill."""
        if symbol not in self._prices:
            self._walks[symbol] = random.Random(f"{self._seed}:{symbol}")
            self._prices[symbol] = 100.0
        return self._prices[symbol]

    def set_price(self, symbol: str, price: float) -> None:
        """Move the market; resting limit orders that become marketable fill."""
        if not math.isfinite(price) or price <= 0:
            raise ValueError(f"venue {self.name}: price must be positive, got {price}")
        self.price(symbol)
        self._prices[symbol] = price
        now = self._wall_clock()
        for order in list(self._orders.values()):
            if order.symbol == symbol and order.is_open and order.status != "pending_cancel":
                if order.type == "limit" and self._marketable(order):
                    self._fill(order, order.qty - order.filled_qty, price, now)

    def accept_key(self, key_id: str, secret_key: str) -> None:
        """Add an API key to the account, as generating one in the broker UI does (playbook
        01 api-credentials step 01). From then on only the accepted keys authenticate."""
        if not key_id or not secret_key:
            raise ValueError(f"venue {self.name}: a key needs a key id and a secret")
        self._keys = {**(self._keys or {}), key_id: secret_key}

    def revoke_key(self, key_id: str) -> None:
        """Revoke an API key in the broker UI: requests with it answer 401 (KeyError if
        the account has no such key)."""
        if self._keys is None or key_id not in self._keys:
            raise KeyError(f"venue {self.name}: no key {key_id!r} to revoke")
        del self._keys[key_id]

    def open_orders(self) -> list[dict[str, object]]:
        """The open orders, as Alpaca order objects, oldest first."""
        self._advance()
        return [_order_json(o) for o in self._orders.values() if o.is_open]

    def orders(self) -> list[dict[str, object]]:
        """Every order ever placed, as Alpaca order objects, oldest first."""
        self._advance()
        return [_order_json(o) for o in self._orders.values()]

    def order(self, order_id: str) -> dict[str, object]:
        """One order by id (KeyError if unknown)."""
        self._advance()
        return _order_json(self._orders[order_id])

    def positions(self) -> list[dict[str, object]]:
        """The non-zero positions, as Alpaca position objects, by symbol."""
        return [
            self._position_json(symbol, p)
            for symbol, p in sorted(self._positions.items())
            if p.qty != 0
        ]

    def place(
        self,
        symbol: str,
        qty: float,
        side: str,
        *,
        type: str = "limit",
        limit_price: float | None = None,
        time_in_force: str = "day",
        client_order_id: str | None = None,
    ) -> dict[str, object]:
        """Create an order as if another client had posted it (faults do not apply).

        A limit order without `limit_price` rests 5 % away from the market. Raises
        ValueError with the venue's 422 message on bad input.
        """
        if type == "limit" and limit_price is None:
            market = self.price(symbol)
            limit_price = round(market * (0.95 if side == "buy" else 1.05), 2)
        body = _OrderRequest(
            symbol=symbol,
            side=side,
            type=type,
            time_in_force=time_in_force,
            qty=qty,
            limit_price=limit_price,
            client_order_id=client_order_id,
        )
        try:
            return self._create_order(body)
        except _HttpError as exc:
            raise ValueError(f"venue {self.name}: {exc.message}") from None

    def fill(
        self, order_id: str, qty: float | None = None, price: float | None = None
    ) -> dict[str, object]:
        """Fill an open order (its remainder by default) as if the market traded."""
        self._advance()
        order = self._orders[order_id]
        if not order.is_open:
            raise ValueError(f"venue {self.name}: order {order_id} is {order.status}")
        remaining = order.qty - order.filled_qty
        amount = remaining if qty is None else min(qty, remaining)
        at = price if price is not None else (order.limit_price or self.price(order.symbol))
        self._fill(order, amount, at, self._wall_clock())
        return _order_json(order)

    # ---- ASGI ----

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = await receive_request(scope, receive, send)
        if request is None:
            return
        try:
            await self._serve(request, receive, send)
        except _ClientGone:
            return
        except Exception:
            # Never let garbage take the simulator down; the client sees a 500.
            _log.exception("venue %s: error serving %s %s", self.name, request.method, request.path)
            await send_json(send, 500, {"code": 50010000, "message": "internal server error"})

    async def _serve(self, request: Request, receive: Receive, send: Send) -> None:
        if request.path.startswith("/sim/") and await self.faults.handle(request, send):
            return
        route, arg = _match(request.path)
        is_venue_api = request.path.startswith("/v2/")
        self.requests[f"{request.method} {route if route in self._routes else 'unknown'}"] += 1
        if is_venue_api:
            if request.client is not None:
                self.connections.add(request.client)
            await self._hold(Hang, receive)
            latency = self.faults.get(Latency)
            if latency is not None and latency.ms:
                await trio.sleep(latency.ms / 1000)
            if Outage in self.faults:
                await _send_error(send, 503, "service unavailable", 50310000)
                return
            allowed, budget = self._spend()
            if not allowed:
                await send_json(send, 429, {"code": 42910000, "message": "rate limit exceeded"},
                                headers=budget)
                return
            if not self._authorized(request):
                await send_json(send, 401, {"code": 40110000,
                                            "message": "request is not authorized"},
                                headers=budget)
                return
        else:
            budget = []
        self._advance()
        status, body = self._dispatch(request, route, arg)
        if is_venue_api and route == "/v2/orders" and request.method == "POST" and status == 200:
            # silent_acks: the order exists and is open, but the ack never comes.
            await self._hold(SilentAcks, receive)
        await send_json(send, status, body, headers=budget)

    def _dispatch(self, request: Request, route: str | None, arg: str) -> Reply:
        methods = self._routes.get(route or "")
        if methods is None:
            return 404, _error_body(404, "endpoint not found", 40410000, request.path)
        handler = methods.get(request.method)
        if handler is None:
            return 405, _error_body(405, "method not allowed", 40510000, request.path)
        if request.too_large:
            return 413, _error_body(413, "request body too large", 41310000, request.path)
        if request.path.startswith("/v2/") and request.method == "POST" and Reject in self.faults:
            return 403, {"code": 40310000, "message": "order rejected by venue (simulated)"}
        try:
            return handler(request, arg)
        except _HttpError as exc:
            return exc.status, _error_body(exc.status, exc.message, exc.code, request.path)

    async def _hold(self, kind: type[Fault], receive: Receive) -> None:
        """Wait while `kind` is in force; raise _ClientGone if the client hangs up."""
        if kind not in self.faults:
            return
        gone = False
        async with trio.open_nursery() as nursery:

            async def watch_disconnect() -> None:
                nonlocal gone
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone = True
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_disconnect)
            await self.faults.wait_while(kind)
            nursery.cancel_scope.cancel()
        if gone:
            raise _ClientGone

    def _authorized(self, request: Request) -> bool:
        if self._keys is None:
            return True
        key = request.headers.get("apca-api-key-id", "")
        secret = request.headers.get("apca-api-secret-key", "")
        expected = self._keys.get(key)
        # compare_digest on the secret, always, so timing says little about which was wrong.
        secret_ok = hmac.compare_digest(secret.encode(), (expected or "\0").encode())
        return expected is not None and secret_ok

    # ---- /v2/ handlers ----

    def _get_account(self, request: Request, arg: str) -> Reply:
        long_value = short_value = 0.0
        for symbol, p in self._positions.items():
            value = p.qty * self.price(symbol)
            if value > 0:
                long_value += value
            else:
                short_value += value
        equity = self._cash + long_value + short_value
        return 200, {
            "id": self._account_id,
            "account_number": f"SIM{self._account_id[:8].upper()}",
            "status": "ACTIVE",
            "crypto_status": "INACTIVE",
            "currency": "USD",
            "cash": _dec(self._cash),
            "buying_power": _dec(max(equity, 0.0)),
            "regt_buying_power": _dec(max(equity, 0.0)),
            "non_marginable_buying_power": _dec(max(self._cash, 0.0)),
            "portfolio_value": _dec(equity),
            "equity": _dec(equity),
            "last_equity": _dec(_START_CASH),
            "long_market_value": _dec(long_value),
            "short_market_value": _dec(short_value),
            "initial_margin": "0",
            "maintenance_margin": "0",
            "multiplier": "1",
            "daytrade_count": 0,
            "pattern_day_trader": False,
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "trade_suspended_by_user": False,
            "shorting_enabled": True,
            "created_at": _rfc3339(self._created_at),
        }

    def set_calendar(self, *, session: str = "00:00-24:00", timezone: str = "UTC",
                     days: list[int] | None = None, closed: list[str] | None = None,
                     early_closes: dict[str, str] | None = None) -> None:
        """Give the venue a trading calendar (``/v2/calendar``, ``/v2/clock``). By default
        it is open every day, all day; an exchange's hours, holidays and early closes
        come from here (``PUT /sim/calendar`` takes the same fields).

        Raises:
            ValueError: a malformed session, zone or date.
        """
        self.calendar = Calendar(
            session=session, zone=timezone, days=range(7) if days is None else days,
            closed={dt.date.fromisoformat(d): "holiday (simulated)" for d in closed or []},
            early_closes={dt.date.fromisoformat(d): parse_hhmm(c)
                          for d, c in (early_closes or {}).items()})

    def _get_clock(self, request: Request, arg: str) -> Reply:
        now = self._wall_clock()
        inside, _, _ = self.calendar.period(now)
        later = self.calendar.sessions(now, 2)
        next_open = next((s.open for s in later if s.open > now), None)
        next_close = later[0].close if later else None
        return 200, {
            "timestamp": _rfc3339(now),
            "is_open": inside,
            "next_open": _rfc3339_or_none(next_open if next_open is None
                                          or math.isfinite(next_open) else None),
            "next_close": _rfc3339_or_none(next_close if next_close is None
                                           or math.isfinite(next_close) else None),
        }

    def _get_calendar(self, request: Request, arg: str) -> Reply:
        """GET /v2/calendar?start=YYYY-MM-DD&end=YYYY-MM-DD: each session in the range,
        times in the exchange's zone (Alpaca's shape)."""
        cal = self.calendar
        today = dt.datetime.fromtimestamp(self._wall_clock(), cal.zone).date()
        try:
            start = dt.date.fromisoformat(request.query.get("start", today.isoformat()))
            end = dt.date.fromisoformat(request.query.get(
                "end", (today + dt.timedelta(days=30)).isoformat()))
        except ValueError:
            raise _HttpError(422, "start and end must be YYYY-MM-DD") from None
        if end < start or (end - start).days > 1000:
            raise _HttpError(422, "end must be on or after start, at most 1000 days later")
        out = []
        day = start
        while day <= end:
            session, _ = cal.day(day)
            if session is not None:
                opened = dt.datetime.fromtimestamp(session.open, cal.zone)
                closed = dt.datetime.fromtimestamp(session.close, cal.zone)
                close = "24:00" if closed.time() >= dt.time(23, 59, 59) else (
                    closed.strftime("%H:%M"))
                out.append({"date": day.isoformat(), "open": opened.strftime("%H:%M"),
                            "close": close, "settlement_date": day.isoformat()})
            day += dt.timedelta(days=1)
        return 200, out

    def _sim_calendar(self, request: Request, arg: str) -> Reply:
        try:
            body = msgspec.json.decode(request.body, type=_CalendarRequest)
            self.set_calendar(session=body.session, timezone=body.timezone, days=body.days,
                              closed=body.closed, early_closes=body.early_closes)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            raise _HttpError(400, f"bad calendar: {exc}") from None
        return 200, {"session": body.session, "timezone": body.timezone}

    def _list_orders(self, request: Request, arg: str) -> Reply:
        query = request.query
        status = query.get("status", "open")
        if status not in ("open", "closed", "all"):
            raise _HttpError(422, "status must be one of open, closed, all")
        direction = query.get("direction", "desc")
        if direction not in ("asc", "desc"):
            raise _HttpError(422, "direction must be asc or desc")
        limit = _DEFAULT_LIMIT
        if "limit" in query:
            try:
                limit = int(query["limit"])
            except ValueError:
                raise _HttpError(422, "limit must be an integer") from None
            if not 1 <= limit <= _MAX_LIMIT:
                raise _HttpError(422, f"limit must be between 1 and {_MAX_LIMIT}")
        after = _parse_time(query, "after")
        until = _parse_time(query, "until")
        symbols = {s for s in query.get("symbols", "").split(",") if s}
        chosen = [
            o
            for o in self._orders.values()
            if (status == "all" or (status == "open") == o.is_open)
            and (after is None or _micros(o.submitted_at) > after)
            and (until is None or _micros(o.submitted_at) < until)
            and (not symbols or o.symbol in symbols)
        ]
        chosen.sort(key=lambda o: (_micros(o.submitted_at), o.seq), reverse=direction == "desc")
        return 200, [_order_json(o) for o in chosen[:limit]]

    def _post_order(self, request: Request, arg: str) -> Reply:
        try:
            body = msgspec.json.decode(request.body, type=_OrderRequest)
        except msgspec.ValidationError as exc:
            raise _HttpError(422, f"invalid order: {exc}") from None
        except msgspec.DecodeError:
            raise _HttpError(400, "request body format is invalid", 40010000) from None
        return 200, self._create_order(body)

    def _get_order(self, request: Request, arg: str) -> Reply:
        order = self._orders.get(arg)
        if order is None:
            raise _HttpError(404, f"order not found for {arg}")
        return 200, _order_json(order)

    def _get_by_client_order_id(self, request: Request, arg: str) -> Reply:
        wanted = request.query.get("client_order_id", "")
        for order in self._orders.values():
            if order.client_order_id == wanted:
                return 200, _order_json(order)
        raise _HttpError(404, f"order not found for client_order_id {wanted}")

    def _cancel_all(self, request: Request, arg: str) -> Reply:
        now = self._wall_clock()
        open_orders = [o for o in self._orders.values() if o.is_open]
        failing: set[str] = set()
        partial = self.faults.get(PartialCancel)
        if partial is not None and open_orders:
            count = int(partial.fraction * len(open_orders) + 0.5)
            failing = {o.id for o in self._rng.sample(open_orders, count)}
        entries: list[dict[str, object]] = []
        for order in open_orders:
            if order.id in failing:
                body: object = {"code": 50010000, "message": "internal server error"}
                entries.append({"id": order.id, "status": 500, "body": body})
            else:
                self._cancel(order, now)
                entries.append({"id": order.id, "status": 200, "body": _order_json(order)})
        return 207, entries

    def _cancel_one(self, request: Request, arg: str) -> Reply:
        order = self._orders.get(arg)
        if order is None:
            raise _HttpError(404, f"order not found for {arg}")
        if not order.is_open:
            raise _HttpError(422, f'order is already in "{order.status}" state')
        if self.faults.get(CancelOneFails) is not None:
            raise _HttpError(500, "internal server error")
        self._cancel(order, self._wall_clock())
        return 204, None

    def _list_positions(self, request: Request, arg: str) -> Reply:
        return 200, self.positions()

    def _close(self, symbol: str, qty: float) -> dict[str, object]:
        """A market order that reduces the position in ``symbol`` by ``qty`` (Alpaca's
        position liquidation)."""
        held = self._positions[symbol].qty
        return self._create_order(_OrderRequest(
            symbol=symbol, side="sell" if held > 0 else "buy", type="market",
            time_in_force="day", qty=qty))

    def _close_all(self, request: Request, arg: str) -> Reply:
        """DELETE /v2/positions: liquidate every position with a market order each (with
        ``cancel_orders=true``, cancel every open order first); 207 with one entry per
        symbol, as Alpaca answers."""
        if request.query.get("cancel_orders") == "true":
            now = self._wall_clock()
            for order in self._orders.values():
                if order.is_open:
                    self._cancel(order, now)
        out = []
        for symbol, p in sorted(self._positions.items()):
            if p.qty != 0:
                out.append({"symbol": symbol, "status": 200,
                            "body": self._close(symbol, abs(p.qty))})
        return 207, out

    def _close_one(self, request: Request, arg: str) -> Reply:
        """DELETE /v2/positions/{symbol}[?qty=N | ?percentage=P]: reduce one position by a
        market order (all of it by default)."""
        symbol = arg.upper()
        p = self._positions.get(symbol)
        if p is None or p.qty == 0:
            raise _HttpError(404, "position does not exist", 40410000)
        qty, pct = request.query.get("qty"), request.query.get("percentage")
        if qty is not None and pct is not None:
            raise _HttpError(422, "only one of qty or percentage may be given")
        amount = abs(p.qty)
        if qty is not None:
            amount = _positive(qty, "qty")
        elif pct is not None:
            share = _positive(pct, "percentage")
            if share > 100:
                raise _HttpError(422, "percentage must be at most 100")
            amount = round(abs(p.qty) * share / 100, 9)
        if amount > abs(p.qty) + 1e-9:
            raise _HttpError(403, f"insufficient qty available for order (requested: "
                                  f"{_dec(amount)}, available: {_dec(abs(p.qty))})", 40310000)
        return 200, self._close(symbol, amount)

    def _cancel_after(self, request: Request, arg: str) -> Reply:
        """POST /v2/cancel_after: (re-)arm the dead man's switch for ``timeout_ms``
        (every open order is cancelled unless re-armed before), 0 disarms."""
        try:
            body = msgspec.json.decode(request.body, type=_CancelAfterRequest)
        except msgspec.ValidationError as exc:
            raise _HttpError(422, f"invalid cancel_after: {exc}") from None
        except msgspec.DecodeError:
            raise _HttpError(400, "request body format is invalid", 40010000) from None
        if self.faults.get(CancelAfterFails) is not None:
            raise _HttpError(500, "internal server error")
        self._cancel_after_ms = body.timeout_ms
        if body.timeout_ms == 0:
            self._cancel_at = None
            return 200, {"timeout_ms": 0, "cancel_at": None}
        self._cancel_at = trio.current_time() + body.timeout_ms / 1000
        return 200, {"timeout_ms": body.timeout_ms,
                     "cancel_at": _rfc3339(self._wall_clock() + body.timeout_ms / 1000)}

    # ---- /sim/ handlers ----

    def _sim_requests(self, request: Request, arg: str) -> Reply:
        return 200, {"requests": dict(self.requests)}

    def _sim_orders(self, request: Request, arg: str) -> Reply:
        return 200, {"orders": self.open_orders()}

    def _sim_positions(self, request: Request, arg: str) -> Reply:
        return 200, {"positions": self.positions()}

    def _sim_place(self, request: Request, arg: str) -> Reply:
        return self._post_order(request, arg)

    def _sim_price(self, request: Request, arg: str) -> Reply:
        try:
            body = msgspec.json.decode(request.body, type=_PriceRequest)
            self.set_price(body.symbol, body.price)
        except (msgspec.DecodeError, ValueError) as exc:
            raise _HttpError(400, f"bad price request: {exc}") from None
        return 200, {"symbol": body.symbol, "price": body.price}

    # ---- the book ----

    def _create_order(self, body: _OrderRequest) -> dict[str, object]:
        symbol = body.symbol.strip().upper()
        if not symbol or len(symbol) > 32:
            raise _HttpError(422, "symbol is required")
        if body.side not in ("buy", "sell"):
            raise _HttpError(422, "side must be buy or sell")
        if body.type not in ("market", "limit"):
            raise _HttpError(422, "type must be market or limit")
        if body.time_in_force not in _TIME_IN_FORCE:
            raise _HttpError(
                422, "time_in_force must be one of " + ", ".join(sorted(_TIME_IN_FORCE))
            )
        qty = _positive(body.qty, "qty")
        limit_price = None
        if body.type == "limit":
            limit_price = _positive(body.limit_price, "limit_price")
        client_order_id = body.client_order_id
        if client_order_id is None:
            client_order_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        elif not client_order_id or len(client_order_id) > 128:
            raise _HttpError(422, "client_order_id must be 1 to 128 characters")
        elif any(o.client_order_id == client_order_id for o in self._orders.values()):
            raise _HttpError(422, "client_order_id must be unique", 40010001)
        now = self._wall_clock()
        order = _Order(
            seq=len(self._orders),
            id=str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
            client_order_id=client_order_id,
            symbol=symbol,
            qty=qty,
            side=body.side,
            type=body.type,
            time_in_force=body.time_in_force,
            limit_price=limit_price,
            submitted_at=now,
            updated_at=now,
        )
        self._orders[order.id] = order
        marketable = self._marketable(order)
        at = self.price(symbol) if marketable else (limit_price or self.price(symbol))
        partial = self.faults.get(PartialFill)
        if partial is not None:
            self._fill(order, round(qty * partial.fraction, 9), at, now)
        elif marketable:
            self._fill(order, qty, at, now)
        return _order_json(order)

    def _marketable(self, order: _Order) -> bool:
        if order.type == "market" or order.limit_price is None:
            return True
        market = self.price(order.symbol)
        return order.limit_price >= market if order.side == "buy" else order.limit_price <= market

    def _fill(self, order: _Order, qty: float, price: float, now: float) -> None:
        if qty <= 0:
            return
        done = order.filled_qty
        order.filled_avg_price = ((order.filled_avg_price or 0.0) * done + price * qty) / (
            done + qty
        )
        order.filled_qty = round(done + qty, 9)
        order.updated_at = now
        if order.filled_qty >= order.qty:
            order.status = "filled"
            order.filled_at = now
        else:
            order.status = "partially_filled"
        signed = qty if order.side == "buy" else -qty
        self._cash -= signed * price
        position = self._positions.setdefault(order.symbol, _Position())
        old = position.qty
        new = round(old + signed, 9)
        if old == 0 or (old > 0) == (signed > 0):
            position.avg_entry_price = (abs(old) * position.avg_entry_price + qty * price) / abs(
                new
            )
        elif new == 0:
            position.avg_entry_price = 0.0
        elif (new > 0) != (old > 0):
            position.avg_entry_price = price  # flipped through zero: a fresh position
        position.qty = new
        # The market moves a little with every trade: a seeded walk, so runs repeat.
        walk = self._walks[order.symbol]
        self._prices[order.symbol] = max(
            1.0, round(self.price(order.symbol) * (1 + walk.gauss(0, 0.001)), 2)
        )

    def _cancel(self, order: _Order, now: float) -> None:
        if order.status == "pending_cancel":
            return
        pending = self.faults.get(PendingCancel)
        order.updated_at = now
        if pending is not None and pending.ms > 0:
            order.status = "pending_cancel"
            order.cancel_due = trio.current_time() + pending.ms / 1000
            order.canceled_at = now + pending.ms / 1000
        else:
            order.status = "canceled"
            order.canceled_at = now

    def _advance(self) -> None:
        """Turn pending_cancel orders whose time has come into canceled, and run the dead
        man's switch out if its time has come (lazily: before anything reads or changes
        the venue's state, so no observer can tell it from a timer)."""
        now = trio.current_time()
        if self._cancel_at is not None and now >= self._cancel_at:
            fired_wall = self._wall_clock() - (now - self._cancel_at)
            cancelled = 0
            for order in self._orders.values():
                if order.is_open:
                    order.status = "canceled"
                    order.cancel_due = None
                    order.canceled_at = order.updated_at = fired_wall
                    cancelled += 1
            _log.warning("venue %s: dead man's switch ran out after %d ms: %d open order(s) "
                         "cancelled", self.name, self._cancel_after_ms, cancelled)
            self._cancel_at = None
            self.dead_man_fired += 1
        for order in self._orders.values():
            if order.cancel_due is not None and order.cancel_due <= now:
                order.status = "canceled"
                order.cancel_due = None
                order.updated_at = order.canceled_at or self._wall_clock()

    def _position_json(self, symbol: str, p: _Position) -> dict[str, object]:
        price = self.price(symbol)
        market_value = p.qty * price
        cost_basis = p.qty * p.avg_entry_price
        pl = market_value - cost_basis
        plpc = pl / abs(cost_basis) if cost_basis else 0.0
        return {
            "asset_id": _asset_id(symbol),
            "symbol": symbol,
            "exchange": "SIM",
            "asset_class": "us_equity",
            "asset_marginable": True,
            "avg_entry_price": _dec(p.avg_entry_price),
            "qty": _dec(p.qty),
            "qty_available": _dec(p.qty),
            "side": "long" if p.qty > 0 else "short",
            "market_value": _dec(market_value),
            "cost_basis": _dec(cost_basis),
            "unrealized_pl": _dec(pl),
            "unrealized_plpc": _dec(plpc),
            "unrealized_intraday_pl": _dec(pl),
            "unrealized_intraday_plpc": _dec(plpc),
            "current_price": _dec(price),
            "lastday_price": _dec(price),
            "change_today": "0",
        }


class _ClientGone(Exception):
    """The client hung up while its request was held by a fault."""


_ORDER_ID = re.compile(r"^/v2/orders/([^/]+)$")
_POSITION = re.compile(r"^/v2/positions/([^/]+)$")


def _match(path: str) -> tuple[str | None, str]:
    """The route template for a path and its {id} argument, or (None, "")."""
    found = _ORDER_ID.match(path)
    if found is not None:
        return "/v2/orders/{id}", found.group(1)
    found = _POSITION.match(path)
    if found is not None:
        return "/v2/positions/{symbol}", found.group(1)
    path = path.rstrip("/") or "/"
    return path, ""


def _error_body(status: int, message: str, code: int, path: str) -> object:
    if path.startswith("/sim/"):
        return {"error": message}
    return {"code": code, "message": message}


async def _send_error(send: Send, status: int, message: str, code: int) -> None:
    await send_json(send, status, {"code": code, "message": message})


def _positive(value: str | float | None, field: str) -> float:
    if value is None:
        raise _HttpError(422, f"{field} is required")
    try:
        number = float(value)
    except ValueError:
        raise _HttpError(422, f"{field} must be a decimal number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise _HttpError(422, f"{field} must be positive, got {value!r}")
    return number


def _parse_time(query: dict[str, str], field: str) -> int | None:
    """An RFC 3339 query parameter as epoch microseconds (naive means UTC)."""
    raw = query.get(field)
    if raw is None or raw == "":
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace(" ", "+"))
    except ValueError:
        raise _HttpError(422, f"{field} must be an RFC 3339 timestamp, got {raw!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return (parsed - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(epoch: float) -> int:
    return round(epoch * 1_000_000)


def _rfc3339(epoch: float) -> str:
    stamp = _EPOCH + timedelta(microseconds=_micros(epoch))
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _rfc3339_or_none(epoch: float | None) -> str | None:
    return None if epoch is None else _rfc3339(epoch)


def _dec(value: float) -> str:
    """A decimal string like Alpaca's: "10", "100.25", "-5"."""
    text = f"{round(value, 9):.9f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _asset_id(symbol: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sim-asset:{symbol}"))


def _order_json(o: _Order) -> dict[str, object]:
    return {
        "id": o.id,
        "client_order_id": o.client_order_id,
        "created_at": _rfc3339(o.submitted_at),
        "updated_at": _rfc3339(o.updated_at),
        "submitted_at": _rfc3339(o.submitted_at),
        "filled_at": _rfc3339_or_none(o.filled_at),
        "expired_at": None,
        "canceled_at": _rfc3339_or_none(o.canceled_at if o.status == "canceled" else None),
        "failed_at": None,
        "replaced_at": None,
        "replaced_by": None,
        "replaces": None,
        "asset_id": _asset_id(o.symbol),
        "symbol": o.symbol,
        "asset_class": "us_equity",
        "notional": None,
        "qty": _dec(o.qty),
        "filled_qty": _dec(o.filled_qty),
        "filled_avg_price": None if o.filled_avg_price is None else _dec(o.filled_avg_price),
        "order_class": "",
        "order_type": o.type,
        "type": o.type,
        "side": o.side,
        "time_in_force": o.time_in_force,
        "limit_price": None if o.limit_price is None else _dec(o.limit_price),
        "stop_price": None,
        "status": o.status,
        "extended_hours": False,
        "legs": None,
        "trail_percent": None,
        "trail_price": None,
        "hwm": None,
    }


async def serve_venue(
    sim: VenueSimulator,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `sim` until cancelled; `task_status.started(base_url)` once bound."""
    await serve_asgi(sim, host=host, port=port, task_status=task_status)


def _credentials(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """Key id from --key-id or $APCA_API_KEY_ID; the secret from a file or the env only."""
    key_id = args.key_id or os.environ.get("APCA_API_KEY_ID") or None
    secret: str | None
    if args.secret_file:
        with open(args.secret_file, encoding="utf-8") as handle:
            secret = handle.read().strip()
    else:
        secret = os.environ.get("APCA_API_SECRET_KEY") or None
    return key_id, secret


def main(argv: list[str] | None = None) -> int:
    """Command line: serve one simulated venue and print its base URL."""
    parser = argparse.ArgumentParser(prog="python -m simulators.venue", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", default="sim")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--key-id", help="required APCA-API-KEY-ID (or $APCA_API_KEY_ID)")
    parser.add_argument(
        "--secret-file", help="file holding the APCA-API-SECRET-KEY (or $APCA_API_SECRET_KEY)"
    )
    args = parser.parse_args(argv)
    try:
        key_id, secret = _credentials(args)
        sim = VenueSimulator(args.name, key_id=key_id, secret_key=secret, seed=args.seed)
    except (OSError, ValueError) as exc:
        print(f"simulators.venue: {exc}", file=sys.stderr)
        return 2

    return run_until_interrupted(partial(serve_venue, sim, host=args.host, port=args.port))


if __name__ == "__main__":
    sys.exit(main())
