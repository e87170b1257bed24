"""Drills on paper venues (gates P1 and M1) against venue simulators on 127.0.0.1, the
rate-limit budget the simulator states and the adapter reads, and the refusal to drill
against a live venue."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio

from simulators.demo import DEMO_DRILL_VENUES, demo_drill_config, run_demo_drill
from simulators.venue import (
    CancelOneFails,
    Outage,
    PartialCancel,
    RateLimited,
    VenueSimulator,
    serve_venue,
)
from supervisor.cli import deskctl
from supervisor.config import ControlConfig, DrillConfig, VenueConfig, parse_config
from supervisor.control.authz import Caller, authorize
from supervisor.core.errors import ConfigError, ControlError, VenueUnavailable
from supervisor.core.events import IncidentNoted, KillRequested, KillVerified
from supervisor.ops import credentials
from supervisor.playbook.drills import check_failover_venue
from supervisor.venues.alpaca import HttpVenue
from supervisor.venues.base import RateLimit

from .deskenv import TEST_RATE_LIMIT, open_desk, wait_for

PAPER = ("paper-a", "paper-b")


def _steps(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in report["steps"]}


def _mutations(sim: VenueSimulator) -> dict[str, int]:
    """The requests a venue got that could place or cancel (everything but GETs)."""
    return {k: n for k, n in sim.requests.items() if not k.startswith("GET ") and n}


def _kill_events(events: list[Any]) -> list[Any]:
    """What only the live kill path journals: a drill must add none of these."""
    return [e for e in events if isinstance(e, (KillRequested, KillVerified, IncidentNoted))]


# --- the kill-switch drill (gate P1) ---------------------------------------------------


async def test_killswitch_drill_flattens_paper_venues_and_leaves_the_live_desk_alone(
    tmp_path: Path,
) -> None:
    with trio.fail_after(20):
        async with open_desk(tmp_path, ("alpha",), drill_names=PAPER) as env:
            watch = env.desk.open_watch()
            live = env.sims["alpha"]
            live_before, live_orders = _mutations(live), live.orders()
            journaled = len(await env.desk.journal.read_all())
            mode = env.desk.status()["mode"]
            report = await env.request("drill", kind="killswitch")

            assert report["ok"] is True, report["detail"]
            assert report["kind"] == "killswitch" and report["measure"] == "time to flat"
            assert 0 < report["seconds"] <= report["target_s"] == 3.0
            steps = _steps(report)
            names = [s["name"] for s in report["steps"]]
            # the venues are prepared concurrently, in either order
            assert sorted(names[:2]) == ["prepare paper-a", "prepare paper-b"]
            assert names[2:] == ["pull the switch", "flat", "quiet period"]
            assert steps["prepare paper-a"]["detail"] == (
                "2 open order(s), 1 share(s) held before the switch")
            assert steps["flat"]["detail"].endswith("(2 position(s) flattened)")
            assert steps["quiet period"]["detail"].startswith(
                "kill verified: venue-side open orders zero on 2 venue(s)")
            for sim in env.drill_sims.values():
                assert sim.open_orders() == [] and sim.positions() == []
                # two resting test orders and the position's buy, then its flattening sell
                assert sorted(o["status"] for o in sim.orders()) == [
                    "canceled", "canceled", "filled", "filled"]

            # The live desk: not latched, not blocked, its mode unchanged, nothing said to
            # its watchers, only the drill's result journaled, and its venue never asked
            # to place or cancel anything.
            status = env.desk.status()
            assert status["kill"]["latched"] is False and status["blocked"] is False
            assert status["mode"] == mode
            assert not env.desk.killswitch.blocked
            assert _kill_events((await env.desk.journal.read_all())[journaled:]) == []
            assert _mutations(live) == live_before == {} and live.orders() == live_orders
            seen = []
            while True:
                try:
                    seen.append(watch.receive_nowait())
                except trio.WouldBlock:
                    break
            assert all(m.get("event") != "blocked" and not m.get("blocked") for m in seen)

            # The report is filed, and the journal holds the result.
            filed = json.loads(Path(report["report"]).read_text())
            assert filed == report
            assert Path(report["report"]).parent == Path(env.config.state_dir) / "drills"
            record = env.desk.state.last_drill("killswitch", ok=True)
            assert record is not None and record.seconds == report["seconds"]
            assert record.report == report["report"] and record.actor.startswith("operator:")

        # A restart replays the journal: the evidence survives.
        async with open_desk(tmp_path, ("alpha",)) as again:
            replayed = again.desk.state.last_drill("killswitch")
            assert replayed is not None and replayed.ok and replayed.report == report["report"]


async def test_a_drill_leaves_a_halted_live_desk_and_its_kill_verdict_alone(
    tmp_path: Path,
) -> None:
    with trio.fail_after(20):
        async with open_desk(tmp_path, ("alpha",), drill_names=PAPER) as env:
            live = env.sims["alpha"]
            live.place("AAPL", 5, "buy")
            await env.request("kill", reason="latched before the drill")
            await wait_for(lambda: env.desk.status()["kill"]["verified"] is True)
            before = env.desk.status()
            if before["kill"]["incident_id"]:  # the verdict's note follows it: journaled
                while not any(  # noqa: ASYNC110 - a journal row, written by the desk
                        isinstance(e, IncidentNoted) and e.text.startswith("kill verified")
                        for e in await env.desk.journal.read_all()):
                    await trio.sleep(0.02)
            live_before, live_orders = _mutations(live), live.orders()
            journaled = len(await env.desk.journal.read_all())

            report = await env.request("drill", kind="killswitch")
            assert report["ok"] is True, report["detail"]
            # The paper executor's verdicts stay in the report: the live desk's verdict,
            # its detail and its mode are what they were, nothing kill-related was
            # journaled, and the live venue saw no order and no cancel.
            assert [v["verified"] for v in report["verdicts"]] == [True]
            after = env.desk.status()
            assert after["mode"] == before["mode"] == "HALTED"
            for key in ("latched", "verified", "verify_detail", "by", "incident_id"):
                assert after["kill"][key] == before["kill"][key], key
            assert after["kill"]["verify_detail"].startswith("venue-side open orders zero")
            assert _kill_events((await env.desk.journal.read_all())[journaled:]) == []
            assert _mutations(live) == live_before and live.orders() == live_orders


async def test_killswitch_drill_fails_naming_the_venue_that_keeps_an_order_open(
    tmp_path: Path,
) -> None:
    with trio.fail_after(20):
        async with open_desk(tmp_path, ("alpha",), drill_names=PAPER,
                             drill={"flat_target_s": 0.5, "position_qty": 0.0}) as env:
            env.drill_sims["paper-b"].faults.set(PartialCancel(fraction=1.0))
            # its own per-order cancel fails too: the escalation cannot flatten it
            env.drill_sims["paper-b"].faults.set(CancelOneFails())
            report = await env.request("drill", kind="killswitch")
            assert report["ok"] is False and report["seconds"] is None
            flat = _steps(report)["flat"]
            assert flat["ok"] is False
            assert flat["detail"] == ("not flat 0.5 s after the switch: paper-b: 2 open "
                                      "order(s), positions none")
            assert "time to flat not reached" in report["detail"]
            assert "paper-b has 2 open order(s)" in _steps(report)["quiet period"]["detail"]
            assert env.drill_sims["paper-a"].open_orders() == []
            record = env.desk.state.last_drill("killswitch")
            assert record is not None and not record.ok and record.detail == report["detail"]
            assert env.desk.state.last_drill("killswitch", ok=True) is None


# --- the failover drill (gate M1) ------------------------------------------------------


async def test_failover_drill_detects_flips_checks_and_reconciles(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with open_desk(tmp_path, ("alpha",), drill_names=PAPER) as env:
            primary, secondary = env.drill_sims["paper-a"], env.drill_sims["paper-b"]
            secondary.place("SPY", 3, "buy", type="market")  # a position held across it
            report = await env.request("drill", kind="failover")

            assert report["ok"] is True, report["detail"]
            assert report["measure"] == "time to recovery"
            assert 0 < report["seconds"] <= report["target_s"] == 5.0
            assert [s["name"] for s in report["steps"]] == [
                "outage", "detect", "route", "auth", "rate-limit headroom", "test order",
                "test cancel", "reconcile", "outage cleared", "primary pending orders"]
            steps = _steps(report)
            assert steps["detect"]["detail"].startswith("3 consecutive failed ping(s) of 3: "
                                                        "venue paper-a: GET /v2/clock "
                                                        "answered 503")
            assert report["route"] == {"from": "paper-a", "to": "paper-b"}
            assert re.fullmatch(r"1\d\d of 200 requests/min left \(\d\d%, need 50%\)",
                                steps["rate-limit headroom"]["detail"])
            assert report["rate_limit"]["limit"] == 200
            assert steps["reconcile"]["detail"] == (
                "paper-b positions agree with broker truth to the share (1 symbol(s))")
            assert primary.faults.active() == []  # the outage is cleared
            tests = [o for o in secondary.orders() if o["type"] == "limit"]
            assert len(tests) == 1 and tests[0]["status"] == "canceled"
            assert tests[0]["qty"] == "1" and tests[0]["symbol"] == "SPY"
            assert str(tests[0]["client_order_id"]).startswith("desk-supervisor-failover-check-")
            record = env.desk.state.last_drill("failover", ok=True)
            assert record is not None and record.seconds == report["seconds"]


async def test_failover_drill_fails_when_the_secondary_is_down(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with open_desk(tmp_path, ("alpha",), drill_names=PAPER) as env:
            env.drill_sims["paper-b"].faults.set(Outage())
            report = await env.request("drill", kind="failover")
            assert report["ok"] is False and report["seconds"] is None
            auth = _steps(report)["auth"]
            assert auth == {"name": "auth", "ok": False, "seconds": auth["seconds"],
                            "detail": "GET /v2/account failed: venue paper-b: GET "
                                      "/v2/account answered 503: service unavailable"}
            # The primary's simulated outage is cleared whatever happened.
            assert env.drill_sims["paper-a"].faults.active() == []
            assert _steps(report)["outage cleared"]["ok"] is True
            assert not env.desk.state.last_drill("failover").ok  # type: ignore[union-attr]


async def test_failover_drill_fails_when_the_secondary_has_no_rate_limit_budget(
    tmp_path: Path,
) -> None:
    with trio.fail_after(20):
        async with open_desk(tmp_path, ("alpha",), drill_names=PAPER) as env:
            secondary = env.drill_sims["paper-b"]
            secondary.faults.set(RateLimited(remaining=0))
            spent = await env.request("drill", kind="failover")
            assert spent["ok"] is False
            assert _steps(spent)["auth"]["detail"] == (
                "GET /v2/account failed: venue paper-b: GET /v2/account answered 429: rate "
                "limit exceeded")

            # 18 left after the baseline positions and the auth call
            secondary.faults.set(RateLimited(remaining=20))
            low = await env.request("drill", kind="failover")
            assert low["ok"] is False
            headroom = _steps(low)["rate-limit headroom"]
            assert headroom["ok"] is False
            assert headroom["detail"] == "18 of 200 requests/min left (9%, need 50%)"
            assert "test order" not in _steps(low)  # no order goes to a venue near its cap


async def test_failover_drill_stopped_at_its_deadline_still_clears_the_outage(
    tmp_path: Path,
) -> None:
    with trio.fail_after(20):
        async with open_desk(tmp_path, ("alpha",), drill_names=PAPER,
                             drill={"ping_interval_s": 5.0, "max_duration_s": 0.5}) as env:
            report = await env.request("drill", kind="failover")
            assert report["ok"] is False and report["seconds"] is None
            assert [s["name"] for s in report["steps"]] == ["outage", "outage cleared",
                                                            "deadline"]
            assert report["detail"].startswith(
                "deadline: the drill did not finish within max_duration_s 0.5 s and was "
                "stopped")
            assert env.drill_sims["paper-a"].faults.active() == []
            assert report["route"] == {"from": "paper-a", "to": None}


async def test_failover_check_on_a_halted_live_venue_does_not_breach_its_kill(
    tmp_path: Path,
) -> None:
    # The broker-failover runbook's verify sends its test order to a live venue, maybe
    # while the desk is HALTED: the live verifier must not count it as a new order.
    with trio.fail_after(20):
        async with open_desk(tmp_path, ("alpha",)) as env:
            await env.request("kill", reason="halted during a failover")
            await wait_for(lambda: env.desk.status()["kill"]["verified"] is True)
            # status turns verified when KillVerified is applied, before its journal
            # append (in a worker thread) lands: count the journal once it is there.
            while not any(isinstance(e, KillVerified)  # noqa: ASYNC110 - another thread
                          for e in await env.desk.journal.read_all()):
                await trio.sleep(0.01)
            journaled = len(await env.desk.journal.read_all())
            check = await check_failover_venue(env.desk.venues[0], "SPY")
            assert check.ok, check.steps
            (order,) = env.sims["alpha"].orders()
            assert str(order["client_order_id"]).startswith("desk-supervisor-failover-check-")
            # the verifier polls every 0.05 s: many passes see the order in orders-since
            await trio.sleep(0.5)
            assert env.desk.status()["kill"]["verified"] is True
            assert [e for e in (await env.desk.journal.read_all())[journaled:]
                    if isinstance(e, KillVerified)] == []


async def test_check_failover_venue_is_reusable_on_its_own(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_venue, VenueSimulator("backup"))
            async with HttpVenue("backup", url) as venue:
                check = await check_failover_venue(venue, "AAPL", min_headroom=0.9)
            assert check.ok and check.venue == "backup"
            assert [s.name for s in check.steps] == [
                "auth", "rate-limit headroom", "test order", "test cancel"]
            assert check.rate_limit is not None and check.rate_limit.limit == 200
            nursery.cancel_scope.cancel()


# --- refusals ------------------------------------------------------------------------


def _toml(drill_url: str, *, key: str = "", live: str = 'key_id = "LIVEKEY123"') -> str:
    return f"""
