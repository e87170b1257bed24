"""Scripted fault scenarios, one per incident class, with the playbook's expected answer.

A scenario breaks the simulated world on purpose (a venue down, acks silent, a feed
stalled, a position past its limit, features drifted from training, PnL under its
backtest band, a hand-edited live config), then watches the desk until the playbook's
response is visible, and returns the timeline of what the desk did: findings,
incidents, mode changes, alerts and actions. ``desk-supervisor demo --scenario NAME``
plays one against the demo desk; tests play each one on trio's MockClock.

The world is reached through ``World``, so the same scenario runs against the demo
(simulators in-process, the desk over its control socket) and in tests (everything
in-process).
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Protocol

import trio

from .feed import FeedSimulator, Stall
from .venue import Outage, SilentAcks, VenueSimulator


@dataclass(frozen=True)
class MonitorFiles:
    """What the model, PnL and config-drift monitors read in the demo and the tests
    (``prepare_monitor_files``)."""

    reference: Path  # the PSI training reference (JSON)
    backtest: Path  # the backtest band (JSON)
    repository: Path  # the git repository holding the committed strategy config
    repo_path: str  # the config's path in the repository
    commit: str  # the deployed ref: the commit of the config
    live_config: Path  # the live config file on "this host"
    importance: Path | None = None  # the feature-importance ranking (JSON)
    # The risk limits, committed beside the strategy config and deployed (gate P2 "Risk
    # limits committed in git; live config hash matches"); None: not prepared.
    live_limits: Path | None = None
    limits_path: str | None = None


class World(Protocol):
    """What a scenario may touch: the simulators, the engine's telemetry, the status,
    the monitors' files, and a monitor's check run now."""

    venues: dict[str, VenueSimulator]
    feed: FeedSimulator
    monitor_files: MonitorFiles | None  # None: the world has no model/pnl/config monitors

    async def telemetry(self, events: list[dict[str, Any]]) -> None: ...

    async def status(self) -> dict[str, Any]: ...

    async def check(self, monitor: str) -> dict[str, Any]:
        """Run a monitor now (``drift``, ``pnl``, ``config_drift``): the ``check``
        command; its status."""
        ...

    def wall(self) -> float:
        """Epoch seconds, as the desk's clock reads them."""
        ...

    async def request(self, cmd: str, **args: Any) -> Any:
        """A control command as an operator sends it (``deskctl``); its result."""
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
    within_s: float = 30.0  # docs/architecture.md: each fault shows its incident within 30 s


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
    """A P0 of ``cls``: HALTED, the switch latched, every venue flat (playbook 02: P0 stops)."""

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


def expect_flattened(halted: Check) -> Check:
    """After ``halted``: the last flatten done, every venue read and every position at zero
    (broker truth)."""

    def check(st: dict[str, Any]) -> str | None:
        missing = halted(st)
        if missing is not None:
            return missing
        last = (st.get("flatten") or {}).get("last")
        if last is None:
            return "no flatten yet"
        if not last["done"]:
            left = [f"{leg['venue']} {leg['symbol']} {leg['state']}" for leg in last["legs"]
                    if leg["state"] != "done"]
            return "flatten incomplete: " + ", ".join(left or ["a venue unreadable"])
        return None

    return check


def expect_suppressed(symbol: str) -> Check:
    """playbook 03 missing-data Q1 "isolated to one symbol" -> suppress it; P2; keep trading."""

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
    """playbook 03 missing-data Q3 "Is the backup data vendor healthy?" YES -> fail over."""

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


def expect_throttled_by(cls: str, size: float, scope: str | None = None,
                        *more: Check) -> Check:
    """A P1 of ``cls``: THROTTLED at ``size`` (playbook 02: "P1 means degrade"), and ``more``."""

    def check(st: dict[str, Any]) -> str | None:
        if _incident(st, cls, "P1", scope) is None:
            return f"no open {cls} P1" + (f" in {scope}" if scope else "")
        if st["mode"] != "THROTTLED" or abs(st["size_multiplier"] - size) > 1e-9:
            return f"mode is {st['mode']} at {st['size_multiplier']:g}, not THROTTLED at {size:g}"
        for extra in more:
            missing = extra(st)
            if missing is not None:
                return missing
        return None

    return check


