"""Journal events: every change to what the desk knows, as tagged, frozen msgspec Structs.

The desk state is the fold of these events (``supervisor.core.desk.apply``), so an event
carries every number the machine needs to decide (the P1 size multiplier in force, the
recovery multiplier at resume time, whether the caller was authorised): replaying the
journal under a different configuration reproduces the same state. New fields get
defaults and go at the end (msgspec schema evolution).

Every event names its cause in ``actor``: ``operator:<user>`` for a person on the
control socket, ``actor:<name>`` for a watcher, ``button:<backend>`` for the physical
switch, ``supervisor`` for the runtime itself.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Severity = Literal["P0", "P1", "P2"]


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every journal event: when (epoch seconds, wall clock) and who/what."""

    ts: float
    actor: str


class FindingRaised(Event, frozen=True, kw_only=True, tag="finding"):
    """A watcher (or the policy on its behalf) reports a problem of an incident class.

    A finding of the same class and scope as a live incident joins it; otherwise it
    opens a new incident. ``size_multiplier`` is the throttle a P1 response applies.
    """

    incident_class: str
    severity: Severity
    scope: str
    summary: str
    size_multiplier: float = 1.0
    evidence: dict[str, object] = {}


class KillRequested(Event, frozen=True, kw_only=True, tag="kill"):
    """Someone pulled the kill-switch: ``deskctl kill``, the button, or a P0 response."""

    reason: str
    source: Literal["operator", "button", "incident"]
    incident_class: str = "operator-kill"


class IncidentAcknowledged(Event, frozen=True, kw_only=True, tag="ack"):
    """An operator takes command of an incident (playbook 01 killswitch step 04)."""

    incident_id: str
    commander: str


class IncidentResolved(Event, frozen=True, kw_only=True, tag="resolve"):
    """An operator closes an incident with a written root cause."""

    incident_id: str
    root_cause: str


class IncidentNoted(Event, frozen=True, kw_only=True, tag="note"):
    """A line added to an incident's timeline (kill breach, re-cancel, verification)."""

    incident_id: str
    text: str


class KillVerified(Event, frozen=True, kw_only=True, tag="kill_verified"):
    """The kill executor's verdict (playbook 01 killswitch, verify).

    ``verified`` is true once every venue reports zero open orders and no new order
    was seen for the quiet period; false when a venue keeps orders open or an order
    appeared after the switch.
    """

    verified: bool
    detail: str


class LimitsAtHalt(Event, frozen=True, kw_only=True, tag="limits_at_halt"):
    """The risk limits in force when the switch was latched, journaled in the same
    transaction as the event that latched it: a resume compares today's limits with
    these (playbook 03 post-incident Q3), after any restart. ``limits`` is their
    canonical JSON (sorted keys)."""

    limits: str


class KillSnapshotted(Event, frozen=True, kw_only=True, tag="kill_snapshot"):
    """The kill snapshot (playbook 01 killswitch step 03), compact: so it is never lost,
    whatever becomes of its file at ``path`` (the file also holds the predictions)."""

    incident_id: str
    path: str
    positions: dict[str, float]
    model_hash: str | None = None
    predictions: int = 0
    open_orders_known_to_engine: int = 0


class ReconciliationCompleted(Event, frozen=True, kw_only=True, tag="reconciled"):
    """Positions were compared with broker truth (playbook 01 reconciliation, gate D4)."""

    clean: bool
    differences: int
    report: str


class ResumeRequested(Event, frozen=True, kw_only=True, tag="resume"):
    """An operator asks to leave HALTED (playbook 03 post-incident).

    ``authorised`` is decided by the shell from the caller's identity and journaled so
    that replay does not depend on the configuration of the day.
    """

    authorised: bool
    recovery_multiplier: float = 0.25
    # playbook 03 post-incident Q3: "Is risk service operating with the original
    # (un-relaxed) limits?" Decided by the shell against the limits in force at the halt.
    limits_unrelaxed: bool = True
    limits_detail: str = ""


class RecoveryCompleted(Event, frozen=True, kw_only=True, tag="recovered"):
    """The runtime's timer says one full session at recovery size has elapsed."""

    session_s: float


class AuditNoted(Event, frozen=True, kw_only=True, tag="audit"):
    """An operator action that changes no desk state but belongs in the audit trail
    (e.g. a symbol halt reported with ``deskctl symbol-halt``)."""

    text: str


class ArmRequested(Event, frozen=True, kw_only=True, tag="arm"):
    """An operator asks to leave DISARMED (playbook 05: "The pre-launch list runs once before
    any capital moves").

    ``blockers`` are the failing pre-launch gates (and D1/D2 in session), judged by the
    shell and journaled, as ``ResumeRequested.authorised`` is, so replay does not depend
    on the evidence of the day.
    """

    authorised: bool
    blockers: tuple[str, ...] = ()


