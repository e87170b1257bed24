"""``deskctl``: the operator's command line over the control socket.

Exit status 0 on success; non-zero with a one-line reason on failure (2: the supervisor
refused the request, 3: the supervisor could not be reached, 64: bad usage).
``--json`` prints the raw result; otherwise a table meant for 3 a.m.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, NoReturn

from .client import ControlClient, default_socket_path
from .errors import ControlError, SupervisorUnreachable

EXIT_REFUSED = 2
EXIT_UNREACHABLE = 3
EXIT_USAGE = 64  # EX_USAGE


def _ts(value: float | None) -> str:
    if value is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(value))


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
    """One runbook procedure as seed 01 lays it out: trigger, numbered steps, verify."""
    out = [f"{r['title']}", f"id {r['id']} · category {r['category']} · frequency "
                            f"{r['frequency']}", "", "trigger", f"  {r['trigger']}", "", "steps"]
    out += [f"  {n:02d} {step}" for n, step in enumerate(r["steps"], 1)]
    out += ["", "verify", f"  {r['verify']}"]
    return "\n".join(out)


def format_runbooks(rs: list[dict[str, Any]]) -> str:
    rows = [[r["id"], r["category"], r["title"], r["frequency"]] for r in rs]
    return _table(rows, ["ID", "CATEGORY", "PROCEDURE", "FREQUENCY"])


def format_walk(w: dict[str, Any], runbook: dict[str, Any] | None = None) -> str:
    """A recovery-tree walk: each question with who answered it and on what evidence, then
    the leaf's action and the runbook it names (or the question still to answer)."""
    out = [f"tree {w['tree']}: {w['title']}"]
    for step in w["path"]:
        out.append(f"{step['question']}  {step['text']}")
        out.append(f"    {'yes' if step['answer'] else 'no'} ({step['source']}): "
                   f"{step['evidence']}")
    pending, leaf = w.get("pending"), w.get("leaf")
    if pending:
        out.append(f"{pending['question']}  {pending['text']}")
        out.append("    needs an answer" + (f" (probe saw: {pending['evidence']})"
                                            if pending.get("evidence") else ""))
    elif leaf:
        out.append(f"=> [{leaf['kind'].upper()}] {leaf['text']}")
        if runbook is not None:
            out.append(f"   runbook {runbook['id']}: {runbook['title']}")
            out += [f"     {n:02d} {step}" for n, step in enumerate(runbook["steps"], 1)]
            out.append(f"     verify: {runbook['verify']}")
    return "\n".join(out)


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
    ap = _Parser(prog="deskctl", description="Talk to desk-supervisor.")
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
    sub.add_parser("resume", help="leave HALTED when the resume conditions hold")
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
    tree = sub.add_parser("tree", help="walk a seed 03 recovery tree: probes answer what the "
                                       "supervisor knows, --answer the rest")
    tree.add_argument("id", choices=["no-fills", "wrong-pnl", "missing-data", "alerts-spam",
                                     "config-mismatch", "post-incident"])
    tree.add_argument("--answer", action="append", type=_answer, default=[], metavar="QID=yes|no",
                      help="the operator's answer to a question (repeatable)")
    tree.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                      help="print the walk as JSON")
    rb = sub.add_parser("runbook", help="list seed 01's runbook procedures, or show one")
    rb.add_argument("id", nargs="?", help="the procedure to show (default: list them)")
    rb.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                    help="print the raw JSON result")
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
                _print(r, args.json, f"{msg}: mode {r['mode']}, incident {r['incident_id']}")
            case "ack":
                r = client.request("ack", id=args.id, commander=args.commander)
                _print(r, args.json, f"{r['id']} acknowledged; commander {r['commander']}")
            case "resolve":
                r = client.request("resolve", id=args.id, root_cause=args.root_cause)
                _print(r, args.json, f"{r['id']} resolved: {r['root_cause']}")
            case "resume":
                r = client.request("resume")
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
                w = client.request("tree", id=args.id, answers=dict(args.answer))
                leaf = w.get("leaf")
                book = (client.request("runbook", id=leaf["runbook"])
                        if leaf and leaf.get("runbook") and not args.json else None)
                _print(w, args.json, format_walk(w, book))
                pending = w.get("pending")
                if pending:
                    q = pending["question"]
                    print(f"deskctl: tree {args.id} needs an answer to {q}: re-run with "
                          f"--answer {q}=yes or --answer {q}=no", file=sys.stderr)
                    return 1
            case "runbook":
                r = client.request("runbook", id=args.id)
                _print(r, args.json, format_runbook(r) if args.id else format_runbooks(r))
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
            from . import plots
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
