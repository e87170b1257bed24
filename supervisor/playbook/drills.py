"""Drills against PAPER venues: the evidence for gates P1 and M1 (playbook 05).

``run_drill(desk, "killswitch")``, gate P1 "Kill-switch tested on a paper run within the
last 7 days ... verified to flatten all positions and block new orders within 60
seconds. Drill report filed.": a small position and resting test orders on every paper
venue, then the real kill-switch executor (``supervisor.runtime.killswitch.KillSwitch``, its own
instance over the paper venues) is tripped, the positions flattened with reducing market
orders, and the time to flat measured (zero open orders in scope and zero positions
everywhere); the executor's verifier must then see no new order for the quiet period.

``run_drill(desk, "failover")``, gate M1 "Practice a full broker outage + failover +
reconciliation cycle on paper trading. Time-to-recovery target documented.", the steps
of playbook 01 broker-failover: the primary goes down (a simulator gets the ``outage``
fault, cleared at the end whatever happens; a real paper account is treated as
unreachable), failing pings detect it, the route flips to the secondary, which passes
``check_failover_venue`` (auth, rate-limit headroom, a one-share test order cancelled at
once), and its positions reconcile to the share with what they were before the outage.

Either drill writes a report to ``STATE_DIR/drills/`` and journals ``DrillCompleted``.
The live desk is never touched: its venues are not used, its kill-switch is not
tripped, and "blocked" is never published to its watchers.
"""

from __future__ import annotations

import logging
import uuid
import weakref
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import httpx
import msgspec
import trio

from supervisor.config import (
    DrillConfig,
    FlattenConfig,
    VenueConfig,
    live_venue_clash,
    venue_credentials,
)
from supervisor.core.book import Book
from supervisor.core.errors import ConfigError, DrillRefused, VenueError
from supervisor.core.events import AnyEvent, DrillCompleted, KillVerified
from supervisor.files import write_atomic
from supervisor.playbook.failover import (
    DRILL_ORDER_PREFIX,
    DrillStep,
    FailoverCheck,
    check_failover_venue,
)
from supervisor.runtime.flatten import Flattener
from supervisor.runtime.killswitch import KillSwitch, in_scope, utc_stamp
from supervisor.venues.alpaca import HttpVenue

if TYPE_CHECKING:
    from supervisor.runtime.desk import Desk

__all__ = ["DrillKind", "DrillStep", "FailoverCheck", "check_failover_venue", "run_drill"]

log = logging.getLogger("desk.drills")

DrillKind = Literal["killswitch", "failover"]
KINDS: tuple[str, ...] = ("killswitch", "failover")

_running: weakref.WeakKeyDictionary[Desk, str] = weakref.WeakKeyDictionary()


class _Steps:
    """The steps of one drill, timed from its start (trio time)."""

    def __init__(self) -> None:
        self.t0 = trio.current_time()
        self.steps: list[DrillStep] = []

    def add(self, name: str, ok: bool, detail: str) -> bool:
        self.steps.append(DrillStep(name, ok, self.elapsed(), detail))
        return ok

    def elapsed(self) -> float:
        return round(trio.current_time() - self.t0, 3)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    def failed(self) -> list[str]:
        return [f"{s.name}: {s.detail}" for s in self.steps if not s.ok]


PaperVenue = tuple[VenueConfig, str | None, str | None]  # config, key id, secret


def paper_venues(config: DrillConfig, live: list[VenueConfig], *,
                 live_keys: dict[str, str] | None = None,
                 environ: dict[str, str] | None = None) -> list[PaperVenue]:
    """The drill venues with their resolved credentials, after the safety checks
    (``live_venue_clash``: host and port, credential names, key ids). Blocking: it reads
    ``$CREDENTIALS_DIRECTORY``; run it in a thread from async code.

    Args:
        live_keys: the live key ids in use now, each to what it is (``_live_keys``).

    Raises:
        DrillRefused: none is configured, one could reach a live account, or one's
            credentials cannot be read.
    """
    if not config.venues:
        raise DrillRefused("no paper venues configured: add [[drill.venues]] (a paper "
                           "account or a simulator) to the configuration")
    clash = live_venue_clash(config, live, live_keys=live_keys, environ=environ)
    if clash is not None:
        raise DrillRefused(f"drill refused: {clash}")
    chosen: list[PaperVenue] = []
    for vc in config.venues:
        try:
            chosen.append((vc, *venue_credentials(vc, environ=environ)))
        except ConfigError as exc:
            raise DrillRefused(f"drill refused: drill {exc}") from None
    return chosen


