"""``deskctl``: the operator's command line over the control socket.

Exit status: see ``EXIT_CODES`` (printed by ``deskctl --help``). ``--json`` prints the
raw result; otherwise a table meant for 3 a.m.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, NoReturn

from supervisor.cli import treecli
from supervisor.control.client import ControlClient, default_socket_path
from supervisor.core.errors import ControlError, SupervisorUnreachable

EXIT_FAILED = 1
EXIT_REFUSED = 2
EXIT_UNREACHABLE = 3
EXIT_NOT_DURABLE = 4
EXIT_USAGE = 64  # EX_USAGE

EXIT_CODES = f"""exit status:
  0   done. `kill` exits 0 whenever the kill is in force, durable or not: it then
      prints "kill in force, NOT yet journaled: ..."
  {EXIT_FAILED}   the command ran and its answer is a failure (reconcile not clean, a
      gate not passing, a drill that failed, a tree walk still needing an answer), or
      a local error (a file to write)
  {EXIT_REFUSED}   refused by the supervisor: nothing was applied (forbidden,
      resume_refused, bad_request, ...), or the outcome is unknown (failed,
      internal_error: check `deskctl status`)
  {EXIT_UNREACHABLE}   the supervisor could not be reached, or did not answer in time
  {EXIT_NOT_DURABLE}   applied and in force, but NOT yet journaled (journal_failed): the
      supervisor retries the journal and pages; do not repeat the command
  {EXIT_USAGE}  bad usage
  130 interrupted (Ctrl-C)"""


def _ts(value: float | None) -> str:
    if value is None:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(value))
    except (OverflowError, OSError, ValueError):
        return f"epoch {value}"  # a time no calendar holds: show it, never crash


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def format_incidents(incidents: list[dict[str, Any]]) -> str:
    if not incidents:
        return "no incidents"
    def pm(i: dict[str, Any]) -> str:
        state = i.get("postmortem")
        if not state:
            return "-"
        if state["written"]:
            return "written"
        if state["overdue"]:
            return "OVERDUE"
        return f"due {_ts(state['due'])}" if state.get("due") else "to write"

    rows = [[i["id"], i["class"], i["severity"], i["state"], i["scope"], _ts(i["opened_at"]),
             i.get("commander") or "-", pm(i), i["summary"][:60]] for i in incidents]
    return _table(rows, ["ID", "CLASS", "SEV", "STATE", "SCOPE", "OPENED", "COMMANDER",
                         "POSTMORTEM", "SUMMARY"])


def format_status(st: dict[str, Any]) -> str:
    out = [f"mode        {st['mode']}  size {st['size_multiplier']:.2f}"
           + ("  ORDERS BLOCKED" if st.get("blocked") else "")]
    k = st["kill"]
    if k.get("latched"):
        verdict = "yes" if k.get("verified") else f"no ({k.get('verify_detail') or 'pending'})"
        out.append(f"kill        LATCHED since {_ts(k.get('since'))} by {k.get('by')}: "
                   f"{k.get('reason')}")
        out.append(f"            verified: {verdict}")
        for name, v in (k.get("venues") or {}).items():
            open_orders = "unknown" if v.get("open_orders") is None else v["open_orders"]
            line = (f"            venue {name}: open orders {open_orders}, new after switch "
                    f"{v.get('new_orders_after_switch', 0)}, cancel requests "
                    f"{v.get('cancel_requests', 0)}")
            if v.get("last_error"):
                line += f", error: {v['last_error']}"
            out.append(line)
    else:
        out.append("kill        not latched")
    if st.get("recovery"):
        r = st["recovery"]
        remaining = r.get("remaining_s")
        out.append(f"recovery    size {r['size_multiplier']:.2f}, "
                   + ("clock restarts when the live P1 is resolved" if remaining is None
                      else f"{remaining:.0f} s of {r['session_s']:.0f} s left"))
    route = (st.get("gate") or {}).get("route")
    if route:
        out.append(f"route       new orders go to {route} only (runbook broker-failover)")
    arming = st.get("arming") or {}
    if st.get("mode") == "DISARMED" and arming.get("disarmed_reason"):
        out.append(f"disarmed    {arming['disarmed_reason']}")
    out.append("")
    out.append(format_incidents(st.get("incidents", [])))
    if st.get("resume_blockers"):
        out.append("")
        out.append("resume is blocked:")
        out += [f"  - {b}" for b in st["resume_blockers"]]
    out.append("")
    out.append(f"next step   {st.get('next_step', '-')}")
    venues = st.get("venues") or {}
    if venues:
        out.append("")
        rows = []
        for name, v in venues.items():
            hb = v.get("heartbeat", {})
            state = {True: "ok", False: "FAILING", None: "-"}[hb.get("ok")]
            latency = "-" if hb.get("latency_ms") is None else f"{hb['latency_ms']:.1f} ms"
            rows.append([name, state, latency, str(hb.get("failures_in_window", 0)),
                         v.get("cancel_scope", "-"), hb.get("last_error") or ""])
        out.append(_table(rows, ["VENUE", "HEARTBEAT", "LATENCY", "FAILS", "CANCEL SCOPE",
                                 "LAST ERROR"]))
    rec = st.get("reconciliation")
    if rec:
        out.append("")
        out.append(f"reconciled  {_ts(rec['ts'])}: "
                   + ("clean" if rec["clean"] else f"{rec['differences']} difference(s)")
                   + f" ({rec['report']})")
    return "\n".join(out)


def format_gates(results: list[dict[str, Any]]) -> str:
    """Playbook 05's gates, cadence by cadence ("Audit cadence-by-cadence - not item-by-item"):
    a table, then each gate's evidence in full."""
    rows = [[g["id"], g["cadence"], g["state"], _ts(g.get("last_satisfied")),
             g.get("by") or "-", _ts(g.get("expires_at")), g["title"]] for g in results]
    out = _table(rows, ["GATE", "CADENCE", "STATE", "LAST SATISFIED", "BY", "EXPIRES",
                        "TITLE"])
    out += "\n\nevidence\n" + "\n".join(f"  {g['id']:<3} {g['state']:<7} {g['evidence']}"
                                         for g in results)
    blocking = [g["id"] for g in results if g["cadence"] == "PRE-LAUNCH" and g["state"] != "PASS"]
    out += "\n\n" + (f"arming blocked by {', '.join(blocking)}" if blocking
                     else "pre-launch gates pass: deskctl arm may proceed")
    return out


