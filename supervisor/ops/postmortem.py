"""Postmortem artifacts (playbook 06 principle 10: "Postmortems are blameless and written.
Every incident produces an artifact"; playbook 02 risk-breach: "a written incident review
within 24 hours"; gate W4).

When an incident is resolved, a Markdown file is written to
``STATE_DIR/postmortems/<incident id>.md``: the timeline from the journal, how it was
detected, what the desk did, the root cause, and blank blameless sections for people to
fill in. A P0's artifact is due 24 h after the incident opened (the breach, not the
resolution); it counts as written once the placeholder under "What happened" is gone.
"""

from __future__ import annotations

import time
from pathlib import Path

from supervisor.core.desk import Incident
from supervisor.files import write_atomic

PLACEHOLDER = "_(to be written: blameless, facts first)_"
DUE_S = {"P0": 24 * 3600.0}  # playbook 02 risk-breach: "within 24 hours"; W4 grooms the rest


def _ts(value: float | None) -> str:
    return "-" if value is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(value))


def render(inc: Incident, *, snapshot: str | None = None, kill_detail: str | None = None
           ) -> str:
    """The artifact for a resolved incident."""
    lines = [
        f"# Postmortem {inc.id}: {inc.incident_class} {inc.severity}",
        "",
        f"- scope: {inc.scope}",
        f"- opened: {_ts(inc.opened_at)} by {inc.opened_by}",
        f"- commander: {inc.commander or '-'} (acknowledged {_ts(inc.acknowledged_at)})",
        f"- resolved: {_ts(inc.resolved_at)} by {inc.resolved_by}",
        f"- findings joined: {inc.findings}",
        "",
        "## Detection",
        "",
        inc.summary,
        "",
        "## Timeline (from the journal)",
        "",
        *[f"- {_ts(e.ts)} {e.actor}: {e.text}" for e in inc.timeline],
        "",
        # playbook 03: the recovery tree the supervisor walked, as far as its probes answered.
        *(["## Recovery tree", "",
           *[f"- {_ts(e.ts)} {e.text}" for e in inc.timeline if e.actor == "supervisor:tree"],
           ""] if any(e.actor == "supervisor:tree" for e in inc.timeline) else []),
        "## What the desk did",
        "",
        f"- snapshot: {snapshot}" if snapshot else "- no kill snapshot for this incident",
        f"- kill verification: {kill_detail}" if kill_detail else "",
        "",
        "## Root cause",
        "",
        inc.root_cause or "-",
        "",
    ]
    for section in ("What happened", "Impact", "What went well", "What went wrong",
                    "Action items"):
        lines += [f"## {section}", "", PLACEHOLDER, ""]
    return "\n".join(line for line in lines if line is not None) + "\n"


def path_for(state_dir: Path, incident_id: str) -> Path:
    return state_dir / "postmortems" / f"{incident_id}.md"


def prepare(state_dir: Path, inc: Incident, **kw: str | None) -> tuple[Path, bytes | None]:
    """The artifact's path and content, or None when people already started filling it
    in (never overwritten). Blocking: reads the file; an unreadable one is rewritten."""
    path = path_for(state_dir, inc.id)
    try:
        if path.exists() and PLACEHOLDER not in path.read_text().split(
                "## What happened", 1)[-1]:
            return path, None
    except OSError:
        pass
    return path, render(inc, **kw).encode()


def write(state_dir: Path, inc: Incident, **kw: str | None) -> Path:
    """Write the artifact (blocking: run via trio.to_thread); never overwrite one that
    people already started filling in."""
    path = path_for(state_dir, inc.id)
    if path.exists() and PLACEHOLDER not in path.read_text().split("## What happened", 1)[-1]:
        return path
    write_atomic(path, render(inc, **kw).encode())
    return path


def state(state_dir: Path, inc: Incident, now: float) -> dict[str, object] | None:
    """Where the artifact is, whether it is written, when it is due, overdue or not
    (blocking: reads the file)."""
    if inc.state != "resolved" or inc.resolved_at is None:
        return None
    path = path_for(state_dir, inc.id)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {"path": str(path), "exists": False, "written": False, "due": None,
                "overdue": False}
    written = PLACEHOLDER not in text.split("## What happened", 1)[-1].split("## Impact")[0]
    due_s = DUE_S.get(inc.severity)
    due = inc.opened_at + due_s if due_s is not None else None  # from the breach
    return {"path": str(path), "exists": True, "written": written, "due": due,
            "overdue": bool(due is not None and not written and now > due)}
