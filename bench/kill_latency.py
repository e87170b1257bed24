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

``--perf`` also records the daemon's ``recvfrom``/``sendto`` syscalls with ``perf record``
(CLOCK_MONOTONIC) while the measured kills run, and splits each kill into client->daemon
read, daemon read->last DELETE written, and last write->venue parsed. This observes the
daemon from outside (kernel tracepoints); it changes no product code.

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


def start_perf(pid: int, out: Path, log: Path) -> subprocess.Popen[str]:
    """perf record of the daemon's socket syscalls (its writes and reads)."""
    return h.start_perf(["-e", "syscalls:sys_enter_sendto", "-e", "syscalls:sys_exit_sendto",
                         "-e", "syscalls:sys_exit_recvfrom", "-p", str(pid)], out, log)


def decompose(kills: list[tuple[int, list[int]]], sends: list[tuple[int, int, int]],
              recvs: list[tuple[int, int]], delete_sizes: set[int], line_len: int
              ) -> dict[str, list[int]]:
    """Per kill: client write -> daemon read, daemon read -> each DELETE written, last
    DELETE written -> last venue parsed. Kills whose syscalls cannot be matched are
    skipped (counted in 'unmatched')."""
    s_ns = np.array([s[0] for s in sends], dtype=np.int64)
    r_ns = np.array([r[0] for r in recvs], dtype=np.int64)
    out: dict[str, list[int]] = defaultdict(list)
    for t0, arrivals in kills:
        end = max(arrivals)
        lo = int(np.searchsorted(r_ns, t0))
        got = next((r_ns[k] for k in range(lo, len(recvs))
                    if recvs[k][1] == line_len and r_ns[k] <= end), None)
        lo = int(np.searchsorted(s_ns, t0))
        hi = int(np.searchsorted(s_ns, end, side="right"))
        matched = [k for k in range(lo, hi) if sends[k][1] in delete_sizes][: len(arrivals)]
        if got is None or len(matched) < len(arrivals):
            out["unmatched"].append(1)
            continue
        deletes = [int(s_ns[k]) for k in matched]
        out["delete_sendto_syscall"] += [sends[k][2] - sends[k][0] for k in matched
                                         if sends[k][2]]
        got = int(got)
        out["client_to_daemon_read"].append(got - t0)
        out["daemon_read_to_first_delete"].append(deletes[0] - got)
        if len(deletes) == 3:
            out["daemon_read_to_second_delete"].append(deletes[1] - got)
        out["daemon_read_to_last_delete"].append(deletes[-1] - got)
        out["last_delete_to_last_venue_parsed"].append(end - deletes[-1])
        out["windows"].append((deletes[-1], end))  # type: ignore[arg-type]
    return out


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
                    if args.perf and args.sched:
                        import gate  # its perf helpers: pid-aware, context switches

                        perf = gate.start_perf([daemon.pid], tmp / "perf.data",
                                               tmp / "perf.log", sched=True)
                        procs.append((perf, False))
                    elif args.perf:
                        perf = start_perf(daemon.pid, tmp / "perf.data", tmp / "perf.log")
                        procs.append((perf, False))
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
            import gate

            trace = gate.read_perf(tmp / "perf.data", switches).get(
                daemon.pid, {"send": [], "recv": []})
            sends = [(ns, n, 0) for ns, n in trace["send"]]
            recvs = trace["recv"]
        else:
            sends, recvs = h.read_socket_syscalls(tmp / "perf.data")
        parts = decompose(kills, sends, recvs, sizes, len(kill_line(0)))
        windows = parts.pop("windows", [])
        result["daemon_side_ms"] = {k: h.summary_ms(v) for k, v in parts.items()
                                    if k != "unmatched"}
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
        result["daemon_side_unmatched"] = len(parts.get("unmatched", []))
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
        print(f"  syscall trace of the daemon (perf, {r['daemon_side_unmatched']} unmatched):")
        for k, v in r["daemon_side_ms"].items():
            print(f"    {k:34s}{h.fmt(v)}")
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
    print(h.target_line(r["latency_ms"].get("p99", float("inf")), 2.0))


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