async def _live_keys(desk: Desk) -> dict[str, str]:
    """Every key id of a live account the supervisor knows of now: each live adapter's
    key in use (a rotation may have changed it since the config was read) and the keys in
    the credential store's slots (a staged key goes live, a previous one works until the
    broker revokes it)."""
    from supervisor.ops.credentials import Slot, desk_store

    keys: dict[str, str] = {}
    for venue in desk.venues:
        key_id = venue.credentials()[0]
        if key_id:
            keys.setdefault(key_id, f"live venue {venue.name} (the key its adapter uses now)")
    store = desk_store(desk)
    slots: tuple[Slot, ...] = ("active", "staged", "previous")

    def read_store() -> None:
        for venue in desk.venues:
            for slot in slots:
                try:
                    found = store.read(venue.name, slot)
                except (OSError, ValueError) as exc:
                    log.warning("drill: credential store unreadable for %s (%s): %s",
                                venue.name, slot, exc)
                    continue
                if found is not None and found[0]:
                    keys.setdefault(found[0], f"live venue {venue.name} (its {slot} key in "
                                              "the credential store)")

    await trio.to_thread.run_sync(read_store)
    return keys


async def run_drill(desk: Desk, kind: str, *, actor: str) -> dict[str, Any]:
    """Run one drill against the paper venues, file its report and journal the result.

    Returns the report (a dict: kind, ok, seconds, target_s, detail, steps, report, ...).

    Raises:
        DrillRefused: an unknown kind, no paper venues, a venue that could be live, or a
            drill already running on this desk (nothing was done).
        JournalError: the result is filed but could not be journaled yet (retried).
    """
    if kind not in KINDS:
        raise DrillRefused(f"unknown drill {kind!r}; drills: {', '.join(KINDS)}")
    cfg = desk.config.drill
    live_keys = await _live_keys(desk)
    chosen = await trio.to_thread.run_sync(
        partial(paper_venues, cfg, desk.config.venues, live_keys=live_keys))
    pair: tuple[str, str] | None = None
    if kind == "failover":
        try:
            pair = cfg.failover_pair()
        except ValueError as exc:
            raise DrillRefused(str(exc)) from None
    if desk in _running:
        raise DrillRefused(f"a {_running[desk]} drill is already running; wait for its "
                           "report")
    _running[desk] = kind
    try:
        return await _run(desk, kind, cfg, chosen, pair, actor)
    finally:
        _running.pop(desk, None)


async def _run(desk: Desk, kind: str, cfg: DrillConfig, chosen: list[PaperVenue],
               pair: tuple[str, str] | None, actor: str) -> dict[str, Any]:
    started_wall = desk.wall()
    steps = _Steps()
    seconds: float | None = None
    target = cfg.flat_target_s if kind == "killswitch" else cfg.recovery_target_s
    extra: dict[str, Any] = {}
    venues = [HttpVenue.from_config(vc, key_id, secret, wall_clock=desk.wall)
              for vc, key_id, secret in chosen]
    urls = {vc.name: vc.base_url for vc, _, _ in chosen}
    log.warning("%s drill started by %s on paper venue(s) %s", kind, actor,
                ", ".join(v.name for v in venues), extra={"actor": actor})
    try:
        with trio.move_on_after(cfg.max_duration_s) as deadline:
            if kind == "killswitch":
                seconds = await _killswitch(desk, cfg, venues, steps, extra)
            else:
                assert pair is not None
                by_name = {v.name: v for v in venues}
                seconds = await _failover(cfg, by_name[pair[0]], by_name[pair[1]],
                                          urls, steps,
                                          extra, desk.config.reconciliation.tolerance)
        if deadline.cancelled_caught:
            steps.add("deadline", False, f"the drill did not finish within "
                      f"max_duration_s {cfg.max_duration_s:g} s and was stopped")
    finally:
        for venue in venues:
            await venue.aclose()
    within = seconds is not None and seconds <= target
    ok = steps.ok and within
    measure = "time to flat" if kind == "killswitch" else "time to recovery"
    if ok:
        detail = f"{measure} {seconds:.2f} s (target {target:g} s); every step passed"
    else:
        reasons = steps.failed()
        if seconds is None:
            reasons.append(f"{measure} not reached")
        elif not within:
            reasons.append(f"{measure} {seconds:.2f} s exceeds the target {target:g} s")
        detail = "; ".join(reasons)
    stamp = utc_stamp(started_wall)
    path = desk.state_dir / "drills" / f"{kind}-{stamp}-{uuid.uuid4().hex[:6]}.json"
    report: dict[str, Any] = {
        "kind": kind, "ok": ok, "seconds": seconds, "measure": measure, "target_s": target,
        "detail": detail, "actor": actor, "started_at": started_wall,
        "finished_at": desk.wall(), "venues": urls,
        "steps": [msgspec.to_builtins(s) for s in steps.steps], **extra,
        "report": str(path),
    }
    try:
        await trio.to_thread.run_sync(write_atomic, path,
                                      msgspec.json.encode(report) + b"\n")
    except OSError as exc:
        # playbook 05 P1 "Drill report filed": a drill without its report is no evidence.
        log.error("drill report %s not written: %s", path, exc)
        report.update(ok=False, report="", detail=f"report not written ({exc}); " + detail)
    await desk.submit(DrillCompleted(
        ts=desk.wall(), actor=actor, kind=kind,  # type: ignore[arg-type]
        ok=report["ok"], seconds=seconds, detail=report["detail"], report=report["report"]))
    log.log(logging.INFO if report["ok"] else logging.ERROR, "%s drill %s: %s", kind,
            "passed" if report["ok"] else "FAILED", report["detail"], extra={"actor": actor})
    return report


