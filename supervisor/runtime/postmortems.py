"""Postmortem artifacts (playbook 01 postmortem): one drafted for every resolved
incident, with the kill snapshot and the verifier's detail when the incident pulled the
switch, written through the desk's storage; and the incidents list with each one's
postmortem state."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import trio

from supervisor.core.desk import DeskState, Incident
from supervisor.ops import postmortem

log = logging.getLogger("desk.runtime")


class Postmortems:
    """``kill_snapshot`` gives the kill-switch's incident and snapshot path (either may be
    None); ``store`` is the desk storage's write (False: kept and retried)."""

    def __init__(
        self,
        state_dir: Path,
        *,
        state: Callable[[], DeskState],
        kill_snapshot: Callable[[], tuple[str | None, str | None]],
        store: Callable[[str, Path, bytes], Awaitable[bool]],
        wall: Callable[[], float],
    ) -> None:
        self.state_dir = state_dir
        self._state = state
        self._kill_snapshot = kill_snapshot
        self._store = store
        self._wall = wall

    async def write(self, inc: Incident) -> None:
        """Draft the postmortem of a resolved incident (never overwrites an edited one)."""
        state = self._state()
        snapshot = kill_detail = None
        switch_incident, switch_snapshot = self._kill_snapshot()
        if state.kill.incident_id == inc.id or switch_incident == inc.id:
            snapshot = switch_snapshot
            kill_detail = state.kill.verify_detail or None
        path, data = await trio.to_thread.run_sync(
            partial(postmortem.prepare, self.state_dir, inc, snapshot=snapshot,
                    kill_detail=kill_detail))
        if data is not None and await self._store("postmortem", path, data):
            log.info("postmortem artifact %s", path, extra={"incident": inc.id})

    async def incidents(self, everything: bool) -> list[dict[str, Any]]:
        """Incidents for `incidents` (live ones, or all), each with its postmortem's state."""
        now = self._wall()
        chosen = [i for i in self._state().incidents if everything or i.live]

        def read() -> list[dict[str, Any]]:
            out = []
            for inc in chosen:
                row = msgspec.to_builtins(inc)
                row["postmortem"] = postmortem.state(self.state_dir, inc, now)
                out.append(row)
            return out

        return await trio.to_thread.run_sync(read)
