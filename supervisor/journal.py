"""The journal: one append-only SQLite table of desk events.

WAL mode with ``synchronous=FULL``, so an appended event survives a SIGKILL or a power
cut once ``append`` returns. Blocking calls run in a worker thread via
``trio.to_thread.run_sync``; appends are serialised by a lock and written in one
transaction per batch (group commit), so a burst of findings pays one fsync.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

from .errors import JournalError
from .events import AnyEvent, event_decoder, event_encoder

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    type TEXT NOT NULL,
    actor TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
"""


RunSync = Callable[..., Awaitable[Any]]


class Journal:
    """An open journal file. Use ``open_journal``; close with ``aclose`` (safe twice)."""

    def __init__(self, conn: sqlite3.Connection, path: Path,
                 run_sync: RunSync = trio.to_thread.run_sync) -> None:
        self._conn = conn
        self.path = path
        # How blocking SQLite calls run: in a worker thread (the daemon), or inline for
        # tests on MockClock, where a thread would let virtual time run ahead of it.
        self._run_sync = run_sync
        self._lock = trio.Lock()
        self._closed = False

    async def append(self, events: Sequence[AnyEvent]) -> int:
        """Append events durably in one transaction; return the last sequence number.

        On cancellation the write may or may not have landed; the thread finishes the
        transaction either way (it is never left half-written).

        Raises:
            JournalError: the database refused the write (disk full, read-only, ...).
        """
        if not events:
            return 0
        rows = [
            (e.ts, type(e).__struct_config__.tag, e.actor, event_encoder.encode(e).decode())
            for e in events
        ]
        async with self._lock:
            return await self._run_sync(self._write, rows)

    def _write(self, rows: list[tuple[float, object, str, str]]) -> int:
        if self._closed:
            raise JournalError(f"journal {self.path} is closed")
        try:
            with self._conn:
                cur = self._conn.executemany(
                    "INSERT INTO events (ts, type, actor, body) VALUES (?, ?, ?, ?)", rows
                )
                del cur
                (seq,) = self._conn.execute("SELECT max(seq) FROM events").fetchone()
            return int(seq)
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path}: cannot append: {exc}") from exc

    async def read_all(self) -> list[AnyEvent]:
        """Every journaled event, in order.

        Raises:
            JournalError: the file is unreadable or an event does not decode.
        """
        return await self._run_sync(self._read_all)

    def _read_all(self) -> list[AnyEvent]:
        try:
            rows = self._conn.execute("SELECT seq, body FROM events ORDER BY seq").fetchall()
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path}: cannot read: {exc}") from exc
        events: list[AnyEvent] = []
        for seq, body in rows:
            try:
                events.append(event_decoder.decode(body))
            except Exception as exc:
                raise JournalError(
                    f"journal {self.path}: event {seq} does not decode: {exc}"
                ) from exc
        return events

    async def aclose(self) -> None:
        """Close the database; safe to call twice, completes even when cancelled."""
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            async with self._lock:
                await self._run_sync(self._conn.close)

    async def __aenter__(self) -> Journal:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        conn.isolation_level = "DEFERRED"
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(f"journal {path}: cannot enable WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


async def open_journal(path: str | Path, *, run_sync: RunSync = trio.to_thread.run_sync
                       ) -> Journal:
    """Open (creating if needed) the journal at ``path``.

    Raises:
        JournalError: the file cannot be opened as a journal.
    """
    p = Path(path)
    try:
        conn = await run_sync(_connect, p)
    except sqlite3.Error as exc:
        raise JournalError(f"journal {p}: cannot open: {exc}") from exc
    return Journal(conn, p, run_sync)
