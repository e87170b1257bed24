"""Playbook 05's twenty gates as data, and a pure evaluator over live status and the journal.

"Twenty gates across five cadences. The pre-launch list runs once before any capital
moves. The daily list runs every session." Each gate has a cadence and an evaluator:

- ``auto``: the supervisor judges it from evidence it holds (``Desk.status()``, the
  journaled drills and reconciliations): PASS or FAIL now, DUE while there is no evidence
  yet, EXPIRED when the evidence is older than the gate allows.
- ``attest``: a person does the work and says so with ``deskctl gate attest ID --note``;
  the attestation holds for the gate's cadence (``expiry``), then the gate is EXPIRED.

An automatic gate that has no evidence of its own (DUE or EXPIRED: the work was done
before this supervisor was installed, or elsewhere) can be covered by an attestation; a
FAIL never can (the evidence says no), nor partial evidence, nor P1 and P2, whose
evidence the supervisor owns outright (``NOT_ATTESTABLE``). ``evaluate`` is pure: the
runtime passes the status, the desk state, the postmortem states and the wall-clock time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import msgspec

from supervisor.core.desk import DeskState, DrillRecord

Cadence = Literal["PRE-LAUNCH", "DAILY", "WEEKLY", "MONTHLY", "QUARTERLY"]
GateState = Literal["PASS", "FAIL", "DUE", "EXPIRED"]
Status = Mapping[str, Any]

DAY_S = 86400.0


class GatesConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[gates]``: arming and the gate periods. Every period defaults to the playbook's."""

    # docs/architecture.md modes: "DISARMED: pre-launch gates not passed, or not yet armed". A fresh
    # install (an empty journal) starts DISARMED; `deskctl arm` once the gates pass.
    start_disarmed: bool = True
    # playbook 05 P1: "Kill-switch tested on a paper run within the last 7 days".
    kill_drill_max_age_s: float = 7 * DAY_S
    # playbook 05 P3: "Rotation in the last 90 days".
    rotation_max_age_s: float = 90 * DAY_S
    # playbook 05: the cadences. A month is at most 31 days; a quarter at most 92. A daily
    # gate holds until the end of the next trading day ([freshness] session_days).
    weekly_s: float = 7 * DAY_S
    monthly_s: float = 31 * DAY_S
    quarterly_s: float = 92 * DAY_S
    # playbook 05 D1/D2 (and the issue): "failing D1 or D2 at the open blocks trading the same
    # way" as DISARMED. Checked this long after the open, so the freshness actor has
    # suppressed the stale symbols first (D1: "suppressed before orders begin").
    open_check: bool = True
    open_grace_s: float = 5.0
    block_at_open: list[str] = msgspec.field(default_factory=lambda: ["D1", "D2"])
    # How often the runtime re-evaluates the gates (for "last satisfied" and the log).
    evaluate_every_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("kill_drill_max_age_s", "rotation_max_age_s", "weekly_s",
                     "monthly_s", "quarterly_s", "evaluate_every_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.open_grace_s < 0:
            raise ValueError("open_grace_s must be >= 0")
        unknown = [g for g in self.block_at_open if g not in GATE_IDS]
        if unknown:
            raise ValueError(f"block_at_open: unknown gate(s) {', '.join(unknown)}; gates: "
                             + ", ".join(GATE_IDS))

    def period(self, cadence: Cadence) -> float | None:
        return {"WEEKLY": self.weekly_s, "MONTHLY": self.monthly_s,
                "QUARTERLY": self.quarterly_s}.get(cadence)


class Gate(msgspec.Struct, frozen=True):
    """One gate of playbook 05: its words, its cadence and how it is judged."""

    id: str
    cadence: Cadence
    title: str
    detail: str
    evaluator: Literal["auto", "attest"]
    evidence: str  # where the supervisor's evidence comes from, or what to attest


class GateResult(msgspec.Struct, frozen=True, kw_only=True):
    """A gate's verdict now, with its evidence and when it was last satisfied."""

    id: str
    cadence: Cadence
    title: str
    state: GateState
    evidence: str
    source: Literal["auto", "attestation", "drill", "none"]
    last_satisfied: float | None = None
    by: str | None = None
    expires_at: float | None = None
    evaluator: Literal["auto", "attest"] = "auto"


# --- playbook 05, gate by gate (the playbook's words) -------------------------------------

GATES: tuple[Gate, ...] = (
    Gate("P1", "PRE-LAUNCH", "Kill-switch tested on a paper run within the last 7 days",
         "Physical or endpoint kill-switch verified to flatten all positions and block new "
         "orders within 60 seconds. Drill report filed.", "auto",
         "the last `deskctl drill killswitch` (time to flat, verify, report)"),
    Gate("P2", "PRE-LAUNCH", "Risk limits committed in git; live config hash matches",
         "Max position size, daily drawdown floor, daily VaR ceiling, and single-name "
         "concentration cap all defined in /etc/risk/limits.yml and matching the deployed "
         "hash.", "auto",
         "the risk limits file ([risk] limits) watched by the config-drift monitor: its "
         "sha256 against the deployed git ref"),
    Gate("P3", "PRE-LAUNCH", "Broker API credentials rotated and tested",
         "Rotation in the last 90 days. New credentials verified with a non-mutating call "
         "before the old ones were revoked.", "auto",
         "the last credential rotation (runbook api-credentials), else an attestation"),
    Gate("P4", "PRE-LAUNCH", "Backup data vendor authenticated and current",
         "Secondary feed has run in parallel for at least 5 trading days with < 0.5% "
         "bar-count divergence vs. the primary.", "auto",
         "the freshness actor's vendor-feed reconciliation (bar counts, primary vs backup)"),
    Gate("D1", "DAILY", "Pre-market data freshness check",
         "All traded symbols have a bar within the last 2x interval as of the open. Any "
         "stale symbol is suppressed before orders begin.", "auto",
         "the freshness actor: stale symbols on the active vendor, and which are suppressed"),
    Gate("D2", "DAILY", "Model_hash matches the registry's pinned production version",
         "Live /healthz reports the same model_hash as the production tag in the model "
         "registry. Mismatch blocks trading.", "auto",
         "the model monitor: /healthz model_hash against [model] pinned_model_hash/file"),
    Gate("D3", "DAILY", "PnL band check against backtest distribution",
         "Cumulative live PnL plotted on the backtest distribution. Document whether today "
         "landed inside the 95% band.", "auto",
         "the PnL band monitor's last closed trading day (deskctl report pnl-band)"),
    Gate("D4", "DAILY", "End-of-day position reconciliation to broker truth",
         "Broker position file matches internal state to the share. Reconciliation report "
         "archived for audit.", "auto",
         "the last reconciliation to broker truth (deskctl reconcile) and its report"),
    Gate("D5", "DAILY", "Slippage and fill-quality report reviewed",
         "Realised vs. expected fill price; rejected order count; average fill latency. "
         "Document any deviation > 1 sigma.", "attest",
         "attest after reviewing the slippage monitor (deskctl status, pnl.slippage)"),
    Gate("W1", "WEEKLY", "Feature drift report (PSI on all top-10 features)",
         "Population Stability Index between live and training feature distributions. "
         "Anything >= 0.25 opens a drift ticket.", "auto",
         "the model monitor's feature PSI run (deskctl check drift)"),
    Gate("W2", "WEEKLY", "Alert-noise audit",
         "Count of alerts paged + Slack-sent. Threshold reviews for any alert firing > 5 "
         "times without an action.", "auto",
         "the alert log's noise report over the week (deskctl alert-noise)"),
    Gate("W3", "WEEKLY", "Vendor heartbeat / SLA review",
         "Both market-data and broker SLAs met for the week. File any breach with the "
         "vendor before it lapses.", "attest",
         "attest after reviewing the venues' heartbeats and the feed's freshness"),
    Gate("W4", "WEEKLY", "Incident-ticket grooming",
         "All P1/P2 tickets from the prior week have an assigned owner and a written "
         "postmortem if closed.", "auto",
         "the incidents of the last 7 days: commander assigned, postmortem written"),
    Gate("M1", "MONTHLY", "Disaster-recovery drill on a non-prod sandbox",
         "Practice a full broker outage + failover + reconciliation cycle on paper "
         "trading. Time-to-recovery target documented.", "auto",
         "the last `deskctl drill failover` (time to recovery, report)"),
    Gate("M2", "MONTHLY", "Backup integrity test (restore-from-cold check)",
         "Pull a random model_hash and a random feature snapshot from cold storage; verify "
         "both load and predict on the test set.", "attest",
         "attest after the restore-from-cold check"),
    Gate("M3", "MONTHLY", "Cost-model recalibration",
         "Compare realised slippage and fees against the cost model used in the backtest. "
         "If the gap exceeds 1 bp, retune.", "attest",
         "attest after comparing realised slippage with the cost model"),
    Gate("M4", "MONTHLY", "Capacity and headroom review",
         "ADV consumed per symbol, rate-limit budget used, infra resource headroom. "
         "Document any line approaching 70%.", "attest",
         "attest after the review; the venues' rate-limit budgets are in deskctl status"),
    Gate("Q1", "QUARTERLY", "Per-model retire / retrain / refit decision",
         "Every active model labelled with one of the three. No model lives indefinitely "
         "by default.", "attest",
         "attest the label given to each active model (the model monitor flags retirees)"),
    Gate("Q2", "QUARTERLY", "Risk-limit framework review with stakeholders",
         "Max position, drawdown, VaR, concentration. Limits documented; any raise "
         "requires a written justification.", "attest",
         "attest after the review with stakeholders"),
    Gate("Q3", "QUARTERLY", "Access-and-audit review",
         "Who has prod-write access; who has approval rights for deploys; quarterly "
         "attestation signed.", "attest",
         "attest after the access review ([control] operators lists who may act)"),
)
GATE_IDS: tuple[str, ...] = tuple(g.id for g in GATES)
GATES_BY_ID: dict[str, Gate] = {g.id: g for g in GATES}
PRE_LAUNCH: tuple[str, ...] = tuple(g.id for g in GATES if g.cadence == "PRE-LAUNCH")


class Inputs(msgspec.Struct, frozen=True, kw_only=True):
    """What the evaluator reads: everything the runtime knows, gathered once."""

    status: dict[str, Any]
    state: DeskState
    now: float
    # incident id -> postmortem.state(...) for the incidents of the last week (W4).
    postmortems: dict[str, dict[str, Any] | None] = {}
    # The entry of ``[config_drift] files`` that is the risk limits file (both resolved
    # once by the runtime), or None: P2 needs to know whether git holds the limits.
    limits_watched: str | None = None
    # The weekdays a session opens on ([freshness] session_days): D3 and D4 hold until
    # the end of the next trading day, so Friday's evidence lasts the weekend.
    session_days: tuple[int, ...] = (0, 1, 2, 3, 4)
    noise: list[dict[str, Any]] = []


# An automatic evaluator's verdict: state, evidence, the time the evidence is from (None:
# now), and optionally whether an attestation may stand in (default: "any" when DUE or
# EXPIRED, else "none"). DUE when it has no evidence; EXPIRED when it is too old.
# Whether an attestation may stand in for an automatic gate's own verdict: "any" (a new
# one may be made), "existing" (one made earlier still covers, no new one), "none".
Attestable = Literal["any", "existing", "none"]
Verdict = (tuple[GateState, str, float | None]
           | tuple[GateState, str, float | None, Attestable])
Evaluator = Callable[[Inputs, GatesConfig], Verdict]


def _age(now: float, ts: float) -> str:
    s = max(0.0, now - ts)
    if s < 120:
        return f"{s:.0f} s ago"
    if s < 7200:
        return f"{s / 60:.0f} min ago"
    if s < 2 * DAY_S:
        return f"{s / 3600:.1f} h ago"
    return f"{s / DAY_S:.1f} days ago"


def _drill(inp: Inputs, kind: str, max_age_s: float) -> Verdict:
    last = inp.state.last_drill(kind)
    if last is None:
        return "DUE", f"no {kind} drill on record: run `deskctl drill {kind}`", None
    ok = last if last.ok else inp.state.last_drill(kind, ok=True)
    if not last.ok:
        return "FAIL", f"the last {kind} drill ({_age(inp.now, last.ts)}) failed: " \
                       f"{last.detail}" + _report(last), last.ts
    assert ok is not None
    if inp.now - ok.ts > max_age_s:
        return "EXPIRED", f"the last {kind} drill passed {_age(inp.now, ok.ts)}, more than " \
                          f"{max_age_s / DAY_S:g} days ago: run `deskctl drill {kind}`", ok.ts
    secs = "" if ok.seconds is None else f" in {ok.seconds:.2f} s"
    return "PASS", f"{kind} drill passed{secs} {_age(inp.now, ok.ts)} by {ok.actor}: " \
                   f"{ok.detail}" + _report(ok), ok.ts


def _report(d: DrillRecord) -> str:
    return f" (report {d.report})" if d.report else ""


def p1(inp: Inputs, cfg: GatesConfig) -> Verdict:
    return _drill(inp, "killswitch", cfg.kill_drill_max_age_s)


def p2(inp: Inputs, cfg: GatesConfig) -> Verdict:
    risk = inp.status.get("risk") or {}
    if not risk.get("limits_file"):
        return "FAIL", "no risk limits file is configured ([risk] limits): no limits are " \
                       "enforced", None
    if risk.get("limits") is None:
        return "FAIL", f"the risk limits are not loaded: {risk.get('file_error')}", None
    missing = [k for k in ("max_position", "daily_drawdown", "var_1d", "concentration")
               if risk["limits"].get(k) is None]
    if missing:
        return "FAIL", f"the limits file defines no {', '.join(missing)}: playbook 02 " \
                       "risk-breach names four limits (max position, daily drawdown floor, " \
                       "1-day VaR ceiling, single-name concentration); define each", None
    drift = inp.status.get("config_drift") or {}
    files = drift.get("files") or {}
    target = inp.limits_watched
    row = next((f for f in files.values()
                if target is not None and str(f.get("file")) == target), None)
    if row is None:
        return "FAIL", f"the limits file {risk['limits_file']} is not committed-and-watched: " \
                       "add it to [config_drift] files so its hash is checked against the " \
                       "deployed git ref", None
    where = f"{row.get('path')} at {str(drift.get('commit') or drift.get('ref'))[:12]}"
    if row.get("match") is True:
        return "PASS", f"limits file {row['file']} (limits hash " \
                       f"{str(risk.get('limits_hash'))[:12]}) matches {where}", \
            row.get("checked_at")
    if row.get("match") is False:
        return "FAIL", f"limits file {row['file']} differs from {where} (live sha256 " \
                       f"{str(row.get('live_sha256'))[:12]}, committed " \
                       f"{str(row.get('expected_sha256'))[:12]})", row.get("checked_at")
    if row.get("error"):
        return "FAIL", f"limits file {row['file']}: {row['error']}", row.get("checked_at")
    return "DUE", f"limits file {row['file']} is watched but not checked yet", None


def p3(inp: Inputs, cfg: GatesConfig) -> Verdict:
    """Every venue's last finished rotation (``status.credentials.venues.NAME.
    last_rotation``, from the journaled api-credentials steps: staged, checked,
    activated, old key revoked): each within 90 days and verified before the revoke."""
    venues = ((inp.status.get("credentials") or {}).get("venues")) or {}
    if not venues:
        return "DUE", "no venue credentials known", None
    never, old, unverified, good = [], [], [], []
    oldest: float | None = None
    for name, row in sorted(venues.items()):
        r = (row or {}).get("last_rotation")
        if not r:
            never.append(name)
            continue
        ts = float(r.get("revoked_at") or 0.0)
        oldest = ts if oldest is None else min(oldest, ts)
        if not r.get("verified_before_revoke"):
            unverified.append(name)
        elif inp.now - ts > cfg.rotation_max_age_s:
            old.append(f"{name} ({_age(inp.now, ts)})")
        else:
            good.append(f"{name} {_age(inp.now, ts)}")
    if unverified:
        return "FAIL", f"credentials of {', '.join(unverified)} were revoked before the new " \
                       "key was verified with a non-mutating call", oldest
    if old:
        # A rotation this supervisor recorded has lapsed: rotate again; no attestation
        # (of another venue's rotation, say) stands in for it.
        return "EXPIRED", f"rotated more than {cfg.rotation_max_age_s / DAY_S:g} days ago: " \
                          + ", ".join(old), oldest, "none"
    if never:
        return "DUE", f"no credential rotation on record for {', '.join(never)}: run the " \
                      "api-credentials runbook (deskctl credentials stage/check/activate/" \
                      "revoke) or attest P3", None
    return "PASS", "rotated, each new key verified with a non-mutating call before the old " \
                   "one was revoked: " + ", ".join(good), oldest


def p4(inp: Inputs, cfg: GatesConfig) -> Verdict:
    fr = inp.status.get("freshness") or {}
    div = fr.get("feed_divergence") or {}
    if not fr.get("backup_vendor"):
        return "FAIL", "no backup data vendor is configured ([freshness] backup_vendor)", None
    windows, needed = int(div.get("windows") or 0), int(div.get("windows_needed") or 0)
    total = div.get("divergence")
    limit = float(div.get("divergence_max") or 0.005)
    if windows == 0 or total is None:
        return "DUE", f"no reconciled window of bars from {fr.get('primary_vendor')} and " \
                      f"{fr.get('backup_vendor')} yet", None
    text = (f"{windows} of {needed} window(s) in parallel; bar-count divergence "
            f"{float(total):.3%} (max {limit:.1%})")
    if float(total) >= limit:
        return "FAIL", text, div.get("last_window") if isinstance(
            div.get("last_window"), (int, float)) else None
    if div.get("p4_pass"):
        return "PASS", text, None
    # Partial evidence of its own: no new attestation stands in for the days still to
    # come; one made before the supervisor began counting (the vendor's own record of the
    # parallel run) still covers it until it expires.
    return "DUE", text + ": not yet long enough", None, "existing"


def d1(inp: Inputs, cfg: GatesConfig) -> Verdict:
    fr = inp.status.get("freshness") or {}
    universe = int(fr.get("universe") or 0)
    if not universe:
        return "DUE", "no traded symbol known yet ([freshness] symbols, or bars)", None
    if not fr.get("in_session", True):
        return "DUE", f"outside the trading session: judged at the open " \
                      f"(next open {fr.get('next_open')})", None
    active = fr.get("active_vendor")
    feed = (fr.get("stale") or {}).get(active) or {}
    if not feed.get("bars"):
        return "FAIL", f"no bar received from the active vendor {active}", None
    if feed.get("whole_feed"):
        return "FAIL", f"the whole feed of {active} is stale ({feed.get('count')} of " \
                       f"{universe} symbols)", None
    stale = list(feed.get("symbols") or [])
    suppressed = fr.get("suppressed") or {}
    unsuppressed = [s for s in stale if s not in suppressed]
    if unsuppressed:
        return "FAIL", f"stale and not suppressed on {active}: {', '.join(unsuppressed)}", None
    extra = f"; {len(stale)} stale symbol(s) suppressed: {', '.join(stale)}" if stale else ""
    return "PASS", f"{universe - len(stale)} of {universe} symbol(s) fresh on {active}" \
                   + extra, None


def d2(inp: Inputs, cfg: GatesConfig) -> Verdict:
    model = inp.status.get("model") or {}
    pinned = model.get("pinned_model_hash")
    live = model.get("healthz_model_hash") or model.get("model_hash")
    if live == "unknown":  # the model monitor's word for "not reported yet"
        live = None
    errors = model.get("errors") or {}
    if not pinned:
        why = errors.get("pinned") or "no registry pin configured ([model] " \
                                      "pinned_model_hash or pinned_model_file)"
        return "FAIL", f"the pinned production version is unknown: {why}", None
    if not live:
        return "DUE", "the live model_hash is unknown (no /healthz answer, no model " \
                      "telemetry yet)", None
    source = "/healthz" if model.get("healthz_model_hash") else "telemetry"
    if model.get("blocked") or live != pinned:
        return "FAIL", f"live model_hash {live} ({source}) differs from the pinned " \
                       f"production version {pinned}", None
    return "PASS", f"live model_hash {live} ({source}) is the pinned production version", None


def d3(inp: Inputs, cfg: GatesConfig) -> Verdict:
    band = ((inp.status.get("pnl") or {}).get("pnl_band")) or {}
    d = band.get("d3")
    if not d:
        return "DUE", f"no closed trading day on the backtest band yet " \
                      f"({band.get('note') or band.get('verdict') or 'not run'})", None
    ts = _date_ts(str(d.get("date")))
    if ts is not None and inp.now >= next_trading_day_end(ts, inp.session_days) + DAY_S:
        return "EXPIRED", f"the last judged day is {d.get('date')}", ts
    text = (f"{d.get('date')} (trading day {d.get('trading_day')}): cumulative PnL "
            f"{float(d.get('cum_pnl') or 0.0):.2f} vs band low "
            f"{float(d.get('band_low') or 0.0):.2f}")
    if d.get("inside_band"):
        return "PASS", text + ": inside the 95% band", ts
    return "FAIL", text + ": below the 95% band (recovery tree wrong-pnl)", ts


def _date_ts(date: str) -> float | None:
    import calendar
    import time

    try:
        return float(calendar.timegm(time.strptime(date, "%Y-%m-%d")))
    except ValueError:
        return None


def d4(inp: Inputs, cfg: GatesConfig) -> Verdict:
    rec = inp.state.last_reconciliation
    if rec is None:
        return "DUE", "no reconciliation to broker truth on record: run `deskctl " \
                      "reconcile`", None
    text = f"reconciliation {_age(inp.now, rec.ts)}, report {rec.report}"
    if not rec.clean:
        return "FAIL", text + f": {rec.differences} difference(s) with broker truth", rec.ts
    if inp.now >= next_trading_day_end(rec.ts, inp.session_days):
        return "EXPIRED", text + ": not since the last trading day", rec.ts
    return "PASS", text + ": matches broker truth to the share", rec.ts


def w1(inp: Inputs, cfg: GatesConfig) -> Verdict:
    model = inp.status.get("model") or {}
    mon = (model.get("monitors") or {}).get("feature_psi") or {}
    last = mon.get("last_run")
    verdict = mon.get("verdict")
    if last is None or verdict in (None, "pending", "no-data", "off"):
        return "DUE", f"no feature PSI report yet ({mon.get('detail') or verdict or 'not run'})", \
            None
    psi = model.get("psi") or {}
    # the monitor's own comparison (playbook 02 feature-drift "PSI > 0.25")
    over = sorted(f for f, v in psi.items() if isinstance(v, (int, float)) and v > 0.25)
    text = f"PSI run {_age(inp.now, last)} on {len(psi)} feature(s)"
    if verdict == "alert" or over:
        return "FAIL", text + f": PSI > 0.25 on {', '.join(over) or mon.get('detail')} " \
                              "(drift ticket: incident feature-drift)", last
    if verdict == "error":
        return "FAIL", text + f": {mon.get('detail')}", last
    if inp.now - last > cfg.weekly_s:
        return "EXPIRED", text + ": older than a week", last
    top = max(psi.values(), default=0.0)
    return "PASS", text + f": every PSI <= 0.25 (max {top:.3f})", last


def w2(inp: Inputs, cfg: GatesConfig) -> Verdict:
    alerts = inp.status.get("alerts") or {}
    if inp.noise:
        rows = "; ".join(f"{r['summary']} ({r['unactioned']}x)" for r in inp.noise[:5])
        return "FAIL", f"{len(inp.noise)} alert(s) fired more than 5 times in the week " \
                       f"without an action: {rows}", None
    sent = alerts.get("sent") or alerts.get("counts") or {}
    return "PASS", f"no alert fired more than 5 times without an action this week " \
                   f"({_counts(sent)})", None


def _counts(sent: Any) -> str:
    if isinstance(sent, Mapping) and sent:
        return ", ".join(f"{k} {v}" for k, v in sorted(sent.items()))
    return "see deskctl alert-noise"


def w4(inp: Inputs, cfg: GatesConfig) -> Verdict:
    since = inp.now - cfg.weekly_s
    tickets = [i for i in inp.state.incidents
               if i.severity in ("P1", "P2") and (i.opened_at >= since or i.live
                                                  or (i.resolved_at or 0.0) >= since)]
    if not tickets:
        return "PASS", "no P1/P2 incident in the last week", None
    problems = []
    for inc in tickets:
        if inc.commander is None:
            problems.append(f"{inc.id} has no owner (deskctl ack {inc.id})")
        elif not inc.live:
            pm = inp.postmortems.get(inc.id)
            if not pm or not pm.get("written"):
                problems.append(f"{inc.id} is closed without a written postmortem"
                                + (f" ({pm.get('path')})" if pm else ""))
    if problems:
        return "FAIL", "; ".join(problems), None
    return "PASS", f"{len(tickets)} P1/P2 incident(s) in the last week, each owned and, if " \
                   "closed, with a written postmortem", None


def m1(inp: Inputs, cfg: GatesConfig) -> Verdict:
    return _drill(inp, "failover", cfg.monthly_s)


# --- what the supervisor can show a person about to attest ------------------------------


def _hint_d5(inp: Inputs) -> str | None:
    slip = ((inp.status.get("pnl") or {}).get("slippage")) or {}
    d5 = slip.get("d5") or {}
    if d5.get("flag") is not None:
        return (f"last day {float(d5.get('bps') or 0.0):.2f} bps, "
                f"{float(d5.get('deviation_sigma') or 0.0):.1f} sigma from the mean"
                + (": DEVIATION > 1 sigma, document it" if d5.get("flag") else ""))
    return f"slippage monitor: {slip.get('note') or slip.get('verdict') or 'not run'}"


def _hint_w3(inp: Inputs) -> str | None:
    rows = []
    for name, v in sorted((inp.status.get("venues") or {}).items()):
        hb = v.get("heartbeat") or {}
        state = {True: "ok", False: "FAILING", None: "not checked"}[hb.get("ok")]
        p95 = hb.get("p95_ms_last_window")
        rows.append(f"{name} {state}" + ("" if p95 is None else f" p95 {p95:.0f} ms"))
    fr = inp.status.get("freshness") or {}
    if fr:
        rows.append(f"feed {fr.get('active_vendor')}"
                    + (" DOWN" if fr.get("feed_down") else " up"))
    return ", ".join(rows) or None


def _hint_m4(inp: Inputs) -> str | None:
    rows = []
    for name, v in sorted((inp.status.get("venues") or {}).items()):
        rl = v.get("rate_limit")
        if rl and rl.get("limit"):
            used = 1.0 - float(rl["remaining"]) / float(rl["limit"])
            rows.append(f"{name} {used:.0%} of {rl['limit']}/min used"
                        + (" (approaching 70%)" if used >= 0.7 else ""))
    return ("rate-limit budget: " + ", ".join(rows)) if rows else None


def _hint_q1(inp: Inputs) -> str | None:
    model = inp.status.get("model") or {}
    if not model.get("model_hash"):
        return None
    return (f"live model {model.get('model_hash')}"
            + (f": flagged to retire ({model.get('retire_reason')})" if model.get("retire")
               else ""))


# Shown with an attested gate's verdict: the live data the person reviews (playbook 05 W3
# "Both market-data and broker SLAs", M4 "rate-limit budget used ... approaching 70%").
HINTS: dict[str, Callable[[Inputs], str | None]] = {
    "D5": _hint_d5, "W3": _hint_w3, "M4": _hint_m4, "Q1": _hint_q1,
}


EVALUATORS: dict[str, Evaluator] = {
    "P1": p1, "P2": p2, "P3": p3, "P4": p4, "D1": d1, "D2": d2, "D3": d3, "D4": d4,
    "W1": w1, "W2": w2, "W4": w4, "M1": m1,
}
assert set(EVALUATORS) == {g.id for g in GATES if g.evaluator == "auto"}


# Automatic gates whose evidence is dated and lapses (a drill, a rotation, a report, a
# reconciliation); the others are judged live at every evaluation (P2, P4, D1, D2, W2, W4).
DATED_EVIDENCE = frozenset({"P1", "P3", "D3", "D4", "W1", "M1"})

# Gates whose evidence the supervisor owns outright: no attestation stands in for them.
# P1: "Drill report filed" - the drill is the evidence (deskctl drill killswitch).
# P2: the limits file's hash against git - the supervisor computes it, or it FAILs.
NOT_ATTESTABLE = frozenset({"P1", "P2"})


def next_trading_day_end(ts: float, session_days: tuple[int, ...]) -> float:
    """Midnight (UTC) at the end of the first session day after the UTC day of ``ts``:
    how long a daily gate's evidence holds (Friday's lasts until Monday's end)."""
    day = math.floor(ts / DAY_S)
    for k in range(1, 8):
        if (day + k + 3) % 7 in session_days:  # 1970-01-01 was a Thursday (3)
            return (day + k + 1) * DAY_S
    return (day + 2) * DAY_S  # no session day configured: the next day


def expiry(gate: Gate, ts: float, cfg: GatesConfig, inp: Inputs) -> float | None:
    """When evidence (or an attestation) of ``gate`` dated ``ts`` stops holding."""
    if gate.id == "P1":
        return ts + cfg.kill_drill_max_age_s
    if gate.id == "P3":
        return ts + cfg.rotation_max_age_s
    if gate.cadence == "PRE-LAUNCH":
        # P4 has no period in the playbook; an attestation of it is renewed each quarter
        # until the supervisor has seen its 5 trading days itself.
        return ts + cfg.quarterly_s
    if gate.cadence == "DAILY":
        # D3 is judged on the day after the close: one day more.
        return next_trading_day_end(ts, inp.session_days) + (DAY_S if gate.id == "D3" else 0.0)
    period = cfg.period(gate.cadence)
    return None if period is None else ts + period


def _attested(gate: Gate, inp: Inputs, cfg: GatesConfig) -> GateResult | None:
    ev = inp.state.attestation(gate.id)
    if ev is None or gate.id in NOT_ATTESTABLE:
        return None
    expires = expiry(gate, ev.ts, cfg, inp)
    state: GateState = "EXPIRED" if expires is not None and inp.now >= expires else "PASS"
    return GateResult(id=gate.id, cadence=gate.cadence, title=gate.title, state=state,
                      evidence=f"attested {_age(inp.now, ev.ts)} by {ev.actor}: {ev.note}",
                      source="attestation", last_satisfied=ev.ts, by=ev.actor,
                      expires_at=expires, evaluator=gate.evaluator)


def auto_verdict(gate: Gate, inp: Inputs, cfg: GatesConfig
                 ) -> tuple[GateState, str, float | None, Attestable]:
    """An automatic gate's own verdict, and whether an attestation may stand in for it:
    only while it has no evidence at all (DUE with none, or EXPIRED), never over a FAIL;
    over partial evidence (P4: 3 of 5 days so far) only one made before it began."""
    verdict = EVALUATORS[gate.id](inp, cfg)
    state, evidence, ts = verdict[0], verdict[1], verdict[2]
    attestable: Attestable = (verdict[3] if len(verdict) > 3  # type: ignore[misc]
                              else "any" if state in ("DUE", "EXPIRED") else "none")
    if gate.id in NOT_ATTESTABLE:
        attestable = "none"
    return state, evidence, ts, attestable


def evaluate_gate(gate: Gate, inp: Inputs, cfg: GatesConfig) -> GateResult:
    attested = _attested(gate, inp, cfg)
    if gate.evaluator == "attest":
        hint = HINTS[gate.id](inp) if gate.id in HINTS else None
        now = f"; now: {hint}" if hint else ""
        if attested is not None:
            return msgspec.structs.replace(attested, evidence=attested.evidence + now)
        return GateResult(id=gate.id, cadence=gate.cadence, title=gate.title, state="DUE",
                          evidence=f"never attested: {gate.evidence}; then `deskctl gate "
                                   f"attest {gate.id} --note TEXT`" + now,
                          source="none", evaluator="attest")
    state, evidence, ts, attestable = auto_verdict(gate, inp, cfg)
    if attestable != "none" and attested is not None and (
            attested.state == "PASS" or state == "DUE"):
        # No evidence of its own: a person's attestation covers it (never a FAIL), and
        # once it lapses the gate is EXPIRED, not DUE: it was satisfied once.
        return msgspec.structs.replace(
            attested, evidence=f"{attested.evidence} (supervisor: {evidence})")
    satisfied = (ts if ts is not None else inp.now) if state == "PASS" else None
    source: Literal["auto", "drill"] = "drill" if gate.id in ("P1", "M1") else "auto"
    by = None
    if gate.id in ("P1", "M1") and state == "PASS":
        drill = inp.state.last_drill("killswitch" if gate.id == "P1" else "failover", ok=True)
        by = drill.actor if drill else None
    expires = (expiry(gate, ts, cfg, inp) if satisfied is not None and ts is not None
               and gate.id in DATED_EVIDENCE else None)
    return GateResult(id=gate.id, cadence=gate.cadence, title=gate.title, state=state,
                      evidence=evidence, source=source, last_satisfied=satisfied, by=by,
                      expires_at=expires, evaluator="auto")


def evaluate(inp: Inputs, cfg: GatesConfig) -> list[GateResult]:
    """Every gate's verdict, in the playbook's order."""
    return [evaluate_gate(g, inp, cfg) for g in GATES]


def arm_blockers(results: list[GateResult], *, in_session: bool,
                 block_at_open: list[str]) -> list[str]:
    """Why ``arm`` must be refused: a pre-launch gate not PASS, or (in the session) a
    gate of ``block_at_open`` (D1, D2) failing."""
    reasons = []
    for r in results:
        if r.id in PRE_LAUNCH and r.state != "PASS":
            reasons.append(f"pre-launch gate {r.id} ({r.title}) is {r.state}: {r.evidence}")
        elif in_session and r.id in block_at_open and r.state == "FAIL":
            reasons.append(f"daily gate {r.id} ({r.title}) is FAIL: {r.evidence}")
    return reasons
