"""Runbook checklists: a run of one of playbook 01's procedures, step by step, then its verify.

``start`` opens a run (journaled: who, when, the incident it serves), ``done`` records a
step (who, when, a note), ``verify`` runs the runbook's verify check and journals the
verdict with its evidence, ``close`` completes the run (every step done and the verify
passed) or abandons it with a reason. The desk state (supervisor/core/ledger.py)
refuses an unknown run, a step out of range or already done, and anything on a closed
run; runs survive a restart because they are the fold of the journal.

``VERIFIERS`` holds the automated checks per runbook id. A runbook without one is verified
by an operator's attestation (``attest``), journaled as such: never a pass the supervisor
made up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

import httpx
import msgspec
import trio

from supervisor.core.errors import ConfigError, ControlError, DeskError, VenueError
from supervisor.core.events import RunbookClosed, RunbookStarted, RunbookStepDone, RunbookVerified
from supervisor.core.ledger import RunbookRun
from supervisor.playbook.runbooks import RUNBOOKS

if TYPE_CHECKING:
    from supervisor.control.authz import Caller
    from supervisor.runtime.desk import Desk

Method = Literal["automated", "attested", "manual"]


class VerifyResult(msgspec.Struct, frozen=True, kw_only=True):
    """A verify check's verdict: ok (None: could not judge), what it found, and on what."""

    ok: bool | None
    detail: str
    method: Method = "automated"
    evidence: dict[str, object] = {}


class VerifyArgs(msgspec.Struct, frozen=True, kw_only=True):
    """What the operator passes to a verify: the revert commit (config-rollback)."""

    commit: str | None = None


Verifier = Callable[["Desk", RunbookRun, VerifyArgs], Awaitable[VerifyResult]]


def _fail(detail: str, **evidence: object) -> VerifyResult:
    return VerifyResult(ok=False, detail=detail, evidence=evidence)


# --- killswitch: "zero new orders for >= 60 seconds after the switch; venue-side
# open-order count is zero" --------------------------------------------------------------


async def verify_killswitch(desk: Desk, run: RunbookRun, args: VerifyArgs) -> VerifyResult:
    """Ask every venue for its open orders now; the quiet period is the kill executor's
    own evidence (supervisor/runtime/killswitch.py tracks new orders while latched)."""
    from supervisor.runtime.killswitch import in_scope

    kill = desk.state.kill
    quiet_s = desk.config.kill.quiet_s
    if not kill.latched:
        return _fail("the kill-switch is not latched: nothing to verify (step 01: pull it)",
                     mode=desk.state.mode)
    venues: dict[str, dict[str, object]] = {}

    async def ask(venue: Any) -> None:
        try:
            orders = [o for o in await venue.open_orders() if in_scope(venue, o)]
        except VenueError as exc:
            venues[venue.name] = {"open_orders": None, "error": str(exc)}
        else:
            venues[venue.name] = {"open_orders": len(orders),
                                  "orders": [o.id for o in orders[:10]]}

    async with trio.open_nursery() as nursery:
        for venue in desk.venues:
            nursery.start_soon(ask, venue)
    ks = desk.killswitch.status()
    quiet_for = ks.get("quiet_for_s")
    for name, st in (ks.get("venues") or {}).items():  # type: ignore[union-attr]
        venues.setdefault(name, {})["new_orders_after_switch"] = st.get(
            "new_orders_after_switch", 0)
    problems = [f"venue {n}: {v['error']}" if v.get("error") else
                f"venue {n} has {v['open_orders']} open order(s)"
                for n, v in sorted(venues.items()) if v.get("open_orders") != 0]
    if not isinstance(quiet_for, int | float) or quiet_for < quiet_s:
        shown = "-" if not isinstance(quiet_for, int | float) else f"{quiet_for:.0f}"
        problems.append(f"no new order for {shown} s of the {quiet_s:g} s required")
    evidence: dict[str, object] = {
        "venues": venues, "quiet_for_s": quiet_for, "quiet_required_s": quiet_s,
        "kill_verified": kill.verified, "kill_verify_detail": kill.verify_detail,
        "incident_id": kill.incident_id}
    if problems:
        return VerifyResult(ok=False, detail="; ".join(problems), evidence=evidence)
    return VerifyResult(ok=True, evidence=evidence, detail=(
        f"venue-side open orders zero on {len(venues)} venue(s) and no new order for "
        f"{quiet_for:.0f} s (>= {quiet_s:g} s) after the switch"))


# --- model-rollback and rolling-deploy: "live model_hash matches the registry" ----------


