"""The kill path end to end, against real venue simulators over HTTP on 127.0.0.1.

Real sockets mean real time here; the quiet period is shortened to 0.5 s in the config.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from simulators.venue import CancelOneFails, Hang, Outage, PartialCancel
from supervisor.config import HeartbeatConfig, KillConfig, VenueConfig
from supervisor.core.book import Book
from supervisor.core.errors import VenueUnavailable
from supervisor.runtime.killswitch import KillSwitch
from supervisor.venues.base import CancelEntry, CancelReport, RateLimit, VenueOrder

from .deskenv import open_desk, wait_for


def _rest(sim, n: int = 3, prefix: str = "desk-") -> None:  # type: ignore[no-untyped-def]
    for i in range(n):
        sim.place("AAPL", 10, "buy", client_order_id=f"{prefix}{sim.name}-{i}")


async def test_kill_cancels_every_open_order_on_every_venue_then_verifies(tmp_path: Path) -> None:
    """playbook 01 killswitch: cancel all open orders across all venues; verify zero open
    orders and no new order for the quiet period; snapshot the book."""
    with trio.fail_after(15):
        async with open_desk(tmp_path) as env:
            for sim in env.sims.values():
                _rest(sim)
            await env.request("telemetry", events=[
                {"kind": "position", "symbol": "AAPL", "qty": 0},
                {"kind": "model", "model_hash": "sha256:m1", "ts": 1.0},
                {"kind": "prediction", "symbol": "AAPL", "value": 0.3, "ts": time.time()},
            ])
            result = await env.request("kill", reason="fat finger")
            assert result["mode"] == "HALTED" and result["already_latched"] is False
            st = await env.request("status")
            assert st["mode"] == "HALTED" and st["kill"]["latched"] is True
            assert st["size_multiplier"] == 0.0 and st["blocked"] is True
            await wait_for(lambda: not any(s.open_orders() for s in env.sims.values()), 2)
            for sim in env.sims.values():
                assert sim.requests["DELETE /v2/orders"] >= 1
            await wait_for(lambda: env.desk.state.kill.verified, 5)
            st = await env.request("status")
            assert st["kill"]["verified"] is True
            assert "no new order" in st["kill"]["verify_detail"]
            (inc,) = st["incidents"]
            assert inc["class"] == "operator-kill" and inc["severity"] == "P0"
            await wait_for(lambda: env.desk.killswitch.snapshot_path is not None, 2)
            snap = json.loads(Path(env.desk.killswitch.snapshot_path).read_text())
            assert snap["model_hash"] == "sha256:m1"
            assert snap["positions"] == {"AAPL": 0}
            assert len(snap["predictions"]) == 1
            # Reconciliation runs by itself after the halt verifies.
            await wait_for(lambda: env.desk.state.last_reconciliation is not None, 3)
            assert env.desk.state.last_reconciliation.clean


async def test_a_hung_venue_does_not_delay_the_others(tmp_path: Path) -> None:
    """docs/architecture.md principle 3: no hung venue can delay the kill path."""
    with trio.fail_after(20):
        async with open_desk(tmp_path, ("alpha", "beta", "gamma"),
                             venue_timeout_s=3.0) as env:
            for sim in env.sims.values():
                _rest(sim)
            env.sims["alpha"].faults.set(Hang())
            t0 = trio.current_time()
            await env.request("kill", reason="drill")
            await wait_for(lambda: not env.sims["beta"].open_orders()
                           and not env.sims["gamma"].open_orders(), 2)
            # Well inside alpha's 3 s timeout: nobody waited for the hung venue.
            assert trio.current_time() - t0 < 1.5
            await trio.sleep(3.5)
            st = await env.request("status")
            assert st["kill"]["verified"] is False
            assert st["kill"]["venues"]["alpha"]["open_orders"] is None
            assert "timed out" in st["kill"]["venues"]["alpha"]["last_error"]
            env.sims["alpha"].faults.clear()
            await wait_for(lambda: not env.sims["alpha"].open_orders(), 5)
            await wait_for(lambda: env.desk.state.kill.verified, 5)


async def test_an_order_appearing_after_the_switch_is_cancelled_and_reported(
    tmp_path: Path,
) -> None:
    """Hummingbot #1508/#2955, NautilusTrader #2572: keep watching while
    latched; an order that appears gets cancel-all again and the incident says so."""
    with trio.fail_after(15):
        async with open_desk(tmp_path) as env:
            await env.request("kill", reason="drill")
            await wait_for(lambda: env.desk.state.kill.verified, 5)
            order = env.sims["beta"].place("MSFT", 5, "sell", client_order_id="late-1")
            await wait_for(lambda: not env.desk.state.kill.verified, 3)
            await wait_for(lambda: not env.sims["beta"].open_orders(), 3)
            assert env.sims["beta"].order(str(order["id"]))["status"] == "canceled"
            def breach_noted() -> bool:
                return any("kill breach after verification" in e.text
                           and str(order["id"]) in e.text
                           for e in env.desk.state.incidents[0].timeline)

            await wait_for(breach_noted, 2)
            # Quiet again for the full period: verified again, honestly.
            await wait_for(lambda: env.desk.state.kill.verified, 5)


async def test_engine_order_after_the_switch_breaks_verification(tmp_path: Path) -> None:
    """playbook 01 killswitch verify: "Order log shows zero new orders for >= 60 seconds"."""
    with trio.fail_after(10):
        async with open_desk(tmp_path) as env:
            await env.request("kill", reason="drill")
            await wait_for(lambda: env.desk.state.kill.verified, 5)
            await env.request("telemetry", events=[{
                "kind": "order", "order_id": "o-9", "symbol": "AAPL", "side": "buy", "qty": 1,
                "ts": 1.0}])
            await wait_for(lambda: not env.desk.state.kill.verified, 3)
            assert "engine reported a new order" in env.desk.state.kill.verify_detail


async def test_partial_cancel_is_never_reported_done_and_is_retried(tmp_path: Path) -> None:
    """Alpaca's 207 can carry 500 entries; those orders are still open, and the venue is
    reported on the incident and paged once, never silently pending."""
    with trio.fail_after(15):
        async with open_desk(tmp_path) as env:
            for sim in env.sims.values():
                _rest(sim)
            env.sims["alpha"].faults.set(PartialCancel(fraction=1.0))
            env.sims["alpha"].faults.set(CancelOneFails())  # escalation fails too, for now
            await env.request("kill", reason="drill")
            await wait_for(lambda: not env.sims["beta"].open_orders(), 2)
            await trio.sleep(1.0)
            assert len(env.sims["alpha"].open_orders()) == 3
            st = await env.request("status")
            assert st["kill"]["verified"] is False
            assert st["kill"]["venues"]["alpha"]["open_orders"] == 3
            assert st["kill"]["venues"]["alpha"]["last_cancel_failed"] == 3
            assert st["kill"]["venues"]["alpha"]["cancel_requests"] >= 2  # re-issued
            def notes() -> list[str]:
                return [e.text for e in env.desk.state.incidents[0].timeline
                        if "still not flat" in e.text]

            await wait_for(notes, 2)
            await trio.sleep(0.3)
            assert notes() == ["kill breach: still not flat after 0.5 s: venue alpha has 3 open "
                             "order(s); cancel-all re-issued"]
            assert [a.summary for a in env.desk.alerts.recent
                    if a.source == "supervisor:kill-switch"] == [
                "kill-switch not verified: still not flat after 0.5 s: venue alpha has 3 open "
                "order(s)"]
            env.sims["alpha"].faults.clear()
            await wait_for(lambda: not env.sims["alpha"].open_orders(), 3)
            await wait_for(lambda: env.desk.state.kill.verified, 5)


@pytest.mark.parametrize("fraction", [0.5, 1.0])
async def test_an_order_a_cancel_all_keeps_failing_is_cancelled_on_its_own(
    tmp_path: Path, fraction: float
) -> None:
    """An order that cancel-all fails to cancel twice gets its own DELETE
    /v2/orders/{id}, retried with backoff; status lists it with its last error while it
    is stuck; the incident notes each escalation; every venue is flat within 20 s."""
    with trio.fail_after(25):
        async with open_desk(tmp_path) as env:
            for sim in env.sims.values():
                _rest(sim, 4)
                sim.faults.set(PartialCancel(fraction=fraction))
            alpha = env.sims["alpha"]
            alpha.faults.set(CancelOneFails())  # alpha's own cancels fail at first
            began = trio.current_time()
            await env.request("kill", reason="stuck cancel drill")
            await wait_for(lambda: any(
                s["venue"] == "alpha" and s["escalated"] and s["attempts"] >= 2
                for s in env.desk.status()["kill"]["stuck_orders"]), 10)
            stuck = [s for s in env.desk.status()["kill"]["stuck_orders"]
                     if s["venue"] == "alpha"]
            assert all(s["failed_cancel_alls"] >= 2 for s in stuck)
            assert all(s["last_error"] and "500" in s["last_error"] for s in stuck)
            assert {s["order_id"] for s in stuck} <= {o["id"] for o in alpha.open_orders()}
            alpha.faults.clear("cancel_one_fails")
            await wait_for(lambda: not any(s.open_orders() for s in env.sims.values()), 20)
            assert trio.current_time() - began < 20
            for sim in env.sims.values():
                assert sim.requests["DELETE /v2/orders/{id}"] >= 1
            await wait_for(lambda: env.desk.status()["kill"]["stuck_orders"] == [], 5)
            await wait_for(lambda: env.desk.state.kill.verified, 10)
            timeline = [e.text for e in env.desk.state.incidents[0].timeline]
            escalations = [t for t in timeline if "failed cancel-all twice" in t]
            assert escalations and all(t.startswith("order ") for t in escalations)
            assert any("cancelled on its own" in t for t in timeline)


async def test_second_kill_while_latched_is_idempotent(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_desk(tmp_path) as env:
            first = await env.request("kill", reason="one")
            second = await env.request("kill", reason="two")
            assert second["already_latched"] is True
            assert second["incident_id"] == first["incident_id"]
            st = await env.request("status")
            assert len(st["incidents"]) == 1
            assert st["kill"]["reason"] == "one" and st["kill"]["triggers"] == 2


async def test_prefix_scope_cancels_only_the_engines_orders(tmp_path: Path) -> None:
    """Hummingbot #2896/#3214: cancel-all hit manual traders' orders."""
    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",),
                             venue_alpha={"cancel_scope": "prefix",
                                          "client_order_prefix": "desk-"}) as env:
            sim = env.sims["alpha"]
            _rest(sim, 2, prefix="desk-")
            _rest(sim, 2, prefix="manual-")
            await env.request("kill", reason="drill")
            await wait_for(lambda: len(sim.open_orders()) == 2, 2)
            assert all(str(o["client_order_id"]).startswith("manual-")
                       for o in sim.open_orders())
            # The manual orders neither block nor breach the verification.
            await wait_for(lambda: env.desk.state.kill.verified, 5)


