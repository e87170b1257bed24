"""In-process cost of ``supervisor.core.desk.apply`` for a kill, against the incident history.

``apply`` folds an event into ``DeskState``, whose ``incidents`` tuple keeps every
incident, resolved ones included, and several steps of a kill scan it or rebuild it. A
kill benchmark of 1,100 kills ends with 1,100 incidents in the state; a desk in
production accumulates them over its life. This prints the median time of
``apply(state, KillRequested)`` after 0, 100, 1,000 and 2,000 kill -> resolve ->
reconcile -> resume cycles (the same cycle as bench/kill_latency.py), in one process,
nothing else running in it.

Run: ``.venv/bin/python bench/desk_apply.py``.
"""

from __future__ import annotations

import statistics
import sys
import time

from supervisor.core.desk import DeskState, apply
from supervisor.core.events import (
    IncidentResolved,
    KillRequested,
    ReconciliationCompleted,
    ResumeRequested,
)


def kill(ts: float) -> KillRequested:
    return KillRequested(ts=ts, actor="bench", reason="bench kill 0000000", source="operator")


def cycle(state: DeskState, ts: float) -> DeskState:
    state, _ = apply(state, kill(ts))
    incident = state.kill.incident_id
    assert incident is not None
    state, _ = apply(state, IncidentResolved(ts=ts + 0.001, actor="bench",
                                             incident_id=incident, root_cause="bench"))
    state, _ = apply(state, ReconciliationCompleted(ts=ts + 0.002, actor="bench", clean=True,
                                                    differences=0, report="bench"))
    state, _ = apply(state, ResumeRequested(ts=ts + 0.003, actor="bench", authorised=True))
    if state.mode != "RECOVERING":
        raise SystemExit(f"resume left the desk in {state.mode}")
    return state


def main() -> int:
    state = DeskState()
    ts = time.time()
    done = 0
    for target in (0, 100, 1000, 2000):
        while done < target:
            state = cycle(state, ts + done)
            done += 1
        samples = []
        for _ in range(200):
            t = time.perf_counter_ns()
            apply(state, kill(ts + done + 0.5))
            samples.append(time.perf_counter_ns() - t)
        print(f"{len(state.incidents):5d} incidents in the state: apply(KillRequested) "
              f"median {statistics.median(samples) / 1000:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
