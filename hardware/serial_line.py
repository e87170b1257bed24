"""The line-protocol kill-switch bridge: a microcontroller on a serial port.

The microcontroller sends a ``HB`` (sequence, state, press counter) every period and a
``PRESS`` at once on an edge (``hardware/protocol.py``; spec in docs/hardware.md). The
bridge reads the port without a thread: it waits for the descriptor with
``trio.lowlevel.wait_readable`` and reads what is there with pyserial (non-blocking).

Trips (docs/hardware.md; the full table is in docs/hardware.md "Line protocol DKS1"):

- ``on_press``: a ``PRESS`` line; a heartbeat saying ``PRESSED`` (also the first one: a
  button held at start); a press counter that changed without a ``PRESS`` line (a lost
  press line; checked before the sequence, and across reconnections while the boot id
  is the same).
- ``on_loss``, then the port is reopened with backoff: no message for ``missing_factor``
  periods, or within the start-up grace; a sequence gap; a garbled line; ``FAULT``; a
  reboot seen mid-connection (``HELLO`` after heartbeats, or a new boot id); an I/O
  error or a device that is gone.

The latch re-arms on an ``OK`` heartbeat (the firmware debounced the release).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import serial
import trio

from .config import SerialLineButtonConfig
from .core import Backoff, BridgeCore, Callback, describe
from .errors import ButtonLinkLost, ButtonProtocolError
from .ports import open_serial, resolve_port
from .protocol import MAX_LINE, SEQ_MOD, Heartbeat, Hello, Lamp, LampMode, Press, decode, encode

log = logging.getLogger("desk.button.line")

PortOpener = Callable[[], serial.SerialBase]
LAMP_REFRESH_S = 1.0  # the lamp mode is re-sent this often (a rebooted box learns it)


class SerialLineBridge:
    """A kill-switch button behind a microcontroller speaking the line protocol."""

    critical = True

    def __init__(
        self,
        config: SerialLineButtonConfig,
        *,
        on_press: Callback,
        on_loss: Callback,
        open_port: PortOpener | None = None,
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        """``open_port``: returns an open, non-blocking port (blocking call, run in a
        thread); default: find the device by path or USB id, open it with DTR as set."""
        self.name = "button:serial-line"
        self.config = config
        self.core = BridgeCore("serial-line", config.port or f"usb {config.usb_id}",
                               on_press=on_press, on_loss=on_loss, wall_clock=wall_clock)
        self._open_port = open_port or self._default_open
        self._presses: int | None = None  # the microcontroller's counter, as last known
        self._boot: int | None = None  # ... and the boot it belongs to
        self._seq: int | None = None  # the next sequence number expected (per connection)
        self._heartbeats = 0  # heartbeats seen on this connection
        self._lamp: LampMode | None = None
        self._lamp_changed = trio.Event()
        self.core.extra.update(firmware=None, boot=None, seq=None, mcu_presses=None,
                               lamp=None)

    def status(self) -> dict[str, Any]:
        return self.core.status()

    def set_lamp(self, mode: LampMode) -> None:
        """Show ``mode`` on the box's LED (sent now and every second). Never blocks."""
        if mode != self._lamp:
            self._lamp = mode
            self.core.extra["lamp"] = mode
            self._lamp_changed.set()

    def _default_open(self) -> serial.SerialBase:
        path = resolve_port(self.config)
        return open_serial(path, baudrate=self.config.baudrate,
                           lines={"dtr": self.config.dtr_on_open})

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch the link until cancelled; reopen with backoff after every loss."""
        await self.core.serve(self._serve, task_status)

    async def _serve(self) -> None:
        cfg = self.config
        backoff = Backoff(cfg.reconnect_initial_s, cfg.reconnect_max_s)
        while True:
            try:
                port = await trio.to_thread.run_sync(self._open_port)
                try:
                    self.core.connected()
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._send_lamp, port)
                        await self._session(port, backoff)
                finally:
                    self._close(port)
            except* OSError as group:  # ButtonLinkLost, SerialException, EIO, ENOENT
                self.core.lose(f"serial {self.core.device}: "
                               f"{describe(group.exceptions[0])}")
            await trio.sleep(backoff.next())
            self.core.counters["reconnects"] += 1

    def _close(self, port: serial.SerialBase) -> None:
        with contextlib.suppress(Exception):
            trio.lowlevel.notify_closing(port.fileno())
        with contextlib.suppress(Exception):
            port.close()

    async def _send_lamp(self, port: serial.SerialBase) -> None:
        while True:
            with trio.move_on_after(LAMP_REFRESH_S):
                await self._lamp_changed.wait()
            self._lamp_changed = trio.Event()
            if self._lamp is not None:
                line = encode(Lamp(mode=self._lamp))
                await trio.to_thread.run_sync(port.write, line, abandon_on_cancel=True)

    async def _session(self, port: serial.SerialBase, backoff: Backoff) -> None:
        cfg = self.config
        missing_s = cfg.missing_factor * cfg.heartbeat_period_s
        fd = port.fileno()
        deadline = trio.current_time() + cfg.startup_grace_s
        buffer = bytearray()
        self._seq = None
        self._heartbeats = 0
        while True:
            with trio.move_on_at(deadline):
                await trio.lowlevel.wait_readable(fd)
            if trio.current_time() >= deadline:
                if self._heartbeats == 0:
                    raise ButtonLinkLost(f"no heartbeat within the start-up grace of "
                                         f"{cfg.startup_grace_s:g} s")
                raise ButtonLinkLost(
                    f"no heartbeat for {missing_s * 1000:.0f} ms ({cfg.missing_factor:g} x "
                    f"{cfg.heartbeat_period_s * 1000:.0f} ms)")
            data = port.read(max(port.in_waiting, 1))
            if not data:
                continue
            buffer += data
            while (end := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                self._handle(line)
                deadline = trio.current_time() + missing_s
                if self._heartbeats == 1:
                    backoff.reset()
            if len(buffer) > MAX_LINE:
                raise ButtonLinkLost(f"garbled line: {len(buffer)} bytes without a newline")

    def _handle(self, line: bytes) -> None:
        """Apply one line; raises ``ButtonLinkLost`` for every loss of the table above."""
        try:
            message = decode(line)
        except ButtonProtocolError as exc:
            raise ButtonLinkLost(f"garbled line {line[:40]!r}: {exc}") from None
        if isinstance(message, Lamp):
            raise ButtonLinkLost("garbled line: a LAMP message came from the device")
        core = self.core
        gap = self._seq is not None and message.seq != self._seq
        expected, self._seq = self._seq, (message.seq + 1) % SEQ_MOD
        core.extra["seq"] = message.seq
        if isinstance(message, Heartbeat) and message.boot == self._boot:
            # Before the gap is reported: the line lost in the gap may have been a PRESS.
            self._count(message.presses)
        if gap:
            raise ButtonLinkLost(f"sequence gap: expected {expected}, got {message.seq}")
        match message:
            case Hello():
                if self._heartbeats:
                    raise ButtonLinkLost("the microcontroller restarted (HELLO after "
                                         "heartbeats): a press may have been lost")
                self._boot, self._presses = message.boot, 0
                core.extra.update(boot=message.boot, mcu_presses=0,
                                  firmware=f"{message.firmware} period {message.period_ms} ms")
            case Press(presses=n):
                self._presses = n
                core.extra["mcu_presses"] = n
                core.press(f"serial {core.device}: PRESS line (press #{n})")
            case Heartbeat(state=state, presses=n, boot=boot):
                self._heartbeats += 1
                if boot != self._boot:
                    if self._heartbeats > 1:
                        raise ButtonLinkLost(f"the microcontroller restarted (boot id "
                                             f"{self._boot} -> {boot})")
                    if self._boot is not None:
                        log.warning("serial %s: the microcontroller restarted while "
                                    "disconnected (boot id %s -> %s)", core.device,
                                    self._boot, boot)
                    self._boot, self._presses = boot, n
                    core.extra.update(boot=boot, mcu_presses=n)
                if state == "FAULT":
                    raise ButtonLinkLost("the microcontroller reports FAULT")
                core.healthy_read()
                if state == "PRESSED":
                    when = " at start" if self._heartbeats == 1 else ""
                    core.press(f"serial {core.device}: heartbeat says PRESSED{when}")
                else:
                    core.released()  # the firmware debounced the release

    def _count(self, presses: int) -> None:
        """A heartbeat's press counter: a change no PRESS line announced is a press."""
        if self._presses is not None and presses != self._presses:
            self.core.press(f"serial {self.core.device}: press counter went {self._presses} "
                            f"-> {presses} without a PRESS line (a press line was lost)")
        self._presses = presses
        self.core.extra["mcu_presses"] = presses
