"""The imperative shell: turns findings and commands into events, applies them to the
pure desk state machine, journals them and executes the effects (docs/architecture.md principle 2).

Order on the kill path (principle 3): ``apply`` (pure, microseconds), then the hot
effects at once (gate blocked, watchers told, one cancel-all task per venue started),
then the journal append (fsync in a worker thread, so it runs while the cancels are
being written), then the slow effects (alerts, snapshot, verification).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import trio

from actors.base import AlertRaised, Finding, Report
from actors.configdrift import ConfigDriftMonitor
from actors.freshness import FreshnessActor
from actors.heartbeat import HeartbeatActor
from actors.model import ModelMonitor
from actors.pnl import PnlMonitor
from actors.reconciliation import Reconciler, ReconciliationReport
from actors.risk import RiskActor
from hardware import ButtonBridge, SerialLineBridge, StatusLamp, create_bridge, desk_callbacks
from hardware.lamp import serve_lamps
from supervisor.config import Config
from supervisor.control.authz import Caller, is_operator
from supervisor.core.book import Book
from supervisor.core.calendar import Calendar
from supervisor.core.desk import (
    AnyEffect,
    DeskState,
    Incident,
    IncidentOpened,
    IncidentUpdated,
    ModeChanged,
    PullKillSwitch,
    RecancelAll,
    Refused,
    StartRecoveryClock,
    apply,
    graded_severity,
    more_severe,
    resume_blockers,
)
from supervisor.core.errors import ControlError, DeskError, JournalError
from supervisor.core.events import (
    AnyEvent,
    AuditNoted,
    Disarmed,
    FindingRaised,
    IncidentAcknowledged,
    IncidentNoted,
    IncidentResolved,
    KillRequested,
    KillVerified,
    LimitsAtHalt,
    RecoveryCompleted,
    ResumeRequested,
    RouteChanged,
)
from supervisor.core.gatepolicy import GateView, view_from_status
from supervisor.core.protocol import ok as protocol_ok
from supervisor.ops.alerts import AlertLog
from supervisor.ops.arming import FRESH_INSTALL, UPGRADED, Arming
from supervisor.ops.credentials import credentials_status
from supervisor.ops.deploys import DeployWatch
from supervisor.playbook import auto as auto_trees
from supervisor.playbook import resume as resume_tree
from supervisor.runtime.alertstorms import AlertStorms
from supervisor.runtime.calendars import CalendarService
from supervisor.runtime.checkpoint import CHECKPOINT_EVERY, Checkpoint, write_checkpoint
from supervisor.runtime.checkpoint import path_in as checkpoint_path
from supervisor.runtime.compliance import ComplianceWatch
from supervisor.runtime.deadman import DeadMan
from supervisor.runtime.flatten import Flattener
from supervisor.runtime.haltlimits import HaltLimits
from supervisor.runtime.journal import Journal, JournalSetAside
from supervisor.runtime.killswitch import KillSwitch
from supervisor.runtime.postmortems import Postmortems
from supervisor.runtime.storage import Storage
from supervisor.runtime.supervision import ActorStatus, keep_running, supervise
from supervisor.runtime.treewalks import TreeWalks
from supervisor.venues.alpaca import HttpVenue

log = logging.getLogger("desk.runtime")



class Desk:
    """The running supervisor: state, journal, actors, kill-switch and watchers."""

    def __init__(
        self,
        config: Config,
        journal: Journal,
        venues: Sequence[HttpVenue],
        *,
        wall_clock: Callable[[], float],
        pin_factory: Any = None,
        open_port: Callable[[], Any] | None = None,
        journal_set_aside: JournalSetAside | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        """``pin_factory`` and ``open_port`` replace the button's hardware with a stand-in
        (``simulators.buttons``); None in production. ``journal_set_aside``: the journal
        was damaged and moved aside at start; the desk starts halted on a new one.
        ``checkpoint``: the one read at start, folded from only if the journal was
        replayed after its record (``Journal.replayed_after``)."""
        self.config = config
        self.journal = journal
        self.journal_set_aside = journal_set_aside
        # The state the start-up fold begins from (the journal replayed only the events
        # after it), and the journal record of the last checkpoint written.
        self._checkpoint = checkpoint
        self._checkpoint_seq = 0
        self._checkpointing = False
        self.checkpoint_error: str | None = None
        self.venues = list(venues)
        self.wall = wall_clock
        self.state_dir = Path(config.state_dir)
        self.state = DeskState()
        self.book = Book(clock=trio.current_time,
                         prediction_window_s=config.kill.prediction_window_s)
        # playbook 03 alerts-spam: the desk's answer to a storm the alert log detects.
        self.storms = AlertStorms(state=lambda: self.state, report=self.report,
                                  submit=self.submit_background, wall=wall_clock)
        self.alerts = AlertLog(wall_clock, config=config.alerts, on_spam=self.storms.on_spam)
        # Artifacts (snapshots, reports, postmortems) that a storage error keeps, retries
        # and shows in status instead of losing.
        self.storage = Storage(wall_clock=wall_clock, retry_s=config.storage.retry_s,
                               page=lambda text: self.alerts.alert(
                                   "PAGE", text, source="supervisor:storage"))
        self.killswitch = KillSwitch(
            self.venues, self.book, config.kill, self.state_dir,
            submit=self.submit_background, wall_clock=wall_clock,
            publish_blocked=self._publish_blocked,
            alert=lambda summary, incident_id: self.alerts.alert(
                "PAGE", summary, source="supervisor:kill-switch", incident_id=incident_id),
            store=self.storage.write,
        )
        self.killswitch.model_hash = config.engine.model_hash
        # The trading calendar (docs/operations.md "Trading calendar"): the venue's own,
        # the holidays library's, the config's; the freshness deadlines, the end-of-day
        # run and "one full session" of recovery follow it.
        self.calendar = CalendarService(config.calendar, self.venues, wall_clock=wall_clock,
                                        on_change=self._calendar_changed)
        self.reconciler = Reconciler(
            self.venues, self.book, config.reconciliation, self.state_dir,
            submit=self.submit_background, wall_clock=wall_clock, store=self.storage.write,
            calendar=lambda: self.calendar.calendar,
        )
        # The limits in force, as journaled with every halt (playbook 03 post-incident Q3).
        self.halt_limits = HaltLimits(self.state_dir, state=lambda: self.state,
                                      limits=lambda: self.risk.limits, wall=wall_clock,
                                      submit=self.submit_background)
        # playbook 01 postmortem: drafted for every resolved incident.
        self.postmortems = Postmortems(
            self.state_dir, state=lambda: self.state, store=self.storage.write,
            kill_snapshot=lambda: (self.killswitch.incident_id, self.killswitch.snapshot_path),
            wall=wall_clock)
        # One flatten path: deskctl flatten (and the drills) reduce positions from broker
        # truth with marketable limits (docs/operations.md "Flatten").
        self.flattener = Flattener(self.venues, config.flatten,
                                   prices=lambda symbol: self.risk.prices.get(symbol))
        self.flattening: str | None = None
        self.last_flatten: dict[str, Any] | None = None
        # The venues' own dead man's switch, re-armed while the desk is healthy
        # (docs/operations.md "Dead man's switch"); only venues with dead_man_s set.
        self.dead_man = DeadMan(self.venues, {v.name: v.dead_man_s for v in config.venues},
                                health=self._dead_man_health, report=self.report,
                                wall_clock=wall_clock)
        # The venues' own order records enforce the gate (docs/operations.md "Compliance
        # watch"): an order the gate would have refused is cancelled, a runaway-engine P0.
        self.compliance = ComplianceWatch(self.venues, config.compliance,
                                          view=self.gate_view, ours=self.flattener.sent,
                                          report=self.report, wall_clock=wall_clock)
        self.heartbeat = HeartbeatActor(self.venues, self.book, config.heartbeat, self.report)
        self.risk = RiskActor(
            config.risk, self.book, self.venues, self.report, wall_clock=wall_clock,
            breached_limits=self.halt_limits.breached, note=self.halt_limits.note_risk,
            flatten=lambda targets: self.flattener.flatten(
                note=lambda text: self.halt_limits.note_risk(f"auto-{text}"),
                targets=targets),
        )
        self.book.subscribe(self.risk.on_telemetry)
        self.freshness = FreshnessActor(
            config.freshness, self.book, self.report, wall_clock=wall_clock,
            divergence_path=self.state_dir / "feed-divergence.json")
        self._calendar_changed(self.calendar.calendar)
        self.book.subscribe(self.freshness.on_telemetry)
        self.pnl = PnlMonitor(config.pnl, self.report, wall_clock=wall_clock,
                              history_path=self.state_dir / "pnl-history.json")
        self.book.subscribe(self.pnl.on_telemetry)
        self.model = ModelMonitor(config.model, self.report, wall_clock=wall_clock,
                                  model_hash=config.engine.model_hash,
                                  state_path=self.state_dir / "model-monitor.json")
        self.book.subscribe(self.model.on_telemetry)
        self.config_drift = ConfigDriftMonitor(config.config_drift, self.report,
                                               snapshot_dir=self.state_dir / "config-drift",
                                               wall_clock=wall_clock)
        # Deploys seen (playbook 03 config-mismatch Q1, probe recent_deploy).
        self.deploys = DeployWatch(
            config.deploys, model_hash=lambda: self.model.model_hash,
            config_commit=lambda: self.config_drift.commit,
            config_files=list(config.config_drift.files),
            state_path=self.state_dir / "deploys.json", wall_clock=wall_clock,
            note=self._note_deploy)
        # The recovery-tree walks the supervisor makes itself on new incidents
        # (playbook 03); kept in a file so that they outlive a restart.
        self.walks = TreeWalks(self.state_dir / "tree-walks.json", wall=wall_clock,
                               state=lambda: self.state, status=self.status,
                               note=self.submit_background)
        self.actor_status: dict[str, ActorStatus] = {}
        # The physical kill-switch (playbook 01 killswitch step 01: "endpoint or physical
        # button - both are equivalent"): a press is Desk.kill with source "button".
        self.button: ButtonBridge | None = None
        self._pin_factory = pin_factory
        self.lamp: StatusLamp | None = None
        if config.button is not None:
            on_press, on_loss = desk_callbacks(config.button, kill=self.kill,
                                               report=self.report)
            self.button = create_bridge(config.button, on_press=on_press, on_loss=on_loss,
                                        wall_clock=wall_clock, pin_factory=pin_factory,
                                        open_port=open_port)
        self._watchers: set[trio.MemorySendChannel[dict[str, Any]]] = set()
        self._direct: dict[trio.MemorySendChannel[dict[str, Any]],
                           Callable[[bytes], bool]] = {}
        self._nursery: trio.Nursery | None = None
        self._recovery_scope: trio.CancelScope | None = None
        self.loop_beat = 0.0
        self.started_at = 0.0
        self._unjournaled: list[AnyEvent] = []
        self._journal_lock = trio.Lock()
        self.journal_error: str | None = None
        # The control socket's counts (accepted, refused, dropped by reason, ...):
        # kept by the ControlServer, read by status and metrics.
        self.control_stats: Counter[str] = Counter()
        self.arming = Arming(self)

    # --- lifecycle -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Desk] = trio.TASK_STATUS_IGNORED) -> None:
        """Replay the journal, start the kill-switch and the actors; started when ready.

        A journal that cannot be read stops the daemon (systemd restarts it): we never
        run on a state we could not rebuild.
        """
        self.loop_beat = self.started_at = trio.current_time()
        if self.journal.replayed is None:
            await self.journal.replay(
                (self._checkpoint.seq, self._checkpoint.chain) if self._checkpoint else None)
        events = self.journal.replayed or []
        self.journal.replayed = None  # folded once; not kept for the daemon's life
        start = self._checkpoint
        if start is not None and self.journal.replayed_after != (start.seq, start.chain):
            start = None  # not this journal's: the whole journal was replayed
        self._checkpoint_seq = start.seq if start is not None else 0
        state = start.state if start is not None else DeskState()
        self._checkpoint = None
        for event in events:
            state, _ = apply(state, event)
        self.state = state
        if state.last_reconciliation is not None:
            await self.reconciler.restore(state.last_reconciliation.report)
        await self.walks.load()
        log.info("journal replayed: %d events%s, mode %s, %d live incident(s)", len(events),
                 f" after the checkpoint at record {start.seq}" if start else "",
                 state.mode, sum(1 for i in state.incidents if i.live))
        if self.config.gates.start_disarmed and not state.arming_journaled:
            # A fresh install starts DISARMED (docs/architecture.md modes; playbook 05
            # "The pre-launch list runs once before any capital moves"), and so does a
            # journal written before the gates existed: it was never armed.
            reason = FRESH_INSTALL if state.applied == 0 else UPGRADED
            if self.journal_set_aside is not None:
                reason = ("the journal was damaged and set aside: the desk's history is lost; "
                          "arm again once the pre-launch gates pass")
            with contextlib.suppress(JournalError):  # in force in memory; retried
                await self.submit(Disarmed(ts=self.wall(), actor="supervisor", reason=reason))
        if self.config.risk.limits and not self.config.risk.auto_flatten:
            # A site choice against playbook 02 risk-breach: on the record at every start.
            with contextlib.suppress(JournalError):
                await self.submit(AuditNoted(
                    ts=self.wall(), actor="supervisor:config",
                    text="risk auto-flatten is OFF ([risk] auto_flatten = false): a breach "
                         "halts but no position is cut to its limit, against playbook 02 "
                         "risk-breach \"auto-flattens to the next compliant size; do not "
                         "let traders override it\""))
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.killswitch.run)
            await nursery.start(self.alerts.run)
            nursery.start_soon(keep_running, "the journal retry", self._retry_journal)
            nursery.start_soon(keep_running, "the storage retry", self.storage.run)
            nursery.start_soon(keep_running, "the watch heartbeat", self._watch_heartbeat)
            nursery.start_soon(keep_running, "the EOD flatten", self._eod_flatten_loop)
            if state.kill.latched:
                # A restart while halted cancels everything again and re-verifies: the
                # venues may have changed while we were down (NautilusTrader
                # #5000, Hummingbot #2955).
                self.killswitch.trip(
                    reason=f"restart while halted ({state.kill.reason})",
                    incident_id=state.kill.incident_id or "", latched_wall=self.wall(),
                    snapshot=False,
                )
                if state.kill.verified:
                    await self.submit(KillVerified(
                        ts=self.wall(), actor="supervisor", verified=False,
                        detail="restarted while halted: re-verifying the venues",
                    ))
            if state.kill.latched and state.kill.limits_at_halt is None:
                await self.halt_limits.migrate_legacy()
            if self.journal_set_aside is not None:
                await self._journal_damaged(self.journal_set_aside)
            if state.recovering and state.recovering_since is not None:
                self._schedule_recovery(state.recovering_since)
            watchers = [self.calendar, self.heartbeat, self.freshness, self.risk, self.reconciler,
                        self.pnl, self.config_drift, self.model, self.deploys]
            if self.config.compliance.enabled:
                watchers.append(self.compliance)
            if self.dead_man.venues:
                watchers.append(self.dead_man)
            for actor in watchers:
                status = self.actor_status[actor.name] = ActorStatus()
                await nursery.start(supervise, actor, self.config.supervision, self.report,
                                    status)
            if self.button is not None:
                # Not awaited: a serial button may take its start-up grace to report.
                status = self.actor_status[self.button.name] = ActorStatus()
                nursery.start_soon(supervise, self.button, self.config.supervision,
                                   self.report, status)
            if self.config.button is not None and (
                    self.config.button.lamp.enabled
                    or isinstance(self.button, SerialLineBridge)):
                nursery.start_soon(keep_running, "the status lamp", self._run_lamp)
            nursery.start_soon(keep_running, "the gate re-evaluation", self.arming.run)
            task_status.started(self)

    async def _journal_damaged(self, aside: JournalSetAside) -> None:
        """The journal could not be replayed and was moved aside: what the desk did before
        is unknown, so it is the worse case. A P0 (its kill pulls the switch: every
        venue is cancelled) that pages and names the file; resolving it with a written
        root cause is the operator's acceptance of the lost history, and the other
        resume conditions (verified kill, a clean reconciliation) follow as for any
        halt."""
        await self.submit_background(FindingRaised(
            ts=self.wall(), actor="supervisor:journal", incident_class="journal-damaged",
            severity="P0", scope="desk",
            summary=(f"the journal was damaged and moved aside to {aside.path}; the desk's "
                     f"history before it is lost, so every venue is cancelled: "
                     f"{aside.reason}. Check it with `desk-supervisor journal verify --path "
                     f"{aside.path}`; resolving this incident accepts the lost history"),
            size_multiplier=0.0, evidence={"set_aside": aside.path, "reason": aside.reason}))

    # --- events in -------------------------------------------------------------------

    async def submit(self, event: AnyEvent) -> tuple[DeskState, list[AnyEffect]]:
        """Apply, run hot effects, journal, run slow effects. Returns the new state.

        A refused event changes nothing and is not journaled; its ``Refused`` effect is
        returned for the caller to report.

        Raises:
            JournalError: the event is applied and in force, but not yet durable.
        """
        state, effects, failure = await self.submit_reporting(event)
        if failure is not None:
            raise failure
        return state, effects

    async def submit_reporting(
        self, event: AnyEvent
    ) -> tuple[DeskState, list[AnyEffect], JournalError | None]:
        """``submit`` that returns, rather than raises, a journal failure: the state is
        the one this event made (not whatever later events made of it by the time the
        journal answered) and the error is None once the event is durable."""
        old = self.state
        state, effects = apply(old, event)
        if effects and isinstance(effects[0], Refused):
            return state, effects, None
        self.state = state
        latched = False
        for effect in effects:  # hot: nothing here awaits
            match effect:
                case PullKillSwitch():
                    self.killswitch.trip(reason=effect.reason, incident_id=effect.incident_id,
                                         latched_wall=event.ts)
                    latched = True
                case RecancelAll():
                    self.killswitch.recancel(effect.reason)
        self._unjournaled.append(event)
        # The gate view this event made, numbered, for judging the venues' orders.
        self.compliance.note_view()
        if latched or (isinstance(event, KillRequested) and state.kill.latched
                       and state.kill.limits_at_halt is None):
            # The limits in force at the halt go into the journal in the same batch (one
            # transaction) as the event that latched it: what a resume compares with
            # after any restart. A new pull on a halt whose limits are unknown records
            # the limits in force now: the operator's explicit baseline.
            record = LimitsAtHalt(ts=event.ts, actor="supervisor",
                                  limits=self.halt_limits.now())
            state, _ = apply(state, record)
            self.state = state
            self._unjournaled.append(record)
        failure: JournalError | None = None
        try:
            await self._flush_journal()
        except JournalError as exc:
            failure = exc
        finally:
            # Alerts and watchers are told even when the journal is failing.
            self._slow_effects(event, effects)
        return state, effects, failure

    async def submit_background(self, event: AnyEvent) -> None:
        """``submit`` for the runtime's own workers (kill verification, snapshots,
        reconciliations): a failing journal is already paged and retried, so it must not
        crash the worker that noticed something."""
        with contextlib.suppress(JournalError):
            await self.submit(event)

    async def _flush_journal(self) -> None:
        """Append every not-yet-durable event, in order.

        A journal that cannot be written does not stop the desk: what is in memory (a
        halt, above all) stays in force, the failure is paged and shown in status,
        ``resume`` is refused, and the events are retried in order until they land.

        Raises:
            JournalError: the events are still not durable.
        """
        async with self._journal_lock:
            if not self._unjournaled:
                return
            pending = list(self._unjournaled)
            try:
                await self.journal.append(pending)
            except JournalError as exc:
                if self.journal_error is None:
                    log.critical("journal append failed: %s", exc)
                    self.alerts.alert("PAGE", f"journal failing, state not durable: {exc}",
                                      source="supervisor:journal")
                self.journal_error = str(exc)
                raise
            del self._unjournaled[: len(pending)]
            if self.journal_error is not None:
                log.warning("journal recovered: %d pending event(s) written", len(pending))
            self.journal_error = None
            seq, chain = self.journal.last
            if (not self._unjournaled and self._nursery is not None
                    and not self._checkpointing
                    and seq - self._checkpoint_seq >= CHECKPOINT_EVERY):
                # The state now is exactly the fold of the journal up to `seq`.
                self._checkpoint_seq = seq
                self._checkpointing = True  # one write at a time: they share a .tmp
                self._nursery.start_soon(self._write_checkpoint, Checkpoint(
                    seq=seq, chain=chain, state=self.state))

    async def _write_checkpoint(self, checkpoint: Checkpoint) -> None:
        """A failure costs only a longer start (the journal is the truth): logged once
        and shown in status, retried at the next CHECKPOINT_EVERY events."""
        try:
            await self.journal.run_sync(write_checkpoint, checkpoint_path(self.state_dir),
                                        checkpoint)
        except OSError as exc:
            if self.checkpoint_error is None:
                log.error("checkpoint at journal record %d not written: %s",
                          checkpoint.seq, exc)
            self.checkpoint_error = str(exc)
        else:
            self.checkpoint_error = None
        finally:
            self._checkpointing = False

    @property
    def journal_pending(self) -> int:
        """Events applied but not yet durable in the journal (status, metrics)."""
        return len(self._unjournaled)

    async def _retry_journal(self) -> None:
        while True:
            await trio.sleep(1.0)
            if self._unjournaled:
                with contextlib.suppress(JournalError):
                    await self._flush_journal()

    def _slow_effects(self, event: AnyEvent, effects: list[AnyEffect]) -> None:
        for effect in effects:
            match effect:
                case IncidentOpened(incident=inc):
                    log.warning("incident opened: %s", inc.summary, extra={
                        "incident": inc.id, "incident_class": inc.incident_class,
                        "severity": inc.severity, "mode": self.state.mode,
                        "actor": inc.opened_by})
                    channel = "QUEUE" if inc.severity == "P2" else "PAGE"
                    self.alerts.alert(
                        channel, f"{inc.severity} {inc.incident_class} opened: {inc.summary}",
                        source=inc.opened_by, incident_id=inc.id, scope=inc.scope,
                        severity=inc.severity,
                    )
                    self._publish("incident", incident=msgspec.to_builtins(inc))
                    if TreeWalks.walks_class(inc.incident_class) and self._nursery:
                        self._nursery.start_soon(self.walks.walk, inc.id)
                case IncidentUpdated(incident=inc, change=change):
                    log.info("incident %s", change, extra={
                        "incident": inc.id, "incident_class": inc.incident_class,
                        "severity": inc.severity, "mode": self.state.mode,
                        "actor": event.actor})
                    self._publish("incident", incident=msgspec.to_builtins(inc), change=change)
                case ModeChanged(old=old_mode, new=new_mode):
                    log.warning("mode %s -> %s (size %.2f)", old_mode, new_mode,
                                effect.size_multiplier,
                                extra={"mode": new_mode, "actor": event.actor})
                    if new_mode != "HALTED" and old_mode == "HALTED":
                        self.killswitch.release()
                    self._publish("mode", old=old_mode, new=new_mode)
                case StartRecoveryClock(since=since):
                    self._schedule_recovery(since)
                case _:
                    pass
        if isinstance(event, KillVerified) and event.verified:
            self._after_halt_reconciliation()
        # PagerDuty follows the incident: `deskctl ack` acknowledges the page.
        if isinstance(event, IncidentAcknowledged) and any(
                isinstance(e, IncidentUpdated) for e in effects):
            self.alerts.incident_acknowledged(event.incident_id, event.commander)
        if isinstance(event, IncidentResolved) and any(
                isinstance(e, IncidentUpdated) for e in effects):
            self.alerts.incident_resolved(event.incident_id, event.root_cause)
            inc = self.state.incident(event.incident_id)
            if inc is not None and self._nursery is not None:
                self._nursery.start_soon(self.postmortems.write, inc)

    async def _note_deploy(self, text: str) -> None:
        await self.submit_background(AuditNoted(ts=self.wall(), actor="supervisor:deploys",
                                                text=text))

    def _after_halt_reconciliation(self) -> None:
        rec = self.state.last_reconciliation
        since = self.state.kill.since or 0.0
        if self.config.reconciliation.after_halt and (rec is None or rec.ts < since):
            assert self._nursery is not None
            self._nursery.start_soon(self._reconcile_quietly, "after-halt")

    async def _reconcile_quietly(self, trigger: str) -> None:
        try:
            await self.reconciler.reconcile(trigger=trigger)
        except DeskError as exc:
            log.error("reconciliation (%s) failed: %s", trigger, exc)

    def _calendar_changed(self, calendar: Calendar) -> None:
        # A 24/7 desk calendar leaves an older config's [freshness] session in force.
        if not (calendar.always and self.config.freshness.session):
            self.freshness.set_calendar(calendar)

    def recovery_ends_at(self, since: float) -> float:
        """When the recovery begun at ``since`` has run "one full session" (playbook 03
        post-incident): the close of the first complete session that opens after it, on
        a trading calendar; ``recovery.session_s`` later on a 24/7 one."""
        session = self.calendar.calendar.first_full_session_after(since)
        if session is None:
            return since + self.config.recovery.session_s
        return session.close

    def _schedule_recovery(self, since: float) -> None:
        assert self._nursery is not None
        if self._recovery_scope is not None:
            self._recovery_scope.cancel()
        scope = self._recovery_scope = trio.CancelScope()

        async def timer() -> None:
            with scope:
                # Re-read at least hourly: the calendar may change (a venue's answer).
                while (left := self.recovery_ends_at(since) - self.wall()) > 0:  # noqa: ASYNC110 - a deadline that a calendar refresh may move
                    await trio.sleep(min(left, 3600.0))
                await self.submit(RecoveryCompleted(ts=self.wall(), actor="supervisor",
                                                    session_s=self.wall() - since))

        self._nursery.start_soon(timer)

    async def report(self, item: Report) -> None:
        """What actors call: a finding becomes an incident by the policy; an alert is sent."""
        match item:
            case Finding():
                await self.submit(self.policy(item))
            case AlertRaised():
                inc = next((i for i in self.state.incidents
                            if i.live and i.scope == item.scope), None)
                self.alerts.alert(item.channel, item.summary, source=f"actor:{item.actor}",
                                  incident_id=inc.id if inc else None, scope=item.scope)

    def policy(self, finding: Finding) -> FindingRaised:
        """Map a finding to its incident (playbook 02: "The severity is non-negotiable")."""
        # The class's severity, or its table row (an unknown class: P0, "when in doubt").
        # A finding may raise it, never lower it (playbook 06 principle 02).
        severity = graded_severity(finding.incident_class, finding.scope)
        if finding.severity is not None:
            if more_severe(finding.severity, severity) != severity:
                severity = finding.severity
            elif finding.severity != severity:
                log.warning("finding of %s asked for %s; the class says %s: kept",
                            finding.incident_class, finding.severity, severity)
        return FindingRaised(
            ts=self.wall(), actor=f"actor:{finding.actor}",
            incident_class=finding.incident_class, severity=severity, scope=finding.scope,
            summary=finding.summary,
            size_multiplier=self.config.throttle.for_class(finding.incident_class),
            evidence=finding.evidence,
        )

    # --- operator commands -----------------------------------------------------------

    async def kill(self, reason: str, *, actor: str, source: str = "operator",
                   incident_class: str | None = None) -> dict[str, Any]:
        """Pull the kill-switch; answer with what this kill did.

        ``incident_class`` is that of the incident a first pull opens (default:
        ``button-press`` for the button, else ``operator-kill``; a lost button passes
        ``button-lost``). ``mode`` and ``incident_id`` are those right after the kill
        was applied (a resume that lands before the journal answers does not change
        them); ``durable`` says whether the kill is in the journal. A kill is in force
        either way: a failing journal is paged, shown in status and retried, and never
        refuses a kill.
        """
        already = self.state.kill.latched
        if incident_class is None:
            incident_class = "button-press" if source == "button" else "operator-kill"
        state, _, failure = await self.submit_reporting(KillRequested(
            ts=self.wall(), actor=actor, reason=reason,
            source=source,  # type: ignore[arg-type]
            incident_class=incident_class))
        result: dict[str, Any] = {
            "mode": state.mode, "already_latched": already,
            "incident_id": state.kill.incident_id, "durable": failure is None}
        if failure is not None:
            result["journal_error"] = str(failure)
        return result

    async def command(self, event: AnyEvent) -> DeskState:
        """Submit an operator's event; a refusal raises ``ControlError`` with its reasons."""
        state, effects = await self.submit(event)
        for effect in effects:
            if isinstance(effect, Refused):
                raise ControlError(effect.code, "; ".join(effect.reasons))
        return state

    async def ack(self, incident_id: str, *, caller: Caller, commander: str | None) -> Any:
        state = await self.command(IncidentAcknowledged(
            ts=self.wall(), actor=caller.actor, incident_id=incident_id,
            commander=commander or caller.user))
        return msgspec.to_builtins(state.incident(incident_id))

    async def resolve(self, incident_id: str, root_cause: str, *, caller: Caller) -> Any:
        state = await self.command(IncidentResolved(
            ts=self.wall(), actor=caller.actor, incident_id=incident_id, root_cause=root_cause))
        return msgspec.to_builtins(state.incident(incident_id))

    def authorised_to_resume(self, caller: Caller) -> bool:
        control = self.config.control
        return is_operator(caller, control.resume_operators or control.operators)

    async def throttle(self, multiplier: float, reason: str, *, caller: Caller
                       ) -> dict[str, Any]:
        """An operator's throttle (a recovery tree's throttle leaf): a P1 incident of class
        ``operator-throttle`` at ``multiplier``, resolved like any incident."""
        if not 0 < multiplier <= 1:
            raise ControlError("bad_request", f"throttle multiplier must be in (0, 1], got "
                               f"{multiplier:g}: a throttle never raises size")
        if not reason.strip():
            raise ControlError("bad_request", "throttle needs a reason")
        state = await self.command(FindingRaised(
            ts=self.wall(), actor=caller.actor, incident_class="operator-throttle",
            severity="P1", scope="desk",
            summary=f"operator throttle to {multiplier:g} size: {reason.strip()}",
            size_multiplier=multiplier, evidence={"multiplier": multiplier}))
        inc = next(i for i in reversed(state.incidents)
                   if i.live and i.incident_class == "operator-throttle")
        return {"mode": state.mode, "size_multiplier": state.size_multiplier,
                "incident_id": inc.id, "incident_multiplier": inc.size_multiplier}

    async def resume(self, *, caller: Caller, verified_nonprod: bool | None = None
                     ) -> dict[str, Any]:
        """Leave HALTED: playbook 03's post-incident tree first (refused in its words at the
        first failing question), then the state machine, which refuses on its own."""
        if self.journal_error is not None:
            raise ControlError(
                "resume_refused",
                f"the journal is failing ({self.journal_error}): the desk stays halted "
                "until its state is durable again")
        relaxed = self.halt_limits.relaxed_since_halt() if self.state.kill.latched else []
        w = None
        if self.state.kill.latched:
            w = resume_tree.walk_resume(self.status(), verified_nonprod)
            blockers = resume_blockers(
                self.state, authorised=self.authorised_to_resume(caller),
                limits_unrelaxed=not relaxed, limits_detail="; ".join(relaxed))
            message = resume_tree.refusal(w, blockers, stated=verified_nonprod is not None)
            if message is not None:
                log.warning("resume refused for %s: %s", caller.actor, message)
                raise ControlError("resume_refused", message)
        event = ResumeRequested(
            ts=self.wall(), actor=caller.actor, authorised=self.authorised_to_resume(caller),
            recovery_multiplier=self.config.recovery.size_multiplier,
            limits_unrelaxed=not relaxed, limits_detail="; ".join(relaxed),
        )
        kill_inc = self.state.kill.incident_id
        try:
            state = await self.command(event)
        except ControlError as exc:
            log.warning("resume refused for %s: %s", caller.actor, exc.message)
            raise
        if w is not None and kill_inc is not None:
            await self.submit_background(IncidentNoted(
                ts=self.wall(), actor=caller.actor, incident_id=kill_inc,
                text="resume accepted; fix verified in non-prod stated by the operator; "
                     + auto_trees.describe(w)))
        return {"mode": state.mode, "size_multiplier": state.size_multiplier,
                "recovery_session_s": self.config.recovery.session_s}

    async def flatten(self, *, caller: Caller, reason: str, symbols: Sequence[str] = (),
                      venue: str | None = None, force: bool = False) -> dict[str, Any]:
        """Flatten positions at the venues from broker truth (docs/operations.md "Flatten").

        Only while HALTED, one at a time, and only once positions reconciled clean since
        the halt (playbook 06 principle 04), unless ``force`` by a resume operator. Runs
        in the desk's nursery: a client that hangs up does not stop it halfway.

        Raises:
            ControlError: ``flatten_refused`` (why, in one line), ``bad_request`` for an
                unknown venue.
        """
        s = self.state
        if not s.kill.latched:
            raise ControlError("flatten_refused", f"flatten runs only while HALTED (mode "
                               f"is {s.mode}): pull the kill-switch first (deskctl kill)")
        if venue is not None and venue not in {v.name for v in self.venues}:
            names = ", ".join(v.name for v in self.venues)
            raise ControlError("bad_request", f"unknown venue {venue!r}; venues: {names}")
        rec = s.last_reconciliation
        unreconciled = rec is None or rec.ts < (s.kill.since or 0.0) or not rec.clean
        if unreconciled and not force:
            raise ControlError(
                "flatten_refused", "positions have not reconciled clean to broker truth "
                "since the halt (playbook 06 principle 04): run `deskctl reconcile`, or "
                "--force as a resume operator")
        if unreconciled and not self.authorised_to_resume(caller):
            raise ControlError("flatten_refused", f"{caller.user} may not --force a flatten: "
                               "not in control.resume_operators")
        if self.flattening is not None:
            raise ControlError("flatten_refused", "a flatten is already running (started "
                               f"by {self.flattening})")
        assert self._nursery is not None
        self.flattening = caller.actor
        done = trio.Event()
        outcome: dict[str, Any] = {}
        scope = (f"symbols {', '.join(symbols)}" if symbols else "every symbol") + (
            f" at venue {venue}" if venue else " at every venue")

        async def run() -> None:
            try:
                outcome.update(await self._flatten_as(
                    caller.actor, s.kill.incident_id, reason=reason, forced=unreconciled,
                    started=f"flatten started: {scope}; reason: {reason}" + (
                        "; FORCED before a clean reconciliation since the halt"
                        if unreconciled else ""),
                    symbols=symbols, venue=venue))
            finally:
                done.set()

        self._nursery.start_soon(run)
        await done.wait()
        if not outcome:
            raise ControlError("internal_error", "the flatten stopped before its result; "
                               "see the journal and the venues")
        return outcome

    def next_eod_flatten(self, now: float) -> float | None:
        """When the stale-data "flatten by EOD" is due next: ``eod_before_close_s`` before
        the close of the session in progress or the next one; None on a 24/7 calendar or
        with it turned off."""
        before = self.config.flatten.eod_before_close_s
        cal = self.calendar.calendar
        if cal.always or before <= 0:
            return None
        return next((s.close - before for s in cal.sessions(now, 3)
                     if s.close - before > now), None)

    async def _eod_flatten_loop(self) -> None:
        """playbook 03 missing-data NO/NO "Both vendors down. Stop trading. Tighten stops;
        flatten by EOD if data does not recover": at the due time, a live stale-data P0
        flattens every position, from broker truth, through the one flatten path."""
        while True:
            due = self.next_eod_flatten(self.wall())
            if due is None:
                await trio.sleep(3600)
                continue
            await trio.sleep(min(max(0.0, due - self.wall()), 3600.0))
            if self.wall() + 1e-6 < due:
                continue  # re-read the calendar at least hourly
            await self.eod_flatten()
            await trio.sleep(1.0)  # past the due instant

    async def eod_flatten(self) -> dict[str, Any] | None:
        """The stale-data EOD flatten now, if a stale-data P0 is live (None: none is)."""
        live = [i for i in self.state.incidents
                if i.live and i.incident_class == "stale-data" and i.severity == "P0"]
        if not live:
            return None
        if self.flattening is not None:
            log.warning("EOD flatten skipped: a flatten is already running (%s)",
                        self.flattening)
            return None
        return await self._flatten_as(
            "supervisor:stale-data EOD", live[-1].id, reason="stale-data: flatten by EOD",
            forced=False, started="flatten started: data did not recover by the end of the "
                                  "session (playbook 03 missing-data: flatten by EOD)")

    async def _flatten_as(self, actor: str, incident_id: str | None, *, reason: str,
                          forced: bool, started: str, symbols: Sequence[str] = (),
                          venue: str | None = None) -> dict[str, Any]:
        """One flatten by ``actor`` through the one flatten path: every line noted on the
        incident (the journal's audit when it is gone), the result kept for status."""
        self.flattening = actor

        async def note(text: str) -> None:
            inc = self.state.incident(incident_id) if incident_id else None
            await self.submit_background(
                IncidentNoted(ts=self.wall(), actor=actor, incident_id=inc.id, text=text)
                if inc is not None else AuditNoted(ts=self.wall(), actor=actor, text=text))

        try:
            await note(started)
            result = await self.flattener.flatten(note=note, symbols=symbols, venue=venue)
        finally:
            self.flattening = None
        result.update(reason=reason, by=actor, forced=forced, at=self.wall())
        self.last_flatten = dict(result)
        return result

    async def set_route(self, venue: str | None, reason: str, *, actor: str) -> dict[str, Any]:
        """Flip where the engine sends new orders (playbook 01 broker-failover step 01), or
        clear it (``venue`` None). A venue that is not configured is refused."""
        names = [v.name for v in self.venues]
        if venue is not None and venue not in names:
            raise ControlError("not_found", f"no venue {venue!r}; venues: {', '.join(names)}")
        if not reason.strip():
            raise ControlError("bad_request", "route needs a reason (why the route flips)")
        hb = self.heartbeat.status.get(venue) if venue else None
        if hb is not None and hb.ok is False:
            # playbook 01 broker-failover: flip to the secondary, the one that answers.
            raise ControlError("bad_state", f"venue {venue}'s heartbeat is failing "
                               f"({hb.last_error}): route to a venue that answers")
        state = await self.command(RouteChanged(ts=self.wall(), actor=actor, venue=venue,
                                                 reason=reason.strip()))
        return {"route": state.route,
                "heartbeat_ok": None if hb is None else hb.ok}

    async def reconcile(self, *, caller: Caller) -> ReconciliationReport:
        return await self.reconciler.reconcile(trigger=caller.actor)

    # --- watchers ------------------------------------------------------------------

    def open_watch(
        self, direct: Callable[[bytes], bool] | None = None
    ) -> trio.MemoryReceiveChannel[dict[str, Any]]:
        """A watcher's queue of state changes. ``direct(line)`` may write an encoded
        line to the watcher's socket at once (True) when nothing is queued or being sent:
        the kill path uses it so the engine's gate hears "blocked" before anything else."""
        send, receive = trio.open_memory_channel[dict[str, Any]](self.config.control.watch_queue)
        self._watchers.add(send)
        if direct is not None:
            self._direct[send] = direct
        return receive

    def _broadcast(self, message: dict[str, Any], line: bytes | None = None) -> None:
        for send in list(self._watchers):
            direct = self._direct.get(send)
            if line is not None and direct is not None and direct(line):
                continue  # already in the watcher's socket
            try:
                send.send_nowait(message)
            except trio.WouldBlock:
                # A watcher this far behind is dropped, never waited for (STYLE rule 4).
                send.close()
                self._watchers.discard(send)
                self._direct.pop(send, None)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._watchers.discard(send)
                self._direct.pop(send, None)

    async def _run_lamp(self) -> None:
        """The status lamps follow the mode (``hardware.lamp.serve_lamps``)."""
        assert self.config.button is not None

        def mode() -> dict[str, Any]:
            # Only what lamp_mode reads: the full status is far more work, four times a
            # second, for the same answer.
            s = self.state
            return {"mode": s.mode, "kill": {"verified": s.kill.verified}}

        def shown(lamp: StatusLamp | None) -> None:
            self.lamp = lamp

        box = self.button if isinstance(self.button, SerialLineBridge) else None
        await serve_lamps(self.config.button.lamp, mode, box=box,
                          pin_factory=self._pin_factory, shown=shown)

    async def _watch_heartbeat(self) -> None:
        while True:
            await trio.sleep(self.config.control.watch_heartbeat_s)
            self.loop_beat = trio.current_time()
            # What the actors change without an event (a symbol suppressed or fresh
            # again) reaches the engines' gates with this heartbeat: noted alike.
            self.compliance.note_view()
            self._publish("heartbeat")

    def _dead_man_health(self) -> tuple[bool, str, bool]:
        """Whether the venues' dead man's switch may be re-armed: (healthy, why not,
        whether the hold is deliberate: a latched kill)."""
        if self.state.kill.latched:
            return False, "the kill-switch is latched", True
        beat = trio.current_time() - self.loop_beat
        if beat > 3 * self.config.control.watch_heartbeat_s:
            return False, f"the main loop last beat {beat:.1f} s ago", False
        if self.journal_error is not None:
            return False, f"the journal is failing: {self.journal_error}", False
        return True, "", False

    def alive(self) -> tuple[bool, str]:
        """Whether the desk is making progress (the systemd watchdog's question).

        Not that a timer runs (freqtrade #5227, process up, bot stalled):
        the main loop beat recently, every critical actor is running, and every venue's
        heartbeat completed an attempt within its interval plus its timeout.
        """
        now = trio.current_time()
        if now - self.loop_beat > 3 * self.config.control.watch_heartbeat_s:
            return False, f"main loop last beat {now - self.loop_beat:.1f} s ago"
        for name, st in self.actor_status.items():
            if st.critical and st.state != "running":
                return False, f"critical actor {name} is {st.state}"
        hb = self.config.heartbeat
        bound = hb.interval_s + hb.timeout_s + 1.0
        for venue, vst in self.heartbeat.status.items():
            last = vst.last_attempt_at if vst.last_attempt_at is not None else self.started_at
            if now - last > bound:
                return False, f"heartbeat of venue {venue} stalled {now - last:.1f} s"
        return True, "ok"

    async def wait_actors_reported(self, limit_s: float) -> None:
        """Until every venue's heartbeat has answered once, or ``limit_s`` passed."""
        with trio.move_on_after(limit_s):
            while any(st.last_attempt_at is None  # noqa: ASYNC110 - polled actor state
                      for st in self.heartbeat.status.values()):
                await trio.sleep(0.05)

    def _publish_blocked(self, reason: str) -> None:
        # First and smallest message on the kill path: no status build before it, and
        # written straight into idle watchers' sockets, before the cancels go out.
        message = {"event": "blocked", "mode": "HALTED", "size_multiplier": 0.0,
                   "blocked": True, "reason": reason}
        self._broadcast(message, protocol_ok(message) if self._direct else None)

    def _publish(self, kind: str, **fields: Any) -> None:
        if self._watchers:
            self._broadcast({"event": kind, **fields, "status": self.status()})

    # --- status ----------------------------------------------------------------------

    def summary(self) -> str:
        """One line for systemd's STATUS=: mode and the live incidents."""
        s = self.state
        live = [i for i in s.incidents if i.live]
        text = f"mode {s.mode} size {s.size_multiplier:.2f}"
        if s.kill.latched:
            text += " KILL LATCHED" + (" (verified)" if s.kill.verified else " (unverified)")
        if live:
            text += "; incidents: " + ", ".join(
                f"{i.id} {i.incident_class} {i.severity} {i.state}" for i in live[:5])
            if len(live) > 5:
                text += f" and {len(live) - 5} more"
        return text

    def gate_section(self) -> dict[str, Any]:
        """What the engine's gate decides by (``status.gate``), and the compliance watch
        judges the venues' orders by."""
        s = self.state
        return {
            "open": s.mode not in ("HALTED", "DISARMED") and s.size_multiplier > 0,
            "suppressed": sorted(self.suppressed()),
            # gate D2 (live model_hash differs from the pinned one) and playbook 02
            # feature-drift ("Disable any model whose top-3 features show PSI > 0.25"),
            # and playbook 02 config-drift ("Pause any model whose config is
            # mismatched"): new exposure is refused while any is set.
            "model_blocked": self.model.blocked,
            "model_disabled": self.model.disabled_reason if self.model.disabled else None,
            "config_paused": dict(self.config_drift.paused) or None,
            # playbook 01 broker-failover: new orders go to this venue only (None: any).
            "route": s.route,
            # the largest new exposure one order may add at full size, per symbol
            "max_order_qty": dict(self.config.compliance.max_order_qty) or None,
        }

    def gate_view(self) -> GateView:
        """The gate view in force now, as an engine's gate computes it from ``status``."""
        s = self.state
        return view_from_status({"mode": s.mode, "size_multiplier": s.size_multiplier,
                                 "gate": self.gate_section()})

    def status(self) -> dict[str, Any]:
        s = self.state
        live = [i for i in s.incidents if i.live]
        resolved = [i for i in s.incidents if not i.live][-20:]
        kill: dict[str, Any] = {
            "latched": s.kill.latched, "since": s.kill.since, "reason": s.kill.reason,
            "by": s.kill.by, "source": s.kill.source, "incident_id": s.kill.incident_id,
            "triggers": s.kill.triggers, "verified": s.kill.verified,
            "verify_detail": s.kill.verify_detail,
        }
        if s.kill.latched:
            kill.update(self.killswitch.status())
            snapshot = self.killswitch.snapshot_path
            kill["snapshot_pending"] = bool(snapshot) and self.storage.is_pending(snapshot)
        relaxed = self.halt_limits.relaxed_since_halt() if s.kill.latched else []
        blockers = resume_blockers(s, authorised=True, limits_unrelaxed=not relaxed,
                                   limits_detail="; ".join(relaxed)) if s.kill.latched else []
        recovery = None
        if s.recovering:
            ends = (None if s.recovering_since is None
                    else self.recovery_ends_at(s.recovering_since))
            remaining = None if ends is None else max(0.0, ends - self.wall())
            recovery = {"since": s.recovering_since, "session_s": self.config.recovery.session_s,
                        "ends_at": ends, "remaining_s": remaining,
                        "size_multiplier": s.recovery_multiplier}
        rec = self.reconciler.last
        return {
            "mode": s.mode,
            "size_multiplier": s.size_multiplier,
            "blocked": s.mode == "HALTED" or self.killswitch.blocked,
            # What the engine's gate (supervisor.control.gate) needs, in one place.
            "gate": {**self.gate_section(), "seq": self.compliance.history.seq},
            "kill": kill,
            "incidents": [self._incident_row(i) for i in (*live, *resolved)],
            "resume_blockers": blockers,
            "next_step": self.next_step(blockers),
            "recovery": recovery,
            "reconciliation": (
                msgspec.to_builtins(s.last_reconciliation) if s.last_reconciliation else None
            ),
            "last_reconciliation_differences": (
                [msgspec.to_builtins(d) for d in rec.differences] if rec else []
            ),
            "venues": {
                v.name: {"heartbeat": msgspec.to_builtins(self.heartbeat.status[v.name]),
                         "cancel_scope": v.cancel_scope,
                         # {"limit", "remaining", "reset", "ts"} or None (docs/protocol.md)
                         "rate_limit": (None if v.rate_limit is None
                                        else msgspec.to_builtins(v.rate_limit))}
                for v in self.venues
            },
            "ack_baseline_s": self.heartbeat.ack_baseline_s,
            "risk": self.risk.status(),
            "pnl": self.pnl.status(),
            "model": self.model.status(),
            "config_drift": self.config_drift.status(),
            "deploys": self.deploys.status(),
            # playbook 05 gate P3 reads credentials.last_rotation (supervisor/ops/credentials.py)
            "credentials": credentials_status(self),
            "button": self.button.status() if self.button is not None else None,
            "freshness": self.freshness.status(),
            "actors": {k: msgspec.to_builtins(v) for k, v in self.actor_status.items()},
            "telemetry": {"events": self.book.events, "orders": self.book.orders_seen,
                          "model_hash": self.book.model.model_hash if self.book.model
                          else self.config.engine.model_hash},
            "alerts": self.alerts.status(),
            "journal_events": s.applied,
            "arming": self.arming.summary(),
            "journal": {"ok": self.journal_error is None, "error": self.journal_error,
                        "pending": self.journal_pending,
                        "checkpoint_seq": self._checkpoint_seq or None,
                        "checkpoint_error": self.checkpoint_error},
            # Artifacts on disk: ok, and what storage has not taken yet (retried).
            "storage": self.storage.status(),
            "flatten": {"running_for": self.flattening, "last": self.last_flatten},
            "compliance": self.compliance.status(),
            "dead_man": self.dead_man.status(),
            "calendar": self.calendar.status(),
            # The control socket since start: connections accepted, kills served over
            # the connection limit, refusals and drops by reason (docs/protocol.md).
            "control": dict(sorted(self.control_stats.items())),
        }

    def _incident_row(self, inc: Incident) -> dict[str, Any]:
        row: dict[str, Any] = msgspec.to_builtins(inc)
        if inc.id in self.walks.walks:
            row["tree"] = self.walks.walks[inc.id]
        return row

    def suppressed(self) -> set[str]:
        """Symbols in which only reducing orders may go (playbook 03 missing-data)."""
        return set(self.freshness.suppressed)

    def next_step(self, blockers: list[str]) -> str:
        s = self.state
        if s.mode == "HALTED":
            unacked = [i for i in s.incidents if i.state == "open" and i.severity == "P0"]
            if unacked:
                return (f"assign an incident commander: deskctl ack {unacked[0].id} "
                        "(playbook 01 killswitch step 04)")
            if not s.kill.verified:
                return "wait for the kill to verify: venue open orders zero, no new order for " \
                       f"{self.config.kill.quiet_s:g} s"
            if blockers:
                return blockers[0]
            return "every resume condition holds: deskctl resume (recovery at " \
                   f"{self.config.recovery.size_multiplier:g} size for one session)"
        if s.mode == "DISARMED":
            return (f"the desk is DISARMED ({s.disarmed_reason}): check `deskctl gates`, "
                    "then `deskctl arm`")
        if s.mode == "THROTTLED":
            return "P1 live: find the cause, then deskctl resolve ID --root-cause TEXT"
        if s.mode == "RECOVERING":
            return "trade at recovery size until the session completes without incident"
        return "nothing to do"
