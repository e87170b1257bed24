"""Checklist runs and credential rotations as the desk state knows them: pure folds.

``supervisor.core.desk.apply`` calls ``fold_runbook`` and ``fold_credential`` for the runbook
and credential events (supervisor/core/events.py); each returns the new sub-state, or a
``Refusal`` (code, reason) that ``apply`` turns into a ``Refused`` effect. No I/O, no
clock: every time is the event's, so a replay lands in the same state.
"""

from __future__ import annotations

import time
from typing import Literal

import msgspec

from supervisor.core.events import (
    CredentialActivated,
    CredentialChecked,
    CredentialRevoked,
    CredentialStaged,
    RunbookClosed,
    RunbookStarted,
    RunbookStepDone,
    RunbookVerified,
)

RunState = Literal["open", "completed", "abandoned"]
# Closed runs kept in the state (every open run is kept); older ones stay in the journal.
CLOSED_RUNS_KEPT = 50
# Verify results kept per run: the last few attempts show how it got there.
VERIFICATIONS_KEPT = 10


class Refusal(msgspec.Struct, frozen=True):
    """Why an event cannot be applied: the ``Refused`` effect's code and reason."""

    code: str
    reason: str


class StepRecord(msgspec.Struct, frozen=True):
    """One step done: which, when, by whom, with the operator's note."""

    step: int
    ts: float
    actor: str
    note: str = ""


class VerifyRecord(msgspec.Struct, frozen=True):
    """One verify attempt and its verdict (None: could not judge)."""

    ts: float
    actor: str
    ok: bool | None
    method: str
    detail: str
    evidence: dict[str, object] = {}


class RunbookRun(msgspec.Struct, frozen=True, kw_only=True):
    """A checklist run of one runbook: its steps done and its verify verdicts."""

    id: str
    runbook: str
    steps: int
    started_at: float
    started_by: str
    incident_id: str | None = None
    state: RunState = "open"
    done: tuple[StepRecord, ...] = ()
    verifications: tuple[VerifyRecord, ...] = ()
    closed_at: float | None = None
    closed_by: str | None = None
    close_note: str = ""

    def step(self, number: int) -> StepRecord | None:
        return next((d for d in self.done if d.step == number), None)

    @property
    def pending(self) -> list[int]:
        """The step numbers not done yet."""
        done = {d.step for d in self.done}
        return [n for n in range(1, self.steps + 1) if n not in done]

    @property
    def verified(self) -> VerifyRecord | None:
        """The last verify result, or None."""
        return self.verifications[-1] if self.verifications else None


def run_id(ts: float, number: int) -> str:
    return f"RUN-{time.strftime('%Y%m%d', time.gmtime(ts))}-{number:04d}"


def find_run(runs: tuple[RunbookRun, ...], rid: str) -> RunbookRun | None:
    return next((r for r in runs if r.id == rid), None)


def _replace(runs: tuple[RunbookRun, ...], run: RunbookRun) -> tuple[RunbookRun, ...]:
    return tuple(run if r.id == run.id else r for r in runs)


def _trim(runs: tuple[RunbookRun, ...]) -> tuple[RunbookRun, ...]:
    closed = [r for r in runs if r.state != "open"]
    drop = {r.id for r in closed[:-CLOSED_RUNS_KEPT]} if len(closed) > CLOSED_RUNS_KEPT else set()
    return tuple(r for r in runs if r.id not in drop)


def _open_run(runs: tuple[RunbookRun, ...], rid: str, doing: str) -> RunbookRun | Refusal:
    run = find_run(runs, rid)
    if run is None:
        return Refusal("unknown_run", f"no runbook run {rid!r}: deskctl runbook --runs lists them")
    if run.state != "open":
        return Refusal("bad_state", f"run {rid} ({run.runbook}) is {run.state}: cannot {doing}")
    return run


RunbookEvent = RunbookStarted | RunbookStepDone | RunbookVerified | RunbookClosed


