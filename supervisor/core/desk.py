"""The desk state machine: pure, no I/O, no clock, no randomness (docs/architecture.md principle 1).

``apply(state, event) -> (state, effects)`` is the whole of it. What the desk knows is
the fold of its journaled events, so a restart replays the journal and lands in exactly
the state it left. The runtime (``supervisor.runtime.desk``) executes the effects.

Modes (docs/architecture.md "Modes"; playbook 02 "P0 means stop trading. P1 means degrade ... P2
means monitor"):

- HALTED while the kill-switch is latched (size 0); only an accepted ``resume`` leaves it.
- THROTTLED while a P1 incident is live, at the smallest multiplier among them.
- RECOVERING after an accepted resume, at the recovery multiplier (playbook 03 post-incident:
  "Resume at 25% size for one full session. Promote to 100% only if incident-free").
- DISARMED while not armed (size 0): a fresh install, ``deskctl disarm``, or a daily gate
  (D1, D2) failing at the open; an accepted ``arm`` leaves it (playbook 05: "The pre-launch
  list runs once before any capital moves"). A latched kill-switch still shows HALTED.
- NORMAL otherwise.
"""

from __future__ import annotations

import time
from typing import Literal

import msgspec

from supervisor.core.events import (
    AnyEvent,
    ArmRequested,
    AuditNoted,
    CredentialActivated,
    CredentialChecked,
    CredentialRevoked,
    CredentialStaged,
    Disarmed,
    DrillCompleted,
    FindingRaised,
    GateAttested,
    IncidentAcknowledged,
    IncidentNoted,
    IncidentResolved,
    KillRequested,
    KillSnapshotted,
    KillVerified,
    LimitsAtHalt,
    ReconciliationCompleted,
    RecoveryCompleted,
    ResumeRequested,
    RouteChanged,
    RunbookClosed,
    RunbookStarted,
    RunbookStepDone,
    RunbookVerified,
    Severity,
)
from supervisor.core.ledger import (
    Refusal,
    RunbookRun,
    VenueCredential,
    find_run,
    fold_credential,
    fold_runbook,
)

Mode = Literal["NORMAL", "THROTTLED", "HALTED", "RECOVERING", "DISARMED"]
IncidentState = Literal["open", "acknowledged", "resolved"]

# The incident classes of playbook 02, with their non-negotiable severity, plus the
# ones this project adds for a pulled switch and a blind watcher.
SEED_CLASSES: dict[str, Severity] = {
    "broker-outage": "P0",
    "feature-drift": "P1",
    "pnl-divergence": "P1",
    "stale-data": "P0",
    "config-drift": "P1",
    "risk-breach": "P0",
}
PROJECT_CLASSES: dict[str, Severity] = {
    "operator-kill": "P0",
    "button-press": "P0",
    # The button's wire cut or its box silent (not a press): the switch pulled ([button]
    # on_loss "kill", the default) ...
    "button-lost": "P0",
    # ... or, with on_loss "page", paged: the desk cannot be halted from the button.
    "button-degraded": "P1",
    # The journal could not be replayed and was set aside at start: history unknown.
    "journal-damaged": "P0",
    "actor-failure": "P1",
    "alerts-spam": "P1",  # playbook 03 alerts-spam: unrelated storm -> "Halve live size"
    # An order the engine's gate would have refused reached a venue (the compliance
    # watch): playbook "runaway model behavior" is a P0.
    "runaway-engine": "P0",
    # A venue's dead man's switch ran out because the supervisor stalled or could not
    # re-arm it: the venue cancelled every open order there, unknown to the engine.
    "supervisor-stalled": "P0",
    # An operator executed a recovery tree's throttle leaf (`deskctl tree ... --execute`,
    # the `throttle` request): playbook 02 "P1 means degrade".
    "operator-throttle": "P1",
}
INCIDENT_CLASSES: dict[str, Severity] = {**SEED_CLASSES, **PROJECT_CLASSES}