async def _live_model_hash(desk: Desk) -> tuple[str | None, str, str | None]:
    """(hash, where it came from, error): the inference worker's /healthz when configured
    (playbook 01 model-rollback: "Production /healthz reports the prior model_hash"), else
    the engine's ``model`` telemetry."""
    cfg = desk.model.config
    if cfg.healthz_url:
        try:
            async with httpx.AsyncClient(transport=desk.model.transport, timeout=None) as c:
                with trio.fail_after(cfg.liveness_timeout_s):
                    response = await c.get(cfg.healthz_url)
        except trio.TooSlowError:
            return None, cfg.healthz_url, f"no answer in {cfg.liveness_timeout_s:g} s"
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return None, cfg.healthz_url, f"{type(exc).__name__}: {exc}"
        if response.status_code != 200:
            return None, cfg.healthz_url, f"HTTP {response.status_code}"
        try:
            body = msgspec.json.decode(response.content, type=dict[str, Any])
            live = body["model_hash"]
            if not isinstance(live, str) or not live:
                raise KeyError("model_hash")
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError):
            return None, cfg.healthz_url, "200 without a model_hash"
        return live, f"inference worker {cfg.healthz_url}", None
    live = desk.model.model_hash
    if live == "unknown":
        return None, "telemetry", ("no model_hash known: no model.healthz_url configured and "
                                   "no model telemetry from the engine")
    return live, "engine model telemetry ([engine] model_hash until it reports)", None


def _pinned(desk: Desk) -> tuple[str | None, str, str | None]:
    from actors.model import load_pinned

    cfg = desk.model.config
    if cfg.pinned_model_hash:
        return cfg.pinned_model_hash, "model.pinned_model_hash", None
    if cfg.pinned_model_file:
        try:
            return load_pinned(cfg.pinned_model_file), cfg.pinned_model_file, None
        except ConfigError as exc:
            return None, cfg.pinned_model_file, str(exc)
    return None, "-", ("no registry pin configured (model.pinned_model_hash or "
                       "model.pinned_model_file): the live model cannot be compared")


async def verify_model_hash(desk: Desk, run: RunbookRun, args: VerifyArgs) -> VerifyResult:
    live, live_source, live_error = await _live_model_hash(desk)
    pinned, pinned_source, pinned_error = _pinned(desk)
    evidence: dict[str, object] = {"live_model_hash": live, "live_source": live_source,
                                   "pinned_model_hash": pinned, "pinned_source": pinned_source}
    manual = {"model-rollback": "PnL back within the backtest band on the first session",
              "rolling-deploy": "shadow log <= 1.2x prediction divergence"}.get(run.runbook)
    if manual:
        evidence["not_automated"] = manual
    if live_error or pinned_error:
        return VerifyResult(ok=False, evidence=evidence, detail="; ".join(
            e for e in (live_error and f"live model_hash unknown ({live_source}): {live_error}",
                        pinned_error and f"registry pin unknown: {pinned_error}") if e))
    if live != pinned:
        return VerifyResult(ok=False, evidence=evidence, detail=(
            f"live model_hash {live} ({live_source}) is not the registry's pinned version "
            f"{pinned} ({pinned_source})"))
    return VerifyResult(ok=True, evidence=evidence, detail=(
        f"live model_hash {live} ({live_source}) equals the registry's pinned version "
        f"({pinned_source})" + (f"; still to check by hand: {manual}" if manual else "")))


# --- config-rollback: "the live config hash matches the revert commit" ------------------


async def verify_config_rollback(desk: Desk, run: RunbookRun, args: VerifyArgs) -> VerifyResult:
    monitor = desk.config_drift
    if args.commit is None:
        return _fail("give the revert commit: deskctl runbook RUN --verify --commit SHA")
    if not monitor.files:
        return _fail("no config files are watched (config_drift.files is empty): nothing "
                     "to compare with the revert commit")
    try:
        found = await monitor.compare_at(args.commit)
    except ValueError as exc:
        return _fail(str(exc), commit=args.commit)
    commit = str(found["commit"])
    files: dict[str, dict[str, object]] = found["files"]  # type: ignore[assignment]
    problems = [f"{path}: {row['error']}" if row.get("error") else
                f"live {row['file']} sha256 {str(row['live_sha256'])[:12]} is not "
                f"{path} at {commit[:12]} ({str(row['commit_sha256'])[:12]})"
                for path, row in files.items() if row.get("match") is not True]
    # playbook 01 config-rollback verify: "git rev-parse HEAD on the live host matches the
    # revert commit": the deployed ref the drift monitor watches must be it too.
    deployed = found.get("deployed_commit")
    if deployed != commit:
        problems.append(
            f"the deployed ref {found['deployed_ref']!r} resolves to "
            f"{found.get('deployed_error') or str(deployed)[:12]}, not the revert commit "
            f"{commit[:12]}: redeploy with the revert")
    evidence = {**found, "not_automated": "no further alerts in the next 30 minutes"}
    if problems:
        return VerifyResult(ok=False, detail="; ".join(problems), evidence=evidence)
    return VerifyResult(ok=True, evidence=evidence, detail=(
        f"{len(files)} live config file(s) hash as at the revert commit {commit[:12]}, the "
        f"deployed ref {found['deployed_ref']!r} resolves to it; still to watch: no further "
        "alerts in the next 30 minutes"))


