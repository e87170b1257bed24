"""The kill-switch line protocol, version 1 (spec: docs/hardware.md "Line protocol").

One message per line, ASCII, ``\\n``-terminated (a ``\\r`` before it is ignored)::

    DKS1,<TYPE>,<fields...>*<CRC>

``CRC`` is CRC-16/CCITT-FALSE of every byte before the ``*``, as four uppercase hex
digits; a line that fails the CRC, the version, the field count or a field's syntax is
garbled, never a press and never a heartbeat (docs/hardware.md). The reference firmware
(``hardware/firmware/main.py``) carries its own copy of the encoder; a test checks that
both agree.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from .errors import ButtonProtocolError

VERSION = "DKS1"
SEQ_MOD = 1 << 16  # sequence numbers and press counters wrap at 65536
MAX_LINE = 96  # longer than any valid message: a runaway line is garbled
McuState = Literal["OK", "PRESSED", "FAULT"]
LampMode = Literal["OFF", "NORMAL", "THROTTLED", "RECOVERING", "HALTED", "UNVERIFIED"]
_MCU_STATES = ("OK", "PRESSED", "FAULT")
_LAMP_MODES = ("OFF", "NORMAL", "THROTTLED", "RECOVERING", "HALTED", "UNVERIFIED")


class Hello(msgspec.Struct, frozen=True, tag="HELLO"):
    """Sent once at boot: the heartbeat period, the boot id and the firmware's name."""

    seq: int
    period_ms: int
    boot: int
    firmware: str


class Heartbeat(msgspec.Struct, frozen=True, tag="HB"):
    """Sent every period: the button's state, the presses since boot, and the boot id
    (random at each boot, so the host knows whether the counter started again)."""

    seq: int
    state: McuState
    presses: int
    boot: int


class Press(msgspec.Struct, frozen=True, tag="PRESS"):
    """Sent at once on the first edge of a press, before any debounce."""

    seq: int
    presses: int


class Lamp(msgspec.Struct, frozen=True, tag="LAMP"):
    """Host to microcontroller: the desk's mode, for the LED on the button box."""

    mode: LampMode


Message = Hello | Heartbeat | Press | Lamp


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF); ``crc16(b"123456789") == 0x29B1``."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def encode(message: Message) -> bytes:
    """The line for ``message``, newline included."""
    match message:
        case Hello(seq=seq, period_ms=period, boot=boot, firmware=fw):
            fields = ["HELLO", str(seq), str(period), str(boot), fw]
        case Heartbeat(seq=seq, state=state, presses=presses, boot=boot):
            fields = ["HB", str(seq), state, str(presses), str(boot)]
        case Press(seq=seq, presses=presses):
            fields = ["PRESS", str(seq), str(presses)]
        case Lamp(mode=mode):
            fields = ["LAMP", mode]
    body = ",".join([VERSION, *fields]).encode("ascii")
    return b"%s*%04X\n" % (body, crc16(body))


def _uint(text: str, name: str, limit: int) -> int:
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0"):
        raise ButtonProtocolError(f"{name} {text!r} is not a decimal number")
    value = int(text)
    if value >= limit:
        raise ButtonProtocolError(f"{name} {value} out of range (< {limit})")
    return value


def _token(text: str, name: str, allowed: tuple[str, ...]) -> str:
    if text not in allowed:
        raise ButtonProtocolError(f"{name} {text!r} is not one of {', '.join(allowed)}")
    return text


def decode(line: bytes) -> Message:
    """Parse one line (without or with its ``\\n``).

    Raises:
        ButtonProtocolError: the line is garbled; the message says how.
    """
    line = line.removesuffix(b"\n").removesuffix(b"\r")
    if len(line) > MAX_LINE:
        raise ButtonProtocolError(f"line of {len(line)} bytes is longer than {MAX_LINE}")
    body, star, crc_text = line.rpartition(b"*")
    if not star or len(crc_text) != 4:
        raise ButtonProtocolError("no '*CRC' at the end of the line")
    if not all(c in b"0123456789ABCDEF" for c in crc_text):
        raise ButtonProtocolError("CRC is not four uppercase hex digits")
    crc = int(crc_text, 16)
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise ButtonProtocolError("line is not ASCII") from None
    if crc != crc16(body):
        raise ButtonProtocolError(f"CRC {crc:04X} does not match {crc16(body):04X}")
    version, _, rest = text.partition(",")
    if version != VERSION:
        raise ButtonProtocolError(f"version {version!r} is not {VERSION}")
    kind, *fields = rest.split(",")
    arity = {"HELLO": 4, "HB": 4, "PRESS": 2, "LAMP": 1}.get(kind)
    if arity is None:
        raise ButtonProtocolError(f"unknown message type {kind!r}")
    if len(fields) != arity:
        raise ButtonProtocolError(f"{kind} needs {arity} fields, got {len(fields)}")
    match kind:
        case "HELLO":
            fw = fields[3]
            if not fw or not all(c.isalnum() or c in "._-" for c in fw):
                raise ButtonProtocolError(f"firmware name {fw!r} is not [A-Za-z0-9._-]+")
            return Hello(seq=_uint(fields[0], "seq", SEQ_MOD),
                         period_ms=_uint(fields[1], "period_ms", 60_000),
                         boot=_uint(fields[2], "boot", SEQ_MOD), firmware=fw)
        case "HB":
            return Heartbeat(seq=_uint(fields[0], "seq", SEQ_MOD),
                             state=_token(fields[1], "state", _MCU_STATES),  # type: ignore[arg-type]
                             presses=_uint(fields[2], "presses", SEQ_MOD),
                             boot=_uint(fields[3], "boot", SEQ_MOD))
        case "PRESS":
            return Press(seq=_uint(fields[0], "seq", SEQ_MOD),
                         presses=_uint(fields[1], "presses", SEQ_MOD))
        case _:
            return Lamp(mode=_token(fields[0], "mode", _LAMP_MODES))  # type: ignore[arg-type]
