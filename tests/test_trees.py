"""Playbook 03's recovery trees made executable: the interactive walk at the terminal, the
leaves' actions (kill-switch, throttle, resume), the new probes (rate limit, deploys),
the supervisor's own walks on broker-outage and pnl-divergence incidents, and ``resume``
as the post-incident tree."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from simulators.scenarios import DIVERGENCE_DAYS, SCENARIOS, play
from supervisor.cli import deskctl, treecli
from supervisor.control.client import ControlClient
from supervisor.core.desk import (
    INCIDENT_CLASSES,
    DeskState,
    Incident,
    KillState,
    Reconciliation,
    resume_blockers,
)
from supervisor.core.errors import ControlError
from supervisor.ops import postmortem
from supervisor.ops.deploys import DeploysConfig, DeployWatch
from supervisor.playbook import TREES, leaf_paths, walk
from supervisor.playbook.auto import AUTO_TREES, describe
from supervisor.playbook.probes import rate_limit_exhausted, recent_deploy
from supervisor.playbook.resume import question_of, refusal, walk_resume

from .deskenv import open_desk, wait_for
from .world import InProcessWorld, open_world

# --- leaves carry the playbook's multipliers ---------------------------------------------------


def test_every_throttle_leaf_carries_the_seeds_multiplier() -> None:
    throttles = {(t.id, leaf.text.split(".")[0]): leaf.multiplier
                 for t in TREES.values() for _, leaf in leaf_paths(t) if leaf.kind == "throttle"}
    assert throttles == {
        ("no-fills", "Halve order frequency"): 0.25,  # "Resume at 25% size to verify"
        ("wrong-pnl", "Signal is genuinely decaying"): 0.5,  # "Halve allocation"
        ("alerts-spam", "Multiple unrelated issues"): 0.5,  # "Halve live size"
    }
    others = [leaf for t in TREES.values() for _, leaf in leaf_paths(t)
              if leaf.kind != "throttle"]
    assert all(leaf.multiplier is None for leaf in others)
    assert INCIDENT_CLASSES["operator-throttle"] == "P1"


# --- probe: rate-limit budget (no-fills Q3) -------------------------------------------------


def _rl(remaining: int | None, limit: int = 200, reset: float = 1_795_000_060.0
        ) -> dict[str, Any]:
    return {"heartbeat": {"ok": True, "latency_ms": 1.0},
            "rate_limit": {"limit": limit, "remaining": remaining, "reset": reset,
                           "ts": 1_795_000_000.0}}


def test_a_venue_with_no_budget_left_answers_q3_yes() -> None:
    st = {"venues": {"alpha": _rl(0), "beta": _rl(150)}}
    got = rate_limit_exhausted(st)
    assert got is not None and got.answer is True
    assert got.evidence == (
        "rate limit: alpha 0 of 200 request(s) left at 2026-11-18 11:06:40Z, window resets "
        "2026-11-18 11:07:40Z; beta 150 of 200 request(s) left at 2026-11-18 11:06:40Z, "
        "window resets 2026-11-18 11:07:40Z")
    w = walk(TREES["no-fills"], {"Q2": True}, st)
    assert [(s.question, s.answer, s.source) for s in w.path] == [
        ("Q1", True, "probe"), ("Q2", True, "operator"), ("Q3", True, "probe")]
    assert w.leaf is not None and (w.leaf.kind, w.leaf.multiplier) == ("throttle", 0.25)


def test_budget_left_on_every_venue_answers_q3_no() -> None:
    st = {"venues": {"alpha": _rl(10, reset=30.0), "beta": _rl(150)}}
    got = rate_limit_exhausted(st)
    assert got is not None and got.answer is False
    assert "alpha 10 of 200 request(s) left" in got.evidence
    assert "window resets in 30 s" in got.evidence
    w = walk(TREES["no-fills"], {"Q2": True}, st)
    assert w.leaf is not None and w.leaf.text.startswith("Check venue reject codes.")


def test_a_venue_without_headers_leaves_q3_to_the_operator() -> None:
    st: dict[str, Any] = {"venues": {"alpha": _rl(10), "beta": {"rate_limit": None}}}
    got = rate_limit_exhausted(st)
    assert got is not None and got.answer is None
    assert got.evidence.endswith("beta sent no rate-limit headers")
    assert rate_limit_exhausted({"venues": {"alpha": {"rate_limit": None}}}) is None
    assert rate_limit_exhausted({"venues": {"alpha": {"heartbeat": {}}}}) is None
    assert rate_limit_exhausted({}) is None
    unknown = rate_limit_exhausted({"venues": {"alpha": _rl(None)}})
    assert unknown is not None and unknown.answer is None


# --- probe: a deploy in the last 2 hours (config-mismatch Q1) -------------------------------

NOW = 1_795_000_000.0


def _deploys(changes: list[dict[str, Any]], watching_since: float) -> dict[str, Any]:
    return {"deploys": {"as_of": NOW, "window_s": 7200.0, "watching_since": watching_since,
                        "changes": changes}}


def test_a_model_deploy_an_hour_ago_answers_config_mismatch_q1_yes() -> None:
    st = _deploys([{"ts": NOW - 9000, "kind": "model", "what": "old one"},
                   {"ts": NOW - 3600, "kind": "model",
                    "what": "model deploy: live model_hash aaa -> bbb"}], NOW - 86400)
    got = recent_deploy(st)
    assert got is not None and got.answer is True
    assert got.evidence == ("observed in the last 2 h: 2026-11-18 10:06:40Z model deploy: "
                            "live model_hash aaa -> bbb")
    w = walk(TREES["config-mismatch"], {"Q2": False}, st)
    assert w.leaf is not None and w.leaf.text.startswith("Accidental hot-edit.")


def test_nothing_seen_over_the_whole_window_answers_q1_no() -> None:
    got = recent_deploy(_deploys([{"ts": NOW - 9000, "kind": "model", "what": "x"}],
                                 NOW - 7200))
    assert got is not None and got.answer is False
    assert got.evidence.startswith("no new model_hash, no move of the deployed config ref, "
                                   "no live config file written in the last 2 h (watched "
                                   "since 2026-11-18 09:06:40Z)")
    w = walk(TREES["config-mismatch"], {}, _deploys([], NOW - 7200))
    assert w.leaf is not None and w.leaf.text.startswith("Unexplained drift.")


def test_a_watch_younger_than_the_window_leaves_q1_to_the_operator() -> None:
    got = recent_deploy(_deploys([], NOW - 60))
    assert got is not None and got.answer is None
    assert "watched only since 2026-11-18 11:05:40Z" in got.evidence
    assert recent_deploy({}) is None


async def test_the_deploy_watch_records_model_ref_and_file_changes(tmp_path: Path) -> None:
    live = tmp_path / "config.yml"
    live.write_text("a: 1\n")
    os.utime(live, (NOW - 86400, NOW - 86400))
    clock = {"now": NOW}
    sources: dict[str, str | None] = {"model": "unknown", "ref": None}
    notes: list[str] = []

    async def note(text: str) -> None:
        notes.append(text)

    def watch() -> DeployWatch:
        return DeployWatch(DeploysConfig(), model_hash=lambda: sources["model"],
                           config_commit=lambda: sources["ref"], config_files=[str(live)],
                           state_path=tmp_path / "deploys.json", wall_clock=lambda: clock["now"],
                           note=note)

    w = watch()
    await w.load()
    assert await w.observe() == []  # the first look is the baseline, not a deploy
    sources.update(model="m1", ref="c" * 40)
    assert await w.observe() == []  # unknown -> known is not a deploy either
    clock["now"] += 60
    sources.update(model="m2")
    (change,) = await w.observe()
    assert (change.kind, change.old, change.new, change.ts) == ("model", "m1", "m2", NOW + 60)
    assert notes == ["deploy observed: model deploy: live model_hash m1 -> m2"]
    sources.update(ref="d" * 40)
    os.utime(live, (NOW + 61, NOW + 61))
    clock["now"] += 10
    changes = await w.observe()
    assert [(c.kind, c.ts) for c in changes] == [("config-ref", NOW + 70),
                                                 ("config-file", NOW + 61)]
    assert changes[0].what == ("config release: the deployed ref moved from commit "
                               "cccccccccccc to dddddddddddd")
    st = w.status()
    assert st["watching_since"] == NOW and len(st["changes"]) == 3  # type: ignore[arg-type]
    # A restart reads what it saw: same values, no new deploy.
    again = watch()
    await again.load()
    assert await again.observe() == []
    assert again.status()["changes"] == st["changes"]
    assert again.status()["watching_since"] == NOW


# --- the interactive walk, against a real daemon ---------------------------------------------


def _interactive(sock: str, tree: str, typed: str, answers: dict[str, bool] | None = None
                 ) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with ControlClient(sock) as client:
        code = treecli.walk_interactive(client, tree, answers or {}, inp=io.StringIO(typed),
                                        out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def _run(fn: Any, *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


async def _spend_the_budget(env: Any) -> None:
    """The venue has no request left this minute: no-fills Q3 is YES by its probe."""
    from simulators.venue import RateLimited
    from supervisor.core.errors import VenueRateLimited

    env.sims["alpha"].faults.set(RateLimited(remaining=0))
    with pytest.raises(VenueRateLimited):
        await env.desk.venues[0].ping()  # the adapter reads X-RateLimit-Remaining: 0
    assert env.desk.venues[0].rate_limit.remaining == 0


async def test_interactive_no_fills_asks_re_asks_and_executes_the_throttle(
        tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with open_desk(tmp_path, ("alpha",)) as env:
            await wait_for(lambda: env.desk.heartbeat.status["alpha"].ok)
            await _spend_the_budget(env)
            code, out, err = await _run(_interactive, env.socket, "no-fills",
                                        "maybe\nY\n\ny\n")
            assert (code, err) == (0, "")
            lines = out.splitlines()
            assert lines[0] == "tree no-fills: Orders are not filling"
            assert lines[1] == "Q1  Is the broker status page green?"
            assert lines[2].startswith("    yes (probe): heartbeat: alpha ok")
            assert lines[3] == "Q2  Are orders respecting tick / lot size?"
            assert lines[4] == "    your answer [y/n]:     please answer y or n (got 'maybe')"
            assert lines[5] == "    your answer [y/n]: Q2  Are orders respecting tick / lot size?"
            assert lines[6] == "    yes (operator): answered by the operator"
            # Q3 is the probe's: the venue's X-RateLimit-Remaining says 0.
            assert lines[7] == "Q3  Has the rate-limit budget been exhausted?"
            assert lines[8].startswith("    yes (probe): ") and "alpha" in lines[8]
            leaf = lines.index("=> [THROTTLE] Halve order frequency. Wait one rate-limit "
                               "window. Resume at 25% size to verify.")
            assert lines[leaf + 1] == "   size multiplier 0.25"
            offer = next(line for line in lines[leaf:] if line.startswith("throttle the desk"))
            assert offer.startswith("throttle the desk to 0.25 size now? [y/n]:     please "
                                    "answer y or n (got '')") or offer.startswith(
                "throttle the desk to 0.25 size now? [y/n]: throttled: incident INC-")
            st = env.desk.status()
            assert (st["mode"], st["size_multiplier"]) == ("THROTTLED", 0.25)
            (inc,) = [i for i in env.desk.state.incidents if i.live]
            assert (inc.incident_class, inc.severity, inc.size_multiplier) == (
                "operator-throttle", "P1", 0.25)
            assert inc.opened_by.startswith("operator:")
            assert inc.summary == (
                "operator throttle to 0.25 size: recovery tree no-fills: Q1=yes (probe), "
                "Q2=yes (operator), Q3=yes (probe) -> throttle: Halve order frequency. "
                "Wait one rate-limit window. Resume at 25% size to verify.")
            # Resolved like any incident: back to NORMAL, through the state machine.
            await env.request("resolve", id=inc.id, root_cause="rate limit, budget restored")
            assert env.desk.state.mode == "NORMAL"


async def test_interactive_end_of_input_aborts_with_nothing_executed(tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with open_desk(tmp_path, ("alpha",)) as env:
            await wait_for(lambda: env.desk.heartbeat.status["alpha"].ok)
            await _spend_the_budget(env)
            code, out, err = await _run(_interactive, env.socket, "no-fills", "x\n")
            assert code == treecli.EXIT_PENDING
            assert out.splitlines()[-1] == "    your answer [y/n]: "
            assert err == ("deskctl: tree no-fills: aborted at Q2 (end of input); nothing "
                           "executed\n")
            # At the leaf's offer too: EOF executes nothing.
            code, out, err = await _run(_interactive, env.socket, "no-fills", "y\n")
            assert code == treecli.EXIT_PENDING
            assert err == ("deskctl: tree no-fills: aborted at the throttle leaf (end of "
                           "input); nothing executed\n")
            code, out, err = await _run(_interactive, env.socket, "no-fills", "y\nn\n")
            assert (code, out.splitlines()[-1]) == (0, "throttle the desk to 0.25 size now? "
                                                       "[y/n]: not executed")
            assert env.desk.state.incidents == () and env.desk.state.mode == "NORMAL"


async def test_interactive_kill_switch_leaf_pulls_the_switch_naming_the_path(
        tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with open_desk(tmp_path, ("alpha",)) as env:
            # No bars from the backup vendor: missing-data Q3 is NO by probe.
            code, out, err = await _run(_interactive, env.socket, "missing-data", "n\ny\n")
            assert (code, err) == (0, "")
            assert "    no (probe): no bars received from the backup vendor backup" in out
            assert "=> [KILL-SWITCH] Both vendors down. Stop trading." in out
            assert "   runbook killswitch: Pull the kill-switch" in out
            assert out.splitlines()[-1].startswith(
                "pull the kill-switch now? [y/n]: kill-switch pulled: mode HALTED, incident ")
            kill = env.desk.state.kill
            assert kill.latched and kill.by is not None and kill.by.startswith("operator:")
            assert kill.reason == ("recovery tree missing-data: Q1=no (operator), Q3=no "
                                   "(probe) -> kill-switch: Both vendors down. Stop trading. "
                                   "Tighten stops; flatten by EOD if data does not recover.")


async def test_interactive_rollback_leaf_prints_the_runbook_and_executes_nothing(
        tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with open_desk(tmp_path, ("alpha",)) as env:
            await wait_for(lambda: env.desk.heartbeat.status["alpha"].ok)
            code, out, _ = await _run(_interactive, env.socket, "no-fills", "n\n")
            assert code == 0
            assert "   runbook config-rollback: Rollback a config change" in out
            assert "     01 git revert the offending commit; force-push is forbidden" in out
            assert out.splitlines()[-1] == ("nothing to execute for a rollback leaf: follow "
                                            "the steps above")
            assert env.desk.state.incidents == ()


async def test_non_interactive_execute_throttles_and_json_stays_data(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(15):
        async with open_desk(tmp_path, ("alpha",)) as env:
            # No alerts yet: alerts-spam Q1 is the operator's ("no": unrelated issues).
            args = ["--socket", env.socket, "tree", "alerts-spam", "--answer", "Q1=no"]
            # Without --execute: the walk only, nothing done.
            assert await _run(deskctl.main, [*args, "--json"]) == 0
            w = json.loads(capsys.readouterr().out)
            assert w["leaf"] == {"node": "leaf", "kind": "throttle", "text": (
                "Multiple unrelated issues. Halve live size; triage alerts in priority order; "
                "do not ignore the noisy ones - that is how the next outage starts."),
                "runbook": None, "multiplier": 0.5}
            assert env.desk.state.incidents == ()
            assert await _run(deskctl.main, [*args, "--execute"]) == 0
            out = capsys.readouterr().out
            assert out.splitlines()[-1].startswith("throttled: incident INC-")
            assert (env.desk.state.mode, env.desk.state.size_multiplier) == ("THROTTLED", 0.5)
            # A pending walk executes nothing, whatever the flag.
            assert await _run(deskctl.main, ["--socket", env.socket, "tree", "no-fills",
                                             "--execute"]) == 1
            assert len(env.desk.state.incidents) == 1


async def test_the_throttle_request_is_mutating_and_validated(tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with open_desk(tmp_path, ("alpha",)) as env:
            for bad, words in ((1.5, "must be in (0, 1]"), (0.0, "must be in (0, 1]")):
                with pytest.raises(ControlError) as exc:
                    await env.request("throttle", multiplier=bad, reason="x")
                assert exc.value.code == "bad_request" and words in exc.value.message
            with pytest.raises(ControlError) as exc:
                await env.request("throttle", multiplier=0.5, reason="   ")
            assert exc.value.message == "throttle needs a reason"
            r = await env.request("throttle", multiplier=0.5, reason="drill")
            assert (r["mode"], r["size_multiplier"], r["incident_multiplier"]) == (
                "THROTTLED", 0.5, 0.5)
            # A second one joins the incident and can only tighten it.
            r2 = await env.request("throttle", multiplier=0.75, reason="again")
            assert r2["incident_id"] == r["incident_id"] and r2["size_multiplier"] == 0.5
            from supervisor.control.authz import MUTATING
            assert "throttle" in MUTATING


# --- the supervisor walks no-fills and wrong-pnl itself --------------------------------------


def _tree_notes(inc: Incident) -> list[str]:
    return [e.text for e in inc.timeline if e.actor == "supervisor:tree"]


async def _played(world: InProcessWorld, scenario: str, incident_class: str) -> Incident:
    """Play ``scenario``, give the tree walk a second, and return the ``incident_class``
    incident it opened."""
    outcome = await play(SCENARIOS[scenario], world)
    assert outcome.ok, outcome.render()
    await trio.sleep(1)
    return next(i for i in world.desk.state.incidents if i.incident_class == incident_class)


def test_the_auto_walked_classes() -> None:
    assert AUTO_TREES == {"broker-outage": "no-fills", "pnl-divergence": "wrong-pnl",
                          "config-drift": "config-mismatch", "stale-data": "missing-data"}


@pytest.mark.parametrize(("scenario", "path", "end"), [
    # One symbol: the actor suppresses it and trades on (P2); the tree agrees on Q1 and
    # leaves Q2 (a corporate action?) to the operator: both Q2 leaves suppress the symbol.
    ("stale-data-symbol", ["Q1 YES"], "stopped at Q2"),
    # Both vendors: the actor pulls the kill-switch (P0); so does the tree.
    ("stale-data-both", ["Q1 NO", "Q3 NO"], "leaf kill-switch"),
])
async def test_the_missing_data_walk_is_the_path_the_freshness_actor_took(
        tmp_path: Path, autojump_clock: trio.abc.Clock, scenario: str, path: list[str],
        end: str) -> None:
    async with open_world(tmp_path) as world:
        await trio.sleep(15)
        inc = await _played(world, scenario, "stale-data")
        (note,) = _tree_notes(inc)
        steps = note.removeprefix("tree missing-data: ").split(" -> ")
        assert [" ".join(x.split()[:1] + [w for w in x.split() if w in ("YES", "NO")][:1])
                for x in steps[:-1]] == path, note
        assert steps[-1].startswith(end), note


async def test_a_venue_down_walks_no_fills_to_the_kill_switch_leaf(
        tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    async with open_world(tmp_path) as world:
        await trio.sleep(15)
        inc = await _played(world, "broker-outage-venue-down", "broker-outage")
        (note,) = _tree_notes(inc)
        assert note.startswith("tree no-fills: Q1 Is the broker status page green? NO (probe: "
                               "heartbeat: alpha FAILING (3 failure(s) in window")
        assert note.endswith("-> leaf kill-switch: Broker is down. Do not retry blindly - "
                             "duplicate fills on resume are the most expensive mistake here. "
                             "(runbook killswitch)")
        row = next(r for r in world.desk.status()["incidents"] if r["id"] == inc.id)
        assert row["tree"]["tree"] == "no-fills" and row["tree"]["leaf"]["kind"] == "kill-switch"
        # The postmortem shows the path (playbook 06 principle 10).
        text = postmortem.render(inc)
        assert "## Recovery tree\n\n" in text and note in text


async def test_silent_acks_walk_no_fills_to_the_operators_question(
        tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    async with open_world(tmp_path) as world:
        await trio.sleep(15)
        inc = await _played(world, "broker-outage-silent-acks", "broker-outage")
        (note,) = _tree_notes(inc)
        assert note.startswith("tree no-fills: Q1 Is the broker status page green? YES (probe: "
                               "heartbeat: alpha ok")
        assert note.endswith("-> stopped at Q2 Are orders respecting tick / lot size?: "
                             "operator to answer: deskctl tree no-fills")


async def test_a_pnl_divergence_walks_wrong_pnl_as_far_as_the_band_answers(
        tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    async with open_world(tmp_path, monitors=True) as world:
        await trio.sleep(5)
        inc = await _played(world, "pnl-divergence", "pnl-divergence")
        (note,) = _tree_notes(inc)
        assert note == (
            "tree wrong-pnl: Q1 Has this gone on for 3 or more trading days? YES (probe: PnL "
            f"band monitor: {DIVERGENCE_DAYS} trading day(s) in a row below the 95% band "
            "(verdict divergence)) -> stopped at Q2 When you replay the same window through "
            "the backtest engine with live fills, do they agree?: operator to answer: "
            "deskctl tree wrong-pnl")
        # Nothing executed beyond the desk's own P1 response (playbook 02: halve live size).
        assert world.desk.state.size_multiplier == 0.5
        assert not any(i.incident_class == "operator-throttle"
                       for i in world.desk.state.incidents)


async def test_a_config_drift_walks_config_mismatch_to_the_deploy_question(
        tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    """playbook 03 config-mismatch: the live config hash differs from git; Q1 "a deploy in the
    last 2 hours?" is the deploy watch's to answer (the edited file is one)."""
    async with open_world(tmp_path, monitors=True) as world:
        await trio.sleep(5)
        inc = await _played(world, "config-drift", "config-drift")
        (note,) = _tree_notes(inc)
        # The live file was written, with no release behind it: a hot-fix by the desk or
        # an unexpected write (the "unexplained drift" leaf) is the operator's to say.
        assert note.startswith("tree config-mismatch: stopped at Q1 Was a deploy or "
                               "hot-fix performed in the last 2 hours? (probe saw: no "
                               "release (model_hash, deployed ref) in the last 2 h, but "
                               "live config written: "), note
        assert note.endswith(": a hot-fix by the desk, or an unexpected write?): operator "
                             "to answer: deskctl tree config-mismatch")