# Where the playbook itself grades a class by scope: (class, scope prefix, severity, why).
# A finding never lowers its class's severity by itself (playbook 06 principle 02,
# "severity drives response"); these rows, beside the class, are the only exceptions.
GRADES: tuple[tuple[str, str, Severity, str], ...] = (
    ("stale-data", "symbol:", "P2", "playbook 03 missing-data Q1 YES: a single symbol is "
     "suppressed and the rest of the universe trades on"),
    ("stale-data", "vendor:", "P2", "playbook 03 missing-data Q3 YES: failed over to a "
     "healthy backup vendor"),
    ("alerts-spam", "alerts:parent:", "P2", "playbook 03 alerts-spam Q1 YES: one root cause: "
     "a parent incident, its children snoozed (the storm is not a degrade)"),
)
_RANK = {"P0": 0, "P1": 1, "P2": 2}


def graded_severity(incident_class: str, scope: str) -> Severity:
    """The severity of an incident of ``incident_class`` in ``scope``: its table row in
    ``GRADES`` if one matches, else the class's own (an unknown class: P0, the worse
    case)."""
    for cls, prefix, severity, _ in GRADES:
        if cls == incident_class and scope.startswith(prefix):
            return severity
    return INCIDENT_CLASSES.get(incident_class, "P0")


def more_severe(a: Severity, b: Severity) -> Severity:
    return a if _RANK[a] <= _RANK[b] else b


class TimelineEntry(msgspec.Struct, frozen=True):
    """One line of an incident's history."""

    ts: float
    actor: str
    text: str


class Incident(msgspec.Struct, frozen=True, kw_only=True, rename={"incident_class": "class"}):
    """An incident: who opened it, its timeline, its commander and its root cause."""

    id: str
    incident_class: str
    severity: Severity
    scope: str
    state: IncidentState = "open"
    summary: str
    opened_at: float
    opened_by: str
    findings: int = 1
    size_multiplier: float = 1.0
    commander: str | None = None
    acknowledged_at: float | None = None
    root_cause: str | None = None
    resolved_at: float | None = None
    resolved_by: str | None = None
    timeline: tuple[TimelineEntry, ...] = ()

    @property
    def live(self) -> bool:
        return self.state != "resolved"


class KillState(msgspec.Struct, frozen=True, kw_only=True):
    """The kill-switch latch. Once latched only an accepted resume releases it."""

    latched: bool = False
    since: float | None = None
    reason: str | None = None
    by: str | None = None
    source: str | None = None
    incident_id: str | None = None
    triggers: int = 0
    verified: bool = False
    verify_detail: str = ""
    # The risk limits in force at the latch (canonical JSON), journaled with it; None:
    # not known, and a resume is refused until they are (fail closed).
    limits_at_halt: str | None = None


class Reconciliation(msgspec.Struct, frozen=True):
    """The last reconciliation to broker truth."""

    ts: float
    clean: bool
    differences: int
    report: str


class GateEvidence(msgspec.Struct, frozen=True):
    """The last operator attestation of a playbook 05 gate."""

    gate: str
    ts: float
    actor: str
    note: str


class DrillRecord(msgspec.Struct, frozen=True):
    """One drill against paper venues (gate P1: killswitch, gate M1: failover)."""

    kind: str
    ts: float
    actor: str
    ok: bool
    seconds: float | None
    detail: str
    report: str = ""


DRILLS_KEPT = 20