def expect_model_disabled(st: dict[str, Any]) -> str | None:
    """playbook 02 feature-drift: "Disable any model whose top-3 features show PSI > 0.25"."""
    if not st.get("gate", {}).get("model_disabled"):
        return "the model is not disabled (status.gate.model_disabled)"
    return None


def expect_model_logged(model: dict[str, Any]) -> Check:
    """playbook 02 pnl-divergence: "Log the divergence with the model_hash + feature_hash +
    lib_hash so it can be reproduced": the PnL monitor holds them for the finding."""

    def check(st: dict[str, Any]) -> str | None:
        held = (st.get("pnl") or {}).get("model") or {}
        for key in ("model_hash", "feature_hash", "lib_hash"):
            if held.get(key) != model[key]:
                return f"the pnl monitor's {key} is {held.get(key)!r}, not {model[key]!r}"
        return None

    return check


def expect_config_paused(path: str) -> Check:
    """playbook 02 config-drift: "Pause any model whose config is mismatched. Snapshot the
    current live config and the expected config side-by-side"."""

    def check(st: dict[str, Any]) -> str | None:
        if path not in (st.get("gate", {}).get("config_paused") or {}):
            return f"{path} is not paused (status.gate.config_paused)"
        row = ((st.get("config_drift") or {}).get("files") or {}).get(path) or {}
        if not row.get("snapshot"):
            return f"no snapshot of {path} ({row.get('snapshot_error') or 'not written'})"
        return None

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


# --- the model, PnL and config monitors' world ------------------------------------------

# The paper engine's model (simulators.engine.PaperEngine's default model_hash), with the
# feature and library hashes playbook 02 pnl-divergence wants logged.
DEMO_MODEL: dict[str, Any] = {"kind": "model", "model_hash": "sha256:demo-model-v1",
                              "feature_hash": "sha256:demo-features-v1",
                              "lib_hash": "sha256:demo-lib-v1"}
# The model's training distributions, (mean, sd) of a normal, most important first: the
# PSI reference is binned at their deciles, the live features are drawn from them.
TRAINING_FEATURES: dict[str, tuple[float, float]] = {
    "mom_5": (0.0, 0.02),  # 5-bar momentum
    "vol_20": (0.18, 0.04),  # 20-bar volatility
    "spread": (0.0005, 0.0002),  # quoted spread
}
DRIFT_FEATURE = "mom_5"  # the top-1 feature the feature-drift scenario shifts
DRIFT_SIGMAS = 6.0
DRIFT_VALUES = 400  # over psi_min_count (100): the feature is scored
# The committed strategy config (playbook 02: "/etc/strategy/config.yml").
STRATEGY_CONFIG_PATH = "strategy/config.yml"
STRATEGY_CONFIG = """\
# strategy config, deployed from git
model_hash: sha256:demo-model-v1
symbols: [AAPL, MSFT, SPY]
max_gross: 1.0
entry_threshold: 0.6
"""
STRATEGY_HOTFIX = "entry_threshold: 0.3  # hand-edited on the host, never committed\n"
# Trading days of PnL the pnl-divergence scenario reports, all under the band.
DIVERGENCE_DAYS = 3
DIVERGENCE_DAILY_PNL = -5000.0
DAY_S = 86_400.0


def reference_json() -> bytes:
    """The PSI training reference: each feature's normal binned at its deciles."""
    features = {}
    for name, (mu, sd) in TRAINING_FEATURES.items():
        dist = NormalDist(mu, sd)
        inner = [dist.inv_cdf(k / 10) for k in range(1, 10)]
        # JSON has no infinities; the outer bins reach them anyway (docs/monitors-model.md).
        features[name] = {"edges": [mu - 10 * sd, *inner, mu + 10 * sd],
                          "proportions": [0.1] * 10}
    return json.dumps({"model_hash": DEMO_MODEL["model_hash"], "features": features},
                      indent=1).encode()


def backtest_json(days: int = 60) -> bytes:
    """The backtest band: percentiles of cumulative PnL per trading day (a random walk
    with a small positive drift: the band widens with the square root of the days)."""
    rows = [{"day": k, "percentiles": {"5": round(-1500.0 * math.sqrt(k), 2),
                                       "50": 200.0 * k,
                                       "95": round(1500.0 * math.sqrt(k) + 400.0 * k, 2)}}
            for k in range(1, days + 1)]
    return json.dumps({"model_hash": DEMO_MODEL["model_hash"], "days": rows},
                      indent=1).encode()


