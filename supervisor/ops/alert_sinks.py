"""Where alerts go beyond the log: a JSON webhook, Slack, PagerDuty (docs/alerts.md,
"Alert routing").

The ``[alerts]`` config section, and one ``Sink`` per configured sink. Every sink owns a
bounded trio memory channel and one delivery task: ``offer`` is ``send_nowait`` (a full
queue drops the item and counts it), so a dead or slow sink never blocks the caller, the
kill path or the other sinks (STYLE rule 4). Each request is bounded by ``timeout_s``;
429, 5xx, timeouts and connection errors are retried with exponential backoff (honouring
``Retry-After``), any other answer is final.

Secrets (routing keys, webhook URLs, whose path is the credential) appear in no log line,
error or status: a sink shows only ``scheme://host[:port]``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
import msgspec
import trio

from supervisor.core.errors import ConfigError
from supervisor.core.tomlconf import check_unique

__all__ = [
    "AlertsConfig",
    "Channel",
    "Delivery",
    "PagerDutySink",
    "PagerDutySinkConfig",
    "Sink",
    "SinkConfig",
    "SlackSink",
    "SlackSinkConfig",
    "WebhookSink",
    "WebhookSinkConfig",
    "open_sinks",
]

log = logging.getLogger("desk.alerts")

Channel = Literal["PAGE", "QUEUE"]
Outcome = Literal["delivered", "failed", "dropped", "retried"]
OUTCOMES: tuple[Outcome, ...] = ("delivered", "failed", "dropped", "retried")

PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
PAGERDUTY_SUMMARY_MAX = 1024  # PagerDuty Events API v2: payload.summary <= 1024 chars


# --- configuration -------------------------------------------------------------------


class _SinkConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
                  tag_field="type"):
    """Fields every sink has; ``type`` selects the sink."""

    name: str
    channels: list[Channel] = msgspec.field(default_factory=lambda: ["PAGE", "QUEUE"])
    timeout_s: float = 5.0
    max_retries: int = 5
    # Bounded: a sink this far behind drops new alerts (counted) rather than hold memory
    # or anyone's time (STYLE rule 4). 100 is hours of a healthy desk's alerts.
    queue: int = 100
    backoff_s: float = 1.0  # first retry delay; doubles per attempt
    backoff_max_s: float = 60.0  # also caps a Retry-After

    def __repr__(self) -> str:
        # Never the URL or the key: configs end up in tracebacks and debug logs.
        return f"{type(self).__name__}(name={self.name!r})"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must not be empty")
        if not self.channels:
            raise ValueError("channels must name PAGE, QUEUE or both")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError(f"channels must not repeat, got {self.channels}")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if not 0 <= self.max_retries <= 20:
            raise ValueError("max_retries must be in 0..20")
        if self.queue < 1:
            raise ValueError("queue must be >= 1")
        if self.backoff_s <= 0:
            raise ValueError("backoff_s must be > 0")
        if self.backoff_max_s < self.backoff_s:
            raise ValueError("backoff_max_s must be >= backoff_s")


def _check_url(url: str, key: str) -> None:
    if not url.startswith(("http://", "https://")):
        # The value itself is not echoed: it may be a credential.
        raise ValueError(f"{key} must be an http:// or https:// URL")


class _UrlSinkConfig(_SinkConfig, frozen=True, kw_only=True):
    """A sink POSTing to a URL given inline or as a credential (webhook, Slack)."""

    url: str | None = None
    # Name of a file in $CREDENTIALS_DIRECTORY holding the URL (its path is a secret).
    url_credential: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.url is None) == (self.url_credential is None):
            raise ValueError("exactly one of url or url_credential is required")
        if self.url is not None:
            _check_url(self.url, "url")


class WebhookSinkConfig(_UrlSinkConfig, frozen=True, kw_only=True, tag="webhook"):
    """A generic JSON webhook: each alert is POSTed as a JSON object."""


class SlackSinkConfig(_UrlSinkConfig, frozen=True, kw_only=True, tag="slack"):
    """A Slack incoming webhook (``{"text": ...}``)."""


class PagerDutySinkConfig(_SinkConfig, frozen=True, kw_only=True, tag="pagerduty"):
    """PagerDuty Events API v2: trigger, acknowledge, resolve."""

    # Principle 05: "Pageable alerts wake people; Slack alerts queue."
    channels: list[Channel] = msgspec.field(default_factory=lambda: ["PAGE"])
    url: str = PAGERDUTY_URL
    routing_key: str | None = None
    # Name of a file in $CREDENTIALS_DIRECTORY holding the routing (integration) key.
    routing_key_credential: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.routing_key is None) == (self.routing_key_credential is None):
            raise ValueError("exactly one of routing_key or routing_key_credential is required")
        if self.routing_key is not None and not self.routing_key:
            raise ValueError("routing_key must not be empty")
        _check_url(self.url, "url")


SinkConfig = WebhookSinkConfig | SlackSinkConfig | PagerDutySinkConfig


class AlertsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[alerts]`` section: sinks, deduplication, the alerts-spam tree, gate W2."""

    sinks: list[SinkConfig] = []
    # Alertmanager's repeat_interval 4 h. The same alert (channel, scope,
    # summary, incident) is not re-sent to sinks within it; 0 re-sends every time.
    repeat_interval_s: float = 4 * 3600.0
    # playbook 03 alerts-spam: "Dozens of alerts in minutes". The window is Alertmanager's
    # group_interval (5 m); more than 20 alerts in it acts just before the
    # smallest "dozens" (24), yet is far above one real incident's fan-out (a page at
    # opening, a few QUEUE alerts from its actors, each deduplicated per scope).
    spam_window_s: float = 300.0
    spam_threshold: int = 20
    spam_root_cause_share: float = 0.6  # playbook 03 alerts-spam Q1: "> 60% of the alerts"
    w2_noise_threshold: int = 5  # playbook 05 W2: "any alert firing > 5 times without an action"
    # Never deduplicated nor snoozed: the kill path and the journal raise their pages
    # once per episode, and a second episode must wake someone again.
    always_send_sources: list[str] = msgspec.field(
        default_factory=lambda: ["supervisor:kill-switch", "supervisor:journal"])

    def __post_init__(self) -> None:
        check_unique("sink names", [s.name for s in self.sinks])
        if self.repeat_interval_s < 0:
            raise ValueError("repeat_interval_s must be >= 0")
        if self.spam_window_s <= 0:
            raise ValueError("spam_window_s must be > 0")
        if self.spam_threshold < 1:
            raise ValueError("spam_threshold must be >= 1")
        if not 0.5 <= self.spam_root_cause_share < 1:
            raise ValueError("spam_root_cause_share must be in [0.5, 1): a single root cause "
                             "is a majority")
        if self.w2_noise_threshold < 1:
            raise ValueError("w2_noise_threshold must be >= 1")


