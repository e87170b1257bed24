"""The service manager's notify protocol (sd_notify(3)): READY, STATUS, STOPPING, WATCHDOG.

One datagram of newline-separated ``KEY=VALUE`` fields to the ``AF_UNIX``/``SOCK_DGRAM``
socket named by ``$NOTIFY_SOCKET``: a file-system path, or a name in the abstract namespace
when it starts with ``@``. ``$WATCHDOG_USEC`` / ``$WATCHDOG_PID`` say whether systemd
expects ``WATCHDOG=1`` keep-alives and how often (sd_watchdog_enabled(3): every half of
the period).

No third-party package: the ``sdnotify`` one swallows socket errors. Here a
failed send is logged and counted (``Notifier.errors``) and never raised, so a broken
notify socket can neither crash the daemon nor stall it.

Every send is a non-blocking ``sendto`` on a datagram socket: it either hands the datagram
to the kernel at once or fails at once (``EAGAIN`` when the manager stops reading). That
is why this module keeps a plain non-blocking socket rather than a ``trio.socket`` one,
whose ``sendto`` would wait for buffer space: a supervisor on its kill path, or one being
cancelled on its way out (``STOPPING=1``), must never wait on the service manager. The sync
senders (``send_nowait`` and the helpers) also work inside a cancelled scope; ``send`` is
their checkpointing twin for loops.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable, Mapping
from types import TracebackType

import trio

log = logging.getLogger("desk.sdnotify")

# systemd reads notifications into a PIPE_BUF buffer (NOTIFY_BUFFER_MAX in its
# src/core/manager.c) and ignores a longer datagram whole, READY=1 included.
MAX_DATAGRAM = 4096
# STATUS= is one line in `systemctl status`; longer text is cut here, with an ellipsis.
MAX_STATUS_CHARS = 1024


class Notifier:
    """A datagram socket aimed at the service manager's ``$NOTIFY_SOCKET``.

    Made by ``open_notifier``; close it with ``close()`` or ``with``. Counters for metrics:
    ``sent``, ``errors`` and ``last_error`` (``None`` once a send succeeds again).
    """

    def __init__(self, address: str) -> None:
        """Open a socket for ``address`` (``/path`` or ``@abstract``); nothing is sent yet.

        Raises:
            ValueError: ``address`` is neither an absolute path nor ``@name``.
            OSError: the socket could not be created.
        """
        if address.startswith("@") and len(address) > 1:
            # Abstract namespace: a leading NUL instead of the '@' (sd_notify(3)).
            self._target: bytes = b"\0" + os.fsencode(address[1:])
        elif address.startswith("/"):
            self._target = os.fsencode(address)
        else:
            raise ValueError(f"NOTIFY_SOCKET {address!r} is neither an absolute path nor @name")
        self.address = address
        self.sent = 0
        self.errors = 0
        self.last_error: str | None = None
        self._last_errno: int | None = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)

    # --- sending ------------------------------------------------------------------------

    def send_nowait(self, *fields: str) -> bool:
        """Send ``fields`` (``"KEY=VALUE"`` each) as one datagram, without blocking.

        Line breaks inside a field become spaces (one field is one assignment: a status
        text cannot smuggle in ``READY=1``); ``STATUS=`` values are cut to fit the
        manager's buffer. Never raises on a socket error: it is logged (once per kind of
        failure) and counted, and ``False`` is returned.

        Raises:
            ValueError: a field is not ``KEY=VALUE`` (a bug at the call site).
        """
        data = _encode(fields)
        try:
            self._sock.sendto(data, self._target)
        except OSError as exc:
            self._failed(exc)
            return False
        self.sent += 1
        if self.last_error is not None:
            log.info("notify socket %s: sends work again", self.address)
        self.last_error = None
        self._last_errno = None
        return True

    async def send(self, *fields: str) -> bool:
        """``send_nowait`` with trio checkpoints around it (for loops).

        On cancel: raises ``Cancelled`` before sending, or sends and returns; it never
        waits on the service manager. Use the sync helpers on a cancelled shutdown path.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        ok = self.send_nowait(*fields)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return ok

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (and ``STATUS=``): start-up is complete. Sync and non-blocking."""
        return self.send_nowait("READY=1", *_status_field(status))

    def status(self, text: str) -> bool:
        """``STATUS=text``: shown by ``systemctl status``. Sync and non-blocking."""
        return self.send_nowait(*_status_field(text))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1`` (and ``STATUS=``): a clean stop has begun. Sync, non-blocking,
        and usable inside a cancelled scope."""
        return self.send_nowait("STOPPING=1", *_status_field(status))

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC``: the start (or stop) may take ``seconds`` more from
        now; sent while the journal is replayed. Sync and non-blocking."""
        return self.send_nowait(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: one keep-alive. Sync and non-blocking."""
        return self.send_nowait("WATCHDOG=1")

    def _failed(self, exc: OSError) -> None:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if exc.errno != self._last_errno:
            # Once per kind of failure: a watchdog pinging a vanished socket every few
            # seconds must not flood the journal. `errors` still counts every one.
            hint = {
                errno.ENOENT: "the socket does not exist",
                errno.ECONNREFUSED: "nothing is listening on it",
                errno.EAGAIN: "the service manager is not reading (datagram dropped)",
            }.get(exc.errno or 0, "")
            log.warning("notify socket %s: send failed: %s%s", self.address, exc,
                        f" ({hint})" if hint else "")
        self._last_errno = exc.errno

    # --- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the socket; safe to call twice."""
        self._sock.close()

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_notifier(environ: Mapping[str, str] = os.environ) -> Notifier | None:
    """The notifier for ``$NOTIFY_SOCKET``, or ``None`` when not started by systemd with
    ``Type=notify`` (unset or empty) or when the variable cannot be used (logged)."""
    address = environ.get("NOTIFY_SOCKET", "")
    if not address:
        return None
    try:
        return Notifier(address)
    except (ValueError, OSError) as exc:
        log.warning("cannot notify the service manager: %s", exc)
        return None


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between two ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``.

    ``None`` when no watchdog is expected from this process: ``WATCHDOG_USEC`` unset, not
    a positive integer, or ``WATCHDOG_PID`` set to another process (sd_watchdog_enabled(3):
    the pings are expected only if it is unset or equals our pid).
    """
    usec_text = environ.get("WATCHDOG_USEC", "")
    if not usec_text:
        return None
    pid_text = environ.get("WATCHDOG_PID", "")
    if pid_text:
        try:
            pid = int(pid_text)
        except ValueError:
            log.warning("WATCHDOG_PID %r is not a pid: no watchdog pings", pid_text)
            return None
        if pid != os.getpid():
            log.info("the watchdog is meant for pid %d, not this one (%d): no pings",
                     pid, os.getpid())
            return None
    try:
        usec = int(usec_text)
    except ValueError:
        usec = 0
    if usec <= 0:
        log.warning("WATCHDOG_USEC %r is not a positive integer: no watchdog pings", usec_text)
        return None
    # sd_watchdog_enabled(3): "send a keep-alive notification ... every half of the time".
    return usec / 1_000_000 / 2


async def run_watchdog(
    notifier: Notifier,
    interval_s: float,
    alive: Callable[[], bool],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Send ``WATCHDOG=1`` every ``interval_s`` while ``alive()`` is true, until cancelled.

    ``alive`` must prove progress (every critical actor and the main loop have moved since
    the last call), not merely that this timer runs (freqtrade #5227, process
    up, bot stalled). While it returns ``False``, or raises, no ping is sent, so systemd's
    ``WatchdogSec=`` runs out and it restarts the daemon; pings resume if it recovers first.
    Ticks are on absolute deadlines (no drift); the first is at once. Started (for
    ``nursery.start``) after the first tick. Send errors are the notifier's: logged and
    counted, never raised.
    """
    if interval_s <= 0:
        raise ValueError(f"watchdog interval must be > 0, got {interval_s}")
    deadline = trio.current_time()
    withholding = False
    started = False
    while True:
        try:
            ok = bool(alive())
        except Exception:
            log.exception("watchdog: the liveness check raised; counted as not alive")
            ok = False
        if ok:
            if withholding:
                log.warning("watchdog: alive again, pings resume")
            withholding = False
            notifier.watchdog()
        elif not withholding:
            log.error("watchdog: not alive, withholding WATCHDOG=1 so systemd restarts us")
            withholding = True
        if not started:
            task_status.started()
            started = True
        deadline += interval_s
        await trio.sleep_until(deadline)


