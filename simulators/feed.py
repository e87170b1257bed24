"""A market-data feed simulator: one bar per symbol per vendor every `bar_interval_s`.

Bars are generated lazily from trio time (no background task): bar k closes at trio
time `origin + k * bar_interval_s` and carries the wall-clock stamp `wall_origin + k *
bar_interval_s`. Every vendor serves the same seeded random walk per symbol, so vendors
agree unless a fault makes one of them stall or lag.

    GET /v1/bars/latest?vendor=V&symbols=A,B   -> {"bars": [Bar, ...]} newest per symbol
    GET /v1/bars?vendor=V&symbol=S&since=EPOCH -> {"bars": [Bar, ...]} oldest first

Bar: {"symbol", "vendor", "ts" (epoch seconds), "o", "h", "l", "c", "v"} (numbers).
Errors: {"error": message} with 400 (bad query), 404 (unknown route), 405.

Run standalone: `python -m simulators.feed --port 8201 --symbols AAPL,MSFT`.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
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

__all__ = ["FEED_FAULTS", "Bar", "FeedSimulator", "Lag", "Stall", "serve_feed"]

_log = logging.getLogger(__name__)

_HISTORY = 10_000  # bars kept per symbol: about 2.8 h at one bar a second
_DEFAULT_LIMIT = 1_000
_MAX_LIMIT = 10_000


class Stall(Fault, tag="stall", frozen=True):
    """No new bars from `vendor` (every vendor if null) for `symbols` (all if null)."""

    vendor: str | None = None
    symbols: tuple[str, ...] | None = None


class Lag(Fault, tag="lag", frozen=True):
    """Bars from `vendor` (every vendor if null) arrive `seconds` late."""

    seconds: Annotated[float, msgspec.Meta(ge=0.0)]
    vendor: str | None = None


FEED_FAULTS: tuple[type[Fault], ...] = (Stall, Lag)


class Bar(
    msgspec.Struct,
    frozen=True,
    rename={"open": "o", "high": "h", "low": "l", "close": "c", "volume": "v"},
):
    """One OHLCV bar as the feed serves it (`ts` is its close, in epoch seconds)."""

    symbol: str
    vendor: str
    ts: float
    open: float
    high: float
    low: float
    close: float
    volume: float


class _Walk:
    """One symbol's bars, generated in order and kept for the last _HISTORY of them."""

    def __init__(self, seed: int, symbol: str) -> None:
        self._rng = random.Random(f"{seed}:{symbol}")
        self._last_close = 100.0
        self.first = 0  # index of bars[0]
        self.bars: deque[tuple[float, float, float, float, float]] = deque(maxlen=_HISTORY)

    def upto(self, index: int) -> None:
        """Generate bars until `index` exists (skipping what would fall out of history)."""
        next_index = self.first + len(self.bars)
        if index - next_index >= _HISTORY:
            # Far behind (nobody asked for hours): skip, the walk is not evidence of anything.
            skip = index - next_index - _HISTORY + 1
            self.first += len(self.bars) + skip
            self.bars.clear()
            next_index = self.first
        rng = self._rng
        while next_index <= index:
            o = self._last_close
            c = round(o * (1 + rng.gauss(0, 0.001)), 4)
            h = round(max(o, c) * (1 + abs(rng.gauss(0, 0.0005))), 4)
            low = round(min(o, c) * (1 - abs(rng.gauss(0, 0.0005))), 4)
            v = float(rng.randint(100, 10_000))
            if len(self.bars) == _HISTORY:
                self.first += 1
            self.bars.append((o, h, low, c, v))
            self._last_close = c
            next_index += 1


