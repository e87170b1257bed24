"""The control socket: a Unix stream socket speaking newline-delimited JSON (docs/protocol.md).

Each connection is served in order: one response line per request line. A line longer
than ``max_request_bytes``, invalid JSON, an unknown command or bad arguments gets an
error response; nothing is applied from a rejected request, and the connection and the
daemon stay usable. The socket file is created with mode ``socket_mode`` (0660).
"""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import socket as stdsocket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import trio

from supervisor.control.authz import Caller, authorize
from supervisor.core import protocol as p
from supervisor.core.errors import ControlError, DeskError, DrillRefused, JournalError
from supervisor.core.events import AuditNoted
from supervisor.ops import credentials, reports
from supervisor.playbook import RUNBOOKS, TREES, checklists, walk
from supervisor.playbook.drills import run_drill
from supervisor.runtime.desk import Desk

log = logging.getLogger("desk.control")

_PEERCRED = struct.Struct("3i")


async def open_control_listener(
    path: str | Path, mode: int, group: str = ""
) -> trio.SocketListener:
    """Bind the control socket at ``path`` with ``mode`` (and ``group``); refuse if a live
    daemon owns it.

    Raises:
        DeskError: another process is answering on the socket, it cannot be bound, or
            the group does not exist.
    """
    path = Path(path)
    gid = -1
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise DeskError(f"control.socket_group {group!r} is not a group on this host"
                            ) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        probe = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
        try:
            await probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: left by a daemon that died
        else:
            raise DeskError(f"control socket {path} is in use by a running daemon")
        finally:
            probe.close()
    sock = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    try:
        # Bind under a umask that never lets the socket exist more open than asked.
        old = os.umask(0o777 & ~mode)
        try:
            await sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, mode)
        if gid != -1:
            os.chown(path, -1, gid)
        # A deep backlog: a burst of connections (engines reconnecting, or a flood)
        # queues instead of failing a `deskctl kill` with EAGAIN (clients retry too).
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise DeskError(f"cannot bind control socket {path}: {exc.strerror}") from exc
    return trio.SocketListener(sock)


def peer_caller(stream: trio.SocketStream) -> Caller:
    try:
        raw = stream.socket.getsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_PEERCRED,
                                       _PEERCRED.size)
        pid, uid, gid = _PEERCRED.unpack(raw)
        return Caller(uid=uid, gid=gid, pid=pid)
    except OSError:
        return Caller()


async def check_monitor(desk: Desk, monitor: p.MonitorName) -> dict[str, Any]:
    """Run ``monitor``'s check now and return its status (the ``check`` command).

    ``drift``: the feature PSI check (``status.model``); ``pnl``: the backtest band and
    slippage (``status.pnl``); ``config_drift``: the live configs against the deployed
    ref (``status.config_drift``). A finding it makes opens its incident as at the
    monitor's scheduled run.
    """
    match monitor:
        case "drift":
            await desk.model.check_drift()
            return desk.model.status()
        case "pnl":
            await desk.pnl.check()
            return desk.pnl.status()
        case "config_drift":
            if desk.config_drift.files:  # none configured: nothing to run git for
                await desk.config_drift.check()
            return desk.config_drift.status()
        case "ks":  # the hourly prediction-distribution KS monitor
            await desk.model.check_predictions()
            return desk.model.status()
        case "churn":  # the weekly feature-importance churn monitor
            await desk.model.check_churn()
            return desk.model.status()
    raise ControlError("bad_request", f"unknown monitor {monitor!r}")


