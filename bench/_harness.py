"""What the benchmarks share: child processes, the venues and their stamps, the daemon's
config, a line client, releasing the kill latch, stats, printing and common options.

Every child is started here with its own process id and stopped here by that id (the
daemon in its own session, stopped by its process group); nothing is found by name.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
from h11_venue import NOTIFY

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable

T = TypeVar("T")


class Aborted(Exception):
    """A bench run stopped on purpose: a bound was reached or an answer was not the one
    expected. ``run_in_temp_dir`` reports it in one line and keeps the logs."""


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



def start_venues(names: Sequence[str], tmp: Path, *, notify: Path | None
                 ) -> tuple[list[subprocess.Popen[str]], dict[str, str]]:
    """One bench/h11_venue.py per name (its index is its place in ``names``), each
    logging to ``tmp/venue-NAME.log``; returns the processes and the base URL by name.

    If one does not start, the ones already started are stopped before the error rises."""
    procs: list[subprocess.Popen[str]] = []
    urls: dict[str, str] = {}
    try:
        for index, name in enumerate(names):
            proc, url = start_venue(name, index, notify=notify, log=tmp / f"venue-{name}.log")
            procs.append(proc)
            urls[name] = url
    except BaseException:
        for proc in reversed(procs):
            stop(proc)
        raise
    return procs, urls


def venue_times(url: str) -> dict[str, Any]:
    """What a bench venue kept: every DELETE's arrival (ns) and size, its connections."""
    with urllib.request.urlopen(f"{url}/bench/times", timeout=5) as r:
        times: dict[str, Any] = json.loads(r.read())
    return times


def deletes_not_from(times: dict[str, dict[str, Any]], names: Sequence[str],
                     arrivals: Sequence[Sequence[int]]) -> dict[str, int]:
    """Cross-check the notified stamps against what each venue kept (``venue_times``):
    every stamp of ``arrivals`` (one row per kill, in ``names`` order) must be among the
    venue's own. Returns, per venue, the DELETEs it saw beyond those: the kill verifier
    re-cancels when it still sees orders after the switch."""
    extra = {}
    for index, name in enumerate(names):
        kept = set(times[name]["delete_ns"])
        seen = [a[index] for a in arrivals]
        if not kept.issuperset(seen):
            raise Aborted(f"venue {name}: a notified stamp is not among the stamps kept")
        extra[name] = len(kept) - len(seen)
    return extra


# --- the venues' stamps: a datagram per DELETE /v2/orders parsed --------------------------


