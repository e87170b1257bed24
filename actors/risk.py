"""Risk limits (playbook 02 risk-breach; playbook 06 principle 08; playbook 04 per-symbol
concentration).

- The limits file (TOML, ``RiskConfig.limits``, format in docs/risk.md) holds the hard
  limits of playbook 02 risk-breach detection: "max position size, daily drawdown floor,
  1-day VaR ceiling, or single-name concentration". Each is optional; a missing one is
  not enforced and ``status`` says so.
- A crossed limit reports risk-breach (a P0: the runtime pulls the kill-switch), once
  per episode per scope, re-armed when back within the limit. With ``auto_flatten``
  each breaching position is cut to the nearest compliant size at the venues (playbook 02:
  "auto-flattens to the next compliant size"); nothing else is ever flattened.
- Principle 08: a changed file that loosens a limit in breach (or with a live
  risk-breach incident) is refused and paged; an invalid one is refused and paged;
  an unusable file at start is itself a risk-breach (``limits:file``).
- Per-symbol PnL concentration (playbook 04, SLACK daily): at each UTC day's close, a name
  making more than ``pnl_concentration`` of the day's realised PnL raises a QUEUE alert.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec
import numpy as np
import trio

from supervisor.core.book import Book
from supervisor.core.errors import ConfigError, VenueError
from supervisor.core.protocol import Fill, Pnl, Position, TelemetryEvent
from supervisor.core.tomlconf import decode_toml
from supervisor.venues.base import Venue, read_positions

from ._files import read_config_file
from .base import AlertRaised, Finding, Report

__all__ = [
    "Breach", "Limits", "RiskActor", "RiskInputs", "assess", "load_limits",
    "looser", "parse_limits",
]

log = logging.getLogger("desk.risk")

# What the runtime hands the actor to flatten with: (venue, symbol) -> target position;
# answers with the flatten's result (its "legs": one per venue and symbol).
FlattenTo = Callable[[dict[tuple[str, str], float]], Awaitable[Mapping[str, Any]]]


class RiskConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Risk limits (playbook 02 risk-breach; principle 08; playbook 04 per-symbol concentration)."""

    # Path of the limits file (TOML, see docs/risk.md); empty: no risk limits enforced
    # (status says so).
    limits: str = ""
    # playbook 02 risk-breach: "The risk service auto-flattens to the next compliant size;
    # do not let traders override it": on; off only by this key, shown in status and
    # journaled at every start.
    auto_flatten: bool = True
    # Historical 1-day VaR from this many daily PnL values, at this confidence.
    var_window_days: int = 250
    var_confidence: float = 0.99
    # playbook 04 per-symbol concentration: "> 25% of daily PnL from one name" (QUEUE)
    pnl_concentration: float = 0.25
    # How often the limits file is checked for a change.
    reload_s: float = 5.0

    def __post_init__(self) -> None:
        if self.var_window_days < 2:
            raise ValueError("var_window_days must be >= 2")
        if not 0.5 <= self.var_confidence < 1:
            raise ValueError("var_confidence must be in [0.5, 1)")
        if not 0 < self.pnl_concentration <= 1:
            raise ValueError("pnl_concentration must be in (0, 1]")
        if self.reload_s <= 0:
            raise ValueError("reload_s must be > 0")

# The limits a smaller position cures, and so auto-flattens (playbook 02 risk-breach "to
# the next compliant size"); a drawdown floor is not cured by selling: it halts only.
FLATTENED = frozenset({"max_position", "concentration", "var_1d"})
# Fewer daily PnL values than this make a historical 1-day VaR meaningless: not evaluated.
VAR_MIN_DAYS = 20
# The shortest time between two risk checks (coalescing telemetry batches).
MIN_CHECK_INTERVAL_S = 0.005
DAY_S = 86_400
PRINCIPLE_08 = ("playbook 06 principle 08: the threshold that was breached does not get raised "
                "as part of the fix")
_REALISED_DAYS = 7  # days of per-symbol realised PnL kept, for late fills and status


