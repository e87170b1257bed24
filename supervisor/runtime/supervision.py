"""OTP-style supervision of actors (docs/architecture.md principle 8).

Each actor runs in its own nursery under ``supervise``: a crash is logged and the actor
restarted after a backoff that doubles up to a cap; more restarts than
``max_restarts`` within ``period_s`` (OTP's default: 1 in 5 s) opens an
incident once per burst. Unlike OTP we never give up: a desk without its watcher is
blind, so the supervisor keeps trying at the capped backoff while the incident is open.
A critical actor's blindness is a P0 (docs/architecture.md: "a blind freshness or heartbeat actor
is a P0: the desk cannot see").
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable

import msgspec
import trio

from actors.base import Actor, Finding, Report
from supervisor.config import SupervisionConfig

log = logging.getLogger("desk.supervision")


class ActorStatus(msgspec.Struct, kw_only=True):
    """What ``status`` shows of one actor."""

    state: str = "starting"
    restarts: int = 0
    last_error: str | None = None
    critical: bool = False


def describe(exc: BaseException) -> str:
    """``Type: message`` of the failure, looking through trio's exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def blind_class(actor: Actor) -> str:
    """The incident class a blind actor opens: its own (a critical watcher's P0 class,
    e.g. broker-outage for the heartbeat), else ``actor-failure`` (P1)."""
    declared = getattr(actor, "blind_class", None)
    return declared if isinstance(declared, str) and actor.critical else "actor-failure"


async def supervise(
    actor: Actor,
    config: SupervisionConfig,
    report: Callable[[Report], Awaitable[None]],
    status: ActorStatus,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``actor`` forever, restarting it on failure; started once it first started.

    Cancellation stops the actor and returns. An actor that fails before it ever
    started still counts as started for the caller (the supervisor keeps retrying
    and the incident says so), so one broken actor cannot keep the daemon from
    coming up.
    """
    status.critical = actor.critical
    crashes: deque[float] = deque()
    backoff = config.backoff_initial_s
    reported_started = False
    escalated = False
    while True:
        started_at = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(actor.run)
                status.state = "running"
                if not reported_started:
                    task_status.started()
                    reported_started = True
        except Exception as exc:  # a crash: log, count, maybe escalate, restart
            now = trio.current_time()
            status.restarts += 1
            status.state = "restarting"
            status.last_error = describe(exc)
            log.error("actor %s crashed: %s", actor.name, status.last_error, exc_info=exc)
            if now - started_at >= config.period_s:
                backoff = config.backoff_initial_s
                escalated = False
            crashes.append(now)
            while crashes and crashes[0] < now - config.period_s:
                crashes.popleft()
            if len(crashes) > config.max_restarts and not escalated:
                escalated = True
                await report(
                    Finding(
                        actor="supervisor",
                        incident_class=blind_class(actor),
                        scope=f"actor:{actor.name}",
                        summary=(
                            f"actor {actor.name} restarted {len(crashes)} times in "
                            f"{config.period_s:g} s: the desk cannot see what it watches "
                            f"(last error: {status.last_error})"
                        ),
                        evidence={"restarts": status.restarts, "critical": actor.critical},
                    )
                )
            if not reported_started:
                task_status.started()
                reported_started = True
            await trio.sleep(backoff)
            backoff = min(backoff * 2, config.backoff_max_s)
        else:
            # An actor that returns on its own is restarted too: watchers never end.
            status.state = "restarting"
            if not reported_started:
                task_status.started()
                reported_started = True
            await trio.sleep(backoff)


async def keep_running(name: str, service: Callable[[], Awaitable[None]], *,
                       backoff_s: float = 1.0) -> None:
    """Run one of the runtime's own loops (journal retry, watch heartbeat, lamp, gate
    re-evaluation) so that a crash never reaches the desk's nursery: it is logged with
    its traceback and the loop restarted after ``backoff_s``. A loop that returns has
    finished on purpose (a lamp that is not there) and is not restarted. Cancellation
    stops it."""
    while True:
        try:
            await service()
        except Exception:
            log.exception("%s crashed; restarting it in %g s", name, backoff_s)
        else:
            return
        await trio.sleep(backoff_s)
