"""``desk-supervisor demo``: the whole desk simulated in one process (docs/architecture.md).

Two simulated venues and a market-data feed on 127.0.0.1, the supervisor, and a paper
engine that trades through them, with thresholds short enough that every simulator
fault shows its incident within seconds. The simulators' addresses go to
``STATE_DIR/demo.json``; started again with the same state directory the supervisor
resumes from its journal.

The model, PnL and config-drift monitors get what they read in ``STATE_DIR/monitors``,
made at the first start (``simulators.scenarios.prepare_monitor_files``): a PSI training
reference for ``mom_5``, ``vol_20`` and ``spread`` (a small task streams ``features``
telemetry drawn from it, ten a second, as an engine's feature pipeline would), a
backtest band, and a git repository with the committed strategy config that the live
copy is hashed against every 2 s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import trio

from actors.configdrift import ConfigDriftConfig
from actors.model import ModelMonitorConfig
from actors.pnl import PnlMonitorConfig
from hardware.config import GpioButtonConfig
from simulators.button_http import ButtonApp
from simulators.buttons import GpioButtonSim, sim_pin_factory
from simulators.engine import PaperEngine
from simulators.feed import FeedSimulator, serve_feed
from simulators.http import serve_asgi
from simulators.inference import InferenceWorker
from simulators.scenarios import (
    DEMO_LIMITS,
    DEMO_MAX_ORDER_QTY,
    DEMO_MODEL,
    SCENARIOS,
    TRAINING_FEATURES,
    MonitorFiles,
    play,
    prepare_monitor_files,
    print_line,
    training_features,
)
from simulators.venue import VenueSimulator, serve_venue
from supervisor.config import (
    CalendarConfig,
    ComplianceConfig,
    Config,
    ControlConfig,
    DrillConfig,
    FreshnessConfig,
    HeartbeatConfig,
    KillConfig,
    ReconciliationConfig,
    RecoveryConfig,
    RiskConfig,
    VenueConfig,
)
from supervisor.control.authz import Caller
from supervisor.control.client import open_control_client
from supervisor.core.errors import ControlError, DeskError, SupervisorUnreachable
from supervisor.ops.arming import FRESH_INSTALL, UPGRADED
from supervisor.playbook.drills import run_drill
from supervisor.runtime.daemon import ensure_state_dir, serve_desk
from supervisor.runtime.desk import Desk

log = logging.getLogger("desk.demo")

DEMO_VENUES = ("alpha", "beta")
# Paper venues for drills (gates P1, M1), apart from the venues the paper engine trades on.
DEMO_DRILL_VENUES = ("paper-a", "paper-b")
# The demo runs the desk on a clock about ten times production's (heartbeat every 1 s, not
# playbook 04's 10 s; kill verification every 0.1 s), so its live venues get ten times
# Alpaca's 200 requests a minute: at 200 the kill verifier alone would exhaust it within
# seconds (docs/playbook.md "Drills"). The drill venues keep Alpaca's real budget.
DEMO_LIVE_RATE_LIMIT = 2000
DEMO_SYMBOLS = ("AAPL", "MSFT", "SPY")


DEMO_BUTTON = GpioButtonConfig(pin=17)  # normally closed, pull-up: a cut wire is a press
# The live config is hashed against the deployed ref this often (playbook 02: "within 5
# minutes"; the demo shows it within seconds).
DEMO_CONFIG_DRIFT_S = 2.0


def monitor_sections(files: MonitorFiles, *, config_interval_s: float,
                     git_timeout_s: float = 30.0) -> dict[str, Any]:
    """The ``[model]``, ``[pnl]`` and ``[config_drift]`` sections over ``files``, as
    ``Config`` keyword arguments; every threshold is the playbook's."""
    return {
        "model": ModelMonitorConfig(reference=str(files.reference),
                                    top_features=list(TRAINING_FEATURES),
                                    importance=str(files.importance or "")),
        "pnl": PnlMonitorConfig(backtest=str(files.backtest)),
        "config_drift": ConfigDriftConfig(
            files=[str(files.live_config)] + ([str(files.live_limits)] if files.live_limits
                                              else []),
            repository=str(files.repository), ref=files.commit,
            paths=[files.repo_path] + ([files.limits_path] if files.limits_path else []),
            interval_s=config_interval_s,
            timeout_s=git_timeout_s),
    }