def open_notify(path: Path) -> socket.socket:
    """The datagram socket the venues send their stamps to (``--notify``; h11_venue's
    ``NOTIFY``: venue index, monotonic ns), bound at ``path`` with a 1 MiB buffer."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(path))
    notify.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return notify


def drain(notify: socket.socket) -> int:
    """Read and drop every stamp already queued; returns how many (strays: before t0)."""
    n = 0
    notify.setblocking(False)
    try:
        while True:
            notify.recv(64)
            n += 1
    except BlockingIOError:
        return n


def wait_arrivals(notify: socket.socket, t0: int, venues: int, wait_s: float, what: str
                  ) -> tuple[list[int], int]:
    """The first stamp at or after ``t0`` from each of ``venues`` venues, in venue order,
    within ``wait_s``; returns them and the stray stamps seen meanwhile (earlier than t0,
    or a venue's second). Raises Aborted, naming ``what``, when one does not come."""
    arrivals: list[int | None] = [None] * venues
    stray = 0
    deadline = time.monotonic() + wait_s
    notify.setblocking(True)
    while None in arrivals:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Aborted(f"{what}: DELETE /v2/orders not seen by every venue in {wait_s} s: "
                          f"{arrivals}")
        notify.settimeout(left)
        try:
            index, ns = NOTIFY.unpack(notify.recv(64))
        except TimeoutError:
            continue
        if ns >= t0 and arrivals[index] is None:
            arrivals[index] = ns
        else:
            stray += 1
    return [a for a in arrivals if a is not None], stray

# --- the daemon -------------------------------------------------------------------------


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



def write_desk_config(tmp: Path, urls: dict[str, str], *, heartbeat_s: float | None
                      ) -> tuple[Path, Path]:
    """``write_config`` at ``tmp/desk.toml``, state in ``tmp/state``, the control socket
    at ``tmp/control.sock``; returns (config path, socket path)."""
    config, sock = tmp / "desk.toml", tmp / "control.sock"
    write_config(config, state_dir=tmp / "state", socket_path=sock, venues=urls,
                 heartbeat_s=heartbeat_s)
    return config, sock

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



def start_perf(args: Sequence[str], out: Path, log: Path) -> subprocess.Popen[str]:
    """``perf record -q -k CLOCK_MONOTONIC ARGS -o OUT`` (the clock of every stamp here):
    ``args`` are its events and target (``-p PID,...`` or ``-a``). Stop it with SIGINT,
    which makes perf write its data file. Raises Aborted if perf exits at once."""
    proc = spawn(["perf", "record", "-q", "-k", "CLOCK_MONOTONIC", *args, "-o", str(out)],
                 log=log)
    time.sleep(1.0)  # perf attaches asynchronously; nothing to wait on but time
    if proc.poll() is not None:
        raise Aborted(f"perf record exited with {proc.returncode}: see {log}")
    return proc


def perf_ns(stamp: str) -> int:
    """A ``perf script --ns`` time (``SECONDS.NANOSECONDS``, a trailing colon allowed) in
    ns of CLOCK_MONOTONIC, the clock of every bench stamp (``perf record -k``)."""
    sec, _, frac = stamp.strip().rstrip(":").partition(".")
    return int(sec) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])


# --- the daemon's socket syscalls, as perf sees them --------------------------------------
#
# The kill's cancel-alls leave the daemon by two syscalls: the warm line's synchronous
# write (supervisor/venues/warmline.py ``send_cancel_nowait``: ``os.write`` on the socket's fd,
# the ``write`` syscall), and trio's ``send`` (``sendto``) when a line falls back to
# ``finish_cancel``'s ``send_all`` or to httpx. Both are traced, with their fd, so a
# DELETE is recognised by the connection it went to (``venue_sockets``) and its size.

SOCKET_SYSCALLS = ("write", "sendto", "recvfrom")
# The size argument's name in each syscall's sys_enter tracepoint.
_SIZE_ARG = {"write": "count", "sendto": "len", "recvfrom": "size"}


class Syscall(NamedTuple):
    """One syscall of a ``perf record`` of ``syscall_events()``: its entry and its exit
    (``exit_ns`` 0 and ``ret`` None when the exit was not recorded)."""

    pid: int
    tid: int
    name: str  # write, sendto, recvfrom
    fd: int
    size: int  # count (write), len (sendto), size (recvfrom)
    enter_ns: int
    exit_ns: int
    ret: int | None  # bytes written or read, or -errno


def syscall_events(names: Sequence[str] = SOCKET_SYSCALLS) -> list[str]:
    """``perf record`` arguments for the entry and exit of each syscall of ``names``."""
    return [arg for n in names for arg in ("-e", f"syscalls:sys_enter_{n}",
                                           "-e", f"syscalls:sys_exit_{n}")]


def _perf_int(text: str) -> int:
    value = int(text.strip(), 16) if text.strip().startswith("0x") else int(text.strip())
    return value - (1 << 64) if value >= 1 << 63 else value  # -errno comes as 0xfff...


