"""Gates and arming (playbook 05; docs/architecture.md mode DISARMED): the runtime side.

The gate table and its pure evaluator are in ``supervisor.playbook.gates``; this module
gathers their inputs from the running desk, remembers when each gate was last satisfied,
and does what the gates decide:

- a fresh install (an empty journal) starts DISARMED (``[gates] start_disarmed``);
- ``arm`` is refused while a pre-launch gate (P1-P4) is not PASS, or, in the trading
  session, while D1 or D2 fails (``[gates] block_at_open``);
- at the open, D1 or D2 failing disarms the desk: "blocks trading the same way";
- ``gate attest`` journals a person's attestation; ``disarm`` stops trading.

Every decision is journaled with who made it (``ArmRequested`` carries the blockers it
was judged on, ``Disarmed`` its reason, ``AuditNoted`` the gate table at arming).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import trio

from supervisor.control.authz import Caller, is_operator
from supervisor.core.errors import ControlError
from supervisor.core.events import ArmRequested, AuditNoted, Disarmed, GateAttested
from supervisor.ops import postmortem
from supervisor.playbook.gates import (
    GATES_BY_ID,
    NOT_ATTESTABLE,
    GateResult,
    Inputs,
    arm_blockers,
    auto_verdict,
    evaluate,
)

if TYPE_CHECKING:
    from pathlib import Path

    from actors.freshness import FreshnessActor
    from supervisor.config import Config
    from supervisor.core.desk import DeskState, Incident
    from supervisor.core.events import AnyEvent
    from supervisor.ops.alerts import AlertLog


class Desk(Protocol):
    """What arming reads and asks of the desk (``supervisor.runtime.desk.Desk``), so that it
    depends on this and not on the runtime that starts it."""

    config: Config
    state: DeskState
    state_dir: Path
    journal_error: str | None
    alerts: AlertLog
    freshness: FreshnessActor
    wall: Callable[[], float]

    def status(self) -> dict[str, Any]: ...

    async def command(self, event: AnyEvent) -> DeskState: ...

    async def submit_background(self, event: AnyEvent) -> None: ...

log = logging.getLogger(__name__)

FRESH_INSTALL = ("fresh install: pass the pre-launch gates (deskctl gates), then "
                 "deskctl arm")
UPGRADED = ("never armed: this journal predates the gates; pass the pre-launch gates "
            "(deskctl gates), then deskctl arm")


class Arming:
    """Evaluates the gates for one desk and arms, disarms and attests through it."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk
        self.config = desk.config.gates
        self.last_pass: dict[str, float] = {}  # gate -> wall time it was last seen PASS
        self.results: list[GateResult] = []
        self.evaluated_at: float | None = None
        self._states: dict[str, str] = {}
        self.open_checks = 0
        self._chased: set[str] = set()  # incidents whose overdue postmortem was alerted
        # Reads postmortem files; tests on a MockClock run it inline instead.
        self.run_sync: Callable[..., Awaitable[Any]] = trio.to_thread.run_sync
        limits = desk.config.risk.limits
        # Resolved once (no file system calls per evaluation): which watched config file,
        # as the config-drift monitor names it, is the risk limits file (gate P2).
        self.limits_file = os.path.realpath(limits) if limits else None
        self.limits_watched = next(
            (f for f in desk.config.config_drift.files
             if self.limits_file is not None and os.path.realpath(f) == self.limits_file),
            None)
        # A 24/7 desk ([freshness] session empty) trades every day.
        self.session_days = (tuple(desk.config.freshness.session_days)
                             if desk.config.freshness.session else tuple(range(7)))

    # --- evaluation --------------------------------------------------------------------

    async def _postmortems(self, incidents: list[Incident], now: float
                           ) -> dict[str, dict[str, Any] | None]:
        """Each incident's ``postmortem.state`` (the files read in a worker thread)."""
        if not incidents:
            return {}
        state_dir = self.desk.state_dir
        return await self.run_sync(
            lambda: {i.id: postmortem.state(state_dir, i, now) for i in incidents})

    async def chase_postmortems(self) -> list[str]:
        """Playbook 06 principle 10 ("Every incident produces an artifact") and playbook 02
        risk-breach ("a written incident review within 24 hours"): a P0's postmortem
        still unwritten after its due time raises one QUEUE alert (work for the day, not
        a page at night). Returns the incidents alerted now."""
        desk = self.desk
        now = desk.wall()
        p0s = [i for i in desk.state.incidents if i.severity == "P0" and not i.live
               and i.id not in self._chased]
        states = await self._postmortems(p0s, now)
        chased = []
        for inc in p0s:
            pm = states.get(inc.id)
            if pm and pm.get("overdue"):
                self._chased.add(inc.id)
                chased.append(inc.id)
                desk.alerts.alert(
                    "QUEUE", f"postmortem of {inc.id} ({inc.incident_class} P0) is overdue: "
                             f"write {pm.get('path')} (blameless, facts first)",
                    source="supervisor:postmortems", incident_id=inc.id)
        return chased

    async def evaluate(self) -> list[GateResult]:
        """Every gate now (reads the postmortem files in a worker thread)."""
        return self._judge(await self._gather())

    async def _gather(self) -> Inputs:
        """What the gates read now, the postmortems of the last week's closed P1/P2
        incidents (W4) included."""
        desk = self.desk
        now = desk.wall()
        since = now - self.config.weekly_s
        recent = [i for i in desk.state.incidents
                  if i.severity in ("P1", "P2") and not i.live
                  and (i.resolved_at or 0.0) >= since]
        postmortems = await self._postmortems(recent, now)
        return Inputs(status=desk.status(), state=desk.state, now=now,
                      postmortems=postmortems, limits_watched=self.limits_watched,
                      session_days=self.session_days, noise=desk.alerts.noise_report(now))

    def _judge(self, inp: Inputs) -> list[GateResult]:
        """Evaluate the gates on ``inp``; keep when each was last satisfied, log each
        change of state."""
        now = inp.now
        results = evaluate(inp, self.config)
        out = []
        for r in results:
            if r.state == "PASS":
                self.last_pass[r.id] = r.last_satisfied or now
            elif r.last_satisfied is None and r.id in self.last_pass:
                r = msgspec.structs.replace(r, last_satisfied=self.last_pass[r.id])
            old = self._states.get(r.id)
            if old is not None and old != r.state:
                level = logging.WARNING if r.state in ("FAIL", "EXPIRED") else logging.INFO
                log.log(level, "gate %s %s -> %s: %s", r.id, old, r.state, r.evidence,
                        extra={"gate": r.id})
            self._states[r.id] = r.state
            out.append(r)
        self.results, self.evaluated_at = out, now
        return out

    def summary(self) -> dict[str, Any]:
        """For ``status``: the last evaluation's failing gates (cheap; no re-evaluation)."""
        s = self.desk.state
        return {
            "armed": s.armed,
            "disarmed_reason": s.disarmed_reason,
            "disarmed_since": s.disarmed_since,
            "evaluated_at": self.evaluated_at,
            "not_passing": {r.id: r.state for r in self.results if r.state != "PASS"},
        }

    def in_session(self) -> bool:
        return bool(self.desk.freshness.in_session)

    # --- commands ----------------------------------------------------------------------

    async def arm(self, *, caller: Caller, actor: str | None = None) -> dict[str, Any]:
        """``actor`` names the caller in the journal when it is not a person on the
        socket (the demo arming itself)."""
        desk = self.desk
        actor = actor or caller.actor
        if desk.journal_error is not None:
            raise ControlError("arm_refused",
                               f"the journal is failing ({desk.journal_error}): the desk stays "
                               "disarmed until its state is durable again")
        results = await self.evaluate()
        blockers = arm_blockers(results, in_session=self.in_session(),
                                block_at_open=self.config.block_at_open)
        control = desk.config.control
        authorised = is_operator(caller, control.resume_operators or control.operators)
        state = await desk.command(ArmRequested(
            ts=desk.wall(), actor=actor, authorised=authorised,
            blockers=tuple(blockers)))
        table = ", ".join(f"{r.id} {r.state}" for r in results)
        await desk.submit_background(AuditNoted(
            ts=desk.wall(), actor=actor, text=f"armed with gates: {table}"))
        return {"mode": state.mode, "size_multiplier": state.size_multiplier,
                "gates": [msgspec.to_builtins(r) for r in results]}

    async def disarm(self, reason: str, *, actor: str) -> dict[str, Any]:
        if not reason.strip():
            raise ControlError("bad_request", "disarm needs a reason (why trading stops)")
        state = await self.desk.command(Disarmed(ts=self.desk.wall(), actor=actor,
                                                 reason=reason.strip()))
        return {"mode": state.mode, "disarmed_reason": state.disarmed_reason}

    async def attest(self, gate: str, note: str, *, actor: str) -> dict[str, Any]:
        if gate not in GATES_BY_ID:
            raise ControlError("not_found", f"no gate {gate!r}; gates: "
                               + ", ".join(GATES_BY_ID))
        if not note.strip():
            raise ControlError("bad_request",
                               f"gate {gate}: the attestation needs a note (what was done, "
                               "where its record is)")
        g = GATES_BY_ID[gate]
        if gate in NOT_ATTESTABLE:
            raise ControlError("attest_refused",
                               f"gate {gate} ({g.title}) is judged on the supervisor's own "
                               f"evidence only: {g.evidence}")
        inputs = await self._gather()
        self._judge(inputs)
        if g.evaluator == "auto":
            # The evaluation's own inputs: the same status, and W4's postmortems with it.
            state, evidence, _, attestable = auto_verdict(g, inputs, self.config)
            if attestable != "any":
                # The evidence says no, or is still coming in: a signature cannot say
                # yes over it.
                raise ControlError("attest_refused",
                                   f"gate {gate} is {state} on the supervisor's own evidence "
                                   f"({evidence}): an attestation cannot override it")
        await self.desk.command(GateAttested(ts=self.desk.wall(), actor=actor,
                                             gate=gate, note=note.strip()))
        result = {r.id: r for r in await self.evaluate()}[gate]
        return msgspec.to_builtins(result)

    # --- the daily check at the open ---------------------------------------------------

    async def run(self) -> None:
        """Re-evaluates the gates every ``evaluate_every_s``; at each open of the trading
        session, after ``open_grace_s``, disarms the
        desk if a gate of ``block_at_open`` fails.

        Only an open seen while running counts: a restart in the middle of the session
        keeps the journaled armed state (the feed needs a bar interval to show itself
        again), and a desk without a session (24/7) has no open.
        """
        cfg = self.config
        was_open = self.in_session()
        next_eval = trio.current_time()
        while True:
            now = trio.current_time()
            is_open = self.in_session()
            if is_open and not was_open and cfg.open_check:
                await trio.sleep(cfg.open_grace_s)
                try:
                    await self.check_open()
                except Exception as exc:
                    # Unknown is the worse case (docs/architecture.md principle 4): the open check
                    # could not judge D1/D2, so the desk does not trade on hope.
                    log.exception("open check failed")
                    if self.desk.state.armed:
                        reason = (f"at the open: the gate check failed ({type(exc).__name__}: "
                                  f"{exc}); see the log")
                        await self.desk.submit_background(Disarmed(
                            ts=self.desk.wall(), actor="supervisor:gates", reason=reason))
                        self.desk.alerts.alert("PAGE", f"desk DISARMED {reason}",
                                               source="supervisor:gates")
            was_open = is_open
            if trio.current_time() >= next_eval:
                try:
                    await self.evaluate()
                    await self.chase_postmortems()
                except Exception:  # an evaluator bug must not stop the open check
                    log.exception("gate evaluation failed")
                next_eval = now + cfg.evaluate_every_s
            await trio.sleep(1.0)

    async def check_open(self) -> list[str]:
        """D1/D2 (``block_at_open``) at the open: a FAIL disarms the desk. Returns the
        failures found."""
        self.open_checks += 1
        desk = self.desk
        results = await self.evaluate()
        failing = [r for r in results
                   if r.id in self.config.block_at_open and r.state == "FAIL"]
        if not failing:
            log.info("open check: %s pass", ", ".join(self.config.block_at_open))
            return []
        reason = "at the open: " + "; ".join(f"gate {r.id} ({r.title}) FAIL: {r.evidence}"
                                             for r in failing)
        if desk.state.armed:
            await desk.submit_background(Disarmed(ts=desk.wall(), actor="supervisor:gates",
                                                  reason=reason))
            desk.alerts.alert("PAGE", f"desk DISARMED {reason}", source="supervisor:gates")
        return [r.id for r in failing]
