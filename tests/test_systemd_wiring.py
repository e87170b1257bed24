"""The daemon speaks sd_notify to a real datagram socket: READY only once it serves,
STATUS with the mode, WATCHDOG while alive, STOPPING on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import trio

from supervisor.control.client import ControlClient

from .world import open_world


def _receive(sock: socket.socket, until: float) -> list[str]:
    out: list[str] = []
    sock.settimeout(0.1)
    while time.monotonic() < until:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return out


def test_ready_status_watchdog_and_stopping(tmp_path: Path) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    sock_path = tmp_path / "c.sock"
    config = tmp_path / "desk.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n'
                      f'[control]\nsocket = "{sock_path}"\n')
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify.sock"),
               WATCHDOG_USEC="1000000", WATCHDOG_PID="")
    env.pop("WATCHDOG_PID")
    proc = subprocess.Popen([sys.executable, "-m", "supervisor.cli", "run", "--config",
                             str(config)], env=env, stderr=subprocess.DEVNULL)
    try:
        notify.settimeout(15)
        # While the journal is replayed the start timeout is extended, so a long journal
        # never trips TimeoutStartSec=; READY=1 comes only when the socket answers.
        extend = notify.recv(4096).decode()
        assert extend == "EXTEND_TIMEOUT_USEC=30000000"
        first = notify.recv(4096).decode()
        while first.startswith("EXTEND_TIMEOUT_USEC="):
            first = notify.recv(4096).decode()
        assert "READY=1" in first and "STATUS=mode DISARMED size 0.00" in first  # fresh install
        with ControlClient(str(sock_path)) as c:
            assert c.request("status")["mode"] == "DISARMED"
            c.request("kill", reason="notify test")
        later = _receive(notify, time.monotonic() + 2.5)
        assert sum(m == "WATCHDOG=1" for m in later) >= 3  # every half of 1 s
        assert any(m.startswith("STATUS=mode HALTED size 0.00 KILL LATCHED") for m in later)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert "STOPPING=1" in _receive(notify, time.monotonic() + 0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()


async def test_a_stalled_heartbeat_or_a_dead_critical_actor_is_not_alive(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with open_world(tmp_path, engine=False) as world:
        desk = world.desk
        await trio.sleep(5)
        assert desk.alive() == (True, "ok")
        desk.heartbeat.status["alpha"].last_attempt_at = trio.current_time() - 30
        alive, why = desk.alive()
        assert not alive and why.startswith("heartbeat of venue alpha stalled 30.0 s")
        desk.heartbeat.status["alpha"].last_attempt_at = trio.current_time()
        desk.actor_status["freshness"].state = "restarting"
        assert desk.alive() == (False, "critical actor freshness is restarting")
