"""A whole desk on 127.0.0.1 for integration tests: real venue simulators over HTTP, the
real daemon wiring (journal in a SQLite file, control socket in tmp_path)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import trio

from simulators.venue import VenueSimulator, serve_venue
from supervisor.config import (
    Config,
    ControlConfig,
    DrillConfig,
    HeartbeatConfig,
    KillConfig,
    ReconciliationConfig,
    RecoveryConfig,
    VenueConfig,
)
from supervisor.control.client import AsyncControlClient, open_control_client
from supervisor.playbook.gates import GatesConfig
from supervisor.runtime.daemon import serve_desk
from supervisor.runtime.desk import Desk

TEST_RATE_LIMIT = 2000


class DeskEnv(msgspec.Struct, kw_only=True):
    desk: Desk
    sims: dict[str, VenueSimulator]
    urls: dict[str, str]
    socket: str
    config: Config
    nursery: trio.Nursery
    # The paper venues of [drill] (``open_desk(drill_names=...)``), apart from the live ones.
    drill_sims: dict[str, VenueSimulator] = {}
    drill_urls: dict[str, str] = {}

    @asynccontextmanager
    async def client(self) -> AsyncIterator[AsyncControlClient]:
        async with open_control_client(self.socket) as c:
            yield c

    async def request(self, cmd: str, **args: Any) -> Any:
        async with self.client() as c:
            return await c.request(cmd, **args)


def make_config(tmp_path: Path, urls: dict[str, str], **overrides: Any) -> Config:
    venues = [VenueConfig(name=n, base_url=u, timeout_s=overrides.pop("venue_timeout_s", 1.0),
                          **overrides.pop(f"venue_{n}", {}))
              for n, u in urls.items()]
    return Config(
        state_dir=str(tmp_path / "state"),
        venues=venues,
        control=overrides.pop("control", ControlConfig(socket=str(tmp_path / "c.sock"))),
        heartbeat=overrides.pop("heartbeat", HeartbeatConfig(interval_s=60.0)),
        kill=overrides.pop("kill", KillConfig(quiet_s=0.5, verify_poll_s=0.05,
                                              watch_poll_s=0.1, recancel_backoff_s=0.1,
                                              stuck_after_s=0.5)),
        reconciliation=overrides.pop("reconciliation", ReconciliationConfig(end_of_day="")),
        recovery=overrides.pop("recovery", RecoveryConfig(session_s=3600.0)),
        # Armed from the start: these tests are about other things (test_gates.py tests
        # the fresh-install DISARMED default).
        gates=overrides.pop("gates", GatesConfig(start_disarmed=False)),
        **overrides,
    )


def drill_config(urls: dict[str, str], **overrides: Any) -> DrillConfig:
    """[drill] over these paper venues, with periods short enough for tests."""
    settings: dict[str, Any] = dict(quiet_s=0.3, poll_s=0.05, flat_target_s=3.0,
                                    ping_interval_s=0.05, recovery_target_s=5.0,
                                    max_duration_s=20.0)
    settings.update(overrides)
    return DrillConfig(venues=[VenueConfig(name=n, base_url=u, timeout_s=1.0)
                               for n, u in urls.items()], **settings)


@asynccontextmanager
async def open_desk(
    tmp_path: Path, names: tuple[str, ...] = ("alpha", "beta"), *, pin_factory: Any = None,
    drill_names: tuple[str, ...] = (), **overrides: Any
) -> AsyncIterator[DeskEnv]:
    async with trio.open_nursery() as nursery:
        # The tests' desks run on a clock ten times the playbook's (quiet 0.5 s, not 60 s):
        # the live venues' request budget is scaled alike, as the demo's is (the pacing
        # against Alpaca's 200 a minute is tested on its own in test_kill_path.py).
        sims = {n: VenueSimulator(n, rate_limit=TEST_RATE_LIMIT) for n in names}
        urls = {}
        for n, sim in sims.items():
            urls[n] = await nursery.start(serve_venue, sim)
        drill_sims = {n: VenueSimulator(n) for n in drill_names}
        drill_urls = {}
        for n, sim in drill_sims.items():
            drill_urls[n] = await nursery.start(serve_venue, sim)
        if drill_urls:
            overrides["drill"] = drill_config(drill_urls, **overrides.pop("drill", {}))
        config = make_config(tmp_path, urls, **overrides)
        desk = await nursery.start(partial(serve_desk, config, pin_factory=pin_factory))
        yield DeskEnv(desk=desk, sims=sims, urls=urls, socket=config.control.socket,
                      config=config, nursery=nursery, drill_sims=drill_sims,
                      drill_urls=drill_urls)
        nursery.cancel_scope.cancel()


async def run_deskctl(sock: str, *args: str) -> int:
    """``deskctl --socket SOCK ARGS...`` as an operator would run it (in a worker thread:
    it is a blocking client); returns its exit status."""
    from supervisor.cli import deskctl

    return await trio.to_thread.run_sync(deskctl.main, ["--socket", sock, *args])


async def wait_for(predicate: Any, limit: float = 5.0, poll: float = 0.02) -> None:
    """Poll a condition that some other process or thread makes true (bounded)."""
    with trio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110 - the condition changes outside trio
            await trio.sleep(poll)


async def raw_exchange(sock: str, payload: bytes, lines: int = 1) -> list[dict[str, Any]]:
    """Send ``payload`` on a new connection and read ``lines`` answer lines."""
    stream = await trio.open_unix_socket(sock)
    async with stream:
        await stream.send_all(payload)
        buf = b""
        while buf.count(b"\n") < lines:
            chunk = await stream.receive_some(65536)
            assert chunk, f"connection closed after {buf!r}"
            buf += chunk
    return [json.loads(line) for line in buf.splitlines()]