def fold_runbook(
    runs: tuple[RunbookRun, ...], next_run: int, event: RunbookEvent, *,
    incident_known: bool = True,
) -> tuple[tuple[RunbookRun, ...], int] | Refusal:
    """Apply one runbook event to the runs; ``incident_known``: the run's incident exists."""
    match event:
        case RunbookStarted():
            if event.steps < 1:
                return Refusal("bad_request", f"runbook {event.runbook!r} has no steps")
            if event.incident_id is not None and not incident_known:
                return Refusal("unknown_incident", f"no incident {event.incident_id}")
            run = RunbookRun(id=run_id(event.ts, next_run), runbook=event.runbook,
                             steps=event.steps, started_at=event.ts, started_by=event.actor,
                             incident_id=event.incident_id)
            return _trim((*runs, run)), next_run + 1
        case RunbookStepDone():
            found = _open_run(runs, event.run_id, f"mark step {event.step} done")
            if isinstance(found, Refusal):
                return found
            if not 1 <= event.step <= found.steps:
                return Refusal("bad_request", f"run {found.id} ({found.runbook}) has steps 1 to "
                                              f"{found.steps}, not {event.step}")
            prior = found.step(event.step)
            if prior is not None:
                return Refusal("bad_state", f"run {found.id}: step {event.step} was already done "
                                            f"by {prior.actor} at {_utc(prior.ts)}")
            done = tuple(sorted((*found.done, StepRecord(event.step, event.ts, event.actor,
                                                         event.note)), key=lambda d: d.step))
            return _replace(runs, msgspec.structs.replace(found, done=done)), next_run
        case RunbookVerified():
            found = _open_run(runs, event.run_id, "verify it")
            if isinstance(found, Refusal):
                return found
            record = VerifyRecord(event.ts, event.actor, event.ok, event.method, event.detail,
                                  event.evidence)
            verifications = (*found.verifications, record)[-VERIFICATIONS_KEPT:]
            return _replace(runs, msgspec.structs.replace(found, verifications=verifications)), \
                next_run
        case RunbookClosed():
            found = _open_run(runs, event.run_id, "close it")
            if isinstance(found, Refusal):
                return found
            if event.outcome == "abandoned" and not event.note.strip():
                return Refusal("bad_request", f"run {found.id}: say why it is abandoned")
            if event.outcome == "completed":
                missing = []
                if found.pending:
                    missing.append("steps not done: " + ", ".join(map(str, found.pending)))
                last = found.verified
                if last is None or last.ok is not True:
                    missing.append("the verify check has not passed"
                                   + ("" if last is None else f" (last: {last.detail})"))
                if missing:
                    return Refusal("bad_state", f"run {found.id} ({found.runbook}) cannot be "
                                                "completed: " + "; ".join(missing)
                                                + " (or abandon it with a reason)")
            closed = msgspec.structs.replace(found, state=event.outcome, closed_at=event.ts,
                                             closed_by=event.actor, close_note=event.note.strip())
            return _trim(_replace(runs, closed)), next_run
    raise AssertionError(f"not a runbook event: {event!r}")


# --- credentials (playbook 01 api-credentials; playbook 05 P3) ----------------------------------


class Rotation(msgspec.Struct, frozen=True, kw_only=True):
    """A finished rotation: the new credential verified, activated, the old one revoked."""

    venue: str
    fingerprint: str
    previous: str | None
    staged_at: float
    checked_at: float
    activated_at: float
    activated_by: str
    revoked_at: float
    revoked_by: str
    confirmed_by_venue: bool
    # playbook 05 P3: "New credentials verified with a non-mutating call before the old ones
    # were revoked".
    verified_before_revoke: bool


class VenueCredential(msgspec.Struct, frozen=True, kw_only=True):
    """One venue's credential lifecycle: staged, checked, active, previous (to revoke)."""

    venue: str
    active: str | None = None  # fingerprint; None: the configured one, never rotated
    activated_at: float | None = None
    activated_by: str | None = None
    previous: str | None = None  # awaiting revocation
    revoke_after: float | None = None
    staged: str | None = None
    staged_at: float | None = None
    staged_by: str | None = None
    activate_at: float | None = None
    check_ok: bool | None = None
    checked_at: float | None = None
    check_detail: str = ""
    # Of the credential now active, kept for the rotation record at revocation.
    active_staged_at: float | None = None
    active_checked_at: float | None = None
    last_rotation: Rotation | None = None


