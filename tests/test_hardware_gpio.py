"""The GPIO kill-switch bridge on gpiozero's MockFactory (docs/hardware.md backend 1).

Each test gets its own ``MockFactory`` of ``SimPin``s, passed to the bridge explicitly
(gpiozero's global ``Device.pin_factory`` is never touched; gpiozero #1087: pins of a
shared factory leak between tests). MockFactory fires edges in the caller's thread, so
most tests run on trio's autojump clock and assert exact virtual times; the one that
drives the pin from another thread uses real time bounded by ``fail_after``.
"""

from __future__ import annotations

import pytest
import trio
from gpiozero.pins.mock import MockFactory

from hardware.config import GpioButtonConfig
from hardware.gpio import GpioBridge
from simulators.buttons import ButtonCalls, GpioButtonSim


async def start(nursery: trio.Nursery, config: GpioButtonConfig, factory: MockFactory | None,
                calls: ButtonCalls) -> GpioBridge:
    bridge = GpioBridge(config, on_press=calls.on_press, on_loss=calls.on_loss,
                        pin_factory=factory)
    await nursery.start(bridge.run)
    return bridge


CONFIG = GpioButtonConfig(pin=17)


async def test_healthy_start_is_started_at_the_first_read_and_calls_nothing(
        factory, autojump_clock):
    calls = ButtonCalls()
    sim = GpioButtonSim(factory, CONFIG)
    async with trio.open_nursery() as nursery:
        bridge = await start(nursery, CONFIG, factory, calls)
        assert trio.current_time() == 0.0
        assert bridge.status()["state"] == "healthy"
        await trio.sleep(1.0)
        status = bridge.status()
        assert (calls.presses, calls.losses) == ([], [])
        assert status["channels"] == ["closed"]
        assert status["backend"] == "gpio" and status["device"] == "GPIO17"
        assert 0.98 <= status["last_heartbeat"] <= 1.0  # read every poll (20 ms)
        assert status["first_trip"] is None
        assert sim.pins[0].state is False  # NC to GND under the pull-up: low at rest
        nursery.cancel_scope.cancel()


async def test_the_first_edge_trips_once_and_bounce_after_it_is_ignored(
        factory, autojump_clock):
    calls = ButtonCalls()
    sim = GpioButtonSim(factory, CONFIG)
    async with trio.open_nursery() as nursery:
        bridge = await start(nursery, CONFIG, factory, calls)
        await trio.sleep(0.5)
        sim.press()
        sim.bounce(5)
        await trio.sleep(0.001)
        assert calls.presses == [
            (0.5, "gpio 17: contact opened: pressed, or the NC loop is cut (edge)")]
        await trio.sleep(1.0)
        assert len(calls.presses) == 1 and calls.losses == []
        status = bridge.status()
        assert status["state"] == "pressed" and status["presses"] == 1
        assert status["first_trip"]["cause"] == calls.presses[0][1]
        assert status["edges"] >= 6
        nursery.cancel_scope.cancel()


async def test_a_button_held_at_start_is_a_press(factory, autojump_clock):
    """docs/hardware.md: gpiozero fires no callback for the level at start, so it is read."""
    calls = ButtonCalls()
    sim = GpioButtonSim(factory, CONFIG)
    sim.press()
    async with trio.open_nursery() as nursery:
        bridge = await start(nursery, CONFIG, factory, calls)
        await trio.lowlevel.checkpoint()
        assert calls.presses == [
            (0.0, "gpio 17: contact opened: pressed, or the NC loop is cut (at start)")]
        assert bridge.status()["state"] == "pressed"
        nursery.cancel_scope.cancel()


async def test_release_calls_nothing_and_rearms_only_after_the_bounce_time(
        factory, autojump_clock):
    calls = ButtonCalls()
    sim = GpioButtonSim(factory, CONFIG)
    async with trio.open_nursery() as nursery:
        bridge = await start(nursery, CONFIG, factory, calls)
        sim.press()
        await trio.sleep(0.2)
        sim.release()
        await trio.sleep(0.03)  # < bounce_time_s 0.05: still latched
        assert bridge.status()["state"] == "pressed"
        sim.press()  # chatter on release: not a second press
        sim.release()
        await trio.sleep(0.2)
        assert bridge.status()["state"] == "healthy"
        assert len(calls.presses) == 1
        sim.press()
        await trio.sleep(0.001)
        assert len(calls.presses) == 2 and calls.presses[1][0] == pytest.approx(0.43)
        assert calls.losses == []
        nursery.cancel_scope.cancel()


