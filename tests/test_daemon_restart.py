"""A real daemon process, killed with SIGKILL and restarted on the same state directory.

NautilusTrader #5000 (working orders dropped after SIGKILL), halts lost on
restart. The halt latches, the incidents come back as they were, and the restarted
daemon cancels again what appeared at the venue while it was down.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.control.client import ControlClient
from supervisor.core.errors import ControlError

from .daemonproc import open_orders, place_order, start_daemon, venue_process, wait_until


@pytest.fixture
def venue() -> Iterator[str]:
    with venue_process() as url:
        yield url


def test_sigkilled_daemon_comes_back_halted_with_the_same_incidents(
    tmp_path: Path, venue: str
) -> None:
    sock, state = tmp_path / "c.sock", tmp_path / "state"
    config = tmp_path / "desk.toml"
    config.write_text(f"""
state_dir = "{state}"
[[venues]]
name = "alpha"
base_url = "{venue}"
[control]
socket = "{sock}"
[kill]
quiet_s = 0.5
[reconciliation]
end_of_day = ""
""")
    log = tmp_path / "daemon.log"
    place_order(venue, "desk-1")
    proc = start_daemon(config, sock, log)
    try:
        with ControlClient(str(sock)) as c:
            killed = c.request("kill", reason="restart drill")
            inc_id = killed["incident_id"]
            c.request("ack", id=inc_id, commander="ann")
        wait_until(lambda: not open_orders(venue), what="the venue to be flat")
        with ControlClient(str(sock)) as c:
            before = c.request("status")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    # While the daemon is dead, somebody's order lands at the venue.
    place_order(venue, "desk-2")
    assert len(open_orders(venue)) == 1
    proc = start_daemon(config, sock, log)
    try:
        with ControlClient(str(sock)) as c:
            after = c.request("status")
            assert after["mode"] == "HALTED"
            assert after["kill"]["latched"] is True
            assert after["kill"]["reason"] == "restart drill"
            assert after["kill"]["since"] == before["kill"]["since"]
            assert [(i["id"], i["state"], i["commander"]) for i in after["incidents"]] == [
                (inc_id, "acknowledged", "ann")]
            assert after["incidents"][0]["timeline"][:2] == before["incidents"][0]["timeline"][:2]
            with pytest.raises(ControlError) as refused:
                c.request("resume", verified_nonprod=True)
            assert refused.value.code == "resume_refused"
        # The restarted daemon cancels again what it finds open.
        wait_until(lambda: not open_orders(venue), what="the late order to be cancelled")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0
    assert not sock.exists(), "a clean stop removes the control socket"


def test_sigkill_in_a_burst_loses_no_acknowledged_event_and_duplicates_none(
    tmp_path: Path, venue: str
) -> None:
    """Every command the daemon answered ok before the SIGKILL is in the journal once;
    the halt and its incident come back."""
    import sqlite3
    import threading

    sock, state = tmp_path / "c.sock", tmp_path / "state"
    config = tmp_path / "desk.toml"
    config.write_text(f'state_dir = "{state}"\n[[venues]]\nname = "alpha"\n'
                      f'base_url = "{venue}"\n[control]\nsocket = "{sock}"\n'
                      '[reconciliation]\nend_of_day = ""\n')
    log = tmp_path / "daemon.log"
    proc = start_daemon(config, sock, log)
    acknowledged: list[str] = []
    stop = threading.Event()

    def commands() -> None:
        try:
            with ControlClient(str(sock), timeout=5) as c:
                for i in range(100_000):
                    if stop.is_set():
                        return
                    reason = f"burst-{i}"
                    c.request("symbol_halt", symbol="AAPL", reason=reason)
                    acknowledged.append(reason)
        except Exception:
            return  # the daemon died under us: what was answered is what counts

    def telemetry() -> None:
        batch = [{"kind": "prediction", "symbol": f"S{i}", "value": 0.1, "ts": time.time()}
                 for i in range(100)]
        try:
            with ControlClient(str(sock), timeout=5) as c:
                while not stop.is_set():
                    c.request("telemetry", events=batch)
        except Exception:
            return

    try:
        with ControlClient(str(sock)) as c:
            inc_id = c.request("kill", reason="burst drill")["incident_id"]
        workers = [threading.Thread(target=commands), threading.Thread(target=telemetry)]
        for w in workers:
            w.start()
        wait_until(lambda: len(acknowledged) >= 50, what="a burst of acknowledged commands")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        stop.set()
        for w in workers:
            w.join(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    proc = start_daemon(config, sock, log)
    try:
        with ControlClient(str(sock)) as c:
            st = c.request("status")
        assert st["mode"] == "HALTED" and st["kill"]["reason"] == "burst drill"
        assert [i["id"] for i in st["incidents"]] == [inc_id]
        db = sqlite3.connect(f"file:{state / 'journal.sqlite3'}?mode=ro", uri=True)
        try:
            texts = [row[0] for row in db.execute(
                "SELECT json_extract(body, '$.text') FROM events WHERE type = 'audit'")]
        finally:
            db.close()
        journaled = [t.removeprefix("halt reported for AAPL: ") for t in texts]
        assert len(journaled) == len(set(journaled)), "an event was journaled twice"
        missing = [r for r in acknowledged if r not in set(journaled)]
        assert missing == [], f"{len(missing)} acknowledged event(s) lost"
        assert len(journaled) >= len(acknowledged) >= 50
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
