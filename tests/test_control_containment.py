"""Whatever goes wrong while serving one connection ends that connection at worst; and
a kill answers with what it did, durable or not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from supervisor.cli import deskctl
from supervisor.control import server as control
from supervisor.core import protocol as p
from supervisor.core.desk import DeskState
from supervisor.runtime.journal import Journal

from .deskenv import open_desk, raw_exchange, run_deskctl


@pytest.mark.parametrize("where", ["decode", "authorize"])
async def test_a_bug_serving_a_request_answers_internal_error_and_serving_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    where: str,
) -> None:
    calls = 0

    def broken(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError(f"a bug in {where}")
        return real(*args, **kwargs)

    if where == "decode":
        real = p.decode_request
        monkeypatch.setattr(p, "decode_request", broken)
    else:
        real = control.authorize
        monkeypatch.setattr(control, "authorize", broken)
    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",)) as env:
            first, second = await raw_exchange(
                env.socket, b'{"cmd":"status"}\n{"cmd":"status"}\n', 2)
            assert first == {"ok": False, "error": {
                "code": "internal_error",
                "message": f"the request failed inside the supervisor: RuntimeError: a bug "
                           f"in {where}; check status"}}
            assert second["ok"] is True and second["result"]["mode"] == "NORMAL"
            assert env.desk.control_stats["internal_error"] == 1
    assert f"RuntimeError: a bug in {where}" in caplog.text  # with its traceback


async def test_a_bug_encoding_an_answer_is_answered_and_one_outside_a_request_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    real_ok, real_peer = p.ok, control.peer_caller

    def ok_broken(result: object) -> bytes:
        if isinstance(result, dict) and "gate" in result:
            raise MemoryError("no room to encode the answer")
        return real_ok(result)

    def peer_broken(stream: trio.SocketStream) -> Any:
        raise OSError("peer credentials vanished")

    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",)) as env:
            monkeypatch.setattr(p, "ok", ok_broken)
            (answer,) = await raw_exchange(env.socket, b'{"cmd":"status"}\n')
            assert answer["error"]["code"] == "internal_error"
            monkeypatch.setattr(p, "ok", real_ok)
            monkeypatch.setattr(control, "peer_caller", peer_broken)
            stream = await trio.open_unix_socket(env.socket)
            async with stream:
                await stream.send_all(b'{"cmd":"status"}\n')
                try:  # closed, no answer (a reset: the request was left unread)
                    assert await stream.receive_some(100) == b""
                except trio.BrokenResourceError:
                    pass
            monkeypatch.setattr(control, "peer_caller", real_peer)
            assert (await env.request("status"))["mode"] == "NORMAL"
            assert env.desk.control_stats["internal_error"] == 2
    assert "MemoryError: no room to encode the answer" in caplog.text
    assert "a connection failed and was closed" in caplog.text
    assert "OSError: peer credentials vanished" in caplog.text


async def test_the_kill_answer_is_the_state_the_kill_made_not_a_later_one(
    tmp_path: Path,
) -> None:
    """A resume (or anything) that lands while the kill's journal write is in flight does
    not change what the kill answers: its incident, HALTED, durable."""
    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",)) as env:
            desk = env.desk
            real_append = Journal.append

            async def append_while_the_state_moves_on(self: Journal, events: Any) -> int:
                # Another command lands in the meantime: the desk is no longer HALTED.
                desk.state = msgspec.structs.replace(DeskState(), mode="RECOVERING")
                return await real_append(self, events)

            desk.journal.append = append_while_the_state_moves_on.__get__(desk.journal)
            r = await env.request("kill", reason="race drill")
            assert r["mode"] == "HALTED" and r["already_latched"] is False
            assert r["incident_id"] is not None and r["incident_id"].startswith("INC-")
            assert r["durable"] is True


async def test_deskctl_kill_in_force_but_not_durable_exits_0_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",)) as env:
            await env.desk.journal.aclose()  # every append now fails (disk full, ...)
            assert await run_deskctl(env.socket, "kill", "--reason", "disk full drill") == 0
            out = capsys.readouterr().out
            assert out.startswith("kill in force, NOT yet journaled: kill-switch pulled: "
                                  "mode HALTED, incident INC-")
            assert env.desk.state.kill.latched
            inc = env.desk.state.kill.incident_id
            assert inc is not None
            # Any other command that is applied but not durable has its own exit status.
            assert await run_deskctl(env.socket, "ack", inc) == deskctl.EXIT_NOT_DURABLE
            err = capsys.readouterr().err
            assert err.startswith("deskctl: ack applied, NOT yet journaled: ")
            # A refusal (nothing applied) is still 2.
            assert await run_deskctl(env.socket, "resume") == deskctl.EXIT_REFUSED


def test_deskctl_help_documents_every_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        deskctl.main(["--help"])
    out = capsys.readouterr().out
    assert "exit status:" in out
    for code in (0, deskctl.EXIT_FAILED, deskctl.EXIT_REFUSED, deskctl.EXIT_UNREACHABLE,
                 deskctl.EXIT_NOT_DURABLE, deskctl.EXIT_USAGE):
        assert f"\n  {code} " in out
    assert "NOT yet journaled" in out


async def test_a_kill_never_writes_into_the_socket_of_a_watcher_that_left(
    tmp_path: Path,
) -> None:
    """A watcher goes; its fd number is reused by the next connection at once: the
    kill's direct "blocked" line must not land in that unrelated connection."""
    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",)) as env:
            watcher = await trio.open_unix_socket(env.socket)
            await watcher.send_all(b'{"cmd":"watch"}\n')
            buf = b""
            while b"\n" not in buf:
                buf += await watcher.receive_some(65536)
            await watcher.aclose()
            await trio.sleep(0.2)
            other = await trio.open_unix_socket(env.socket)
            async with other:
                await trio.sleep(0.1)
                await env.desk.kill("drill", actor="operator:test")
                got = b""
                with trio.move_on_after(0.5):
                    got = await other.receive_some(65536)
                assert got == b""  # it asked nothing: it gets nothing


async def test_a_watcher_that_stops_reading_is_dropped_not_reported_as_a_bug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    real = control.ControlServer._send

    async def slow_reader(self: control.ControlServer, stream: Any, data: bytes) -> None:
        if data.startswith(b'{"ok":true,"result":{"event":"heartbeat"'):
            raise control._Dropped("dropped_not_reading", "a watcher stopped reading")
        await real(self, stream, data)

    monkeypatch.setattr(control.ControlServer, "_send", slow_reader)
    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",)) as env:
            watcher = await trio.open_unix_socket(env.socket)
            async with watcher:
                await watcher.send_all(b'{"cmd":"watch"}\n')
                with trio.move_on_after(3):
                    while await watcher.receive_some(65536):
                        pass
            assert env.desk.control_stats["dropped_not_reading"] == 1
            assert env.desk.control_stats["internal_error"] == 0
    assert "Traceback" not in caplog.text