def test_describe_a_walk_that_ends_at_a_leaf_with_operator_answers() -> None:
    w = walk(TREES["wrong-pnl"], {"Q1": True, "Q2": False}, {})
    assert describe(w) == (
        "tree wrong-pnl: Q1 Has this gone on for 3 or more trading days? YES (operator: "
        "answered by the operator) -> Q2 When you replay the same window through the "
        "backtest engine with live fills, do they agree? NO (operator: answered by the "
        "operator) -> leaf rollback: Production bug - engine and live disagree. Rollback to "
        "the prior model_hash and file a bug ticket. (runbook model-rollback)")


# --- resume is the post-incident tree -----------------------------------------------------------

HALTED = DeskState(mode="HALTED", size_multiplier=0.0, kill=KillState(
    latched=True, since=100.0, incident_id="INC-1", verified=True, limits_at_halt="{}"))
P0_OPEN = Incident(id="INC-1", incident_class="operator-kill", severity="P0", scope="desk",
                   summary="drill", opened_at=100.0, opened_by="operator:ann")
P0_DONE = Incident(id="INC-1", incident_class="operator-kill", severity="P0", scope="desk",
                   state="resolved", summary="drill", opened_at=100.0, opened_by="operator:ann",
                   root_cause="drill", resolved_at=110.0)
