"""The serial kill-switch bridges on their stand-ins (docs/hardware.md backends 2 and 3).

Modem lines: pyserial's ``loop://`` handler (RTS->CTS, DTR->DSR; a pty refuses modem
ioctls with ENOTTY). Line protocol: a pty pair with ``MicrocontrollerSim`` on the
master side, so the bridge runs pyserial's real POSIX code on the slave. Reads go
through threads or real file descriptors, so these tests run on real time with short
periods (20 ms heartbeats, 5 ms polls), every one bounded by ``fail_after``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import serial
import trio

from hardware.config import SerialLineButtonConfig, SerialModemButtonConfig
from hardware.errors import ButtonPortNotFound
from hardware.ports import resolve_port
from hardware.serial_line import SerialLineBridge
from hardware.serial_modem import ModemLineBridge
from simulators.buttons import ButtonCalls, MicrocontrollerSim, ModemButtonSim

FAST = {"reconnect_initial_s": 0.02, "reconnect_max_s": 0.1}
MODEM = SerialModemButtonConfig(port="loop://", poll_interval_s=0.005, bounce_time_s=0.01,
                                read_timeout_s=0.2, **FAST)


@asynccontextmanager
async def modem_rig(config: SerialModemButtonConfig = MODEM, *, pressed: bool = False,
                    ) -> AsyncIterator[tuple[ModemButtonSim, ModemLineBridge, ButtonCalls]]:
    calls = ButtonCalls()
    sim = ModemButtonSim(config)
    if pressed:
        sim.press()
    bridge = ModemLineBridge(config, on_press=calls.on_press, on_loss=calls.on_loss,
                             open_port=sim.open_port)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(bridge.run)
            yield sim, bridge, calls
            nursery.cancel_scope.cancel()


# --- modem lines -------------------------------------------------------------------------


async def test_modem_the_stock_loop_handler_reads_rest_then_a_press():
    """The default opener on ``loop://``: RTS asserted at open reaches CTS (NC closed)."""
    calls = ButtonCalls()
    bridge = ModemLineBridge(MODEM, on_press=calls.on_press, on_loss=calls.on_loss)
    opened: list[serial.SerialBase] = []
    default_open = bridge._open_port
    bridge._open_port = lambda: opened.append(default_open()) or opened[-1]
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(bridge.run)
            assert bridge.status()["state"] == "healthy"
            assert type(opened[0]).__module__ == "serial.urlhandler.protocol_loop"
            opened[0].rts = False  # the NC loop opens between RTS and CTS
            await calls.wait_for(presses=1)
            assert [c for _, c in calls.presses] == [
                "serial loop:// rts->cts: cts deasserted: pressed, or the NC loop is cut"]
            nursery.cancel_scope.cancel()


async def test_modem_a_button_held_at_start_is_a_press():
    async with modem_rig(pressed=True) as (_, bridge, calls):
        assert calls.presses[0][1].endswith("cut at start")
        assert bridge.status()["state"] == "pressed"


async def test_modem_release_calls_nothing_and_a_second_press_trips_again():
    async with modem_rig() as (sim, bridge, calls):
        sim.press()
        await calls.wait_for(presses=1)
        sim.release()
        await bridge.core.wait_state("healthy")
        sim.press()
        await calls.wait_for(presses=2)
        await trio.sleep(0.05)
        assert len(calls.presses) == 2 and calls.losses == []


async def test_modem_dtr_to_dsr_normally_open():
    config = SerialModemButtonConfig(port="loop://", drive="dtr", sense="dsr", wiring="no",
                                     poll_interval_s=0.005, **FAST)
    async with modem_rig(config) as (sim, bridge, calls):
        assert bridge.status()["line"] == "deasserted"
        sim.press()
        await calls.wait_for(presses=1)
        assert calls.presses[0][1] == "serial loop:// dtr->dsr: dsr asserted: pressed"


async def test_modem_unplugged_adapter_is_one_loss_until_it_is_back():
    async with modem_rig() as (sim, bridge, calls):
        sim.unplug()
        await calls.wait_for(losses=1)
        assert calls.losses[0][1] == ("serial loop:// rts->cts: SerialException: device "
                                      "disconnected (simulated unplug)")
        await trio.sleep(0.3)  # several failed reopenings: still one loss
        assert len(calls.losses) == 1 and bridge.status()["reconnects"] >= 3
        sim.replug()
        await bridge.core.wait_state("healthy")
        assert calls.presses == [] and sim.opens >= 2