class DeskState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the desk knows; the fold of the journal."""

    mode: Mode = "NORMAL"
    size_multiplier: float = 1.0
    incidents: tuple[Incident, ...] = ()
    kill: KillState = KillState()
    last_reconciliation: Reconciliation | None = None
    recovery_multiplier: float = 0.25
    # Start of the recovery session clock; None while not recovering, or while a P1
    # that opened during recovery is live (the clock restarts once it is resolved).
    recovering_since: float | None = None
    recovering: bool = False
    next_incident: int = 1
    applied: int = 0
    # Armed unless a ``Disarmed`` event says otherwise: the runtime journals one on a
    # fresh install (an empty journal), so a new desk starts DISARMED.
    armed: bool = True
    disarmed_reason: str | None = None
    disarmed_since: float | None = None
    attestations: tuple[GateEvidence, ...] = ()
    drills: tuple[DrillRecord, ...] = ()
    # The venue new orders go to (playbook 01 broker-failover); None: the engine's own routing.
    route: str | None = None
    # Checklist runs of playbook 01's runbooks, and each venue's credential lifecycle
    # (supervisor/core/ledger.py folds them).
    runbook_runs: tuple[RunbookRun, ...] = ()
    next_run: int = 1
    credentials: tuple[VenueCredential, ...] = ()
    # A Disarmed event was ever applied (a fresh install journals one; an older journal
    # that never had one was written before the gates existed).
    arming_journaled: bool = False

    def run(self, run_id: str) -> RunbookRun | None:
        return find_run(self.runbook_runs, run_id)

    def attestation(self, gate: str) -> GateEvidence | None:
        for ev in self.attestations:
            if ev.gate == gate:
                return ev
        return None

    def last_drill(self, kind: str, *, ok: bool | None = None) -> DrillRecord | None:
        for d in reversed(self.drills):
            if d.kind == kind and (ok is None or d.ok == ok):
                return d
        return None

    def incident(self, incident_id: str) -> Incident | None:
        for inc in reversed(self.incidents):  # the ones asked for are mostly recent
            if inc.id == incident_id:
                return inc
        return None


# --- effects: what the runtime must do ------------------------------------------------


class Effect(msgspec.Struct, frozen=True, kw_only=True, tag_field="effect"):
    """Base of the effects ``apply`` returns."""


class PullKillSwitch(Effect, frozen=True, kw_only=True, tag="pull_kill_switch"):
    """Block new orders, cancel everything on every venue, snapshot, verify."""

    reason: str
    incident_id: str


class RecancelAll(Effect, frozen=True, kw_only=True, tag="recancel_all"):
    """A trigger while latched: cancel-all again (idempotent at the venues)."""

    reason: str


class IncidentOpened(Effect, frozen=True, kw_only=True, tag="incident_opened"):
    incident: Incident


class IncidentUpdated(Effect, frozen=True, kw_only=True, tag="incident_updated"):
    incident: Incident
    change: str


class ModeChanged(Effect, frozen=True, kw_only=True, tag="mode_changed"):
    old: Mode
    new: Mode
    size_multiplier: float


class StartRecoveryClock(Effect, frozen=True, kw_only=True, tag="start_recovery_clock"):
    """Schedule ``RecoveryCompleted`` one full session after ``since``."""

    since: float


class Refused(Effect, frozen=True, kw_only=True, tag="refused"):
    """The event was not applied; ``reasons`` say why, in the playbook's words."""

    code: str
    reasons: tuple[str, ...]


AnyEffect = (
    PullKillSwitch
    | RecancelAll
    | IncidentOpened
    | IncidentUpdated
    | ModeChanged
    | StartRecoveryClock
    | Refused
)


# --- the machine -----------------------------------------------------------------------


def derive_mode(state: DeskState) -> tuple[Mode, float]:
    """The mode and size multiplier that the incidents and latch imply."""
    if state.kill.latched:
        return "HALTED", 0.0
    if not state.armed:
        return "DISARMED", 0.0
    p1 = [i.size_multiplier for i in state.incidents
          if i.severity == "P1" and i.state != "resolved"]
    if p1:
        multiplier = min(p1)
        if state.recovering:
            multiplier = min(multiplier, state.recovery_multiplier)
        return "THROTTLED", multiplier
    if state.recovering:
        return "RECOVERING", state.recovery_multiplier
    return "NORMAL", 1.0