CLEAN = Reconciliation(120.0, True, 0, "r.json")


def _status(state: DeskState, blockers: list[str]) -> dict[str, Any]:
    """What Desk.status() shows of the post-incident probes' inputs."""
    rec = state.last_reconciliation
    return {"kill": {"latched": state.kill.latched, "since": state.kill.since},
            "resume_blockers": blockers,
            "reconciliation": None if rec is None else {
                "ts": rec.ts, "clean": rec.clean, "differences": rec.differences,
                "report": rec.report}}


CASES = [
    # (state, limits unrelaxed, the question that fails, the leaf's first words)
    (DeskState(mode="HALTED", kill=HALTED.kill, incidents=(P0_OPEN,),
               last_reconciliation=CLEAN),
     True, "Q1", "Do not resume on hope."),
    (DeskState(mode="HALTED", kill=HALTED.kill, incidents=(P0_DONE,)),
     True, "Q2", "Reconcile to the broker file first."),
    (DeskState(mode="HALTED", kill=HALTED.kill, incidents=(P0_DONE,),
               last_reconciliation=Reconciliation(90.0, True, 0, "old.json")),
     True, "Q2", "Reconcile to the broker file first."),
    (DeskState(mode="HALTED", kill=HALTED.kill, incidents=(P0_DONE,),
               last_reconciliation=Reconciliation(120.0, False, 2, "r.json")),
     True, "Q2", "Reconcile to the broker file first."),
    (DeskState(mode="HALTED", kill=HALTED.kill, incidents=(P0_DONE,), last_reconciliation=CLEAN),
     False, "Q3", "Limits got softened during the incident."),
]