def parse_syscalls(text: str, names: Sequence[str] = SOCKET_SYSCALLS) -> list[Syscall]:
    """The syscalls in ``perf script --ns -F pid,tid,time,event,trace`` text, e.g.::

     9589/9589  13460.929513236: syscalls:sys_enter_write: fd: 0x00000003, buf: 0x7f3560e6c590,
                                                                                count: 0x0000004d
     9589/9589  13460.929523442: syscalls:sys_exit_write: 0x4d

    (one line each in perf's output; the entry is folded here).

    An exit is paired with the last open entry of the same thread and syscall. Other
    events (context switches, ...) are skipped. In entry order."""
    calls: list[list[Any]] = []
    open_calls: dict[tuple[int, str], list[Any]] = {}
    for row in text.splitlines():
        head, sep, rest = row.partition("syscalls:sys_")
        if not sep:
            continue
        ids, _, stamp = head.strip().rpartition(" ")
        pid_s, _, tid_s = ids.strip().partition("/")
        event, _, args = rest.partition(": ")
        kind, _, name = event.strip().partition("_")
        if name not in names or not tid_s:
            continue
        ns, tid = perf_ns(stamp), int(tid_s)
        if kind == "enter":
            kv = dict(part.strip().split(": ", 1) for part in args.split(",") if ": " in part)
            call = [int(pid_s), tid, name, _perf_int(kv["fd"]), _perf_int(kv[_SIZE_ARG[name]]),
                    ns, 0, None]
            calls.append(call)
            open_calls[(tid, name)] = call
        elif kind == "exit" and (tid, name) in open_calls:
            call = open_calls.pop((tid, name))
            call[6], call[7] = ns, _perf_int(args)
    return [Syscall(*c) for c in calls]


def read_syscalls(data: Path, names: Sequence[str] = SOCKET_SYSCALLS) -> list[Syscall]:
    """``parse_syscalls`` of a ``perf record`` data file."""
    text = subprocess.run(["perf", "script", "-i", str(data), "--ns", "-F",
                           "pid,tid,time,event,trace"], capture_output=True, text=True,
                          check=True, timeout=300).stdout
    return parse_syscalls(text, names)


