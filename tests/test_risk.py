"""Risk limits (playbook 02 risk-breach; playbook 06 principle 08; playbook 04 per-symbol
concentration).

Thresholds run on trio's MockClock with a wall clock tied to it (``T0`` + virtual time);
auto-flatten runs against real venue simulators over HTTP on 127.0.0.1.
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

from actors.base import AlertRaised, Finding, Report
from actors.risk import (
    Limits,
    RiskActor,
    load_limits,
    looser,
    parse_limits,
)
from simulators.venue import Outage, VenueSimulator, serve_venue
from supervisor.config import FlattenConfig, RiskConfig
from supervisor.core.book import Book
from supervisor.core.errors import ConfigError
from supervisor.core.protocol import Fill, Pnl, Position, TelemetryEvent
from supervisor.runtime.flatten import FLATTEN_PREFIX, Flattener
from supervisor.venues.alpaca import HttpVenue

T0 = 1_709_553_600.0  # 2024-03-04T12:00:00Z: virtual time 0; the UTC day closes at 43200
DAY = 86_400
TODAY = int(T0 // DAY) * DAY  # 2024-03-04T00:00:00Z

EXAMPLE = """\
[limits]
max_position = 1000          # shares, any symbol (absolute position)
daily_drawdown = 50000.0     # currency: the day's PnL floor is -daily_drawdown
var_1d = 100000.0            # 1-day VaR ceiling (currency, positive)
concentration = 0.25         # single-name cap
[limits.max_position_by_symbol]
AAPL = 500
"""


class Runtime:
    """What the runtime gives the actor: report, note and the live risk-breach scopes."""

    def __init__(self) -> None:
        self.items: list[tuple[float, Report]] = []
        self.notes: list[str] = []
        self.live: set[str] = set()
        self.noted = trio.Event()

    async def report(self, item: Report) -> None:
        self.items.append((trio.current_time(), item))

    async def note(self, text: str) -> None:
        self.notes.append(text)
        self.noted.set()

    def breached(self) -> set[str]:
        return set(self.live)

    def findings(self) -> list[tuple[float, Finding]]:
        return [(t, i) for t, i in self.items if isinstance(i, Finding)]

    def alerts(self) -> list[tuple[float, AlertRaised]]:
        return [(t, i) for t, i in self.items if isinstance(i, AlertRaised)]


def make(
    tmp_path: Path,
    limits: str | None = EXAMPLE,
    *,
    venues: Sequence[HttpVenue] = (),
    **config: Any,
) -> tuple[RiskActor, Book, Runtime]:
    path = tmp_path / "limits.toml"
    if limits is not None:
        path.write_text(limits)
    rt, book = Runtime(), Book(clock=trio.current_time)
    flattener = Flattener(venues, FlattenConfig())
    actor = RiskActor(
        RiskConfig(limits=str(path), **config), book, venues, rt.report,
        wall_clock=lambda: T0 + trio.current_time(), breached_limits=rt.breached,
        note=rt.note,
        # as the desk wires it: the one flatten path, its lines noted as the risk's
        flatten=lambda targets: flattener.flatten(
            note=lambda text: rt.note(f"auto-{text}"), targets=targets),
    )
    book.subscribe(actor.on_telemetry)
    return actor, book, rt


@asynccontextmanager
async def running(actor: RiskActor) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        yield
        nursery.cancel_scope.cancel()


def pos(symbol: str, qty: float) -> Position:
    return Position(symbol=symbol, qty=qty)


def fill(symbol: str, side: str, qty: float, price: float, ts: float = T0) -> Fill:
    return Fill(order_id=f"o-{symbol}-{side}-{qty}-{price}-{ts}", symbol=symbol,
                side=side, qty=qty, price=price, ts=ts)  # type: ignore[arg-type]


def status(actor: RiskActor) -> dict[str, Any]:
    return actor.status()


async def feed(book: Book, *events: TelemetryEvent) -> None:
    book.ingest(list(events))
    await trio.sleep(0.01)  # let the run loop check (it coalesces batches for 5 ms)


# --- the limits file -------------------------------------------------------------------


def test_limits_file_decodes_every_limit(tmp_path: Path) -> None:
    (tmp_path / "l.toml").write_text(EXAMPLE)
    limits = load_limits(str(tmp_path / "l.toml"))
    assert limits == Limits(max_position=1000.0, daily_drawdown=50000.0, var_1d=100000.0,
                            concentration=0.25, max_position_by_symbol={"AAPL": 500.0})
    assert (limits.limit_for("AAPL"), limits.limit_for("MSFT")) == (500.0, 1000.0)
    assert parse_limits("") == Limits() and Limits().limit_for("AAPL") is None


@pytest.mark.parametrize(("text", "message"), [
    ("[limits]\nmax_positon = 10\n",
     "l.toml: Object contains unknown field `max_positon` - at `$.limits`"),
    ("[limit]\nmax_position = 10\n", "l.toml: Object contains unknown field `limit`"),
    ("[limits]\nmax_position = -1\n",
     "l.toml: max_position must be a finite number >= 0, got -1.0 - at `$.limits`"),
    ("[limits]\ndaily_drawdown = 0\n",
     "l.toml: daily_drawdown must be a finite number > 0, got 0.0 - at `$.limits`"),
    ("[limits]\nvar_1d = \"lots\"\n",
     "l.toml: Expected `float | null`, got `str` - at `$.limits.var_1d`"),
    ("[limits]\nconcentration = 1.5\n",
     "l.toml: concentration must be in (0, 1], got 1.5 - at `$.limits`"),
    ("[limits]\nmax_position = inf\n",
     "l.toml: max_position must be a finite number >= 0, got inf - at `$.limits`"),
    ("[limits.max_position_by_symbol]\nAAPL = -5\n",
     "l.toml: max_position_by_symbol.AAPL must be a finite number >= 0, got -5.0 - at "
     "`$.limits`"),
])
def test_limits_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_limits(text, source="l.toml")
    assert str(info.value) == message


def test_limits_file_that_is_not_toml_or_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^l.toml: not valid TOML: "):
        parse_limits("[limits\n", source="l.toml")
    with pytest.raises(ConfigError) as info:
        load_limits(str(tmp_path / "none.toml"))
    assert str(info.value) == (
        f"cannot read limits file {tmp_path / 'none.toml'}: No such file or directory")


def test_hash_is_stable_across_formatting() -> None:
    reformatted = """
    # the same limits, other order, ints for floats, no comments
    [limits.max_position_by_symbol]
    AAPL = 500.0
    [limits]
    concentration = 0.25
    var_1d = 100000
    daily_drawdown = 50000
    max_position = 1000.0
    """
    a, b = parse_limits(EXAMPLE), parse_limits(reformatted.replace("    ", ""))
    assert a.hash == b.hash and len(a.hash) == 64
    assert parse_limits(EXAMPLE.replace("AAPL = 500", "AAPL = 501")).hash != a.hash


@pytest.mark.parametrize(("new", "expected"), [
    ({"max_position_by_symbol": {"AAPL": 800.0}}, ["max_position AAPL 500 -> 800"]),
    ({"daily_drawdown": 80000.0}, ["daily_drawdown 50000 -> 80000"]),
    ({"var_1d": None}, ["var_1d 100000 -> removed"]),
    ({"concentration": 0.3}, ["concentration 0.25 -> 0.3"]),
    # The symbol falls back to the default limit: 500 -> 1000 for AAPL.
    ({"max_position_by_symbol": {}}, ["max_position AAPL 500 -> 1000"]),
    # A new per-symbol limit above the default loosens that symbol.
    ({"max_position_by_symbol": {"AAPL": 500.0, "MSFT": 2000.0}},
     ["max_position MSFT 1000 -> 2000"]),
    ({"max_position": None},
     ["max_position 1000 -> removed"]),
    # Tightening, adding a limit, or only reformatting loosens nothing.
    ({"max_position": 900.0, "daily_drawdown": 1.0, "concentration": 0.1}, []),
    ({"max_position_by_symbol": {"AAPL": 500.0, "MSFT": 10.0}}, []),
])
def test_looser_names_each_loosened_limit(new: dict[str, Any], expected: list[str]) -> None:
    old = parse_limits(EXAMPLE)
    assert looser(msgspec.structs.replace(old, **new), old) == expected


def test_looser_against_no_limits_lists_everything() -> None:
    assert looser(Limits(), parse_limits(EXAMPLE)) == [
        "max_position 1000 -> removed", "max_position AAPL 500 -> removed",
        "daily_drawdown 50000 -> removed", "var_1d 100000 -> removed",
        "concentration 0.25 -> removed",
    ]
    assert looser(parse_limits(EXAMPLE), Limits()) == []


# --- each limit, at its number and just past it ---------------------------------------


async def test_max_position_breaches_past_the_limit_not_at_it(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    actor, book, rt = make(tmp_path)
    async with running(actor):
        await trio.sleep(10)
        await feed(book, pos("AAPL", 500), pos("MSFT", -1000))
        assert rt.findings() == []
        await feed(book, pos("AAPL", -501))
    ((t, finding),) = rt.findings()
    assert t == 10.01 and finding.scope == "limit:max_position:AAPL"  # as the batch came
    assert finding.incident_class == "risk-breach"
    assert finding.summary == "max_position AAPL crossed: position -501 shares, limit 500"
    assert finding.evidence == {"symbol": "AAPL", "position": -501.0, "limit": 500.0}


async def test_a_breach_is_reported_once_per_episode(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    actor, book, rt = make(tmp_path)
    async with running(actor):
        await feed(book, pos("MSFT", 1001))
        await feed(book, pos("MSFT", 1500))  # the same episode
        assert len(rt.findings()) == 1
        assert status(actor)["breaches"] == {
            "limit:max_position:MSFT": "max_position MSFT crossed: position 1500 shares, "
                                       "limit 1000"}
        await feed(book, pos("MSFT", 1000))  # back within: re-armed
        assert status(actor)["breaches"] == {}
        await feed(book, pos("MSFT", 1001))
    assert [f.scope for _, f in rt.findings()] == ["limit:max_position:MSFT"] * 2


async def test_daily_drawdown_breaches_below_the_floor_not_at_it(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    actor, book, rt = make(tmp_path)
    async with running(actor):
        # Yesterday's loss is not today's PnL.
        await feed(book, Pnl(ts=T0 - DAY, value=-90000.0), Pnl(ts=T0, value=-50000.0))
        assert rt.findings() == []
        assert status(actor)["usage"]["daily_drawdown"] == {
            "limit": 50000.0, "floor": -50000.0, "day_pnl": -50000.0, "note": None}
        await feed(book, Pnl(ts=T0 + 1, value=-50000.01))
    ((_, finding),) = rt.findings()
    assert finding.scope == "limit:daily_drawdown"
    assert finding.summary == ("daily_drawdown crossed: day PnL -50000.01 is below the "
                               "floor -50000")


def _var_days(values: Sequence[float]) -> list[Pnl]:
    """One Pnl per completed day before today, oldest first; each day's earlier value
    is superseded by its last one."""
    n = len(values)
    out = []
    for i, v in enumerate(values):
        day = TODAY - (n - i) * DAY
        out += [Pnl(ts=day + 3600, value=-1e9), Pnl(ts=day + 20 * 3600, value=v)]
    return out


async def test_var_matches_the_hand_computed_percentile(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    # 30 days at 99 %: rank 0.01 * 29 = 0.29 between the two worst days, -2000 and -1000:
    # -2000 + 0.29 * 1000 = -1710, so VaR 1710.
    values = [-2000.0, -1000.0] + [100.0 * i for i in range(28)]
    actor, book, rt = make(tmp_path, "[limits]\nvar_1d = 1710.5\n")
    async with running(actor):
        await feed(book, *_var_days(values), Pnl(ts=T0, value=-99999.0))  # today: not used
    usage = status(actor)["usage"]["var_1d"]
    assert usage["var"] == pytest.approx(1710.0)
    assert usage["var"] == pytest.approx(-np.percentile(values, 1))
    assert (usage["days"], usage["note"]) == (30, None)
    assert rt.findings() == []


async def test_var_breaches_above_the_ceiling_not_at_it(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    # 21 days at 95 %: rank 0.05 * 20 = 1, between -3000 and -3000: VaR exactly 3000. The
    # window of 21 days leaves out the oldest, far worse, day.
    values = [-1e6, -5000.0, -3000.0, -3000.0] + [1000.0] * 18
    cfg: dict[str, Any] = {"var_window_days": 21, "var_confidence": 0.95}
    actor, book, rt = make(tmp_path, "[limits]\nvar_1d = 3000\n", **cfg)
    async with running(actor):
        await feed(book, *_var_days(values))
        assert status(actor)["usage"]["var_1d"]["var"] == 3000.0
        assert rt.findings() == []
    actor, book, rt = make(tmp_path, "[limits]\nvar_1d = 2999.99\n", **cfg)
    async with running(actor):
        await feed(book, *_var_days(values))
    ((_, finding),) = rt.findings()
    assert finding.scope == "limit:var_1d"
    assert finding.summary == ("var_1d crossed: 1-day VaR 3000.00 is above the ceiling "
                               "2999.99 (historical, 21 days at 0.95)")


async def test_var_needs_20_days(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    actor, book, rt = make(tmp_path, "[limits]\nvar_1d = 1\n")
    async with running(actor):
        await feed(book, *_var_days([-1e6] * 19))
    assert rt.findings() == []
    usage = status(actor)["usage"]["var_1d"]
    assert (usage["var"], usage["note"]) == (
        None, "needs 20 daily PnL values, has 19: not evaluated")


async def test_concentration_breaches_past_the_cap_not_at_it(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    actor, book, rt = make(tmp_path, "[limits]\nconcentration = 0.25\n")
    async with running(actor):
        await feed(book, fill("A", "buy", 1, 100.0), pos("A", 1000))
        assert status(actor)["usage"]["concentration"]["note"] == (
            "fewer than 2 names held: not evaluated")
        await feed(book, pos("B", 100))
        assert status(actor)["usage"]["concentration"]["note"] == (
            "no fill price yet for B: not evaluated")
        # Four names of 100000 each: 25 % apiece, at the cap.
        await feed(book, fill("B", "buy", 1, 50.0), fill("C", "buy", 1, 25.0),
                   fill("D", "sell", 1, 400.0),
                   pos("B", 2000), pos("C", 4000), pos("D", -250))
        assert rt.findings() == []
        await feed(book, pos("D", -251))
    ((_, finding),) = rt.findings()
    assert finding.scope == "limit:concentration:D"
    assert finding.summary == ("concentration D crossed: 25.07% of gross exposure "
                               "(100400.00 of 400400.00), cap 0.25")


async def test_without_a_limits_file_nothing_is_enforced_and_status_says_so(
    autojump_clock: trio.abc.Clock,
) -> None:
    rt, book = Runtime(), Book(clock=trio.current_time)
    actor = RiskActor(RiskConfig(), book, [], rt.report, wall_clock=lambda: T0,
                      breached_limits=rt.breached, note=rt.note)
    book.subscribe(actor.on_telemetry)
    async with running(actor):
        await feed(book, pos("AAPL", 1e9), Pnl(ts=T0, value=-1e9))
    assert rt.items == []
    status = actor.status()
    assert (status["limits"], status["limits_hash"], status["enforcement"]) == (
        None, None, "no limits file configured: no risk limits enforced")
    json.dumps(status)


# --- auto-flatten against real venue simulators ----------------------------------------


@asynccontextmanager
async def venues(*names: str) -> AsyncIterator[tuple[dict[str, VenueSimulator],
                                                     list[HttpVenue]]]:
    async with trio.open_nursery() as nursery:
        sims = {n: VenueSimulator(n, wall_clock=lambda: T0) for n in names}
        adapters = []
        for n, sim in sims.items():
            url = await nursery.start(serve_venue, sim)
            adapters.append(HttpVenue(n, url, timeout_s=2.0))
        try:
            yield sims, adapters
        finally:
            for adapter in adapters:
                await adapter.aclose()
            nursery.cancel_scope.cancel()


def held(sim: VenueSimulator) -> dict[str, float]:
    return {str(p["symbol"]): float(str(p["qty"])) for p in sim.positions()}


async def wait_for_notes(rt: Runtime, n: int) -> None:
    while len(rt.notes) < n:
        await rt.noted.wait()
        rt.noted = trio.Event()


async def test_auto_flatten_cuts_each_breach_to_exactly_its_limit(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with venues("alpha", "beta") as (sims, adapters):
            alpha, beta = sims["alpha"], sims["beta"]
            alpha.place("AAPL", 400, "buy", type="market")
            beta.place("AAPL", 300, "buy", type="market")
            beta.place("MSFT", 700, "sell", type="market")
            alpha.place("MSFT", 0.5, "buy", type="market")
            alpha.place("TSLA", 50, "buy", type="market")
            limits = "[limits]\nmax_position = 500\n[limits.max_position_by_symbol]\nAAPL = 100\n"
            actor, book, rt = make(tmp_path, limits, venues=adapters, auto_flatten=True)
            async with running(actor):
                book.ingest([pos("AAPL", 700), pos("MSFT", -699.5), pos("TSLA", 50)])
                while not any(n.startswith("auto-flatten complete") for n in rt.notes):
                    await wait_for_notes(rt, len(rt.notes) + 1)
            # AAPL: 700 held, 600 too many; the largest holder (alpha, 400) sells all it
            # holds, beta the other 200. MSFT: -699.5, beta buys 199.5. TSLA: untouched.
            assert held(alpha) == {"MSFT": 0.5, "TSLA": 50.0}
            assert held(beta) == {"AAPL": 100.0, "MSFT": -500.5}
    assert [f.scope for _, f in rt.findings()] == ["limit:max_position:AAPL",
                                                   "limit:max_position:MSFT"]
    legs = [(o["venue"], o["symbol"], o["position"], o["target"], o["state"])
            for o in actor.flatten_orders]
    assert legs == [("alpha", "AAPL", 400.0, 0.0, "done"), ("beta", "AAPL", 300.0, 100.0, "done"),
                    ("beta", "MSFT", -700.0, -500.5, "done")]
    sent = [o for o in [*alpha.orders(), *beta.orders()]
            if str(o["client_order_id"]).startswith(FLATTEN_PREFIX)]
    assert [(o["symbol"], o["side"], o["qty"], o["type"]) for o in sent] == [
        ("AAPL", "sell", "400", "limit"), ("AAPL", "sell", "200", "limit"),
        ("MSFT", "buy", "199.5", "limit")]  # marketable limits, never market orders
    assert rt.notes[:2] == [
        "auto-flatten AAPL: position 700, limit 100: cutting 400 at alpha, 200 at beta",
        "auto-flatten MSFT: position -699.5, limit 500: cutting 199.5 at beta"]
    assert any(n.startswith("auto-flatten AAPL at alpha: sell 400 limit ") for n in rt.notes)
    assert status(actor)["flatten_orders"] == list(actor.flatten_orders)


async def test_auto_flatten_sends_nothing_while_a_venue_cannot_say_what_it_holds(
    tmp_path: Path,
) -> None:
    with trio.fail_after(10):
        async with venues("alpha", "beta") as (sims, adapters):
            sims["alpha"].place("AAPL", 900, "buy", type="market")
            sims["beta"].faults.set(Outage())  # beta might hold a short: unknown is not flat
            actor, book, rt = make(tmp_path, venues=adapters, auto_flatten=True)
            async with running(actor):
                book.ingest([pos("AAPL", 900)])
                await wait_for_notes(rt, 1)
            assert held(sims["alpha"]) == {"AAPL": 900.0}
            assert sims["alpha"].requests["POST /v2/orders"] == 0
    assert rt.notes == [
        "auto-flatten AAPL: nothing sent, positions at venue beta unknown (venue beta: GET "
        "/v2/positions answered 503: service unavailable)"]
    assert [f.scope for _, f in rt.findings()] == ["limit:max_position:AAPL"]


async def test_without_auto_flatten_only_the_finding(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with venues("alpha") as (sims, adapters):
            sims["alpha"].place("AAPL", 900, "buy", type="market")
            actor, book, rt = make(tmp_path, venues=adapters, auto_flatten=False)
            async with running(actor):
                await feed(book, pos("AAPL", 900))
                await trio.sleep(0.2)
            assert held(sims["alpha"]) == {"AAPL": 900.0}
            assert sims["alpha"].requests["POST /v2/orders"] == 0
            assert sims["alpha"].requests["GET /v2/positions"] == 0
    assert [f.scope for _, f in rt.findings()] == ["limit:max_position:AAPL"]
    assert (rt.notes, status(actor)["auto_flatten"]) == ([], False)


# --- the limits file changes (principle 08) --------------------------------------------


async def test_reload_refuses_loosening_a_breached_limit_and_accepts_tightening(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    actor, book, rt = make(tmp_path)
    path = tmp_path / "limits.toml"
    async with running(actor):
        in_force = actor.limits_hash
        await feed(book, pos("AAPL", 600))
        path.write_text(EXAMPLE.replace("AAPL = 500", "AAPL = 800"))
        await trio.sleep_until(5.5)  # reloaded at 5 s
        ((t, alert),) = rt.alerts()
        assert t == 5.0 and alert.channel == "PAGE" and alert.scope == "limit:max_position:AAPL"
        assert alert.summary == (
            "max_position AAPL 500 -> 800 is refused: the limit is in breach (playbook 06 "
            "principle 08: the threshold that was breached does not get raised as part of "
            "the fix)")
        assert actor.limits_hash == in_force and actor.limits is not None
        assert actor.limits.limit_for("AAPL") == 500.0
        assert status(actor)["limits"]["max_position_by_symbol"] == {"AAPL": 500.0}
        json.dumps(status(actor))
        assert status(actor)["last_refused_reload"] == {
            "at": T0 + 5.0, "reason": alert.summary,
            "hash": parse_limits(EXAMPLE.replace("AAPL = 500", "AAPL = 800")).hash}
        await trio.sleep_until(21)
        assert len(rt.alerts()) == 1  # paged once, not at every reload
        path.write_text(EXAMPLE.replace("AAPL = 500", "AAPL = 400"))  # tighter
        await trio.sleep_until(25.5)
        assert actor.limits.limit_for("AAPL") == 400.0
        assert status(actor)["last_reload"] == {
            "at": T0 + 25.0, "hash": actor.limits_hash, "previous_hash": in_force,
            "loosened": []}
    assert len(rt.alerts()) == 1


async def test_reload_refuses_loosening_while_the_incident_is_live_then_adopts_it(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    actor, _, rt = make(tmp_path)
    path = tmp_path / "limits.toml"
    rt.live = {"limit:daily_drawdown"}  # the breach is over; its incident is not
    async with running(actor):
        path.write_text(EXAMPLE.replace("50000.0", "80000.0").replace("= 0.25", "= 0.3"))
        await trio.sleep_until(5.5)
        ((_, alert),) = rt.alerts()
        assert alert.scope == "limit:daily_drawdown"
        assert alert.summary.startswith(
            "daily_drawdown 50000 -> 80000 is refused: the limit's risk-breach incident is "
            "still live (playbook 06 principle 08")
        assert status(actor)["pending_limits_hash"] is not None
        rt.live = set()  # resolved: the next reload adopts the file, quietly
        await trio.sleep_until(10.5)
    assert actor.limits is not None and actor.limits.daily_drawdown == 80000.0
    assert status(actor)["last_reload"]["loosened"] == [
        "daily_drawdown 50000 -> 80000", "concentration 0.25 -> 0.3"]
    assert len(rt.alerts()) == 1


async def test_reload_may_loosen_a_limit_that_is_not_in_breach(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    actor, book, rt = make(tmp_path)
    async with running(actor):
        await feed(book, pos("AAPL", 600))  # AAPL in breach; MSFT's default limit is not
        (tmp_path / "limits.toml").write_text(
            EXAMPLE.replace("max_position = 1000", "max_position = 2000"))
        await trio.sleep_until(5.5)
    assert actor.limits is not None and actor.limits.max_position == 2000.0
    assert rt.alerts() == []


async def test_invalid_file_on_reload_keeps_the_old_limits_and_pages(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    actor, _, rt = make(tmp_path)
    path = tmp_path / "limits.toml"
    async with running(actor):
        in_force = parse_limits(EXAMPLE).hash
        assert actor.limits_hash == in_force
        path.write_text("[limits]\nmax_position = -5\n")
        await trio.sleep_until(12)
        ((t, alert),) = rt.alerts()
        assert t == 5.0 and alert.channel == "PAGE" and alert.scope == "limits:file"
        assert alert.summary == (
            f"risk limits file {path} refused, the limits in force stay (hash "
            f"{in_force[:12]}): {path}: max_position must be a finite number >= 0, got -5.0 "
            "- at `$.limits`")
        assert actor.limits_hash == in_force
        path.unlink()
        await trio.sleep_until(16)
    ((_, gone),) = rt.alerts()[1:]
    assert gone.summary.endswith(f"cannot read limits file {path}: No such file or directory")
    assert actor.limits_hash == in_force and rt.findings() == []


async def test_unusable_file_at_start_is_a_risk_breach_until_fixed(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    actor, book, rt = make(tmp_path, "[limits]\nmax_position = 10\nvar = 3\n")
    path = tmp_path / "limits.toml"
    async with running(actor):
        ((t, finding),) = rt.findings()
        assert t == 0 and finding.incident_class == "risk-breach"
        assert finding.scope == "limits:file"
        assert finding.summary == (f"risk limits not enforced: {path}: Object contains "
                                   "unknown field `var` - at `$.limits`")
        assert actor.limits is None
        assert status(actor)["enforcement"] == (
            f"no risk limits enforced: {path}: Object contains unknown field `var` - at "
            "`$.limits`")
        await feed(book, pos("AAPL", 600))
        path.write_text("[limits]\nmax_position = 10\nvar = 4\n")  # still invalid: no repeat
        await trio.sleep_until(6)
        assert len(rt.findings()) == 1
        path.write_text(EXAMPLE)
        await trio.sleep_until(11)
    assert actor.limits == parse_limits(EXAMPLE)
    assert status(actor)["file_error"] is None
    # Recovered: the limits apply to the book at once.
    assert [f.scope for _, f in rt.findings()] == ["limits:file", "limit:max_position:AAPL"]
    assert rt.findings()[1][0] == 10.0


async def test_missing_file_at_start_is_a_risk_breach(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    actor, _, rt = make(tmp_path, None)
    async with running(actor):
        pass
    ((_, finding),) = rt.findings()
    assert finding.summary == (f"risk limits not enforced: cannot read limits file "
                               f"{tmp_path / 'limits.toml'}: No such file or directory")


# --- per-symbol PnL concentration (playbook 04) --------------------------------------------


async def test_pnl_concentration_queues_once_per_symbol_per_day(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    actor, book, rt = make(tmp_path, "", reload_s=3600.0)
    async with running(actor):
        await feed(
            book,
            # AAPL: 100 @ 10 and 100 @ 20 cost 15 on average; 150 sold @ 35 realise 3000.
            fill("AAPL", "buy", 100, 10.0), fill("AAPL", "buy", 100, 20.0),
            fill("AAPL", "sell", 150, 35.0),
            # MSFT: short 10 @ 100, covered @ 50: +500. TSLA: long 10 @ 100, sold @ 50: -500.
            fill("MSFT", "sell", 10, 100.0), fill("MSFT", "buy", 10, 50.0),
            fill("TSLA", "buy", 10, 100.0), fill("TSLA", "sell", 10, 50.0),
        )
        assert status(actor)["pnl_concentration"] == {
            "threshold": 0.25,
            "realised_today": {"AAPL": 3000.0, "MSFT": 500.0, "TSLA": -500.0}}
        assert rt.alerts() == []  # checked at the day's close (playbook 04: daily)
        await trio.sleep_until(43200.5)
        # A late fill of the closed day re-checks it without repeating the alert.
        await feed(book, fill("AAPL", "sell", 50, 35.0, ts=T0 + 60))
        await trio.sleep_until(2 * 43200)
    ((t, alert),) = rt.alerts()
    assert t == 43200.0 and alert.channel == "QUEUE" and alert.scope == "pnl-concentration:AAPL"
    assert alert.summary == (
        "pnl concentration 2024-03-04: AAPL made 75.0% of the day's realised PnL (3000.00 of "
        "gross 4000.00), above 25%: size the name down or document why the concentration "
        "is intentional")
    assert rt.findings() == []


async def test_pnl_concentration_fires_with_one_name_too(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """playbook 04 "> 25% of daily PnL from one name": a day whose PnL all came from one
    name is 100% from it."""
    actor, book, rt = make(tmp_path, "", reload_s=3600.0)
    async with running(actor):
        await feed(book, fill("AAPL", "buy", 100, 10.0), fill("AAPL", "sell", 100, 12.0))
        await trio.sleep_until(43200.5)
    ((_, alert),) = rt.alerts()
    assert alert.scope == "pnl-concentration:AAPL"
    assert "AAPL made 100.0% of the day's realised PnL (200.00 of gross 200.00)" in (
        alert.summary)


# --- auto-flatten: on by default, for each limit a smaller position cures ---------------


async def test_auto_flatten_is_on_by_default(tmp_path: Path) -> None:
    """playbook 02 risk-breach: "The risk service auto-flattens to the next compliant
    size; do not let traders override it": no config needed."""
    with trio.fail_after(10):
        async with venues("alpha") as (sims, adapters):
            sims["alpha"].place("AAPL", 900, "buy", type="market")
            actor, book, rt = make(tmp_path, "[limits]\nmax_position = 500\n",
                                   venues=adapters)
            assert actor.config.auto_flatten is True
            async with running(actor):
                book.ingest([pos("AAPL", 900)])
                while not any(n.startswith("auto-flatten complete") for n in rt.notes):
                    await wait_for_notes(rt, len(rt.notes) + 1)
            assert held(sims["alpha"]) == {"AAPL": 500.0}