def demo_config(
    state_dir: Path, socket: str, venues: dict[str, str], limits: Path | None = None,
    monitors: MonitorFiles | None = None, healthz_url: str = "",
    drill_venues: dict[str, str] | None = None,
) -> Config:
    """The supervisor's configuration for the demo: the playbook's rules, on a fast clock."""
    sections = ({} if monitors is None else
                monitor_sections(monitors, config_interval_s=DEMO_CONFIG_DRIFT_S))
    if healthz_url and "model" in sections:
        # The simulated inference worker: liveness every 2 s, D2 against the demo model.
        sections["model"] = msgspec.structs.replace(
            sections["model"], healthz_url=healthz_url, liveness_interval_s=2.0,
            liveness_timeout_s=1.0,
            liveness_window_s=10.0, pinned_model_hash=str(DEMO_MODEL["model_hash"]),
            latency_interval_s=5.0, queue_interval_s=5.0)
    return Config(
        state_dir=str(state_dir),
        venues=[VenueConfig(name=n, base_url=u, timeout_s=1.0) for n, u in venues.items()],
        control=ControlConfig(socket=socket, socket_mode=0o660),
        heartbeat=HeartbeatConfig(interval_s=1.0, failures=3, window_s=5.0, timeout_s=1.0,
                                  latency_window_s=5.0, ack_min_latency_s=2.0,
                                  ack_min_samples=10),
        kill=KillConfig(quiet_s=5.0, verify_poll_s=0.1, watch_poll_s=0.5),
        compliance=ComplianceConfig(max_order_qty=dict(DEMO_MAX_ORDER_QTY)),
        # The demo trades whenever it runs: every day, all day (UTC), as its venues' own
        # calendar says (the holiday scenario closes a day there).
        calendar=CalendarConfig(calendar="custom", session="00:00-24:00", timezone="UTC",
                                days=[0, 1, 2, 3, 4, 5, 6]),
        reconciliation=ReconciliationConfig(end_of_day=""),
        recovery=RecoveryConfig(session_s=60.0),
        # The demo feed prints a bar a second: stale after 2 s (playbook 02: "2x bar interval").
        freshness=FreshnessConfig(bar_interval_s=1.0),
        risk=RiskConfig(limits=str(limits) if limits else "", reload_s=1.0),
        button=DEMO_BUTTON,
        drill=demo_drill_config(drill_venues or {}),
        **sections,
    )


# The demo's evidence for the pre-launch gates it cannot produce by itself in seconds,
# attested as what it is: simulated (playbook 05 P3, P4). P1 comes from a real kill-switch
# drill on the demo's paper venues, P2 from the limits committed in its git repository.
DEMO_ATTESTATIONS = {
    "P3": "demo: simulated venues accept any credentials; nothing to rotate",
    "P4": "demo: the simulated feed sends primary and backup bars from the same source",
}
DEMO_ACTOR = "demo:pre-launch"


async def arm_demo(desk: Desk) -> None:
    """Pass the demo's pre-launch gates on simulated evidence, then arm (docs/architecture.md: "A
    fresh demo is armed and trading"). Runs before the control socket serves. A demo
    that is already armed, halted, or disarmed by someone, is left as it is; a gate that
    does not pass leaves it DISARMED, and says why."""
    if desk.state.armed or desk.state.kill.latched or (
            desk.state.disarmed_reason not in (FRESH_INSTALL, UPGRADED)):
        return  # an operator's (or the open check's) disarm stands across a restart
    # P1: a kill-switch drill on the paper venues (about a second with the demo's quiet
    # period), unless one passed within the gate's 7 days.
    last = desk.state.last_drill("killswitch", ok=True)
    if last is None or desk.wall() - last.ts > desk.config.gates.kill_drill_max_age_s:
        await run_demo_drill(desk, "killswitch")
    # P2: hash the live limits against the commit now rather than at the first interval.
    await desk.config_drift.check()
    gates = {r.id: r for r in await desk.arming.evaluate()}
    for gate, note in DEMO_ATTESTATIONS.items():
        if gates[gate].state in ("DUE", "EXPIRED"):
            await desk.arming.attest(gate, note, actor=DEMO_ACTOR)
    try:
        await desk.arming.arm(caller=Caller(uid=os.getuid(), gid=os.getgid(),
                                            pid=os.getpid()), actor=DEMO_ACTOR)
    except ControlError as exc:
        log.error("demo: could not arm: %s", exc.message)
        print(f"demo: the desk stays DISARMED: {exc.message}", flush=True)