def training_features(rng: random.Random, n: int, ts: float,
                      shift: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """``n`` ``features`` events drawn from the training distributions, a feature moved
    by ``shift[name]`` standard deviations."""
    shift = shift or {}
    return [{"kind": "features", "ts": ts,
             "values": {name: rng.gauss(mu, sd) + shift.get(name, 0.0) * sd
                        for name, (mu, sd) in TRAINING_FEATURES.items()}}
            for _ in range(n)]


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=desk-demo", "-c",
         "user.email=desk-demo@example.invalid", "-c", "commit.gpgsign=false", *args],
        capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {repo} failed: {done.stderr.strip()}")
    return done.stdout.strip()


LIMITS_PATH = "risk/limits.toml"


def prepare_monitor_files(directory: Path, *, limits: str | None = None) -> MonitorFiles:
    """Write what the monitors read into ``directory``, each only if absent (blocking):
    the training reference, the backtest band, a git repository with the committed
    strategy config (and ``limits``, the risk limits file, if given), and the live files
    deployed from it."""
    directory.mkdir(parents=True, exist_ok=True)
    reference, backtest = directory / "reference.json", directory / "backtest.json"
    if not reference.exists():
        reference.write_bytes(reference_json())
    if not backtest.exists():
        backtest.write_bytes(backtest_json())
    repo = directory / "strategy-config"
    if not (repo / ".git").exists():
        (repo / STRATEGY_CONFIG_PATH).parent.mkdir(parents=True, exist_ok=True)
        (repo / STRATEGY_CONFIG_PATH).write_text(STRATEGY_CONFIG)
        _git(repo, "init", "-q")
        _git(repo, "add", STRATEGY_CONFIG_PATH)
        _git(repo, "commit", "-q", "-m", "strategy config")
    if limits is not None and not (repo / LIMITS_PATH).exists():
        (repo / LIMITS_PATH).parent.mkdir(parents=True, exist_ok=True)
        (repo / LIMITS_PATH).write_text(limits)
        _git(repo, "add", LIMITS_PATH)
        _git(repo, "commit", "-q", "-m", "risk limits")
    commit = _git(repo, "rev-parse", "HEAD")
    live_limits = None
    if limits is not None:
        live_limits = directory / "live" / "limits.toml"
        if not live_limits.exists():
            live_limits.parent.mkdir(parents=True, exist_ok=True)
            live_limits.write_bytes((repo / LIMITS_PATH).read_bytes())
    live = directory / "live" / "strategy.yml"
    if not live.exists():
        live.parent.mkdir(parents=True, exist_ok=True)
        live.write_text(_git(repo, "show", f"{commit}:{STRATEGY_CONFIG_PATH}") + "\n")
    importance = directory / "importance.json"
    if not importance.exists():
        # playbook 04 "Feature-importance churn": the ranking the weekly check compares.
        importance.write_text(json.dumps({"importance": {
            name: float(len(TRAINING_FEATURES) - k)
            for k, name in enumerate(TRAINING_FEATURES)}}))
    return MonitorFiles(importance=importance, reference=reference, backtest=backtest,
                        repository=repo,
                        repo_path=STRATEGY_CONFIG_PATH, commit=commit, live_config=live,
                        live_limits=live_limits,
                        limits_path=LIMITS_PATH if limits is not None else None)


def _check(monitor: str) -> Action:
    async def act(world: World) -> None:
        await world.check(monitor)

    return act


def _drifted_features(now: float) -> list[dict[str, Any]]:
    rng = random.Random(2)  # the same values every run
    return training_features(rng, DRIFT_VALUES, now, {DRIFT_FEATURE: DRIFT_SIGMAS})


def _divergent_pnl(now: float) -> list[dict[str, Any]]:
    # One pnl a day for the last trading days (days in the past: their ts), each the
    # day's PnL: the cumulative PnL falls under the backtest's 5th percentile at once.
    return [{"kind": "pnl", "ts": now - k * DAY_S, "value": DIVERGENCE_DAILY_PNL}
            for k in range(DIVERGENCE_DAYS, 0, -1)]


