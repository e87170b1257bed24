"""Config drift (playbook 02 config-drift; playbook 03 tree config-mismatch; playbook 04 "every 5
minutes"; playbook 05 P2 "live config hash matches").

- Every ``interval_s`` (playbook 02 config-drift: "Mismatch triggers an alert within 5
  minutes") the deployed ``ref`` is resolved to a commit (``git rev-parse``) and each live
  file's sha256 is compared with the sha256 of ``git show COMMIT:PATH`` in
  ``repository``, git run with ``trio.run_process`` under ``timeout_s``.
- A mismatch reports config-drift (P1: the runtime throttles to 0.25) for scope
  ``config:PATH`` with both hashes and a capped unified diff, once per episode. The file
  is marked paused (playbook 02: "Pause any model whose config is mismatched"; ``status()
  ["paused"]``, for the gate client) and the live and expected configs are written side
  by side into ``snapshot_dir`` (playbook 02: "Snapshot the current live config and the
  expected config side-by-side"), atomically, off the trio thread.
- Matching again ends the episode: the pause is lifted and a QUEUE alert says so; the
  incident stays open until an operator resolves it (playbook 03 config-mismatch: commit the
  hot-fix or redeploy, then re-run the check).
- A git failure (unknown ref, path not in the commit, no git, a timeout) or an unreadable
  live file is never a crash and never a drift: status shows the error for that file and
  a QUEUE alert is sent once per distinct error (the monitor is blind there).
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import trio

from supervisor.core.tomlconf import check_unique
from supervisor.files import write_atomic

from .base import AlertRaised, Finding, Report

__all__ = ["ConfigDriftConfig", "ConfigDriftMonitor", "FileDrift", "capped_diff"]

log = logging.getLogger("desk.configdrift")

# A finding's diff never exceeds this many characters, however long its lines (the
# journal and the alert sinks carry it); the full diff is in the snapshot.
DIFF_MAX_CHARS = 8000
# git's stderr kept in an error message.
STDERR_MAX_CHARS = 500
# git messages in English whatever the host's locale, so they read the same everywhere.
_GIT_ENV = {**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}


class ConfigDriftConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config drift, mounted as ``[config_drift]`` (playbook 02 config-drift)."""

    # Live config files on this host (playbook 02: "/etc/strategy/config.yml"); empty: off.
    files: list[str] = []
    # The git repository (work tree or bare) that holds the committed configs.
    repository: str = ""
    # The deployed ref: a tag, branch or commit (playbook 02: "the deployed git ref").
    ref: str = ""
    # Each live file's path inside the repository, in the order of `files`.
    paths: list[str] = []
    # playbook 02 config-drift: "Mismatch triggers an alert within 5 minutes"; playbook 04 cadence.
    interval_s: float = 300.0
    # One git call's deadline; a hung git is an error in status, not a stuck monitor.
    timeout_s: float = 30.0
    git: str = "git"  # the git executable
    diff_lines: int = 60  # lines of unified diff in a finding's evidence

    def __post_init__(self) -> None:
        if len(self.files) != len(self.paths):
            raise ValueError(f"files and paths must pair up one to one, got {len(self.files)} "
                             f"files and {len(self.paths)} paths")
        if self.files and not (self.repository and self.ref):
            raise ValueError("files need a repository and a ref to compare them against")
        for path in self.paths:
            if not path or path.startswith("/") or ".." in Path(path).parts:
                raise ValueError(f"paths: {path!r} must be a relative path inside the "
                                 "repository, like 'strategy/config.yml'")
        check_unique("paths", self.paths)
        if self.ref.startswith("-"):
            raise ValueError(f"ref must not start with '-', got {self.ref!r}")
        for key in ("interval_s", "timeout_s"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be > 0")
        if self.diff_lines < 1:
            raise ValueError("diff_lines must be >= 1")


class FileDrift(msgspec.Struct, kw_only=True):
    """What ``status`` shows of one config file."""

    file: str  # the live file
    path: str  # its path in the repository
    live_sha256: str | None = None
    expected_sha256: str | None = None
    match: bool | None = None  # None: not compared (not checked yet, or an error)
    error: str | None = None
    checked_at: float | None = None  # wall clock
    mismatch_since: float | None = None  # wall clock of the episode's first mismatch
    reported: bool = False  # the episode's finding was sent
    snapshot: str | None = None  # the episode's latest snapshot directory
    snapshot_error: str | None = None


class _GitFailed(Exception):
    """A git call failed; the message says which and why."""

    def __init__(self, message: str, *, returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode  # None: git did not run to completion
        self.stderr = stderr


def capped_diff(
    expected: bytes, live: bytes, *, fromfile: str, tofile: str, max_lines: int | None
) -> tuple[str, bool]:
    """The unified diff from ``expected`` to ``live``, at most ``max_lines`` lines and
    ``DIFF_MAX_CHARS`` characters (None: whole), and whether it was cut."""
    a = expected.decode("utf-8", "replace").splitlines(keepends=True)
    b = live.decode("utf-8", "replace").splitlines(keepends=True)
    lines = difflib.unified_diff(a, b, fromfile=fromfile, tofile=tofile)
    if max_lines is None:
        return "".join(_eol(line) for line in lines), False
    kept = list(itertools.islice(lines, max_lines + 1))
    text = "".join(_eol(line) for line in kept[:max_lines])
    cut = len(kept) > max_lines or len(text) > DIFF_MAX_CHARS
    return text[:DIFF_MAX_CHARS], cut


def _eol(line: str) -> str:
    return line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"


async def _kill_git(proc: trio.Process) -> None:
    """A cancelled or timed-out git (read-only: rev-parse, show) is killed at once;
    trio's default waits 5 s after SIGTERM first, which on a test's virtual clock passes
    before the real process has had a chance to exit, and warns."""
    proc.kill()


class ConfigDriftMonitor:
    """Hashes the live config files against the deployed git ref."""

    name = "config_drift"
    critical = False

    def __init__(
        self,
        config: ConfigDriftConfig,
        report: Callable[[Report], Awaitable[None]],
        *,
        snapshot_dir: Path,
        wall_clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.report = report
        self.snapshot_dir = snapshot_dir
        self.wall = wall_clock
        # The daemon runs as its own user and the configs' repository is usually
        # another's: git >= 2.35.2 refuses it ("detected dubious ownership"). Only the
        # configured repository is declared safe, on each git call's command line (git
        # honours safe.directory there; nothing global is changed). Git compares the
        # real path.
        self._safe_directory = os.path.realpath(config.repository) if config.repository else ""
        self.files = {p: FileDrift(file=f, path=p) for f, p in zip(config.files, config.paths,
                                                                  strict=True)}
        self.paused: dict[str, str] = {}  # repository path -> reason (playbook 02 "Pause")
        self.commit: str | None = None  # the deployed ref, resolved at the last check
        self.ref_error: str | None = None
        self.checks = 0
        self.last_run_at: float | None = None  # wall clock
        self.last_run_s: float | None = None
        self._alerted: dict[str, str] = {}  # scope -> the error alerted for it
        self._snapshotted: dict[str, str] = {}  # path -> live sha256 of its last snapshot
        self._lock = trio.Lock()  # one check at a time: an episode is reported once

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check now and then every ``interval_s``, until cancelled.

        Started at once: there is nothing to get ready, and a slow git must not hold up
        the desk's start. Cancelling a check kills its git process (trio.run_process).
        """
        task_status.started()
        if not self.files:
            return  # nothing configured; status says so
        while True:
            t0 = trio.current_time()
            await self.check()
            await trio.sleep_until(t0 + self.config.interval_s)

    # --- one pass --------------------------------------------------------------------------

    async def check(self) -> None:
        """Resolve the ref and compare every file; report new drift, lifted drift, errors."""
        async with self._lock:
            started = time.perf_counter()
            try:
                self.commit = await self._resolve()
            except _GitFailed as exc:
                self.commit = None
                self.ref_error = str(exc)
                for st in self.files.values():
                    st.error, st.match, st.checked_at = str(exc), None, self.wall()
                await self._error_alert("config:ref", str(exc))
            else:
                self.ref_error = None
                self._alerted.pop("config:ref", None)
                for st in self.files.values():
                    await self._check_file(st, self.commit)
            self.checks += 1
            self.last_run_at = self.wall()
            self.last_run_s = time.perf_counter() - started

    async def _resolve(self) -> str:
        cfg = self.config
        try:
            return await self._commit_of(cfg.ref)
        except _GitFailed as exc:
            if exc.returncode != 1 or exc.stderr:  # the repository, or git itself
                raise _GitFailed(f"cannot resolve the deployed ref {cfg.ref!r} in repository "
                                 f"{cfg.repository}: {exc}") from None
            # With --quiet an unknown ref fails with exit 1 and says nothing.
            raise _GitFailed(f"deployed ref {cfg.ref!r} not found in repository "
                             f"{cfg.repository}: set ref to a tag, branch or commit that "
                             "exists there") from None

    async def _commit_of(self, rev: str) -> str:
        """The commit ``rev`` names (``_GitFailed``: exit 1 with no stderr if none)."""
        out = await self._git("rev-parse", "--verify", "--quiet", "--end-of-options",
                              f"{rev}^{{commit}}")
        return out.decode("ascii", "replace").strip()

    async def _check_file(self, st: FileDrift, commit: str) -> None:
        cfg = self.config
        scope = f"config:{st.path}"
        st.checked_at = self.wall()
        try:
            live = await trio.Path(st.file).read_bytes()
        except OSError as exc:
            st.error, st.match = f"cannot read live config {st.file}: {exc.strerror or exc}", None
            await self._error_alert(scope, st.error)
            return
        try:
            expected = await self._git("show", f"{commit}:{st.path}")
        except _GitFailed as exc:
            st.error, st.match = f"{st.path} at {cfg.ref} ({commit[:12]}): {exc}", None
            await self._error_alert(scope, st.error)
            return
        st.error = None
        self._alerted.pop(scope, None)
        st.live_sha256 = hashlib.sha256(live).hexdigest()
        st.expected_sha256 = hashlib.sha256(expected).hexdigest()
        st.match = st.live_sha256 == st.expected_sha256
        if st.match:
            if st.mismatch_since is not None:
                await self._cleared(st, commit)
            return
        if st.mismatch_since is None:
            st.mismatch_since = self.wall()
        if self._snapshotted.get(st.path) != st.live_sha256:
            # A new live content in the episode: the first one and every change after it.
            await self._snapshot(st, commit, live, expected)
        if not st.reported:
            await self._drifted(st, commit, live, expected)

    async def _drifted(self, st: FileDrift, commit: str, live: bytes, expected: bytes) -> None:
        cfg = self.config
        assert st.live_sha256 is not None and st.expected_sha256 is not None
        diff, cut = capped_diff(expected, live, fromfile=f"{cfg.ref}:{st.path}",
                                tofile=st.file, max_lines=cfg.diff_lines)
        reason = (f"live {st.file} does not match {st.path} at {cfg.ref} ({commit[:12]}): "
                  f"live sha256 {st.live_sha256[:12]}, expected {st.expected_sha256[:12]}")
        summary = (f"config drift: {reason}. Model paused; commit the live config if the "
                   "change was an intended hot-fix, else redeploy from the committed ref "
                   "(playbook 03 config-mismatch)")
        log.warning("config drift: %s", reason)
        self.paused[st.path] = reason
        await self.report(Finding(
            actor=self.name, incident_class="config-drift", scope=f"config:{st.path}",
            summary=summary,
            evidence={"file": st.file, "path": st.path, "repository": cfg.repository,
                      "ref": cfg.ref, "commit": commit, "live_sha256": st.live_sha256,
                      "expected_sha256": st.expected_sha256, "diff": diff,
                      "diff_truncated": cut, "snapshot": st.snapshot,
                      "snapshot_error": st.snapshot_error}))
        st.reported = True

    async def _cleared(self, st: FileDrift, commit: str) -> None:
        cfg = self.config
        self.paused.pop(st.path, None)
        self._snapshotted.pop(st.path, None)
        st.mismatch_since, st.reported = None, False
        log.info("config drift: %s matches %s again", st.file, cfg.ref)
        await self.report(AlertRaised(
            actor=self.name, channel="QUEUE", scope=f"config:{st.path}",
            summary=(f"config {st.file} matches {st.path} at {cfg.ref} ({commit[:12]}) "
                     "again: the pause is lifted; the config-drift incident stays open "
                     "until it is resolved with its root cause"),
            evidence={"file": st.file, "path": st.path, "ref": cfg.ref, "commit": commit,
                      "sha256": st.live_sha256}))

    async def _error_alert(self, scope: str, error: str) -> None:
        if self._alerted.get(scope) == error:
            return
        log.error("config drift: %s", error)
        self._alerted[scope] = error
        await self.report(AlertRaised(
            actor=self.name, channel="QUEUE", scope=scope,
            summary=f"config drift check blind: {error}",
            evidence={"error": error, "repository": self.config.repository,
                      "ref": self.config.ref}))

    async def compare_at(self, rev: str) -> dict[str, object]:
        """Compare every live file with its content at ``rev`` and resolve the deployed
        ref, reporting nothing (playbook 01 config-rollback verify: "the live config hash
        matches the revert commit").

        Raises:
            ValueError: ``rev`` is not a commit, tag or branch of the repository.
        """
        cfg = self.config
        if not rev or rev.startswith("-") or any(c.isspace() for c in rev):
            raise ValueError(f"{rev!r} is not a commit: give the revert commit's sha")
        try:
            commit = await self._commit_of(rev)
        except _GitFailed as exc:
            raise ValueError(f"commit {rev!r} not found in repository {cfg.repository}"
                             + (f": {exc.stderr}" if exc.stderr else "")) from None
        deployed: str | None = None
        deployed_error: str | None = None
        try:
            deployed = await self._resolve()
        except _GitFailed as exc:
            deployed_error = str(exc)
        files: dict[str, dict[str, object]] = {}
        for st in self.files.values():
            row: dict[str, object] = {"file": st.file, "live_sha256": None,
                                      "commit_sha256": None, "match": None, "error": None}
            files[st.path] = row
            try:
                live = await trio.Path(st.file).read_bytes()
                expected = await self._git("show", f"{commit}:{st.path}")
            except OSError as exc:
                row["error"] = f"cannot read live config {st.file}: {exc.strerror or exc}"
                continue
            except _GitFailed as exc:
                row["error"] = f"{st.path} at {commit[:12]}: {exc}"
                continue
            row["live_sha256"] = hashlib.sha256(live).hexdigest()
            row["commit_sha256"] = hashlib.sha256(expected).hexdigest()
            row["match"] = row["live_sha256"] == row["commit_sha256"]
        return {"commit": commit, "repository": cfg.repository, "deployed_ref": cfg.ref,
                "deployed_commit": deployed, "deployed_error": deployed_error, "files": files}

    # --- git -------------------------------------------------------------------------------

    async def _git(self, *args: str) -> bytes:
        """Run git in the repository; its stdout.

        Raises:
            _GitFailed: git could not run, exited non-zero, or took over ``timeout_s``.
        """
        cfg = self.config
        cmd = [cfg.git, "-c", f"safe.directory={self._safe_directory}", "-C", cfg.repository,
               *args]
        what = f"git {' '.join(args)}"
        try:
            with trio.fail_after(cfg.timeout_s):
                done = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True,
                                              check=False, stdin=b"", env=_GIT_ENV,
                                              deliver_cancel=_kill_git)
        except trio.TooSlowError:
            raise _GitFailed(f"{what} took over {cfg.timeout_s:g} s") from None
        except OSError as exc:
            raise _GitFailed(f"cannot run {cfg.git}: {exc.strerror or exc}") from None
        if done.returncode != 0:
            err = done.stderr.decode("utf-8", "replace").strip()[:STDERR_MAX_CHARS]
            raise _GitFailed(f"{what} failed (exit {done.returncode})"
                             + (f": {err}" if err else ""), returncode=done.returncode,
                             stderr=err)
        return done.stdout

    # --- snapshots -------------------------------------------------------------------------

    async def _snapshot(self, st: FileDrift, commit: str, live: bytes, expected: bytes) -> None:
        """Write the live and expected configs side by side, the full diff and what they
        are, into a new directory under ``snapshot_dir``; a failure is shown, not raised."""
        cfg = self.config
        assert st.live_sha256 is not None
        stamp = dt.datetime.fromtimestamp(self.wall(), dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", st.path)
        where = self.snapshot_dir / f"{stamp}-{slug}-{st.live_sha256[:12]}"
        name = Path(st.path).name
        diff, _ = capped_diff(expected, live, fromfile=f"{cfg.ref}:{st.path}", tofile=st.file,
                              max_lines=None)
        meta = msgspec.json.format(msgspec.json.encode({
            "at": self.wall(), "file": st.file, "path": st.path,
            "repository": cfg.repository, "ref": cfg.ref, "commit": commit,
            "live_sha256": st.live_sha256, "expected_sha256": st.expected_sha256,
            "live": f"live/{name}", "expected": f"expected/{name}"}))
        parts = [(where / "live" / name, live), (where / "expected" / name, expected),
                 (where / "diff.patch", diff.encode()), (where / "snapshot.json", meta)]

        def write() -> None:
            for path, data in parts:
                write_atomic(path, data)

        try:
            await trio.to_thread.run_sync(write)
        except OSError as exc:
            st.snapshot_error = f"snapshot {where} not written: {exc.strerror or exc}"
            log.error("config drift: %s", st.snapshot_error)
            return
        st.snapshot, st.snapshot_error = str(where), None
        self._snapshotted[st.path] = st.live_sha256

    # --- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        """What ``deskctl status`` shows of config drift (JSON-able)."""
        cfg = self.config
        sts = list(self.files.values())
        if not sts:
            verdict = "not_configured"
        elif self.checks == 0:
            verdict = "not_run"
        elif any(st.match is False for st in sts):
            verdict = "drift"
        elif any(st.error is not None for st in sts):
            verdict = "error"
        else:
            verdict = "ok"
        return {
            "metric": "sha256 of each live config file vs the same path at the deployed ref",
            "threshold": "any mismatch",
            "channel": "PAGE (config-drift P1: size throttled, the model paused)",
            "frequency": f"every {cfg.interval_s:g} s",
            "verdict": verdict,
            "repository": cfg.repository or None,
            "ref": cfg.ref or None,
            "commit": self.commit,
            "error": self.ref_error,
            "files": {p: msgspec.to_builtins(st) for p, st in self.files.items()},
            "paused": dict(self.paused),
            "snapshot_dir": str(self.snapshot_dir),
            "checks": self.checks,
            "last_run_at": self.last_run_at,
            "last_run_s": self.last_run_s,
        }
