"""A long fuzz run against the control socket of a real daemon (not a timing benchmark).

What is checked: ``--lines`` invalid request lines (simulators/fuzzlines.py: every
command and telemetry event kind, broken by dropped, added and mistyped fields,
truncation, byte flips, deep nesting, huge numbers, long strings, invalid UTF-8, NUL),
sent pipelined in chunks of ``--chunk`` lines on one connection per chunk to
``python -m supervisor.cli run`` (one bench venue). Every answer must be exactly the
error the protocol's decoder gives for that line; the daemon must be alive after every
chunk, and its state (mode, incidents, journal length, telemetry count) the same at the
end as at the start. Prints lines sent, lines per second and the verdict.

    .venv/bin/python bench/fuzz_control.py --lines 1000000 --seed 1
"""

from __future__ import annotations

import argparse
import random
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import _harness as h

from simulators import fuzzlines


def _state(sock: Path) -> dict[str, Any]:
    with h.LineClient(sock) as c:
        st = c.request({"cmd": "status"})
    return {"mode": st["mode"], "incidents": st["incidents"],
            "journal_events": st["journal_events"], "telemetry": st["telemetry"]["events"]}


def _exchange(sock: Path, lines: list[tuple[bytes, bytes]]) -> int:
    """Send the chunk while reading its answers; return the number that differ."""
    wrong = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(sock))
        s.settimeout(30)
        sender = threading.Thread(target=s.sendall,
                                  args=(b"".join(line for line, _ in lines),))
        sender.start()
        buf, got = b"", 0
        try:
            while got < len(lines):
                chunk = s.recv(1 << 20)
                if not chunk:
                    raise h.Aborted(f"the daemon closed the connection after {got} answers")
                buf += chunk
                *done, buf = buf.split(b"\n")
                for answer in done:
                    line, want = lines[got]
                    if answer + b"\n" != want:
                        wrong += 1
                        print(f"WRONG answer to {line[:120]!r}: {answer[:200]!r}",
                              file=sys.stderr)
                    got += 1
        finally:
            sender.join(30)
    return wrong


def run(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    venue, url = h.start_venue("alpha", 0, notify=None, log=tmp / "venue.log")
    try:
        config, sock = h.write_desk_config(tmp, {"alpha": url}, heartbeat_s=3600.0)
        daemon = h.start_daemon(config, sock, tmp / "daemon.log", venues=1)
        try:
            before = _state(sock)
            rnd = random.Random(args.seed)
            sent = wrong = 0
            made_s = sending_s = 0.0
            while sent < args.lines:
                t0 = time.perf_counter()
                chunk = list(fuzzlines.invalid_lines(rnd, min(args.chunk, args.lines - sent)))
                t1 = time.perf_counter()
                wrong += _exchange(sock, chunk)
                sending_s += time.perf_counter() - t1
                made_s += t1 - t0
                sent += len(chunk)
                if daemon.poll() is not None:
                    raise h.Aborted(f"the daemon exited with {daemon.returncode} after "
                                    f"{sent} lines")
                print(f"{sent} lines sent, {wrong} wrong", file=sys.stderr)
            after = _state(sock)
        finally:
            rc = h.stop(daemon, group=True)
        log = (tmp / "daemon.log").read_text()
    finally:
        h.stop(venue)
    return {"machine": h.machine(), "lines": sent, "wrong": wrong, "seed": args.seed,
            "send_s": sending_s, "generate_s": made_s, "state_unchanged": before == after,
            "daemon_rc": rc, "tracebacks": log.count("Traceback")}


def report(r: dict[str, Any]) -> None:
    print(h.machine_line(r["machine"]))
    ok = (r["wrong"] == 0 and r["state_unchanged"] and r["daemon_rc"] == 0
          and r["tracebacks"] == 0)
    print(f"{r['lines']} invalid lines (seed {r['seed']}): {r['wrong']} wrong answers, "
          f"{r['lines'] / r['send_s']:.0f} lines/s answered ({r['send_s']:.1f} s), "
          f"state unchanged: {r['state_unchanged']}, tracebacks in the log: "
          f"{r['tracebacks']}, daemon exit on SIGTERM: {r['daemon_rc']}")
    print("PASS" if ok else "FAIL")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir and logs")
    ap.add_argument("--out", help="write the result as JSON here")
    args = ap.parse_args()
    return h.run_and_report("fuzz_control", "fuzz-control-", lambda tmp: run(tmp, args),
                            report, keep=args.keep, out=args.out)


if __name__ == "__main__":
    sys.exit(main())
