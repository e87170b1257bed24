"""The journal: a real SQLite file, WAL and synchronous=FULL, append-only."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from supervisor.core.errors import JournalDamaged
from supervisor.core.events import FindingRaised, KillRequested
from supervisor.runtime.journal import open_journal


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
        with pytest.raises(JournalDamaged, match=r"record 2 has no checksum after "
                                                 r"checksummed records: it was inserted"):
            await journal.read_all()


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JournalDamaged, match="the file is damaged: file is not a database"):
        await open_journal(path)


def _flip(path: Path, old: bytes, new: bytes) -> None:
    """Change bytes inside the file itself, as bit rot or a careless hand would: SQLite
    keeps no checksum of its own, so only the journal's chain can notice."""
    data = path.read_bytes()
    assert data.count(old) == 1, data.count(old)
    path.write_bytes(data.replace(old, new))


async def test_a_byte_changed_inside_a_record_is_found_at_replay(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    async with await open_journal(path) as journal:
        await journal.append([
            KillRequested(ts=1.0, actor="operator:ann", reason="quarterly drill",
                          source="operator"),
            KillRequested(ts=2.5, actor="operator:bob", reason="second pull",
                          source="operator")])
    _flip(path, b"quarterly drill", b"quarterly dRill")  # a kill's reason
    async with await open_journal(path) as journal:
        with pytest.raises(JournalDamaged, match="record 1 fails its checksum"):
            await journal.read_all()
        report = await journal.verify()
    assert (report.ok, report.events, report.problem) == (
        False, 2, "record 1 fails its checksum: it was changed, or one before it was")


async def test_a_changed_timestamp_is_found_and_export_marks_the_record(
    tmp_path: Path,
) -> None:
    import struct

    path = tmp_path / "j.sqlite3"
    async with await open_journal(path) as journal:
        await journal.append([KillRequested(ts=1234.5, actor="a", reason="r",
                                            source="operator")])
    _flip(path, struct.pack(">d", 1234.5), struct.pack(">d", 1234.75))
    async with await open_journal(path) as journal:
        rows = await journal.export()
    assert rows[0]["ok"] is False and rows[0]["ts"] == 1234.75
    assert rows[0]["problem"].startswith("fails its checksum")


async def test_a_damaged_page_is_journal_damaged(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    async with await open_journal(path) as journal:
        for i in range(200):
            await journal.append([KillRequested(ts=float(i), actor="a", reason="r" * 200,
                                                source="operator")])
    data = bytearray(path.read_bytes())
    page = 4096
    data[2 * page: 6 * page] = b"\xff" * (4 * page)  # b-tree pages overwritten
    path.write_bytes(bytes(data))
    with pytest.raises(JournalDamaged, match="the file is damaged"):
        journal = await open_journal(path)
        try:
            await journal.read_all()
        finally:
            await journal.aclose()


async def test_the_chain_continues_across_reopenings_and_verifies(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    for i in range(3):
        async with await open_journal(path) as journal:
            await journal.append([KillRequested(ts=float(i), actor="a", reason=f"r{i}",
                                                source="operator")])
    async with await open_journal(path) as journal:
        assert len(await journal.read_all()) == 3
        report = await journal.verify()
    assert (report.ok, report.events, report.unchained, report.last_seq) == (True, 3, 0, 3)


async def test_a_journal_from_before_the_chain_replays_and_is_chained_from_then_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite3"
    conn = sqlite3.connect(path)
    with conn:
        conn.executescript("""
            CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL,
                                 type TEXT NOT NULL, actor TEXT NOT NULL, body TEXT NOT NULL);
        """)
        conn.execute("INSERT INTO events (ts, type, actor, body) VALUES (1, 'kill', 'a', ?)",
                     ('{"type":"kill","ts":1.0,"actor":"a","reason":"old","source":"operator"}',))
    conn.close()
    async with await open_journal(path) as journal:
        await journal.append([KillRequested(ts=2.0, actor="a", reason="new",
                                            source="operator")])
    async with await open_journal(path) as journal:
        events = await journal.read_all()
        report = await journal.verify()
    assert [e.reason for e in events] == ["old", "new"]  # type: ignore[union-attr]
    assert (report.ok, report.unchained) == (True, 1)


def test_journal_verify_and_export_from_the_command_line(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    import trio

    path = tmp_path / "j.sqlite3"

    async def write() -> None:
        async with await open_journal(path) as journal:
            await journal.append([
                KillRequested(ts=1.0, actor="operator:ann", reason="quarterly drill",
                              source="operator"),
                KillRequested(ts=2.0, actor="operator:ann", reason="again",
                              source="operator")])

    trio.run(write)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "supervisor.cli", "journal", *args,
                               "--path", str(path)], capture_output=True, text=True,
                              timeout=30)

    ok = run("verify")
    assert (ok.returncode, ok.stdout) == (0, f"journal {path}: ok, 2 record(s), last seq 2\n")
    _flip(path, b"quarterly drill", b"quarterly dRill")
    bad = run("verify")
    assert bad.returncode == 1
    assert bad.stdout == (f"journal {path}: DAMAGED: record 1 fails its checksum: it was "
                          "changed, or one before it was (2 record(s) read)\n")
    export = run("export")
    assert export.returncode == 1
    rows = [json.loads(line) for line in export.stdout.splitlines()]
    assert [(r["seq"], r["ok"]) for r in rows] == [(1, False), (2, True)]
    assert rows[0]["body"]["reason"] == "quarterly dRill"
    missing = subprocess.run([sys.executable, "-m", "supervisor.cli", "journal", "verify",
                              "--path", str(tmp_path / "nope.sqlite3")],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2
    assert missing.stderr == f"desk-supervisor: journal {tmp_path / 'nope.sqlite3'}: no such file\n"


@pytest.mark.parametrize("seq", [-1, 0])
async def test_a_record_inserted_before_the_first_is_found(tmp_path: Path, seq: int) -> None:
    """Unchained records are accepted only as the leading records of an older journal,
    numbered from 1 without a gap: one slipped in before them is an insertion (and is
    JournalDamaged, never a crash)."""
    from supervisor.core.events import event_encoder

    path = tmp_path / "j.sqlite3"
    async with await open_journal(path) as journal:
        await journal.append([KillRequested(ts=1.0, actor="a", reason="r", source="operator")])
    forged = KillRequested(ts=0.5, actor="forged", reason="x", source="operator")
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("INSERT INTO events (seq, ts, type, actor, body) VALUES (?, 0.5, 'kill', "
                     "'forged', ?)", (seq, event_encoder.encode(forged).decode()))
    conn.close()
    async with await open_journal(path) as journal:
        with pytest.raises(JournalDamaged, match=f"record {seq} has a sequence number below 1"):
            await journal.read_all()
        assert (await journal.verify()).ok is False
