"""Market-data freshness on trio's MockClock (playbook 02 stale-data, playbook 03 missing-data,
playbook 04 "Market-data bar age" and "Vendor-feed reconciliation", playbook 05 D1 and P4).

The wall clock is ``T0 + trio.current_time()``, so a bar stamped ``T0 + t`` was made at
virtual time ``t`` and every threshold is checked at an exact virtual time. Bars go
through a real ``Book`` to which the actor is subscribed, as the runtime wires it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from actors.base import Finding
from actors.freshness import FreshnessActor
from supervisor.config import FreshnessConfig, parse_config
from supervisor.core.book import Book
from supervisor.core.calendar import Calendar
from supervisor.core.desk import graded_severity
from supervisor.core.errors import ConfigError
from supervisor.core.protocol import Bar, Order, SymbolHalt, TelemetryEvent

from .reports import Reports

# An hour boundary (472222 x 3600 s): reconciliation windows start at trio time 0.
T0 = 1_699_999_200.0
SYMS = ["AAA", "BBB", "CCC", "DDD"]
BOTH = ("primary", "backup")


def wall() -> float:
    return T0 + trio.current_time()


def sev(finding: Finding) -> str:
    """The severity the desk gives the finding: its class's, or the class's table row
    (supervisor/core/desk.py GRADES); findings carry none of their own."""
    assert finding.severity is None
    return graded_severity(finding.incident_class, finding.scope)


def make(config: FreshnessConfig | None = None) -> tuple[FreshnessActor, Book, Reports]:
    book, reports = Book(clock=trio.current_time), Reports()
    actor = FreshnessActor(config or FreshnessConfig(symbols=SYMS), book, reports,
                           wall_clock=wall)
    book.subscribe(actor.on_telemetry)
    return actor, book, reports


Plan = Callable[[int], Iterable[tuple[str, str]]]


def every(symbols: Iterable[str] = SYMS, vendors: Iterable[str] = BOTH) -> Plan:
    pairs = [(s, v) for s in symbols for v in vendors]
    return lambda n: pairs


async def feed(book: Book, plan: Plan, interval: float = 60.0, count: int = 1000) -> None:
    """Bar ``n`` of each (symbol, vendor) that ``plan(n)`` names, stamped and sent at
    ``n * interval``."""
    for n in range(count):
        await trio.sleep_until(n * interval)
        book.ingest([Bar(symbol=s, ts=T0 + n * interval, vendor=v) for s, v in plan(n)])


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


# --- playbook 03 missing-data Q1 YES / Q2 NO: one stale symbol ------------------------------


async def test_one_stale_symbol_is_found_at_its_threshold_suppressed_and_p2(
    autojump_clock: trio.abc.Clock,
) -> None:
    actor, book, reports = make()

    def plan(n: int) -> list[tuple[str, str]]:  # AAA's primary bars stop after bar 0
        return [(s, v) for s in SYMS for v in BOTH if not (s == "AAA" and v == "primary" and n)]

    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        nursery.start_soon(feed, book, plan)
        await trio.sleep_until(119.999)
        assert actor.suppressed == {}
        await trio.sleep_until(600)  # stale all along: still one finding
        nursery.cancel_scope.cancel()
    ((t, finding),) = reports.findings()
    assert t == 120.0  # playbook 02: 2x the 60 s bar interval after the bar at 0
    assert finding.incident_class == "stale-data" and sev(finding) == "P2"
    assert finding.scope == "symbol:AAA" and finding.actor == "freshness"
    assert finding.evidence == {"age_s": 120.0, "threshold_s": 120.0, "vendor": "primary",
                                "last_bar_ts": T0}
    assert finding.summary == (
        "symbol AAA: no primary bar for 120 s (threshold 120 s, 2x the 60 s bar interval): "
        "suppressed; vendor-side single-symbol issue, file a vendor ticket")
    assert actor.suppressed == {"AAA": "stale: no primary bar in 120 s"}
    assert actor.active_vendor == "primary"
    assert [(a.channel, a.scope) for _, a in reports.alerts()] == [("PAGE", "symbol:AAA")]


async def test_fresh_again_is_unsuppressed_and_a_new_episode_reports_again(
    autojump_clock: trio.abc.Clock,
) -> None:
    actor, book, reports = make()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        nursery.start_soon(feed, book, every(["BBB", "CCC", "DDD"]))
        book.ingest([Bar(symbol="AAA", ts=T0, vendor=v) for v in BOTH])
        await trio.sleep_until(150)
        assert "AAA" in actor.suppressed
        book.ingest([Bar(symbol="AAA", ts=T0 + 150, vendor="primary")])
        await settle()
        assert actor.suppressed == {}
        assert trio.current_time() == 150.0
        await trio.sleep_until(400)  # stale again at 150 + 120
        nursery.cancel_scope.cancel()
    assert [(t, f.scope) for t, f in reports.findings()] == [
        (120.0, "symbol:AAA"), (270.0, "symbol:AAA")]


async def test_two_stale_symbols_are_not_a_single_symbol_the_backup_takes_over(
    autojump_clock: trio.abc.Clock,
) -> None:
    """playbook 03 missing-data Q1 "Is the staleness on a single symbol?" NO (two are not
    one) -> Q3 "Is the backup data vendor healthy?" YES -> fail over, at the defaults."""
    actor, book, reports = make()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        nursery.start_soon(feed, book, every(["CCC", "DDD"]))
        nursery.start_soon(feed, book, every(["AAA", "BBB"], ["backup"]))
        book.ingest([Bar(symbol=s, ts=T0, vendor="primary") for s in ("AAA", "BBB")])
        await trio.sleep_until(300)
        nursery.cancel_scope.cancel()
    assert actor.active_vendor == "backup"
    ((_, finding),) = reports.findings()
    assert (finding.scope, sev(finding)) == ("vendor:primary", "P2")
    assert "2 of 4 symbols stale on primary (more than a single symbol" in finding.summary


async def test_one_stale_symbol_pages_once_as_the_bar_age_monitor_says(
    autojump_clock: trio.abc.Clock,
) -> None:
    """playbook 04 "Market-data bar age: > 2x bar interval, any symbol": PAGE, once per
    episode, beside the P2 of the suppressed symbol."""
    actor, book, reports = make()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        nursery.start_soon(feed, book, every(["BBB", "CCC", "DDD"]))
        book.ingest([Bar(symbol="AAA", ts=T0, vendor=v) for v in BOTH])
        await trio.sleep_until(400)
        nursery.cancel_scope.cancel()
    pages = [a for _, a in reports.alerts() if a.channel == "PAGE"]
    assert [a.scope for a in pages] == ["symbol:AAA"]
    assert pages[0].summary.startswith("market-data bar age: AAA has had no primary bar for")


async def test_several_stale_symbols_up_to_the_whole_feed_fraction_are_each_p2(
    autojump_clock: trio.abc.Clock,
) -> None:
    # the opt-in rule: 2 of 4 is not more than half: not the whole feed
    actor, book, reports = make(FreshnessConfig(symbols=SYMS, whole_feed_fraction=0.5))
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        nursery.start_soon(feed, book, every(["CCC", "DDD"]))
        book.ingest([Bar(symbol=s, ts=T0, vendor=v) for s in ("AAA", "BBB") for v in BOTH])
        await trio.sleep_until(300)
        nursery.cancel_scope.cancel()
    assert sorted((t, f.scope, sev(f)) for t, f in reports.findings()) == [
        (120.0, "symbol:AAA", "P2"), (120.0, "symbol:BBB", "P2")]
    assert sorted(actor.suppressed) == ["AAA", "BBB"] and actor.active_vendor == "primary"


# --- Q2 YES: a halt or corporate action explains the gap --------------------------------


async def test_halted_symbol_is_suppressed_without_a_finding(
    autojump_clock: trio.abc.Clock,
) -> None:
    actor, book, reports = make()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        nursery.start_soon(feed, book, every(["BBB", "CCC", "DDD"]))
        book.ingest([Bar(symbol="AAA", ts=T0, vendor=v) for v in BOTH])
        await trio.sleep_until(30)
        book.ingest([SymbolHalt(symbol="AAA", ts=T0 + 30, reason="LULD pause")])
        await trio.sleep_until(121)
        assert actor.suppressed == {"AAA": "halted: LULD pause"}
        assert actor.status()["halted"] == {
            "AAA": {"reason": "LULD pause", "by": "telemetry", "at": T0 + 30}}
        # Lifted: still suppressed (no fresh bar) but no finding within the threshold.
        await trio.sleep_until(200)
        book.ingest([SymbolHalt(symbol="AAA", ts=T0 + 200, reason="resumed", resumed=True)])
        await settle()
        assert actor.suppressed == {"AAA": "stale: no primary bar since the halt was lifted"}
        await trio.sleep_until(240)
        book.ingest([Bar(symbol="AAA", ts=T0 + 240, vendor=v) for v in BOTH])
        await settle()
        assert actor.suppressed == {}
        await trio.sleep_until(330)
        nursery.cancel_scope.cancel()
    assert reports.items == []


async def test_symbol_still_stale_a_threshold_after_its_halt_lifts_gets_its_p2(
    autojump_clock: trio.abc.Clock,
) -> None:
    actor, book, reports = make()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        nursery.start_soon(feed, book, every(["BBB", "CCC", "DDD"]))
        actor.halt_symbol("AAA", "2:1 split", actor="operator:alice")
        await trio.sleep_until(130)
        assert actor.suppressed == {"AAA": "halted: 2:1 split"}
        assert actor.table()[0]["halted"] == "2:1 split"
        await trio.sleep_until(200)
        actor.halt_symbol("AAA", "", actor="operator:alice", resumed=True)
        await trio.sleep_until(400)
        nursery.cancel_scope.cancel()
    ((t, finding),) = reports.findings()
    assert t == 320.0 and finding.scope == "symbol:AAA" and sev(finding) == "P2"
    message = "halt of AAA: give a reason (halt, split, dividend...)"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        actor.halt_symbol("AAA", "", actor="operator:alice")


# --- Q1 NO: the whole feed -----------------------------------------------------------


async def test_whole_primary_stale_with_fresh_backup_fails_over_and_lists_stale_window_orders(
    autojump_clock: trio.abc.Clock,
) -> None:
    actor, book, reports = make()

    def plan(n: int) -> list[tuple[str, str]]:
        # Backup carries everything; primary: AAA stops after bar 0, the rest after bar 1.
        primary = [] if n >= 2 else ["BBB", "CCC", "DDD"] if n == 1 else SYMS
        return [(s, "backup") for s in SYMS] + [(s, "primary") for s in primary]

    def order(oid: str, t: float) -> Order:
        return Order(order_id=oid, symbol="BBB", side="buy", qty=1, ts=T0 + t)

    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        nursery.start_soon(feed, book, plan)
        for oid, t in (("o100", 100), ("o150", 150), ("o170", 170)):
            await trio.sleep_until(t)
            book.ingest([order(oid, t)])
        await trio.sleep_until(179)
        assert actor.active_vendor == "primary" and list(actor.suppressed) == ["AAA"]
        await trio.sleep_until(400)
        nursery.cancel_scope.cancel()
    (t1, single), (t2, failover) = reports.findings()
    assert (t1, single.scope) == (120.0, "symbol:AAA")
    assert t2 == 180.0  # BBB, CCC, DDD's bar at 60 crossed 120 s: 4 of 4 stale
    assert failover.scope == "vendor:primary" and sev(failover) == "P2"
    assert failover.summary == (
        "market data: 4 of 4 symbols stale on primary (more than a single symbol, no bar "
        "in 120 s): failed over to backup; reconcile 2 order(s) sent in the stale window "
        "since 2023-11-14T22:02:00Z")
    # The stale window opened when AAA's bar at 0 crossed its threshold, at 120.
    assert failover.evidence["orders"] == ["o150", "o170"]
    assert failover.evidence["stale_window_start"] == T0 + 120
    # AAA alone at 120 (a single symbol: its bar-age page), the whole feed at 180
    (t1, first), (ta, alert) = reports.alerts()
    assert (t1, first.channel, first.scope) == (120.0, "PAGE", "symbol:AAA")
    assert ta == 180.0 and alert.channel == "PAGE" and alert.scope == "vendor:primary"
    assert "failed over from primary to backup" in alert.summary
    # Judged on the backup now: everything is fresh there.
    assert actor.active_vendor == "backup" and actor.suppressed == {}
    status = actor.status()
    assert status["active_vendor"] == "backup"
    assert status["failover"] == {
        "at": T0 + 180, "from": "primary", "to": "backup", "why": (
            "4 of 4 symbols stale on primary (more than a single symbol, no bar in 120 s)"),
        "stale_window_start": T0 + 120, "orders": ["o150", "o170"], "orders_count": 2}


async def test_both_vendors_stale_is_a_p0_for_the_feed_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    actor, book, reports = make()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        book.ingest([Bar(symbol=s, ts=T0, vendor=v) for s in SYMS for v in BOTH])
        await trio.sleep_until(600)
        assert actor.feed_down and actor.active_vendor == "primary"
        assert actor.suppressed == dict.fromkeys(SYMS, "stale: no primary bar in 120 s")
        # The primary comes back: the episode ends and nothing is suppressed.
        book.ingest([Bar(symbol=s, ts=T0 + 600, vendor="primary") for s in SYMS])
        await settle()
        assert not actor.feed_down and actor.suppressed == {}
        nursery.cancel_scope.cancel()
    ((t, finding),) = reports.findings()
    assert t == 120.0 and finding.scope == "feed" and sev(finding) == "P0"
    assert finding.incident_class == "stale-data"
    assert finding.summary == ("market data: both vendors stale (primary 4/4, backup 4/4 "
                               "symbols with no bar in 120 s): stop trading")
    assert reports.alerts() == []


async def test_traded_symbols_without_any_bar_are_stale_after_the_startup_grace(
    autojump_clock: trio.abc.Clock,
) -> None:
    actor, _, reports = make()
    async with trio.open_nursery() as nursery:
        await trio.sleep(10)
        await nursery.start(actor.run)  # started at 10: grace until 130
        await trio.sleep_until(200)
        nursery.cancel_scope.cancel()
    ((t, finding),) = reports.findings()
    assert t == 130.0 and finding.scope == "feed"


# --- deadlines ------------------------------------------------------------------------


async def test_a_new_earlier_deadline_wakes_the_sleeping_loop(
    autojump_clock: trio.abc.Clock,
) -> None:
    actor, book, reports = make(FreshnessConfig())  # the universe: symbols seen in bars
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        nursery.start_soon(feed, book, every(["AAA"]))
        await trio.sleep_until(5)  # the loop sleeps until AAA's deadline at 120
        # BBB arrives with a bar already 100 s old: its primary deadline is 25.
        book.ingest([Bar(symbol="BBB", ts=T0 - 95, vendor="primary")])
        await trio.sleep_until(100)
        nursery.cancel_scope.cancel()
    ((t, finding),) = reports.findings()
    assert t == 25.0 and finding.scope == "symbol:BBB"
    assert actor.status()["universe"] == 2


async def test_5000_symbols_cost_the_same_per_wakeup(autojump_clock: trio.abc.Clock) -> None:
    n = 5000
    symbols = [f"S{i:04d}" for i in range(n)]
    actor, book, reports = make(FreshnessConfig(symbols=symbols))
    # Symbol i's bar of minute m is stamped 60 m + 0.012 i, so every deadline differs;
    # each second brings the bars stamped in the second before it.
    slots: list[list[int]] = [[] for _ in range(60)]
    for i in range(n):
        slots[i * 12 // 1000].append(i)

    async def feeder() -> None:
        for s in range(1, 400):
            await trio.sleep_until(s)
            m, j = divmod(s - 1, 60)
            book.ingest([Bar(symbol=symbols[i], ts=T0 + 60 * m + i * 12 / 1000, vendor=v)
                         for i in slots[j] for v in BOTH
                         if not (i == 2500 and v == "primary" and m >= 3)])

    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        nursery.start_soon(feeder)
        await trio.sleep_until(200)  # past the start-up grace, when every deadline fell
        actor.max_examined = 0
        wakeups, heap_ops = actor.wakeups, actor.heap_ops
        await trio.sleep_until(390)
        nursery.cancel_scope.cancel()
    # S2500's last primary bar: 120 + 30.0; stale at 270 exactly.
    ((t, finding),) = reports.findings()
    assert t == 270.0 and finding.scope == "symbol:S2500"
    woke = actor.wakeups - wakeups
    assert woke >= 3 * n  # about one wake-up per symbol per minute
    # Each wake-up handles one symbol's two entries (pop and re-arm), not the universe.
    assert actor.max_examined <= 3
    assert (actor.heap_ops - heap_ops) <= 4 * woke
    heap = actor.status()["heap"]
    assert isinstance(heap, int) and heap <= 2 * n


# --- playbook 04 vendor-feed reconciliation; playbook 05 P4 -----------------------------------


async def test_bar_count_mismatch_raises_a_queue_alert_with_divergence(
    autojump_clock: trio.abc.Clock,
) -> None:
    actor, book, reports = make(FreshnessConfig(symbols=SYMS, reconcile_window_s=600))

    def plan(n: int) -> list[tuple[str, str]]:  # the backup misses BBB's bar 3
        return [(s, v) for s in SYMS for v in BOTH if not (n == 3 and s == "BBB"
                                                          and v == "backup")]

    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        nursery.start_soon(feed, book, plan)
        await trio.sleep_until(900)
        nursery.cancel_scope.cancel()
    ((t, alert),) = reports.alerts()
    assert t == 720.0  # the window [0, 600) closes one threshold after its end
    assert alert.channel == "QUEUE" and alert.scope == "vendor:backup"
    assert alert.summary == (
        "vendor-feed reconciliation 2023-11-14T22:00:00Z +600 s: primary and backup bar "
        "counts differ for 1 symbol(s): BBB (divergence 2.50%)")
    assert alert.evidence["counts"] == {"BBB": [10, 9]}
    div = actor.status()["feed_divergence"]
    assert isinstance(div, dict)
    assert div["windows"] == 1 and div["divergence"] == pytest.approx(1 / 40)
    assert div["p4_pass"] is False and div["windows_needed"] == 5 * 39
    assert reports.findings() == []


async def test_the_p4_windows_outlive_a_restart(
    autojump_clock: trio.abc.Clock, tmp_path: Path,
) -> None:
    """playbook 05 P4 "at least 5 trading days" of parallel run: the reconciled windows
    are kept in a file, so a restart does not start the count again."""
    path = tmp_path / "feed-divergence.json"
    cfg = FreshnessConfig(symbols=SYMS, reconcile_window_s=600)
    first = FreshnessActor(cfg, Book(clock=trio.current_time), Reports(), wall_clock=wall,
                           divergence_path=path)
    book = first.book
    book.subscribe(first.on_telemetry)
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        nursery.start_soon(feed, book, every())
        await trio.sleep_until(1900)  # windows [0, 600), [600, 1200) closed
        nursery.cancel_scope.cancel()
    assert first.status()["feed_divergence"]["windows"] == 2
    again = FreshnessActor(cfg, Book(clock=trio.current_time), Reports(), wall_clock=wall,
                           divergence_path=path)
    async with trio.open_nursery() as nursery:
        await nursery.start(again.run)
        nursery.cancel_scope.cancel()
    assert again.status()["feed_divergence"]["windows"] == 2
    path.write_text("not json")  # unreadable: starts empty, says so in the log
    broken = FreshnessActor(cfg, Book(clock=trio.current_time), Reports(), wall_clock=wall,
                            divergence_path=path)
    async with trio.open_nursery() as nursery:
        await nursery.start(broken.run)
        nursery.cancel_scope.cancel()
    assert broken.status()["feed_divergence"]["windows"] == 0


@pytest.mark.parametrize(("missing", "passes"), [(0, True), (1, False)])
async def test_p4_needs_5_trading_days_of_windows_under_half_a_percent(
    autojump_clock: trio.abc.Clock, missing: int, passes: bool,
) -> None:
    # 5-minute bars, hourly windows, 1 trading day: 7 windows (a 6.5 h session).
    cfg = FreshnessConfig(symbols=["AAA", "BBB"], bar_interval_s=300, divergence_days=1)
    actor, book, reports = make(cfg)

    def plan(n: int) -> list[tuple[str, str]]:
        return [(s, v) for s in ("AAA", "BBB") for v in BOTH
                if not (n < missing and s == "AAA" and v == "backup")]

    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        nursery.start_soon(feed, book, plan, 300)
        await trio.sleep_until(6 * 3600 + 601)
        div = actor.divergence()
        assert div["windows"] == 6 and div["p4_pass"] is False
        await trio.sleep_until(7 * 3600 + 601)
        nursery.cancel_scope.cancel()
    div = actor.divergence()
    assert div["windows"] == 7 and div["windows_needed"] == 7
    assert div["divergence"] == pytest.approx(missing / (2 * 12 * 7))  # 1/168 = 0.6%
    assert div["p4_pass"] is passes
    assert len(reports.alerts()) == missing


# --- gate D1 table, status, odd input -------------------------------------------------


async def test_table_has_a_row_per_traded_symbol(autojump_clock: trio.abc.Clock) -> None:
    actor, book, _ = make(FreshnessConfig(symbols=["AAA", "BBB", "CCC"]))
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        nursery.start_soon(feed, book, every(["AAA", "BBB"], ["primary"]))
        book.ingest([Bar(symbol="AAA", ts=T0, vendor="backup")])
        actor.halt_symbol("BBB", "dividend", actor="operator:alice")
        await trio.sleep_until(30)
        rows = actor.table()
        nursery.cancel_scope.cancel()
    assert rows == [
        {"symbol": "AAA", "age_s": {"primary": 30.0, "backup": 30.0}, "stale": False,
         "suppressed": None, "halted": None},
        {"symbol": "BBB", "age_s": {"primary": 30.0, "backup": None}, "stale": False,
         "suppressed": None, "halted": "dividend"},
        {"symbol": "CCC", "age_s": {"primary": None, "backup": None}, "stale": True,
         "suppressed": None, "halted": None},
    ]


async def test_status_is_json(autojump_clock: trio.abc.Clock) -> None:
    actor, book, _ = make()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        book.ingest([Bar(symbol=s, ts=T0, vendor="primary") for s in SYMS])
        await trio.sleep_until(700)
        nursery.cancel_scope.cancel()
    status = actor.status()
    assert json.loads(msgspec.json.encode(status)) == json.loads(json.dumps(status))
    stale = status["stale"]
    assert isinstance(stale, dict)
    assert stale["backup"]["count"] == 4 and stale["backup"]["symbols"] == SYMS
    assert status["universe"] == 4 and status["suppressed_count"] == 4
    # No session configured: always in session (24/7).
    assert (status["in_session"], status["next_open"], status["next_close"]) == (True, None, None)


async def test_odd_input_never_raises_and_a_future_bar_does_not_hide_staleness(
    autojump_clock: trio.abc.Clock,
) -> None:
    actor, book, reports = make(FreshnessConfig(symbols=["AAA", "BBB", "CCC"]))
    odd: list[TelemetryEvent] = [
        Bar(symbol="AAA", ts=T0, vendor="nobody"),  # unknown vendor
        Bar(symbol="AAA", ts=float("nan"), vendor="primary"),
        Bar(symbol="AAA", ts=T0 + 86400, vendor="primary"),  # from the future: counts as now
        Bar(symbol="AAA", ts=T0 - 86400, vendor="backup"),  # out of order, long gone
        Bar(symbol="ZZZ", ts=T0, vendor="primary"),  # not traded
        Bar(symbol="", ts=T0, vendor=""),
        SymbolHalt(symbol="QQQ", ts=T0, reason="x", resumed=True),
        Order(order_id="o1", symbol="AAA", side="buy", qty=1, ts=T0),
    ]
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        nursery.start_soon(feed, book, every(["BBB", "CCC"]))
        book.ingest(odd)
        actor.on_telemetry([None, object()])  # type: ignore[list-item]
        actor.on_telemetry([])
        await trio.sleep_until(300)
        nursery.cancel_scope.cancel()
    ((t, finding),) = reports.findings()
    assert t == 120.0 and finding.scope == "symbol:AAA"
    assert actor.counters == {"unknown_vendor": 2, "outside_universe": 2, "future": 1,
                              "late": 1, "invalid": 1, "errors": 0}


async def test_a_restarted_run_keeps_what_it_knew(autojump_clock: trio.abc.Clock) -> None:
    actor, book, reports = make()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed, book, every(["BBB", "CCC", "DDD"]))
        book.ingest([Bar(symbol="AAA", ts=T0, vendor=v) for v in BOTH])
        with trio.move_on_after(50):
            await actor.run()
        await nursery.start(actor.run)  # as the supervisor restarts a crashed actor
        await trio.sleep_until(300)
        nursery.cancel_scope.cancel()
    ((t, finding),) = reports.findings()
    assert t == 120.0 and finding.scope == "symbol:AAA"


# --- the trading session ----------------------------------------------------------------

DAY = 86400.0
# Friday 2024-01-12 14:30 UTC: 09:30 in New York (EST, UTC-5), the open.
FRI_OPEN_NY = 1_705_069_800.0
NY_DAY = 6.5 * 3600  # 09:30-16:00


def make_at(t0: float, config: FreshnessConfig) -> tuple[FreshnessActor, Book, Reports]:
    """As ``make``, with the wall clock ``t0 + trio.current_time()``."""
    book, reports = Book(clock=trio.current_time), Reports()
    actor = FreshnessActor(config, book, reports,
                           wall_clock=lambda: t0 + trio.current_time())
    book.subscribe(actor.on_telemetry)
    return actor, book, reports


async def bars(book: Book, t0: float, start: float, stop: float,
               symbols: Iterable[str] = SYMS, vendors: Iterable[str] = BOTH,
               skip: float | None = None) -> None:
    """A bar of each (symbol, vendor) stamped and sent every 60 s from ``start`` until
    before ``stop`` (but not at ``skip``)."""
    pairs = [(s, v) for s in symbols for v in vendors]
    t = start
    while t < stop:
        await trio.sleep_until(t)
        if t != skip:
            book.ingest([Bar(symbol=s, ts=t0 + t, vendor=v) for s, v in pairs])
        t += 60.0


async def test_no_finding_overnight_or_over_the_weekend_and_the_open_gives_the_grace(
    autojump_clock: trio.abc.Clock,
) -> None:
    cfg = FreshnessConfig(symbols=SYMS, session="09:30-16:00",
                          session_timezone="America/New_York")
    actor, book, reports = make_at(FRI_OPEN_NY, cfg)
    monday = 3 * DAY  # Monday 09:30 New York
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        status = actor.status()
        assert status["in_session"] is True and status["next_open"] is None
        assert status["next_close"] == FRI_OPEN_NY + NY_DAY  # 21:00 UTC
        nursery.start_soon(bars, book, FRI_OPEN_NY, 0, NY_DAY)  # the last at 15:59
        await trio.sleep_until(NY_DAY + 600)
        status = actor.status()
        assert status["in_session"] is False and status["next_close"] is None
        assert status["next_open"] == FRI_OPEN_NY + monday
        # Saturday: ages still grow, nothing is judged, and the loop sleeps until the open.
        await trio.sleep_until(DAY + 3600)
        wakeups = actor.wakeups
        age = DAY + 3600 - (NY_DAY - 60)
        assert actor.table()[0] == {
            "symbol": "AAA", "age_s": {"primary": age, "backup": age}, "stale": True,
            "suppressed": None, "halted": None}
        await trio.sleep_until(monday - 1)
        assert actor.wakeups == wakeups
        assert reports.items == [] and actor.suppressed == {}
        # Monday: the bars come back from the open, but not AAA's.
        nursery.start_soon(bars, book, FRI_OPEN_NY, monday + 30, monday + 600,
                           ["BBB", "CCC", "DDD"])
        await trio.sleep_until(monday + 119.999)
        assert reports.items == [] and actor.suppressed == {}
        await trio.sleep_until(monday + 600)
        nursery.cancel_scope.cancel()
    # AAA's bar from Friday does not count: one threshold from the open (playbook 05 D1).
    ((t, finding),) = reports.findings()
    assert t == monday + 120 and finding.scope == "symbol:AAA" and sev(finding) == "P2"
    assert finding.evidence["age_s"] == 120.0
    assert finding.evidence["last_bar_ts"] == FRI_OPEN_NY + NY_DAY - 60
    assert [(a.channel, a.scope) for _, a in reports.alerts()] == [("PAGE", "symbol:AAA")]
    assert actor.active_vendor == "primary"


async def test_overnight_session_breaks_at_its_close_and_detects_again_at_the_open(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Futures-style: opens 18:00 Sunday to Thursday, closes 17:00 the next day (UTC).
    cfg = FreshnessConfig(symbols=SYMS, session="18:00-17:00", session_days=[6, 0, 1, 2, 3])
    t0 = 1_704_988_800.0  # Thursday 2024-01-11 16:00 UTC, in Wednesday's session
    actor, book, reports = make_at(t0, cfg)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        assert actor.status()["next_close"] == t0 + 3600
        nursery.start_soon(bars, book, t0, 0, 3600)  # until the 17:00 close
        await trio.sleep_until(7199)  # the daily break: no bars, nothing judged
        assert reports.items == [] and actor.status()["next_open"] == t0 + 7200
        # 18:00, the open, and no bar comes: both vendors are stale one threshold later.
        await trio.sleep_until(9 * 3600)  # Friday 01:00: the session opened Thursday
        status = actor.status()
        assert status["in_session"] is True and status["next_close"] == t0 + 25 * 3600
        await trio.sleep_until(26 * 3600)  # Friday 18:00: no session opens on Friday
        status = actor.status()
        assert status["in_session"] is False and status["next_open"] == t0 + 74 * 3600
        # Closed: the episode stays as it was (suppressed, kill-switch reported once).
        assert actor.feed_down and actor.active_vendor == "primary"
        assert actor.suppressed == dict.fromkeys(SYMS, "stale: no primary bar in 120 s")
        nursery.cancel_scope.cancel()
    ((t, finding),) = reports.findings()
    assert t == 7200 + 120 and finding.scope == "feed" and sev(finding) == "P0"
    assert actor.windows_needed == 5 * 23  # P4's trading day is the 23 h session


async def test_a_symbol_stale_at_the_close_stays_suppressed_until_a_fresh_bar(
    autojump_clock: trio.abc.Clock,
) -> None:
    t0 = 1_704_815_400.0  # Tuesday 2024-01-09 15:50 UTC, ten minutes before the close
    # two stale symbols judged one by one (the opt-in rule), to follow each across the close
    actor, book, reports = make_at(t0, FreshnessConfig(symbols=SYMS, session="09:30-16:00",
                                                       whole_feed_fraction=0.5))
    open_ = 17 * 3600 + 40 * 60  # Wednesday 09:30 UTC
    stale = "stale: no primary bar in 120 s"
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        nursery.start_soon(bars, book, t0, 0, 600, ["CCC", "DDD"])
        await trio.sleep_until(601)  # AAA and BBB never sent a bar
        assert actor.suppressed == {"AAA": stale, "BBB": stale}
        # A halt after the close (the last window still open): judged at the open.
        await trio.sleep_until(630)
        actor.halt_symbol("BBB", "2:1 split", actor="operator:alice")
        await trio.sleep_until(3600)
        assert actor.suppressed == {"AAA": stale, "BBB": stale}
        assert actor.status()["halted"] == {
            "BBB": {"reason": "2:1 split", "by": "operator:alice", "at": t0 + 630}}
        # A fresh bar before the open: judged (un-suppressed) at the open, not before.
        await trio.sleep_until(open_ - 60)
        book.ingest([Bar(symbol="AAA", ts=t0 + open_ - 60, vendor="primary")])
        await trio.sleep_until(open_ - 1)
        assert actor.suppressed == {"AAA": stale, "BBB": stale}
        await trio.sleep_until(open_)
        await settle()
        # BBB has had no bar: no start-up grace, still suppressed (reported once).
        assert actor.suppressed == {"BBB": "halted: 2:1 split"}
        await trio.sleep_until(open_ + 60)
        book.ingest([Bar(symbol="BBB", ts=t0 + open_ + 60, vendor="primary")])
        await settle()
        assert actor.suppressed == {}
        nursery.cancel_scope.cancel()
    assert sorted((t, f.scope) for t, f in reports.findings()) == [
        (120.0, "symbol:AAA"), (120.0, "symbol:BBB")]
    assert sorted((a.channel, a.scope) for _, a in reports.alerts()) == [
        ("PAGE", "symbol:AAA"), ("PAGE", "symbol:BBB")]  # each symbol's bar-age page
    assert actor.active_vendor == "primary"


async def test_reconciliation_counts_only_bars_in_session(
    autojump_clock: trio.abc.Clock,
) -> None:
    t0 = 1_704_812_400.0  # Tuesday 2024-01-09 15:00 UTC, an hour before the close
    actor, book, reports = make_at(t0, FreshnessConfig(session="09:30-16:00"))
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        # The backup misses one bar in session, then sends none after the close.
        nursery.start_soon(bars, book, t0, 0, 7200, ["AAA"], ["primary"])
        nursery.start_soon(bars, book, t0, 0, 3600, ["AAA"], ["backup"], 1800)
        await trio.sleep_until(7200)
        rows = actor.table()
        await trio.sleep_until(7200 + 600)  # the window after the close has closed
        nursery.cancel_scope.cancel()
    ((t, alert),) = reports.alerts()
    assert t == 3720.0 and alert.evidence["counts"] == {"AAA": [60, 59]}
    div = actor.divergence()
    assert div["windows"] == 1 and div["divergence"] == pytest.approx(1 / 60)
    assert rows[0]["age_s"] == {"primary": 60.0, "backup": 3660.0}
    assert reports.findings() == []


def test_session_follows_its_time_zone_across_daylight_saving() -> None:
    s = Calendar(session="09:30-16:00", zone="America/New_York", days=range(5))
    fri = FRI_OPEN_NY  # 14:30 UTC in winter
    assert s.period(fri) == (True, fri, fri + NY_DAY)
    assert s.period(fri - 1) == (False, fri - 17.5 * 3600, fri)  # Thursday's close
    assert s.period(fri + NY_DAY) == (False, fri + NY_DAY, fri + 3 * DAY)
    summer = 1_719_840_600.0  # Monday 2024-07-01 13:30 UTC: 09:30 EDT
    assert s.period(summer) == (True, summer, summer + NY_DAY)


def test_session_config_defaults_to_24_7_and_takes_an_overnight_session() -> None:
    c = parse_config("").freshness
    assert (c.session, c.session_timezone, c.session_days) == ("", "UTC", [0, 1, 2, 3, 4])
    c = parse_config('[freshness]\nsession = "18:00-17:00"\nsession_timezone = '
                     '"America/Chicago"\nsession_days = [6, 0, 1, 2, 3]').freshness
    assert (c.session, c.session_timezone, c.session_days) == (
        "18:00-17:00", "America/Chicago", [6, 0, 1, 2, 3])


@pytest.mark.parametrize(("text", "message"), [
    ('session = "9:30"', "session must be 'HH:MM-HH:MM' with the start and end different, "
                         "got '9:30'"),
    ('session = "09:30-24:00"', "session must be 'HH:MM-HH:MM' with the start and end "
                                "different, got '09:30-24:00'"),
    ('session = "16:00-16:00"', "session must be 'HH:MM-HH:MM' with the start and end "
                                "different, got '16:00-16:00'"),
    ('session = "09:30-16:00"\nsession_days = []',
     "session_days must name at least one weekday"),
    ("session_days = [0, 7]", "session_days must be weekdays 0-6 (Monday 0), got [0, 7]"),
    ('session_timezone = "Mars/Olympus"', "session_timezone: unknown time zone "
                                          "'Mars/Olympus', give an IANA name such as "
                                          "'America/New_York'"),
])
def test_a_bad_session_names_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config("[freshness]\n" + text, source="c.toml")
    assert str(exc.value) == f"c.toml: {message} - at `$.freshness`"
