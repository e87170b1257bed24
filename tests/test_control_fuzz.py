"""Fuzzing the control socket of a real daemon process: every invalid line gets exactly
the error its decoder gives, the daemon stays up, and nothing changes.

Hypothesis builds valid requests of every command and telemetry event from the
protocol's own types; each is then broken many ways (simulators/fuzzlines.py: fields
dropped, added, mistyped, truncation, byte flips, deep nesting, huge numbers, long
strings, invalid UTF-8, NUL). Over 20,000 lines per run, pipelined on one connection.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from simulators import fuzzlines
from supervisor.control.client import ControlClient

from .daemonproc import start_daemon, venue_process, write_config

EXAMPLES = 100
BROKEN_PER_REQUEST = 12
REQUESTS_PER_EXAMPLE = 20  # 100 x 20 x 12 = 24,000 lines before the valid ones are dropped


def strategy(ti: mi.Type) -> st.SearchStrategy[Any]:
    """Values that the protocol type ``ti`` accepts."""
    match ti:
        case mi.StrType(min_length=lo, max_length=hi):
            return st.text(min_size=lo or 0, max_size=min(hi or 40, 40))
        case mi.IntType():
            return st.integers(-(2**63), 2**63 - 1)
        case mi.FloatType(gt=gt, ge=ge):
            return st.floats(min_value=gt if gt is not None else ge, exclude_min=gt is not None,
                             allow_nan=False, allow_infinity=False)
        case mi.BoolType():
            return st.booleans()
        case mi.NoneType():
            return st.none()
        case mi.LiteralType(values=values):
            return st.sampled_from(values)
        case mi.UnionType(types=types):
            return st.one_of(*(strategy(t) for t in types))
        case mi.ListType(item_type=item):
            return st.lists(strategy(item), max_size=4)
        case mi.DictType(key_type=key, value_type=value):
            return st.dictionaries(strategy(key), strategy(value), max_size=4)
        case mi.StructType():
            return struct_strategy(ti)
    raise AssertionError(f"no strategy for {ti!r}")


def struct_strategy(ti: mi.StructType) -> st.SearchStrategy[dict[str, Any]]:
    required = {f.encode_name: strategy(f.type) for f in ti.fields if f.required}
    optional = {f.encode_name: strategy(f.type) for f in ti.fields if not f.required}
    assert ti.tag_field is not None and isinstance(ti.tag, str)
    required[ti.tag_field] = st.just(ti.tag)
    return st.fixed_dictionaries(required, optional=optional)


# Every command, and inside `telemetry` every event kind (a union in the events list).
REQUESTS = st.one_of(*(struct_strategy(t) for t in fuzzlines.REQUESTS))


def test_every_command_and_event_kind_has_a_strategy() -> None:
    tags = {t.tag for t in fuzzlines.REQUESTS}
    assert {str(c) for c in tags} == set(fuzzlines.p.COMMANDS)
    telemetry = next(t for t in fuzzlines.REQUESTS if t.tag == "telemetry")
    events = telemetry.fields[0].type
    assert isinstance(events, mi.ListType) and isinstance(events.item_type, mi.UnionType)
    assert len(events.item_type.types) == 12
    for t in fuzzlines.REQUESTS:
        strategy(t)  # raises for a type the strategies do not cover


class Daemon:
    def __init__(self, proc: subprocess.Popen[bytes], sock: Path) -> None:
        self.proc, self.sock = proc, sock
        self.sent = 0
        self.examples = 0

    def state(self) -> dict[str, Any]:
        with ControlClient(str(self.sock)) as c:
            st_ = c.request("status")
        return {"mode": st_["mode"], "incidents": st_["incidents"],
                "journal_events": st_["journal_events"],
                "telemetry": st_["telemetry"]["events"], "kill": st_["kill"]["latched"]}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("fuzz")
    with venue_process() as url:
        # The heartbeat's pings are the only background work: slow them, so the
        # state compared before and after is the desk's alone.
        config, sock, _ = write_config(
            tmp, url, "[heartbeat]\ninterval_s = 3600.0\n")
        proc = start_daemon(config, sock, tmp / "daemon.log")
        try:
            yield Daemon(proc, sock)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
    assert "Traceback" not in (tmp / "daemon.log").read_text()


def _exchange(sock: Path, lines: list[tuple[bytes, bytes]]) -> list[bytes]:
    """Send every line pipelined on one connection; return the answers in order."""
    answers: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(sock))
        s.settimeout(20)
        # Written from a thread while this one reads: a client that only writes would
        # stop reading, and the daemon rightly drops it (control.send_timeout_s).
        sender = threading.Thread(target=s.sendall, args=(b"".join(line for line, _ in lines),))
        sender.start()
        try:
            buf = b""
            while len(answers) < len(lines):
                chunk = s.recv(1 << 20)
                assert chunk, f"the daemon closed the connection after {len(answers)} answers"
                buf += chunk
                *done, buf = buf.split(b"\n")
                answers += [a + b"\n" for a in done]
        finally:
            sender.join(20)
    return answers


# No shrinking: every example is a round trip to the daemon, and a failure already
# names the line it was about.
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(requests=st.lists(REQUESTS, min_size=REQUESTS_PER_EXAMPLE,
                         max_size=REQUESTS_PER_EXAMPLE),
       rnd=st.randoms(use_true_random=False))
def test_fuzzed_lines_get_their_exact_error_and_change_nothing(
    daemon: Daemon, requests: list[dict[str, Any]], rnd: random.Random
) -> None:
    lines: list[tuple[bytes, bytes]] = []
    for request in requests:
        for _ in range(BROKEN_PER_REQUEST):
            line = fuzzlines.wire(fuzzlines.mutate(request, rnd))
            answer = fuzzlines.expected(line[:-1])
            if line.strip() and answer is not None:
                lines.append((line, answer))
    answers = _exchange(daemon.sock, lines)
    for (line, want), got in zip(lines, answers, strict=True):
        assert got == want, f"line {line[:200]!r}"
    daemon.sent += len(lines)
    daemon.examples += 1
    assert daemon.proc.poll() is None


def test_the_fuzz_run_sent_enough_and_nothing_changed(daemon: Daemon) -> None:
    """Runs after the fuzz test in this module (pytest keeps file order): the state
    before any line was sent (taken when the daemon started) equals the state now."""
    if daemon.examples == 0:
        pytest.skip("the fuzz test was not selected in this run")
    assert daemon.examples == EXAMPLES
    assert daemon.sent >= 20_000, daemon.sent
    assert daemon.proc.poll() is None


@pytest.fixture(scope="module", autouse=True)
def _state_unchanged(daemon: Daemon) -> Iterator[None]:
    before = daemon.state()
    yield
    assert daemon.proc.poll() is None
    assert daemon.state() == before


def test_pathological_lines_and_random_bytes(daemon: Daemon) -> None:
    rnd = random.Random(20261208)
    lines = list(fuzzlines.invalid_lines(rnd, 2000))
    lines += [(fuzzlines.wire(bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 300)))),
               b"") for _ in range(2000)]
    lines = [(line, fuzzlines.expected(line[:-1]) or b"") for line, _ in lines]
    lines = [(line, want) for line, want in lines if want and line.strip()]
    answers = _exchange(daemon.sock, lines)
    for (line, want), got in zip(lines, answers, strict=True):
        assert got == want, f"line {line[:200]!r}"
    assert msgspec.json.decode(answers[0])["ok"] is False
