"""Finding and opening the serial device of a bridge (docs/hardware.md: "a serial device that
reappears under a new path is found by a stable id").

Both functions block (sysfs scan, ``open``, termios, modem-line ioctls on a USB
adapter): bridges call them through ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import serial
from serial.tools import list_ports

from .config import SerialLineButtonConfig, SerialModemButtonConfig
from .errors import ButtonPortNotFound

SerialConfig = SerialModemButtonConfig | SerialLineButtonConfig


def resolve_port(
    config: SerialConfig,
    *,
    comports: Callable[[], Iterable[Any]] = list_ports.comports,
) -> str:
    """The device path: ``port`` as configured (a by-id symlink is resolved by ``open``
    on each connection), or the one device matching ``usb_id`` (and ``usb_serial``).

    Raises:
        ButtonPortNotFound: no device, or several, match the USB id.
    """
    if config.port:
        return config.port
    vid, pid = (int(part, 16) for part in config.usb_id.split(":"))
    found = [p for p in comports()
             if p.vid == vid and p.pid == pid
             and (not config.usb_serial or p.serial_number == config.usb_serial)]
    wanted = config.usb_id + (f" serial {config.usb_serial}" if config.usb_serial else "")
    if not found:
        raise ButtonPortNotFound(f"no serial device with usb id {wanted} is plugged in")
    if len(found) > 1:
        serials = ", ".join(sorted(str(p.serial_number) for p in found))
        raise ButtonPortNotFound(
            f"{len(found)} serial devices have usb id {wanted}: set usb_serial to one of "
            f"{serials}")
    return str(found[0].device)


def open_serial(path: str, *, baudrate: int, lines: dict[str, bool]) -> serial.SerialBase:
    """Open ``path`` (a device or a pyserial URL) exclusively and non-blocking, with the
    output modem lines in ``lines`` (e.g. ``{"rts": True}``) set as the port opens.

    Raises:
        serial.SerialException: the port cannot be opened (an ``OSError``).
    """
    port = serial.serial_for_url(path, baudrate=baudrate, timeout=0, write_timeout=1.0,
                                 exclusive=True, do_not_open=True)
    for line, level in lines.items():
        setattr(port, line, level)
    port.open()
    return port
