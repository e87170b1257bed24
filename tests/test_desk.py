"""The pure desk state machine: unit tests and property tests over random event sequences."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.core.desk import (
    DeskState,
    IncidentOpened,
    ModeChanged,
    PullKillSwitch,
    RecancelAll,
    Refused,
    StartRecoveryClock,
    apply,
    derive_mode,
    replay,
    resume_blockers,
)
from supervisor.core.events import (
    AnyEvent,
    FindingRaised,
    IncidentAcknowledged,
    IncidentNoted,
    IncidentResolved,
    KillRequested,
    KillVerified,
    LimitsAtHalt,
    ReconciliationCompleted,
    RecoveryCompleted,
    ResumeRequested,
    event_decoder,
    event_encoder,
)

T0 = 1_764_000_000.0


def finding(cls: str = "broker-outage", sev: str = "P0", scope: str = "venue:alpha",
            ts: float = T0, mult: float = 1.0) -> FindingRaised:
    return FindingRaised(ts=ts, actor="actor:heartbeat", incident_class=cls, severity=sev,  # type: ignore[arg-type]
                         scope=scope, summary=f"{cls} in {scope}", size_multiplier=mult)


def run(events: list[AnyEvent], state: DeskState | None = None) -> tuple[DeskState, list]:
    state = state or DeskState()
    effects: list = []
    for e in events:
        state, eff = apply(state, e)
        effects.extend(eff)
    return state, effects


def test_fresh_desk_is_normal_at_full_size() -> None:
    assert derive_mode(DeskState()) == ("NORMAL", 1.0)


def test_p0_finding_opens_incident_and_pulls_the_kill_switch() -> None:
    state, effects = apply(DeskState(), finding())
    assert state.mode == "HALTED" and state.size_multiplier == 0.0
    assert state.kill.latched and state.kill.since == T0
    (inc,) = state.incidents
    assert inc.id == "INC-20251124-0001"
    assert (inc.incident_class, inc.severity, inc.state) == ("broker-outage", "P0", "open")
    assert inc.opened_by == "actor:heartbeat"
    assert [type(e) for e in effects] == [IncidentOpened, PullKillSwitch, ModeChanged]
    assert state.kill.incident_id == inc.id


def test_second_finding_of_same_class_and_scope_joins_the_open_incident() -> None:
    state, effects = run([finding(), finding(ts=T0 + 5)])
    (inc,) = state.incidents
    assert inc.findings == 2
    assert len(inc.timeline) == 2
    # The second P0 while latched re-sends cancel-all, with no second latch.
    assert sum(isinstance(e, PullKillSwitch) for e in effects) == 1
    assert sum(isinstance(e, RecancelAll) for e in effects) == 1
    assert state.kill.triggers == 2


def test_finding_in_another_scope_opens_another_incident() -> None:
    state, _ = run([finding(), finding(scope="venue:beta")])
    assert [i.scope for i in state.incidents] == ["venue:alpha", "venue:beta"]


def test_p1_throttles_to_its_multiplier_and_smallest_wins() -> None:
    state, _ = run([finding("pnl-divergence", "P1", "model:m1", mult=0.5)])
    assert (state.mode, state.size_multiplier) == ("THROTTLED", 0.5)
    state, _ = run([finding("feature-drift", "P1", "model:m1", mult=0.25)], state)
    assert (state.mode, state.size_multiplier) == ("THROTTLED", 0.25)


def test_p1_resolved_returns_to_normal() -> None:
    state, _ = run([finding("feature-drift", "P1", "model:m1", mult=0.25)])
    inc_id = state.incidents[0].id
    state, _ = run([IncidentResolved(ts=T0 + 1, actor="operator:ann", incident_id=inc_id,
                                     root_cause="vendor format change, rolled back")], state)
    assert (state.mode, state.size_multiplier) == ("NORMAL", 1.0)


def test_p2_only_monitors() -> None:
    state, _ = run([finding("stale-data", "P2", "symbol:AAPL")])
    assert (state.mode, state.size_multiplier) == ("NORMAL", 1.0)
    assert state.incidents[0].severity == "P2"


def test_operator_kill_opens_an_operator_kill_p0_and_second_kill_is_idempotent() -> None:
    kill = KillRequested(ts=T0, actor="operator:ann", reason="fat finger", source="operator")
    state, effects = run([kill, msgspec.structs.replace(kill, ts=T0 + 1)])
    (inc,) = state.incidents
    assert (inc.incident_class, inc.severity) == ("operator-kill", "P0")
    assert state.kill.reason == "fat finger" and state.kill.by == "operator:ann"
    assert state.kill.since == T0  # the second trigger does not move the latch
    assert sum(isinstance(e, PullKillSwitch) for e in effects) == 1


def test_acknowledge_names_a_commander_and_resolve_needs_a_root_cause() -> None:
    state, _ = run([finding()])
    inc_id = state.incidents[0].id
    state, _ = run([IncidentAcknowledged(ts=T0 + 1, actor="operator:ann", incident_id=inc_id,
                                         commander="ann")], state)
    assert state.incidents[0].state == "acknowledged"
    assert state.incidents[0].commander == "ann"
    again, effects = apply(state, IncidentAcknowledged(ts=T0 + 2, actor="operator:bob",
                                                       incident_id=inc_id, commander="bob"))
    assert again is state
    assert effects == [Refused(code="bad_state", reasons=(
        f"incident {inc_id} is acknowledged: only an open incident can be acknowledged",))]
    same, effects = apply(state, IncidentResolved(ts=T0 + 3, actor="operator:ann",
                                                  incident_id=inc_id, root_cause="   "))
    assert same is state
    assert effects == [Refused(code="bad_request", reasons=(
        f"incident {inc_id}: a written root cause is required to resolve it",))]


def test_unknown_incident_is_refused() -> None:
    state, effects = apply(DeskState(), IncidentAcknowledged(
        ts=T0, actor="operator:ann", incident_id="INC-nope", commander="ann"))
    assert effects == [Refused(code="unknown_incident", reasons=("no incident INC-nope",))]
    assert state == DeskState()


def _halted_and_resolved() -> DeskState:
    state, _ = run([finding(), LimitsAtHalt(ts=T0, actor="supervisor", limits="{}"),
                    KillVerified(ts=T0 + 5, actor="supervisor", verified=True,
                                 detail="venues flat")])
    inc_id = state.incidents[0].id
    state, _ = run([IncidentResolved(ts=T0 + 10, actor="operator:ann", incident_id=inc_id,
                                     root_cause="broker maintenance window")], state)
    return state


def test_resume_refused_with_open_p0_in_the_trees_words() -> None:
    state, _ = run([finding()])
    inc_id = state.incidents[0].id
    _, effects = apply(state, ResumeRequested(ts=T0 + 20, actor="operator:ann", authorised=True))
    (refused,) = effects
    assert isinstance(refused, Refused) and refused.code == "resume_refused"
    assert refused.reasons[0] == (
        f"incident {inc_id} (broker-outage P0) is open: resolve it with a written root cause "
        "first (do not resume on hope)")


def test_resume_refused_until_reconciled_clean_after_the_halt() -> None:
    state = _halted_and_resolved()
    _, effects = apply(state, ResumeRequested(ts=T0 + 20, actor="operator:ann", authorised=True))
    assert effects[0].reasons == (  # type: ignore[union-attr]
        "positions have not been reconciled to broker truth since the halt: run "
        "`deskctl reconcile` first",)
    # A reconciliation from before the halt does not count.
    before = ReconciliationCompleted(ts=T0 - 1, actor="actor:reconciliation", clean=True,
                                     differences=0, report="r0")
    state2, _ = run([before], state)
    assert resume_blockers(state2, authorised=True)[0].startswith("positions have not")
    dirty = ReconciliationCompleted(ts=T0 + 15, actor="actor:reconciliation", clean=False,
                                    differences=2, report="r1")
    state3, _ = run([dirty], state)
    assert resume_blockers(state3, authorised=True) == [
        "the last reconciliation found 2 difference(s) with broker truth (report r1): fix "
        "the book and reconcile again"]


def test_resume_refused_for_an_unauthorised_caller() -> None:
    state = _halted_and_resolved()
    state, _ = run([ReconciliationCompleted(ts=T0 + 15, actor="actor:reconciliation",
                                            clean=True, differences=0, report="r")], state)
    _, effects = apply(state, ResumeRequested(ts=T0 + 20, actor="operator:eve",
                                              authorised=False))
    assert effects[0].reasons == (  # type: ignore[union-attr]
        "the caller is not allowed to resume: ask an authorised operator",)


def test_resume_refused_while_risk_limits_are_softer_than_at_the_halt() -> None:
    state = _halted_and_resolved()
    state, _ = run([ReconciliationCompleted(ts=T0 + 15, actor="actor:reconciliation",
                                            clean=True, differences=0, report="r")], state)
    _, effects = apply(state, ResumeRequested(
        ts=T0 + 20, actor="operator:ann", authorised=True, limits_unrelaxed=False,
        limits_detail="max_position AAPL 500 -> 800"))
    assert effects[0].reasons == (  # type: ignore[union-attr]
        "risk limits got softened during the incident: restore them first "
        "(max_position AAPL 500 -> 800)",)


def test_accepted_resume_recovers_at_quarter_size_then_normal_after_a_session() -> None:
    state = _halted_and_resolved()
    state, _ = run([ReconciliationCompleted(ts=T0 + 15, actor="actor:reconciliation",
                                            clean=True, differences=0, report="r")], state)
    state, effects = apply(state, ResumeRequested(ts=T0 + 20, actor="operator:ann",
                                                  authorised=True, recovery_multiplier=0.25))
    assert (state.mode, state.size_multiplier) == ("RECOVERING", 0.25)
    assert not state.kill.latched
    assert StartRecoveryClock(since=T0 + 20) in effects
    early, effects = apply(state, RecoveryCompleted(ts=T0 + 100, actor="supervisor",
                                                    session_s=3600))
    assert early is state and isinstance(effects[0], Refused)
    state, _ = apply(state, RecoveryCompleted(ts=T0 + 20 + 3600, actor="supervisor",
                                              session_s=3600))
    assert (state.mode, state.size_multiplier) == ("NORMAL", 1.0)


def test_p1_during_recovery_throttles_and_restarts_the_session_clock() -> None:
    state = _halted_and_resolved()
    state, _ = run([ReconciliationCompleted(ts=T0 + 15, actor="a", clean=True, differences=0,
                                            report="r"),
                    ResumeRequested(ts=T0 + 20, actor="operator:ann", authorised=True)], state)
    state, _ = run([finding("pnl-divergence", "P1", "model:m", ts=T0 + 30, mult=0.5)], state)
    # Never looser than recovery size while recovering.
    assert (state.mode, state.size_multiplier) == ("THROTTLED", 0.25)
    assert state.recovering_since is None
    _, effects = apply(state, RecoveryCompleted(ts=T0 + 10_000, actor="supervisor",
                                                      session_s=60))
    assert isinstance(effects[0], Refused)
    p1 = state.incidents[-1].id
    state, effects = apply(state, IncidentResolved(ts=T0 + 40, actor="operator:ann",
                                                   incident_id=p1, root_cause="bad fill feed"))
    assert (state.mode, state.recovering_since) == ("RECOVERING", T0 + 40)
    assert StartRecoveryClock(since=T0 + 40) in effects


def test_p0_during_recovery_halts_again() -> None:
    state = _halted_and_resolved()
    state, _ = run([ReconciliationCompleted(ts=T0 + 15, actor="a", clean=True, differences=0,
                                            report="r"),
                    ResumeRequested(ts=T0 + 20, actor="operator:ann", authorised=True),
                    finding("risk-breach", "P0", "desk", ts=T0 + 30)], state)
    assert state.mode == "HALTED" and not state.recovering
    assert state.kill.since == T0 + 30


def test_kill_verified_is_reported_and_refused_when_not_latched() -> None:
    state, _ = run([finding(), KillVerified(ts=T0 + 61, actor="supervisor", verified=True,
                                            detail="zero open")])
    assert state.kill.verified and state.kill.verify_detail == "zero open"
    _, effects = apply(DeskState(), KillVerified(ts=T0, actor="s", verified=True, detail=""))
    assert isinstance(effects[0], Refused)


def test_events_round_trip_through_json() -> None:
    events: list[AnyEvent] = [
        finding(), IncidentNoted(ts=T0, actor="supervisor", incident_id="x", text="t"),
        ResumeRequested(ts=T0, actor="operator:a", authorised=False),
    ]
    for e in events:
        assert event_decoder.decode(event_encoder.encode(e)) == e


# --- property tests --------------------------------------------------------------------

CLASSES = ["broker-outage", "stale-data", "risk-breach", "feature-drift", "pnl-divergence",
           "config-drift", "operator-kill"]
SEVERITY = {"broker-outage": "P0", "stale-data": "P0", "risk-breach": "P0",
            "feature-drift": "P1", "pnl-divergence": "P1", "config-drift": "P1",
            "operator-kill": "P0"}


@st.composite
def event_sequences(draw: st.DrawFn) -> list[AnyEvent]:
    n = draw(st.integers(min_value=1, max_value=40))
    events: list[AnyEvent] = []
    ts = T0
    for _ in range(n):
        ts += draw(st.floats(min_value=0.0, max_value=4000.0))
        kind = draw(st.sampled_from(["finding", "p2", "kill", "ack", "resolve", "recon",
                                     "resume", "recovered", "verified", "note"]))
        incident_id = f"INC-{draw(st.sampled_from(['20251124', '20251125']))}-" \
                      f"{draw(st.integers(1, 6)):04d}"
        match kind:
            case "finding":
                cls = draw(st.sampled_from(CLASSES[:-1]))
                events.append(finding(cls, SEVERITY[cls], draw(st.sampled_from(["a", "b"])),
                                      ts=ts, mult=draw(st.sampled_from([0.25, 0.5]))))
            case "p2":
                events.append(finding("stale-data", "P2", "symbol:X", ts=ts))
            case "kill":
                events.append(KillRequested(ts=ts, actor="operator:a", reason="r",
                                            source="operator"))
            case "ack":
                events.append(IncidentAcknowledged(ts=ts, actor="operator:a",
                                                   incident_id=incident_id, commander="a"))
            case "resolve":
                events.append(IncidentResolved(
                    ts=ts, actor="operator:a", incident_id=incident_id,
                    root_cause=draw(st.sampled_from(["cause", "", " "]))))
            case "recon":
                clean = draw(st.booleans())
                events.append(ReconciliationCompleted(ts=ts, actor="r", clean=clean,
                                                      differences=0 if clean else 1, report="x"))
            case "resume":
                events.append(ResumeRequested(ts=ts, actor="operator:a",
                                              authorised=draw(st.booleans()),
                                              limits_unrelaxed=draw(st.booleans())))
            case "recovered":
                events.append(RecoveryCompleted(ts=ts, actor="supervisor", session_s=3600))
            case "verified":
                events.append(KillVerified(ts=ts, actor="s", verified=draw(st.booleans()),
                                           detail="d"))
            case "note":
                events.append(IncidentNoted(ts=ts, actor="s", incident_id=incident_id, text="n"))
    return events


@settings(max_examples=200, deadline=None)
@given(event_sequences())
def test_never_leaves_halted_without_the_resume_conditions(events: list[AnyEvent]) -> None:
    state = DeskState()
    for event in events:
        new, _ = apply(state, event)
        if state.mode == "HALTED" and new.mode != "HALTED":
            assert isinstance(event, ResumeRequested)
            assert event.authorised and event.limits_unrelaxed
            assert all(i.state == "resolved" and i.root_cause
                       for i in state.incidents if i.severity == "P0")
            rec = state.last_reconciliation
            assert rec is not None and rec.clean and rec.ts >= (state.kill.since or 0)
            assert new.mode in ("RECOVERING", "THROTTLED")
            assert new.size_multiplier <= event.recovery_multiplier
        if new.kill.latched:
            assert new.mode == "HALTED"
        state = new


@settings(max_examples=200, deadline=None)
@given(event_sequences())
def test_size_multiplier_always_matches_the_mode(events: list[AnyEvent]) -> None:
    state = DeskState()
    for event in events:
        state, _ = apply(state, event)
        assert (state.mode, state.size_multiplier) == derive_mode(state)
        match state.mode:
            case "HALTED":
                assert state.size_multiplier == 0.0
            case "NORMAL":
                assert state.size_multiplier == 1.0
            case "RECOVERING":
                assert state.size_multiplier == state.recovery_multiplier
            case "THROTTLED":
                live_p1 = [i.size_multiplier for i in state.incidents
                           if i.live and i.severity == "P1"]
                assert live_p1 and state.size_multiplier <= min(live_p1)


@settings(max_examples=200, deadline=None)
@given(event_sequences())
def test_replaying_the_journal_reproduces_the_state(events: list[AnyEvent]) -> None:
    state = DeskState()
    journal: list[bytes] = []
    for event in events:
        state, effects = apply(state, event)
        if not (effects and isinstance(effects[0], Refused)):
            journal.append(event_encoder.encode(event))
    replayed = replay([event_decoder.decode(b) for b in journal])
    assert replayed == state
    assert replayed.applied == len(journal)


def test_resume_refused_until_the_kill_is_verified() -> None:
    """A halt is lifted only once it is known to hold: every venue flat and quiet. A
    resume 27 ms after a kill, with its incident resolved and a clean reconciliation,
    is refused; the same resume after KillVerified is accepted."""
    state, _ = run([finding(), LimitsAtHalt(ts=T0, actor="supervisor", limits="{}")])
    inc_id = state.incidents[0].id
    state, _ = run([
        IncidentResolved(ts=T0 + 0.01, actor="operator:ann", incident_id=inc_id,
                         root_cause="drill"),
        ReconciliationCompleted(ts=T0 + 0.02, actor="actor:reconciliation", clean=True,
                                differences=0, report="r1")], state)
    resume = ResumeRequested(ts=T0 + 0.027, actor="operator:ann", authorised=True)
    _, effects = apply(state, resume)
    assert isinstance(effects[0], Refused)
    assert effects[0].reasons == (
        "the kill is not verified: every venue must show zero open orders and no new order "
        "for the quiet period first (see status kill.verify_detail)",)
    state, _ = run([KillVerified(ts=T0 + 61, actor="supervisor", verified=True,
                                 detail="zero open")], state)
    state, effects = apply(state, resume)
    assert state.mode == "RECOVERING"


def test_resume_refused_while_the_limits_at_the_halt_are_unknown() -> None:
    """Principle 08 fails closed: without the limits journaled with the halt, whether
    they were loosened cannot be told, and the resume is refused saying so."""
    state = _halted_and_resolved()
    state, _ = run([ReconciliationCompleted(ts=T0 + 15, actor="actor:reconciliation",
                                            clean=True, differences=0, report="r1")], state)
    assert resume_blockers(state, authorised=True) == []
    unknown = msgspec.structs.replace(
        state, kill=msgspec.structs.replace(state.kill, limits_at_halt=None))
    (reason,) = resume_blockers(unknown, authorised=True)
    assert reason.startswith("the risk limits in force at the halt are not known")
    _, effects = apply(DeskState(), LimitsAtHalt(ts=T0, actor="supervisor", limits="{}"))
    assert isinstance(effects[0], Refused)  # no halt, nothing to record


def test_the_state_keeps_the_recent_resolved_incidents_and_bounded_timelines() -> None:
    """So that an event costs the same after a year as on the first day (and replay is
    linear): 500 resolved incidents are kept, every live one, and of a timeline its head,
    a marker counting what was left out, and its most recent entries."""
    from supervisor.core.desk import RESOLVED_KEPT, TIMELINE_HEAD, TIMELINE_KEPT

    state = DeskState()
    for i in range(RESOLVED_KEPT + 10):
        state, _ = apply(state, finding("feature-drift", "P2", scope=f"f{i}", ts=T0 + i))
        inc = state.incidents[-1].id
        state, _ = apply(state, IncidentResolved(ts=T0 + i, actor="operator:ann",
                                                 incident_id=inc, root_cause="fixed"))
    state, _ = apply(state, finding("feature-drift", "P1", scope="live", ts=T0 + 9999))
    resolved = [i for i in state.incidents if i.state == "resolved"]
    assert len(resolved) == RESOLVED_KEPT
    assert resolved[0].scope == "f10" and state.incidents[-1].live  # the oldest went
    live = state.incidents[-1].id
    for n in range(TIMELINE_KEPT + 100):
        state, _ = apply(state, IncidentNoted(ts=T0 + n, actor="s", incident_id=live,
                                              text=f"note {n}"))
    timeline = state.incident(live).timeline  # type: ignore[union-attr]
    assert len(timeline) == TIMELINE_KEPT
    assert timeline[0].text.startswith("opened P1")
    marker = timeline[TIMELINE_HEAD]
    assert marker.text == ("102 earlier timeline entries are elided here; the journal holds "
                           "every one")
    assert timeline[-1].text == f"note {TIMELINE_KEPT + 99}"
