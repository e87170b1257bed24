"""The kill path's warm line: a kept-alive connection per venue, h11-framed, against the
real venue simulator over HTTP on 127.0.0.1."""

from __future__ import annotations

import pytest
import trio

from simulators.venue import Hang, PartialCancel, VenueSimulator, serve_venue
from supervisor.core.errors import VenueTimeout
from supervisor.venues.alpaca import HttpVenue
from supervisor.venues.warmline import LineNotReady

from .deskenv import wait_for


async def _venue(nursery: trio.Nursery, timeout_s: float = 1.0
                 ) -> tuple[VenueSimulator, HttpVenue]:
    sim = VenueSimulator("alpha")
    url = await nursery.start(serve_venue, sim)
    venue = HttpVenue("alpha", url, timeout_s=timeout_s)
    assert venue.warm_line is not None
    await nursery.start(venue.warm_line.run)
    await wait_for(lambda: venue.warm_line is not None and venue.warm_line.ready)
    return sim, venue


async def test_a_kill_goes_out_on_the_warm_line_without_a_new_connection() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            sim, venue = await _venue(nursery)
            for i in range(3):
                sim.place("AAPL", 5, "buy", client_order_id=f"desk-{i}")
            line = venue.warm_line
            assert line is not None
            stream = line._stream
            report = await venue.cancel_all()
            assert (report.requested, report.failed) == (3, ())
            assert sim.open_orders() == []
            assert line.kills == 1
            # The same socket, opened before the kill: no connect paid by the kill.
            assert line._stream is stream and line.reconnects == 1
            await venue.aclose()
            nursery.cancel_scope.cancel()


async def test_refused_entries_come_back_as_failed() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            sim, venue = await _venue(nursery)
            for i in range(4):
                sim.place("AAPL", 5, "buy", client_order_id=f"desk-{i}")
            sim.faults.set(PartialCancel(fraction=0.5))
            report = await venue.cancel_all()
            assert report.requested == 4 and len(report.failed) == 2
            assert {e.status for e in report.failed} == {500}
            await venue.aclose()
            nursery.cancel_scope.cancel()


async def test_a_hung_venue_times_out_once_and_the_line_comes_back() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            sim, venue = await _venue(nursery, timeout_s=0.3)
            line = venue.warm_line
            assert line is not None
            sim.faults.set(Hang())
            t0 = trio.current_time()
            with pytest.raises(VenueTimeout, match="warm line"):
                await venue.cancel_all()
            # One wait, not two: a hung venue is not asked again on the other client.
            assert trio.current_time() - t0 < 0.6
            assert not line.ready
            sim.faults.clear()
            await wait_for(lambda: line.ready, 5)
            assert (await venue.cancel_all()).requested == 0
            await venue.aclose()
            nursery.cancel_scope.cancel()


async def test_a_busy_line_is_not_waited_for() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            sim, venue = await _venue(nursery, timeout_s=2.0)
            line = venue.warm_line
            assert line is not None
            sim.faults.set(Hang())
            nursery.start_soon(venue.cancel_all)  # holds the line, hung
            await wait_for(lambda: not line.ready)
            with pytest.raises(LineNotReady):
                await line.cancel_all()
            nursery.cancel_scope.cancel()


async def test_the_cancel_is_written_before_any_checkpoint() -> None:
    """The kill path writes every venue's cancel-all in one synchronous pass."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            sim, venue = await _venue(nursery)
            sim.place("AAPL", 5, "buy", client_order_id="desk-1")
            assert venue.start_cancel_nowait() is True  # sync: no await happened
            assert not venue.warm_line.ready  # type: ignore[union-attr]
            assert venue.start_cancel_nowait() is False  # one exchange at a time
            report = await venue.finish_cancel()
            assert (report.requested, report.failed) == (1, ())
            assert sim.open_orders() == []
            await venue.aclose()
            nursery.cancel_scope.cancel()


async def test_a_kill_uses_the_warm_lines(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from .deskenv import open_desk

    with trio.fail_after(10):
        async with open_desk(tmp_path) as env:
            await wait_for(lambda: all(v.warm_line is not None and v.warm_line.ready
                                       for v in env.desk.venues))
            for sim in env.sims.values():
                sim.place("AAPL", 5, "buy", client_order_id="desk-1")
            await env.request("kill", reason="drill")
            await wait_for(lambda: not any(s.open_orders() for s in env.sims.values()), 2)
            assert [v.warm_line.kills for v in env.desk.venues] == [1, 1]  # type: ignore[union-attr]
