"""The HTTP venue adapter against the venue simulator over 127.0.0.1 (MockTransport only
for bodies no honest venue would send)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from simulators.venue import (
    Hang,
    Latency,
    Outage,
    PartialCancel,
    PendingCancel,
    Reject,
    SilentAcks,
    VenueSimulator,
    serve_venue,
)
from supervisor.core.errors import (
    VenueProtocolError,
    VenueRejected,
    VenueTimeout,
    VenueUnavailable,
)
from supervisor.venues.alpaca import HttpVenue
from supervisor.venues.base import CancelEntry, CancelReport, VenueOrder, VenuePosition

KEY = "AKSIMKEY0001"
SECRET = "sim-secret-do-not-print"
WALL = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = WALL

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock: Clock) -> VenueSimulator:
    return VenueSimulator("alpha", wall_clock=clock)


@pytest.fixture
async def url(sim: VenueSimulator, nursery: trio.Nursery) -> str:
    return await nursery.start(serve_venue, sim)


@pytest.fixture
async def venue(url: str) -> AsyncIterator[HttpVenue]:
    async with HttpVenue("alpha", url, timeout_s=0.5) as venue:
        yield venue


def garbage(status: int, content: bytes) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, content=content))


# ---- reading ----


async def test_ping_measures_the_round_trip(venue: HttpVenue, sim: VenueSimulator) -> None:
    with trio.fail_after(5):
        fast = await venue.ping()
        sim.faults.set(Latency(ms=100))
        slow = await venue.ping()
    assert 0 < fast < 0.1
    assert 0.1 <= slow < 0.5


async def test_warm_opens_the_one_connection_a_kill_then_reuses(
    venue: HttpVenue, sim: VenueSimulator
) -> None:
    sim.place("AAPL", 1, "buy")
    with trio.fail_after(5):
        await venue.warm()
        report = await venue.cancel_all()
    assert report.requested == 1
    assert len(sim.connections) == 1


async def test_account_is_the_venue_dict(venue: HttpVenue) -> None:
    with trio.fail_after(5):
        account = await venue.account()
    assert account["status"] == "ACTIVE"
    assert account["cash"] == "100000"


async def test_open_orders_are_typed_with_float_quantities(
    venue: HttpVenue, sim: VenueSimulator
) -> None:
    placed = sim.place("AAPL", 2.5, "sell", client_order_id="eng-7")
    sim.place("MSFT", 1, "buy", type="market")  # filled: not open
    with trio.fail_after(5):
        orders = await venue.open_orders()
    assert orders == [
        VenueOrder(
            id=str(placed["id"]),
            client_order_id="eng-7",
            symbol="AAPL",
            side="sell",
            qty=2.5,
            filled_qty=0.0,
            status="new",
            submitted_at=WALL,
        )
    ]
    assert orders[0].is_open


@pytest.mark.parametrize(
    ("status", "is_open"),
    [
        ("new", True),
        ("accepted", True),
        ("partially_filled", True),
        ("pending_cancel", True),
        ("pending_new", True),
        ("accepted_for_bidding", True),
        ("held", True),
        ("something_new_from_the_venue", True),
        ("filled", False),
        ("canceled", False),
        ("expired", False),
        ("rejected", False),
        ("replaced", False),
    ],
)
def test_unknown_statuses_count_as_open(status: str, is_open: bool) -> None:
    order = VenueOrder("i", "c", "AAPL", "buy", 1.0, 0.0, status, WALL)
    assert order.is_open is is_open


async def test_orders_since_pages_through_every_order_once(
    venue: HttpVenue, sim: VenueSimulator, clock: Clock
) -> None:
    ids = []
    for i in range(1_100):
        # Orders 498..502 share one stamp, across the first page's edge.
        clock.now = WALL + 10 + (498 if 498 <= i <= 502 else i) * 0.001
        ids.append(sim.place("AAPL", 1, "buy")["id"])
    clock.now = WALL - 5
    sim.place("AAPL", 1, "buy")  # before `after`: not returned
    with trio.fail_after(5):
        orders = await venue.orders_since(WALL)
    assert sorted(o.id for o in orders) == sorted(ids)
    assert len({o.id for o in orders}) == len(orders)
    assert [o.submitted_at for o in orders] == sorted(o.submitted_at for o in orders)
    assert sim.requests["GET /v2/orders"] == 3


async def test_open_orders_page_past_the_venue_limit(
    venue: HttpVenue, sim: VenueSimulator, clock: Clock
) -> None:
    for i in range(600):
        clock.now = WALL + i * 0.001
        sim.place("AAPL", 1, "buy")
    with trio.fail_after(5):
        orders = await venue.open_orders()
    assert len({o.id for o in orders}) == 600
    assert sim.requests["GET /v2/orders"] == 2


async def test_orders_since_includes_closed_orders(venue: HttpVenue, sim: VenueSimulator) -> None:
    filled = sim.place("AAPL", 1, "buy", type="market")
    with trio.fail_after(5):
        [order] = await venue.orders_since(WALL - 1)
    assert (order.id, order.status, order.filled_qty, order.is_open) == (
        filled["id"],
        "filled",
        1.0,
        False,
    )


async def test_positions_are_signed(venue: HttpVenue, sim: VenueSimulator) -> None:
    sim.place("AAPL", 3, "buy", type="market")
    sim.place("MSFT", 2, "sell", type="market")
    with trio.fail_after(5):
        positions = await venue.positions()
    assert [(p.symbol, p.qty) for p in positions] == [("AAPL", 3.0), ("MSFT", -2.0)]
    # the venue's own current price comes with each position: what a flatten prices at
    assert [p.price for p in positions] == [sim.price("AAPL"), sim.price("MSFT")]
    assert isinstance(positions[0], VenuePosition)


async def test_an_order_is_found_by_its_client_order_id_or_is_none(
        venue: HttpVenue, sim: VenueSimulator) -> None:
    with trio.fail_after(5):
        sent = await venue.submit_order(symbol="AAPL", qty=2, side="buy", limit_price=1.0,
                                        client_order_id="desk-supervisor-flatten-x1")
        found = await venue.order_by_client_id("desk-supervisor-flatten-x1")
        missing = await venue.order_by_client_id("desk-supervisor-flatten-never-sent")
        sim.faults.set(Outage())
        with pytest.raises(VenueUnavailable):
            await venue.order_by_client_id("desk-supervisor-flatten-x1")
    assert found == sent
    assert missing is None


async def test_submit_order_names_it_with_the_prefix(url: str, sim: VenueSimulator) -> None:
    async with HttpVenue("alpha", url, cancel_scope="prefix", client_order_prefix="eng-") as venue:
        with trio.fail_after(5):
            order = await venue.submit_order(symbol="AAPL", qty=4, side="buy", limit_price=90.5)
    assert order.client_order_id.startswith("eng-")
    assert (order.qty, order.status, order.is_open) == (4.0, "new", True)
    assert sim.order(order.id)["limit_price"] == "90.5"


async def test_rejected_order_is_venue_rejected(venue: HttpVenue, sim: VenueSimulator) -> None:
    sim.faults.set(Reject())
    with trio.fail_after(5), pytest.raises(VenueRejected) as caught:
        await venue.submit_order(symbol="AAPL", qty=1, side="buy", limit_price=90)
    assert str(caught.value) == (
        "venue alpha: POST /v2/orders answered 403: order rejected by venue (simulated)"
    )


async def test_invalid_order_is_venue_rejected_with_the_venue_message(venue: HttpVenue) -> None:
    with trio.fail_after(5), pytest.raises(VenueRejected) as caught:
        await venue.submit_order(symbol="AAPL", qty=1, side="buy")  # limit without a price
    assert str(caught.value) == "venue alpha: POST /v2/orders answered 422: limit_price is required"


# ---- cancel-all ----


async def test_cancel_all_account_scope_cancels_everything(
    venue: HttpVenue, sim: VenueSimulator
) -> None:
    sim.place("AAPL", 1, "buy", client_order_id="eng-1")
    sim.place("AAPL", 1, "buy", client_order_id="manual-1")
    with trio.fail_after(5):
        report = await venue.cancel_all()
        assert await venue.open_orders() == []
    assert report == CancelReport(venue="alpha", requested=2, failed=(), scope="account")
    assert sim.requests["DELETE /v2/orders"] == 1


async def test_partial_cancel_is_reported_and_those_orders_stay_open(
    venue: HttpVenue, sim: VenueSimulator
) -> None:
    for _ in range(4):
        sim.place("AAPL", 1, "buy")
    sim.faults.set(PartialCancel(fraction=0.5))
    with trio.fail_after(5):
        report = await venue.cancel_all()
        still_open = await venue.open_orders()
    assert report.requested == 4
    assert len(report.failed) == 2
    assert all(entry.status == 500 for entry in report.failed)
    assert {e.order_id for e in report.failed} == {o.id for o in still_open}


async def test_prefix_scope_cancels_only_the_engines_orders(url: str, sim: VenueSimulator) -> None:
    mine = [sim.place("AAPL", 1, "buy", client_order_id=f"eng-{i}")["id"] for i in range(3)]
    manual = sim.place("AAPL", 1, "sell", client_order_id="desk-manual-1")["id"]
    async with HttpVenue("alpha", url, cancel_scope="prefix", client_order_prefix="eng-") as venue:
        with trio.fail_after(5):
            report = await venue.cancel_all()
            left = await venue.open_orders()
    assert report == CancelReport(venue="alpha", requested=3, failed=(), scope="prefix")
    assert [o.id for o in left] == [manual]
    assert {sim.order(i)["status"] for i in mine} == {"canceled"}
    assert sim.requests["DELETE /v2/orders"] == 0
    assert sim.requests["DELETE /v2/orders/{id}"] == 3


async def test_prefix_scope_counts_an_order_that_closed_meanwhile_as_done(
    url: str, sim: VenueSimulator
) -> None:
    order = sim.place("AAPL", 1, "buy", client_order_id="eng-1")
    sim.faults.set(Latency(ms=400))
    async with HttpVenue(
        "alpha", url, timeout_s=2.0, cancel_scope="prefix", client_order_prefix="eng-"
    ) as venue:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                reports: list[CancelReport] = []

                async def kill() -> None:
                    reports.append(await venue.cancel_all())

                nursery.start_soon(kill)
                # The open-order list answers at ~0.4 s; the DELETE lands at ~0.8 s.
                await trio.sleep(0.6)
                sim.fill(str(order["id"]))
    assert reports == [CancelReport("alpha", 1, (), "prefix")]
    assert sim.requests["DELETE /v2/orders/{id}"] == 1


async def test_prefix_scope_needs_a_prefix() -> None:
    with pytest.raises(ValueError, match="cancel_scope prefix needs a client_order_prefix"):
        HttpVenue("alpha", "http://127.0.0.1:1", cancel_scope="prefix")


async def test_pending_cancel_orders_stay_open_until_the_venue_is_done(
    venue: HttpVenue, sim: VenueSimulator
) -> None:
    sim.place("AAPL", 1, "buy")
    sim.faults.set(PendingCancel(ms=300))
    with trio.fail_after(5):
        report = await venue.cancel_all()
        [pending] = await venue.open_orders()
        await trio.sleep(0.35)
        after = await venue.open_orders()
    assert report.failed == ()
    assert (pending.status, pending.is_open) == ("pending_cancel", True)
    assert after == []


async def test_a_hung_order_post_does_not_block_a_kill(
    venue: HttpVenue, sim: VenueSimulator
) -> None:
    sim.place("AAPL", 1, "buy")
    sim.faults.set(SilentAcks())
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def submit() -> None:
                with pytest.raises(VenueTimeout):
                    await venue.submit_order(symbol="AAPL", qty=1, side="buy", limit_price=90)

            nursery.start_soon(submit)
            await trio.sleep(0.1)  # the POST now holds a connection
            started = trio.current_time()
            report = await venue.cancel_all()
            assert trio.current_time() - started < 0.3
    assert report.requested == 2  # the silently acked order is open too


# ---- failures ----


async def test_outage_is_venue_unavailable(venue: HttpVenue, sim: VenueSimulator) -> None:
    sim.faults.set(Outage())
    with trio.fail_after(5), pytest.raises(VenueUnavailable) as caught:
        await venue.ping()
    assert str(caught.value) == "venue alpha: GET /v2/clock answered 503: service unavailable"


async def test_outage_during_cancel_all_raises(venue: HttpVenue, sim: VenueSimulator) -> None:
    sim.faults.set(Outage())
    with trio.fail_after(5), pytest.raises(VenueUnavailable):
        await venue.cancel_all()
    assert sim.requests["DELETE /v2/orders"] == 1


async def test_hang_is_venue_timeout_within_the_deadline(url: str, sim: VenueSimulator) -> None:
    sim.faults.set(Hang())
    async with HttpVenue("alpha", url, timeout_s=0.2) as venue:
        started = trio.current_time()
        with trio.fail_after(5), pytest.raises(VenueTimeout) as caught:
            await venue.ping()
        elapsed = trio.current_time() - started
    assert str(caught.value) == "venue alpha: GET /v2/clock timed out after 0.2 s"
    assert isinstance(caught.value.__cause__, trio.TooSlowError)
    assert isinstance(caught.value, TimeoutError)
    assert 0.2 <= elapsed < 0.5


async def test_the_adapter_recovers_when_the_hang_clears(
    venue: HttpVenue, sim: VenueSimulator
) -> None:
    sim.faults.set(Hang())
    with trio.fail_after(5):
        with pytest.raises(VenueTimeout):
            await venue.ping()
        sim.faults.clear()
        assert await venue.ping() < 0.5


async def test_nothing_listening_is_venue_unavailable() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # bound then closed: connections are refused
    async with HttpVenue("alpha", f"http://127.0.0.1:{port}", timeout_s=0.5) as venue:
        with trio.fail_after(5), pytest.raises(VenueUnavailable) as caught:
            await venue.ping()
    assert str(caught.value).startswith("venue alpha: GET /v2/clock failed: ")


@pytest.mark.parametrize(
    ("call", "content", "message"),
    [
        (
            "ping",
            b"<html>gateway</html>",
            "venue alpha: GET /v2/clock answered a body that does not match the api: "
            "JSON is malformed: invalid character (byte 0)",
        ),
        (
            "open_orders",
            b'[{"id": "1", "client_order_id": "c", "symbol": "AAPL", "side": "buy", '
            b'"qty": "lots", "filled_qty": "0", "status": "new", '
            b'"created_at": "2023-11-14T22:13:20Z"}]',
            "venue alpha: GET /v2/orders answered a body that does not match the api: "
            "Expected `float | null`, got `str` - at `$[0].qty`",
        ),
        (
            "open_orders",
            b'{"orders": []}',
            "venue alpha: GET /v2/orders answered a body that does not match the api: "
            "Expected `array`, got `object`",
        ),
        (
            "positions",
            b'[{"symbol": "AAPL"}]',
            "venue alpha: GET /v2/positions answered a body that does not match the api: "
            "Object missing required field `qty` - at `$[0]`",
        ),
        (
            "cancel_all",
            b'[{"id": "1", "status": "ok"}]',
            "venue alpha: DELETE /v2/orders answered a body that does not match the api: "
            "Expected `int`, got `str` - at `$[0].status`",
        ),
        (
            "account",
            b"[]",
            "venue alpha: GET /v2/account answered a body that does not match the api: "
            "Expected `object`, got `array`",
        ),
    ],
)
async def test_garbage_body_is_a_protocol_error(call: str, content: bytes, message: str) -> None:
    status = 207 if call == "cancel_all" else 200
    async with HttpVenue("alpha", "http://venue.test", transport=garbage(status, content)) as venue:
        with trio.fail_after(5), pytest.raises(VenueProtocolError) as caught:
            await getattr(venue, call)()
    assert str(caught.value) == message


async def test_an_unexpected_status_is_a_protocol_error() -> None:
    transport = garbage(302, b"moved")
    async with HttpVenue("alpha", "http://venue.test", transport=transport) as venue:
        with trio.fail_after(5), pytest.raises(VenueProtocolError) as caught:
            await venue.ping()
    assert str(caught.value) == "venue alpha: GET /v2/clock answered 302: moved"


def flaky(first_error: Exception) -> httpx.MockTransport:
    """Fails the first request the way a dead kept-alive socket does, then answers."""
    calls: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) == 1:
            raise first_error
        if request.method == "POST":
            return httpx.Response(500)
        return httpx.Response(200, json={"timestamp": "2023-11-14T22:13:20Z", "is_open": True})

    return httpx.MockTransport(handle)


async def test_a_stale_keep_alive_socket_is_retried_once() -> None:
    transport = flaky(httpx.RemoteProtocolError("server disconnected without a response"))
    async with HttpVenue("alpha", "http://venue.test", transport=transport) as venue:
        with trio.fail_after(5):
            assert await venue.ping() >= 0


async def test_an_order_post_is_never_resent() -> None:
    transport = flaky(httpx.ReadError("connection reset"))
    async with HttpVenue("alpha", "http://venue.test", transport=transport) as venue:
        with trio.fail_after(5), pytest.raises(VenueUnavailable) as caught:
            await venue.submit_order(symbol="AAPL", qty=1, side="buy", limit_price=1)
    assert str(caught.value) == "venue alpha: POST /v2/orders failed: connection reset"


# ---- credentials ----


async def test_credentials_are_sent_as_alpaca_headers(nursery: trio.Nursery) -> None:
    sim = VenueSimulator("alpha", key_id=KEY, secret_key=SECRET)
    url = await nursery.start(serve_venue, sim)
    async with HttpVenue("alpha", url, key_id=KEY, secret_key=SECRET) as venue:
        with trio.fail_after(5):
            await venue.ping()
    async with HttpVenue("alpha", url) as anonymous:
        with trio.fail_after(5), pytest.raises(VenueRejected) as caught:
            await anonymous.ping()
    assert str(caught.value) == "venue alpha: GET /v2/clock answered 401: request is not authorized"


async def test_wrong_secret_is_rejected_without_printing_it(nursery: trio.Nursery) -> None:
    sim = VenueSimulator("alpha", key_id=KEY, secret_key="the-right-one")
    url = await nursery.start(serve_venue, sim)
    async with HttpVenue("alpha", url, key_id=KEY, secret_key=SECRET) as venue:
        with trio.fail_after(5), pytest.raises(VenueRejected) as caught:
            await venue.account()
        assert SECRET not in repr(venue) and KEY not in repr(venue)
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)


async def test_secrets_echoed_by_a_venue_are_scrubbed() -> None:
    echo = httpx.MockTransport(
        lambda request: httpx.Response(
            500, text=f"bad key {request.headers['APCA-API-SECRET-KEY']} for {KEY}"
        )
    )
    async with HttpVenue(
        "alpha", "http://venue.test", key_id=KEY, secret_key=SECRET, transport=echo
    ) as venue:
        with trio.fail_after(5), pytest.raises(VenueUnavailable) as caught:
            await venue.cancel_all()
    assert str(caught.value) == "venue alpha: DELETE /v2/orders answered 500: bad key *** for ***"


# ---- lifecycle ----


async def test_aclose_is_idempotent_and_a_closed_adapter_refuses(url: str) -> None:
    venue = HttpVenue("alpha", url)
    with trio.fail_after(5):
        await venue.ping()
        await venue.aclose()
        await venue.aclose()
        with pytest.raises(VenueUnavailable, match="on a closed adapter"):
            await venue.ping()


async def test_aclose_completes_when_cancelled(url: str) -> None:
    venue = HttpVenue("alpha", url)
    with trio.fail_after(5):
        await venue.ping()
        with trio.CancelScope() as scope:
            scope.cancel()
            await venue.aclose()
    with pytest.raises(VenueUnavailable):
        await venue.ping()


async def test_cancel_entry_and_report_are_frozen_structs() -> None:
    entry = CancelEntry("o1", 500)
    with pytest.raises(AttributeError):
        entry.status = 200  # type: ignore[misc]
    assert CancelReport("alpha", 1, (entry,), "account").failed == (entry,)