# --- what travels on a sink's queue ---------------------------------------------------


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One event for a sink: an alert to trigger, or a page to acknowledge or resolve.

    ``states`` is the alert record's per-sink delivery state, updated in place by each
    sink (``status`` shows it); None for acknowledge/resolve.
    """

    action: Literal["trigger", "acknowledge", "resolve"]
    dedup_key: str
    channel: Channel
    alert: Any = None  # supervisor.ops.alerts.Alert for a trigger
    count: int = 1  # times the alert fired since it was last sent
    states: Any = None  # dict[str, str]


def dedup_key(channel: str, scope: str, summary_key: str, incident_id: str | None) -> str:
    """PagerDuty's dedup_key: the incident id, or a stable key for an alert without one."""
    if incident_id:
        return incident_id
    digest = hashlib.sha256(f"{channel}\x1f{scope}\x1f{summary_key}".encode()).hexdigest()
    return f"desk-{digest[:24]}"


# --- sinks ---------------------------------------------------------------------------


def _endpoint(url: str) -> str:
    u = httpx.URL(url)
    return f"{u.scheme}://{u.host}" + (f":{u.port}" if u.port else "")


def _retry_after(value: str | None, wall: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - wall)


class Sink:
    """One configured sink: its queue, delivery task, counters and last error."""

    type: ClassVar[str]
    ok_statuses: ClassVar[frozenset[int]] = frozenset(range(200, 300))

    def __init__(self, config: _SinkConfig, url: str, secrets: tuple[str, ...]) -> None:
        self.config = config
        self.name = config.name
        self.channels: frozenset[str] = frozenset(config.channels)
        self._url = url
        self.endpoint = _endpoint(url)
        path = httpx.URL(url).raw_path.decode("ascii", "replace")
        # Longest first, so a URL is scrubbed whole before its path is.
        self.secrets = tuple(sorted({s for s in (url, *secrets, path if len(path) > 1 else "")
                                     if len(s) >= 4}, key=len, reverse=True))
        # Buffered (config.queue): the caller never waits; a full queue drops and counts.
        self._send, self._receive = trio.open_memory_channel[Delivery](config.queue)
        self.counts: dict[tuple[str, Outcome], int] = {}
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_delivered_at: float | None = None
        self.in_flight = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, endpoint={self.endpoint!r})"

    # -- what subclasses say ---------------------------------------------------------

    def wants(self, item: Delivery) -> bool:
        """Whether this sink takes the item (alerts of its channels by default)."""
        return item.action == "trigger" and item.channel in self.channels

    def body(self, item: Delivery) -> dict[str, Any]:
        raise NotImplementedError

    # -- the caller's side: never blocks, never raises -------------------------------

    def offer(self, item: Delivery) -> bool:
        """Queue ``item`` without waiting; False (and counted as dropped) if full."""
        try:
            self._send.send_nowait(item)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self._count(item.channel, "dropped")
            if item.states is not None:
                item.states[self.name] = "dropped"
            log.warning("alert sink %s: queue full (%d), %s dropped", self.name,
                        self.config.queue, item.action)
            return False
        if item.states is not None:
            item.states[self.name] = "queued"
        return True

    def _count(self, channel: str, outcome: Outcome) -> None:
        key = (channel, outcome)
        self.counts[key] = self.counts.get(key, 0) + 1

    def total(self, outcome: Outcome) -> int:
        return sum(n for (_, o), n in self.counts.items() if o == outcome)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def status(self) -> dict[str, Any]:
        return {
            "type": self.type, "endpoint": self.endpoint, "channels": sorted(self.channels),
            "queue_depth": self._send.statistics().current_buffer_used,
            "queue_size": self.config.queue, "in_flight": self.in_flight,
            **{o: self.total(o) for o in OUTCOMES},
            "last_error": self.last_error, "last_error_at": self.last_error_at,
            "last_delivered_at": self.last_delivered_at,
        }

    # -- the delivery task -----------------------------------------------------------

    async def serve(self, client: httpx.AsyncClient, wall: Callable[[], float]) -> None:
        """Deliver queued items one at a time, in order, until cancelled.

        A failing item is retried then counted failed; nothing here raises out, so one
        sink's bug or outage never ends the others (``Cancelled`` still propagates).
        """
        async for item in self._receive:
            self.in_flight = True
            if item.states is not None:
                item.states[self.name] = "sending"
            try:
                await self._deliver(client, item, wall)
            except Exception as exc:  # a bug in one sink must not stop alerting
                self._fail(item, f"internal error {type(exc).__name__}: {exc}", wall)
                log.exception("alert sink %s: delivery crashed", self.name)
            finally:
                self.in_flight = False

    async def _deliver(self, client: httpx.AsyncClient, item: Delivery,
                       wall: Callable[[], float]) -> None:
        content = msgspec.json.encode(self.body(item))
        cfg = self.config
        for attempt in range(cfg.max_retries + 1):
            if attempt:
                self._count(item.channel, "retried")
                if item.states is not None:
                    item.states[self.name] = "retrying"
            delay = min(cfg.backoff_s * 2 ** attempt, cfg.backoff_max_s)
            try:
                with trio.fail_after(cfg.timeout_s):
                    response = await client.post(
                        self._url, content=content,
                        headers={"content-type": "application/json"})
            except trio.TooSlowError:
                error = f"no answer within {cfg.timeout_s:g} s"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.status_code in self.ok_statuses:
                    self._count(item.channel, "delivered")
                    self.last_delivered_at = wall()
                    if item.states is not None:
                        item.states[self.name] = "delivered"
                    return
                error = f"HTTP {response.status_code}"
                detail = response.text.strip()[:200]
                if response.status_code != 429 and response.status_code < 500:
                    # 400 and the like: the same request will never succeed.
                    self._fail(item, f"{error} {detail}".strip() + " (not retried)", wall)
                    return
                asked = _retry_after(response.headers.get("retry-after"), wall())
                if asked is not None:
                    delay = min(asked, cfg.backoff_max_s)
            if attempt == cfg.max_retries:
                self._fail(item, f"{error} after {attempt + 1} attempt(s)", wall)
                return
            log.warning("alert sink %s (%s): %s, retry %d/%d in %.3g s", self.name,
                        self.endpoint, self.scrub(error), attempt + 1, cfg.max_retries, delay)
            await trio.sleep(delay)

    def _fail(self, item: Delivery, error: str, wall: Callable[[], float]) -> None:
        error = self.scrub(error)
        self._count(item.channel, "failed")
        self.last_error, self.last_error_at = error, wall()
        if item.states is not None:
            item.states[self.name] = "failed"
        log.error("alert sink %s (%s): %s %s failed: %s", self.name, self.endpoint,
                  item.action, item.dedup_key, error)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