def test_prefix_scope_needs_a_prefix() -> None:
    import msgspec
    import pytest

    with pytest.raises(msgspec.ValidationError,
                       match="cancel_scope 'prefix' needs a non-empty client_order_prefix"):
        msgspec.convert({"name": "a", "base_url": "http://x", "cancel_scope": "prefix"},
                        VenueConfig)


async def test_a_venue_that_is_down_neither_blocks_the_kill_nor_verifies(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_desk(tmp_path) as env:
            _rest(env.sims["beta"])
            env.sims["alpha"].faults.set(Outage())
            await env.request("kill", reason="drill")
            await wait_for(lambda: not env.sims["beta"].open_orders(), 1)
            await trio.sleep(1.0)
            st = await env.request("status")
            assert st["kill"]["verified"] is False
            alpha = st["kill"]["venues"]["alpha"]
            assert alpha["open_orders"] is None and "503" in alpha["last_error"]
            env.sims["alpha"].faults.clear()
            await wait_for(lambda: env.desk.state.kill.verified, 5)


async def test_a_broker_outage_found_by_the_heartbeat_pulls_the_switch(tmp_path: Path) -> None:
    """playbook 02 broker-outage: heartbeat fails 3 times in the window -> P0 -> kill-switch."""
    heartbeat = HeartbeatConfig(interval_s=0.1, failures=3, window_s=1.0, timeout_s=0.3)
    with trio.fail_after(10):
        async with open_desk(tmp_path, heartbeat=heartbeat) as env:
            _rest(env.sims["beta"])
            env.sims["alpha"].faults.set(Outage())
            await wait_for(lambda: env.desk.state.kill.latched, 3)
            (inc,) = env.desk.state.incidents
            assert (inc.incident_class, inc.severity, inc.scope) == (
                "broker-outage", "P0", "venue:alpha")
            assert inc.opened_by == "actor:heartbeat"
            # One page per incident opened, not one per code path that saw it.
            def pages() -> list[str]:
                return [a.channel for a in env.desk.alerts.recent if a.incident_id == inc.id]

            await wait_for(pages, 1)  # alerts follow the journal append
            await trio.sleep(0.2)
            assert pages() == ["PAGE"]
            await wait_for(lambda: not env.sims["beta"].open_orders(), 1)


def test_verification_paces_itself_within_the_venues_request_budget() -> None:
    """Alpaca states 200 requests a minute (X-RateLimit-Limit), shared with the engine:
    verification (two requests a venue a pass) spends at most half of it, so it polls
    every 1.2 s, not every 0.1 s; with the budget spent it waits for the refill."""

    class Venue:
        def __init__(self, name: str, rate_limit: RateLimit | None) -> None:
            self.name, self.rate_limit = name, rate_limit

    now = 1_800_000_000.0
    venues = [Venue("alpha", RateLimit(limit=200, remaining=150, reset=now + 30, ts=now)),
              Venue("beta", None)]

    def make(share: float) -> KillSwitch:
        return KillSwitch(venues, None, KillConfig(verify_budget_share=share),  # type: ignore[arg-type]
                          Path("/nonexistent"), submit=None, wall_clock=lambda: now,  # type: ignore[arg-type]
                          publish_blocked=lambda reason: None, alert=lambda s, i: None)

    assert make(0.5).paced_interval() == 2 * 60.0 / (200 * 0.5) == 1.2
    assert make(1.0).paced_interval() == 0.6
    venues[0].rate_limit = RateLimit(limit=200, remaining=1, reset=now + 30, ts=now)
    assert make(0.5).paced_interval() == 30.0  # spent: wait for the window to refill
    venues[0].rate_limit = None
    assert make(0.5).paced_interval() == 0.0  # no budget stated: the configured poll


async def test_a_release_while_a_verification_pass_awaits_the_venues_is_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A resume releases the switch while a pass waits on a venue: the pass is dropped,
    with no traceback and no verdict about a latch that no longer exists."""

    answer = trio.Event()
    asked = trio.Event()
    submitted: list[object] = []

    class SlowVenue:
        name = "alpha"

        async def cancel_all(self) -> CancelReport:
            return CancelReport(venue="alpha", requested=0, failed=(), scope="account")

        async def open_orders(self) -> list[object]:
            asked.set()
            await answer.wait()
            return []

        async def orders_since(self, after_epoch: float) -> list[object]:
            return []

    async def submit(event: object) -> None:
        submitted.append(event)

    ks = KillSwitch([SlowVenue()], Book(clock=trio.current_time), KillConfig(quiet_s=0.01),  # type: ignore[list-item]
                    Path("/nonexistent"), submit=submit, wall_clock=lambda: 1.8e9,
                    publish_blocked=lambda reason: None)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(ks.run)
            ks.trip(reason="drill", incident_id="INC-1", latched_wall=1.8e9, snapshot=False)
            nursery.start_soon(ks.check_once)  # a pass that waits on the venue...
            await asked.wait()
            ks.release()  # ...while a resume releases the switch
            answer.set()
            await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    assert "Traceback" not in caplog.text and "failed" not in caplog.text
    assert submitted == []  # no verdict for a released latch
    assert ks.verified is False


class _ListedVenue:
    """A venue stand-in whose open orders are ``live``; its cancels are the test's."""

    name = "alpha"
    cancel_scope = "account"

    def __init__(self, *live: str) -> None:
        self.live = set(live)
        self.cancelled: list[str] = []

    async def open_orders(self) -> list[VenueOrder]:
        return [VenueOrder(id=i, client_order_id=f"e-{i}", symbol="AAPL", side="buy",
                           qty=1.0, filled_qty=0.0, status="new", submitted_at=1.7e9)
                for i in sorted(self.live)]

    async def orders_since(self, after_epoch: float) -> list[VenueOrder]:
        return []


async def _until_verified(venue: _ListedVenue, config: KillConfig) -> KillSwitch:
    """Trip a kill-switch over ``venue`` alone and run it until it verifies (or fail)."""
    async def submit(event: object) -> None:
        pass

    ks = KillSwitch([venue], Book(clock=trio.current_time), config, Path("/nonexistent"),  # type: ignore[list-item]
                    submit=submit, wall_clock=lambda: 1.8e9,
                    publish_blocked=lambda reason: None)
    async with trio.open_nursery() as nursery:
        await nursery.start(ks.run)
        ks.trip(reason="drill", incident_id="INC-1", latched_wall=1.8e9, snapshot=False)
        with trio.fail_after(30):
            while not ks.verified:  # noqa: ASYNC110 - a poll on the virtual clock
                await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    return ks


async def test_a_cancel_all_failing_as_a_whole_escalates_the_open_orders(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """DELETE /v2/orders fails outright (no per-order answers) every time: after two
    such failures the orders the venue lists as open are cancelled one by one."""

    class BrokenCancelAll(_ListedVenue):
        async def cancel_all(self) -> object:
            raise VenueUnavailable("venue alpha: DELETE /v2/orders answered 500")

        async def cancel_order(self, order_id: str) -> None:
            self.cancelled.append(order_id)
            self.live.discard(order_id)

    venue = BrokenCancelAll("o-1", "o-2")
    ks = await _until_verified(venue, KillConfig(quiet_s=1.0, recancel_backoff_s=0.1))
    assert sorted(venue.cancelled) == ["o-1", "o-2"]
    assert ks.stuck == {}


async def test_an_order_gone_while_its_own_cancel_is_answered_does_not_crash_the_switch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The venue takes the per-order DELETE at once and answers slowly; meanwhile a
    verification pass sees the order gone and forgets it: the answer, when it comes,
    must not find its entry missing (a KeyError there took the kill path down)."""

    class SlowAnswer(_ListedVenue):
        async def cancel_all(self) -> CancelReport:
            return CancelReport(venue="alpha", requested=1,
                                failed=(CancelEntry("X", 500),), scope="account")

        async def cancel_order(self, order_id: str) -> None:
            self.live.discard(order_id)  # done at the venue; the answer is slow
            await trio.sleep(0.5)

    ks = await _until_verified(SlowAnswer("X"), KillConfig(
        verify_poll_s=0.05, watch_poll_s=0.05, recancel_backoff_s=0.01, quiet_s=1.0))
    assert ks.stuck == {}