def _drill_id(venue: HttpVenue) -> str:
    return f"{venue.client_order_prefix}{DRILL_ORDER_PREFIX}{uuid.uuid4().hex[:20]}"


# --- gate P1: the kill-switch drill -----------------------------------------------------


async def _killswitch(desk: Desk, cfg: DrillConfig, venues: list[HttpVenue], steps: _Steps,
                      extra: dict[str, Any]) -> float | None:
    """Prepare, pull the paper kill-switch, measure time to flat, wait for the verdict."""

    async def prepare(venue: HttpVenue) -> None:
        try:
            if cfg.position_qty > 0:
                await venue.submit_order(symbol=cfg.symbol, qty=cfg.position_qty, side="buy",
                                         type="market", client_order_id=_drill_id(venue))
            for _ in range(cfg.resting_orders):
                await venue.submit_order(symbol=cfg.symbol, qty=cfg.test_qty, side="buy",
                                         limit_price=cfg.test_limit_price,
                                         client_order_id=_drill_id(venue))
            orders = [o for o in await venue.open_orders() if in_scope(venue, o)]
            held = sum(abs(p.qty) for p in await venue.positions())
        except VenueError as exc:
            steps.add(f"prepare {venue.name}", False, f"test orders not placed: {exc}")
            return
        steps.add(f"prepare {venue.name}", bool(orders),
                  f"{len(orders)} open order(s), {held:g} share(s) held before the switch")

    async with trio.open_nursery() as nursery:
        for venue in venues:
            nursery.start_soon(prepare, venue)

    verdicts: list[KillVerified] = []
    blocked: list[str] = []

    async def collect(event: AnyEvent) -> None:
        # The paper executor's verdicts stay in the drill report: never the live journal.
        if isinstance(event, KillVerified):
            verdicts.append(event)

    kill_cfg = msgspec.structs.replace(
        desk.config.kill, quiet_s=cfg.quiet_s, verify_poll_s=cfg.poll_s,
        watch_poll_s=cfg.poll_s, recancel_backoff_s=cfg.poll_s,
        stuck_after_s=cfg.flat_target_s)
    switch = KillSwitch(venues, Book(clock=trio.current_time), kill_cfg,
                        desk.state_dir / "drills", submit=collect,
                        wall_clock=desk.wall, publish_blocked=blocked.append)
    flat_at: float | None = None
    async with trio.open_nursery() as nursery:
        await nursery.start(switch.run)
        tripped = trio.current_time()
        switch.trip(reason="kill-switch drill (paper venues)", incident_id="drill",
                    latched_wall=desk.wall(), snapshot=False)
        steps.add("pull the switch", switch.blocked and bool(blocked),
                  f"paper kill-switch tripped: new orders blocked, cancel-all sent to "
                  f"{len(venues)} venue(s)")
        flat_at, state = await _until_flat(venues, cfg, tripped)
        if flat_at is not None:
            steps.add("flat", flat_at - tripped <= cfg.flat_target_s,
                      f"zero open orders and zero positions on every paper venue "
                      f"{flat_at - tripped:.2f} s after the switch ({state})")
        else:
            steps.add("flat", False, f"not flat {cfg.flat_target_s:g} s after the switch: "
                      f"{state}")
        # playbook 01 killswitch verify: no new order for the quiet period, venues at zero.
        with trio.move_on_after(max(0.0, tripped + cfg.quiet_s + 5 * cfg.poll_s
                                    + max(v.timeout_s for v in venues)
                                    - trio.current_time())):
            while not switch.verified:  # noqa: ASYNC110 - the executor's own verdict
                await trio.sleep(cfg.poll_s)
        breaches = [v.detail for v in verdicts if not v.verified]
        quiet = next((v.detail for v in verdicts if v.verified), None)
        if switch.verified and not breaches:
            steps.add("quiet period", True, f"kill verified: {quiet}")
        else:
            steps.add("quiet period", False, "kill not verified: " + (
                "; ".join(breaches) if breaches else f"no verdict within "
                f"{cfg.quiet_s:g} s of quiet"))
        switch.release()
        nursery.cancel_scope.cancel()
    extra["kill_status"] = switch.status()
    extra["verdicts"] = [msgspec.to_builtins(v) for v in verdicts]
    return None if flat_at is None else round(flat_at - tripped, 3)


