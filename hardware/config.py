"""The ``[button]`` section: which kill-switch bridge, and how it is wired (docs/hardware.md).

A tagged union on ``backend``; the integrator mounts it on the main ``Config`` as::

    button: ButtonConfig | None = None     # no [button] section: no physical button

Every number cites the playbook or says it is ours; unknown keys are errors, and a bad value
names its key (the same rules as ``supervisor/config.py``).
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from supervisor.core.tomlconf import decode_toml

PinName = int | str  # BCM number (17) or any gpiozero pin name ("GPIO17", "BOARD11")

_USB_ID = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{4}$")


def _positive(section: object, *keys: str) -> None:
    for key in keys:
        if getattr(section, key) <= 0:
            raise ValueError(f"{key} must be > 0")


class LampConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The optional status lamp (docs/hardware.md "Status lamp": off unless pins are given)."""

    # Three single LEDs (green NORMAL, amber THROTTLED/RECOVERING, red HALTED) ...
    green: PinName | None = None
    amber: PinName | None = None
    red: PinName | None = None
    # ... or one RGB LED given as [red, green, blue] pins; not both.
    rgb: list[PinName] = []
    active_high: bool = True
    # Red blinks at this half-period while a kill is not yet verified (docs/hardware.md).
    blink_s: float = 0.25
    pin_factory: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.rgb) or any(p is not None for p in (self.green, self.amber, self.red))

    def __post_init__(self) -> None:
        if self.rgb and len(self.rgb) != 3:
            raise ValueError("lamp.rgb must list three pins: [red, green, blue]")
        if self.rgb and any(p is not None for p in (self.green, self.amber, self.red)):
            raise ValueError("lamp: give either rgb or green/amber/red, not both")
        _positive(self, "blink_s")


class _Button(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
              tag_field="backend"):
    """What every backend shares: the loss response, reconnection and the lamp."""

    # docs/hardware.md fail-safe rules: losing the bridge is a configured response, default kill;
    # "page" is a PAGE alert and a P1; "ignore" is refused unless set explicitly.
    on_loss: Literal["kill", "page", "ignore"] = "kill"
    allow_ignore: bool = False
    # docs/hardware.md: "Reconnection is automatic with backoff" (doubling, capped).
    reconnect_initial_s: float = 0.1
    reconnect_max_s: float = 5.0
    lamp: LampConfig = LampConfig()

    @property
    def backend(self) -> str:
        """The tag: "gpio", "serial-modem" or "serial-line"."""
        return str(type(self).__struct_config__.tag)

    def __post_init__(self) -> None:
        if self.on_loss == "ignore" and not self.allow_ignore:
            raise ValueError(
                "on_loss 'ignore' needs allow_ignore = true: a lost kill-switch button "
                "would go unnoticed")
        _positive(self, "reconnect_initial_s", "reconnect_max_s")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")


class GpioButtonConfig(_Button, frozen=True, kw_only=True, tag="gpio"):
    """A button on a GPIO pin through gpiozero (docs/hardware.md backend 1)."""

    pin: PinName
    # docs/hardware.md: "Optionally two NC channels on two pins with a disagreement check."
    second_pin: PinName | None = None
    # "up": the contact switches the pin to GND (the Pi's internal pull-up); "down": to
    # 3V3; "floating": an external resistor, and active_state must say the level.
    pull: Literal["up", "down", "floating"] = "up"
    # The level the pin reads while the contact is closed; only with pull = "floating"
    # (with a pull it follows from the pull, as in gpiozero).
    active_state: bool | None = None
    # docs/hardware.md: "NC is the recommended default: a cut wire reads as a press".
    wiring: Literal["nc", "no"] = "nc"
    # Re-arm only after the contact has been back at rest this long. Never delays the
    # trip: docs/hardware.md "Act on the first edge (trip first, debounce after)".
    bounce_time_s: float = 0.05
    # docs/hardware.md: "poll it every ~20 ms as a backstop for a missed edge".
    poll_interval_s: float = 0.02
    # Two channels disagreeing this long is a broken contact or wire (a press opens both
    # contacts within a few ms of each other).
    discrepancy_s: float = 0.1
    # gpiozero pin factory by name ("lgpio" on a Pi 5, "rpigpio", "native", "mock");
    # unset: $GPIOZERO_PIN_FACTORY, else "lgpio" (docs/hardware.md).
    pin_factory: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "poll_interval_s", "discrepancy_s")
        if self.bounce_time_s < 0:
            raise ValueError("bounce_time_s must be >= 0")
        if self.pull == "floating" and self.active_state is None:
            raise ValueError("pull 'floating' needs active_state (the level while closed)")
        if self.pull != "floating" and self.active_state is not None:
            raise ValueError("active_state is only for pull 'floating'; a pull sets it")
        if self.second_pin is not None and self.wiring != "nc":
            raise ValueError("second_pin needs wiring 'nc' (two normally-closed channels)")
        if self.second_pin is not None and str(self.second_pin) == str(self.pin):
            raise ValueError("second_pin must differ from pin")


