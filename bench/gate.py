"""The engine gate client (supervisor/control/gate.py): cost of ``allowed`` and halt-to-refuse time.

Two measures (docs/benchmarks.md, "Engine gate"):

(a) **Cost of ``allowed``**, in microseconds per call, answered from memory:

    - ``Gate.allowed`` inside trio, with the gate subscribed to a real daemon and open
      (the view is the daemon's own status), for four orders: new exposure, reducing,
      crossing flat, and with the gate closed (desk HALTED);
    - ``SyncGate.allowed`` from a plain thread (the main thread, no trio), while the
      SyncGate's own trio thread runs beside it.

    Each case: ``--rounds`` rounds of ``--calls`` back-to-back calls timed as a whole
    (``time.perf_counter_ns``), giving the mean per call of each round; plus ``--calls``
    calls timed one by one, minus the timer's own cost, for the per-call tail.
    Target: < 5 us per call.

(b) **Halt to refusal**: a real daemon (``python -m supervisor.cli run``, its own
    process, 3 bench venues as in bench/kill_latency.py), a ``Gate`` subscribed in this
    process (``await nursery.start(gate.run)``, one ``watch`` connection), and a
    second control connection from this process that sends ``kill``:

        t0 = monotonic_ns(); send_all(kill line)
        wait on gate.changed until gate.allowed(SYMBOL, "buy", 100) == 0
        t1 = monotonic_ns()

    latency = t1 - t0 (the gate refuses from t1 on). The kill's answer is read only after
    t1, so nothing else in this process competes. The gate is a subclass of ``Gate``
    that stamps ``monotonic_ns`` when its ``_update`` runs (an observer: no product
    code changed), which splits the time into "daemon + socket + watch read/decode" and
    "update -> allowed() returns 0". The venues' DELETE arrivals are stamped too (bench/
    h11_venue.py), to compare with the cancel-all.

    Each iteration releases the latch the real way, as bench/kill_latency.py does: wait
    for the 3 DELETEs, ``resolve`` the kill's incident, ``reconcile`` (clean), ``resume``
    (RECOVERING, multiplier 0.25), then wait until the gate allows again (> 0), then
    ``--gap-ms``. Warm-up kills first, not counted. Target: p99 < 2 ms.

    ``--sync-kills N`` repeats (b) with a ``SyncGate`` polled from a plain thread
    (``allowed`` then ``time.sleep(--sync-poll-s)``), the blocking engine's view.

Where the time goes (not of record): ``--perf`` traces the socket syscalls of the
daemon and of this process (``write``, ``sendto``, ``recvfrom``, with fd, size and
result: ``_harness.syscall_events``): the kill line on the daemon's socket (this
process's ``sendto`` returns) and read (the daemon's ``recvfrom``), the 'blocked' watch
message written (the daemon's ``os.write`` into the idle watcher's socket, or
``send_all``'s ``sendto`` from its queue, recognised by its size), the DELETEs written
(``write``/``sendto`` on each venue's connection, by fd and size, as in
bench/kill_latency.py), the gate's read; ``--sched`` adds every context switch and wake-up of
the machine (who held the CPUs while the gate waited); ``--steps`` runs
bench/traced_daemon.py (task steps with ids, timed functions); ``--pin`` pins the
daemon to CPU 0 and this process to CPU 1 (an experiment).

Run: ``.venv/bin/python bench/gate.py [--kills 500] [--sync-kills 200]``. It stops by
itself: every wait is bounded (``--wait-s``), and ``--max-seconds`` bounds the run.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import _harness as h
import numpy as np
import trio
from h11_venue import NOTIFY

from supervisor.control.client import AsyncControlClient
from supervisor.control.gate import Gate, SyncGate
from supervisor.core import protocol

VENUES = ("alpha", "beta", "gamma")
SYMBOL = "AAPL"


def kill_line(i: int) -> bytes:
    return b'{"cmd":"kill","reason":"gate bench kill %07d"}\n' % i


class StampedGate(Gate):
    """``Gate`` plus a stamp each time a watch message is applied (observer only)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.updates: list[tuple[int, str]] = []  # (monotonic ns, event)
        self.blocked_message: dict[str, Any] | None = None

    def _update(self, message: dict[str, Any]) -> None:
        ns = time.monotonic_ns()
        super()._update(message)
        if message.get("event") == "blocked":
            self.blocked_message = message
        if len(self.updates) < 1_000_000:
            self.updates.append((ns, str(message.get("event"))))


# --- (a) the cost of allowed ------------------------------------------------------------


def timer_overhead_ns(n: int = 200_000) -> float:
    clock = time.perf_counter_ns
    samples = np.empty(n, dtype=np.int64)
    for i in range(n):
        a = clock()
        samples[i] = clock() - a
    return float(np.median(samples))