async def _until_flat(venues: list[HttpVenue], cfg: DrillConfig, tripped: float
                      ) -> tuple[float | None, str]:
    """Flatten every paper position through the desk's one flatten path (playbook 05 P1
    "flatten all positions"; the executor ignores the supervisor's own reducing orders),
    then poll until every venue has no open order either: the trio time it was flat, or
    None when the target passed."""
    notes: list[str] = []

    async def note(text: str) -> None:
        notes.append(text)

    flattener = Flattener(venues, FlattenConfig(
        deadline_s=cfg.flat_target_s, poll_s=cfg.poll_s,
        reprice_s=max(cfg.poll_s * 10, FlattenConfig().poll_s)))
    state = "not polled"
    flattened = 0
    with trio.move_on_after(cfg.flat_target_s):
        result = await flattener.flatten(note=note)
        flattened = sum(leg["state"] == "done" for leg in result["legs"])
        if not result["done"]:
            state = notes[-1] if notes else "flatten incomplete"
        while True:
            lines: list[str] = []
            flat = True

            async def look(venue: HttpVenue, lines: list[str] = lines) -> None:
                nonlocal flat
                try:
                    orders = [o for o in await venue.open_orders() if in_scope(venue, o)]
                    positions = [p for p in await venue.positions() if p.qty != 0]
                except VenueError as exc:
                    flat = False
                    lines.append(f"{venue.name} unreadable ({exc})")
                    return
                if orders or positions:
                    flat = False
                    lines.append(f"{venue.name}: {len(orders)} open order(s), positions "
                                 + (", ".join(f"{p.symbol} {p.qty:g}" for p in positions)
                                    or "none"))

            async with trio.open_nursery() as nursery:
                for venue in venues:
                    nursery.start_soon(look, venue)
            if flat:
                return trio.current_time(), (f"{flattened} position(s) flattened"
                                             if flattened else "no position to flatten")
            state = "; ".join(lines)
            await trio.sleep(cfg.poll_s)
    return None, state


# --- gate M1: the broker-failover drill -------------------------------------------------


async def _failover(cfg: DrillConfig, primary: HttpVenue, secondary: HttpVenue,
                    urls: dict[str, str], steps: _Steps, extra: dict[str, Any],
                    tolerance: float) -> float | None:
    """Outage, detection, route flip, secondary checks, reconciliation; the time to
    recovery, or None when the cycle did not complete."""
    extra["route"] = {"from": primary.name, "to": None}
    before: dict[str, float] | None = None
    try:
        before = {p.symbol: p.qty for p in await secondary.positions()}
    except VenueError as exc:
        # Not the end of the drill: the cycle still runs, and its checks say what fails.
        steps.add("baseline", False, f"the secondary's positions could not be read before "
                  f"the outage: {exc}")
    async with httpx.AsyncClient(base_url=urls[primary.name], timeout=None) as sim:
        simulated = await _is_simulator(sim, primary.timeout_s)
        outage_at = trio.current_time()
        try:
            if simulated:
                if not await _sim_fault(sim, "PUT", primary.timeout_s, steps, primary.name):
                    return None
            else:
                steps.add("outage", True, f"{primary.name} is a real paper account: treated "
                          "as unreachable (not broken on purpose)")
            recovered = await _fail_over(cfg, primary, secondary, simulated, before, steps,
                                         extra, tolerance, outage_at)
        finally:
            if simulated:
                with trio.CancelScope(shield=True):
                    await _sim_fault(sim, "DELETE", primary.timeout_s, steps, primary.name)
    # playbook 01 broker-failover step 04 "reconcile any pending orders from the primary".
    try:
        pending = [o for o in await primary.open_orders() if in_scope(primary, o)]
        steps.add("primary pending orders", True,
                  f"{len(pending)} order(s) left open on {primary.name} to reconcile"
                  + (": " + ", ".join(f"{o.symbol} {o.side} {o.qty:g} ({o.id})"
                                      for o in pending[:5]) if pending else ""))
    except VenueError as exc:
        if simulated:
            steps.add("primary pending orders", False, f"{primary.name} unreadable after the "
                      f"outage was cleared: {exc}")
        else:
            steps.add("primary pending orders", True, f"{primary.name} still unreachable: "
                      f"reconcile its pending orders once it answers ({exc})")
    return recovered