# --- the limits file ---------------------------------------------------------------------


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
             omit_defaults=True):
    """The hard limits (playbook 02 risk-breach detection; playbook 05 P2); None: not enforced."""

    max_position: float | None = None  # shares, |position| of any symbol
    daily_drawdown: float | None = None  # currency: the day's PnL floor is -daily_drawdown
    var_1d: float | None = None  # currency: historical 1-day VaR ceiling
    concentration: float | None = None  # |position value| / gross exposure, one name
    max_position_by_symbol: dict[str, float] = {}  # wins over max_position for its symbol

    def __post_init__(self) -> None:
        _finite("max_position", self.max_position, strict=False)
        _finite("daily_drawdown", self.daily_drawdown, strict=True)
        _finite("var_1d", self.var_1d, strict=True)
        c = self.concentration
        if c is not None and not 0 < c <= 1:
            raise ValueError(f"concentration must be in (0, 1], got {c}")
        for symbol, value in self.max_position_by_symbol.items():
            if not symbol:
                raise ValueError("max_position_by_symbol: a symbol must not be empty")
            _finite(f"max_position_by_symbol.{symbol}", value, strict=False)

    @property
    def canonical(self) -> str:
        """The JSON encoding with sorted keys: the same limits, the same text."""
        return msgspec.json.encode(self, order="sorted").decode()

    @property
    def hash(self) -> str:
        """sha256 of the canonical encoding, so formatting does not change it."""
        return hashlib.sha256(self.canonical.encode()).hexdigest()

    def limit_for(self, symbol: str) -> float | None:
        """The position limit of ``symbol``: its own, else ``max_position``, else None."""
        return self.max_position_by_symbol.get(symbol, self.max_position)


def _finite(key: str, value: float | None, *, strict: bool) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (strict and value == 0):
        raise ValueError(f"{key} must be a finite number {'>' if strict else '>='} 0, "
                         f"got {value}")


class _LimitsFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    limits: Limits = Limits()


def parse_limits(text: str | bytes, *, source: str = "<limits>") -> Limits:
    """Decode the TOML text of a limits file.

    Raises:
        ConfigError: naming the file, the key and what was expected.
    """
    return decode_toml(text, _LimitsFile, source=source).limits


def load_limits(path: str) -> Limits:
    """Read and decode the limits file at ``path`` (ConfigError if unreadable or invalid)."""
    return parse_limits(read_config_file(path, "limits"), source=path)


class _Loosening(NamedTuple):
    kind: str
    symbol: str | None  # None with max_position: the default for symbols without their own
    text: str


def _loosenings(new: Limits, old: Limits) -> list[_Loosening]:
    out: list[_Loosening] = []

    def compare(kind: str, symbol: str | None, was: float | None, now: float | None) -> None:
        if was is not None and (now is None or now > was):
            name = kind if symbol is None else f"{kind} {symbol}"
            after = "removed" if now is None else _num(now)
            out.append(_Loosening(kind, symbol, f"{name} {_num(was)} -> {after}"))

    compare("max_position", None, old.max_position, new.max_position)
    for symbol in sorted(old.max_position_by_symbol.keys() | new.max_position_by_symbol.keys()):
        compare("max_position", symbol, old.limit_for(symbol), new.limit_for(symbol))
    for kind in ("daily_drawdown", "var_1d", "concentration"):
        compare(kind, None, getattr(old, kind), getattr(new, kind))
    return out


def looser(new: Limits, old: Limits) -> list[str]:
    """Each limit that ``new`` loosens against ``old`` ("max_position AAPL 500 -> 800").

    A limit removed counts as loosened ("var_1d 100000 -> removed"); a symbol's limit
    compares the effective one (its own, else ``max_position``). Pass ``Limits()`` for
    "no limits at all". Used at ``resume`` (playbook 03 post-incident Q3) and on reload.
    """
    return [item.text for item in _loosenings(new, old)]