def cost(fn: Any, args: tuple[Any, ...], calls: int, rounds: int, overhead_ns: float
         ) -> dict[str, Any]:
    """Mean us per call of each round of ``calls`` calls; per-call tail from single calls."""
    clock = time.perf_counter_ns
    means = []
    for _ in range(rounds):
        t = clock()
        for _ in range(calls):
            fn(*args)
        means.append((clock() - t) / calls / 1000.0)
    single = np.empty(calls, dtype=np.int64)
    for i in range(calls):
        t = clock()
        fn(*args)
        single[i] = clock() - t
    one = (single - overhead_ns) / 1000.0
    return {"result": fn(*args), "round_mean_us": {"min": min(means),
                                                   "median": float(np.median(means)),
                                                   "max": max(means)},
            "single_us": {"p50": float(np.percentile(one, 50)),
                          "p99": float(np.percentile(one, 99)),
                          "p99.9": float(np.percentile(one, 99.9)), "max": float(one.max())}}


# --- (b) halt to refusal ------------------------------------------------------------------


class Rig:
    """The bench's side of one iteration: kill, wait for refusal, release the latch."""

    def __init__(self, ctl: AsyncControlClient, notify: socket.socket, wait_s: float) -> None:
        self.ctl = ctl
        self.raw = notify  # non-blocking once trio wraps it
        self.notify = trio.socket.from_stdlib_socket(notify)
        self.wait_s = wait_s
        self.perf: subprocess.Popen[str] | None = None

    def drain(self) -> int:
        return h.drain(self.raw)  # non-blocking already: trio made it so

    async def arrivals(self, t0: int, i: int) -> list[int]:
        got: list[int | None] = [None] * len(VENUES)
        try:
            with trio.fail_after(self.wait_s):
                while None in got:
                    index, ns = NOTIFY.unpack(await self.notify.recv(64))
                    if ns >= t0 and got[index] is None:
                        got[index] = ns
        except trio.TooSlowError:
            raise h.Aborted(f"kill {i}: DELETE not seen by every venue in {self.wait_s} s: "
                            f"{got}") from None
        return [g for g in got if g is not None]

    async def release(self, killed: dict[str, Any], i: int) -> None:
        """``_harness.release_steps`` over this process's async control connection."""
        what = f"kill {i}"
        steps = h.release_steps(h.expect_latched(killed, what), what)
        answer = None
        with contextlib.suppress(StopIteration):
            while True:
                answer = await self.ctl.request(**steps.send(answer))


async def wait_gate(gate: Gate, want_open: bool, limit_s: float, what: str) -> None:
    with trio.move_on_after(limit_s):
        while True:
            changed = gate.changed
            if (gate.allowed(SYMBOL, "buy", 100.0) > 0) == want_open:
                return
            await changed.wait()
    raise h.Aborted(f"{what}: the gate did not {'open' if want_open else 'close'} in {limit_s} s")


async def halt_to_refusal(gate: StampedGate, rig: Rig, args: argparse.Namespace,
                          started: float) -> dict[str, Any]:
    rows: list[dict[str, int]] = []
    sockets: list[dict[int, str]] = []  # --perf: venue_sockets snapshots of the daemon
    for i in range(args.warmup + args.kills):
        if time.monotonic() - started > args.max_seconds:
            raise h.Aborted(f"--max-seconds {args.max_seconds} reached after {i} kills")
        if i == args.warmup and args.perf:
            rig.perf = start_perf([args.daemon_pid, os.getpid()], args.tmp / "perf.data",
                                  args.tmp / "perf.log", sched=args.sched)
            # Which of the daemon's fds is which venue's connection: now and at the end.
            sockets.append(h.venue_sockets(args.daemon_pid, args.urls))
        await wait_gate(gate, True, args.wait_s, f"before kill {i}")
        rig.drain()
        n_updates = len(gate.updates)
        line = kill_line(i)
        t0 = time.monotonic_ns()
        await rig.ctl.stream.send_all(line)
        if args.poll:
            # Tight poll: the engine asks before every order and yields in between.
            with trio.fail_after(args.wait_s):
                while gate.allowed(SYMBOL, "buy", 100.0) > 0:
                    await trio.lowlevel.checkpoint()
        else:
            with trio.fail_after(args.wait_s):
                while True:
                    changed = gate.changed
                    if gate.allowed(SYMBOL, "buy", 100.0) == 0:
                        break
                    await changed.wait()
        t1 = time.monotonic_ns()
        killed = await rig.ctl.read_line()
        t_answer = time.monotonic_ns()
        if not killed.get("ok"):
            raise h.Aborted(f"kill {i}: refused: {killed}")
        blocked = next((ns for ns, ev in gate.updates[n_updates:] if ev == "blocked"), None)
        if blocked is None:
            raise h.Aborted(f"kill {i}: the gate closed without a 'blocked' message")
        arrivals = await rig.arrivals(t0, i)
        await rig.release(killed["result"], i)
        if i >= args.warmup:
            rows.append({"t0": t0, "refused": t1, "update": blocked, "answer": t_answer,
                         "last_delete": max(arrivals), "first_delete": min(arrivals)})
        await trio.sleep(args.gap_ms / 1000.0)
    out = summarise_kills(rows)
    if rig.perf is not None:
        roles = thread_roles({**args.roles, os.getpid(): "gate (this process)"})
        sockets.append(h.venue_sockets(args.daemon_pid, args.urls))
        rig.perf.send_signal(signal.SIGINT)
        rig.perf.wait(60)
        rig.perf = None
        assert gate.blocked_message is not None
        out["perf"] = daemon_side(rows, args.tmp / "perf.data", args.daemon_pid,
                                  len(protocol.ok(gate.blocked_message)),
                                  len(kill_line(0)), h.venue_sockets_union(sockets),
                                  args.delete_sizes, roles if args.sched else None)
    return out


