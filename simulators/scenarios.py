"""Scripted fault scenarios, one per incident class, with the playbook's expected answer.

A scenario breaks the simulated world on purpose (a venue down, acks silent, a feed
stalled, a position past its limit), then watches the desk until the playbook's
response is visible, and returns the timeline of what the desk did: findings,
incidents, mode changes, alerts and actions. ``desk-supervisor demo --scenario NAME``
plays one against the demo desk; tests play each one on trio's MockClock.

The world is reached through ``World``, so the same scenario runs against the demo
(simulators in-process, the desk over its control socket) and in tests (everything
in-process).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from .feed import FeedSimulator, Stall
from .venue import Outage, SilentAcks, VenueSimulator


class World(Protocol):
    """What a scenario may touch: the simulators, the engine's telemetry, the status."""

    venues: dict[str, VenueSimulator]
    feed: FeedSimulator

    async def telemetry(self, events: list[dict[str, Any]]) -> None: ...

    async def status(self) -> dict[str, Any]: ...

    def wall(self) -> float:
        """Epoch seconds, as the desk's clock reads them."""
        ...


Action = Callable[[World], Awaitable[None]]
Check = Callable[[dict[str, Any]], str | None]  # None: the response is there; else what is missing


@dataclass(frozen=True)
class Step:
    after_s: float  # seconds after the previous step
    what: str
    action: Action


@dataclass(frozen=True)
class Scenario:
    name: str
    incident_class: str
    summary: str
    steps: tuple[Step, ...]
    expect: Check
    within_s: float = 30.0  # DESIGN.md: each fault shows its incident within 30 s


@dataclass
class Outcome:
    scenario: str
    ok: bool
    missing: str | None
    timeline: list[tuple[float, str]] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"scenario {self.scenario}:"]
        lines += [f"  +{t:6.2f}s  {text}" for t, text in self.timeline]
        lines.append("  => " + ("the playbook's response is in force" if self.ok
                                else f"NOT in force: {self.missing}"))
        return "\n".join(lines)


# --- checks -------------------------------------------------------------------------------


def _incident(st: dict[str, Any], cls: str, severity: str, scope: str | None = None
              ) -> dict[str, Any] | None:
    for inc in st.get("incidents", []):
        if inc["class"] == cls and inc["severity"] == severity and inc["state"] != "resolved":
            if scope is None or inc["scope"] == scope:
                return inc
    return None


def expect_halted_by(cls: str, scope: str | None = None) -> Check:
    """A P0 of ``cls``: HALTED, the switch latched, every venue flat (seed 02: P0 stops)."""

    def check(st: dict[str, Any]) -> str | None:
        if _incident(st, cls, "P0", scope) is None:
            return f"no open {cls} P0" + (f" in {scope}" if scope else "")
        if st["mode"] != "HALTED" or not st["kill"]["latched"]:
            return f"mode is {st['mode']}, not HALTED"
        venues = st["kill"].get("venues") or {}
        busy = {n: v.get("open_orders") for n, v in venues.items() if v.get("open_orders")}
        if busy:
            return f"venues still hold open orders: {busy}"
        return None

    return check


def expect_suppressed(symbol: str) -> Check:
    """seed 03 missing-data Q1 "isolated to one symbol" -> suppress it; P2; keep trading."""

    def check(st: dict[str, Any]) -> str | None:
        if _incident(st, "stale-data", "P2", f"symbol:{symbol}") is None:
            return f"no open stale-data P2 for {symbol}"
        if symbol not in st.get("gate", {}).get("suppressed", []):
            return f"{symbol} is not suppressed"
        if st["mode"] == "HALTED":
            return "the desk halted for one stale symbol"
        return None

    return check


def expect_failover(primary: str, backup: str) -> Check:
    """seed 03 missing-data Q3 "Is the backup data vendor healthy?" YES -> fail over."""

    def check(st: dict[str, Any]) -> str | None:
        if (st.get("freshness") or {}).get("active_vendor") != backup:
            return f"still on vendor {(st.get('freshness') or {}).get('active_vendor')}"
        if _incident(st, "stale-data", "P2", f"vendor:{primary}") is None:
            return f"no stale-data incident for vendor {primary}"
        if st["mode"] == "HALTED":
            return "the desk halted although the backup vendor is healthy"
        # "an event and an alert": on-call is woken for a failover.
        return expect_alert("PAGE", "failed over")(st)

    return check


