"""Config drift (playbook 02 config-drift; playbook 03 config-mismatch) against a real git
repository
made in ``tmp_path``: ``git init``, a committed config, the ref set to that commit or a tag.
Every check runs real ``git`` processes; each test is bounded by ``fail_after``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from actors.base import AlertRaised, Finding, Report
from actors.configdrift import ConfigDriftConfig, ConfigDriftMonitor, capped_diff

T0 = 1_709_553_600.0  # 2024-03-04T12:00:00Z
CONFIG = "model: momentum\nmax_position: 100\nthreshold: 0.25\n"
PATH = "strategy/config.yml"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=desk", "-c", "user.email=desk@example.com",
         "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", *args],
        check=True, capture_output=True, text=True)
    return done.stdout.strip()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Reports:
    def __init__(self) -> None:
        self.items: list[Report] = []
        self._more = trio.Event()

    async def __call__(self, item: Report) -> None:
        self.items.append(item)
        self._more.set()

    async def wait_for(self, count: int) -> None:
        """Until ``count`` items have been reported."""
        while len(self.items) < count:
            self._more = trio.Event()
            await self._more.wait()

    def findings(self) -> list[Finding]:
        return [i for i in self.items if isinstance(i, Finding)]

    def alerts(self) -> list[AlertRaised]:
        return [i for i in self.items if isinstance(i, AlertRaised)]


class Repo:
    """A repository with the config committed, and the live copy deployed from it."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "repo"
        self.root.mkdir()
        git(self.root, "init", "-q")
        (self.root / "strategy").mkdir()
        (self.root / PATH).write_text(CONFIG)
        git(self.root, "add", PATH)
        git(self.root, "commit", "-q", "-m", "config")
        self.commit = git(self.root, "rev-parse", "HEAD")
        self.live = tmp_path / "etc" / "strategy" / "config.yml"
        self.live.parent.mkdir(parents=True)
        self.live.write_text(CONFIG)
        self.snapshots = tmp_path / "snapshots"

    def monitor(self, **overrides: Any) -> tuple[ConfigDriftMonitor, Reports]:
        fields: dict[str, Any] = {"files": [str(self.live)], "repository": str(self.root),
                                  "ref": self.commit, "paths": [PATH]}
        fields.update(overrides)
        reports = Reports()
        monitor = ConfigDriftMonitor(ConfigDriftConfig(**fields), reports,
                                     snapshot_dir=self.snapshots,
                                     wall_clock=lambda: T0 + trio.current_time())
        return monitor, reports


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


async def check(monitor: ConfigDriftMonitor) -> dict[str, Any]:
    with trio.fail_after(30):
        await monitor.check()
    return msgspec.json.decode(msgspec.json.encode(monitor.status()))  # JSON-able


async def test_matching_config_shows_both_hashes_equal_and_reports_nothing(repo: Repo) -> None:
    monitor, reports = repo.monitor()
    status = await check(monitor)
    row = status["files"][PATH]
    assert (row["live_sha256"], row["expected_sha256"]) == (sha(CONFIG), sha(CONFIG))
    assert row["match"] is True and row["error"] is None
    assert (status["verdict"], status["commit"], status["paused"]) == ("ok", repo.commit, {})
    assert reports.items == []


async def test_edited_live_config_reports_config_drift_with_both_hashes_and_the_diff(
    repo: Repo,
) -> None:
    monitor, reports = repo.monitor()
    edited = CONFIG.replace("max_position: 100", "max_position: 500")
    repo.live.write_text(edited)
    status = await check(monitor)

    [finding] = reports.findings()
    assert (finding.incident_class, finding.scope) == ("config-drift", f"config:{PATH}")
    ev = finding.evidence
    assert (ev["live_sha256"], ev["expected_sha256"]) == (sha(edited), sha(CONFIG))
    assert (ev["commit"], ev["ref"], ev["path"]) == (repo.commit, repo.commit, PATH)
    assert ev["diff"] == (
        f"--- {repo.commit}:{PATH}\n+++ {repo.live}\n@@ -1,3 +1,3 @@\n model: momentum\n"
        "-max_position: 100\n+max_position: 500\n threshold: 0.25\n")
    assert ev["diff_truncated"] is False

    row = status["files"][PATH]
    assert (row["live_sha256"], row["expected_sha256"], row["match"]) == (
        sha(edited), sha(CONFIG), False)
    assert status["verdict"] == "drift"
    assert list(status["paused"]) == [PATH]
    assert sha(edited)[:12] in status["paused"][PATH]

    # playbook 02: "Snapshot the current live config and the expected config side-by-side".
    snap = Path(row["snapshot"])
    assert snap.parent == repo.snapshots and ev["snapshot"] == str(snap)
    assert (snap / "live" / "config.yml").read_text() == edited
    assert (snap / "expected" / "config.yml").read_text() == CONFIG
    assert "+max_position: 500" in (snap / "diff.patch").read_text()
    meta = msgspec.json.decode((snap / "snapshot.json").read_bytes())
    assert (meta["live_sha256"], meta["expected_sha256"], meta["commit"]) == (
        sha(edited), sha(CONFIG), repo.commit)