def _model(now: float) -> list[dict[str, Any]]:
    return [{**DEMO_MODEL, "ts": now}]


async def _edit_live_config(world: World) -> None:
    if world.monitor_files is None:
        raise RuntimeError("this world has no config-drift monitor")
    live = trio.Path(world.monitor_files.live_config)
    await live.write_text(await live.read_text() + STRATEGY_HOTFIX)


# --- the scenarios ------------------------------------------------------------------------


def _rogue_order(venue: str, symbol: str, qty: float) -> Action:
    async def act(world: World) -> None:
        # Straight to the venue, never asking the gate: what a runaway engine does.
        world.venues[venue].place(symbol, qty, "buy", limit_price=1.0,
                                  client_order_id="rogue-engine-1")

    return act


async def _close_today(world: World) -> None:
    today = time.strftime("%Y-%m-%d", time.gmtime(world.wall()))
    for sim in world.venues.values():
        sim.set_calendar(closed=[today])  # every day, all day, UTC: but today


async def _nothing(world: World) -> None:
    return None


def expect_closed_and_quiet() -> Check:
    """A closed day: the calendar says so (from the venue), and a silent feed opened no
    incident and changed nothing."""

    def check(st: dict[str, Any]) -> str | None:
        cal = st.get("calendar") or {}
        if cal.get("in_session") is not False:
            return "the calendar does not say the exchange is closed"
        if not str(cal.get("today", "")).endswith("closed (venue alpha)"):
            return f"today is not closed by the venue: {cal.get('today')}"
        live = [i for i in st.get("incidents", []) if i["state"] != "resolved"]
        if live:
            return f"incidents opened on a closed day: {[i['class'] for i in live]}"
        if st["mode"] not in ("NORMAL", "RECOVERING"):
            return f"mode is {st['mode']}"
        return None

    return check


def _request(cmd: str, **args: Any) -> Action:
    async def act(world: World) -> None:
        await world.request(cmd, **args)

    return act


def _set_fault(venue: str, fault: Any) -> Action:
    async def act(world: World) -> None:
        world.venues[venue].faults.set(fault)

    return act


def _stall(vendor: str | None, symbols: list[str] | None) -> Action:
    async def act(world: World) -> None:
        world.feed.faults.set(Stall(vendor=vendor,
                                    symbols=None if symbols is None else tuple(symbols)))

    return act


