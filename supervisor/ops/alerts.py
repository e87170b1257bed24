"""Alerts on the playbook's two channels (playbook 04; principle 05: "Pageable alerts wake
people; Slack alerts queue"), routed to the log (always) and the configured sinks
(``supervisor.ops.alert_sinks``: JSON webhook, Slack, PagerDuty).

``alert`` never blocks and never raises, so it can sit on any path, the kill path
included: it logs, deduplicates, groups, counts towards the alerts-spam tree and hands the
alert to each sink's bounded queue with ``send_nowait``. ``run`` owns the sinks' delivery
tasks, their one HTTP client, and the task that calls ``on_spam``. See docs/alerts.md.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import httpx
import msgspec
import trio

from supervisor.ops.alert_sinks import AlertsConfig, Channel, Delivery, Sink, dedup_key, open_sinks

__all__ = ["Alert", "AlertLog", "Channel", "SpamRoot", "summary_key"]

log = logging.getLogger("desk.alerts")

WEEK_S = 7 * 86400.0  # playbook 05 W2 is a weekly audit
_HISTORY_MAX = 50_000  # a week at one alert every 12 s; older entries fall off first
_KEYS_MAX = 10_000  # dedup keys, incidents and actions remembered
# Spam decisions come at most once per window; a few buffered cover a slow callback.
_SPAM_QUEUE = 4
_HTTP_LIMITS = httpx.Limits(max_connections=16, max_keepalive_connections=8,
                            keepalive_expiry=30.0)


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    ts: float
    channel: Channel
    summary: str
    source: str
    incident_id: str | None = None
    scope: str = ""
    severity: str | None = None  # the incident's P0/P1/P2, when the alert is about one


class SpamRoot(msgspec.Struct, frozen=True, kw_only=True):
    """The root cause the alerts-spam tree found: an incident, a scope or a source."""

    key: str  # "incident:ID", "scope:SCOPE" or "source:SOURCE"
    incident_id: str | None
    scope: str
    source: str
    example: str  # the summary of its latest alert


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def summary_key(summary: str) -> str:
    """The summary with its numbers masked: "p95 600 ms" and "p95 700 ms" are one alert."""
    return _NUMBER.sub("#", summary)


class _Record:
    """One alert as ``status`` shows it, with its delivery state per sink."""

    __slots__ = ("alert", "count", "delivery", "key")

    def __init__(self, alert: Alert, key: str, count: int) -> None:
        self.alert, self.key, self.count = alert, key, count
        self.delivery: dict[str, str] = {}


class _Group:
    """The alerts of one incident."""

    __slots__ = ("channels", "count", "first_ts", "last_ts", "scope", "state")

    def __init__(self, ts: float, scope: str) -> None:
        self.count, self.first_ts, self.last_ts, self.scope = 0, ts, ts, scope
        self.channels: set[str] = set()
        self.state = "open"


class _Fired(msgspec.Struct, frozen=True):
    """One firing, kept a week for the W2 noise report."""

    ts: float
    noise_key: tuple[str, str, str]  # (channel, scope, summary key)
    source: str
    summary: str
    incident_id: str | None
    sent: bool


class AlertLog:
    """Routes alerts to the log and the sinks; keeps the most recent for ``status``.

    Args:
        wall_clock: epoch seconds, for the alerts' stamps and the W2 week.
        keep: how many recent alerts ``recent`` and ``status`` keep.
        config: the ``[alerts]`` section; the default has no sink but the log.
        on_spam: awaited from ``run``'s task (never from ``alert``) when the alerts-spam
            tree decides: ``on_spam(kind="parent"|"throttle", root=SpamRoot, share=float,
            count=int)``. Its errors are logged, not raised.
        environ: where ``$CREDENTIALS_DIRECTORY`` is looked up (tests).
        transport: an httpx transport for the sinks' client (tests).

    Raises:
        ConfigError: a sink's credential is missing or unreadable.
    """

    def __init__(
        self,
        wall_clock: Callable[[], float],
        *,
        keep: int = 50,
        config: AlertsConfig | None = None,
        on_spam: Callable[..., Awaitable[None]] | None = None,
        environ: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._wall = wall_clock
        self.config = config = config or AlertsConfig()
        self.recent: deque[Alert] = deque(maxlen=keep)
        self.counts: dict[Channel, int] = {"PAGE": 0, "QUEUE": 0}
        self.sinks: list[Sink] = open_sinks(config, environ=environ)
        self._transport = transport
        self._on_spam = on_spam
        self._always = frozenset(config.always_send_sources)
        self._records: deque[_Record] = deque(maxlen=keep)
        self._history: deque[_Fired] = deque(maxlen=_HISTORY_MAX)
        self._last_sent: dict[str, float] = {}  # dedup key -> trio time it was last sent
        self._fired_since_sent: dict[str, int] = {}
        self.suppressed = {"deduplicated": 0, "snoozed": 0}
        self.incidents: dict[str, _Group] = {}
        self._scope_incident: dict[str, str] = {}  # scope -> its open incident
        self._actioned: dict[str, str] = {}  # incident -> "acknowledged" | "resolved"
        # The alerts-spam tree (playbook 03): the window's roots, the snoozed roots.
        self._window: deque[tuple[float, str]] = deque(maxlen=_HISTORY_MAX)
        self._roots: dict[str, SpamRoot] = {}
        self._snoozed: dict[str, tuple[float, SpamRoot]] = {}
        self._spam_quiet_until = float("-inf")
        self.last_spam: dict[str, Any] | None = None
        self._spam_send, self._spam_receive = trio.open_memory_channel[dict[str, Any]](
            _SPAM_QUEUE)

    # --- raising alerts (sync, never blocks, never raises) --------------------------

    def alert(
        self, channel: Channel, summary: str, *, source: str, incident_id: str | None = None,
        scope: str = "", severity: str | None = None,
    ) -> Alert:
        a = Alert(ts=self._wall(), channel=channel, summary=summary, source=source,
                  incident_id=incident_id, scope=scope, severity=severity)
        self.recent.append(a)
        self.counts[channel] = self.counts.get(channel, 0) + 1
        level = logging.ERROR if channel == "PAGE" else logging.WARNING
        log.log(level, "ALERT %s [%s] %s", channel, source, summary,
                extra={"incident": incident_id, "actor": source})
        try:
            self._route(a)
        except Exception:  # the log has it; routing must never break the caller
            log.exception("alert routing failed: %s", summary)
        return a

    def _now(self) -> float:
        try:
            return trio.current_time()
        except RuntimeError:  # outside trio (a sync caller): the wall clock is all we have
            return self._wall()

    def _route(self, a: Alert) -> None:
        now = self._now()
        skey = summary_key(a.summary)
        key = "\x1f".join((a.channel, a.scope, skey, a.incident_id or ""))
        new_incident = bool(a.incident_id) and a.incident_id not in self.incidents
        self._group(a)
        root = self._root(a)
        self._count_for_spam(now, root)
        reason = None
        if a.source not in self._always:
            # The first alert of an incident is the parent: it always goes (playbook 03
            # alerts-spam "Keep the parent alert live").
            if not new_incident and self._is_snoozed(a, now):
                reason = "snoozed"
            elif now - self._last_sent.get(key, float("-inf")) < self.config.repeat_interval_s:
                reason = "deduplicated"
        fired = self._fired_since_sent.get(key, 0) + 1
        record = _Record(a, key, fired)
        self._records.append(record)
        self._history.append(_Fired(a.ts, (a.channel, a.scope, skey), a.source, a.summary,
                                    a.incident_id, reason is None))
        targets = [s for s in self.sinks if a.channel in s.channels]
        if reason is not None:
            self._fired_since_sent[key] = fired
            if len(self._fired_since_sent) > _KEYS_MAX:
                del self._fired_since_sent[next(iter(self._fired_since_sent))]
            self.suppressed[reason] += 1
            for sink in targets:
                record.delivery[sink.name] = reason
            return
        self._last_sent[key] = now
        self._fired_since_sent.pop(key, None)
        self._trim_keys(now)
        item = Delivery(action="trigger", channel=a.channel, alert=a, count=fired,
                        dedup_key=dedup_key(a.channel, a.scope, skey, a.incident_id),
                        states=record.delivery)
        for sink in targets:
            sink.offer(item)

    def _group(self, a: Alert) -> None:
        """Alerts naming an incident are grouped under it (one count per incident)."""
        if not a.incident_id:
            return
        group = self.incidents.get(a.incident_id)
        if group is None:
            group = self.incidents[a.incident_id] = _Group(a.ts, a.scope)
            if len(self.incidents) > _KEYS_MAX:
                del self.incidents[next(iter(self.incidents))]
        group.count += 1
        group.last_ts = a.ts
        group.channels.add(a.channel)
        if a.scope and group.state != "resolved":
            self._scope_incident[a.scope] = a.incident_id

    def _root(self, a: Alert) -> SpamRoot:
        incident = a.incident_id or (self._scope_incident.get(a.scope) if a.scope else None)
        if incident:
            group = self.incidents.get(incident)
            root = SpamRoot(key=f"incident:{incident}", incident_id=incident,
                            scope=group.scope if group else a.scope, source=a.source,
                            example=a.summary)
        elif a.scope:
            root = SpamRoot(key=f"scope:{a.scope}", incident_id=None, scope=a.scope,
                            source=a.source, example=a.summary)
        else:
            root = SpamRoot(key=f"source:{a.source}", incident_id=None, scope="",
                            source=a.source, example=a.summary)
        self._roots[root.key] = root
        if len(self._roots) > _KEYS_MAX:  # keep only the roots still in the window
            live = {k for _, k in self._window} | {root.key}
            self._roots = {k: r for k, r in self._roots.items() if k in live}
        return root

    def _is_snoozed(self, a: Alert, now: float) -> bool:
        for key, (until, root) in list(self._snoozed.items()):
            if now >= until:
                del self._snoozed[key]
            elif ((root.incident_id and a.incident_id == root.incident_id)
                  or (root.scope and a.scope == root.scope)
                  or (key.startswith("source:") and not a.scope and not a.incident_id
                      and a.source == root.source)):
                return True
        return False

    def _trim_keys(self, now: float) -> None:
        if len(self._last_sent) <= _KEYS_MAX:
            return
        horizon = now - self.config.repeat_interval_s
        for k in [k for k, t in self._last_sent.items() if t <= horizon]:
            del self._last_sent[k]
            self._fired_since_sent.pop(k, None)
        while len(self._last_sent) > _KEYS_MAX:
            k = next(iter(self._last_sent))
            del self._last_sent[k]
            self._fired_since_sent.pop(k, None)

    # --- the alerts-spam tree (playbook 03) ----------------------------------------------

    def _count_for_spam(self, now: float, root: SpamRoot) -> None:
        cfg = self.config
        self._window.append((now, root.key))
        while self._window and self._window[0][0] <= now - cfg.spam_window_s:
            self._window.popleft()
        # Q0: "Dozens of alerts in minutes"; one decision per window.
        if len(self._window) <= cfg.spam_threshold or now < self._spam_quiet_until:
            return
        self._spam_quiet_until = now + cfg.spam_window_s
        top, n = Counter(k for _, k in self._window).most_common(1)[0]
        share = n / len(self._window)
        top_root = self._roots[top]
        # Q1: "Is there a single root cause behind > 60% of the alerts?"
        kind = "parent" if share > cfg.spam_root_cause_share else "throttle"
        if kind == "parent":
            # Q2 either way: snooze the children, keep the parent live (the integrator
            # opens a parent incident, or joins the known one).
            self._snoozed[top] = (now + cfg.spam_window_s, top_root)
        decision = {"kind": kind, "root": top_root, "share": share, "count": len(self._window)}
        self.last_spam = {**decision, "root": msgspec.to_builtins(top_root),
                          "at": self._wall(), "until": now + cfg.spam_window_s}
        log.warning("alerts-spam: %d alerts in %g s, top root %s at %.0f%% -> %s",
                    len(self._window), cfg.spam_window_s, top, share * 100,
                    "parent incident, children snoozed" if kind == "parent"
                    else "throttle (halve size)")
        try:
            self._spam_send.send_nowait(decision)
        except trio.WouldBlock:
            log.error("alerts-spam: decision %s dropped, the spam callback is behind", kind)

    async def _serve_spam(self) -> None:
        async for decision in self._spam_receive:
            if self._on_spam is None:
                continue
            try:
                await self._on_spam(**decision)
            except Exception:  # the decision is logged and shown; the desk goes on
                log.exception("alerts-spam: on_spam(%s) failed", decision["kind"])

    # --- incidents acknowledged and resolved (PagerDuty acknowledge / resolve) --------

    def incident_acknowledged(self, incident_id: str, commander: str) -> None:
        """The incident has a commander: acknowledge its page (same dedup_key)."""
        if self._actioned.get(incident_id) != "resolved":
            self._action(incident_id, "acknowledged")
        log.info("incident %s acknowledged by %s: acknowledging its page", incident_id,
                 commander, extra={"incident": incident_id})
        self._lifecycle("acknowledge", incident_id)

    def incident_resolved(self, incident_id: str, root_cause: str) -> None:
        """The incident is closed: resolve its page; its scope is no longer grouped."""
        self._action(incident_id, "resolved")
        group = self.incidents.get(incident_id)
        if group is not None and self._scope_incident.get(group.scope) == incident_id:
            del self._scope_incident[group.scope]
        self._snoozed.pop(f"incident:{incident_id}", None)
        log.info("incident %s resolved (%s): resolving its page", incident_id, root_cause,
                 extra={"incident": incident_id})
        self._lifecycle("resolve", incident_id)

    def _action(self, incident_id: str, state: str) -> None:
        self._actioned[incident_id] = state
        if len(self._actioned) > _KEYS_MAX:
            del self._actioned[next(iter(self._actioned))]
        if incident_id in self.incidents:
            self.incidents[incident_id].state = state

    def _lifecycle(self, action: Literal["acknowledge", "resolve"], incident_id: str) -> None:
        group = self.incidents.get(incident_id)
        channel: Channel = "QUEUE" if group and group.channels == {"QUEUE"} else "PAGE"
        item = Delivery(action=action, dedup_key=incident_id, channel=channel)
        for sink in self.sinks:
            # An incident this process saw only on channels the sink does not take was
            # never paged there; one it never saw may have been (before a restart).
            if group is not None and not (group.channels & sink.channels):
                continue
            if sink.wants(item):
                sink.offer(item)

    # --- the long-lived part -----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver to the sinks and call ``on_spam`` until cancelled; started when the
        HTTP client is open and every sink's task runs. Alerts raised before are queued
        and go out now. On cancel the client is closed (bounded, shielded)."""
        redact = _Redact(self.sinks)
        httpx_log = logging.getLogger("httpx")
        httpx_log.addFilter(redact)  # httpx logs request URLs at INFO: webhook paths
        client = httpx.AsyncClient(timeout=None, limits=_HTTP_LIMITS,
                                   transport=self._transport, follow_redirects=False)
        try:
            async with trio.open_nursery() as nursery:
                for sink in self.sinks:
                    nursery.start_soon(sink.serve, client, self._wall)
                nursery.start_soon(self._serve_spam)
                task_status.started()
        finally:
            with trio.move_on_after(1.0, shield=True):
                await client.aclose()
            httpx_log.removeFilter(redact)

    # --- what status, metrics and the W2 report read -----------------------------------

    def status(self) -> dict[str, Any]:
        """Per-sink counters, queue depth and last error; recent alerts with their
        delivery state per sink; incident groups; the spam tree's state. No secrets."""
        now = self._now()
        return {
            "counts": dict(self.counts),
            "sinks": {s.name: s.status() for s in self.sinks},
            "suppressed": dict(self.suppressed),
            "recent": [{**msgspec.to_builtins(r.alert), "count": r.count,
                        "delivery": dict(r.delivery)} for r in self._records],
            "incidents": {i: {"count": g.count, "first_ts": g.first_ts, "last_ts": g.last_ts,
                              "scope": g.scope, "state": g.state}
                          for i, g in self.incidents.items()},
            "spam": {
                "window_s": self.config.spam_window_s,
                "threshold": self.config.spam_threshold,
                "in_window": sum(1 for t, _ in self._window
                                 if t > now - self.config.spam_window_s),
                "snoozed": [{"root": k, "remaining_s": until - now}
                            for k, (until, _) in self._snoozed.items() if until > now],
                "last": self.last_spam,
            },
        }

    def delivery_counts(self) -> list[tuple[str, str, str, int]]:
        """(channel, sink, outcome, count) rows for metrics, the log sink included."""
        rows: list[tuple[str, str, str, int]] = [
            (c, "log", "delivered", n) for c, n in sorted(self.counts.items())]
        for sink in self.sinks:
            rows += [(c, sink.name, o, n) for (c, o), n in sorted(sink.counts.items())]
        return rows

    def noise_report(self, now: float) -> list[dict[str, Any]]:
        """Gate W2: alerts that fired more than ``w2_noise_threshold`` times in the week
        up to ``now`` (epoch seconds) without an action.

        An alert is its (channel, scope, summary with numbers masked). A firing had an
        action when the incident it named was acknowledged or resolved; a firing that
        named no incident never had one. Covers what this process saw (docs/alerts.md).
        """
        since = now - WEEK_S
        rows: dict[tuple[str, str, str], dict[str, Any]] = {}
        for f in self._history:
            if not since < f.ts <= now:
                continue
            row = rows.setdefault(f.noise_key, {
                "channel": f.noise_key[0], "scope": f.noise_key[1], "fired": 0, "sent": 0,
                "unactioned": 0, "first_ts": f.ts, "incidents": set()})
            row.update(summary=f.summary, source=f.source, last_ts=f.ts)
            row["fired"] += 1
            row["sent"] += f.sent
            if f.incident_id:
                row["incidents"].add(f.incident_id)
            if f.incident_id is None or f.incident_id not in self._actioned:
                row["unactioned"] += 1
        noisy = [{**row, "incidents": sorted(row["incidents"])} for row in rows.values()
                 if row["unactioned"] > self.config.w2_noise_threshold]
        noisy.sort(key=lambda r: (-r["unactioned"], r["channel"], r["scope"], r["summary"]))
        return noisy


class _Redact(logging.Filter):
    """Scrubs the sinks' secrets from records of the logger it is attached to."""

    def __init__(self, sinks: list[Sink]) -> None:
        super().__init__()
        self._sinks = sinks

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = message
        for sink in self._sinks:
            scrubbed = sink.scrub(scrubbed)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True
