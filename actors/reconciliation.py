"""Reconciliation to broker truth (playbook 01 procedure reconciliation; gate D4; principle 04).

"Pull the canonical position file from the broker, not your own order log", diff it
against the engine's book, classify each difference ("filled but not reported,
reported but not filled, duplicate"; anything else is "unknown until manually
confirmed", playbook 02 broker-outage containment), write a report to the state
directory and tell the desk (``ReconciliationCompleted``), which ``resume`` needs.

A venue that cannot be read makes the reconciliation unclean: unknown is never "flat"
(NautilusTrader #4736, a warm restart believed flat while the venue held a
position).

Runs on demand (``deskctl reconcile``), after every halt once the kill is verified, and
at the configured end of day.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import msgspec
import trio

from supervisor.core.book import Book
from supervisor.core.calendar import Calendar
from supervisor.core.errors import VenueError
from supervisor.core.events import AnyEvent, ReconciliationCompleted
from supervisor.core.protocol import Fill, Order
from supervisor.venues.base import PositionSource, read_positions

log = logging.getLogger("desk.reconciliation")


class ReconciliationConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Reconciliation to broker truth (playbook 01 reconciliation; gate D4)."""

    # Local time of the end-of-day run, "HH:MM" (gate D4: end-of-day reconciliation);
    # empty disables the daily run (on-demand and after-halt runs still happen).
    end_of_day: str = "16:15"
    # With a trading calendar ([calendar], not "always"), the end-of-day run is this long
    # after each session's close, in the exchange's time (not end_of_day's host time).
    after_close_s: float = 900.0
    # Shares below this are equal (to the share: playbook 01 reconciliation verify).
    tolerance: float = 0.0
    after_halt: bool = True

    def __post_init__(self) -> None:
        if self.end_of_day:
            hh, _, mm = self.end_of_day.partition(":")
            if not (hh.isdigit() and mm.isdigit() and int(hh) < 24 and int(mm) < 60):
                raise ValueError(f"end_of_day must be 'HH:MM', got {self.end_of_day!r}")

Classification = Literal[
    "filled-but-not-reported", "reported-but-not-filled", "duplicate", "unknown"
]


