"""Market-data freshness (playbook 02 stale-data; playbook 03 recovery tree missing-data; playbook
04
monitors "Market-data bar age" and "Vendor-feed reconciliation"; playbook 05 gates D1, P4).

- Keeps the newest bar timestamp per (symbol, vendor). A symbol is stale on a vendor
  when that bar is ``stale_factor * bar_interval_s`` old (playbook 02: "older than 2x the
  configured bar interval"). Detection runs on deadlines, not a poll: each (symbol,
  vendor) has at most one entry in a heap, the loop sleeps until the earliest one, so a
  symbol is found stale at its threshold and a wake-up costs O(log n), whatever n is.
- Walks the playbook 03 missing-data tree on the active vendor, see ``_judge``: a stale
  symbol is suppressed (P2), or only suppressed when a halt explains it; the whole feed
  stale fails over to the other vendor (P2 plus a PAGE), or, with both stale, a P0 for
  scope ``feed``: the kill-switch.
- Counts bars per symbol per window from both vendors (playbook 04 "Vendor-feed
  reconciliation ... hourly"): a mismatch is a QUEUE alert; the divergence of the last
  5 trading days of windows is gate P4's number.
- Judges only in the trading session (``FreshnessConfig.session``; 24/7 if unset): the
  feeds are quiet outside it. The loop sleeps until the next open or close; at the open
  every symbol that is not stale gets the start-up grace again (playbook 05 D1 "a bar within
  the last 2x interval as of the open"); at the close the deadlines are dropped and what
  was stale or suppressed stays so until a fresh bar.

Telemetry is handled synchronously in ``on_telemetry`` (O(1) a bar, never raises); the
findings are sent from ``run``. Cancelling ``run`` loses nothing: the state lives on the
actor and a restarted ``run`` rebuilds its heap from it.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path

import msgspec
import numpy as np
import trio

from supervisor.core.book import Book
from supervisor.core.calendar import Calendar
from supervisor.core.protocol import Bar, SymbolHalt, TelemetryEvent
from supervisor.files import write_atomic

from .base import AlertRaised, Finding, Report

log = logging.getLogger("desk.freshness")


class FreshnessConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Market-data freshness (playbook 02 stale-data; playbook 03 missing-data; playbook 04
    "Market-data
    bar age" and "Vendor-feed reconciliation"; gates D1, P4)."""

    # playbook 02 stale-data: "older than 2x the configured bar interval (e.g., > 2 min on a
    # 1-min feed)"
    bar_interval_s: float = 60.0
    stale_factor: float = 2.0
    primary_vendor: str = "primary"
    backup_vendor: str = "backup"
    # The traded universe; empty: every symbol that telemetry has shown a bar for.
    symbols: list[str] = []
    # playbook 03 missing-data Q1 "Is the staleness on a single symbol?": one stale symbol
    # (not under a halt) is YES, two or more NO (the backup-vendor question). A site may
    # instead treat up to this fraction of the universe symbol by symbol (a deviation from
    # the playbook, shown in status); None: the playbook's rule.
    whole_feed_fraction: float | None = None
    # playbook 04 "Vendor-feed reconciliation ... hourly": bar-count comparison window.
    reconcile_window_s: float = 3600.0
    # playbook 05 P4: "at least 5 trading days with < 0.5% bar-count divergence"
    divergence_max: float = 0.005
    divergence_days: int = 5
    # The trading session, "HH:MM-HH:MM" local to session_timezone; an end before the
    # start runs overnight ("18:00-17:00"). Empty: always in session (24/7). Outside it
    # the feeds send nothing and nothing is judged; at the open every symbol gets one
    # threshold to show a bar (playbook 05 D1 "a bar within the last 2x interval as of the
    # open").
    session: str = ""
    session_timezone: str = "UTC"  # an IANA name, e.g. "America/New_York"
    # The weekdays a session opens on, Monday 0 (an overnight session's evening).
    session_days: list[int] = msgspec.field(default_factory=lambda: [0, 1, 2, 3, 4])

    def __post_init__(self) -> None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        for key in ("bar_interval_s", "stale_factor", "reconcile_window_s"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be > 0")
        if self.whole_feed_fraction is not None and not 0 < self.whole_feed_fraction <= 1:
            raise ValueError("whole_feed_fraction must be in (0, 1]")
        if self.primary_vendor == self.backup_vendor:
            raise ValueError("primary_vendor and backup_vendor must differ")
        if self.session:
            ends = self.session.split("-")
            ok = len(ends) == 2 and ends[0] != ends[1]
            for end in ends:
                hh, sep, mm = end.partition(":")
                ok = (ok and bool(sep) and 1 <= len(hh) <= 2 and len(mm) == 2
                      and (hh + mm).isascii() and (hh + mm).isdigit()
                      and int(hh) < 24 and int(mm) < 60)
            if not ok:
                raise ValueError(f"session must be 'HH:MM-HH:MM' with the start and end "
                                 f"different, got {self.session!r}")
            if not self.session_days:
                raise ValueError("session_days must name at least one weekday")
        if any(not 0 <= day <= 6 for day in self.session_days):
            raise ValueError(f"session_days must be weekdays 0-6 (Monday 0), "
                             f"got {self.session_days}")
        if self.session_timezone != "UTC":  # UTC needs no tz database (the actor's too)
            try:
                ZoneInfo(self.session_timezone)
            except (ZoneInfoNotFoundError, ValueError, OSError):
                raise ValueError(f"session_timezone: unknown time zone "
                                 f"{self.session_timezone!r}, give an IANA name such as "
                                 f"'America/New_York'") from None

# playbook 05 P4 counts "trading days"; a day is one session of 6.5 h (playbook 03 post-incident
# "one full session", as RecoveryConfig.session_s), or the configured session's length.
SESSION_S = 6.5 * 3600
# A dynamic universe (``symbols`` empty) stops growing here, so memory stays bounded by
# symbols x vendors even under an engine that sends garbage symbols.
MAX_SYMBOLS = 100_000
# At most this many symbols or order ids in one finding's evidence or in status.
LIST_MAX = 200
# A deadline this close to now is due: wall-clock floats near 1.7e9 s carry ~0.2 us of
# rounding, and re-sleeping for less than that would only spin.
_EPS = 1e-6
# Heap entries of this vendor are halt-lift rechecks (a vendor name is never empty).
_LIFT = ""
_INF = math.inf


class Halt(msgspec.Struct, frozen=True, kw_only=True):
    """A trading halt or corporate action that explains a symbol's missing bars."""

    reason: str
    by: str
    at: float  # epoch seconds


class _Feed:
    """One vendor's view of the universe."""

    __slots__ = ("armed", "bar", "bars", "since", "stale", "vendor")

    def __init__(self, vendor: str) -> None:
        self.vendor = vendor
        # What the deadline is measured from: the newest bar, or the start-up grace.
        self.since: dict[str, float] = {}
        self.bar: dict[str, float] = {}  # newest bar ts; absent until one arrives
        self.armed: dict[str, float] = {}  # the deadline of the symbol's one heap entry
        self.stale: set[str] = set()
        self.bars = 0


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _names(symbols: Iterable[str], limit: int = 10) -> str:
    ordered = sorted(symbols)
    more = f" and {len(ordered) - limit} more" if len(ordered) > limit else ""
    return ", ".join(ordered[:limit]) + more


class FreshnessActor:
    """Watches bar age per symbol and vendor; suppresses, fails over, or stops trading."""

    name = "freshness"
    critical = True
    blind_class = "stale-data"

    def __init__(
        self,
        config: FreshnessConfig,
        book: Book,
        report: Callable[[Report], Awaitable[None]],
        *,
        wall_clock: Callable[[], float],
        divergence_path: Path | None = None,
    ) -> None:
        """``divergence_path``: where the reconciled windows of gate P4 are kept, so a
        restart does not start the 5 trading days again (None: memory only)."""
        self.config = config
        self.divergence_path = divergence_path
        self._divergence_loaded = False
        self.book = book
        self.report = report
        self.wall = wall_clock
        # playbook 02 stale-data: "older than 2x the configured bar interval"
        self.threshold_s = config.stale_factor * config.bar_interval_s
        self.primary, self.backup = config.primary_vendor, config.backup_vendor
        self._feeds = {v: _Feed(v) for v in (self.primary, self.backup)}
        self._fixed = bool(config.symbols)
        self.universe: set[str] = set(config.symbols)
        self.active_vendor = self.primary
        self.suppressed: dict[str, str] = {}
        self.halted: dict[str, Halt] = {}
        self.failover: dict[str, object] | None = None
        self.feed_down = False  # the both-vendors P0 was reported for this episode
        self._was_whole = False
        self._reported: set[str] = set()  # symbols with a P2 this episode
        self._lift_grace: dict[str, float] = {}  # symbol -> end of its halt-lift grace
        self._heap: list[tuple[float, str, str]] = []
        self._dirty: set[str] = set()  # symbols whose suppression must be re-judged
        self._wake = trio.Event()
        self._target = _INF  # wall time the loop sleeps until
        cfg = config
        # The trading calendar (the desk's, ``set_calendar``; or, as older configs say
        # it, ``session`` on ``session_days``); None: always in session (24/7).
        self.session: Calendar | None = (
            Calendar(session=cfg.session, zone=cfg.session_timezone, days=cfg.session_days)
            if cfg.session else None)
        # Judging only in session; set by ``run`` (unknown before it: not judging).
        self.in_session = self.session is None
        self._boundary = _INF  # wall time of the next open or close
        self._opened: float | None = None  # open of the session the heap was armed for
        self._ts_period = (False, 0.0, 0.0)  # the last TradingSession.period of a bar ts
        # Vendor-feed reconciliation: window index -> symbol -> [primary, backup] bars.
        self._windows: dict[int, dict[str, list[int]]] = {}
        self._closed_upto: int | None = None
        self.windows_needed = self._windows_for_p4()
        # (window start, sum |primary - backup|, primary bars) of windows that had bars.
        self._divergence: deque[tuple[float, int, int]] = deque(maxlen=self.windows_needed)
        self.last_window: dict[str, object] | None = None
        self.counters = dict.fromkeys(
            ("unknown_vendor", "outside_universe", "future", "late", "invalid", "errors"), 0)
        # What one wake-up costs (tests and the bench read these).
        self.wakeups = 0
        self.heap_ops = 0
        self.last_examined = 0
        self.max_examined = 0

    # --- telemetry (sync, from Book.ingest) --------------------------------------------

    def on_telemetry(self, events: Sequence[TelemetryEvent]) -> None:
        """Apply one batch: bars and halts; other events are ignored. Never raises."""
        now: float | None = None
        failed = None
        for ev in events:
            try:
                if isinstance(ev, Bar):
                    if now is None:
                        now = self.wall()
                    self._on_bar(ev.symbol, ev.vendor, ev.ts, now)
                elif isinstance(ev, SymbolHalt):
                    if now is None:
                        now = self.wall()
                    self._on_halt(ev.symbol, ev.reason, "telemetry", ev.ts, ev.resumed, now)
            except Exception as exc:  # a bug must not stop the book's other listeners
                self.counters["errors"] += 1
                failed = exc
        if failed is not None:
            log.error("freshness: telemetry event not applied", exc_info=failed)

    def halt_symbol(self, symbol: str, reason: str, *, actor: str, resumed: bool = False) -> None:
        """An operator's halt or corporate action (``deskctl``), the same as ``SymbolHalt``.

        Raises:
            ValueError: the symbol or the reason is empty.
        """
        if not symbol:
            raise ValueError("halt needs a symbol")
        if not reason and not resumed:
            raise ValueError(f"halt of {symbol}: give a reason (halt, split, dividend...)")
        now = self.wall()
        self._on_halt(symbol, reason, actor, now, resumed, now)

    def _on_bar(self, symbol: str, vendor: str, ts: float, now: float) -> None:
        feed = self._feeds.get(vendor)
        if feed is None:
            self.counters["unknown_vendor"] += 1
            return
        if not math.isfinite(ts):
            self.counters["invalid"] += 1
            return
        if ts > now:
            # A vendor clock ahead of ours must not hide a dying feed: count it as now.
            self.counters["future"] += 1
            ts = now
        if symbol not in self.universe:
            if self._fixed or len(self.universe) >= MAX_SYMBOLS:
                self.counters["outside_universe"] += 1
                return
            self._join(symbol, feed, now)
        feed.bars += 1
        self._count(symbol, 0 if vendor == self.primary else 1, ts, now)
        if ts > feed.bar.get(symbol, -_INF):
            feed.bar[symbol] = ts
        if ts <= feed.since.get(symbol, -_INF):
            return  # out of order, or older than the grace: nothing new
        feed.since[symbol] = ts
        if symbol in feed.stale:
            if ts + self.threshold_s <= now + _EPS:
                return  # a late bar that is stale already
            feed.stale.discard(symbol)
            self._mark(symbol)
        if symbol not in feed.armed:
            self._arm(feed, symbol, ts + self.threshold_s)
        # An armed entry fires at the old deadline and re-arms from ``since``: a bar
        # costs no heap operation.

    def _join(self, symbol: str, feed: _Feed, now: float) -> None:
        # A symbol seen for the first time joins a dynamic universe; the other vendor
        # gets the threshold from now to show it too (start-up grace).
        self.universe.add(symbol)
        for other in self._feeds.values():
            if other is not feed:
                other.since[symbol] = now
                self._arm(other, symbol, now + self.threshold_s)

    def _on_halt(self, symbol: str, reason: str, by: str, at: float, resumed: bool,
                 now: float) -> None:
        if symbol not in self.universe and (self._fixed or len(self.halted) >= MAX_SYMBOLS):
            self.counters["outside_universe"] += 1
            return
        if resumed:
            if self.halted.pop(symbol, None) is None:
                return
            # Bars resume a little after the halt lifts: no finding for the threshold
            # after it, but the symbol stays suppressed until a fresh bar comes.
            grace = now + self.threshold_s
            self._lift_grace[symbol] = grace
            if self.in_session:  # else pushed at the open
                heapq.heappush(self._heap, (grace, symbol, _LIFT))
                self.heap_ops += 1
        else:
            self.halted[symbol] = Halt(reason=reason, by=by, at=at)
            self._lift_grace.pop(symbol, None)
        self._mark(symbol)

    def _arm(self, feed: _Feed, symbol: str, deadline: float) -> None:
        if not self.in_session:
            return  # nothing fires outside the session; the open arms from ``since``
        feed.armed[symbol] = deadline
        heapq.heappush(self._heap, (deadline, symbol, feed.vendor))
        self.heap_ops += 1
        if deadline < self._target:
            self._wake.set()  # earlier than the loop's sleep: wake it to re-aim

    def _mark(self, symbol: str) -> None:
        self._dirty.add(symbol)
        if self.in_session:  # else judged at the open
            self._wake.set()

    def _count(self, symbol: str, index: int, ts: float, now: float) -> None:
        # Bars are counted in the window of their own timestamp, so the two vendors'
        # bars for the same minute land together whatever their arrival jitter.
        w = self.config.reconcile_window_s
        k = int(ts // w)
        if (self._closed_upto is not None and k <= self._closed_upto) or (
                (k + 1) * w + self.threshold_s <= now):
            self.counters["late"] += 1
            return
        if not self._traded(ts):
            return  # outside the session: not reconciled (nor late: ages still count it)
        counts = self._windows.get(k)
        if counts is None:
            counts = self._windows[k] = {}
        pair = counts.get(symbol)
        if pair is None:
            pair = counts[symbol] = [0, 0]
        pair[index] += 1

    def _windows_for_p4(self) -> int:
        """Gate P4's windows: ``divergence_days`` trading days of the calendar's session
        (6.5 h without one), in ``reconcile_window_s`` windows."""
        day_s = self.session.length_s if self.session is not None else SESSION_S
        return self.config.divergence_days * max(
            1, math.ceil(day_s / self.config.reconcile_window_s))

    def _load_divergence(self, path: Path) -> None:
        """The windows kept by the last run (an unreadable file: start empty, logged).
        Read in place: a small local file, and a worker thread would let the tests'
        autojump clock skip past it."""
        self._divergence_loaded = True
        try:
            rows = msgspec.json.decode(path.read_bytes(), type=list[tuple[float, int, int]])
        except FileNotFoundError:
            return
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error("feed divergence windows in %s unreadable, counting from now: %s",
                      path, exc)
            return
        self._divergence.extend(rows[-self.windows_needed:])

    def _save_divergence(self) -> None:
        if self.divergence_path is None:
            return
        try:  # in place, as it is read: one small file an hour
            write_atomic(self.divergence_path, msgspec.json.encode(list(self._divergence)))
        except OSError as exc:
            log.error("feed divergence windows not saved to %s: %s", self.divergence_path, exc)

    def set_calendar(self, calendar: Calendar | None) -> None:
        """Judge by ``calendar`` from now on (None or 24/7: always in session): the loop
        re-enters at once, opening or closing as the new calendar says."""
        self.session = None if calendar is None or calendar.always else calendar
        # P4 counts trading days of this calendar's session length.
        if self._windows_for_p4() != self.windows_needed:
            self.windows_needed = self._windows_for_p4()
            self._divergence = deque(self._divergence, maxlen=self.windows_needed)
        self._ts_period = (False, 0.0, 0.0)
        self._boundary = -_INF
        self._wake.set()

    def _traded(self, ts: float) -> bool:
        """Whether a bar stamped ``ts`` is in session; O(1) until ``ts`` leaves the span
        of the last answer."""
        if self.session is None:
            return True
        inside, lo, hi = self._ts_period
        if not lo <= ts < hi:
            inside, lo, hi = self._ts_period = self.session.period(ts)
        return inside

    # --- the loop ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Detect until cancelled. Started once the deadlines are armed (or, outside the
        session, disarmed until the open)."""
        if self.divergence_path is not None and not self._divergence_loaded:
            self._load_divergence(self.divergence_path)
        self._enter(self.wall())
        task_status.started()
        while True:
            await self._wait()
            now = self.wall()
            self.wakeups += 1
            if now + _EPS >= self._boundary:
                self._enter(now)
            if self.in_session:
                await self._tick(now)
            else:
                await self._close_windows(now)

    def _enter(self, now: float) -> None:
        """At start and at each open or close: arm the deadlines, or drop them."""
        if self.session is None:
            inside, lo, self._boundary = True, -_INF, _INF
        else:
            inside, lo, self._boundary = self.session.period(now + _EPS)
        self.in_session = inside
        if not inside:
            # Closed: nothing fires. ``stale`` and ``suppressed`` stay as they are until
            # a fresh bar (a symbol found stale must not trade at the next open on
            # yesterday's price); so do the active vendor and an episode's flags.
            self._heap = []
            for feed in self._feeds.values():
                feed.armed.clear()
            return
        # A session this actor has not armed for yet is an open: every symbol that is
        # not stale gets the threshold from now, even one with a bar from before (the
        # feeds were quiet; playbook 05 D1 "a bar within the last 2x interval as of the
        # open"). A restarted run in the same session keeps what it knew.
        opening = self.session is not None and self._opened != lo
        self._opened = lo
        self._arm_all(now, opening)

    def _arm_all(self, now: float, opening: bool) -> None:
        thr = self.threshold_s
        heap: list[tuple[float, str, str]] = []
        for feed in self._feeds.values():
            since = feed.since
            for symbol in self.universe:
                if opening and symbol not in feed.stale:
                    since[symbol] = max(since.get(symbol, -_INF), now)
                else:
                    # Start-up grace: a traded symbol without a bar yet has the threshold
                    # from now (playbook 05 D1 asks for a bar "as of the open", not before).
                    since.setdefault(symbol, now)
            feed.armed.clear()
            for symbol, at in since.items():
                if symbol not in feed.stale:
                    feed.armed[symbol] = at + thr
                    heap.append((at + thr, symbol, feed.vendor))
        if opening:  # a halt lifted before the open: its grace runs from the open too
            for symbol, grace in self._lift_grace.items():
                self._lift_grace[symbol] = max(grace, now + thr)
        heap.extend((grace, symbol, _LIFT) for symbol, grace in self._lift_grace.items())
        heapq.heapify(heap)
        self._heap = heap
        self._dirty.update(self.suppressed)

    async def _wait(self) -> None:
        self._wake = trio.Event()
        if self._dirty and self.in_session:
            await trio.lowlevel.checkpoint()
            return
        # The heap is empty outside the session: the loop sleeps until the open.
        target = min(self._heap[0][0] if self._heap else _INF, self._boundary)
        if self._windows:
            w = self.config.reconcile_window_s
            target = min(target, (min(self._windows) + 1) * w + self.threshold_s)
        self._target = target
        try:
            if target == _INF:
                await self._wake.wait()
            else:
                with trio.move_on_at(trio.current_time() + (target - self.wall())):
                    await self._wake.wait()
        finally:
            self._target = _INF

    async def _tick(self, now: float) -> None:
        heap, thr, examined = self._heap, self.threshold_s, 0
        while heap and heap[0][0] <= now + _EPS:
            deadline, symbol, vendor = heapq.heappop(heap)
            self.heap_ops += 1
            examined += 1
            if vendor == _LIFT:
                if self._lift_grace.get(symbol) == deadline:
                    del self._lift_grace[symbol]
                    self._dirty.add(symbol)
                continue
            feed = self._feeds[vendor]
            if feed.armed.get(symbol) != deadline:
                continue  # superseded (lazy invalidation)
            due = feed.since[symbol] + thr
            if due > now + _EPS:
                feed.armed[symbol] = due  # a newer bar came: re-arm, one push
                heapq.heappush(heap, (due, symbol, vendor))
                self.heap_ops += 1
            else:
                del feed.armed[symbol]
                feed.stale.add(symbol)
                self._dirty.add(symbol)
        examined += len(self._dirty)
        self.last_examined = examined
        self.max_examined = max(self.max_examined, examined)
        await self._judge(now)
        await self._close_windows(now)

    # --- playbook 03 recovery tree missing-data ----------------------------------------------

    def _unexplained(self, vendor: str) -> int:
        """Stale symbols on ``vendor`` that no halt explains; O(halts), not O(universe)."""
        stale = self._feeds[vendor].stale
        if not self.halted:
            return len(stale)
        small, big = ((self.halted, stale) if len(self.halted) < len(stale)
                      else (stale, self.halted))
        return len(stale) - sum(1 for s in small if s in big)

    def _whole(self, vendor: str) -> bool:
        # Q1 "Is the staleness on a single symbol?": NO from two symbols on (or, with
        # ``whole_feed_fraction``, from more than that share of the universe).
        n = self._unexplained(vendor)
        frac = self.config.whole_feed_fraction
        return n > 1 and (frac is None or n > frac * len(self.universe))

    def _other(self, vendor: str) -> str:
        return self.backup if vendor == self.primary else self.primary

    async def _judge(self, now: float) -> None:
        active = self.active_vendor
        whole = self._whole(active)
        if whole:
            other = self._other(active)
            if not self._whole(other):
                # Q3 YES "[ROLLBACK] Failover to the backup vendor."
                await self._failover(active, other, now)
                active = self.active_vendor
                whole = self._whole(active)
            elif not self.feed_down:
                # Q3 NO "[KILL-SWITCH] Both vendors down. Stop trading."
                self.feed_down = True
                await self._feed_down(now)
        if not whole:
            self.feed_down = False
        if whole != self._was_whole:
            # Whether a stale symbol gets its own finding depends on Q1's answer.
            self._was_whole = whole
            self._dirty.update(self._feeds[active].stale)
        dirty, self._dirty = self._dirty, set()
        for symbol in dirty:
            await self._judge_symbol(symbol, whole, now)

    async def _judge_symbol(self, symbol: str, whole: bool, now: float) -> None:
        active = self.active_vendor
        feed = self._feeds[active]
        if symbol not in feed.stale:
            # Fresh again: stop suppressing. The incident, if any, is the runtime's.
            self.suppressed.pop(symbol, None)
            self._reported.discard(symbol)
            return
        halt = self.halted.get(symbol)
        if halt is not None:
            # Q2 YES "[INVESTIGATE] Halt or corporate-action gap. Suppress the symbol;
            # resume the rest of the universe.": suppressed, no finding.
            self.suppressed[symbol] = f"halted: {halt.reason}"
            return
        if symbol in self._lift_grace:
            self.suppressed[symbol] = f"stale: no {active} bar since the halt was lifted"
            return
        thr = self.threshold_s
        self.suppressed[symbol] = f"stale: no {active} bar in {thr:g} s"
        if whole or symbol in self._reported:
            return  # the feed's finding covers it, or it was reported this episode
        self._reported.add(symbol)
        age = now - feed.since[symbol]
        cfg = self.config
        # Q2 NO "[INVESTIGATE] Vendor-side single-symbol issue. Drop the symbol; resume
        # universe; file a vendor ticket." (playbook 03: P2, monitor)
        await self.report(Finding(
            actor=self.name, incident_class="stale-data", scope=f"symbol:{symbol}",
            summary=(f"symbol {symbol}: no {active} bar for {age:.0f} s (threshold {thr:g} s, "
                     f"{cfg.stale_factor:g}x the {cfg.bar_interval_s:g} s bar interval): "
                     f"suppressed; vendor-side single-symbol issue, file a vendor ticket"),
            evidence={"age_s": round(age, 3), "threshold_s": thr, "vendor": active,
                      "last_bar_ts": feed.bar.get(symbol)},
        ))
        # playbook 04 "Market-data bar age: > 2x bar interval, any symbol": PAGE, once
        # per episode (the P2 above pages nobody by itself).
        await self.report(AlertRaised(
            actor=self.name, channel="PAGE", scope=f"symbol:{symbol}",
            summary=(f"market-data bar age: {symbol} has had no {active} bar for {age:.0f} s "
                     f"(> {cfg.stale_factor:g}x the {cfg.bar_interval_s:g} s bar interval): "
                     "suppressed, reducing orders only"),
            evidence={"age_s": round(age, 3), "threshold_s": thr, "vendor": active}))

    def _stale_window(self, vendor: str) -> tuple[float, list[str]]:
        """When the oldest stale bar crossed the threshold, and the orders sent since."""
        feed = self._feeds[vendor]
        start = min((feed.since[s] for s in feed.stale), default=self.wall()) + self.threshold_s
        orders = [oid for oid, order in self.book.orders.items() if order.ts >= start]
        return start, orders

    async def _failover(self, old: str, new: str, now: float) -> None:
        n, universe = self._unexplained(old), len(self.universe)
        start, orders = self._stale_window(old)
        frac = self.config.whole_feed_fraction
        more = "a single symbol" if frac is None else f"{frac:.0%} of the universe"
        why = (f"{n} of {universe} symbols stale on {old} (more than {more}, no bar in "
               f"{self.threshold_s:g} s)")
        self.active_vendor = new
        self.failover = {"at": now, "from": old, "to": new, "why": why,
                         "stale_window_start": start, "orders": orders[:LIST_MAX],
                         "orders_count": len(orders)}
        self._dirty.update(self._feeds[old].stale, self._feeds[new].stale, self.suppressed)
        log.warning("market data failed over from %s to %s: %s", old, new, why)
        evidence: dict[str, object] = {
            "from": old, "to": new, "stale": n, "universe": universe,
            "threshold_s": self.threshold_s, "stale_window_start": start,
            "orders": orders[:LIST_MAX], "orders_count": len(orders)}
        await self.report(Finding(
            actor=self.name, incident_class="stale-data", scope=f"vendor:{old}",
            summary=(f"market data: {why}: failed over to {new}; reconcile {len(orders)} "
                     f"order(s) sent in the stale window since {_iso(start)}"),
            evidence=evidence,
        ))
        # playbook 03 Q3 YES: "Failover to the backup vendor": an event and an alert.
        await self.report(AlertRaised(
            actor=self.name, channel="PAGE", scope=f"vendor:{old}",
            summary=(f"market data failed over from {old} to {new} ({n}/{universe} symbols "
                     f"stale); reconcile {len(orders)} order(s) sent since {_iso(start)}"),
            evidence=evidence,
        ))

    async def _feed_down(self, now: float) -> None:
        counts = {v: self._unexplained(v) for v in self._feeds}
        start, orders = self._stale_window(self.active_vendor)
        universe = len(self.universe)
        log.error("market data: both vendors stale: %s", counts)
        per_vendor = ", ".join(f"{v} {n}/{universe}" for v, n in counts.items())
        await self.report(Finding(
            actor=self.name, incident_class="stale-data", scope="feed",
            summary=(f"market data: both vendors stale ({per_vendor} symbols with no bar in "
                     f"{self.threshold_s:g} s): stop trading"),
            evidence={"stale": counts, "universe": universe, "threshold_s": self.threshold_s,
                      "stale_window_start": start, "orders": orders[:LIST_MAX],
                      "orders_count": len(orders)},
        ))

    # --- playbook 04 vendor-feed reconciliation; gate P4 -------------------------------------

    async def _close_windows(self, now: float) -> None:
        w = self.config.reconcile_window_s
        # A window closes one threshold after its end: later bars for it are stale anyway.
        for k in sorted(k for k in self._windows if (k + 1) * w + self.threshold_s <= now + _EPS):
            counts = self._windows.pop(k)
            self._closed_upto = k if self._closed_upto is None else max(self._closed_upto, k)
            await self._reconcile(k * w, counts)

    async def _reconcile(self, start: float, counts: dict[str, list[int]]) -> None:
        w = self.config.reconcile_window_s
        symbols = list(counts)
        arr = np.array(list(counts.values()), dtype=np.int64).reshape(-1, 2)
        diff = np.abs(arr[:, 0] - arr[:, 1])
        total_diff, primary_bars = int(diff.sum()), int(arr[:, 0].sum())
        divergence = total_diff / max(1, primary_bars)
        self._divergence.append((start, total_diff, primary_bars))
        self._save_divergence()
        mismatched = [symbols[i] for i in np.flatnonzero(diff)]
        self.last_window = {
            "start": start, "end": start + w, "symbols": len(symbols),
            "primary_bars": primary_bars, "backup_bars": int(arr[:, 1].sum()),
            "mismatched": len(mismatched), "divergence": divergence}
        if not mismatched:
            return
        shown = sorted(mismatched)[:LIST_MAX]
        await self.report(AlertRaised(
            actor=self.name, channel="QUEUE", scope=f"vendor:{self.backup}",
            summary=(f"vendor-feed reconciliation {_iso(start)} +{w:g} s: {self.primary} and "
                     f"{self.backup} bar counts differ for {len(mismatched)} symbol(s): "
                     f"{_names(mismatched)} (divergence {divergence:.2%})"),
            evidence={**self.last_window,
                      "counts": {s: counts[s] for s in shown}},
        ))

    def divergence(self) -> dict[str, object]:
        """Gate P4: "at least 5 trading days with < 0.5% bar-count divergence"."""
        cfg = self.config
        n = len(self._divergence)
        out: dict[str, object] = {
            "window_s": cfg.reconcile_window_s, "windows": n,
            "windows_needed": self.windows_needed, "divergence_max": cfg.divergence_max,
            "divergence": None, "max_window_divergence": None, "p4_pass": False,
            "last_window": self.last_window}
        if n:
            arr = np.asarray(self._divergence, dtype=np.float64)
            per_window = arr[:, 1] / np.maximum(1.0, arr[:, 2])
            total = float(arr[:, 1].sum() / max(1.0, float(arr[:, 2].sum())))
            out.update(divergence=total, max_window_divergence=float(per_window.max()),
                       p4_pass=n >= self.windows_needed and total < cfg.divergence_max)
        return out

    # --- status ----------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        """What ``deskctl status`` shows (JSON-able; lists capped at ``LIST_MAX``)."""
        universe = len(self.universe)
        stale = {
            v: {"count": len(f.stale), "unexplained": self._unexplained(v),
                "fraction": len(f.stale) / universe if universe else 0.0,
                "whole_feed": self._whole(v), "bars": f.bars,
                "symbols": heapq.nsmallest(LIST_MAX, f.stale)}
            for v, f in self._feeds.items()}
        return {
            "active_vendor": self.active_vendor,
            "primary_vendor": self.primary,
            "backup_vendor": self.backup,
            "threshold_s": self.threshold_s,
            "universe": universe,
            "stale": stale,
            "suppressed": dict(itertools.islice(sorted(self.suppressed.items()), LIST_MAX)),
            "suppressed_count": len(self.suppressed),
            "halted": {s: msgspec.structs.asdict(h)
                       for s, h in itertools.islice(sorted(self.halted.items()), LIST_MAX)},
            "failover": self.failover,
            "feed_down": self.feed_down,
            "feed_divergence": self.divergence(),
            "ignored": dict(self.counters),
            "wakeups": self.wakeups,
            "heap": len(self._heap),
            # Outside the session nothing is judged (ages still update).
            "in_session": self.in_session,
            "next_open": (None if self.in_session or self._boundary == _INF
                          else self._boundary),
            "next_close": (self._boundary if self.in_session and self._boundary != _INF
                           else None),
        }

    def table(self) -> list[dict[str, object]]:
        """Gate D1 "All traded symbols have a bar within the last 2x interval": a row a
        symbol; ``stale`` is that test now, on the active vendor."""
        now, thr = self.wall(), self.threshold_s
        rows: list[dict[str, object]] = []
        for symbol in sorted(self.universe):
            ages = {v: (round(now - f.bar[symbol], 3) if symbol in f.bar else None)
                    for v, f in self._feeds.items()}
            age = ages[self.active_vendor]
            halt = self.halted.get(symbol)
            rows.append({
                "symbol": symbol, "age_s": ages, "stale": age is None or age > thr,
                "suppressed": self.suppressed.get(symbol),
                "halted": halt.reason if halt is not None else None})
        return rows
