"""Playbook 03's recovery trees and playbook 01's runbooks: every path of every tree, probes over
the status dict, and the ``tree`` / ``runbook`` commands over a real desk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import pytest
import trio

from supervisor.cli import deskctl
from supervisor.core import protocol as p
from supervisor.core.errors import ControlError
from supervisor.playbook import RUNBOOKS, TREES, Pending, leaf_paths, walk

from .deskenv import open_desk, run_deskctl, wait_for

# (tree, operator answers, leaf kind, words of the playbook's leaf, runbook): all 21 leaves.
LEAVES = [
    ("no-fills", {"Q1": False}, "kill-switch", "Broker is down.", "killswitch"),
    ("no-fills", {"Q1": True, "Q2": False}, "rollback", "Order-builder bug.",
     "config-rollback"),
    ("no-fills", {"Q1": True, "Q2": True, "Q3": False}, "investigate",
     "Check venue reject codes.", None),
    ("no-fills", {"Q1": True, "Q2": True, "Q3": True}, "throttle",
     "Halve order frequency.", None),
    ("wrong-pnl", {"Q1": False}, "investigate", "expected ~5% of the time", None),
    ("wrong-pnl", {"Q1": True, "Q2": True}, "throttle", "Signal is genuinely decaying.",
     "retrain"),
    ("wrong-pnl", {"Q1": True, "Q2": False}, "rollback", "Rollback to the prior model_hash",
     "model-rollback"),
    ("missing-data", {"Q1": True, "Q2": True}, "investigate",
     "Halt or corporate-action gap.", None),
    ("missing-data", {"Q1": True, "Q2": False}, "investigate",
     "Vendor-side single-symbol issue.", None),
    ("missing-data", {"Q1": False, "Q3": True}, "rollback", "Failover to the backup vendor.",
     "reconciliation"),
    ("missing-data", {"Q1": False, "Q3": False}, "kill-switch", "Both vendors down.",
     "killswitch"),
    ("alerts-spam", {"Q1": False}, "throttle", "Multiple unrelated issues.", None),
    ("alerts-spam", {"Q1": True, "Q2": True}, "investigate", "Snooze downstream alerts",
     None),
    ("alerts-spam", {"Q1": True, "Q2": False}, "investigate", "Open a parent incident", None),
    ("config-mismatch", {"Q1": True, "Q2": True}, "investigate", "Commit the live config now.",
     None),
    ("config-mismatch", {"Q1": True, "Q2": False}, "rollback", "Accidental hot-edit.",
     "config-rollback"),
    ("config-mismatch", {"Q1": False}, "rollback", "Unexplained drift.", "config-rollback"),
    ("post-incident", {"Q1": False}, "investigate", "Do not resume on hope.", None),
    ("post-incident", {"Q1": True, "Q2": False}, "investigate",
     "Reconcile to the broker file first.", "reconciliation"),
    ("post-incident", {"Q1": True, "Q2": True, "Q3": False}, "investigate",
     "Limits got softened during the incident.", None),
    ("post-incident", {"Q1": True, "Q2": True, "Q3": True}, "resume",
     "Resume at 25% size for one full session.", None),
]


def test_the_six_trees_are_the_protocols_and_deskctls() -> None:
    assert list(TREES) == ["no-fills", "wrong-pnl", "missing-data", "alerts-spam",
                           "config-mismatch", "post-incident"]
    assert get_args(p.TreeName) == tuple(TREES)


def test_the_table_covers_every_leaf_path_of_every_tree() -> None:
    every = {(t.id, tuple(sorted(a.items()))) for t in TREES.values() for a, _ in leaf_paths(t)}
    assert every == {(t, tuple(sorted(a.items()))) for t, a, *_ in LEAVES}
    assert len(every) == 21


@pytest.mark.parametrize(("tree", "answers", "kind", "words", "runbook"), LEAVES,
                         ids=[f"{t}-{'-'.join(f'{k}{int(v)}' for k, v in a.items())}"
                              for t, a, *_ in LEAVES])
def test_operator_answers_walk_to_the_seeds_leaf(
    tree: str, answers: dict[str, bool], kind: str, words: str, runbook: str | None
) -> None:
    w = walk(TREES[tree], answers, {})
    assert w.pending is None and w.leaf is not None
    assert (w.leaf.kind, w.leaf.runbook) == (kind, runbook)
    assert words in w.leaf.text
    assert [(s.question, s.answer, s.source) for s in w.path] == [
        (q, a, "operator") for q, a in answers.items()]


def test_every_runbook_a_leaf_names_exists() -> None:
    named = {leaf.runbook for t in TREES.values() for _, leaf in leaf_paths(t)} - {None}
    assert named <= set(RUNBOOKS)


def test_nothing_answers_so_the_walk_stops_at_the_first_question() -> None:
    w = walk(TREES["config-mismatch"], {}, {"venues": {}, "freshness": {}})
    assert w.path == [] and w.leaf is None
    assert w.pending == Pending("Q1", "Was a deploy or hot-fix performed in the last 2 hours?")


def test_an_unknown_question_is_refused() -> None:
    with pytest.raises(ValueError) as exc:
        walk(TREES["no-fills"], {"Q9": True}, {})
    assert str(exc.value) == "tree no-fills has no question Q9; its questions are Q1, Q2, Q3"


def _hb(ok: bool | None, **kw: Any) -> dict[str, Any]:
    return {"heartbeat": {"ok": ok, "latency_ms": 1.5, "failures_in_window": 0,
                          "last_error": None, **kw}}


def test_a_failing_heartbeat_answers_no_fills_q1_over_the_operator() -> None:
    st = {"venues": {"alpha": _hb(True),
                     "beta": _hb(False, failures_in_window=3, last_error="timeout")}}
    w = walk(TREES["no-fills"], {"Q1": True}, st)
    assert w.leaf is not None and w.leaf.kind == "kill-switch"
    (step,) = w.path
    assert (step.answer, step.source) == (False, "probe")
    assert step.evidence == ("heartbeat: beta FAILING (3 failure(s) in window, last error: "
                             "timeout); alpha ok (1.5 ms) (operator answered yes; the probe "
                             "decides)")


def test_healthy_heartbeats_answer_q1_and_the_walk_asks_q2() -> None:
    w = walk(TREES["no-fills"], {}, {"venues": {"alpha": _hb(True)}})
    assert [(s.question, s.answer, s.source) for s in w.path] == [("Q1", True, "probe")]
    assert w.pending is not None and w.pending.question == "Q2"


def test_an_unchecked_venue_leaves_q1_to_the_operator() -> None:
    w = walk(TREES["no-fills"], {}, {"venues": {"alpha": _hb(None)}})
    assert w.pending == Pending("Q1", "Is the broker status page green?",
                                "heartbeat: alpha not checked yet")


@pytest.mark.parametrize(("streak", "verdict", "expected"), [
    (3, "divergence", "pending Q2"), (1, "watch", "investigate"), (0, "no_data", "pending Q1")])
def test_the_pnl_band_streak_answers_wrong_pnl_q1(streak: int, verdict: str,
                                                   expected: str) -> None:
    st = {"pnl": {"pnl_band": {"verdict": verdict, "streak": streak}}}
    w = walk(TREES["wrong-pnl"], {}, st)
    got = f"pending {w.pending.question}" if w.pending else w.leaf and w.leaf.kind
    assert got == expected


def _fresh(primary_stale: list[str], backup_stale: list[str] | None, *, universe: int = 10,
           halted: dict[str, Any] | None = None) -> dict[str, Any]:
    def feed(stale: list[str]) -> dict[str, Any]:
        return {"count": len(stale), "whole_feed": len(stale) > 1, "bars": 100,
                "symbols": stale}
    stale = {"iex": feed(primary_stale)}
    if backup_stale is not None:
        stale["polygon"] = feed(backup_stale)
    return {"freshness": {"active_vendor": "iex", "primary_vendor": "iex",
                          "backup_vendor": None if backup_stale is None else "polygon",
                          "universe": universe, "stale": stale, "halted": halted or {}}}


def test_a_single_halted_symbol_is_a_corporate_action_gap_by_probes_alone() -> None:
    st = _fresh(["AAPL"], [], halted={"AAPL": {"reason": "split 4:1"}})
    w = walk(TREES["missing-data"], {}, st)
    assert [(s.question, s.answer, s.source) for s in w.path] == [
        ("Q1", True, "probe"), ("Q2", True, "probe")]
    assert w.path[1].evidence == "halt reported: AAPL: split 4:1"
    assert w.leaf is not None and w.leaf.text.startswith("Halt or corporate-action gap.")


def test_a_single_unhalted_symbol_asks_the_operator_about_a_corporate_action() -> None:
    w = walk(TREES["missing-data"], {"Q2": False}, _fresh(["MSFT"], []))
    assert [(s.question, s.source) for s in w.path] == [("Q1", "probe"), ("Q2", "operator")]
    assert w.leaf is not None and w.leaf.text.startswith("Vendor-side single-symbol issue.")


@pytest.mark.parametrize(("backup", "kind"), [([], "rollback"), (["A", "B", "C"], "kill-switch"),
                                             (None, "kill-switch")])
def test_the_backup_vendor_answers_missing_data_q3(backup: list[str] | None,
                                                   kind: str) -> None:
    w = walk(TREES["missing-data"], {"Q3": True}, _fresh(["A", "B", "C"], backup))
    step = w.path[0]
    assert (step.question, step.answer, step.source) == ("Q1", False, "probe")
    assert w.path[1].source == "probe"
    assert w.leaf is not None and w.leaf.kind == kind


def test_post_incident_probes_refuse_in_the_trees_words() -> None:
    unresolved = {"kill": {"latched": True, "since": 100.0}, "reconciliation": None,
                  "resume_blockers": ["incident INC-1 (operator-kill P0) is open: resolve it "
                                      "with a written root cause first (do not resume on hope)"]}
    w = walk(TREES["post-incident"], {"Q1": True}, unresolved)
    assert w.leaf is not None and w.leaf.text.startswith("Do not resume on hope.")
    stale_rec: dict[str, Any] = {"kill": {"latched": True, "since": 100.0}, "resume_blockers": [],
                 "reconciliation": {"ts": 50.0, "clean": True, "differences": 0,
                                    "report": "r.json"}}
    w = walk(TREES["post-incident"], {"Q1": True}, stale_rec)
    assert [(s.question, s.source) for s in w.path] == [("Q1", "operator"), ("Q2", "probe")]
    assert w.leaf is not None and w.leaf.runbook == "reconciliation"
    softened = {**stale_rec, "reconciliation": {**stale_rec["reconciliation"], "ts": 150.0},
                "resume_blockers": ["risk limits got softened during the incident: restore "
                                    "them first (max_position 10 -> 20)"]}
    w = walk(TREES["post-incident"], {"Q1": True}, softened)
    assert [(s.question, s.answer) for s in w.path] == [("Q1", True), ("Q2", True),
                                                        ("Q3", False)]
    assert w.leaf is not None and w.leaf.text.startswith("Limits got softened")
    w = walk(TREES["post-incident"], {"Q1": True}, {**softened, "resume_blockers": []})
    assert w.leaf is not None and w.leaf.kind == "resume"


def test_alerts_from_one_incident_are_a_single_root_cause() -> None:
    recent = [{"incident_id": "INC-1", "count": 7, "summary": "x"},
              {"incident_id": "INC-2", "count": 3, "summary": "y"}]
    w = walk(TREES["alerts-spam"], {}, {"alerts": {"recent": recent}})
    assert w.path[0].evidence == "7 of 10 recent alert(s) (70%) come from INC-1"
    assert w.pending is not None and w.pending.question == "Q2"


def test_the_ten_runbooks_are_all_there_with_steps_and_a_verify() -> None:
    assert list(RUNBOOKS) == ["rolling-deploy", "feature-deploy", "model-rollback",
                              "config-rollback", "killswitch", "reconciliation",
                              "drift-investigation", "retrain", "broker-failover",
                              "api-credentials"]
    assert [r.category for r in RUNBOOKS.values()] == [
        "DEPLOY", "DEPLOY", "ROLLBACK", "ROLLBACK", "INCIDENT", "INCIDENT", "DRIFT", "DRIFT",
        "BROKER", "BROKER"]
    for r in RUNBOOKS.values():
        assert len(r.steps) >= 4 and all(r.steps)
        assert r.verify and r.trigger and r.frequency and r.title
    assert RUNBOOKS["killswitch"].steps[1] == ("Cancel all open orders across all venues; do "
                                               "NOT wait for venue confirmation")


# --- the commands over a real desk -------------------------------------------------------


async def test_tree_and_runbook_requests_over_the_socket(tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with open_desk(tmp_path, ("alpha",)) as env:
            await wait_for(lambda: env.desk.heartbeat.status["alpha"].ok)
            # Q3 (rate-limit budget) is the probe's: the venue's X-RateLimit-* headers say
            # there is budget left, whatever the operator says.
            w = await env.request("tree", id="no-fills", answers={"Q2": True, "Q3": True})
            assert [(s["question"], s["answer"], s["source"]) for s in w["path"]] == [
                ("Q1", True, "probe"), ("Q2", True, "operator"), ("Q3", False, "probe")]
            assert w["path"][0]["evidence"].startswith("heartbeat: alpha ok")
            assert w["leaf"]["kind"] == "investigate" and w["pending"] is None
            await env.request("kill", reason="drill")
            w = await env.request("tree", id="post-incident", answers={"Q1": True})
            assert w["path"][0]["source"] == "probe" and w["path"][0]["answer"] is False
            assert w["leaf"]["text"].startswith("Do not resume on hope.")
            books = await env.request("runbook")
            assert [b["id"] for b in books] == list(RUNBOOKS)
            kill = await env.request("runbook", id="killswitch")
            assert kill["title"] == "Pull the kill-switch" and len(kill["steps"]) == 4
            with pytest.raises(ControlError) as exc:
                await env.request("runbook", id="nope")
            assert exc.value.code == "not_found"
            with pytest.raises(ControlError) as exc:
                await env.request("tree", id="no-fills", answers={"Q7": True})
            assert (exc.value.code, exc.value.message) == (
                "bad_request", "tree no-fills has no question Q7; its questions are Q1, Q2, Q3")
            with pytest.raises(ControlError) as exc:
                await env.request("tree", id="no-such-tree")
            assert exc.value.code == "bad_request"


async def test_deskctl_tree_prints_the_walk_and_the_runbook(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(15):
        async with open_desk(tmp_path, ("alpha",)) as env:
            await wait_for(lambda: env.desk.heartbeat.status["alpha"].ok)
            code = await run_deskctl(env.socket, "tree", "no-fills", "--answer", "Q2=no")
            out = capsys.readouterr().out
            assert code == 0
            lines = out.splitlines()
            assert lines[0] == "tree no-fills: Orders are not filling"
            assert lines[1] == "Q1  Is the broker status page green?"
            assert lines[2].startswith("    yes (probe): heartbeat: alpha ok")
            assert lines[3:5] == ["Q2  Are orders respecting tick / lot size?",
                                  "    no (operator): answered by the operator"]
            assert lines[5].startswith("=> [ROLLBACK] Order-builder bug.")
            assert lines[6] == "   runbook config-rollback: Rollback a config change"
            assert lines[7] == ("     01 git revert the offending commit; force-push is "
                                "forbidden")
            assert lines[-1].startswith("     verify: git rev-parse HEAD")
            code = await run_deskctl(env.socket, "tree", "config-mismatch")
            captured = capsys.readouterr()
            assert code == 1
            last = captured.out.splitlines()[-2:]
            assert last[0] == "Q1  Was a deploy or hot-fix performed in the last 2 hours?"
            # The deploy watch has not covered the 2 h yet: the probe says so, Q1 waits.
            assert last[1].startswith("    needs an answer (probe saw: no new model_hash")
            assert captured.err == ("deskctl: tree config-mismatch needs an answer to Q1: "
                                    "re-run with --answer Q1=yes or --answer Q1=no\n")
            code = await run_deskctl(env.socket, "tree", "config-mismatch", "--answer", "Q1=no",
                                  "--json")
            w = json.loads(capsys.readouterr().out)
            assert code == 0 and w["leaf"]["kind"] == "rollback"
            assert w["path"] == [{"question": "Q1", "text": "Was a deploy or hot-fix "
                                  "performed in the last 2 hours?", "answer": False,
                                  "source": "operator", "evidence": "answered by the operator"}]
            with pytest.raises(SystemExit) as usage:
                deskctl.main(["--socket", env.socket, "tree", "no-fills", "--answer",
                              "Q2=maybe"])
            assert usage.value.code == deskctl.EXIT_USAGE
            assert "'Q2=maybe' is not QID=yes or QID=no" in capsys.readouterr().err


async def test_deskctl_runbook_lists_ten_and_shows_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(15):
        async with open_desk(tmp_path, ("alpha",)) as env:
            assert await run_deskctl(env.socket, "runbook") == 0
            lines = capsys.readouterr().out.splitlines()
            assert lines[0].split() == ["ID", "CATEGORY", "PROCEDURE", "FREQUENCY"]
            assert [line.split()[0] for line in lines[1:]] == list(RUNBOOKS)
            assert await run_deskctl(env.socket, "runbook", "broker-failover") == 0
            out = capsys.readouterr().out
            assert out.startswith("Failover to backup broker\nid broker-failover · category "
                                  "BROKER · frequency Test on a paper account monthly\n")
            assert "  03 Open a single-share test order on a liquid symbol; cancel " \
                   "immediately\n" in out
            assert await run_deskctl(env.socket, "runbook", "nope") == deskctl.EXIT_REFUSED
            assert capsys.readouterr().err.startswith(
                "deskctl: runbook refused (not_found): no runbook 'nope'")
