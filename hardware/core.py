"""What every kill-switch bridge shares: the latch, the loss episodes, the callbacks.

A bridge reads its device and tells its ``BridgeCore`` what it saw (``healthy_read``,
``press``, ``released``, ``lose``); the core keeps the state, the counters and the first
cause, and runs the integrator's callbacks. All of it runs on the trio thread and none
of it can raise or block: a GPIO edge reaches it through ``TrioToken.run_sync_soon``.

Callback contract (docs/hardware.md "Integration"):

- ``on_press(cause)`` runs once per press: the latch is re-armed only when the button is
  back at rest (debounced), or when the bridge (re)connects, so a button still held after
  a restart or a reconnect presses again (docs/hardware.md: "keeps the desk halted").
- ``on_loss(cause)`` runs once per loss episode; the episode ends at the next healthy read.
- Each call runs in its own task in the bridge's nursery, at once: a slow ``on_loss``
  never delays an ``on_press``. An exception from a callback is logged and counted in
  ``status()["callback_errors"]``; it never stops the bridge. Releasing the button calls
  nothing: only an operator resumes the desk (docs/hardware.md).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

import msgspec
import trio

log = logging.getLogger("desk.button")

Callback = Callable[[str], Awaitable[object]]
BridgeState = Literal["unknown", "healthy", "pressed", "lost"]


class ButtonBridge(Protocol):
    """One kill-switch bridge, run as an actor (``actors.base.Actor``)."""

    name: str
    critical: bool

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch the button until cancelled; started after the first healthy read, the
        first press or the first loss, whichever comes first."""
        ...

    def status(self) -> dict[str, Any]:
        """State, backend, device, last heartbeat, first and last trip, counters."""
        ...


class Trip(msgspec.Struct, frozen=True, kw_only=True):
    """One trip: a press or a loss, its cause, and when (trio time; wall if known)."""

    kind: Literal["press", "loss"]
    cause: str
    at: float
    wall: float | None = None