def _status_field(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    if len(text) > MAX_STATUS_CHARS:
        text = text[: MAX_STATUS_CHARS - 1] + "…"
    return (f"STATUS={text}",)


def _encode(fields: tuple[str, ...]) -> bytes:
    clean = []
    for field in fields:
        if "=" not in field or field.startswith("="):
            raise ValueError(f"notify field {field!r} is not KEY=VALUE")
        # systemd splits a datagram on "\n" and "\r" (manager_invoke_notify_message).
        clean.append(field.replace("\r\n", " ").replace("\n", " ").replace("\r", " "))
    data = "\n".join(clean).encode()
    if len(data) <= MAX_DATAGRAM:
        return data
    # Too long for the manager's buffer: cut the STATUS= values (the only free text) so
    # that READY=1 / STOPPING=1 still arrive.
    fixed = [f for f in clean if not f.startswith("STATUS=")]
    statuses = [f for f in clean if f.startswith("STATUS=")]
    overhead = len("\nSTATUS=…".encode())  # per cut field: separator, key, ellipsis
    budget = MAX_DATAGRAM - len("\n".join(fixed).encode()) - len(statuses) * overhead
    cut = []
    for f in statuses:
        value = f[len("STATUS="):].encode()[: max(budget // len(statuses), 0)]
        # errors="ignore" drops a multi-byte character split by the cut.
        cut.append("STATUS=" + value.decode(errors="ignore") + "…")
    data = "\n".join(fixed + cut).encode()
    if len(data) > MAX_DATAGRAM:
        raise ValueError(f"notify message of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    return data
