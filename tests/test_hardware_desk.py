"""A button press through the real desk (playbook 01 killswitch step 01: "Hit the kill-switch
endpoint or physical button — both are equivalent").

The bridge is wired the way the integrator wires it (``desk_callbacks`` over
``Desk.kill`` and ``Desk.report``) on a real desk with two venue simulators on
127.0.0.1: a press must open a ``button-press`` P0 and reach every venue's cancel-all.
"""

from __future__ import annotations

import trio

from hardware.bridges import create_bridge, desk_callbacks
from hardware.config import GpioButtonConfig
from hardware.lamp import lamp_mode
from simulators.buttons import GpioButtonSim

from .deskenv import open_desk, wait_for


async def test_a_press_halts_the_desk_like_deskctl_kill(tmp_path, factory):
    config = GpioButtonConfig(pin=17)
    sim = GpioButtonSim(factory, config)
    async with open_desk(tmp_path) as env:
        desk = env.desk
        on_press, on_loss = desk_callbacks(config, kill=desk.kill, report=desk.report)
        bridge = create_bridge(config, on_press=on_press, on_loss=on_loss,
                               wall_clock=desk.wall, pin_factory=factory)
        await env.nursery.start(bridge.run)
        assert lamp_mode(desk.status()) == "NORMAL"
        sim.press()
        await wait_for(lambda: all(s.requests["DELETE /v2/orders"] for s in env.sims.values()))
        kill = desk.status()["kill"]
        assert kill["latched"] and kill["source"] == "button" and kill["by"] == "button:gpio"
        assert kill["reason"] == "gpio 17: contact opened: pressed, or the NC loop is cut (edge)"
        [incident] = [i for i in desk.status()["incidents"] if i["class"] == "button-press"]
        assert incident["severity"] == "P0"
        sim.release()  # releasing resumes nothing
        await trio.sleep(0.2)
        assert desk.status()["mode"] == "HALTED"
        assert bridge.status()["last_heartbeat_wall"] is not None


async def test_a_lost_button_with_on_loss_page_opens_a_p1(tmp_path, factory):
    config = GpioButtonConfig(pin=17, on_loss="page")
    sim = GpioButtonSim(factory, config)
    async with open_desk(tmp_path) as env:
        desk = env.desk
        on_press, on_loss = desk_callbacks(config, kill=desk.kill, report=desk.report)
        bridge = create_bridge(config, on_press=on_press, on_loss=on_loss,
                               pin_factory=factory)
        await env.nursery.start(bridge.run)
        sim.break_pin()
        await wait_for(lambda: desk.status()["mode"] == "THROTTLED")
        [incident] = [i for i in desk.status()["incidents"]
                      if i["class"] == "button-degraded"]
        assert incident["severity"] == "P1" and incident["scope"] == "button:gpio"
        assert incident["summary"].startswith("kill-switch button lost, the desk cannot be "
                                              "halted from it: gpio GPIO17: OSError")
        # the page is a slow effect, after the journal write that made the mode
        await wait_for(lambda: desk.alerts.counts["PAGE"] >= 1)
        assert not desk.status()["kill"]["latched"]


async def test_a_lost_button_by_default_kills(tmp_path, factory):
    config = GpioButtonConfig(pin=17)
    sim = GpioButtonSim(factory, config)
    sim.break_pin()
    async with open_desk(tmp_path) as env:
        desk = env.desk
        on_press, on_loss = desk_callbacks(config, kill=desk.kill, report=desk.report)
        await env.nursery.start(create_bridge(config, on_press=on_press, on_loss=on_loss,
                                              pin_factory=factory).run)
        await wait_for(lambda: desk.status()["kill"]["latched"])
        assert desk.status()["kill"]["reason"].startswith("kill-switch button lost: gpio ")
        # A cut wire is not a press: the incident, the postmortem and the audit say so.
        [incident] = desk.status()["incidents"]
        assert incident["class"] == "button-lost" and incident["severity"] == "P0"
        assert incident["summary"].startswith("kill-switch pulled: kill-switch button lost: ")
        assert desk.status()["kill"]["source"] == "button"


async def test_on_loss_ignore_only_logs(caplog):
    config = GpioButtonConfig(pin=17, on_loss="ignore", allow_ignore=True)
    seen: list[object] = []

    async def kill(reason: str, *, actor: str, source: str,
                   incident_class: str | None = None) -> None:
        seen.append((reason, actor, source))

    async def report(item: object) -> None:
        seen.append(item)

    on_press, on_loss = desk_callbacks(config, kill=kill, report=report)
    await on_loss("gpio GPIO17: OSError")
    assert seen == [] and "on_loss = ignore" in caplog.text
    await on_press("pressed")
    assert seen == [("pressed", "button:gpio", "button")]


async def test_a_serial_line_box_without_a_gpio_lamp_gets_the_lamp_lines(tmp_path):
    """The usual USB box on a host with no GPIO: its LEDs follow the desk from the
    LAMP lines, with no [button.lamp] configured."""
    from hardware.config import SerialLineButtonConfig
    from simulators.buttons import MicrocontrollerSim

    sim = MicrocontrollerSim(tmp_path, period_s=0.02)
    config = SerialLineButtonConfig(port=str(sim.path), heartbeat_period_s=0.02,
                                    startup_grace_s=0.3, reconnect_initial_s=0.02,
                                    reconnect_max_s=0.1)
    assert not config.lamp.enabled
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as sims:
                await sims.start(sim.run)
                async with open_desk(tmp_path, ("alpha",), button=config) as env:
                    await wait_for(lambda: sim.lamp == "NORMAL", 5)
                    await env.request("kill", reason="lamp drill")
                    await wait_for(lambda: sim.lamp is not None and
                                   sim.lamp.startswith("HALTED"), 5)
                    assert env.desk.status()["button"]["lamp"] == sim.lamp
                sims.cancel_scope.cancel()
    finally:
        sim.close()
