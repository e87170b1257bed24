"""The desk's answer to an alert storm (playbook 03 alerts-spam), called by the alert
log when its tree decides: one root cause behind > 60% of the alerts becomes a parent
incident (its children are snoozed by the router), or a note on that incident when it is
one already; unrelated causes halve live size (Q1 NO)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from actors.base import Finding, Report
from supervisor.core.desk import DeskState
from supervisor.core.events import AnyEvent, IncidentNoted
from supervisor.ops.alerts import SpamRoot


class AlertStorms:
    def __init__(
        self,
        *,
        state: Callable[[], DeskState],
        report: Callable[[Report], Awaitable[None]],
        submit: Callable[[AnyEvent], Awaitable[None]],
        wall: Callable[[], float],
    ) -> None:
        self._state = state
        self._report = report
        self._submit = submit
        self._wall = wall

    async def on_spam(self, *, kind: str, root: SpamRoot, share: float, count: int) -> None:
        """``kind`` "parent": one root cause dominates; "throttle": none does."""
        if kind == "parent":
            inc = self._state().incident(root.incident_id) if root.incident_id else None
            if inc is not None and inc.live:
                await self._submit(IncidentNoted(
                    ts=self._wall(), actor="supervisor:alerts", incident_id=inc.id,
                    text=f"alert storm: {count} alerts in the window, {share:.0%} from this "
                         "incident; its downstream alerts are snoozed"))
                return
            await self._report(Finding(
                actor="alerts", incident_class="alerts-spam",
                scope=f"alerts:parent:{root.scope or root.key}",
                summary=f"alert storm: {count} alerts, {share:.0%} from {root.scope or root.key}"
                        f" ({root.example}); parent incident, children snoozed",
                evidence={"count": count, "share": share, "root": str(root.key)}))
        else:
            # playbook 03 alerts-spam Q1 NO: "Multiple unrelated issues. Halve live size."
            await self._report(Finding(
                actor="alerts", incident_class="alerts-spam", scope="alerts:storm",
                summary=f"alert storm: {count} alerts from unrelated causes (largest share "
                        f"{share:.0%}): halve live size and triage in priority order",
                evidence={"count": count, "share": share}))
