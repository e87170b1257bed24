"""The simulated venue: Alpaca v2 endpoints, faults and test verbs, over real HTTP."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from subprocess import PIPE

import httpx
import pytest
import trio

from simulators.venue import VenueSimulator, main, serve_venue

WALL = 1_700_000_000.0  # 2023-11-14T22:13:20Z


class Clock:
    """A settable wall clock, so timestamps are exact."""

    def __init__(self, now: float = WALL) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim(clock: Clock) -> VenueSimulator:
    return VenueSimulator("alpha", wall_clock=clock)


@pytest.fixture
async def client(sim: VenueSimulator, nursery: trio.Nursery) -> AsyncIterator[httpx.AsyncClient]:
    url = await nursery.start(serve_venue, sim)
    async with httpx.AsyncClient(base_url=url) as client:
        yield client


def order_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "symbol": "AAPL",
        "qty": "10",
        "side": "buy",
        "type": "limit",
        "limit_price": "90",
        "time_in_force": "day",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


async def set_fault(client: httpx.AsyncClient, kind: str, **params: object) -> None:
    response = await client.put("/sim/fault", json={"kind": kind, **params})
    assert response.status_code == 200, response.text


# ---- endpoints ----


async def test_positions_liquidate_in_full_in_part_or_all_at_once(
        client: httpx.AsyncClient, sim: VenueSimulator) -> None:
    sim.place("AAPL", 100, "buy", type="market")
    sim.place("MSFT", 40, "sell", type="market")
    sim.place("SPY", 10, "buy", limit_price=1.0)  # resting
    with trio.fail_after(5):
        part = await client.delete("/v2/positions/AAPL", params={"qty": "30"})
        half = await client.delete("/v2/positions/AAPL", params={"percentage": "50"})
        too_much = await client.delete("/v2/positions/AAPL", params={"qty": "500"})
        none = await client.delete("/v2/positions/TSLA")
        both = await client.delete("/v2/positions/AAPL", params={"qty": "1",
                                                                "percentage": "1"})
        held = {p["symbol"]: p["qty"] for p in (await client.get("/v2/positions")).json()}
        everything = await client.delete("/v2/positions", params={"cancel_orders": "true"})
        after = (await client.get("/v2/positions")).json()
    assert part.status_code == 200 and part.json()["side"] == "sell"
    assert part.json()["qty"] == "30" and part.json()["type"] == "market"
    assert half.status_code == 200 and half.json()["qty"] == "35"
    assert too_much.status_code == 403 and "insufficient qty" in too_much.json()["message"]
    assert none.status_code == 404 and both.status_code == 422
    assert held == {"AAPL": "35", "MSFT": "-40"}
    assert everything.status_code == 207
    assert [(e["symbol"], e["status"], e["body"]["side"]) for e in everything.json()] == [
        ("AAPL", 200, "sell"), ("MSFT", 200, "buy")]
    assert after == [] and sim.open_orders() == []


async def test_account_is_active_with_alpaca_fields(client: httpx.AsyncClient) -> None:
    with trio.fail_after(5):
        response = await client.get("/v2/account")
    account = response.json()
    assert response.status_code == 200
    assert account["status"] == "ACTIVE"
    assert account["currency"] == "USD"
    assert account["cash"] == account["equity"] == account["buying_power"] == "100000"
    assert {"id", "account_number", "portfolio_value", "created_at"} <= account.keys()


async def test_clock_is_open_and_stamped_in_utc(client: httpx.AsyncClient) -> None:
    with trio.fail_after(5):
        response = await client.get("/v2/clock")
    # by default the simulated venue is open every day, all day (UTC)
    assert response.json() == {
        "timestamp": "2023-11-14T22:13:20.000000Z",
        "is_open": True,
        "next_open": "2023-11-15T00:00:00.000000Z",
        "next_close": "2023-11-14T23:59:59.999999Z",
    }


async def test_an_exchange_calendar_with_a_holiday_and_an_early_close(
        client: httpx.AsyncClient, sim: VenueSimulator, clock: Clock) -> None:
    response = await client.put("/sim/calendar", json={
        "session": "09:30-16:00", "timezone": "America/New_York", "days": [0, 1, 2, 3, 4],
        "closed": ["2023-11-23"], "early_closes": {"2023-11-24": "13:00"}})
    assert response.status_code == 200
    with trio.fail_after(5):
        days = (await client.get("/v2/calendar", params={"start": "2023-11-21",
                                                         "end": "2023-11-27"})).json()
        tuesday_night = (await client.get("/v2/clock")).json()  # 17:13 in New York
        clock.now = 1_700_490_000.0  # Monday 2023-11-20 14:20 UTC: 09:20 in New York
        before_open = (await client.get("/v2/clock")).json()
        clock.now += 15 * 60
        open_ = (await client.get("/v2/clock")).json()
        bad = await client.get("/v2/calendar", params={"start": "nope"})
        bad_put = await client.put("/sim/calendar", json={"session": "25:00-26:00"})
    assert [(d["date"], d["open"], d["close"]) for d in days] == [
        ("2023-11-21", "09:30", "16:00"), ("2023-11-22", "09:30", "16:00"),
        ("2023-11-24", "09:30", "13:00"), ("2023-11-27", "09:30", "16:00")]
    assert tuesday_night["is_open"] is False
    assert tuesday_night["next_open"] == "2023-11-15T14:30:00.000000Z"
    assert before_open["is_open"] is False and open_["is_open"] is True
    assert open_["next_close"] == "2023-11-20T21:00:00.000000Z"
    assert bad.status_code == 422 and bad_put.status_code == 400


async def test_limit_order_below_the_market_rests_as_new(client: httpx.AsyncClient) -> None:
    with trio.fail_after(5):
        response = await client.post("/v2/orders", json=order_body(client_order_id="eng-1"))
        order = response.json()
        assert response.status_code == 200
        assert order["status"] == "new"
        assert order["client_order_id"] == "eng-1"
        assert (order["qty"], order["filled_qty"], order["limit_price"]) == ("10", "0", "90")
        assert order["filled_avg_price"] is None and order["filled_at"] is None
        assert order["submitted_at"] == "2023-11-14T22:13:20.000000Z"
        assert (order["side"], order["type"], order["time_in_force"]) == ("buy", "limit", "day")
        fetched = await client.get(f"/v2/orders/{order['id']}")
        assert fetched.json() == order
        listed = await client.get("/v2/orders")
        assert [o["id"] for o in listed.json()] == [order["id"]]
        by_client = await client.get(
            "/v2/orders:by_client_order_id", params={"client_order_id": "eng-1"}
        )
        assert by_client.json()["id"] == order["id"]


async def test_market_order_fills_at_once_and_moves_the_position(
    client: httpx.AsyncClient, sim: VenueSimulator
) -> None:
    with trio.fail_after(5):
        response = await client.post(
            "/v2/orders", json=order_body(type="market", limit_price=None, qty=5)
        )
        order = response.json()
        assert order["status"] == "filled"
        assert order["filled_qty"] == "5"
        assert order["filled_avg_price"] == "100"  # the walk starts at 100.0
        assert order["filled_at"] == "2023-11-14T22:13:20.000000Z"
        assert (await client.get("/v2/orders")).json() == []
        closed = (await client.get("/v2/orders", params={"status": "closed"})).json()
        assert [o["id"] for o in closed] == [order["id"]]
        positions = (await client.get("/v2/positions")).json()
    assert len(positions) == 1
    assert positions[0]["symbol"] == "AAPL"
    assert (positions[0]["qty"], positions[0]["side"]) == ("5", "long")
    assert positions[0]["avg_entry_price"] == "100"
    assert sim.price("AAPL") != 100.0  # the seeded walk moved after the trade


async def test_marketable_limit_fills_and_sells_go_short(client: httpx.AsyncClient) -> None:
    with trio.fail_after(5):
        response = await client.post(
            "/v2/orders", json=order_body(side="sell", qty="3", limit_price="50")
        )
        assert response.json()["status"] == "filled"
        positions = (await client.get("/v2/positions")).json()
    assert positions[0]["qty"] == "-3"
    assert positions[0]["side"] == "short"
    assert positions[0]["market_value"].startswith("-")


async def test_prices_are_deterministic_per_seed_and_symbol() -> None:
    walks = []
    for _ in range(2):
        sim = VenueSimulator("x", seed=7)
        for _ in range(3):
            sim.place("AAPL", 1, "buy", type="market")
        walks.append(sim.price("AAPL"))
    assert walks[0] == walks[1]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"side": "hold"}, "side must be buy or sell"),
        ({"type": "stop"}, "type must be market or limit"),
        ({"qty": None}, "qty is required"),
        ({"qty": "-1"}, "qty must be positive, got '-1'"),
        ({"qty": "ten"}, "qty must be a decimal number, got 'ten'"),
        ({"limit_price": None}, "limit_price is required"),
        ({"time_in_force": "forever"}, "time_in_force must be one of cls, day, fok, gtc, ioc, opg"),
        ({"symbol": 5}, "invalid order: Expected `str`, got `int` - at `$.symbol`"),
        ({"side": None}, "invalid order: Object missing required field `side`"),
    ],
)
async def test_bad_order_is_422_with_a_message(
    client: httpx.AsyncClient, overrides: dict[str, object], message: str
) -> None:
    with trio.fail_after(5):
        response = await client.post("/v2/orders", json=order_body(**overrides))
        assert response.status_code == 422
        assert response.json() == {"code": 42210000, "message": message}
        assert (await client.get("/v2/orders", params={"status": "all"})).json() == []


async def test_duplicate_client_order_id_is_422(client: httpx.AsyncClient) -> None:
    with trio.fail_after(5):
        first = await client.post("/v2/orders", json=order_body(client_order_id="same"))
        second = await client.post("/v2/orders", json=order_body(client_order_id="same"))
    assert first.status_code == 200
    assert second.status_code == 422
    assert second.json() == {"code": 40010001, "message": "client_order_id must be unique"}


@pytest.mark.parametrize("content", [b"{oops", b"\xff\xfe", b"", b"[]", b"null"])
async def test_garbage_order_body_is_a_400_or_422_and_the_venue_lives(
    client: httpx.AsyncClient, content: bytes
) -> None:
    with trio.fail_after(5):
        response = await client.post("/v2/orders", content=content)
        assert response.status_code in (400, 422)
        assert response.json()["message"]
        assert (await client.get("/v2/clock")).status_code == 200


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    with trio.fail_after(5):
        response = await client.post("/v2/orders", content=b"x" * (1 << 21))
    assert response.status_code == 413


async def test_order_list_filters_by_after_limit_and_direction(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    ids = []
    with trio.fail_after(5):
        for i in range(4):
            clock.now = WALL + i
            ids.append((await client.post("/v2/orders", json=order_body())).json()["id"])
        asc = await client.get(
            "/v2/orders",
            params={"after": "2023-11-14T22:13:20.5Z", "direction": "asc", "limit": "2"},
        )
        assert [o["id"] for o in asc.json()] == ids[1:3]
        desc = await client.get("/v2/orders", params={"status": "all"})
        assert [o["id"] for o in desc.json()] == ids[::-1]
        offset = await client.get("/v2/orders", params={"after": "2023-11-14T23:13:21+01:00"})
        assert [o["id"] for o in offset.json()] == ids[2:][::-1]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"status": "maybe"}, "status must be one of open, closed, all"),
        ({"limit": "0"}, "limit must be between 1 and 500"),
        ({"limit": "many"}, "limit must be an integer"),
        ({"direction": "up"}, "direction must be asc or desc"),
        ({"after": "yesterday"}, "after must be an RFC 3339 timestamp, got 'yesterday'"),
    ],
)
async def test_bad_order_query_is_422(
    client: httpx.AsyncClient, params: dict[str, str], message: str
) -> None:
    with trio.fail_after(5):
        response = await client.get("/v2/orders", params=params)
    assert response.status_code == 422
    assert response.json()["message"] == message


async def test_cancel_all_answers_207_per_order_and_closes_them(
    client: httpx.AsyncClient, sim: VenueSimulator
) -> None:
    a = sim.place("AAPL", 1, "buy")
    b = sim.place("MSFT", 2, "sell")
    sim.place("AAPL", 1, "buy", type="market")  # filled: not part of the cancel
    with trio.fail_after(5):
        response = await client.delete("/v2/orders")
    assert response.status_code == 207
    entries = response.json()
    assert [(e["id"], e["status"]) for e in entries] == [(a["id"], 200), (b["id"], 200)]
    assert entries[0]["body"]["status"] == "canceled"
    assert sim.open_orders() == []
    assert sim.requests["DELETE /v2/orders"] == 1


async def test_cancel_all_with_nothing_open_is_an_empty_207(client: httpx.AsyncClient) -> None:
    with trio.fail_after(5):
        response = await client.delete("/v2/orders")
    assert (response.status_code, response.json()) == (207, [])


async def test_cancel_one_is_204_then_422_and_404_when_unknown(
    client: httpx.AsyncClient, sim: VenueSimulator
) -> None:
    order = sim.place("AAPL", 1, "buy")
    with trio.fail_after(5):
        first = await client.delete(f"/v2/orders/{order['id']}")
        again = await client.delete(f"/v2/orders/{order['id']}")
        unknown = await client.delete("/v2/orders/no-such-order")
        unknown_get = await client.get("/v2/orders/no-such-order")
    assert (first.status_code, first.content) == (204, b"")
    assert again.status_code == 422
    assert again.json()["message"] == 'order is already in "canceled" state'
    assert unknown.status_code == 404
    assert unknown_get.json() == {"code": 40410000, "message": "order not found for no-such-order"}
    assert sim.order(order["id"])["status"] == "canceled"
    assert sim.order(order["id"])["canceled_at"] == "2023-11-14T22:13:20.000000Z"


async def test_positions_average_the_entry_and_drop_when_flat(sim: VenueSimulator) -> None:
    sim.place("AAPL", 2, "buy", type="limit", limit_price=200)  # fills at the market, 100
    sim.set_price("AAPL", 110.0)
    sim.place("AAPL", 2, "buy", type="market")
    [position] = sim.positions()
    assert (position["qty"], position["avg_entry_price"]) == ("4", "105")
    sim.place("AAPL", 4, "sell", type="market")
    assert sim.positions() == []


async def test_resting_order_fills_when_the_market_comes_to_it(sim: VenueSimulator) -> None:
    order = sim.place("AAPL", 3, "buy", limit_price=95)
    sim.set_price("AAPL", 94.5)
    filled = sim.order(order["id"])
    assert (filled["status"], filled["filled_avg_price"]) == ("filled", "94.5")
    assert sim.positions()[0]["qty"] == "3"


async def test_fill_verb_fills_part_of_an_order(sim: VenueSimulator) -> None:
    order = sim.place("AAPL", 10, "sell")
    sim.fill(order["id"], qty=4)
    assert sim.order(order["id"])["status"] == "partially_filled"
    assert [o["id"] for o in sim.open_orders()] == [order["id"]]
    assert sim.positions()[0]["qty"] == "-4"


async def test_place_refuses_bad_orders_like_the_api() -> None:
    sim = VenueSimulator("alpha")
    with pytest.raises(ValueError, match=r"^venue alpha: side must be buy or sell$"):
        sim.place("AAPL", 1, "hold")


async def test_sim_routes_mirror_the_test_verbs(
    client: httpx.AsyncClient, sim: VenueSimulator
) -> None:
    with trio.fail_after(5):
        placed = await client.post("/sim/orders", json=order_body(qty="2"))
        await client.get("/v2/clock")
        await client.get("/v2/clock")
        orders = (await client.get("/sim/orders")).json()
        price = await client.put("/sim/price", json={"symbol": "AAPL", "price": 89.0})
        positions = (await client.get("/sim/positions")).json()
        requests = (await client.get("/sim/requests")).json()
    assert orders == {"orders": [placed.json()]}
    assert price.json() == {"symbol": "AAPL", "price": 89.0}
    assert positions["positions"][0]["qty"] == "2"
    assert requests["requests"]["GET /v2/clock"] == 2
    assert requests["requests"]["POST /sim/orders"] == 1


async def test_unknown_route_is_404_and_wrong_method_405(client: httpx.AsyncClient) -> None:
    with trio.fail_after(5):
        missing = await client.get("/v2/watchlists")
        wrong = await client.put("/v2/clock")
        sim_missing = await client.get("/sim/nothing")
    assert missing.status_code == 404
    assert missing.json() == {"code": 40410000, "message": "endpoint not found"}
    assert wrong.status_code == 405
    assert sim_missing.json() == {"error": "endpoint not found"}


# ---- auth ----


async def test_configured_credentials_are_enforced_on_v2_only(nursery: trio.Nursery) -> None:
    sim = VenueSimulator("alpha", key_id="AKTEST1234", secret_key="s3cr3t-value")
    url = await nursery.start(serve_venue, sim)
    good = {"APCA-API-KEY-ID": "AKTEST1234", "APCA-API-SECRET-KEY": "s3cr3t-value"}
    bad = {"APCA-API-KEY-ID": "AKTEST1234", "APCA-API-SECRET-KEY": "wrong"}
    with trio.fail_after(5):
        async with httpx.AsyncClient(base_url=url) as client:
            none = await client.get("/v2/account")
            wrong = await client.get("/v2/account", headers=bad)
            right = await client.get("/v2/account", headers=good)
            sim_route = await client.get("/sim/fault")
    assert none.status_code == wrong.status_code == 401
    assert none.json() == {"code": 40110000, "message": "request is not authorized"}
    assert right.status_code == 200
    assert sim_route.status_code == 200


async def test_unconfigured_venue_takes_any_credentials(client: httpx.AsyncClient) -> None:
    headers = {"APCA-API-KEY-ID": "whatever", "APCA-API-SECRET-KEY": "anything"}
    with trio.fail_after(5):
        response = await client.get("/v2/clock", headers=headers)
    assert response.status_code == 200


async def test_half_configured_credentials_are_refused() -> None:
    with pytest.raises(ValueError, match="give both key_id and secret_key"):
        VenueSimulator("alpha", key_id="AK")


# ---- faults ----


async def test_outage_makes_every_v2_request_503(client: httpx.AsyncClient) -> None:
    with trio.fail_after(5):
        await set_fault(client, "outage")
        clock = await client.get("/v2/clock")
        cancel = await client.delete("/v2/orders")
        missing = await client.get("/v2/nothing")
        sim_route = await client.get("/sim/requests")
    assert clock.status_code == cancel.status_code == missing.status_code == 503
    assert clock.json() == {"code": 50310000, "message": "service unavailable"}
    assert sim_route.status_code == 200
    assert sim_route.json()["requests"]["DELETE /v2/orders"] == 1  # counted on arrival


async def test_hang_holds_requests_until_cleared(
    client: httpx.AsyncClient, nursery: trio.Nursery
) -> None:
    answered: list[int] = []

    async def ping() -> None:
        answered.append((await client.get("/v2/clock")).status_code)

    with trio.fail_after(5):
        await set_fault(client, "hang")
        async with trio.open_nursery() as inner:
            inner.start_soon(ping)
            inner.start_soon(ping)
            await trio.sleep(0.2)
            assert answered == []
            assert (await client.get("/sim/fault")).status_code == 200  # /sim/ still answers
            await client.delete("/sim/fault/hang")
    assert answered == [200, 200]


async def test_hang_survives_a_client_that_gives_up(client: httpx.AsyncClient) -> None:
    with trio.fail_after(5):
        await set_fault(client, "hang")
        with trio.move_on_after(0.1):
            async with httpx.AsyncClient(base_url=str(client.base_url)) as quitter:
                await quitter.get("/v2/clock")
        await client.delete("/sim/fault")
        assert (await client.get("/v2/clock")).status_code == 200


async def test_latency_delays_v2_answers_only(client: httpx.AsyncClient) -> None:
    with trio.fail_after(5):
        await set_fault(client, "latency", ms=150)
        started = trio.current_time()
        await client.get("/v2/clock")
        slow = trio.current_time() - started
        started = trio.current_time()
        await client.get("/sim/fault")
        fast = trio.current_time() - started
    assert slow >= 0.15
    assert fast < 0.15


async def test_silent_acks_create_the_order_but_never_answer(
    client: httpx.AsyncClient, sim: VenueSimulator
) -> None:
    with trio.fail_after(5):
        await set_fault(client, "silent_acks")
        with trio.move_on_after(0.3) as waited:
            await client.post("/v2/orders", json=order_body(client_order_id="ghost"))
        assert waited.cancelled_caught
        [order] = sim.open_orders()
        assert (order["client_order_id"], order["status"]) == ("ghost", "new")
        listed = await client.get("/v2/orders")  # other requests are answered
        assert [o["client_order_id"] for o in listed.json()] == ["ghost"]


async def test_reject_answers_403_and_creates_nothing(
    client: httpx.AsyncClient, sim: VenueSimulator
) -> None:
    with trio.fail_after(5):
        await set_fault(client, "reject")
        response = await client.post("/v2/orders", json=order_body())
    assert response.status_code == 403
    assert response.json() == {"code": 40310000, "message": "order rejected by venue (simulated)"}
    assert sim.orders() == []


async def test_partial_cancel_fails_a_fraction_which_stay_open(
    client: httpx.AsyncClient, sim: VenueSimulator
) -> None:
    placed = [sim.place("AAPL", 1, "buy")["id"] for _ in range(4)]
    with trio.fail_after(5):
        await set_fault(client, "partial_cancel", fraction=0.5)
        response = await client.delete("/v2/orders")
    entries = response.json()
    assert response.status_code == 207
    assert sorted(e["id"] for e in entries) == sorted(placed)
    failed = {e["id"] for e in entries if e["status"] == 500}
    assert len(failed) == 2
    assert {o["id"] for o in sim.open_orders()} == failed
    assert all(e["body"]["message"] for e in entries if e["status"] == 500)


async def test_pending_cancel_keeps_orders_open_for_its_time(
    client: httpx.AsyncClient, sim: VenueSimulator
) -> None:
    order = sim.place("AAPL", 1, "buy")
    with trio.fail_after(5):
        await set_fault(client, "pending_cancel", ms=300)
        response = await client.delete(f"/v2/orders/{order['id']}")
        assert response.status_code == 204
        listed = (await client.get("/v2/orders")).json()
        assert [(o["id"], o["status"]) for o in listed] == [(order["id"], "pending_cancel")]
        again = await client.delete("/v2/orders")  # still open, so part of a cancel-all
        assert [e["status"] for e in again.json()] == [200]
        await trio.sleep(0.35)
        assert (await client.get("/v2/orders")).json() == []
    assert sim.order(order["id"])["status"] == "canceled"


async def test_partial_fill_fills_a_fraction_at_once(
    client: httpx.AsyncClient, sim: VenueSimulator
) -> None:
    with trio.fail_after(5):
        await set_fault(client, "partial_fill", fraction=0.25)
        market = (
            await client.post(
                "/v2/orders", json=order_body(type="market", limit_price=None, qty="8")
            )
        ).json()
        resting = (await client.post("/v2/orders", json=order_body(qty="4"))).json()
    assert (market["status"], market["filled_qty"]) == ("partially_filled", "2")
    assert (resting["status"], resting["filled_qty"], resting["filled_avg_price"]) == (
        "partially_filled",
        "1",
        "90",
    )
    assert {o["id"] for o in sim.open_orders()} == {market["id"], resting["id"]}
    assert sim.positions()[0]["qty"] == "3"


async def test_faults_set_in_process_apply_too(
    client: httpx.AsyncClient, sim: VenueSimulator
) -> None:
    from simulators.venue import Outage

    sim.faults.set(Outage())
    with trio.fail_after(5):
        assert (await client.get("/v2/clock")).status_code == 503
        sim.faults.clear()
        assert (await client.get("/v2/clock")).status_code == 200


# ---- command line ----


async def test_command_line_serves_with_credentials_from_file_and_env(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("file-secret-123\n")
    env = {**os.environ, "APCA_API_KEY_ID": "AKCLI"}
    argv = [sys.executable, "-m", "simulators.venue", "--port", "0", "--name", "cli"]
    argv += ["--secret-file", str(secret_file)]
    with trio.fail_after(10):
        process = await trio.lowlevel.open_process(argv, stdout=PIPE, env=env)
        try:
            assert process.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                line += await process.stdout.receive_some(256)
            url = line.decode().strip()
            assert url.startswith("http://127.0.0.1:")
            headers = {"APCA-API-KEY-ID": "AKCLI", "APCA-API-SECRET-KEY": "file-secret-123"}
            async with httpx.AsyncClient(base_url=url) as client:
                assert (await client.get("/v2/clock")).status_code == 401
                assert (await client.get("/v2/clock", headers=headers)).status_code == 200
        finally:
            process.terminate()
            await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


def test_command_line_refuses_a_missing_secret_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--key-id", "AK", "--secret-file", "/nonexistent/secret"]) == 2
    assert "simulators.venue:" in capsys.readouterr().err


def test_command_line_refuses_a_key_without_a_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    assert main(["--key-id", "AK"]) == 2
    assert "give both key_id and secret_key" in capsys.readouterr().err
