"""The hardware family under the one exception root (``supervisor.core.errors.DeskError``).

Each family also inherits the builtin a caller would catch, so ``except OSError`` around
a serial port catches a lost link too. Messages are lowercase and name the device.
"""

from __future__ import annotations

from supervisor.core.errors import DeskError


class HardwareError(DeskError):
    """A kill-switch bridge or the status lamp failed."""


class ButtonProtocolError(HardwareError, ValueError):
    """A line from the microcontroller is not a valid message of the line protocol."""


class ButtonPortNotFound(HardwareError, FileNotFoundError):
    """No serial device matches the configured path or USB id."""


class ButtonLinkLost(HardwareError, ConnectionError):
    """The bridge cannot vouch for the button: heartbeat, sequence, fault or garbled line."""


class ButtonReadTimeout(HardwareError, TimeoutError):
    """A modem-line read did not return within its deadline (a stalled USB transfer)."""
