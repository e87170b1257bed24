"""The control socket: every error case leaves the connection, the daemon and the state
as they were (docs/architecture.md "Control socket": nothing is applied from a rejected request)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import trio

from supervisor.config import ControlConfig
from supervisor.control.server import open_control_listener
from supervisor.core.errors import DeskError

from .deskenv import open_desk, raw_exchange, wait_for


async def test_every_bad_request_gets_an_error_and_the_connection_stays_usable(
    tmp_path: Path,
) -> None:
    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",)) as env:
            before = env.desk.state
            requests = [
                b"not json\n",
                b"[1, 2]\n",
                b'{"no_cmd": 1}\n',
                b'{"cmd": "launch_missiles"}\n',
                b'{"cmd": "kill"}\n',
                b'{"cmd": "kill", "reason": ""}\n',
                b'{"cmd": "kill", "reason": "x", "extra": 1}\n',
                b'{"cmd": "ack", "id": 7}\n',
                b'{"cmd": "resolve", "id": "INC-x"}\n',
                b'{"cmd": "status"}\n',
            ]
            answers = await raw_exchange(env.socket, b"".join(requests), lines=len(requests))
            codes = [a["error"]["code"] if not a["ok"] else "ok" for a in answers]
            assert codes == ["invalid_json", "bad_request", "bad_request", "unknown_command",
                             "bad_request", "bad_request", "bad_request", "bad_request",
                             "bad_request", "ok"]
            assert answers[3]["error"]["message"].startswith(
                "unknown command 'launch_missiles'; known commands: status, watch")
            assert answers[4]["error"]["message"] == (
                "bad arguments for 'kill': Object missing required field `reason`")
            assert env.desk.state is before
            assert answers[-1]["result"]["mode"] == "NORMAL"


async def test_an_oversized_line_is_refused_and_the_next_request_is_served(
    tmp_path: Path,
) -> None:
    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",), control=ControlConfig(
                socket=str(tmp_path / "c.sock"), max_request_bytes=2048)) as env:
            huge = b'{"cmd": "kill", "reason": "' + b"x" * 100_000 + b'"}\n'
            answers = await raw_exchange(env.socket, huge + b'{"cmd": "status"}\n', lines=2)
            assert answers[0] == {"ok": False, "error": {
                "code": "request_too_large",
                "message": "request line exceeds 2048 bytes; nothing was applied"}}
            assert answers[1]["ok"] and answers[1]["result"]["mode"] == "NORMAL"
            assert not env.desk.state.kill.latched


async def test_a_telemetry_batch_is_rejected_whole_naming_the_first_bad_event(
    tmp_path: Path,
) -> None:
    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",)) as env:
            good = {"kind": "position", "symbol": "AAPL", "qty": 10}
            bad = {"kind": "fill", "order_id": "o1", "symbol": "AAPL", "side": "buy",
                   "qty": 5, "price": "cheap", "ts": 1.0}
            line = json.dumps({"cmd": "telemetry", "events": [good, good, bad, good]})
            (answer,) = await raw_exchange(env.socket, line.encode() + b"\n")
            assert answer["error"]["code"] == "bad_request"
            assert answer["error"]["index"] == 2 and answer["error"]["field"] == "price"
            assert answer["error"]["message"].startswith("telemetry event 2: field 'price'")
            assert env.desk.book.positions == {} and env.desk.book.events == 0
            missing = json.dumps({"cmd": "telemetry", "events": [good, {"kind": "bar",
                                                                        "symbol": "A",
                                                                        "ts": 1}]})
            (answer,) = await raw_exchange(env.socket, missing.encode() + b"\n")
            assert (answer["error"]["index"], answer["error"]["field"]) == (1, "vendor")
            unknown = json.dumps({"cmd": "telemetry", "events": [{"kind": "gossip"}]})
            (answer,) = await raw_exchange(env.socket, unknown.encode() + b"\n")
            assert (answer["error"]["index"], answer["error"]["field"]) == (0, "kind")
            ok = await env.request("telemetry", events=[good])
            assert ok == {"accepted": 1}
            assert env.desk.book.positions == {"AAPL": 10}


async def test_commands_on_unknown_incidents_are_refused(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",)) as env:
            answers = await raw_exchange(env.socket, b'{"cmd":"ack","id":"INC-nope"}\n'
                                             b'{"cmd":"resolve","id":"INC-nope","root_cause":"x"}\n'
                                             b'{"cmd":"resume"}\n', lines=3)
            assert [a["error"]["code"] for a in answers] == [
                "unknown_incident", "unknown_incident", "resume_refused"]
            assert answers[2]["error"]["message"] == (
                "the desk is not halted (mode NORMAL): there is nothing to resume")


async def test_the_full_incident_cycle_over_the_socket(tmp_path: Path) -> None:
    """kill -> ack -> resolve -> reconcile -> resume -> RECOVERING at 0.25."""
    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",)) as env:
            killed = await env.request("kill", reason="drill")
            inc_id = killed["incident_id"]
            acked = await env.request("ack", id=inc_id)
            assert acked["state"] == "acknowledged" and acked["commander"]
            st = await env.request("status")
            assert st["resume_blockers"][0].startswith(f"incident {inc_id}")
            resolved = await env.request("resolve", id=inc_id, root_cause="quarterly drill")
            assert resolved["root_cause"] == "quarterly drill"
            report = await env.request("reconcile")
            assert report["clean"] is True
            assert Path(report["path"]).exists()
            await wait_for(lambda: env.desk.state.kill.verified, 5)
            resumed = await env.request("resume", verified_nonprod=True)
            assert resumed["mode"] == "RECOVERING" and resumed["size_multiplier"] == 0.25
            st = await env.request("status")
            assert st["kill"]["latched"] is False and st["blocked"] is False
            assert st["recovery"]["remaining_s"] > 3500


async def test_watch_streams_blocked_first_then_the_new_status(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",)) as env, env.client() as watcher:
            stream = watcher.watch().__aiter__()
            first = await stream.__anext__()
            assert first["event"] == "status" and first["status"]["mode"] == "NORMAL"
            await env.request("kill", reason="drill")
            blocked = await stream.__anext__()
            assert blocked == {"event": "blocked", "mode": "HALTED", "size_multiplier": 0.0,
                               "blocked": True, "reason": "drill"}
            kinds = set()
            while "mode" not in kinds:
                kinds.add((await stream.__anext__())["event"])
            await stream.aclose()  # type: ignore[attr-defined]


async def test_socket_is_created_0660_and_a_live_one_is_not_stolen(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    listener = await open_control_listener(path, 0o660)
    async with listener:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
        with pytest.raises(DeskError, match="is in use by a running daemon"):
            await open_control_listener(path, 0o660)


async def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    listener = await open_control_listener(path, 0o660)
    await listener.aclose()  # the file stays, nobody answers: stale
    assert path.exists()
    listener = await open_control_listener(path, 0o660)
    await listener.aclose()