def demo_drill_config(venues: dict[str, str]) -> DrillConfig:
    """[drill] for the demo: its simulated paper venues and a short quiet period, so a
    kill-switch drill takes about 1.5 s and a failover drill about 2 s (the targets stay
    the playbook's 60 s to flat; 30 s to recovery)."""
    return DrillConfig(
        venues=[VenueConfig(name=n, base_url=u, timeout_s=1.0) for n, u in venues.items()],
        quiet_s=1.0, poll_s=0.1, ping_interval_s=0.5, recovery_target_s=30.0,
        max_duration_s=60.0)


async def run_demo_drill(desk: Desk, kind: str = "killswitch") -> dict[str, Any] | None:
    """A drill on the demo's paper venues at start-up, so gate P1 (M1 with "failover")
    passes on simulated evidence; start it with ``nursery.start_soon``: it never touches
    the live venues the paper engine trades on. Returns the report, None if refused."""
    try:
        report = await run_drill(desk, kind, actor="supervisor:demo")
    except DeskError as exc:
        log.error("demo %s drill not run: %s", kind, exc)
        return None
    print(f"{kind} drill on the paper venues: {'passed' if report['ok'] else 'FAILED'} "
          f"({report['detail']}); report {report['report']}", flush=True)
    return report


class DemoWorld:
    """The demo's simulators, in this process, and its desk, over the control socket."""

    def __init__(self, socket: str, venues: dict[str, VenueSimulator],
                 feed: FeedSimulator, monitor_files: MonitorFiles | None = None) -> None:
        self.socket = socket
        self.venues = venues
        self.feed = feed
        self.monitor_files = monitor_files

    async def telemetry(self, events: list[dict[str, Any]]) -> None:
        async with open_control_client(self.socket) as client:
            await client.request("telemetry", events=events)

    async def status(self) -> dict[str, Any]:
        async with open_control_client(self.socket) as client:
            result: dict[str, Any] = await client.request("status")
            return result

    async def check(self, monitor: str) -> dict[str, Any]:
        async with open_control_client(self.socket) as client:
            result: dict[str, Any] = await client.request("check", monitor=monitor)
            return result

    async def request(self, cmd: str, **args: Any) -> Any:
        async with open_control_client(self.socket) as client:
            return await client.request(cmd, **args)

    def wall(self) -> float:
        return time.time()


async def stream_features(socket: str, *, every_s: float = 1.0, per_batch: int = 10) -> None:
    """What an engine's feature pipeline would send: ``per_batch`` ``features`` events a
    second, drawn from the training distributions, so the PSI check finds no drift (and
    has its 100 values within seconds, and soon enough that sampling noise is small)."""
    rng = random.Random()
    while True:
        try:
            async with open_control_client(socket) as client:
                while True:
                    await client.request("telemetry", events=training_features(
                        rng, per_batch, time.time()))
                    await trio.sleep(every_s)
        except ControlError as exc:
            log.error("demo features: telemetry rejected: %s", exc.message)
        except (SupervisorUnreachable, OSError, trio.BrokenResourceError) as exc:
            log.debug("demo features: connection lost: %s", exc)
        await trio.sleep(every_s)


async def _play_scenario(name: str, world: DemoWorld, *, exit_after: bool,
                         nursery: trio.Nursery, outcome_box: list[bool]) -> None:
    scenario = SCENARIOS[name]
    print(f"scenario {name}: {scenario.summary}", flush=True)
    # Let the paper engine build the ack baseline the heartbeat needs (playbook 02: "5x
    # baseline") before the world breaks.
    with trio.move_on_after(60):
        # The desk is another party here (a socket away): poll it.
        while (await world.status()).get("ack_baseline_s") is None:  # noqa: ASYNC110
            await trio.sleep(0.5)
    outcome = await play(scenario, world, on_line=print_line)
    print(outcome.render().splitlines()[-1].strip(), flush=True)
    outcome_box.append(outcome.ok)
    if exit_after:
        nursery.cancel_scope.cancel()


