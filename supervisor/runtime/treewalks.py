"""The recovery-tree walks the supervisor makes itself (playbook 03; supervisor.playbook
.auto): on a new incident of a class with a tree, the tree is walked over the status as
far as probes answer, the path journaled on the incident, and the last walk per incident
kept for ``status`` (in a file, so it outlives a restart). It executes nothing."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import trio

from supervisor.core.desk import DeskState
from supervisor.core.events import IncidentNoted
from supervisor.files import write_atomic
from supervisor.playbook import auto as auto_trees

log = logging.getLogger("desk.treewalks")

# Walks kept beyond the live incidents' (the journaled timeline keeps every one).
TREE_WALKS_KEPT = 20


class TreeWalks:
    """The last walk per incident. ``path`` None: not kept on disk (tests on a virtual
    clock, where a file write in a thread lets time jump)."""

    def __init__(
        self,
        path: Path | None,
        *,
        wall: Callable[[], float],
        state: Callable[[], DeskState],
        status: Callable[[], dict[str, Any]],
        note: Callable[[IncidentNoted], Awaitable[object]],
    ) -> None:
        self.path = path
        self._wall = wall
        self._state = state
        self._status = status
        self._note = note
        self.walks: dict[str, dict[str, Any]] = {}

    @staticmethod
    def walks_class(incident_class: str) -> bool:
        """Whether incidents of this class get a walk."""
        return incident_class in auto_trees.AUTO_TREES

    async def walk(self, incident_id: str) -> None:
        """Walk the incident's tree now and note the path on it; a probe's bug is logged,
        never raised."""
        inc = self._state().incident(incident_id)
        if inc is None:
            return
        try:
            w = auto_trees.walk_for(inc.incident_class, self._status())
        except Exception:  # a probe's bug must not take the desk down with it
            log.exception("recovery tree walk for %s failed", incident_id)
            return
        if w is None:
            return
        self.walks[incident_id] = {"at": self._wall(), **msgspec.to_builtins(w)}
        live = {i.id for i in self._state().incidents if i.live}
        for stale in [k for k in self.walks if k not in live][:-TREE_WALKS_KEPT or None]:
            del self.walks[stale]  # bounded: the journaled timeline keeps every walk
        await self._save()
        await self._note(IncidentNoted(
            ts=self._wall(), actor=auto_trees.ACTOR, incident_id=incident_id,
            text=auto_trees.describe(w)))

    async def _save(self) -> None:
        if self.path is None:
            return
        try:
            await trio.to_thread.run_sync(write_atomic, self.path,
                                          msgspec.json.encode(self.walks))
        except OSError as exc:  # the walk is on the incident's timeline all the same
            log.error("recovery tree walks not saved to %s: %s", self.path, exc)

    async def load(self) -> None:
        """The walks kept by the last run, for the incidents the state still knows."""
        if self.path is None:
            return
        try:
            data = await trio.Path(self.path).read_bytes()
            walks = msgspec.json.decode(data, type=dict[str, dict[str, Any]])
        except FileNotFoundError:
            return
        except (OSError, msgspec.DecodeError) as exc:
            log.error("recovery tree walks in %s unreadable, starting without: %s",
                      self.path, exc)
            return
        known = {i.id for i in self._state().incidents}
        self.walks = {k: v for k, v in walks.items() if k in known}