class Difference(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    broker_qty: float
    internal_qty: float
    diff: float  # broker minus internal
    classification: Classification
    explanation: str
    orders: list[str] = []


class ReconciliationReport(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    ts: float
    trigger: str
    clean: bool
    broker: dict[str, float]
    internal: dict[str, float]
    venues: dict[str, dict[str, object]]
    differences: list[Difference]
    path: str = ""


def _signed(side: str, qty: float) -> float:
    return qty if side == "buy" else -qty


def classify(
    symbol: str,
    broker_qty: float,
    internal_qty: float,
    orders: Sequence[Order],
    fills: Mapping[str, Sequence[Fill]],
    *,
    tolerance: float = 0.0,
) -> Difference:
    """Explain why the broker holds ``broker_qty`` of ``symbol`` and the engine ``internal_qty``.

    ``orders`` are the engine's orders in the symbol; ``fills`` its fill reports by order id.
    """
    diff = broker_qty - internal_qty

    def close(a: float, b: float) -> bool:
        return abs(a - b) <= max(tolerance, 1e-9)

    def make(kind: Classification, why: str, ids: list[str]) -> Difference:
        return Difference(symbol=symbol, broker_qty=broker_qty, internal_qty=internal_qty,
                          diff=diff, classification=kind, explanation=why, orders=ids)

    # A fill reported more than once for one order: the book counted it twice.
    for order_id, reports in fills.items():
        if len(reports) > 1 and reports[0].symbol == symbol:
            extra = sum(_signed(f.side, f.qty) for f in reports[1:])
            if close(-diff, extra):
                return make("duplicate", f"order {order_id}: fill reported {len(reports)} times",
                            [order_id])
    # An order the broker filled (fully or in part) that the engine never saw filled.
    unfilled: list[tuple[str, float]] = []
    for order in orders:
        reported = sum(f.qty for f in fills.get(order.order_id, []))
        remaining = order.qty - reported
        if remaining > 0:
            unfilled.append((order.order_id, _signed(order.side, remaining)))
    for order_id, qty in unfilled:
        if close(diff, qty):
            return make("filled-but-not-reported",
                        f"order {order_id} filled at the broker but no fill was reported",
                        [order_id])
    if len(unfilled) > 1 and close(diff, sum(q for _, q in unfilled)):
        return make("filled-but-not-reported",
                    f"{len(unfilled)} orders filled at the broker without fill reports",
                    [oid for oid, _ in unfilled])
    # A fill the engine reported that the broker does not hold.
    for order_id, reports in fills.items():
        if reports and reports[0].symbol == symbol:
            qty = sum(_signed(f.side, f.qty) for f in reports)
            if close(-diff, qty):
                return make("reported-but-not-filled",
                            f"order {order_id}: fill reported but not held at the broker",
                            [order_id])
    return make("unknown",
                f"broker holds {broker_qty:g}, engine {internal_qty:g}: unknown until "
                "manually confirmed", [])


class Reconciler:
    """Runs reconciliations; also the actor that schedules the end-of-day run."""

    name = "reconciliation"
    critical = False

    def __init__(
        self,
        venues: Sequence[PositionSource],
        book: Book,
        config: ReconciliationConfig,
        state_dir: Path,
        *,
        submit: Callable[[AnyEvent], Awaitable[object]],
        wall_clock: Callable[[], float],
        store: Callable[[str, Path, bytes], Awaitable[bool]],
        calendar: Callable[[], Calendar | None] = lambda: None,
    ) -> None:
        """``store(kind, path, data)`` writes the report and keeps it for a retry when
        storage fails (the desk's ``Storage.write``); ``calendar`` gives the desk's
        trading calendar (None or 24/7: the run is at ``end_of_day``, host time)."""
        self._calendar = calendar
        self._store = store
        self.venues = list(venues)
        self.book = book
        self.config = config
        self.state_dir = state_dir
        self._submit = submit
        self._wall = wall_clock
        self._lock = trio.Lock()
        self.last: ReconciliationReport | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if not self.config.end_of_day:
            await trio.sleep_forever()
        while True:
            await trio.sleep(self.seconds_until_end_of_day())
            await self.reconcile(trigger="end-of-day")
            await trio.sleep(60)  # out of the minute, so it runs once a day

    def seconds_until_end_of_day(self) -> float:
        cal = self._calendar()
        if cal is not None and not cal.always:
            wall, after = self._wall(), self.config.after_close_s
            for session in cal.sessions(wall - after, 3):
                if session.close + after > wall:
                    return session.close + after - wall
        now = dt.datetime.fromtimestamp(self._wall()).astimezone()
        hh, _, mm = self.config.end_of_day.partition(":")
        target = now.replace(hour=int(hh), minute=int(mm), second=0, microsecond=0)
        if target <= now:
            target += dt.timedelta(days=1)
        return (target - now).total_seconds()

    async def restore(self, report_path: str) -> None:
        """After a restart, reload the last report the journal names (best effort)."""
        try:
            data = await trio.Path(report_path).read_bytes()
            self.last = msgspec.json.decode(data, type=ReconciliationReport)
        except (OSError, msgspec.DecodeError) as exc:
            log.warning("last reconciliation report %s not reloaded: %s", report_path, exc)

    async def reconcile(self, *, trigger: str) -> ReconciliationReport:
        """Pull broker positions from every venue, diff, classify, report, tell the desk."""
        async with self._lock:
            return await self._reconcile(trigger)

    async def _reconcile(self, trigger: str) -> ReconciliationReport:
        results = await read_positions(self.venues)

        ts = self._wall()
        broker: dict[str, float] = {}
        venues: dict[str, dict[str, object]] = {}
        unreachable = 0
        for venue in self.venues:
            result = results[venue.name]
            if isinstance(result, VenueError):
                unreachable += 1
                venues[venue.name] = {"ok": False, "error": str(result)}
                continue
            venues[venue.name] = {"ok": True, "positions": {p.symbol: p.qty for p in result}}
            for p in result:
                broker[p.symbol] = broker.get(p.symbol, 0.0) + p.qty
        internal = {s: q for s, q in self.book.positions.items()}
        differences: list[Difference] = []
        by_symbol: dict[str, list[Order]] = {}
        for order in self.book.orders.values():
            by_symbol.setdefault(order.symbol, []).append(order)
        for symbol in sorted(set(broker) | set(internal)):
            b, i = broker.get(symbol, 0.0), internal.get(symbol, 0.0)
            if abs(b - i) > max(self.config.tolerance, 1e-9):
                orders = by_symbol.get(symbol, [])
                fills = {o.order_id: self.book.fills[o.order_id] for o in orders
                         if o.order_id in self.book.fills}
                differences.append(classify(symbol, b, i, orders, fills,
                                            tolerance=self.config.tolerance))
        clean = not differences and unreachable == 0
        rec_id = "REC-" + dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        path = self.state_dir / "reconciliations" / f"{rec_id}.json"
        report = ReconciliationReport(
            id=rec_id, ts=ts, trigger=trigger, clean=clean, broker=broker, internal=internal,
            venues=venues, differences=differences, path=str(path),
        )
        # A report storage cannot take now is kept and retried; the reconciliation itself
        # (clean or not, how many differences) is journaled either way.
        await self._store("reconciliation report", path, msgspec.json.encode(report))
        self.last = report
        log.info("reconciliation %s (%s): %s, %d difference(s), %d venue(s) unreachable",
                 rec_id, trigger, "clean" if clean else "NOT clean", len(differences),
                 unreachable)
        await self._submit(ReconciliationCompleted(
            ts=ts, actor=f"actor:reconciliation ({trigger})", clean=clean,
            differences=len(differences) + unreachable, report=str(path),
        ))
        return report
