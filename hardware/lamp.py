"""The optional status lamp: the desk's mode on gpiozero LEDs (docs/hardware.md "Status lamp").

Green NORMAL, amber THROTTLED or RECOVERING, red HALTED, red blinking while a kill is not
yet verified; all off when the status cannot be read. Three single LEDs, or one RGB LED
(amber is red + green). The integrator calls ``show(status)`` with the desk's status
dict (``Desk.status()``) whenever it changes; for a serial-line box the same mode goes
to ``SerialLineBridge.set_lamp(lamp_mode(status))``.

The lamp is an indicator, never part of the trip path: an LED error is logged and kept
in ``error``, it does not raise into the caller.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import trio
from gpiozero import LED, RGBLED, Factory

from .config import LampConfig
from .gpio import load_pin_factory
from .protocol import LampMode

if TYPE_CHECKING:
    from .serial_line import SerialLineBridge

log = logging.getLogger("desk.lamp")

_RGB = {"OFF": (0, 0, 0), "NORMAL": (0, 1, 0), "THROTTLED": (1, 1, 0),
        "RECOVERING": (1, 1, 0), "HALTED": (1, 0, 0), "UNVERIFIED": (1, 0, 0)}
_SINGLE = {"NORMAL": "green", "THROTTLED": "amber", "RECOVERING": "amber",
           "HALTED": "red", "UNVERIFIED": "red"}


def lamp_mode(status: Mapping[str, Any] | None) -> LampMode:
    """The lamp's mode for a desk status: HALTED becomes UNVERIFIED until the kill is
    verified (playbook 01 killswitch Verify); anything unreadable is OFF."""
    if not status:
        return "OFF"
    mode = status.get("mode")
    if mode == "HALTED":
        kill = status.get("kill") or {}
        return "HALTED" if kill.get("verified") else "UNVERIFIED"
    for known in ("NORMAL", "THROTTLED", "RECOVERING"):
        if mode == known:
            return known
    return "OFF"


class StatusLamp:
    """The LEDs of ``config``; a context manager that closes them."""

    def __init__(self, config: LampConfig, *, pin_factory: Factory | None = None) -> None:
        """Claim the pins (``pin_factory`` is the caller's; ``None``: load and own one).

        Raises:
            gpiozero.GPIOZeroError: a pin is invalid or in use (nothing is left claimed).
        """
        self.config = config
        self.mode: LampMode | None = None
        self.error: str | None = None
        self._owned = None if pin_factory is not None or not config.enabled else (
            load_pin_factory(config.pin_factory))
        factory = pin_factory or self._owned
        self.leds: dict[str, LED] = {}
        self.rgb: RGBLED | None = None
        try:
            if config.rgb:
                red, green, blue = config.rgb
                self.rgb = RGBLED(red, green, blue, active_high=config.active_high,
                                  pwm=False, pin_factory=factory)
            for colour in ("green", "amber", "red"):
                pin = getattr(config, colour)
                if pin is not None:
                    self.leds[colour] = LED(pin, active_high=config.active_high,
                                            pin_factory=factory)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> StatusLamp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def show(self, status: Mapping[str, Any] | None) -> LampMode:
        """Light the lamp for ``status``; returns the mode shown. Never raises."""
        mode = lamp_mode(status)
        if mode == self.mode:
            return mode
        try:
            self._light(mode)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("status lamp: cannot show %s: %s", mode, self.error)
        else:
            self.mode = mode
            self.error = None
        return mode

    def _light(self, mode: LampMode) -> None:
        blink = self.config.blink_s
        if self.rgb is not None:
            colour = _RGB[mode]
            if mode == "UNVERIFIED":
                self.rgb.blink(on_time=blink, off_time=blink, on_color=colour,
                               background=True)
            else:
                self.rgb.color = colour
        wanted = _SINGLE.get(mode)
        for name, led in self.leds.items():
            if name != wanted:
                led.off()
            elif mode == "UNVERIFIED":
                led.blink(on_time=blink, off_time=blink, background=True)
            else:
                led.on()

    def close(self) -> None:
        """Turn off and release every LED; safe to call twice."""
        devices: list[Any] = [*self.leds.values(), *([self.rgb] if self.rgb else [])]
        self.leds, self.rgb = {}, None
        for device in devices:
            try:
                device.close()
            except Exception as exc:
                log.warning("status lamp: closing %r failed: %s", device, exc)
        if self._owned is not None:
            owned, self._owned = self._owned, None
            owned.close()


async def serve_lamps(
    config: LampConfig,
    status: Callable[[], Mapping[str, Any]],
    *,
    box: SerialLineBridge | None = None,
    pin_factory: Factory | None = None,
    shown: Callable[[StatusLamp | None], None] = lambda lamp: None,
    every_s: float = 0.25,
) -> None:
    """Show ``status()`` (what ``lamp_mode`` reads) every ``every_s`` until cancelled, on
    a GPIO lamp (``config``, when it has pins) and on a serial-line box's LEDs (its LAMP
    lines, ``box``), with or without the other: a USB box on a host with no GPIO.
    ``shown`` is told the GPIO lamp in use (None once it is closed). A GPIO lamp that
    cannot be opened is logged and left out: a lamp is never a reason to stop the desk.
    Returns at once when there is nothing to show on."""
    lamp: StatusLamp | None = None
    if config.enabled:
        try:
            lamp = StatusLamp(config, pin_factory=pin_factory)
        except Exception as exc:
            log.error("status lamp unavailable: %s", exc)
    if lamp is None and box is None:
        return
    with contextlib.ExitStack() as stack:
        if lamp is not None:
            stack.enter_context(lamp)
            shown(lamp)
        try:
            while True:
                now = status()
                if lamp is not None:
                    lamp.show(now)
                if box is not None:
                    box.set_lamp(lamp_mode(now))
                await trio.sleep(every_s)
        finally:
            shown(None)
