"""The simulators' HTTP helpers: serving (``supervisor.ops.asgi``), reading a request,
answering JSON.

No web framework: each simulator is an ASGI callable that parses its own route table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

import msgspec
import trio

from supervisor.ops.asgi import ASGIApp, Receive, Scope, Send, handle_lifespan, serve_asgi

__all__ = [
    "MAX_BODY_BYTES",
    "ASGIApp",
    "Receive",
    "Request",
    "Scope",
    "Send",
    "handle_lifespan",
    "read_request",
    "receive_request",
    "run_until_interrupted",
    "send_json",
    "serve_asgi",
]

# Simulator bodies are a few hundred bytes; anything much larger is garbage.
MAX_BODY_BYTES = 1 << 20


class Request(msgspec.Struct, frozen=True):
    """One HTTP request, body read in full."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    too_large: bool = False
    client: tuple[str, int] | None = None


async def read_request(scope: Scope, receive: Receive) -> Request:
    """Read the whole request body (up to MAX_BODY_BYTES) and decode the scope."""
    chunks: list[bytes] = []
    size = 0
    too_large = False
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            too_large = True
        elif chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    raw_query = scope.get("query_string", b"").decode("latin-1")
    client = scope.get("client")
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers", [])
    }
    return Request(
        method=scope["method"],
        path=scope["path"],
        # Last value wins on repeats, like most servers; values are plain strings.
        query=dict(parse_qsl(raw_query, keep_blank_values=True)),
        headers=headers,
        body=b"".join(chunks),
        too_large=too_large,
        client=(str(client[0]), int(client[1])) if client else None,
    )


async def send_json(
    send: Send,
    status: int,
    body: object = None,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send one complete response; `body` None means no body (e.g. 204)."""
    extra = list(headers or [])
    if body is None:
        await send({"type": "http.response.start", "status": status, "headers": extra})
        await send({"type": "http.response.body", "body": b""})
        return
    payload = msgspec.json.encode(body)
    extra += [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": extra})
    await send({"type": "http.response.body", "body": payload})


async def receive_request(scope: Scope, receive: Receive, send: Send) -> Request | None:
    """The start of every simulator app: answer the lifespan protocol and ignore any other
    non-HTTP scope (None: nothing more to do), else read the HTTP request in full."""
    if scope["type"] == "lifespan":
        await handle_lifespan(receive, send)
        return None
    if scope["type"] != "http":
        return None
    return await read_request(scope, receive)


def run_until_interrupted(serve: Callable[..., Awaitable[None]]) -> int:
    """The simulators' command lines: start ``serve`` (it reports its base URL through
    ``task_status``), print the URL (the line a script reads to find the port), run
    until Ctrl-C; exit status 0."""

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve)
            print(url, flush=True)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass
    return 0
