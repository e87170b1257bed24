"""PnL monitors on trio's MockClock (playbook 02 pnl-divergence; playbook 04 "Daily PnL vs. backtest
band" and "Slippage vs. expected"; playbook 05 gates D3 and D5).

The wall clock is ``T0 + trio.current_time()``: virtual time 0 is noon UTC of day one, so
each UTC day closes at ``43200 + k * DAY`` and its check runs ``SETTLE_S`` later. Telemetry
goes through a real ``Book`` to which the monitor is subscribed, as the runtime wires it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import trio

from actors.base import AlertRaised, Finding
from actors.pnl import (
    SETTLE_S,
    PnlMonitor,
    PnlMonitorConfig,
    load_backtest,
    parse_backtest,
    slippage_cost,
)
from supervisor.core.book import Book
from supervisor.core.errors import ConfigError
from supervisor.core.protocol import Bar, Fill, Model, Order, Pnl, TelemetryEvent

from .reports import Reports

T0 = 1_709_553_600.0  # 2024-03-04T12:00:00Z, a Monday
DAY = 86_400.0
CLOSE = 43_200 + SETTLE_S  # virtual time of day one's check
MODEL = Model(model_hash="sha256:abc123", ts=T0, feature_hash="sha256:f00",
              lib_hash="sha256:1ib")

# ``Fill.expected_price`` is the protocol addition this monitor asks for; until protocol.py
# carries it, a Fill subclass with the same tag stands in (the monitor reads the field by
# name, so both look the same to it).
if "expected_price" in Fill.__struct_fields__:
    PricedFill = Fill
else:
    class PricedFill(Fill, frozen=True, tag="fill"):  # type: ignore[no-redef]
        expected_price: float | None = None


def wall() -> float:
    return T0 + trio.current_time()


def band_file(path: Path, days: int = 10, **extra: Any) -> Path:
    """Day i's 5th percentile is -50 * i; day 2 is given as 201 simulated paths whose
    5th percentile is -100 (numpy's linear interpolation), the rest as percentiles."""
    rows: list[dict[str, Any]] = []
    for i in range(1, days + 1):
        if i == 2:
            rows.append({"day": 2, "samples": np.linspace(-110.0, 90.0, 201).tolist()})
        else:
            rows.append({"day": i, "percentiles": {"5": -50.0 * i, "50": 10.0 * i,
                                                   "95": 70.0 * i}})
    path.write_text(json.dumps({"days": rows, **extra}))
    return path




def make(
    tmp_path: Path, *, history: Path | None = None, at: float | None = None, **config: Any
) -> tuple[PnlMonitor, Book, Reports]:
    """A monitor on a Book; its wall clock is ``at`` if given (real-clock tests), else
    tied to trio's clock (MockClock tests)."""
    config.setdefault("backtest", str(band_file(tmp_path / "backtest.json")))
    book, reports = Book(clock=trio.current_time), Reports()
    monitor = PnlMonitor(PnlMonitorConfig(**config), reports,
                         wall_clock=wall if at is None else lambda: at,
                         history_path=history)
    book.subscribe(monitor.on_telemetry)
    return monitor, book, reports


@asynccontextmanager
async def running(monitor: PnlMonitor) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run)
        yield
        nursery.cancel_scope.cancel()


async def trade_days(book: Book, values: Sequence[float]) -> None:
    """One pnl value a day at noon, then on to the next noon (past the day's check)."""
    for value in values:
        book.ingest([Pnl(ts=wall(), value=value)])
        await trio.sleep(DAY)


def days_of(item: Finding | AlertRaised) -> list[dict[str, Any]]:
    """The per-day rows of a report's evidence."""
    days = item.evidence["days"]
    assert isinstance(days, list)
    return days


def status(monitor: PnlMonitor) -> dict[str, Any]:
    return msgspec.json.decode(msgspec.json.encode(monitor.status()))  # JSON-able


# --- the backtest band (playbook 02 pnl-divergence) -----------------------------------------


