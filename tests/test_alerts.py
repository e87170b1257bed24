"""Alert routing (docs/alerts.md): the webhook, Slack and PagerDuty sinks against a real HTTP
server on 127.0.0.1 (exact payloads, retries, a hung sink); deduplication, grouping, the
alerts-spam tree and the W2 noise report on MockClock (httpx.MockTransport where a sink
must answer without a socket)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
import trio.testing

from simulators.http import (
    Receive,
    Request,
    Scope,
    Send,
    receive_request,
    send_json,
    serve_asgi,
)
from supervisor.core.errors import ConfigError
from supervisor.ops.alert_sinks import (
    AlertsConfig,
    PagerDutySinkConfig,
    SlackSinkConfig,
    WebhookSinkConfig,
    dedup_key,
)
from supervisor.ops.alerts import AlertLog, SpamRoot, summary_key

from .deskenv import wait_for

WALL = 1_700_000_000.0  # 2023-11-14T22:13:20Z
ISO = "2023-11-14T22:13:20+00:00"
ROUTING_KEY = "R0UTINGKEYsekrit0123456789abcdef"
SLACK_PATH = "/services/T0DESK/B0DESK/xoxSLACKsekrit42"


class Recorder:
    """An ASGI app that records every request and answers from a per-path script."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.script: dict[str, list[tuple[int, dict[str, str], object]]] = {}
        self.default: dict[str, int] = {"/pd/v2/enqueue": 202}
        self.hang: set[str] = set()
        self.times: list[float] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = await receive_request(scope, receive, send)
        if request is None:  # the lifespan protocol, answered
            return
        self.requests.append(request)
        if request.path in self.hang:
            await trio.sleep_forever()
        queue = self.script.get(request.path)
        status, headers, body = (queue.pop(0) if queue else
                                 (self.default.get(request.path, 200), {}, {"ok": True}))
        await send_json(send, status, body,
                        headers=[(k.encode(), v.encode()) for k, v in headers.items()])

    def bodies(self, path: str) -> list[Any]:
        return [json.loads(r.body) for r in self.requests if r.path == path]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def base(recorder: Recorder, nursery: trio.Nursery) -> str:
    url: str = await nursery.start(serve_asgi, recorder)
    return url


