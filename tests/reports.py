"""What an actor reported, and when (trio time): the stand-in for Desk.report in tests."""

from __future__ import annotations

import trio

from actors.base import AlertRaised, Finding, Report


class Reports:
    """Pass as an actor's ``report``; read back findings and alerts with their times."""

    def __init__(self) -> None:
        self.items: list[tuple[float, Report]] = []

    async def __call__(self, item: Report) -> None:
        self.items.append((trio.current_time(), item))

    def findings(self) -> list[tuple[float, Finding]]:
        return [(t, i) for t, i in self.items if isinstance(i, Finding)]

    def alerts(self, channel: str | None = None) -> list[tuple[float, AlertRaised]]:
        """The alerts raised, on ``channel`` only if one is given."""
        return [(t, i) for t, i in self.items
                if isinstance(i, AlertRaised) and channel in (None, i.channel)]