async def test_a_missed_edge_is_caught_by_the_poll_within_one_interval(
        factory, autojump_clock):
    calls = ButtonCalls()
    sim = GpioButtonSim(factory, CONFIG)
    async with trio.open_nursery() as nursery:
        await start(nursery, CONFIG, factory, calls)
        await trio.sleep(0.005)
        sim.press(fire_edge=False)
        await trio.sleep(0.1)
        [(at, cause)] = calls.presses
        assert 0.005 < at <= 0.005 + CONFIG.poll_interval_s
        assert cause.endswith("(seen by the poll, the edge was missed)")
        nursery.cancel_scope.cancel()


async def test_a_cut_wire_on_nc_reads_as_a_press(factory, autojump_clock):
    calls = ButtonCalls()
    sim = GpioButtonSim(factory, CONFIG)
    async with trio.open_nursery() as nursery:
        await start(nursery, CONFIG, factory, calls)
        sim.cut_wire()
        await trio.sleep(0.001)
        assert [c for _, c in calls.presses] == [
            "gpio 17: contact opened: pressed, or the NC loop is cut (edge)"]
        nursery.cancel_scope.cancel()


async def test_no_wiring_trips_on_closing_and_cannot_see_a_cut_wire(factory, autojump_clock):
    """Why NC is the default (docs/hardware.md): an NO loop that is cut looks like rest."""
    config = GpioButtonConfig(pin=17, wiring="no")
    calls = ButtonCalls()
    sim = GpioButtonSim(factory, config)
    async with trio.open_nursery() as nursery:
        bridge = await start(nursery, config, factory, calls)
        sim.cut_wire()
        await trio.sleep(1.0)
        assert calls.presses == [] and bridge.status()["state"] == "healthy"
        sim.mend_wire()
        sim.press()
        await trio.sleep(0.001)
        assert [c for _, c in calls.presses] == ["gpio 17: contact closed: pressed (edge)"]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("config", [
    GpioButtonConfig(pin=17, pull="down"),
    GpioButtonConfig(pin=27, pull="floating", active_state=True),
], ids=["pull-down", "floating"])
async def test_pull_down_and_floating_wiring_read_the_right_level(
        factory, autojump_clock, config):
    calls = ButtonCalls()
    sim = GpioButtonSim(factory, config)
    async with trio.open_nursery() as nursery:
        bridge = await start(nursery, config, factory, calls)
        assert bridge.status()["state"] == "healthy"
        sim.press()
        await trio.sleep(0.001)
        assert len(calls.presses) == 1
        nursery.cancel_scope.cancel()


async def test_a_pin_error_is_one_loss_then_reconnects_with_backoff(factory, autojump_clock):
    calls = ButtonCalls()
    sim = GpioButtonSim(factory, CONFIG)
    async with trio.open_nursery() as nursery:
        bridge = await start(nursery, CONFIG, factory, calls)
        await trio.sleep(0.11)  # between two polls
        sim.break_pin()
        await trio.sleep(3.0)
        [(at, cause)] = calls.losses
        assert 0.11 < at <= 0.11 + CONFIG.poll_interval_s
        assert cause == "gpio GPIO17: OSError: [Errno 5] Input/output error (simulated)"
        status = bridge.status()
        # 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s of backoff fit in 3 s: five retries, one loss.
        assert status["state"] == "lost" and status["reconnects"] == 4
        assert status["last_error"] == cause
        sim.repair_pin()
        await trio.sleep(3.2)
        assert bridge.status()["state"] == "healthy"
        assert len(calls.losses) == 1 and calls.presses == []
        nursery.cancel_scope.cancel()


async def test_a_pin_error_at_start_starts_the_bridge_as_lost(factory, autojump_clock):
    calls = ButtonCalls()
    sim = GpioButtonSim(factory, CONFIG)
    sim.break_pin()
    async with trio.open_nursery() as nursery:
        bridge = await start(nursery, CONFIG, factory, calls)
        assert trio.current_time() == 0.0
        assert bridge.status()["state"] == "lost" and len(calls.losses) == 1
        nursery.cancel_scope.cancel()


