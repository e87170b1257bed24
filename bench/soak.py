"""SIGKILL soak: the daemon killed at random moments under mixed traffic, N times.

Each cycle starts ``python -m supervisor.cli run`` (one venue simulator process, kept
for the whole soak) on the same state directory, checks what came back, sends mixed
traffic from three client threads (operator commands that each journal one audit line,
telemetry batches, and now and then a kill or a resume attempt), and SIGKILLs the daemon
after a random 0.05-0.6 s. After every restart it checks:

- the start: the socket answers within 30 s (a failed start is counted, and the soak
  stops);
- every change the daemon acknowledged before the SIGKILL is in the journal, once
  (the audit lines by their unique text; the kills by their incident);
- the journal's checksum chain is whole (``Journal.verify``);
- an acknowledged kill not followed by an acknowledged resume comes back HALTED.

Prints cycles, acknowledged changes, lost, duplicated, failed starts, damaged journals,
and the start times. Each restart loads the code afresh: run a long soak from a checkout
nobody edits meanwhile (a git worktree, with PYTHONPATH pointing at it).

    .venv/bin/python bench/soak.py --cycles 1000 --seed 1
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import trio

from supervisor.control.client import ControlClient
from supervisor.core.errors import ControlError, DeskError
from supervisor.runtime.journal import open_journal


@dataclass
class Ledger:
    """What the daemon acknowledged, across every cycle."""

    audits: set[str] = field(default_factory=set)
    kills: set[str] = field(default_factory=set)  # incident ids of durable kills
    halted: bool = False  # the last acknowledged kill/resume says HALTED
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Result:
    cycles: int = 0
    acknowledged: int = 0
    lost: int = 0
    duplicated: int = 0
    failed_starts: int = 0
    damaged: int = 0
    wrong_mode: int = 0
    problems: list[str] = field(default_factory=list)
    start_s: list[float] = field(default_factory=list)  # each start until status answers


def _start(config: Path, sock: Path, log: Path, timeout: float = 30.0
           ) -> subprocess.Popen[bytes] | None:
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "supervisor.cli", "run", "--config",
                                 str(config)], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        try:
            with ControlClient(str(sock), timeout=2) as c:
                c.request("status")
                return proc
        except (OSError, DeskError):
            time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    return None


def _traffic(sock: Path, ledger: Ledger, stop: threading.Event, rnd: random.Random,
             cycle: int) -> list[threading.Thread]:
    def commands() -> None:
        try:
            with ControlClient(str(sock), timeout=5) as c:
                i = 0
                while not stop.is_set():
                    text = f"soak {cycle}-{i}"
                    c.request("symbol_halt", symbol="AAPL", reason=text)
                    with ledger.lock:
                        ledger.audits.add(f"halt reported for AAPL: {text}")
                    i += 1
        except (OSError, DeskError):
            return  # the daemon died under us: what was answered is what counts

    def telemetry() -> None:
        batch = [{"kind": "prediction", "symbol": f"S{i}", "value": 0.1, "ts": time.time()}
                 for i in range(100)]
        try:
            with ControlClient(str(sock), timeout=5) as c:
                while not stop.is_set():
                    c.request("telemetry", events=batch)
        except (OSError, DeskError):
            return

    pick = rnd.random()

    def operator() -> None:
        try:
            with ControlClient(str(sock), timeout=5) as c:
                if pick < 0.3:
                    r = c.request("kill", reason=f"soak kill {cycle}")
                    with ledger.lock:
                        if r.get("durable"):
                            ledger.kills.add(r["incident_id"])
                            ledger.halted = True
                elif pick < 0.4:
                    try:
                        c.request("resume", verified_nonprod=True)
                    except ControlError:
                        return  # refused: nothing changed
                    with ledger.lock:
                        ledger.halted = False
        except (OSError, DeskError):
            return

    threads = [threading.Thread(target=f) for f in (commands, telemetry, operator)]
    for t in threads:
        t.start()
    return threads


def _check(state: Path, sock: Path, ledger: Ledger, result: Result) -> None:
    db = sqlite3.connect(f"file:{state / 'journal.sqlite3'}?mode=ro", uri=True)
    try:
        texts = [row[0] for row in db.execute(
            "SELECT json_extract(body, '$.text') FROM events WHERE type = 'audit'")]
    finally:
        db.close()
    seen = set(texts)
    with ledger.lock:
        lost = [a for a in ledger.audits if a not in seen]
        halted = ledger.halted
    result.lost += len(lost)
    result.duplicated += len(texts) - len(seen)
    if lost:
        result.problems.append(f"cycle {result.cycles}: {len(lost)} acknowledged lost, "
                               f"e.g. {lost[0]!r}")

    async def verify() -> bool:
        async with await open_journal(state / "journal.sqlite3", read_only=True) as journal:
            return (await journal.verify()).ok

    if not trio.run(verify):
        result.damaged += 1
        result.problems.append(f"cycle {result.cycles}: the journal's chain is broken")
    with ControlClient(str(sock), timeout=5) as c:
        st = c.request("status")
    if halted and st["mode"] != "HALTED":
        result.wrong_mode += 1
        result.problems.append(f"cycle {result.cycles}: acknowledged kill, came back "
                               f"{st['mode']}")


def soak(tmp: Path, venue_url: str, cycles: int, seed: int) -> Result:
    """Run the soak in ``tmp`` against the venue at ``venue_url``."""
    rnd = random.Random(seed)
    state, sock = tmp / "state", tmp / "c.sock"
    config = tmp / "desk.toml"
    config.write_text(f'state_dir = "{state}"\n[[venues]]\nname = "alpha"\n'
                      f'base_url = "{venue_url}"\n[reconciliation]\nend_of_day = ""\n'
                      '[gates]\nstart_disarmed = false\n'
                      f'[alerts]\nspam_threshold = 1000000\n[control]\nsocket = "{sock}"\n')
    log = tmp / "daemon.log"
    ledger, result = Ledger(), Result()
    for cycle in range(cycles):
        began = time.monotonic()
        proc = _start(config, sock, log)
        result.start_s.append(time.monotonic() - began)
        if proc is None:
            result.failed_starts += 1
            tail = log.read_text(errors="replace").splitlines()[-15:]
            result.problems.append(f"cycle {cycle}: the daemon did not start; the end of "
                                   f"its log:\n    " + "\n    ".join(tail))
            break
        try:
            _check(state, sock, ledger, result)
            stop = threading.Event()
            threads = _traffic(sock, ledger, stop, rnd, cycle)
            time.sleep(rnd.uniform(0.05, 0.6))
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        stop.set()
        for t in threads:
            t.join(10)
        result.cycles += 1
    result.acknowledged = len(ledger.audits) + len(ledger.kills)
    proc = _start(config, sock, log)  # the last restart is checked too
    if proc is None:
        result.failed_starts += 1
    else:
        try:
            _check(state, sock, ledger, result)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the state dir and the log")
    args = ap.parse_args()
    import _harness as h

    print(h.machine_line(h.machine()))
    tmp = tempfile.mkdtemp(prefix="soak-")
    try:
        venue = subprocess.Popen([sys.executable, "-m", "simulators.venue", "--port", "0",
                                  "--name", "alpha"], stdout=subprocess.PIPE, text=True)
        try:
            assert venue.stdout is not None
            url = venue.stdout.readline().strip()
            t0 = time.monotonic()
            r = soak(Path(tmp), url, args.cycles, args.seed)
            took = time.monotonic() - t0
        finally:
            venue.terminate()
            venue.wait(10)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{r.cycles} SIGKILL cycles in {took:.0f} s (seed {args.seed}): {r.acknowledged} "
          f"acknowledged changes, {r.lost} lost, {r.duplicated} duplicated, "
          f"{r.failed_starts} failed starts, {r.damaged} damaged journals, "
          f"{r.wrong_mode} wrong modes")
    starts = sorted(r.start_s)
    if starts:
        print(f"start until status answers: p50 {starts[len(starts) // 2]:.2f} s, p99 "
              f"{starts[min(len(starts) - 1, int(len(starts) * 0.99))]:.2f} s, max "
              f"{starts[-1]:.2f} s over {len(starts)} starts")
    for p in r.problems[:10]:
        print("  " + p)
    ok = not (r.lost or r.duplicated or r.failed_starts or r.damaged or r.wrong_mode)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