def thread_roles(pids: dict[int, str]) -> dict[int, str]:
    """Thread id -> which process (and whether its main thread) it belongs to."""
    roles = {0: "idle"}
    for pid, name in pids.items():
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            roles[tid] = name if tid == pid else f"{name}, worker thread"
    return roles


def cpu_occupancy(switches: list[tuple[int, int, str]], windows: list[tuple[int, int]],
                  roles: dict[int, str]) -> dict[str, float]:
    """Mean us per window that each role held a CPU (summed over the CPUs)."""
    per_cpu: dict[int, tuple[np.ndarray, list[str]]] = {}
    for cpu in {c for c, _, _ in switches}:
        rows = sorted((ns, who) for c, ns, who in switches if c == cpu)
        names = []
        for _, who in rows:
            comm, _, tid = who.rpartition("/")
            names.append(roles.get(int(tid), f"other ({comm})") if tid.isdigit() else who)
        per_cpu[cpu] = (np.array([ns for ns, _ in rows], dtype=np.int64), names)
    total: dict[str, float] = {}
    for a, b in windows:
        for stamps, names in per_cpu.values():
            k = int(np.searchsorted(stamps, a, side="right")) - 1
            t = a
            while t < b:
                who = names[k] if k >= 0 else "unknown"
                nxt = int(stamps[k + 1]) if k + 1 < len(stamps) else b
                end = min(nxt, b)
                total[who] = total.get(who, 0.0) + (end - t) / 1000.0
                t = end
                k += 1
    n = max(len(windows), 1)
    return {who: us / n for who, us in sorted(total.items(), key=lambda x: -x[1])}


def start_perf(pids: list[int], out: Path, log: Path, *, sched: bool = False
               ) -> subprocess.Popen[str]:
    """perf record (CLOCK_MONOTONIC) of the socket syscalls of the daemon and of this
    process: ``write``, ``sendto``, ``recvfrom``, entry (fd, size) and exit (result)
    (``_harness.syscall_events``). The "blocked" message and the DELETEs leave the daemon
    by ``write`` (``os.write`` in control.py's direct watch write and in the warm line's
    ``send_cancel_nowait``) or, when they fall back to trio's ``send_all``, by ``sendto``.

    ``sched``: the whole machine instead (-a), plus every context switch and wake-up, to
    see which threads held the 2 CPUs while the gate's process waited for one."""
    events = h.syscall_events()
    target = ["-p", ",".join(map(str, pids))]
    if sched:
        events += ["-e", "sched:sched_switch", "-e", "sched:sched_wakeup"]
        target = ["-a"]
    return h.start_perf([*events, *target], out, log)


def read_perf(data: Path, switches: list[tuple[int, int, str]] | None = None,
              wakeups: list[tuple[int, int, int]] | None = None) -> None:
    """The scheduler events of a ``start_perf(..., sched=True)`` record (the syscalls are
    read by ``_harness.read_syscalls``).

    ``switches`` gets every context switch: (cpu, ns, comm/pid of the thread switched in);
    ``wakeups`` every wake-up: (ns, thread id woken, the CPU it was queued on).
    """
    text = subprocess.run(["perf", "script", "-i", str(data), "--ns", "-F",
                           "pid,cpu,time,event,trace"],
                          capture_output=True, text=True, check=True, timeout=300).stdout
    for row in text.splitlines():
        head, _, rest = row.strip().partition(": ")
        fields = head.split()
        if len(fields) != 3 or not rest:
            continue
        cpu, stamp = int(fields[1].strip("[]")), fields[2].rstrip(":")
        if "sched_wakeup" in rest:
            if wakeups is not None:
                kv = dict(x.split("=", 1) for x in rest.split() if "=" in x)
                wakeups.append((h.perf_ns(stamp), int(kv["pid"]), int(kv["target_cpu"])))
        elif "sched_switch" in rest and switches is not None:
            nxt = rest.split("==>", 1)[1].split()  # next_comm=X next_pid=N next_prio=P
            comm = " ".join(nxt[:-2]).removeprefix("next_comm=")
            switches.append((cpu, h.perf_ns(stamp),
                             f"{comm}/{nxt[-2].removeprefix('next_pid=')}"))


# The splits of one kill in the syscall trace, in the order printed.
SPLITS = (
    "client_write",  # t0 -> this process's sendto of the kill line returned
    "in_socket_to_daemon_read",  # ... -> the daemon's recvfrom returned the line
    "daemon_read_to_blocked_written",  # ... -> its write of 'blocked' returned
    "blocked_write_syscall",  # that write, entry to exit
    "blocked_written_to_gate_read",  # ... -> this process's recvfrom returned it
    "gate_read_to_gate_update",  # ... -> Gate._update runs (StampedGate's clock)
    "gate_update_to_refused",  # ... -> allowed() returned 0
    "in_socket_to_blocked_written",
    "in_socket_to_refused",
    "daemon_read_to_first_delete_written",
    "daemon_read_to_last_delete_written",
)


