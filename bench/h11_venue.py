"""A bench venue: the Alpaca v2 subset the daemon needs, served by h11 on trio.

Not a simulator (there are no orders, positions or faults): it answers every request at
once and exists to time one thing, the arrival of ``DELETE /v2/orders``. The arrival is
``time.monotonic_ns()`` taken as soon as h11 has parsed the request line and headers.
CLOCK_MONOTONIC is one clock for the whole machine on Linux, so the stamp compares with
the stamp a client process took before it wrote its ``kill`` line.

Routes (every answer is JSON with a Content-Length; connections are kept alive):

    GET    /v2/clock            200 {"timestamp", "is_open", "next_open", "next_close"}
    GET    /v2/orders           200 []          (status=open|all, after=... are ignored)
    DELETE /v2/orders           207 []          (the arrival is stamped)
    DELETE /v2/orders/{id}      404             (no such order: there are none)
    GET    /v2/positions        200 []
    GET    /v2/account          200 {...}
    GET    /bench/times         200 {"name", "delete_ns", "delete_bytes", "connections",
                                     "requests"}

Each stamp is also sent at once, as a 12-byte datagram ``(index, ns)``, to the Unix
datagram socket given by ``--notify``, so the bench client can wait on it instead of
polling. ``--times-file`` gets the same JSON as ``/bench/times`` at exit.

Run: ``python bench/h11_venue.py --name alpha --index 0 [--notify PATH]``; it prints its
base URL on stdout and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import struct
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import partial

import h11
import trio

NOTIFY = struct.Struct("<Iq")  # venue index, monotonic ns of the DELETE's arrival


class BenchVenue:
    """The route table and the stamps; one per process."""

    def __init__(self, name: str, index: int, notify_path: str | None) -> None:
        self.name = name
        self.index = index
        self.delete_ns: list[int] = []
        self.delete_bytes: list[int] = []
        self.connections = 0
        self.requests: Counter[str] = Counter()
        self._notify_path = notify_path or ""
        self._notify: socket.socket | None = None
        if notify_path:
            self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._notify.setblocking(False)

    def stamp_delete(self, ns: int, size: int) -> None:
        self.delete_ns.append(ns)
        self.delete_bytes.append(size)
        if self._notify is not None:
            # A lost datagram only makes the client time out; it never blocks us.
            with contextlib.suppress(OSError):
                self._notify.sendto(NOTIFY.pack(self.index, ns), self._notify_path)

    def times(self) -> dict[str, object]:
        return {"name": self.name, "delete_ns": self.delete_ns,
                "delete_bytes": self.delete_bytes, "connections": self.connections,
                "requests": dict(self.requests)}

    def answer(self, method: str, target: str) -> tuple[int, object]:
        path = target.partition("?")[0]
        route = "/v2/orders/{id}" if path.startswith("/v2/orders/") else path
        self.requests[f"{method} {route}"] += 1
        match method, path:
            case "GET", "/v2/clock":
                now = datetime.now(UTC)
                return 200, {"timestamp": _rfc3339(now), "is_open": True,
                             "next_open": _rfc3339(now + timedelta(hours=18)),
                             "next_close": _rfc3339(now + timedelta(hours=6))}
            case "GET", "/v2/orders" | "/v2/positions":
                return 200, []
            case "DELETE", "/v2/orders":
                return 207, []
            case "DELETE", _ if path.startswith("/v2/orders/"):
                return 404, {"code": 40410000, "message": "order not found"}
            case "GET", "/v2/account":
                return 200, _ACCOUNT
            case "GET", "/bench/times":
                return 200, self.times()
        return 404, {"code": 40410000, "message": f"no route {method} {path}"}


_ACCOUNT = {
    "id": "bench", "account_number": "BENCH0001", "status": "ACTIVE", "currency": "USD",
    "cash": "100000", "buying_power": "100000", "equity": "100000",
    "portfolio_value": "100000", "last_equity": "100000", "long_market_value": "0",
    "short_market_value": "0", "multiplier": "1", "trading_blocked": False,
    "account_blocked": False, "pattern_day_trader": False, "daytrade_count": 0,
}


def _rfc3339(stamp: datetime) -> str:
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def serve_connection(venue: BenchVenue, stream: trio.SocketStream) -> None:
    """One keep-alive HTTP/1.1 connection, requests answered in order."""
    venue.connections += 1
    conn = h11.Connection(h11.SERVER)
    last_chunk = 0
    request: h11.Request | None = None
    async with stream:
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    last_chunk = len(data)
                    conn.receive_data(data)  # b"" is EOF; h11 then says ConnectionClosed
                    continue
                if isinstance(event, h11.Request):
                    # Stamp first: nothing between the parse and the clock read.
                    arrived = time.monotonic_ns()
                    request = event
                    if event.method == b"DELETE" and event.target == b"/v2/orders":
                        venue.stamp_delete(arrived, last_chunk)
                elif isinstance(event, h11.EndOfMessage):
                    assert request is not None
                    status, body = venue.answer(request.method.decode(),
                                                request.target.decode())
                    payload = json.dumps(body, separators=(",", ":")).encode()
                    headers = [("content-type", "application/json"),
                               ("content-length", str(len(payload)))]
                    out = conn.send(h11.Response(status_code=status, headers=headers))
                    out += conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage())
                    await stream.send_all(out)
                    request = None
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
                # h11.Data (a request body) needs nothing: no route reads one.
        except (h11.RemoteProtocolError, trio.BrokenResourceError,
                trio.ClosedResourceError):
            return


async def serve(venue: BenchVenue, port: int) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(
                trio.serve_tcp, partial(serve_connection, venue), port, host="127.0.0.1"))
            bound = listeners[0].socket.getsockname()[1]
            print(f"http://127.0.0.1:{bound}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", default="bench")
    ap.add_argument("--index", type=int, default=0, help="index sent in each notification")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--notify", help="Unix datagram socket to send each DELETE stamp to")
    ap.add_argument("--times-file", help="write the stamps here as JSON at exit")
    args = ap.parse_args(argv)
    venue = BenchVenue(args.name, args.index, args.notify)
    trio.run(serve, venue, args.port)
    if args.times_file:
        with open(args.times_file, "w") as f:
            json.dump(venue.times(), f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
