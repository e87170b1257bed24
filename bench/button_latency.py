"""Kill-switch button latency (docs/hardware.md): the bridge's share, and the whole
press -> cancel-all.

Two modes.

``--mode bridge`` (the default): the bridge's share only, in one process, with
``time.perf_counter_ns`` (CLOCK_MONOTONIC):

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

``--mode e2e``: the issue's target, p99 < 3 ms from the press to the cancel-all request
arriving at every one of 3 venues. The daemon runs in this process (``serve_desk`` with
a ``[button]`` section and ``pin_factory``: MockFactory pins exist only in-process), with
its real wiring: journal, warm cancel lines, control socket, the product's logging (to a
file, as the daemon's stderr would be). The 3 venues are ``bench/h11_venue.py``
processes on 127.0.0.1; each stamps the arrival of ``DELETE /v2/orders`` with
``time.monotonic_ns()`` (CLOCK_MONOTONIC, one clock for every process on Linux) and sends
the stamp to a datagram socket. Per path, ``--presses`` measured presses after
``--warmup`` presses not counted; the button config is the product's default.

- ``gpio``: t0 is ``time.monotonic_ns()`` just before ``GpioButtonSim.press()``, called
  from a plain thread of this process (as lgpio's thread would call back).
- ``serial``: the microcontroller simulator (``MicrocontrollerSim``, period 100 ms, the
  product default) runs in its own process on a pty pair; t0 is its
  ``perf_counter_ns()`` (also CLOCK_MONOTONIC) just before the PRESS line is written.

latency of one press = max over the 3 venues of (arrival - t0). Between presses the latch
is released the real way, over the control socket: the ``button-press`` incident is
resolved with a root cause, ``reconcile`` (clean), ``resume``; then the button is
released and the bridge must report ``healthy`` (re-armed) before the next press. The
driver sleeps ``--settle-ms`` after each press before it reads anything, so this
process's bench code does not compete with the daemon inside the measured window.

Split of each press (bench instrumentation, a clock read each): t0 -> ``on_press``
starts (the bridge), -> the last venue's cancel-all written (``Desk.kill``, ``apply``,
``KillSwitch.trip``, which writes every venue's request into its warm line's socket in
one synchronous pass: the clock is read as each ``WarmCancelLine.send_cancel_nowait``
returns True, i.e. after its ``os.write``), -> the last venue parsed the DELETE
(loopback, the venue's wake-up and parse). A press where a line could not write at once
(not ready: the venue's cancel then goes by ``cancel_all`` or httpx, whose write this
instrumentation does not see) has no such split; it is counted. Also counted: presses
whose 3 cancels all went out on the warm lines (the others fell back to httpx). The
config differs from the defaults in one key: ``[alerts] spam_threshold`` is raised, since
a thousand P0 pages in two minutes would otherwise open an alerts-spam P1 and every
resume would leave the desk THROTTLED.

Where the time goes (each of these changes the timing a little; not numbers of record):
``--perf`` records this process's socket syscalls (``write``: the warm lines' ``os.write``;
``sendto``: ``send_all`` and httpx), recognises the DELETEs by their connection's fd and
their size, and splits each press at the first and last DELETE written; ``--sched`` records every
context switch on the machine and says, per press, how long the daemon's trio thread was
on a CPU, off it asleep, or runnable but preempted, and what ran meanwhile; ``--steps``
records every trio task step and prints the timeline of the median press.

Run: ``.venv/bin/python bench/button_latency.py [--presses 1000] [--losses 20]`` or
``.venv/bin/python bench/button_latency.py --mode e2e [--presses 1000] [--paths gpio,serial]``.
It stops by itself: every wait is bounded, and ``--max-seconds`` bounds each path.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import _harness as h
import msgspec
import numpy as np
import trio

from hardware.config import GpioButtonConfig, SerialLineButtonConfig
from hardware.gpio import GpioBridge
from hardware.serial_line import SerialLineBridge
from simulators.buttons import GpioButtonSim, MicrocontrollerSim, sim_pin_factory
from supervisor.config import load_config
from supervisor.ops.logs import setup_logging
from supervisor.runtime.daemon import serve_desk
from supervisor.runtime.desk import Desk

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


async def bridge_main(args: argparse.Namespace) -> None:
    result: dict[str, Any] = {"machine": h.machine(), "gpio": await bench_gpio(args.presses)}
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


# --- end to end: press -> cancel-all at every venue (--mode e2e) -------------------------

VENUES = ("alpha", "beta", "gamma")
TARGET_P99_MS = 3.0


async def mcu_main(directory: Path, period_s: float) -> None:
    """``--role mcu``: the microcontroller simulator in its own process.

    stdout: ``ready <path>``, then per ``press`` on stdin the PRESS line's stamp (ns), per
    ``release`` ``ok``. Ends at EOF on stdin."""
    sim = MicrocontrollerSim(directory, period_s=period_s)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(sim.run)
            os.write(1, f"ready {sim.path}\n".encode())
            stdin = trio.lowlevel.FdStream(os.dup(0))
            buffer = b""
            while data := await stdin.receive_some(4096):
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line == b"press":
                        sim.press()
                        os.write(1, b"%d\n" % sim.last_press_ns)
                    elif line == b"release":
                        sim.release()
                        os.write(1, b"ok\n")
            nursery.cancel_scope.cancel()
    finally:
        sim.close()


class McuProcess:
    """The parent's handle on ``--role mcu``: blocking, every read bounded."""

    def __init__(self, directory: Path, period_s: float, log: Path, wait_s: float) -> None:
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                [h.PYTHON, str(Path(__file__).resolve()), "--role", "mcu", "--dir",
                 str(directory), "--period-s", repr(period_s)],
                cwd=h.ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                bufsize=0)
        self.wait_s = wait_s
        ready = self.read_line(10.0)
        if not ready.startswith("ready "):
            raise h.Aborted(f"the microcontroller simulator did not start: {ready!r} (see {log})")
        self.path = ready.split(" ", 1)[1]

    def read_line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise h.Aborted(f"the microcontroller simulator said nothing in {timeout} s")
        return self.proc.stdout.readline().decode().strip()  # one write, one line

    def send(self, command: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + b"\n")

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(5.0)
        except subprocess.TimeoutExpired:
            h.stop(self.proc)  # type: ignore[arg-type]
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Sample(msgspec.Struct):
    t0: int
    arrivals: list[int]  # venue order
    on_press: int  # on_press started in the daemon
    written: list[int]  # each venue's cancel-all written by its warm line (0: not)
    warm: int  # cancels that went out on a warm line (of 3)