def daemon_side(rows: list[dict[str, int]], data: Path, daemon_pid: int, blocked_len: int,
                line_len: int, fds: dict[int, str], delete_sizes: set[int],
                roles: dict[int, str] | None = None) -> dict[str, Any]:
    """Split each kill with the socket syscalls of the daemon and of this process (perf):

    t0 -> the kill line is on the daemon's socket (this process's ``sendto`` of it
    returns) -> the daemon's ``recvfrom`` returns it -> the daemon's write of the
    'blocked' watch message returns (a ``write`` or ``sendto`` of its size: the direct
    ``os.write`` into the idle watcher's socket, or ``send_all`` from the queue) -> this
    process's ``recvfrom`` returns it -> ``Gate._update`` runs -> ``allowed()`` is 0; and
    where that write fell among the daemon's DELETEs, each recognised by its venue
    connection (``fds``: fd -> venue, ``_harness.venue_sockets``) and size and written
    when its syscall returned all of it. Kills missing a piece are counted in
    ``unmatched`` by what was missing."""
    switches: list[tuple[int, int, str]] = []
    wakeups: list[tuple[int, int, int]] = []
    if roles is not None:
        read_perf(data, switches, wakeups)
    calls = h.read_syscalls(data)
    me = os.getpid()
    writes = h.delete_writes(calls, daemon_pid, fds, delete_sizes)
    w_ns = np.array([w.enter_ns for w in writes], dtype=np.int64)
    sent = [c for c in calls if c.pid == me and c.name == "sendto"
            and c.size == line_len and c.ret == line_len]
    s_ns = np.array([c.enter_ns for c in sent], dtype=np.int64)
    reads = [c for c in calls if c.pid == daemon_pid and c.name == "recvfrom"
             and c.ret == line_len]
    r_ns = np.array([c.exit_ns for c in reads], dtype=np.int64)
    blocked = [c for c in calls if c.pid == daemon_pid and c.name in ("write", "sendto")
               and c.fd not in fds and c.size == blocked_len and c.ret == blocked_len]
    b_ns = np.array([c.enter_ns for c in blocked], dtype=np.int64)
    # The gate's reads: this process's recvfroms that returned at least the message (a
    # read may hold more than one line).
    gate_reads = [c for c in calls if c.pid == me and c.name == "recvfrom"
                  and c.ret is not None and c.ret >= blocked_len]
    g_ns = np.array([c.exit_ns for c in gate_reads], dtype=np.int64)
    parts: dict[str, list[int]] = {k: [] for k in SPLITS}
    before = [0] * (len(VENUES) + 1)  # DELETEs written before 'blocked' was: 0 .. 3
    unmatched: dict[str, int] = {}
    blocked_by: dict[str, int] = {}
    blocked_fds: dict[int, int] = {}
    deletes_by: dict[str, int] = {}
    waits: dict[str, list[tuple[int, int]]] = {"fast": [], "slow": []}
    early = 0  # kills whose gate read 'blocked' before the daemon's write returned

    def miss(why: str) -> None:
        unmatched[why] = unmatched.get(why, 0) + 1

    for r in rows:
        k = int(np.searchsorted(s_ns, r["t0"]))
        if k == len(sent) or sent[k].enter_ns > r["refused"]:
            miss("no sendto of the kill line")
            continue
        on_socket = sent[k].exit_ns
        k = int(np.searchsorted(r_ns, on_socket))
        if k == len(reads) or reads[k].exit_ns > r["update"]:
            miss("no daemon recvfrom of the kill line")
            continue
        read = reads[k].exit_ns
        k = int(np.searchsorted(b_ns, read))
        if k == len(blocked) or blocked[k].enter_ns > r["update"]:
            miss("no 'blocked' written before the gate's update")
            continue
        b = blocked[k]
        # The last read of the gate before its update, after the write began (the bytes
        # are readable inside the syscall: the gate may read them before it returns).
        k = int(np.searchsorted(g_ns, r["update"])) - 1
        if k < 0 or gate_reads[k].exit_ns < b.enter_ns:
            miss("no gate recvfrom of 'blocked'")
            continue
        gate_read = gate_reads[k].exit_ns
        early += gate_read < b.exit_ns
        deletes = h.first_delete_per_venue(writes, w_ns, read, r["last_delete"], VENUES)
        if deletes is None:
            miss("a venue without a DELETE written")
            continue
        if not all(d.complete for d in deletes):
            miss("a DELETE written in part (the rest by send_all)")
            continue
        done = [d.written_ns for d in deletes]
        blocked_by[b.name] = blocked_by.get(b.name, 0) + 1
        blocked_fds[b.fd] = blocked_fds.get(b.fd, 0) + 1
        for d in deletes:
            deletes_by[d.name] = deletes_by.get(d.name, 0) + 1
        parts["client_write"].append(on_socket - r["t0"])
        parts["in_socket_to_daemon_read"].append(read - on_socket)
        parts["daemon_read_to_blocked_written"].append(b.exit_ns - read)
        parts["blocked_write_syscall"].append(b.exit_ns - b.enter_ns)
        parts["blocked_written_to_gate_read"].append(gate_read - b.exit_ns)
        parts["gate_read_to_gate_update"].append(r["update"] - gate_read)
        parts["gate_update_to_refused"].append(r["refused"] - r["update"])
        parts["in_socket_to_blocked_written"].append(b.exit_ns - on_socket)
        parts["in_socket_to_refused"].append(r["refused"] - on_socket)
        parts["daemon_read_to_first_delete_written"].append(min(done) - read)
        parts["daemon_read_to_last_delete_written"].append(max(done) - read)
        before[sum(x < b.exit_ns for x in done)] += 1
        # From the write's entry: the gate is woken inside the syscall, before it returns.
        waits["slow" if gate_read - b.exit_ns > 300_000 else "fast"].append(
            (b.enter_ns, gate_read))
    out: dict[str, Any] = {
        "parts_ms": {k: h.summary_ms(v) for k, v in parts.items()},
        "matched": len(parts["client_write"]),
        "deletes_written_before_blocked": before, "unmatched": unmatched,
        "blocked_message_bytes": blocked_len, "blocked_written_by": blocked_by,
        "blocked_fds": {str(fd): n for fd, n in sorted(blocked_fds.items())},
        "deletes_written_by": deletes_by, "gate_read_before_write_returned": early,
        "venue_fds": {str(fd): name for fd, name in sorted(fds.items())}}
    if roles is not None and switches:
        # Who held the 2 CPUs between the daemon's write of 'blocked' and the gate's
        # read of it, in kills where that took over 0.3 ms and in the others.
        out["cpu_while_gate_waits"] = {
            k: {"kills": len(w), "us_per_kill": cpu_occupancy(switches, w, roles),
                "wakeup": gate_wakeups(w, switches, wakeups, roles)}
            for k, w in waits.items()}
    return out


