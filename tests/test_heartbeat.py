"""Heartbeat thresholds on trio's MockClock (playbook 02 broker-outage, playbook 04 broker
heartbeat).

The venue here is a stand-in whose ping answers after a virtual delay or fails, so
every threshold is checked at an exact virtual time.
"""

from __future__ import annotations

import pytest
import trio

from actors.heartbeat import HeartbeatActor
from supervisor.config import HeartbeatConfig
from supervisor.core.book import Book
from supervisor.core.errors import VenueUnavailable
from supervisor.core.protocol import Ack, Order

from .reports import Reports


class ScriptedVenue:
    """Answers pings after ``latency`` seconds, or fails while ``down``."""

    def __init__(self, name: str = "alpha") -> None:
        self.name = name
        self.down = False
        self.latency = 0.005
        self.pings = 0

    async def ping(self) -> float:
        self.pings += 1
        await trio.sleep(self.latency)
        if self.down:
            raise VenueUnavailable(f"venue {self.name}: GET /v2/clock answered 503")
        return self.latency




async def _run(actor: HeartbeatActor, nursery: trio.Nursery) -> None:
    await nursery.start(actor.run)


async def test_third_failure_within_30s_opens_broker_outage(autojump_clock: trio.abc.Clock) -> None:
    venue, reports = ScriptedVenue(), Reports()
    actor = HeartbeatActor([venue], Book(clock=trio.current_time), HeartbeatConfig(), reports)
    async with trio.open_nursery() as nursery:
        venue.down = True
        await _run(actor, nursery)
        # Pings at 0, 10, 20 s (every 10 s, playbook 04); each fails after 5 ms.
        await trio.sleep(25)
        nursery.cancel_scope.cancel()
    ((t, finding),) = reports.findings()
    assert t == 20.005
    assert finding.incident_class == "broker-outage" and finding.scope == "venue:alpha"
    assert finding.summary == ("venue alpha: heartbeat failed 3 times in 30 s "
                               "(last: venue alpha: GET /v2/clock answered 503)")


async def test_two_failures_do_not_open_an_incident(autojump_clock: trio.abc.Clock) -> None:
    venue, reports = ScriptedVenue(), Reports()
    actor = HeartbeatActor([venue], Book(clock=trio.current_time), HeartbeatConfig(), reports)
    async with trio.open_nursery() as nursery:
        venue.down = True
        await _run(actor, nursery)  # fails at 0 and 10
        await trio.sleep_until(15)
        venue.down = False  # ok at 20 and 30
        await trio.sleep_until(35)
        venue.down = True  # fails at 40 and 50: never 3 within 30 s
        await trio.sleep_until(55)
        nursery.cancel_scope.cancel()
    assert reports.findings() == []
    assert actor.status["alpha"].failures_in_window == 2


async def test_failures_spread_over_more_than_30s_do_not_count(
    autojump_clock: trio.abc.Clock,
) -> None:
    venue, reports = ScriptedVenue(), Reports()
    cfg = HeartbeatConfig(interval_s=16.0)  # pings at 0, 16, 32: never 3 within 30 s
    actor = HeartbeatActor([venue], Book(clock=trio.current_time), cfg, reports)
    async with trio.open_nursery() as nursery:
        venue.down = True
        await _run(actor, nursery)
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    assert reports.findings() == []


async def test_a_hung_ping_counts_as_a_failure_at_its_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    venue, reports = ScriptedVenue(), Reports()
    venue.latency = 1000.0  # never answers within the 5 s timeout
    actor = HeartbeatActor([venue], Book(clock=trio.current_time), HeartbeatConfig(), reports)
    async with trio.open_nursery() as nursery:
        await _run(actor, nursery)
        await trio.sleep(30)
        nursery.cancel_scope.cancel()
    ((t, finding),) = reports.findings()
    assert t == 25.0  # the third ping (at 20 s) timed out at 25 s
    assert "ping timed out" in finding.summary


