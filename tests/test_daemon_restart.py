"""A real daemon process, killed with SIGKILL and restarted on the same state directory.

FIELD-NOTES: NautilusTrader #5000 (working orders dropped after SIGKILL), halts lost on
restart. The halt latches, the incidents come back as they were, and the restarted
daemon cancels again what appeared at the venue while it was down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.client import ControlClient
from supervisor.errors import ControlError


def _wait(predicate, timeout: float = 20.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def venue() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "simulators.venue", "--port", "0",
                             "--name", "alpha"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def _http(method: str, url: str, body: dict | None = None) -> object:  # type: ignore[type-arg]
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def _open_orders(url: str) -> list[dict]:  # type: ignore[type-arg]
    return _http("GET", f"{url}/v2/orders?status=open")  # type: ignore[return-value]


def _place(url: str, client_id: str) -> None:
    _http("POST", f"{url}/v2/orders", {"symbol": "AAPL", "qty": "5", "side": "buy",
                                        "type": "limit", "limit_price": "50",
                                        "time_in_force": "day", "client_order_id": client_id})


def _start(config: Path, sock: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "supervisor.cli", "run", "--config",
                                 str(config)], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def answering() -> bool:
        assert proc.poll() is None, log.read_text()
        with ControlClient(str(sock), timeout=2) as c:
            return c.request("status") is not None

    _wait(answering, what="the control socket")
    return proc


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
    _place(venue, "desk-1")
    proc = _start(config, sock, log)
    try:
        with ControlClient(str(sock)) as c:
            killed = c.request("kill", reason="restart drill")
            inc_id = killed["incident_id"]
            c.request("ack", id=inc_id, commander="ann")
        _wait(lambda: not _open_orders(venue), what="the venue to be flat")
        with ControlClient(str(sock)) as c:
            before = c.request("status")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    # While the daemon is dead, somebody's order lands at the venue.
    _place(venue, "desk-2")
    assert len(_open_orders(venue)) == 1
    proc = _start(config, sock, log)
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
                c.request("resume")
            assert refused.value.code == "resume_refused"
        # The restarted daemon cancels again what it finds open.
        _wait(lambda: not _open_orders(venue), what="the late order to be cancelled")
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
    proc = _start(config, sock, log)
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
        _wait(lambda: len(acknowledged) >= 50, what="a burst of acknowledged commands")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        stop.set()
        for w in workers:
            w.join(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    proc = _start(config, sock, log)
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