def gate_wakeups(windows: list[tuple[int, int]], switches: list[tuple[int, int, str]],
                 wakeups: list[tuple[int, int, int]], roles: dict[int, str]) -> dict[str, Any]:
    """For each window (daemon wrote 'blocked', gate read it): when this process's main
    thread was woken, on which CPU, what that CPU ran then, and how long until the
    thread ran (the scheduler's delay)."""
    me = os.getpid()
    my_wakes = sorted((ns, cpu) for ns, tid, cpu in wakeups if tid == me)
    w_ns = np.array([x[0] for x in my_wakes], dtype=np.int64)
    runs: dict[int, list[int]] = {}
    on_cpu: dict[int, tuple[np.ndarray, list[str]]] = {}
    for cpu in {c for c, _, _ in switches}:
        rows = sorted((ns, who) for c, ns, who in switches if c == cpu)
        on_cpu[cpu] = (np.array([x[0] for x in rows], dtype=np.int64), [x[1] for x in rows])
        runs[cpu] = [ns for ns, who in rows if who.endswith(f"/{me}")]
    delay, write_to_wake = [], []
    target: dict[str, int] = {}
    delay_by: dict[str, list[int]] = {}
    for a, b in windows:
        k = int(np.searchsorted(w_ns, a))
        if k >= len(my_wakes) or my_wakes[k][0] > b:
            target["already running (no wake-up)"] = target.get(
                "already running (no wake-up)", 0) + 1
            continue
        ns, cpu = my_wakes[k]
        write_to_wake.append(ns - a)
        stamps, names = on_cpu.get(cpu, (np.array([], dtype=np.int64), []))
        j = int(np.searchsorted(stamps, ns, side="right")) - 1
        who = names[j] if j >= 0 else "?"
        comm, _, tid = who.rpartition("/")
        what = roles.get(int(tid), f"other ({comm})") if tid.isdigit() else who
        target[what] = target.get(what, 0) + 1
        ran = next((r for r in runs.get(cpu, []) if r >= ns), None)
        if ran is not None:
            delay.append(ran - ns)
            delay_by.setdefault(what, []).append(ran - ns)
    return {"woken_on_a_cpu_running": target,
            "wakeup_to_running_by_cpu_state_ms": {k: h.summary_ms(v)
                                                  for k, v in delay_by.items()},
            "write_to_wakeup_ms": h.summary_ms(write_to_wake),
            "wakeup_to_running_ms": h.summary_ms(delay)}


def summarise_kills(rows: list[dict[str, int]]) -> dict[str, Any]:
    def col(a: str, b: str) -> list[int]:
        return [r[b] - r[a] for r in rows]

    lat = col("t0", "refused")
    return {
        "kills": len(rows),
        "halt_to_refusal_ms": h.summary_ms(lat),
        "kill_to_blocked_update_ms": h.summary_ms(col("t0", "update")),
        "update_to_refusal_ms": h.summary_ms(col("update", "refused")),
        "kill_to_answer_read_ms": h.summary_ms(col("t0", "answer")),
        "kill_to_last_delete_ms": h.summary_ms(col("t0", "last_delete")),
        "refused_before_first_delete": sum(r["refused"] < r["first_delete"] for r in rows),
        "per_block_p50_ms": h.per_block_p50(lat),
        "raw_ns": rows,
    }


