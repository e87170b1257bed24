"""A real daemon process and a venue simulator process, for tests that treat the
supervisor as a user would: over its socket and its exit status, from outside."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from supervisor.control.client import ControlClient


def wait_until(predicate: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    """Poll ``predicate`` (OSError counts as not yet) until true, else fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def venue_process(name: str = "alpha") -> Iterator[str]:
    """``python -m simulators.venue`` on a free port; yields its base URL."""
    proc = subprocess.Popen([sys.executable, "-m", "simulators.venue", "--port", "0",
                             "--name", name], stdout=subprocess.PIPE, text=True)
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


def http(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def open_orders(url: str) -> list[dict[str, Any]]:
    return http("GET", f"{url}/v2/orders?status=open")  # type: ignore[no-any-return]


def place_order(url: str, client_id: str) -> None:
    http("POST", f"{url}/v2/orders", {"symbol": "AAPL", "qty": "5", "side": "buy",
                                      "type": "limit", "limit_price": "50",
                                      "time_in_force": "day", "client_order_id": client_id})


def start_daemon(config: Path, sock: Path, log: Path) -> subprocess.Popen[bytes]:
    """``desk-supervisor run --config CONFIG`` in its own session, once it answers."""
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "supervisor.cli", "run", "--config",
                                 str(config)], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def answering() -> bool:
        assert proc.poll() is None, log.read_text()
        with ControlClient(str(sock), timeout=2) as c:
            return c.request("status") is not None

    wait_until(answering, what="the control socket")
    return proc


def write_config(tmp_path: Path, venue: str, extra: str = "",
                 venue_extra: str = "") -> tuple[Path, Path, Path]:
    """A one-venue daemon config in ``tmp_path``, armed from the start (the gates are
    tested elsewhere); returns (config, socket, state dir).
    ``extra`` is appended to the file (more keys of the [control] table, or tables);
    ``venue_extra`` goes into the venue's table."""
    sock, state = tmp_path / "c.sock", tmp_path / "state"
    config = tmp_path / "desk.toml"
    config.write_text(f'state_dir = "{state}"\n[[venues]]\nname = "alpha"\n'
                      f'base_url = "{venue}"\n{venue_extra}[reconciliation]\n'
                      f'end_of_day = ""\n'
                      f'[kill]\nquiet_s = 0.5\n[gates]\nstart_disarmed = false\n'
                      f'[control]\nsocket = "{sock}"\n{extra}')
    return config, sock, state
