"""Probes: answers to recovery-tree questions from ``Desk.status()``, where the supervisor
knows them.

A probe is a pure function of the status dict; it returns ``None`` when the status holds
nothing to judge by, or a ``Probed`` whose ``answer`` is ``None`` when it saw something
(the ``evidence``) but not enough to answer for the operator.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

Status = Mapping[str, Any]


class Probed(msgspec.Struct, frozen=True):
    answer: bool | None
    evidence: str


def broker_up(st: Status) -> Probed | None:
    """no-fills Q1 "Is the broker status page green?": every venue's heartbeat."""
    venues = st.get("venues") or {}
    if not venues:
        return None
    down, up, unknown = [], [], []
    for name, v in sorted(venues.items()):
        hb = v.get("heartbeat") or {}
        if hb.get("ok") is False or hb.get("outage_reported"):
            down.append(f"{name} FAILING ({hb.get('failures_in_window', 0)} failure(s) in "
                        f"window, last error: {hb.get('last_error') or '-'})")
        elif hb.get("ok") is True:
            latency = hb.get("latency_ms")
            up.append(f"{name} ok" + ("" if latency is None else f" ({latency:.1f} ms)"))
        else:
            unknown.append(f"{name} not checked yet")
    if down:
        return Probed(False, "heartbeat: " + "; ".join(down + up + unknown))
    if unknown:
        return Probed(None, "heartbeat: " + "; ".join(up + unknown))
    return Probed(True, "heartbeat: " + "; ".join(up))


# playbook 03 wrong-pnl Q1 "3 or more trading days" (playbook 02 pnl-divergence: "for 3+ days").
PNL_DAYS = 3


def pnl_band_3_days(st: Status) -> Probed | None:
    """wrong-pnl Q1: the PnL band monitor's streak of days below the 95% band."""
    band = (st.get("pnl") or {}).get("pnl_band") or {}
    verdict = band.get("verdict")
    if verdict in (None, "no_data"):
        return None
    streak = int(band.get("streak") or 0)
    return Probed(streak >= PNL_DAYS,
                  f"PnL band monitor: {streak} trading day(s) in a row below the 95% band "
                  f"(verdict {verdict})")


def _freshness(st: Status) -> dict[str, Any]:
    return st.get("freshness") or {}


def single_symbol_stale(st: Status) -> Probed | None:
    """missing-data Q1 "Is the staleness on a single symbol?": the active vendor's stale
    symbols, judged as the freshness monitor does (NO only for the whole feed)."""
    fr = _freshness(st)
    active = fr.get("active_vendor")
    feed = (fr.get("stale") or {}).get(active)
    if not feed:
        return None
    count, universe = feed.get("count", 0), fr.get("universe", 0)
    if count == 0:
        return Probed(None, f"no symbol is stale on {active} (universe {universe})")
    symbols = ", ".join(feed.get("symbols") or [])
    whole = bool(feed.get("whole_feed"))
    return Probed(not whole, f"{count} of {universe} symbol(s) stale on {active} ({symbols}); "
                  + ("the whole feed" if whole else "not the whole feed"))


def symbol_halted(st: Status) -> Probed | None:
    """missing-data Q2 "corporate action today (split, dividend, halt)?": a halt reported
    on the stale symbols (``deskctl symbol-halt``); anything else is the operator's."""
    fr = _freshness(st)
    feed = (fr.get("stale") or {}).get(fr.get("active_vendor")) or {}
    stale = list(feed.get("symbols") or [])
    halted = fr.get("halted") or {}
    hits = [f"{s}: {halted[s].get('reason')}" for s in stale if s in halted]
    if hits:
        return Probed(True, "halt reported: " + "; ".join(hits))
    if stale:
        return Probed(None, f"no halt reported for {', '.join(stale)}")
    return None


def backup_vendor_healthy(st: Status) -> Probed | None:
    """missing-data Q3 "Is the backup data vendor healthy?": the other vendor's bars."""
    fr = _freshness(st)
    if not fr:
        return None
    active, primary, backup = (fr.get("active_vendor"), fr.get("primary_vendor"),
                               fr.get("backup_vendor"))
    other = backup if active == primary else primary
    if other is None or other == active:
        return Probed(False, "no backup data vendor is configured")
    feed = (fr.get("stale") or {}).get(other)
    if not feed or not feed.get("bars"):
        return Probed(False, f"no bars received from the backup vendor {other}")
    count, universe = feed.get("count", 0), fr.get("universe", 0)
    whole = bool(feed.get("whole_feed"))
    return Probed(not whole, f"backup vendor {other}: {count} of {universe} symbol(s) stale"
                  + ("; the whole feed is stale" if whole else ""))


# playbook 03 alerts-spam Q1 "a single root cause behind > 60% of the alerts"
ROOT_CAUSE_SHARE = 0.6


def alerts_single_root_cause(st: Status) -> Probed | None:
    """alerts-spam Q1: recent alerts grouped by the incident they belong to."""
    recent = (st.get("alerts") or {}).get("recent") or []
    if not recent:
        return None
    by_cause: Counter[str] = Counter()
    for a in recent:
        by_cause[a.get("incident_id") or f"(no incident) {a.get('summary', '')}"] += int(
            a.get("count") or 1)
    total = sum(by_cause.values())
    cause, n = by_cause.most_common(1)[0]
    share = n / total
    return Probed(share > ROOT_CAUSE_SHARE,
                  f"{n} of {total} recent alert(s) ({share:.0%}) come from {cause}")


