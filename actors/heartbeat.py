"""Broker heartbeat (playbook 02 incident broker-outage; playbook 04 monitor "Broker heartbeat
latency").

- Pings every venue every ``interval_s`` (playbook 04: every 10s) over the venue's warm
  connection. ``failures`` failed pings within ``window_s`` (playbook 02: "fails 3 times in
  30 seconds") report broker-outage for that venue: a P0, so the kill-switch.
- Order-acknowledgement latency above ``ack_latency_factor`` times its baseline (playbook
  02: "exceeds 5x baseline") reports broker-outage too, both for a slow ack that
  arrived and for an order still waiting for its ack past that bound (silent acks).
  The baseline is the median of recent acks; with fewer than ``ack_min_samples`` there
  is no baseline and no ack check (an engine that reports no acks is not an outage).
- p95 ping latency above ``latency_p95_ms`` for ``latency_windows`` consecutive windows of
  ``latency_window_s`` (playbook 04: "p95 > 500ms for 3 windows", 1-minute windows) raises a
  PAGE alert ("triggers failover evaluation").
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import msgspec
import numpy as np
import trio

from supervisor.core.book import Book
from supervisor.core.errors import VenueError, VenueRateLimited

from .base import AlertRaised, Finding, Report

log = logging.getLogger("desk.heartbeat")


class HeartbeatConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Broker heartbeat (playbook 02 broker-outage detection; playbook 04 broker heartbeat)."""

    interval_s: float = 10.0  # playbook 04 "Broker heartbeat latency ... every 10s"
    failures: int = 3  # playbook 02 broker-outage: "fails 3 times in 30 seconds"
    window_s: float = 30.0  # playbook 02 broker-outage: "3 times in 30 seconds"
    timeout_s: float = 5.0
    ack_latency_factor: float = 5.0  # playbook 02: "acknowledgement latency exceeds 5x baseline"
    ack_baseline_samples: int = 200
    ack_min_samples: int = 20
    # An optional floor under 5x baseline (a site whose baseline is sub-millisecond may
    # set one against jitter); 0: the playbook's rule alone.
    ack_min_latency_s: float = 0.0
    latency_p95_ms: float = 500.0  # playbook 04: "p95 > 500ms for 3 windows"
    latency_window_s: float = 60.0  # playbook 04: "Three consecutive 1-minute windows"
    latency_windows: int = 3  # playbook 04: "Three consecutive 1-minute windows"
    # A venue answering 429 is up but out of request budget: not an outage failure, for
    # as long as one budget window (Alpaca states its budget per minute) plus the ping
    # interval. Past that, every 429 counts as a failure ("when in doubt, kill").
    rate_limited_grace_s: float = 60.0

    def __post_init__(self) -> None:
        for key in ("interval_s", "window_s", "timeout_s", "latency_window_s",
                    "ack_latency_factor", "latency_p95_ms"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be > 0")
        if not self.ack_min_latency_s >= 0:
            raise ValueError("ack_min_latency_s must be >= 0")
        for key in ("failures", "latency_windows", "ack_baseline_samples", "ack_min_samples"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1")
        if not self.rate_limited_grace_s >= 0:  # also refuses nan
            raise ValueError("rate_limited_grace_s must be >= 0")


class Pingable(Protocol):
    name: str

    async def ping(self) -> float: ...


class VenueHeartbeat(msgspec.Struct, kw_only=True):
    """What ``status`` shows of one venue's heartbeat."""

    ok: bool | None = None
    latency_ms: float | None = None
    failures_in_window: int = 0
    last_error: str | None = None
    last_ok_at: float | None = None  # trio time
    p95_ms_last_window: float | None = None
    slow_windows: int = 0
    outage_reported: bool = False
    last_attempt_at: float | None = None  # trio time a ping last completed or failed
    # The venue answered 429 to the last ping: up, but out of request budget. Not an
    # outage failure (a broker that answers is not down); the no-fills tree's Q3.
    rate_limited: bool = False
    rate_limited_since: float | None = None  # trio time of the episode's first 429


class HeartbeatActor:
    """Pings the venues and watches order acknowledgements."""

    name = "heartbeat"
    critical = True
    blind_class = "broker-outage"

    def __init__(
        self,
        venues: Sequence[Pingable],
        book: Book,
        config: HeartbeatConfig,
        report: Callable[[Report], Awaitable[None]],
    ) -> None:
        self.venues = list(venues)
        self.book = book
        self.config = config
        self.report = report
        self.status: dict[str, VenueHeartbeat] = {v.name: VenueHeartbeat() for v in venues}
        self.ack_baseline_s: float | None = None
        self._acks_seen = 0
        self._ack_reported: set[str] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for venue in self.venues:
                nursery.start_soon(self._ping_loop, venue)
            nursery.start_soon(self._ack_loop)
            task_status.started()

    # --- pings ---------------------------------------------------------------------

    async def _ping_loop(self, venue: Pingable) -> None:
        cfg = self.config
        st = self.status[venue.name]
        failures: deque[float] = deque()
        # Windows are aligned on the loop's start: [0, 60), [60, 120), ... of trio time;
        # a ping belongs to the window in which it was sent.
        window_end = trio.current_time() + cfg.latency_window_s
        samples: list[float] = []
        while True:
            t0 = trio.current_time()
            if t0 >= window_end:
                await self._close_window(venue.name, st, samples)
                samples = []
                while window_end <= t0:
                    window_end += cfg.latency_window_s
            try:
                with trio.fail_after(cfg.timeout_s):
                    latency = await venue.ping()
            except VenueRateLimited as exc:
                # It answered, so it is not down; but neither orders nor cancels get
                # through until its window refills: page once per episode. A budget that
                # does not refill within its window (a venue answering 429 to all) is as
                # good as down: past the grace every 429 counts as a failure.
                if not st.rate_limited:
                    st.rate_limited_since = t0
                    await self.report(AlertRaised(
                        actor=self.name, channel="PAGE", scope=f"venue:{venue.name}",
                        summary=f"venue {venue.name}: request budget exhausted (429); "
                                "recovery tree no-fills Q3: throttle",
                        evidence={"error": str(exc)}))
                st.rate_limited = True
                st.last_error = str(exc)
                since = st.rate_limited_since if st.rate_limited_since is not None else t0
                if t0 - since > cfg.rate_limited_grace_s:
                    st.ok = False
                    st.last_error = (f"{exc} (no budget for {t0 - since:.0f} s, past the "
                                     f"{cfg.rate_limited_grace_s:g} s grace)")
                    failures.append(t0)
                samples.append(trio.current_time() - t0)
            except (VenueError, trio.TooSlowError) as exc:
                st.rate_limited = False
                st.rate_limited_since = None
                st.ok = False
                st.last_error = str(exc) or "ping timed out"
                failures.append(t0)
                samples.append(max(trio.current_time() - t0, cfg.timeout_s))
            else:
                st.ok = True
                st.rate_limited = False
                st.rate_limited_since = None
                st.latency_ms = latency * 1000.0
                st.last_error = None
                st.last_ok_at = trio.current_time()
                st.outage_reported = False
                samples.append(latency)
            st.last_attempt_at = trio.current_time()
            while failures and failures[0] <= t0 - cfg.window_s:
                failures.popleft()
            st.failures_in_window = len(failures)
            if len(failures) >= cfg.failures and not st.outage_reported:
                st.outage_reported = True
                await self.report(
                    Finding(
                        actor=self.name,
                        incident_class="broker-outage",
                        scope=f"venue:{venue.name}",
                        summary=(
                            f"venue {venue.name}: heartbeat failed {len(failures)} times in "
                            f"{cfg.window_s:g} s (last: {st.last_error})"
                        ),
                        evidence={"failures": len(failures), "window_s": cfg.window_s,
                                  "last_error": st.last_error},
                    )
                )
            await trio.sleep_until(t0 + cfg.interval_s)

    async def _close_window(self, name: str, st: VenueHeartbeat, samples: list[float]) -> None:
        cfg = self.config
        if not samples:
            return
        p95_ms = float(np.percentile(np.asarray(samples), 95)) * 1000.0
        st.p95_ms_last_window = p95_ms
        if p95_ms > cfg.latency_p95_ms:
            st.slow_windows += 1
        else:
            st.slow_windows = 0
        if st.slow_windows == cfg.latency_windows:
            # playbook 04: "evaluate failover": say where a failover could go (runbook
            # broker-failover, then deskctl route VENUE).
            others = {n: o for n, o in self.status.items() if n != name}
            healthy = [n for n, o in sorted(others.items()) if o.ok and o.slow_windows == 0]
            shown = [n if (p95 := others[n].p95_ms_last_window) is None
                     else f"{n} ({p95:.0f} ms)" for n in healthy]
            where = (f"; healthy: {', '.join(shown)} (runbook broker-failover)" if healthy
                     else "; no other healthy venue" if others else "")
            await self.report(
                AlertRaised(
                    actor=self.name,
                    channel="PAGE",
                    scope=f"venue:{name}",
                    summary=(
                        f"venue {name}: heartbeat p95 {p95_ms:.0f} ms > "
                        f"{cfg.latency_p95_ms:g} ms for {st.slow_windows} consecutive "
                        f"{cfg.latency_window_s:g} s windows: evaluate failover{where}"
                    ),
                    evidence={"p95_ms": p95_ms, "windows": st.slow_windows,
                              "healthy_venues": healthy},
                )
            )

    # --- acks ----------------------------------------------------------------------

    def ack_threshold_s(self) -> float | None:
        """The ack latency above which the broker counts as out, or None (no baseline)."""
        cfg = self.config
        latencies = self.book.ack_latencies
        if len(latencies) < cfg.ack_min_samples:
            self.ack_baseline_s = None
            return None
        recent = list(latencies)[-cfg.ack_baseline_samples:]
        self.ack_baseline_s = float(np.median(np.asarray(recent)))
        return max(cfg.ack_latency_factor * self.ack_baseline_s, cfg.ack_min_latency_s)

    async def _ack_loop(self) -> None:
        while True:
            await self.check_acks()
            await trio.sleep(min(1.0, self.config.interval_s))

    async def check_acks(self) -> None:
        """One pass over new ack latencies and orders still waiting for their ack."""
        threshold = self.ack_threshold_s()
        book = self.book
        new = min(book.acks_total - self._acks_seen, len(book.recent_acks))
        self._acks_seen = book.acks_total
        if threshold is None:
            return
        rule = (f"threshold {threshold:.3f} s: {self.config.ack_latency_factor:g}x baseline "
                f"{self.ack_baseline_s:.3f} s, floor {self.config.ack_min_latency_s:g} s")
        slow: dict[str, float] = {}
        if new > 0:
            for venue, latency in list(book.recent_acks)[len(book.recent_acks) - new:]:
                if latency > threshold:
                    scope = f"venue:{venue or '*'}"
                    slow[scope] = max(slow.get(scope, 0.0), latency)
        now = trio.current_time()
        waiting: dict[str, list[tuple[str, float]]] = {}
        for order_id, reported_at in book.pending_acks.items():
            age = now - reported_at
            if age <= threshold:
                break  # ordered by arrival: the rest are younger
            order = book.orders.get(order_id)
            scope = f"venue:{(order.venue if order is not None else None) or '*'}"
            waiting.setdefault(scope, []).append((order_id, age))
        for scope, latency in slow.items():
            await self._ack_finding(
                scope, f"order acknowledgement latency {latency:.3f} s ({rule})",
                {"latency_s": latency, "baseline_s": self.ack_baseline_s,
                 "threshold_s": threshold},
            )
        for scope, items in waiting.items():
            oldest = max(age for _, age in items)
            await self._ack_finding(
                scope,
                f"{len(items)} order(s) unacknowledged for up to {oldest:.1f} s "
                f"(acknowledgements stopped; {rule})",
                {"orders": [oid for oid, _ in items[:20]], "oldest_s": oldest,
                 "baseline_s": self.ack_baseline_s, "threshold_s": threshold},
            )
        if not waiting and not slow:
            self._ack_reported.clear()

    async def _ack_finding(self, scope: str, summary: str, evidence: dict[str, object]) -> None:
        if scope in self._ack_reported:
            return
        self._ack_reported.add(scope)
        await self.report(
            Finding(actor=self.name, incident_class="broker-outage", scope=scope,
                    summary=summary, evidence=evidence)
        )
