"""Wiring of the daemon: journal, venues, desk, control socket, all in one nursery.

Whoever opens a resource closes it (STYLE rule 2): the journal, the venue connections
and the control socket are ``async with``-managed here and nowhere else.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import IO, Any

import trio

from supervisor.config import Config, venue_credentials
from supervisor.control.server import ControlServer, open_control_listener
from supervisor.core.errors import DeskError
from supervisor.ops.credentials import store_for
from supervisor.ops.metrics import serve_metrics
from supervisor.ops.sdnotify import Notifier, open_notifier, run_watchdog, watchdog_interval
from supervisor.runtime.checkpoint import path_in as checkpoint_path
from supervisor.runtime.checkpoint import read_checkpoint
from supervisor.runtime.desk import Desk
from supervisor.runtime.journal import open_journal_checked
from supervisor.runtime.killswitch import utc_stamp
from supervisor.venues.alpaca import HttpVenue

log = logging.getLogger("desk.daemon")


def open_venues(config: Config, *, wall_clock: Callable[[], float] = time.time
                ) -> list[HttpVenue]:
    """One HTTP adapter per configured venue (credentials resolved, never logged)."""
    venues = []
    store = store_for(config.credentials.store, config.state_dir)
    for vc in config.venues:
        # A rotated credential (supervisor/ops/credentials.py) outlives a restart.
        key_id, secret = store.read(vc.name, "active") or venue_credentials(vc)
        venues.append(HttpVenue.from_config(vc, key_id, secret, wall_clock=wall_clock))
    return venues


async def _warm(venue: HttpVenue) -> None:
    # Open the keep-alive connection now, so the first kill never pays a connect.
    try:
        await venue.warm()
    except Exception as exc:
        log.warning("venue %s: could not warm its connection: %s", venue.name, exc)


async def _status_to_systemd(desk: Desk, notifier: Notifier) -> None:
    last = ""
    while True:
        text = desk.summary()
        if text != last:
            notifier.status(text)
            last = text
        await trio.sleep(1.0)


async def serve_desk(
    config: Config,
    *,
    wall_clock: Callable[[], float] = time.time,
    notifier: Notifier | None = None,
    pin_factory: Any = None,
    open_port: Callable[[], Any] | None = None,
    prepare: Callable[[Desk], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[Desk] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the supervisor until cancelled; started with the Desk once the socket listens.

    ``prepare(desk)`` runs once the desk runs and before the socket serves (the demo
    passes its pre-launch gates and arms there, so its first answer is already armed).
    """
    state_dir = Path(config.state_dir)
    ensure_state_dir(state_dir)
    socket_path = Path(config.control.socket)
    async with AsyncExitStack() as stack:
        # Nothing touches the journal or the venues until this process owns the state
        # directory and the socket: a second daemon on the same config does no work.
        lock = lock_state_dir(state_dir)
        stack.callback(lock.close)
        listener = await open_control_listener(socket_path, config.control.socket_mode,
                                               config.control.socket_group)
        stack.push_async_callback(listener.aclose)
        stack.callback(_unlink_quietly, socket_path)
        # The state at journal record N, if a checkpoint of this journal is there: only
        # what came after it is folded (the chain of every record is still checked).
        # systemd is told, as long as it lasts, that the start goes on.
        async with trio.open_nursery() as replaying:
            if notifier is not None:
                replaying.start_soon(_extend_start_timeout, notifier)
            checkpoint = await trio.to_thread.run_sync(read_checkpoint,
                                                       checkpoint_path(state_dir))
            journal, set_aside = await open_journal_checked(
                state_dir / "journal.sqlite3", stamp=utc_stamp(wall_clock()),
                after=(checkpoint.seq, checkpoint.chain) if checkpoint else None)
            replaying.cancel_scope.cancel()
        stack.push_async_callback(journal.aclose)
        if set_aside is not None:
            log.critical("journal damaged, moved aside to %s; starting a new one HALTED: %s",
                         set_aside.path, set_aside.reason)
        venues = open_venues(config, wall_clock=wall_clock)
        for venue in venues:
            stack.push_async_callback(venue.aclose)
        desk = Desk(config, journal, venues, wall_clock=wall_clock, pin_factory=pin_factory,
                    open_port=open_port, journal_set_aside=set_aside,
                    checkpoint=checkpoint)
        async with trio.open_nursery() as nursery:
            if notifier is not None:
                notifier.extend_timeout(EXTEND_START_S)  # the fold, before READY
            for venue in venues:
                nursery.start_soon(_warm, venue)
                if venue.warm_line is not None:
                    await nursery.start(venue.warm_line.run)
            await nursery.start(desk.run)
            if prepare is not None:
                await prepare(desk)
            await nursery.start(ControlServer(desk).serve, listener)
            if config.metrics.listen or config.metrics.textfile:
                await nursery.start(partial(serve_metrics, desk, config.metrics,
                                            notifier=notifier))
            if notifier is not None:
                # READY=1 once the journal is replayed, the socket listens and the
                # venues' heartbeats reported once (bounded: an unreachable venue is an
                # incident to handle, not a reason to stay "activating").
                await desk.wait_actors_reported(config.heartbeat.timeout_s + 1.0)
                notifier.ready(desk.summary())
                nursery.start_soon(_status_to_systemd, desk, notifier)
                interval = watchdog_interval()
                if interval is not None:
                    await nursery.start(run_watchdog, notifier, interval,
                                        lambda: desk.alive()[0])
            log.info("desk-supervisor ready: mode %s, control socket %s, %d venue(s)",
                     desk.state.mode, socket_path, len(venues))
            task_status.started(desk)
            await trio.sleep_forever()