class Disarmed(Event, frozen=True, kw_only=True, tag="disarm"):
    """The desk stops trading until armed again: a fresh install, an operator's
    ``deskctl disarm``, or a daily gate (D1, D2) failing at the open."""

    reason: str


class GateAttested(Event, frozen=True, kw_only=True, tag="gate_attest"):
    """An operator attests a gate of playbook 05 that the supervisor cannot judge itself;
    it holds for the gate's cadence."""

    gate: str
    note: str


class DrillCompleted(Event, frozen=True, kw_only=True, tag="drill"):
    """A drill against paper venues: gate P1 (``killswitch``: ``seconds`` is the time to
    flat) or gate M1 (``failover``: ``seconds`` is the time to recovery)."""

    kind: Literal["killswitch", "failover"]
    ok: bool
    seconds: float | None
    detail: str
    report: str = ""


class RunbookStarted(Event, frozen=True, kw_only=True, tag="runbook_start"):
    """An operator opens a checklist run of one of playbook 01's runbooks.

    ``steps`` is the procedure's step count at the start, journaled so that replay does
    not depend on the runbook table of the day; the run id is made by ``apply``.
    """

    runbook: str
    steps: int
    incident_id: str | None = None


class RunbookStepDone(Event, frozen=True, kw_only=True, tag="runbook_step"):
    """A step of a checklist run is done (playbook 01: "the exact steps"); who is ``actor``."""

    run_id: str
    step: int
    note: str = ""


class RunbookVerified(Event, frozen=True, kw_only=True, tag="runbook_verify"):
    """The verify check of a run (playbook 01: "a verify check").

    ``ok`` is None when the check could not judge (not automated, or waiting for an
    operator's attestation); ``method`` says how it was judged.
    """

    run_id: str
    ok: bool | None
    detail: str
    method: Literal["automated", "attested", "manual"] = "automated"
    evidence: dict[str, object] = {}


class RunbookClosed(Event, frozen=True, kw_only=True, tag="runbook_close"):
    """A run ends: ``completed`` (every step done and the verify passed) or
    ``abandoned`` (with the reason in ``note``)."""

    run_id: str
    outcome: Literal["completed", "abandoned"]
    note: str = ""


class CredentialStaged(Event, frozen=True, kw_only=True, tag="credential_stage"):
    """A new venue credential is in the credential store, to activate no earlier than
    ``activate_at`` (playbook 01 api-credentials step 02). Only its fingerprint is journaled."""

    venue: str
    fingerprint: str
    activate_at: float


class CredentialChecked(Event, frozen=True, kw_only=True, tag="credential_check"):
    """The staged credential was tried with a non-mutating call, GET /v2/account (playbook 01
    api-credentials step 03)."""

    venue: str
    fingerprint: str
    ok: bool
    detail: str


class CredentialActivated(Event, frozen=True, kw_only=True, tag="credential_activate"):
    """The live adapter switched to the staged credential (playbook 01 api-credentials step
    04); the previous one may be revoked ``revoke_after_s`` later."""

    venue: str
    fingerprint: str
    previous: str | None
    revoke_after_s: float


class CredentialRevoked(Event, frozen=True, kw_only=True, tag="credential_revoke"):
    """The previous credential is revoked: removed from the store, and ``confirmed`` when
    the venue answered 401/403 to it (the shell decides, as for ``ResumeRequested``)."""

    venue: str
    fingerprint: str
    confirmed: bool
    detail: str


class RouteChanged(Event, frozen=True, kw_only=True, tag="route"):
    """Where the engine sends new orders (playbook 01 broker-failover step 01: "Flip the
    broker_route flag to the secondary venue"); ``venue`` None: every venue again."""

    venue: str | None
    reason: str


AnyEvent = (
    FindingRaised
    | KillRequested
    | IncidentAcknowledged
    | IncidentResolved
    | IncidentNoted
    | KillVerified
    | LimitsAtHalt
    | KillSnapshotted
    | ReconciliationCompleted
    | ResumeRequested
    | RecoveryCompleted
    | AuditNoted
    | ArmRequested
    | Disarmed
    | GateAttested
    | DrillCompleted
    | RouteChanged
    | RunbookStarted
    | RunbookStepDone
    | RunbookVerified
    | RunbookClosed
    | CredentialStaged
    | CredentialChecked
    | CredentialActivated
    | CredentialRevoked
)

event_encoder = msgspec.json.Encoder()
event_decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)
