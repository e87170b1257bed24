"""PnL monitors (playbook 02 pnl-divergence; playbook 03 tree wrong-pnl; playbook 04 monitors
"Daily PnL
vs. backtest band" and "Slippage vs. expected"; playbook 05 gates D3, D5).

- **Band.** The backtest file (``PnlMonitorConfig.backtest``, JSON, format in
  docs/monitors-pnl-config.md) gives the distribution of cumulative PnL per trading day
  of the live run. Live cumulative PnL comes from ``pnl`` telemetry: the last value of
  each UTC day (the engine's PnL for the day, summed; or already cumulative). At each UTC
  day's close, a closed trading day below the ``band_percentile`` (playbook 02: "below the
  5th-percentile band") for ``band_days`` consecutive trading days (playbook 02: "for 3
  consecutive trading days") reports pnl-divergence (P1: the runtime halves size) for
  scope ``model:MODEL_HASH``, with the model_hash, feature_hash and lib_hash of the latest
  ``model`` telemetry (playbook 02: "so it can be reproduced"). Once per episode; a day back
  inside the band ends it. Gate D3 ("Document whether today landed inside the 95% band")
  is ``status()["pnl_band"]["d3"]``.
- **Slippage.** Each ``fill`` carrying ``expected_price`` (the price the backtest cost
  model assumed; see ``EXPECTED_PRICE_FIELD``) costs ``side * (price - expected) /
  expected`` in bps, buys paying up and sells selling down both positive. A day's value
  is the notional-weighted average. More than ``slippage_bps`` on ``slippage_days``
  consecutive trading days (playbook 04: "> 2 bps for 5 days") raises a QUEUE alert, once
  per episode. Gate D5 ("Document any deviation > 1σ") is ``status()["slippage"]["d5"]``.

Telemetry is recorded synchronously in ``on_telemetry`` (cheap, never raises); the checks
run from ``run`` at each UTC day's close and on demand (``check``). The days live in
memory; with ``history_path`` they are also written there (atomically) after each check
and read back at start, so a restart keeps the cumulative PnL and the streaks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Literal, NamedTuple

import msgspec
import numpy as np
import trio

from supervisor.core.errors import ConfigError
from supervisor.core.protocol import Fill, Model, Pnl, TelemetryEvent
from supervisor.files import write_atomic

from ._files import read_config_file
from .base import AlertRaised, Finding, Report

__all__ = [
    "EXPECTED_PRICE_FIELD", "Backtest", "BacktestDay", "Band", "BandPoint", "PnlMonitor",
    "PnlMonitorConfig", "band_points", "load_backtest", "parse_backtest", "slippage_cost",
]

log = logging.getLogger("desk.pnl")

DAY_S = 86_400
# The day's check runs this long after the UTC day's close: a pnl or fill stamped in the
# day's last second is in, and float rounding of the wall clock cannot make the check
# land a hair before midnight (and judge the wrong day).
SETTLE_S = 1.0
# Days of PnL kept: ten years of calendar days bounds memory and the history file.
MAX_PNL_DAYS = 3660
# Days of slippage kept: the D5 window and the streak need far fewer.
MAX_SLIPPAGE_DAYS = 120
# Gate D5's sigma needs this many previous daily averages; fewer: not evaluated.
D5_MIN_DAYS = 5
# ``Fill.expected_price`` is the integrator's one-line addition to protocol.py; fills
# without it (or before it exists) are counted as unpriced, never guessed.
EXPECTED_PRICE_FIELD = "expected_price"

_Verdict = Literal["ok", "watch", "divergence", "slippage", "not_evaluated", "no_data"]


# --- configuration -----------------------------------------------------------------------


class PnlMonitorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The PnL monitors, mounted as ``[pnl]`` (playbook 02 pnl-divergence; playbook 04 PnL
    layer)."""

    # The backtest distribution of cumulative PnL per trading day (JSON; see
    # docs/monitors-pnl-config.md); empty: the band is not evaluated and status says so.
    backtest: str = ""
    # Trading day 1 of the backtest: the model's first live day, "YYYY-MM-DD" (UTC); empty:
    # the first UTC day with pnl telemetry in the history.
    start: str = ""
    # The `pnl` telemetry value: the engine's PnL for the day (as the risk service reads
    # it), summed over the trading days; or "cumulative" since `start` already.
    pnl_value: Literal["daily", "cumulative"] = "daily"
    band_percentile: float = 5.0  # playbook 02 pnl-divergence: "below the 5th-percentile band"
    # playbook 02: "for 3 consecutive trading days"; playbook 04 "3 days in a row"
    band_days: int = 3
    slippage_bps: float = 2.0  # playbook 04 Slippage vs. expected: "Realised - expected > 2 bps"
    slippage_days: int = 5  # playbook 04 Slippage vs. expected: "for 5 days"
    # playbook 05 D5 "Document any deviation > 1σ": the σ of the previous daily averages over
    # this many trading days (the window is ours: about a trading month).
    d5_window_days: int = 20
    d5_sigma: float = 1.0  # playbook 05 D5: "> 1σ"

    def __post_init__(self) -> None:
        if not 0 < self.band_percentile < 50:
            raise ValueError(f"band_percentile must be in (0, 50), got {self.band_percentile}")
        for key in ("band_days", "slippage_days"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1")
        if not (math.isfinite(self.slippage_bps) and self.slippage_bps >= 0):
            raise ValueError(f"slippage_bps must be a finite number >= 0, "
                             f"got {self.slippage_bps}")
        if self.d5_window_days < D5_MIN_DAYS:
            raise ValueError(f"d5_window_days must be >= {D5_MIN_DAYS}")
        if not (math.isfinite(self.d5_sigma) and self.d5_sigma > 0):
            raise ValueError("d5_sigma must be a finite number > 0")
        if self.start:
            try:
                dt.date.fromisoformat(self.start)
            except ValueError:
                raise ValueError(f"start must be a date 'YYYY-MM-DD', got {self.start!r}") \
                    from None

    def start_day(self) -> int | None:
        """``start`` as a UTC day number, or None."""
        if not self.start:
            return None
        midnight = dt.datetime.combine(dt.date.fromisoformat(self.start), dt.time(),
                                       tzinfo=dt.UTC)
        return math.floor(midnight.timestamp() / DAY_S)


# --- the backtest file -------------------------------------------------------------------


Finite = Annotated[float, msgspec.Meta(ge=-1e300, le=1e300)]  # rejects nan and inf


class BacktestDay(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One trading day: the simulated cumulative PnL of every path, or its percentiles."""

    day: Annotated[int, msgspec.Meta(ge=1)]
    samples: list[Finite] | None = None
    percentiles: dict[str, Finite] | None = None  # "5" -> value; keys are percentiles

    def __post_init__(self) -> None:
        if (self.samples is None) == (self.percentiles is None):
            raise ValueError(f"day {self.day}: give exactly one of samples or percentiles")
        if self.samples is not None and not self.samples:
            raise ValueError(f"day {self.day}: samples must not be empty")
        for key in self.percentiles or {}:
            try:
                ok = 0 < float(key) < 100
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"day {self.day}: percentile key {key!r} must be a number "
                                 "in (0, 100), like \"5\"")


class Backtest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The backtest file: the distribution of cumulative PnL per trading day."""

    days: list[BacktestDay]
    model_hash: str | None = None  # the model it was run for; another live model: no band

    def __post_init__(self) -> None:
        seen: set[int] = set()
        for d in self.days:
            if d.day in seen:
                raise ValueError(f"day {d.day} is given twice")
            seen.add(d.day)


class Band(NamedTuple):
    """One trading day's band: the low percentile, the median and the high percentile."""

    low: float
    mid: float | None
    high: float | None


def _pkey(pct: float) -> str:
    return f"{pct:g}"


def parse_backtest(
    raw: bytes | str, *, percentile: float = 5.0, source: str = "<backtest>"
) -> tuple[Backtest, dict[int, Band]]:
    """Decode a backtest file and compute each day's band at ``percentile``.

    Raises:
        ConfigError: naming the file, the key (``$.days[2].percentiles``) and what was
            expected.
    """
    try:
        backtest = msgspec.json.decode(raw, type=Backtest)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON: {exc}") from exc
    low, high = _pkey(percentile), _pkey(100 - percentile)
    bands: dict[int, Band] = {}
    for i, d in enumerate(backtest.days):
        if d.samples is not None:
            lo, mid, hi = np.percentile(np.asarray(d.samples, dtype=float),
                                        [percentile, 50.0, 100 - percentile])
            bands[d.day] = Band(float(lo), float(mid), float(hi))
            continue
        given = {_pkey(float(k)): v for k, v in (d.percentiles or {}).items()}
        if low not in given:
            raise ConfigError(
                f"{source}: day {d.day}: percentiles has no \"{low}\" (band_percentile): "
                f"give it, or samples - at `$.days[{i}].percentiles`")
        bands[d.day] = Band(given[low], given.get("50"), given.get(high))
    return backtest, bands


def load_backtest(path: str, *, percentile: float = 5.0) -> tuple[Backtest, dict[int, Band], str]:
    """Read and decode the backtest file; also its sha256 (blocking: run in a thread).

    Raises:
        ConfigError: unreadable or invalid, naming the file and the key.
    """
    raw = read_config_file(path, "backtest")
    backtest, bands = parse_backtest(raw, percentile=percentile, source=path)
    return backtest, bands, hashlib.sha256(raw).hexdigest()


# --- the assessment: pure functions of the days ------------------------------------------


class BandPoint(msgspec.Struct, frozen=True, kw_only=True):
    """One trading day's live cumulative PnL against its band (None: no band that day)."""

    date: str
    trading_day: int
    cum_pnl: float
    low: float | None
    mid: float | None
    high: float | None

    @property
    def below(self) -> bool:
        return self.low is not None and self.cum_pnl < self.low


def band_points(
    daily: Mapping[int, float], bands: Mapping[int, Band], *, start_day: int | None,
    cumulative: bool,
) -> list[BandPoint]:
    """Each UTC day with PnL (from ``start_day``) as trading day 1, 2, ... on its band."""
    total = 0.0
    out: list[BandPoint] = []
    for i, day in enumerate(sorted(d for d in daily if start_day is None or d >= start_day),
                            start=1):
        total = daily[day] if cumulative else total + daily[day]
        band = bands.get(i)
        out.append(BandPoint(
            date=_date(day), trading_day=i, cum_pnl=total,
            low=None if band is None else band.low, mid=None if band is None else band.mid,
            high=None if band is None else band.high))
    return out


def _streak(flags: Sequence[bool]) -> int:
    """How many of the last ``flags`` are True in a row."""
    n = 0
    for flag in reversed(flags):
        if not flag:
            break
        n += 1
    return n


def slippage_cost(side: str, price: float, expected: float) -> float:
    """Realised minus expected in bps, positive when it cost: a buy above or a sell below."""
    sign = 1.0 if side == "buy" else -1.0
    return sign * (price - expected) / expected * 1e4


class _SlipDay(NamedTuple):
    cost: float  # sum of side * (price - expected) * qty
    notional: float  # sum of expected * qty
    fills: int

    @property
    def bps(self) -> float:
        return self.cost / self.notional * 1e4


class _History(msgspec.Struct, kw_only=True):
    """The history file (``history_path``): what survives a restart."""

    pnl: dict[int, tuple[float, float]] = {}  # UTC day -> (ts, last value)
    slippage: dict[int, tuple[float, float, int]] = {}  # UTC day -> (cost, notional, fills)
    unpriced: dict[int, int] = {}  # UTC day -> fills without expected_price


# --- the actor ---------------------------------------------------------------------------


class PnlMonitor:
    """Watches live PnL against the backtest band, and fill slippage against expected."""

    name = "pnl"
    critical = False

    def __init__(
        self,
        config: PnlMonitorConfig,
        report: Callable[[Report], Awaitable[None]],
        *,
        wall_clock: Callable[[], float],
        history_path: Path | None = None,
    ) -> None:
        self.config = config
        self.report = report
        self.wall = wall_clock
        self.history_path = history_path
        self.daily: dict[int, tuple[float, float]] = {}  # UTC day -> (ts, last value)
        self.slippage: dict[int, _SlipDay] = {}
        self.unpriced: dict[int, int] = {}
        self.model: Model | None = None
        self.backtest_error: str | None = None
        self.history_error: str | None = None
        self.last_run_at: float | None = None  # wall clock
        self.last_run_s: float | None = None
        self._bands: dict[int, Band] = {}
        self._backtest: Backtest | None = None
        self._backtest_sha: str | None = None
        self._backtest_stat: tuple[int, int] | None = None  # (mtime_ns, size) loaded
        self._alerted_error: str | None = None  # the blind-band alert sent, once per reason
        self._band_episode: str | None = None  # first date of the reported streak
        self._above_alerted: str | None = None  # the last day above the band alerted
        self._slip_episode: str | None = None
        self._band_view: dict[str, object] = {"verdict": "no_data", "note": "not run yet"}
        self._slip_view: dict[str, object] = {"verdict": "no_data", "note": "not run yet"}
        self._history_loaded = False
        self._dirty = False
        self._lock = trio.Lock()  # one check at a time: a streak is never reported twice

    # --- telemetry (sync, from Book.subscribe) -----------------------------------------

    def on_telemetry(self, events: Sequence[TelemetryEvent]) -> None:
        """Record PnL, priced fills and the model identity; cheap and never raises."""
        try:
            for ev in events:
                match ev:
                    case Pnl():
                        self._record_pnl(ev.ts, ev.value)
                    case Fill():
                        self._record_fill(ev)
                    case Model():
                        if self.model is None or ev.ts >= self.model.ts:
                            self.model = ev
        except Exception:  # a listener must not break ingestion
            log.exception("pnl: telemetry batch not recorded")

    def _record_pnl(self, ts: float, value: float) -> None:
        day = _day(ts)
        last = self.daily.get(day)
        if last is None or ts >= last[0]:
            self.daily[day] = (ts, value)
            self._dirty = True
        if len(self.daily) > MAX_PNL_DAYS:
            for old in sorted(self.daily)[:-MAX_PNL_DAYS]:
                del self.daily[old]

    def _record_fill(self, ev: Fill) -> None:
        day = _day(ev.ts)
        expected = getattr(ev, EXPECTED_PRICE_FIELD, None)
        self._dirty = True
        if not isinstance(expected, int | float) or not expected > 0:
            self.unpriced[day] = self.unpriced.get(day, 0) + 1
        else:
            sign = 1.0 if ev.side == "buy" else -1.0
            old = self.slippage.get(day, _SlipDay(0.0, 0.0, 0))
            self.slippage[day] = _SlipDay(old.cost + sign * (ev.price - expected) * ev.qty,
                                          old.notional + expected * ev.qty, old.fills + 1)
        for table in (self.slippage, self.unpriced):
            if len(table) > MAX_SLIPPAGE_DAYS:
                for old_day in sorted(table)[:-MAX_SLIPPAGE_DAYS]:
                    del table[old_day]

    # --- the run loop --------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read the history and the backtest and check once (started then), then check
        after every UTC day's close. Nothing is lost on cancel: the days live on the actor,
        and a restarted ``run`` does not read the history file over them."""
        if self.history_path is not None and not self._history_loaded:
            await self._load_history(self.history_path)
        self._history_loaded = True
        await self.check()
        task_status.started()
        while True:
            now = self.wall()
            await trio.sleep((math.floor(now / DAY_S) + 1) * DAY_S + SETTLE_S - now)
            await self.check()

    async def check(self) -> None:
        """One pass over the closed days: the band (a finding), slippage (an alert), the
        gates' numbers for ``status``; then the history file. A report that raises leaves
        its episode unrecorded, so the next pass reports it again."""
        async with self._lock:
            started = time.perf_counter()
            await self._refresh_backtest()
            today = _day(self.wall())
            await self._check_band(today)
            await self._check_slippage(today)
            self.last_run_at = self.wall()
            self.last_run_s = time.perf_counter() - started
            if self.history_path is not None and self._dirty:
                await self._save_history(self.history_path)

    # --- the band (playbook 02 pnl-divergence; playbook 05 D3) ---------------------------------

    async def _refresh_backtest(self) -> None:
        path = self.config.backtest
        if not path:
            return
        try:
            st = os.stat(path)  # a stat a day; the file itself is read only when it changed
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp is not None and stamp == self._backtest_stat:
            return
        try:
            # A backtest of many paths is megabytes of JSON: decoded off the trio thread.
            backtest, bands, sha = await trio.to_thread.run_sync(
                lambda: load_backtest(path, percentile=self.config.band_percentile))
        except ConfigError as exc:
            self.backtest_error = str(exc)
            self._backtest_stat = stamp
            log.error("pnl: %s", exc)
            return
        self._backtest, self._bands, self._backtest_sha = backtest, bands, sha
        self._backtest_stat = stamp
        self.backtest_error = None
        log.info("pnl: backtest %s loaded: %d trading days (sha256 %s)", path,
                 len(bands), sha[:12])

    def _blind_reason(self) -> str | None:
        """Why the band cannot be judged now, or None."""
        if not self.config.backtest:
            return "no backtest file configured: the band is not evaluated"
        if self.backtest_error is not None:
            return f"the band is not evaluated: {self.backtest_error}"
        if self._backtest is None:
            return "the backtest file is not loaded yet: the band is not evaluated"
        want, live = self._backtest.model_hash, self.model.model_hash if self.model else None
        if want is not None and live is not None and want != live:
            return (f"the backtest {self.config.backtest} is for model {want} but the live "
                    f"model is {live}: the band is not evaluated; load the live model's "
                    "backtest")
        return None

    def _points(self, upto: int) -> list[BandPoint]:
        """Trading days before UTC day ``upto`` (exclusive) on the band."""
        return band_points({d: v for d, (_, v) in self.daily.items() if d < upto}, self._bands,
                           start_day=self.config.start_day(),
                           cumulative=self.config.pnl_value == "cumulative")

    async def _check_band(self, today: int) -> None:
        cfg = self.config
        view: dict[str, object] = {
            "metric": "live cumulative PnL vs the backtest band, per trading day",
            "threshold": (f"below the {_pkey(cfg.band_percentile)}th percentile for "
                          f"{cfg.band_days} consecutive trading days"),
            "channel": "PAGE (pnl-divergence P1: size halved)",
            "frequency": "daily, after each UTC day's close",
            "backtest": self._backtest_info(),
            "last_value": None, "streak": 0, "d3": None, "note": None,
        }
        self._band_view = view
        reason = self._blind_reason()
        if reason is not None:
            # The episode is kept: a streak already reported is not reported again
            # when the band comes back.
            view.update(verdict="not_evaluated", note=reason)
            if cfg.backtest and reason != self._alerted_error:
                # The band is configured but blind: worth a look in working hours.
                await self.report(AlertRaised(
                    actor=self.name, channel="QUEUE", scope="pnl:backtest",
                    summary=f"pnl band monitor blind: {reason}",
                    evidence={"backtest": cfg.backtest, "reason": reason}))
                self._alerted_error = reason
            return
        self._alerted_error = None
        points = self._points(today)
        if not points:
            view.update(verdict="no_data", note="no closed trading day with pnl telemetry yet")
            return
        last = points[-1]
        view["last_value"] = msgspec.to_builtins(last)
        view["d3"] = _d3(last)
        streak = _streak([p.below for p in points])
        view["streak"] = streak
        if last.low is None:
            view.update(verdict="not_evaluated",
                        note=f"trading day {last.trading_day} is beyond the backtest's "
                             f"{len(self._bands)} days: no band")
        elif streak >= cfg.band_days:
            view["verdict"] = "divergence"
        else:
            view["verdict"] = "watch" if streak else "ok"
        if last.high is not None and last.cum_pnl > last.high and (
                self._above_alerted != last.date):
            # The band is two-sided: above it is no divergence to halve size for, but
            # worth a look (a look-ahead, a data error, a regime the backtest missed).
            self._above_alerted = last.date
            await self.report(AlertRaised(
                actor=self.name, channel="QUEUE", scope="pnl:above-band",
                summary=(f"pnl above the band: live cumulative PnL {_money(last.cum_pnl)} "
                         f"on {last.date} above the backtest's "
                         f"{_pkey(100 - cfg.band_percentile)}th percentile "
                         f"{_money(last.high)}: check for look-ahead, a data error or a "
                         "regime the backtest missed"),
                evidence={"date": last.date, "cum_pnl": last.cum_pnl, "band_high": last.high,
                          "trading_day": last.trading_day}))
        if streak < cfg.band_days:
            self._band_episode = None
            return
        episode = points[-streak].date
        if episode == self._band_episode:
            return
        await self._report_divergence(points[-cfg.band_days:], streak)
        self._band_episode = episode

    async def _report_divergence(self, days: list[BandPoint], streak: int) -> None:
        cfg, model = self.config, self.model
        model_hash = model.model_hash if model is not None else "unknown"
        pct = _pkey(cfg.band_percentile)
        last = days[-1]
        summary = (
            f"pnl divergence: live cumulative PnL below the backtest's {pct}th percentile "
            f"for {streak} consecutive trading days ({days[0].date} to {last.date}; "
            f"{_money(last.cum_pnl)} < {_money(last.low or 0.0)}), model {model_hash}: "
            "size halved; replay the window through the backtest with live fills "
            "(playbook 02 containment)")
        log.warning("pnl: %s", summary)
        await self.report(Finding(
            actor=self.name, incident_class="pnl-divergence", scope=f"model:{model_hash}",
            summary=summary,
            evidence={
                "model_hash": None if model is None else model.model_hash,
                "feature_hash": None if model is None else model.feature_hash,
                "lib_hash": None if model is None else model.lib_hash,
                "band_percentile": cfg.band_percentile, "consecutive_days": streak,
                "days": [{"date": p.date, "trading_day": p.trading_day,
                          "cum_pnl": p.cum_pnl, f"p{pct}": p.low, "p50": p.mid,
                          f"p{_pkey(100 - cfg.band_percentile)}": p.high} for p in days],
                "backtest": cfg.backtest, "backtest_sha256": self._backtest_sha,
            }))

    def _backtest_info(self) -> dict[str, object]:
        return {"path": self.config.backtest or None, "sha256": self._backtest_sha,
                "days": len(self._bands),
                "model_hash": None if self._backtest is None else self._backtest.model_hash,
                "error": self.backtest_error}

    # --- slippage (playbook 04; playbook 05 D5) ------------------------------------------------

    async def _check_slippage(self, today: int) -> None:
        cfg = self.config
        closed = sorted(d for d in self.slippage if d < today)
        view: dict[str, object] = {
            "metric": "realised minus expected fill price, bps, notional-weighted daily",
            "threshold": f"> {cfg.slippage_bps:g} bps for {cfg.slippage_days} trading days",
            "channel": "QUEUE", "frequency": "daily, after each UTC day's close",
            "last_value": None, "streak": 0, "d5": None,
            "unpriced_fills_today": self.unpriced.get(today, 0), "note": None,
        }
        self._slip_view = view
        if not closed:
            view.update(verdict="no_data",
                        note="no closed trading day with fills carrying expected_price yet")
            self._slip_episode = None
            return
        days = [(d, self.slippage[d]) for d in closed]
        last_day, last = days[-1]
        view["last_value"] = {"date": _date(last_day), "bps": last.bps, "fills": last.fills,
                              "unpriced_fills": self.unpriced.get(last_day, 0)}
        view["d5"] = self._d5([s.bps for _, s in days])
        streak = _streak([s.bps > cfg.slippage_bps for _, s in days])
        view["streak"] = streak
        view["verdict"] = ("slippage" if streak >= cfg.slippage_days
                           else "watch" if streak else "ok")
        if streak < cfg.slippage_days:
            self._slip_episode = None
            return
        episode = _date(days[-streak][0])
        if episode == self._slip_episode:
            return
        shown = days[-cfg.slippage_days:]
        await self.report(AlertRaised(
            actor=self.name, channel="QUEUE", scope="slippage",
            summary=(f"slippage above {cfg.slippage_bps:g} bps for {streak} consecutive "
                     f"trading days ({_date(shown[0][0])} to {_date(last_day)}, last "
                     f"{last.bps:.2f} bps): the cost model may be stale; recalibrate "
                     "(gate M3)"),
            evidence={"threshold_bps": cfg.slippage_bps, "consecutive_days": streak,
                      "days": [{"date": _date(d), "bps": s.bps, "fills": s.fills}
                               for d, s in shown]}))
        self._slip_episode = episode

    def _d5(self, values: list[float]) -> dict[str, object]:
        """Gate D5: the last day's average against the previous days' mean and σ."""
        cfg = self.config
        value, previous = values[-1], values[:-1][-cfg.d5_window_days:]
        out: dict[str, object] = {"bps": value, "mean": None, "sigma": None,
                                  "deviation_sigma": None, "flag": None,
                                  "days": len(previous), "note": None}
        if len(previous) < D5_MIN_DAYS:
            out["note"] = (f"needs {D5_MIN_DAYS} previous trading days of slippage, has "
                           f"{len(previous)}: not evaluated")
            return out
        arr = np.asarray(previous, dtype=float)
        mean, sigma = float(arr.mean()), float(arr.std(ddof=1))
        deviation = abs(value - mean)
        out.update(mean=mean, sigma=sigma,
                   deviation_sigma=deviation / sigma if sigma > 0 else None,
                   flag=deviation > cfg.d5_sigma * sigma)
        return out

    # --- the history file ----------------------------------------------------------------

    async def _load_history(self, path: Path) -> None:
        try:
            raw = await trio.to_thread.run_sync(_read_optional, path)
            if raw is None:
                return
            history = msgspec.json.decode(raw, type=_History)
        except (OSError, msgspec.DecodeError) as exc:
            # The days build up again from telemetry; the file is rewritten at the next check.
            self.history_error = f"history file {path} not read, starting empty: {exc}"
            log.error("pnl: %s", self.history_error)
            return
        for day, (ts, value) in history.pnl.items():
            if day not in self.daily or ts > self.daily[day][0]:
                self.daily[day] = (ts, value)
        for day, (cost, notional, fills) in history.slippage.items():
            self.slippage.setdefault(day, _SlipDay(cost, notional, fills))
        for day, n in history.unpriced.items():
            self.unpriced.setdefault(day, n)

    async def _save_history(self, path: Path) -> None:
        data = msgspec.json.encode(_History(
            pnl=self.daily,
            slippage={d: (s.cost, s.notional, s.fills) for d, s in self.slippage.items()},
            unpriced=self.unpriced))
        try:
            await trio.to_thread.run_sync(write_atomic, path, data)
        except OSError as exc:
            self.history_error = f"history file {path} not written: {exc}"
            log.error("pnl: %s", self.history_error)
            return
        self.history_error = None
        self._dirty = False

    # --- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        """What ``deskctl status`` shows of the PnL monitors (JSON-able)."""
        band = dict(self._band_view)
        today = _day(self.wall())
        # Today's landing so far; gate D3 is judged on the closed day ("d3").
        points = self._points(today + 1) if today in self.daily else []
        if points and points[-1].date == _date(today) and self._blind_reason() is None:
            band["today"] = _d3(points[-1]) or msgspec.to_builtins(points[-1])
        else:
            band["today"] = None
        model = self.model
        return {
            "pnl_band": band,
            "slippage": dict(self._slip_view),
            "model": None if model is None else msgspec.to_builtins(model),
            "last_run_at": self.last_run_at,
            "last_run_s": self.last_run_s,
            "next_run_at": (math.floor(self.wall() / DAY_S) + 1) * DAY_S + SETTLE_S,
            "history": {"path": None if self.history_path is None else str(self.history_path),
                        "pnl_days": len(self.daily), "slippage_days": len(self.slippage),
                        "error": self.history_error},
        }


def _d3(point: BandPoint) -> dict[str, object] | None:
    """Gate D3 "Document whether today landed inside the 95% band": at or above the low
    percentile (the band is one-sided, as playbook 02's detection: only a shortfall is a
    divergence); ``above_high`` notes a day above the high percentile."""
    if point.low is None:
        return None
    return {"date": point.date, "trading_day": point.trading_day, "cum_pnl": point.cum_pnl,
            "band_low": point.low, "band_high": point.high,
            "inside_band": point.cum_pnl >= point.low,
            "above_high": point.high is not None and point.cum_pnl > point.high}


def _read_optional(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _day(ts: float) -> int:
    """The UTC day number of an epoch timestamp."""
    return math.floor(ts / DAY_S)


def _date(day: int) -> str:
    return dt.datetime.fromtimestamp(day * DAY_S, tz=dt.UTC).date().isoformat()


def _money(value: float) -> str:
    return f"{value:,.2f}"