async def test_two_days_below_the_5th_percentile_are_quiet_the_third_opens_pnl_divergence(
    autojump_clock: trio.abc.Clock, tmp_path: Path,
) -> None:
    monitor, book, reports = make(tmp_path)  # daily PnL values: cumulative -60, -120, -180
    async with running(monitor):
        book.ingest([MODEL])
        await trade_days(book, [-60.0, -60.0])
        assert reports.items == []
        band = status(monitor)["pnl_band"]
        assert (band["verdict"], band["streak"]) == ("watch", 2)
        await trade_days(book, [-60.0])

    [(t, finding)] = reports.findings()
    assert t == 2 * DAY + CLOSE  # at the third trading day's close
    assert (finding.incident_class, finding.scope) == ("pnl-divergence", "model:sha256:abc123")
    ev = finding.evidence
    # playbook 02: "Log the divergence with the model_hash + feature_hash + lib_hash".
    assert (ev["model_hash"], ev["feature_hash"], ev["lib_hash"]) == (
        "sha256:abc123", "sha256:f00", "sha256:1ib")
    assert ev["days"] == [
        {"date": "2024-03-04", "trading_day": 1, "cum_pnl": -60.0, "p5": -50.0, "p50": 10.0,
         "p95": 70.0},
        {"date": "2024-03-05", "trading_day": 2, "cum_pnl": -120.0, "p5": -100.0,
         "p50": -10.0, "p95": 80.0},
        {"date": "2024-03-06", "trading_day": 3, "cum_pnl": -180.0, "p5": -150.0,
         "p50": 30.0, "p95": 210.0},
    ]
    assert ev["consecutive_days"] == 3 and ev["backtest_sha256"] is not None
    assert "below the backtest's 5th percentile for 3 consecutive trading days" in (
        finding.summary)
    band = status(monitor)["pnl_band"]
    assert band["verdict"] == "divergence"
    assert band["d3"] == {"date": "2024-03-06", "trading_day": 3, "cum_pnl": -180.0,
                          "band_low": -150.0, "band_high": 210.0, "inside_band": False,
                          "above_high": False}


async def test_a_day_above_the_band_queues_an_alert_the_band_is_two_sided(
    autojump_clock: trio.abc.Clock, tmp_path: Path,
) -> None:
    """playbook 02 pnl-divergence: "Live PnL exits the backtest band": above it too (a
    look-ahead, a data error, or a regime the backtest missed), as QUEUE."""
    monitor, book, reports = make(tmp_path)
    async with running(monitor):
        book.ingest([MODEL])
        await trade_days(book, [100.0])  # day 1: 100 > the 95th percentile, 70
        await trade_days(book, [-20.0])  # day 2: cumulative 80, inside (p95 about 80)
    alerts = [i for _, i in reports.items if isinstance(i, AlertRaised)]
    assert [a.channel for a in alerts] == ["QUEUE"]
    assert alerts[0].scope == "pnl:above-band"
    assert ("live cumulative PnL 100.00 on 2024-03-04 above the backtest's 95th percentile "
            "70.00") in alerts[0].summary
    assert not [i for _, i in reports.items if isinstance(i, Finding)]


async def test_a_day_back_inside_the_band_resets_the_count_and_ends_the_episode(
    autojump_clock: trio.abc.Clock, tmp_path: Path,
) -> None:
    # Cumulative values against the 5th percentiles -50 * day.
    monitor, book, reports = make(tmp_path, pnl_value="cumulative",
                                  backtest=str(band_file(tmp_path / "b.json", 12)))
    async with running(monitor):
        book.ingest([MODEL])
        await trade_days(book, [-60.0, -110.0, -100.0, -210.0, -260.0])  # in at day 3
        assert reports.items == []
        assert status(monitor)["pnl_band"]["streak"] == 2
        await trade_days(book, [-310.0])  # days 4, 5, 6 below
        assert [t for t, _ in reports.findings()] == [5 * DAY + CLOSE]
        await trade_days(book, [-320.0])  # day 7 still below: the same episode
        assert len(reports.findings()) == 1
        await trade_days(book, [-390.0])  # day 8 back in (> -400): the episode ends
        d3 = status(monitor)["pnl_band"]["d3"]
        assert (d3["trading_day"], d3["inside_band"]) == (8, True)
        await trade_days(book, [-460.0, -510.0])
        assert len(reports.findings()) == 1
        await trade_days(book, [-560.0])  # days 9, 10, 11: a new episode
    assert [t for t, _ in reports.findings()] == [5 * DAY + CLOSE, 10 * DAY + CLOSE]


