"""Deploys the supervisor can see, for playbook 03 config-mismatch Q1 "Was a deploy or hot-fix
performed in the last 2 hours?" (probe ``recent_deploy``).

What counts as a deploy here, and nothing else:

- **model**: the live ``model_hash`` (``model`` telemetry, the configured one, or the
  inference worker's /healthz; ``actors.model``) changes from one known hash to another;
- **config ref**: the deployed git ref of the config-drift monitor resolves to a new
  commit (``actors.configdrift``: a branch or tag moved, i.e. a config release);
- **config file**: a live config file the config-drift monitor watches is written (its
  mtime moves; at the first look, an mtime inside the window counts too): a deploy tool's
  write or a hand hot-fix alike; which one is config-mismatch Q2's question.

A change made anywhere else (a host package, an engine binary, a config outside
``[config_drift] files``) is not seen; the probe says so in its evidence. Each change is
journaled (``AuditNoted``, actor ``supervisor:deploys``) and kept, with the values last
seen and since when the watch runs, in ``STATE_DIR/deploys.json``, so a restart neither
forgets a deploy nor takes its own start for one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import trio

from supervisor.files import write_atomic

log = logging.getLogger("desk.deploys")

# Changes kept (status and the state file): far more than two hours' worth.
CHANGES_KEPT = 50


class DeploysConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The deploy watch, mounted as ``[deploys]``."""

    # playbook 03 config-mismatch Q1: "a deploy or hot-fix performed in the last 2 hours".
    window_s: float = 2 * 3600.0
    # How often the sources are looked at; the config ref moves only when the config-drift
    # monitor checks (playbook 04: every 5 minutes), the model hash with telemetry.
    interval_s: float = 10.0

    def __post_init__(self) -> None:
        for key in ("window_s", "interval_s"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be > 0")


class Change(msgspec.Struct, frozen=True):
    """One observed deploy: when (wall clock), which kind, what, from and to."""

    ts: float
    kind: str  # "model" | "config-ref" | "config-file"
    what: str
    old: str | None
    new: str


class _Saved(msgspec.Struct, kw_only=True):
    watching_since: float | None = None
    last: dict[str, str] = {}
    changes: list[Change] = []


class DeployWatch:
    """Looks at the live model hash, the deployed config commit and the live config files'
    mtimes every ``interval_s``; records each change."""

    name = "deploys"
    critical = False

    def __init__(
        self,
        config: DeploysConfig,
        *,
        model_hash: Callable[[], str | None],
        config_commit: Callable[[], str | None],
        config_files: list[str],
        state_path: Path | None,
        wall_clock: Callable[[], float],
        note: Callable[[str], Awaitable[None]],
    ) -> None:
        self.config = config
        self._model_hash = model_hash
        self._config_commit = config_commit
        self.config_files = list(config_files)
        self.state_path = state_path
        self.wall = wall_clock
        self.note = note
        self.saved = _Saved()
        self.loaded = False
        self.error: str | None = None
        # Runs the blocking stat calls of a pass off the event loop (STYLE: no blocking
        # I/O in async code); tests on trio's MockClock swap in an inline runner, as for
        # ``Arming.run_sync``.
        self.run_sync: Callable[..., Awaitable[Any]] = trio.to_thread.run_sync

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the saved state, look once, then every ``interval_s`` until cancelled."""
        await self.load()
        await self.observe()
        task_status.started()
        while True:
            await trio.sleep(self.config.interval_s)
            await self.observe()

    async def load(self) -> None:
        if self.loaded or self.state_path is None:
            self.loaded = True
            return
        try:
            data = await trio.Path(self.state_path).read_bytes()
            self.saved = msgspec.json.decode(data, type=_Saved)
        except FileNotFoundError:
            pass
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            # Start a fresh watch: the probe then says it has not watched the window.
            self.error = f"{self.state_path} unreadable, watching afresh: {exc}"
            log.error("deploys: %s", self.error)
        self.loaded = True

    @staticmethod
    def _mtimes(paths: list[str]) -> dict[str, float | None]:
        """Each path's mtime (None: missing or unreadable). Blocking: run in a thread."""
        found: dict[str, float | None] = {}
        for path in paths:
            try:
                found[path] = os.stat(path).st_mtime
            except OSError:
                found[path] = None
        return found

    async def observe(self) -> list[Change]:
        """Look at every source now; record, journal and save what changed."""
        # Every stat of the pass in one worker thread, before the wall clock is read.
        mtimes = (await self.run_sync(self._mtimes, self.config_files)
                  if self.config_files else {})
        now = self.wall()
        saved = self.saved
        first = saved.watching_since is None
        if first:
            saved.watching_since = now
        found: list[Change] = []

        def seen(key: str, kind: str, value: str | None, what: str) -> None:
            if value is None:
                return
            old = saved.last.get(key)
            saved.last[key] = value
            if old is not None and old != value:
                found.append(Change(now, kind, what.format(old=old[:12], new=value[:12]),
                                    old, value))

        model = self._model_hash()
        seen("model", "model", None if model in (None, "unknown") else model,
             "model deploy: live model_hash {old} -> {new}")
        seen("config-ref", "config-ref", self._config_commit(),
             "config release: the deployed ref moved from commit {old} to {new}")
        for path in self.config_files:
            mtime = mtimes.get(path)
            if mtime is None:
                continue
            key = f"file:{path}"
            old = saved.last.get(key)
            saved.last[key] = repr(mtime)
            fresh = (old is not None and float(old) != mtime) or (
                old is None and mtime >= now - self.config.window_s)
            if fresh:
                found.append(Change(min(mtime, now), "config-file",
                                    f"live config {path} written (mtime)", old, repr(mtime)))
        if found:
            saved.changes = [*saved.changes, *found][-CHANGES_KEPT:]
            for change in found:
                log.warning("deploy observed: %s", change.what)
                await self.note(f"deploy observed: {change.what}")
        if found or first:
            await self._save()
        return found

    async def _save(self) -> None:
        if self.state_path is None:  # not kept (tests on a virtual clock)
            return
        try:
            await trio.to_thread.run_sync(write_atomic, self.state_path,
                                          msgspec.json.encode(self.saved))
            self.error = None
        except OSError as exc:
            self.error = f"{self.state_path} not written: {exc.strerror or exc}"
            log.error("deploys: %s", self.error)

    def status(self) -> dict[str, object]:
        """``status.deploys``: what probe ``recent_deploy`` judges (JSON-able)."""
        return {
            "as_of": self.wall(),
            "window_s": self.config.window_s,
            "watching_since": self.saved.watching_since,
            "changes": [msgspec.to_builtins(c) for c in self.saved.changes[-20:]],
            "counted": ["model_hash changes", "deployed config ref moves",
                        "live config file writes"],
            "error": self.error,
        }
