"""Prometheus metrics: a real desk scraped over HTTP on 127.0.0.1, the textfile written by
the daemon, and the config that keeps the endpoint on loopback."""

from __future__ import annotations

import gc
import socket
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from supervisor.config import HeartbeatConfig, MetricsConfig, parse_config
from supervisor.core.errors import ConfigError
from supervisor.ops.metrics import serve_metrics
from supervisor.ops.sdnotify import Notifier

from .deskenv import DeskEnv, open_desk

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def scrape(url: str) -> Samples:
    with trio.fail_after(2):
        async with httpx.AsyncClient(trust_env=False) as client:
            response = await client.get(f"{url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return parse(response.text)


async def scrape_until(url: str, done: Callable[[Samples], bool], limit: float = 2.0) -> Samples:
    with trio.fail_after(limit):
        while True:
            samples = await scrape(url)
            if done(samples):
                return samples
            await trio.sleep(0.02)


async def start_metrics(env: DeskEnv, config: MetricsConfig, **kw: Any) -> str | None:
    url: str | None = await env.nursery.start(partial(serve_metrics, env.desk, config, **kw))
    return url


async def test_a_kill_flips_the_mode_to_halted_and_observes_the_kill_latency(
        tmp_path: Path) -> None:
    async with open_desk(tmp_path) as env, trio.open_nursery() as nursery:
        url = await nursery.start(serve_metrics, env.desk, MetricsConfig(listen="127.0.0.1:0"))
        assert url is not None and url.startswith("http://127.0.0.1:")
        before = await scrape(url)
        assert get(before, "desk_mode", mode="NORMAL") == 1
        assert get(before, "desk_mode", mode="HALTED") == 0
        assert get(before, "desk_size_multiplier") == 1
        assert get(before, "desk_kill_latency_seconds_count", venue="alpha", outcome="ok") == 0
        assert get(before, "desk_incidents_open", incident_class="operator-kill",
                   severity="P0") == 0
        for actor in ("freshness", "heartbeat", "reconciliation", "risk"):
            assert get(before, "desk_actor_restarts_total", actor=actor) == 0
            assert get(before, "desk_actor_running", actor=actor) == 1

        await env.request("kill", reason="drill")

        after = await scrape_until(url, lambda s: all(
            get(s, "desk_kill_latency_seconds_count", venue=v, outcome="ok") == 1
            for v in ("alpha", "beta")))
        assert get(after, "desk_mode", mode="HALTED") == 1
        assert get(after, "desk_mode", mode="NORMAL") == 0
        assert get(after, "desk_size_multiplier") == 0
        assert get(after, "desk_kill_latched") == 1
        assert get(after, "desk_incidents_open", incident_class="operator-kill",
                   severity="P0") == 1
        assert get(after, "desk_alerts_total", channel="PAGE", sink="log",
                   outcome="delivered") >= 1
        # The local simulators answer within the 1 s venue timeout.
        assert 0 < get(after, "desk_kill_latency_seconds_sum", venue="alpha", outcome="ok") < 1
        assert get(after, "desk_kill_latency_seconds_bucket", venue="alpha", outcome="ok",
                   le="1.0") == 1
        nursery.cancel_scope.cancel()
    assert not {"cancel_all", "ping"} & {k for v in env.desk.venues for k in vars(v)}


async def test_telemetry_bars_and_heartbeat_pings_are_counted(tmp_path: Path) -> None:
    async with open_desk(tmp_path, heartbeat=HeartbeatConfig(interval_s=0.05)) as env:
        url = await start_metrics(env, MetricsConfig(listen="127.0.0.1:0"))
        assert url is not None
        before = await scrape(url)
        assert get(before, "desk_telemetry_events_total") == 0
        now = time.time()  # the desk's wall clock in open_desk
        await env.request("telemetry", events=[
            {"kind": "bar", "symbol": "AAPL", "ts": now - 45, "vendor": "primary"},
            {"kind": "bar", "symbol": "MSFT", "ts": now - 90, "vendor": "primary"},
            {"kind": "position", "symbol": "AAPL", "qty": 10},
        ])
        after = await scrape_until(url, lambda s: all(
            get(s, "desk_heartbeat_ping_seconds_count", venue=v) >= 2
            for v in ("alpha", "beta")))
        assert get(after, "desk_telemetry_events_total") == 3
        # the control socket's connections (the telemetry request's, at least)
        assert get(after, "desk_control_events_total", event="accepted") >= 1
        # Stale threshold 120 s (2 x 60 s bars): buckets at 30, 60, 120, ... seconds.
        bucket = {le: get(after, "desk_bar_age_seconds_bucket", vendor="primary", le=le)
                  for le in ("30.0", "60.0", "120.0", "+Inf")}
        assert bucket == {"30.0": 0, "60.0": 1, "120.0": 2, "+Inf": 2}
        assert get(after, "desk_bar_missing_symbols", vendor="backup") == 2
        assert get(after, "desk_bar_stale_symbols") == 0
        assert get(after, "desk_heartbeat_up", venue="alpha") == 1
        assert 0 < get(after, "desk_heartbeat_latency_seconds", venue="alpha") < 1


async def test_only_get_metrics_is_served(tmp_path: Path) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    with notify, Notifier(str(tmp_path / "notify")) as notifier:
        notifier.status("testing")
        async with open_desk(tmp_path) as env:
            url = await start_metrics(env, MetricsConfig(listen="127.0.0.1:0"),
                                      notifier=notifier)
            async with httpx.AsyncClient(trust_env=False) as client:
                with trio.fail_after(2):
                    missing = await client.get(f"{url}/")
                    post = await client.post(f"{url}/metrics")
                    head = await client.head(f"{url}/metrics")
            assert (missing.status_code, post.status_code, head.status_code) == (404, 405, 200)
            assert head.content == b""
            samples = await scrape(str(url))
            assert get(samples, "desk_sdnotify_sent_total") == 1
            assert get(samples, "desk_sdnotify_errors_total") == 0


async def test_the_daemon_writes_the_textfile_atomically(tmp_path: Path) -> None:
    prom = tmp_path / "desk.prom"
    config = MetricsConfig(textfile=str(prom), interval_s=0.05)
    async with open_desk(tmp_path, metrics=config):
        assert prom.exists()  # the first write is done before the daemon reports ready
        first = prom.stat().st_ino
        with trio.fail_after(2):
            while prom.stat().st_ino == first:  # noqa: ASYNC110 - a worker thread writes it
                await trio.sleep(0.01)
        samples = parse(prom.read_text())
    # Replaced by a rename (a new inode), never rewritten in place; no temp file left.
    assert get(samples, "desk_mode", mode="NORMAL") == 1
    assert sorted(p.name for p in tmp_path.glob("desk.prom*")) == ["desk.prom"]


async def test_a_textfile_that_cannot_be_written_is_logged_once_and_the_desk_runs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = MetricsConfig(textfile=str(tmp_path / "missing" / "desk.prom"), interval_s=0.02)
    async with open_desk(tmp_path) as env:
        assert await start_metrics(env, config) is None
        await trio.sleep(0.1)
        assert (await env.request("status"))["mode"] == "NORMAL"
    errors = [r.getMessage() for r in caplog.records if r.name == "desk.metrics"]
    assert len(errors) == 1 and errors[0].startswith(
        f"metrics: cannot write textfile {tmp_path}/missing/desk.prom:")


# hypercorn's Config._create_sockets does not close the socket whose bind failed; it is
# collected here, inside this test, and its ResourceWarning is hypercorn's, not ours.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_port_in_use_is_alerted_and_the_desk_runs(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with open_desk(tmp_path) as env:
            queued = env.desk.alerts.counts["QUEUE"]
            assert await start_metrics(env, MetricsConfig(listen=f"127.0.0.1:{port}")) is None
            assert env.desk.alerts.counts["QUEUE"] == queued + 1
            assert env.desk.alerts.recent[-1].summary.startswith(
                f"metrics endpoint 127.0.0.1:{port} not served: [Errno 98]")
    gc.collect()


def test_metrics_are_off_by_default() -> None:
    assert parse_config("").metrics == MetricsConfig(
        listen="", allow_remote=False, textfile="", interval_s=15.0)


@pytest.mark.parametrize("text", [
    '[metrics]\nlisten = "127.0.0.1:9464"',
    '[metrics]\nlisten = "[::1]:9464"',
    '[metrics]\nlisten = "localhost:9464"',
    '[metrics]\nlisten = "0.0.0.0:9464"\nallow_remote = true',
    '[metrics]\ntextfile = "/var/lib/node_exporter/textfile_collector/desk.prom"',
])
def test_loopback_or_explicitly_remote_listen_is_accepted(text: str) -> None:
    parse_config(text, source="c.toml")


@pytest.mark.parametrize(("text", "message"), [
    ('[metrics]\nlisten = "0.0.0.0:9464"',
     "c.toml: listen '0.0.0.0:9464' is not a loopback address: use 127.0.0.1 or [::1], "
     "or set allow_remote = true - at `$.metrics`"),
    ('[metrics]\nlisten = "desk.example.com:9464"',
     "c.toml: listen 'desk.example.com:9464' is not a loopback address: use 127.0.0.1 or "
     "[::1], or set allow_remote = true - at `$.metrics`"),
    ('[metrics]\nlisten = "9464"',
     "c.toml: listen must be 'HOST:PORT', like '127.0.0.1:9464', got '9464' - at `$.metrics`"),
    ('[metrics]\nlisten = "127.0.0.1:99999"',
     "c.toml: listen must be 'HOST:PORT', like '127.0.0.1:9464', got '127.0.0.1:99999' "
     "- at `$.metrics`"),
    ('[metrics]\ntextfile = "desk.txt"',
     "c.toml: textfile must end in .prom (node_exporter's textfile collector reads no other "
     "file), got 'desk.txt' - at `$.metrics`"),
    ("[metrics]\ninterval_s = 0", "c.toml: interval_s must be > 0 - at `$.metrics`"),
])
def test_a_bad_metrics_value_names_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, source="c.toml")
    assert str(exc.value) == message