# --- api-credentials: "Live trading uses the new credential hash; broker UI shows the
# old credential as revoked" --------------------------------------------------------------


async def verify_credentials(desk: Desk, run: RunbookRun, args: VerifyArgs) -> VerifyResult:
    from supervisor.ops.credentials import fingerprint

    rotated = [c for c in desk.state.credentials
               if c.activated_at is not None and c.activated_at >= run.started_at]
    if not rotated:
        return _fail("no credential was activated since the run started: deskctl "
                     "credentials stage, check, activate, then revoke")
    evidence: dict[str, object] = {}
    problems: list[str] = []
    for c in rotated:
        venue = next((v for v in desk.venues if v.name == c.venue), None)
        if venue is None:
            problems.append(f"venue {c.venue} is no longer configured")
            continue
        live = fingerprint(*venue.credentials())
        row: dict[str, object] = {"live": live, "active": c.active}
        evidence[c.venue] = row
        if live != c.active:
            problems.append(f"venue {c.venue}: the live adapter uses {live}, not the "
                            f"activated credential {c.active}")
        try:
            await venue.account()
            row["account_call"] = "GET /v2/account answered 200 on the live adapter"
        except VenueError as exc:
            row["account_call"] = str(exc)
            problems.append(f"venue {c.venue}: the live credential does not work: {exc}")
        r = c.last_rotation
        if c.previous is not None or r is None or r.revoked_at < run.started_at:
            problems.append(f"venue {c.venue}: the previous credential is not revoked yet "
                            f"(deskctl credentials revoke {c.venue})")
        else:
            row["revoked"] = msgspec.to_builtins(r)
            if not r.confirmed_by_venue:
                problems.append(f"venue {c.venue}: the venue did not confirm the revocation")
    if problems:
        return VerifyResult(ok=False, detail="; ".join(problems), evidence=evidence)
    return VerifyResult(ok=True, evidence=evidence, detail=(
        "live trading uses the new credential on " + ", ".join(c.venue for c in rotated)
        + "; the venue refuses the old one"))


# --- broker-failover: "Flip the broker_route flag to the secondary venue; Confirm
# authentication on the secondary; check rate-limit headroom; Open a single-share test order
# on a liquid symbol; cancel immediately" ---------------------------------------------------


async def verify_broker_failover(desk: Desk, run: RunbookRun, args: VerifyArgs
                                 ) -> VerifyResult:
    """The route is flipped (``deskctl route VENUE``) and the routed venue passes the
    failover check now: authentication (GET /v2/account), rate-limit headroom
    (X-RateLimit-*, at least ``[drill] min_headroom``), and a one-share test order on
    ``[drill] symbol`` at ``test_limit_price`` (far from the market) sent and cancelled.
    The playbook's "first five orders fill within the expected latency band" and the
    primary's status page stay the operator's (named in the evidence)."""
    from supervisor.playbook.failover import check_failover_venue

    route = desk.state.route
    not_automated = ["first five orders on the secondary fill within the expected latency "
                     "band", "the primary's status page confirms the outage"]
    if route is None:
        return _fail("the route has not been flipped (step 01): deskctl route SECONDARY "
                     "--reason TEXT", not_automated=not_automated)
    venue = next((v for v in desk.venues if v.name == route), None)
    if venue is None:
        return _fail(f"the route names venue {route!r}, which is not configured")
    d = desk.config.drill
    check = await check_failover_venue(venue, d.symbol, qty=d.test_qty,
                                       limit_price=d.test_limit_price,
                                       min_headroom=d.min_headroom)
    others = {name: {"ok": hb.ok, "last_error": hb.last_error}
              for name, hb in desk.heartbeat.status.items() if name != route}
    evidence: dict[str, object] = {
        "route": route, "steps": [msgspec.to_builtins(s) for s in check.steps],
        "rate_limit": msgspec.to_builtins(check.rate_limit),
        "other_venues_heartbeat": others, "not_automated": not_automated}
    if not check.ok:
        failed = [f"{s.name}: {s.detail}" for s in check.steps if not s.ok] or [
            "the check stopped before its last step"]
        return VerifyResult(ok=False, evidence=evidence,
                            detail=f"route on {route}, but " + "; ".join(failed))
    return VerifyResult(ok=True, evidence=evidence, detail=(
        f"route on {route}: " + "; ".join(s.detail for s in check.steps)))