class WebhookSink(Sink):
    """POSTs each alert as JSON: the alert's fields plus its key and repeat count."""

    type = "webhook"

    def body(self, item: Delivery) -> dict[str, Any]:
        return {**msgspec.to_builtins(item.alert), "dedup_key": item.dedup_key,
                "count": item.count}


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn control characters (its "Formatting text" guide).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackSink(Sink):
    """A Slack incoming webhook: ``{"text": ...}``; 429 comes with Retry-After."""

    type = "slack"

    def body(self, item: Delivery) -> dict[str, Any]:
        a = item.alert
        details = [f"incident {a.incident_id}"] if a.incident_id else []
        if a.scope:
            details.append(f"scope {a.scope}")
        details.append(f"source {a.source}")
        if item.count > 1:
            details.append(f"fired {item.count}x")
        return {"text": _slack_escape(f"[{a.channel}] {a.summary} ({'; '.join(details)})")}


# playbook 02 severities -> PagerDuty's; without one, the channel decides.
_PD_SEVERITY = {"P0": "critical", "P1": "error", "P2": "warning"}
_PD_CHANNEL_SEVERITY = {"PAGE": "critical", "QUEUE": "warning"}


class PagerDutySink(Sink):
    """PagerDuty Events API v2: POST /v2/enqueue, 202 delivered, 400 permanent."""

    type = "pagerduty"
    ok_statuses = frozenset({200, 201, 202})

    def __init__(self, config: PagerDutySinkConfig, routing_key: str) -> None:
        super().__init__(config, config.url, (routing_key,))
        self._routing_key = routing_key

    def wants(self, item: Delivery) -> bool:
        # Acknowledge and resolve go to every PagerDuty sink: the page may have been
        # triggered before a restart.
        return item.action != "trigger" or item.channel in self.channels

    def body(self, item: Delivery) -> dict[str, Any]:
        event: dict[str, Any] = {"routing_key": self._routing_key,
                                 "event_action": item.action, "dedup_key": item.dedup_key}
        if item.action != "trigger":
            return event
        a = item.alert
        summary = a.summary
        if len(summary) > PAGERDUTY_SUMMARY_MAX:
            summary = summary[: PAGERDUTY_SUMMARY_MAX - 3] + "..."
        details: dict[str, Any] = {"channel": a.channel, "count": item.count}
        if a.scope:
            details["scope"] = a.scope
        if a.incident_id:
            details["incident_id"] = a.incident_id
        if a.severity:
            details["severity"] = a.severity
        event["payload"] = {
            "summary": summary, "source": a.source,
            "severity": _PD_SEVERITY.get(a.severity or "", _PD_CHANNEL_SEVERITY[a.channel]),
            "timestamp": _iso(a.ts), "custom_details": details,
        }
        event["client"] = "desk-supervisor"
        return event


