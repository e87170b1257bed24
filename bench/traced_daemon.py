"""The daemon, run exactly as ``python -m supervisor.cli run --config X``, but observed.

For profiling only; the numbers of record come from the plain daemon. Two observers,
neither of which changes product code:

- ``--steps FILE``: a ``trio.abc.Instrument`` stamps every task step (task name, task id,
  start and end in ``time.monotonic_ns()``) and writes them to FILE at exit, so a benchmark can
  see what the event loop ran between the kill line and the last DELETE.
- ``--gc FILE``: every garbage collection (generation, start, duration) via
  ``gc.callbacks``, to tell a collector pause from a slow task step.
- ``--cprofile FILE``: the whole run under cProfile (slows it: use for where, not how long).
- ``--time-calls FILE``: wraps a few synchronous functions of the kill path (named in
  ``TIMED``) with ``perf_counter_ns`` and writes every call's duration to FILE at exit.
  Only this process's module attributes are replaced; no file of the product changes.

Run: ``python bench/traced_daemon.py --config X.toml --steps steps.json``; stop with
SIGTERM like the daemon.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import sys
import time

import trio

from supervisor.config import load_config
from supervisor.ops.logs import setup_logging
from supervisor.runtime.daemon import run_until_signal


class StepRecorder(trio.abc.Instrument):
    """Every task step: name, start ns, end ns (bounded: the first ``limit`` steps)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.names: list[str] = []
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.ids: list[int] = []  # id(task): tells apart tasks of the same name
        self._start = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._start = time.monotonic_ns()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if len(self.ends) < self.limit:
            self.ends.append(time.monotonic_ns())
            self.starts.append(self._start)
            self.names.append(task.name)
            self.ids.append(id(task))

    def dump(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump({"names": self.names, "starts": self.starts, "ends": self.ends,
                       "ids": self.ids}, f)


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


# Synchronous functions on the kill path, as "module:attribute[.attribute]".
TIMED = (
    "supervisor.core.protocol:decode_request",
    "supervisor.control.authz:authorize",
    "supervisor.runtime.desk:apply",
    "supervisor.runtime.killswitch:KillSwitch.trip",
    "supervisor.runtime.desk:Desk._publish_blocked",
    "supervisor.runtime.desk:Desk._slow_effects",
    "supervisor.runtime.desk:Desk.status",
)


class CallTimer:
    """Every call of the ``TIMED`` functions: name -> list of (start ns, duration ns)."""

    def __init__(self, limit: int = 2_000_000) -> None:
        self.calls: dict[str, list[tuple[int, int]]] = {}
        self.limit = limit

    def install(self, specs: tuple[str, ...]) -> None:
        import importlib

        for spec in specs:
            module_name, _, path = spec.partition(":")
            owner: object = importlib.import_module(module_name)
            *parents, attr = path.split(".")
            for name in parents:
                owner = getattr(owner, name)
            setattr(owner, attr, self._wrap(spec.rsplit(":", 1)[1], getattr(owner, attr)))
        # control.py calls authorize by its own imported name; protocol by module.
        import supervisor.control.authz
        import supervisor.control.server

        supervisor.control.server.authorize = supervisor.control.authz.authorize  # type: ignore[attr-defined]

    def _wrap(self, name: str, fn: object) -> object:
        rows = self.calls.setdefault(name, [])
        clock = time.perf_counter_ns
        mono = time.monotonic_ns
        limit = self.limit

        def timed(*args: object, **kwargs: object) -> object:
            start, t = mono(), clock()
            try:
                return fn(*args, **kwargs)  # type: ignore[operator]
            finally:
                if len(rows) < limit:
                    rows.append((start, clock() - t))

        return timed

    def dump(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.calls, f)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--steps", help="write every task step to this JSON file at exit")
    ap.add_argument("--steps-limit", type=int, default=5_000_000)
    ap.add_argument("--gc", help="write every garbage collection's duration to this file")
    ap.add_argument("--cprofile", help="write a cProfile of the whole run to this file")
    ap.add_argument("--time-calls", help="write the duration of every call of the kill "
                                         "path's synchronous functions to this file")
    args = ap.parse_args(argv)
    # As supervisor.cli does for "run": its logging, then gc.freeze() of the start-up
    # objects, then trio.run(run_until_signal, load_config(...)).
    setup_logging(False)
    gc.freeze()
    config = load_config(args.config)
    recorder = StepRecorder(args.steps_limit) if args.steps else None
    profile = cProfile.Profile() if args.cprofile else None
    collections = GcRecorder() if args.gc else None
    timer = CallTimer() if args.time_calls else None
    if timer is not None:
        timer.install(TIMED)
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
        if timer is not None and args.time_calls:
            timer.dump(args.time_calls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