class _Dropped(Exception):
    """A connection the server closes for breaking a deadline (``reason``: counted)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# Refusals and drops are logged at most this often per reason, with the count since.
LOG_EVERY_S = 10.0
# The longest first line read from a connection over the limit: a kill's reason is at
# most 4096 characters, which JSON-escaped is under 25 KiB.
TRIAGE_LINE_BYTES = 64 * 1024
# Connections over the limit being read for a kill at once; past this a flood of
# connects is closed unread, so it cannot run the daemon out of file descriptors.
MAX_TRIAGE = 1024


class ControlServer:
    """Serves the control protocol for one desk.

    Every connection's work is contained: whatever one connection sends, or however it
    fails, ends that connection at worst, never the server (docs/protocol.md,
    "Guarantees"). Over ``max_connections`` a new connection may still send one `kill`.
    """

    def __init__(self, desk: Desk) -> None:
        self.desk = desk
        control = desk.config.control
        self.max_line = control.max_request_bytes
        self.max_connections = control.max_connections
        self.idle_timeout_s = control.idle_timeout_s
        self.line_timeout_s = control.line_timeout_s
        self.send_timeout_s = control.send_timeout_s
        self.triage_timeout_s = control.triage_timeout_s
        self.connections = 0
        self.triaging = 0
        self.stats = desk.control_stats
        self._logged_at: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    async def serve(
        self, listener: trio.SocketListener, *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with listener, trio.open_nursery() as nursery:
            task_status.started()
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        self._note("accept_failed", f"control socket accept failed: {exc}; "
                                   "retrying", level=logging.ERROR)
                        await trio.sleep(0.1)
                        continue
                    raise
                self.stats["accepted"] += 1
                if self.connections >= self.max_connections:
                    if self.triaging >= MAX_TRIAGE:
                        self._note("refused_too_many",
                                   f"closed a connection unread: {MAX_TRIAGE} over the limit "
                                   "are already being read")
                        stream.socket.close()
                        continue
                    self.triaging += 1  # counted now: a burst cannot slip past the limit
                    nursery.start_soon(self._triage, stream)
                    continue
                self.connections += 1  # counted at accept: a burst cannot exceed the limit
                nursery.start_soon(self.handle, stream)

    def _note(self, reason: str, message: str, *, level: int = logging.WARNING) -> None:
        """Count ``reason`` and log ``message``, at most once per LOG_EVERY_S per reason
        (a flood of refusals must not become a flood of log lines)."""
        self.stats[reason] += 1
        now = trio.current_time()
        last = self._logged_at.get(reason)
        if last is not None and now - last < LOG_EVERY_S:
            self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
            return
        self._logged_at[reason] = now
        more = self._unlogged.pop(reason, 0)
        log.log(level, "control: %s%s", message,
                f" (and {more} more like it in the last {LOG_EVERY_S:g} s)" if more else "")

    async def _send(self, stream: trio.SocketStream, data: bytes) -> None:
        """Write ``data`` within ``send_timeout_s``.

        Raises:
            _Dropped: the client did not take it in time (it stopped reading).
        """
        with trio.move_on_after(self.send_timeout_s):
            await stream.send_all(data)
            return
        raise _Dropped("dropped_not_reading",
                       f"a client did not read its response within {self.send_timeout_s:g} s; "
                       "connection dropped")

    async def _triage(self, stream: trio.SocketStream) -> None:
        """A connection over the limit: serve it one `kill`, refuse anything else.

        The kill-switch stays reachable however many connections are held open: the
        first line is read for ``triage_timeout_s``; a `kill` is served like on any
        connection (access control included), then the connection is closed.
        """
        try:
            with self._contained("serving a connection over the limit failed"):
                async with stream:
                    line = None
                    with trio.move_on_after(self.triage_timeout_s):
                        line = await _first_line(stream, TRIAGE_LINE_BYTES)
                    response = None
                    if line is not None:
                        with contextlib.suppress(p.ProtocolError):
                            if isinstance(p.decode_request(line), p.Kill):
                                self._note("kill_over_limit",
                                           f"served a kill on a connection over the limit of "
                                           f"{self.max_connections}")
                                response = await self._dispatch_contained(
                                    line, peer_caller(stream), stream)
                    if response is None:
                        self._note("refused_too_many",
                                   f"refused a connection: {self.max_connections} connections "
                                   "are open (control.max_connections)")
                        response = p.error(
                            "too_many_connections",
                            f"the supervisor serves at most {self.max_connections} connections; "
                            "close one and retry (a `kill` is always served)")
                    await self._send(stream, response)
        finally:
            self.triaging -= 1

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one connection until it closes, idles, stalls or stops reading.

        Nothing raised while serving it leaves this method (but cancellation): a bug is
        logged with its traceback and ends this connection only. The caller counted it
        in ``connections`` when it accepted it; it is uncounted here when it ends.
        """
        try:
            with self._contained("a connection failed and was closed"):
                async with stream:
                    await self._serve_lines(stream, peer_caller(stream))
        finally:
            self.connections -= 1

    @contextlib.contextmanager
    def _contained(self, failed: str) -> Iterator[None]:
        """End one connection's work whatever it raised (but cancellation): a closed or
        broken connection quietly, a broken deadline counted and logged, anything else
        as a bug with its traceback (``failed`` says what failed)."""
        try:
            yield
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except _Dropped as exc:
            self._note(exc.reason, str(exc))
        except Exception:
            self.stats["internal_error"] += 1
            log.exception("control: %s", failed)

    async def _serve_lines(self, stream: trio.SocketStream, caller: Caller) -> None:
        buf = bytearray()
        discarding = False
        line_started: float | None = None  # when the line in progress began
        while True:
            # Between lines the client may idle; a line begun must end in time.
            deadline = (trio.current_time() + self.idle_timeout_s if line_started is None
                        else line_started + self.line_timeout_s)
            data: bytes | None = None
            with trio.move_on_at(deadline):
                data = await stream.receive_some(65536)
            if data is None and line_started is None:
                self._note("dropped_idle", f"closed a connection idle for "
                           f"{self.idle_timeout_s:g} s", level=logging.INFO)
                return
            if data is None:
                raise _Dropped("dropped_stalled",
                               f"a request line was not finished within "
                               f"{self.line_timeout_s:g} s; connection dropped")
            if not data:
                return  # closed by the client
            buf += data
            start = 0
            while True:
                nl = buf.find(b"\n", start)
                if nl < 0:
                    break
                line = bytes(buf[start:nl])
                start = nl + 1
                if discarding:
                    discarding = False  # the tail of an oversized line
                    continue
                if len(line) > self.max_line:
                    await self._send(stream, self._too_large())
                    continue
                if not line.strip():
                    continue
                response = await self._dispatch_contained(line, caller, stream)
                if response is None:
                    return  # the connection became a watch stream and ended
                await self._send(stream, response)
            if start:
                line_started = None  # the lines so far are served; a new one may begin
            del buf[:start]
            if len(buf) > self.max_line:
                if not discarding:
                    await self._send(stream, self._too_large())
                discarding = True
                buf.clear()
            if (buf or discarding) and line_started is None:
                line_started = trio.current_time()

    async def _dispatch_contained(
        self, line: bytes, caller: Caller, stream: trio.SocketStream
    ) -> bytes | None:
        """``dispatch``, with any exception it lets out answered as ``internal_error``."""
        try:
            return await self.dispatch(line, caller, stream)
        except (_Dropped, trio.BrokenResourceError, trio.ClosedResourceError):
            raise  # the connection itself is gone: nothing left to answer
        except Exception as exc:
            self.stats["internal_error"] += 1
            log.exception("control: a request failed inside the supervisor")
            return p.error("internal_error", f"the request failed inside the supervisor: "
                           f"{type(exc).__name__}: {exc}; check status")

    def _too_large(self) -> bytes:
        return p.error("request_too_large",
                       f"request line exceeds {self.max_line} bytes; nothing was applied")

    async def dispatch(
        self, line: bytes, caller: Caller, stream: trio.SocketStream
    ) -> bytes | None:
        """Serve one request line; returns the response line (None: stream ended)."""
        try:
            req = p.decode_request(line)
        except p.ProtocolError as exc:
            return p.error(exc.code, exc.message, **exc.detail)
        desk = self.desk
        cmd = type(req).__struct_config__.tag
        denied = authorize(str(cmd), caller, desk.config.control)
        if denied is not None:
            log.warning("control: refused %s for %s: %s", cmd, caller.actor, denied)
            return p.error("forbidden", denied)
        try:
            result: Any
            match req:
                case p.TelemetryBatch(events=events):
                    desk.book.ingest(events)
                    result = {"accepted": len(events)}
                case p.Status():
                    result = desk.status()
                case p.Incidents(all=everything):
                    result = await desk.postmortems.incidents(everything)
                case p.Kill(reason=reason):
                    result = await desk.kill(reason, actor=caller.actor)
                case p.AckIncident(id=incident_id, commander=commander):
                    result = await desk.ack(incident_id, caller=caller, commander=commander)
                case p.Resolve(id=incident_id, root_cause=root_cause):
                    result = await desk.resolve(incident_id, root_cause, caller=caller)
                case p.Resume(verified_nonprod=verified):
                    result = await desk.resume(caller=caller, verified_nonprod=verified)
                case p.Throttle(multiplier=multiplier, reason=reason):
                    result = await desk.throttle(multiplier, reason, caller=caller)
                case p.Reconcile():
                    result = msgspec.to_builtins(await desk.reconcile(caller=caller))
                case p.Alerts():
                    result = desk.alerts.status()
                case p.AlertNoise():
                    result = {"threshold": desk.alerts.config.w2_noise_threshold,
                              "alerts": desk.alerts.noise_report(desk.wall())}
                case p.CheckMonitor(monitor=monitor):
                    result = await check_monitor(desk, monitor)
                case p.Report(kind=kind, feature=feature):
                    result = (reports.pnl_band(desk) if kind == "pnl-band"
                              else reports.drift(desk, feature))
                    if "error" in result:
                        raise ControlError(result["code"], result["error"])
                case p.Freshness():
                    result = {"active_vendor": desk.freshness.active_vendor,
                              "symbols": desk.freshness.table()}
                case p.HaltSymbol(symbol=symbol, reason=reason, resumed=resumed):
                    if not resumed and not reason.strip():
                        raise ControlError("bad_request",
                                           "symbol_halt needs a reason (what halted it)")
                    try:
                        desk.freshness.halt_symbol(symbol, reason, actor=caller.actor,
                                                   resumed=resumed)
                    except ValueError as exc:
                        raise ControlError("bad_request", str(exc)) from None
                    await desk.submit(AuditNoted(
                        ts=desk.wall(), actor=caller.actor,
                        text=f"{'end of halt' if resumed else 'halt'} reported for {symbol}: "
                             f"{reason}"))
                    result = {"symbol": symbol, "halted": not resumed, "reason": reason}
                case p.WalkTree(id=tree_id, answers=answers):
                    try:
                        result = msgspec.to_builtins(walk(TREES[tree_id], answers,
                                                          desk.status()))
                    except ValueError as exc:
                        raise ControlError("bad_request", str(exc)) from None
                case p.ShowRunbook(id=None):
                    result = [msgspec.to_builtins(r) for r in RUNBOOKS.values()]
                case p.ShowRunbook(id=runbook_id):
                    if runbook_id not in RUNBOOKS:
                        raise ControlError("not_found", f"no runbook {runbook_id!r}; runbooks: "
                                           + ", ".join(RUNBOOKS))
                    result = msgspec.to_builtins(RUNBOOKS[runbook_id])
                case p.Gates():
                    result = [msgspec.to_builtins(r) for r in await desk.arming.evaluate()]
                case p.AttestGate(gate=gate, note=note):
                    result = await desk.arming.attest(gate, note, actor=caller.actor)
                case p.Arm():
                    result = await desk.arming.arm(caller=caller)
                case p.Disarm(reason=reason):
                    result = await desk.arming.disarm(reason, actor=caller.actor)
                case p.RunbookStart(id=runbook_id, incident=incident):
                    result = await checklists.start(desk, runbook_id, incident_id=incident,
                                                    caller=caller)
                case p.RunbookDone(run=run_id, step=step, note=note):
                    result = await checklists.done(desk, run_id, step, note, caller=caller)
                case p.RunbookVerify(run=run_id, commit=commit, attest=attest):
                    result = await checklists.verify(desk, run_id, commit=commit,
                                                     attest=attest, caller=caller)
                case p.RunbookClose(run=run_id, abandon=abandon):
                    result = await checklists.close(desk, run_id, abandon=abandon,
                                                    caller=caller)
                case p.RunbookRuns(all=everything, run=run_id):
                    result = (checklists.show(desk, run_id) if run_id is not None
                              else checklists.runs(desk, everything=everything))
                case p.Credentials():
                    result = credentials.credentials_status(desk)
                case p.CredentialsStage(venue=venue, key_id=key_id, secret_key=secret,
                                        activate_at=activate_at):
                    result = await credentials.stage(desk, venue, key_id, secret, activate_at,
                                                     caller=caller)
                case p.CredentialsCheck(venue=venue):
                    result = await credentials.check(desk, venue, caller=caller)
                case p.CredentialsActivate(venue=venue):
                    result = await credentials.activate(desk, venue, caller=caller)
                case p.CredentialsRevoke(venue=venue):
                    result = await credentials.revoke(desk, venue, caller=caller)
                case p.Route(venue=venue, reason=reason):
                    result = await desk.set_route(venue, reason, actor=caller.actor)
                case p.CalendarShow(refresh=refresh, days=days):
                    if refresh:
                        await desk.calendar.refresh()
                    result = desk.calendar.status(days)
                case p.Flatten(reason=reason, symbols=symbols, venue=venue, force=force):
                    result = await desk.flatten(caller=caller, reason=reason, symbols=symbols,
                                                venue=venue, force=force)
                case p.Drill(kind=kind):
                    try:
                        result = await run_drill(desk, kind, actor=caller.actor)
                    except DrillRefused as exc:
                        raise ControlError("drill_refused", str(exc)) from None
                case p.Watch():
                    await self._watch(stream)
                    return None
                case _:
                    return p.error("unknown_command", f"unknown command {type(req).__name__}")
        except ControlError as exc:
            return p.error(exc.code, exc.message)
        except (_Dropped, trio.BrokenResourceError, trio.ClosedResourceError):
            raise  # a watch stream's connection failed: the connection ends, not a bug
        except JournalError as exc:
            return p.error("journal_failed",
                           f"{exc}: the change is in force in memory but not yet durable; "
                           "it is retried in order")
        except DeskError as exc:
            return p.error("failed", str(exc))
        except Exception as exc:
            # A bug in one command must not take the supervisor down with it.
            log.exception("control: %s failed", type(req).__name__)
            return p.error("internal_error", f"{type(req).__name__} failed: "
                                             f"{type(exc).__name__}: {exc}")
        return p.ok(result)

    async def _watch(self, stream: trio.SocketStream) -> None:
        """Stream state changes until the client goes away or falls too far behind."""
        # Idle (nothing queued, no send in progress): the desk may write a line into the
        # socket itself, at once, on the kill path. Otherwise it queues as usual.
        sending = True
        tail = b""
        # Once this watch ends its fd number may belong to another connection at once:
        # the direct writer must never write through it again.
        ended = False
        fd = stream.socket.fileno()
        receive: trio.MemoryReceiveChannel[dict[str, Any]]

        def direct(line: bytes) -> bool:
            nonlocal tail
            if ended or sending or tail or receive.statistics().current_buffer_used:
                return False
            try:
                written = os.write(fd, line)
            except OSError:
                return False
            # A short write to an idle socket is all but impossible for one line; if it
            # happens the rest goes out first with the next message (<= 1 s: heartbeat).
            tail = line[written:]
            return True

        async def until_eof(cancel: trio.CancelScope) -> None:
            try:
                while await stream.receive_some(4096):
                    pass  # a watch connection takes no more requests
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            cancel.cancel()

        receive = self.desk.open_watch(direct)
        try:
            await self._send(stream, p.ok({"event": "status",
                                           "status": self.desk.status()}))
            sending = False
            async with trio.open_nursery() as nursery:
                nursery.start_soon(until_eof, nursery.cancel_scope)
                async with receive:
                    async for message in receive:
                        sending = True
                        if tail:
                            rest, tail = tail, b""
                            await self._send(stream, rest)
                        await self._send(stream, p.ok(message))
                        sending = False
                # The desk dropped us (too slow): say so, then close.
                await self._send(stream, p.error(
                    "watch_overflow",
                    "watcher fell too far behind and was dropped; reconnect"))
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The nursery wraps what ended the connection (a broken socket, a client that
            # stopped reading): that ends this connection as anywhere else, not as a bug.
            ended_by, other = group.split(
                (_Dropped, trio.BrokenResourceError, trio.ClosedResourceError))
            if other is not None or ended_by is None:
                raise
            raise _first_leaf(ended_by) from None
        finally:
            ended = True
            receive.close()  # the desk drops this watcher at its next message


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


async def _first_line(stream: trio.SocketStream, limit: int) -> bytes | None:
    """The first line (without its newline), or None: closed first, or over ``limit``."""
    buf = bytearray()
    while len(buf) <= limit:
        data = await stream.receive_some(limit + 1 - len(buf))
        if not data:
            return None
        buf += data
        nl = buf.find(b"\n")
        if nl >= 0:
            return bytes(buf[:nl])
    return None