# The largest new exposure one order may add in the demo ([compliance] max_order_qty):
# the paper engine sends far less; the rogue-engine scenario sends ten times this.
DEMO_MAX_ORDER_QTY = {"AAPL": 500.0, "MSFT": 500.0, "SPY": 500.0}

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            name="broker-outage-venue-down",
            incident_class="broker-outage",
            summary="venue alpha answers 503 to everything: the heartbeat fails 3 times in "
                    "its window -> broker-outage P0 -> kill-switch (playbook 02)",
            steps=(Step(0.0, "PUT /sim/fault outage on venue alpha",
                        _set_fault("alpha", Outage())),),
            expect=expect_halted_by("broker-outage", "venue:alpha"),
        ),
        Scenario(
            name="broker-outage-silent-acks",
            incident_class="broker-outage",
            summary="venue beta accepts orders and never acknowledges them: ack latency "
                    "over 5x baseline -> broker-outage P0 -> kill-switch (playbook 02)",
            steps=(Step(0.0, "PUT /sim/fault silent_acks on venue beta",
                        _set_fault("beta", SilentAcks())),),
            expect=expect_halted_by("broker-outage", "venue:beta"),
        ),
        Scenario(
            name="stale-data-symbol",
            incident_class="stale-data",
            summary="AAPL stops printing on every vendor: isolated to one symbol -> suppress "
                    "it, P2, the rest of the book trades on (playbook 03 missing-data)",
            steps=(Step(0.0, "feed stall: every vendor, AAPL only",
                        _stall(None, ["AAPL"])),),
            expect=expect_suppressed("AAPL"),
        ),
        Scenario(
            name="stale-data-primary",
            incident_class="stale-data",
            summary="the primary vendor stops, the backup is healthy: fail over to the "
                    "backup and page (playbook 03 missing-data Q3 YES)",
            steps=(Step(0.0, "feed stall: vendor primary, every symbol",
                        _stall("primary", None)),),
            expect=expect_failover("primary", "backup"),
        ),
        Scenario(
            name="stale-data-both",
            incident_class="stale-data",
            summary="both vendors stop: stale-data P0 -> kill-switch (playbook 03 missing-data "
                    "Q3 NO: \"Both vendors down. Stop trading.\")",
            steps=(Step(0.0, "feed stall: every vendor, every symbol", _stall(None, None)),),
            expect=expect_halted_by("stale-data", "feed"),
        ),
        Scenario(
            name="risk-breach-position",
            incident_class="risk-breach",
            summary="the engine reports 5,000 AAPL against a 1,000 limit: risk-breach P0 -> "
                    "kill-switch (playbook 02 risk-breach)",
            steps=(Step(0.0, "engine reports position AAPL 5000", _telemetry(
                lambda now: [{"kind": "position", "symbol": "AAPL", "qty": 5000}])),),
            expect=expect_halted_by("risk-breach", "limit:max_position:AAPL"),
        ),
        Scenario(
            name="risk-breach-drawdown",
            incident_class="risk-breach",
            summary="the day's PnL falls to -60,000 against a 50,000 drawdown floor: "
                    "risk-breach P0 -> kill-switch (playbook 02 risk-breach)",
            steps=(Step(0.0, "engine reports PnL -60000", _telemetry(
                lambda now: [{"kind": "pnl", "ts": now, "value": -60_000.0}])),),
            expect=expect_halted_by("risk-breach", "limit:daily_drawdown"),
        ),
        Scenario(
            name="risk-breach-var",
            incident_class="risk-breach",
            summary="30 days of PnL history put the 1-day historical VaR past its 100,000 "
                    "ceiling: risk-breach P0 -> kill-switch (playbook 02 risk-breach)",
            steps=(Step(0.0, "engine reports 30 days of daily PnL with fat losses",
                        _telemetry(_var_history)),),
            expect=expect_halted_by("risk-breach", "limit:var_1d"),
        ),
        Scenario(
            name="feature-drift",
            incident_class="feature-drift",
            summary=f"live {DRIFT_FEATURE} moves {DRIFT_SIGMAS:g} sd from its training "
                    "distribution: PSI > 0.25 on a top-3 feature -> feature-drift P1, "
                    "THROTTLED at 0.25, the model disabled (playbook 02 feature-drift)",
            steps=(
                Step(0.0, f"engine reports model {DEMO_MODEL['model_hash']}",
                     _telemetry(_model)),
                Step(0.0, f"engine reports {DRIFT_VALUES} feature vectors, {DRIFT_FEATURE} "
                          f"shifted +{DRIFT_SIGMAS:g} sd", _telemetry(_drifted_features)),
                Step(0.0, "deskctl check drift (the daily PSI check, now)", _check("drift")),
            ),
            expect=expect_throttled_by("feature-drift", 0.25,
                                       f"model:{DEMO_MODEL['model_hash']}",
                                       expect_model_disabled),
        ),
        Scenario(
            name="pnl-divergence",
            incident_class="pnl-divergence",
            summary=f"{DIVERGENCE_DAYS} trading days of {DIVERGENCE_DAILY_PNL:,.0f} put "
                    "cumulative PnL under the backtest's 5th percentile 3 days running -> "
                    "pnl-divergence P1, size halved, model/feature/lib hashes logged "
                    "(playbook 02 pnl-divergence)",
            steps=(
                Step(0.0, f"engine reports model {DEMO_MODEL['model_hash']} with its "
                          "feature_hash and lib_hash", _telemetry(_model)),
                Step(0.0, f"engine reports PnL {DIVERGENCE_DAILY_PNL:,.0f} on each of the "
                          f"last {DIVERGENCE_DAYS} days", _telemetry(_divergent_pnl)),
                Step(0.0, "deskctl check pnl (the daily band check, now)", _check("pnl")),
            ),
            expect=expect_throttled_by("pnl-divergence", 0.5,
                                       f"model:{DEMO_MODEL['model_hash']}",
                                       expect_model_logged(DEMO_MODEL)),
        ),
        Scenario(
            name="rogue-engine",
            incident_class="runaway-engine",
            summary="an engine ignores its gate and sends 10x the symbol's max_order_qty "
                    "straight to venue beta: the compliance watch cancels it, "
                    "runaway-engine P0 -> kill-switch; then reconcile and flatten every "
                    "position from broker truth (playbook 05 P1: flat in < 60 s)",
            steps=(Step(0.0, f"a rogue engine sends buy {10 * DEMO_MAX_ORDER_QTY['AAPL']:g} "
                        f"AAPL at venue beta (max_order_qty {DEMO_MAX_ORDER_QTY['AAPL']:g}), "
                        "never asking its gate",
                        _rogue_order("beta", "AAPL", 10 * DEMO_MAX_ORDER_QTY["AAPL"])),
                   Step(3.0, "deskctl reconcile", _request("reconcile")),
                   # The engine's own book is not to be trusted after a runaway: flatten
                   # from the venues' positions, forced past the reconciliation check.
                   Step(0.5, "deskctl flatten --force --reason 'runaway engine'",
                        _request("flatten", reason="runaway engine: flatten from broker "
                                 "truth", force=True))),
            expect=expect_flattened(expect_halted_by("runaway-engine", "venue:beta")),
        ),
        Scenario(
            name="holiday",
            incident_class="stale-data",
            summary="the exchange is closed today (its own calendar says so) and the feed is "
                    "silent: outside a session a quiet feed is no stale-data, so no "
                    "incident, no kill, no page",
            steps=(Step(0.0, "the venues' calendar closes today (PUT /sim/calendar)",
                        _close_today),
                   Step(0.2, "deskctl calendar --refresh", _request("calendar",
                                                                      refresh=True)),
                   Step(0.2, "feed stall: every vendor, every symbol", _stall(None, None)),
                   Step(5.0, "the feed stays silent 5 s (2.5x the 2 s stale threshold)",
                        _nothing)),
            expect=expect_closed_and_quiet(),
            within_s=5.0,
        ),
        Scenario(
            name="config-drift",
            incident_class="config-drift",
            summary="the live strategy config is hand-edited on the host: its hash no "
                    "longer matches the deployed git ref -> config-drift P1 at the next "
                    "check, THROTTLED at 0.25, the model paused, live and expected "
                    "snapshotted (playbook 02 config-drift)",
            steps=(Step(0.0, f"hand-edit the live config ({STRATEGY_HOTFIX.strip()})",
                        _edit_live_config),
                   # The scheduled check (every interval_s) finds it too; checking now
                   # keeps the scenario's time independent of the git processes'.
                   Step(0.0, "deskctl check config_drift (the scheduled hash check, now)",
                        _check("config_drift"))),
            expect=expect_throttled_by("config-drift", 0.25, f"config:{STRATEGY_CONFIG_PATH}",
                                       expect_config_paused(STRATEGY_CONFIG_PATH)),
        ),
    ]
}

