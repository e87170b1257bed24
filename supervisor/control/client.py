"""Clients of the control socket: a blocking one (deskctl, scripts) and a trio one (the
paper engine, the gate).

Both speak the protocol of docs/protocol.md: one JSON line out, one JSON line back.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import trio

from supervisor.core.errors import ControlError, SupervisorUnreachable

DEFAULT_SOCKET = "/run/desk-supervisor/control.sock"

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def default_socket_path() -> str:
    """``$DESK_SUPERVISOR_SOCKET``, else /run/desk-supervisor/control.sock
    (docs/protocol.md)."""
    return os.environ.get("DESK_SUPERVISOR_SOCKET") or DEFAULT_SOCKET


def _result(response: Any) -> Any:
    if not isinstance(response, dict) or "ok" not in response:
        raise ControlError("bad_response",
                           f"supervisor answered something unexpected: {response!r}")
    if response["ok"]:
        return response.get("result")
    err = response.get("error") or {}
    raise ControlError(str(err.get("code", "error")), str(err.get("message", "request failed")))


def _connect_unix(path: str, timeout: float) -> socket.socket:
    """Connect to ``path`` within ``timeout``. A Unix socket whose listen backlog is full
    answers EAGAIN at once rather than queueing the caller: retried until the deadline,
    so a `deskctl kill` during a flood of connections waits its turn instead of failing.

    Raises:
        SupervisorUnreachable: no connection within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
        except BlockingIOError as exc:
            sock.close()
            if time.monotonic() >= deadline:
                raise SupervisorUnreachable(
                    f"cannot reach the supervisor at {path}: its connection backlog stayed "
                    f"full for {timeout:g} s") from exc
            time.sleep(0.005)
            continue
        except OSError as exc:
            sock.close()
            raise SupervisorUnreachable(
                f"cannot reach the supervisor at {path}: {exc.strerror or exc}") from exc
        return sock


class ControlClient:
    """A blocking connection to the control socket."""

    def __init__(self, path: str | None = None, *, timeout: float = 10.0) -> None:
        self.path = path or default_socket_path()
        self._sock = _connect_unix(self.path, timeout)
        self._sock.settimeout(timeout)
        self._buf = bytearray()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, request: dict[str, Any]) -> None:
        self._sock.sendall(_encoder.encode(request) + b"\n")

    def read_line(self) -> Any:
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return _decoder.decode(line)
            try:
                chunk = self._sock.recv(1 << 20)
            except TimeoutError as exc:
                raise SupervisorUnreachable(
                    f"the supervisor at {self.path} did not answer in time"
                ) from exc
            if not chunk:
                raise SupervisorUnreachable(f"the supervisor at {self.path} closed the connection")
            self._buf += chunk

    def request(self, cmd: str, **args: Any) -> Any:
        """Send one request and return its result.

        Raises:
            ControlError: the supervisor refused it (``code`` and ``message`` from the wire).
            SupervisorUnreachable: no answer.
        """
        self.send({"cmd": cmd, **args})
        return _result(self.read_line())


class AsyncControlClient:
    """A trio connection to the control socket. Use ``open_control_client``."""

    def __init__(self, stream: trio.SocketStream, path: str) -> None:
        self.stream = stream
        self.path = path
        self._buf = bytearray()
        self._lock = trio.Lock()

    async def read_line(self) -> Any:
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return _decoder.decode(line)
            chunk = await self.stream.receive_some(1 << 20)
            if not chunk:
                raise SupervisorUnreachable(f"the supervisor at {self.path} closed the connection")
            self._buf += chunk

    async def request(self, cmd: str, **args: Any) -> Any:
        """Send one request, return its result (raises ControlError on refusal)."""
        async with self._lock:
            await self.stream.send_all(_encoder.encode({"cmd": cmd, **args}) + b"\n")
            return _result(await self.read_line())

    async def send_raw(self, line: bytes) -> Any:
        """Send pre-encoded request bytes (ending in a newline); return the raw response."""
        async with self._lock:
            await self.stream.send_all(line)
            return await self.read_line()

    async def watch(self) -> AsyncIterator[dict[str, Any]]:
        """Turn this connection into a watch stream; yields each change."""
        await self.stream.send_all(b'{"cmd":"watch"}\n')
        while True:
            yield _result(await self.read_line())


@asynccontextmanager
async def open_control_client(path: str | None = None) -> AsyncIterator[AsyncControlClient]:
    """Connect to the control socket.

    Raises:
        SupervisorUnreachable: the socket does not answer.
    """
    path = path or default_socket_path()
    try:
        stream = await trio.open_unix_socket(path)
    except OSError as exc:
        raise SupervisorUnreachable(
            f"cannot reach the supervisor at {path}: {exc.strerror or exc}"
        ) from exc
    async with stream:
        yield AsyncControlClient(stream, path)