async def test_drift_is_reported_once_per_episode_and_cleared_when_matching_again(
    repo: Repo,
) -> None:
    monitor, reports = repo.monitor()
    repo.live.write_text(CONFIG + "extra: 1\n")
    await check(monitor)
    await check(monitor)
    assert len(reports.findings()) == 1

    repo.live.write_text(CONFIG)
    status = await check(monitor)
    assert status["paused"] == {} and status["verdict"] == "ok"
    assert status["files"][PATH]["match"] is True
    [cleared] = reports.alerts()
    assert (cleared.channel, cleared.scope) == ("QUEUE", f"config:{PATH}")
    assert "stays open until it is resolved" in cleared.summary
    assert len(reports.findings()) == 1  # the incident is not auto-resolved by a finding

    repo.live.write_text(CONFIG + "extra: 2\n")
    await check(monitor)
    assert len(reports.findings()) == 2  # a new episode


async def test_a_second_live_change_in_the_episode_is_snapshotted_not_re_reported(
    repo: Repo,
) -> None:
    monitor, reports = repo.monitor()
    repo.live.write_text(CONFIG + "a: 1\n")
    await check(monitor)
    first = monitor.files[PATH].snapshot
    repo.live.write_text(CONFIG + "a: 2\n")
    await check(monitor)
    assert len(reports.findings()) == 1
    assert monitor.files[PATH].snapshot != first
    assert len(list(repo.snapshots.iterdir())) == 2


async def test_a_tag_as_the_deployed_ref_resolves_to_its_commit(repo: Repo) -> None:
    git(repo.root, "tag", "-a", "deploy-1", "-m", "deploy")
    (repo.root / PATH).write_text(CONFIG + "later: true\n")
    git(repo.root, "commit", "-q", "-am", "later")  # HEAD moves on; the deployed tag does not
    monitor, reports = repo.monitor(ref="deploy-1")
    status = await check(monitor)
    assert status["commit"] == repo.commit and status["verdict"] == "ok"
    assert reports.items == []


async def test_unknown_ref_is_a_clear_error_in_status_not_a_crash(repo: Repo) -> None:
    monitor, reports = repo.monitor(ref="v9.9.9")
    status = await check(monitor)
    error = (f"deployed ref 'v9.9.9' not found in repository {repo.root}: set ref to a tag, "
             "branch or commit that exists there")
    assert status["error"] == error
    assert status["files"][PATH]["error"] == error
    assert status["files"][PATH]["match"] is None
    assert (status["verdict"], status["commit"], status["paused"]) == ("error", None, {})
    assert reports.findings() == []
    [alert] = reports.alerts()
    assert (alert.channel, alert.scope, alert.summary) == (
        "QUEUE", "config:ref", f"config drift check blind: {error}")
    await check(monitor)
    assert len(reports.alerts()) == 1  # once per distinct error


async def test_a_path_missing_at_the_ref_and_an_unreadable_live_file_are_errors(
    repo: Repo, tmp_path: Path,
) -> None:
    monitor, reports = repo.monitor(
        files=[str(repo.live), str(tmp_path / "absent.yml")],
        paths=["strategy/other.yml", "strategy/absent.yml"])
    status = await check(monitor)
    other = status["files"]["strategy/other.yml"]["error"]
    assert other.startswith(f"strategy/other.yml at {repo.commit} ({repo.commit[:12]}): "
                            f"git show {repo.commit}:strategy/other.yml failed (exit 128): "
                            "fatal: path 'strategy/other.yml' does not exist in")
    assert status["files"]["strategy/absent.yml"]["error"] == (
        f"cannot read live config {tmp_path / 'absent.yml'}: No such file or directory")
    assert status["verdict"] == "error" and reports.findings() == []
    assert sorted(a.scope for a in reports.alerts()) == [
        "config:strategy/absent.yml", "config:strategy/other.yml"]


