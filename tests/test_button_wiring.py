"""A configured button is part of the desk: a press halts it, status shows the bridge,
and the status lamp follows the mode (docs/hardware.md)."""

from __future__ import annotations

from pathlib import Path

import trio
from gpiozero.pins.mock import MockFactory

from hardware.config import GpioButtonConfig, LampConfig
from simulators.buttons import GpioButtonSim

from .deskenv import open_desk, wait_for


async def test_a_configured_button_halts_the_desk_and_the_lamp_turns_red(
    tmp_path: Path, factory: MockFactory
) -> None:
    button = GpioButtonConfig(pin=17, lamp=LampConfig(green=5, amber=6, red=13))
    sim = GpioButtonSim(factory, button)
    with trio.fail_after(10):
        async with open_desk(tmp_path, pin_factory=factory, button=button) as env:
            desk = env.desk
            await wait_for(lambda: desk.status()["button"]["state"] == "healthy")
            await wait_for(lambda: desk.lamp is not None and factory.pin(5).state)
            sim.press()
            await wait_for(lambda: desk.state.kill.latched, 2)
            await wait_for(lambda: all(s.requests["DELETE /v2/orders"]
                                       for s in env.sims.values()))
            st = await env.request("status")
            assert st["kill"]["source"] == "button" and st["kill"]["by"] == "button:gpio"
            assert st["button"]["state"] == "pressed"
            assert [i["class"] for i in st["incidents"]] == ["button-press"]
            await wait_for(lambda: not factory.pin(5).state, 2)  # green off
            assert desk.actor_status["button:gpio"].state == "running"
            sim.release()
            await trio.sleep(0.3)
            assert desk.state.mode == "HALTED"  # releasing resumes nothing


async def test_the_demo_button_is_pressed_over_http(factory: MockFactory) -> None:
    import httpx

    from simulators.button_http import ButtonApp

    sim = GpioButtonSim(factory, GpioButtonConfig(pin=17))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=ButtonApp(sim)),
                                 base_url="http://button.sim") as client:
        r = await client.put("/sim/button", json={"action": "press"})
        assert r.status_code == 200 and r.json()["pressed"] is True and sim.pressed
        r = await client.put("/sim/button", json={"action": "cut"})
        assert r.json()["wire_cut"] is True
        r = await client.put("/sim/button", json={"action": "boom"})
        assert r.status_code == 400 and "Invalid enum value 'boom'" in r.json()["error"]
        assert (await client.get("/elsewhere")).status_code == 404


async def test_the_demo_inference_worker_answers_and_changes_model() -> None:
    import httpx

    from simulators.inference import InferenceWorker

    worker = InferenceWorker("sha256:m1")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=worker),
                                 base_url="http://worker.sim") as client:
        r = await client.get("/healthz")
        assert r.status_code == 200 and r.json()["model_hash"] == "sha256:m1"
        await client.put("/sim/healthz", json={"model_hash": "sha256:rogue"})
        assert (await client.get("/healthz")).json()["model_hash"] == "sha256:rogue"
        await client.put("/sim/healthz", json={"down": True})
        assert (await client.get("/healthz")).status_code == 503
        r = await client.put("/sim/healthz", json={"down": "maybe"})
        assert r.status_code == 400
