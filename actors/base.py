"""What actors say to the supervisor, and the shape every actor has.

Actors send ``Finding``s (a problem of an incident class) and ``AlertRaised`` (a PAGE or
QUEUE alert that opens no incident) on a memory channel that the runtime drains. They
never touch the desk state: the policy turns a finding into an incident.
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec
import trio


class Finding(msgspec.Struct, frozen=True, kw_only=True, tag="finding"):
    """A watcher saw a problem of ``incident_class`` in ``scope`` (a venue, a symbol)."""

    actor: str
    incident_class: str
    scope: str
    summary: str
    evidence: dict[str, object] = {}
    # Only where the playbook's own tree sets it (playbook 03 missing-data: one stale symbol
    # is suppressed and monitored, P2); otherwise the class's severity (playbook 02) holds.
    severity: Literal["P0", "P1", "P2"] | None = None


class AlertRaised(msgspec.Struct, frozen=True, kw_only=True, tag="alert"):
    """An alert on a channel (playbook 04: "Pageable alerts wake on-call. Slack alerts queue.")."""

    actor: str
    channel: Literal["PAGE", "QUEUE"]
    summary: str
    scope: str = ""
    evidence: dict[str, object] = {}


Report = Finding | AlertRaised


class Actor(Protocol):
    """A long-lived watcher run under the supervisor (supervisor.runtime.supervision)."""

    name: str
    # A critical actor that cannot stay up leaves the desk blind: a P0.
    critical: bool

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch until cancelled; call ``task_status.started()`` once really ready."""
        ...