# --- reconciliation: "Broker position file and internal state agree to the share" -------


async def verify_reconciliation(desk: Desk, run: RunbookRun, args: VerifyArgs
                                ) -> VerifyResult:
    """Reconcile now (playbook 06 principle 04: "Reconcile to broker truth, never to your own
    log"): every venue's positions against the engine's, to the share; the report is the
    evidence. "The next session opens from a single source of truth" stays the operator's."""
    try:
        rep = await desk.reconciler.reconcile(trigger=f"runbook {run.id}")
    except DeskError as exc:
        return _fail(f"the reconciliation could not run: {exc}")
    unreachable = sorted(n for n, v in rep.venues.items() if not v.get("ok"))
    evidence: dict[str, object] = {
        "report": rep.path, "reconciliation": rep.id,
        "differences": [msgspec.to_builtins(d) for d in rep.differences],
        "unreachable": unreachable}
    if rep.clean:
        return VerifyResult(ok=True, evidence=evidence, detail=(
            f"broker positions and internal state agree to the share on "
            f"{len(rep.broker)} symbol(s) (report {rep.path})"))
    problems = [f"{d.symbol}: broker {d.broker_qty:g}, engine {d.internal_qty:g} "
                f"({d.classification})" for d in rep.differences]
    problems += [f"venue {n} unreachable" for n in unreachable]
    return VerifyResult(ok=False, evidence=evidence,
                        detail="not reconciled: " + "; ".join(problems) + f" (report {rep.path})")


VERIFIERS: dict[str, Verifier] = {
    "killswitch": verify_killswitch,
    "model-rollback": verify_model_hash,
    "rolling-deploy": verify_model_hash,
    "config-rollback": verify_config_rollback,
    "api-credentials": verify_credentials,
    "broker-failover": verify_broker_failover,
    "reconciliation": verify_reconciliation,
}
# Runbooks an operator's attestation verifies: no automated check (or not yet one).
ATTESTED = frozenset(RUNBOOKS) - frozenset(VERIFIERS)


# --- the commands ----------------------------------------------------------------------


def view(run: RunbookRun) -> dict[str, Any]:
    """A run as ``deskctl runbook RUN`` shows it: each step's text and who did it when."""
    book = RUNBOOKS.get(run.runbook)
    out = msgspec.to_builtins(run)
    out["title"] = book.title if book else run.runbook
    out["verify_text"] = book.verify if book else ""
    out["verify_method"] = "attested" if run.runbook in ATTESTED else "automated"
    out["checklist"] = [
        {"step": n, "text": book.steps[n - 1] if book and n <= len(book.steps) else "",
         "done": msgspec.to_builtins(d) if (d := run.step(n)) else None}
        for n in range(1, run.steps + 1)]
    out["pending"] = run.pending
    return out


def _run(desk: Desk, run_id: str) -> RunbookRun:
    run = desk.state.run(run_id)
    if run is None:
        raise ControlError("unknown_run", f"no runbook run {run_id!r}: deskctl runbook --runs "
                                          "lists them")
    return run


async def start(desk: Desk, runbook_id: str, *, incident_id: str | None, caller: Caller
                ) -> dict[str, Any]:
    book = RUNBOOKS.get(runbook_id)
    if book is None:
        raise ControlError("not_found", f"no runbook {runbook_id!r}; runbooks: "
                           + ", ".join(RUNBOOKS))
    kill = desk.state.kill
    if book.id == "killswitch" and kill.latched and incident_id is None:
        incident_id = kill.incident_id  # the run serves the halt in force
    state = await desk.command(RunbookStarted(ts=desk.wall(), actor=caller.actor,
                                               runbook=book.id, steps=len(book.steps),
                                               incident_id=incident_id))
    run = state.runbook_runs[-1]
    if book.id == "killswitch" and kill.latched:
        state = await _record_kill_steps(desk, run)
    return view(next(r for r in state.runbook_runs if r.id == run.id))


