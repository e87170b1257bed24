"""Simulated kill-switch buttons, one per bridge backend, with test verbs (STYLE rule 8).

- ``GpioButtonSim``: the contact and its wires on gpiozero's ``MockFactory`` pins
  (``sim_pin_factory()``), read by the bridge's real gpiozero input device.
- ``ModemButtonSim``: pyserial's ``loop://`` handler (RTS->CTS, DTR->DSR) with the
  contact in that loop; ``open_port`` is the bridge's opener.
- ``MicrocontrollerSim``: a pty pair (``os.openpty``) playing the microcontroller of the
  line protocol; the bridge opens the slave through a by-id style symlink with pyserial.

Verbs: ``press``, ``release``, ``cut_wire``, ``mend_wire``, plus per backend
``break_pin`` / ``unplug`` / ``stop_heartbeat`` / ``send_noise`` and the like. Usable in
the demo: each sim is built from the same ``[button]`` config as the bridge.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
import tty
from pathlib import Path

import serial
import trio
from gpiozero.pins.mock import MockFactory, MockPin
from serial.urlhandler import protocol_loop

from hardware.config import GpioButtonConfig, SerialModemButtonConfig
from hardware.protocol import SEQ_MOD, Heartbeat, Hello, Lamp, McuState, Press, decode, encode


class ButtonCalls:
    """Records a bridge's ``on_press`` / ``on_loss`` calls with their trio time."""

    def __init__(self) -> None:
        self.presses: list[tuple[float, str]] = []
        self.losses: list[tuple[float, str]] = []
        self.changed = trio.Event()

    async def on_press(self, cause: str) -> None:
        self.presses.append((trio.current_time(), cause))
        self.changed.set()

    async def on_loss(self, cause: str) -> None:
        self.losses.append((trio.current_time(), cause))
        self.changed.set()

    async def wait_for(self, presses: int = 0, losses: int = 0) -> None:
        """Until at least that many calls were recorded (bound it with ``fail_after``)."""
        while len(self.presses) < presses or len(self.losses) < losses:
            self.changed = trio.Event()
            await self.changed.wait()


class _Contact:
    """A contact and its wire: ``press``, ``release``, ``cut_wire``, ``mend_wire``."""

    wiring = "nc"
    pressed = False
    wire_cut = False

    def _closed(self) -> bool:
        """Whether current flows through the contact and its wire."""
        closed = (not self.pressed) if self.wiring == "nc" else self.pressed
        return closed and not self.wire_cut

    def _apply(self) -> None:
        raise NotImplementedError

    def press(self) -> None:
        self.pressed = True
        self._apply()

    def release(self) -> None:
        self.pressed = False
        self._apply()

    def cut_wire(self) -> None:
        self.wire_cut = True
        self._apply()

    def mend_wire(self) -> None:
        self.wire_cut = False
        self._apply()


# --- GPIO ------------------------------------------------------------------------------


class SimPin(MockPin):  # type: ignore[misc]  # gpiozero is untyped
    """A MockPin driven by external wiring (``external``) that can fail like a real pin."""

    external: bool | None = None  # the level the wiring forces; None: only the pull
    failure: Exception | None = None

    def _set_pull(self, value: str) -> None:
        super()._set_pull(value)
        if self.external is not None:  # the wiring wins over the pull, as on a board
            self.drive(self.external)

    def _get_state(self) -> bool:
        if self.failure is not None:
            raise self.failure
        return bool(super()._get_state())

    def drive(self, level: bool, *, fire: bool = True) -> None:
        """Set the level; ``fire=False`` changes it without an edge (a missed interrupt)."""
        self.external = level
        if fire:
            self.drive_high() if level else self.drive_low()
        else:
            self._change_state(level)


def sim_pin_factory() -> MockFactory:
    """A MockFactory of ``SimPin``s; pass it to the bridge, ``close()`` it after."""
    return MockFactory(pin_class=SimPin)


