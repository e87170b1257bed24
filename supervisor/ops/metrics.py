"""Prometheus metrics (docs/operations.md "Metrics"; docs/operations.md "Metrics").

prometheus_client's registry and formatter, never a hand-written exposition. What is
state (mode, incidents, counters the desk already keeps) is read from the ``Desk`` at
scrape time by ``DeskCollector``; latencies are ``Histogram``s observed as they happen:

- kill latency: the venue adapters' ``cancel_all`` is wrapped while the metrics run, and
  the first completion per venue after each trip is observed as trio time since
  ``KillSwitch.latched_at``. The wrapper adds one coroutine frame and, after the venue
  answered, one histogram observation: the cancels go out as fast as before.
- heartbeat latency: ``ping`` is wrapped the same way, so every ping is observed, not a
  sample of the last one per scrape.

Bar ages are read at scrape time from the freshness actor's newest-bar times, with numpy:
one histogram over the symbols per vendor, never a series per symbol.

The wrappers are instance attributes set on the ``HttpVenue`` objects the desk owns and
removed when ``serve_metrics`` stops; neither the kill-switch nor the heartbeat actor
knows about them. A trip or ping already under way when the metrics start is not seen.

Serving is on the trio loop, no thread (prometheus_client's ``start_http_server`` starts
one): a small ASGI app on hypercorn answers ``GET /metrics``. The textfile for
node_exporter is collected on the loop too (the Desk is only ever read from the trio
thread), then written by ``write_to_textfile`` in a worker thread, which renames a temp
file over the old one.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, get_args

import numpy as np
import trio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    generate_latest,
    write_to_textfile,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from supervisor.config import MetricsConfig
from supervisor.core.desk import INCIDENT_CLASSES, Mode
from supervisor.ops.asgi import ASGIApp, Receive, Scope, Send, handle_lifespan, serve_asgi
from supervisor.venues.alpaca import HttpVenue
from supervisor.venues.base import CancelReport

if TYPE_CHECKING:
    from supervisor.ops.sdnotify import Notifier
    from supervisor.runtime.desk import Desk

log = logging.getLogger("desk.metrics")

# docs/benchmarks.md benchmark 1: target p99 < 2 ms to the venue, 2-9 ms measured, hundreds
# of ms under telemetry load; VenueConfig.timeout_s (2 s) bounds a cancel, and the
# kill-switch's FIRST_ROUND_WAIT_S (5 s) the first round.
KILL_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
# playbook 04 broker heartbeat: "p95 > 500ms" is slow; HeartbeatConfig.timeout_s is 5 s.
PING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Bar-age buckets as multiples of the stale threshold (playbook 02 stale-data: 2x the bar
# interval): the bucket le=threshold counts exactly the fresh symbols of gate D1.
BAR_AGE_FACTORS = (0.25, 0.5, 1.0, 2.0, 5.0, 30.0)

MODES: tuple[str, ...] = get_args(Mode)


class DeskCollector(Collector):
    """Reads the desk's state at scrape time. Call ``collect`` on the trio thread only."""

    def __init__(self, desk: Desk, notifier: Notifier | None = None) -> None:
        self.desk = desk
        self.notifier = notifier

    def collect(self) -> Iterator[Metric]:
        desk, s = self.desk, self.desk.state
        mode = GaugeMetricFamily("desk_mode", "1 for the desk's current mode, 0 for the others",
                                 labels=["mode"])
        for m in MODES:
            mode.add_metric([m], 1.0 if s.mode == m else 0.0)
        yield mode
        yield GaugeMetricFamily("desk_size_multiplier",
                                "Fraction of normal size the engine may trade (0 halted)",
                                value=s.size_multiplier)
        yield GaugeMetricFamily("desk_kill_latched", "1 while the kill-switch is latched",
                                value=float(s.kill.latched))
        yield GaugeMetricFamily("desk_kill_verified",
                                "1 once the latched kill is verified (venues flat and quiet)",
                                value=float(s.kill.latched and s.kill.verified))
        yield self._incidents()
        yield from self._heartbeat()
        yield from self._bars()
        restarts = CounterMetricFamily("desk_actor_restarts", "Crashes restarted, per actor",
                                       labels=["actor"])
        running = GaugeMetricFamily("desk_actor_running", "1 while the actor runs",
                                    labels=["actor"])
        for name, st in sorted(desk.actor_status.items()):
            restarts.add_metric([name], st.restarts)
            running.add_metric([name], float(st.state == "running"))
        yield restarts
        yield running
        alerts = CounterMetricFamily("desk_alerts", "Alerts handed to a sink, by outcome",
                                     labels=["channel", "sink", "outcome"])
        for channel, sink, outcome, n in desk.alerts.delivery_counts():
            alerts.add_metric([channel, sink, outcome], n)
        yield alerts
        yield CounterMetricFamily("desk_telemetry_events", "Telemetry events ingested",
                                  value=desk.book.events)
        control = CounterMetricFamily(
            "desk_control_events", "Control-socket events by kind: accepted, "
            "kill_over_limit, refused_too_many, dropped_idle, dropped_stalled, "
            "dropped_not_reading, internal_error, accept_failed", labels=["event"])
        for event, count in sorted(desk.control_stats.items()):
            control.add_metric([event], count)
        yield control
        yield GaugeMetricFamily("desk_journal_ok", "1 while journal appends succeed",
                                value=float(desk.journal_error is None))
        yield GaugeMetricFamily("desk_journal_pending_events",
                                "Events applied but not yet durable in the journal",
                                value=desk.journal_pending)
        if self.notifier is not None:
            yield CounterMetricFamily("desk_sdnotify_sent", "Datagrams sent to systemd",
                                      value=self.notifier.sent)
            yield CounterMetricFamily("desk_sdnotify_errors", "Datagrams to systemd that failed",
                                      value=self.notifier.errors)

    def _incidents(self) -> Metric:
        live = Counter((i.incident_class, i.severity) for i in self.desk.state.incidents
                       if i.live)
        family = GaugeMetricFamily("desk_incidents_open",
                                   "Live (open or acknowledged) incidents",
                                   labels=["incident_class", "severity"])
        # Every known class at its playbook severity, at 0 too: a series that appears only
        # when something is wrong cannot be graphed or alerted on by absence.
        for key in sorted(live.keys() | set(INCIDENT_CLASSES.items())):
            family.add_metric(list(key), live.get(key, 0))
        return family

    def _heartbeat(self) -> Iterable[Metric]:
        last = GaugeMetricFamily("desk_heartbeat_latency_seconds",
                                 "Latency of the venue's last successful ping",
                                 labels=["venue"])
        up = GaugeMetricFamily("desk_heartbeat_up", "1 if the venue's last ping succeeded",
                               labels=["venue"])
        for venue, st in sorted(self.desk.heartbeat.status.items()):
            if st.latency_ms is not None:
                last.add_metric([venue], st.latency_ms / 1000.0)
            if st.ok is not None:
                up.add_metric([venue], float(st.ok))
        return last, up

    def _bars(self) -> Iterable[Metric]:
        freshness = self.desk.freshness
        now, threshold = freshness.wall(), freshness.threshold_s
        universe = len(freshness.universe)
        bounds = np.array([f * threshold for f in BAR_AGE_FACTORS])
        hist = GaugeHistogramMetricFamily(
            "desk_bar_age_seconds", "Symbols by the age of their last bar, per vendor",
            labels=["vendor"])
        missing = GaugeMetricFamily("desk_bar_missing_symbols",
                                    "Symbols of the universe with no bar yet, per vendor",
                                    labels=["vendor"])
        stale = universe
        # The newest-bar times that freshness.table() reads, as arrays: table() builds a
        # dict a symbol, about 2.5 ms per 1,000 symbols on the event loop (the kill path's
        # loop), where this takes microseconds. FreshnessActor has no public accessor yet.
        for vendor, feed in sorted(freshness._feeds.items()):
            ages = now - np.fromiter(feed.bar.values(), dtype=np.float64, count=len(feed.bar))
            # Index i: bounds[i-1] < age <= bounds[i], so the running sum is "le" buckets.
            per_bucket = np.bincount(np.searchsorted(bounds, ages, side="left"),
                                     minlength=len(bounds) + 1)
            cumulative = np.cumsum(per_bucket)
            buckets = [(floatToGoString(b), int(n)) for b, n in zip(bounds, cumulative,
                                                                    strict=False)]
            buckets.append(("+Inf", len(ages)))
            hist.add_metric([vendor], buckets, float(ages.sum()))
            missing.add_metric([vendor], universe - len(ages))
            if vendor == freshness.active_vendor:
                # gate D1 as table() has it: no bar, or one older than the threshold.
                stale = universe - len(ages) + int(np.count_nonzero(ages > threshold))
        yield hist
        yield missing
        yield GaugeMetricFamily("desk_bar_stale_symbols",
                                "Symbols stale on the active vendor (gate D1 fails on any)",
                                value=stale)
        yield GaugeMetricFamily("desk_symbols_suppressed",
                                "Symbols in which only reducing orders may go",
                                value=len(freshness.suppressed))


