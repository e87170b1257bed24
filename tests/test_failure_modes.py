"""Failures in the shell never lose the halt nor take the daemon down."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from supervisor.cli import deskctl
from supervisor.core.errors import ControlError, DeskError
from supervisor.runtime.daemon import serve_desk
from supervisor.runtime.journal import open_journal

from .deskenv import open_desk, wait_for


async def test_a_failing_journal_keeps_the_halt_pages_and_blocks_resume(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",)) as env:
            await env.desk.journal.aclose()  # every append now fails
            # The kill is in force and says so, with what it did: not refused.
            killed = await env.request("kill", reason="drill")
            assert killed["durable"] is False and killed["mode"] == "HALTED"
            assert killed["incident_id"] is not None and "journal" in killed["journal_error"]
            # Any other applied change answers journal_failed: in force, not durable.
            with pytest.raises(ControlError) as failed:
                await env.request("ack", id=killed["incident_id"])
            assert failed.value.code == "journal_failed"
            assert failed.value.message.endswith(
                "the change is in force in memory but not yet durable; it is retried in order")
            st = await env.request("status")
            assert st["mode"] == "HALTED" and st["kill"]["latched"] is True
            assert st["journal"]["ok"] is False and st["journal"]["pending"] >= 1
            assert any(a["source"] == "supervisor:journal" and a["channel"] == "PAGE"
                       for a in st["alerts"]["recent"])
            with pytest.raises(ControlError) as refused:
                await env.request("resume")  # refused: nothing is applied
            assert refused.value.code == "resume_refused"
            assert "the journal is failing" in refused.value.message
            # The disk comes back: the pending events land, in order.
            env.desk.journal = await open_journal(Path(env.config.state_dir) / "journal.sqlite3")
            await wait_for(lambda: env.desk.journal_error is None, 3)
            events = await env.desk.journal.read_all()
            assert type(events[0]).__name__ == "KillRequested"


async def test_a_second_daemon_on_the_same_state_dir_does_no_work(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",)) as env:
            with pytest.raises(DeskError, match="is in use by"):
                await serve_desk(env.config)
            # The first daemon is untouched and still answers.
            assert (await env.request("status"))["mode"] == "NORMAL"


async def test_artifacts_storage_refuses_are_kept_shown_paged_once_and_written_later(
    tmp_path: Path,
) -> None:
    """A full or read-only disk at the kill: the snapshot's content is journaled, the
    snapshot file and the after-halt reconciliation report are kept, listed in
    status.storage, paged once, and written when storage recovers."""
    from supervisor.config import StorageConfig
    from supervisor.core.events import KillSnapshotted

    with trio.fail_after(20):
        async with open_desk(tmp_path, ("alpha",),
                             storage=StorageConfig(retry_s=0.2)) as env:
            state = Path(env.config.state_dir)
            # Storage refuses both folders (a file where the folder should be).
            (state / "snapshots").write_text("in the way")
            (state / "reconciliations").write_text("in the way")
            await env.request("telemetry", events=[
                {"kind": "position", "symbol": "AAPL", "qty": 5}])
            await env.request("kill", reason="disk full drill")
            await wait_for(lambda: env.desk.status()["kill"]["snapshot_pending"], 5)
            report = await env.request("reconcile")  # answered: the report is pending
            assert report["path"].startswith(str(state / "reconciliations"))
            st = await env.request("status")
            assert st["storage"]["ok"] is False and st["journal"]["ok"] is True
            kinds = sorted(p["kind"] for p in st["storage"]["pending"])
            assert kinds == ["kill snapshot", "reconciliation report"]
            assert st["kill"]["snapshot_pending"] is True
            pages = [a for a in st["alerts"]["recent"] if a["source"] == "supervisor:storage"]
            assert len(pages) == 1 and pages[0]["channel"] == "PAGE"
            events = await env.desk.journal.read_all()
            (snap,) = [e for e in events if isinstance(e, KillSnapshotted)]
            assert snap.positions == {"AAPL": 5.0}
            # Storage recovers: everything lands, nothing is paged again.
            (state / "snapshots").unlink()
            (state / "reconciliations").unlink()
            await wait_for(lambda: env.desk.storage.ok, 5)
            assert Path(snap.path).exists() and Path(report["path"]).exists()
            st = await env.request("status")
            assert st["storage"]["ok"] is True and st["storage"]["pending"] == []
            assert st["kill"]["snapshot_pending"] is False
            assert len([a for a in st["alerts"]["recent"]
                        if a["source"] == "supervisor:storage"]) == 1


def test_bad_usage_exits_64_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        deskctl.main(["kill"])
    assert exited.value.code == deskctl.EXIT_USAGE
    err = capsys.readouterr().err
    assert err == ("deskctl: the following arguments are required: --reason "
                   "(see deskctl --help)\n")


async def test_a_finding_of_an_unknown_class_is_a_p0(tmp_path: Path) -> None:
    """docs/architecture.md principle 4 and playbook 06 principle 03, "When in doubt, kill
    the switch":
    a class the policy does not know gets the worst severity, and the switch is pulled."""
    from actors.base import Finding

    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",)) as env:
            raised = env.desk.policy(Finding(actor="model", incident_class="mystery",
                                             scope="desk", summary="something odd"))
            assert raised.severity == "P0" and raised.actor == "actor:model"
            await env.desk.report(Finding(actor="model", incident_class="mystery",
                                          scope="desk", summary="something odd"))
            assert env.desk.state.mode == "HALTED"
            (inc,) = env.desk.state.incidents
            assert (inc.incident_class, inc.severity) == ("mystery", "P0")
            # A known class keeps the playbook's severity (principle 02).
            assert env.desk.policy(Finding(actor="model", incident_class="feature-drift",
                                           scope="desk", summary="x")).severity == "P1"


async def test_a_route_to_a_venue_that_does_not_answer_is_refused(tmp_path: Path) -> None:
    from simulators.venue import Outage
    from supervisor.config import HeartbeatConfig

    hb = HeartbeatConfig(interval_s=0.1, window_s=60.0, failures=100, timeout_s=0.5)
    with trio.fail_after(10):
        async with open_desk(tmp_path, heartbeat=hb) as env:
            env.sims["beta"].faults.set(Outage())
            await wait_for(lambda: env.desk.heartbeat.status["beta"].ok is False)
            with pytest.raises(ControlError) as exc:
                await env.request("route", venue="beta", reason="failover")
            assert exc.value.code == "bad_state"
            assert exc.value.message.startswith("venue beta's heartbeat is failing")
            r = await env.request("route", venue="alpha", reason="beta down")
            assert r == {"route": "alpha", "heartbeat_ok": True}
            assert await trio.to_thread.run_sync(
                deskctl.main, ["--socket", env.socket, "status"]) == 0


async def test_a_damaged_journal_is_set_aside_and_the_desk_starts_halted_with_its_kill_path(
    tmp_path: Path,
) -> None:
    """A journal that cannot be replayed never leaves the desk without its kill path:
    moved aside, a new one started HALTED with a journal-damaged P0 naming the file,
    every venue cancelled, paged; the socket answers."""
    from supervisor.core.events import KillRequested

    state = tmp_path / "state"
    journal = await open_journal(state / "journal.sqlite3")
    async with journal:
        await journal.append([KillRequested(ts=1.0, actor="operator:ann",
                                            reason="quarterly drill", source="operator")])
    raw = (state / "journal.sqlite3").read_bytes()
    (state / "journal.sqlite3").write_bytes(raw.replace(b"quarterly drill", b"quarterly dRill"))
    with trio.fail_after(15):
        async with open_desk(tmp_path, ("alpha", "beta")) as env:
            for sim in env.sims.values():
                sim.place("AAPL", 10, "buy", client_order_id="engine-1")
            st = await env.request("status")
            assert st["mode"] == "HALTED" and st["kill"]["latched"] is True
            (inc,) = [i for i in st["incidents"] if i["state"] != "resolved"]
            assert (inc["class"], inc["severity"]) == ("journal-damaged", "P0")
            (aside,) = list(state.glob("journal.damaged-*.sqlite3"))
            assert str(aside) in inc["summary"]
            assert "record 1 fails its checksum" in inc["summary"]
            assert any(a["channel"] == "PAGE" and "journal-damaged" in a["summary"]
                       for a in st["alerts"]["recent"])
            await wait_for(lambda: not any(s.open_orders() for s in env.sims.values()), 5)
            for sim in env.sims.values():
                assert sim.requests["DELETE /v2/orders"] >= 1
            # The orders sent while HALTED are an engine ignoring its gate: the compliance
            # watch opened a runaway-engine P0 per venue (and cancelled them).
            await wait_for(lambda: sum(i.incident_class == "runaway-engine" and i.live
                                       for i in env.desk.state.incidents) == 2, 5)
            for other in [i for i in env.desk.state.incidents
                          if i.live and i.incident_class == "runaway-engine"]:
                await env.request("resolve", id=other.id, root_cause="test orders")
            # The lost history is accepted by resolving the incident; then the usual
            # conditions: a verified kill and a clean reconciliation.
            await env.request("resolve", id=inc["id"],
                              root_cause="disk bit rot; history before accepted as lost")
            await wait_for(lambda: env.desk.state.kill.verified, 5)
            await env.request("reconcile")
            r = await env.request("resume", verified_nonprod=True)
            assert r["mode"] in ("RECOVERING", "DISARMED")
    # The new journal is whole and holds the set-aside's incident.
    async with await open_journal(state / "journal.sqlite3") as fresh:
        events = await fresh.read_all()
        assert (await fresh.verify()).ok
    assert any(getattr(e, "incident_class", "") == "journal-damaged" for e in events)