class _SerialButton(_Button, frozen=True, kw_only=True):
    """Where the serial device is: a path, or a stable USB id (docs/hardware.md)."""

    # A path; prefer /dev/serial/by-id/..., which survives re-enumeration.
    port: str = ""
    # Or "VID:PID" in hex (e.g. "2e8a:0005", a Pico running MicroPython), with an optional
    # USB serial number when several such devices are plugged in.
    usb_id: str = ""
    usb_serial: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if bool(self.port) == bool(self.usb_id):
            raise ValueError("give exactly one of port or usb_id")
        if self.usb_id and not _USB_ID.match(self.usb_id):
            raise ValueError(f"usb_id must be 'VID:PID' in hex, like '2e8a:0005', "
                             f"got {self.usb_id!r}")
        if self.usb_serial and not self.usb_id:
            raise ValueError("usb_serial needs usb_id")


class SerialModemButtonConfig(_SerialButton, frozen=True, kw_only=True, tag="serial-modem"):
    """A plain button across two handshake lines of a USB-serial adapter (backend 2)."""

    # The output the bridge asserts and the input it reads through the contact
    # (docs/hardware.md: "e.g. RTS to CTS, or DTR to DSR").
    drive: Literal["rts", "dtr"] = "rts"
    sense: Literal["cts", "dsr", "cd", "ri"] = "cts"
    wiring: Literal["nc", "no"] = "nc"  # docs/hardware.md: "NC or NO as configured"
    poll_interval_s: float = 0.02  # docs/hardware.md: "poll it every ~20 ms"
    bounce_time_s: float = 0.05
    # A modem-line read slower than this is a lost bridge (docs/hardware.md: "Modem-line reads
    # can block (USB control transfers)").
    read_timeout_s: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "poll_interval_s", "read_timeout_s")
        if self.bounce_time_s < 0:
            raise ValueError("bounce_time_s must be >= 0")


class SerialLineButtonConfig(_SerialButton, frozen=True, kw_only=True, tag="serial-line"):
    """A microcontroller speaking the line protocol of docs/hardware.md (backend 3)."""

    baudrate: int = 115200  # ignored by USB CDC (a Pico); used by a UART adapter
    # docs/hardware.md: "a heartbeat ... every N ms"; the firmware's period must match.
    heartbeat_period_s: float = 0.1
    # docs/hardware.md: "A missing heartbeat (3x its period) ... trip".
    missing_factor: float = 3.0
    # docs/hardware.md: "Opening the port may reset the microcontroller (DTR): allow a start-up
    # grace before the first heartbeat is due" (an Arduino bootloader takes 1-2 s).
    startup_grace_s: float = 3.0
    # TinyUSB's CDC (a Pico) sends nothing until the host asserts DTR (tinyusb #1548).
    dtr_on_open: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "baudrate", "heartbeat_period_s", "startup_grace_s")
        if self.missing_factor < 2:
            raise ValueError("missing_factor must be >= 2: one late heartbeat is jitter")


ButtonConfig = GpioButtonConfig | SerialModemButtonConfig | SerialLineButtonConfig


class _Document(msgspec.Struct, kw_only=True):
    button: ButtonConfig | None = None


def parse_button_config(text: str | bytes, *, source: str = "<config>") -> ButtonConfig | None:
    """Decode the ``[button]`` table of a TOML document (other tables are ignored).

    Raises:
        ConfigError: naming the source, the key and what was expected.
    """
    return decode_toml(text, _Document, source=source).button