def root_cause_documented(st: Status) -> Probed | None:
    """post-incident Q1: NO while a P0 is live or has no written root cause; whether the
    fix was verified in non-prod is the operator's to say."""
    if "resume_blockers" not in st:
        return None
    blockers = [b for b in st["resume_blockers"] or [] if "do not resume on hope" in b]
    if blockers:
        return Probed(False, "; ".join(blockers))
    return Probed(None, "every P0 incident is resolved with a root cause; the supervisor "
                        "cannot see whether the fix was verified in a non-prod environment")


def positions_reconciled(st: Status) -> Probed | None:
    """post-incident Q2: the last reconciliation, clean and after the halt."""
    if "reconciliation" not in st:
        return None
    rec = st["reconciliation"]
    if rec is None:
        return Probed(False, "no reconciliation to broker truth has run")
    since = (st.get("kill") or {}).get("since")
    if since is not None and rec["ts"] < since:
        return Probed(False, f"the last reconciliation ({rec['report']}) is from before the "
                             "halt")
    if not rec.get("clean"):
        return Probed(False, f"the last reconciliation found {rec.get('differences')} "
                             f"difference(s) with broker truth ({rec['report']})")
    return Probed(True, f"reconciled clean to broker truth ({rec['report']})")


def limits_unrelaxed(st: Status) -> Probed | None:
    """post-incident Q3: the risk limits against those in force at the halt."""
    if not (st.get("kill") or {}).get("latched"):
        return None  # the supervisor compares limits with those at the halt only
    softened = [b for b in st.get("resume_blockers") or [] if "limits got softened" in b]
    if softened:
        return Probed(False, "; ".join(softened))
    return Probed(True, "risk limits are those in force at the halt")


def _when(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def rate_limit_exhausted(st: Status) -> Probed | None:
    """no-fills Q3 "Has the rate-limit budget been exhausted?": each venue's last
    ``X-RateLimit-*`` headers (``status.venues.NAME.rate_limit``: limit, remaining, reset,
    ts; null until a venue sent them). YES when any venue had none left; NO only when
    every venue reported and each had some left."""
    venues = st.get("venues") or {}
    seen: list[tuple[str, dict[str, Any]]] = [
        (name, v["rate_limit"]) for name, v in sorted(venues.items())
        if isinstance(v, Mapping) and v.get("rate_limit")]
    if not seen:
        return None
    unknown = sorted(name for name, v in venues.items()
                     if not (isinstance(v, Mapping) and v.get("rate_limit")))
    spent, left = [], []
    for name, rl in seen:
        remaining, limit = rl.get("remaining"), rl.get("limit")
        text = (f"{name} {remaining if remaining is not None else '?'} of "
                f"{limit if limit is not None else '?'} request(s) left at {_when(rl.get('ts'))}")
        reset = rl.get("reset")
        if reset is not None:
            text += f", window resets {_when(reset) if reset > 1e9 else f'in {reset:g} s'}"
        if remaining is not None and remaining <= 0:
            spent.append(text)
        elif remaining is not None:
            left.append(text)
        else:
            unknown.append(name)
    tail = [f"{name} sent no rate-limit headers" for name in unknown]
    if spent:
        return Probed(True, "rate limit: " + "; ".join(spent + left + tail))
    if unknown:
        return Probed(None, "rate limit: " + "; ".join(left + tail))
    return Probed(False, "rate limit: " + "; ".join(left))


# playbook 03 config-mismatch Q1: "Was a deploy or hot-fix performed in the last 2 hours?"
DEPLOY_WINDOW_S = 2 * 3600.0


def recent_deploy(st: Status) -> Probed | None:
    """config-mismatch Q1: the changes the supervisor observed (``status.deploys``, see
    ``supervisor.ops.deploys``): a new live model_hash, the deployed git ref moving to a new
    commit, a live config file written. YES when one is within the window; NO only when
    the supervisor has watched the whole window and saw none; else the operator's."""
    d = st.get("deploys")
    if not d:
        return None
    now, window = d.get("as_of"), float(d.get("window_s") or DEPLOY_WINDOW_S)
    if not isinstance(now, int | float):
        return None
    hours = f"{window / 3600:g} h"
    recent = [c for c in d.get("changes") or [] if c.get("ts", 0) >= now - window]
    releases = [c for c in recent if c.get("kind") != "config-file"]
    if releases:
        return Probed(True, f"observed in the last {hours}: " + "; ".join(
            f"{_when(c['ts'])} {c['what']}" for c in releases[-5:]))
    if recent:
        # A live file written, with no release behind it: a hot-fix someone on the desk
        # made (YES), or the unexpected prod write of the "unexplained drift" leaf (NO).
        # The write may be the drift itself: only a person can say which.
        return Probed(None, "no release (model_hash, deployed ref) in the last "
                            f"{hours}, but live config written: " + "; ".join(
                                f"{_when(c['ts'])} {c['what']}" for c in recent[-5:])
                      + ": a hot-fix by the desk, or an unexpected write?")
    since = d.get("watching_since")
    what = ("no new model_hash, no move of the deployed config ref, no live config file "
            f"written in the last {hours}")
    if isinstance(since, int | float) and since <= now - window:
        return Probed(False, f"{what} (watched since {_when(since)}); a change made "
                             "outside these is not seen")
    return Probed(None, f"{what}, but the supervisor has watched only since "
                        f"{_when(since)}")


PROBES: dict[str, Callable[[Status], Probed | None]] = {
    f.__name__: f for f in (broker_up, pnl_band_3_days, single_symbol_stale, symbol_halted,
                            backup_vendor_healthy, alerts_single_root_cause,
                            root_cause_documented, positions_reconciled, limits_unrelaxed,
                            rate_limit_exhausted, recent_deploy)
}