def venue_sockets(pid: int, urls: dict[str, str]) -> dict[int, str]:
    """fd -> venue name for every open TCP connection of process ``pid`` to a venue's
    port (``urls``: venue name -> ``http://127.0.0.1:PORT``), from /proc/PID/fd and
    /proc/PID/net/tcp{,6}: the warm lines and the httpx clients' connections alike.

    A snapshot: a connection opened after it is not in it (``venue_sockets_union``)."""
    ports = {int(url.rsplit(":", 1)[1].split("/")[0]): name for name, url in urls.items()}
    venue_of_inode: dict[str, str] = {}
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            port = int(cols[2].rsplit(":", 1)[1], 16)  # rem_address HEXIP:HEXPORT
            if port in ports and cols[3] == "01":  # ESTABLISHED
                venue_of_inode[cols[9]] = ports[port]
    out: dict[int, str] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:[") and link[8:-1] in venue_of_inode:
            out[int(fd)] = venue_of_inode[link[8:-1]]
    return out


def venue_sockets_union(snapshots: Sequence[dict[int, str]]) -> dict[int, str]:
    """The fds of several ``venue_sockets`` snapshots; an fd that went to two different
    venues (closed and reused) is dropped, as its writes cannot be attributed."""
    out: dict[int, str] = {}
    clash: set[int] = set()
    for snap in snapshots:
        for fd, name in snap.items():
            if out.setdefault(fd, name) != name:
                clash.add(fd)
    return {fd: name for fd, name in out.items() if fd not in clash}


class DeleteWrite(NamedTuple):
    """A DELETE /v2/orders the daemon wrote to a venue's connection (``delete_writes``)."""

    venue: str
    name: str  # write (the warm line's synchronous os.write) or sendto (send_all, httpx)
    enter_ns: int
    written_ns: int  # the syscall returned: the bytes are in the socket
    complete: bool  # all of the request in this one syscall


def delete_writes(calls: Sequence[Syscall], pid: int, fds: dict[int, str],
                  sizes: set[int]) -> list[DeleteWrite]:
    """The ``write``/``sendto`` syscalls of process ``pid`` on a venue connection
    (``fds``: fd -> venue, from ``venue_sockets``) whose size is one of ``sizes`` (the
    DELETE /v2/orders sizes the venues saw), in time order."""
    return [DeleteWrite(fds[c.fd], c.name, c.enter_ns, c.exit_ns, c.ret == c.size)
            for c in calls if c.pid == pid and c.name in ("write", "sendto")
            and c.fd in fds and c.size in sizes and c.exit_ns]


def first_delete_per_venue(writes: Sequence[DeleteWrite], write_ns: np.ndarray,
                           after: int, before: int, venues: Sequence[str]
                           ) -> list[DeleteWrite] | None:
    """Each venue's first DELETE written (syscall entered) in [after, before], in the
    order of ``venues``; None when a venue has none there. ``write_ns``: the writes'
    ``enter_ns`` as a sorted array."""
    found: dict[str, DeleteWrite] = {}
    k = int(np.searchsorted(write_ns, after))
    while k < len(writes) and writes[k].enter_ns <= before and len(found) < len(venues):
        found.setdefault(writes[k].venue, writes[k])
        k += 1
    if any(v not in found for v in venues):
        return None
    return [found[v] for v in venues]


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



# --- releasing the kill latch between two measured kills ---------------------------------


def expect_latched(killed: dict[str, Any], what: str) -> str:
    """Check a ``kill`` answer latched a new kill (desk HALTED); returns its incident id."""
    if killed["already_latched"] or killed["mode"] != "HALTED":
        raise Aborted(f"{what}: unexpected answer {killed}")
    incident: str = killed["incident_id"]
    return incident


def release_steps(incident: str, what: str, *, root_cause: str = "bench"
                  ) -> Generator[dict[str, Any], Any, None]:
    """Release the latch the real way, as a sequence of control requests: ``resolve`` the
    kill's incident with a root cause, ``reconcile`` (must be clean: the bench venues hold
    no positions), ``resume`` (must answer RECOVERING).

    Each request is yielded; send its result back in. ``release_latch`` drives it over a
    blocking ``LineClient``; an async bench drives it over its own client. Raises Aborted,
    naming ``what``, on an answer that is not the one expected."""
    yield {"cmd": "resolve", "id": incident, "root_cause": root_cause}
    rec = yield {"cmd": "reconcile"}
    if not rec["clean"]:
        diffs = rec["differences"]
        raise Aborted(f"{what}: reconciliation not clean: {len(diffs)} difference(s), "
                      f"first {diffs[:2]}")
    resumed = yield {"cmd": "resume", "verified_nonprod": True}
    if resumed["mode"] != "RECOVERING":
        raise Aborted(f"{what}: resume left the desk in {resumed['mode']}")


def release_latch(client: LineClient, incident: str, what: str, *,
                  root_cause: str = "bench") -> None:
    """``release_steps`` over a blocking control connection."""
    steps = release_steps(incident, what, root_cause=root_cause)
    answer = None
    with contextlib.suppress(StopIteration):
        while True:
            answer = client.request(steps.send(answer))

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



def per_block_p50(values_ns: Sequence[int], block: int = 100) -> list[float]:
    """p50 in ms of each run of ``block`` consecutive samples: does the run drift?"""
    return [summary_ms(values_ns[k:k + block])["p50"] for k in range(0, len(values_ns), block)]


def per_block_line(p50s: Sequence[float], unit: str, block: int = 100) -> str:
    """``p50 per 100 kills (ms): ...`` for the values of ``per_block_p50``."""
    return f"p50 per {block} {unit} (ms): " + " ".join(f"{x:.3f}" for x in p50s)


def machine_line(m: dict[str, str]) -> str:
    """The ``machine()`` a run was measured on, in one line."""
    return (f"machine: {m['nproc']} cpu {m['cpu']}, python {m['python']}, linux {m['kernel']},"
            f" {m['date']}, product source {m['source']}, load {m['loadavg_1m']}")


def others_line(cpu: dict[str, float]) -> str:
    """``CpuWatch.foreign()`` in one line: how busy other processes kept the machine."""
    return (f"other processes on the machine during the run: {cpu['others_s']:.1f} CPU-s in "
            f"{cpu['wall_s']:.0f} s ({cpu['others_cores']:.2f} cores; ours "
            f"{cpu['ours_s']:.1f} CPU-s)")


def target_line(p99_ms: float, target_ms: float) -> str:
    """``target p99 < 2 ms: MET (p99 1.234 ms)``."""
    verdict = "MET" if p99_ms < target_ms else "MISSED"
    return f"target p99 < {target_ms:g} ms: {verdict} (p99 {p99_ms:.3f} ms)"


def event_loop_lines(ev: dict[str, Any], unit: str, top: int) -> list[str]:
    """``--steps``: the ``top`` tasks by time inside the measured windows (us and steps
    per ``unit``), then the timeline of the median one; lines indented for a report."""
    lines = [f"    {us:8.1f} us  {steps:5.2f} steps/{unit}  {name}"
             for name, steps, us in ev["per_task"][:top]]
    lines.append(f"  timeline of the median {unit} (start after t0, step duration, task):")
    return lines + ["    " + row for row in ev["median_kill_timeline"]]


def timed_calls_lines(calls: dict[str, dict[str, Any]], window: str, unit: str) -> list[str]:
    """``calls_in_windows`` as report lines: the timed functions inside ``window``."""
    lines = [f"  timed functions inside {window} (calls and us per {unit}; median us "
             "per call over the run):"]
    return lines + [f"    {name:28s} {c['calls_per_window']:5.2f} calls "
                    f"{c['us_per_window']:8.1f} us   (median {c['median_us_per_call']:.1f} us "
                    f"per call, {c['calls_in_run']} calls)" for name, c in calls.items()]

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



# --- the command line and the run ---------------------------------------------------------


def add_run_options(ap: argparse.ArgumentParser, *, unit: str, warmup: int,
                    max_seconds: float, gap_after: str, count: int | None = None,
                    bounds: str = "the run", scope: str = "") -> None:
    """The options every kill benchmark has: ``--kills`` (``--presses``: ``unit`` in the
    plural; only when ``count`` is given, its default), ``--warmup``, ``--gap-ms``,
    ``--heartbeat-s``, ``--wait-s``, ``--max-seconds``, ``--out`` and ``--keep``.

    ``gap_after``: what the gap follows; ``bounds``: what ``--max-seconds`` bounds;
    ``scope``: a prefix for every help text (``"e2e: "``: only in that mode)."""
    units = unit + ("es" if unit.endswith("s") else "s")  # kill -> kills, press -> presses
    if count is not None:
        ap.add_argument(f"--{units}", type=int, default=count,
                        help=f"{scope}measured {units} (default {count})")
    ap.add_argument("--warmup", type=int, default=warmup,
                    help=f"{scope}{units} first, not counted")
    ap.add_argument("--gap-ms", type=float, default=10.0,
                    help=f"{scope}idle time after {gap_after}, before the next {unit}")
    ap.add_argument("--heartbeat-s", type=float, default=1.0,
                    help=f"{scope}the venues' [heartbeat] interval_s")
    ap.add_argument("--wait-s", type=float, default=5.0,
                    help=f"{scope}bound on every single wait")
    ap.add_argument("--max-seconds", type=float, default=max_seconds,
                    help=f"{scope}bound on {bounds}")
    ap.add_argument("--out", help=f"{scope}write the results (with raw stamps) to this "
                                  "JSON file")
    ap.add_argument("--keep", action="store_true",
                    help=f"{scope}keep the temp dir (logs, journal)")



def add_trace_options(ap: argparse.ArgumentParser, *, unit: str, perf: str, sched: str,
                      window: str, traced_daemon: bool, pin: str | None = None,
                      scope: str = "") -> None:
    """The flags that show where the time goes (their numbers are not of record):

    - ``--perf``: ``perf record`` of ``perf`` (which syscalls of which process);
    - ``--sched``: every context switch on the machine, to show ``sched``; with
      ``traced_daemon`` it widens ``--perf``'s trace, otherwise it is a trace of its own;
    - ``--steps``: every trio task step (``traced_daemon``: by running
      bench/traced_daemon.py), to show what the event loop ran ``window``;
    - ``--pin`` (when ``pin`` is given): the experiment of pinning ``pin``.

    ``unit`` is what is measured (kill, press); ``scope`` prefixes every help text."""
    units = unit + ("es" if unit.endswith("s") else "s")
    texts = {
        "--perf": f"also trace {perf} with perf record during the measured {units}",
        "--sched": ("with --perf: trace the whole machine with its context switches"
                    if traced_daemon else "also record every context switch on the machine "
                    "(perf record -a sched:sched_switch)") + f" and show {sched}",
        "--steps": ("run bench/traced_daemon.py" if traced_daemon else
                    "record every trio task step") + f" and show what the event loop ran "
                   f"{window} (numbers then are not of record)",
        "--pin": None if pin is None else f"experiment: {pin}",
    }
    for flag, text in texts.items():
        if text is not None:
            ap.add_argument(flag, action="store_true", help=scope + text)


def require_perf(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse ``--perf`` / ``--sched`` at once when perf is not on PATH."""
    if (args.perf or args.sched) and shutil.which("perf") is None:
        ap.error("--perf and --sched need perf on PATH")

def first_aborted(exc: BaseException) -> Aborted | None:
    """The Aborted inside ``exc`` (trio wraps what a nursery's child raised)."""
    if isinstance(exc, Aborted):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_aborted(inner)
            if found is not None:
                return found
    return None


def run_in_temp_dir(name: str, prefix: str, run: Callable[[Path], T], *, keep: bool
                    ) -> T | None:
    """``run(tmp)`` in a fresh temp dir, removed afterwards unless ``keep``.

    An Aborted (also inside an exception group) prints one line to stderr naming ``name``
    and the kept logs, and returns None; any other error keeps the logs and rises."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        result = run(tmp)
    except BaseException as exc:
        aborted = first_aborted(exc)
        if aborted is None:
            print(f"{name}: logs kept in {tmp}", file=sys.stderr)
            raise
        print(f"{name}: aborted: {aborted} (logs in {tmp})", file=sys.stderr)
        return None
    if keep:
        print(f"{name}: kept {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return result



def run_and_report(name: str, prefix: str, run: Callable[[Path], dict[str, Any]],
                   report: Callable[[dict[str, Any]], None], *, keep: bool,
                   out: str | None) -> int:
    """A bench's whole run: ``run_in_temp_dir``, then ``report`` the result on stdout and
    write it to ``out`` (``--out``). Returns the exit status: 1 if the run was aborted."""
    result = run_in_temp_dir(name, prefix, run, keep=keep)
    if result is None:
        return 1
    report(result)
    write_results(out, result)
    return 0

def write_results(path: str | None, result: dict[str, Any]) -> None:
    """``--out``: the whole result as JSON (nothing when ``path`` is None)."""
    if path:
        Path(path).write_text(json.dumps(result))

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
if __name__ == "__main__":
    # python bench/_harness.py idle [limit] [max_wait_s]: wait for an idle machine.
    if len(sys.argv) >= 2 and sys.argv[1] == "idle":
        got = wait_idle(float(sys.argv[2]) if len(sys.argv) > 2 else 0.10,
                        max_wait_s=float(sys.argv[3]) if len(sys.argv) > 3 else 300.0)
        print(f"machine busy {got['busy']:.2f} after waiting {got['waited_s']:.0f} s "
              f"({'idle' if got['idle'] else 'NOT idle: gave up waiting'})", flush=True)


def ratio_lines(results: dict[str, np.ndarray], floor: str, unit: str = "ms") -> list[str]:
    """One line per timed step (nanoseconds): p50, p99 and the p50's ratio to the p50 of
    the step named ``floor`` (measured in the same run)."""
    scale = {"us": 1e3, "ms": 1e6}[unit]
    base = float(np.percentile(results[floor], 50))
    width = max(len(name) for name in results)
    out = []
    for name, ns in results.items():
        p50, p99 = (float(np.percentile(ns, q)) for q in (50, 99))
        out.append(f"  {name:{width}s} p50 {p50 / scale:9.1f} {unit}  p99 {p99 / scale:9.1f} "
                   f"{unit}  p50 / floor {p50 / base:6.2f}")
    return out