def expect_alert(channel: str, words: str) -> Check:
    def check(st: dict[str, Any]) -> str | None:
        for a in st.get("alerts", {}).get("recent", []):
            if a["channel"] == channel and words in a["summary"]:
                return None
        return f"no {channel} alert about {words!r}"

    return check


def _telemetry(events: Callable[[float], list[dict[str, Any]]]) -> Action:
    async def act(world: World) -> None:
        await world.telemetry(events(world.wall()))

    return act


def _var_history(now: float) -> list[dict[str, Any]]:
    # 30 past trading days of daily PnL with fat losses: a historical 99% 1-day VaR far
    # above the demo's 100,000 ceiling.
    day = 86_400.0
    values = [(-250_000.0 if k % 5 == 0 else 10_000.0) for k in range(1, 31)]
    return [{"kind": "pnl", "ts": now - k * day, "value": v} for k, v in
            zip(range(1, 31), values, strict=True)]


# --- the scenarios ------------------------------------------------------------------------


def _set_fault(venue: str, fault: Any) -> Action:
    async def act(world: World) -> None:
        world.venues[venue].faults.set(fault)

    return act


def _stall(vendor: str | None, symbols: list[str] | None) -> Action:
    async def act(world: World) -> None:
        world.feed.faults.set(Stall(vendor=vendor, symbols=symbols))

    return act


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            name="broker-outage-venue-down",
            incident_class="broker-outage",
            summary="venue alpha answers 503 to everything: the heartbeat fails 3 times in "
                    "its window -> broker-outage P0 -> kill-switch (seed 02)",
            steps=(Step(0.0, "PUT /sim/fault outage on venue alpha",
                        _set_fault("alpha", Outage())),),
            expect=expect_halted_by("broker-outage", "venue:alpha"),
        ),
        Scenario(
            name="broker-outage-silent-acks",
            incident_class="broker-outage",
            summary="venue beta accepts orders and never acknowledges them: ack latency "
                    "over 5x baseline -> broker-outage P0 -> kill-switch (seed 02)",
            steps=(Step(0.0, "PUT /sim/fault silent_acks on venue beta",
                        _set_fault("beta", SilentAcks())),),
            expect=expect_halted_by("broker-outage", "venue:beta"),
        ),
        Scenario(
            name="stale-data-symbol",
            incident_class="stale-data",
            summary="AAPL stops printing on every vendor: isolated to one symbol -> suppress "
                    "it, P2, the rest of the book trades on (seed 03 missing-data)",
            steps=(Step(0.0, "feed stall: every vendor, AAPL only",
                        _stall(None, ["AAPL"])),),
            expect=expect_suppressed("AAPL"),
        ),
        Scenario(
            name="stale-data-primary",
            incident_class="stale-data",
            summary="the primary vendor stops, the backup is healthy: fail over to the "
                    "backup and page (seed 03 missing-data Q3 YES)",
            steps=(Step(0.0, "feed stall: vendor primary, every symbol",
                        _stall("primary", None)),),
            expect=expect_failover("primary", "backup"),
        ),
        Scenario(
            name="stale-data-both",
            incident_class="stale-data",
            summary="both vendors stop: stale-data P0 -> kill-switch (seed 03 missing-data "
                    "Q3 NO: \"Both vendors down. Stop trading.\")",
            steps=(Step(0.0, "feed stall: every vendor, every symbol", _stall(None, None)),),
            expect=expect_halted_by("stale-data", "feed"),
        ),
        Scenario(
            name="risk-breach-position",
            incident_class="risk-breach",
            summary="the engine reports 5,000 AAPL against a 1,000 limit: risk-breach P0 -> "
                    "kill-switch (seed 02 risk-breach)",
            steps=(Step(0.0, "engine reports position AAPL 5000", _telemetry(
                lambda now: [{"kind": "position", "symbol": "AAPL", "qty": 5000}])),),
            expect=expect_halted_by("risk-breach", "limit:max_position:AAPL"),
        ),
        Scenario(
            name="risk-breach-drawdown",
            incident_class="risk-breach",
            summary="the day's PnL falls to -60,000 against a 50,000 drawdown floor: "
                    "risk-breach P0 -> kill-switch (seed 02 risk-breach)",
            steps=(Step(0.0, "engine reports PnL -60000", _telemetry(
                lambda now: [{"kind": "pnl", "ts": now, "value": -60_000.0}])),),
            expect=expect_halted_by("risk-breach", "limit:daily_drawdown"),
        ),
        Scenario(
            name="risk-breach-var",
            incident_class="risk-breach",
            summary="30 days of PnL history put the 1-day historical VaR past its 100,000 "
                    "ceiling: risk-breach P0 -> kill-switch (seed 02 risk-breach)",
            steps=(Step(0.0, "engine reports 30 days of daily PnL with fat losses",
                        _telemetry(_var_history)),),
            expect=expect_halted_by("risk-breach", "limit:var_1d"),
        ),
    ]
}

