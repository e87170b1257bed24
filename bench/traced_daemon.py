"""The daemon, run exactly as ``python -m supervisor.cli run --config X``, but observed.

For profiling only; the numbers of record come from the plain daemon. Two observers,
neither of which changes product code:

- ``--steps FILE``: a ``trio.abc.Instrument`` stamps every task step (task name, start
  and end in ``time.monotonic_ns()``) and writes them to FILE at exit, so a benchmark can
  see what the event loop ran between the kill line and the last DELETE.
- ``--gc FILE``: every garbage collection (generation, start, duration) via
  ``gc.callbacks``, to tell a collector pause from a slow task step.
- ``--cprofile FILE``: the whole run under cProfile (slows it: use for where, not how long).

Run: ``python bench/traced_daemon.py --config X.toml --steps steps.json``; stop with
SIGTERM like the daemon.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import logging
import sys
import time

import trio

from supervisor.cli import LOG_FORMAT
from supervisor.config import load_config
from supervisor.daemon import run_until_signal


class StepRecorder(trio.abc.Instrument):
    """Every task step: name, start ns, end ns (bounded: the first ``limit`` steps)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.names: list[str] = []
        self.starts: list[int] = []
        self.ends: list[int] = []
        self._start = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._start = time.monotonic_ns()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if len(self.ends) < self.limit:
            self.ends.append(time.monotonic_ns())
            self.starts.append(self._start)
            self.names.append(task.name)

    def dump(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump({"names": self.names, "starts": self.starts, "ends": self.ends}, f)


class GcRecorder:
    """Every garbage collection: generation, start ns, duration ns, objects collected."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, int, int]] = []
        self._start = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        now = time.monotonic_ns()
        if phase == "start":
            self._start = now
        else:
            self.rows.append((info["generation"], self._start, now - self._start,
                              info["collected"]))

    def dump(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump({"rows": self.rows, "thresholds": gc.get_threshold(),
                       "tracked_at_exit": len(gc.get_objects())}, f)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--steps", help="write every task step to this JSON file at exit")
    ap.add_argument("--steps-limit", type=int, default=5_000_000)
    ap.add_argument("--gc", help="write every garbage collection's duration to this file")
    ap.add_argument("--cprofile", help="write a cProfile of the whole run to this file")
    args = ap.parse_args(argv)
    # As supervisor.cli does for "run" (INFO to stderr, the HTTP libraries quiet).
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    for noisy in ("httpx", "httpcore", "hypercorn.error", "hypercorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = load_config(args.config)
    recorder = StepRecorder(args.steps_limit) if args.steps else None
    profile = cProfile.Profile() if args.cprofile else None
    collections = GcRecorder() if args.gc else None
    if collections is not None:
        gc.callbacks.append(collections)
    try:
        if profile is not None:
            profile.enable()
        trio.run(run_until_signal, config, instruments=[recorder] if recorder else [])
    finally:
        if profile is not None:
            profile.disable()
            profile.dump_stats(args.cprofile)
        if recorder is not None and args.steps:
            recorder.dump(args.steps)
        if collections is not None and args.gc:
            collections.dump(args.gc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
