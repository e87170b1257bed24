"""Journal replay at start: how long a desk with a long history takes to come back.

What is measured: a journal of ``--events`` events is written (a day after day mix of
what a desk journals: P2/P1 findings that open and join incidents, notes, acks and
resolves, an operator audit line, reconciliations, and every ``--kill-every`` events a
kill with its limits, verification, resolve, reconciliation and resume), then, ``--runs``
times each:

- ``read``: ``Journal.read_all`` (SQLite read, checksum chain, decode);
- ``fold``: ``apply`` over every event from an empty ``DeskState`` (the state machine);
- ``start (no checkpoint)``: what the daemon does before READY with no checkpoint:
  ``open_journal_checked`` (every chain checked, every event decoded), then the fold;
- ``start (checkpoint)``: the same with the checkpoint the daemon would have written
  (``supervisor/runtime/checkpoint.py``: the state every 1,000 events, here at the last multiple
  of 1,000), so only the events after it are decoded and folded.

p50 and p99 of the runs are printed with the ratio to a floor measured in the same run:
decoding the same bodies with msgspec alone (no SQLite, no state machine).

    .venv/bin/python bench/replay.py --events 100000 --runs 5
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _harness as h
import numpy as np
import trio

from supervisor.core.desk import DeskState, apply
from supervisor.core.events import (
    AnyEvent,
    AuditNoted,
    FindingRaised,
    IncidentAcknowledged,
    IncidentNoted,
    IncidentResolved,
    KillRequested,
    KillVerified,
    LimitsAtHalt,
    ReconciliationCompleted,
    ResumeRequested,
    event_decoder,
    event_encoder,
)
from supervisor.runtime.checkpoint import (
    CHECKPOINT_EVERY,
    Checkpoint,
    read_checkpoint,
    write_checkpoint,
)
from supervisor.runtime.journal import open_journal, open_journal_checked


def history(n: int, kill_every: int, seed: int = 1) -> list[AnyEvent]:
    """``n`` events a desk could have journaled, each accepted by the state machine."""
    rnd = random.Random(seed)
    out: list[AnyEvent] = []
    state = DeskState()
    ts = 1.8e9

    def add(event: AnyEvent) -> None:
        nonlocal state
        new, effects = apply(state, event)
        if effects and type(effects[0]).__name__ == "Refused":
            return
        state = new
        out.append(event)

    while len(out) < n:
        ts += rnd.uniform(0.5, 30.0)
        live = [i for i in state.incidents if i.live]
        if kill_every and len(out) % kill_every == kill_every - 1 and not state.kill.latched:
            add(KillRequested(ts=ts, actor="operator:ann", reason="drill", source="operator"))
            add(LimitsAtHalt(ts=ts, actor="supervisor", limits='{"max_position":1000.0}'))
            add(KillVerified(ts=ts + 61, actor="supervisor", verified=True, detail="flat"))
            for inc in [i for i in state.incidents if i.live]:
                add(IncidentResolved(ts=ts + 62, actor="operator:ann", incident_id=inc.id,
                                     root_cause="drill"))
            add(ReconciliationCompleted(ts=ts + 63, actor="actor:reconciliation", clean=True,
                                        differences=0, report="r.json"))
            add(ResumeRequested(ts=ts + 64, actor="operator:ann", authorised=True))
            continue
        r = rnd.random()
        if r < 0.35 or not live:
            severity = "P2" if rnd.random() < 0.7 else "P1"
            add(FindingRaised(ts=ts, actor="actor:model", incident_class="feature-drift"
                              if severity == "P1" else "alerts-spam", severity=severity,
                              scope=f"feature:f{rnd.randrange(40)}", summary="psi 0.3 > 0.25",
                              size_multiplier=0.25, evidence={"psi": 0.3}))
        elif r < 0.7:
            add(IncidentNoted(ts=ts, actor="supervisor", incident_id=rnd.choice(live).id,
                              text="tree walk: no-fills Q1 yes, Q2 no"))
        elif r < 0.8:
            add(IncidentAcknowledged(ts=ts, actor="operator:ann",
                                     incident_id=rnd.choice(live).id, commander="ann"))
        elif r < 0.95:
            add(IncidentResolved(ts=ts, actor="operator:ann", incident_id=rnd.choice(live).id,
                                 root_cause="feature pipeline lag, fixed"))
        else:
            add(AuditNoted(ts=ts, actor="operator:ann", text="halt reported for AAPL: news"))
    return out[:n]


def timed(runs: int, f: Any) -> np.ndarray:
    ns = np.empty(runs, dtype=np.int64)
    for i in range(runs):
        t0 = time.perf_counter_ns()
        f()
        ns[i] = time.perf_counter_ns() - t0
    return ns


def fold(events: list[AnyEvent]) -> DeskState:
    state = DeskState()
    for event in events:
        state, _ = apply(state, event)
    return state


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--kill-every", type=int, default=2_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    print(h.machine_line(h.machine()))
    events = history(args.events, args.kill_every)
    with tempfile.TemporaryDirectory(prefix="replay-") as tmp:
        path = Path(tmp) / "journal.sqlite3"

        async def write() -> None:
            async with await open_journal(path) as journal:
                for i in range(0, len(events), 1000):
                    await journal.append(events[i:i + 1000])

        trio.run(write)
        bodies = [event_encoder.encode(e) for e in events]

        async def read() -> None:
            async with await open_journal(path) as journal:
                await journal.read_all()

        async def start(cp: Checkpoint | None) -> None:
            loaded = read_checkpoint(cp_path) if cp is not None else None
            after = (loaded.seq, loaded.chain) if loaded else None
            journal, aside = await open_journal_checked(path, stamp="bench", after=after)
            async with journal:
                assert aside is None and journal.replayed is not None
                assert (journal.replayed_after is not None) == (cp is not None)
                state = loaded.state if loaded else DeskState()
                for event in journal.replayed:
                    state, _ = apply(state, event)

        at = len(events) // CHECKPOINT_EVERY * CHECKPOINT_EVERY

        async def chain_at() -> str:
            async with await open_journal(path) as journal:
                rows = journal._conn.execute("SELECT chain FROM events WHERE seq = ?",
                                             (at,)).fetchone()
                return str(rows[0])

        cp_path = Path(tmp) / "checkpoint.msgpack"
        cp = Checkpoint(seq=at, chain=trio.run(chain_at), state=fold(events[:at]))
        write_checkpoint(cp_path, cp)

        floor = timed(args.runs, lambda: [event_decoder.decode(b) for b in bodies])
        results = {
            "floor: msgspec decode of the bodies": floor,
            "read: SQLite + chain + decode": timed(args.runs, lambda: trio.run(read)),
            "fold: apply over every event": timed(args.runs, lambda: fold(events)),
            "start (no checkpoint)": timed(args.runs, lambda: trio.run(start, None)),
            "start (checkpoint)": timed(args.runs, lambda: trio.run(start, cp)),
        }
    state = fold(events)
    print(f"{len(events)} events, {len(state.incidents)} incidents in the state, "
          f"{sum(len(i.timeline) for i in state.incidents)} timeline entries; "
          f"{args.runs} runs each")
    print("\n".join(h.ratio_lines(results, "floor: msgspec decode of the bodies", "ms")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
