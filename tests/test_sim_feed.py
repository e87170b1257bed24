"""The market-data feed simulator: bars from trio time, stall and lag faults."""

from __future__ import annotations

import itertools
import sys
from collections.abc import AsyncIterator
from subprocess import PIPE

import httpx
import pytest
import trio

from simulators.feed import Bar, FeedSimulator, Lag, Stall, main, serve_feed

WALL = 1_700_000_000.0


def fixed_wall() -> float:
    return WALL


# ---- in process, on the autojump clock: exact times ----


async def test_one_bar_per_interval_stamped_from_the_wall_clock(
    autojump_clock: trio.abc.Clock,
) -> None:
    feed = FeedSimulator(["AAPL", "MSFT"], bar_interval_s=1.0, wall_clock=fixed_wall)
    feed.start()
    first = feed.latest("primary", "AAPL")
    assert first is not None and first.ts == WALL
    await trio.sleep(3)
    latest = feed.latest("primary", "AAPL")
    assert latest is not None
    assert (latest.symbol, latest.vendor, latest.ts) == ("AAPL", "primary", WALL + 3)
    assert [b.ts for b in feed.bars("primary", "AAPL", since=WALL)] == [
        WALL + 1,
        WALL + 2,
        WALL + 3,
    ]


async def test_bars_are_well_formed_and_chain(autojump_clock: trio.abc.Clock) -> None:
    feed = FeedSimulator(["AAPL"], wall_clock=fixed_wall)
    feed.start()
    await trio.sleep(20)
    bars = feed.bars("primary", "AAPL")
    assert len(bars) == 21
    for before, after in itertools.pairwise(bars):
        assert after.open == before.close
    for bar in bars:
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        assert bar.volume > 0


async def test_vendors_agree_and_runs_repeat_with_the_seed(autojump_clock: trio.abc.Clock) -> None:
    feeds = [FeedSimulator(["AAPL"], wall_clock=fixed_wall, seed=3) for _ in range(2)]
    for feed in feeds:
        feed.start()
    await trio.sleep(5)
    a, b = (feed.latest("primary", "AAPL") for feed in feeds)
    backup = feeds[0].latest("backup", "AAPL")
    assert a == b
    assert a is not None and backup is not None and backup.close == a.close


async def test_stall_freezes_one_vendor_and_symbol(autojump_clock: trio.abc.Clock) -> None:
    feed = FeedSimulator(["AAPL", "MSFT"], wall_clock=fixed_wall)
    feed.start()
    await trio.sleep(2)
    feed.faults.set(Stall(vendor="primary", symbols=("AAPL",)))
    await trio.sleep(10)
    assert ts(feed.latest("primary", "AAPL")) == WALL + 2
    assert ts(feed.latest("primary", "MSFT")) == WALL + 12
    assert ts(feed.latest("backup", "AAPL")) == WALL + 12
    feed.faults.clear("stall")
    assert ts(feed.latest("primary", "AAPL")) == WALL + 12  # the vendor catches up


async def test_stall_with_nulls_freezes_every_vendor(autojump_clock: trio.abc.Clock) -> None:
    feed = FeedSimulator(["AAPL", "MSFT"], wall_clock=fixed_wall)
    feed.start()
    feed.faults.set(Stall())
    await trio.sleep(5)
    assert {ts(feed.latest(v, s)) for v in feed.vendors for s in feed.symbols} == {WALL}


async def test_lag_serves_bars_seconds_old(autojump_clock: trio.abc.Clock) -> None:
    feed = FeedSimulator(["AAPL"], wall_clock=fixed_wall)
    feed.start()
    await trio.sleep(60)
    feed.faults.set(Lag(seconds=30, vendor="backup"))
    assert ts(feed.latest("backup", "AAPL")) == WALL + 30
    assert ts(feed.latest("primary", "AAPL")) == WALL + 60
    await trio.sleep(5)
    assert ts(feed.latest("backup", "AAPL")) == WALL + 35  # late, but still moving


async def test_lag_longer_than_the_feed_has_run_shows_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    feed = FeedSimulator(["AAPL"], wall_clock=fixed_wall)
    feed.start()
    feed.faults.set(Lag(seconds=10))
    await trio.sleep(3)
    assert feed.latest("primary", "AAPL") is None
    assert feed.bars("primary", "AAPL") == []


async def test_a_long_quiet_spell_keeps_only_recent_history(
    autojump_clock: trio.abc.Clock,
) -> None:
    feed = FeedSimulator(["AAPL"], bar_interval_s=1.0, wall_clock=fixed_wall)
    feed.start()
    await trio.sleep(50_000)
    bars = feed.bars("primary", "AAPL", limit=5)
    assert len(bars) == 5
    assert ts(feed.latest("primary", "AAPL")) == WALL + 50_000


def ts(bar: Bar | None) -> float:
    assert bar is not None
    return bar.ts


async def test_bad_construction_is_refused() -> None:
    with pytest.raises(ValueError, match="bar_interval_s must be positive"):
        FeedSimulator(["AAPL"], bar_interval_s=0)
    with pytest.raises(ValueError, match="at least one symbol"):
        FeedSimulator([])


# ---- over HTTP (real sockets, real time) ----


