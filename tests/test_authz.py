"""Access control on the control socket, with real peer credentials (SO_PEERCRED)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import trio

from supervisor.config import ControlConfig
from supervisor.control.authz import Caller, authorize

from .deskenv import open_desk

NOBODY = 65534


def test_read_only_and_telemetry_are_open_to_whoever_can_connect() -> None:
    control = ControlConfig(operators=["alice"], kill_open=False)
    for cmd in ("status", "watch", "incidents", "freshness", "telemetry"):
        assert authorize(cmd, Caller(uid=NOBODY, gid=NOBODY), control, daemon_uid=1) is None


def test_mutating_commands_need_an_operator() -> None:
    control = ControlConfig(operators=["4242", "@nogroup-that-exists-nowhere"])
    eve = Caller(uid=NOBODY, gid=NOBODY)
    assert authorize("ack", eve, control, daemon_uid=1) == (
        "nobody (uid 65534) may not ack: not in control.operators; ask an authorised operator")
    assert authorize("ack", Caller(uid=4242), control, daemon_uid=1) is None
    assert authorize("ack", Caller(uid=0), control, daemon_uid=1) is None  # root
    assert authorize("ack", Caller(uid=7), control, daemon_uid=7) is None  # the daemon
    # A kill-switch nobody can press is worse than one anyone can: kill is open...
    assert authorize("kill", eve, control, daemon_uid=1) is None
    # ...unless configured otherwise.
    closed = ControlConfig(operators=["4242"], kill_open=False)
    assert authorize("kill", eve, closed, daemon_uid=1) is not None


def test_resume_operators_narrow_resume() -> None:
    control = ControlConfig(operators=["4242", "4343"], resume_operators=["4242"])
    assert authorize("resume", Caller(uid=4242), control, daemon_uid=1) is None
    assert authorize("resume", Caller(uid=4343), control, daemon_uid=1) == (
        "4343 (uid 4343) may not resume: not in control.resume_operators; ask an authorised "
        "operator")
    assert authorize("ack", Caller(uid=4343), control, daemon_uid=1) is None


def test_group_membership_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    import grp

    group = grp.getgrgid(0).gr_name
    control = ControlConfig(operators=[f"@{group}"])
    assert authorize("ack", Caller(uid=4242, gid=0), control, daemon_uid=1) is None
    assert authorize("ack", Caller(uid=4242, gid=NOBODY), control, daemon_uid=1) is not None


_CLIENT = """
import json, os, socket, sys
os.setgid({uid}); os.setuid({uid})
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
out = []
for line in sys.argv[2:]:
    s.sendall(line.encode() + b"\\n")
    buf = b""
    while not buf.endswith(b"\\n"):
        buf += s.recv(65536)
    out.append(json.loads(buf))
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another uid")
async def test_a_real_other_uid_may_kill_but_not_resolve(tmp_path: Path) -> None:
    # pytest's tmp dirs are 0700: the other uid needs a path it can reach.
    public = Path(tempfile.mkdtemp(prefix="desk-authz-", dir="/tmp"))
    try:
        await _other_uid_may_kill_but_not_resolve(tmp_path, public)
    finally:
        shutil.rmtree(public, ignore_errors=True)


async def _other_uid_may_kill_but_not_resolve(tmp_path: Path, public: Path) -> None:
    os.chmod(public, 0o755)
    control = ControlConfig(socket=str(public / "c.sock"), socket_mode=0o666,
                            operators=["root"])
    with trio.fail_after(15):
        async with open_desk(tmp_path, ("alpha",), control=control) as env:
            requests = [json.dumps({"cmd": "status"}),
                        json.dumps({"cmd": "kill", "reason": "seen from the floor"})]
            proc = await trio.run_process(
                [sys.executable, "-c", _CLIENT.format(uid=NOBODY), env.socket, *requests],
                capture_stdout=True)
            status, kill = json.loads(proc.stdout)
            assert status["ok"] and kill["ok"]
            inc = env.desk.state.incidents[0]
            # Journaled with the caller's user name and uid.
            assert inc.opened_by == f"operator:nobody(uid={NOBODY})"
            proc = await trio.run_process(
                [sys.executable, "-c", _CLIENT.format(uid=NOBODY), env.socket,
                 json.dumps({"cmd": "resolve", "id": inc.id, "root_cause": "x"})],
                capture_stdout=True)
            (refused,) = json.loads(proc.stdout)
            assert refused["error"]["code"] == "forbidden"
            assert env.desk.state.incidents[0].state == "open"