async def test_modem_a_stalled_read_is_a_loss_after_its_deadline():
    """docs/hardware.md: modem-line reads can block (USB control transfers): off the trio thread,
    and bounded."""
    async with modem_rig() as (sim, _, calls):
        t0 = trio.current_time()
        sim.stall(1.0)
        await calls.wait_for(losses=1)
        assert calls.losses[0][1] == ("serial loop:// rts->cts: ButtonReadTimeout: cts read "
                                      "took longer than 0.2 s")
        assert calls.losses[0][0] - t0 < 0.2 + 0.1
        sim.stall(0.0)


def test_modem_a_device_is_found_by_usb_id():
    ports = [SimpleNamespace(vid=0x2E8A, pid=0x0005, serial_number="E66A", device="/dev/ttyACM1"),
             SimpleNamespace(vid=0x0403, pid=0x6001, serial_number="FT1", device="/dev/ttyUSB0")]
    config = SerialModemButtonConfig(usb_id="2e8a:0005")
    assert resolve_port(config, comports=lambda: ports) == "/dev/ttyACM1"
    with pytest.raises(ButtonPortNotFound, match=r"^no serial device with usb id 2e8a:0005 "
                                                  r"serial X is plugged in$"):
        resolve_port(SerialModemButtonConfig(usb_id="2e8a:0005", usb_serial="X"),
                     comports=lambda: ports)
    with pytest.raises(ButtonPortNotFound, match="set usb_serial to one of E66A, E66A"):
        resolve_port(config, comports=lambda: ports + ports[:1])


# --- line protocol -----------------------------------------------------------------------


@asynccontextmanager
async def line_rig(tmp_path: Path, *, boot_delay_s: float = 0.0, pressed: bool = False,
                   ) -> AsyncIterator[tuple[MicrocontrollerSim, SerialLineBridge, ButtonCalls]]:
    calls = ButtonCalls()
    sim = MicrocontrollerSim(tmp_path, period_s=0.02, boot_delay_s=boot_delay_s)
    config = SerialLineButtonConfig(port=str(sim.path), heartbeat_period_s=0.02,
                                    startup_grace_s=0.3, **FAST)
    bridge = SerialLineBridge(config, on_press=calls.on_press, on_loss=calls.on_loss)
    try:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                await nursery.start(sim.run)
                if pressed:
                    sim.press()
                await nursery.start(bridge.run)
                yield sim, bridge, calls
                nursery.cancel_scope.cancel()
    finally:
        sim.close()


async def test_line_healthy_start_shows_the_firmware_and_the_last_heartbeat(tmp_path):
    async with line_rig(tmp_path) as (_, bridge, calls):
        await trio.sleep(0.1)
        status = bridge.status()
        assert status["state"] == "healthy" and (calls.presses, calls.losses) == ([], [])
        assert status["last_heartbeat_age_s"] < 0.05
        assert status["mcu_presses"] == 0 and status["device"].endswith("-if00")


async def test_line_a_press_line_trips_at_once_and_once(tmp_path):
    async with line_rig(tmp_path) as (sim, bridge, calls):
        t0 = trio.current_time()
        sim.press()
        await calls.wait_for(presses=1)
        assert calls.presses[0][0] - t0 < 0.02  # the PRESS line, not the next heartbeat
        assert calls.presses[0][1].endswith(": PRESS line (press #1)")
        await trio.sleep(0.1)  # PRESSED heartbeats: still one press
        assert len(calls.presses) == 1 and bridge.status()["state"] == "pressed"
        sim.release()
        await bridge.core.wait_state("healthy")
        sim.press()
        await calls.wait_for(presses=2)
        assert calls.presses[1][1].endswith("(press #2)") and calls.losses == []


async def test_line_a_button_held_at_start_is_a_press(tmp_path):
    async with line_rig(tmp_path, pressed=True) as (_, bridge, calls):
        assert calls.presses[0][1].endswith(": heartbeat says PRESSED at start")
        assert bridge.status()["first_trip"]["kind"] == "press"


async def test_line_a_missing_heartbeat_is_one_loss_after_three_periods(tmp_path):
    async with line_rig(tmp_path) as (sim, bridge, calls):
        await trio.sleep(0.05)
        t0 = trio.current_time()
        sim.stop_heartbeat()
        await calls.wait_for(losses=1)
        delay = calls.losses[0][0] - t0
        assert 0.06 - 0.02 <= delay < 0.06 + 0.1  # timeout after the last heartbeat
        assert calls.losses[0][1].endswith(": ButtonLinkLost: no heartbeat for 60 ms "
                                           "(3 x 20 ms)")
        await trio.sleep(0.5)  # reopenings time out in their grace: still one loss
        assert len(calls.losses) == 1
        sim.start_heartbeat()
        await bridge.core.wait_state("healthy")
        assert calls.presses == []