class Rig:
    """What the driver thread reads; the daemon's side is filled on the trio thread."""

    def __init__(self, desk: Desk, notify: socket.socket, client: h.LineClient, tmp: Path,
                 perf: dict[str, subprocess.Popen[str]], urls: dict[str, str],
                 sockets: list[dict[int, str]]) -> None:
        assert desk.button is not None
        self.tmp = tmp
        self.perf = perf  # the perf processes started (the caller stops them)
        self.urls = urls  # venue name -> base URL
        self.sockets = sockets  # --perf: venue_sockets snapshots (the caller reads them)
        self.desk = desk
        self.bridge = desk.button
        self.core = desk.button.core  # type: ignore[attr-defined]
        self.notify = notify
        self.client = client
        self.on_press_ns: list[int] = []
        self.written_ns: list[list[int]] = [[] for _ in desk.venues]
        self.lines = [v.warm_line for v in desk.venues]
        self.stray = 0

    def instrument(self) -> None:
        """A clock read at the start of ``on_press`` and as each venue's warm line's
        ``send_cancel_nowait`` returns having written the cancel-all (instance attributes
        wrapped; the product code is unchanged). ``KillSwitch.trip`` calls it through
        ``HttpVenue.start_cancel_nowait``; the line's own ``cancel_all`` too."""
        original = self.core.on_press
        stamps = self.on_press_ns

        async def on_press(cause: str) -> object:
            stamps.append(time.monotonic_ns())
            return await original(cause)

        self.core.on_press = on_press
        for line, written in zip(self.lines, self.written_ns, strict=True):
            assert line is not None
            send = line.send_cancel_nowait

            def send_cancel_nowait(send: Callable[[], bool] = send,
                                   written: list[int] = written) -> bool:
                sent = send()
                if sent:  # the os.write returned: the request is in the socket
                    written.append(time.monotonic_ns())
                return sent

            line.send_cancel_nowait = send_cancel_nowait  # type: ignore[method-assign]

    def warm_kills(self) -> int:
        return sum(line.kills for line in self.lines if line is not None)


