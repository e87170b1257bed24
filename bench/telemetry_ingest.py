"""Telemetry ingest through the control socket, with ``status`` answered at the same time.

What is measured: events per second that the daemon (``python -m supervisor.cli run``, its
own process) accepts from a separate client process over one Unix-socket connection,
in ``{"cmd":"telemetry","events":[...100 events...]}`` lines, pipelined with at most
``--window`` requests outstanding, every response checked to be ``{"ok":true,...}``. The
daemon does its real processing: one msgspec decode of the batch into the tagged event
Structs, then ``Book.ingest`` (positions, orders, acks, fills, predictions...), with its
actors (heartbeat against one bench venue, kill-switch, reconciliation) running. At the
same time a third process asks ``status`` every 10 ms on its own connection and records
each round trip.

Each batch holds 100 events for ~500 symbols: 40 bar, 20 prediction, 10 order, 10 ack,
8 fill, 8 position, 4 pnl; every order is acked (and most filled) in its batch, with
unique order ids and the current wall time as ``ts``, so the heartbeat's ack watch sees
a healthy engine. Batches are pre-encoded; per send the client only substitutes the
timestamp and the batch number into the bytes (two ``bytes.replace``).

So that the client is known not to be the bottleneck, the same client first runs for
``--sink-seconds`` against a sink (a process that answers every line without reading
it). With ``--senders 2`` two client processes share the load (one connection each).

Processes, all started here and stopped by their own process id:

    driver   this process: starts the rest, merges their results, prints
    sender   --role sender: the telemetry client (one or more)
    status   --role status: the status prober
    sink     --role sink: the answer-everything server for the client-only run
    daemon   python -m supervisor.cli run --config X.toml (1 bench venue)
    venue    bench/h11_venue.py

Run: ``.venv/bin/python bench/telemetry_ingest.py [--seconds 10] [--senders 1]``. It
stops by itself: fixed durations, every wait bounded.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness as h
import msgspec
import numpy as np
import trio

BATCH = 100
SYMBOLS = [f"S{i:03d}" for i in range(500)]
TS = b"T" * 17  # f"{time.time():.6f}" is 17 characters until 2286
SEQ = b"Q" * 9  # the batch number, zero-padded
OK_LINE = b'{"ok":true,"result":{"accepted":100}}\n'


# --- the client's batches ---------------------------------------------------------------


def templates(sender: int, count: int = 256, seed: int = 7, *, flat: bool = False
              ) -> list[bytes]:
    """``count`` encoded batches with TS and SEQ placeholders (see the module doc).

    ``flat``: every position reported is 0, so a reconciliation against the bench venues
    (which hold nothing) stays clean (bench/kill_latency.py --telemetry-senders)."""
    rng = random.Random(seed + sender)
    out = []
    for _ in range(count):
        life: list[dict[str, Any]] = []
        for k in range(10):
            oid = f"s{sender}-{SEQ.decode()}-{k:02d}"
            sym = rng.choice(SYMBOLS)
            side = rng.choice(("buy", "sell"))
            qty = float(rng.randrange(1, 50) * 10)
            life.append({"kind": "order", "order_id": oid, "symbol": sym, "side": side,
                         "qty": qty, "ts": "@TS@", "venue": "bench",
                         "client_order_id": f"desk-{oid}"})
            life.append({"kind": "ack", "order_id": oid, "ts": "@TS@"})
            if k < 8:
                life.append({"kind": "fill", "order_id": oid, "symbol": sym, "side": side,
                             "qty": qty, "price": round(rng.uniform(10, 500), 2),
                             "ts": "@TS@", "venue": "bench"})
                qty_held = 0.0 if flat else float(rng.randrange(-500, 500))
                life.append({"kind": "position", "symbol": sym, "qty": qty_held, "ts": "@TS@"})
        market: list[dict[str, Any]] = []
        market += [{"kind": "bar", "symbol": rng.choice(SYMBOLS), "ts": "@TS@",
                    "vendor": "polygon"} for _ in range(40)]
        market += [{"kind": "prediction", "symbol": rng.choice(SYMBOLS),
                    "value": round(rng.gauss(0, 1), 4), "ts": "@TS@"} for _ in range(20)]
        market += [{"kind": "pnl", "ts": "@TS@", "value": round(rng.gauss(0, 5000), 2)}
                   for _ in range(4)]
        rng.shuffle(market)
        # Interleave, keeping each order's order -> ack -> fill -> position sequence.
        slots = sorted(rng.sample(range(BATCH), len(life)))
        events, li, mi = [], 0, 0
        for i in range(BATCH):
            if li < len(life) and slots[li] == i:
                events.append(life[li])
                li += 1
            else:
                events.append(market[mi])
                mi += 1
        line = msgspec.json.encode({"cmd": "telemetry", "events": events}) + b"\n"
        out.append(line.replace(b'"@TS@"', TS))
        assert len(events) == BATCH
    return out


def fill(template: bytes, seq: int) -> bytes:
    return template.replace(TS, b"%.6f" % time.time()).replace(SEQ, b"%09d" % seq)


# --- roles --------------------------------------------------------------------------------


async def wait_until(start_at: float) -> None:
    await trio.sleep(max(0.0, start_at - time.monotonic()))


class _Progress:
    def __init__(self) -> None:
        self.sent = 0
        self.acked = 0
        self.bad = 0
        self.first_bad: str | None = None
        self.writing = True


async def run_sender(args: argparse.Namespace) -> dict[str, Any]:
    pool = templates(args.index, flat=args.flat)
    stream = await trio.open_unix_socket(args.socket)
    window = trio.Semaphore(args.window)
    stamps: list[tuple[int, int]] = []  # (monotonic ns, batches acked so far)
    state = _Progress()
    await wait_until(args.start_at)
    deadline = time.monotonic() + args.seconds
    stamps.append((time.monotonic_ns(), 0))

    async def writer() -> None:
        seq = 0
        while time.monotonic() < deadline:
            await window.acquire()
            await stream.send_all(fill(pool[seq % len(pool)], seq))
            seq += 1
            state.sent = seq
        state.writing = False

    async def reader() -> None:
        buf = b""
        while state.writing or state.acked < state.sent:
            chunk = await stream.receive_some(1 << 20)
            if not chunk:
                raise RuntimeError("the daemon closed the telemetry connection")
            buf += chunk
            end = buf.rfind(b"\n") + 1
            if not end:
                continue
            done, buf = buf[:end], buf[end:]
            n = done.count(b"\n")
            if done != OK_LINE * n:
                for line in done.splitlines():
                    if line + b"\n" != OK_LINE:
                        state.bad += 1
                        state.first_bad = state.first_bad or line[:300].decode()
            state.acked += n
            stamps.append((time.monotonic_ns(), state.acked))
            for _ in range(n):
                window.release()

    with trio.fail_after(args.seconds + 30):
        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            nursery.start_soon(reader)
    return {"sent": state.sent, "acked": state.acked, "bad": state.bad,
            "first_bad": state.first_bad, "stamps": stamps, "events_per_batch": BATCH}


def run_status(args: argparse.Namespace) -> dict[str, Any]:
    """Blocking on purpose: the prober should cost nothing between its requests."""
    lat: list[int] = []
    sent_at: list[int] = []
    late = 0
    last: dict[str, Any] = {}
    with h.LineClient(args.socket, timeout=10.0) as c:
        start = args.start_at
        time.sleep(max(0.0, start - time.monotonic()))
        k = 0
        while True:
            due = start + k * args.every_s
            now = time.monotonic()
            if due >= start + args.seconds:
                break
            if due > now:
                time.sleep(due - now)
            else:
                late += 1  # the previous answer came after this one was due
            t0 = time.monotonic_ns()
            c.sock.sendall(b'{"cmd":"status"}\n')
            line = c.read_line()
            lat.append(time.monotonic_ns() - t0)
            sent_at.append(t0)
            k += 1
            if not line.startswith(b'{"ok":true'):
                raise RuntimeError(f"status refused: {line[:300]!r}")
        last = msgspec.json.decode(line)["result"]
    return {"latency_ns": lat, "sent_ns": sent_at, "late": late, "mode": last.get("mode"),
            "telemetry": last.get("telemetry"), "incidents": len(last.get("incidents", []))}


async def run_sink(args: argparse.Namespace) -> None:
    """Answer every line with the daemon's answer, without reading it; stop on SIGTERM."""

    async def serve(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                while chunk := await stream.receive_some(1 << 20):
                    if n := chunk.count(b"\n"):
                        await stream.send_all(OK_LINE * n)
            except trio.BrokenResourceError:
                pass

    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(args.socket)
    sock.listen(16)
    print("ready", flush=True)
    await trio.serve_listeners(serve, [trio.SocketListener(sock)])


def check_batches() -> None:
    """Every template must be a request the daemon accepts (its own decoder says so)."""
    from supervisor.core.protocol import TelemetryBatch, decode_request

    for sender in range(2):
        for seq, template in enumerate(templates(sender)):
            req = decode_request(fill(template, seq))
            assert isinstance(req, TelemetryBatch) and len(req.events) == BATCH


# --- the driver -----------------------------------------------------------------------------


def role(name: str, args: argparse.Namespace, socket: Path, start_at: float, *, index: int = 0,
         seconds: float | None = None) -> list[str]:
    return [h.PYTHON, __file__, "--role", name, "--socket", str(socket), "--index", str(index),
            "--window", str(args.window), "--seconds", str(seconds or args.seconds),
            "--start-at", repr(start_at), "--every-s", str(args.every_s)]


def collect(proc: subprocess.Popen[str], what: str, timeout: float) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"{what} failed with {proc.returncode}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def rate(senders: list[dict[str, Any]], skip_s: float) -> dict[str, Any]:
    """Events/s over the window all senders were running, first ``skip_s`` left out."""
    lo = max(s["stamps"][0][0] for s in senders) + int(skip_s * 1e9)
    hi = min(s["stamps"][-1][0] for s in senders)
    total = 0
    per_second: list[int] = []
    edges = np.arange(lo, hi + 1, 1_000_000_000)
    counts = np.zeros(max(len(edges) - 1, 0))
    for s in senders:
        t = np.array([x[0] for x in s["stamps"]])
        a = np.array([x[1] for x in s["stamps"]])
        at = np.interp([lo, hi], t, a)
        total += (at[1] - at[0]) * s["events_per_batch"]
        if len(edges) > 1:
            counts += np.diff(np.interp(edges, t, a)) * s["events_per_batch"]
    per_second = [int(c) for c in counts]
    seconds = (hi - lo) / 1e9
    return {"events_per_s": total / seconds if seconds > 0 else 0.0, "window_s": seconds,
            "per_second": per_second,
            "batches_acked": sum(s["acked"] for s in senders),
            "bad_responses": sum(s["bad"] for s in senders),
            "first_bad": next((s["first_bad"] for s in senders if s["first_bad"]), None)}


def client_only(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    watch = h.CpuWatch()
    sock = tmp / "sink.sock"
    sink = h.spawn([h.PYTHON, __file__, "--role", "sink", "--socket", str(sock)],
                   log=tmp / "sink.log", stdout_pipe=True)
    try:
        assert sink.stdout is not None
        if sink.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the sink did not start: see {tmp / 'sink.log'}")
        start_at = time.monotonic() + 1.5
        sender = h.spawn(role("sender", args, sock, start_at, seconds=args.sink_seconds),
                         log=tmp / "sink-sender.log", stdout_pipe=True)
        try:
            result = collect(sender, "the sender (sink run)", args.sink_seconds + 60)
        finally:
            h.stop(sender)
    finally:
        h.stop(sink)
    out = rate([result], args.skip_s)
    out["cpu"] = watch.foreign()
    return out


def against_daemon(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    watch = h.CpuWatch()
    procs: list[tuple[subprocess.Popen[str], bool]] = []
    try:
        venue, url = h.start_venue("bench", 0, notify=None, log=tmp / "venue.log")
        procs.append((venue, False))
        sock = tmp / "control.sock"
        config = tmp / "desk.toml"
        h.write_config(config, state_dir=tmp / "state", socket_path=sock,
                       venues={"bench": url})
        traced = (["--gc", str(tmp / "gc.json"), "--steps", str(tmp / "steps.json")]
                  if args.traced else None)
        daemon = h.start_daemon(config, sock, tmp / "daemon.log", venues=1, traced=traced)
        procs.append((daemon, True))
        start_at = time.monotonic() + 2.0
        senders = [h.spawn(role("sender", args, sock, start_at, index=i),
                           log=tmp / f"sender-{i}.log", stdout_pipe=True)
                   for i in range(args.senders)]
        procs += [(s, False) for s in senders]
        prober = h.spawn(role("status", args, sock, start_at), log=tmp / "status.log",
                         stdout_pipe=True)
        procs.append((prober, False))
        spy = None
        if args.py_spy:
            spy = h.spawn(["py-spy" if shutil.which("py-spy") else
                           str(Path(h.PYTHON).parent / "py-spy"), "record", "--pid",
                           str(daemon.pid), "--rate", "250", "--nonblocking", "--format", "raw",
                           "--duration", str(int(args.seconds)), "--output", args.py_spy],
                          log=tmp / "py-spy.log")
            procs.append((spy, False))
        # The daemon's CPU while the senders send (they stop writing at start + seconds).
        time.sleep(max(0.0, start_at - time.monotonic()))
        cpu0, t0 = h.process_cpu_s(daemon.pid), time.monotonic()
        time.sleep(args.seconds)
        daemon_cores = (h.process_cpu_s(daemon.pid) - cpu0) / (time.monotonic() - t0)
        sent = [collect(s, f"sender {i}", args.seconds + 60) for i, s in enumerate(senders)]
        status = collect(prober, "the status prober", args.seconds + 60)
        with h.LineClient(sock) as c:
            final = c.request({"cmd": "status"})
        if spy is not None:
            spy.wait(30)
    finally:
        for proc, group in reversed(procs):
            h.stop(proc, group=group)
    result = rate(sent, args.skip_s)
    result["cpu"] = watch.foreign()
    if args.traced:
        result["traced"] = explain_slow_status(status, tmp / "gc.json", tmp / "steps.json")
    result.update({
        "status_ms": h.summary_ms(status["latency_ns"]),
        "status_late": status["late"],
        "daemon_events": final["telemetry"]["events"],
        "events_sent": sum(s["sent"] for s in sent) * BATCH,
        "mode_at_end": final["mode"],
        "incidents_at_end": len(final["incidents"]),
        "daemon_pid": daemon.pid,
        "daemon_cores": daemon_cores,
    })
    return result


def explain_slow_status(status: dict[str, Any], gc_path: Path, steps_path: Path,
                        slow_ms: float = 10.0) -> dict[str, Any]:
    """Garbage collections and long task steps of the traced daemon, and what ran while
    each status request slower than ``slow_ms`` waited."""
    gc_rows = json.loads(gc_path.read_text())
    steps = json.loads(steps_path.read_text())
    names, starts = steps["names"], np.array(steps["starts"])
    ends = np.array(steps["ends"])
    t_lo, t_hi = status["sent_ns"][0], status["sent_ns"][-1] + status["latency_ns"][-1]
    by_gen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    pauses = []
    for gen, start, dur, _ in gc_rows["rows"]:
        if t_lo <= start <= t_hi:
            by_gen[gen].append(dur)
            pauses.append((start, start + dur, gen))
    dur = ends - starts
    inside = (starts >= t_lo) & (ends <= t_hi)
    longest = np.argsort(dur * inside)[::-1][:10]
    slow = []
    for t0, lat in zip(status["sent_ns"], status["latency_ns"], strict=True):
        if lat < slow_ms * 1e6:
            continue
        t1 = t0 + lat
        gc_ms = sum(min(e, t1) - max(s, t0) for s, e, _ in pauses if s < t1 and e > t0) / 1e6
        lo, hi = int(np.searchsorted(ends, t0)), int(np.searchsorted(starts, t1))
        per: dict[str, float] = {}
        for k in range(lo, hi):
            per[names[k]] = per.get(names[k], 0.0) + (min(ends[k], t1) - max(starts[k], t0)) / 1e6
        top = sorted(per.items(), key=lambda x: -x[1])[:3]
        slow.append({"latency_ms": lat / 1e6, "gc_ms": gc_ms, "steps_ms": top})
    return {
        "gc": {g: {"count": len(v), "total_ms": sum(v) / 1e6, "max_ms": max(v, default=0) / 1e6}
               for g, v in by_gen.items()},
        "gc_tracked_objects_at_exit": gc_rows["tracked_at_exit"],
        "longest_steps": [(names[k], float(dur[k]) / 1e6) for k in longest if inside[k]],
        "slow_status": slow,
    }


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    m = r["machine"]
    print(f"telemetry ingest: {args.senders} sender process(es), window {args.window}, "
          f"batches of {BATCH}, {args.seconds:g} s (first {args.skip_s:g} s not counted)")
    print(f"machine: {m['nproc']} cpu {m['cpu']}, python {m['python']}, linux {m['kernel']},"
          f" {m['date']}, product source {m['source']}, load {m['loadavg_1m']}")
    if "client_only" in r:
        c = r["client_only"]
        low, high = min(c["per_second"], default=0), max(c["per_second"], default=0)
        print(f"  client alone vs sink:   {c['events_per_s']:12,.0f} events/s "
              f"(per second {low:,}..{high:,})")
    d = r["daemon"]
    print(f"  through the daemon:     {d['events_per_s']:12,.0f} events/s sustained "
          f"over {d['window_s']:.1f} s (per second {min(d['per_second'], default=0):,}.."
          f"{max(d['per_second'], default=0):,})")
    print(f"  every response ok: {d['bad_responses'] == 0} ({d['batches_acked']:,} batches; "
          f"daemon counted {d['daemon_events']:,} events of {d['events_sent']:,} sent)")
    print(f"  daemon CPU while the senders ran: {d['daemon_cores']:.2f} cores "
          "(1.00: one core busy all the time)")
    print(f"  status every {args.every_s * 1000:g} ms: {h.fmt(d['status_ms'])}; "
          f"{d['status_late']} sent late")
    print(f"  desk at end: mode {d['mode_at_end']}, {d['incidents_at_end']} incident(s)")
    for what, part in (("client-only run", r.get("client_only")), ("daemon run", d)):
        if part is not None:
            cpu = part["cpu"]
            print(f"  other processes during the {what}: {cpu['others_s']:.1f} CPU-s in "
                  f"{cpu['wall_s']:.0f} s ({cpu['others_cores']:.2f} cores)")
    if "traced" in d:
        t = d["traced"]
        print("  traced daemon (numbers above are not of record in this mode):")
        for g, v in t["gc"].items():
            print(f"    gc generation {g}: {v['count']} collections, {v['total_ms']:.1f} ms in "
                  f"all, longest {v['max_ms']:.1f} ms")
        print(f"    objects tracked by the gc at exit: {t['gc_tracked_objects_at_exit']:,}")
        print("    longest task steps: " + "; ".join(f"{n} {ms:.1f} ms"
                                                    for n, ms in t["longest_steps"][:5]))
        for s in t["slow_status"][:10]:
            steps = ", ".join(f"{n} {ms:.1f} ms" for n, ms in s["steps_ms"])
            print(f"    status {s['latency_ms']:.1f} ms: gc {s['gc_ms']:.1f} ms inside; {steps}")
    eps, p99 = d["events_per_s"], d["status_ms"].get("p99", float("inf"))
    print(f"target >= 250,000 events/s: {'MET' if eps >= 250_000 else 'MISSED'}; "
          f"status p99 < 10 ms: {'MET' if p99 < 10 else 'MISSED'} (p99 {p99:.2f} ms)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--role", choices=("driver", "sender", "status", "sink"), default="driver")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of the daemon run")
    ap.add_argument("--senders", type=int, default=1, help="client processes (1 connection each)")
    ap.add_argument("--window", type=int, default=64, help="requests outstanding per sender")
    ap.add_argument("--every-s", type=float, default=0.010, help="status period")
    ap.add_argument("--skip-s", type=float, default=1.0, help="warm-up left out of the rate")
    ap.add_argument("--sink-seconds", type=float, default=5.0,
                    help="client-only run against the sink first (0: skip it)")
    ap.add_argument("--traced", action="store_true",
                    help="run bench/traced_daemon.py (gc pauses, task steps) and explain "
                         "each slow status; its numbers are not of record")
    ap.add_argument("--py-spy", help="sample the daemon with py-spy (raw stacks) to FILE")
    ap.add_argument("--out", help="write the results as JSON to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    # Internal, for the child roles.
    ap.add_argument("--socket")
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--start-at", type=float, default=0.0)
    ap.add_argument("--flat", action="store_true", help="sender: report every position as 0")
    args = ap.parse_args(argv)
    if args.role == "sender":
        print(json.dumps(trio.run(run_sender, args)))
        return 0
    if args.role == "status":
        print(json.dumps(run_status(args)))
        return 0
    if args.role == "sink":
        trio.run(run_sink, args)
        return 0
    check_batches()
    tmp = Path(tempfile.mkdtemp(prefix="bench-tel-"))
    done = False
    try:
        result: dict[str, Any] = {"machine": h.machine(), "args": vars(args)}
        if args.sink_seconds > 0:
            result["client_only"] = client_only(args, tmp)
        result["daemon"] = against_daemon(args, tmp)
        done = True
    finally:
        if done and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif not done:
            print(f"telemetry_ingest: logs kept in {tmp}", file=sys.stderr)
    report(result, args)
    if args.out:
        Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