# The limits the demo desk runs with (its limits file), so the risk scenarios cross them.
DEMO_LIMITS = """\
[limits]
max_position = 1000
daily_drawdown = 50000.0
var_1d = 100000.0
"""


# --- playing -----------------------------------------------------------------------------


def _diff(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """What changed between two statuses, in the desk's vocabulary."""
    out: list[str] = []
    old_incidents = {i["id"]: i for i in (old or {}).get("incidents", [])}
    for inc in new.get("incidents", []):
        before = old_incidents.get(inc["id"])
        if before is None:
            out.append(f"incident {inc['id']} opened: {inc['class']} {inc['severity']} "
                       f"{inc['scope']} by {inc['opened_by']}: {inc['summary']}")
        elif before["findings"] != inc["findings"]:
            out.append(f"incident {inc['id']}: finding joined ({inc['findings']})")
    if old is None or old["mode"] != new["mode"] or (
            old["size_multiplier"] != new["size_multiplier"]):
        out.append(f"mode {new['mode']} size {new['size_multiplier']:.2f}")
    kill, old_kill = new["kill"], (old or {}).get("kill", {})
    if kill.get("latched") and not old_kill.get("latched"):
        out.append(f"kill-switch latched by {kill['by']}: {kill['reason']}")
    if kill.get("verified") and not old_kill.get("verified"):
        out.append(f"kill verified: {kill['verify_detail']}")
    old_alerts = {(a["ts"], a["summary"]) for a in (old or {}).get("alerts", {}).get("recent", [])}
    for a in new.get("alerts", {}).get("recent", []):
        if (a["ts"], a["summary"]) not in old_alerts and old is not None:
            out.append(f"alert {a['channel']}: {a['summary']}")
    old_sup = set((old or {}).get("gate", {}).get("suppressed", []))
    new_sup = set(new.get("gate", {}).get("suppressed", []))
    for sym in sorted(new_sup - old_sup):
        out.append(f"suppressed {sym}: orders refused except reducing ones")
    for sym in sorted(old_sup - new_sup):
        out.append(f"un-suppressed {sym}")
    return out


async def play(
    scenario: Scenario,
    world: World,
    *,
    poll_s: float = 0.1,
    on_line: Callable[[float, str], None] | None = None,
) -> Outcome:
    """Play ``scenario`` against ``world``; return once the response is seen or time is up."""
    t0 = trio.current_time()
    outcome = Outcome(scenario.name, ok=False, missing="not checked yet")

    def say(text: str) -> None:
        t = trio.current_time() - t0
        outcome.timeline.append((t, text))
        if on_line is not None:
            on_line(t, text)

    last = await world.status()
    for step in scenario.steps:
        await trio.sleep(step.after_s)
        say(f"fault: {step.what}")
        await step.action(world)
    deadline = trio.current_time() + scenario.within_s
    while True:
        st = await world.status()
        for text in _diff(last, st):
            say(text)
        last = st
        missing = scenario.expect(st)
        if missing is None:
            outcome.ok, outcome.missing = True, None
            return outcome
        if trio.current_time() >= deadline:
            outcome.missing = missing
            say(f"gave up after {scenario.within_s:g} s: {missing}")
            return outcome
        await trio.sleep(poll_s)


def print_line(t: float, text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} +{t:6.2f}s  {text}", flush=True)