# The limits the demo desk runs with (its limits file), so the risk scenarios cross them.
DEMO_LIMITS = """\
[limits]
max_position = 1000
daily_drawdown = 50000.0
var_1d = 100000.0
# Defined, as gate P2 needs all four; the demo's paper engine often holds a single
# name, so its cap is the whole book.
concentration = 1.0
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
    old_gate, gate = (old or {}).get("gate", {}), new.get("gate", {})
    if gate.get("model_disabled") and not old_gate.get("model_disabled"):
        out.append(f"model disabled: {gate['model_disabled']}")
    old_paused = old_gate.get("config_paused") or {}
    for path in sorted(set(gate.get("config_paused") or {}) - set(old_paused)):
        out.append(f"paused the model of {path}: {gate['config_paused'][path]}")
    last = (new.get("flatten") or {}).get("last")
    if last and last != ((old or {}).get("flatten") or {}).get("last"):
        legs = ", ".join(f"{g['venue']} {g['symbol']} {g['position']:g} -> "
                         f"{'unknown' if g['now'] is None else format(g['now'], 'g')}"
                         for g in last["legs"]) or "no position"
        out.append(f"flatten {'complete' if last['done'] else 'INCOMPLETE'} in "
                   f"{last['seconds']:g} s by {last['by']}: {legs}")
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
        say(f"step: {step.what}")
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
