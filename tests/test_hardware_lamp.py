"""The status lamp on MockFactory LEDs (docs/hardware.md "Status lamp")."""

from __future__ import annotations

import time

import pytest
from gpiozero.pins.mock import MockFactory

from hardware.config import LampConfig
from hardware.lamp import StatusLamp, lamp_mode


def desk(mode: str, verified: bool = False) -> dict[str, object]:
    return {"mode": mode, "kill": {"latched": mode == "HALTED", "verified": verified}}


@pytest.mark.parametrize(("status", "mode"), [
    (desk("NORMAL"), "NORMAL"), (desk("THROTTLED"), "THROTTLED"),
    (desk("RECOVERING"), "RECOVERING"), (desk("HALTED", verified=True), "HALTED"),
    (desk("HALTED"), "UNVERIFIED"), (None, "OFF"), ({"mode": "???"}, "OFF"),
])
def test_lamp_mode_from_the_desk_status(status, mode):
    assert lamp_mode(status) == mode


def levels(factory: MockFactory, *pins: int) -> list[bool]:
    return [bool(factory.pin(p).state) for p in pins]


def test_three_leds_show_the_mode(factory):
    with StatusLamp(LampConfig(green=5, amber=6, red=13), pin_factory=factory) as lamp:
        assert lamp.show(desk("NORMAL")) == "NORMAL"
        assert levels(factory, 5, 6, 13) == [True, False, False]
        lamp.show(desk("RECOVERING"))
        assert levels(factory, 5, 6, 13) == [False, True, False]
        lamp.show(desk("HALTED", verified=True))
        assert levels(factory, 5, 6, 13) == [False, False, True]
        lamp.show(None)
        assert levels(factory, 5, 6, 13) == [False, False, False]


def test_red_blinks_while_the_kill_is_unverified(factory):
    config = LampConfig(green=5, amber=6, red=13, blink_s=0.01)
    with StatusLamp(config, pin_factory=factory) as lamp:
        lamp.show(desk("HALTED"))
        time.sleep(0.1)
        red = factory.pin(13)
        assert len(red.states) > 4  # toggled by gpiozero's blink thread
        lamp.show(desk("HALTED", verified=True))
        time.sleep(0.03)
        assert red.state is True and lamp.mode == "HALTED"


def test_an_rgb_led_mixes_amber(factory):
    with StatusLamp(LampConfig(rgb=[16, 20, 21]), pin_factory=factory) as lamp:
        lamp.show(desk("THROTTLED"))
        assert levels(factory, 16, 20, 21) == [True, True, False]
        lamp.show(desk("NORMAL"))
        assert levels(factory, 16, 20, 21) == [False, True, False]


def test_close_is_safe_twice_and_a_failing_led_is_kept_as_an_error(factory):
    lamp = StatusLamp(LampConfig(green=5), pin_factory=factory)
    lamp.close()
    lamp.close()
    assert lamp.show(desk("NORMAL")) == "NORMAL" and lamp.mode == "NORMAL"  # nothing to light
    lamp = StatusLamp(LampConfig(green=5), pin_factory=factory)
    lamp.leds["green"].close()
    lamp.show(desk("NORMAL"))
    assert lamp.mode is None and lamp.error is not None and "closed" in lamp.error
    lamp.close()