def _affects(item: _Loosening, scope: str, new: Limits, old: Limits) -> bool:
    """Whether loosening ``item`` raises the limit behind breach ``scope``."""
    kind, _, symbol = scope.removeprefix("limit:").partition(":")
    if not scope.startswith("limit:") or kind != item.kind:
        return False
    if item.kind == "max_position":
        if item.symbol is not None:
            return symbol == item.symbol
        return (symbol not in old.max_position_by_symbol
                and symbol not in new.max_position_by_symbol)
    return True


# --- the assessment: a pure function of limits, book and PnL history ---------------------


class Breach(msgspec.Struct, frozen=True, kw_only=True):
    """A limit crossed now; ``scope`` is ``limit:KIND[:SYMBOL]``."""

    kind: str
    scope: str
    summary: str
    evidence: dict[str, object]
    symbol: str | None = None
    limit: float | None = None


class RiskInputs(NamedTuple):
    """What the assessment reads: the engine's positions, prices and PnL history."""

    positions: Mapping[str, float]
    prices: Mapping[str, float]  # last fill price per symbol
    day_pnl: float | None  # today's (UTC) last reported PnL
    history: Sequence[float]  # completed days' PnL, oldest first, <= var_window_days


_UNSET = "not set in the limits file: not enforced"
_Result = tuple[list[Breach], dict[str, object]]


def _positions(lim: Limits, book: RiskInputs, config: RiskConfig) -> _Result:
    out: list[Breach] = []
    rows: dict[str, object] = {}
    for symbol, qty in sorted(book.positions.items()):
        if qty == 0:
            continue
        limit = lim.limit_for(symbol)
        rows[symbol] = {"qty": qty, "limit": limit,
                        "used": None if not limit else abs(qty) / limit}
        if limit is not None and abs(qty) > limit:
            out.append(Breach(
                kind="max_position", scope=f"limit:max_position:{symbol}", symbol=symbol,
                limit=limit,
                summary=(f"max_position {symbol} crossed: position {_num(qty)} shares, "
                         f"limit {_num(limit)}"),
                evidence={"symbol": symbol, "position": qty, "limit": limit}))
    return out, {"default": lim.max_position, "by_symbol": dict(lim.max_position_by_symbol),
                 "positions": rows}


def _drawdown(lim: Limits, book: RiskInputs, config: RiskConfig) -> _Result:
    dd, pnl = lim.daily_drawdown, book.day_pnl
    usage: dict[str, object] = {"limit": dd, "floor": None if dd is None else -dd,
                                "day_pnl": pnl, "note": None}
    if dd is None:
        usage["note"] = _UNSET
    elif pnl is None:
        usage["note"] = "no PnL reported today: not evaluated"
    elif pnl < -dd:
        return [Breach(
            kind="daily_drawdown", scope="limit:daily_drawdown",
            summary=(f"daily_drawdown crossed: day PnL {_num(pnl)} is below the floor "
                     f"{_num(-dd)}"),
            evidence={"day_pnl": pnl, "floor": -dd, "daily_drawdown": dd})], usage
    return [], usage


def _var(lim: Limits, book: RiskInputs, config: RiskConfig) -> _Result:
    ceiling, conf, days = lim.var_1d, config.var_confidence, len(book.history)
    var = None
    if days >= VAR_MIN_DAYS:
        var = -float(np.percentile(np.asarray(book.history, dtype=float), (1 - conf) * 100))
    usage: dict[str, object] = {"limit": ceiling, "var": var, "days": days,
                                "window_days": config.var_window_days, "confidence": conf,
                                "note": None}
    if ceiling is None:
        usage["note"] = _UNSET
    elif var is None:
        usage["note"] = f"needs {VAR_MIN_DAYS} daily PnL values, has {days}: not evaluated"
    elif var > ceiling:
        return [Breach(
            kind="var_1d", scope="limit:var_1d",
            summary=(f"var_1d crossed: 1-day VaR {var:.2f} is above the ceiling "
                     f"{_num(ceiling)} (historical, {days} days at {conf:g})"),
            evidence={"var": var, "ceiling": ceiling, "days": days, "confidence": conf})], usage
    return [], usage


