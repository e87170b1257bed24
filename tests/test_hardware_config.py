"""The ``[button]`` config section: defaults from docs/hardware.md, and errors that name the key."""

from __future__ import annotations

import msgspec
import pytest

from hardware.config import (
    ButtonConfig,
    GpioButtonConfig,
    LampConfig,
    SerialLineButtonConfig,
    SerialModemButtonConfig,
    parse_button_config,
)
from supervisor.core.errors import ConfigError


def test_no_button_section_means_no_button():
    assert parse_button_config(b"state_dir = '/tmp'\n") is None


def test_gpio_defaults_follow_the_issue():
    config = parse_button_config(b"[button]\nbackend = 'gpio'\npin = 17\n")
    assert isinstance(config, GpioButtonConfig) and config.backend == "gpio"
    assert (config.wiring, config.pull, config.poll_interval_s, config.on_loss) == (
        "nc", "up", 0.02, "kill")
    assert config.second_pin is None and config.pin_factory is None
    assert config.lamp == LampConfig() and not config.lamp.enabled


def test_serial_defaults_follow_the_issue():
    line = parse_button_config(
        b"[button]\nbackend = 'serial-line'\nport = '/dev/serial/by-id/usb-pico-if00'\n")
    assert isinstance(line, SerialLineButtonConfig)
    assert (line.missing_factor, line.heartbeat_period_s, line.dtr_on_open) == (3.0, 0.1, True)
    modem = parse_button_config(b"[button]\nbackend = 'serial-modem'\nusb_id = '0403:6001'\n")
    assert isinstance(modem, SerialModemButtonConfig)
    assert (modem.drive, modem.sense, modem.wiring) == ("rts", "cts", "nc")


def test_the_integrator_mounts_it_as_an_optional_section():
    class Main(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
        state_dir: str = ""
        button: ButtonConfig | None = None

    text = (b"state_dir = '/x'\n[button]\nbackend = 'gpio'\npin = 'GPIO17'\nsecond_pin = 27\n"
            b"[button.lamp]\ngreen = 5\namber = 6\nred = 13\n")
    main = msgspec.toml.decode(text, type=Main)
    assert isinstance(main.button, GpioButtonConfig)
    assert main.button.second_pin == 27 and main.button.lamp.enabled


@pytest.mark.parametrize(("body", "message"), [
    ("backend = 'gpio'\npin = 17\non_loss = 'ignore'",
     "on_loss 'ignore' needs allow_ignore = true: a lost kill-switch button would go "
     "unnoticed - at `$.button`"),
    ("backend = 'gpio'\npin = 17\nwiring = 'no'\nsecond_pin = 27",
     "second_pin needs wiring 'nc' (two normally-closed channels) - at `$.button`"),
    ("backend = 'gpio'\npin = 17\npull = 'floating'",
     "pull 'floating' needs active_state (the level while closed) - at `$.button`"),
    ("backend = 'gpio'\npin = 17\nactive_state = true",
     "active_state is only for pull 'floating'; a pull sets it - at `$.button`"),
    ("backend = 'gpio'\npin = 17\npoll_interval_s = 0",
     "poll_interval_s must be > 0 - at `$.button`"),
    ("backend = 'gpio'\npin = 17\nbounce_s = 1", "Object contains unknown field `bounce_s` - "
     "at `$.button`"),
    ("backend = 'usb'", "Invalid value 'usb' - at `$.button.backend`"),
    ("backend = 'serial-line'", "give exactly one of port or usb_id - at `$.button`"),
    ("backend = 'serial-line'\nport = '/dev/x'\nusb_id = '2e8a:0005'",
     "give exactly one of port or usb_id - at `$.button`"),
    ("backend = 'serial-modem'\nusb_id = 'pico'",
     "usb_id must be 'VID:PID' in hex, like '2e8a:0005', got 'pico' - at `$.button`"),
    ("backend = 'serial-line'\nport = '/dev/x'\nmissing_factor = 1",
     "missing_factor must be >= 2: one late heartbeat is jitter - at `$.button`"),
    ("backend = 'gpio'\npin = 17\nlamp = {rgb = [1, 2]}",
     "lamp.rgb must list three pins: [red, green, blue] - at `$.button.lamp`"),
])
def test_bad_values_name_the_key(body, message):
    with pytest.raises(ConfigError) as info:
        parse_button_config(f"[button]\n{body}\n", source="desk.toml")
    assert str(info.value) == f"desk.toml: {message}"


def test_ignore_is_accepted_when_set_explicitly():
    config = parse_button_config(
        b"[button]\nbackend = 'gpio'\npin = 17\non_loss = 'ignore'\nallow_ignore = true\n")
    assert config is not None and config.on_loss == "ignore"
