"""``desk-supervisor demo``: the whole desk simulated in one process (DESIGN.md).

Two simulated venues and a market-data feed on 127.0.0.1, the supervisor, and a paper
engine that trades through them, with thresholds short enough that every simulator
fault shows its incident within seconds. The simulators' addresses go to
``STATE_DIR/demo.json``; started again with the same state directory the supervisor
resumes from its journal.
"""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import trio

from simulators.engine import PaperEngine
from simulators.feed import FeedSimulator, serve_feed
from simulators.venue import VenueSimulator, serve_venue

from .config import (
    Config,
    ControlConfig,
    HeartbeatConfig,
    KillConfig,
    ReconciliationConfig,
    RecoveryConfig,
    VenueConfig,
)
from .daemon import serve_desk

log = logging.getLogger("desk.demo")

DEMO_VENUES = ("alpha", "beta")
DEMO_SYMBOLS = ("AAPL", "MSFT", "SPY")


def demo_config(state_dir: Path, socket: str, venues: dict[str, str]) -> Config:
    """The supervisor's configuration for the demo: the playbook's rules, on a fast clock."""
    return Config(
        state_dir=str(state_dir),
        venues=[VenueConfig(name=n, base_url=u, timeout_s=1.0) for n, u in venues.items()],
        control=ControlConfig(socket=socket, socket_mode=0o660),
        heartbeat=HeartbeatConfig(interval_s=1.0, failures=3, window_s=5.0, timeout_s=1.0,
                                  latency_window_s=5.0, ack_min_latency_s=2.0),
        kill=KillConfig(quiet_s=5.0, verify_poll_s=0.1, watch_poll_s=0.5),
        reconciliation=ReconciliationConfig(end_of_day=""),
        recovery=RecoveryConfig(session_s=60.0),
    )


async def run_demo(socket: str, state_dir: Path) -> None:
    """Run the simulated desk until SIGINT or SIGTERM."""
    await trio.Path(state_dir).mkdir(parents=True, exist_ok=True)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            venues: dict[str, str] = {}
            for name in DEMO_VENUES:
                venues[name] = await nursery.start(serve_venue, VenueSimulator(name))
            feed_url = await nursery.start(serve_feed, FeedSimulator(list(DEMO_SYMBOLS)))
            await nursery.start(serve_desk, demo_config(state_dir, socket, venues))
            info = {"socket": socket, "venues": venues, "feed": feed_url}
            tmp = trio.Path(state_dir / "demo.json.tmp")
            await tmp.write_text(json.dumps(info, indent=2) + "\n")
            await tmp.replace(state_dir / "demo.json")
            print(f"control socket: {socket}", flush=True)
            for name, url in venues.items():
                print(f"venue {name}: {url}", flush=True)
            print(f"feed: {feed_url}", flush=True)
            print(f"demo.json: {state_dir / 'demo.json'}", flush=True)
            print(f"try: deskctl --socket {socket} status", flush=True)
            engine = PaperEngine(socket, venues, feed_url, DEMO_SYMBOLS)
            await nursery.start(engine.run)
            async for signum in signals:
                log.info("received %s: stopping the demo", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