class FeedSimulator:
    """A simulated multi-vendor bar feed with stall and lag faults.

    Args:
        symbols: the symbols served.
        vendors: vendor names; the first is the default when a query names none.
        bar_interval_s: seconds of trio time between bars.
        wall_clock: epoch seconds for bar timestamps.
        seed: seeds the price walks.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        vendors: Sequence[str] = ("primary", "backup"),
        bar_interval_s: float = 1.0,
        wall_clock: Callable[[], float] = time.time,
        seed: int = 0,
    ) -> None:
        if not symbols or not vendors:
            raise ValueError("feed needs at least one symbol and one vendor")
        if not bar_interval_s > 0:
            raise ValueError(f"feed bar_interval_s must be positive, got {bar_interval_s}")
        self.symbols = tuple(symbols)
        self.vendors = tuple(vendors)
        self.bar_interval_s = bar_interval_s
        self._wall_clock = wall_clock
        self._walks = {symbol: _Walk(seed, symbol) for symbol in self.symbols}
        self._origin: tuple[float, float] | None = None  # (trio time, wall time) of bar 0
        self.faults = FaultBook(FEED_FAULTS, check=self._check_fault)

    def __repr__(self) -> str:
        return f"FeedSimulator(symbols={list(self.symbols)!r}, vendors={list(self.vendors)!r})"

    def start(self) -> None:
        """Pin bar 0 to now (idempotent; the first query does it otherwise)."""
        if self._origin is None:
            self._origin = (trio.current_time(), self._wall_clock())

    # ---- test verbs ----

    def latest(self, vendor: str, symbol: str) -> Bar | None:
        """The newest bar `vendor` shows for `symbol` now, or None if it shows none yet."""
        index = self._visible_index(vendor, symbol)
        if index < self._walks[symbol].first or index < 0:
            return None  # none yet, or lagging past the history kept
        return self._bar(vendor, symbol, index)

    def bars(
        self, vendor: str, symbol: str, since: float = 0.0, limit: int = _MAX_LIMIT
    ) -> list[Bar]:
        """Bars `vendor` shows for `symbol` stamped after `since`, oldest first."""
        last = self._visible_index(vendor, symbol)
        if last < 0:
            return []
        walk = self._walks[symbol]
        _, wall0 = self._start()
        # First index whose stamp is after `since`; the walk keeps only recent history.
        first = max(walk.first, math.floor((since - wall0) / self.bar_interval_s) + 1, 0)
        out: list[Bar] = []
        for index in range(first, last + 1):
            bar = self._bar(vendor, symbol, index)
            if bar.ts > since:
                out.append(bar)
                if len(out) >= limit:
                    break
        return out

    # ---- ASGI ----

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = await receive_request(scope, receive, send)
        if request is None:
            return
        try:
            if await self.faults.handle(request, send):
                return
            status, body = self._dispatch(request)
        except Exception:
            # Never let garbage take the simulator down; the client sees a 500.
            _log.exception("feed: error serving %s %s", request.method, request.path)
            status, body = 500, {"error": "internal server error"}
        await send_json(send, status, body)

    def _dispatch(self, request: Request) -> tuple[int, object]:
        path = request.path.rstrip("/")
        if path not in ("/v1/bars", "/v1/bars/latest"):
            return 404, {"error": f"no route {request.path}"}
        if request.method != "GET":
            return 405, {"error": "method not allowed"}
        query = request.query
        vendor = query.get("vendor") or self.vendors[0]
        if vendor not in self.vendors:
            known = ", ".join(self.vendors)
            return 400, {"error": f"unknown vendor {vendor!r}; known vendors: {known}"}
        if path == "/v1/bars/latest":
            wanted = [s for s in query.get("symbols", "").split(",") if s] or list(self.symbols)
            unknown = [s for s in wanted if s not in self._walks]
            if unknown:
                return 400, {"error": f"unknown symbols: {', '.join(unknown)}"}
            found = [self.latest(vendor, symbol) for symbol in wanted]
            return 200, {"bars": [bar for bar in found if bar is not None]}
        symbol = query.get("symbol", "")
        if symbol not in self._walks:
            return 400, {"error": f"unknown or missing symbol {symbol!r}"}
        try:
            since = float(query.get("since") or 0.0)
            limit = int(query.get("limit") or _DEFAULT_LIMIT)
        except ValueError:
            return 400, {"error": "since must be epoch seconds and limit an integer"}
        if not math.isfinite(since) or not 1 <= limit <= _MAX_LIMIT:
            return 400, {"error": f"since must be finite and limit within 1..{_MAX_LIMIT}"}
        return 200, {"bars": self.bars(vendor, symbol, since, limit)}

    # ---- the walk ----

    def _start(self) -> tuple[float, float]:
        self.start()
        assert self._origin is not None
        return self._origin

    def _visible_index(self, vendor: str, symbol: str) -> int:
        """Index of the newest bar this vendor shows for this symbol (-1: none yet)."""
        if vendor not in self.vendors or symbol not in self._walks:
            raise KeyError(f"feed has no vendor {vendor!r} or symbol {symbol!r}")
        trio0, _ = self._start()
        seen_at = trio.current_time()
        stall = self.faults.get(Stall)
        if stall is not None and stall.vendor in (None, vendor):
            if stall.symbols is None or symbol in stall.symbols:
                stalled_at = self.faults.set_at(Stall)
                if stalled_at is not None:
                    seen_at = min(seen_at, stalled_at)
        lag = self.faults.get(Lag)
        if lag is not None and lag.vendor in (None, vendor):
            seen_at -= lag.seconds
        # A hair of tolerance so a bar due exactly now (autojump clock) counts as out.
        index = math.floor((seen_at - trio0) / self.bar_interval_s + 1e-9)
        if index >= 0:
            self._walks[symbol].upto(index)
        return index

    def _bar(self, vendor: str, symbol: str, index: int) -> Bar:
        walk = self._walks[symbol]
        o, h, low, c, v = walk.bars[index - walk.first]
        _, wall0 = self._start()
        ts = wall0 + index * self.bar_interval_s
        return Bar(symbol, vendor, ts, o, h, low, c, v)

    def _check_fault(self, fault: Fault) -> None:
        vendor = getattr(fault, "vendor", None)
        if vendor is not None and vendor not in self.vendors:
            known = ", ".join(self.vendors)
            raise FaultError(f"unknown vendor {vendor!r}; known vendors: {known}")
        symbols = getattr(fault, "symbols", None) or ()
        unknown = [s for s in symbols if s not in self._walks]
        if unknown:
            raise FaultError(f"unknown symbols: {', '.join(unknown)}")


async def serve_feed(
    sim: FeedSimulator,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `sim` until cancelled; `task_status.started(base_url)` once bound."""
    sim.start()
    await serve_asgi(sim, host=host, port=port, task_status=task_status)


def main(argv: list[str] | None = None) -> int:
    """Command line: serve the feed and print its base URL."""
    parser = argparse.ArgumentParser(prog="python -m simulators.feed", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--symbols", default="AAPL,MSFT", help="comma-separated symbols")
    parser.add_argument("--vendors", default="primary,backup", help="comma-separated vendors")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between bars")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        sim = FeedSimulator(
            [s for s in args.symbols.split(",") if s],
            [v for v in args.vendors.split(",") if v],
            bar_interval_s=args.interval,
            seed=args.seed,
        )
    except ValueError as exc:
        print(f"simulators.feed: {exc}", file=sys.stderr)
        return 2

    return run_until_interrupted(partial(serve_feed, sim, host=args.host, port=args.port))


if __name__ == "__main__":
    sys.exit(main())
