"""The venue-side dead man's switch (docs/operations.md "Dead man's switch").

Exchanges offer a cancel-all-after timer (BitMEX ``cancelAllAfter``, Binance
``countdownCancelAll``, Kraken ``CancelAllOrdersAfter``, Deribit cancel-on-disconnect):
the venue cancels every open order unless the timer is re-armed in time. For each venue
with ``dead_man_s`` set, the supervisor re-arms it every third of that, and only while
it is healthy: its main loop beating, its journal writable, no kill latched. A frozen or
wedged supervisor (or one whose journal fails) stops re-arming, and the venue goes flat on
its own within ``dead_man_s``; the supervisor cannot be the reason orders outlive it.

When the supervisor finds that a venue's timer ran out without its meaning it to (it was
stalled, or re-arming failed), it opens a ``supervisor-stalled`` P0 for that venue: the
venue cancelled every open order there, which the engine does not know. A timer that runs
out while a kill is latched is the kill's own doing: status only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import trio

from actors.base import Finding, Report
from supervisor.core.errors import VenueError

log = logging.getLogger("desk.deadman")


class DeadManVenue(Protocol):
    name: str

    async def cancel_after(self, timeout_s: float) -> None: ...


class Health(Protocol):
    def __call__(self) -> tuple[bool, str, bool]:
        """(healthy, why not, whether not re-arming is deliberate: a latched kill)."""
        ...


class VenueTimer:
    """One venue's timer, as the supervisor last set it."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.armed_at: float | None = None  # trio time of the last successful re-arm
        self.armed_wall: float | None = None
        self.held: str | None = None  # why it is not being re-armed now
        self.deliberate = False  # the hold is a latched kill's
        self.error: str | None = None  # the last re-arm's failure
        self.expired = 0  # times it ran out (as far as the supervisor can tell)
        self.last_tick: float | None = None


class DeadMan:
    """``timeouts``: venue name -> ``dead_man_s`` (only venues with one are run)."""

    name = "dead-man"
    critical = False

    def __init__(
        self,
        venues: Sequence[DeadManVenue],
        timeouts: Mapping[str, float],
        *,
        health: Health,
        report: Callable[[Report], Awaitable[None]],
        wall_clock: Callable[[], float],
    ) -> None:
        self.venues = [v for v in venues if timeouts.get(v.name, 0.0) > 0]
        self.timers = {v.name: VenueTimer(timeouts[v.name]) for v in self.venues}
        self.health = health
        self.report = report
        self.wall = wall_clock

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        async with trio.open_nursery() as nursery:
            for venue in self.venues:
                nursery.start_soon(self._loop, venue)
            task_status.started()

    async def _loop(self, venue: DeadManVenue) -> None:
        timer = self.timers[venue.name]
        while True:
            await self.tick(venue)
            await trio.sleep(timer.timeout_s / 3)

    async def tick(self, venue: DeadManVenue) -> None:
        """Notice a timer that ran out, then re-arm it if the supervisor is healthy."""
        timer = self.timers[venue.name]
        now = trio.current_time()
        if timer.armed_at is not None and now - timer.armed_at > timer.timeout_s:
            await self._ran_out(venue, timer, now)
        healthy, why, deliberate = self.health()
        timer.last_tick = now
        if not healthy:
            if timer.held != why:
                log.warning("dead man's switch at %s not re-armed: %s (the venue cancels "
                            "every open order %g s after the last re-arm)", venue.name, why,
                            timer.timeout_s)
            timer.held, timer.deliberate = why, deliberate
            return
        try:
            with trio.fail_after(max(1.0, timer.timeout_s / 3)):
                await venue.cancel_after(timer.timeout_s)
        except (VenueError, trio.TooSlowError) as exc:
            error = str(exc) or "no answer"
            if timer.error != error:
                log.error("dead man's switch at %s not re-armed: %s", venue.name, error)
            timer.error = error
            return
        timer.armed_at, timer.armed_wall = trio.current_time(), self.wall()
        timer.held, timer.deliberate, timer.error = None, False, None

    async def _ran_out(self, venue: DeadManVenue, timer: VenueTimer, now: float) -> None:
        assert timer.armed_at is not None
        gap = now - timer.armed_at
        timer.expired += 1
        timer.armed_at = None  # known to have run out: not armed until re-armed
        since_tick = None if timer.last_tick is None else now - timer.last_tick
        if since_tick is not None and since_tick > timer.timeout_s / 2:
            why = f"the supervisor was stalled for {since_tick:.1f} s (frozen, or its loop wedged)"
        elif timer.error is not None:
            why = f"re-arming failed: {timer.error}"
        elif timer.deliberate:
            log.warning("dead man's switch at %s ran out while %s: the venue cancelled its "
                        "open orders (as the kill-switch did)", venue.name, timer.held)
            return
        else:
            why = f"not re-armed: {timer.held or 'unknown'}"
        log.critical("dead man's switch at %s ran out %.1f s after its last re-arm: %s",
                     venue.name, gap, why)
        await self.report(Finding(
            actor=self.name, incident_class="supervisor-stalled", scope=f"venue:{venue.name}",
            summary=(f"venue {venue.name}: the dead man's switch ran out {gap:.1f} s after "
                     f"its last re-arm (timeout {timer.timeout_s:g} s): {why}; the venue "
                     "cancelled every open order there, which the engine does not know: "
                     "reconcile before trading"),
            evidence={"venue": venue.name, "timeout_s": timer.timeout_s, "gap_s": gap,
                      "why": why}))

    def status(self) -> dict[str, Any]:
        return {
            name: {"timeout_s": t.timeout_s, "armed": t.armed_at is not None,
                   "last_armed_at": t.armed_wall,
                   "fires_at": (None if t.armed_wall is None or t.armed_at is None
                                else t.armed_wall + t.timeout_s),
                   "held": t.held, "error": t.error, "expired": t.expired}
            for name, t in self.timers.items()}
