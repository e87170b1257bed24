"""What both benchmarks share: child processes, the daemon's config, a line client, stats.

Every child is started here with its own process id and stopped here by that id (the
daemon in its own session, stopped by its process group); nothing is found by name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable


def machine() -> dict[str, str]:
    """What the numbers were measured on (docs/benchmarks.md asks for all of it)."""
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": source_fingerprint(),
        "loadavg_1m": f"{os.getloadavg()[0]:.2f}",  # anything else busy on the machine?
    }


def source_fingerprint() -> str:
    """sha256 (12 hex) of the product's Python sources: which code the numbers are of."""
    digest = hashlib.sha256()
    for path in sorted([*ROOT.glob("supervisor/*.py"), *ROOT.glob("actors/*.py")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


class CpuWatch:
    """CPU used on the whole machine during a run, split into ours and everybody else's.

    Ours: this process and every child it has reaped (``RUSAGE_CHILDREN``), so read
    ``foreign()`` after the children are stopped. The machine is shared: a run during
    which other processes used a core says so in its report."""

    def __init__(self) -> None:
        self._busy0 = _machine_busy_s()
        self._ours0 = _ours_s()
        self._wall0 = time.monotonic()

    def foreign(self) -> dict[str, float]:
        wall = time.monotonic() - self._wall0
        busy = _machine_busy_s() - self._busy0
        ours = _ours_s() - self._ours0
        return {"wall_s": wall, "machine_busy_s": busy, "ours_s": ours,
                "others_s": max(0.0, busy - ours),
                "others_cores": max(0.0, busy - ours) / wall if wall > 0 else 0.0}


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_s() -> float:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _ours_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def spawn(args: Sequence[str], *, log: Path | None = None, stdout_pipe: bool = False,
          session: bool = False) -> subprocess.Popen[str]:
    """Start a child in the repository root; stderr (and stdout unless piped) to ``log``."""
    with contextlib.ExitStack() as files:
        err: Any = files.enter_context(log.open("ab")) if log else subprocess.DEVNULL
        out: Any = subprocess.PIPE if stdout_pipe else err
        return subprocess.Popen(list(args), cwd=ROOT, text=True, stdout=out, stderr=err,
                                start_new_session=session)


def start_venue(name: str, index: int, *, notify: Path | None, log: Path
                ) -> tuple[subprocess.Popen[str], str]:
    """A bench/h11_venue.py process; returns it and its base URL."""
    args = [PYTHON, str(BENCH / "h11_venue.py"), "--name", name, "--index", str(index)]
    if notify is not None:
        args += ["--notify", str(notify)]
    proc = spawn(args, log=log, stdout_pipe=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        stop(proc)
        raise RuntimeError(f"venue {name} did not start: {url!r} (see {log})")
    return proc, url


def write_config(path: Path, *, state_dir: Path, socket_path: Path,
                 venues: dict[str, str], heartbeat_s: float | None = None) -> None:
    """The daemon's TOML; everything not set here is the product's default."""
    lines = [f'state_dir = "{state_dir}"', ""]
    for name, url in venues.items():
        lines += ["[[venues]]", f'name = "{name}"', f'base_url = "{url}"', ""]
    lines += ["[control]", f'socket = "{socket_path}"', ""]
    if heartbeat_s is not None:
        lines += ["[heartbeat]", f"interval_s = {heartbeat_s}", ""]
    # No end-of-day run in the middle of a benchmark.
    lines += ["[reconciliation]", 'end_of_day = ""', ""]
    # A kill benchmark pulls the switch 1,000 times in 30 s: every kill pages, and the
    # alerts-spam tree (docs/alerts.md) would throttle the desk after 20 of them. The
    # benchmarks do not measure that tree, so it is kept out of their way.
    lines += ["[alerts]", "spam_threshold = 1000000", ""]
    # The benchmarks measure an armed, trading desk; a fresh install would start DISARMED
    # (docs/playbook.md "Gates and arming"), its gate closed before any kill.
    lines += ["[gates]", "start_disarmed = false", ""]
    path.write_text("\n".join(lines))


def start_daemon(config: Path, socket_path: Path, log: Path, *, venues: int,
                 timeout: float = 30.0, traced: Sequence[str] | None = None
                 ) -> subprocess.Popen[str]:
    """``python -m supervisor.cli run``; returns once status answers and every venue's
    heartbeat has succeeded once (so every venue connection is open).

    ``traced``: run bench/traced_daemon.py with these extra arguments instead."""
    if traced is None:
        argv = [PYTHON, "-m", "supervisor.cli", "run", "--config", str(config)]
    else:
        argv = [PYTHON, str(BENCH / "traced_daemon.py"), "--config", str(config), *traced]
    proc = spawn(argv, log=log, session=True)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {proc.returncode}: see {log}")
        try:
            with LineClient(socket_path, timeout=2.0) as c:
                status = c.request({"cmd": "status"})
                beats = [v["heartbeat"]["ok"] for v in status["venues"].values()]
                if len(beats) == venues and all(beats):
                    return proc
        except (OSError, RuntimeError):
            pass
        if time.monotonic() > deadline:
            stop(proc, group=True)
            raise RuntimeError(f"the daemon did not become ready in {timeout} s: see {log}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[str], *, group: bool = False, timeout: float = 10.0) -> int:
    """SIGTERM (the process group when it has its own session), then SIGKILL; bounded."""
    if proc.poll() is None:
        try:
            if group:
                os.killpg(proc.pid, signal.SIGTERM)
            else:
                proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
        except ProcessLookupError:
            pass
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


class LineClient:
    """A blocking connection to the control socket: one JSON line out, one line back."""

    def __init__(self, path: Path | str, *, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except OSError:
            self.sock.close()
            raise
        self._buf = bytearray()

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def read_line(self) -> bytes:
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return line
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("the daemon closed the control connection")
            self._buf += chunk

    def result(self) -> Any:
        response = json.loads(self.read_line())
        if not response.get("ok"):
            raise RuntimeError(f"request refused: {response.get('error')}")
        return response["result"]

    def request(self, req: dict[str, Any]) -> Any:
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        return self.result()


def summary_ms(values_ns: Sequence[int] | np.ndarray) -> dict[str, float]:
    """p50, p90, p99, max and mean, in milliseconds."""
    a = np.asarray(values_ns, dtype=np.float64) / 1e6
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)),
            "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max()), "mean": float(a.mean())}


def fmt(s: dict[str, float]) -> str:
    if not s.get("n"):
        return "no samples"
    return (f"n={s['n']}  p50 {s['p50']:.3f}  p90 {s['p90']:.3f}  p99 {s['p99']:.3f}  "
            f"max {s['max']:.3f}  mean {s['mean']:.3f} ms")


def busy_fraction(seconds: float = 2.0) -> float:
    """Fraction of the machine's CPUs busy over ``seconds`` (from /proc/stat)."""
    b0, t0 = _machine_busy_s(), time.monotonic()
    time.sleep(seconds)
    return (_machine_busy_s() - b0) / ((time.monotonic() - t0) * (os.cpu_count() or 1))


def wait_idle(limit: float = 0.10, *, max_wait_s: float = 300.0, every_s: float = 2.0
              ) -> dict[str, float]:
    """Wait until the machine is under ``limit`` busy over ``every_s`` (bounded by
    ``max_wait_s``); returns how long it waited and the last busy fraction seen.

    The machine is shared: a run that starts while someone's pytest runs measures both."""
    start = time.monotonic()
    while True:
        busy = busy_fraction(every_s)
        waited = time.monotonic() - start
        if busy < limit or waited >= max_wait_s:
            return {"waited_s": waited, "busy": busy, "idle": float(busy < limit)}


if __name__ == "__main__":
    # python bench/_harness.py idle [limit] [max_wait_s]: wait for an idle machine.
    if len(sys.argv) >= 2 and sys.argv[1] == "idle":
        got = wait_idle(float(sys.argv[2]) if len(sys.argv) > 2 else 0.10,
                        max_wait_s=float(sys.argv[3]) if len(sys.argv) > 3 else 300.0)
        print(f"machine busy {got['busy']:.2f} after waiting {got['waited_s']:.0f} s "
              f"({'idle' if got['idle'] else 'NOT idle: gave up waiting'})", flush=True)


def calls_in_windows(path: Path, windows: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """From bench/traced_daemon.py --time-calls: per timed function, the mean number of
    calls and microseconds per window (calls that started inside [start, end]), and the
    median duration of one call over the whole run."""
    data = json.loads(path.read_text())
    out: dict[str, Any] = {}
    n = max(len(windows), 1)
    for name, rows in data.items():
        if not rows:
            continue
        starts = np.array([r[0] for r in rows], dtype=np.int64)
        durs = np.array([r[1] for r in rows], dtype=np.int64)
        calls, total = 0, 0
        for a, b in windows:
            lo, hi = int(np.searchsorted(starts, a)), int(np.searchsorted(starts, b))
            calls += hi - lo
            total += int(durs[lo:hi].sum())
        out[name] = {"calls_per_window": calls / n, "us_per_window": total / n / 1000.0,
                     "median_us_per_call": float(np.median(durs)) / 1000.0,
                     "calls_in_run": len(rows)}
    return out