async def test_no_repository_or_no_git_is_a_clear_error(repo: Repo, tmp_path: Path) -> None:
    monitor, _ = repo.monitor(repository=str(tmp_path / "nowhere"))
    status = await check(monitor)
    assert status["error"].startswith(
        f"cannot resolve the deployed ref {repo.commit!r} in repository "
        f"{tmp_path / 'nowhere'}: git rev-parse")
    assert "cannot change to" in status["error"]

    monitor, _ = repo.monitor(git=str(tmp_path / "no-git"))
    status = await check(monitor)
    assert status["error"] == (
        f"cannot resolve the deployed ref {repo.commit!r} in repository {repo.root}: "
        f"cannot run {tmp_path / 'no-git'}: No such file or directory")


async def test_the_diff_in_the_finding_is_capped(repo: Repo) -> None:
    monitor, reports = repo.monitor(diff_lines=5)
    repo.live.write_text("".join(f"line{i}: {i}\n" for i in range(100)))
    await check(monitor)
    ev = reports.findings()[0].evidence
    assert ev["diff_truncated"] is True
    assert len(str(ev["diff"]).splitlines()) == 5
    full = Path(str(ev["snapshot"])) / "diff.patch"
    assert len(full.read_text().splitlines()) > 100  # the snapshot keeps the whole diff


def test_capped_diff_marks_a_missing_final_newline() -> None:
    text, cut = capped_diff(b"a\n", b"b", fromfile="x", tofile="y", max_lines=10)
    assert text == "--- x\n+++ y\n@@ -1 +1 @@\n-a\n+b\n\\ No newline at end of file\n"
    assert cut is False


async def test_the_run_loop_checks_every_interval(repo: Repo) -> None:
    monitor, reports = repo.monitor(interval_s=0.05)
    repo.live.write_text(CONFIG + "hot_fix: true\n")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(monitor.run)
            await reports.wait_for(1)  # the first check, at start
            assert isinstance(reports.items[0], Finding)
            assert monitor.paused.keys() == {PATH}
            repo.live.write_text(CONFIG)
            await reports.wait_for(2)  # a later check: matching again
            assert isinstance(reports.items[1], AlertRaised) and monitor.paused == {}
            repo.live.write_text(CONFIG + "hot_fix: 2\n")
            await reports.wait_for(3)
            assert isinstance(reports.items[2], Finding)
            nursery.cancel_scope.cancel()
    assert monitor.checks >= 3


@pytest.mark.parametrize(("toml", "message"), [
    ('files = ["/etc/a.yml"]\nrepository = "/srv/cfg"\nref = "v1"\n',
     "files and paths must pair up one to one, got 1 files and 0 paths"),
    ('files = ["/etc/a.yml"]\npaths = ["a.yml"]\n',
     "files need a repository and a ref to compare them against"),
    ('files = ["/etc/a.yml"]\npaths = ["/a.yml"]\nrepository = "/r"\nref = "v1"\n',
     "paths: '/a.yml' must be a relative path inside the repository, like "
     "'strategy/config.yml'"),
    ("interval_s = 0\n", "interval_s must be > 0"),
    ("intervall_s = 300\n", "Object contains unknown field `intervall_s`"),
])
def test_config_errors_name_the_key(toml: str, message: str) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.toml.decode(toml, type=ConfigDriftConfig)
    assert str(info.value) == message


def test_config_defaults_follow_the_seed() -> None:
    cfg = msgspec.toml.decode(b"", type=ConfigDriftConfig)
    assert cfg.interval_s == 300.0  # playbook 02: "Mismatch triggers an alert within 5 minutes"
    assert cfg.files == [] and cfg.paths == []


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run git as another user")
async def test_config_drift_passes_as_the_service_user_on_a_repository_owned_by_root(
    tmp_path: Path,
) -> None:
    """git >= 2.35.2 refuses a repository owned by another user ("detected dubious
    ownership", exit 128): the daemon runs as its own user, the configs' repository
    is usually root's. The configured repository alone is declared safe.

    git runs as uid 65534 through ``setpriv`` (the ``git`` setting is the executable),
    exactly as it would under a service user; the repository is root's."""
    top = Path(tempfile.mkdtemp(prefix="drift-nobody-"))
    try:
        top.chmod(0o755)
        repo = Repo(top)  # made by root, owned by root
        for path in (top, *top.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        as_nobody = tmp_path / "git-as-nobody"
        as_nobody.write_text('#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 '
                             '--clear-groups -- git "$@"\n')
        as_nobody.chmod(0o755)
        plain = await trio.run_process([str(as_nobody), "-C", str(repo.root), "rev-parse",
                                        "HEAD"], capture_stdout=True, capture_stderr=True,
                                       check=False)
        assert plain.returncode == 128 and b"dubious ownership" in plain.stderr
        monitor, reports = repo.monitor(git=str(as_nobody))
        status = await check(monitor)
        assert status["error"] is None
        assert status["commit"] == repo.commit and reports.items == []
    finally:
        shutil.rmtree(top, ignore_errors=True)
