"""The risk actor wired into the desk: a breach halts, loosening is refused, and resume
checks the limits against those in force at the halt (playbook 03 post-incident Q3)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from supervisor.config import RiskConfig
from supervisor.core.errors import ControlError

from .deskenv import open_desk, wait_for


async def test_a_position_past_its_limit_halts_and_loosening_is_refused(tmp_path: Path) -> None:
    limits = tmp_path / "limits.toml"
    limits.write_text("[limits]\nmax_position = 100\n")
    with trio.fail_after(15):
        async with open_desk(tmp_path, ("alpha",),
                             risk=RiskConfig(limits=str(limits), reload_s=0.1)) as env:
            await wait_for(lambda: env.desk.risk.limits is not None)
            await env.request("telemetry", events=[
                {"kind": "position", "symbol": "AAPL", "qty": 150}])
            await wait_for(lambda: env.desk.state.kill.latched, 2)
            (inc,) = env.desk.state.incidents
            assert (inc.incident_class, inc.severity, inc.scope) == (
                "risk-breach", "P0", "limit:max_position:AAPL")
            # playbook 06 principle 08: the breached threshold is not raised as the fix.
            limits.write_text("[limits]\nmax_position = 200\n")
            await wait_for(lambda: any("refused" in a.summary for a in env.desk.alerts.recent))
            assert env.desk.risk.limits.max_position == 100  # type: ignore[union-attr]
            # The engine flattens, the incident is resolved; the pending loosening now
            # lands, and resume refuses it in the post-incident tree's words.
            await env.request("telemetry", events=[
                {"kind": "position", "symbol": "AAPL", "qty": 0}])
            await env.request("resolve", id=inc.id, root_cause="sizing bug, patched")
            await wait_for(lambda: env.desk.risk.limits.max_position == 200, 3)  # type: ignore[union-attr]
            await env.request("reconcile")
            await wait_for(lambda: env.desk.state.kill.verified, 5)
            with pytest.raises(ControlError) as refused:
                await env.request("resume", verified_nonprod=True)
            blocker = ("risk limits got softened during the incident: restore them first "
                       "(max_position 100 -> 200)")
            assert refused.value.message == (
                "Limits got softened during the incident. Restore them first. (post-incident "
                "Q3 Is risk service operating with the original (un-relaxed) limits? NO: "
                f"{blocker})")
            st = await env.request("status")
            assert st["resume_blockers"] == [blocker]
            limits.write_text("[limits]\nmax_position = 100\n")
            await wait_for(lambda: env.desk.risk.limits.max_position == 100, 3)  # type: ignore[union-attr]
            assert (await env.request("resume", verified_nonprod=True))["mode"] == "RECOVERING"


async def test_the_limits_at_the_halt_are_journaled_with_it_and_outlive_a_restart(
    tmp_path: Path,
) -> None:
    """Principle 08 after a restart: the limits in force at the halt are journaled in
    the kill's own transaction (no side file to lose on a full disk); loosened while the
    daemon was down, the resume after the restart is refused."""
    from supervisor.core.events import KillRequested, LimitsAtHalt

    limits = tmp_path / "limits.toml"
    limits.write_text("[limits]\nmax_position = 1000\n")
    risk = RiskConfig(limits=str(limits), reload_s=0.1)
    with trio.fail_after(20):
        async with open_desk(tmp_path, ("alpha",), risk=risk) as env:
            await wait_for(lambda: env.desk.risk.limits is not None)
            # The state directory cannot take a side file (a full disk would do the same).
            assert not list(Path(env.config.state_dir).glob("limits-at-halt*"))
            r = await env.request("kill", reason="drill")
            events = await env.desk.journal.read_all()
            kinds = [type(e) for e in events]
            i = kinds.index(KillRequested)
            assert kinds[i + 1] is LimitsAtHalt  # the same batch, the same transaction
            assert '"max_position":1000.0' in events[i + 1].limits  # type: ignore[attr-defined]
            await env.request("resolve", id=r["incident_id"], root_cause="drill")
            await env.request("reconcile")
            await wait_for(lambda: env.desk.state.kill.verified, 5)
        limits.write_text("[limits]\nmax_position = 100000\n")  # loosened while down
        async with open_desk(tmp_path, ("alpha",), risk=risk) as env:
            await wait_for(lambda: env.desk.risk.limits is not None)
            await wait_for(lambda: env.desk.state.kill.verified, 5)
            await env.request("reconcile")
            with pytest.raises(ControlError) as refused:
                await env.request("resume", verified_nonprod=True)
            assert refused.value.code == "resume_refused"
            assert "(max_position 1000 -> 100000)" in refused.value.message
            assert not list(Path(env.config.state_dir).glob("limits-at-halt*"))


async def test_a_halt_whose_limits_were_never_journaled_refuses_resume_until_recorded(
    tmp_path: Path,
) -> None:
    """A journal from before the limits were journaled (or any halt without them): the
    resume fails closed, saying why; a new pull of the switch records the limits in
    force now, as the operator's explicit baseline."""
    from supervisor.core.events import KillRequested
    from supervisor.runtime.journal import open_journal

    state = tmp_path / "state"
    journal = await open_journal(state / "journal.sqlite3")
    async with journal:
        await journal.append([KillRequested(ts=1.0, actor="operator:ann", reason="old halt",
                                            source="operator")])
    with trio.fail_after(20):
        async with open_desk(tmp_path, ("alpha",)) as env:
            inc = env.desk.state.incidents[0].id
            await env.request("resolve", id=inc, root_cause="drill")
            await wait_for(lambda: env.desk.state.kill.verified, 5)
            await env.request("reconcile")
            with pytest.raises(ControlError) as refused:
                await env.request("resume", verified_nonprod=True)
            assert ("the risk limits in force at the halt are not known (not journaled "
                    "with it)") in refused.value.message
            await env.request("kill", reason="record the limits in force as the baseline")
            assert env.desk.state.kill.limits_at_halt is not None
            await wait_for(lambda: env.desk.state.kill.verified, 5)
            await env.request("reconcile")
            inc2 = [i.id for i in env.desk.state.incidents if i.live]
            for i in inc2:
                await env.request("resolve", id=i, root_cause="drill")
            assert (await env.request("resume", verified_nonprod=True))["mode"] == "RECOVERING"


async def test_auto_flatten_turned_off_is_journaled_at_every_start(tmp_path: Path) -> None:
    limits = tmp_path / "limits.toml"
    limits.write_text("[limits]\nmax_position = 100\n")
    for _ in range(2):
        async with open_desk(tmp_path, ("alpha",),
                             risk=RiskConfig(limits=str(limits), auto_flatten=False)) as env:
            assert env.desk.status()["risk"]["auto_flatten"] is False
            events = await env.desk.journal.read_all()
    offs = [e for e in events if getattr(e, "text", "").startswith("risk auto-flatten is OFF")]
    assert len(offs) == 2 and {e.actor for e in offs} == {"supervisor:config"}