async def test_check_on_demand_counts_trading_days_not_calendar_days(tmp_path: Path) -> None:
    # Friday, Monday, Tuesday (no PnL at the weekend) are three consecutive trading days;
    # the Thursday before `start` is not part of the run.
    monitor, book, reports = make(tmp_path, start="2024-03-01", at=T0 + DAY)
    thu, fri, mon, tue = (T0 - 4 * DAY, T0 - 3 * DAY, T0, T0 + DAY)
    book.ingest([MODEL, Pnl(ts=thu, value=-1000.0), Pnl(ts=fri, value=-60.0),
                 Pnl(ts=mon, value=-60.0), Pnl(ts=tue, value=-60.0)])
    await monitor.check()
    assert reports.items == []  # Tuesday has not closed yet
    assert status(monitor)["pnl_band"]["today"] == {
        "date": "2024-03-05", "trading_day": 3, "cum_pnl": -180.0, "band_low": -150.0,
        "band_high": 210.0, "inside_band": False, "above_high": False}
    book.ingest([Pnl(ts=tue + DAY, value=500.0)])  # Wednesday
    monitor.wall = lambda: tue + DAY  # type: ignore[method-assign]
    await monitor.check()
    [(_, finding)] = reports.findings()
    assert [d["date"] for d in days_of(finding)] == [
        "2024-03-01", "2024-03-04", "2024-03-05"]


async def test_the_last_value_of_the_day_counts(tmp_path: Path) -> None:
    monitor, book, reports = make(tmp_path, pnl_value="cumulative", at=T0)
    book.ingest([Pnl(ts=T0 - DAY + 60, value=-500.0), Pnl(ts=T0 - DAY + 7200, value=0.0),
                 Pnl(ts=T0 - DAY + 3600, value=-400.0)])  # out of order: ts decides
    await monitor.check()
    assert reports.items == []
    last = status(monitor)["pnl_band"]["last_value"]
    assert (last["cum_pnl"], status(monitor)["pnl_band"]["verdict"]) == (0.0, "ok")


async def test_without_model_telemetry_the_scope_says_unknown_and_hashes_are_null(
    tmp_path: Path,
) -> None:
    monitor, book, reports = make(tmp_path, pnl_value="cumulative", at=T0)
    book.ingest([Pnl(ts=T0 - k * DAY, value=-1000.0) for k in (1, 2, 3)])
    await monitor.check()
    [(_, finding)] = reports.findings()
    assert finding.scope == "model:unknown"
    assert (finding.evidence["model_hash"], finding.evidence["lib_hash"]) == (None, None)


async def test_a_backtest_of_another_model_is_not_judged_and_queues_one_alert(
    tmp_path: Path,
) -> None:
    path = band_file(tmp_path / "bt.json", model_hash="sha256:old")
    monitor, book, reports = make(tmp_path, backtest=str(path), pnl_value="cumulative",
                                  at=T0)
    book.ingest([MODEL, *(Pnl(ts=T0 - k * DAY, value=-1000.0) for k in (1, 2, 3))])
    await monitor.check()
    await monitor.check()
    assert reports.findings() == []
    [(_, alert)] = reports.alerts()
    assert (alert.channel, alert.scope) == ("QUEUE", "pnl:backtest")
    band = status(monitor)["pnl_band"]
    assert band["verdict"] == "not_evaluated"
    assert band["note"] == (f"the backtest {path} is for model sha256:old but the live model "
                            "is sha256:abc123: the band is not evaluated; load the live "
                            "model's backtest")


async def test_a_broken_backtest_file_is_shown_and_queued_then_picked_up_when_fixed(
    tmp_path: Path,
) -> None:
    # Real clock: a changed backtest file is read in a worker thread.
    path = tmp_path / "bt.json"
    path.write_text('{"days": [{"day": 1, "percentiles": {"50": 1.0}}]}')
    monitor, book, reports = make(tmp_path, backtest=str(path), at=T0)
    with trio.fail_after(10):
        async with running(monitor):  # started: a broken file is no crash
            pass
    error = (f'{path}: day 1: percentiles has no "5" (band_percentile): give it, or '
             "samples - at `$.days[0].percentiles`")
    band = status(monitor)["pnl_band"]
    assert band["backtest"]["error"] == error
    assert band["note"] == f"the band is not evaluated: {error}"
    [(_, alert)] = reports.alerts()
    assert alert.summary == f"pnl band monitor blind: the band is not evaluated: {error}"
    band_file(path)
    book.ingest([Pnl(ts=T0, value=-10.0)])
    monitor.wall = lambda: T0 + DAY  # type: ignore[method-assign]
    await monitor.check()
    assert status(monitor)["pnl_band"]["verdict"] == "ok"
    assert len(reports.alerts()) == 1


