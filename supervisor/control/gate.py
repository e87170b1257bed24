"""The engine's gate: may the trading engine send this order, and how big?

A trading engine imports this and asks ``gate.allowed(symbol, side, qty)`` before every
order. The answer comes from memory (no round trip per order): the gate keeps a
``watch`` subscription on the control socket and holds the newest status. It is a dead
man's switch: when no message arrived for longer than ``grace_s`` (the supervisor sends a
heartbeat every second; a lost connection sends nothing) the gate closes, and it opens
again only when the connection is back and a fresh status arrived. So a supervisor
restart shorter than the grace does not stop the engine, and a longer outage does
(docs/architecture.md principle 4: "A lost supervisor closes the engine's gate after a short
grace"). A gate that never heard from the supervisor is closed.

The rules are ``decide`` (``supervisor.core.gatepolicy``, pure), the same ones the
supervisor's compliance watch judges every order the venues report by.

Two flavours: ``Gate`` for trio engines (run ``gate.run`` in a nursery) and
``SyncGate`` for plain synchronous engines (it runs the same code on a trio loop in a
background thread that it owns and stops on ``close``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import trio

from supervisor.control.client import default_socket_path, open_control_client
from supervisor.core.errors import ControlError, DeskError, SupervisorUnreachable
from supervisor.core.gatepolicy import CLOSED_MODES, GateView, decide, view_from_status

__all__ = ["CLOSED_MODES", "Gate", "GateView", "SyncGate", "decide", "view_from_status"]

log = logging.getLogger("desk.gate")

class Gate:
    """The trio flavour. ``await nursery.start(gate.run)`` returns once a status arrived."""

    def __init__(self, socket_path: str | None = None, *, grace_s: float = 5.0) -> None:
        self.socket_path = socket_path or default_socket_path()
        self.grace_s = grace_s
        self.positions: dict[str, float] = {}
        self._view: GateView | None = None
        self._last_message: float | None = None  # trio time
        self._connected = False
        self.changed = trio.Event()

    # --- answers from memory ---------------------------------------------------------

    @property
    def view(self) -> GateView | None:
        """The newest view, or None while the gate is closed (dead man's switch)."""
        if self._view is None or self._last_message is None:
            return None
        if trio.current_time() - self._last_message > self.grace_s:
            return None
        return self._view

    def allowed(self, symbol: str, side: str, qty: float, venue: str | None = None) -> float:
        """The quantity of this order the engine may send now (0.0: none); ``venue``:
        where it goes (new exposure only on the routed venue while a route is set)."""
        return decide(self.view, symbol, side, qty, self.positions.get(symbol, 0.0), venue)

    def set_position(self, symbol: str, qty: float) -> None:
        """Tell the gate the engine's position (``send_telemetry`` does it for you)."""
        self.positions[symbol] = qty

    # --- the watch -------------------------------------------------------------------

    def _update(self, message: dict[str, Any]) -> None:
        self._last_message = trio.current_time()
        if "status" in message:
            self._view = view_from_status(message["status"])
        elif message.get("event") == "blocked":
            # The kill path's first message: closed at once, before any status build.
            old = self._view
            self._view = GateView(mode="HALTED", size_multiplier=0.0,
                                  suppressed=old.suppressed if old else frozenset())
        self.changed.set()
        self.changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the watch subscription up, reconnecting with backoff, until cancelled."""
        backoff = 0.1
        started = False
        while True:
            try:
                async with open_control_client(self.socket_path) as client:
                    async for message in client.watch():
                        if not self._connected:
                            log.info("gate: connected to the supervisor at %s", self.socket_path)
                        self._connected = True
                        backoff = 0.1
                        self._update(message)
                        if not started:
                            started = True
                            task_status.started()
            except (SupervisorUnreachable, ControlError, DeskError, OSError,
                    trio.BrokenResourceError) as exc:
                if self._connected:
                    log.warning("gate: lost the supervisor (%s): closed after %.1f s", exc,
                                self.grace_s)
            # The view stands until the grace runs out; past it, only a new connection's
            # fresh status opens the gate again.
            self._connected = False
            self.changed.set()
            self.changed = trio.Event()
            if not started:
                started = True
                task_status.started()  # closed, and retrying: the engine must not wait
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def send_telemetry(self, events: Sequence[dict[str, Any]]) -> None:
        """Send a batch of telemetry on its own connection; positions also update the gate.

        Raises:
            ControlError: the batch was rejected whole (the message names the event).
            SupervisorUnreachable: the supervisor cannot be reached.
        """
        for event in events:
            if event.get("kind") == "position":
                self.positions[str(event["symbol"])] = float(event["qty"])
        async with open_control_client(self.socket_path) as client:
            await client.request("telemetry", events=list(events))


class SyncGate:
    """The plain synchronous flavour, for engines that do not run trio.

    ``SyncGate(path)`` starts a background thread that runs ``Gate.run`` on its own trio
    loop; ``allowed`` reads the newest view under a lock; ``close`` stops the thread.
    """

    def __init__(self, socket_path: str | None = None, *, grace_s: float = 5.0) -> None:
        self._gate = Gate(socket_path, grace_s=grace_s)
        self._lock = threading.Lock()
        self._view: GateView | None = None
        self._positions: dict[str, float] = {}
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="desk-gate", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _main(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as scope:
                self._cancel = scope
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._mirror)
                    await nursery.start(self._gate.run)
                    self._ready.set()
            self._ready.set()

        trio.run(main)

    async def _mirror(self) -> None:
        # Copy the view out of the trio thread a few hundred times a second, expiring it
        # here so the dead man's switch also works while no message arrives.
        while True:
            view = self._gate.view
            with self._lock:
                self._view = view
            with trio.move_on_after(0.005):
                await self._gate.changed.wait()

    @property
    def view(self) -> GateView | None:
        with self._lock:
            return self._view

    def allowed(self, symbol: str, side: str, qty: float, venue: str | None = None) -> float:
        """The quantity of this order the engine may send now (0.0: none); ``venue``:
        where it goes (new exposure only on the routed venue while a route is set)."""
        with self._lock:
            view = self._view
            position = self._positions.get(symbol, 0.0)
        return decide(view, symbol, side, qty, position, venue)

    def set_position(self, symbol: str, qty: float) -> None:
        with self._lock:
            self._positions[symbol] = qty

    def send_telemetry(self, events: Sequence[dict[str, Any]]) -> None:
        """Send a batch of telemetry (blocking); positions also update the gate."""
        from supervisor.control.client import ControlClient

        for event in events:
            if event.get("kind") == "position":
                self.set_position(str(event["symbol"]), float(event["qty"]))
        with ControlClient(self._gate.socket_path) as client:
            client.request("telemetry", events=list(events))

    def close(self) -> None:
        """Stop the background thread (the gate is closed afterwards)."""
        token, scope = self._token, self._cancel
        if token is not None and scope is not None:
            try:
                token.run_sync_soon(scope.cancel)
            except trio.RunFinishedError:
                pass
        self._thread.join(10)
        with self._lock:
            self._view = None

    def __enter__(self) -> SyncGate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
