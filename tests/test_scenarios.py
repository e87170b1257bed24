"""Every scripted scenario, played on MockClock against an in-process desk: the
playbook's response must be in force, within the time the playbook allows."""

from __future__ import annotations

import json
import random
import time
from datetime import datetime
from pathlib import Path

import pytest
import trio

from simulators.demo import monitor_sections
from simulators.scenarios import (
    DEMO_LIMITS,
    DEMO_MODEL,
    DIVERGENCE_DAYS,
    DRIFT_FEATURE,
    SCENARIOS,
    STRATEGY_CONFIG,
    STRATEGY_CONFIG_PATH,
    STRATEGY_HOTFIX,
    play,
    prepare_monitor_files,
    training_features,
)
from supervisor.config import CalendarConfig, RiskConfig
from supervisor.core.errors import ControlError

from .world import open_world


async def _warm(world, seconds: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    """Let the engine trade long enough for an ack baseline (playbook 02: "5x baseline")."""
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
    from supervisor.core.desk import INCIDENT_CLASSES

    for scenario in SCENARIOS.values():
        assert scenario.incident_class in INCIDENT_CLASSES
        assert scenario.within_s <= 30.0  # docs/architecture.md: within 30 s


async def test_stale_data_one_symbol_is_suppressed_and_the_desk_trades_on(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with open_world(tmp_path) as world:
        await _warm(world, 5)
        outcome = await play(SCENARIOS["stale-data-symbol"], world)
        assert outcome.ok, outcome.render()
        assert world.desk.state.mode == "NORMAL"
        # The gate refuses new AAPL exposure and lets MSFT through.
        from supervisor.control.gate import decide, view_from_status

        view = view_from_status(world.desk.status())
        assert decide(view, "AAPL", "buy", 10, 0) == 0
        assert decide(view, "MSFT", "buy", 10, 0) == 10


async def test_stale_data_primary_fails_over_to_a_healthy_backup(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with open_world(tmp_path) as world:
        await _warm(world, 5)
        outcome = await play(SCENARIOS["stale-data-primary"], world)
        assert outcome.ok, outcome.render()
        assert any("alert PAGE" in text for _, text in outcome.timeline)
        assert world.desk.state.mode == "NORMAL"


async def test_stale_data_on_both_vendors_pulls_the_kill_switch(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with open_world(tmp_path) as world:
        await _warm(world, 5)
        outcome = await play(SCENARIOS["stale-data-both"], world)
        assert outcome.ok, outcome.render()
        # playbook 02 stale-data: "older than 2x the configured bar interval" (1 s bars).
        opened = [t for t, text in outcome.timeline if "stale-data P0 feed" in text]
        assert opened and opened[0] <= 3.0


async def test_a_closed_day_with_a_silent_feed_opens_no_incident(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    calendar = CalendarConfig(calendar="custom", session="00:00-24:00", timezone="UTC",
                              days=[0, 1, 2, 3, 4, 5, 6])
    async with open_world(tmp_path, calendar=calendar) as world:
        await _warm(world, 5)
        outcome = await play(SCENARIOS["holiday"], world)
        assert outcome.ok, outcome.render()
        assert world.desk.freshness.in_session is False
        assert world.desk.state.mode == "NORMAL" and not world.desk.state.incidents


async def test_a_rogue_engine_is_halted_and_the_venues_flattened_from_broker_truth(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with open_world(tmp_path) as world:
        await _warm(world, 5)
        # positions the engine's book does not know of (a manual fill, a lost report):
        # the reconciliation is not clean, and the flatten, forced, takes them too
        world.venues["alpha"].place("MSFT", 70, "buy", type="market")
        world.venues["beta"].place("SPY", 30, "sell", type="market")
        outcome = await play(SCENARIOS["rogue-engine"], world)
        assert outcome.ok, outcome.render()
        (inc,) = [i for i in world.desk.state.incidents if i.incident_class == "runaway-engine"]
        (rogue,) = [o for o in world.venues["beta"].orders()
                    if o["client_order_id"] == "rogue-engine-1"]
        placed = datetime.fromisoformat(str(rogue["submitted_at"])).timestamp()
        assert inc.opened_at - placed <= 2.0  # within 2 s of the order reaching the venue
        assert rogue["status"] == "canceled"
        assert all(sim.positions() == [] for sim in world.venues.values())
        last = world.desk.last_flatten
        assert last is not None and last["done"] and last["forced"]
        assert last["seconds"] <= 10.0
        assert {(leg["venue"], leg["symbol"]) for leg in last["legs"]} >= {
            ("alpha", "MSFT"), ("beta", "SPY")}


@pytest.mark.parametrize("name", ["risk-breach-position", "risk-breach-drawdown",
                                  "risk-breach-var"])
async def test_risk_breaches_pull_the_kill_switch(
    name: str, tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    limits = tmp_path / "limits.toml"
    limits.write_text(DEMO_LIMITS)
    async with open_world(tmp_path, risk=RiskConfig(limits=str(limits))) as world:
        await _warm(world, 5)
        outcome = await play(SCENARIOS[name], world)
        assert outcome.ok, outcome.render()
        # The risk service reacts to the telemetry batch itself, not to a poll.
        opened = [t for t, text in outcome.timeline if "risk-breach P0" in text]
        assert opened and opened[0] < 0.5


# --- the model, PnL and config monitors (playbook 02 feature-drift, pnl-divergence,
# config-drift) -------------------------------------------------------------------------


async def _findings(world, cls: str) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    """The evidence of every journaled finding of ``cls``."""
    from supervisor.core.events import FindingRaised

    return [e.evidence for e in await world.desk.journal.read_all()
            if isinstance(e, FindingRaised) and e.incident_class == cls]


async def test_feature_drift_throttles_to_a_quarter_and_disables_the_model(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with open_world(tmp_path, monitors=True) as world:
        await _warm(world, 5)
        outcome = await play(SCENARIOS["feature-drift"], world)
        assert outcome.ok, outcome.render()
        assert any("model disabled" in text for _, text in outcome.timeline)
        psi = world.desk.model.last_psi
        drifted = psi[DRIFT_FEATURE]
        assert drifted is not None and drifted > 0.25
        # The features the scenario left alone stay inside their training distribution.
        assert all(v is not None and v < 0.15 for n, v in psi.items() if n != DRIFT_FEATURE)
        (evidence,) = await _findings(world, "feature-drift")
        assert evidence["top3_over"] == [DRIFT_FEATURE]
        assert evidence["model_hash"] == DEMO_MODEL["model_hash"]
        # The gate refuses new exposure while the model is disabled.
        from supervisor.control.gate import decide, view_from_status

        assert decide(view_from_status(world.desk.status()), "AAPL", "buy", 10, 0) == 0


async def test_pnl_divergence_halves_size_and_logs_the_model_hashes(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with open_world(tmp_path, monitors=True) as world:
        await _warm(world, 5)
        outcome = await play(SCENARIOS["pnl-divergence"], world)
        assert outcome.ok, outcome.render()
        assert world.desk.state.size_multiplier == 0.5
        band = world.desk.status()["pnl"]["pnl_band"]
        assert band["verdict"] == "divergence" and band["streak"] == DIVERGENCE_DAYS
        (evidence,) = await _findings(world, "pnl-divergence")
        assert {k: evidence[k] for k in ("model_hash", "feature_hash", "lib_hash")} == {
            k: DEMO_MODEL[k] for k in ("model_hash", "feature_hash", "lib_hash")}
        assert evidence["consecutive_days"] == DIVERGENCE_DAYS
        days: list[dict[str, float]] = evidence["days"]  # type: ignore[assignment]
        assert len(days) == DIVERGENCE_DAYS and all(d["cum_pnl"] < d["p5"] for d in days)


async def test_config_drift_pauses_the_model_and_snapshots_both_configs(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async with open_world(tmp_path, monitors=True) as world:
        await _warm(world, 5)
        assert (await world.check("config_drift"))["verdict"] == "ok"
        outcome = await play(SCENARIOS["config-drift"], world)
        assert outcome.ok, outcome.render()
        row = world.desk.status()["config_drift"]["files"][STRATEGY_CONFIG_PATH]
        assert row["match"] is False and row["live_sha256"] != row["expected_sha256"]
        snap = Path(row["snapshot"])
        assert (snap / "live" / "config.yml").read_text().endswith(STRATEGY_HOTFIX)
        assert (snap / "expected" / "config.yml").read_text() == STRATEGY_CONFIG
        assert STRATEGY_HOTFIX.strip() in (snap / "diff.patch").read_text()


async def test_the_scheduled_config_check_finds_drift_within_its_interval(
    tmp_path: Path,
) -> None:
    # Real time: on MockClock the git processes would let virtual time run ahead.
    from .deskenv import open_desk, wait_for

    files = prepare_monitor_files(tmp_path / "monitors")
    with trio.fail_after(20):
        async with open_desk(tmp_path, ("alpha",),
                             **monitor_sections(files, config_interval_s=0.5)) as env:
            await wait_for(lambda: env.desk.config_drift.checks >= 1)
            assert env.desk.state.mode == "NORMAL"
            await trio.Path(files.live_config).write_text(STRATEGY_CONFIG + STRATEGY_HOTFIX)
            edited = trio.current_time()
            await wait_for(lambda: env.desk.state.mode == "THROTTLED", limit=10.0)
            assert trio.current_time() - edited < 0.5 + 1.0  # one interval, plus git
            st = env.desk.status()
            assert SCENARIOS["config-drift"].expect(st) is None, st["config_drift"]


def test_monitor_files_are_made_once_and_left_alone(tmp_path: Path) -> None:
    first = prepare_monitor_files(tmp_path)
    first.live_config.write_text(STRATEGY_CONFIG + STRATEGY_HOTFIX)
    again = prepare_monitor_files(tmp_path)
    assert again == first  # same commit: the repository is not made again
    assert again.live_config.read_text().endswith(STRATEGY_HOTFIX)


async def test_check_runs_a_monitor_now_over_the_socket_and_deskctl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from supervisor.cli import deskctl
    from supervisor.config import ControlConfig
    from supervisor.control.authz import Caller, authorize

    from .deskenv import open_desk, wait_for

    # Read-only: anyone who can connect may run a check.
    assert authorize("check", Caller(uid=65534, gid=65534), ControlConfig(
        operators=["alice"]), daemon_uid=1000) is None
    files = prepare_monitor_files(tmp_path / "monitors")

    async def run(*args: str) -> int:
        return await trio.to_thread.run_sync(
            deskctl.main, ["--socket", str(tmp_path / "c.sock"), *args])

    with trio.fail_after(20):
        async with open_desk(tmp_path, ("alpha",),
                             **monitor_sections(files, config_interval_s=3600.0)) as env:
            await wait_for(lambda: env.desk.config_drift.checks >= 1)  # the one at start
            assert await run("check", "config_drift") == 0
            out = capsys.readouterr().out
            assert out.startswith(f"config drift: ok against {files.commit}\n")
            assert f"{STRATEGY_CONFIG_PATH}  {files.live_config}  ok" in out
            files.live_config.write_text(STRATEGY_CONFIG + STRATEGY_HOTFIX)
            assert await run("--json", "check", "config_drift") == 0
            result = json.loads(capsys.readouterr().out)
            assert result["verdict"] == "drift" and result["checks"] == 3
            assert env.desk.state.mode == "THROTTLED"

            await env.request("telemetry", events=training_features(
                random.Random(1), 200, time.time()))
            assert await run("check", "drift") == 0
            out = capsys.readouterr().out
            assert out.startswith("feature PSI vs training: ok (worst PSI ")
            assert "model unknown: enabled" in out
            assert await run("check", "pnl") == 0
            assert capsys.readouterr().out.startswith(
                "pnl band: no_data, streak 0 day(s) below: no closed trading day")

            reply = await env.request("status")
            assert reply["config_drift"]["checks"] == 3
            with pytest.raises(ControlError) as err:
                await env.request("check", monitor="risk")
            assert err.value.code == "bad_request"
    with pytest.raises(SystemExit) as exited:
        deskctl.main(["check", "risk"])
    assert exited.value.code == deskctl.EXIT_USAGE


async def test_check_of_unconfigured_monitors_runs_nothing_and_says_so(tmp_path: Path) -> None:
    from .deskenv import open_desk

    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",)) as env:
            drift = await env.request("check", monitor="drift")
            assert drift["monitors"]["feature_psi"]["verdict"] == "off"
            pnl = await env.request("check", monitor="pnl")
            assert pnl["pnl_band"]["verdict"] == "not_evaluated"
            config = await env.request("check", monitor="config_drift")
            assert config["verdict"] == "not_configured" and config["checks"] == 0
            assert env.desk.alerts.status()["recent"] == []
            assert env.desk.state.mode == "NORMAL"
