"""Serve plain ASGI apps with hypercorn on trio, plus the few helpers the apps share.

No web framework: each simulator is an ASGI callable that parses its own route table.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl

import hypercorn.trio
import msgspec
import trio
from hypercorn.config import Config

if TYPE_CHECKING:
    from hypercorn.typing import Framework

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

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Simulator bodies are a few hundred bytes; anything much larger is garbage.
MAX_BODY_BYTES = 1 << 20

# hypercorn logs "Running on ..." at INFO for every server; tests start dozens.
_ERROR_LOG = logging.getLogger("simulators.http")
_ERROR_LOG.setLevel(logging.WARNING)


async def serve_asgi(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` over HTTP/1.1 until cancelled.

    Calls `task_status.started(base_url)` once the socket is bound, with the real port
    (e.g. "http://127.0.0.1:54321"). On cancel, open connections are dropped.
    """
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = _ERROR_LOG
    async with trio.open_nursery() as nursery:
        # hypercorn types apps with its own TypedDict scopes; ours read plain mappings.
        framework = cast("Framework", app)
        binds: list[str] = await nursery.start(partial(hypercorn.trio.serve, framework, config))
        task_status.started(binds[0])


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


async def handle_lifespan(receive: Receive, send: Send) -> None:
    """Answer the ASGI lifespan protocol: the simulators need no startup work."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


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
