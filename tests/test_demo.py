"""The demo as a user starts it (docs/architecture.md: `desk-supervisor demo`): demo.json is there
as soon as the control socket answers, and names live simulators."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from supervisor.control.client import ControlClient


def test_demo_json_is_written_before_the_socket_answers(tmp_path: Path) -> None:
    state, sock = tmp_path / "state", tmp_path / "c.sock"
    proc = subprocess.Popen([sys.executable, "-m", "supervisor.cli", "demo", "--socket",
                             str(sock), "--state-dir", str(state)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, "the demo's socket never answered"
            assert proc.poll() is None, "the demo exited"
            try:
                with ControlClient(str(sock), timeout=2) as c:
                    status = c.request("status")
                break
            except OSError:
                time.sleep(0.05)
        # The first answer already implies demo.json (contract-check reads it then).
        demo = json.loads((state / "demo.json").read_text())
        # Armed before its socket answers: its pre-launch gates passed (a kill-switch
        # drill on the paper venues, the limits in git, simulated attestations).
        assert demo["socket"] == str(sock) and status["mode"] == "NORMAL"
        assert set(demo["venues"]) == {"alpha", "beta"}
        assert set(demo["drill_venues"]) == {"paper-a", "paper-b"}  # paper venues for drills
        for url in [*demo["venues"].values(), demo["feed"]]:
            with urllib.request.urlopen(url + "/sim/fault", timeout=5) as r:
                assert json.loads(r.read()) == {"faults": []}
        # The paper venues serve the fault API too (the start-up failover drill may be
        # holding an outage on one of them right now: the live venues are never touched).
        for url in demo["drill_venues"].values():
            with urllib.request.urlopen(url + "/sim/fault", timeout=5) as r:
                assert "faults" in json.loads(r.read())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0


def test_the_rogue_engine_scenario_halts_and_flattens_the_demo(tmp_path: Path) -> None:
    """`desk-supervisor demo --scenario rogue-engine --exit`: the compliance watch catches
    an engine ignoring its gate, the desk halts, and the flatten leaves every venue at
    zero position within 10 s."""
    done = subprocess.run([sys.executable, "-m", "supervisor.cli", "demo", "--state-dir",
                           str(tmp_path / "state"), "--scenario", "rogue-engine", "--exit"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "runaway-engine P0 venue:beta by actor:compliance" in out
    assert "larger than the gate allows: 1 x max_order_qty 500 = 500; order cancelled" in out
    (line,) = [x for x in out.splitlines() if "flatten complete in " in x]
    seconds = float(line.split("flatten complete in ")[1].split(" s ")[0])
    assert seconds < 10.0
    assert "-> unknown" not in line and all(leg.endswith("-> 0") for leg in
                                            line.split(": ", 1)[1].split(", "))
    assert "=> the playbook's response is in force" in out


def test_the_holiday_scenario_opens_no_incident_on_a_closed_day(tmp_path: Path) -> None:
    """`desk-supervisor demo --scenario holiday --exit`: the venues' calendar closes today,
    the feed goes silent, and nothing happens."""
    done = subprocess.run([sys.executable, "-m", "supervisor.cli", "demo", "--state-dir",
                           str(tmp_path / "state"), "--scenario", "holiday", "--exit"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    timeline = [line for line in done.stdout.split("scenario holiday:")[1].splitlines()
                if "s  " in line]
    assert len(timeline) == 4 and not any("incident" in line for line in timeline)
    assert "=> the playbook's response is in force" in done.stdout
