"""The journal: one append-only SQLite table of desk events, each record chained to the
one before it by a checksum.

WAL mode with ``synchronous=FULL``, so an appended event survives a SIGKILL or a power
cut once ``append`` returns. Blocking calls run in a worker thread via
``trio.to_thread.run_sync``; appends are serialised by a lock and written in one
transaction per batch (group commit), so a burst of findings pays one fsync.

Integrity: each record's ``chain`` is the sha256 of the previous record's chain and of
its own sequence number, time, type, actor and body. Replay recomputes the chain, so a
byte changed in a record (a kill's reason, a timestamp), a record removed or inserted,
or a damaged page is found before the desk acts on it (``JournalDamaged``). Records
written before the chain existed (an older journal) come first with no chain: they are
replayed, and reported by ``verify`` as not verifiable.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import msgspec
import trio

from supervisor.core.errors import JournalDamaged, JournalError
from supervisor.core.events import AnyEvent, event_decoder, event_encoder

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    type TEXT NOT NULL,
    actor TEXT NOT NULL,
    body TEXT NOT NULL,
    chain TEXT
);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
"""

# The chain of an empty journal, and of the first record after unchained ones.
GENESIS = ""

# SQLite's result codes for a file that is damaged or not a database at all (as opposed
# to one that cannot be opened: permissions, a missing directory, a full disk).
_DAMAGE_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})

RunSync = Callable[..., Awaitable[Any]]


def chain_of(prev: str, seq: int, ts: float, type_: str, actor: str, body: str) -> str:
    """The checksum of one record, chained to ``prev`` (the one before it)."""
    h = hashlib.sha256()
    for part in (prev, str(seq), repr(float(ts)), type_, actor, body):
        h.update(part.encode())
        h.update(b"\x1f")
    return h.hexdigest()