# --- building sinks from the config ----------------------------------------------------

_CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9_.@-]+$")


def _credential(sink: str, key: str, name: str, env: Mapping[str, str]) -> str:
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise ConfigError(f"alert sink {sink}: {key} names credential {name!r} but "
                          "$CREDENTIALS_DIRECTORY is not set (use LoadCredential= in the unit)")
    if not _CREDENTIAL_NAME.match(name) or name in (".", ".."):
        raise ConfigError(f"alert sink {sink}: {key} must be a file name in "
                          f"$CREDENTIALS_DIRECTORY, got {name!r}")
    try:
        value = (Path(directory) / name).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"alert sink {sink}: cannot read credential {name!r}: "
                          f"{exc.strerror}") from exc
    if not value:
        raise ConfigError(f"alert sink {sink}: credential {name!r} is empty")
    return value


def open_sinks(config: AlertsConfig, *, environ: Mapping[str, str] | None = None) -> list[Sink]:
    """One Sink per configured sink, credentials read from ``$CREDENTIALS_DIRECTORY``.

    Raises:
        ConfigError: a named credential is missing, unreadable, empty or not a URL.
    """
    env = os.environ if environ is None else environ
    sinks: list[Sink] = []
    for sc in config.sinks:
        match sc:
            case PagerDutySinkConfig():
                key = sc.routing_key
                if key is None:
                    assert sc.routing_key_credential is not None
                    key = _credential(sc.name, "routing_key_credential",
                                      sc.routing_key_credential, env)
                sinks.append(PagerDutySink(sc, key))
            case _UrlSinkConfig():
                url = sc.url
                if url is None:
                    assert sc.url_credential is not None
                    url = _credential(sc.name, "url_credential", sc.url_credential, env)
                    try:
                        _check_url(url, f"credential {sc.url_credential!r}")
                    except ValueError as exc:
                        raise ConfigError(f"alert sink {sc.name}: {exc}") from None
                cls = WebhookSink if isinstance(sc, WebhookSinkConfig) else SlackSink
                sinks.append(cls(sc, url, ()))
    return sinks
