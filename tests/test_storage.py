"""Artifacts storage refuses are kept and retried; the newest bytes of a path win."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from supervisor.runtime.storage import Storage


async def test_a_newer_version_written_while_an_older_retry_lands_is_not_lost(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a" / "report.json"
    pages: list[str] = []
    gate = trio.Event()
    writing_v1 = trio.Event()
    failing = True

    async def run_sync(f: Any, *args: Any) -> Any:
        if failing:
            raise OSError(28, "No space left on device")
        if args[1] == b"v1":
            writing_v1.set()
            await gate.wait()  # the retry of v1 is slow to land
        return f(*args)

    storage = Storage(wall_clock=lambda: 1.0, page=pages.append, run_sync=run_sync)
    assert await storage.write("report", path, b"v1") is False
    failing = False
    async with trio.open_nursery() as nursery:
        nursery.start_soon(storage.retry)  # writing v1 ...
        await writing_v1.wait()
        failing = True
        assert await storage.write("report", path, b"v2") is False  # ... v2 arrives, fails
        failing = False
        gate.set()  # v1 lands
    assert storage.status()["pending"] != []  # v2 is still owed
    await storage.retry()
    assert path.read_bytes() == b"v2" and storage.ok and storage.status()["error"] is None
    assert len(pages) == 1


async def test_one_path_that_keeps_failing_does_not_hold_back_the_others(
    tmp_path: Path,
) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder should be")
    disk_full = True

    async def run_sync(f: Any, *args: Any) -> Any:
        if disk_full:
            raise OSError(28, "No space left on device")
        return f(*args)

    storage = Storage(wall_clock=lambda: 1.0, page=lambda text: None, run_sync=run_sync)
    stuck, late = blocked / "snap.json", tmp_path / "ok" / "report.json"
    assert await storage.write("snapshot", stuck, b"s") is False  # first in line
    assert await storage.write("report", late, b"r") is False
    disk_full = False  # the disk recovers; the blocked folder does not
    await storage.retry()
    assert late.read_bytes() == b"r"
    assert [p["path"] for p in storage.status()["pending"]] == [str(stuck)]