class GpioButtonSim(_Contact):
    """The contact(s) and wires of a GPIO button as ``config`` describes them."""

    def __init__(self, factory: MockFactory, config: GpioButtonConfig) -> None:
        self.config = config
        self.wiring = config.wiring
        pins = [config.pin] if config.second_pin is None else [config.pin, config.second_pin]
        self.pins: list[SimPin] = [factory.pin(p) for p in pins]
        if config.pull == "floating":
            assert config.active_state is not None
            self.closed_level = config.active_state
        else:
            self.closed_level = config.pull == "down"  # a contact to GND under a pull-up
        self.cut = [False] * len(pins)
        self.welded = [False] * len(pins)  # contacts that stay closed when pressed
        self._apply()

    def _level(self, channel: int) -> bool:
        closed = (not self.pressed) if self.wiring == "nc" else self.pressed
        closed = (closed or self.welded[channel]) and not self.cut[channel]
        return self.closed_level if closed else not self.closed_level

    def _apply(self, *, fire: bool = True) -> None:
        for channel, pin in enumerate(self.pins):
            if pin.external != self._level(channel):
                pin.drive(self._level(channel), fire=fire)

    def press(self, *, fire_edge: bool = True) -> None:
        """Push the button; ``fire_edge=False``: the level changes but no edge fires."""
        self.pressed = True
        self._apply(fire=fire_edge)

    def bounce(self, times: int = 3) -> None:
        """Contact chatter: the level flips ``times`` times and ends where it was."""
        for _ in range(times):
            for channel, pin in enumerate(self.pins):
                pin.drive(not self._level(channel))
            self._apply()

    def cut_wire(self, channel: int | None = None) -> None:
        for c in range(len(self.pins)) if channel is None else [channel]:
            self.cut[c] = True
        self._apply()

    def mend_wire(self) -> None:
        self.cut = [False] * len(self.pins)
        self._apply()

    def weld(self, channel: int) -> None:
        """That channel's contact no longer opens (a welded NC contact)."""
        self.welded[channel] = True
        self._apply()

    def glitch(self) -> None:
        """Noise on the line: one short pulse away from the rest level and back."""
        self.bounce(times=1)

    def break_pin(self, error: Exception | None = None) -> None:
        """Every read of the pin(s) fails from now on (a GPIO chip error)."""
        for pin in self.pins:
            pin.failure = error or OSError(5, "Input/output error (simulated)")

    def repair_pin(self) -> None:
        for pin in self.pins:
            pin.failure = None


# --- serial, modem lines -----------------------------------------------------------------


class SimLoopPort(protocol_loop.Serial):  # type: ignore[misc]  # pyserial is untyped
    """pyserial's ``loop://`` port (RTS->CTS, DTR->DSR), plus unplug and stall verbs."""

    unplugged = False
    stall_s = 0.0

    def _status_line(self, line: str) -> bool:
        if self.stall_s:
            time.sleep(self.stall_s)  # a stuck USB control transfer (worker thread)
        if self.unplugged:
            raise serial.SerialException("device disconnected (simulated unplug)")
        return bool(getattr(super(), line))

    cts = property(lambda self: self._status_line("cts"))
    dsr = property(lambda self: self._status_line("dsr"))
    cd = property(lambda self: self._status_line("cd"))
    ri = property(lambda self: self._status_line("ri"))


class ModemButtonSim(_Contact):
    """A button wired across ``drive`` -> ``sense`` of a simulated USB-serial adapter."""

    def __init__(self, config: SerialModemButtonConfig) -> None:
        if (config.drive, config.sense) not in (("rts", "cts"), ("dtr", "dsr")):
            raise ValueError("loop:// wires only rts->cts and dtr->dsr")
        self.config = config
        self.wiring = config.wiring
        self.plugged = True
        self.stall_s = 0.0
        self.port: SimLoopPort | None = None
        self.opens = 0

    def open_port(self) -> serial.SerialBase:
        """The bridge's ``open_port``: a fresh loop:// port with the contact in its loop."""
        if not self.plugged:
            raise serial.SerialException("could not open port: no such device (unplugged)")
        port = SimLoopPort(timeout=0)  # no port yet: not opened
        port.port = "loop://"
        setattr(port, self.config.drive, self._closed())
        port.stall_s = self.stall_s
        port.open()
        self.port = port
        self.opens += 1
        return port

    def _apply(self) -> None:
        if self.port is not None:
            setattr(self.port, self.config.drive, self._closed())
            self.port.stall_s = self.stall_s

    def stall(self, seconds: float) -> None:
        """Every modem-line read takes ``seconds`` from now on (0: back to normal)."""
        self.stall_s = seconds
        self._apply()

    def unplug(self) -> None:
        self.plugged = False
        if self.port is not None:
            self.port.unplugged = True

    def replug(self) -> None:
        self.plugged = True


# --- serial, line protocol ---------------------------------------------------------------