def resume_blockers(
    state: DeskState, *, authorised: bool, limits_unrelaxed: bool = True, limits_detail: str = ""
) -> list[str]:
    """Why ``resume`` must be refused now, in the order of playbook 03's post-incident tree.

    Empty when every condition of docs/architecture.md principle 5 holds.
    """
    if not state.kill.latched:
        return [f"the desk is not halted (mode {state.mode}): there is nothing to resume"]
    reasons: list[str] = []
    # playbook 03 post-incident Q1: "Do not resume on hope. A documented root cause ..."
    for inc in state.incidents:
        if inc.severity == "P0" and (inc.live or not inc.root_cause):
            reasons.append(
                f"incident {inc.id} ({inc.incident_class} P0) is {inc.state}: resolve it with "
                "a written root cause first (do not resume on hope)"
            )
    # The halt itself must be known to hold before it is lifted: every venue showed zero
    # open orders and no new order for the quiet period (playbook 01 killswitch
    # "Verify"). A resume on a kill still cancelling would reopen a desk not yet flat.
    if not state.kill.verified:
        reasons.append(
            "the kill is not verified: every venue must show zero open orders and no new "
            "order for the quiet period first (see status kill.verify_detail)"
        )
    # playbook 03 post-incident Q2: "Reconcile to the broker file first."
    rec = state.last_reconciliation
    since = state.kill.since or 0.0
    if rec is None or rec.ts < since:
        reasons.append(
            "positions have not been reconciled to broker truth since the halt: "
            "run `deskctl reconcile` first"
        )
    elif not rec.clean:
        reasons.append(
            f"the last reconciliation found {rec.differences} difference(s) with broker "
            f"truth (report {rec.report}): fix the book and reconcile again"
        )
    # playbook 03 post-incident Q3: "Limits got softened during the incident. Restore them first."
    # Limits that cannot be compared are not known to be un-relaxed: fail closed.
    if state.kill.limits_at_halt is None:
        reasons.append(
            "the risk limits in force at the halt are not known (not journaled with it), so "
            "whether limits got softened cannot be told: restore the limits you trust, then "
            "pull the kill-switch again (deskctl kill) to record them as the halt's")
    if not limits_unrelaxed:
        reasons.append("risk limits got softened during the incident: restore them first"
                       + (f" ({limits_detail})" if limits_detail else ""))
    if not authorised:
        reasons.append("the caller is not allowed to resume: ask an authorised operator")
    return reasons


def _recovery_clock_may_start(state: DeskState) -> bool:
    """Whether the recovery session clock (playbook 03 post-incident: "Resume at 25% size for
    one full session ... only if incident-free") may run from now: recovering, armed,
    not latched, no live P0/P1, and not already running."""
    return (state.recovering and state.recovering_since is None and state.armed
            and not state.kill.latched
            and not any(i.live and i.severity in ("P0", "P1") for i in state.incidents))


# What the state keeps, so that applying an event costs the same on the first day and
# after a year (and replaying the journal is linear in its length): the resolved
# incidents, the most recent ones (W4 reads a week, postmortems are due within days),
# and of each timeline its beginning and its most recent entries. Everything stays in
# the journal (`desk-supervisor journal export`).
RESOLVED_KEPT = 500
TIMELINE_HEAD = 20
TIMELINE_KEPT = 500
_ELIDED = " earlier timeline entries are elided here; the journal holds every one"


def _timeline(inc: Incident, ts: float, actor: str, text: str) -> tuple[TimelineEntry, ...]:
    timeline = (*inc.timeline, TimelineEntry(ts, actor, text))
    if len(timeline) <= TIMELINE_KEPT:
        return timeline
    # Keep the head, one marker counting what was dropped, and the most recent tail:
    # the two entries after the head make room for the marker (or, when the first of
    # them is the marker already, it absorbs the entry after it).
    first = timeline[TIMELINE_HEAD]
    dropped = 2
    if first.actor == "supervisor" and first.text.endswith(_ELIDED):
        dropped = int(first.text.split(" ", 1)[0]) + 1
    tail = timeline[TIMELINE_HEAD + 2:]
    return (*timeline[:TIMELINE_HEAD],
            TimelineEntry(timeline[TIMELINE_HEAD + 1].ts, "supervisor", f"{dropped}{_ELIDED}"),
            *tail)


def _replace_incident(state: DeskState, inc: Incident) -> DeskState:
    old = state.incidents
    at = next((n for n in range(len(old) - 1, -1, -1) if old[n].id == inc.id), None)
    if at is None:
        return state
    incidents = (*old[:at], inc, *old[at + 1:])  # slices: C speed, whatever the length
    if inc.state == "resolved":
        resolved = [n for n, i in enumerate(incidents) if i.state == "resolved"]
        if len(resolved) > RESOLVED_KEPT:
            first = resolved[0]  # incidents are kept in the order they opened
            incidents = (*incidents[:first], *incidents[first + 1:])
    return msgspec.structs.replace(state, incidents=incidents)


