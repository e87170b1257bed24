"""Checkpoints: the state at journal record N, so a start replays only what came after,
and never a state that does not belong to the journal beside it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from supervisor.core.desk import DeskState, apply
from supervisor.core.events import AnyEvent, AuditNoted, FindingRaised, IncidentNoted
from supervisor.runtime.checkpoint import (
    CHECKPOINT_EVERY,
    Checkpoint,
    path_in,
    read_checkpoint,
    write_checkpoint,
)
from supervisor.runtime.journal import open_journal

from .deskenv import open_desk, wait_for


def fold(events: list[AnyEvent]) -> DeskState:
    state = DeskState()
    for event in events:
        state, _ = apply(state, event)
    return state


def test_a_state_round_trips_through_a_checkpoint_file(tmp_path: Path) -> None:
    events: list[AnyEvent] = [
        FindingRaised(ts=1.0, actor="actor:model", incident_class="feature-drift",
                      severity="P1", scope="feature:f1", summary="psi", size_multiplier=0.25,
                      evidence={"psi": 0.3, "nested": {"a": [1, 2]}}),
    ]
    state = fold(events)
    state = fold([*events, IncidentNoted(ts=2.0, actor="s", incident_id=state.incidents[0].id,
                                         text="note")])
    path = tmp_path / "checkpoint.msgpack"
    write_checkpoint(path, Checkpoint(seq=2, chain="abc", state=state))
    back = read_checkpoint(path)
    assert back is not None and back.state == state and (back.seq, back.chain) == (2, "abc")
    path.write_bytes(b"\x93garbage")
    assert read_checkpoint(path) is None  # ignored, not fatal
    assert read_checkpoint(tmp_path / "none") is None


async def _journal_many(env: object, count: int, tag: str) -> None:
    for i in range(count):
        await env.desk.submit(AuditNoted(  # type: ignore[attr-defined]
            ts=env.desk.wall(), actor="operator:ann", text=f"{tag} {i}"))  # type: ignore[attr-defined]


async def test_a_restart_folds_only_what_follows_the_checkpoint_into_the_same_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="desk.runtime")
    state_dir = tmp_path / "state"
    with trio.fail_after(60):
        async with open_desk(tmp_path, ("alpha",)) as env:
            await env.request("kill", reason="drill")
            await _journal_many(env, CHECKPOINT_EVERY + 10, "audit")
            await wait_for(lambda: path_in(state_dir).exists(), 5)
            written = read_checkpoint(path_in(state_dir))
            assert written is not None and written.seq >= CHECKPOINT_EVERY
            await _journal_many(env, 5, "after")
            assert env.desk.status()["journal"]["checkpoint_seq"] == written.seq
        caplog.clear()
        async with open_desk(tmp_path, ("alpha",)) as env:
            assert f"after the checkpoint at record {written.seq}" in caplog.text
            async with await open_journal(state_dir / "journal.sqlite3") as journal:
                events = await journal.read_all()
            # what the restart itself journaled (the re-verification of the halt) aside
            restarted = fold(events[: len(events) - env.desk.journal_pending])
            assert env.desk.state.incidents == restarted.incidents
            assert env.desk.state.kill.latched and env.desk.state.mode == "HALTED"


async def test_a_checkpoint_of_another_journal_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="desk.runtime")
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    foreign = fold([FindingRaised(ts=1.0, actor="x", incident_class="stale-data",
                                  severity="P0", scope="feed", summary="not ours")])
    write_checkpoint(path_in(state_dir), Checkpoint(seq=1, chain="0" * 64, state=foreign))
    async with await open_journal(state_dir / "journal.sqlite3") as journal:
        await journal.append([AuditNoted(ts=1.0, actor="operator:ann", text="ours")])
    with trio.fail_after(20):
        async with open_desk(tmp_path, ("alpha",)) as env:
            assert env.desk.state.incidents == ()  # not the foreign P0
            assert env.desk.state.mode == "NORMAL"
    assert "journal replayed: 1 events, mode NORMAL" in caplog.text
    assert "after the checkpoint" not in caplog.text
