"""A button press through the real desk (seed 01 killswitch step 01: "Hit the kill-switch
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
        [incident] = [i for i in desk.status()["incidents"] if i["class"] == "actor-failure"]
        assert incident["severity"] == "P1" and incident["scope"] == "button:gpio"
        assert incident["summary"].startswith("kill-switch button lost, the desk cannot be "
                                              "halted from it: gpio GPIO17: OSError")
        assert desk.alerts.counts["PAGE"] >= 1
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


async def test_on_loss_ignore_only_logs(caplog):
    config = GpioButtonConfig(pin=17, on_loss="ignore", allow_ignore=True)
    seen: list[object] = []

    async def kill(reason: str, *, actor: str, source: str) -> None:
        seen.append((reason, actor, source))

    async def report(item: object) -> None:
        seen.append(item)

    on_press, on_loss = desk_callbacks(config, kill=kill, report=report)
    await on_loss("gpio GPIO17: OSError")
    assert seen == [] and "on_loss = ignore" in caplog.text
    await on_press("pressed")
    assert seen == [("pressed", "button:gpio", "button")]