def wait_until(predicate: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise h.Aborted(f"{what} (waited {limit} s)")
        time.sleep(0.001)


def one_press(rig: Rig, i: int, press: Callable[[], Callable[[], int]],
              release: Callable[[], None], args: argparse.Namespace,
              last_incident: str | None) -> tuple[Sample, str]:
    """Press, wait for the 3 stamps, then resolve, reconcile, resume, release, re-arm."""
    c = rig.client
    what = f"press {i}"
    rig.stray += h.drain(rig.notify)
    k = len(rig.on_press_ns)
    warm0 = rig.warm_kills()
    t0_of = press()
    time.sleep(args.settle_ms / 1000.0)  # nothing of ours runs inside the window
    t0 = t0_of()
    arrivals, stray = h.wait_arrivals(rig.notify, t0, len(VENUES), args.wait_s, what)
    rig.stray += stray
    wait_until(lambda: len(rig.on_press_ns) > k, args.wait_s, f"{what}: on_press never ran")
    written = []
    for stamps in rig.written_ns:
        w = next((x for x in stamps if x >= t0), None)
        written.append(w if w is not None else 0)  # 0: not written by the warm line
    sample = Sample(t0=t0, arrivals=arrivals, on_press=rig.on_press_ns[k], written=written,
                    warm=rig.warm_kills() - warm0)
    kill = c.request({"cmd": "status"})["kill"]
    incident = kill["incident_id"]
    if not kill["latched"] or kill["source"] != "button" or kill["by"] != rig.bridge.name \
            or incident is None or incident == last_incident:
        raise h.Aborted(f"{what}: the press did not latch a new button kill: {kill}")
    h.release_latch(c, incident, what, root_cause="bench press")
    release()
    wait_until(lambda: rig.core.state == "healthy", args.wait_s,
               f"{what}: the bridge did not re-arm after the release "
               f"(state {rig.core.state})")
    time.sleep(args.gap_ms / 1000.0)
    return sample, incident


def drive(rig: Rig, press: Callable[[], Callable[[], int]], release: Callable[[], None],
          args: argparse.Namespace) -> tuple[list[Sample], list[Sample]]:
    """The driver thread: warm-up presses, then the measured ones."""
    started = time.monotonic()
    warm: list[Sample] = []
    measured: list[Sample] = []
    incident = None
    for i in range(args.warmup + args.presses):
        if time.monotonic() - started > args.max_seconds:
            raise h.Aborted(f"--max-seconds {args.max_seconds} reached after {i} presses")
        if i == args.warmup:
            rig.stray = 0
            if args.perf:  # this process's socket syscalls: the daemon's DELETE writes
                rig.perf["syscalls"] = h.start_perf(
                    [*h.syscall_events(("write", "sendto")), "-p", str(os.getpid())],
                    rig.tmp / "perf.data", rig.tmp / "perf.log")
                rig.sockets.append(h.venue_sockets(os.getpid(), rig.urls))
            if args.sched:  # every context switch on the machine
                rig.perf["sched"] = h.start_perf(["-a", "-e", "sched:sched_switch"],
                                                 rig.tmp / "sched.data", rig.tmp / "sched.log")
        sample, incident = one_press(rig, i, press, release, args, incident)
        (warm if i < args.warmup else measured).append(sample)
    if args.perf:
        rig.sockets.append(h.venue_sockets(os.getpid(), rig.urls))
    return warm, measured


async def e2e_trio(path: str, args: argparse.Namespace, config_path: Path,
                   notify: socket.socket, mcu: McuProcess | None, tmp: Path,
                   perf: dict[str, subprocess.Popen[str]], sockets: list[dict[int, str]]
                   ) -> tuple[list[Sample], list[Sample], dict[str, Any], int]:
    config = load_config(config_path)
    factory = None
    if path == "gpio":
        button: Any = GpioButtonConfig(pin=17)  # product defaults: NC, pull-up, 50 ms, 20 ms
        factory = sim_pin_factory()
        sim = GpioButtonSim(factory, button)  # at rest before the bridge's first read

        def press() -> Callable[[], int]:
            t0 = time.monotonic_ns()
            sim.press()  # gpiozero's callback runs here, in this (the "GPIO") thread
            return lambda: t0

        release = sim.release
    else:
        assert mcu is not None
        button = SerialLineButtonConfig(port=mcu.path)  # product defaults: 100 ms period

        def press() -> Callable[[], int]:
            mcu.send(b"press")
            return lambda: int(mcu.read_line(args.wait_s))  # the sim's stamp, read later

        def release() -> None:
            mcu.send(b"release")
            if mcu.read_line(args.wait_s) != "ok":
                raise h.Aborted("the microcontroller simulator did not release")

    # A thousand P0 pages in two minutes is the bench, not an alert storm: keep the
    # alerts-spam tree (its P1 would leave every resume THROTTLED) out of the way.
    alerts = msgspec.structs.replace(config.alerts, spam_threshold=1_000_000)
    config = msgspec.structs.replace(config, button=button, alerts=alerts)
    try:
        with trio.fail_after(args.max_seconds + 60):
            async with trio.open_nursery() as nursery:
                desk: Desk = await nursery.start(partial(serve_desk, config,
                                                         pin_factory=factory))
                assert desk.button is not None

                def ready() -> bool:
                    st = desk.status()
                    return (all(v["heartbeat"]["ok"] for v in st["venues"].values())
                            and all(v.warm_line is not None and v.warm_line.ready
                                    for v in desk.venues)
                            and st["button"]["state"] == "healthy")

                with trio.fail_after(30):
                    while not ready():  # noqa: ASYNC110 - several conditions, polled
                        await trio.sleep(0.05)
                with h.LineClient(config.control.socket, timeout=args.wait_s) as client:
                    rig = Rig(desk, notify, client, tmp, perf,
                              {v.name: v.base_url for v in config.venues}, sockets)
                    rig.instrument()
                    warm, measured = await trio.to_thread.run_sync(
                        partial(drive, rig, press, release, args), abandon_on_cancel=True)
                    final = await trio.to_thread.run_sync(client.request, {"cmd": "status"})
                nursery.cancel_scope.cancel()
    finally:
        if factory is not None:
            factory.close()
    return warm, measured, final, rig.stray


def split_ms(samples: list[Sample]) -> dict[str, dict[str, float]]:
    ok = [s for s in samples if all(s.written)]
    return {
        "latency": h.summary_ms([max(s.arrivals) - s.t0 for s in samples]),
        "first_venue": h.summary_ms([min(s.arrivals) - s.t0 for s in samples]),
        "bridge": h.summary_ms([s.on_press - s.t0 for s in samples]),
        "press_to_last_cancel_written": h.summary_ms([max(s.written) - s.t0 for s in ok]),
        "kill_to_last_cancel_written": h.summary_ms([max(s.written) - s.on_press
                                                     for s in ok]),
        "last_cancel_written_to_last_venue": h.summary_ms([max(s.arrivals) - max(s.written)
                                                           for s in ok]),
    }


def run_path(path: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    notify_path = tmp / "notify.sock"
    notify = h.open_notify(notify_path)
    procs: list[subprocess.Popen[str]] = []
    perf: dict[str, subprocess.Popen[str]] = {}
    sockets: list[dict[int, str]] = []  # --perf: which fd is which venue's connection
    mcu: McuProcess | None = None
    log_file: TextIO = (tmp / "daemon.log").open("a")
    setup_logging(stream=log_file)  # the daemon's stderr, as `deskctl run` would set it
    result: dict[str, Any] = {"path": path, "start": h.machine()["date"],
                              "loadavg_1m_start": f"{os.getloadavg()[0]:.2f}"}
    watch = h.CpuWatch()
    started = time.monotonic()
    try:
        venues, urls = h.start_venues(VENUES, tmp, notify=notify_path)
        procs += venues
        config_path, _ = h.write_desk_config(tmp, urls, heartbeat_s=args.heartbeat_s)
        if path == "serial":
            mcu = McuProcess(tmp, 0.1, tmp / "mcu.log", args.wait_s)
        gc.freeze()  # as `deskctl run` does before trio.run
        recorder = StepRecorder() if args.steps else None
        warm, measured, final, stray = trio.run(
            e2e_trio, path, args, config_path, notify, mcu, tmp, perf, sockets,
            instruments=[recorder] if recorder else [])
        for proc in perf.values():
            proc.send_signal(signal.SIGINT)  # perf writes its data file on SIGINT
            proc.wait(60)
        times = {name: h.venue_times(url) for name, url in urls.items()}
    finally:
        for proc in perf.values():
            h.stop(proc)
        if mcu is not None:
            mcu.stop()
        for proc in reversed(procs):
            h.stop(proc)
        notify.close()
        log_file.close()
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["cpu"] = watch.foreign()
    result["loadavg_1m_end"] = f"{os.getloadavg()[0]:.2f}"
    extra = h.deletes_not_from(times, VENUES, [s.arrivals for s in warm + measured])
    button = final["button"]
    lat = [max(s.arrivals) - s.t0 for s in measured]
    all_warm = [s for s in measured if s.warm == len(VENUES)]
    fallback = [s for s in measured if s.warm != len(VENUES)]
    result.update({
        "presses": len(measured),
        "ms": split_ms(measured),
        "warmup_latency_ms": h.summary_ms([max(s.arrivals) - s.t0 for s in warm]),
        "per_block_p50_ms": [round(x, 3) for x in h.per_block_p50(lat)],
        "presses_all_warm": len(all_warm),
        "latency_all_warm_ms": h.summary_ms([max(s.arrivals) - s.t0 for s in all_warm]),
        "latency_with_fallback_ms": h.summary_ms([max(s.arrivals) - s.t0 for s in fallback]),
        "over_target": sum(1 for x in lat if x / 1e6 >= TARGET_P99_MS),
        "stray_stamps": stray,
        "deletes_per_venue": {n: len(t["delete_ns"]) for n, t in times.items()},
        "extra_deletes_per_venue": extra,
        "connections_per_venue": {n: t["connections"] for n, t in times.items()},
        "button": {k: button[k] for k in ("backend", "state", "presses", "losses", "edges",
                                          "reconnects", "callback_errors")},
        "final_mode": final["mode"],
        "raw_ns": [msgspec.to_builtins(s) for s in measured] if args.out else None,
    })
    if "syscalls" in perf:
        sizes = {b for t in times.values() for b in t["delete_bytes"]}
        fds = h.venue_sockets_union(sockets)
        result["venue_fds"] = {str(fd): name for fd, name in sorted(fds.items())}
        (result["daemon_side_ms"], result["daemon_side_unmatched"],
         result["deletes_written_by"]) = perf_split(measured, tmp / "perf.data", fds, sizes)
    if "sched" in perf:
        roles = {p.pid: "venue processes" for p in procs}
        if mcu is not None:
            roles[mcu.proc.pid] = "microcontroller sim"
        roles.update({p.pid: "perf" for p in perf.values()})
        result["sched_us"] = sched_split(measured, tmp / "sched.data", roles)
    if recorder is not None:
        result["event_loop"] = steps_in_windows(recorder, measured)
    if button["losses"] or button["callback_errors"]:
        raise h.Aborted(f"{path}: the bridge lost its button or a callback failed: {button}")
    return result


def perf_split(samples: list[Sample], data: Path, fds: dict[int, str], delete_sizes: set[int]
               ) -> tuple[dict[str, dict[str, float]], dict[str, int], dict[str, int]]:
    """Per press, from this process's socket syscalls (perf): each venue's first DELETE
    written in [t0, its last arrival], recognised by its connection (``fds``: fd ->
    venue, ``h.venue_sockets``) and its size; written = the ``write`` (the warm line's
    ``os.write``) or ``sendto`` (``send_all``, httpx) returned all of it.

    Returns the splits, the presses left out by what was missing, and the DELETEs by
    syscall."""
    writes = h.delete_writes(h.read_syscalls(data, ("write", "sendto")), os.getpid(), fds,
                             delete_sizes)
    w_ns = np.array([w.enter_ns for w in writes], dtype=np.int64)
    parts: dict[str, list[int]] = {k: [] for k in (
        "press_to_last_delete_written", "on_press_to_first_delete_written",
        "on_press_to_last_delete_written", "first_to_last_delete_written",
        "last_delete_written_to_last_venue_parsed", "delete_write_syscall")}
    unmatched: dict[str, int] = {}
    by_syscall: dict[str, int] = {}
    for s in samples:
        end = max(s.arrivals)
        deletes = h.first_delete_per_venue(writes, w_ns, s.t0, end, VENUES)
        if deletes is None or not all(d.complete for d in deletes):
            why = ("a venue without a DELETE written" if deletes is None
                   else "a DELETE written in part (the rest by send_all)")
            unmatched[why] = unmatched.get(why, 0) + 1
            continue
        done = [d.written_ns for d in deletes]
        for d in deletes:
            by_syscall[d.name] = by_syscall.get(d.name, 0) + 1
        parts["press_to_last_delete_written"].append(max(done) - s.t0)
        parts["on_press_to_first_delete_written"].append(min(done) - s.on_press)
        parts["on_press_to_last_delete_written"].append(max(done) - s.on_press)
        parts["first_to_last_delete_written"].append(max(done) - min(done))
        parts["last_delete_written_to_last_venue_parsed"].append(end - max(done))
        parts["delete_write_syscall"] += [d.written_ns - d.enter_ns for d in deletes]
    return {k: h.summary_ms(v) for k, v in parts.items()}, unmatched, by_syscall


# --- where the time goes: --perf, --sched, --steps ----------------------------------------


class StepRecorder(trio.abc.Instrument):
    """Every trio task step: name, start and end ns (as bench/traced_daemon.py)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.starts: list[int] = []
        self.ends: list[int] = []
        self._start = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._start = time.monotonic_ns()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.ends.append(time.monotonic_ns())
        self.starts.append(self._start)
        self.names.append(task.name)


def steps_in_windows(rec: StepRecorder, samples: list[Sample]) -> dict[str, Any]:
    """What the event loop ran inside each press's window [t0, last arrival]: per task,
    mean steps and microseconds per press; and the timeline of the median press."""
    starts, ends = np.array(rec.starts), np.array(rec.ends)
    per_task: dict[str, list[float]] = {}
    busy = 0.0
    lat = [max(s.arrivals) - s.t0 for s in samples]
    median = int(np.argsort(lat)[len(lat) // 2])
    timeline: list[tuple[int, str]] = []
    for n, smp in enumerate(samples):
        end = max(smp.arrivals)
        for k in range(int(np.searchsorted(ends, smp.t0)), int(np.searchsorted(starts, end))):
            a, b = max(int(starts[k]), smp.t0), min(int(ends[k]), end)
            if b <= a:
                continue
            row = per_task.setdefault(rec.names[k], [0.0, 0.0])
            row[0] += 1
            row[1] += (b - a) / 1e3
            busy += (b - a) / 1e3
            if n == median:
                timeline.append((int(starts[k]) - smp.t0, f"{(b - a) / 1e3:7.1f} us  "
                                 f"{rec.names[k]}"))
        if n == median:
            timeline.append((smp.on_press - smp.t0, "on_press starts"))
            timeline += [(a - smp.t0, f"venue {VENUES[i]} parsed DELETE")
                         for i, a in enumerate(smp.arrivals)]
    k = max(1, len(samples))
    table = sorted(((name, c / k, us / k) for name, (c, us) in per_task.items()),
                   key=lambda x: -x[2])
    return {"mean_window_us": float(np.mean(lat)) / 1e3, "mean_busy_us": busy / k,
            "per_task": table,
            "median_kill_timeline": [f"+{t / 1e3:8.1f} us  {what}"
                                     for t, what in sorted(timeline)]}


def sched_split(samples: list[Sample], data: Path, roles: dict[int, str]
                ) -> dict[str, Any]:
    """Where the daemon's trio thread was inside each press's window [t0, last arrival],
    from every context switch on the machine: on CPU, or off it (by its state when it
    left: R = preempted while runnable, S = asleep: epoll, or a futex such as the GIL);
    and, while it was runnable but off CPU, what ran on its CPU and on the others."""
    text = subprocess.run(["perf", "script", "-i", str(data), "--ns", "-F",
                           "cpu,pid,tid,time,trace"], capture_output=True, text=True,
                          check=True, timeout=300).stdout
    me = os.getpid()
    tgid: dict[int, int] = {}
    runs: dict[int, list[tuple[int, int, int, str]]] = {}  # cpu -> (start, end, tid, state)
    current: dict[int, tuple[int, int]] = {}  # cpu -> (tid, since)
    for row in text.splitlines():
        head, _, trace = row.partition(": prev_comm=")
        if not trace:
            continue
        ids, cpu_s, stamp = head.split()[-3:]
        pid, _, tid = ids.partition("/")
        cpu = int(cpu_s.strip("[]"))
        ns = h.perf_ns(stamp)
        tgid[int(tid)] = int(pid)
        state = trace.split("prev_state=")[1].split()[0]
        nxt = int(trace.rsplit("next_pid=", 1)[1].split()[0])
        if cpu in current:
            t, since = current[cpu]
            runs.setdefault(cpu, []).append((since, ns, t, state))
        current[cpu] = (nxt, ns)

    def role(tid: int) -> str:
        if tid == 0:
            return "idle"
        if tid == me:
            return "daemon trio thread"
        group = tgid.get(tid, tid)
        if group == me:
            return "this process, other threads"
        return roles.get(group, "other processes")

    starts = {cpu: np.array([r[0] for r in rs], dtype=np.int64) for cpu, rs in runs.items()}

    def on_cpu(cpu: int, a: int, b: int, into: dict[str, float]) -> None:
        rs = runs.get(cpu, [])
        lo = max(0, int(np.searchsorted(starts[cpu], a)) - 1)
        for k in range(lo, len(rs)):
            s, e, tid, _ = rs[k]
            if s >= b:
                break
            if min(e, b) > max(s, a):
                into[role(tid)] = into.get(role(tid), 0.0) + (min(e, b) - max(s, a)) / 1e3

    mine = sorted((s, e, cpu, st) for cpu, rs in runs.items() for s, e, t, st in rs if t == me)
    mine_starts = np.array([m[0] for m in mine], dtype=np.int64)
    on = 0.0
    off: dict[str, float] = {}
    same: dict[str, float] = {}
    others: dict[str, float] = {}
    for smp in samples:
        a0, b0 = smp.t0, max(smp.arrivals)
        lo = max(0, int(np.searchsorted(mine_starts, a0)) - 1)
        hi = int(np.searchsorted(mine_starts, b0))
        for k in range(lo, min(hi + 1, len(mine))):
            s, e, cpu, state = mine[k]
            on += max(0, min(e, b0) - max(s, a0)) / 1e3
            if k + 1 < len(mine):  # off CPU from e until the next run starts
                a, b = max(e, a0), min(mine[k + 1][0], b0)
                if b > a:
                    off[state] = off.get(state, 0.0) + (b - a) / 1e3
                    if state == "R":
                        on_cpu(cpu, a, b, same)
                        for other in runs:
                            if other != cpu:
                                on_cpu(other, a, b, others)
    n = max(1, len(samples))
    return {"presses": len(samples),
            "mean_window_us": float(np.mean([max(s.arrivals) - s.t0 for s in samples])) / 1e3,
            "trio_on_cpu_us": on / n,
            "trio_off_cpu_us_by_state": {k: v / n for k, v in off.items()},
            "while_preempted_on_its_cpu_us": {k: v / n for k, v in
                                              sorted(same.items(), key=lambda x: -x[1])},
            "while_preempted_on_other_cpus_us": {k: v / n for k, v in
                                                 sorted(others.items(), key=lambda x: -x[1])}}


LABELS = {"gpio": "GPIO edge (MockFactory `press()` from a thread)",
          "serial": "PRESS line written to the pty (simulator in its own process)"}


def report(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"button end to end: machine {m['nproc']} cpu {m['cpu']}, python {m['python']}, "
          f"linux {m['kernel']}, product source {m['source']}")
    for path, r in result["paths"].items():
        ms = r["ms"]
        cpu = r["cpu"]
        print(f"\n{LABELS[path]} -> DELETE /v2/orders parsed by all 3 venues: {r['presses']} "
              f"presses, {r['start']}, {r['wall_s']} s, load {r['loadavg_1m_start']} -> "
              f"{r['loadavg_1m_end']}, other processes {cpu['others_cores']:.2f} cores "
              f"(ours {cpu['ours_s'] / cpu['wall_s']:.2f})")
        for key, label in (("latency", "press -> last venue parsed DELETE"),
                           ("first_venue", "press -> first venue"),
                           ("bridge", "  press -> on_press starts (bridge)"),
                           ("kill_to_last_cancel_written", "  on_press -> last cancel written"),
                           ("last_cancel_written_to_last_venue",
                            "  last cancel written -> last venue parsed"),
                           ("press_to_last_cancel_written", "press -> last cancel written")):
            print(f"  {label:42s}{h.fmt(ms[key])}")
        print(f"  warm-up presses (not counted)             {h.fmt(r['warmup_latency_ms'])}")
        print(f"  presses with all 3 cancels on warm lines: {r['presses_all_warm']} "
              f"({h.fmt(r['latency_all_warm_ms'])}); with a fallback: "
              f"{h.fmt(r['latency_with_fallback_ms'])}")
        print("  " + h.per_block_line(r["per_block_p50_ms"], "presses"))
        print(f"  presses >= {TARGET_P99_MS} ms: {r['over_target']}; stray stamps "
              f"{r['stray_stamps']}; DELETEs per venue {r['deletes_per_venue']} (not from a "
              f"press: {r['extra_deletes_per_venue']}); venue connections "
              f"{r['connections_per_venue']}; bridge {r['button']}")
        if "daemon_side_ms" in r:
            missed = r["daemon_side_unmatched"]
            print(f"  syscall trace (perf): unmatched {sum(missed.values())} {missed or ''}; "
                  f"DELETEs written by {r['deletes_written_by']}; venue fds {r['venue_fds']}")
            for k, v in r["daemon_side_ms"].items():
                print(f"    {k:40s}{h.fmt(v)}")
        if "sched_us" in r:
            sc = r["sched_us"]

            def us(d: dict[str, float]) -> str:
                return ", ".join(f"{k} {v:.0f}" for k, v in d.items())

            print(f"  context switches (perf sched), us per press, mean window "
                  f"{sc['mean_window_us']:.0f}: trio thread on CPU {sc['trio_on_cpu_us']:.0f}; "
                  f"off CPU by state {us(sc['trio_off_cpu_us_by_state'])}")
            print(f"    while runnable but off CPU, its CPU ran: "
                  f"{us(sc['while_preempted_on_its_cpu_us'])}")
            print(f"    ... and the other CPU(s): {us(sc['while_preempted_on_other_cpus_us'])}")
        if "event_loop" in r:
            ev = r["event_loop"]
            print(f"  event loop inside [t0, last arrival]: mean window "
                  f"{ev['mean_window_us']:.0f} us, of which task steps {ev['mean_busy_us']:.0f} us")
            print("\n".join(h.event_loop_lines(ev, "press", 12)))
        print("  " + h.target_line(ms["latency"].get("p99", float("inf")), TARGET_P99_MS))
    print()
    print("| path | start (UTC) | n | p50 | p90 | p99 | max | bridge p50 / p99 | on_press -> "
          "last written p50 / p99 | last written -> last venue parsed p50 / p99 | "
          "others (cores) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for path, r in result["paths"].items():
        ms = r["ms"]
        lat = ms["latency"]

        def pair(key: str, ms: dict[str, Any] = ms) -> str:
            # A split without samples: no press had all 3 cancels written at once.
            if "p50" not in ms.get(key, {}):
                return "-"
            return f"{ms[key]['p50']:.3f} / {ms[key]['p99']:.3f}"

        print(f"| {path} | {r['start']} | {lat['n']} | {lat['p50']:.3f} | {lat['p90']:.3f} | "
              f"{lat['p99']:.3f} | {lat['max']:.3f} | {pair('bridge')} | "
              f"{pair('kill_to_last_cancel_written')} | "
              f"{pair('last_cancel_written_to_last_venue')} | "
              f"{r['cpu']['others_cores']:.2f} |")


def e2e_main(args: argparse.Namespace) -> int:
    result: dict[str, Any] = {"machine": h.machine(), "args": vars(args), "paths": {}}
    for path in args.paths.split(","):
        if path not in LABELS:
            raise SystemExit(f"unknown path {path!r}: gpio, serial")
        got = h.run_in_temp_dir(f"button_latency: {path}", f"bench-button-{path}-",
                                partial(run_path, path, args), keep=args.keep)
        if got is None:
            return 1
        result["paths"][path] = got
    report(result)
    h.write_results(args.out, result)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("bridge", "e2e"), default="bridge",
                        help="bridge: the bridge's share only; e2e: press -> cancel-all at "
                             "3 venues, daemon in this process")
    parser.add_argument("--presses", type=int, default=1000, help="measured presses per path")
    parser.add_argument("--losses", type=int, default=20, help="bridge mode: loss detections")
    parser.add_argument("--paths", default="gpio,serial", help="e2e: gpio, serial or both")
    parser.add_argument("--settle-ms", type=float, default=10.0,
                        help="e2e: the driver sleeps this long after a press before reading "
                             "any stamp")
    h.add_run_options(parser, unit="press", warmup=20, max_seconds=1200.0,
                      gap_after="the bridge re-armed", bounds="each path's presses",
                      scope="e2e: ")
    h.add_trace_options(parser, unit="press",
                        perf="this process's sendto syscalls (the daemon's DELETE writes)",
                        sched="where the daemon's trio thread was inside each press's window",
                        window="inside each press's window", traced_daemon=False,
                        scope="e2e: ")
    parser.add_argument("--role", choices=("bench", "mcu"), default="bench",
                        help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--period-s", type=float, default=0.1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "mcu":
        trio.run(mcu_main, Path(args.dir), args.period_s)
        return 0
    if args.mode == "e2e":
        h.require_perf(parser, args)
        return e2e_main(args)
    trio.run(bridge_main, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
