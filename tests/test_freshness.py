"""Market-data freshness on trio's MockClock (seed 02 stale-data, seed 03 missing-data,
seed 04 "Market-data bar age" and "Vendor-feed reconciliation", seed 05 D1 and P4).

The wall clock is ``T0 + trio.current_time()``, so a bar stamped ``T0 + t`` was made at
virtual time ``t`` and every threshold is checked at an exact virtual time. Bars go
through a real ``Book`` to which the actor is subscribed, as the runtime wires it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable

import msgspec
import pytest
import trio
import trio.testing

from actors.base import AlertRaised, Finding, Report
from actors.freshness import FreshnessActor
from supervisor.book import Book
from supervisor.config import FreshnessConfig
from supervisor.protocol import Bar, Order, SymbolHalt, TelemetryEvent

# An hour boundary (472222 x 3600 s): reconciliation windows start at trio time 0.
T0 = 1_699_999_200.0
SYMS = ["AAA", "BBB", "CCC", "DDD"]
BOTH = ("primary", "backup")


def wall() -> float:
    return T0 + trio.current_time()


class Reports:
    def __init__(self) -> None:
        self.items: list[tuple[float, Report]] = []

    async def __call__(self, item: Report) -> None:
        self.items.append((trio.current_time(), item))

    def findings(self) -> list[tuple[float, Finding]]:
        return [(t, i) for t, i in self.items if isinstance(i, Finding)]

    def alerts(self) -> list[tuple[float, AlertRaised]]:
        return [(t, i) for t, i in self.items if isinstance(i, AlertRaised)]


def make(config: FreshnessConfig | None = None) -> tuple[FreshnessActor, Book, Reports]:
    book, reports = Book(), Reports()
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


# --- seed 03 missing-data Q1 YES / Q2 NO: one stale symbol ------------------------------


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
    assert t == 120.0  # seed 02: 2x the 60 s bar interval after the bar at 0
    assert finding.incident_class == "stale-data" and finding.severity == "P2"
    assert finding.scope == "symbol:AAA" and finding.actor == "freshness"
    assert finding.evidence == {"age_s": 120.0, "threshold_s": 120.0, "vendor": "primary",
                                "last_bar_ts": T0}
    assert finding.summary == (
        "symbol AAA: no primary bar for 120 s (threshold 120 s, 2x the 60 s bar interval): "
        "suppressed; vendor-side single-symbol issue, file a vendor ticket")
    assert actor.suppressed == {"AAA": "stale: no primary bar in 120 s"}
    assert actor.active_vendor == "primary" and reports.alerts() == []


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


async def test_several_stale_symbols_up_to_the_whole_feed_fraction_are_each_p2(
    autojump_clock: trio.abc.Clock,
) -> None:
    actor, book, reports = make()  # 2 of 4 is not more than half: not the whole feed
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        nursery.start_soon(feed, book, every(["CCC", "DDD"]))
        book.ingest([Bar(symbol=s, ts=T0, vendor=v) for s in ("AAA", "BBB") for v in BOTH])
        await trio.sleep_until(300)
        nursery.cancel_scope.cancel()
    assert sorted((t, f.scope, f.severity) for t, f in reports.findings()) == [
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
    assert t == 320.0 and finding.scope == "symbol:AAA" and finding.severity == "P2"
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
    assert failover.scope == "vendor:primary" and failover.severity == "P2"
    assert failover.summary == (
        "market data: 4 of 4 symbols stale on primary (more than 50% of the universe, no bar "
        "in 120 s): failed over to backup; reconcile 2 order(s) sent in the stale window "
        "since 2023-11-14T22:02:00Z")
    # The stale window opened when AAA's bar at 0 crossed its threshold, at 120.
    assert failover.evidence["orders"] == ["o150", "o170"]
    assert failover.evidence["stale_window_start"] == T0 + 120
    ((ta, alert),) = reports.alerts()
    assert ta == 180.0 and alert.channel == "PAGE" and alert.scope == "vendor:primary"
    assert "failed over from primary to backup" in alert.summary
    # Judged on the backup now: everything is fresh there.
    assert actor.active_vendor == "backup" and actor.suppressed == {}
    status = actor.status()
    assert status["active_vendor"] == "backup"
    assert status["failover"] == {
        "at": T0 + 180, "from": "primary", "to": "backup", "why": (
            "4 of 4 symbols stale on primary (more than 50% of the universe, no bar in 120 s)"),
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
    assert t == 120.0 and finding.scope == "feed" and finding.severity == "P0"
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


# --- seed 04 vendor-feed reconciliation; seed 05 P4 -----------------------------------


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