@pytest.mark.parametrize(("state", "unrelaxed", "question", "words"), CASES,
                         ids=["p0-open", "never-reconciled", "reconciled-before-halt",
                              "reconciled-unclean", "limits-softened"])
def test_each_blocker_is_the_trees_question_and_resume_refuses_in_its_words(
        state: DeskState, unrelaxed: bool, question: str, words: str) -> None:
    blockers = resume_blockers(state, authorised=True, limits_unrelaxed=unrelaxed,
                               limits_detail="max_position 10 -> 20")
    assert blockers and {question_of(b) for b in blockers} == {question}
    w = walk_resume(_status(state, blockers), True)  # the operator states the non-prod fix
    assert w.path[-1].question == question and w.path[-1].answer is False
    message = refusal(w, blockers)
    assert message is not None and message.startswith(words)
    assert f"(post-incident {question} {w.path[-1].text} NO: {'; '.join(blockers)})" in message


def test_every_resume_blocker_maps_to_a_question_or_is_outside_the_tree() -> None:
    state = DeskState(mode="HALTED", kill=HALTED.kill, incidents=(P0_OPEN,))
    blockers = resume_blockers(state, authorised=False, limits_unrelaxed=False)
    assert [question_of(b) for b in blockers] == ["Q1", "Q2", "Q3", None]
    assert question_of(resume_blockers(DeskState(), authorised=True)[0]) is None
    # Every blocker the tree covers fails the walk at its question (the first one here).
    w = walk_resume(_status(state, blockers), None)
    message = refusal(w, blockers)
    assert message is not None and message.startswith("Do not resume on hope.")
    assert message.endswith("; also: " + "; ".join(blockers[1:]))