async def test_p95_over_500ms_for_3_windows_pages(autojump_clock: trio.abc.Clock) -> None:
    venue, reports = ScriptedVenue(), Reports()
    venue.latency = 0.6
    backup = ScriptedVenue("beta")  # 5 ms: where a failover could go
    actor = HeartbeatActor([venue, backup], Book(clock=trio.current_time), HeartbeatConfig(),
                           reports)
    async with trio.open_nursery() as nursery:
        await _run(actor, nursery)
        await trio.sleep(179)
        assert reports.alerts() == []  # two windows closed so far
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    ((_, alert),) = reports.alerts()
    assert alert.channel == "PAGE" and alert.scope == "venue:alpha"
    assert alert.summary == ("venue alpha: heartbeat p95 600 ms > 500 ms for 3 consecutive "
                             "60 s windows: evaluate failover; healthy: beta (5 ms) "
                             "(runbook broker-failover)")
    assert alert.evidence["healthy_venues"] == ["beta"]
    assert reports.findings() == []  # slow is not down


def _orders_with_acks(book: Book, n: int, latency: float) -> None:
    for i in range(n):
        book.ingest([Order(order_id=f"o{i}", symbol="AAPL", side="buy", qty=1, ts=100.0 + i)])
        book.ingest([Ack(order_id=f"o{i}", ts=100.0 + i + latency)])


async def test_ack_latency_over_5x_baseline_opens_broker_outage(
    autojump_clock: trio.abc.Clock,
) -> None:
    book, reports = Book(clock=trio.current_time), Reports()
    cfg = HeartbeatConfig(ack_min_latency_s=0.1)
    actor = HeartbeatActor([], book, cfg, reports)
    _orders_with_acks(book, 30, 0.05)
    await actor.check_acks()
    assert actor.ack_baseline_s == pytest.approx(0.05) and reports.findings() == []
    # 0.24 s is under 5x the 0.05 s baseline; 0.26 s is over it.
    book.ingest([Order(order_id="x1", symbol="AAPL", side="buy", qty=1, ts=200.0),
                 Ack(order_id="x1", ts=200.24)])
    await actor.check_acks()
    assert reports.findings() == []
    book.ingest([Order(order_id="x2", symbol="AAPL", side="buy", qty=1, ts=300.0),
                 Ack(order_id="x2", ts=300.26)])
    await actor.check_acks()
    ((_, finding),) = reports.findings()
    assert finding.incident_class == "broker-outage"
    assert finding.summary == ("order acknowledgement latency 0.260 s (threshold 0.250 s: "
                               "5x baseline 0.050 s, floor 0.1 s)")
    assert finding.scope == "venue:*"  # the order named no venue


async def test_a_50ms_broker_degrading_to_900ms_trips_with_the_default_config(
    autojump_clock: trio.abc.Clock,
) -> None:
    """playbook 02 broker-outage: "acknowledgement latency exceeds 5x baseline", at the
    defaults: 5 x 50 ms = 250 ms, so 900 ms is an outage (no floor of a second hides it)."""
    book, reports = Book(clock=trio.current_time), Reports()
    actor = HeartbeatActor([], book, HeartbeatConfig(), reports)
    _orders_with_acks(book, 30, 0.05)
    await actor.check_acks()
    book.ingest([Order(order_id="x1", symbol="AAPL", side="buy", qty=1, ts=200.0),
                 Ack(order_id="x1", ts=200.9)])
    await actor.check_acks()
    ((_, finding),) = reports.findings()
    assert finding.incident_class == "broker-outage"
    assert finding.summary.startswith("order acknowledgement latency 0.900 s (threshold "
                                      "0.250 s: 5x baseline 0.050 s")


async def test_silent_acks_open_broker_outage_for_the_orders_venue(
    autojump_clock: trio.abc.Clock,
) -> None:
    book, reports = Book(clock=trio.current_time), Reports()
    actor = HeartbeatActor([], book, HeartbeatConfig(ack_min_latency_s=1.0), reports)
    _orders_with_acks(book, 30, 0.05)
    book.ingest([Order(order_id="s1", symbol="AAPL", side="buy", qty=1, ts=500.0,
                       venue="beta")])
    await trio.sleep(0.9)
    await actor.check_acks()
    assert reports.findings() == []
    await trio.sleep(0.2)  # 1.1 s without an ack: over max(5 x 0.05, 1.0)
    await actor.check_acks()
    ((_, finding),) = reports.findings()
    assert finding.scope == "venue:beta"
    assert finding.evidence["orders"] == ["s1"]
    await actor.check_acks()  # reported once per episode
    assert len(reports.findings()) == 1
    # The late ack of the same order is the same episode at the same venue.
    book.ingest([Ack(order_id="s1", ts=503.0)])
    await actor.check_acks()
    assert len(reports.findings()) == 1


