"""The risk actor wired into the desk: a breach halts, loosening is refused, and resume
checks the limits against those in force at the halt (seed 03 post-incident Q3)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from supervisor.config import RiskConfig
from supervisor.errors import ControlError

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
            # seed 06 principle 08: the breached threshold is not raised as the fix.
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
                await env.request("resume")
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
            assert (await env.request("resume"))["mode"] == "RECOVERING"