def test_nothing_blocks_so_the_walk_ends_at_resume_only_if_the_operator_states_q1() -> None:
    state = DeskState(mode="HALTED", kill=HALTED.kill, incidents=(P0_DONE,),
                      last_reconciliation=CLEAN)
    st = _status(state, [])
    w = walk_resume(st, True)
    assert w.leaf is not None and w.leaf.kind == "resume" and refusal(w, []) is None
    # not stated (a plain resume): NO at Q1, saying how to state it
    assert refusal(walk_resume(st, None), [], stated=False) == (
        "Do not resume on hope. A documented root cause plus a verified fix in staging are "
        "the minimum. (post-incident Q1 Is the root cause documented and the fix verified in "
        "a non-prod environment? NO: whether the fix was verified in a non-prod environment "
        "is not stated: `deskctl resume --verified-nonprod` once it is (a plain resume does "
        "not count))")
    w = walk_resume(st, False)
    assert refusal(w, []) == (
        "Do not resume on hope. A documented root cause plus a verified fix in staging are "
        "the minimum. (post-incident Q1 Is the root cause documented and the fix verified in "
        "a non-prod environment? NO: the operator says the fix was not verified in a "
        "non-prod environment)")


async def test_resume_over_the_socket_is_the_post_incident_tree(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(20):
        async with open_desk(tmp_path, ("alpha",)) as env:
            r = await env.request("kill", reason="drill")
            inc_id = r["incident_id"]
            with pytest.raises(ControlError) as exc:
                await env.request("resume")
            assert exc.value.code == "resume_refused"
            assert exc.value.message.startswith(
                "Do not resume on hope. A documented root cause plus a verified fix in "
                "staging are the minimum. (post-incident Q1 Is the root cause documented and "
                f"the fix verified in a non-prod environment? NO: incident {inc_id} ")
            await env.request("resolve", id=inc_id, root_cause="drill")
            await wait_for(lambda: env.desk.state.kill.verified, 5)
            await wait_for(lambda: env.desk.state.last_reconciliation is not None, 5)
            # A plain resume does not say the fix was verified in non-prod: refused at Q1.
            with pytest.raises(ControlError) as exc:
                await env.request("resume")
            assert exc.value.message.endswith(
                "NO: whether the fix was verified in a non-prod environment is not stated: "
                "`deskctl resume --verified-nonprod` once it is (a plain resume does not "
                "count))")
            # The operator says the fix was not verified: refused at Q1, in its words.
            with pytest.raises(ControlError) as exc:
                await env.request("resume", verified_nonprod=False)
            assert exc.value.message.endswith("NO: the operator says the fix was not "
                                              "verified in a non-prod environment)")
            assert env.desk.state.kill.latched
            # deskctl resume --verified-nonprod states it; the walk is journaled.
            assert await _run(deskctl.main, ["--socket", env.socket, "resume",
                                             "--verified-nonprod"]) == 0
            assert capsys.readouterr().out.startswith("resumed: mode RECOVERING")
            inc = env.desk.state.incident(inc_id)
            assert inc is not None
            last = inc.timeline[-1]
            assert last.actor.startswith("operator:")
            assert last.text.startswith(
                "resume accepted; fix verified in non-prod stated by the operator; tree "
                "post-incident: Q1 Is the root cause documented and the fix verified in a "
                "non-prod environment? YES (operator: answered by the operator) -> Q2 Have "
                "positions been reconciled to broker truth? YES (probe: reconciled clean")
            assert last.text.endswith("-> leaf resume: Resume at 25% size for one full "
                                      "session. Promote to 100% only if incident-free.")


async def test_the_walk_on_an_incident_outlives_a_restart(tmp_path: Path) -> None:
    from simulators.venue import Outage
    from supervisor.config import HeartbeatConfig

    hb = HeartbeatConfig(interval_s=0.1, window_s=5.0, failures=3, timeout_s=0.5)
    with trio.fail_after(15):
        async with open_desk(tmp_path, ("alpha",), heartbeat=hb) as env:
            env.sims["alpha"].faults.set(Outage())
            await wait_for(lambda: env.desk.walks.walks, 5)
            (inc_id,) = env.desk.walks.walks
            walked = env.desk.walks.walks[inc_id]
            assert walked["tree"] == "no-fills" and walked["leaf"]["kind"] == "kill-switch"
        async with open_desk(tmp_path, ("alpha",)) as env:  # the same state: a restart
            row = next(r for r in env.desk.status()["incidents"] if r["id"] == inc_id)
            assert row["tree"] == walked