def _concentration(lim: Limits, book: RiskInputs, config: RiskConfig) -> _Result:
    cap = lim.concentration
    held = {s: q for s, q in sorted(book.positions.items()) if q != 0}
    unpriced = [s for s in held if s not in book.prices]
    values = {s: abs(q * book.prices[s]) for s, q in held.items() if s in book.prices}
    gross = sum(values.values())
    shares = {s: v / gross for s, v in values.items()} if gross > 0 and not unpriced else {}
    usage: dict[str, object] = {"limit": cap, "gross_exposure": gross, "shares": shares,
                                "note": None}
    if cap is None:
        usage["note"] = _UNSET
    elif unpriced:
        usage["note"] = f"no fill price yet for {', '.join(unpriced)}: not evaluated"
    elif len(held) < 2:
        usage["note"] = "fewer than 2 names held: not evaluated"
    else:
        return [Breach(
            kind="concentration", scope=f"limit:concentration:{s}", symbol=s,
            summary=(f"concentration {s} crossed: {share:.2%} of gross exposure "
                     f"({values[s]:.2f} of {gross:.2f}), cap {_num(cap)}"),
            evidence={"symbol": s, "share": share, "value": values[s],
                      "gross_exposure": gross, "cap": cap})
            for s, share in shares.items() if share > cap], usage
    return [], usage


# One row per limit kind of playbook 02 risk-breach detection: "max position size, daily
# drawdown floor, 1-day VaR ceiling, or single-name concentration".
CHECKS: dict[str, Callable[[Limits, RiskInputs, RiskConfig], _Result]] = {
    "max_position": _positions,
    "daily_drawdown": _drawdown,
    "var_1d": _var,
    "concentration": _concentration,
}


def assess(
    limits: Limits | None, book: RiskInputs, config: RiskConfig
) -> tuple[dict[str, Breach], dict[str, object]]:
    """The limits crossed now, by scope, and the usage of each limit (for ``status``)."""
    breaches: dict[str, Breach] = {}
    usage: dict[str, object] = {}
    for kind, check in CHECKS.items():
        found, usage[kind] = check(limits or Limits(), book, config)
        breaches.update((b.scope, b) for b in found)
    return breaches, usage


# --- the actor ---------------------------------------------------------------------------


