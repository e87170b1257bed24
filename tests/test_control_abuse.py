"""The control plane cannot be knocked out: what a buggy engine or a hostile local user
can do to the socket never crashes the daemon nor locks the kill-switch out.

Against a real daemon process (``desk-supervisor run``) and a venue simulator process,
over real Unix sockets, as a user would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.control.client import ControlClient
from supervisor.core.errors import ControlError

from .daemonproc import (
    open_orders,
    place_order,
    start_daemon,
    venue_process,
    wait_until,
    write_config,
)


@pytest.fixture
def venue() -> Iterator[str]:
    with venue_process() as url:
        yield url


def _daemon(tmp_path: Path, venue: str, extra: str = "") -> tuple[subprocess.Popen[bytes], Path]:
    config, sock, _ = write_config(tmp_path, venue, extra)
    return start_daemon(config, sock, tmp_path / "daemon.log"), sock


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def _connect(sock: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(sock))  # blocking: waits while the listen backlog is full
    s.settimeout(5)
    return s


def _closed_by_daemon(s: socket.socket) -> bool:
    try:
        return s.recv(100) == b""
    except ConnectionResetError:  # closed with our trickled bytes unread
        return True


def _ask(s: socket.socket, line: bytes) -> dict[str, Any]:
    s.sendall(line)
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(1 << 20)
        assert chunk, "the daemon closed the connection without an answer"
        buf += chunk
    return json.loads(buf)  # type: ignore[no-any-return]


NESTED = [
    b"[" * 5000 + b"]" * 5000,  # the 10 KB line that crashed the daemon
    b'{"x":' + b"[" * 5000 + b"]" * 5000 + b',"cmd":"status"}',  # skipped before the tag
    b'{"cmd":"telemetry","events":[{"kind":"features","ts":1,"values":{"a":'
    + b"{" * 3000 + b"}" * 3000 + b"}}]}",
    b'{"cmd":"kill","reason":' + b"[" * 100_000,  # deep and truncated
]


def test_deeply_nested_lines_are_refused_and_the_daemon_keeps_serving(
    tmp_path: Path, venue: str
) -> None:
    proc, sock = _daemon(tmp_path, venue)
    try:
        with _connect(sock) as s:
            for line in NESTED:
                r = _ask(s, line + b"\n")
                assert r["ok"] is False and r["error"]["code"] == "bad_request", r
                assert "deeper than 16 levels" in r["error"]["message"]
            # the same connection, and the daemon, still serve
            assert _ask(s, b'{"cmd":"status"}\n')["result"]["mode"] == "NORMAL"
        assert proc.poll() is None
        # a reason may hold any number of brackets: strings do not nest
        with ControlClient(str(sock)) as c:
            r = c.request("kill", reason="[" * 1000 + "{" * 1000)
        assert r["mode"] == "HALTED" and r["durable"] is True
    finally:
        _stop(proc)


def _fill_not_reading(sock: Path) -> socket.socket:
    """A client that sends requests and never reads an answer: it keeps writing until
    its own send would block (the daemon's answers have filled both buffers)."""
    s = _connect(sock)
    s.setblocking(False)
    try:
        for _ in range(200):
            s.send(b'{"cmd":"status"}\n')
    except BlockingIOError:
        pass
    return s


def test_kill_is_served_within_a_second_however_many_connections_are_held(
    tmp_path: Path, venue: str
) -> None:
    """20 clients that do not read, 100 stalled mid-line and 200 idle hold more than the
    64 connections served at once: a kill on a new connection is still served at once."""
    place_order(venue, "engine-1")
    proc, sock = _daemon(tmp_path, venue)
    try:
        _abuse_then_kill(sock, venue)
        st = _status_once_slots_free(sock)
        assert st["control"]["kill_over_limit"] == 2
        assert st["control"]["refused_too_many"] >= 1
        assert st["mode"] == "HALTED"
    finally:
        _stop(proc)
    log = (tmp_path / "daemon.log").read_text()
    assert "served a kill on a connection over the limit of 64" in log
    assert "refused a connection: 64 connections are open" in log


def _status_once_slots_free(sock: Path) -> dict[str, Any]:
    """Status, once the daemon has seen the held connections close (until then a new
    connection is over the limit and only a kill is served)."""
    answers: list[dict[str, Any]] = []

    def ask() -> bool:
        with ControlClient(str(sock)) as c:
            try:
                answers.append(c.request("status"))
            except ControlError as exc:
                assert exc.code == "too_many_connections"
                return False
        return True

    wait_until(ask, 10, "the held connections' slots to be free")
    return answers[-1]


def _abuse_then_kill(sock: Path, venue: str) -> None:
    held: list[socket.socket] = []
    try:
        held += [_fill_not_reading(sock) for _ in range(20)]
        for _ in range(100):
            s = _connect(sock)
            s.sendall(b'{"cmd":"kill","reason":"never fini')  # no newline: stalled
            held.append(s)
        held += [_connect(sock) for _ in range(200)]  # connected, silent
        # Every slot is taken (and more are waiting): a plain status is refused...
        with _connect(sock) as s:
            assert _ask(s, b'{"cmd":"status"}\n')["error"]["code"] == "too_many_connections"
        # ...and a kill is served, within a second, from the first byte sent.
        with _connect(sock) as s:
            began = time.monotonic()
            r = _ask(s, b'{"cmd":"kill","reason":"drill under abuse"}\n')
            took = time.monotonic() - began
        assert r["ok"] is True, r
        assert r["result"]["mode"] == "HALTED" and r["result"]["durable"] is True
        assert took < 1.0, f"kill answered after {took:.2f} s"
        wait_until(lambda: not open_orders(venue), 10, "the venue to be flat")
        with _connect(sock) as s:  # over the limit still: only a kill is served
            again = _ask(s, b'{"cmd":"kill","reason":"second press"}\n')
        assert again["result"]["already_latched"] is True
        assert proc_alive_after_abuse(sock)
    finally:
        for s in held:
            s.close()


def proc_alive_after_abuse(sock: Path) -> bool:
    with _connect(sock) as s:  # still over the limit: a kill is the only thing served
        return bool(_ask(s, b'{"cmd":"status"}\n')["error"]["code"] == "too_many_connections")


def test_stalled_and_non_reading_connections_are_dropped_after_their_deadlines(
    tmp_path: Path, venue: str
) -> None:
    proc, sock = _daemon(tmp_path, venue, "max_connections = 4\nline_timeout_s = 1.0\n"
                                          "send_timeout_s = 1.0\n")
    try:
        stalled = [_connect(sock) for _ in range(2)]
        began = time.monotonic()
        for s in stalled:
            s.sendall(b'{"cmd":"sta')
        readers = [_fill_not_reading(sock) for _ in range(2)]
        # trickling a byte now and then does not restart the line's deadline
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(10):
                time.sleep(0.2)
                stalled[0].sendall(b"t")
        for s in stalled:  # the daemon closed them: EOF (or a reset), no answer
            assert _closed_by_daemon(s)
        assert time.monotonic() - began < 3.0
        # The non-reading ones' send deadline passes too; their slots are free again:
        # a status is served as usual, not refused.
        wait_until(lambda: _status_once_slots_free(sock)["control"].get(
            "dropped_not_reading") == 2, 10, "the non-reading clients to be dropped")
        st = _status_once_slots_free(sock)
        assert st["control"]["dropped_stalled"] == 2
        assert st["control"]["dropped_not_reading"] == 2
        assert st["control"].get("refused_too_many", 0) == 0
        for s in (*stalled, *readers):
            s.close()
    finally:
        _stop(proc)
    log = (tmp_path / "daemon.log").read_text()
    assert "a request line was not finished within 1 s; connection dropped" in log
    assert "a client did not read its response within 1 s; connection dropped" in log
