"""Serving a plain ASGI app with hypercorn on trio (the metrics endpoint; the simulators
use the same helpers).

No web framework: an app is an ASGI callable that reads its own few routes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import hypercorn.trio
import trio
from hypercorn.config import Config

if TYPE_CHECKING:
    from hypercorn.typing import Framework

__all__ = ["ASGIApp", "Receive", "Scope", "Send", "handle_lifespan", "serve_asgi"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# hypercorn logs "Running on ..." at INFO for every server; tests start dozens.
_ERROR_LOG = logging.getLogger("desk.asgi")
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


async def handle_lifespan(receive: Receive, send: Send) -> None:
    """Answer the ASGI lifespan protocol: no startup or shutdown work."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
