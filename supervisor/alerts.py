"""Alerts on the seed's two channels (seed 04; principle 05: "Pageable alerts wake
people; Slack alerts queue").

For now the only sink is the log (always on) and a bounded list that ``status`` shows;
webhook, Slack and PagerDuty sinks come with the alert-routing work. ``alert`` never
blocks and never raises, so it can sit on any path, the kill path included.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Literal

import msgspec

log = logging.getLogger("desk.alerts")

Channel = Literal["PAGE", "QUEUE"]


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    ts: float
    channel: Channel
    summary: str
    source: str
    incident_id: str | None = None
    scope: str = ""


class AlertLog:
    """Routes alerts to the log and keeps the most recent for ``status``."""

    def __init__(self, wall_clock: Callable[[], float], *, keep: int = 50) -> None:
        self._wall = wall_clock
        self.recent: deque[Alert] = deque(maxlen=keep)
        self.counts: dict[Channel, int] = {"PAGE": 0, "QUEUE": 0}

    def alert(
        self, channel: Channel, summary: str, *, source: str, incident_id: str | None = None,
        scope: str = "",
    ) -> Alert:
        a = Alert(ts=self._wall(), channel=channel, summary=summary, source=source,
                  incident_id=incident_id, scope=scope)
        self.recent.append(a)
        self.counts[channel] += 1
        level = logging.ERROR if channel == "PAGE" else logging.WARNING
        log.log(level, "ALERT %s [%s] %s", channel, source, summary,
                extra={"incident": incident_id, "actor": source})
        return a