def fast(**kw: Any) -> dict[str, Any]:
    """Retry quickly against the real server."""
    return {"backoff_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 2.0, **kw}


async def started(nursery: trio.Nursery, config: AlertsConfig, **kw: Any) -> AlertLog:
    alerts = AlertLog(lambda: WALL, config=config, **kw)
    await nursery.start(alerts.run)
    return alerts


# --- the sinks' exact payloads --------------------------------------------------------


async def test_webhook_posts_the_alert_as_json_even_if_raised_before_run(
    base: str, recorder: Recorder, nursery: trio.Nursery,
) -> None:
    cfg = AlertsConfig(sinks=[WebhookSinkConfig(name="hook", url=f"{base}/hook")])
    alerts = AlertLog(lambda: WALL, config=cfg)
    alerts.alert("PAGE", "P0 stale-data opened: both vendors stale", source="actor:freshness",
                 incident_id="INC-1", scope="feed", severity="P0")
    await nursery.start(alerts.run)
    await wait_for(lambda: alerts.sinks[0].total("delivered") == 1)
    (request,) = recorder.requests
    assert (request.method, request.path) == ("POST", "/hook")
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {
        "ts": WALL, "channel": "PAGE", "summary": "P0 stale-data opened: both vendors stale",
        "source": "actor:freshness", "incident_id": "INC-1", "scope": "feed",
        "severity": "P0", "dedup_key": "INC-1", "count": 1,
    }
    (recent,) = alerts.status()["recent"]
    assert recent["delivery"] == {"hook": "delivered"} and recent["count"] == 1


async def test_slack_posts_escaped_text_and_only_its_channels(
    base: str, recorder: Recorder, nursery: trio.Nursery,
) -> None:
    cfg = AlertsConfig(sinks=[SlackSinkConfig(name="ops", url=base + SLACK_PATH,
                                              channels=["QUEUE"])])
    alerts = await started(nursery, cfg)
    alerts.alert("QUEUE", "venue alpha: heartbeat p95 600 ms > 500 ms & rising",
                 source="actor:heartbeat", scope="venue:alpha")
    alerts.alert("PAGE", "not for this sink", source="actor:heartbeat")
    await wait_for(lambda: alerts.sinks[0].total("delivered") == 1)
    await trio.testing.wait_all_tasks_blocked()
    assert recorder.bodies(SLACK_PATH) == [{
        "text": "[QUEUE] venue alpha: heartbeat p95 600 ms &gt; 500 ms &amp; rising "
                "(scope venue:alpha; source actor:heartbeat)"}]
    assert [r["delivery"] for r in alerts.status()["recent"]] == [{"ops": "delivered"}, {}]


async def test_pagerduty_trigger_acknowledge_resolve_share_the_incident_dedup_key(
    base: str, recorder: Recorder, nursery: trio.Nursery,
) -> None:
    cfg = AlertsConfig(sinks=[PagerDutySinkConfig(
        name="pd", url=f"{base}/pd/v2/enqueue", routing_key=ROUTING_KEY)])
    alerts = await started(nursery, cfg)
    alerts.alert("PAGE", "P0 risk-breach opened: daily drawdown 2.1% > 2%", source="actor:risk",
                 incident_id="INC-7", scope="limit:daily_drawdown", severity="P0")
    alerts.incident_acknowledged("INC-7", "alice")
    alerts.incident_resolved("INC-7", "limit breached by a gap; flattened")
    await wait_for(lambda: alerts.sinks[0].total("delivered") == 3)
    assert recorder.bodies("/pd/v2/enqueue") == [
        {"routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": "INC-7",
         "payload": {"summary": "P0 risk-breach opened: daily drawdown 2.1% > 2%",
                     "source": "actor:risk", "severity": "critical", "timestamp": ISO,
                     "custom_details": {"channel": "PAGE", "count": 1,
                                        "scope": "limit:daily_drawdown",
                                        "incident_id": "INC-7", "severity": "P0"}},
         "client": "desk-supervisor"},
        {"routing_key": ROUTING_KEY, "event_action": "acknowledge", "dedup_key": "INC-7"},
        {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "INC-7"},
    ]
    assert alerts.status()["incidents"]["INC-7"]["state"] == "resolved"


async def test_an_incident_only_queued_is_not_acknowledged_on_a_paging_sink(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery,
) -> None:
    script = Script()
    cfg = AlertsConfig(sinks=[PagerDutySinkConfig(name="pd", routing_key=ROUTING_KEY)])
    alerts = await started(nursery, cfg, transport=httpx.MockTransport(script))
    alerts.alert("QUEUE", "P2 stale-data opened", source="actor:freshness",
                 incident_id="INC-4", severity="P2")
    alerts.incident_acknowledged("INC-4", "bob")  # never paged here: nothing to send
    alerts.incident_acknowledged("INC-0", "bob")  # paged before a restart, maybe
    await trio.sleep(1)
    assert [body["dedup_key"] for _, body in script.requests] == ["INC-0"]


async def test_pagerduty_maps_severity_truncates_and_keys_alerts_without_incident(
    base: str, recorder: Recorder, nursery: trio.Nursery,
) -> None:
    cfg = AlertsConfig(sinks=[PagerDutySinkConfig(
        name="pd", url=f"{base}/pd/v2/enqueue", routing_key=ROUTING_KEY,
        channels=["PAGE", "QUEUE"])])
    alerts = await started(nursery, cfg)
    long = "job queue depth 1500 > 1000 " + "x" * 2000
    alerts.alert("QUEUE", long, source="monitor:jobs", scope="jobs")
    alerts.alert("PAGE", "P1 pnl-divergence opened", source="actor:pnl", incident_id="INC-2",
                 severity="P1")
    await wait_for(lambda: alerts.sinks[0].total("delivered") == 2)
    queue, page = recorder.bodies("/pd/v2/enqueue")
    key = dedup_key("QUEUE", "jobs", summary_key(long), None)
    assert queue["dedup_key"] == key and key.startswith("desk-") and len(key) == 29
    assert queue["payload"]["summary"] == long[:1021] + "..."
    assert len(queue["payload"]["summary"]) == 1024
    assert queue["payload"]["severity"] == "warning"
    assert (page["dedup_key"], page["payload"]["severity"]) == ("INC-2", "error")
    # Stable: the same alert after a restart (another AlertLog) gets the same key.
    assert dedup_key("QUEUE", "jobs", summary_key(long.replace("1500", "1700")), None) == key


# --- retries --------------------------------------------------------------------------


async def test_503_then_429_with_retry_after_then_success(
    base: str, recorder: Recorder, nursery: trio.Nursery,
) -> None:
    recorder.script[SLACK_PATH] = [(503, {}, {"error": "down"}),
                                   (429, {"Retry-After": "0"}, {"error": "rate_limited"})]
    cfg = AlertsConfig(sinks=[SlackSinkConfig(name="ops", url=base + SLACK_PATH,
                                              **fast(max_retries=3))])
    alerts = await started(nursery, cfg)
    alerts.alert("PAGE", "kill-switch not verified", source="supervisor:kill-switch")
    await wait_for(lambda: alerts.sinks[0].total("delivered") == 1)
    bodies = recorder.bodies(SLACK_PATH)
    assert len(bodies) == 3 and bodies[0] == bodies[1] == bodies[2]
    st = alerts.status()["sinks"]["ops"]
    assert (st["delivered"], st["retried"], st["failed"], st["dropped"]) == (1, 2, 0, 0)
    assert alerts.status()["recent"][0]["delivery"] == {"ops": "delivered"}


async def test_400_is_permanent_and_not_retried(
    base: str, recorder: Recorder, nursery: trio.Nursery,
) -> None:
    recorder.script["/pd/v2/enqueue"] = [(400, {}, {"status": "invalid event"})]
    cfg = AlertsConfig(sinks=[PagerDutySinkConfig(
        name="pd", url=f"{base}/pd/v2/enqueue", routing_key=ROUTING_KEY, **fast())])
    alerts = await started(nursery, cfg)
    alerts.alert("PAGE", "journal failing", source="supervisor:journal")
    await wait_for(lambda: alerts.sinks[0].total("failed") == 1)
    await trio.sleep(0.1)  # a retry would come within backoff_max_s
    assert len(recorder.requests) == 1
    st = alerts.status()["sinks"]["pd"]
    assert (st["delivered"], st["retried"], st["failed"]) == (0, 0, 1)
    assert st["last_error"] == 'HTTP 400 {"status":"invalid event"} (not retried)'
    assert st["last_error_at"] == WALL


class Script:
    """A MockTransport handler answering from a list, stamping each request's trio time."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[float, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((trio.current_time(), json.loads(request.content)))
        return self.answers.pop(0) if self.answers else httpx.Response(202)


async def test_backoff_doubles_and_retry_after_is_honoured_exactly(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery,
) -> None:
    script = Script(httpx.Response(503), httpx.Response(502),
                    httpx.Response(429, headers={"Retry-After": "7"}))
    cfg = AlertsConfig(sinks=[PagerDutySinkConfig(name="pd", routing_key=ROUTING_KEY)])
    alerts = await started(nursery, cfg, transport=httpx.MockTransport(script))
    alerts.alert("PAGE", "x", source="s", incident_id="INC-1")
    await trio.sleep(60)
    # backoff_s 1 doubling: 1 s, 2 s; then the 429's Retry-After: 7 s.
    assert [t for t, _ in script.requests] == [0.0, 1.0, 3.0, 10.0]
    st = alerts.status()["sinks"]["pd"]
    assert (st["delivered"], st["retried"], st["failed"]) == (1, 3, 0)


async def test_a_sink_gives_up_after_max_retries(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery,
) -> None:
    script = Script(*[httpx.Response(503)] * 3)
    cfg = AlertsConfig(sinks=[WebhookSinkConfig(name="hook", url="https://hooks.example/x",
                                                max_retries=2)])
    alerts = await started(nursery, cfg, transport=httpx.MockTransport(script))
    alerts.alert("QUEUE", "x", source="s")
    await trio.sleep(60)
    assert len(script.requests) == 3
    st = alerts.status()["sinks"]["hook"]
    assert (st["delivered"], st["retried"], st["failed"]) == (0, 2, 1)
    assert st["last_error"] == "HTTP 503 after 3 attempt(s)"


# --- a dead sink ----------------------------------------------------------------------


async def test_a_hung_sink_delays_neither_the_caller_nor_the_other_sinks(
    base: str, recorder: Recorder, nursery: trio.Nursery,
) -> None:
    recorder.hang.add("/hang")
    cfg = AlertsConfig(sinks=[
        WebhookSinkConfig(name="hung", url=f"{base}/hang", queue=2, timeout_s=30.0),
        WebhookSinkConfig(name="ok", url=f"{base}/ok"),
    ])
    alerts = await started(nursery, cfg)
    await trio.testing.wait_all_tasks_blocked()  # each delivery task waits on its queue
    before = trio.current_time()
    for scope in ("a", "b", "c", "d", "e"):
        alerts.alert("PAGE", "venue down", source="actor:heartbeat", scope=scope)
    assert trio.current_time() - before < 0.05  # alert() is sync: no sink is waited for
    await wait_for(lambda: alerts.sinks[1].total("delivered") == 5, limit=2.0)
    await wait_for(lambda: len(recorder.bodies("/hang")) == 1, limit=2.0)
    st = alerts.status()
    hung = st["sinks"]["hung"]
    # One handed to the waiting delivery task, two in the queue of 2, two dropped.
    assert (hung["dropped"], hung["queue_depth"], hung["in_flight"]) == (2, 2, True)
    assert hung["delivered"] == hung["failed"] == 0
    assert [r["delivery"]["hung"] for r in st["recent"]] == [
        "sending", "queued", "queued", "dropped", "dropped"]
    assert [s for _, s, o, n in alerts.delivery_counts() if o == "dropped"] == ["hung"]


# --- deduplication and grouping (MockClock) ----------------------------------------------


async def test_the_same_alert_is_not_resent_within_the_repeat_interval(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery,
) -> None:
    script = Script()
    cfg = AlertsConfig(sinks=[WebhookSinkConfig(name="hook", url="https://hooks.example/x")])
    alerts = await started(nursery, cfg, transport=httpx.MockTransport(script))
    alerts.alert("QUEUE", "job queue depth 1500 > 1000", source="monitor:jobs", scope="jobs")
    alerts.alert("QUEUE", "job queue depth 1700 > 1000", source="monitor:jobs", scope="jobs")
    alerts.alert("QUEUE", "job queue depth 1700 > 1000", source="monitor:jobs", scope="other")
    alerts.alert("PAGE", "journal failing, state not durable", source="supervisor:journal")
    alerts.alert("PAGE", "journal failing, state not durable", source="supervisor:journal")
    await trio.sleep(1)
    assert [r[1]["scope"] for r in script.requests] == ["jobs", "other", "", ""]
    st = alerts.status()
    assert [r["delivery"]["hook"] for r in st["recent"]] == [
        "delivered", "deduplicated", "delivered", "delivered", "delivered"]
    assert st["counts"] == {"PAGE": 2, "QUEUE": 3}  # still counted
    assert st["suppressed"] == {"deduplicated": 1, "snoozed": 0}
    await trio.sleep(4 * 3600 - 2)  # 1 s before the repeat interval ends: still a repeat
    alerts.alert("QUEUE", "job queue depth 1800 > 1000", source="monitor:jobs", scope="jobs")
    await trio.sleep(1)
    assert len(script.requests) == 4
    alerts.alert("QUEUE", "job queue depth 1900 > 1000", source="monitor:jobs", scope="jobs")
    await trio.sleep(1)
    assert script.requests[-1] == (4 * 3600.0, {
        "ts": WALL, "channel": "QUEUE", "summary": "job queue depth 1900 > 1000",
        "source": "monitor:jobs", "incident_id": None, "scope": "jobs", "severity": None,
        "dedup_key": dedup_key("QUEUE", "jobs", "job queue depth # > #", None), "count": 3})


async def test_alerts_naming_an_incident_are_grouped_under_it() -> None:
    alerts = AlertLog(lambda: WALL)
    alerts.alert("PAGE", "P0 broker-outage opened", source="actor:heartbeat",
                 incident_id="INC-3", scope="venue:alpha")
    alerts.alert("PAGE", "kill-switch not verified", source="supervisor:kill-switch",
                 incident_id="INC-3")
    alerts.alert("QUEUE", "venue alpha slow", source="actor:heartbeat", incident_id="INC-3",
                 scope="venue:alpha")
    alerts.alert("QUEUE", "unrelated", source="monitor:jobs")
    assert alerts.status()["incidents"] == {"INC-3": {
        "count": 3, "first_ts": WALL, "last_ts": WALL, "scope": "venue:alpha", "state": "open"}}


# --- the alerts-spam tree (playbook 03) on MockClock -----------------------------------------


class SpamCalls:
    def __init__(self) -> None:
        self.calls: list[tuple[float, dict[str, Any]]] = []

    async def __call__(self, **kw: Any) -> None:
        self.calls.append((trio.current_time(), kw))


async def test_one_root_over_60_percent_opens_a_parent_and_snoozes_its_children(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery,
) -> None:
    on_spam = SpamCalls()
    script = Script()
    cfg = AlertsConfig(sinks=[WebhookSinkConfig(name="hook", url="https://hooks.example/x")])
    alerts = await started(nursery, cfg, on_spam=on_spam, transport=httpx.MockTransport(script))
    for i in range(20):  # 20 in 5 minutes is not yet "dozens"
        if i % 3:
            alerts.alert("QUEUE", f"alpha symptom {'abcdefghijklmnopqrst'[i]}",
                         source="actor:heartbeat", scope="venue:alpha")
        else:
            alerts.alert("QUEUE", "other", source="monitor:x", scope=f"other:{'abcdefg'[i // 3]}")
        await trio.sleep(10)
    assert on_spam.calls == []
    alerts.alert("QUEUE", "alpha symptom u", source="actor:heartbeat", scope="venue:alpha")
    assert on_spam.calls == []  # never from inside alert()
    await trio.testing.wait_all_tasks_blocked()
    ((t, call),) = on_spam.calls
    assert t == 200.0 and call["kind"] == "parent" and call["count"] == 21
    assert call["share"] == pytest.approx(14 / 21)
    assert call["root"] == SpamRoot(key="scope:venue:alpha", incident_id=None,
                                    scope="venue:alpha", source="actor:heartbeat",
                                    example="alpha symptom u")
    sent = len(script.requests)
    alerts.alert("QUEUE", "alpha symptom v", source="actor:heartbeat", scope="venue:alpha")
    alerts.alert("PAGE", "P1 alerts-spam parent opened", source="supervisor",
                 incident_id="INC-9", scope="venue:alpha")  # the parent stays live
    alerts.alert("PAGE", "alpha child of the parent", source="actor:heartbeat",
                 incident_id="INC-9", scope="venue:alpha")
    alerts.alert("QUEUE", "beta is fine", source="actor:heartbeat", scope="venue:beta")
    await trio.sleep(1)
    assert [r[1]["summary"] for r in script.requests[sent:]] == [
        "P1 alerts-spam parent opened", "beta is fine"]
    st = alerts.status()
    assert st["suppressed"]["snoozed"] == 3  # "alpha symptom u" was the 21st
    assert st["spam"]["snoozed"] == [{"root": "scope:venue:alpha", "remaining_s": 299.0}]
    await trio.sleep(300)  # the window passed: alpha alerts go out again
    alerts.alert("QUEUE", "alpha symptom w", source="actor:heartbeat", scope="venue:alpha")
    await trio.sleep(1)
    assert script.requests[-1][1]["summary"] == "alpha symptom w"
    assert len(on_spam.calls) == 1


async def test_no_single_root_halves_size_and_snoozes_nothing(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery,
) -> None:
    on_spam = SpamCalls()
    alerts = await started(nursery, AlertsConfig(spam_threshold=8, spam_window_s=60.0),
                           on_spam=on_spam)
    for i in range(9):
        alerts.alert("PAGE", f"cause {'abc'[i % 3]} {'ijklmnopq'[i]}", source="actor:x",
                     scope=f"scope:{'abc'[i % 3]}")
        await trio.sleep(1)
    ((t, call),) = on_spam.calls
    assert t == 8.0 and (call["kind"], call["count"]) == ("throttle", 9)
    assert call["share"] == pytest.approx(1 / 3)
    st = alerts.status()["spam"]
    assert st["snoozed"] == [] and st["last"]["kind"] == "throttle"
    assert alerts.status()["suppressed"]["snoozed"] == 0


async def test_a_failing_spam_callback_is_logged_and_alerting_goes_on(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(**kw: Any) -> None:
        raise RuntimeError("desk busy")

    alerts = await started(nursery, AlertsConfig(spam_threshold=1), on_spam=broken)
    alerts.alert("QUEUE", "a", source="s", scope="x")
    alerts.alert("QUEUE", "b", source="s", scope="x")
    await trio.testing.wait_all_tasks_blocked()
    assert "alerts-spam: on_spam(parent) failed" in caplog.text
    alerts.alert("QUEUE", "c", source="s", scope="y")
    assert alerts.counts["QUEUE"] == 3


# --- gate W2 --------------------------------------------------------------------------


async def test_noise_report_lists_alerts_firing_over_5_times_in_a_week_without_action() -> None:
    now = [WALL]
    alerts = AlertLog(lambda: now[0])
    for n in range(6):  # 6 > 5, never an incident: never actioned
        alerts.alert("QUEUE", f"job queue depth {1500 + n} > 1000", source="monitor:jobs",
                     scope="jobs")
    for _ in range(5):  # 5 is not > 5
        alerts.alert("QUEUE", "slippage 3 bps > 2 bps", source="monitor:slippage")
    for _ in range(7):  # acknowledged: an action
        alerts.alert("PAGE", "venue alpha slow", source="actor:heartbeat", scope="venue:alpha",
                     incident_id="INC-1")
    for _ in range(6):  # its incident was never acknowledged nor resolved
        alerts.alert("PAGE", "venue beta slow", source="actor:heartbeat", scope="venue:beta",
                     incident_id="INC-2")
    alerts.incident_acknowledged("INC-1", "alice")
    now[0] = WALL + 86400
    alerts.alert("QUEUE", "job queue depth 2000 > 1000", source="monitor:jobs", scope="jobs")
    report = alerts.noise_report(WALL + 7 * 86400 - 1)
    assert report == [
        {"channel": "QUEUE", "scope": "jobs", "summary": "job queue depth 2000 > 1000",
         "source": "monitor:jobs", "fired": 7, "sent": 1, "unactioned": 7, "first_ts": WALL,
         "last_ts": WALL + 86400, "incidents": []},
        {"channel": "PAGE", "scope": "venue:beta", "summary": "venue beta slow",
         "source": "actor:heartbeat", "fired": 6, "sent": 1, "unactioned": 6,
         "first_ts": WALL, "last_ts": WALL, "incidents": ["INC-2"]},
    ]
    # A week later only the last firing is in range: nothing is noisy.
    assert alerts.noise_report(WALL + 7 * 86400 + 1) == []


# --- secrets --------------------------------------------------------------------------


async def test_secrets_appear_in_no_log_and_no_status(
    base: str, recorder: Recorder, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    recorder.script["/pd/v2/enqueue"] = [
        (400, {}, {"message": f"invalid routing key {ROUTING_KEY}"})]
    recorder.script[SLACK_PATH] = [(503, {}, {}), (503, {}, {})]
    cfg = AlertsConfig(sinks=[
        PagerDutySinkConfig(name="pd", url=f"{base}/pd/v2/enqueue", routing_key=ROUTING_KEY),
        SlackSinkConfig(name="ops", url=base + SLACK_PATH, **fast(max_retries=1)),
    ])
    alerts = await started(nursery, cfg)
    alerts.alert("PAGE", "P0 stale-data opened", source="actor:freshness", incident_id="INC-1")
    alerts.incident_acknowledged("INC-1", "alice")
    await wait_for(lambda: alerts.sinks[0].total("failed") == 1
                   and alerts.sinks[0].total("delivered") == 1
                   and alerts.sinks[1].total("failed") == 1)
    status = json.dumps(alerts.status())
    assert "HTTP Request: POST" in caplog.text  # httpx did log its requests...
    for secret in (ROUTING_KEY, SLACK_PATH, "xoxSLACKsekrit42"):
        assert secret not in caplog.text and secret not in status  # ...scrubbed
        assert secret not in repr(cfg)
    st = alerts.status()["sinks"]
    assert st["pd"]["last_error"] == 'HTTP 400 {"message":"invalid routing key ***"} (not retried)'
    assert st["ops"]["endpoint"] == base and st["ops"]["last_error"] == \
        "HTTP 503 after 2 attempt(s)"


# --- configuration ----------------------------------------------------------------------


EXAMPLE = b"""
repeat_interval_s = 14400.0
spam_threshold = 20

[[sinks]]
type = "pagerduty"
name = "oncall"
routing_key_credential = "pagerduty-routing-key"

[[sinks]]
type = "slack"
name = "desk-channel"
url_credential = "slack-webhook-url"
channels = ["QUEUE"]

[[sinks]]
type = "webhook"
name = "incident-bot"
url = "https://bot.internal.example/desk/alerts"
timeout_s = 2.0
max_retries = 3
queue = 50
"""


def test_the_documented_example_decodes_with_seed_defaults(tmp_path: Path) -> None:
    cfg = msgspec.toml.decode(EXAMPLE, type=AlertsConfig)
    pd, slack, hook = cfg.sinks
    assert isinstance(pd, PagerDutySinkConfig) and pd.channels == ["PAGE"]
    assert pd.url == "https://events.pagerduty.com/v2/enqueue"
    assert isinstance(slack, SlackSinkConfig) and slack.channels == ["QUEUE"]
    assert isinstance(hook, WebhookSinkConfig) and hook.channels == ["PAGE", "QUEUE"]
    assert (cfg.spam_window_s, cfg.spam_root_cause_share, cfg.w2_noise_threshold) == (
        300.0, 0.6, 5)
    (tmp_path / "pagerduty-routing-key").write_text(ROUTING_KEY + "\n")
    (tmp_path / "slack-webhook-url").write_text("https://hooks.slack.com" + SLACK_PATH)
    alerts = AlertLog(lambda: WALL, config=cfg,
                      environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert [s["endpoint"] for s in alerts.status()["sinks"].values()] == [
        "https://events.pagerduty.com", "https://hooks.slack.com",
        "https://bot.internal.example"]
    with pytest.raises(ConfigError) as err:
        AlertLog(lambda: WALL, config=cfg, environ={})
    assert str(err.value) == (
        "alert sink oncall: routing_key_credential names credential 'pagerduty-routing-key' "
        "but $CREDENTIALS_DIRECTORY is not set (use LoadCredential= in the unit)")


@pytest.mark.parametrize(("toml", "message"), [
    (b'[[sinks]]\ntype = "pagerduty"\nname = "pd"\n',
     "exactly one of routing_key or routing_key_credential is required - at `$.sinks[0]`"),
    (b'[[sinks]]\ntype = "slack"\nname = "s"\nurl = "https://h/x"\nurl_credential = "c"\n',
     "exactly one of url or url_credential is required - at `$.sinks[0]`"),
    (b'[[sinks]]\ntype = "webhook"\nname = "w"\nurl = "ftp://h/x"\n',
     "url must be an http:// or https:// URL - at `$.sinks[0]`"),
    (b'[[sinks]]\ntype = "email"\nname = "w"\n', "Invalid value 'email' - at `$.sinks[0].type`"),
    (b'[[sinks]]\ntype = "webhook"\nname = "w"\nurl = "https://h/"\nchannels = ["SMS"]\n',
     "Invalid enum value 'SMS' - at `$.sinks[0].channels[0]`"),
    (b'[[sinks]]\ntype = "webhook"\nname = "w"\nurl = "https://h/"\nqueue = 0\n',
     "queue must be >= 1 - at `$.sinks[0]`"),
    (b'[[sinks]]\ntype = "webhook"\nname = "w"\nurl = "https://h/"\n'
     b'[[sinks]]\ntype = "slack"\nname = "w"\nurl = "https://h/"\n',
     "sink names must be unique, repeated: w"),
    (b"spam_root_cause_share = 0.4\n",
     "spam_root_cause_share must be in [0.5, 1): a single root cause is a majority"),
    (b"repeat_every = 1\n", "Object contains unknown field `repeat_every`"),
])
def test_bad_config_names_the_key(toml: bytes, message: str) -> None:
    with pytest.raises(msgspec.ValidationError) as err:
        msgspec.toml.decode(toml, type=AlertsConfig)
    assert str(err.value) == message