def format_reconciliation(r: dict[str, Any]) -> str:
    out = [f"reconciliation {r['id']} ({r['trigger']}): "
           + ("clean" if r["clean"] else "NOT clean") + f"\nreport: {r['path']}"]
    for name, v in r["venues"].items():
        if not v.get("ok"):
            out.append(f"venue {name}: unreachable: {v.get('error')}")
    if r["differences"]:
        rows = [[d["symbol"], f"{d['broker_qty']:g}", f"{d['internal_qty']:g}",
                 f"{d['diff']:+g}", d["classification"], d["explanation"]]
                for d in r["differences"]]
        out.append(_table(rows, ["SYMBOL", "BROKER", "ENGINE", "DIFF", "CLASS",
                                 "EXPLANATION"]))
    return "\n".join(out)


def format_alerts(r: dict[str, Any]) -> str:
    rows = []
    for a in r.get("recent", [])[-30:]:
        delivery = ", ".join(f"{k}={v}" for k, v in (a.get("delivery") or {}).items()) or "log"
        rows.append([_ts(a["ts"]), a["channel"], str(a.get("count", 1)),
                     a.get("incident_id") or "-", delivery, a["summary"][:60]])
    out = _table(rows, ["TIME", "CHANNEL", "COUNT", "INCIDENT", "DELIVERY", "SUMMARY"]) \
        if rows else "no alerts"
    sinks = r.get("sinks") or {}
    if sinks:
        out += "\n\n" + "\n".join(
            f"sink {name}: " + ", ".join(f"{k}={v}" for k, v in st.items()
                                         if not isinstance(v, dict))
            for name, st in sinks.items())
    return out


def format_freshness(r: dict[str, Any]) -> str:
    rows = []
    for row in r["symbols"]:
        ages = "  ".join(f"{v}={'-' if a is None else f'{a:.1f}s'}"
                         for v, a in row["age_s"].items())
        rows.append([row["symbol"], ages, "STALE" if row["stale"] else "ok",
                     row["suppressed"] or "", row["halted"] or ""])
    table = _table(rows, ["SYMBOL", "BAR AGE", "STATE", "SUPPRESSED", "HALTED"])
    return f"active vendor {r['active_vendor']}\n" + (table if rows else "no traded symbols")


def _sha(value: str | None) -> str:
    return "-" if value is None else value[:12]


