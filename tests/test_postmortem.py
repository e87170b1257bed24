"""Every resolved incident yields a blameless postmortem artifact (playbook 06 principle 10);
a P0's is due within 24 h (playbook 02 risk-breach) and flagged when overdue."""

from __future__ import annotations

from pathlib import Path

import trio

from supervisor.ops import postmortem

from .deskenv import open_desk, wait_for


async def test_a_resolved_p0_gets_an_artifact_due_in_24_hours(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",)) as env:
            inc_id = (await env.request("kill", reason="fat finger"))["incident_id"]
            await env.request("ack", id=inc_id, commander="ann")
            await env.request("resolve", id=inc_id, root_cause="a typo in the size field")
            path = postmortem.path_for(Path(env.config.state_dir), inc_id)
            await wait_for(path.exists, 2)
            text = path.read_text()
            assert text.startswith(f"# Postmortem {inc_id}: operator-kill P0\n")
            assert "kill-switch pulled: fat finger" in text
            assert "acknowledged; commander ann" in text  # the journal's timeline
            assert "## Root cause\n\na typo in the size field\n" in text
            assert "## What happened\n\n" + postmortem.PLACEHOLDER in text
            (row,) = await env.request("incidents", all=True)
            pm = row["postmortem"]
            assert pm["written"] is False and pm["overdue"] is False
            assert pm["due"] == row["opened_at"] + 24 * 3600  # from the incident, not its end
            # People write it: it counts as written, and is never overwritten.
            path.write_text(text.replace(postmortem.PLACEHOLDER, "The size field took "
                                         "shares for lots.", 1))
            (row,) = await env.request("incidents", all=True)
            assert row["postmortem"]["written"] is True


def test_an_unwritten_p0_postmortem_is_overdue_24_hours_after_the_breach(
        tmp_path: Path) -> None:
    """playbook 02 risk-breach "review within 24 hours": from the breach, not from the
    resolution (a breach resolved 20 h later leaves 4 h for the review)."""
    from supervisor.core.desk import Incident

    opened = 1000.0
    inc = Incident(id="INC-1", incident_class="risk-breach", severity="P0", scope="desk",
                   state="resolved", summary="s", opened_at=opened, opened_by="actor:risk",
                   root_cause="r", resolved_at=opened + 20 * 3600,
                   resolved_by="operator:ann")
    postmortem.write(tmp_path, inc)
    at = opened + 24 * 3600
    assert postmortem.state(tmp_path, inc, at)["overdue"] is False  # type: ignore[index]
    assert postmortem.state(tmp_path, inc, at + 1)["overdue"] is True  # type: ignore[index]


async def test_an_overdue_p0_postmortem_is_chased_once_on_the_queue(tmp_path: Path) -> None:
    """playbook 06 principle 10: the artifact is more valuable than the fix. An unwritten P0
    postmortem past its 24 h raises one QUEUE alert (work for the day, not a night page)."""
    import time

    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",)) as env:
            desk = env.desk
            await env.request("kill", reason="drill")
            inc_id = desk.state.incidents[0].id
            await env.request("resolve", id=inc_id, root_cause="drill")
            path = postmortem.path_for(desk.state_dir, inc_id)
            await wait_for(path.exists, 2)
            assert await desk.arming.chase_postmortems() == []  # not due yet
            desk.wall = lambda: time.time() + 25 * 3600  # a day later
            assert await desk.arming.chase_postmortems() == [inc_id]
            (alert,) = [a for a in desk.alerts.recent if a.source == "supervisor:postmortems"]
            assert alert.channel == "QUEUE" and alert.incident_id == inc_id
            assert alert.summary.startswith(f"postmortem of {inc_id} (operator-kill P0) is "
                                            "overdue: write ")
            assert await desk.arming.chase_postmortems() == []  # once
