"""deskctl against a running desk: readable output, --json, and exit statuses."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import trio

from supervisor.cli import deskctl

from .deskenv import open_desk, run_deskctl, wait_for


async def test_status_kill_ack_resolve_reconcile_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(15):
        async with open_desk(tmp_path, ("alpha",)) as env:
            await wait_for(lambda: env.desk.heartbeat.status["alpha"].ok)
            assert await run_deskctl(env.socket, "status") == 0
            out = capsys.readouterr().out
            assert out.startswith("mode        NORMAL  size 1.00\nkill        not latched\n")
            assert "alpha  ok" in out
            assert await run_deskctl(env.socket, "kill", "--reason", "drill") == 0
            out = capsys.readouterr().out
            assert out.startswith("kill-switch pulled: mode HALTED, incident INC-")
            inc_id = out.strip().rsplit(" ", 1)[1]
            assert await run_deskctl(env.socket, "kill", "--reason", "again") == 0
            assert capsys.readouterr().out.startswith(
                "kill-switch was already latched; cancel-all re-issued")
            assert await run_deskctl(env.socket, "status") == 0
            out = capsys.readouterr().out
            assert "ORDERS BLOCKED" in out and "resume is blocked:" in out
            assert f"next step   assign an incident commander: deskctl ack {inc_id}" in out
            assert await run_deskctl(env.socket, "resume") == deskctl.EXIT_REFUSED
            err = capsys.readouterr().err
            # In playbook 03 post-incident's words, the blocker as the evidence.
            assert err.startswith("deskctl: resume refused (resume_refused): Do not resume on "
                                  "hope.")
            assert "Q1 Is the root cause documented" in err and f"NO: incident {inc_id}" in err
            assert await run_deskctl(env.socket, "ack", inc_id, "--commander", "ann") == 0
            assert capsys.readouterr().out == f"{inc_id} acknowledged; commander ann\n"
            assert await run_deskctl(env.socket, "resolve", inc_id, "--root-cause", "drill") == 0
            capsys.readouterr()
            assert await run_deskctl(env.socket, "reconcile") == 0
            assert "clean" in capsys.readouterr().out
            await wait_for(lambda: env.desk.state.kill.verified, 5)
            assert await run_deskctl(env.socket, "--json", "resume", "--verified-nonprod") == 0
            result = json.loads(capsys.readouterr().out)
            assert result["mode"] == "RECOVERING" and result["size_multiplier"] == 0.25
            assert await run_deskctl(env.socket, "incidents", "--all") == 0
            out = capsys.readouterr().out
            assert out.splitlines()[0].split() == ["ID", "CLASS", "SEV", "STATE", "SCOPE",
                                                   "OPENED", "COMMANDER", "POSTMORTEM",
                                                   "SUMMARY"]
            assert "resolved" in out and "ann" in out and " due " in out


async def test_unreachable_supervisor_exits_3_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await run_deskctl(str(tmp_path / "nobody.sock"), "status")
    assert code == deskctl.EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"deskctl: cannot reach the supervisor at {tmp_path}/nobody.sock")


async def test_telemetry_from_a_file_and_a_rejected_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",)) as env:
            good = tmp_path / "good.jsonl"
            good.write_text('{"kind": "position", "symbol": "AAPL", "qty": 5}\n'
                            '{"kind": "pnl", "ts": 1.0, "value": -3.5}\n')
            assert await run_deskctl(env.socket, "telemetry", str(good)) == 0
            assert capsys.readouterr().out == "accepted 2 event(s)\n"
            bad = tmp_path / "bad.jsonl"
            bad.write_text('{"kind": "position", "symbol": "AAPL", "qty": 5}\n'
                           '{"kind": "pnl", "ts": "yesterday", "value": 1}\n')
            assert await run_deskctl(env.socket, "telemetry", str(bad)) == deskctl.EXIT_REFUSED
            assert capsys.readouterr().err.startswith(
                "deskctl: telemetry refused (bad_request): telemetry event 1: field 'ts'")


async def test_alerts_and_the_w2_noise_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",)) as env:
            await env.request("kill", reason="drill")
            await wait_for(lambda: env.desk.alerts.recent)
            assert await run_deskctl(env.socket, "alerts") == 0
            out = capsys.readouterr().out
            assert out.splitlines()[0].split() == ["TIME", "CHANNEL", "COUNT", "INCIDENT",
                                                   "DELIVERY", "SUMMARY"]
            assert "PAGE" in out and "operator-kill opened" in out
            assert await run_deskctl(env.socket, "alert-noise") == 0
            assert capsys.readouterr().out.endswith("none: W2 passes\n")


def test_credentials_stage_takes_activate_at_as_a_time_or_seconds_from_now() -> None:
    """--activate-at parses to epoch seconds (a formatter of the same name once shadowed
    its parser)."""
    parser = deskctl.build_parser()
    args = parser.parse_args(["credentials", "stage", "alpha", "--key-id", "K",
                              "--activate-at", "2026-03-04T12:00:00Z"])
    assert args.activate_at == 1772625600.0
    args = parser.parse_args(["credentials", "stage", "alpha", "--activate-at", "+60"])
    assert 0 < args.activate_at - time.time() <= 60
