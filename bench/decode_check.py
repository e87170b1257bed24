"""The cost of refusing deep nesting before decoding, against the decode itself.

What is measured, in process: for one telemetry line of ``--events`` events (the mix of
bench/telemetry_ingest.py: bars, predictions, orders), the time of
``protocol.nests_deeper_than`` (the check every request line passes before any
decoder), of ``protocol.request_decoder.decode`` alone (the floor: what a request costs
without the check) and of ``protocol.decode_request`` (both, as the daemon runs them).
Each is timed ``--n`` times; p50 and p99 are printed with the ratio to the floor's p50.

    .venv/bin/python bench/decode_check.py --events 100 --n 20000
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import _harness as h
import msgspec
import numpy as np

from supervisor.core import protocol as p


def batch(events: int) -> bytes:
    out: list[dict[str, object]] = []
    for i in range(events):
        k = i % 10
        if k < 4:
            out.append({"kind": "bar", "symbol": f"S{i}", "ts": 1.7e9 + i, "vendor": "primary"})
        elif k < 6:
            out.append({"kind": "prediction", "symbol": f"S{i}", "value": 0.1, "ts": 1.7e9})
        else:
            out.append({"kind": "order", "order_id": f"o{i}", "symbol": "S1", "side": "buy",
                        "qty": 1.0, "ts": 1.7e9})
    return msgspec.json.encode({"cmd": "telemetry", "events": out})


def timed(f: Callable[[bytes], object], line: bytes, n: int) -> np.ndarray:
    ns = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        f(line)
        ns[i] = clock() - t0
    return ns


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100)
    ap.add_argument("--n", type=int, default=20_000)
    args = ap.parse_args()
    line = batch(args.events)
    print(h.machine_line(h.machine()))
    print(f"one telemetry line of {args.events} events, {len(line)} bytes, {args.n} calls each")
    rows = {"decode alone (floor)": p.request_decoder.decode,
            "nesting check": p.nests_deeper_than, "decode_request (check + decode)":
            p.decode_request}
    results = {name: timed(f, line, args.n) for name, f in rows.items()}
    print("\n".join(h.ratio_lines(results, "decode alone (floor)", "us")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