class RiskActor:
    """Watches the book against the limits file; reports breaches, may auto-flatten."""

    name = "risk"
    critical = True
    blind_class = "risk-breach"

    def __init__(
        self,
        config: RiskConfig,
        book: Book,
        venues: Sequence[Venue],
        report: Callable[[Report], Awaitable[None]],
        *,
        wall_clock: Callable[[], float],
        breached_limits: Callable[[], set[str]],
        note: Callable[[str], Awaitable[None]],
        flatten: FlattenTo | None = None,
    ) -> None:
        self.config = config
        self.flatten = flatten
        self.book = book
        self.venues = list(venues)
        self.report = report
        self.wall = wall_clock
        self.breached_limits = breached_limits
        self.note = note
        self.limits: Limits | None = None
        self.file_error: str | None = None  # the file is unusable now (start or reload)
        self.last_reload: dict[str, object] | None = None
        self.last_refused: dict[str, object] | None = None
        self.breaches: dict[str, Breach] = {}  # in breach now; one finding per episode
        self.flatten_orders: deque[dict[str, object]] = deque(maxlen=100)
        self.prices: dict[str, float] = {}  # last fill price per symbol
        self.daily_pnl: dict[int, tuple[float, float]] = {}  # UTC day -> (ts, last value)
        self.realised: dict[int, dict[str, float]] = {}  # UTC day -> symbol -> realised
        self._cost: dict[str, tuple[float, float]] = {}  # symbol -> (qty, average cost)
        self._pnl_alerted: set[tuple[int, str]] = set()
        self._wake = trio.Event()
        self._lock = trio.Lock()  # one check or reload at a time: a breach is never missed
        self._seen: tuple[bytes | None, str | None] | None = None  # last file handled
        self._pending: Limits | None = None  # refused loosening, adopted once unblocked
        self._file_reported = False
        self._nursery: trio.Nursery | None = None

    @property
    def limits_hash(self) -> str | None:
        return None if self.limits is None else self.limits.hash

    # --- telemetry (sync, from Book.subscribe) -----------------------------------------

    def on_telemetry(self, events: Sequence[TelemetryEvent]) -> None:
        """Record PnL and fills and wake the run loop; cheap and never raises."""
        try:
            relevant = False
            for ev in events:
                match ev:
                    case Pnl():
                        self._record_pnl(ev)
                        relevant = True
                    case Fill():
                        self._record_fill(ev)
                        relevant = True
                    case Position():
                        relevant = True
            if relevant:
                self._wake.set()
        except Exception:  # a listener must not break ingestion; the next check catches up
            log.exception("risk: telemetry batch not recorded")
            self._wake.set()

    def _record_pnl(self, ev: Pnl) -> None:
        day = _day(ev.ts)
        last = self.daily_pnl.get(day)
        if last is None or ev.ts >= last[0]:
            self.daily_pnl[day] = (ev.ts, ev.value)
        keep = self.config.var_window_days + 1
        if len(self.daily_pnl) > keep:
            for old in sorted(self.daily_pnl)[:-keep]:
                del self.daily_pnl[old]

    def _record_fill(self, ev: Fill) -> None:
        # Average-cost accounting from the fills seen since start: a fill that reduces a
        # position realises (price - average cost) on the reduced shares.
        self.prices[ev.symbol] = ev.price
        signed = ev.qty if ev.side == "buy" else -ev.qty
        qty, avg = self._cost.get(ev.symbol, (0.0, 0.0))
        new = round(qty + signed, 9)
        if qty == 0 or (qty > 0) == (signed > 0):
            self._cost[ev.symbol] = (new, (abs(qty) * avg + ev.qty * ev.price) / abs(new))
            return
        closed = min(abs(signed), abs(qty))
        pnl = closed * (ev.price - avg) * (1.0 if qty > 0 else -1.0)
        if new == 0:
            self._cost[ev.symbol] = (0.0, 0.0)
        elif (new > 0) != (qty > 0):
            self._cost[ev.symbol] = (new, ev.price)  # flipped through zero: a fresh position
        else:
            self._cost[ev.symbol] = (new, avg)
        day = self.realised.setdefault(_day(ev.ts), {})
        day[ev.symbol] = day.get(ev.symbol, 0.0) + pnl

    # --- the run loop --------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the limits file, then check after every telemetry batch; started once loaded.

        A restart (after a crash) keeps the limits in force: a changed file then goes
        through the reload rules, never adopted blind.
        """
        if self.config.limits:
            await self.reload()
        self._wake.set()  # the book may already hold positions
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._check_loop)
            nursery.start_soon(self._day_loop)
            if self.config.limits:
                nursery.start_soon(self._reload_loop)
            task_status.started()

    async def _check_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            started = time.perf_counter()
            await self.check()
            # Batches that arrive meanwhile share the next check: under a telemetry
            # flood the risk service spends at most about a fifth of the loop's time
            # here, and a breach is still seen within one short interval.
            cost = time.perf_counter() - started
            await trio.sleep(max(MIN_CHECK_INTERVAL_S, 4 * cost))

    async def _day_loop(self) -> None:
        # A UTC day's close completes a VaR value and a day of realised PnL.
        while True:
            now = self.wall()
            await trio.sleep((math.floor(now / DAY_S) + 1) * DAY_S - now)
            self._wake.set()

    async def _reload_loop(self) -> None:
        while True:
            await trio.sleep(self.config.reload_s)
            await self.reload()

    # --- checks ----------------------------------------------------------------------------

    def _assess(self) -> tuple[dict[str, Breach], dict[str, object]]:
        today = _day(self.wall())
        day_pnl = self.daily_pnl.get(today)
        history = [v for d, (_, v) in sorted(self.daily_pnl.items()) if d < today]
        return assess(self.limits, RiskInputs(
            positions=self.book.positions, prices=self.prices,
            day_pnl=None if day_pnl is None else day_pnl[1],
            history=history[-self.config.var_window_days:]), self.config)

    async def check(self) -> None:
        """One pass: report new breaches, auto-flatten new position breaches, and check
        the closed days' PnL concentration. A failed report leaves its breach unrecorded,
        so the next pass (after a restart) reports it again."""
        async with self._lock:
            current, _ = self._assess()
            self.breaches = {s: b for s, b in current.items() if s in self.breaches}
            to_flatten: list[Breach] = []
            for scope, breach in current.items():
                if scope in self.breaches:
                    continue
                log.warning("risk: %s", breach.summary)
                await self.report(Finding(actor=self.name, incident_class="risk-breach",
                                          scope=scope, summary=breach.summary,
                                          evidence=breach.evidence))
                self.breaches[scope] = breach
                if breach.kind in FLATTENED:
                    to_flatten.append(breach)
            if to_flatten and self.config.auto_flatten:
                # In the background: a flatten takes up to its deadline, and the next
                # breach must not wait for it.
                assert self._nursery is not None
                self._nursery.start_soon(self._flatten, to_flatten)
            await self._check_pnl_concentration()

    async def _check_pnl_concentration(self) -> None:
        # playbook 04 "Per-symbol concentration: > 25% of daily PnL from one name", SLACK,
        # daily: checked on each closed UTC day, shares of the gross realised PnL (so a
        # day whose gains and losses cancel does not divide by nearly zero).
        today = _day(self.wall())
        threshold = self.config.pnl_concentration
        for day in sorted(self.realised):
            if day >= today:
                continue
            names = {s: v for s, v in sorted(self.realised[day].items()) if v != 0}
            gross = sum(abs(v) for v in names.values())
            for symbol, pnl in names.items():
                share = abs(pnl) / gross
                if share <= threshold or (day, symbol) in self._pnl_alerted:
                    continue
                await self.report(AlertRaised(
                    actor=self.name, channel="QUEUE", scope=f"pnl-concentration:{symbol}",
                    summary=(f"pnl concentration {_date(day)}: {symbol} made {share:.1%} of "
                             f"the day's realised PnL ({pnl:.2f} of gross {gross:.2f}), above "
                             f"{threshold:.0%}: size the name down or document why the "
                             "concentration is intentional"),
                    evidence={"day": _date(day), "symbol": symbol, "pnl": pnl,
                              "gross": gross, "share": share, "threshold": threshold}))
                self._pnl_alerted.add((day, symbol))
        for day in [d for d in self.realised if d < today - _REALISED_DAYS]:
            del self.realised[day]
            self._pnl_alerted = {(d, s) for d, s in self._pnl_alerted if d != day}

    # --- auto-flatten ----------------------------------------------------------------------

    async def _flatten(self, breaches: list[Breach]) -> None:
        """Cut what each breach's limit needs, never past it, at the venues, through the
        desk's one flatten path (``flatten``: reduce-only marketable limits, never re-sent
        blind, re-read until at target): a position to exactly its ``max_position``; a
        name to exactly its concentration cap; every position in proportion until the
        1-day VaR is at its ceiling (historical VaR scales with the book's size).

        Broker truth decides the size (playbook 06 principle 04): with any venue's positions
        unknown nothing is sent (unknown is not flat). The largest holders are cut first.
        """
        read = await read_positions(self.venues)
        held = {n: r for n, r in read.items() if not isinstance(r, VenueError)}
        failed = {n: str(r) for n, r in read.items() if isinstance(r, VenueError)}
        if failed:
            for breach in breaches:
                for name, error in sorted(failed.items()):
                    await self._note(f"auto-flatten {breach.symbol or breach.kind}: nothing "
                                     f"sent, positions at venue {name} unknown ({error})")
            return

        def total_of(symbol: str) -> float:
            return round(sum(p.qty for ps in held.values() for p in ps if p.symbol == symbol), 9)

        # symbol -> (the largest size it may keep, why): the smallest any breach allows.
        keep: dict[str, tuple[float, str]] = {}

        def allow(symbol: str, size: float, why: str) -> None:
            size = max(0.0, round(size, 9))
            if symbol not in keep or size < keep[symbol][0]:
                keep[symbol] = (size, why)

        for breach in breaches:
            ev = breach.evidence
            if breach.kind == "max_position" and breach.symbol:
                allow(breach.symbol, breach.limit or 0.0, f"limit {_num(breach.limit or 0.0)}")
            elif breach.kind == "concentration" and breach.symbol:
                cap, value, gross = (float(ev["cap"]), float(ev["value"]),  # type: ignore[arg-type]
                                     float(ev["gross_exposure"]))  # type: ignore[arg-type]
                # v / (gross - value + v) = cap: the name's value at exactly its cap.
                factor = cap * (gross - value) / ((1 - cap) * value) if cap < 1 else 1.0
                allow(breach.symbol, abs(total_of(breach.symbol)) * factor,
                      f"concentration cap {_num(cap)}")
            elif breach.kind == "var_1d":
                var, ceiling = float(ev["var"]), float(ev["ceiling"])  # type: ignore[arg-type]
                factor = ceiling / var
                for symbol in sorted({p.symbol for ps in held.values() for p in ps}):
                    allow(symbol, abs(total_of(symbol)) * factor,
                          f"VaR {var:.2f} over the ceiling {_num(ceiling)} (x{factor:.4g})")
        targets: dict[tuple[str, str], float] = {}
        for symbol, (limit, why) in sorted(keep.items()):
            holdings = [(v, sum(p.qty for p in held[v.name] if p.symbol == symbol))
                        for v in self.venues]
            total = total_of(symbol)
            excess = round(abs(total) - limit, 9)
            if excess <= 0:
                await self._note(f"auto-flatten {symbol}: nothing sent, the venues hold "
                                 f"{_num(total)}, within the {why}")
                continue
            sign = 1.0 if total > 0 else -1.0
            holders = sorted(((v, q) for v, q in holdings if q * sign > 0),
                             key=lambda h: -abs(h[1]))
            cuts = []
            for venue, qty in holders:
                if excess <= 0:
                    break
                size = min(excess, abs(qty))
                excess = round(excess - size, 9)
                targets[(venue.name, symbol)] = round(qty - sign * size, 9)
                cuts.append(f"{_num(size)} at {venue.name}")
            await self._note(f"auto-flatten {symbol}: position {_num(total)}, {why}: "
                             "cutting " + ", ".join(cuts))
        if not targets:
            return
        if self.flatten is None:
            await self._note("auto-flatten: nothing sent, no flatten path is wired to the "
                             "risk actor")
            return
        try:
            result = await self.flatten(targets)
        except Exception as exc:  # the finding stands; the page says what did not happen
            log.exception("risk: auto-flatten failed")
            await self._note(f"auto-flatten failed: {exc}")
            return
        for leg in result.get("legs", []):
            self.flatten_orders.append({"at": self.wall(), **leg})

    async def _note(self, text: str) -> None:
        log.warning("risk: %s", text)
        try:
            await self.note(text)
        except Exception:  # the next order matters more than this journal line
            log.exception("risk: could not journal %r", text)

    # --- the limits file -------------------------------------------------------------------

    async def reload(self) -> None:
        """Read the limits file and apply the reload rules (principle 08); quiet when the
        file has not changed since it was last handled."""
        path = self.config.limits
        raw: bytes | None = None
        error: str | None = None
        new: Limits | None = None
        try:
            raw = read_config_file(path, "limits")
            new = parse_limits(raw, source=path)
        except ConfigError as exc:
            error = str(exc)
        async with self._lock:
            changed = (raw, error) != self._seen
            if new is None:
                if changed:
                    await self._unusable(error or "")
            elif changed or self._pending is not None:
                await self._consider(new, loud=changed)
            self._seen = (raw, error)

    async def _unusable(self, error: str) -> None:
        path = self.config.limits
        self.file_error = error
        if self.limits is None:
            # The worse case: no limits at all. A finding, once until the file is valid.
            if not self._file_reported:
                await self.report(Finding(
                    actor=self.name, incident_class="risk-breach", scope="limits:file",
                    summary=f"risk limits not enforced: {error}",
                    evidence={"path": path, "error": error}))
                self._file_reported = True
            return
        self.last_refused = {"at": self.wall(), "reason": error, "hash": None}
        await self.report(AlertRaised(
            actor=self.name, channel="PAGE", scope="limits:file",
            summary=(f"risk limits file {path} refused, the limits in force stay "
                     f"(hash {self.limits.hash[:12]}): {error}"),
            evidence={"path": path, "error": error, "hash": self.limits.hash}))

    async def _consider(self, new: Limits, *, loud: bool) -> None:
        self.file_error = None
        self._file_reported = False
        old = self.limits
        if old is not None and new.hash == old.hash:
            self._pending = None
            return
        loosened: list[str] = []
        if old is not None:
            in_breach = set(self.breaches) | set(self._assess()[0])
            live = set(self.breached_limits())
            refused: list[tuple[str, str]] = []
            for item in _loosenings(new, old):
                hits = sorted(s for s in in_breach if _affects(item, s, new, old))
                incidents = sorted(s for s in live if _affects(item, s, new, old))
                if hits:
                    refused.append((f"{item.text} is refused: the limit is in breach", hits[0]))
                elif incidents:
                    refused.append((f"{item.text} is refused: the limit's risk-breach "
                                    "incident is still live", incidents[0]))
                else:
                    loosened.append(item.text)
            if refused:
                self._pending = new
                reason = "; ".join(text for text, _ in refused) + f" ({PRINCIPLE_08})"
                if loud:
                    self.last_refused = {"at": self.wall(), "reason": reason,
                                         "hash": new.hash}
                    log.warning("risk: limits file %s: %s", self.config.limits, reason)
                    await self.report(AlertRaised(
                        actor=self.name, channel="PAGE", scope=refused[0][1], summary=reason,
                        evidence={"path": self.config.limits, "hash_in_force": old.hash,
                                  "hash_refused": new.hash}))
                return
        self.limits = new
        self._pending = None
        self.last_reload = {"at": self.wall(), "hash": new.hash,
                            "previous_hash": None if old is None else old.hash,
                            "loosened": loosened}
        log.info("risk: limits adopted from %s (hash %s, was %s)%s", self.config.limits,
                 new.hash[:12], "none" if old is None else old.hash[:12],
                 f"; loosened: {', '.join(loosened)}" if loosened else "")
        self._wake.set()

    # --- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        """What ``deskctl status`` shows of the risk service (JSON-able)."""
        _, usage = self._assess()
        if not self.config.limits:
            enforced = "no limits file configured: no risk limits enforced"
        elif self.limits is None:
            enforced = f"no risk limits enforced: {self.file_error}"
        else:
            enforced = "enforced"
        today = self.realised.get(_day(self.wall()), {})
        return {
            "limits_file": self.config.limits or None,
            "limits": None if self.limits is None else _limits_view(self.limits),
            "limits_hash": self.limits_hash,
            "enforcement": enforced,
            "file_error": self.file_error,
            "usage": usage,
            "breaches": {s: b.summary for s, b in sorted(self.breaches.items())},
            "last_reload": self.last_reload,
            "last_refused_reload": self.last_refused,
            "pending_limits_hash": None if self._pending is None else self._pending.hash,
            "auto_flatten": self.config.auto_flatten,
            "flatten_orders": list(self.flatten_orders),
            "pnl_concentration": {"threshold": self.config.pnl_concentration,
                                  "realised_today": dict(sorted(today.items()))},
        }


def _limits_view(limits: Limits) -> dict[str, object]:
    """Every limit, None for one not set (status: "a missing limit is not enforced")."""
    view = msgspec.structs.asdict(limits)
    view["max_position_by_symbol"] = dict(limits.max_position_by_symbol)
    return view


def _day(ts: float) -> int:
    """The UTC day number of an epoch timestamp."""
    return math.floor(ts / DAY_S)


def _date(day: int) -> str:
    return datetime.fromtimestamp(day * DAY_S, tz=UTC).date().isoformat()


def _num(value: float) -> str:
    """500.0 -> "500", 0.25 -> "0.25": numbers as the limits file writes them."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