class DeskMetrics:
    """One registry: the desk's collector and the latency histograms."""

    def __init__(self, desk: Desk, *, notifier: Notifier | None = None) -> None:
        self.desk = desk
        self.registry = CollectorRegistry()
        self.kill_latency = Histogram(
            "desk_kill_latency_seconds",
            "Trip of the kill-switch to the first cancel-all completing, per venue",
            ["venue", "outcome"], buckets=KILL_BUCKETS, registry=self.registry)
        self.ping_latency = Histogram(
            "desk_heartbeat_ping_seconds", "Heartbeat ping latency, every ping",
            ["venue"], buckets=PING_BUCKETS, registry=self.registry)
        self.registry.register(DeskCollector(desk, notifier))
        for venue in desk.venues:
            # Series exist at zero from the start (absent is not the same as none).
            self.kill_latency.labels(venue.name, "ok")
            self.ping_latency.labels(venue.name)
        # venue -> the trip (KillSwitch.latched_at) whose first cancel was observed
        self._kill_observed: dict[str, float] = {}

    def exposition(self) -> bytes:
        """The text exposition, collected now (on the trio thread)."""
        return generate_latest(self.registry)

    def snapshot(self) -> Collector:
        """Every family collected now, for a worker thread to format later."""
        return _Frozen(list(self.registry.collect()))

    @contextlib.contextmanager
    def instrumented(self) -> Iterator[None]:
        """Wrap the venues' ``cancel_all`` and ``ping`` while the block runs."""
        undo: list[tuple[object, str, Any]] = []
        try:
            for venue in self.desk.venues:
                for attr, wrapper in (
                        ("cancel_all", self._timed_cancel_all(venue, "cancel_all")),
                        ("finish_cancel", self._timed_cancel_all(venue, "finish_cancel")),
                        ("ping", self._timed_ping(venue))):
                    undo.append((venue, attr, vars(venue).get(attr)))
                    setattr(venue, attr, wrapper)
            yield
        finally:
            for venue, attr, previous in reversed(undo):
                if previous is None:
                    delattr(venue, attr)
                else:
                    setattr(venue, attr, previous)

    def _timed_cancel_all(self, venue: HttpVenue, attr: str
                          ) -> Callable[[], Awaitable[CancelReport]]:
        # cancel_all, or finish_cancel: the answer to a cancel the kill already wrote.
        cancel_all = getattr(venue, attr)
        killswitch = self.desk.killswitch

        async def timed_cancel_all() -> CancelReport:
            latched_at = killswitch.latched_at  # the trip this cancel belongs to
            try:
                report = await cancel_all()
            except Exception:
                self._kill_done(venue.name, latched_at, "error")
                raise
            self._kill_done(venue.name, latched_at, "refused" if report.failed else "ok")
            return report

        return timed_cancel_all

    def _kill_done(self, venue: str, latched_at: float | None, outcome: str) -> None:
        # The first completion per venue per trip; re-cancels while latched are not
        # the kill's latency.
        if latched_at is None or self._kill_observed.get(venue) == latched_at:
            return
        self._kill_observed[venue] = latched_at
        self.kill_latency.labels(venue, outcome).observe(trio.current_time() - latched_at)

    def _timed_ping(self, venue: HttpVenue) -> Callable[[], Awaitable[float]]:
        ping = venue.ping
        histogram = self.ping_latency.labels(venue.name)

        async def timed_ping() -> float:
            latency = await ping()
            histogram.observe(latency)
            return latency

        return timed_ping


