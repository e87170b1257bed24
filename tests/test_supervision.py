"""OTP-style supervision of actors (docs/architecture.md principle 8), on MockClock."""

from __future__ import annotations

import trio

from actors.base import Finding, Report
from supervisor.config import SupervisionConfig
from supervisor.runtime.supervision import ActorStatus, supervise


class Flaky:
    name = "flaky"
    critical = False

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.starts: list[float] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.starts.append(trio.current_time())
        task_status.started()
        await trio.sleep(0.01)
        if len(self.starts) <= self.crashes:
            raise RuntimeError(f"boom {len(self.starts)}")
        await trio.sleep_forever()


class Blind(Flaky):
    name = "heartbeat"
    critical = True
    blind_class = "broker-outage"


async def _supervise(actor: Flaky, reports: list[Report], status: ActorStatus) -> None:
    async def report(item: Report) -> None:
        reports.append(item)

    async with trio.open_nursery() as nursery:
        await nursery.start(supervise, actor, SupervisionConfig(), report, status)
        await trio.sleep(60)
        nursery.cancel_scope.cancel()


async def test_a_crash_is_restarted_with_doubling_backoff(autojump_clock: trio.abc.Clock) -> None:
    actor, reports, status = Flaky(crashes=1), [], ActorStatus()
    await _supervise(actor, reports, status)
    assert actor.starts == [0.0, 0.11]  # crashed at 0.01, restarted after 0.1 s
    assert status.restarts == 1 and status.state == "running"
    assert status.last_error == "RuntimeError: boom 1"
    assert reports == []  # 1 restart in 5 s is within OTP's default intensity


async def test_too_many_restarts_open_an_incident_once(autojump_clock: trio.abc.Clock) -> None:
    actor, reports, status = Flaky(crashes=4), [], ActorStatus()
    await _supervise(actor, reports, status)
    assert len(actor.starts) == 5
    (finding,) = reports
    assert isinstance(finding, Finding)
    assert (finding.incident_class, finding.scope) == ("actor-failure", "actor:flaky")
    assert finding.summary.startswith("actor flaky restarted 2 times in 5 s")


async def test_a_blind_critical_actor_opens_its_p0_class(autojump_clock: trio.abc.Clock) -> None:
    actor, reports, status = Blind(crashes=3), [], ActorStatus()
    await _supervise(actor, reports, status)
    (finding,) = reports
    assert isinstance(finding, Finding) and finding.incident_class == "broker-outage"