@pytest.fixture
async def feed_and_client(
    nursery: trio.Nursery,
) -> AsyncIterator[tuple[FeedSimulator, httpx.AsyncClient]]:
    feed = FeedSimulator(["AAPL", "MSFT"], bar_interval_s=0.05, wall_clock=trio.current_time)
    url = await nursery.start(serve_feed, feed)
    async with httpx.AsyncClient(base_url=url) as client:
        yield feed, client


async def latest_ts(client: httpx.AsyncClient, vendor: str, symbol: str) -> float:
    response = await client.get("/v1/bars/latest", params={"vendor": vendor, "symbols": symbol})
    [bar] = response.json()["bars"]
    return float(bar["ts"])


async def test_latest_bars_over_http_advance(
    feed_and_client: tuple[FeedSimulator, httpx.AsyncClient],
) -> None:
    _, client = feed_and_client
    with trio.fail_after(5):
        response = await client.get("/v1/bars/latest")
        bars = response.json()["bars"]
        assert response.status_code == 200
        assert [(b["symbol"], b["vendor"]) for b in bars] == [
            ("AAPL", "primary"),
            ("MSFT", "primary"),
        ]
        assert set(bars[0]) == {"symbol", "vendor", "ts", "o", "h", "l", "c", "v"}
        before = await latest_ts(client, "backup", "MSFT")
        await trio.sleep(0.15)
        assert await latest_ts(client, "backup", "MSFT") > before


async def test_bars_since_over_http(
    feed_and_client: tuple[FeedSimulator, httpx.AsyncClient],
) -> None:
    _, client = feed_and_client
    with trio.fail_after(5):
        await trio.sleep(0.2)
        everything = (await client.get("/v1/bars", params={"symbol": "AAPL"})).json()["bars"]
        assert len(everything) >= 4
        since = everything[1]["ts"]
        later = await client.get(
            "/v1/bars", params={"symbol": "AAPL", "vendor": "backup", "since": str(since)}
        )
    stamps = [b["ts"] for b in later.json()["bars"]]
    assert stamps and stamps == sorted(stamps) and stamps[0] > since
    assert {b["vendor"] for b in later.json()["bars"]} == {"backup"}


async def test_stall_and_lag_over_http(
    feed_and_client: tuple[FeedSimulator, httpx.AsyncClient],
) -> None:
    _, client = feed_and_client
    with trio.fail_after(5):
        put = await client.put(
            "/sim/fault", json={"kind": "stall", "vendor": "primary", "symbols": ["AAPL"]}
        )
        assert put.status_code == 200
        stalled = await latest_ts(client, "primary", "AAPL")
        moving = await latest_ts(client, "primary", "MSFT")
        await trio.sleep(0.2)
        assert await latest_ts(client, "primary", "AAPL") == stalled
        assert await latest_ts(client, "primary", "MSFT") > moving
        await client.delete("/sim/fault")
        await client.put("/sim/fault", json={"kind": "lag", "vendor": None, "seconds": 0.1})
        lagging = await latest_ts(client, "primary", "MSFT")
        # The fixture's wall clock is trio time, so a bar's age is exact arithmetic.
        assert trio.current_time() - lagging >= 0.1
        await client.delete("/sim/fault/lag")
        assert trio.current_time() - await latest_ts(client, "primary", "MSFT") < 0.1


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"vendor": "nobody"}, 400, "unknown vendor 'nobody'; known vendors: primary, backup"),
        ({"symbols": "AAPL,ZZZ"}, 400, "unknown symbols: ZZZ"),
    ],
)
async def test_bad_latest_query_is_400(
    feed_and_client: tuple[FeedSimulator, httpx.AsyncClient],
    params: dict[str, str],
    status: int,
    message: str,
) -> None:
    _, client = feed_and_client
    with trio.fail_after(5):
        response = await client.get("/v1/bars/latest", params=params)
    assert (response.status_code, response.json()) == (status, {"error": message})


async def test_bad_routes_and_queries(
    feed_and_client: tuple[FeedSimulator, httpx.AsyncClient],
) -> None:
    _, client = feed_and_client
    with trio.fail_after(5):
        missing_symbol = await client.get("/v1/bars")
        bad_since = await client.get("/v1/bars", params={"symbol": "AAPL", "since": "soon"})
        nan_since = await client.get("/v1/bars", params={"symbol": "AAPL", "since": "nan"})
        unknown = await client.get("/v2/clock")
        wrong = await client.post("/v1/bars/latest", content=b"\x00garbage")
    assert missing_symbol.json() == {"error": "unknown or missing symbol ''"}
    assert bad_since.status_code == nan_since.status_code == 400
    assert unknown.status_code == 404
    assert wrong.status_code == 405


async def test_command_line_serves_the_feed() -> None:
    argv = [sys.executable, "-m", "simulators.feed", "--port", "0", "--symbols", "AAPL,SPY"]
    with trio.fail_after(10):
        process = await trio.lowlevel.open_process(argv, stdout=PIPE)
        try:
            assert process.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                line += await process.stdout.receive_some(256)
            async with httpx.AsyncClient(base_url=line.decode().strip()) as client:
                bars = (await client.get("/v1/bars/latest")).json()["bars"]
            assert [b["symbol"] for b in bars] == ["AAPL", "SPY"]
        finally:
            process.terminate()
            await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


def test_command_line_refuses_an_empty_symbol_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--symbols", ","]) == 2
    assert "at least one symbol" in capsys.readouterr().err
