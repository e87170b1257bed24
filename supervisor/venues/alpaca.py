"""The HTTP venue adapter: the Alpaca Trading API v2 subset the desk needs.

One `HttpVenue` per venue, shared by the heartbeat and the kill-switch, holds one
keep-alive `httpx.AsyncClient` with room for a few connections, so a kill never pays a
connect and a hung heartbeat never queues a kill behind it.

Errors (all `VenueError`, messages lowercase and naming the venue):
    VenueTimeout        no answer within `timeout_s` (every request is bounded)
    VenueUnavailable    connection failed, 5xx, or 429 (VenueRateLimited)
    VenueRejected       401, 403, 422 (the venue refused: credentials or an order reject)
    VenueProtocolError  any other status, or a body that does not decode to the API shape
Credentials travel only as headers and are scrubbed from every message.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import quote

import httpx
import msgspec
import trio

from supervisor.core.calendar import parse_hhmm
from supervisor.core.errors import (
    VenueError,
    VenueProtocolError,
    VenueRateLimited,
    VenueRejected,
    VenueTimeout,
    VenueUnavailable,
)
from supervisor.venues.base import (
    CancelEntry,
    CancelReport,
    RateLimit,
    VenueOrder,
    VenuePosition,
)
from supervisor.venues.warmline import LineNotReady, WarmCancelLine

if TYPE_CHECKING:
    from supervisor.config import VenueConfig

__all__ = ["HttpVenue"]

_T = TypeVar("_T")

_PAGE = 500  # Alpaca's largest page for GET /v2/orders
# Enough for a heartbeat, a kill and a reconciliation at once, each on its own socket.
log = logging.getLogger("desk.venues")

_LIMITS = httpx.Limits(max_connections=8, max_keepalive_connections=8, keepalive_expiry=30.0)
# httpx failures that mean "the kept-alive socket was dead", worth one retry.
_STALE_CONNECTION = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
_CANCEL_DONE = frozenset({200, 204, 404, 422})  # 404/422: already gone or already closed


class _WireOrder(msgspec.Struct):
    id: str
    client_order_id: str
    symbol: str
    side: str
    qty: float | None  # null for notional orders
    filled_qty: float
    status: str
    created_at: datetime
    submitted_at: datetime | None = None


class _WirePosition(msgspec.Struct):
    symbol: str
    qty: float
    side: str | None = None
    current_price: float | None = None


class _WireCancel(msgspec.Struct):
    id: str
    status: int


class _WireCalendarDay(msgspec.Struct):
    date: str
    open: str
    close: str


class _WireClock(msgspec.Struct):
    timestamp: datetime
    is_open: bool


class _WireError(msgspec.Struct):
    message: str


class HttpVenue:
    """An Alpaca-compatible venue over HTTP.

    Args:
        name: the venue's name, used in every error message.
        base_url: e.g. "https://paper-api.alpaca.markets" or a simulator's URL.
        key_id: sent as APCA-API-KEY-ID.
        secret_key: sent as APCA-API-SECRET-KEY.
        timeout_s: deadline for each request (trio time).
        cancel_scope: "account" cancels every open order with DELETE /v2/orders;
            "prefix" cancels only orders whose client_order_id starts with the prefix.
        client_order_prefix: the engine's client_order_id prefix; `submit_order` also
            uses it to name orders it submits without an id.
        transport: an httpx transport (tests).
        wall_clock: epoch seconds, for the time stamp of ``rate_limit``.
    """

    @classmethod
    def from_config(cls, vc: VenueConfig, key_id: str | None, secret_key: str | None, *,
                    wall_clock: Callable[[], float] = time.time) -> HttpVenue:
        """The adapter for a ``[[venues]]`` (or ``[[drill.venues]]``) entry, with its
        credentials resolved by the caller."""
        return cls(vc.name, vc.base_url, key_id=key_id, secret_key=secret_key,
                   timeout_s=vc.timeout_s, cancel_scope=vc.cancel_scope,
                   client_order_prefix=vc.client_order_prefix, wall_clock=wall_clock)

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        key_id: str | None = None,
        secret_key: str | None = None,
        timeout_s: float = 2.0,
        cancel_scope: Literal["account", "prefix"] = "account",
        client_order_prefix: str = "",
        transport: httpx.AsyncBaseTransport | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if cancel_scope not in ("account", "prefix"):
            raise ValueError(f"venue {name}: cancel_scope must be account or prefix")
        if cancel_scope == "prefix" and not client_order_prefix:
            raise ValueError(f"venue {name}: cancel_scope prefix needs a client_order_prefix")
        if not timeout_s > 0:
            raise ValueError(f"venue {name}: timeout_s must be positive, got {timeout_s}")
        self.name = name
        self.timeout_s = timeout_s
        self.cancel_scope = cancel_scope
        self.client_order_prefix = client_order_prefix
        url = httpx.URL(base_url)
        self._where = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
        # Short strings would scrub ordinary words out of messages; real keys are long.
        self._secrets = tuple(s for s in (key_id, secret_key, url.password) if s and len(s) >= 4)
        headers = {"accept": "application/json"}
        if key_id is not None:
            headers["APCA-API-KEY-ID"] = key_id
        if secret_key is not None:
            headers["APCA-API-SECRET-KEY"] = secret_key
        self._closed = False
        self._wall = wall_clock
        # The budget the venue's last answer carrying rate-limit headers stated; None
        # before any such answer (playbook 01 broker-failover step 02 "rate-limit headroom").
        self.rate_limit: RateLimit | None = None
        # The kill path's own warm line (account scope: one DELETE cancels everything);
        # the daemon runs it with `await nursery.start(venue.warm_line.run)`.
        self.warm_line: WarmCancelLine | None = None
        if cancel_scope == "account" and transport is None:
            self.warm_line = WarmCancelLine(
                name, base_url, {k: v for k, v in headers.items() if k != "accept"},
                timeout_s=timeout_s)
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            # trio.fail_after bounds every request; httpx's own timeouts stay out of it.
            timeout=None,
            limits=_LIMITS,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"HttpVenue(name={self.name!r}, url={self._where!r})"

    @property
    def base_url(self) -> str:
        return str(self._client.base_url)

    def credentials(self) -> tuple[str | None, str | None]:
        """The key id and secret in use (for the credential rotation; never logged)."""
        headers = self._client.headers
        return headers.get("APCA-API-KEY-ID"), headers.get("APCA-API-SECRET-KEY")

    def set_credentials(self, key_id: str, secret_key: str) -> None:
        """Use a rotated credential from the next request on, without a restart (playbook 01
        api-credentials step 04): the ordinary client and the kill path's warm line."""
        self._client.headers["APCA-API-KEY-ID"] = key_id
        self._client.headers["APCA-API-SECRET-KEY"] = secret_key
        self._secrets = (*self._secrets, *(s for s in (key_id, secret_key) if len(s) >= 4))
        if self.warm_line is not None:
            self.warm_line.set_headers({"APCA-API-KEY-ID": key_id,
                                        "APCA-API-SECRET-KEY": secret_key})

    async def __aenter__(self) -> HttpVenue:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections; safe to call twice, completes even when cancelled."""
        if self._closed:
            return
        self._closed = True
        with trio.move_on_after(1.0, shield=True):
            await self._client.aclose()

    # ---- the API ----

    async def ping(self) -> float:
        """GET /v2/clock; returns the round trip in seconds of trio time."""
        started = trio.current_time()
        response = await self._request("GET", "/v2/clock")
        self._decode("GET /v2/clock", response, _WireClock)
        return trio.current_time() - started

    async def warm(self) -> None:
        """Open the keep-alive connection now (a ping), so a first kill does not connect.

        Raises the same VenueErrors as `ping`.
        """
        await self.ping()

    async def account(self) -> dict[str, object]:
        """GET /v2/account as a plain dict (Alpaca's field names, numbers as strings)."""
        response = await self._request("GET", "/v2/account")
        return self._decode("GET /v2/account", response, dict[str, Any])

    async def open_orders(self) -> list[VenueOrder]:
        """GET /v2/orders?status=open, every page, oldest first."""
        return await self._paged("open", None)

    async def orders_since(self, after_epoch: float) -> list[VenueOrder]:
        """Every order submitted after `after_epoch` (any status), oldest first."""
        return await self._paged("all", datetime.fromtimestamp(after_epoch, tz=UTC))

    async def positions(self) -> list[VenuePosition]:
        """GET /v2/positions; quantities signed (short negative)."""
        response = await self._request("GET", "/v2/positions")
        wire = self._decode("GET /v2/positions", response, list[_WirePosition])
        out = []
        for w in wire:
            if not math.isfinite(w.qty):
                raise self._protocol("GET /v2/positions", f"position {w.symbol} qty is not finite")
            # Alpaca signs short quantities; a venue that only says "short" gets signed here.
            qty = -abs(w.qty) if w.side == "short" else w.qty
            price = w.current_price
            if price is not None and not (math.isfinite(price) and price > 0):
                price = None  # a price the venue cannot state is no price to trade at
            out.append(VenuePosition(symbol=w.symbol, qty=qty, price=price))
        return out

    async def order_by_client_id(self, client_order_id: str) -> VenueOrder | None:
        """GET /v2/orders:by_client_order_id: the order sent with that id, or None when
        the venue has none (404): how an order whose submit timed out is found before
        anything is sent again.

        Raises:
            VenueError: the venue did not answer; whether the order exists is unknown.
        """
        what = "GET /v2/orders:by_client_order_id"
        response = await self._request("GET", "/v2/orders:by_client_order_id",
                                       params={"client_order_id": client_order_id},
                                       ok=(200, 404))
        if response.status_code == 404:
            return None
        return self._order(self._decode(what, response, _WireOrder), what)

    def start_cancel_nowait(self) -> bool:
        """The kill path's first move: write cancel-all on the warm line now, with no
        checkpoint, so every venue's request is in its socket before any task switch.
        True: await ``finish_cancel`` for the report. False: use ``cancel_all``."""
        return self.warm_line is not None and self.warm_line.send_cancel_nowait()

    async def finish_cancel(self) -> CancelReport:
        """The report of the cancel-all that ``start_cancel_nowait`` wrote.

        Raises:
            VenueError: no (valid) answer; the line is dropped and reconnects.
        """
        assert self.warm_line is not None
        requested, answers = await self.warm_line.finish_cancel()
        return self._account_report(requested, answers)

    async def cancel_all(self) -> CancelReport:
        """Cancel the open orders in this adapter's scope, without waiting for fills.

        A cancel is confirmed only by a later open-order list: entries in `failed`
        (status not 200; 0 when no answer came) are still open or unknown.

        Raises:
            VenueError: account scope, when DELETE /v2/orders fails as a whole; prefix
                scope, when the open-order list cannot be read.
        """
        if self.cancel_scope == "prefix":
            return await self._cancel_prefixed()
        if self.warm_line is not None:
            try:
                requested, answers = await self.warm_line.cancel_all()
            except LineNotReady:
                pass  # not open or busy right now: the ordinary client, at once
            except VenueTimeout:
                raise  # a hung venue: the verifier asks again, not a second wait now
            except VenueError as exc:
                # The line broke mid-request: the venue may or may not have seen it, and
                # cancel-all is idempotent, so ask again the ordinary way.
                log.warning("%s; retrying cancel-all on the ordinary client",
                            self._scrub(str(exc)))
            else:
                return self._account_report(requested, answers)
        what = "DELETE /v2/orders"
        response = await self._request("DELETE", "/v2/orders", ok=(200, 207))
        entries: list[_WireCancel] = []
        if response.content.strip():
            entries = self._decode(what, response, list[_WireCancel])
        return self._account_report(len(entries), ((e.id, e.status) for e in entries))

    def _account_report(self, requested: int,
                        answers: Iterable[tuple[str, int]]) -> CancelReport:
        """A cancel-all's report (warm line or httpx): every answer but 200 failed."""
        failed = tuple(CancelEntry(i, s) for i, s in answers if s != 200)
        return CancelReport(self.name, requested, failed, "account")

    async def submit_order(
        self,
        *,
        symbol: str,
        qty: float,
        side: str,
        type: str = "limit",
        limit_price: float | None = None,
        time_in_force: str = "day",
        client_order_id: str | None = None,
    ) -> VenueOrder:
        """POST /v2/orders; an order without an id gets `client_order_prefix` + a uuid.

        Raises:
            VenueRejected: the venue refused the order (403, 422).
            VenueTimeout: no ack in time; the order may exist (never retried).
        """
        payload: dict[str, str] = {
            "symbol": symbol,
            "qty": _dec(qty),
            "side": side,
            "type": type,
            "time_in_force": time_in_force,
        }
        if limit_price is not None:
            payload["limit_price"] = _dec(limit_price)
        if client_order_id is None and self.client_order_prefix:
            client_order_id = f"{self.client_order_prefix}{uuid.uuid4().hex}"
        if client_order_id is not None:
            payload["client_order_id"] = client_order_id
        response = await self._request("POST", "/v2/orders", json=payload)
        return self._order(self._decode("POST /v2/orders", response, _WireOrder), "POST /v2/orders")

    async def calendar(self, start: dt.date, end: dt.date
                       ) -> list[tuple[dt.date, dt.time, dt.time]]:
        """GET /v2/calendar: the venue's sessions from ``start`` to ``end`` (inclusive),
        each (date, open, close) in the exchange's local time; a date it does not list
        is closed.

        Raises:
            VenueError: no answer, or not the calendar's shape.
        """
        what = "GET /v2/calendar"
        response = await self._request("GET", "/v2/calendar", params={
            "start": start.isoformat(), "end": end.isoformat()})
        out = []
        for day in self._decode(what, response, list[_WireCalendarDay]):
            try:
                out.append((dt.date.fromisoformat(day.date), parse_hhmm(day.open),
                            parse_hhmm(day.close)))
            except ValueError as exc:
                raise self._protocol(what, f"bad session {day.date}: {exc}") from None
        return out

    async def cancel_after(self, timeout_s: float) -> None:
        """POST /v2/cancel_after {"timeout_ms": N}: (re-)arm the venue's dead man's switch
        (it cancels every open order unless re-armed within ``timeout_s``); 0 disarms.
        An extension modelled on BitMEX ``cancelAllAfter`` (Binance
        ``countdownCancelAll``, Kraken ``CancelAllOrdersAfter``): Alpaca has no such API,
        so a venue enables it with ``dead_man_s`` only where it exists.

        Raises:
            VenueError: not armed (the venue refused or did not answer).
        """
        await self._request("POST", "/v2/cancel_after",
                            json={"timeout_ms": max(0, round(timeout_s * 1000))})

    async def cancel_order(self, order_id: str) -> None:
        """DELETE /v2/orders/{id}: cancel one order (already closed or gone counts as done).

        Raises:
            VenueError: the venue refused or did not answer; the order may still be open.
        """
        await self._request("DELETE", f"/v2/orders/{quote(order_id, safe='')}",
                            ok=tuple(_CANCEL_DONE))

    # ---- plumbing ----

    async def _cancel_prefixed(self) -> CancelReport:
        mine = [
            o
            for o in await self.open_orders()
            if o.client_order_id.startswith(self.client_order_prefix)
        ]
        statuses: dict[str, int] = {}

        async def cancel_one(order_id: str) -> None:
            try:
                response = await self._send("DELETE", f"/v2/orders/{quote(order_id, safe='')}")
            except VenueError:
                statuses[order_id] = 0
            else:
                statuses[order_id] = response.status_code

        async with trio.open_nursery() as nursery:
            for order in mine:
                nursery.start_soon(cancel_one, order.id)
        failed = tuple(
            CancelEntry(o.id, statuses[o.id]) for o in mine if statuses[o.id] not in _CANCEL_DONE
        )
        return CancelReport(self.name, len(mine), failed, "prefix")

    async def _paged(self, status: str, after: datetime | None) -> list[VenueOrder]:
        """GET /v2/orders page by page (limit=500, ascending by submitted_at).

        Each page restarts 1 µs before the last stamp seen and drops repeats, so orders
        sharing a stamp across a page edge are not lost (unless more than 500 share one
        microsecond).
        """
        what = "GET /v2/orders"
        seen: dict[str, _WireOrder] = {}
        while True:
            params = {"status": status, "direction": "asc", "limit": str(_PAGE)}
            if after is not None:
                params["after"] = _rfc3339(after)
            response = await self._request("GET", "/v2/orders", params=params)
            page = self._decode(what, response, list[_WireOrder])
            fresh = [w for w in page if w.id not in seen]
            seen.update((w.id, w) for w in fresh)
            if len(page) < _PAGE or not fresh:
                break
            after = max(_stamp(w) for w in page) - timedelta(microseconds=1)
        orders = [self._order(w, what) for w in seen.values()]
        orders.sort(key=lambda o: o.submitted_at)
        return orders

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: object = None,
        ok: Collection[int] = (200,),
    ) -> httpx.Response:
        """Send, then turn any status outside `ok` into the matching VenueError."""
        response = await self._send(method, path, params=params, json=json)
        status = response.status_code
        if status in ok:
            return response
        what = f"{method} {path}"
        message = f"venue {self.name}: {what} answered {status}"
        detail = self._detail(response)
        if detail:
            message += f": {detail}"
        if status == 429:
            raise VenueRateLimited(message)
        if status >= 500:
            raise VenueUnavailable(message)
        if status in (401, 403, 422):
            raise VenueRejected(message)
        raise VenueProtocolError(message)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: object = None,
    ) -> httpx.Response:
        """One request under `fail_after(timeout_s)`; transport failures become VenueErrors."""
        what = f"{method} {path}"
        if self._closed:
            raise VenueUnavailable(f"venue {self.name}: {what} on a closed adapter")
        try:
            with trio.fail_after(self.timeout_s):
                try:
                    response = await self._client.request(method, path, params=params,
                                                          json=json)
                except _STALE_CONNECTION:
                    # A kept-alive socket the server had closed; an order post is never
                    # repeated (it might have arrived), anything else is safe to resend.
                    if method == "POST":
                        raise
                    response = await self._client.request(method, path, params=params,
                                                          json=json)
                self._note_rate_limit(response)
                return response
        except (trio.TooSlowError, httpx.TimeoutException) as exc:
            raise VenueTimeout(
                f"venue {self.name}: {what} timed out after {self.timeout_s} s"
            ) from exc
        except httpx.DecodingError as exc:
            raise self._protocol(what, f"undecodable body ({self._scrub(str(exc))})") from exc
        except httpx.RequestError as exc:
            reason = self._scrub(str(exc)) or type(exc).__name__
            raise VenueUnavailable(f"venue {self.name}: {what} failed: {reason}") from exc

    def _note_rate_limit(self, response: httpx.Response) -> None:
        """Keep the budget an answer states; an answer without (valid) headers keeps the
        last one known."""
        headers = response.headers
        try:
            limit = int(headers["x-ratelimit-limit"])
            remaining = int(headers["x-ratelimit-remaining"])
            reset = float(headers["x-ratelimit-reset"])
        except (KeyError, ValueError):
            return
        if limit < 0 or remaining < 0 or not math.isfinite(reset):
            return
        self.rate_limit = RateLimit(limit=limit, remaining=remaining, reset=reset,
                                    ts=self._wall())

    def _decode(self, what: str, response: httpx.Response, type_: type[_T]) -> _T:
        try:
            # strict=False: Alpaca sends quantities and prices as decimal strings.
            return msgspec.json.decode(response.content, type=type_, strict=False)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise self._protocol(what, self._scrub(str(exc))) from exc

    def _order(self, w: _WireOrder, what: str) -> VenueOrder:
        qty = 0.0 if w.qty is None else w.qty  # notional order: no share count known yet
        if not (math.isfinite(qty) and math.isfinite(w.filled_qty)):
            raise self._protocol(what, f"order {w.id} has a non-finite quantity")
        return VenueOrder(
            id=w.id,
            client_order_id=w.client_order_id,
            symbol=w.symbol,
            side=w.side,
            qty=qty,
            filled_qty=w.filled_qty,
            status=w.status,
            submitted_at=_stamp(w).timestamp(),
        )

    def _protocol(self, what: str, detail: str) -> VenueProtocolError:
        return VenueProtocolError(
            f"venue {self.name}: {what} answered a body that does not match the api: {detail}"
        )

    def _detail(self, response: httpx.Response) -> str:
        """The venue's error message (Alpaca's "message", else the text), short, scrubbed."""
        try:
            text = msgspec.json.decode(response.content, type=_WireError).message
        except (msgspec.DecodeError, msgspec.ValidationError):
            text = response.content[:200].decode("utf-8", errors="replace")
        return self._scrub(" ".join(text.split())[:200])

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _stamp(w: _WireOrder) -> datetime:
    stamp = w.submitted_at or w.created_at
    # A naive stamp is read as UTC, like the venue's own clock.
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def _rfc3339(stamp: datetime) -> str:
    return stamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dec(value: float) -> str:
    """A decimal string as Alpaca takes quantities and prices: "10", "100.25"."""
    if not math.isfinite(value):
        raise ValueError(f"quantity or price must be finite, got {value}")
    text = f"{round(value, 9):.9f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text
