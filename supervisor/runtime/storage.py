"""Artifacts on disk (kill snapshots, reconciliation reports, postmortems) that a storage
error does not lose.

Each artifact is written atomically (``write_atomic``). One that cannot be written (a
full disk, a read-only state directory) is kept in memory as pending, retried every
``retry_s`` until it lands, shown in ``status.storage`` (``ok``, ``pending``), and the
first failure of an episode pages once. The journal is separate: an artifact never
holds the only copy of a fact the desk acts on (the kill snapshot's content is also
journaled, compact).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import trio

from supervisor.files import write_atomic

log = logging.getLogger("desk.storage")

RunSync = Callable[..., Awaitable[Any]]


class PendingWrite(msgspec.Struct, kw_only=True):
    """An artifact waiting for storage to accept it."""

    kind: str
    path: str
    error: str
    since: float  # wall clock of the first failure
    attempts: int = 1


class Storage:
    """The desk's artifact writer. Run ``run`` in the desk's nursery for the retries."""

    def __init__(
        self,
        *,
        wall_clock: Callable[[], float],
        page: Callable[[str], None],
        retry_s: float = 5.0,
        run_sync: RunSync = trio.to_thread.run_sync,
    ) -> None:
        self._wall = wall_clock
        self._page = page
        self.retry_s = retry_s
        self._run_sync = run_sync
        # path -> (the pending write, its bytes); the newest bytes for a path win.
        self._pending: dict[str, tuple[PendingWrite, bytes]] = {}
        self.last_error: str | None = None
        self.written = 0
        self.failures = 0

    @property
    def ok(self) -> bool:
        return not self._pending

    def is_pending(self, path: str | Path) -> bool:
        """Whether the artifact at ``path`` is waiting for storage."""
        return str(path) in self._pending

    async def write(self, kind: str, path: Path, data: bytes) -> bool:
        """Write ``data`` to ``path`` now; True when it landed. On a storage error the
        artifact is kept and retried (never raised to the caller: the kill path and the
        reconciliation go on), and the first failure of an episode pages."""
        key = str(path)
        try:
            await self._run_sync(write_atomic, path, data)
        except OSError as exc:
            self._failed(kind, key, data, exc)
            return False
        self.written += 1
        if key in self._pending:
            del self._pending[key]  # a newer version landed: the older one is moot
            if not self._pending:
                self.last_error = None
        return True

    def _failed(self, kind: str, key: str, data: bytes, exc: OSError) -> None:
        error = f"{exc.strerror or exc}"
        was_ok = self.ok
        self.failures += 1
        self.last_error = f"{kind} {key}: {error}"
        old = self._pending.get(key)
        if old is not None:
            # A new entry (not the old one changed): a retry in flight with the old bytes
            # must not take this one for its own when it lands.
            self._pending[key] = (PendingWrite(kind=kind, path=key, error=error,
                                               since=old[0].since,
                                               attempts=old[0].attempts + 1), data)
        else:
            self._pending[key] = (PendingWrite(kind=kind, path=key, error=error,
                                               since=self._wall()), data)
        log.error("storage: %s %s not written (%s): kept, retried every %g s", kind, key,
                  error, self.retry_s)
        if was_ok:
            self._page(f"storage failing: {kind} {key} not written ({error}); artifacts are "
                       f"kept in memory and retried every {self.retry_s:g} s until it "
                       "recovers (status storage.pending)")

    async def retry(self) -> None:
        """One pass over the pending artifacts, oldest first."""
        for key, (pending, data) in list(self._pending.items()):
            try:
                await self._run_sync(write_atomic, Path(key), data)
            except OSError as exc:
                # One path may keep failing (its folder is gone) while others land: try
                # every one each pass.
                pending.error, pending.attempts = f"{exc.strerror or exc}", pending.attempts + 1
                self.last_error = f"{pending.kind} {key}: {pending.error}"
                continue
            if self._pending.get(key, (None,))[0] is pending:
                del self._pending[key]
            self.written += 1
            log.warning("storage: %s %s written after %d attempt(s)", pending.kind, key,
                        pending.attempts + 1)
        if not self._pending and self.last_error is not None:
            log.warning("storage recovered: every pending artifact is written")
            self.last_error = None

    async def run(self) -> None:
        """Retry the pending artifacts every ``retry_s`` until cancelled."""
        while True:
            await trio.sleep(self.retry_s)
            if self._pending:
                await self.retry()

    def status(self) -> dict[str, Any]:
        return {"ok": self.ok, "error": self.last_error,
                "pending": [msgspec.to_builtins(p) for p, _ in self._pending.values()],
                "written": self.written, "failures": self.failures}