async def test_no_backtest_configured_is_not_evaluated_quietly(tmp_path: Path) -> None:
    monitor, book, reports = make(tmp_path, backtest="", at=T0)
    book.ingest([Pnl(ts=T0 - DAY, value=-1e9)])
    await monitor.check()
    band = status(monitor)["pnl_band"]
    assert (band["verdict"], band["note"]) == (
        "not_evaluated", "no backtest file configured: the band is not evaluated")
    assert reports.items == []


async def test_a_trading_day_beyond_the_backtest_has_no_band(tmp_path: Path) -> None:
    monitor, book, reports = make(tmp_path, backtest=str(band_file(tmp_path / "b.json", 2)),
                                  pnl_value="cumulative", at=T0)
    book.ingest([Pnl(ts=T0 - k * DAY, value=-1000.0) for k in (1, 2, 3)])
    await monitor.check()
    band = status(monitor)["pnl_band"]
    assert (band["verdict"], band["d3"], band["streak"]) == ("not_evaluated", None, 0)
    assert band["note"] == "trading day 3 is beyond the backtest's 2 days: no band"
    assert reports.items == []


async def test_the_history_file_keeps_the_days_across_a_restart(tmp_path: Path) -> None:
    # Real clock: the history is read and written in worker threads.
    history = tmp_path / "state" / "pnl-history.json"
    monitor, book, reports = make(tmp_path, history=history, pnl_value="cumulative", at=T0)
    book.ingest([Pnl(ts=T0 - 2 * DAY, value=-60.0), Pnl(ts=T0 - DAY, value=-110.0)])
    await monitor.check()
    assert reports.items == [] and history.exists()

    # A new daemon: nothing in memory, the history file on disk.
    monitor, book, reports = make(tmp_path, history=history, pnl_value="cumulative", at=T0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(monitor.run)  # started once read and checked
            nursery.cancel_scope.cancel()
    assert status(monitor)["history"] == {"path": str(history), "pnl_days": 2,
                                          "slippage_days": 0, "error": None}
    book.ingest([Pnl(ts=T0, value=-160.0)])
    monitor.wall = lambda: T0 + DAY  # type: ignore[method-assign]
    await monitor.check()
    [(_, finding)] = reports.findings()
    assert [d["cum_pnl"] for d in days_of(finding)] == [
        -60.0, -110.0, -160.0]


async def test_an_unreadable_history_file_starts_empty_and_says_so(tmp_path: Path) -> None:
    history = tmp_path / "pnl-history.json"
    history.write_text("{not json")
    monitor, _, _ = make(tmp_path, history=history, at=T0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(monitor.run)
            nursery.cancel_scope.cancel()
    error = status(monitor)["history"]["error"]
    assert error.startswith(f"history file {history} not read, starting empty: ")


# --- slippage (playbook 04; playbook 05 D5) ------------------------------------------------------


def priced(side: str, price: float, expected: float | None, qty: float = 100.0) -> Fill:
    return PricedFill(order_id=f"o-{wall()}-{side}-{price}", symbol="AAPL",  # type: ignore[call-arg]
                      side=side, qty=qty, price=price, ts=wall(),  # type: ignore[arg-type]
                      expected_price=expected)


async def fill_days(book: Book, bps: Sequence[float]) -> None:
    """Each day a buy that pays ``bps`` above and a sell that gets ``bps`` below expected."""
    for cost in bps:
        book.ingest([priced("buy", 100.0 * (1 + cost / 1e4), 100.0),
                     priced("sell", 50.0 * (1 - cost / 1e4), 50.0)])
        await trio.sleep(DAY)


def test_slippage_is_sign_aware_per_side() -> None:
    assert slippage_cost("buy", 100.03, 100.0) == pytest.approx(3.0)
    assert slippage_cost("sell", 99.97, 100.0) == pytest.approx(3.0)
    assert slippage_cost("sell", 100.03, 100.0) == pytest.approx(-3.0)  # sold better


async def test_four_days_above_2_bps_are_quiet_the_fifth_queues_an_alert(
    autojump_clock: trio.abc.Clock, tmp_path: Path,
) -> None:
    monitor, book, reports = make(tmp_path, backtest="")
    async with running(monitor):
        await fill_days(book, [3.0] * 4)
        assert reports.items == []
        assert status(monitor)["slippage"]["streak"] == 4
        await fill_days(book, [3.0])
        await fill_days(book, [3.0])  # the same episode: no second alert
    [(t, alert)] = reports.alerts()
    assert t == 4 * DAY + CLOSE
    assert (alert.channel, alert.scope) == ("QUEUE", "slippage")
    assert [d["bps"] for d in days_of(alert)] == pytest.approx([3.0] * 5)
    slip = status(monitor)["slippage"]
    assert (slip["verdict"], slip["streak"]) == ("slippage", 6)
    assert slip["last_value"]["bps"] == pytest.approx(3.0)


async def test_a_day_at_or_under_2_bps_resets_the_slippage_count(
    autojump_clock: trio.abc.Clock, tmp_path: Path,
) -> None:
    monitor, book, reports = make(tmp_path, backtest="")
    async with running(monitor):
        await fill_days(book, [3.0, 3.0, 3.0, 1.5, 3.0, 3.0, 3.0, 3.0])
    assert reports.items == []
    assert status(monitor)["slippage"]["streak"] == 4


async def test_daily_slippage_is_notional_weighted_and_ignores_unpriced_fills(
    tmp_path: Path,
) -> None:
    monitor, book, _ = make(tmp_path, backtest="", at=T0 + DAY)
    book.ingest([
        PricedFill(order_id="a", symbol="AAPL", side="buy", qty=300.0,  # type: ignore[call-arg]
                   price=100.01, ts=T0, expected_price=100.0),
        PricedFill(order_id="b", symbol="MSFT", side="buy", qty=100.0,  # type: ignore[call-arg]
                   price=100.05, ts=T0, expected_price=100.0),
        Fill(order_id="c", symbol="SPY", side="sell", qty=1.0, price=1.0, ts=T0),
    ])
    await monitor.check()
    last = status(monitor)["slippage"]["last_value"]
    # (300 x 1 bp + 100 x 5 bps) / 400 = 2 bps; the fill without expected_price is counted.
    assert last == {"date": "2024-03-04", "bps": pytest.approx(2.0), "fills": 2,
                    "unpriced_fills": 1}


async def test_d5_flags_a_day_more_than_one_sigma_from_the_previous_days(
    autojump_clock: trio.abc.Clock, tmp_path: Path,
) -> None:
    monitor, book, _ = make(tmp_path, backtest="")
    async with running(monitor):
        await fill_days(book, [1.0, 1.2, 0.8, 1.0, 1.0])
        d5 = status(monitor)["slippage"]["d5"]
        assert (d5["flag"], d5["days"]) == (None, 4)
        assert d5["note"] == "needs 5 previous trading days of slippage, has 4: not evaluated"
        await fill_days(book, [1.1])
        assert status(monitor)["slippage"]["d5"]["flag"] is False
        await fill_days(book, [1.9])
    d5 = status(monitor)["slippage"]["d5"]
    prev = np.array([1.0, 1.2, 0.8, 1.0, 1.0, 1.1])
    assert d5["mean"] == pytest.approx(prev.mean())
    assert d5["sigma"] == pytest.approx(prev.std(ddof=1))
    assert d5["flag"] is True and d5["deviation_sigma"] > 1


# --- status, files, configuration --------------------------------------------------------


async def test_status_shows_each_monitor_with_threshold_run_time_and_verdict(
    autojump_clock: trio.abc.Clock, tmp_path: Path,
) -> None:
    monitor, book, _ = make(tmp_path)
    assert status(monitor)["pnl_band"]["verdict"] == "no_data"  # before any check
    async with running(monitor):
        book.ingest([MODEL])
        await trade_days(book, [10.0])
        st = status(monitor)
    band, slip = st["pnl_band"], st["slippage"]
    assert band["threshold"] == "below the 5th percentile for 3 consecutive trading days"
    assert slip["threshold"] == "> 2 bps for 5 trading days"
    assert (band["verdict"], slip["verdict"]) == ("ok", "no_data")
    assert band["d3"]["inside_band"] is True
    assert st["last_run_at"] == T0 + CLOSE and st["next_run_at"] == T0 + DAY + CLOSE
    assert st["model"]["model_hash"] == "sha256:abc123"
    assert band["backtest"]["days"] == 10


def test_the_backtest_file_takes_samples_or_percentiles(tmp_path: Path) -> None:
    backtest, bands, sha = load_backtest(str(band_file(tmp_path / "b.json", 3)))
    assert len(backtest.days) == 3 and len(sha) == 64
    assert bands[2] == (pytest.approx(-100.0), pytest.approx(-10.0), pytest.approx(80.0))
    assert bands[3] == (-150.0, 30.0, 210.0)
    _, other = parse_backtest('{"days": [{"day": 1, "percentiles": {"2.5": -9, "50": 0}}]}',
                              percentile=2.5)
    assert other[1] == (-9.0, 0.0, None)


@pytest.mark.parametrize(("text", "message"), [
    ('{"days": [{"day": 1, "samples": [1.0], "percentiles": {"5": 1.0}}]}',
     "bt.json: day 1: give exactly one of samples or percentiles - at `$.days[0]`"),
    ('{"days": [{"day": 1, "sample": [1.0]}]}',
     "bt.json: Object contains unknown field `sample` - at `$.days[0]`"),
    ('{"days": [{"day": 0, "samples": [1.0]}]}',
     "bt.json: Expected `int` >= 1 - at `$.days[0].day`"),
    ('{"days": [{"day": 1, "samples": [1.0]}, {"day": 2, "samples": ["x"]}]}',
     "bt.json: Expected `float`, got `str` - at `$.days[1].samples[0]`"),
    ('{"days": [{"day": 1, "samples": []}]}',
     "bt.json: day 1: samples must not be empty - at `$.days[0]`"),
    ('{"days": [{"day": 1, "samples": [1]}, {"day": 1, "samples": [2]}]}',
     "bt.json: day 1 is given twice"),
    ("{}", "bt.json: Object missing required field `days`"),
])
def test_backtest_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_backtest(text, source="bt.json")
    assert str(info.value) == message


def test_an_unreadable_backtest_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_backtest(str(tmp_path / "none.json"))
    assert str(info.value) == (f"cannot read backtest file {tmp_path / 'none.json'}: "
                               "No such file or directory")


@pytest.mark.parametrize(("toml", "message"), [
    ("band_percentile = 60\n", "band_percentile must be in (0, 50), got 60.0"),
    ("band_days = 0\n", "band_days must be >= 1"),
    ('start = "March"\n', "start must be a date 'YYYY-MM-DD', got 'March'"),
    ('pnl_value = "weekly"\n',
     "Invalid enum value 'weekly' - at `$.pnl_value`"),
    ("slippage_bp = 2\n", "Object contains unknown field `slippage_bp`"),
])
def test_config_errors_name_the_key(toml: str, message: str) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.toml.decode(toml, type=PnlMonitorConfig)
    assert str(info.value) == message


def test_config_defaults_follow_the_seed() -> None:
    cfg = msgspec.toml.decode(b"", type=PnlMonitorConfig)
    assert (cfg.band_percentile, cfg.band_days) == (5.0, 3)  # playbook 02 pnl-divergence
    assert (cfg.slippage_bps, cfg.slippage_days) == (2.0, 5)  # playbook 04 slippage
    assert cfg.d5_sigma == 1.0  # playbook 05 D5


async def test_other_telemetry_is_ignored(tmp_path: Path) -> None:
    monitor, book, _ = make(tmp_path, at=T0)
    events: list[TelemetryEvent] = [
        Bar(symbol="AAPL", ts=T0, vendor="primary"), Pnl(ts=T0, value=1.0),
        Order(order_id="x", symbol="AAPL", side="buy", qty=1.0, ts=T0)]
    book.ingest(events)
    assert (monitor.daily, monitor.slippage, monitor.unpriced) == (
        {int(T0 // DAY): (T0, 1.0)}, {}, {})