class _Frozen(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)


# --- serving -----------------------------------------------------------------------------


def metrics_app(metrics: DeskMetrics) -> ASGIApp:
    """``GET``/``HEAD /metrics``: the exposition; 404 elsewhere, 405 for other methods."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await handle_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] != "/metrics":
            await _respond(send, 404, b"not found: the metrics are at /metrics\n")
        elif scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
        else:
            body = metrics.exposition()
            await _respond(send, 200, b"" if scope["method"] == "HEAD" else body,
                           content_type=CONTENT_TYPE_LATEST.encode(), length=len(body))

    return app


async def _respond(send: Send, status: int, body: bytes,
                   headers: list[tuple[bytes, bytes]] | None = None, *,
                   content_type: bytes = b"text/plain; charset=utf-8",
                   length: int | None = None) -> None:
    headers = [*(headers or []), (b"content-type", content_type),
               (b"content-length", str(len(body) if length is None else length).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def write_textfile_forever(
    metrics: DeskMetrics, path: str, interval_s: float, *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Replace ``path`` with the exposition every ``interval_s``, until cancelled; started
    once the first write was tried.

    A failed write is logged (once until a write succeeds again) and retried at the next
    interval: metrics never stop the desk. On cancel a write under way completes first
    (the worker thread is not abandoned), so no temp file is left behind.
    """
    failing = False
    while True:
        start = trio.current_time()
        snapshot = metrics.snapshot()
        try:
            await trio.to_thread.run_sync(write_to_textfile, path, snapshot)
        except OSError as exc:
            if not failing:
                log.error("metrics: cannot write textfile %s: %s", path, exc)
            failing = True
        else:
            if failing:
                log.info("metrics: textfile %s written again", path)
            failing = False
        task_status.started()
        task_status = trio.TASK_STATUS_IGNORED
        await trio.sleep_until(start + interval_s)


