"""The line protocol DKS1 (docs/hardware.md): framing, CRC, and the reference firmware.

The firmware (``hardware/firmware/main.py``, MicroPython) carries its own encoder; its
pure ``Firmware`` class runs under CPython here and its lines go through the host's
parser, so the two cannot drift apart.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardware.errors import ButtonProtocolError
from hardware.protocol import Heartbeat, Hello, Lamp, Press, crc16, decode, encode

FIRMWARE = Path(__file__).parent.parent / "hardware" / "firmware" / "main.py"
_spec = importlib.util.spec_from_file_location("dks_firmware", FIRMWARE)
assert _spec is not None and _spec.loader is not None
firmware = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(firmware)

MESSAGES = [
    Hello(seq=0, period_ms=100, boot=40961, firmware="dks-pico-1.0"),
    Heartbeat(seq=1, state="OK", presses=0, boot=40961),
    Heartbeat(seq=65535, state="PRESSED", presses=7, boot=40961),
    Press(seq=2, presses=1),
    Lamp(mode="UNVERIFIED"),
]


def test_crc_is_crc16_ccitt_false():
    assert crc16(b"123456789") == 0x29B1
    assert firmware.crc16(b"123456789") == 0x29B1


def test_a_heartbeat_line_is_exactly_as_specified():
    line = encode(Heartbeat(seq=42, state="OK", presses=3, boot=7))
    assert line == b"DKS1,HB,42,OK,3,7*%04X\n" % crc16(b"DKS1,HB,42,OK,3,7")


@pytest.mark.parametrize("message", MESSAGES)
def test_every_message_round_trips(message):
    assert decode(encode(message)) == message
    assert decode(encode(message).replace(b"\n", b"\r\n")) == message


def _with_crc(body: bytes) -> bytes:
    return b"%s*%04X" % (body, crc16(body))


@pytest.mark.parametrize(("line", "error"), [
    (b"DKS1,PRESS,2,1*0000", "CRC 0000 does not match "),
    (_with_crc(b"DKS1,PRESS,2,1").lower(), "CRC is not four uppercase hex digits"),
    (b"DKS1,PRESS,2,1", "no '*CRC' at the end of the line"),
    (_with_crc(b"DKS2,PRESS,2,1"), "version 'DKS2' is not DKS1"),
    (_with_crc(b"DKS1,PRESS,02,1"), "seq '02' is not a decimal number"),
    (_with_crc(b"DKS1,PRESS,-2,1"), "seq '-2' is not a decimal number"),
    (_with_crc(b"DKS1,PRESS,65536,1"), "seq 65536 out of range (< 65536)"),
    (_with_crc(b"DKS1,PRESS,2,1,9"), "PRESS needs 2 fields, got 3"),
    (_with_crc(b"DKS1,HB,2,MAYBE,0,1"), "state 'MAYBE' is not one of OK, PRESSED, FAULT"),
    (_with_crc(b"DKS1,BOOM,2"), "unknown message type 'BOOM'"),
    (_with_crc(b"DKS1,HELLO,0,100,1,fw 1"), "firmware name 'fw 1' is not [A-Za-z0-9._-]+"),
    (b"\xff" * 100, "line of 100 bytes is longer than 96"),
])
def test_garbled_lines_are_rejected_with_a_reason(line, error):
    with pytest.raises(ButtonProtocolError) as info:
        decode(line)
    assert str(info.value).startswith(error)


@given(st.sampled_from(MESSAGES), st.data())
def test_any_single_bit_flip_is_rejected(message, data):
    """docs/hardware.md: line noise is never read as a press or as a heartbeat."""
    line = bytearray(encode(message))
    bit = data.draw(st.integers(0, len(line) * 8 - 1))
    line[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ButtonProtocolError):
        decode(bytes(line))


@given(st.binary(max_size=120))
def test_random_bytes_are_never_a_message(data):
    with pytest.raises(ButtonProtocolError):
        decode(data)


@given(st.binary(max_size=64))
def test_firmware_and_host_compute_the_same_crc(data):
    assert firmware.crc16(data) == crc16(data)


def test_the_firmware_speaks_the_host_protocol():
    fw = firmware.Firmware(boot=513)
    lines = [fw.hello()]
    samples = [(0, False), (100, False), (150, True), (151, False), (152, True), (200, True),
               (250, False), (299, False), (300, False), (400, False)]
    for now, active in samples:
        lines += fw.step(now, active)
    messages = [decode(line.encode()) for line in lines]
    assert [m.seq for m in messages] == list(range(len(messages)))  # type: ignore[union-attr]
    kinds = [(type(m).__name__, getattr(m, "state", None), getattr(m, "presses", None))
             for m in messages]
    assert kinds == [
        ("Hello", None, None),
        ("Heartbeat", "OK", 0),  # t=0
        ("Heartbeat", "OK", 0),  # t=100
        ("Press", None, 1),  # t=150: the first sample trips; the chatter after is latched
        ("Heartbeat", "PRESSED", 1),  # t=200
        ("Heartbeat", "OK", 1),  # t=300: at rest since 250 for 50 ms, reported at once
        ("Heartbeat", "OK", 1),  # t=400
    ]
    assert messages[0] == Hello(seq=0, period_ms=100, boot=513, firmware="dks-pico-1.0")


def test_the_firmware_takes_the_lamp_mode_and_ignores_noise():
    fw = firmware.Firmware(boot=1)
    fw.receive(encode(Lamp(mode="HALTED")).decode())
    assert fw.lamp == "HALTED"
    fw.receive("DKS1,LAMP,NORMAL*0000\n")
    assert fw.lamp == "HALTED"
