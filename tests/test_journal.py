"""The journal: a real SQLite file, WAL and synchronous=FULL, append-only."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from supervisor.errors import JournalError
from supervisor.events import FindingRaised, KillRequested
from supervisor.journal import open_journal


async def test_append_then_read_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    events = [
        KillRequested(ts=1.0, actor="operator:ann", reason="r", source="operator"),
        FindingRaised(ts=2.0, actor="actor:heartbeat", incident_class="broker-outage",
                      severity="P0", scope="venue:a", summary="s", evidence={"n": 3}),
    ]
    async with await open_journal(path) as journal:
        assert await journal.append(events[:1]) == 1
        assert await journal.append(events[1:]) == 2
    async with await open_journal(path) as journal:
        assert await journal.read_all() == events


async def test_wal_and_full_sync_are_on(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = await open_journal(path)
    try:
        conn = journal._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        await journal.aclose()
        await journal.aclose()  # safe twice


async def test_the_event_table_is_append_only(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    async with await open_journal(path) as journal:
        await journal.append([KillRequested(ts=1.0, actor="a", reason="r", source="operator")])
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="the journal is append-only"):
            conn.execute("DELETE FROM events")
        with pytest.raises(sqlite3.IntegrityError, match="the journal is append-only"):
            conn.execute("UPDATE events SET actor = 'x'")
    finally:
        conn.close()


async def test_an_event_that_does_not_decode_stops_the_replay(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    async with await open_journal(path) as journal:
        await journal.append([KillRequested(ts=1.0, actor="a", reason="r", source="operator")])
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("INSERT INTO events (ts, type, actor, body) VALUES (2, 'x', 'y', '{bad')")
    conn.close()
    async with await open_journal(path) as journal:
        with pytest.raises(JournalError, match=r"event 2 does not decode"):
            await journal.read_all()


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JournalError, match="cannot open"):
        await open_journal(path)
