"""Freshness actor: detection delay and CPU for 5,000 symbols on 1-minute bars.

What is measured, in one process (the actor alone, fed through a real ``Book``):

- ``sim``: trio's MockClock. 5,000 symbols x 2 vendors, each bar stamped at its own
  offset in the minute (symbol i at 60 m + 0.012 i s), delivered in 1-second batches.
  One symbol in 20 stops on the primary at ``--stop-minute``. Reports the virtual
  detection delay (finding time minus threshold crossing: must be 0), the CPU time
  (``time.process_time``) per simulated minute of feed (Book.ingest + on_telemetry +
  the actor's loop + the feeder building bars), and heap operations per wake-up.
- ``real``: the same feed on the real clock and ``time.time`` as the wall clock, in
  100 ms batches; one symbol in 20 stops on the primary after its first bar. Reports
  the real detection delay p50/p99/max (target p99 < 50 ms) and CPU per minute. With the
  default 60 s bars it runs ~3.2 minutes; ``--interval 6`` is a quick check.

Run: ``.venv/bin/python bench/freshness.py sim`` or ``... real [--interval 60]``.
Not part of the test suite; it stops by itself.
"""

from __future__ import annotations

import argparse
import json
import time

import _harness as h
import numpy as np
import trio
import trio.testing

from actors.base import Finding, Report
from actors.freshness import FreshnessActor
from supervisor.config import FreshnessConfig
from supervisor.core.book import Book
from supervisor.core.protocol import Bar

N = 5000
VENDORS = ("primary", "backup")


def _stats(delays: list[float]) -> dict[str, float | int]:
    arr = np.asarray(delays, dtype=np.float64) * 1000.0
    if not len(arr):
        return {"n": 0}
    return {"n": len(arr), "p50_ms": round(float(np.percentile(arr, 50)), 3),
            "p99_ms": round(float(np.percentile(arr, 99)), 3),
            "max_ms": round(float(arr.max()), 3)}


class Collector:
    def __init__(self, clock: str) -> None:
        self.clock = clock
        self.found: dict[str, float] = {}

    async def __call__(self, item: Report) -> None:
        if isinstance(item, Finding) and item.scope.startswith("symbol:"):
            now = time.time() if self.clock == "real" else trio.current_time()
            self.found.setdefault(item.scope[len("symbol:"):], now)


async def sim(minutes: int, stop_minute: int) -> dict[str, object]:
    t0 = 1_699_999_200.0
    symbols = [f"S{i:04d}" for i in range(N)]
    offsets = [i * 12 / 1000 for i in range(N)]  # distinct in-minute stamps
    stopped = set(range(0, N, 20))
    slots: list[list[int]] = [[] for _ in range(60)]
    for i in range(N):
        slots[i * 12 // 1000].append(i)
    cfg = FreshnessConfig(symbols=symbols)
    book, reports = Book(clock=trio.current_time), Collector("sim")
    actor = FreshnessActor(cfg, book, reports, wall_clock=lambda: t0 + trio.current_time())
    book.subscribe(actor.on_telemetry)
    warm = 4  # minutes: past the start-up grace, whose deadlines all fall together
    measured: dict[str, float] = {}

    async def feeder() -> None:
        for s in range(1, minutes * 60 + 1):
            await trio.sleep_until(s)
            m, j = divmod(s - 1, 60)
            if m == warm and j == 0:
                measured.update(cpu=time.process_time(), wakeups=actor.wakeups,
                                heap_ops=actor.heap_ops)
                actor.max_examined = 0
            book.ingest([Bar(symbol=symbols[i], ts=t0 + 60 * m + offsets[i], vendor=v)
                         for i in slots[j] for v in VENDORS
                         if not (i in stopped and v == "primary" and m >= stop_minute)])

    wall0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await feeder()
        nursery.cancel_scope.cancel()
    cpu = time.process_time() - measured["cpu"]
    sim_minutes = minutes - warm
    thr = actor.threshold_s
    delays = [reports.found[symbols[i]] - (60 * (stop_minute - 1) + offsets[i] + thr)
              for i in stopped if symbols[i] in reports.found]
    wakeups = actor.wakeups - int(measured["wakeups"])
    return {
        "mode": "sim (MockClock)", "symbols": N, "vendors": 2, "bar_interval_s": 60,
        "simulated_minutes_measured": sim_minutes, "stopped_symbols": len(stopped),
        "detected": len(delays), "detection_delay_virtual": _stats(delays),
        "cpu_s_per_simulated_minute": round(cpu / sim_minutes, 4),
        "wakeups_per_minute": round(wakeups / sim_minutes),
        "heap_ops_per_wakeup": round((actor.heap_ops - measured["heap_ops"]) / wakeups, 3),
        "max_entries_examined_per_wakeup": actor.max_examined,
        "heap_size": len(actor._heap),
        "elapsed_s": round(time.perf_counter() - wall0, 2),
    }


async def real(interval: float) -> dict[str, object]:
    start = time.time()
    symbols = [f"S{i:04d}" for i in range(N)]
    offsets = [interval * i / N for i in range(N)]
    stopped = set(range(0, N, 20))
    cfg = FreshnessConfig(symbols=symbols, bar_interval_s=interval)
    book, reports = Book(clock=trio.current_time), Collector("real")
    actor = FreshnessActor(cfg, book, reports, wall_clock=time.time)
    book.subscribe(actor.on_telemetry)
    thr = actor.threshold_s
    duration = thr + 1.5 * interval  # every stopped symbol crosses by thr + interval
    cpu0 = time.process_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        seq = 0  # bar k of symbol i is bar number k * N + i, stamped in that order
        while time.time() - start < duration:
            await trio.sleep(0.1)
            now = time.time()
            batch: list[Bar] = []
            while True:
                k, i = divmod(seq, N)
                ts = start + offsets[i] + k * interval
                if ts > now:
                    break
                for v in VENDORS:
                    if not (i in stopped and v == "primary" and k > 0):
                        batch.append(Bar(symbol=symbols[i], ts=ts, vendor=v))
                seq += 1
            if batch:
                book.ingest(batch)
        nursery.cancel_scope.cancel()
    cpu = time.process_time() - cpu0
    delays = [reports.found[symbols[i]] - (start + offsets[i] + thr)
              for i in stopped if symbols[i] in reports.found]
    return {
        "mode": "real clock", "symbols": N, "vendors": 2, "bar_interval_s": interval,
        "run_s": round(duration, 1), "stopped_symbols": len(stopped), "detected": len(delays),
        "detection_delay": _stats(delays),
        "cpu_s_per_minute_of_feed": round(cpu / (duration / 60.0), 4),
        "wakeups": actor.wakeups, "heap_size": len(actor._heap),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["sim", "real"])
    parser.add_argument("--minutes", type=int, default=30, help="sim: simulated minutes")
    parser.add_argument("--stop-minute", type=int, default=10,
                        help="sim: the minute whose bars the stopped symbols miss first")
    parser.add_argument("--interval", type=float, default=60.0, help="real: bar interval s")
    args = parser.parse_args()
    if args.mode == "sim":
        result = trio.run(sim, args.minutes, args.stop_minute,
                          clock=trio.testing.MockClock(autojump_threshold=0))
    else:
        result = trio.run(real, args.interval)
    print(json.dumps({"machine": h.machine(), "result": result}, indent=2))


if __name__ == "__main__":
    main()