async def _fail_over(cfg: DrillConfig, primary: HttpVenue, secondary: HttpVenue,
                     simulated: bool, before: dict[str, float] | None, steps: _Steps,
                     extra: dict[str, Any], tolerance: float, outage_at: float
                     ) -> float | None:
    # playbook 01 broker-failover trigger: "Primary broker heartbeat fails for 3 consecutive
    # checks".
    if simulated:
        failures, pings, last = 0, 0, ""
        while failures < cfg.detect_failures and pings < cfg.detect_failures + 2:
            if pings:
                await trio.sleep(cfg.ping_interval_s)
            pings += 1
            try:
                await primary.ping()
                failures, last = 0, "answered"
            except VenueError as exc:
                failures, last = failures + 1, str(exc)
        if not steps.add("detect", failures >= cfg.detect_failures,
                         f"{failures} consecutive failed ping(s) of {pings}: {last}"):
            return None
    # 01 "Flip the broker_route flag to the secondary venue"
    extra["route"] = {"from": primary.name, "to": secondary.name}
    steps.add("route", True, f"broker route flipped from {primary.name} to {secondary.name}")
    # 02 auth and rate-limit headroom, 03 one-share test order cancelled at once
    check: FailoverCheck = await check_failover_venue(
        secondary, cfg.symbol, qty=cfg.test_qty, limit_price=cfg.test_limit_price,
        min_headroom=cfg.min_headroom, poll_s=min(cfg.poll_s, 0.2), started_at=steps.t0,
        confirm_within_s=max(5.0, 2 * secondary.timeout_s))
    steps.steps.extend(check.steps)
    extra["rate_limit"] = msgspec.to_builtins(check.rate_limit)
    if not check.ok:
        return None
    # 04 reconcile: broker truth on the secondary, to the share (playbook 01 reconciliation
    # verify), against what it held before the outage (the test order left nothing).
    try:
        after = {p.symbol: p.qty for p in await secondary.positions()}
    except VenueError as exc:
        steps.add("reconcile", False, f"{secondary.name} positions unreadable: {exc}")
        return None
    if before is None:
        steps.add("reconcile", False, f"no positions of {secondary.name} from before the "
                  "outage to reconcile against")
        return None
    diffs = [f"{s} {before.get(s, 0.0):g} -> {after.get(s, 0.0):g}"
             for s in sorted(set(before) | set(after))
             if abs(after.get(s, 0.0) - before.get(s, 0.0)) > tolerance]
    if not steps.add("reconcile", not diffs,
                     f"{secondary.name} positions agree with broker truth to the share "
                     f"({len(after)} symbol(s))" if not diffs else
                     "positions moved during the failover: " + ", ".join(diffs)):
        return None
    return round(trio.current_time() - outage_at, 3)


async def _is_simulator(sim: httpx.AsyncClient, timeout_s: float) -> bool:
    """Whether the primary serves the simulators' fault API (GET /sim/fault)."""
    try:
        with trio.fail_after(timeout_s):
            response = await sim.get("/sim/fault")
        return response.status_code == 200 and "faults" in response.json()
    except (trio.TooSlowError, httpx.HTTPError, ValueError):
        return False


async def _sim_fault(sim: httpx.AsyncClient, method: str, timeout_s: float, steps: _Steps,
                     name: str) -> bool:
    """PUT the outage fault on the simulated primary, or DELETE it (always, at the end)."""
    request = (partial(sim.put, "/sim/fault", json={"kind": "outage"}) if method == "PUT"
               else partial(sim.delete, "/sim/fault/outage"))
    what = "outage" if method == "PUT" else "outage cleared"
    try:
        with trio.fail_after(max(timeout_s, 1.0)):
            response = await request()
    except (trio.TooSlowError, httpx.HTTPError) as exc:
        return steps.add(what, False, f"{name}: /sim/fault failed: {exc!r}")
    ok = response.status_code == 200
    return steps.add(what, ok, (f"{name}: simulated outage in force (every /v2/ request "
                                "answers 503)" if method == "PUT" else
                                f"{name}: simulated outage cleared") if ok else
                     f"{name}: /sim/fault answered {response.status_code}")