def format_check(monitor: str, r: dict[str, Any]) -> str:
    """A ``check``'s result: the monitor's verdict and what it was judged on."""
    if monitor in ("ks", "churn"):
        key = "prediction_ks" if monitor == "ks" else "importance_churn"
        m = (r.get("monitors") or {}).get(key) or {}
        value = "" if m.get("value") is None else f" (value {m['value']})"
        return (f"{monitor}: {m.get('verdict', '-')}{value}: {m.get('rule', '')}"
                + (f"; {m['detail']}" if m.get("detail") else ""))
    if monitor == "drift":
        m = r["monitors"]["feature_psi"]
        value = "" if m.get("value") is None else f" (worst PSI {m['value']:.3f})"
        out = [f"feature PSI vs training: {m['verdict']}{value}: {m['rule']}"
               + (f"; {m['detail']}" if m.get("detail") else "")]
        top = r.get("top_features") or []
        rows = [[name, "-" if v is None else f"{v:.3f}", "top" if name in top else ""]
                for name, v in sorted((r.get("psi") or {}).items())]
        if rows:
            out.append(_table(rows, ["FEATURE", "PSI", "RANK"]))
        out.append(f"model {r['model_hash']}: "
                   + (f"DISABLED ({r['disabled_reason']})" if r.get("disabled") else "enabled")
                   + ("; retire" if r.get("retire") else ""))
        return "\n".join(out)
    if monitor == "pnl":
        band, slip = r["pnl_band"], r["slippage"]
        out = [f"pnl band: {band['verdict']}, streak {band.get('streak', 0)} day(s) below"
               + (f": {band['note']}" if band.get("note") else "")]
        last = band.get("last_value")
        if last:
            low = "-" if last.get("low") is None else f"{last['low']:,.2f}"
            out.append(f"  last closed trading day {last['trading_day']} ({last['date']}): "
                       f"cumulative {last['cum_pnl']:,.2f}, band low {low}")
        out.append(f"slippage: {slip['verdict']}"
                   + (f": {slip['note']}" if slip.get("note") else ""))
        return "\n".join(out)
    ref, commit = r.get("ref") or "-", r.get("commit")
    out = [f"config drift: {r['verdict']} against {ref}"
           + (f" ({_sha(commit)})" if commit and commit != ref else "")
           + (f": {r['error']}" if r.get("error") else "")]
    rows = [[path, f["file"], {True: "ok", False: "DRIFT", None: "-"}[f.get("match")],
             _sha(f.get("live_sha256")), _sha(f.get("expected_sha256")),
             f.get("error") or f.get("snapshot") or ""]
            for path, f in (r.get("files") or {}).items()]
    if rows:
        out.append(_table(rows, ["PATH", "LIVE FILE", "MATCH", "LIVE", "EXPECTED",
                                 "ERROR / SNAPSHOT"]))
    return "\n".join(out)


def format_runbook(r: dict[str, Any]) -> str:
    """One runbook procedure as playbook 01 lays it out: trigger, numbered steps, verify."""
    out = [f"{r['title']}", f"id {r['id']} · category {r['category']} · frequency "
                            f"{r['frequency']}", "", "trigger", f"  {r['trigger']}", "", "steps"]
    out += [f"  {n:02d} {step}" for n, step in enumerate(r["steps"], 1)]
    out += ["", "verify", f"  {r['verify']}"]
    return "\n".join(out)


def format_runbooks(rs: list[dict[str, Any]]) -> str:
    rows = [[r["id"], r["category"], r["title"], r["frequency"]] for r in rs]
    return _table(rows, ["ID", "CATEGORY", "PROCEDURE", "FREQUENCY"])


def _actor(actor: str) -> str:
    """``operator:alice(uid=1000)`` -> ``alice``: the table shows the user."""
    return actor.removeprefix("operator:").split("(", 1)[0]


def format_run(r: dict[str, Any]) -> str:
    """A checklist run: each step with who did it when, then the verify verdict."""
    out = [f"run {r['id']} · runbook {r['runbook']} ({r['title']}) · {r['state'].upper()}",
           f"started {_ts(r['started_at'])} by {_actor(r['started_by'])}"
           + (f" · incident {r['incident_id']}" if r.get("incident_id") else ""), "", "steps"]
    for item in r["checklist"]:
        d = item["done"]
        mark = "[x]" if d else "[ ]"
        out.append(f"  {mark} {item['step']:02d} {item['text']}")
        if d:
            out.append(f"         done {_ts(d['ts'])} by {_actor(d['actor'])}"
                       + (f": {d['note']}" if d.get("note") else ""))
    out += ["", f"verify ({r['verify_method']})", f"  {r['verify_text']}"]
    verifications = r.get("verifications") or []
    if verifications:
        v = verifications[-1]
        verdict = {True: "PASS", False: "FAIL", None: "NOT JUDGED"}[v["ok"]]
        out.append(f"  => {verdict} ({v['method']}) {_ts(v['ts'])} by {_actor(v['actor'])}: "
                   f"{v['detail']}")
        for key, value in sorted((v.get("evidence") or {}).items()):
            out.append(f"     {key}: {json.dumps(value, sort_keys=True)}")
    else:
        out.append("  => not run yet")
    if r["state"] != "open":
        out.append("")
        out.append(f"{r['state']} {_ts(r.get('closed_at'))} by {_actor(r.get('closed_by') or '')}"
                   + (f": {r['close_note']}" if r.get("close_note") else ""))
    elif r.get("pending"):
        out.append("")
        out.append("next: deskctl runbook " + r["id"] + f" --done {r['pending'][0]}")
    return "\n".join(out)


def format_runs(rs: list[dict[str, Any]]) -> str:
    if not rs:
        return "no checklist runs"
    rows = []
    for r in rs:
        v = (r.get("verifications") or [None])[-1]
        verdict = "-" if v is None else {True: "pass", False: "FAIL", None: "not judged"}[
            v["ok"]]
        rows.append([r["id"], r["runbook"], r["state"],
                     f"{r['steps'] - len(r['pending'])}/{r['steps']}", verdict,
                     _ts(r["started_at"]), _actor(r["started_by"]), r.get("incident_id") or "-"])
    return _table(rows, ["RUN", "RUNBOOK", "STATE", "STEPS", "VERIFY", "STARTED", "BY",
                         "INCIDENT"])