async def trio_part(args: argparse.Namespace, sock: Path, notify_path: Path,
                    started: float, urls: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    notify = h.open_notify(notify_path)
    gate = StampedGate(str(sock), grace_s=5.0)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(args.wait_s):
            await nursery.start(gate.run)
        await wait_gate(gate, True, args.wait_s, "at start")
        out["view_at_start"] = {"mode": gate.view.mode if gate.view else None,
                                "size_multiplier": gate.view.size_multiplier if gate.view
                                else None}
        # (a) Gate.allowed, gate open on the daemon's real status.
        overhead = timer_overhead_ns()
        out["timer_overhead_ns"] = overhead
        gate.set_position("MSFT", 300.0)
        gate.set_position("NVDA", 50.0)
        cases = {"open, new exposure (buy 100, flat)": ("AAPL", "buy", 100.0),
                 "open, reducing (sell 100 of 300 long)": ("MSFT", "sell", 100.0),
                 "open, crossing flat (sell 100 of 50 long)": ("NVDA", "sell", 100.0)}
        out["gate_allowed"] = {name: cost(gate.allowed, a, args.calls, args.rounds, overhead)
                               for name, a in cases.items()}
        stream = await trio.open_unix_socket(str(sock))
        async with stream:
            rig = Rig(AsyncControlClient(stream, str(sock)), notify, args.wait_s)
            # The closed gate's cost: one kill, measure, release.
            rig.drain()
            await stream.send_all(kill_line(9_999_999))
            killed = await rig.ctl.read_line()
            await wait_gate(gate, False, args.wait_s, "closed-gate cost")
            out["gate_allowed"]["closed (desk HALTED)"] = cost(
                gate.allowed, ("AAPL", "buy", 100.0), args.calls, args.rounds, overhead)
            await rig.arrivals(0, -1)
            await rig.release(killed["result"], -1)
            if args.perf:
                args.delete_sizes = {b for u in urls.values()
                                     for b in h.venue_times(u)["delete_bytes"]}
            # (b) halt to refusal.
            if args.kills:
                out["halt"] = await halt_to_refusal(gate, rig, args, started)
                out["watch_messages"] = len(gate.updates)
        nursery.cancel_scope.cancel()
    notify.close()
    return out


# --- SyncGate, from a plain thread -----------------------------------------------------------


def sync_part(args: argparse.Namespace, sock: Path, notify_path: Path, started: float
              ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    overhead = timer_overhead_ns()
    notify = h.open_notify(notify_path)
    try:
        with SyncGate(str(sock), grace_s=5.0) as gate:
            deadline = time.monotonic() + args.wait_s
            while gate.allowed(SYMBOL, "buy", 100.0) <= 0:
                if time.monotonic() > deadline:
                    raise h.Aborted("SyncGate did not open")
                time.sleep(0.01)
            assert threading.current_thread() is threading.main_thread()
            gate.set_position("MSFT", 300.0)
            out["sync_allowed"] = {
                "open, new exposure (buy 100, flat)": cost(
                    gate.allowed, ("AAPL", "buy", 100.0), args.calls, args.rounds, overhead),
                "open, reducing (sell 100 of 300 long)": cost(
                    gate.allowed, ("MSFT", "sell", 100.0), args.calls, args.rounds, overhead),
            }
            if args.sync_kills:
                out["sync_halt"] = sync_halt(gate, notify, args, started)
    finally:
        notify.close()
    return out


def sync_halt(gate: SyncGate, notify: socket.socket, args: argparse.Namespace,
              started: float) -> dict[str, Any]:
    lat: list[int] = []
    with h.LineClient(gate._gate.socket_path, timeout=args.wait_s) as c:
        for i in range(args.warmup // 2 + args.sync_kills):
            if time.monotonic() - started > args.max_seconds:
                raise h.Aborted(f"--max-seconds {args.max_seconds} reached (SyncGate)")
            what = f"SyncGate kill {i}"
            deadline = time.monotonic() + args.wait_s
            while gate.allowed(SYMBOL, "buy", 100.0) <= 0:
                if time.monotonic() > deadline:
                    raise h.Aborted(f"{what}: the gate did not open again")
                time.sleep(0.001)
            h.drain(notify)
            t0 = time.monotonic_ns()
            c.sock.sendall(kill_line(i))
            limit = t0 + int(args.wait_s * 1e9)
            while gate.allowed(SYMBOL, "buy", 100.0) > 0:
                if args.sync_poll_s:
                    time.sleep(args.sync_poll_s)
                if time.monotonic_ns() > limit:
                    raise h.Aborted(f"{what}: the gate did not close")
            t1 = time.monotonic_ns()
            incident = h.expect_latched(c.result(), what)
            h.wait_arrivals(notify, t0, len(VENUES), args.wait_s, what)
            h.release_latch(c, incident, what)
            if i >= args.warmup // 2:
                lat.append(t1 - t0)
            time.sleep(args.gap_ms / 1000.0)
    return {"kills": len(lat), "halt_to_refusal_ms": h.summary_ms(lat),
            "poll_s": args.sync_poll_s}


# --- the run ---------------------------------------------------------------------------------


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    started = time.monotonic()
    procs: list[tuple[subprocess.Popen[str], bool]] = []
    result: dict[str, Any] = {"machine": h.machine(), "args": dict(vars(args))}
    watch = h.CpuWatch()
    notify_path = tmp / "notify.sock"
    try:
        venues, urls = h.start_venues(VENUES, tmp, notify=notify_path)
        procs += [(proc, False) for proc in venues]
        config, sock = h.write_desk_config(tmp, urls, heartbeat_s=args.heartbeat_s)
        daemon = h.start_daemon(config, sock, tmp / "daemon.log", venues=len(VENUES),
                                traced=["--steps", str(tmp / "steps.json"), "--time-calls",
                                        str(tmp / "calls.json")] if args.steps else None)
        procs.append((daemon, True))
        result["daemon_pid"] = daemon.pid
        if args.pin:
            # The daemon (every thread it has) on CPU 0, this process (the engine's
            # side) on CPU 1; the venues stay where the scheduler puts them.
            for tid in os.listdir(f"/proc/{daemon.pid}/task"):
                os.sched_setaffinity(int(tid), {0})
            os.sched_setaffinity(0, {1})
        # For the perf trace: the daemon's pid, where to write, and (set once a kill
        # has run) the DELETE's size in bytes, which recognises it among the writes.
        args.daemon_pid, args.tmp, args.delete_sizes = daemon.pid, tmp, set()
        args.urls = urls  # venue name -> base URL: which daemon fd is which venue's
        args.roles = {daemon.pid: "daemon", **{proc.pid: f"venue {name}" for proc, name
                                               in zip(venues, VENUES, strict=True)}}
        result.update(trio.run(trio_part, args, sock, notify_path, started, urls))
        notify_path.unlink(missing_ok=True)
        result.update(sync_part(args, sock, notify_path, started))
        with h.LineClient(sock) as c:
            final = c.request({"cmd": "status"})
        result["final_mode"] = final["mode"]
        result["journal_events"] = final["journal_events"]
    finally:
        for proc, group in reversed(procs):
            h.stop(proc, group=group)
    result["cpu"] = watch.foreign()
    if args.steps and "halt" in result:
        rows = result["halt"]["raw_ns"]
        result["event_loop"] = event_loop(tmp / "steps.json", rows)
        result["event_loop"]["calls"] = h.calls_in_windows(
            tmp / "calls.json", [(r["t0"], r["update"]) for r in rows])
    return result


def event_loop(path: Path, rows: list[dict[str, int]]) -> dict[str, Any]:
    """What the traced daemon's event loop ran between t0 and the gate's update, per
    task (the watch connection's task told apart from the kill connection's: it is the
    older one), and the timeline of the median kill."""
    data = json.loads(path.read_text())
    names, ids = data["names"], data["ids"]
    starts, ends = np.array(data["starts"]), np.array(data["ends"])
    first_seen: dict[int, int] = {}
    for k, tid in enumerate(ids):
        first_seen.setdefault(tid, k)
    handles = sorted({ids[k] for k in range(len(ids)) if names[k].endswith(".handle")
                      and starts[k] >= rows[0]["t0"]}, key=lambda t: first_seen[t])
    label = {handles[0]: " (watch connection)"} if handles else {}
    label.update({t: " (kill connection)" for t in handles[1:2]})

    def name(k: int) -> str:
        return names[k] + label.get(ids[k], "")

    per_task: dict[str, list[float]] = {}
    lat = [r["update"] - r["t0"] for r in rows]
    median = int(np.argsort(lat)[len(lat) // 2])
    timeline: list[str] = []
    for n, r in enumerate(rows):
        t0, end = r["t0"], r["update"]
        lo, hi = int(np.searchsorted(ends, t0)), int(np.searchsorted(starts, end))
        for k in range(lo, hi):
            a, b = max(int(starts[k]), t0), min(int(ends[k]), end)
            if b <= a:
                continue
            row = per_task.setdefault(name(k), [0.0, 0.0])
            row[0] += 1
            row[1] += (b - a) / 1000.0
            if n == median:
                timeline.append(f"+{(int(starts[k]) - t0) / 1000:8.1f} us "
                                f"{(b - a) / 1000:7.1f} us  {name(k)}")
        if n == median:
            timeline.append(f"+{(end - t0) / 1000:8.1f} us  gate applied 'blocked'")
    k = len(rows)
    return {"mean_window_us": float(np.mean(lat)) / 1000.0,
            "per_task": sorted(((nm, c / k, us / k) for nm, (c, us) in per_task.items()),
                               key=lambda x: -x[2]),
            "median_kill_timeline": timeline}


def report(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"engine gate: daemon pid {r['daemon_pid']}, 3 venues on loopback; gate view at "
          f"start {r['view_at_start']}")
    print(h.machine_line(m))
    print(f"  (a) cost per call, us (timer overhead {r['timer_overhead_ns']:.0f} ns "
          "subtracted from single calls):")
    worst = 0.0
    for title, part in (("Gate.allowed (trio)", r["gate_allowed"]),
                        ("SyncGate.allowed (plain thread)", r.get("sync_allowed", {}))):
        for name, c in part.items():
            rm, s = c["round_mean_us"], c["single_us"]
            worst = max(worst, rm["median"])
            print(f"    {title:32s} {name:42s} -> {c['result']:6g}: mean {rm['median']:.3f} "
                  f"(rounds {rm['min']:.3f}..{rm['max']:.3f}); single p50 {s['p50']:.3f} "
                  f"p99 {s['p99']:.3f} p99.9 {s['p99.9']:.3f} max {s['max']:.1f}")
    print(f"  target < 5 us per call: {'MET' if worst < 5 else 'MISSED'} (worst mean "
          f"{worst:.3f} us)")
    if "halt" in r:
        k = r["halt"]
        print(f"  (b) halt -> Gate.allowed() == 0, {k['kills']} kills "
              f"({'tight poll' if r['args']['poll'] else 'waiting on gate.changed'}):")
        for key in ("halt_to_refusal_ms", "kill_to_blocked_update_ms", "update_to_refusal_ms",
                    "kill_to_answer_read_ms", "kill_to_last_delete_ms"):
            print(f"    {key:28s}{h.fmt(k[key])}")
        print(f"    refused before the first venue saw its DELETE: "
              f"{k['refused_before_first_delete']} of {k['kills']}")
        print("    " + h.per_block_line(k["per_block_p50_ms"], "kills"))
        print("  " + h.target_line(k["halt_to_refusal_ms"].get("p99", float("inf")), 2.0))
    if "perf" in r.get("halt", {}):
        pf = r["halt"]["perf"]
        missed = pf["unmatched"]
        print(f"    syscall trace of the daemon and the gate (perf): {pf['matched']} kills "
              f"matched, unmatched {sum(missed.values())} {missed or ''}; 'blocked' message "
              f"{pf['blocked_message_bytes']} bytes, written by {pf['blocked_written_by']} "
              f"on daemon fd {pf['blocked_fds']}; DELETEs written by "
              f"{pf['deletes_written_by']}; venue fds {pf['venue_fds']}")
        for key, v in pf["parts_ms"].items():
            print(f"      {key:38s}{h.fmt(v)}")
        print("      DELETEs written before the 'blocked' message (0/1/2/3): "
              f"{pf['deletes_written_before_blocked']}; the gate read it before the "
              f"daemon's write returned: {pf['gate_read_before_write_returned']}")
        for kind, w in pf.get("cpu_while_gate_waits", {}).items():
            print(f"      CPUs between 'blocked' written and the gate's read, {kind} kills "
                  f"({w['kills']}), us per kill: " + "; ".join(
                      f"{who} {us:.0f}" for who, us in list(w["us_per_kill"].items())[:8]))
            wk = w["wakeup"]
            print(f"        gate woken on a CPU running: {wk['woken_on_a_cpu_running']}; "
                  f"write -> wake-up {h.fmt(wk['write_to_wakeup_ms'])}; wake-up -> running "
                  f"{h.fmt(wk['wakeup_to_running_ms'])}")
            for what, v in wk["wakeup_to_running_by_cpu_state_ms"].items():
                print(f"          woken on a CPU running {what}: wake-up -> running {h.fmt(v)}")
    if "sync_halt" in r:
        s = r["sync_halt"]
        print(f"  (b') SyncGate polled from a plain thread (sleep {s['poll_s']} s between "
              f"polls), {s['kills']} kills: {h.fmt(s['halt_to_refusal_ms'])}")
    if "event_loop" in r:
        ev = r["event_loop"]
        print(f"  traced daemon's event loop inside [t0, gate update] (mean window "
              f"{ev['mean_window_us']:.0f} us; numbers of this mode are not of record):")
        print("\n".join(h.event_loop_lines(ev, "kill", 10)
                        + h.timed_calls_lines(ev["calls"], "[t0, gate update]", "kill")))
    print(f"  desk at end: mode {r['final_mode']}, {r['journal_events']} journal events")
    print("  " + h.others_line(r["cpu"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    h.add_run_options(ap, unit="kill", count=500, warmup=50, max_seconds=900.0,
                      gap_after="each release")
    ap.add_argument("--sync-kills", type=int, default=0,
                    help="also measure halt -> refusal with a SyncGate polled from a thread")
    ap.add_argument("--sync-poll-s", type=float, default=0.0,
                    help="SyncGate: sleep between two polls (0: time.sleep(0))")
    ap.add_argument("--poll", action="store_true",
                    help="Gate: poll allowed() with a trio checkpoint between calls instead "
                         "of waiting on gate.changed")
    ap.add_argument("--calls", type=int, default=100_000, help="calls per round in (a)")
    ap.add_argument("--rounds", type=int, default=20, help="rounds per case in (a)")
    h.add_trace_options(ap, unit="kill",
                        perf="the socket syscalls of the daemon and of this process",
                        sched="who held the CPUs while the gate waited for its message",
                        window="between the kill and the gate's update", traced_daemon=True,
                        pin="the daemon on CPU 0 and this process on CPU 1 (how much of the "
                            "time is the OS scheduler's placement)")
    ap.add_argument("--no-gc", action="store_true",
                    help="gc.disable() in this process (the engine's side) during the run")
    args = ap.parse_args(argv)
    h.require_perf(ap, args)
    if args.no_gc:
        gc.disable()
    return h.run_and_report("gate", "bench-gate-", partial(run, args), report,
                            keep=args.keep, out=args.out)

if __name__ == "__main__":
    sys.exit(main())