async def test_a_concentration_breach_cuts_the_name_to_exactly_its_cap(tmp_path: Path) -> None:
    """AAPL 300 and MSFT 100 at 10: AAPL is 75% of gross 4000 against a 50% cap; cut to
    the value v with v / (1000 + v) = 0.5: v = 1000, 100 shares."""
    with trio.fail_after(10):
        async with venues("alpha") as (sims, adapters):
            sims["alpha"].place("AAPL", 300, "buy", type="market")
            sims["alpha"].place("MSFT", 100, "buy", type="market")
            actor, book, rt = make(tmp_path, "[limits]\nconcentration = 0.5\n",
                                   venues=adapters)
            async with running(actor):
                book.ingest([fill("AAPL", "buy", 300, 10.0), fill("MSFT", "buy", 100, 10.0),
                             pos("AAPL", 300), pos("MSFT", 100)])
                while not any(n.startswith("auto-flatten complete") for n in rt.notes):
                    await wait_for_notes(rt, len(rt.notes) + 1)
            assert held(sims["alpha"]) == {"AAPL": 100.0, "MSFT": 100.0}
    assert rt.notes[0] == ("auto-flatten AAPL: position 300, concentration cap 0.5: "
                           "cutting 200 at alpha")


async def test_a_var_breach_scales_every_position_down_in_proportion(tmp_path: Path) -> None:
    """VaR 3000 against a 1500 ceiling: every position halves (VaR scales with size)."""
    values = [-1e6, -5000.0, -3000.0, -3000.0] + [1000.0] * 18
    cfg: dict[str, Any] = {"var_window_days": 21, "var_confidence": 0.95}
    with trio.fail_after(10):
        async with venues("alpha", "beta") as (sims, adapters):
            sims["alpha"].place("AAPL", 100, "buy", type="market")
            sims["beta"].place("MSFT", 50, "sell", type="market")
            actor, book, rt = make(tmp_path, "[limits]\nvar_1d = 1500\n", venues=adapters,
                                   **cfg)
            async with running(actor):
                book.ingest([*_var_days(values)])
                while not any(n.startswith("auto-flatten complete") for n in rt.notes):
                    await wait_for_notes(rt, len(rt.notes) + 1)
            assert held(sims["alpha"]) == {"AAPL": 50.0}
            assert held(sims["beta"]) == {"MSFT": -25.0}


async def test_a_drawdown_breach_halts_but_flattens_nothing_by_itself(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with venues("alpha") as (sims, adapters):
            sims["alpha"].place("AAPL", 100, "buy", type="market")
            actor, book, rt = make(tmp_path, "[limits]\ndaily_drawdown = 1000\n",
                                   venues=adapters)
            async with running(actor):
                await feed(book, Pnl(ts=actor.wall(), value=-5000.0))
                await trio.sleep(0.5)
            assert [f.scope for _, f in rt.findings()] == ["limit:daily_drawdown"]
            assert held(sims["alpha"]) == {"AAPL": 100.0}
            assert sims["alpha"].requests["POST /v2/orders"] == 0