[[venues]]
name = "live"
base_url = "https://broker.example.com/"
{live}

[[drill.venues]]
name = "paper"
base_url = "{drill_url}"
{key}
"""


LIVE_CREDS = 'key_id_credential = "live-key"\nsecret_key_credential = "live-secret"'


@pytest.mark.parametrize(("url", "key", "live", "message"), [
    # the same server: case, the scheme's default port, another path, another scheme
    ("HTTPS://Broker.example.com:443", "", "",
     "drill venue paper connects to broker.example.com:443 as live venue live does "
     "(HTTPS://Broker.example.com:443 and https://broker.example.com/): drills run on "
     "paper venues only"),
    ("https://broker.example.com/paper/v2", "", "",
     "drill venue paper connects to broker.example.com:443 as live venue live does "
     "(https://broker.example.com/paper/v2 and https://broker.example.com/): drills run on "
     "paper venues only"),
    ("http://broker.example.com:443/", "", "",
     "drill venue paper connects to broker.example.com:443 as live venue live does "
     "(http://broker.example.com:443/ and https://broker.example.com/): drills run on "
     "paper venues only"),
    ("https://api.alpaca.markets", "", "",
     "drill venue paper points at a live trading endpoint (https://api.alpaca.markets): use "
     "the paper endpoint"),
    # the same key: inline, or the same systemd credential's name
    ("https://paper-api.alpaca.markets", 'key_id = "LIVEKEY123"', 'key_id = "LIVEKEY123"',
     "drill venue paper uses the key id of live venue live: drills run on paper accounts "
     "only"),
    ("https://paper-api.alpaca.markets", 'key_id_credential = "live-key"', LIVE_CREDS,
     "drill venue paper reads credential 'live-key' (key_id_credential) that live venue live "
     "reads (key_id_credential): drills run on paper accounts only"),
    ("https://paper-api.alpaca.markets",
     'key_id_credential = "paper-key"\nsecret_key_credential = "live-secret"', LIVE_CREDS,
     "drill venue paper reads credential 'live-secret' (secret_key_credential) that live "
     "venue live reads (secret_key_credential): drills run on paper accounts only"),
])
def test_config_refuses_a_drill_venue_that_could_be_live(
    url: str, key: str, live: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError) as caught:
        parse_config(_toml(url, key=key, live=live or 'key_id = "LIVEKEY123"'),
                     source="desk.toml")
    assert str(caught.value) == f"desk.toml: drill: {message}"


def test_config_refuses_a_drill_key_that_resolves_to_a_live_key_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Different credential names, one key id: systemd's $CREDENTIALS_DIRECTORY says so.
    (tmp_path / "live-key").write_text("AKLIVE0001\n")
    (tmp_path / "paper-key").write_text("AKLIVE0001\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    paper = "https://paper-api.alpaca.markets"
    with pytest.raises(ConfigError) as caught:
        parse_config(_toml(paper, key='key_id_credential = "paper-key"',
                           live='key_id_credential = "live-key"'), source="desk.toml")
    assert str(caught.value) == (
        "desk.toml: drill: drill venue paper (credential 'paper-key') uses the key id of live "
        "venue live (credential 'live-key'): drills run on paper accounts only")
    # The live key resolved from a credential, the paper one inline: the same key id.
    with pytest.raises(ConfigError, match="drill venue paper uses the key id of live venue "
                                          "live \\(credential 'live-key'\\)"):
        parse_config(_toml(paper, key='key_id = "AKLIVE0001"',
                           live='key_id_credential = "live-key"'))
    # Another key on the paper account, another port on the live host: accepted.
    (tmp_path / "paper-key").write_text("AKPAPER0001\n")
    config = parse_config(_toml("https://broker.example.com:8443/", key='key_id_credential = '
                                '"paper-key"', live='key_id_credential = "live-key"'))
    assert config.drill.venues[0].key_id_credential == "paper-key"
    # The loopback interface by another name is the same server.
    for alias in ("http://localhost:8700", "http://127.1:8700", "http://127.0.0.2:8700",
                  "http://[::ffff:127.0.0.1]:8700", "http://[::1]:8700", "http://0.0.0.0:8700"):
        with pytest.raises(ConfigError, match="connects to loopback:8700 as live venue live"):
            parse_config(_toml(alias).replace(
                "https://broker.example.com/", "http://127.0.0.1:8700"))
    # Another port on the loopback interface is another server (the demo's paper venues).
    parse_config(_toml("http://127.0.0.1:8701").replace(
        "https://broker.example.com/", "http://127.0.0.1:8700"))


async def test_drill_refused_when_a_rotated_or_stored_live_key_is_the_paper_key(
    tmp_path: Path,
) -> None:
    paper_key = {"key_id": "AKPAPER0001", "secret_key": "paper-secret-value"}
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            sim = VenueSimulator("paper-a")
            url = await nursery.start(serve_venue, sim)
            drill = DrillConfig(venues=[VenueConfig(name="paper-a", base_url=url,
                                                    timeout_s=1.0, **paper_key)])
            async with open_desk(tmp_path, ("alpha",), drill=drill) as env:
                # A key staged for the live venue (it goes live on activation) ...
                await env.request("credentials_stage", venue="alpha", **paper_key)
                async with env.client() as c:
                    with pytest.raises(ControlError) as caught:
                        await c.request("drill", kind="killswitch")
                assert caught.value.code == "drill_refused"
                assert caught.value.message == (
                    "drill refused: drill venue paper-a uses the key id of live venue alpha "
                    "(its staged key in the credential store): drills run on paper accounts "
                    "only")
                # ... or the key the live adapter uses now, after a rotation.
                credentials.desk_store(env.desk).delete("alpha", "staged")
                env.desk.venues[0].set_credentials(paper_key["key_id"], "another-secret")
                async with env.client() as c:
                    with pytest.raises(ControlError, match=(
                            r"drill venue paper-a uses the key id of live venue alpha \(the "
                            r"key its adapter uses now\)")):
                        await c.request("drill", kind="failover")
                assert sim.requests == {} and env.desk.state.drills == ()
            nursery.cancel_scope.cancel()


def test_config_accepts_a_paper_endpoint_and_names_bad_failover_venues() -> None:
    config = parse_config(_toml("https://paper-api.alpaca.markets"))
    assert config.drill.venues[0].name == "paper" and config.drill.quiet_s == 60.0
    assert config.drill.flat_target_s == 60.0
    with pytest.raises(ValueError, match="the failover drill needs two paper venues"):
        config.drill.failover_pair()
    with pytest.raises(ConfigError, match="secondary 'nope' is not one of the drill venues "
                                          r"\(paper\)"):
        parse_config(_toml("https://paper-api.alpaca.markets") + '[drill]\nsecondary = "nope"\n')
    with pytest.raises(ValueError, match="secondary 'nope' is not one of the drill venues"):
        DrillConfig(venues=[VenueConfig(name="p", base_url="http://127.0.0.1:1")],
                    secondary="nope")


async def test_drill_refused_without_paper_venues_or_with_a_drill_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(20):
        async with open_desk(tmp_path, ("alpha",)) as env:
            async with env.client() as c:
                with pytest.raises(Exception) as caught:
                    await c.request("drill", kind="killswitch")
            assert getattr(caught.value, "code", None) == "drill_refused"
            assert str(caught.value) == (
                "no paper venues configured: add [[drill.venues]] (a paper account or a "
                "simulator) to the configuration")
            code = await trio.to_thread.run_sync(
                deskctl.main, ["--socket", env.socket, "drill", "failover"])
            assert code == deskctl.EXIT_REFUSED
            assert "drill refused (drill_refused): no paper venues" in capsys.readouterr().err
            assert env.desk.state.drills == ()

        async with open_desk(tmp_path / "two", ("alpha",), drill_names=PAPER,
                             drill={"quiet_s": 1.0}) as env:
            async with trio.open_nursery() as nursery:
                first: list[Any] = []

                async def drill() -> None:
                    first.append(await env.request("drill", kind="killswitch"))

                nursery.start_soon(drill)
                await trio.sleep(0.3)
                async with env.client() as c:
                    with pytest.raises(Exception, match="a killswitch drill is already "
                                                        "running; wait for its report"):
                        await c.request("drill", kind="failover")
            assert first[0]["ok"] is True
            assert [d.kind for d in env.desk.state.drills] == ["killswitch"]


async def test_deskctl_drill_prints_the_measure_verdict_steps_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(20):
        async with open_desk(tmp_path, ("alpha",), drill_names=PAPER) as env:
            code = await trio.to_thread.run_sync(
                deskctl.main, ["--socket", env.socket, "drill", "failover"])
            out = capsys.readouterr().out
            assert code == 0, out
            lines = out.splitlines()
            assert lines[0] == "failover drill: PASSED"
            assert lines[1].startswith("time to recovery ") and lines[1].endswith(
                " s (target 5 s)")
            assert lines[2].split() == ["AT", "(S)", "RESULT", "STEP", "DETAIL"]
            assert any(" ok      test cancel " in line for line in lines)
            assert lines[-1].startswith(f"report: {env.config.state_dir}/drills/failover-")

            env.drill_sims["paper-b"].faults.set(Outage())
            code = await trio.to_thread.run_sync(
                deskctl.main, ["--socket", env.socket, "--json", "drill", "failover"])
            assert code == 1
            result = json.loads(capsys.readouterr().out)
            assert result["ok"] is False and result["kind"] == "failover"


# --- rate-limit headroom: the simulator's budget, the adapter, the status ---------------


async def test_adapter_reads_the_budget_and_status_shows_it(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_desk(tmp_path, ("alpha",)) as env:
            async with HttpVenue("direct", env.urls["alpha"]) as venue:
                assert venue.rate_limit is None  # before any answer
                await venue.ping()
                first = venue.rate_limit
                await venue.ping()
                second = venue.rate_limit
            assert first is not None and second is not None
            assert first.limit == second.limit == TEST_RATE_LIMIT
            assert second.remaining == first.remaining - 1
            assert first.reset >= first.ts  # the epoch second the budget refills

            await env.desk.venues[0].ping()
            shown = env.desk.status()["venues"]["alpha"]["rate_limit"]
            assert set(shown) == {"limit", "remaining", "reset", "ts"}
            assert shown["limit"] == TEST_RATE_LIMIT
            assert 0 <= shown["remaining"] < TEST_RATE_LIMIT
            assert msgspec.convert(shown, RateLimit) == env.desk.venues[0].rate_limit
            assert json.loads(json.dumps(env.desk.status()))  # JSON-safe


async def test_adapter_keeps_the_last_budget_when_headers_are_missing_or_garbage() -> None:
    answers = iter([
        {"x-ratelimit-limit": "200", "x-ratelimit-remaining": "150",
         "x-ratelimit-reset": "1700000060"},
        {},
        {"x-ratelimit-limit": "lots", "x-ratelimit-remaining": "1",
         "x-ratelimit-reset": "1700000060"},
    ])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=next(answers),
                              json={"timestamp": "2024-01-02T15:00:00Z", "is_open": True})

    async with HttpVenue("v", "http://venue.test", transport=httpx.MockTransport(handler),
                         wall_clock=lambda: 1_700_000_000.0) as venue:
        for _ in range(3):
            await venue.ping()
            assert venue.rate_limit == RateLimit(limit=200, remaining=150,
                                                 reset=1_700_000_060.0, ts=1_700_000_000.0)


def _sim_client(sim: VenueSimulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=sim),  # type: ignore[arg-type]
                             base_url="http://sim")


async def test_simulator_answers_429_once_the_minute_budget_is_spent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sim = VenueSimulator("tight", rate_limit=3, wall_clock=lambda: 1_700_000_000.0)
    async with _sim_client(sim) as client:
        seen = []
        for _ in range(4):
            r = await client.get("/v2/clock")
            seen.append((r.status_code, r.headers["x-ratelimit-remaining"]))
        assert seen == [(200, "2"), (200, "1"), (200, "0"), (429, "0")]
        assert r.json() == {"code": 42910000, "message": "rate limit exceeded"}
        assert r.headers["x-ratelimit-limit"] == "3"
        assert r.headers["x-ratelimit-reset"] == "1700000060"
        assert (await client.get("/sim/fault")).status_code == 200  # /sim/ is not counted
        await trio.sleep(60.0)  # the window ends: the budget refills
        r = await client.get("/v2/account")
        assert (r.status_code, r.headers["x-ratelimit-remaining"]) == (200, "2")

    async with HttpVenue("tight", "http://sim", transport=httpx.ASGITransport(
            app=sim)) as venue:  # type: ignore[arg-type]
        await venue.ping()
        await venue.ping()
        with pytest.raises(VenueUnavailable, match="venue tight: GET /v2/clock answered 429: "
                                                   "rate limit exceeded"):
            await venue.ping()
        assert venue.rate_limit is not None and venue.rate_limit.remaining == 0


async def test_rate_limit_fault_caps_the_budget_until_cleared(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sim = VenueSimulator("capped")
    async with _sim_client(sim) as client:
        r = await client.put("/sim/fault", json={"kind": "rate_limit", "remaining": 1})
        assert r.json() == {"faults": [{"kind": "rate_limit", "remaining": 1}]}
        assert (await client.get("/v2/clock")).headers["x-ratelimit-remaining"] == "0"
        assert (await client.get("/v2/clock")).status_code == 429
        r = await client.put("/sim/fault", json={"kind": "rate_limit", "remaining": -1})
        assert r.status_code == 400 and "remaining" in r.json()["error"]
        await client.delete("/sim/fault/rate_limit")
        r = await client.get("/v2/clock")
        # one request of the window was spent under the cap, the refused one was not
        assert (r.status_code, r.headers["x-ratelimit-remaining"]) == (200, "198")

    unlimited = VenueSimulator("free", rate_limit=None)
    async with _sim_client(unlimited) as client:
        r = await client.get("/v2/clock")
        assert r.status_code == 200 and "x-ratelimit-limit" not in r.headers
        r = await client.put("/sim/fault", json={"kind": "rate_limit", "remaining": 0})
        assert r.status_code == 400
        assert r.json() == {"error": "venue free has no rate limit to exhaust (started with "
                                     "rate_limit None)"}


# --- the demo's start-up drill ---------------------------------------------------------


async def test_demo_startup_drill_passes_gate_p1_quickly_on_the_demo_paper_venues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            urls = {n: await nursery.start(serve_venue, VenueSimulator(n))
                    for n in DEMO_DRILL_VENUES}
            async with open_desk(tmp_path, ("alpha",), drill=demo_drill_config(urls)) as env:
                started = trio.current_time()
                report = await run_demo_drill(env.desk)
                took = trio.current_time() - started
                assert report is not None and report["ok"] is True, report
                assert took < 5.0  # the demo's 2 s quiet period, not the playbook's 60 s
                assert report["actor"] == "supervisor:demo"
                record = env.desk.state.last_drill("killswitch", ok=True)
                assert record is not None and record.actor == "supervisor:demo"
                assert env.sims["alpha"].requests["DELETE /v2/orders"] == 0
                assert "killswitch drill on the paper venues: passed" in capsys.readouterr().out
            nursery.cancel_scope.cancel()


def test_drill_is_for_operators_only() -> None:
    control = ControlConfig(operators=["someone-else"])
    assert authorize("drill", Caller(uid=54321, gid=54321), control, daemon_uid=1) == (
        "54321 (uid 54321) may not drill: not in control.operators; ask an authorised "
        "operator")
    assert authorize("drill", Caller(uid=0), control, daemon_uid=1) is None