def format_credentials(st: dict[str, Any]) -> str:
    rows = []
    for name, c in (st.get("venues") or {}).items():
        staged = "-"
        if c.get("staged"):
            check = {True: "checked ok", False: "check FAILED", None: "not checked"}[
                c.get("check_ok")]
            staged = f"{c['staged']} ({check}; activates {_ts(c.get('activate_at'))})"
        previous = "-" if not c.get("previous") else \
            f"{c['previous']} (revoke from {_ts(c.get('revoke_after'))})"
        rows.append([name, c.get("live") or "-", staged, previous])
    out = _table(rows, ["VENUE", "LIVE", "STAGED", "TO REVOKE"]) if rows else "no venues"
    last = st.get("last_rotation")
    out += "\n\nlast rotation: " + ("none" if not last else (
        f"{last['venue']} at {_ts(last['revoked_at'])}: new {last['fingerprint']} checked "
        f"{_ts(last['checked_at'])}, activated {_ts(last['activated_at'])} by "
        f"{_actor(last['activated_by'])}, old revoked by {_actor(last['revoked_by'])}"
        + (" (verified before revoke)" if last.get("verified_before_revoke") else "")))
    return out


def _when(text: str) -> float:
    """``--activate-at``: an ISO 8601 time (UTC unless it says), or ``+SECONDS`` from now."""
    from datetime import UTC, datetime

    if text.startswith("+"):
        try:
            return time.time() + float(text[1:])
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not +SECONDS") from None
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time like 2026-03-04T12:00:00Z or +SECONDS") from None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def format_calendar(r: dict[str, Any]) -> str:
    """The calendar: what it is, today, the next sessions with their source."""
    lines = [f"calendar    {r['calendar']}" + (f" ({r['timezone']})" if r["timezone"] else ""),
             f"today       {r['today']}",
             f"now         {'in session' if r['in_session'] else 'closed'}"
             + (f" until {_ts(r['next_change'])}" if r["next_change"] else "")]
    if r["venue"]:
        lines.append(f"venue       sessions from venue {r['venue']} "
                     f"(read {_ts(r['fetched_at'])})")
    for name, error in sorted(r["errors"].items()):
        lines.append(f"venue       {name} did not answer: {error}")
    for s in r["sessions"]:
        lines.append(f"  {s['date']}  {_ts(s['open'])} - {_ts(s['close'])}  {s['source']}"
                     + ("  early close" if s["early_close"] else ""))
    return "\n".join(lines)


def format_flatten(r: dict[str, Any]) -> str:
    """A flatten's result: one line per position, then each unreadable venue."""
    head = (f"flatten {'complete' if r['done'] else 'INCOMPLETE'} in {r['seconds']:g} s"
            + (" (forced before a clean reconciliation)" if r.get("forced") else ""))
    lines = [head]
    for leg in r["legs"]:
        now = "unknown" if leg["now"] is None else f"{leg['now']:g}"
        lines.append(f"  {leg['venue']:<10} {leg['symbol']:<8} {leg['position']:>10g} -> "
                     f"{now:<8} target {leg['target']:g}  {leg['state']}"
                     + (f"  ({leg['detail']})" if leg["detail"] else ""))
    if not r["legs"]:
        lines.append("  no position to flatten")
    for name, v in r["venues"].items():
        if not v["ok"]:
            lines.append(f"  {name:<10} positions UNKNOWN: {v['error']}")
    return "\n".join(lines)


def format_drill(r: dict[str, Any]) -> str:
    """A drill's report: the measure against its target, the verdict, each step."""
    seconds = "not reached" if r.get("seconds") is None else f"{r['seconds']:.2f} s"
    out = [f"{r['kind']} drill: {'PASSED' if r['ok'] else 'FAILED'}",
           f"{r['measure']} {seconds} (target {r['target_s']:g} s)"]
    rows = [[f"{s['seconds']:.2f}", "ok" if s["ok"] else "FAIL", s["name"], s["detail"]]
            for s in r.get("steps", [])]
    if rows:
        out.append(_table(rows, ["AT (S)", "RESULT", "STEP", "DETAIL"]))
    if not r["ok"]:
        out.append(f"why: {r['detail']}")
    out.append(f"report: {r.get('report') or 'NOT WRITTEN'}")
    return "\n".join(out)


def _answer(text: str) -> tuple[str, bool]:
    qid, sep, value = text.partition("=")
    verdict = {"yes": True, "y": True, "true": True, "no": False, "n": False,
               "false": False}.get(value.strip().lower())
    if not sep or not qid.strip() or verdict is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not QID=yes or QID=no")
    return qid.strip(), verdict


def _print(result: Any, as_json: bool, human: str) -> None:
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(human)


