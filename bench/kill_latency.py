"""Kill latency, measured from outside the daemon.

What is timed: from the moment this client is about to write ``{"cmd":"kill",...}`` to
the control socket, to the moment the last of 3 venues has parsed the request line and
headers of ``DELETE /v2/orders``. Both stamps are ``time.monotonic_ns()``
(CLOCK_MONOTONIC, one clock for every process on Linux), taken in different processes:

    client  t0 = monotonic_ns(); sendall(kill line)          (this process)
    daemon  python -m supervisor.cli run --config X.toml      (its own process)
    venues  3 x bench/h11_venue.py on 127.0.0.1, each stamps its DELETE's arrival

latency of one kill = max over the 3 venues of (arrival - t0). It is an upper bound of
"request on the socket -> cancel-all written to every venue's connection": it also holds
the client's write, the daemon's read, loopback TCP and the venue's wake-up and parse.

Between kills the latch is released the real way: resolve the kill's P0 incident with a
root cause, ``reconcile`` (clean: no positions anywhere), ``resume``. Warm-up kills (not
counted) first, so every venue connection the daemon will use is already open.

``--perf`` also records the socket syscalls of the daemon and of this client (``write``,
``sendto``, ``recvfrom``: entry with fd and size, exit with the result) with ``perf
record`` (CLOCK_MONOTONIC) while the measured kills run. Per kill: the kill line is on
the daemon's socket when the client's ``sendto`` returns; the daemon reads it when its
``recvfrom`` returns it; each venue's cancel-all is written when the daemon's ``write``
(the warm line's ``os.write`` in ``KillSwitch.trip``) or ``sendto`` (``send_all``,
httpx) of a DELETE-sized request on that venue's connection returns all of it (which fd
is which venue's connection: /proc/PID/fd and /proc/PID/net/tcp, read when perf starts
and at the end). Hence "kill on the socket -> written to every venue's connection", the
target's own measure, directly, and its parts. This observes the daemon from outside
(kernel tracepoints); it changes no product code.

``--steps`` runs the daemon through bench/traced_daemon.py (same wiring, plus a trio
Instrument) and prints what its event loop ran inside each kill's window, with the
step-by-step timeline of the median kill: for finding where the time goes, not of record.
``--telemetry-senders N`` keeps N telemetry senders (bench/telemetry_ingest.py) at full
rate against the daemon while the kills run.

Run: ``.venv/bin/python bench/kill_latency.py [--kills 1000] [--perf] [--steps]``. It
stops by itself: every wait is bounded, and ``--max-seconds`` bounds the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

import _harness as h
import numpy as np

VENUES = ("alpha", "beta", "gamma")


def kill_line(i: int) -> bytes:
    # Fixed length, so the daemon's read of it is recognisable in a syscall trace.
    return b'{"cmd":"kill","reason":"bench kill %07d"}\n' % i


def one_kill(c: h.LineClient, notify: socket.socket, i: int, wait_s: float
             ) -> tuple[int, list[int], int]:
    """Kill, wait for the 3 stamps, then resolve, reconcile, resume.

    Returns (t0, arrivals in venue order, stray stamps seen before this kill)."""
    what = f"kill {i}"
    stray = h.drain(notify)
    line = kill_line(i)
    t0 = time.monotonic_ns()
    c.sock.sendall(line)
    incident = h.expect_latched(c.result(), what)
    arrivals, late = h.wait_arrivals(notify, t0, len(VENUES), wait_s, what)
    h.release_latch(c, incident, what)
    return t0, arrivals, stray + late


# --- the optional syscall trace of the daemon -------------------------------------------


def start_perf(pids: list[int], out: Path, log: Path, *, sched: bool = False
               ) -> subprocess.Popen[str]:
    """perf record of the socket syscalls (write, sendto, recvfrom: entry with fd and
    size, exit with the result) of the daemon and this client; ``sched``: of the whole
    machine instead, with every context switch."""
    target = ["-a", "-e", "sched:sched_switch"] if sched else ["-p", ",".join(map(str, pids))]
    return h.start_perf([*h.syscall_events(), *target], out, log)


# The splits of one kill in the syscall trace, in the order printed.
SPLITS = (
    "client_write",  # t0 -> the client's sendto of the kill line returned
    "in_socket_to_daemon_read",  # ... -> the daemon's recvfrom returned the line
    "daemon_read_to_first_delete_written",
    "daemon_read_to_last_delete_written",
    "first_to_last_delete_written",
    "delete_write_syscall",  # each DELETE's syscall, entry to exit
    "in_socket_to_last_delete_written",  # the target's measure
    "t0_to_last_delete_written",
    "last_delete_written_to_last_venue_parsed",
)


def decompose(kills: list[tuple[int, list[int]]], calls: list[h.Syscall], daemon_pid: int,
              client_pid: int, fds: dict[int, str], delete_sizes: set[int], line_len: int
              ) -> dict[str, Any]:
    """Split each kill with the syscalls of the client and of the daemon.

    The kill line is *on the socket* when the client's ``sendto`` of it returns (a Unix
    stream socket: the bytes are then in the daemon's receive queue); the daemon *reads*
    it when its ``recvfrom`` returns those bytes; a venue's cancel-all is *written* when
    the daemon's ``write`` (the warm line's ``os.write``) or ``sendto`` (``send_all``,
    httpx) of a DELETE-sized request on that venue's connection (``fds``) returns all of
    it. Kills without all of these are counted in ``unmatched`` by what was missing."""
    writes = h.delete_writes(calls, daemon_pid, fds, delete_sizes)
    w_ns = np.array([w.enter_ns for w in writes], dtype=np.int64)
    sent = [c for c in calls if c.pid == client_pid and c.name == "sendto"
            and c.size == line_len and c.ret == line_len]
    s_ns = np.array([c.enter_ns for c in sent], dtype=np.int64)
    reads = [c for c in calls if c.pid == daemon_pid and c.name == "recvfrom"
             and c.ret == line_len]
    r_ns = np.array([c.exit_ns for c in reads], dtype=np.int64)
    parts: dict[str, list[int]] = {k: [] for k in SPLITS}
    unmatched: dict[str, int] = defaultdict(int)
    by_syscall: dict[str, int] = defaultdict(int)
    windows: list[tuple[int, int]] = []  # last DELETE written -> last venue parsed
    writing: list[tuple[int, int]] = []  # first DELETE written -> last written
    for t0, arrivals in kills:
        end = max(arrivals)
        k = int(np.searchsorted(s_ns, t0))
        if k == len(sent) or sent[k].enter_ns > end:
            unmatched["no client sendto of the kill line"] += 1
            continue
        on_socket = sent[k].exit_ns
        k = int(np.searchsorted(r_ns, on_socket))
        if k == len(reads) or reads[k].exit_ns > end:
            unmatched["no daemon recvfrom of the kill line"] += 1
            continue
        read = reads[k].exit_ns
        deletes = h.first_delete_per_venue(writes, w_ns, read, end, VENUES)
        if deletes is None:
            unmatched["a venue without a DELETE written"] += 1
            continue
        if not all(d.complete for d in deletes):
            unmatched["a DELETE written in part (the rest by send_all)"] += 1
            continue
        done = [d.written_ns for d in deletes]
        for d in deletes:
            by_syscall[d.name] += 1
        parts["client_write"].append(on_socket - t0)
        parts["in_socket_to_daemon_read"].append(read - on_socket)
        parts["daemon_read_to_first_delete_written"].append(min(done) - read)
        parts["daemon_read_to_last_delete_written"].append(max(done) - read)
        parts["first_to_last_delete_written"].append(max(done) - min(done))
        parts["delete_write_syscall"] += [d.written_ns - d.enter_ns for d in deletes]
        parts["in_socket_to_last_delete_written"].append(max(done) - on_socket)
        parts["t0_to_last_delete_written"].append(max(done) - t0)
        parts["last_delete_written_to_last_venue_parsed"].append(end - max(done))
        windows.append((max(done), end))
        writing.append((min(done), max(done)))
    return {"parts": parts, "unmatched": dict(unmatched), "by_syscall": dict(by_syscall),
            "windows": windows, "writing": writing}


def event_loop_in_window(path: Path, kills: list[tuple[int, list[int]]]) -> dict[str, Any]:
    """What the daemon's event loop ran between each kill's t0 and its last arrival.

    Per task name: mean steps and mean microseconds per kill, inside the window; the
    rest of the window is the loop waiting (epoll), the GIL held by a worker thread, or
    the daemon not on a CPU. Also the step-by-step timeline of the median kill."""
    data = json.loads(path.read_text())
    names, starts, ends = data["names"], np.array(data["starts"]), np.array(data["ends"])
    per_task: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    busy_total = 0.0
    lat = [max(a) - t0 for t0, a in kills]
    median_kill = int(np.argsort(lat)[len(lat) // 2])
    timeline: list[str] = []
    for n, (t0, arrivals) in enumerate(kills):
        end = max(arrivals)
        lo = int(np.searchsorted(ends, t0))
        hi = int(np.searchsorted(starts, end))
        for k in range(lo, hi):
            s, e = max(int(starts[k]), t0), min(int(ends[k]), end)
            if e <= s:
                continue
            per_task[names[k]][0] += 1
            per_task[names[k]][1] += (e - s) / 1000.0
            busy_total += (e - s) / 1000.0
            if n == median_kill:
                timeline.append(f"+{(int(starts[k]) - t0) / 1000:8.1f} us  {(e - s) / 1000:7.1f} us"
                                f"  {names[k]}")
        if n == median_kill:
            timeline += [f"+{(a - t0) / 1000:8.1f} us  venue {VENUES[i]} parsed DELETE"
                         for i, a in enumerate(arrivals)]
    k = len(kills)
    table = sorted(((name, c / k, us / k) for name, (c, us) in per_task.items()),
                   key=lambda x: -x[2])
    return {"mean_window_us": float(np.mean(lat)) / 1000.0, "mean_busy_us": busy_total / k,
            "per_task": table, "median_kill_timeline": sorted(timeline,
                                                              key=lambda x: float(x[1:9]))}


# --- the run ----------------------------------------------------------------------------


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    started = time.monotonic()
    notify_path = tmp / "notify.sock"
    notify = h.open_notify(notify_path)
    procs: list[tuple[subprocess.Popen[str], bool]] = []
    result: dict[str, Any] = {"machine": h.machine(), "args": vars(args), "tmp": str(tmp)}
    watch = h.CpuWatch()
    try:
        venues, urls = h.start_venues(VENUES, tmp, notify=notify_path)
        procs += [(proc, False) for proc in venues]
        config, sock = h.write_desk_config(tmp, urls, heartbeat_s=args.heartbeat_s)
        traced = None
        if args.steps or args.cprofile:
            traced = (["--steps", str(tmp / "steps.json"), "--time-calls",
                       str(tmp / "calls.json")] if args.steps else [])
            traced += ["--cprofile", str(Path(args.cprofile).resolve())] if args.cprofile else []
        daemon = h.start_daemon(config, sock, tmp / "daemon.log", venues=len(VENUES),
                                traced=traced)
        procs.append((daemon, True))
        result["daemon_pid"] = daemon.pid
        if args.pin:
            # An experiment, not the measure of record: the daemon (every thread) alone
            # on CPU 0, the venues and this client on CPU 1, as if the venues were
            # elsewhere: a venue woken by its DELETE can no longer take the daemon's CPU.
            for tid in os.listdir(f"/proc/{daemon.pid}/task"):
                os.sched_setaffinity(int(tid), {0})
            for proc in venues:
                for tid in os.listdir(f"/proc/{proc.pid}/task"):
                    os.sched_setaffinity(int(tid), {1})
            os.sched_setaffinity(0, {1})
        kills: list[tuple[int, list[int]]] = []
        warm: list[tuple[int, list[int]]] = []
        sockets: list[dict[int, str]] = []
        stray = 0
        perf = None
        with h.LineClient(sock, timeout=args.wait_s) as c:
            for i in range(args.warmup + args.kills):
                if time.monotonic() - started > args.max_seconds:
                    raise h.Aborted(f"--max-seconds {args.max_seconds} reached after {i} kills")
                if i == args.warmup:
                    conns_after_warmup = [h.venue_times(u)["connections"]
                                          for u in urls.values()]
                    for k in range(args.telemetry_senders):
                        procs.append((h.spawn(
                            [h.PYTHON, str(h.BENCH / "telemetry_ingest.py"), "--role", "sender",
                             "--socket", str(sock), "--index", str(k), "--seconds",
                             str(args.max_seconds), "--start-at", repr(time.monotonic()),
                             "--flat"],
                            log=tmp / f"telemetry-{k}.log"), False))
                    if args.telemetry_senders:
                        time.sleep(3.0)  # let the senders reach their full rate
                    if args.perf:
                        perf = start_perf([daemon.pid, os.getpid()], tmp / "perf.data",
                                          tmp / "perf.log", sched=args.sched)
                        procs.append((perf, False))
                        # Which fd is which venue's connection: now (warm lines and
                        # httpx connections open) and again at the end.
                        sockets.append(h.venue_sockets(daemon.pid, urls))
                t0, arrivals, s = one_kill(c, notify, i, args.wait_s)
                (warm if i < args.warmup else kills).append((t0, arrivals))
                stray += s if i >= args.warmup else 0
                time.sleep(args.gap_ms / 1000.0)
            final = c.request({"cmd": "status"})
        if perf is not None and args.sched:
            import gate

            roles = gate.thread_roles({daemon.pid: "daemon", os.getpid(): "client (bench)",
                                       **{proc.pid: f"venue {name}" for proc, name
                                          in zip(venues, VENUES, strict=True)}})
        if perf is not None:
            sockets.append(h.venue_sockets(daemon.pid, urls))
            perf.send_signal(signal.SIGINT)
            perf.wait(60)
        times = {name: h.venue_times(u) for name, u in urls.items()}
    finally:
        for proc, group in reversed(procs):
            h.stop(proc, group=group)
        notify.close()
    result["cpu"] = watch.foreign()
    # Cross-check the datagrams against what the venues kept. A venue may have seen more
    # DELETEs than kills: the verifier re-cancels when it sees orders after the switch.
    extra = h.deletes_not_from(times, VENUES, [a for _, a in warm + kills])
    lat = [max(a) - t0 for t0, a in kills]
    first = [min(a) - t0 for t0, a in kills]
    spread = [max(a) - min(a) for _, a in kills]
    result.update({
        "kills": len(kills),
        "latency_ms": h.summary_ms(lat),
        "first_venue_ms": h.summary_ms(first),
        "spread_ms": h.summary_ms(spread),
        "warmup_latency_ms": h.summary_ms([max(a) - t0 for t0, a in warm]),
        "per_block_p50_ms": h.per_block_p50(lat),
        "stray_stamps": stray,
        "deletes_per_venue": {n: len(t["delete_ns"]) for n, t in times.items()},
        # The warm cancel line's DELETE and httpx's differ in size: which path served.
        "delete_sizes_per_venue": {n: {str(b): t["delete_bytes"].count(b)
                                       for b in sorted(set(t["delete_bytes"]))}
                                   for n, t in times.items()},
        "extra_deletes_per_venue": extra,
        "connections_after_warmup": conns_after_warmup,
        "connections_at_end": [t["connections"] for t in times.values()],
        "final_mode": final["mode"],
        "journal_events": final["journal_events"],
        "incidents_in_state": len(final["incidents"]),
        "telemetry_events": final["telemetry"]["events"],
        "raw_ns": [[t0, *a] for t0, a in kills] if args.out else None,
    })
    if args.steps:
        result["event_loop"] = event_loop_in_window(tmp / "steps.json", kills)
        result["event_loop"]["calls"] = h.calls_in_windows(
            tmp / "calls.json", [(t0, max(a)) for t0, a in kills])
    if perf is not None:
        sizes = {b for t in times.values() for b in t["delete_bytes"]}
        switches: list[tuple[int, int, str]] = []
        if args.sched:
            import gate  # its reader of context switches

            gate.read_perf(tmp / "perf.data", switches)
        fds = h.venue_sockets_union(sockets)
        split = decompose(kills, h.read_syscalls(tmp / "perf.data"), daemon.pid,
                          os.getpid(), fds, sizes, len(kill_line(0)))
        windows = split["windows"]
        result["daemon_side_ms"] = {k: h.summary_ms(v) for k, v in split["parts"].items()}
        result["daemon_side_per_block_p50_ms"] = {
            k: h.per_block_p50(v) for k, v in split["parts"].items()
            if k != "delete_write_syscall"}  # one per kill: blocks of 100 matched kills
        result["daemon_side_unmatched"] = split["unmatched"]
        result["deletes_written_by"] = split["by_syscall"]
        result["venue_fds"] = {str(fd): name for fd, name in sorted(fds.items())}
        if args.sched and switches:
            # Who held the 2 CPUs between the last DELETE written and the last venue
            # parsing it, in kills where that took over 0.5 ms and in the others.
            slow = [w for w in windows if w[1] - w[0] > 500_000]
            fast = [w for w in windows if w[1] - w[0] <= 500_000]
            result["cpu_after_last_delete"] = {
                "slow": {"kills": len(slow), "us_per_kill":
                         gate.cpu_occupancy(switches, slow, roles)},
                "fast": {"kills": len(fast), "us_per_kill":
                         gate.cpu_occupancy(switches, fast, roles)}}
            # And between the first DELETE written and the last: the writes are one
            # synchronous pass in KillSwitch.trip, so any gap is the daemon off its CPU.
            result["cpu_between_first_and_last_delete"] = {
                "kills": len(split["writing"]),
                "us_per_kill": gate.cpu_occupancy(switches, split["writing"], roles)}
    return result


def report(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"kill latency: {r['kills']} kills, 3 venues on loopback, daemon pid "
          f"{r['daemon_pid']}, {r['args']['telemetry_senders']} telemetry sender(s) running")
    print(h.machine_line(m))
    print(f"  kill -> last venue parsed DELETE  {h.fmt(r['latency_ms'])}")
    print(f"  kill -> first venue               {h.fmt(r['first_venue_ms'])}")
    print(f"  first -> last venue (spread)      {h.fmt(r['spread_ms'])}")
    print(f"  warm-up kills (not counted)       {h.fmt(r['warmup_latency_ms'])}")
    print("  " + h.per_block_line(r["per_block_p50_ms"], "kills"))
    print(f"  venue connections after warm-up {r['connections_after_warmup']}, at end "
          f"{r['connections_at_end']}; stray stamps {r['stray_stamps']}; DELETEs per venue "
          f"{r['deletes_per_venue']} (not from a kill: {r['extra_deletes_per_venue']})")
    print(f"  DELETE sizes in bytes per venue (count): {r['delete_sizes_per_venue']}")
    print(f"  desk at end: mode {r['final_mode']}, {r['journal_events']} journal events, "
          f"{r['telemetry_events']:,} telemetry events ingested")
    print("  " + h.others_line(r["cpu"]))
    if "daemon_side_ms" in r:
        missed = r["daemon_side_unmatched"]
        print(f"  syscall trace of the client and the daemon (perf): "
              f"{r['daemon_side_ms']['in_socket_to_last_delete_written'].get('n', 0)} kills "
              f"matched, unmatched {sum(missed.values())} {missed or ''}; DELETEs written "
              f"by {r['deletes_written_by']}; venue fds {r['venue_fds']}")
        for k, v in r["daemon_side_ms"].items():
            print(f"    {k:42s}{h.fmt(v)}")
        for k in ("in_socket_to_last_delete_written", "first_to_last_delete_written",
                  "last_delete_written_to_last_venue_parsed"):
            print(f"    {k}: " + h.per_block_line(r["daemon_side_per_block_p50_ms"][k],
                                                  "matched kills"))
        between = r.get("cpu_between_first_and_last_delete")
        if between:
            print(f"    CPUs from the first DELETE written to the last ({between['kills']} "
                  "kills), us per kill: " + "; ".join(
                      f"{who} {us:.0f}" for who, us in list(between["us_per_kill"].items())[:8]))
        for kind, w in r.get("cpu_after_last_delete", {}).items():
            print(f"    CPUs from the last DELETE written to the last venue's parse, {kind} "
                  f"kills ({w['kills']}), us per kill: " + "; ".join(
                      f"{who} {us:.0f}" for who, us in list(w["us_per_kill"].items())[:8]))
    if "event_loop" in r:
        ev = r["event_loop"]
        print(f"  daemon event loop inside [t0, last arrival] (traced daemon): mean window "
              f"{ev['mean_window_us']:.0f} us, of which task steps {ev['mean_busy_us']:.0f} us")
        print("\n".join(h.event_loop_lines(ev, "kill", 15)
                        + h.timed_calls_lines(ev.get("calls", {}), "[t0, last arrival]",
                                              "kill")))
    print(h.target_line(r["latency_ms"].get("p99", float("inf")), 2.0)
          + " [kill -> last venue parsed: an upper bound]")
    if "daemon_side_ms" in r:
        written = r["daemon_side_ms"]["in_socket_to_last_delete_written"]
        print(h.target_line(written.get("p99", float("inf")), 2.0)
              + " [kill on the daemon's socket -> written to every venue's connection, perf]")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    h.add_run_options(ap, unit="kill", count=1000, warmup=100, max_seconds=1200.0,
                      gap_after="each resume")
    ap.add_argument("--telemetry-senders", type=int, default=0,
                    help="also run this many bench/telemetry_ingest.py senders at full rate "
                         "against the daemon while the measured kills run (their positions "
                         "are flat, so reconciliation stays clean)")
    h.add_trace_options(ap, unit="kill", perf="the daemon's socket syscalls",
                        sched="who held the CPUs between the last DELETE written and the "
                              "last venue's parse",
                        window="inside each kill's window", traced_daemon=True,
                        pin="the daemon on CPU 0, the venues and the client on CPU 1")
    ap.add_argument("--cprofile", help="run bench/traced_daemon.py under cProfile to FILE")
    args = ap.parse_args(argv)
    h.require_perf(ap, args)
    return h.run_and_report("kill_latency", "bench-kill-", partial(run, args), report,
                            keep=args.keep, out=args.out)

if __name__ == "__main__":
    sys.exit(main())
