"""The supervisor walks a recovery tree itself when an incident of its class opens, as far
as probes answer, and writes the path on the incident (playbook 03: "The same symptom should
produce the same action regardless of who is on call").

Only the walk is automatic: a leaf's action is never executed from here. The desk's own
response already stands (a P0 has pulled the kill-switch, a P1 throttles); a leaf that
asks for more is the operator's to execute with ``deskctl tree``. missing-data is acted
on by the freshness actor itself (``actors.freshness``); the walk only records the path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from supervisor.playbook.trees import TREES, Walk, walk

# incident class -> the tree its symptom is. broker-outage covers the heartbeat's failed
# pings and its ack-latency / silent-ack findings (actors.heartbeat: same class, scope
# venue:NAME): playbook 03 no-fills "acknowledgements are silent".
# config-drift: playbook 03 config-mismatch ("Live config hash differs from git HEAD"); Q1
# (a deploy in the last 2 hours) is the deploy watch's, Q2 (intentional?) the operator's.
# stale-data: the freshness actor acts on missing-data itself (suppress, fail over, or
# kill); the walk over the same status is written on its incident, so the path the
# operator reads is the one the actor took (tests/test_trees.py ties the two together).
AUTO_TREES: dict[str, str] = {
    "broker-outage": "no-fills",
    "pnl-divergence": "wrong-pnl",
    "config-drift": "config-mismatch",
    "stale-data": "missing-data",
}

ACTOR = "supervisor:tree"


def walk_for(incident_class: str, status: Mapping[str, Any]) -> Walk | None:
    """The probes-only walk of the tree for ``incident_class`` (None: no tree for it)."""
    tree_id = AUTO_TREES.get(incident_class)
    if tree_id is None:
        return None
    return walk(TREES[tree_id], {}, status)


def describe(w: Walk) -> str:
    """One timeline line: each answered question with its answer and evidence, then the
    leaf and its runbook, or where the operator has to answer."""
    parts = [f"{s.question} {s.text} {'YES' if s.answer else 'NO'} ({s.source}: "
             f"{s.evidence})" for s in w.path]
    if w.leaf is not None:
        end = f"leaf {w.leaf.kind}: {w.leaf.text}"
        if w.leaf.runbook:
            end += f" (runbook {w.leaf.runbook})"
    else:
        assert w.pending is not None
        end = (f"stopped at {w.pending.question} {w.pending.text}"
               + (f" (probe saw: {w.pending.evidence})" if w.pending.evidence else "")
               + f": operator to answer: deskctl tree {w.tree}")
    return f"tree {w.tree}: " + " -> ".join([*parts, end])
