"""The shared /sim/fault API, over real HTTP on 127.0.0.1, for every simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import trio

from simulators.faults import FaultBook, FaultError
from simulators.feed import FeedSimulator, Lag, Stall, serve_feed
from simulators.venue import (
    Hang,
    Latency,
    Outage,
    PartialCancel,
    VenueSimulator,
    serve_venue,
)

VENUE_KINDS = {
    "outage": {},
    "hang": {},
    "latency": {"ms": 250},
    "silent_acks": {},
    "reject": {},
    "partial_cancel": {"fraction": 0.5},
    "pending_cancel": {"ms": 1000},
    "partial_fill": {"fraction": 0.25},
}
FEED_KINDS = {
    "stall": {"vendor": "backup", "symbols": ["AAPL"]},
    "lag": {"seconds": 30.0, "vendor": None},
}
# (kind, bad body, the message the 400 carries)
VENUE_BAD = [
    (
        {"kind": "latency", "ms": -1},
        "bad parameter for fault 'latency': Expected `int` >= 0 - at `$.ms`",
    ),
    ({"kind": "latency"}, "bad parameter for fault 'latency': Object missing required field `ms`"),
    (
        {"kind": "latency", "ms": "5"},
        "bad parameter for fault 'latency': Expected `int`, got `str` - at `$.ms`",
    ),
    (
        {"kind": "pending_cancel", "ms": 1.5},
        "bad parameter for fault 'pending_cancel': Expected `int`, got `float` - at `$.ms`",
    ),
    (
        {"kind": "partial_cancel", "fraction": 1.5},
        "bad parameter for fault 'partial_cancel': Expected `float` <= 1.0 - at `$.fraction`",
    ),
    (
        {"kind": "partial_fill", "fraction": -0.1},
        "bad parameter for fault 'partial_fill': Expected `float` >= 0.0 - at `$.fraction`",
    ),
    (
        {"kind": "outage", "ms": 3},
        "bad parameter for fault 'outage': Object contains unknown field `ms`",
    ),
]
FEED_BAD = [
    (
        {"kind": "lag", "seconds": -2},
        "bad parameter for fault 'lag': Expected `float` >= 0.0 - at `$.seconds`",
    ),
    (
        {"kind": "stall", "vendor": "nobody"},
        "unknown vendor 'nobody'; known vendors: primary, backup",
    ),
    ({"kind": "stall", "symbols": ["ZZZ"]}, "unknown symbols: ZZZ"),
    (
        {"kind": "stall", "symbols": "AAPL"},
        "bad parameter for fault 'stall': Expected `array | null`, got `str` - at `$.symbols`",
    ),
]
VENUE_KNOWN = (
    "outage, hang, latency, silent_acks, reject, partial_cancel, cancel_one_fails, "
    "pending_cancel, partial_fill, rate_limit, cancel_after_fails"
)


def make_venue() -> tuple[VenueSimulator, Callable[..., object]]:
    return VenueSimulator("alpha"), serve_venue


def make_feed() -> tuple[FeedSimulator, Callable[..., object]]:
    return FeedSimulator(["AAPL", "MSFT"]), serve_feed


@pytest.fixture(params=["venue", "feed"])
async def served(
    request: pytest.FixtureRequest, nursery: trio.Nursery
) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    sim, serve = make_venue() if request.param == "venue" else make_feed()
    url = await nursery.start(serve, sim)
    async with httpx.AsyncClient(base_url=url) as client:
        yield request.param, client


@pytest.fixture
async def venue_client(nursery: trio.Nursery) -> AsyncIterator[httpx.AsyncClient]:
    url = await nursery.start(serve_venue, VenueSimulator("alpha"))
    async with httpx.AsyncClient(base_url=url) as client:
        yield client


@pytest.fixture
async def feed_client(nursery: trio.Nursery) -> AsyncIterator[httpx.AsyncClient]:
    url = await nursery.start(serve_feed, FeedSimulator(["AAPL", "MSFT"]))
    async with httpx.AsyncClient(base_url=url) as client:
        yield client


def kinds_of(flavour: str) -> dict[str, dict[str, object]]:
    return VENUE_KINDS if flavour == "venue" else FEED_KINDS


async def test_no_fault_is_in_force_at_start(served: tuple[str, httpx.AsyncClient]) -> None:
    _, client = served
    with trio.fail_after(5):
        response = await client.get("/sim/fault")
    assert response.status_code == 200
    assert response.json() == {"faults": []}


async def test_every_kind_can_be_set_listed_and_cleared_one_by_one(
    served: tuple[str, httpx.AsyncClient],
) -> None:
    flavour, client = served
    kinds = kinds_of(flavour)
    with trio.fail_after(5):
        expected = []
        for kind, params in kinds.items():
            response = await client.put("/sim/fault", json={"kind": kind, **params})
            expected.append({"kind": kind, **params})
            assert response.status_code == 200, response.text
            assert response.json() == {"faults": expected}
        assert (await client.get("/sim/fault")).json() == {"faults": expected}
        for kind in kinds:
            response = await client.delete(f"/sim/fault/{kind}")
            expected = [f for f in expected if f["kind"] != kind]
            assert response.status_code == 200
            assert response.json() == {"faults": expected}


async def test_putting_a_kind_again_replaces_it(venue_client: httpx.AsyncClient) -> None:
    with trio.fail_after(5):
        await venue_client.put("/sim/fault", json={"kind": "latency", "ms": 10})
        await venue_client.put("/sim/fault", json={"kind": "outage"})
        response = await venue_client.put("/sim/fault", json={"kind": "latency", "ms": 20})
    assert response.json() == {"faults": [{"kind": "outage"}, {"kind": "latency", "ms": 20}]}


async def test_stall_parameters_default_to_every_vendor_and_symbol(
    feed_client: httpx.AsyncClient,
) -> None:
    with trio.fail_after(5):
        response = await feed_client.put("/sim/fault", json={"kind": "stall"})
    assert response.json() == {"faults": [{"kind": "stall", "vendor": None, "symbols": None}]}


async def test_delete_clears_every_fault(served: tuple[str, httpx.AsyncClient]) -> None:
    flavour, client = served
    with trio.fail_after(5):
        for kind, params in kinds_of(flavour).items():
            await client.put("/sim/fault", json={"kind": kind, **params})
        response = await client.delete("/sim/fault")
        assert response.status_code == 200
        assert response.json() == {"faults": []}
        assert (await client.get("/sim/fault")).json() == {"faults": []}


async def test_clearing_a_known_kind_not_in_force_is_fine(venue_client: httpx.AsyncClient) -> None:
    with trio.fail_after(5):
        response = await venue_client.delete("/sim/fault/hang")
    assert response.status_code == 200
    assert response.json() == {"faults": []}


async def test_unknown_kind_is_400_naming_the_known_kinds(venue_client: httpx.AsyncClient) -> None:
    with trio.fail_after(5):
        response = await venue_client.put("/sim/fault", json={"kind": "meteor"})
    assert response.status_code == 400
    assert response.json() == {"error": f"unknown fault kind 'meteor'; known kinds: {VENUE_KNOWN}"}


async def test_a_feed_kind_is_unknown_to_a_venue(venue_client: httpx.AsyncClient) -> None:
    with trio.fail_after(5):
        response = await venue_client.put("/sim/fault", json={"kind": "stall"})
    assert response.status_code == 400
    assert response.json()["error"].startswith("unknown fault kind 'stall'")


@pytest.mark.parametrize(("body", "message"), VENUE_BAD)
async def test_bad_venue_parameter_is_400_and_changes_nothing(
    venue_client: httpx.AsyncClient, body: dict[str, object], message: str
) -> None:
    with trio.fail_after(5):
        response = await venue_client.put("/sim/fault", json=body)
        assert response.status_code == 400
        assert response.json() == {"error": message}
        assert (await venue_client.get("/sim/fault")).json() == {"faults": []}


@pytest.mark.parametrize(("body", "message"), FEED_BAD)
async def test_bad_feed_parameter_is_400(
    feed_client: httpx.AsyncClient, body: dict[str, object], message: str
) -> None:
    with trio.fail_after(5):
        response = await feed_client.put("/sim/fault", json=body)
    assert response.status_code == 400
    assert response.json() == {"error": message}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"{not json",
            "fault body is not valid json: JSON is malformed: object keys must be strings (byte 1)",
        ),
        (b"[1, 2]", 'fault body must be a json object like {"kind": ...}'),
        (b'{"ms": 3}', f"fault body needs a 'kind'; known kinds: {VENUE_KNOWN}"),
        (b'{"kind": 7}', f"unknown fault kind 7; known kinds: {VENUE_KNOWN}"),
        (b"", "fault body is not valid json: Input data was truncated"),
    ],
)
async def test_malformed_fault_body_is_400(
    venue_client: httpx.AsyncClient, content: bytes, message: str
) -> None:
    with trio.fail_after(5):
        response = await venue_client.put("/sim/fault", content=content)
    assert response.status_code == 400
    assert response.json() == {"error": message}


async def test_clearing_an_unknown_kind_is_404(served: tuple[str, httpx.AsyncClient]) -> None:
    _, client = served
    with trio.fail_after(5):
        response = await client.delete("/sim/fault/meteor")
    assert response.status_code == 404
    assert response.json()["error"].startswith("unknown fault kind 'meteor'; known kinds: ")


async def test_wrong_method_on_the_fault_api_is_405(served: tuple[str, httpx.AsyncClient]) -> None:
    _, client = served
    with trio.fail_after(5):
        post = await client.post("/sim/fault", json={"kind": "outage"})
        get_one = await client.get("/sim/fault/outage")
    assert post.status_code == 405
    assert post.headers["allow"] == "GET, PUT, DELETE"
    assert get_one.status_code == 405


# ---- FaultBook in process (no sockets) ----


async def test_book_wakes_waiters_when_the_fault_is_cleared(autojump_clock: trio.abc.Clock) -> None:
    book = FaultBook([Hang, Latency])
    book.set(Hang())
    released_at: list[float] = []

    async def waiter() -> None:
        await book.wait_while(Hang)
        released_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(5)
        book.set(Latency(ms=1))  # another change wakes the waiter, which waits again
        await trio.sleep(5)
        assert released_at == []
        book.clear(Hang)
    assert released_at == [10.0]


async def test_book_replaces_its_change_event_on_every_change() -> None:
    book = FaultBook([Outage, PartialCancel])
    first = book.changed
    book.set(Outage())
    assert first.is_set()
    assert not book.changed.is_set()
    second = book.changed
    book.clear()
    assert second.is_set()
    assert book.active() == []


async def test_book_reports_what_is_in_force(autojump_clock: trio.abc.Clock) -> None:
    book = FaultBook([Outage, PartialCancel])
    await trio.sleep(7)
    book.set(PartialCancel(fraction=0.5))
    assert book.get(PartialCancel) == PartialCancel(fraction=0.5)
    assert book.get(Outage) is None
    assert PartialCancel in book and "partial_cancel" in book and Outage not in book
    assert book.kinds == ("outage", "partial_cancel")
    assert book.set_at(PartialCancel) == 7.0
    assert book.set_at(Outage) is None


async def test_book_refuses_kinds_it_does_not_know() -> None:
    book = FaultBook([Outage])
    with pytest.raises(FaultError, match="unknown fault kind 'stall'; known kinds: outage"):
        book.set(Stall())
    with pytest.raises(KeyError):
        book.clear("lag")
    assert Lag not in book