def is_damage(exc: sqlite3.Error) -> bool:
    """Whether SQLite says the file itself is damaged or not a database."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _DAMAGE_CODES


class _Row(NamedTuple):
    """One stored record, and what is wrong with its place or checksum (None: nothing)."""

    seq: int
    ts: float
    type: str
    actor: str
    body: str
    chain: str | None
    problem: str | None


class VerifyReport(msgspec.Struct, kw_only=True):
    """What ``verify`` found (``desk-supervisor journal verify``)."""

    path: str
    events: int = 0
    unchained: int = 0  # records written before the chain existed (not verifiable)
    last_seq: int = 0
    ok: bool = True
    problem: str | None = None  # the first problem, naming its record


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
        # The last record's sequence number and chain, read at open, kept per append.
        self._last_seq = 0
        self._last_chain = GENESIS
        # Events read (and verified) by ``replay`` at start, for the desk to fold once,
        # and the (seq, chain) they follow when a checkpoint was used.
        self.replayed: list[AnyEvent] | None = None
        self.replayed_after: tuple[int, str] | None = None
        # A journal from before the chain, opened read-only, has no chain column.
        self._chain_column = "chain"
        self._closed_for_writes = False

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

    def _write(self, rows: list[tuple[float, Any, str, str]]) -> int:
        if self._closed:
            raise JournalError(f"journal {self.path} is closed")
        if self._closed_for_writes:
            raise JournalError(f"journal {self.path} is open read-only")
        seq, chain = self._last_seq, self._last_chain
        chained = []
        for ts, type_, actor, body in rows:
            seq += 1
            chain = chain_of(chain, seq, ts, str(type_), actor, body)
            chained.append((seq, ts, type_, actor, body, chain))
        try:
            with self._conn:
                self._conn.executemany(
                    "INSERT INTO events (seq, ts, type, actor, body, chain) "
                    "VALUES (?, ?, ?, ?, ?, ?)", chained)
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path}: cannot append: {exc}") from exc
        self._last_seq, self._last_chain = seq, chain
        return seq

    async def read_all(self) -> list[AnyEvent]:
        """Every journaled event, in order, its chain checked.

        Raises:
            JournalDamaged: a record fails its checksum or does not decode, or the file
                is damaged.
            JournalError: the file cannot be read.
        """
        return await self._run_sync(self._read_all)

    async def replay(self, after: tuple[int, str] | None = None) -> list[AnyEvent]:
        """For the desk's start-up fold: every record's chain checked, and the events
        after ``after`` = (seq, chain) decoded, kept in ``replayed``. ``replayed_after``
        is ``after`` when the journal holds that record with that chain (a checkpoint
        that belongs to this journal), else None and every event is decoded.

        Raises:
            JournalDamaged, JournalError: as ``read_all``.
        """
        events = None
        if after is not None:
            events = await self._run_sync(self._read_after, *after)
        self.replayed_after = after if events is not None else None
        if events is None:
            events = await self.read_all()
        self.replayed = events
        return events

    def _read_all(self) -> list[AnyEvent]:
        events = self._read_after(0, GENESIS)
        assert events is not None
        return events

    def _read_after(self, after: int, chain_at: str) -> list[AnyEvent] | None:
        """The events after record ``after``, every chain checked; None when record
        ``after`` is not there with ``chain_at`` (0: from the start)."""
        events: list[AnyEvent] = []
        anchored = after == 0
        for row in self._checked_rows():
            if row.problem is not None:
                raise JournalDamaged(f"journal {self.path}: record {row.seq} {row.problem}")
            if after and row.seq == after:
                anchored = row.chain == chain_at
            if row.seq <= after:
                continue
            try:
                events.append(event_decoder.decode(row.body))
            except Exception as exc:
                raise JournalDamaged(
                    f"journal {self.path}: event {row.seq} does not decode: {exc}") from exc
        return events if anchored else None

    def _checked_rows(self) -> Iterator[_Row]:
        """Every record in order, with ``problem`` None when its place and chain hold.

        Raises:
            JournalDamaged: SQLite reports the file damaged.
            JournalError: the file cannot be read.
        """
        try:
            cursor = self._conn.execute(
                f"SELECT seq, ts, type, actor, body, {self._chain_column} FROM events "
                "ORDER BY seq")
            prev = GENESIS
            chained_seen = False
            expected_seq: int | None = None
            for seq, ts, type_, actor, body, chain in cursor:
                problem = None
                if seq < 1:
                    problem = "has a sequence number below 1: it was inserted"
                elif expected_seq is not None and seq != expected_seq:
                    problem = f"follows record {expected_seq - 1}: records are missing"
                elif chain is None:
                    if chained_seen:
                        problem = "has no checksum after checksummed records: it was inserted"
                else:
                    if chain != chain_of(prev, seq, ts, type_, actor, body):
                        problem = "fails its checksum: it was changed, or one before it was"
                    # The next record is checked against this one's stored chain, so a
                    # changed record is named alone, not every record after it.
                    chained_seen = True
                    prev = chain
                expected_seq = seq + 1
                yield _Row(seq, ts, type_, actor, body, chain, problem)
        except sqlite3.Error as exc:
            if is_damage(exc):
                raise JournalDamaged(f"journal {self.path}: the file is damaged: {exc}"
                                     ) from exc
            raise JournalError(f"journal {self.path}: cannot read: {exc}") from exc

    async def verify(self) -> VerifyReport:
        """Check every record's chain and decoding without stopping at the first problem
        of decoding (the first problem of any kind is reported)."""
        return await self._run_sync(self._verify)

    def _verify(self) -> VerifyReport:
        report = VerifyReport(path=str(self.path))
        try:
            for row in self._checked_rows():
                report.events += 1
                report.last_seq = row.seq
                problem = row.problem
                if problem is None:
                    try:
                        event_decoder.decode(row.body)
                    except Exception as exc:
                        problem = f"does not decode: {exc}"
                if problem is not None and report.ok:
                    report.ok, report.problem = False, f"record {row.seq} {problem}"
        except JournalError as exc:
            report.ok, report.problem = False, str(exc)
        try:
            (report.unchained,) = self._conn.execute(
                f"SELECT count(*) FROM events WHERE {self._chain_column} IS NULL").fetchone()
        except sqlite3.Error:
            pass
        return report

    async def export(self) -> list[dict[str, Any]]:
        """Every record as stored (seq, ts, type, actor, body decoded as JSON, chain),
        with its check: ``ok`` and, when not ok, ``problem``."""
        return await self._run_sync(self._export)

    def _export(self) -> list[dict[str, Any]]:
        out = []
        for row in self._checked_rows():
            problem = row.problem
            try:
                body: Any = msgspec.json.decode(row.body)
            except msgspec.DecodeError:
                body, problem = row.body, problem or "does not decode"
            out.append({"seq": row.seq, "ts": row.ts, "type": row.type, "actor": row.actor,
                        "body": body, "chain": row.chain, "ok": problem is None,
                        **({"problem": problem} if problem else {})})
        return out

    @property
    def last(self) -> tuple[int, str]:
        """(seq, chain) of the last record written (0, GENESIS: none)."""
        return self._last_seq, self._last_chain

    @property
    def run_sync(self) -> RunSync:
        """How this journal runs blocking calls (a worker thread, or inline in tests)."""
        return self._run_sync

    def _load_tail(self) -> None:
        row = self._conn.execute(
            "SELECT seq, chain FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        if row is not None:
            self._last_seq = int(row[0])
            self._last_chain = row[1] if row[1] is not None else GENESIS

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


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """For inspection (``desk-supervisor journal verify|export``), beside a running
    daemon or on a file set aside: nothing is written, not even the schema."""
    if not path.exists():
        raise JournalError(f"journal {path}: no such file")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)


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
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        if "chain" not in columns:  # a journal from before the chain: add the column
            conn.execute("ALTER TABLE events ADD COLUMN chain TEXT")
    except BaseException:
        conn.close()
        raise
    return conn


async def open_journal(path: str | Path, *, run_sync: RunSync = trio.to_thread.run_sync,
                       read_only: bool = False) -> Journal:
    """Open (creating if needed, unless ``read_only``) the journal at ``path``.

    Raises:
        JournalDamaged: the file is damaged or not a database.
        JournalError: the file cannot be opened as a journal.
    """
    p = Path(path)
    try:
        conn = await run_sync(_connect_read_only if read_only else _connect, p)
    except sqlite3.Error as exc:
        if is_damage(exc):
            raise JournalDamaged(f"journal {p}: the file is damaged: {exc}") from exc
        raise JournalError(f"journal {p}: cannot open: {exc}") from exc
    journal = Journal(conn, p, run_sync)
    try:
        if read_only:
            columns = await run_sync(lambda: {
                row[1] for row in conn.execute("PRAGMA table_info(events)")})
            if not columns:
                raise JournalDamaged(f"journal {p}: the file holds no events table")
            if "chain" not in columns:
                journal._chain_column = "NULL"
            journal._closed_for_writes = True
        else:
            await run_sync(journal._load_tail)
    except sqlite3.Error as exc:
        await journal.aclose()
        if is_damage(exc):
            raise JournalDamaged(f"journal {p}: the file is damaged: {exc}") from exc
        raise JournalError(f"journal {p}: cannot read: {exc}") from exc
    except BaseException:
        await journal.aclose()
        raise
    return journal


class JournalSetAside(msgspec.Struct, frozen=True, kw_only=True):
    """A damaged journal moved aside at start: where it went and what was wrong."""

    path: str
    reason: str


def _move_aside(path: Path, stamp: str) -> Path:
    aside = path.with_name(f"{path.stem}.damaged-{stamp}{path.suffix}")
    for suffix in ("", "-wal", "-shm"):  # SQLite's companions go with it
        src = Path(f"{path}{suffix}")
        if src.exists():
            src.replace(Path(f"{aside}{suffix}"))
    return aside


async def open_journal_checked(
    path: str | Path, *, stamp: str, run_sync: RunSync = trio.to_thread.run_sync,
    after: tuple[int, str] | None = None,
) -> tuple[Journal, JournalSetAside | None]:
    """Open the journal and replay it (``Journal.replayed``); a damaged one is moved
    aside (as ``journal.damaged-STAMP.sqlite3``, its WAL with it) and a new, empty
    journal opened in its place, so the daemon keeps its kill path. The caller decides
    what a set-aside journal means (the desk halts and pages).

    Raises:
        JournalError: the journal cannot be opened for another reason (permissions, a
            full disk), or the new one cannot be created.
    """
    p = Path(path)
    try:
        journal = await open_journal(p, run_sync=run_sync)
        try:
            await journal.replay(after)
        except BaseException:
            await journal.aclose()
            raise
        return journal, None
    except JournalDamaged as exc:
        try:
            aside = await run_sync(_move_aside, p, stamp)
        except OSError as move_exc:
            raise JournalError(f"journal {p} is damaged ({exc}) and cannot be moved aside: "
                               f"{move_exc}") from exc
        journal = await open_journal(p, run_sync=run_sync)
        journal.replayed = []
        return journal, JournalSetAside(path=str(aside), reason=str(exc))
