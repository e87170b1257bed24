"""The kill-switch executor (playbook 01 procedure killswitch; docs/architecture.md principle 3).

``trip`` is synchronous and does the hot part at once: the gate is blocked and
published, and one cancel-all task per venue is started, each bounded by the venue's
own timeout, so a hung venue delays nobody ("do NOT wait for venue confirmation").
The slow part follows in the background: the snapshot (playbook 01 killswitch step 03) and
the verification (playbook 01 killswitch verify: "Order log shows zero new orders for >= 60
seconds after the switch; venue-side open-order count is zero").

A cancel is confirmed only by the venue's open-order list (Hummingbot
#720, #576), and the watching goes on while the switch is latched (NautilusTrader
#2572): an order that appears, or a venue that keeps orders open, gets cancel-all
again, a line on the incident, and ``verified`` false. Nothing here fails towards
"running" (Hummingbot #2534): errors are logged and retried, never swallowed into a
success.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

import msgspec
import trio

from supervisor.config import KillConfig
from supervisor.core.book import Book
from supervisor.core.errors import VenueError
from supervisor.core.events import AnyEvent, IncidentNoted, KillSnapshotted, KillVerified
from supervisor.files import write_atomic
from supervisor.venues.base import CancelReport, VenueOrder

log = logging.getLogger("desk.killswitch")

# The longest the snapshot and the verifier wait for the first round of cancel-alls.
FIRST_ROUND_WAIT_S = 5.0


class KillVenue(Protocol):
    name: str

    async def cancel_all(self) -> CancelReport: ...

    async def cancel_order(self, order_id: str) -> None: ...

    async def open_orders(self) -> list[VenueOrder]: ...

    async def orders_since(self, after_epoch: float) -> list[VenueOrder]: ...


class VenueKillStatus(msgspec.Struct, kw_only=True):
    """What ``status`` shows of one venue while the switch is latched."""

    open_orders: int | None = None
    cancel_requests: int = 0
    last_cancel_failed: int | None = None
    last_error: str | None = None
    new_orders_after_switch: int = 0


class StuckOrder(msgspec.Struct, kw_only=True):
    """An order cancel-all failed to cancel (``status.kill.stuck_orders``)."""

    venue: str
    order_id: str
    failed_cancel_alls: int = 0
    escalated: bool = False  # has its own cancel (DELETE /v2/orders/{id}) running
    attempts: int = 0  # of its own cancel
    last_error: str | None = None


# Alpaca states its budget per minute (X-RateLimit-Limit "requests per minute").
RATE_WINDOW_S = 60.0
REQUESTS_PER_PASS = 2


class KillSwitch:
    """Executes kill-switch effects for the runtime. Run ``run`` in the desk's nursery."""

    def __init__(
        self,
        venues: Sequence[KillVenue],
        book: Book,
        config: KillConfig,
        state_dir: Path,
        *,
        submit: Callable[[AnyEvent], Awaitable[object]],
        wall_clock: Callable[[], float],
        publish_blocked: Callable[[str], None],
        alert: Callable[[str, str | None], None] = lambda summary, incident_id: None,
        store: Callable[[str, Path, bytes], Awaitable[bool]] | None = None,
    ) -> None:
        """``store(kind, path, data)`` writes an artifact and keeps it for a retry when
        storage fails (the desk's ``Storage.write``); None: written once, directly."""
        self.venues = list(venues)
        self.book = book
        self.config = config
        self.state_dir = state_dir
        self._submit = submit
        self._wall = wall_clock
        self._publish_blocked = publish_blocked
        self._alert = alert
        self._store = store or _write_once
        # The configured model_hash, until the engine's telemetry names the live one.
        self.model_hash: str | None = None
        self._nursery: trio.Nursery | None = None
        self._verify_scope: trio.CancelScope | None = None
        self.blocked = False
        self.latched_at: float | None = None  # trio time
        self.latched_wall: float | None = None
        self.incident_id: str | None = None
        self.venue_status: dict[str, VenueKillStatus] = {}
        self.last_new_order_at: float | None = None  # trio time
        self.verified = False
        self.snapshot_path: str | None = None
        self._seen_after: set[str] = set()
        self._cancels_in_flight: set[str] = set()
        self._last_cancel_at: dict[str, float] = {}
        self._first_round: set[str] = set()
        self._first_round_done = trio.Event()
        self._reported_problems: set[str] = set()
        # Orders cancel-all did not cancel, by (venue, order id); and per venue the
        # cancel-alls in a row that failed as a whole (no per-order answer at all).
        self.stuck: dict[tuple[str, str], StuckOrder] = {}
        self._whole_failures: dict[str, int] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # --- the hot path ----------------------------------------------------------------

    def trip(
        self, *, reason: str, incident_id: str, latched_wall: float, snapshot: bool = True
    ) -> None:
        """Block, publish and cancel everywhere now; snapshot and verify afterwards.

        Synchronous: when it returns the gate is closed, every watcher has been told,
        and a cancel-all task per venue is scheduled ahead of anything slow.
        """
        assert self._nursery is not None, "KillSwitch.run must be started first"
        self.blocked = True
        self._publish_blocked(reason)
        self.latched_at = trio.current_time()
        self.latched_wall = latched_wall
        self.incident_id = incident_id
        self.verified = False
        self.last_new_order_at = None
        self._seen_after.clear()
        self._reported_problems.clear()
        self.stuck.clear()
        self._whole_failures.clear()
        self.venue_status = {v.name: VenueKillStatus() for v in self.venues}
        self._first_round = set()
        self._first_round_done = trio.Event()
        for venue in self.venues:
            self._start_cancel(venue)
            if venue.name in self._cancels_in_flight:
                self._first_round.add(venue.name)
        if not self._first_round:
            self._first_round_done.set()
        # Nothing else may compete with the cancels for the event loop: the snapshot
        # and the verifier start once the first round of cancel-alls has finished
        # (each bounded by its venue's timeout).
        if snapshot:
            self._nursery.start_soon(self._snapshot_contained, reason, incident_id)
        self._start_verifier()

    def recancel(self, reason: str) -> None:
        """A trigger while latched: cancel-all again on every venue."""
        assert self._nursery is not None
        self.blocked = True
        self._publish_blocked(reason)
        for venue in self.venues:
            self._start_cancel(venue)

    def release(self) -> None:
        """An accepted resume: stop watching and open the gate."""
        self.blocked = False
        if self._verify_scope is not None:
            self._verify_scope.cancel()
            self._verify_scope = None
        self.latched_at = None
        self.incident_id = None
        self.stuck.clear()  # the per-order cancels see it and stop

    def _start_cancel(self, venue: KillVenue, *, backoff: bool = False) -> None:
        assert self._nursery is not None
        if venue.name in self._cancels_in_flight:
            return
        now = trio.current_time()
        last = self._last_cancel_at.get(venue.name)
        if backoff and last is not None and now - last < self.config.recancel_backoff_s:
            return
        self._last_cancel_at[venue.name] = now
        self._cancels_in_flight.add(venue.name)
        # Where the venue keeps a warm line, the request is written right here, in this
        # synchronous call: all venues' cancels are in their sockets before any task runs.
        start_now = getattr(venue, "start_cancel_nowait", None)
        sent = bool(start_now()) if start_now is not None else False
        self._nursery.start_soon(self._cancel, venue, sent)

    async def _cancel(self, venue: KillVenue, sent: bool = False) -> None:
        st = self.venue_status.setdefault(venue.name, VenueKillStatus())
        st.cancel_requests += 1
        try:
            report = await (venue.finish_cancel() if sent  # type: ignore[attr-defined]
                            else venue.cancel_all())
        except Exception as exc:
            # Whatever went wrong, the venue is not known flat: record it, never raise
            # out of the kill path; verification re-issues the cancel.
            st.last_error = str(exc) or type(exc).__name__
            self._whole_failures[venue.name] = self._whole_failures.get(venue.name, 0) + 1
            log.error("kill: cancel-all to venue %s failed: %s", venue.name, st.last_error,
                      exc_info=not isinstance(exc, VenueError))
        else:
            st.last_cancel_failed = len(report.failed)
            st.last_error = None
            self._whole_failures[venue.name] = 0
            if report.failed:
                log.error(
                    "kill: venue %s refused %d of %d cancels", venue.name, len(report.failed),
                    report.requested,
                )
            for entry in report.failed:
                self._cancel_all_failed(
                    venue, entry.order_id,
                    f"cancel-all answered {entry.status or 'nothing'} for this order")
        finally:
            self._cancels_in_flight.discard(venue.name)
            self._first_round.discard(venue.name)
            if not self._first_round:
                self._first_round_done.set()

    # --- escalation: one order at a time ----------------------------------------------

    def _cancel_all_failed(self, venue: KillVenue, order_id: str, error: str,
                           times: int = 1) -> None:
        """Count ``times`` cancel-alls that left ``order_id`` open; at the configured count
        give the order its own cancel, retried with backoff until the venue says it is
        gone."""
        if self.latched_at is None or self._nursery is None:
            return
        key = (venue.name, order_id)
        stuck = self.stuck.get(key)
        if stuck is None:
            stuck = self.stuck[key] = StuckOrder(venue=venue.name, order_id=order_id)
        stuck.failed_cancel_alls += times
        stuck.last_error = error
        if stuck.escalated or stuck.failed_cancel_alls < self.config.escalate_after_failures:
            return
        if getattr(venue, "cancel_order", None) is None:
            return  # a venue kind without per-order cancel: cancel-all is all there is
        stuck.escalated = True
        self._nursery.start_soon(self._cancel_order_until_gone, venue, stuck)

    async def _cancel_order_until_gone(self, venue: KillVenue, stuck: StuckOrder) -> None:
        key = (stuck.venue, stuck.order_id)
        incident_id = self.incident_id
        count = stuck.failed_cancel_alls
        text = (f"order {stuck.order_id} at venue {stuck.venue} failed cancel-all "
                f"{'twice' if count == 2 else f'{count} times'} ({stuck.last_error}): "
                f"cancelling it on its own (DELETE /v2/orders/{stuck.order_id}), retried "
                "with backoff")
        log.error("kill: %s", text)
        if incident_id:
            await self._submit(IncidentNoted(ts=self._wall(), actor="supervisor",
                                             incident_id=incident_id, text=text))
        delay = self.config.order_retry_initial_s
        while self.stuck.get(key) is stuck:  # released, or re-latched: stop
            stuck.attempts += 1
            try:
                await venue.cancel_order(stuck.order_id)
            except Exception as exc:
                stuck.last_error = f"its own cancel failed: {exc or type(exc).__name__}"
                log.error("kill: cancel of order %s at venue %s failed (attempt %d): %s",
                          stuck.order_id, stuck.venue, stuck.attempts, exc,
                          exc_info=not isinstance(exc, VenueError))
                await trio.sleep(delay)
                delay = min(delay * 2, self.config.order_retry_max_s)
                continue
            # The venue says cancelled, gone or closed; the next verification pass
            # confirms it from the venue's own open-order list. A pass, a release or a
            # new pull may have dropped (or replaced) the entry while we waited.
            if self.stuck.get(key) is stuck:
                del self.stuck[key]
            if incident_id:
                await self._submit(IncidentNoted(
                    ts=self._wall(), actor="supervisor", incident_id=incident_id,
                    text=f"order {stuck.order_id} at venue {stuck.venue} cancelled on its "
                         f"own after {stuck.attempts} attempt(s)"))
            return

    def _forget_gone(self, venue: KillVenue, open_ids: set[str]) -> None:
        """Orders no longer open at ``venue`` are no longer stuck (a later cancel-all, a
        fill): drop them, which also stops their own cancel."""
        for key in [k for k in self.stuck if k[0] == venue.name and k[1] not in open_ids]:
            del self.stuck[key]

    # --- snapshot (playbook 01 killswitch step 03) ---------------------------------------

    async def _after_first_round(self) -> None:
        with trio.move_on_after(FIRST_ROUND_WAIT_S):
            await self._first_round_done.wait()

    async def _snapshot_contained(self, reason: str, incident_id: str) -> None:
        # The kill-switch's nursery is the desk's kill path: nothing may crash it.
        try:
            await self._snapshot(reason, incident_id)
        except Exception:
            log.exception("kill: snapshot for %s failed", incident_id)

    async def _snapshot(self, reason: str, incident_id: str) -> None:
        await self._after_first_round()
        wall = self.latched_wall or self._wall()
        book = self.book
        # Copy on the loop (C speed), filter and encode in the worker thread.
        predictions = list(book.predictions)
        horizon = wall - book.prediction_window_s
        snap = {
            "incident_id": incident_id,
            "reason": reason,
            "latched_at": wall,
            "positions": dict(book.positions),
            "model_hash": book.model.model_hash if book.model else self.model_hash,
            "model": msgspec.to_builtins(book.model) if book.model else None,
            "predictions": predictions,
            "prediction_window_s": self.config.prediction_window_s,
            "pnl": msgspec.to_builtins(book.pnl) if book.pnl else None,
            "open_orders_known_to_engine": len(book.pending_acks),
        }
        stamp = utc_stamp(wall)
        path = self.state_dir / "snapshots" / f"kill-{stamp}-{incident_id}.json"

        def encode() -> bytes:
            snap["predictions"] = [p for p in predictions if p.ts >= horizon]
            return msgspec.json.encode(snap)

        data = await trio.to_thread.run_sync(encode)
        # The content, compact, in the journal first: never lost with the file.
        await self._submit(KillSnapshotted(
            ts=self._wall(), actor="supervisor", incident_id=incident_id, path=str(path),
            positions={k: float(v) for k, v in book.positions.items()},
            model_hash=snap["model_hash"],  # type: ignore[arg-type]
            predictions=len(snap["predictions"]),  # type: ignore[arg-type]
            open_orders_known_to_engine=len(book.pending_acks)))
        self.snapshot_path = str(path)
        written = await self._store("kill snapshot", path, data)
        await self._submit(IncidentNoted(
            ts=self._wall(), actor="supervisor", incident_id=incident_id,
            text=(f"snapshot written: {path}" if written else
                  f"snapshot journaled; its file {path} is not written yet (storage "
                  "failing): kept and retried"),
        ))

    # --- verification (playbook 01 killswitch verify) ------------------------------------

    def _start_verifier(self) -> None:
        assert self._nursery is not None
        if self._verify_scope is not None:
            self._verify_scope.cancel()
        scope = trio.CancelScope()
        self._verify_scope = scope
        self._nursery.start_soon(self._verify, scope)

    async def _verify(self, scope: trio.CancelScope) -> None:
        with scope:
            await self._after_first_round()
            while True:
                interval = self.config.verify_poll_s
                try:
                    await self.check_once()
                    interval = max(self.config.watch_poll_s if self.verified else interval,
                                   self.paced_interval())
                except Exception:
                    # Verification that cannot run leaves the kill unverified and the
                    # switch latched: it fails towards halted, and tries again at the
                    # next poll.
                    log.exception("kill: verification pass failed")
                await trio.sleep(interval)

    def paced_interval(self) -> float:
        """The shortest poll interval that keeps verification within its share of every
        venue's request budget (Alpaca: 200 requests a minute, shared with the engine and
        the heartbeat), as the venue's last ``X-RateLimit-*`` headers state it; 0 when no
        venue stated one. With the budget all but spent, wait for the refill."""
        share = self.config.verify_budget_share
        worst = 0.0
        for venue in self.venues:
            rl = getattr(venue, "rate_limit", None)
            if rl is None or rl.limit <= 0:
                continue
            # Each pass asks a venue twice: open orders, and orders since the switch.
            worst = max(worst, REQUESTS_PER_PASS * RATE_WINDOW_S / (rl.limit * share))
            if rl.remaining < REQUESTS_PER_PASS:
                worst = max(worst, rl.reset - self._wall())
        return min(worst, RATE_WINDOW_S)

    async def check_once(self) -> None:
        """Poll every venue once and update the verdict; re-cancel where needed.

        A pass judges the latch it began under: if the switch is released (a resume) or
        pulled again while the venues are asked, the pass is dropped, not judged against
        a latch that no longer exists.
        """
        latched_at, latched_wall = self.latched_at, self.latched_wall
        if latched_at is None or latched_wall is None:
            return
        results: dict[str, tuple[list[VenueOrder], list[VenueOrder]] | Exception] = {}

        async def poll(venue: KillVenue) -> None:
            try:
                open_orders = await venue.open_orders()
                since = await venue.orders_since(latched_wall)
                results[venue.name] = (open_orders, since)
            except Exception as exc:  # unknown is not flat
                results[venue.name] = exc

        async with trio.open_nursery() as nursery:
            for venue in self.venues:
                nursery.start_soon(poll, venue)
        if self.latched_at != latched_at:
            log.info("kill: a verification pass ended after the switch was released or "
                     "pulled again: its answers are dropped")
            return

        now = trio.current_time()
        problems: dict[str, str] = {}  # venue -> what keeps it from verifying
        new_orders: list[str] = []
        for venue in self.venues:
            st = self.venue_status.setdefault(venue.name, VenueKillStatus())
            result = results.get(venue.name)
            if isinstance(result, Exception) or result is None:
                st.open_orders = None
                st.last_error = str(result)
                problems[venue.name] = f"venue {venue.name} unreachable: {result}"
                self._start_cancel(venue, backoff=True)
                continue
            open_orders, since = result
            # Scope "prefix": orders of manual traders on a shared account are not ours
            # to cancel, so they neither block nor breach the verification.
            open_orders = [o for o in open_orders if in_scope(venue, o)]
            since = [o for o in since if in_scope(venue, o)]
            st.open_orders = len(open_orders)
            self._forget_gone(venue, {o.id for o in open_orders})
            whole = self._whole_failures.get(venue.name, 0)
            if whole >= self.config.escalate_after_failures:
                # Cancel-all fails as a whole, again and again: the orders it leaves
                # open are each cancelled on their own.
                self._whole_failures[venue.name] = 0
                for order in open_orders:
                    self._cancel_all_failed(venue, order.id,
                                            f"cancel-all failed as a whole: {st.last_error}",
                                            times=whole)
            for order in since:
                if order.id not in self._seen_after:
                    self._seen_after.add(order.id)
                    st.new_orders_after_switch += 1
                    new_orders.append(f"{venue.name}:{order.id} ({order.symbol} {order.side} "
                                      f"{order.qty:g}, {order.status})")
            if open_orders:
                problems[venue.name] = f"venue {venue.name} has {len(open_orders)} open order(s)"
                self._start_cancel(venue, backoff=True)
        engine_orders = (
            self.book.last_order_at is not None and self.book.last_order_at > latched_at
        )
        if engine_orders and (self.last_new_order_at is None
                              or self.book.last_order_at > self.last_new_order_at):
            new_orders.append("the engine reported a new order after the switch")
        if new_orders:
            self.last_new_order_at = now
            for venue in self.venues:
                self._start_cancel(venue)
            await self._breach("order(s) appeared after the switch: " + "; ".join(new_orders[:5]))
            return
        quiet_since = self.last_new_order_at or latched_at
        quiet_for = now - quiet_since
        if problems:
            if self.verified:
                await self._breach("; ".join(problems.values()))
            elif now - latched_at >= self.config.stuck_after_s:
                fresh = [v for v in problems if v not in self._reported_problems]
                if fresh:
                    # Never silently pending: say which venue will not go flat, once.
                    self._reported_problems.update(fresh)
                    await self._breach("still not flat after "
                                       f"{self.config.stuck_after_s:g} s: "
                                       + "; ".join(problems[v] for v in fresh))
            return
        if not self.verified and quiet_for >= self.config.quiet_s:
            self.verified = True
            detail = (
                f"venue-side open orders zero on {len(self.venues)} venue(s) and no new "
                f"order for {quiet_for:.0f} s after the switch"
            )
            await self._submit(KillVerified(ts=self._wall(), actor="supervisor",
                                            verified=True, detail=detail))
            if self.incident_id:
                await self._submit(IncidentNoted(ts=self._wall(), actor="supervisor",
                                                 incident_id=self.incident_id,
                                                 text=f"kill verified: {detail}"))

    async def _breach(self, detail: str) -> None:
        was_verified = self.verified
        self.verified = False
        log.error("kill: not verified: %s", detail)
        self._alert(f"kill-switch not verified: {detail}", self.incident_id)
        await self._submit(KillVerified(ts=self._wall(), actor="supervisor",
                                        verified=False, detail=detail))
        if self.incident_id:
            text = ("kill breach after verification: " if was_verified else "kill breach: ")
            await self._submit(IncidentNoted(ts=self._wall(), actor="supervisor",
                                             incident_id=self.incident_id,
                                             text=text + detail + "; cancel-all re-issued"))

    def status(self) -> dict[str, object]:
        quiet_for = None
        if self.latched_at is not None:
            quiet_for = trio.current_time() - (self.last_new_order_at or self.latched_at)
        return {
            "venues": {k: msgspec.to_builtins(v) for k, v in self.venue_status.items()},
            "quiet_for_s": quiet_for,
            "quiet_required_s": self.config.quiet_s,
            "snapshot": self.snapshot_path,
            # Orders cancel-all did not cancel: each with its count, whether it has its
            # own cancel running, and the last error.
            "stuck_orders": [msgspec.to_builtins(o) for o in self.stuck.values()],
        }


# The supervisor's own reducing orders (risk-breach auto-flatten, playbook 02: "auto-flattens
# to the next compliant size") are not the engine breaking the halt.
SUPERVISOR_ORDER_PREFIX = "desk-supervisor-"


def in_scope(venue: KillVenue, order: VenueOrder) -> bool:
    """Whether the kill-switch owns ``order`` under the venue's cancel scope."""
    if order.client_order_id.startswith(SUPERVISOR_ORDER_PREFIX):
        return False
    if getattr(venue, "cancel_scope", "account") != "prefix":
        return True
    return order.client_order_id.startswith(getattr(venue, "client_order_prefix", ""))


async def _write_once(kind: str, path: Path, data: bytes) -> bool:
    """A ``store`` for a kill-switch with no desk storage behind it (it keeps nothing
    for a retry): write the artifact now; False, logged, when storage refuses it."""
    try:
        await trio.to_thread.run_sync(write_atomic, path, data)
    except OSError as exc:
        log.error("kill: %s %s not written: %s", kind, path, exc)
        return False
    return True


def utc_stamp(wall: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(wall))