DUAL = GpioButtonConfig(pin=17, second_pin=27)


async def test_two_nc_channels_opening_together_are_one_press(factory, autojump_clock):
    calls = ButtonCalls()
    sim = GpioButtonSim(factory, DUAL)
    async with trio.open_nursery() as nursery:
        bridge = await start(nursery, DUAL, factory, calls)
        assert bridge.status()["device"] == "GPIO17+GPIO27"
        sim.press()
        await trio.sleep(1.0)
        assert [c for _, c in calls.presses] == [
            "gpio 17: contact opened: pressed, or the NC loop is cut (edge)"]
        assert calls.losses == [] and bridge.status()["channels"] == ["open", "open"]
        nursery.cancel_scope.cancel()


async def test_a_welded_channel_still_trips_then_the_disagreement_is_a_loss(
        factory, autojump_clock):
    calls = ButtonCalls()
    sim = GpioButtonSim(factory, DUAL)
    async with trio.open_nursery() as nursery:
        bridge = await start(nursery, DUAL, factory, calls)
        sim.weld(0)
        sim.press()
        await trio.sleep(0.5)
        assert [c for _, c in calls.presses] == [
            "gpio 27: contact opened: pressed, or the NC loop is cut (edge)"]
        [(at, cause)] = calls.losses
        # The poll notices the disagreement, then waits it out: 0.1 s after that poll.
        assert DUAL.discrepancy_s <= at <= DUAL.discrepancy_s + 2 * DUAL.poll_interval_s
        assert cause.startswith("gpio GPIO17+GPIO27: channels disagree for 0.1")
        assert cause.endswith("(first closed, second open): a contact or a wire is broken")
        status = bridge.status()
        assert status["first_trip"]["kind"] == "press"  # the first cause is kept
        assert status["last_trip"]["kind"] == "loss" and status["state"] == "lost"
        nursery.cancel_scope.cancel()


async def test_an_edge_from_the_gpio_thread_reaches_trio(factory):
    """The real hop: gpiozero's thread -> run_sync_soon -> on_press in a trio task."""
    calls = ButtonCalls()
    sim = GpioButtonSim(factory, CONFIG)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await start(nursery, CONFIG, factory, calls)
            await trio.to_thread.run_sync(sim.press)
            await calls.wait_for(presses=1)
            assert calls.presses[0][1].endswith("(edge)")
            nursery.cancel_scope.cancel()


def test_an_edge_after_the_run_has_ended_is_dropped(factory):
    """docs/hardware.md: an edge after the trio run ends must not raise in gpiozero's thread."""
    calls = ButtonCalls()
    GpioButtonSim(factory, CONFIG)
    handlers = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            bridge = await start(nursery, CONFIG, factory, calls)
            handlers.append(bridge._buttons[0].when_deactivated)
            nursery.cancel_scope.cancel()

    trio.run(main)
    handlers[0]()  # RunFinishedError inside, swallowed
    assert calls.presses == []


async def test_a_failing_on_press_is_counted_and_the_bridge_keeps_watching(
        factory, autojump_clock):
    calls = ButtonCalls()

    async def broken(cause: str) -> None:
        await calls.on_press(cause)
        raise RuntimeError("journal full")

    sim = GpioButtonSim(factory, CONFIG)
    bridge = GpioBridge(CONFIG, on_press=broken, on_loss=calls.on_loss, pin_factory=factory)
    async with trio.open_nursery() as nursery:
        await nursery.start(bridge.run)
        sim.press()
        await trio.sleep(0.1)
        sim.release()
        await trio.sleep(0.2)
        sim.press()
        await trio.sleep(0.1)
        assert len(calls.presses) == 2 and bridge.status()["callback_errors"] == 2
        nursery.cancel_scope.cancel()


async def test_a_pin_factory_named_in_config_is_loaded_and_owned(autojump_clock):
    """pin_factory = "mock": an unwired input floats to its pull-up, an open NC loop."""
    config = GpioButtonConfig(pin=17, pin_factory="mock")
    calls = ButtonCalls()
    async with trio.open_nursery() as nursery:
        bridge = await start(nursery, config, None, calls)
        assert [c for _, c in calls.presses] == [
            "gpio 17: contact opened: pressed, or the NC loop is cut (at start)"]
        nursery.cancel_scope.cancel()
    assert bridge._owned_factory is None  # closed with the device