def _first(group: BaseExceptionGroup[OSError]) -> BaseException:
    """The first exception of a (possibly nested) group."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def serve_metrics(
    desk: Desk,
    config: MetricsConfig,
    *,
    notifier: Notifier | None = None,
    task_status: trio.TaskStatus[str | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the desk's metrics until cancelled; started with the endpoint's URL.

    Started with ``None`` when there is no endpoint: ``listen`` is empty, or its address
    cannot be bound. That failure is logged and alerted (QUEUE) but does not stop the
    desk: a supervisor down for want of a metrics port would be worse than one unseen
    by Prometheus. Returns at once when neither an endpoint nor a textfile runs.
    On cancel the venue wrappers are removed.
    """
    metrics = DeskMetrics(desk, notifier=notifier)
    with metrics.instrumented():
        async with trio.open_nursery() as nursery:
            url: str | None = None
            if config.listen:
                host, port = config.address()
                try:
                    url = await nursery.start(partial(serve_asgi, metrics_app(metrics),
                                                      host=host, port=port))
                except* OSError as group:
                    # Text only: the exception's frames hold the socket hypercorn failed
                    # to bind (and does not close), so nothing here keeps them alive.
                    error = str(_first(group))
                    log.error("metrics: cannot listen on %s: %s", config.listen, error)
                    desk.alerts.alert("QUEUE", f"metrics endpoint {config.listen} not "
                                      f"served: {error}", source="supervisor:metrics")
                else:
                    log.info("metrics: serving %s/metrics", url)
            if config.textfile:
                await nursery.start(write_textfile_forever, metrics, config.textfile,
                                    config.interval_s)
            task_status.started(url)
