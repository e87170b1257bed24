"""Every start-up error is one line naming the path and what to do, with exit 2, in the
daemon and in the demo: systemd's RestartPreventExitStatus=2 then stops retrying a
start that cannot succeed (systemd/desk-supervisor.service)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .daemonproc import start_daemon, venue_process, write_config


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor.cli", *args],
                          capture_output=True, text=True, timeout=timeout)


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("desk-supervisor: ")
    return lines[0]


@pytest.mark.parametrize(("state_dir", "words"), [
    ("/sys/kernel", "state directory /sys/kernel is not writable"),  # exists, read-only
    ("/sys/desk-state", "state directory /sys/desk-state cannot be created"),
])
def test_an_unusable_state_dir_is_one_line_and_exit_2(
    tmp_path: Path, state_dir: str, words: str
) -> None:
    config = tmp_path / "desk.toml"
    config.write_text(f'state_dir = "{state_dir}"\n[[venues]]\nname = "alpha"\n'
                      f'base_url = "http://127.0.0.1:9"\n[control]\n'
                      f'socket = "{tmp_path}/c.sock"\n')
    line = _one_line(_run("run", "--config", str(config)))
    assert words in line and "state_dir" in line
    demo = _one_line(_run("demo", "--state-dir", state_dir, "--socket",
                          str(tmp_path / "d.sock")))
    assert words in demo


def test_a_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "desk.toml"
    config.write_text('state_dir = 5\n')
    line = _one_line(_run("run", "--config", str(config)))
    assert str(config) in line
    assert _one_line(_run("check-config", "--config", str(config))) == line


def test_a_socket_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with venue_process() as url:
        config, sock, _ = write_config(tmp_path, url)
        proc = start_daemon(config, sock, tmp_path / "daemon.log")
        try:
            other = tmp_path / "other"
            other.mkdir()
            second, _, _ = write_config(other, url, "")
            text = second.read_text().replace(f'socket = "{other}/c.sock"',
                                              f'socket = "{sock}"')
            second.write_text(text)
            line = _one_line(_run("run", "--config", str(second)))
            assert line == (f"desk-supervisor: control socket {sock} is in use by a running "
                            "daemon")
        finally:
            proc.terminate()
            proc.wait(10)