@pytest.mark.parametrize(("fault", "cause"), [
    (lambda sim: sim.skip_sequence(), "ButtonLinkLost: sequence gap: expected "),
    (lambda sim: sim.fault(), "ButtonLinkLost: the microcontroller reports FAULT"),
    (lambda sim: sim.send_noise(), "ButtonLinkLost: garbled line b'DKS1,PRESS,\\x07\\xff*12'"),
    (lambda sim: sim.send_noise(b"DKS1,PRESS,7,1*0000\n"), "ButtonLinkLost: garbled line "),
    (lambda sim: sim.restart(), "ButtonLinkLost: sequence gap: expected "),
])
async def test_line_faults_are_one_loss_and_never_a_press(tmp_path, fault, cause):
    async with line_rig(tmp_path) as (sim, bridge, calls):
        fault(sim)
        await calls.wait_for(losses=1)
        assert cause in calls.losses[0][1]
        if sim.state == "FAULT":
            sim.state = "OK"
        await bridge.core.wait_state("healthy")
        assert calls.presses == [] and len(calls.losses) == 1


async def test_line_a_lost_press_line_is_caught_by_the_press_counter(tmp_path):
    async with line_rig(tmp_path) as (sim, _, calls):
        sim.lose_next_press_line()
        sim.press()
        await calls.wait_for(presses=1)
        assert calls.presses[0][1].endswith("press counter went 0 -> 1 without a PRESS "
                                            "line (a press line was lost)")
        # ...before the gap in the sequence it left is reported, as a loss of its own:
        await calls.wait_for(losses=1)
        assert "sequence gap" in calls.losses[0][1]
        assert calls.presses[0][0] <= calls.losses[0][0]
        # The bridge reopens the port; the button is still held, so it presses again
        # (docs/hardware.md: a button still held after a reconnection keeps the desk halted).
        await calls.wait_for(presses=2)
        assert calls.presses[1][1].endswith("heartbeat says PRESSED at start")


async def test_line_a_press_lost_while_disconnected_trips_on_reconnection(tmp_path):
    async with line_rig(tmp_path) as (sim, _, calls):
        sim.stop_heartbeat()
        await calls.wait_for(losses=1)
        sim.lose_next_press_line()
        sim.press()
        sim.state = "OK"  # pressed and released while nobody listened
        sim.start_heartbeat()
        await calls.wait_for(presses=1)
        assert "press counter went 0 -> 1" in calls.presses[0][1]


async def test_line_unplug_is_an_io_loss_and_the_device_is_found_again_by_id(tmp_path):
    async with line_rig(tmp_path) as (sim, bridge, calls):
        before = sim.path.resolve()
        sim.unplug()
        await calls.wait_for(losses=1)
        assert "SerialException" in calls.losses[0][1] or "OSError" in calls.losses[0][1]
        await trio.sleep(0.2)
        sim.replug()
        assert sim.path.resolve() != before  # a new /dev/pts/N behind the same by-id link
        await bridge.core.wait_state("healthy")
        status = bridge.status()
        assert status["reconnects"] >= 1 and len(calls.losses) == 1 and calls.presses == []


@pytest.mark.parametrize(("boot_delay_s", "lost"), [(0.15, False), (0.6, True)])
async def test_line_start_up_grace(tmp_path, boot_delay_s, lost):
    """docs/hardware.md: opening the port may reset the microcontroller (DTR)."""
    async with line_rig(tmp_path, boot_delay_s=boot_delay_s) as (_, bridge, calls):
        if lost:
            assert calls.losses[0][1].endswith(
                ": ButtonLinkLost: no heartbeat within the start-up grace of 0.3 s")
            await bridge.core.wait_state("healthy")
        else:
            assert bridge.status()["state"] == "healthy" and calls.losses == []


async def test_line_the_lamp_mode_reaches_the_box(tmp_path):
    async with line_rig(tmp_path) as (sim, bridge, _):
        bridge.set_lamp("HALTED")
        while sim.lamp != "HALTED":  # noqa: ASYNC110 - set by the sim's pty reader
            await trio.sleep(0.01)
        assert bridge.status()["lamp"] == "HALTED"