CredentialEvent = CredentialStaged | CredentialChecked | CredentialActivated | CredentialRevoked


def find_credential(creds: tuple[VenueCredential, ...], venue: str) -> VenueCredential:
    return next((c for c in creds if c.venue == venue), VenueCredential(venue=venue))


def fold_credential(
    creds: tuple[VenueCredential, ...], event: CredentialEvent
) -> tuple[VenueCredential, ...] | Refusal:
    """Apply one credential event to the venues' credential states."""
    c = find_credential(creds, event.venue)
    v = event.venue
    match event:
        case CredentialStaged():
            if c.active is not None and event.fingerprint == c.active:
                return Refusal("bad_request", f"venue {v}: that credential is already the live one")
            c = msgspec.structs.replace(
                c, staged=event.fingerprint, staged_at=event.ts, staged_by=event.actor,
                activate_at=event.activate_at, check_ok=None, checked_at=None, check_detail="")
        case CredentialChecked():
            if c.staged is None or c.staged != event.fingerprint:
                return Refusal("bad_state", f"venue {v}: no staged credential to check: "
                                            "deskctl credentials stage first")
            c = msgspec.structs.replace(c, check_ok=event.ok, checked_at=event.ts,
                                        check_detail=event.detail)
        case CredentialActivated():
            if c.staged is None or c.staged != event.fingerprint:
                return Refusal("bad_state", f"venue {v}: no staged credential to activate: "
                                            "deskctl credentials stage first")
            if c.check_ok is not True or c.checked_at is None:
                return Refusal("bad_state", f"venue {v}: the staged credential has not passed a "
                                            "non-mutating check: deskctl credentials check " + v)
            if c.activate_at is not None and event.ts < c.activate_at:
                return Refusal("bad_state", f"venue {v}: the staged credential activates at "
                                            f"{_utc(c.activate_at)}, "
                                            f"{c.activate_at - event.ts:.0f} s from now")
            if c.previous is not None:
                return Refusal("bad_state", f"venue {v}: the credential before this one is not "
                                            "revoked yet: deskctl credentials revoke " + v)
            c = msgspec.structs.replace(
                c, active=event.fingerprint, activated_at=event.ts, activated_by=event.actor,
                previous=event.previous or "configured",
                revoke_after=event.ts + event.revoke_after_s,
                active_staged_at=c.staged_at, active_checked_at=c.checked_at,
                staged=None, staged_at=None, staged_by=None, activate_at=None, check_ok=None,
                checked_at=None, check_detail="")
        case CredentialRevoked():
            if c.previous is None or c.revoke_after is None:
                return Refusal("bad_state", f"venue {v}: no previous credential awaits "
                                            "revocation")
            if event.ts < c.revoke_after:
                return Refusal("bad_state", f"venue {v}: the previous credential may be revoked "
                                            f"from {_utc(c.revoke_after)}, "
                                            f"{c.revoke_after - event.ts:.0f} s from now "
                                            "(playbook 01 api-credentials: activate; wait 5 "
                                            "minutes)")
            if not event.confirmed:
                return Refusal("revoke_refused", f"venue {v}: {event.detail}")
            assert c.active is not None and c.activated_at is not None
            checked = c.active_checked_at
            rotation = Rotation(
                venue=v, fingerprint=c.active,
                previous=None if c.previous == "configured" else c.previous,
                staged_at=c.active_staged_at or c.activated_at,
                checked_at=checked or c.activated_at, activated_at=c.activated_at,
                activated_by=c.activated_by or "", revoked_at=event.ts,
                revoked_by=event.actor, confirmed_by_venue=event.confirmed,
                verified_before_revoke=checked is not None and checked <= event.ts)
            c = msgspec.structs.replace(c, previous=None, revoke_after=None,
                                        last_rotation=rotation)
    others = tuple(x for x in creds if x.venue != v)
    return (*others, c)


def _utc(ts: float) -> str:
    """``ts`` as UTC; total: a time no calendar holds (NaN, inf, 1e308, an old journal's
    out-of-range ``activate_at``) comes back as the raw number, never an exception in
    the fold."""
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    except (OverflowError, OSError, ValueError, TypeError):
        return f"epoch {ts!r}"