def _new_incident_id(state: DeskState, ts: float) -> str:
    day = time.strftime("%Y%m%d", time.gmtime(ts))
    return f"INC-{day}-{state.next_incident:04d}"


def _live_incident(state: DeskState, incident_class: str, scope: str) -> Incident | None:
    for inc in state.incidents:
        if inc.scope == scope and inc.incident_class == incident_class and inc.live:
            return inc
    return None


def _open_or_join(
    state: DeskState,
    *,
    ts: float,
    actor: str,
    incident_class: str,
    severity: Severity,
    scope: str,
    summary: str,
    size_multiplier: float,
    effects: list[AnyEffect],
) -> tuple[DeskState, Incident]:
    existing = _live_incident(state, incident_class, scope)
    if existing is not None:
        joined = msgspec.structs.replace(
            existing,
            findings=existing.findings + 1,
            # A repeated P1 finding can only tighten the throttle, never loosen it.
            size_multiplier=min(existing.size_multiplier, size_multiplier),
            timeline=_timeline(existing, ts, actor, f"joined: {summary}"),
        )
        effects.append(IncidentUpdated(incident=joined, change="joined"))
        return _replace_incident(state, joined), joined
    inc = Incident(
        id=_new_incident_id(state, ts),
        incident_class=incident_class,
        severity=severity,
        scope=scope,
        summary=summary,
        opened_at=ts,
        opened_by=actor,
        size_multiplier=size_multiplier if severity == "P1" else 1.0,
        timeline=(TimelineEntry(ts, actor, f"opened {severity}: {summary}"),),
    )
    effects.append(IncidentOpened(incident=inc))
    state = msgspec.structs.replace(
        state, incidents=(*state.incidents, inc), next_incident=state.next_incident + 1
    )
    if state.recovering and severity in ("P0", "P1"):
        # playbook 03: promote to 100% only if incident-free; the session clock restarts.
        state = msgspec.structs.replace(state, recovering_since=None)
    return state, inc


def _latch(
    state: DeskState, *, ts: float, actor: str, reason: str, source: str, inc: Incident,
    effects: list[AnyEffect],
) -> DeskState:
    if state.kill.latched:
        # A second trigger while latched is idempotent: no new latch, no new snapshot,
        # but cancel-all goes out again (harmless at the venues; when in doubt, kill).
        kill = msgspec.structs.replace(state.kill, triggers=state.kill.triggers + 1)
        effects.append(RecancelAll(reason=reason))
        return msgspec.structs.replace(state, kill=kill)
    kill = KillState(
        latched=True, since=ts, reason=reason, by=actor, source=source,
        incident_id=inc.id, triggers=1, verified=False, verify_detail="pending",
    )
    effects.append(PullKillSwitch(reason=reason, incident_id=inc.id))
    return msgspec.structs.replace(state, kill=kill, recovering=False, recovering_since=None)


def _finish(
    old: DeskState, state: DeskState, effects: list[AnyEffect]
) -> tuple[DeskState, list[AnyEffect]]:
    mode, multiplier = derive_mode(state)
    state = msgspec.structs.replace(
        state, mode=mode, size_multiplier=multiplier, applied=old.applied + 1
    )
    if mode != old.mode or multiplier != old.size_multiplier:
        effects.append(ModeChanged(old=old.mode, new=mode, size_multiplier=multiplier))
    return state, effects


def _refuse(state: DeskState, code: str, *reasons: str) -> tuple[DeskState, list[AnyEffect]]:
    return state, [Refused(code=code, reasons=tuple(reasons))]