class _Parser(argparse.ArgumentParser):
    """argparse with deskctl's exit status for bad usage and a one-line reason."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"deskctl: {message} (see deskctl --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="deskctl", description="Talk to desk-supervisor.", epilog=EXIT_CODES,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--socket", help=f"control socket (default: $DESK_SUPERVISOR_SOCKET, "
                                     f"else {default_socket_path()})")
    ap.add_argument("--json", action="store_true", help="print the raw JSON result")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="mode, kill-switch, incidents, next step")
    sub.add_parser("watch", help="stream state changes")
    inc = sub.add_parser("incidents", help="list incidents")
    inc.add_argument("--all", action="store_true", help="include resolved incidents")
    kill = sub.add_parser("kill", help="pull the kill-switch")
    kill.add_argument("--reason", required=True)
    ack = sub.add_parser("ack", help="acknowledge an incident and take command")
    ack.add_argument("id")
    ack.add_argument("--commander", help="incident commander (default: you)")
    res = sub.add_parser("resolve", help="resolve an incident with a written root cause")
    res.add_argument("id")
    res.add_argument("--root-cause", required=True)
    resume = sub.add_parser("resume", help="leave HALTED when the resume conditions hold")
    resume.add_argument("--verified-nonprod", action="store_true", default=None,
                        help="state that the fix was verified in a non-prod environment "
                             "(playbook 03 post-incident Q1; without it the resume is "
                             "refused: a plain resume does not count)")
    sub.add_parser("reconcile", help="reconcile positions to broker truth now")
    sub.add_parser("freshness", help="gate D1: every traded symbol's bar age, suppressed ones")
    sub.add_parser("alerts", help="recent alerts: channel, count, delivery per sink")
    sub.add_parser("alert-noise", help="gate W2: alerts firing > 5 times without an action")
    check = sub.add_parser("check", help="run a monitor now and show its verdict")
    check.add_argument("monitor", choices=["drift", "pnl", "config_drift", "ks", "churn"],
                       help="drift: feature PSI; pnl: the backtest band; config_drift: live "
                            "configs vs the deployed git ref; ks: prediction distribution; "
                            "churn: feature-importance top-5")
    rep = sub.add_parser("report", help="draw a report as a PNG (pnl-band: live PnL over the "
                                        "backtest band; drift FEATURE: live vs training)")
    rep.add_argument("kind", choices=["pnl-band", "drift"])
    rep.add_argument("feature", nargs="?", help="the feature (drift only)")
    rep.add_argument("--out", help="the PNG file to write (needs the plots extra)")
    rep.add_argument("--json", dest="report_json", action="store_true",
                     help="print the data series as JSON instead of drawing")
    halt = sub.add_parser("symbol-halt",
                          help="report a trading halt or corporate action on a symbol")
    halt.add_argument("symbol")
    halt.add_argument("--reason", default="", help="what halted it (required unless --resumed)")
    halt.add_argument("--resumed", action="store_true", help="the halt is over")
    tree = sub.add_parser("tree", help="walk a playbook 03 recovery tree: probes answer what the "
                                       "supervisor knows, --answer the rest")
    tree.add_argument("id", choices=["no-fills", "wrong-pnl", "missing-data", "alerts-spam",
                                     "config-mismatch", "post-incident"])
    tree.add_argument("--answer", action="append", type=_answer, default=[], metavar="QID=yes|no",
                      help="the operator's answer to a question (repeatable)")
    tree.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                      help="print the walk as JSON")
    tree.add_argument("--interactive", action="store_true",
                      help="ask each question the probes cannot answer (default when stdin "
                           "is a terminal and neither --answer, --json nor --execute is given)")
    tree.add_argument("--execute", action="store_true",
                      help="execute the leaf's action (kill-switch, throttle, resume) when "
                           "the walk reaches it; never by default")
    thr = sub.add_parser("throttle", help="throttle the desk: a P1 operator-throttle incident")
    thr.add_argument("--multiplier", type=float, required=True, help="size, in (0, 1]")
    thr.add_argument("--reason", required=True)
    rb = sub.add_parser("runbook", help="list playbook 01's runbook procedures, show one, or run "
                                        "one as a checklist (--start, --done, --verify, --close)")
    rb.add_argument("id", nargs="?", help="the procedure to show or --start (default: list "
                                          "them), or a run id (RUN-...) to show or act on")
    rb.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                    help="print the raw JSON result")
    act = rb.add_mutually_exclusive_group()
    act.add_argument("--start", action="store_true", help="open a checklist run of runbook ID")
    act.add_argument("--done", type=int, metavar="N", help="mark step N of run ID done")
    act.add_argument("--verify", action="store_true", help="run run ID's verify check")
    act.add_argument("--close", action="store_true",
                     help="complete run ID (every step done, verify passed)")
    act.add_argument("--abandon", metavar="REASON", help="abandon run ID, saying why")
    act.add_argument("--runs", action="store_true", help="list the open checklist runs")
    rb.add_argument("--incident", help="with --start: the incident the run serves")
    rb.add_argument("--note", default="", help="with --done: what was done, where")
    rb.add_argument("--commit", help="with --verify (config-rollback): the revert commit")
    rb.add_argument("--attest", metavar="NOTE",
                    help="with --verify, for a runbook verified by hand: what you checked")
    rb.add_argument("--all", action="store_true", help="with --runs: closed runs too")
    cred = sub.add_parser("credentials", help="rotate a venue's API credential (playbook 01 "
                                              "api-credentials): stage, check, activate, revoke")
    cred.add_argument("action", nargs="?", default="status",
                      choices=["status", "stage", "check", "activate", "revoke"])
    cred.add_argument("venue", nargs="?", help="the venue (all but status)")
    cred.add_argument("--key-id", help="stage: the new key id")
    cred.add_argument("--key-id-file", help="stage: a file holding the new key id")
    cred.add_argument("--secret-file", help="stage: a file holding the new secret ('-': stdin)")
    cred.add_argument("--activate-at", type=_when, metavar="TIME",
                      help="stage: not before this ISO 8601 time or +SECONDS (default: now)")
    cred.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                      help="print the raw JSON result")
    gates = sub.add_parser("gates", help="playbook 05's twenty gates: PASS / FAIL / DUE / EXPIRED "
                           "with their evidence")
    gates.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print the raw JSON result")
    gate = sub.add_parser("gate", help="attest a gate the supervisor cannot judge itself")
    gate_sub = gate.add_subparsers(dest="gate_command", required=True, metavar="ACTION")
    attest = gate_sub.add_parser("attest", help="record that a gate's work was done")
    attest.add_argument("gate", metavar="ID", help="the gate, e.g. D5, W3, M2, Q1")
    attest.add_argument("--note", required=True,
                        help="what was done and where its record is (journaled)")
    attest.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the raw JSON result")
    sub.add_parser("arm", help="leave DISARMED: refused while a pre-launch gate does not pass")
    disarm = sub.add_parser("disarm", help="stop trading (DISARMED, size 0) until armed again")
    disarm.add_argument("--reason", required=True, help="why (journaled)")
    route = sub.add_parser("route", help="flip where new orders go (runbook broker-failover "
                                          "step 01), or --clear it")
    route.add_argument("venue", nargs="?", help="the venue new orders go to")
    route.add_argument("--clear", action="store_true", help="every venue again")
    route.add_argument("--reason", required=True, help="why (journaled)")
    cal = sub.add_parser("calendar", help="the trading calendar: today, the next sessions, "
                                          "and where each answer came from")
    cal.add_argument("--refresh", action="store_true", help="ask the venues again first")
    cal.add_argument("--days", type=int, default=5, help="how many sessions (1-60)")
    flat = sub.add_parser("flatten", help="while HALTED: flatten positions at the venues "
                                          "from broker truth, with marketable limits")
    flat.add_argument("--symbol", action="append", default=[], metavar="SYMBOL",
                      help="only this symbol (repeatable; default: every position)")
    flat.add_argument("--venue", help="only this venue (default: every venue)")
    flat.add_argument("--reason", required=True, help="why (journaled)")
    flat.add_argument("--force", action="store_true",
                      help="before a clean reconciliation since the halt (resume operators)")
    drill = sub.add_parser("drill", help="run a drill on the paper venues of [drill]: "
                                          "killswitch (gate P1) or failover (gate M1)")
    drill.add_argument("kind", choices=["killswitch", "failover"])
    tel = sub.add_parser("telemetry", help="send telemetry events (JSON lines) from a file")
    tel.add_argument("file", help="file of JSON events, one per line ('-' for stdin)")
    return ap


def run(args: argparse.Namespace) -> int:
    path = args.socket or default_socket_path()
    with ControlClient(path) as client:
        match args.command:
            case "status":
                st = client.request("status")
                _print(st, args.json, format_status(st))
            case "incidents":
                result = client.request("incidents", all=args.all)
                _print(result, args.json, format_incidents(result))
            case "kill":
                r = client.request("kill", reason=args.reason)
                msg = ("kill-switch was already latched; cancel-all re-issued"
                       if r.get("already_latched") else "kill-switch pulled")
                msg = f"{msg}: mode {r['mode']}, incident {r['incident_id']}"
                if r.get("durable") is False:
                    msg = (f"kill in force, NOT yet journaled: {msg}; the journal is failing "
                           f"({r.get('journal_error')}) and is retried")
                _print(r, args.json, msg)
            case "ack":
                r = client.request("ack", id=args.id, commander=args.commander)
                _print(r, args.json, f"{r['id']} acknowledged; commander {r['commander']}")
            case "resolve":
                r = client.request("resolve", id=args.id, root_cause=args.root_cause)
                _print(r, args.json, f"{r['id']} resolved: {r['root_cause']}")
            case "resume":
                r = client.request("resume", verified_nonprod=args.verified_nonprod)
                _print(r, args.json, f"resumed: mode {r['mode']} at size "
                                     f"{r['size_multiplier']:.2f} for one session")
            case "reconcile":
                r = client.request("reconcile")
                _print(r, args.json, format_reconciliation(r))
                return 0 if r["clean"] else 1
            case "alerts":
                r = client.request("alerts")
                _print(r, args.json, format_alerts(r))
            case "alert-noise":
                r = client.request("alert_noise")
                rows = [[a["channel"], a["scope"] or "-", str(a["fired"]),
                         str(a["unactioned"]), a["summary"][:70]] for a in r["alerts"]]
                _print(r, args.json, (f"gate W2: alerts firing more than {r['threshold']} "
                                      "times in 7 days without an action\n")
                       + (_table(rows, ["CHANNEL", "SCOPE", "FIRED", "UNACTIONED",
                                        "SUMMARY"]) if rows else "none: W2 passes"))
            case "check":
                r = client.request("check", monitor=args.monitor)
                _print(r, args.json, format_check(args.monitor, r))
            case "report":
                return _report(client, args)
            case "freshness":
                r = client.request("freshness")
                _print(r, args.json, format_freshness(r))
            case "symbol-halt":
                r = client.request("symbol_halt", symbol=args.symbol, reason=args.reason,
                                   resumed=args.resumed)
                _print(r, args.json, f"{r['symbol']}: " + (
                    f"halt reported ({r['reason']})" if r["halted"] else "halt lifted"))
            case "tree":
                interactive = args.interactive or (
                    sys.stdin.isatty() and not args.json and not args.answer
                    and not args.execute)
                if interactive:
                    return treecli.walk_interactive(client, args.id, dict(args.answer),
                                                    inp=sys.stdin, out=sys.stdout,
                                                    err=sys.stderr)
                return treecli.walk_once(client, args.id, dict(args.answer), as_json=args.json,
                                         do_execute=args.execute, out=sys.stdout,
                                         err=sys.stderr)
            case "throttle":
                r = client.request("throttle", multiplier=args.multiplier, reason=args.reason)
                _print(r, args.json, f"throttled: incident {r['incident_id']} at "
                                     f"{r['incident_multiplier']:g} size; mode {r['mode']} "
                                     f"size {r['size_multiplier']:g}")
            case "runbook":
                return _runbook(client, args)
            case "credentials":
                return _credentials(client, args)
            case "gates":
                r = client.request("gates")
                _print(r, args.json, format_gates(r))
                return 0 if all(g["state"] == "PASS" for g in r
                                if g["cadence"] == "PRE-LAUNCH") else 1
            case "gate":
                r = client.request("gate_attest", gate=args.gate, note=args.note)
                _print(r, args.json, f"gate {r['id']} {r['state']}: {r['evidence']}"
                       + (f" (until {_ts(r['expires_at'])})" if r.get("expires_at") else ""))
            case "arm":
                r = client.request("arm")
                _print(r, args.json, f"armed: mode {r['mode']} at size "
                                     f"{r['size_multiplier']:.2f}")
            case "disarm":
                r = client.request("disarm", reason=args.reason)
                _print(r, args.json, f"disarmed: mode {r['mode']} ({r['disarmed_reason']})")
            case "route":
                if (args.venue is None) == (not args.clear):
                    print("deskctl: route needs a VENUE or --clear (not both)", file=sys.stderr)
                    return EXIT_USAGE
                r = client.request("route", venue=None if args.clear else args.venue,
                                   reason=args.reason)
                health = {True: "heartbeat ok", False: "heartbeat FAILING",
                          None: "heartbeat not checked yet"}[r["heartbeat_ok"]]
                _print(r, args.json, f"route: new orders go to {r['route']} ({health})"
                       if r["route"] else "route cleared: new orders may go to every venue")
            case "calendar":
                r = client.request("calendar", refresh=args.refresh, days=args.days)
                _print(r, args.json, format_calendar(r))
            case "flatten":
                # The daemon bounds a flatten ([flatten] deadline_s, 60 s by default).
                client._sock.settimeout(None)
                r = client.request("flatten", reason=args.reason, symbols=args.symbol,
                                   venue=args.venue, force=args.force)
                _print(r, args.json, format_flatten(r))
                return 0 if r["done"] else EXIT_FAILED
            case "drill":
                # The daemon bounds a drill ([drill] max_duration_s); its quiet period
                # alone is 60 s by default, far past the usual answer timeout.
                client._sock.settimeout(None)
                r = client.request("drill", kind=args.kind)
                _print(r, args.json, format_drill(r))
                return 0 if r["ok"] else 1
            case "telemetry":
                stream = sys.stdin if args.file == "-" else open(args.file)
                with stream:
                    events = [json.loads(line) for line in stream if line.strip()]
                r = client.request("telemetry", events=events)
                _print(r, args.json, f"accepted {r['accepted']} event(s)")
            case "watch":
                client.send({"cmd": "watch"})
                client._sock.settimeout(None)
                while True:
                    message = client.read_line()
                    if not message.get("ok"):
                        err = message.get("error", {})
                        raise ControlError(err.get("code", "error"), err.get("message", ""))
                    m = message["result"]
                    if m.get("event") == "heartbeat" and not args.json:
                        continue  # the once-a-second keep-alive: only --json shows it
                    if args.json:
                        print(json.dumps(m), flush=True)
                    else:
                        st = m.get("status") or {}
                        print(f"{time.strftime('%H:%M:%S')} {m.get('event')}: mode "
                              f"{st.get('mode', m.get('mode'))} size "
                              f"{st.get('size_multiplier', m.get('size_multiplier'))}"
                              + (f" {m['incident']['id']} {m['incident']['state']}"
                                 if m.get("incident") else ""), flush=True)
    return 0


def _runbook(client: ControlClient, args: argparse.Namespace) -> int:
    """``deskctl runbook``: the procedures, and checklist runs of them."""
    rid = args.id
    if args.runs:
        rs = client.request("runbook_runs", all=args.all)
        _print(rs, args.json, format_runs(rs))
        return 0
    acting = args.done is not None or args.verify or args.close or args.abandon is not None
    if (args.start or acting) and not rid:
        print("deskctl: runbook needs an ID (a runbook to --start, a run to act on)",
              file=sys.stderr)
        return EXIT_USAGE
    if args.start:
        r = client.request("runbook_start", id=rid, incident=args.incident)
    elif args.done is not None:
        r = client.request("runbook_done", run=rid, step=args.done, note=args.note)
    elif args.verify:
        r = client.request("runbook_verify", run=rid, commit=args.commit, attest=args.attest)
    elif args.close or args.abandon is not None:
        r = client.request("runbook_close", run=rid, abandon=args.abandon)
    elif rid and rid.startswith("RUN-"):
        r = client.request("runbook_runs", run=rid)
    else:
        r = client.request("runbook", id=rid)
        _print(r, args.json, format_runbook(r) if rid else format_runbooks(r))
        return 0
    _print(r, args.json, format_run(r))
    if args.verify:
        last = (r.get("verifications") or [{}])[-1]
        return 0 if last.get("ok") is True else 1
    return 0


def _credentials(client: ControlClient, args: argparse.Namespace) -> int:
    """``deskctl credentials``: playbook 01 api-credentials, one step per action."""
    if args.action == "status":
        st = client.request("credentials")
        _print(st, args.json, format_credentials(st))
        return 0
    if not args.venue:
        print(f"deskctl: credentials {args.action} needs a VENUE", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "stage":
        key_id = args.key_id
        if args.key_id_file:
            with open(args.key_id_file) as f:
                key_id = f.read().strip()
        if not key_id or not args.secret_file:
            print("deskctl: credentials stage needs --key-id or --key-id-file, and "
                  "--secret-file (a secret never goes on the command line)", file=sys.stderr)
            return EXIT_USAGE
        if args.secret_file == "-":
            secret = sys.stdin.readline().strip()
        else:
            with open(args.secret_file) as f:
                secret = f.read().strip()
        c = client.request("credentials_stage", venue=args.venue, key_id=key_id,
                           secret_key=secret, activate_at=args.activate_at)
        human = (f"venue {args.venue}: staged {c['staged']}, activates no earlier than "
                 f"{_ts(c['activate_at'])}; next: deskctl credentials check {args.venue}")
    else:
        c = client.request(f"credentials_{args.action}", venue=args.venue)
        human = {
            "check": lambda: (f"venue {args.venue}: staged {c['staged']}: "
                              + ("check passed" if c["check_ok"] else "check FAILED")
                              + f": {c['check_detail']}"),
            "activate": lambda: (f"venue {args.venue}: {c['active']} is live; the previous "
                                 f"credential may be revoked from {_ts(c['revoke_after'])}"),
            "revoke": lambda: (f"venue {args.venue}: previous credential revoked; last "
                               f"rotation {c['last_rotation']['fingerprint']}"),
        }[args.action]()
    _print(c, args.json, human)
    if args.action == "check" and not c["check_ok"]:
        return 1
    return 0


PLOTS_MISSING = "install the plots extra: pip install 'desk-supervisor[plots]'"


def _report(client: ControlClient, args: argparse.Namespace) -> int:
    """``deskctl report KIND [FEATURE]``: the daemon sends the series; drawn here."""
    as_json = args.json or args.report_json
    if args.kind == "drift" and not args.feature:
        print("deskctl: report drift needs a FEATURE", file=sys.stderr)
        return EXIT_USAGE
    if args.kind == "pnl-band" and args.feature:
        print("deskctl: report pnl-band takes no FEATURE", file=sys.stderr)
        return EXIT_USAGE
    if not as_json and not args.out:
        print("deskctl: report needs --out FILE.png (or --json)", file=sys.stderr)
        return EXIT_USAGE
    plots = None
    if not as_json:  # before asking the daemon: a missing extra fails fast
        try:
            from supervisor.ops import plots
        except ImportError as exc:
            print(f"deskctl: report: {PLOTS_MISSING} ({exc})", file=sys.stderr)
            return 1
    series = client.request("report", kind=args.kind, feature=args.feature)
    if as_json:
        print(json.dumps(series, indent=2, sort_keys=True))
        return 0
    assert plots is not None
    plots.draw(args.kind, series, args.out)
    print(f"{args.kind} report written to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except ControlError as exc:
        if exc.code == "journal_failed":
            print(f"deskctl: {args.command} applied, NOT yet journaled: {exc.message}",
                  file=sys.stderr)
            return EXIT_NOT_DURABLE
        print(f"deskctl: {args.command} refused ({exc.code}): {exc.message}", file=sys.stderr)
        return EXIT_REFUSED
    except SupervisorUnreachable as exc:
        print(f"deskctl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (OSError, ValueError) as exc:
        print(f"deskctl: {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
