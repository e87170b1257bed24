"""The modem-line kill-switch bridge: a plain button across two handshake lines.

The bridge asserts one output line (``drive``: RTS or DTR) as the port opens and reads
one input line (``sense``: CTS, DSR, CD or RI) through the contact. NC (the default): the
input is asserted at rest and drops on a press or a cut wire; NO: the reverse (docs/hardware.md).

Reads go through ``trio.to_thread.run_sync`` with one thread at a time per connection:
on a USB adapter a modem-line read is a control transfer that can stall (docs/hardware.md). A read
slower than ``read_timeout_s`` is abandoned and the bridge is lost; the port is reopened
with backoff. Tests use pyserial's ``loop://`` handler, which wires RTS to CTS and DTR to
DSR (a pty refuses these ioctls with ENOTTY).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import serial
import trio

from .config import SerialModemButtonConfig
from .core import Backoff, BridgeCore, Callback, describe
from .errors import ButtonReadTimeout
from .ports import open_serial, resolve_port

log = logging.getLogger("desk.button.modem")

PortOpener = Callable[[], serial.SerialBase]


class ModemLineBridge:
    """A kill-switch button read from a serial adapter's modem-status line."""

    critical = True

    def __init__(
        self,
        config: SerialModemButtonConfig,
        *,
        on_press: Callback,
        on_loss: Callback,
        open_port: PortOpener | None = None,
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        """``open_port``: returns an open port with ``drive`` already asserted (blocking,
        run in a thread); default: find the device by path or USB id and open it."""
        self.name = "button:serial-modem"
        self.config = config
        device = config.port or f"usb {config.usb_id}"
        self.core = BridgeCore("serial-modem", f"{device} {config.drive}->{config.sense}",
                               on_press=on_press, on_loss=on_loss, wall_clock=wall_clock)
        self._open_port = open_port or self._default_open

    def status(self) -> dict[str, Any]:
        return self.core.status()

    def _default_open(self) -> serial.SerialBase:
        path = resolve_port(self.config)
        return open_serial(path, baudrate=9600, lines={self.config.drive: True})

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch the line until cancelled; reconnect with backoff after any port error."""
        await self.core.serve(self._serve, task_status)

    async def _serve(self) -> None:
        cfg = self.config
        backoff = Backoff(cfg.reconnect_initial_s, cfg.reconnect_max_s)
        while True:
            try:
                port = await trio.to_thread.run_sync(self._open_port)
                try:
                    self.core.connected()
                    await self._watch(port, backoff)
                finally:
                    with contextlib.suppress(Exception):
                        port.close()
            except OSError as exc:  # SerialException, a vanished device, a stalled read
                self.core.lose(f"serial {self.core.device}: {describe(exc)}")
            await trio.sleep(backoff.next())
            self.core.counters["reconnects"] += 1

    def _read_line(self, port: serial.SerialBase) -> bool:
        """Worker thread: the sense line's level (True: asserted)."""
        if not port.is_open:
            raise serial.PortNotOpenError()
        return bool(getattr(port, self.config.sense))

    async def _watch(self, port: serial.SerialBase, backoff: Backoff) -> None:
        cfg = self.config
        # One read at a time: a stalled read holds the token, so later ones time out
        # instead of piling threads onto a dead adapter.
        limiter = trio.CapacityLimiter(1)
        start = True
        while True:
            try:
                with trio.fail_after(cfg.read_timeout_s):
                    asserted = await trio.to_thread.run_sync(
                        self._read_line, port, abandon_on_cancel=True, limiter=limiter)
            except trio.TooSlowError as exc:
                raise ButtonReadTimeout(
                    f"{cfg.sense} read took longer than {cfg.read_timeout_s:g} s") from exc
            self._apply(asserted, start=start)
            if start:
                backoff.reset()
                start = False
            await trio.sleep(cfg.poll_interval_s)

    def _apply(self, asserted: bool, *, start: bool) -> None:
        cfg = self.config
        self.core.extra["line"] = "asserted" if asserted else "deasserted"
        self.core.healthy_read()
        pressed = not asserted if cfg.wiring == "nc" else asserted
        if pressed:
            what = ("deasserted: pressed, or the NC loop is cut" if cfg.wiring == "nc"
                    else "asserted: pressed")
            when = " at start" if start else ""
            self.core.press(f"serial {self.core.device}: {cfg.sense} {what}{when}")
        else:
            self.core.at_rest(cfg.bounce_time_s)