def apply(state: DeskState, event: AnyEvent) -> tuple[DeskState, list[AnyEffect]]:
    """Apply one event; return the new state and the effects to execute.

    A refused event returns the state unchanged (``applied`` not incremented) and a
    single ``Refused`` effect; the runtime does not journal it.
    """
    effects: list[AnyEffect] = []
    old = state
    match event:
        case FindingRaised():
            state, inc = _open_or_join(
                state, ts=event.ts, actor=event.actor, incident_class=event.incident_class,
                severity=event.severity, scope=event.scope, summary=event.summary,
                size_multiplier=event.size_multiplier, effects=effects,
            )
            if event.severity == "P0":
                # playbook 02: "P0 means stop trading"; playbook 06 principle 03.
                state = _latch(
                    state, ts=event.ts, actor=event.actor, reason=event.summary,
                    source="incident", inc=inc, effects=effects,
                )
        case KillRequested():
            state, inc = _open_or_join(
                state, ts=event.ts, actor=event.actor, incident_class=event.incident_class,
                severity="P0", scope="desk", summary=f"kill-switch pulled: {event.reason}",
                size_multiplier=1.0, effects=effects,
            )
            state = _latch(
                state, ts=event.ts, actor=event.actor, reason=event.reason,
                source=event.source, inc=inc, effects=effects,
            )
        case IncidentAcknowledged():
            inc = state.incident(event.incident_id)
            if inc is None:
                return _refuse(state, "unknown_incident", f"no incident {event.incident_id}")
            if inc.state != "open":
                return _refuse(
                    state, "bad_state",
                    f"incident {inc.id} is {inc.state}: only an open incident can be acknowledged",
                )
            inc = msgspec.structs.replace(
                inc, state="acknowledged", commander=event.commander,
                acknowledged_at=event.ts,
                timeline=_timeline(inc, event.ts, event.actor,
                                   f"acknowledged; commander {event.commander}"),
            )
            effects.append(IncidentUpdated(incident=inc, change="acknowledged"))
            state = _replace_incident(state, inc)
        case IncidentResolved():
            inc = state.incident(event.incident_id)
            if inc is None:
                return _refuse(state, "unknown_incident", f"no incident {event.incident_id}")
            if inc.state == "resolved":
                return _refuse(state, "bad_state", f"incident {inc.id} is already resolved")
            if not event.root_cause.strip():
                return _refuse(
                    state, "bad_request",
                    f"incident {inc.id}: a written root cause is required to resolve it",
                )
            inc = msgspec.structs.replace(
                inc, state="resolved", root_cause=event.root_cause.strip(),
                resolved_at=event.ts, resolved_by=event.actor,
                timeline=_timeline(inc, event.ts, event.actor,
                                   f"resolved: {event.root_cause.strip()}"),
            )
            effects.append(IncidentUpdated(incident=inc, change="resolved"))
            state = _replace_incident(state, inc)
            if _recovery_clock_may_start(state):
                state = msgspec.structs.replace(state, recovering_since=event.ts)
                effects.append(StartRecoveryClock(since=event.ts))
        case IncidentNoted():
            inc = state.incident(event.incident_id)
            if inc is None:
                return _refuse(state, "unknown_incident", f"no incident {event.incident_id}")
            inc = msgspec.structs.replace(
                inc, timeline=_timeline(inc, event.ts, event.actor, event.text)
            )
            effects.append(IncidentUpdated(incident=inc, change="noted"))
            state = _replace_incident(state, inc)
        case KillVerified():
            if not state.kill.latched:
                return _refuse(state, "bad_state", "the kill-switch is not latched")
            kill = msgspec.structs.replace(
                state.kill, verified=event.verified, verify_detail=event.detail
            )
            state = msgspec.structs.replace(state, kill=kill)
        case KillSnapshotted():
            pass  # a record for the audit; the state does not change
        case LimitsAtHalt():
            if not state.kill.latched:
                return _refuse(state, "bad_state", "the kill-switch is not latched")
            kill = msgspec.structs.replace(state.kill, limits_at_halt=event.limits)
            state = msgspec.structs.replace(state, kill=kill)
        case ReconciliationCompleted():
            state = msgspec.structs.replace(
                state,
                last_reconciliation=Reconciliation(
                    event.ts, event.clean, event.differences, event.report
                ),
            )
        case ResumeRequested():
            blockers = resume_blockers(state, authorised=event.authorised,
                                       limits_unrelaxed=event.limits_unrelaxed,
                                       limits_detail=event.limits_detail)
            if blockers:
                return _refuse(state, "resume_refused", *blockers)
            # A P1 still live at resume keeps the desk THROTTLED; the recovery session
            # clock starts only once it is resolved.
            # A disarmed desk starts it when armed.
            p1_live = any(i.live and i.severity == "P1" for i in state.incidents)
            since = None if p1_live or not state.armed else event.ts
            state = msgspec.structs.replace(
                state, kill=KillState(), recovering=True, recovering_since=since,
                recovery_multiplier=event.recovery_multiplier,
            )
            if since is not None:
                effects.append(StartRecoveryClock(since=since))
        case RecoveryCompleted():
            since = state.recovering_since
            if not state.recovering or since is None or state.kill.latched or not state.armed:
                return _refuse(state, "bad_state", "the desk is not in a recovery session")
            if event.ts - since < event.session_s:
                return _refuse(
                    state, "bad_state",
                    f"the recovery session has run {event.ts - since:.0f} s of "
                    f"{event.session_s:.0f} s",
                )
            state = msgspec.structs.replace(state, recovering=False, recovering_since=None)
        case ArmRequested():
            if state.armed:
                return _refuse(state, "bad_state", "the desk is already armed")
            if state.kill.latched:
                return _refuse(state, "arm_refused",
                               "the kill-switch is latched: arming does not release it; "
                               "follow the post-incident tree to `deskctl resume` first")
            reasons = list(event.blockers)
            if not event.authorised:
                reasons.append("the caller is not allowed to arm: ask an authorised operator")
            if reasons:
                return _refuse(state, "arm_refused", *reasons)
            state = msgspec.structs.replace(state, armed=True, disarmed_reason=None,
                                            disarmed_since=None)
            if _recovery_clock_may_start(state):
                # The session at recovery size starts now: none of it ran while disarmed.
                state = msgspec.structs.replace(state, recovering_since=event.ts)
                effects.append(StartRecoveryClock(since=event.ts))
        case Disarmed():
            state = msgspec.structs.replace(
                state, armed=False, disarmed_reason=event.reason, arming_journaled=True,
                disarmed_since=state.disarmed_since if not state.armed else event.ts,
                # A recovery session is one full session *at recovery size*: a disarmed
                # desk does not trade, so its clock stops and restarts at the arming.
                recovering_since=None)
        case GateAttested():
            evidence = GateEvidence(event.gate, event.ts, event.actor, event.note)
            state = msgspec.structs.replace(state, attestations=(
                *(e for e in state.attestations if e.gate != event.gate), evidence))
        case RouteChanged():
            if event.venue == state.route:
                return _refuse(state, "bad_state", f"the route is already {event.venue or 'unset'}")
            state = msgspec.structs.replace(state, route=event.venue)
        case DrillCompleted():
            record = DrillRecord(event.kind, event.ts, event.actor, event.ok, event.seconds,
                                 event.detail, event.report)
            # The last DRILLS_KEPT of each kind: many failover drills never push the
            # kill-switch drill behind gate P1 out.
            same = [k for k, d in enumerate(state.drills) if d.kind == event.kind]
            keep = set(same[-(DRILLS_KEPT - 1):])
            state = msgspec.structs.replace(state, drills=(
                *(d for k, d in enumerate(state.drills) if d.kind != event.kind or k in keep),
                record))
        case RunbookStarted() | RunbookStepDone() | RunbookVerified() | RunbookClosed():
            known = isinstance(event, RunbookStarted) and event.incident_id is not None and \
                state.incident(event.incident_id) is not None
            folded = fold_runbook(state.runbook_runs, state.next_run, event,
                                  incident_known=known)
            if isinstance(folded, Refusal):
                return _refuse(state, folded.code, folded.reason)
            state = msgspec.structs.replace(state, runbook_runs=folded[0], next_run=folded[1])
        case CredentialStaged() | CredentialChecked() | CredentialActivated() | \
                CredentialRevoked():
            creds = fold_credential(state.credentials, event)
            if isinstance(creds, Refusal):
                return _refuse(state, creds.code, creds.reason)
            state = msgspec.structs.replace(state, credentials=creds)
        case AuditNoted():
            pass  # journaled for the audit trail; the desk state does not change
    return _finish(old, state, effects)


def replay(events: list[AnyEvent], state: DeskState | None = None) -> DeskState:
    """Fold journaled events into a state, discarding effects."""
    state = state if state is not None else DeskState()
    for event in events:
        state, _ = apply(state, event)
    return state