async def run_demo(
    socket: str, state_dir: Path, *, scenario: str | None = None, exit_after: bool = False
) -> bool:
    """Run the simulated desk until SIGINT or SIGTERM (or the scenario's end with
    ``exit_after``); returns False when a scenario's response was not seen."""
    ensure_state_dir(state_dir)
    outcomes: list[bool] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals, \
            contextlib.ExitStack() as stack:
        async with trio.open_nursery() as nursery:
            venues: dict[str, str] = {}
            sims: dict[str, VenueSimulator] = {}
            for name in DEMO_VENUES:
                sims[name] = VenueSimulator(name, rate_limit=DEMO_LIVE_RATE_LIMIT)
                venues[name] = await nursery.start(serve_venue, sims[name])
            drill_venues: dict[str, str] = {}
            for name in DEMO_DRILL_VENUES:
                drill_venues[name] = await nursery.start(serve_venue, VenueSimulator(name))
            feed = FeedSimulator(list(DEMO_SYMBOLS))
            feed_url = await nursery.start(serve_feed, feed)
            # The risk limits are committed in the demo's git repository and deployed from
            # it, as gate P2 asks ("Risk limits committed in git; live config hash
            # matches"); the config-drift monitor watches them.
            monitors = await trio.to_thread.run_sync(partial(
                prepare_monitor_files, state_dir / "monitors", limits=DEMO_LIMITS))
            assert monitors.live_limits is not None
            limits = monitors.live_limits
            # The kill-switch button, simulated: gpiozero's MockFactory behind the real
            # bridge, pressed over HTTP (PUT /sim/button).
            pins = sim_pin_factory()
            stack.callback(pins.close)
            button = GpioButtonSim(pins, DEMO_BUTTON)
            button_url = await nursery.start(serve_asgi, ButtonApp(button))
            # demo.json first: whoever sees the socket answer can read it (the contract).
            worker_url = await nursery.start(
                serve_asgi, InferenceWorker(str(DEMO_MODEL["model_hash"])))
            info = {"socket": socket, "venues": venues, "drill_venues": drill_venues,
                    "feed": feed_url,
                    "button": button_url + "/sim/button",
                    "inference": worker_url + "/sim/healthz",
                    "monitors": {"reference": str(monitors.reference),
                                 "backtest": str(monitors.backtest),
                                 "repository": str(monitors.repository),
                                 "ref": monitors.commit,
                                 "live_config": str(monitors.live_config)}}
            tmp = trio.Path(state_dir / "demo.json.tmp")
            await tmp.write_text(json.dumps(info, indent=2) + "\n")
            await tmp.replace(state_dir / "demo.json")
            desk = await nursery.start(partial(serve_desk, demo_config(state_dir, socket, venues,
                                                                Path(limits), monitors,
                                                                worker_url + "/healthz",
                                                                drill_venues),
                                        pin_factory=pins, prepare=arm_demo))
            print(f"control socket: {socket}", flush=True)
            for name, url in venues.items():
                print(f"venue {name}: {url}", flush=True)
            for name, url in drill_venues.items():
                print(f"paper venue {name} (drills): {url}", flush=True)
            print(f"feed: {feed_url}", flush=True)
            print(f"kill-switch button: curl -X PUT -d '{{\"action\": \"press\"}}' "
                  f"{button_url}/sim/button", flush=True)
            print(f"live strategy config: {monitors.live_config} (deployed from "
                  f"{monitors.repository} at {monitors.commit[:12]}; edit it and watch "
                  "config-drift)", flush=True)
            print(f"demo.json: {state_dir / 'demo.json'}", flush=True)
            print(f"try: deskctl --socket {socket} status | gates | tree no-fills | "
                  "runbook killswitch --start | drill failover", flush=True)
            if desk.state.last_drill("failover", ok=True) is None:
                # Gate M1's cycle on the paper venues, in the background: the live venues
                # the paper engine trades on are not touched.
                nursery.start_soon(run_demo_drill, desk, "failover")
            engine = PaperEngine(socket, venues, feed_url, DEMO_SYMBOLS)
            await nursery.start(engine.run)
            nursery.start_soon(stream_features, socket)
            if scenario is not None:
                nursery.start_soon(partial(_play_scenario, scenario,
                                           DemoWorld(socket, sims, feed, monitors),
                                           exit_after=exit_after, nursery=nursery,
                                           outcome_box=outcomes))
            async for signum in signals:
                log.info("received %s: stopping the demo", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
    return all(outcomes)