# While the journal is read, systemd's start timeout is pushed this far ahead, every
# EXTEND_EVERY_S: a long journal on a slow disk never trips TimeoutStartSec=.
EXTEND_START_S = 30.0
EXTEND_EVERY_S = 10.0


async def _extend_start_timeout(notifier: Notifier) -> None:
    while True:
        notifier.extend_timeout(EXTEND_START_S)
        await trio.sleep(EXTEND_EVERY_S)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a clean stop leaves no socket behind


def ensure_state_dir(state_dir: Path) -> None:
    """Create the state directory if it is missing and prove it writable, before
    anything else is done (the journal, the venues, the socket).

    Raises:
        DeskError: one line naming the directory and what to do (exit 2 at start).
    """
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeskError(
            f"state directory {state_dir} cannot be created ({exc.strerror or exc}): create "
            "it writable by the daemon's user, or point state_dir elsewhere") from None
    probe = state_dir / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DeskError(
            f"state directory {state_dir} is not writable ({exc.strerror or exc}): make it "
            "writable by the daemon's user (StateDirectory= under systemd), or point "
            "state_dir elsewhere") from None


def lock_state_dir(state_dir: Path) -> IO[str]:
    """Take the state directory's lock for this process's lifetime (close to release).

    Raises:
        DeskError: another live process holds it, or the lock cannot be opened.
    """
    try:
        f = open(state_dir / "lock", "a+")  # held open for the daemon's life
    except OSError as exc:
        raise DeskError(f"state directory {state_dir}: cannot open its lock file "
                        f"({exc.strerror or exc}): make it writable by the daemon's user"
                        ) from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise DeskError(f"state directory {state_dir} is in use by another desk-supervisor "
                        f"(pid {holder})") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


async def run_until_signal(config: Config) -> None:
    """The daemon's main: serve until SIGINT or SIGTERM, then stop gracefully.

    A stop never cancels orders by itself: the journal keeps the mode, and a HALTED desk
    comes back HALTED.
    """
    notifier = open_notifier()
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(serve_desk, config, notifier=notifier))
                async for signum in signals:
                    log.info("received %s: stopping", signal.Signals(signum).name)
                    if notifier is not None:
                        notifier.stopping()
                    nursery.cancel_scope.cancel()
                    break
    finally:
        if notifier is not None:
            notifier.close()
