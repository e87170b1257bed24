"""``resume`` is playbook 03's post-incident tree: walked over ``Desk.status()`` before the
request reaches the desk state machine; refused with the tree's words at the first
question that fails, the specific ``resume_blockers`` as evidence.

``desk.resume_blockers`` stays the authority inside the pure ``apply`` (it refuses on
its own); this is the operator-facing explanation, and ``question_of`` ties each blocker
to the tree's question so that the two cannot drift apart (tests/test_trees.py).

Q1 "Is the root cause documented and the fix verified in a non-prod environment?": the
probe says NO while a P0 is live or has no written root cause. The non-prod verification
cannot be seen: the operator states it (``verified_nonprod`` true, ``deskctl resume
--verified-nonprod``); denied (false) or not stated (null, the plain ``{"cmd":
"resume"}``) is NO at Q1: a plain resume does not count as a verified fix. See
docs/playbook.md "Recovery trees at the terminal".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from supervisor.playbook.trees import TREES, Walk, walk

TREE = TREES["post-incident"]


def question_of(blocker: str) -> str | None:
    """The post-incident question a ``resume_blockers`` reason answers NO to (None: not
    the tree's: the desk is not halted, or the caller may not resume)."""
    if "do not resume on hope" in blocker:
        return "Q1"
    if "reconcil" in blocker:
        return "Q2"
    if "limits got softened" in blocker or "limits in force at the halt" in blocker:
        return "Q3"
    return None


def walk_resume(status: Mapping[str, Any], verified_nonprod: bool | None) -> Walk:
    """The post-incident walk for a resume: probes first; Q1's non-prod half from the
    operator (``None``: not stated, which is NO)."""
    return walk(TREE, {"Q1": bool(verified_nonprod)}, status)


NOT_STATED = ("whether the fix was verified in a non-prod environment is not stated: "
              "`deskctl resume --verified-nonprod` once it is (a plain resume does not "
              "count)")


def refusal(w: Walk, blockers: list[str], *, stated: bool = True) -> str | None:
    """The refusal in the tree's words (None: the walk ends at ``resume``): the leaf at
    the first failing question, that question, and the blockers behind it as evidence
    (the other blockers after them). ``stated``: whether the operator answered Q1's
    non-prod half at all."""
    if w.leaf is None or w.leaf.kind == "resume" or not w.path:
        return None
    step = w.path[-1]
    reasons = [b for b in blockers if question_of(b) == step.question]
    if not reasons:
        reasons = [step.evidence if step.source != "operator" else
                   "the operator says the fix was not verified in a non-prod environment"
                   if stated else NOT_STATED]
    others = [b for b in blockers if b not in reasons]
    return (f"{w.leaf.text} (post-incident {step.question} {step.text} NO: "
            f"{'; '.join(reasons)})" + (f"; also: {'; '.join(others)}" if others else ""))
