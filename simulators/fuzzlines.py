"""Malformed control-socket lines, as a buggy engine or a hostile local user sends them.

Valid requests of every command and telemetry event are built from the protocol's own
types (``msgspec.inspect``), then broken: a field dropped, added or given the wrong
type, the JSON truncated, bytes flipped, inserted or deleted, the command renamed, and
pathological shapes (deep nesting, huge numbers, long strings, invalid UTF-8, NUL).
``expected`` is the oracle: the answer the daemon must give to a line, computed by the
same decoder without a daemon. The fuzz tests (hypothesis picks the valid requests and
the random stream) and ``bench/fuzz_control.py`` (a long run) use it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import msgspec
import msgspec.inspect as mi

from supervisor.core import protocol as p

REQUESTS: tuple[mi.StructType, ...] = tuple(
    t for t in mi.type_info(p.AnyRequest).types  # type: ignore[attr-defined]
    if isinstance(t, mi.StructType))

# Values of the wrong type for any field: every one is wrong for some field types.
WRONG: tuple[Any, ...] = (None, True, 0, -1, 1.5, 1e308, "", "x", [], [1], {}, {"a": 1},
                          "NaN", -0.0)


def random_value(ti: mi.Type, rnd: random.Random, depth: int = 0) -> Any:
    """A value that ``ti`` accepts (mostly: constraints beyond length and bounds are not
    modelled, and the oracle decides in the end)."""
    match ti:
        case mi.StrType(min_length=lo, max_length=hi):
            n = rnd.randint(lo or 0, min(hi if hi is not None else 24, 24))
            return "".join(rnd.choice("abcXYZ-_ 0123é✓") for _ in range(n))
        case mi.IntType():
            return rnd.randint(1, 5)
        case mi.FloatType(gt=gt, ge=ge):
            floor = gt if gt is not None else ge if ge is not None else -1e6
            return floor + rnd.random() * 1e3 + (1e-3 if gt is not None else 0.0)
        case mi.BoolType():
            return rnd.random() < 0.5
        case mi.NoneType():
            return None
        case mi.LiteralType(values=values):
            return rnd.choice(values)
        case mi.UnionType(types=types):
            return random_value(rnd.choice(types), rnd, depth)
        case mi.ListType(item_type=item):
            return [random_value(item, rnd, depth + 1) for _ in range(rnd.randint(0, 3))]
        case mi.DictType(key_type=key, value_type=value):
            return {str(random_value(key, rnd, depth + 1)): random_value(value, rnd, depth + 1)
                    for _ in range(rnd.randint(0, 3))}
        case mi.StructType():
            return random_struct(ti, rnd, depth + 1)
    return None


def random_struct(st: mi.StructType, rnd: random.Random, depth: int = 0) -> dict[str, Any]:
    """A valid object of a tagged Struct (a request or a telemetry event), tag first or
    not: a sender may put it anywhere."""
    obj: dict[str, Any] = {}
    for f in st.fields:
        if f.required or rnd.random() < 0.5:
            obj[f.encode_name] = random_value(f.type, rnd, depth)
    if st.tag_field is not None:
        items = list(obj.items())
        items.insert(rnd.randint(0, len(items)), (st.tag_field, st.tag))
        obj = dict(items)
    return obj


def random_request(rnd: random.Random) -> dict[str, Any]:
    return random_struct(rnd.choice(REQUESTS), rnd)


def _encode(obj: Any) -> bytes:
    return msgspec.json.encode(obj)


def _fields(obj: dict[str, Any]) -> list[str]:
    return [k for k in obj if k != "cmd"]


def mutate(obj: dict[str, Any], rnd: random.Random) -> bytes:
    """One broken line made from a valid request ``obj`` (a mutation picked by ``rnd``)."""
    obj = dict(obj)
    kind = rnd.randrange(14)
    fields = _fields(obj)
    if kind == 0:  # an unknown field
        obj[rnd.choice(["extra", "cmd2", "Reason", "events_", "\u0000"])] = rnd.choice(WRONG)
    elif kind == 1 and fields:  # a field dropped
        del obj[rnd.choice(fields)]
    elif kind == 2 and fields:  # a field of the wrong type
        obj[rnd.choice(fields)] = rnd.choice(WRONG)
    elif kind == 3:  # an unknown or mangled command
        obj["cmd"] = rnd.choice(["", "KILL", "kill ", "status\u0000", "explode", 1, None,
                                 ["kill"], {"cmd": "kill"}])
    elif kind == 4 and "events" in obj:  # one telemetry event broken inside the batch
        events = list(obj["events"]) or [{"kind": "bar"}]
        i = rnd.randrange(len(events))
        event = dict(events[i])
        key = rnd.choice([k for k in event if k != "kind"] or ["kind"])
        event[key] = rnd.choice(WRONG)
        events[i] = event
        obj["events"] = events
    elif kind == 5:  # truncated
        line = _encode(obj)
        return line[: rnd.randrange(max(1, len(line)))]
    elif kind in (6, 7, 8):  # bytes flipped, inserted, deleted
        line = bytearray(_encode(obj))
        for _ in range(rnd.randint(1, 3)):
            i = rnd.randrange(len(line))
            if kind == 6:
                line[i] = rnd.randrange(256)
            elif kind == 7:
                line.insert(i, rnd.randrange(256))
            elif len(line) > 1:
                del line[i]
        return bytes(line)
    elif kind == 9 and fields:  # deep nesting inside a field
        depth = rnd.choice([17, 64, 1000, 5000])
        obj[rnd.choice(fields)] = "@NEST@"
        return _encode(obj).replace(b'"@NEST@"', b"[" * depth + b"]" * depth)
    elif kind == 10 and fields:  # a huge number
        obj[rnd.choice(fields)] = "@NUM@"
        number = rnd.choice([b"1" * 5000, b"1e999999", b"-1e-999999", b"9" * 400 + b".5"])
        return _encode(obj).replace(b'"@NUM@"', number)
    elif kind == 11 and fields:  # a long string
        obj[rnd.choice(fields)] = "x" * rnd.choice([4097, 70_000])
    elif kind == 12:  # invalid UTF-8 or a raw control byte inside a string
        obj["cmd"] = "@BAD@"
        bad = rnd.choice([b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\x1f"])
        return _encode(obj).replace(b"@BAD@", b"kill" + bad)
    else:  # not an object at all
        return rnd.choice([b"[]", b"null", b"1", b'"kill"', b"[" * 5000 + b"]" * 5000,
                           b"{", b"}", b'{"cmd":}', b"\x00" * 16, b'{"cmd":"kill"}garbage'])
    return _encode(obj)


def expected(line: bytes) -> bytes | None:
    """The exact response line the daemon must give to ``line`` (without authorisation
    or state: for invalid lines only); None when ``line`` is a valid request."""
    try:
        p.decode_request(line)
    except p.ProtocolError as exc:
        return p.error(exc.code, exc.message, **exc.detail)
    return None


def wire(line: bytes) -> bytes:
    """``line`` as one request line on the wire: no newline inside it."""
    return line.replace(b"\n", b" ") + b"\n"


def invalid_lines(rnd: random.Random, count: int) -> Iterator[tuple[bytes, bytes]]:
    """``count`` (line, expected response) pairs of invalid, non-blank lines."""
    made = 0
    while made < count:
        line = wire(mutate(random_request(rnd), rnd))
        if not line.strip():
            continue  # a blank line gets no answer at all
        answer = expected(line[:-1])
        if answer is None:
            continue  # a mutation that happens to be valid is not sent
        made += 1
        yield line, answer
