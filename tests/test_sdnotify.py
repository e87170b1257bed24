"""The notify protocol against real AF_UNIX datagram sockets (a path one in tmp_path and an
abstract one), with the watchdog loop on trio's autojump clock.

References: sd_notify(3) (datagram of KEY=VALUE lines, '@' = abstract namespace),
sd_watchdog_enabled(3) (WATCHDOG_USEC / WATCHDOG_PID, ping every half period), and
The sdnotify package swallows socket errors; freqtrade #5227 ran on, stalled.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from supervisor.ops.sdnotify import (
    MAX_DATAGRAM,
    Notifier,
    open_notifier,
    run_watchdog,
    watchdog_interval,
)


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A stand-in for systemd's notify socket: a bound, non-blocking datagram socket."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    with sock:
        yield sock, str(path)


def received(sock: socket.socket) -> list[bytes]:
    """Every datagram queued on ``sock`` (sends are synchronous, so they are all here)."""
    out = []
    while True:
        try:
            out.append(sock.recv(65536))
        except BlockingIOError:
            return out


def notifier_for(address: str) -> Notifier:
    notifier = open_notifier({"NOTIFY_SOCKET": address})
    assert notifier is not None
    return notifier


# --- open_notifier ---------------------------------------------------------------------


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}])
def test_no_notifier_when_not_started_by_systemd(environ: dict[str, str]) -> None:
    assert open_notifier(environ) is None


def test_a_relative_notify_socket_is_refused_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert open_notifier({"NOTIFY_SOCKET": "notify.sock"}) is None
    assert caplog.messages == [
        "cannot notify the service manager: NOTIFY_SOCKET 'notify.sock' is neither an "
        "absolute path nor @name"]


# --- message content -------------------------------------------------------------------


def test_ready_sends_ready_and_status_in_one_datagram(
    manager: tuple[socket.socket, str],
) -> None:
    sock, path = manager
    with notifier_for(path) as notifier:
        assert notifier.ready("mode NORMAL, 0 open incidents")
        assert notifier.sent == 1 and notifier.errors == 0
    assert received(sock) == [b"READY=1\nSTATUS=mode NORMAL, 0 open incidents"]


def test_status_and_stopping(manager: tuple[socket.socket, str]) -> None:
    sock, path = manager
    with notifier_for(path) as notifier:
        notifier.status("mode HALTED, 1 open incident: INC-1 broker-outage P0")
        notifier.stopping()
        notifier.stopping("stopping on SIGTERM; orders untouched")
        notifier.ready()
    assert received(sock) == [
        b"STATUS=mode HALTED, 1 open incident: INC-1 broker-outage P0",
        b"STOPPING=1",
        b"STOPPING=1\nSTATUS=stopping on SIGTERM; orders untouched",
        b"READY=1",
    ]


async def test_abstract_namespace_socket() -> None:
    name = f"desk-supervisor-test-{os.getpid()}-{uuid.uuid4().hex}"
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(b"\0" + name.encode())
        with notifier_for("@" + name) as notifier:
            assert notifier.ready("up")
            notifier.watchdog()
        with trio.fail_after(5):
            assert await sock.recv(4096) == b"READY=1\nSTATUS=up"
            assert await sock.recv(4096) == b"WATCHDOG=1"


async def test_async_send_is_the_checkpointing_twin(manager: tuple[socket.socket, str]) -> None:
    sock, path = manager
    with notifier_for(path) as notifier:
        assert await notifier.send("READY=1", "STATUS=via send")
    assert received(sock) == [b"READY=1\nSTATUS=via send"]


async def test_stopping_is_sent_from_a_cancelled_scope(manager: tuple[socket.socket, str]) -> None:
    # The daemon's way out runs after its nursery was cancelled: STOPPING=1 must still go.
    sock, path = manager
    with notifier_for(path) as notifier, trio.CancelScope() as scope:
        scope.cancel()
        assert notifier.stopping("stopping")
        with pytest.raises(trio.Cancelled):
            await notifier.send("STATUS=never sent")  # the async twin honours the cancel
    assert received(sock) == [b"STOPPING=1\nSTATUS=stopping"]


def test_a_status_text_cannot_inject_fields(manager: tuple[socket.socket, str]) -> None:
    # systemd splits a datagram on "\n" and "\r": a newline in an incident title must not
    # turn into a second assignment such as READY=1 or MAINPID=.
    sock, path = manager
    with notifier_for(path) as notifier:
        notifier.status("INC-1 stale-data\nREADY=1\r\nMAINPID=1\rX")
    assert received(sock) == [b"STATUS=INC-1 stale-data READY=1 MAINPID=1 X"]


def test_a_long_status_is_cut_so_ready_still_arrives(manager: tuple[socket.socket, str]) -> None:
    # systemd ignores a datagram longer than its PIPE_BUF buffer whole, READY=1 included.
    sock, path = manager
    with notifier_for(path) as notifier:
        assert notifier.ready("é" * 5000)
        assert notifier.send_nowait("READY=1", "STATUS=" + "x" * 10_000)
    short, raw = received(sock)
    assert short == ("READY=1\nSTATUS=" + "é" * 1023 + "…").encode()
    assert len(raw) <= MAX_DATAGRAM
    assert raw.startswith(b"READY=1\nSTATUS=xxx") and raw.endswith("x…".encode())


def test_a_field_without_a_key_is_a_bug_at_the_call_site(
    manager: tuple[socket.socket, str],
) -> None:
    with notifier_for(manager[1]) as notifier, pytest.raises(ValueError, match="KEY=VALUE"):
        notifier.send_nowait("READY")


# --- send errors: logged and counted, never raised, never blocking ----------------------


def test_a_missing_socket_is_logged_and_counted_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    missing = tmp_path / "gone.sock"
    with caplog.at_level(logging.INFO, logger="desk.sdnotify"), notifier_for(str(missing)) as n:
        assert n.ready("up") is False
        assert n.watchdog() is False
        assert n.watchdog() is False
        assert (n.sent, n.errors) == (0, 3)
        assert str(n.last_error).startswith("FileNotFoundError: ")
        # Logged once per kind of failure, not once per ping.
        assert caplog.messages == [
            f"notify socket {missing}: send failed: [Errno 2] No such file or directory "
            "(the socket does not exist)"]
        # The manager comes (back): sends work and that is said once.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with sock:
            sock.bind(str(missing))
            sock.setblocking(False)
            assert n.watchdog() is True
            assert (n.sent, n.errors, n.last_error) == (1, 3, None)
            assert received(sock) == [b"WATCHDOG=1"]
    assert caplog.messages[-1] == f"notify socket {missing}: sends work again"


def test_a_socket_nobody_reads_refuses_the_send(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody is bound to it: ECONNREFUSED
    with notifier_for(str(path)) as notifier:
        assert notifier.status("x") is False
        assert notifier.errors == 1
    assert caplog.messages[0].endswith("(nothing is listening on it)")


async def test_a_manager_that_stops_reading_never_blocks_us(
    manager: tuple[socket.socket, str], autojump_clock: trio.abc.Clock,
) -> None:
    # Nobody drains the socket: once its queue is full a send fails at once (EAGAIN) and
    # is counted; it never waits, so no virtual time passes either.
    _sock, path = manager
    with notifier_for(path) as notifier:
        results = [await notifier.send("WATCHDOG=1") for _ in range(5000)]
    assert results[0] is True and results[-1] is False
    assert notifier.errors == results.count(False) > 0
    assert str(notifier.last_error).startswith("BlockingIOError: ")
    assert trio.current_time() == 0.0


def test_close_twice_is_safe(manager: tuple[socket.socket, str]) -> None:
    notifier = notifier_for(manager[1])
    notifier.close()
    notifier.close()


# --- watchdog_interval ------------------------------------------------------------------


@pytest.mark.parametrize(("environ", "expected"), [
    ({"WATCHDOG_USEC": "10000000"}, 5.0),
    ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}, 5.0),
    ({"WATCHDOG_USEC": "3000000"}, 1.5),
    ({}, None),
    ({"WATCHDOG_USEC": ""}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "ten"}, None),
    ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "not-a-pid"}, None),
])
def test_watchdog_interval_is_half_the_period(
    environ: dict[str, str], expected: float | None,
) -> None:
    assert watchdog_interval(environ) == expected


def test_a_watchdog_meant_for_another_pid_is_not_ours() -> None:
    # sd_watchdog_enabled(3): only when WATCHDOG_PID is unset or equals our pid. A child
    # that inherited the environment must not ping for its parent.
    other = os.getppid()
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(other)}) is None


# --- run_watchdog -----------------------------------------------------------------------


async def _pings(sock: trio.socket.SocketType, times: list[float]) -> None:
    while True:
        assert await sock.recv(4096) == b"WATCHDOG=1"
        times.append(trio.current_time())


@pytest.fixture
async def trio_manager(tmp_path: Path) -> AsyncIterator[tuple[trio.socket.SocketType, str]]:
    path = tmp_path / "notify.sock"
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(str(path))
        yield sock, str(path)


async def test_watchdog_pings_at_half_the_period(
    trio_manager: tuple[trio.socket.SocketType, str], autojump_clock: trio.abc.Clock,
) -> None:
    sock, path = trio_manager
    interval = watchdog_interval({"WATCHDOG_USEC": "10000000"})  # WatchdogSec=10s
    assert interval == 5.0
    times: list[float] = []
    with notifier_for(path) as notifier:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pings, sock, times)
            await nursery.start(run_watchdog, notifier, interval, lambda: True)
            assert trio.current_time() == 0.0  # started after the first ping, at once
            await trio.sleep(22)
            nursery.cancel_scope.cancel()
    assert times == [0.0, 5.0, 10.0, 15.0, 20.0]
    assert notifier.sent == 5


async def test_pings_stop_while_not_alive_and_resume_after(
    trio_manager: tuple[trio.socket.SocketType, str], autojump_clock: trio.abc.Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A wedged actor (alive() False from t=7 to t=20) stops the pings, so systemd's
    # WatchdogSec=10s would run out at t=15 and restart the daemon.
    sock, path = trio_manager
    times: list[float] = []

    def alive() -> bool:
        return not 7 <= trio.current_time() < 20

    with notifier_for(path) as notifier:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pings, sock, times)
            nursery.start_soon(run_watchdog, notifier, 5.0, alive)
            await trio.sleep(27)
            nursery.cancel_scope.cancel()
    assert times == [0.0, 5.0, 20.0, 25.0]
    assert [r.getMessage() for r in caplog.records if r.name == "desk.sdnotify"] == [
        "watchdog: not alive, withholding WATCHDOG=1 so systemd restarts us",
        "watchdog: alive again, pings resume",
    ]


async def test_a_liveness_check_that_raises_counts_as_not_alive(
    trio_manager: tuple[trio.socket.SocketType, str], autojump_clock: trio.abc.Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sock, path = trio_manager
    times: list[float] = []

    def alive() -> bool:
        if trio.current_time() >= 5:
            raise RuntimeError("actor table locked")
        return True

    with notifier_for(path) as notifier:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pings, sock, times)
            nursery.start_soon(run_watchdog, notifier, 5.0, alive)
            await trio.sleep(12)
            nursery.cancel_scope.cancel()
    assert times == [0.0]
    assert "watchdog: the liveness check raised; counted as not alive" in caplog.messages


async def test_the_watchdog_survives_a_missing_socket(
    tmp_path: Path, autojump_clock: trio.abc.Clock,
) -> None:
    with notifier_for(str(tmp_path / "absent.sock")) as notifier:
        with trio.move_on_after(12):
            await run_watchdog(notifier, 5.0, lambda: True)
    assert (notifier.sent, notifier.errors) == (0, 3)  # t = 0, 5, 10


async def test_a_non_positive_interval_is_refused(manager: tuple[socket.socket, str]) -> None:
    with notifier_for(manager[1]) as notifier, pytest.raises(ValueError, match="> 0"):
        await run_watchdog(notifier, 0.0, lambda: True)