async def _record_kill_steps(desk: Desk, run: RunbookRun) -> Any:
    """A killswitch run started while the switch is latched: the steps the desk already
    did are recorded as done, by whom and when they were done (playbook 01 killswitch steps
    01-04), so the checklist shows what is left, not what a person must re-do."""
    kill, state = desk.state.kill, desk.state
    since = kill.since if kill.since is not None else desk.wall()
    steps: list[tuple[int, float, str, str]] = [
        (1, since, kill.by or "unknown", f"kill-switch pulled ({kill.source}): {kill.reason}"),
        (2, since, "supervisor:kill-switch",
         f"cancel-all sent to {len(desk.venues)} venue(s) at the switch, no wait for "
         "confirmation"),
    ]
    if desk.killswitch.snapshot_path:
        steps.append((3, since, "supervisor:kill-switch",
                      f"snapshot (positions, model_hash, last predictions): "
                      f"{desk.killswitch.snapshot_path}"))
    inc = state.incident(kill.incident_id) if kill.incident_id else None
    if inc is not None and inc.commander is not None:
        ack = next((e for e in inc.timeline if e.text.startswith("acknowledged")), None)
        steps.append((4, inc.acknowledged_at or since, ack.actor if ack else "unknown",
                      f"incident {inc.id}: commander {inc.commander}"))
    for step, ts, actor, note in steps:
        state = await desk.command(RunbookStepDone(ts=ts, actor=actor, run_id=run.id,
                                                    step=step, note=note))
    return state


async def done(desk: Desk, run_id: str, step: int, note: str, *, caller: Caller
               ) -> dict[str, Any]:
    await desk.command(RunbookStepDone(ts=desk.wall(), actor=caller.actor, run_id=run_id,
                                        step=step, note=note.strip()))
    return view(_run(desk, run_id))


async def verify(desk: Desk, run_id: str, *, commit: str | None, attest: str | None,
                 caller: Caller) -> dict[str, Any]:
    run = _run(desk, run_id)
    if run.state != "open":
        raise ControlError("bad_state", f"run {run.id} ({run.runbook}) is {run.state}: cannot "
                                        "verify it")
    if attest is not None:
        if run.runbook not in ATTESTED:
            raise ControlError("bad_request", f"runbook {run.runbook} has an automated verify: "
                                              "run --verify without --attest")
        if not attest.strip():
            raise ControlError("bad_request", "an attestation needs a note saying what was "
                                              "checked")
        book = RUNBOOKS[run.runbook]
        result = VerifyResult(ok=True, method="attested", detail=(
            f"attested by {caller.user}: {attest.strip()}"),
            evidence={"attestation": attest.strip(), "seed_verify": book.verify})
    else:
        verifier = VERIFIERS.get(run.runbook)
        if verifier is None:
            result = VerifyResult(ok=None, method="manual", detail=(
                "no automated check for this runbook: do the verify by hand, then attest: "
                "deskctl runbook RUN --verify --attest NOTE"),
                evidence={"seed_verify": RUNBOOKS[run.runbook].verify})
        else:
            try:
                result = await verifier(desk, run, VerifyArgs(commit=commit))
            except DeskError as exc:
                result = _fail(f"the check could not run: {exc}")
    await desk.command(RunbookVerified(
        ts=desk.wall(), actor=caller.actor, run_id=run.id, ok=result.ok, detail=result.detail,
        method=result.method, evidence=result.evidence))
    return view(_run(desk, run_id))


async def close(desk: Desk, run_id: str, *, abandon: str | None, caller: Caller
                ) -> dict[str, Any]:
    await desk.command(RunbookClosed(
        ts=desk.wall(), actor=caller.actor, run_id=run_id,
        outcome="abandoned" if abandon is not None else "completed", note=abandon or ""))
    return view(_run(desk, run_id))


def runs(desk: Desk, *, everything: bool = False) -> list[dict[str, Any]]:
    """Open runs (``everything``: the closed ones kept in the state too), oldest first."""
    return [view(r) for r in desk.state.runbook_runs if everything or r.state == "open"]


def show(desk: Desk, run_id: str) -> dict[str, Any]:
    return view(_run(desk, run_id))


__all__ = ["ATTESTED", "VERIFIERS", "VerifyArgs", "VerifyResult", "close", "done", "runs",
           "show", "start", "verify", "view"]
