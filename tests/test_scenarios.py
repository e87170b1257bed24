"""Every scripted scenario, played on MockClock against an in-process desk: the
playbook's response must be in force, within the time the seed allows."""

from __future__ import annotations

from pathlib import Path

import trio

from simulators.scenarios import SCENARIOS, play

from .world import open_world


async def _warm(world, seconds: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    """Let the engine trade long enough for an ack baseline (seed 02: "5x baseline")."""
    await trio.sleep(seconds)
    assert world.desk.state.mode == "NORMAL", world.desk.status()["incidents"]


async def test_broker_outage_venue_down(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    async with open_world(tmp_path) as world:
        await _warm(world)
        outcome = await play(SCENARIOS["broker-outage-venue-down"], world)
        assert outcome.ok, outcome.render()
        opened = [t for t, text in outcome.timeline if "broker-outage P0 venue:alpha" in text]
        # Pings every 1 s, 3 failures: the third fails 2-3 s after the fault.
        assert opened and opened[0] <= 3.5
        assert world.venues["beta"].open_orders() == []


async def test_broker_outage_silent_acks(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    async with open_world(tmp_path) as world:
        await _warm(world)
        assert world.desk.heartbeat.ack_baseline_s is not None
        outcome = await play(SCENARIOS["broker-outage-silent-acks"], world)
        assert outcome.ok, outcome.render()
        opened = [t for t, text in outcome.timeline if "broker-outage P0 venue:beta" in text]
        # The floor (2 s) is above 5x the in-process baseline: found 2-3 s after an
        # unacknowledged order.
        assert opened and opened[0] <= 4.0


def test_every_scenario_names_a_known_incident_class() -> None:
    from supervisor.desk import INCIDENT_CLASSES

    for scenario in SCENARIOS.values():
        assert scenario.incident_class in INCIDENT_CLASSES
        assert scenario.within_s <= 30.0  # DESIGN.md: within 30 s