async def test_no_ack_check_without_a_baseline(autojump_clock: trio.abc.Clock) -> None:
    """An engine that reports no acks is not a broker outage (false triggers)."""
    book, reports = Book(clock=trio.current_time), Reports()
    actor = HeartbeatActor([], book, HeartbeatConfig(), reports)
    book.ingest([Order(order_id="s1", symbol="AAPL", side="buy", qty=1, ts=1.0)])
    await trio.sleep(3600)
    await actor.check_acks()
    assert reports.findings() == [] and actor.ack_baseline_s is None


async def test_a_spent_request_budget_is_paged_once_and_is_not_an_outage(
        autojump_clock: trio.abc.Clock) -> None:
    """A 429 means the broker answers: not a broker-outage failure (no P0 kill for a
    budget the desk's own traffic spent), but paged once: no-fills Q3, throttle."""
    from supervisor.core.errors import VenueRateLimited

    class Limited(ScriptedVenue):
        limited = True

        async def ping(self) -> float:
            self.pings += 1
            await trio.sleep(self.latency)
            if self.limited:
                raise VenueRateLimited("venue alpha: GET /v2/clock answered 429: rate limit")
            return self.latency

    venue, reports = Limited(), Reports()
    actor = HeartbeatActor([venue], Book(clock=trio.current_time), HeartbeatConfig(), reports)
    async with trio.open_nursery() as nursery:
        await _run(actor, nursery)
        await trio.sleep(45)  # five pings, all 429
        st = actor.status["alpha"]
        assert st.rate_limited and st.failures_in_window == 0 and not st.outage_reported
        assert "429" in (st.last_error or "")
        venue.limited = False
        await trio.sleep(10)
        assert actor.status["alpha"].ok and not actor.status["alpha"].rate_limited
        nursery.cancel_scope.cancel()
    assert reports.findings() == []
    ((_, alert),) = reports.alerts()
    assert (alert.channel, alert.scope) == ("PAGE", "venue:alpha")
    assert alert.summary == ("venue alpha: request budget exhausted (429); recovery tree "
                             "no-fills Q3: throttle")


async def test_a_venue_that_answers_429_past_its_window_is_down(
        autojump_clock: trio.abc.Clock) -> None:
    """A budget that never refills (429 to everything) is as good as an outage: past
    rate_limited_grace_s every 429 counts, and 3 in 30 s open broker-outage."""
    from supervisor.core.errors import VenueRateLimited

    class Limited(ScriptedVenue):
        async def ping(self) -> float:
            self.pings += 1
            await trio.sleep(self.latency)
            raise VenueRateLimited("venue alpha: GET /v2/clock answered 429: rate limit")

    venue, reports = Limited(), Reports()
    actor = HeartbeatActor([venue], Book(clock=trio.current_time), HeartbeatConfig(), reports)
    async with trio.open_nursery() as nursery:
        await _run(actor, nursery)
        await trio.sleep(65)  # pings at 0..60 s: inside the 60 s grace
        assert reports.findings() == []
        await trio.sleep(30)  # pings at 70, 80, 90 s: three failures
        nursery.cancel_scope.cancel()
    ((t, finding),) = reports.findings()
    assert t == 90.005 and finding.incident_class == "broker-outage"
    assert "no budget for 90 s, past the 60 s grace" in finding.summary


def test_rate_limited_grace_must_be_a_number_not_below_zero() -> None:
    for bad in (float("nan"), -1.0):
        with pytest.raises(ValueError, match="rate_limited_grace_s must be >= 0"):
            HeartbeatConfig(rate_limited_grace_s=bad)
