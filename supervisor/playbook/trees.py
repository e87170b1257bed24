"""Playbook 03's six recovery trees as data, and a pure walker over them.

Each tree is the playbook's decision flow, question by question, with the playbook's words. A
question may name a probe: a function of ``Desk.status()`` that answers it from live
state when the supervisor knows the answer (heartbeat, freshness, PnL band,
reconciliation, resume blockers). ``walk`` takes the probe's answer first, else the
operator's, else stops at the question as pending, so the same symptom gives the same
action whoever is on call (playbook 03: "repeatable, not exhaustive").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal

import msgspec

from supervisor.playbook.probes import PROBES

LeafKind = Literal["kill-switch", "throttle", "rollback", "investigate", "resume"]
TreeId = Literal["no-fills", "wrong-pnl", "missing-data", "alerts-spam", "config-mismatch",
                 "post-incident"]
Source = Literal["probe", "operator"]


class Leaf(msgspec.Struct, frozen=True, tag="leaf", tag_field="node"):
    """Where a tree ends: a concrete action, and the runbook procedure it names (if any)."""

    kind: LeafKind
    text: str
    runbook: str | None = None
    # The size multiplier a ``throttle`` leaf applies when executed (``deskctl tree
    # ... --execute``; the ``throttle`` request), in the playbook's own numbers.
    multiplier: float | None = None


class Question(msgspec.Struct, frozen=True, tag="question", tag_field="node"):
    """A yes/no question; ``probe`` names the entry of ``PROBES`` that can answer it."""

    id: str
    text: str
    yes: Question | Leaf
    no: Question | Leaf
    probe: str | None = None


class Tree(msgspec.Struct, frozen=True):
    id: TreeId
    title: str
    one_liner: str
    root: Question


class Step(msgspec.Struct, frozen=True):
    """One answered question on the path: who answered it and on what evidence."""

    question: str
    text: str
    answer: bool
    source: Source
    evidence: str


class Pending(msgspec.Struct, frozen=True):
    """The question a walk stopped at: nothing answered it; ``evidence``: what a probe saw."""

    question: str
    text: str
    evidence: str | None = None


class Walk(msgspec.Struct, frozen=True):
    """The path taken; ``leaf`` where it ended, else ``pending``: the question to answer."""

    tree: TreeId
    title: str
    path: list[Step]
    leaf: Leaf | None = None
    pending: Pending | None = None

    @property
    def done(self) -> bool:
        return self.leaf is not None


# --- playbook 03, tree by tree (the playbook's words; runbooks from playbook 01) ---------

NO_FILLS = Tree(
    "no-fills", "Orders are not filling",
    "Order route looks healthy but acknowledgements are silent.",
    Question(
        "Q1", "Is the broker status page green?", probe="broker_up",
        no=Leaf("kill-switch", "Broker is down. Do not retry blindly - duplicate fills on "
                "resume are the most expensive mistake here.", "killswitch"),
        yes=Question(
            "Q2", "Are orders respecting tick / lot size?",
            no=Leaf("rollback", "Order-builder bug. Revert the last change touching order "
                    "construction. Re-test with one share.", "config-rollback"),
            yes=Question(
                "Q3", "Has the rate-limit budget been exhausted?",
                probe="rate_limit_exhausted",
                no=Leaf("investigate", "Check venue reject codes. Open a broker ticket if "
                        "codes are blank."),
                # The desk throttles size, not order frequency: executed, this leaf is
                # its last step, playbook 03 "Resume at 25% size to verify".
                yes=Leaf("throttle", "Halve order frequency. Wait one rate-limit window. "
                         "Resume at 25% size to verify.", multiplier=0.25),
            ),
        ),
    ),
)

WRONG_PNL = Tree(
    "wrong-pnl", "Live PnL diverges from backtest",
    "Daily PnL outside the 95% backtest band for multiple days.",
    Question(
        "Q1", "Has this gone on for 3 or more trading days?", probe="pnl_band_3_days",
        no=Leaf("investigate", "One or two days outside the band is expected ~5% of the "
                "time. Log it; continue monitoring; do not over-react."),
        yes=Question(
            "Q2", "When you replay the same window through the backtest engine with live "
            "fills, do they agree?",
            yes=Leaf("throttle", "Signal is genuinely decaying. Halve allocation. Schedule a "
                     "retire / retrain decision within the week.", "retrain",
                     multiplier=0.5),
            no=Leaf("rollback", "Production bug - engine and live disagree. Rollback to the "
                    "prior model_hash and file a bug ticket.", "model-rollback"),
        ),
    ),
)

MISSING_DATA = Tree(
    "missing-data", "Market-data feed is stale or missing",
    "Bar timestamps older than 2x the bar interval.",
    Question(
        "Q1", "Is the staleness on a single symbol?", probe="single_symbol_stale",
        yes=Question(
            "Q2", "Did the symbol have a corporate action today (split, dividend, halt)?",
            probe="symbol_halted",
            yes=Leaf("investigate", "Halt or corporate-action gap. Suppress the symbol; "
                     "resume the rest of the universe."),
            no=Leaf("investigate", "Vendor-side single-symbol issue. Drop the symbol; "
                    "resume universe; file a vendor ticket."),
        ),
        no=Question(
            "Q3", "Is the backup data vendor healthy?", probe="backup_vendor_healthy",
            yes=Leaf("rollback", "Failover to the backup vendor. Reconcile any orders sent "
                     "during the stale window.", "reconciliation"),
            no=Leaf("kill-switch", "Both vendors down. Stop trading. Tighten stops; flatten "
                    "by EOD if data does not recover.", "killswitch"),
        ),
    ),
)

ALERTS_SPAM = Tree(
    "alerts-spam", "Alert channel is on fire",
    "Dozens of alerts in minutes; signal-to-noise collapsing.",
    Question(
        "Q1", "Is there a single root cause behind > 60% of the alerts?",
        probe="alerts_single_root_cause",
        no=Leaf("throttle", "Multiple unrelated issues. Halve live size; triage alerts in "
                "priority order; do not ignore the noisy ones - that is how the next outage "
                "starts.", multiplier=0.5),
        yes=Question(
            "Q2", "Is the root cause already a known incident with a ticket open?",
            yes=Leaf("investigate", "Snooze downstream alerts that depend on the parent "
                     "incident. Keep the parent alert live."),
            no=Leaf("investigate", "Open a parent incident; link the duplicated alerts; "
                    "assign an incident commander."),
        ),
    ),
)

CONFIG_MISMATCH = Tree(
    "config-mismatch", "Live config does not match git", "Config-drift check failed.",
    # Q1: the deploys the supervisor observes (model_hash, deployed ref, live config
    # writes; supervisor/ops/deploys.py); what it cannot see is the operator's.
    Question(
        "Q1", "Was a deploy or hot-fix performed in the last 2 hours?", probe="recent_deploy",
        yes=Question(
            "Q2", "Was the change intentional?",
            yes=Leaf("investigate", "Commit the live config now. Push the commit. Re-run "
                     "the drift check; it should pass."),
            no=Leaf("rollback", "Accidental hot-edit. Redeploy from the committed ref. Audit "
                    "who has prod-write access.", "config-rollback"),
        ),
        no=Leaf("rollback", "Unexplained drift. Redeploy from the committed ref. Open a "
                "security review - unexpected prod writes are an audit-trail issue.",
                "config-rollback"),
    ),
)

POST_INCIDENT = Tree(
    "post-incident", "Coming back from a stop", "Incident closed; ready to resume.",
    Question(
        "Q1", "Is the root cause documented and the fix verified in a non-prod environment?",
        probe="root_cause_documented",
        no=Leaf("investigate", "Do not resume on hope. A documented root cause plus a "
                "verified fix in staging are the minimum."),
        yes=Question(
            "Q2", "Have positions been reconciled to broker truth?",
            probe="positions_reconciled",
            no=Leaf("investigate", "Reconcile to the broker file first. Trading from an "
                    "unknown book is how small incidents become large ones.",
                    "reconciliation"),
            yes=Question(
                "Q3", "Is risk service operating with the original (un-relaxed) limits?",
                probe="limits_unrelaxed",
                no=Leaf("investigate", "Limits got softened during the incident. Restore "
                        "them first."),
                yes=Leaf("resume", "Resume at 25% size for one full session. Promote to "
                         "100% only if incident-free."),
            ),
        ),
    ),
)

TREES: dict[str, Tree] = {t.id: t for t in (NO_FILLS, WRONG_PNL, MISSING_DATA, ALERTS_SPAM,
                                             CONFIG_MISMATCH, POST_INCIDENT)}


def questions(tree: Tree) -> Iterator[Question]:
    """Every question of ``tree``, depth first from the root."""
    stack: list[Question | Leaf] = [tree.root]
    while stack:
        node = stack.pop()
        if isinstance(node, Question):
            yield node
            stack += [node.no, node.yes]


def leaf_paths(tree: Tree) -> Iterator[tuple[dict[str, bool], Leaf]]:
    """Every leaf of ``tree`` with the answers that lead to it."""
    stack: list[tuple[Question | Leaf, dict[str, bool]]] = [(tree.root, {})]
    while stack:
        node, answers = stack.pop()
        if isinstance(node, Leaf):
            yield answers, node
        else:
            stack += [(node.no, {**answers, node.id: False}),
                      (node.yes, {**answers, node.id: True})]


def walk(tree: Tree, answers: Mapping[str, bool | None], status: Mapping[str, Any]) -> Walk:
    """Walk ``tree`` from the root: each question's probe answers from ``status`` first,
    else ``answers`` (the operator's), else the walk stops there as pending.

    A probe that answers wins over the operator (the evidence is what the supervisor
    sees); the operator's contrary answer is noted in the step's evidence.

    Raises:
        ValueError: ``answers`` names a question that is not in ``tree``.
    """
    known = {q.id for q in questions(tree)}
    unknown = sorted(set(answers) - known)
    if unknown:
        raise ValueError(f"tree {tree.id} has no question {', '.join(unknown)}; "
                         f"its questions are {', '.join(sorted(known))}")
    path: list[Step] = []
    node: Question | Leaf = tree.root
    while isinstance(node, Question):
        probed = PROBES[node.probe](status) if node.probe is not None else None
        operator = answers.get(node.id)
        if probed is not None and probed.answer is not None:
            evidence = probed.evidence
            if operator is not None and operator != probed.answer:
                evidence += f" (operator answered {'yes' if operator else 'no'}; the probe "\
                            "decides)"
            path.append(Step(node.id, node.text, probed.answer, "probe", evidence))
            answer = probed.answer
        elif operator is not None:
            path.append(Step(node.id, node.text, operator, "operator",
                             "answered by the operator"))
            answer = operator
        else:
            return Walk(tree.id, tree.title, path, pending=Pending(
                node.id, node.text, None if probed is None else probed.evidence))
        node = node.yes if answer else node.no
    return Walk(tree.id, tree.title, path, leaf=node)