class Backoff:
    """Reconnection delays: ``initial``, doubling, capped at ``maximum`` (docs/hardware.md)."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self.delay = initial

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.delay * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.delay = self.initial


def describe(exc: BaseException) -> str:
    """``Type: message`` of an error, for a cause line."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class BridgeCore:
    """The state of one bridge and the dispatch of its callbacks."""

    def __init__(
        self,
        backend: str,
        device: str,
        *,
        on_press: Callback,
        on_loss: Callback,
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        self.backend = backend
        self.device = device
        self.on_press = on_press
        self.on_loss = on_loss
        self.wall = wall_clock
        self.known = False  # a healthy read (or a trip) has been seen
        self.pressed = False  # the press latch: re-armed on release or reconnect
        self.rest_since: float | None = None  # trio time the contact came back to rest
        self.lost = False  # inside a loss episode
        self.first_trip: Trip | None = None
        self.last_trip: Trip | None = None
        self.last_heartbeat: float | None = None  # trio time of the last healthy read
        self.last_heartbeat_wall: float | None = None
        self.last_error: str | None = None
        self.counters = {"presses": 0, "losses": 0, "edges": 0, "reconnects": 0,
                         "callback_errors": 0}
        self.extra: dict[str, Any] = {}
        self.settled = trio.Event()
        self.changed = trio.Event()  # set (and replaced) at every change of ``state``
        self._seen: BridgeState = "unknown"
        self._nursery: trio.Nursery | None = None

    @property
    def state(self) -> BridgeState:
        if self.lost:
            return "lost"
        if self.pressed:
            return "pressed"
        return "healthy" if self.known else "unknown"

    # --- lifecycle ---------------------------------------------------------------------

    async def serve(
        self,
        loop: Callable[[], Awaitable[None]],
        task_status: trio.TaskStatus[None],
    ) -> None:
        """Run ``loop`` with the callbacks' nursery; started once the state is known."""
        self.settled = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(loop)
                await self.settled.wait()
                task_status.started()
        finally:
            self._nursery = None

    async def wait_state(self, *states: BridgeState) -> BridgeState:
        """Wait until ``state`` is one of ``states`` (for status publishers and tests)."""
        while self.state not in states:
            await self.changed.wait()
        return self.state

    def _touch(self) -> None:
        if self.state != self._seen:
            self._seen = self.state
            self.changed.set()
            self.changed = trio.Event()

    def connected(self) -> None:
        """A new connection: re-arm the latch, so a button found held presses again."""
        self.pressed = False
        self.rest_since = None
        self._touch()

    # --- what the bridge saw (trio thread; none of these raise) -------------------------

    def healthy_read(self) -> None:
        """A read that vouches for the button: ends a loss episode."""
        self.known = True
        self.lost = False
        self.last_error = None
        self.last_heartbeat = trio.current_time()
        if self.wall is not None:
            self.last_heartbeat_wall = self.wall()
        self.settled.set()
        self._touch()

    def press(self, cause: str) -> bool:
        """The button is pressed (or its loop open): ``on_press`` unless already latched."""
        self.rest_since = None
        self.known = True
        if self.pressed:
            return False
        self.pressed = True
        self.counters["presses"] += 1
        self._touch()
        self._trip("press", cause, self.on_press)
        return True

    def released(self) -> None:
        """Back at rest (debounced): re-arm the latch. Calls nothing."""
        self.pressed = False
        self._touch()

    def at_rest(self, bounce_s: float) -> None:
        """The contact reads at rest: ``released`` once it has stayed so for ``bounce_s``
        (a press in between starts the wait again)."""
        if not self.pressed:
            return
        now = trio.current_time()
        if self.rest_since is None:
            self.rest_since = now
        if now - self.rest_since >= bounce_s:
            self.released()

    def lose(self, cause: str) -> bool:
        """The bridge cannot vouch for the button: ``on_loss`` once per episode."""
        self.last_error = cause
        if self.lost:
            return False
        self.lost = True
        self.counters["losses"] += 1
        self._touch()
        self._trip("loss", cause, self.on_loss)
        return True

    def _trip(self, kind: Literal["press", "loss"], cause: str, callback: Callback) -> None:
        trip = Trip(kind=kind, cause=cause, at=trio.current_time(),
                    wall=self.wall() if self.wall is not None else None)
        if self.first_trip is None:
            # The first cause of a trip is kept and shown (docs/hardware.md).
            self.first_trip = trip
        self.last_trip = trip
        log.critical("button %s %s: %s", self.backend, kind, cause)
        self.settled.set()
        if self._nursery is None:
            log.error("button %s: no running bridge to call on_%s (%s)", self.backend, kind,
                      cause)
            return
        try:
            self._nursery.start_soon(self._call, callback, kind, cause)
        except RuntimeError as exc:  # the nursery is closing: the bridge is stopping
            log.error("button %s: on_%s not called, bridge stopping: %s", self.backend, kind,
                      exc)

    async def _call(self, callback: Callback, kind: str, cause: str) -> None:
        try:
            await callback(cause)
        except Exception as exc:
            self.counters["callback_errors"] += 1
            log.exception("button %s: on_%s(%r) failed: %s", self.backend, kind, cause, exc)

    # --- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        age = None
        if self.last_heartbeat is not None:
            try:
                age = trio.current_time() - self.last_heartbeat
            except RuntimeError:  # called outside trio (a test, a shutdown hook)
                age = None
        return {
            "backend": self.backend,
            "device": self.device,
            "state": self.state,
            "last_heartbeat": self.last_heartbeat,
            "last_heartbeat_age_s": age,
            "last_heartbeat_wall": self.last_heartbeat_wall,
            "first_trip": msgspec.to_builtins(self.first_trip),
            "last_trip": msgspec.to_builtins(self.last_trip),
            "last_error": self.last_error,
            **self.counters,
            **self.extra,
        }