class MicrocontrollerSim:
    """The microcontroller of the line protocol, on the master side of a pty pair.

    ``path`` is a stable by-id style symlink to the current slave; ``replug`` makes a new
    pty (a new /dev/pts/N) and moves the symlink, like udev does on re-enumeration.
    Run it with ``await nursery.start(sim.run)``.
    """

    def __init__(self, directory: Path, *, period_s: float = 0.02, boot_delay_s: float = 0.0,
                 name: str = "usb-Raspberry_Pi_Pico_E660SIM-if00") -> None:
        self.path = Path(directory) / name
        self.period_s = period_s
        self.boot_delay_s = boot_delay_s
        self.heartbeating = True
        self.drop_press_lines = 0
        self.lamp: str | None = None
        self.last_press_ns = 0  # perf_counter_ns just before the PRESS line is written
        self.last_write_ns = 0  # ... and just before the last line of any kind
        self._master: int | None = None
        self._slave: int | None = None
        self._plugged = trio.Event()
        self._boot()
        self._plug()

    def _boot(self) -> None:
        self.seq = 0
        self.presses = 0
        self.state: McuState = "OK"
        self.boot = random.randrange(SEQ_MOD)
        self.booted_at: float | None = None  # set by run(): trio time when boot finishes
        self._hello_due = True

    def _plug(self) -> None:
        master, slave = os.openpty()
        if self.path.is_symlink() and os.ttyname(slave) == os.readlink(self.path):
            # The kernel reused the old number: take the next one, as a USB device
            # re-enumerated while its old node is still held comes back as ttyACM1.
            spare = (master, slave)
            master, slave = os.openpty()
            for fd in spare:
                os.close(fd)
        tty.setraw(slave)  # what the bridge's pyserial will set; no echo meanwhile
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        tmp = self.path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.path)
        self._plugged.set()

    # --- verbs ---------------------------------------------------------------------------

    def press(self) -> None:
        """The firmware's view of a press: latched, counted, PRESS line sent at once."""
        self.presses = (self.presses + 1) % SEQ_MOD
        self.state = "PRESSED"
        if self.drop_press_lines:
            self.drop_press_lines -= 1
            self.seq = (self.seq + 1) % SEQ_MOD  # sent, then lost on the wire
        else:
            self.last_press_ns = time.perf_counter_ns()
            self._send(Press(seq=self._next_seq(), presses=self.presses))

    def release(self) -> None:
        """Released and debounced: an OK heartbeat goes at once, as the firmware does."""
        self.state = "OK"
        self.send_heartbeat()

    def fault(self) -> None:
        self.state = "FAULT"

    def stop_heartbeat(self) -> None:
        self.heartbeating = False

    def start_heartbeat(self) -> None:
        self.heartbeating = True

    def lose_next_press_line(self) -> None:
        self.drop_press_lines += 1

    def skip_sequence(self, count: int = 1) -> None:
        self.seq = (self.seq + count) % SEQ_MOD

    def send_noise(self, data: bytes = b"DKS1,PRESS,\x07\xff*12\n") -> None:
        self._write(data)

    def send_heartbeat(self) -> None:
        self._send(Heartbeat(seq=self._next_seq(), state=self.state, presses=self.presses,
                             boot=self.boot))

    def restart(self) -> None:
        """The microcontroller reboots (a reset, a brown-out): counters start again."""
        self._boot()

    def unplug(self) -> None:
        """The USB cable is pulled: both pty ends close, the symlink dangles."""
        self._plugged = trio.Event()
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    trio.lowlevel.notify_closing(fd)
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    def replug(self) -> None:
        """Plugged back: a new pty under the same by-id path; the device boots."""
        if self._master is None:
            self._boot()
            self._plug()

    # --- the wire ------------------------------------------------------------------------

    def _next_seq(self) -> int:
        seq, self.seq = self.seq, (self.seq + 1) % SEQ_MOD
        return seq

    def _send(self, message: Hello | Heartbeat | Press) -> None:
        self._write(encode(message))

    def _write(self, data: bytes) -> None:
        if self._master is None:
            return
        self.last_write_ns = time.perf_counter_ns()
        # BlockingIOError: nobody reads the slave, the bytes are lost as on a UART.
        with contextlib.suppress(OSError):
            os.write(self._master, data)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Heartbeats every period (after the boot delay) and LAMP lines read back."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_host)
            task_status.started()
            while True:
                if self.booted_at is None:
                    self.booted_at = trio.current_time() + self.boot_delay_s
                if trio.current_time() >= self.booted_at and self._master is not None:
                    if self._hello_due:
                        self._hello_due = False
                        self._send(Hello(seq=self._next_seq(),
                                         period_ms=round(self.period_s * 1000),
                                         boot=self.boot, firmware="dks-sim-1.0"))
                    if self.heartbeating:
                        self.send_heartbeat()
                await trio.sleep(self.period_s)

    async def _read_host(self) -> None:
        buffer = b""
        while True:
            await self._plugged.wait()
            fd = self._master
            try:
                if fd is None:
                    raise OSError("unplugged")
                await trio.lowlevel.wait_readable(fd)
                data = os.read(fd, 1024)
            except (OSError, trio.ClosedResourceError):
                await trio.sleep(self.period_s)  # unplugged, or no slave open (EIO)
                continue
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                with contextlib.suppress(ValueError):
                    message = decode(line)
                    if isinstance(message, Lamp):
                        self.lamp = message.mode

    def close(self) -> None:
        self.unplug()
        self.path.unlink(missing_ok=True)
