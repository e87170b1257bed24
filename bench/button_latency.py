"""Kill-switch button latency: the bridge's share of "press -> cancel-all" (issue 4).

What is timed, in one process, with ``time.perf_counter_ns`` (CLOCK_MONOTONIC):

- ``gpio``: from just before ``drive_high()`` on a MockFactory pin, called from a plain
  thread standing in for gpiozero's GPIO thread, to the first line of ``on_press``
  running in trio. It holds gpiozero's event dispatch, our callback, the
  ``TrioToken.run_sync_soon`` hop into trio and the task start. (Config: bounce 0 and a
  1 ms poll, only so the latch re-arms quickly between presses.)
- ``serial``: from just before the simulator's ``os.write`` of the PRESS line to the pty
  master, to ``on_press`` running in trio: the pty, epoll wake-up, pyserial's read, the
  CRC and parse, and the task start.
- ``loss``: heartbeat-loss detection: from the last heartbeat written to ``on_loss``,
  against the configured timeout (3 x a 10 ms period = 30 ms).

Not measured here: ``Desk.kill`` itself and the cancel-all writes (``bench/kill_latency.py``
measures that path from the control socket). The issue's end-to-end target is p99 < 3 ms
from the edge to the cancel-all on every venue.

Run: ``.venv/bin/python bench/button_latency.py [--presses 1000] [--losses 20]``.
It stops by itself: every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import _harness as h
import numpy as np
import trio

from hardware.config import GpioButtonConfig, SerialLineButtonConfig
from hardware.gpio import GpioBridge
from hardware.serial_line import SerialLineBridge
from simulators.buttons import GpioButtonSim, MicrocontrollerSim, sim_pin_factory

WARMUP = 20


def stats(samples_ns: list[int]) -> dict[str, float]:
    a = np.asarray(samples_ns, dtype=float) / 1e6
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3), "max_ms": round(float(a.max()), 3)}


async def bench_gpio(presses: int) -> dict[str, float]:
    factory = sim_pin_factory()
    config = GpioButtonConfig(pin=17, bounce_time_s=0.0, poll_interval_s=0.001)
    sim = GpioButtonSim(factory, config)
    pressed = threading.Event()
    stamps: list[int] = []

    async def on_press(cause: str) -> None:
        stamps.append(time.perf_counter_ns())
        pressed.set()

    async def on_loss(cause: str) -> None:
        raise SystemExit(f"gpio bench: unexpected loss: {cause}")

    bridge = GpioBridge(config, on_press=on_press, on_loss=on_loss, pin_factory=factory)
    latencies: list[int] = []

    def drive() -> None:  # the "GPIO thread"
        for i in range(presses + WARMUP):
            deadline = time.monotonic() + 2.0
            while bridge.core.pressed:  # re-armed after the release (next 1 ms poll)
                if time.monotonic() > deadline:
                    raise SystemExit("gpio bench: the latch did not re-arm")
                time.sleep(0.0002)
            pressed.clear()
            t0 = time.perf_counter_ns()
            sim.press()
            if not pressed.wait(2.0):
                raise SystemExit("gpio bench: on_press never ran")
            if i >= WARMUP:
                latencies.append(stamps[-1] - t0)
            sim.release()

    async with trio.open_nursery() as nursery:
        await nursery.start(bridge.run)
        await trio.to_thread.run_sync(drive)
        nursery.cancel_scope.cancel()
    factory.close()
    return stats(latencies)


async def bench_serial(presses: int, losses: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        sim = MicrocontrollerSim(Path(tmp), period_s=0.01)
        config = SerialLineButtonConfig(port=str(sim.path), heartbeat_period_s=0.01,
                                        startup_grace_s=1.0, reconnect_initial_s=0.01,
                                        reconnect_max_s=0.05)
        done = trio.Event()
        stamps: list[int] = []

        async def on_press(cause: str) -> None:
            stamps.append(time.perf_counter_ns())
            done.set()

        async def on_loss(cause: str) -> None:
            stamps.append(time.perf_counter_ns())
            done.set()

        bridge = SerialLineBridge(config, on_press=on_press, on_loss=on_loss)
        press_ns: list[int] = []
        loss_ns: list[int] = []
        with trio.fail_after(60 + presses * 0.05 + losses):
            async with trio.open_nursery() as nursery:
                await nursery.start(sim.run)
                await nursery.start(bridge.run)
                for i in range(presses + WARMUP):
                    await bridge.core.wait_state("healthy")
                    done = trio.Event()
                    sim.press()
                    await done.wait()
                    if i >= WARMUP:
                        press_ns.append(stamps[-1] - sim.last_press_ns)
                    sim.release()
                for _ in range(losses):
                    await bridge.core.wait_state("healthy")
                    await trio.sleep(0.013)  # an arbitrary phase against the heartbeats
                    done = trio.Event()
                    sim.stop_heartbeat()
                    last_hb = sim.last_write_ns
                    await done.wait()
                    loss_ns.append(stamps[-1] - last_hb)
                    sim.start_heartbeat()
                nursery.cancel_scope.cancel()
        sim.close()
    loss = stats(loss_ns)
    loss["timeout_ms"] = config.missing_factor * config.heartbeat_period_s * 1000
    return {"serial": stats(press_ns), "loss": loss}


async def main(args: argparse.Namespace) -> None:
    result = {"machine": h.machine(), "gpio": await bench_gpio(args.presses)}
    result.update(await bench_serial(args.presses, args.losses))
    print(json.dumps(result, indent=2))
    print()
    print("| path | n | p50 | p99 | max |")
    print("|---|---|---|---|---|")
    for key, label in (("gpio", "GPIO edge (MockFactory, from a thread) -> on_press"),
                       ("serial", "PRESS line written to the pty -> on_press"),
                       ("loss", "last heartbeat -> on_loss (timeout 30 ms)")):
        r = result[key]
        print(f"| {label} | {r['n']} | {r['p50_ms']:.3f} ms | {r['p99_ms']:.3f} ms | "
              f"{r['max_ms']:.3f} ms |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presses", type=int, default=1000)
    parser.add_argument("--losses", type=int, default=20)
    trio.run(main, parser.parse_args())
