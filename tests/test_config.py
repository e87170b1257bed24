"""Configuration: playbook defaults, errors that name the key, credentials never on argv."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.cli.main import main as cli_main
from supervisor.config import Config, load_config, parse_config, venue_credentials
from supervisor.core.errors import ConfigError


def test_defaults_are_the_seeds_numbers() -> None:
    c = Config()
    assert (c.heartbeat.interval_s, c.heartbeat.failures, c.heartbeat.window_s) == (10, 3, 30)
    assert c.heartbeat.ack_latency_factor == 5.0
    assert (c.heartbeat.latency_p95_ms, c.heartbeat.latency_windows) == (500.0, 3)
    assert c.kill.quiet_s == 60.0 and c.kill.prediction_window_s == 600.0
    assert c.recovery.size_multiplier == 0.25
    assert (c.throttle.feature_drift, c.throttle.pnl_divergence) == (0.25, 0.5)
    assert c.control.socket_mode == 0o660
    assert (c.supervision.max_restarts, c.supervision.period_s) == (1, 5.0)


@pytest.mark.parametrize(("text", "message"), [
    ('[heartbeat]\nfailures = "three"',
     "c.toml: Expected `int`, got `str` - at `$.heartbeat.failures`"),
    ("[heartbeat]\ninterval_s = 0", "c.toml: interval_s must be > 0 - at `$.heartbeat`"),
    ("colour = 1", "c.toml: Object contains unknown field `colour`"),
    ('[[venues]]\nname = "a"\nbase_url = "http://x"\n[[venues]]\nname = "a"\nbase_url = "http://y"',
     "c.toml: venue names must be unique, repeated: a"),
    ("[recovery]\nsize_multiplier = 2.0",
     "c.toml: size_multiplier must be in (0, 1] - at `$.recovery`"),
    ('[reconciliation]\nend_of_day = "25:00"',
     "c.toml: end_of_day must be 'HH:MM', got '25:00' - at `$.reconciliation`"),
    # A venue's name names its directory in the credential store.
    ('[[venues]]\nname = "alpha beta"\nbase_url = "http://x"',
     "c.toml: venue name 'alpha beta' may use only letters, digits, '.', '_' and '-', not "
     "starting with '.' (it names the venue's directory in the credential store) - at "
     "`$.venues[0]`"),
    ('[[venues]]\nname = "../etc"\nbase_url = "http://x"',
     "c.toml: venue name '../etc' may use only letters, digits, '.', '_' and '-', not "
     "starting with '.' (it names the venue's directory in the credential store) - at "
     "`$.venues[0]`"),
])
def test_a_bad_value_names_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, source="c.toml")
    assert str(exc.value) == message


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope.toml"):
        load_config(tmp_path / "nope.toml")


def test_credentials_come_from_the_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "alpha-key").write_text("AKTESTKEY\n")
    (tmp_path / "alpha-secret").write_text("s3cr3t-value\n")
    cfg = parse_config('[[venues]]\nname = "alpha"\nbase_url = "http://x"\n'
                       'key_id_credential = "alpha-key"\nsecret_key_credential = "alpha-secret"')
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert venue_credentials(cfg.venues[0], environ=env) == ("AKTESTKEY", "s3cr3t-value")
    with pytest.raises(ConfigError, match=r"\$CREDENTIALS_DIRECTORY is not set"):
        venue_credentials(cfg.venues[0], environ={})


def test_check_config_reports_errors_and_exit_status(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[kill]\nquiet_s = -1\n")
    assert cli_main(["check-config", "--config", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"desk-supervisor: {bad}: quiet_s must be > 0 - at `$.kill`")
    good = tmp_path / "good.toml"
    good.write_text("")
    assert cli_main(["check-config", "--config", str(good)]) == 0


@pytest.mark.parametrize(("text", "message"), [
    ("[control]\nsocket_mode = 660",
     "c.toml: socket_mode must be a permission mode written in octal, like 0o660 (got 660, "
     "which is 0o1224) - at `$.control`"),
    ("[control]\nwatch_queue = 0", "c.toml: watch_queue must be >= 1 - at `$.control`"),
    ("[throttle]\nfeature_drift = 1.5",
     "c.toml: feature_drift must be in (0, 1]: a throttle never raises size - at `$.throttle`"),
    ("[supervision]\nperiod_s = 0", "c.toml: period_s must be > 0 - at `$.supervision`"),
    ("[kill]\nstuck_after_s = -1", "c.toml: stuck_after_s must be > 0 - at `$.kill`"),
])
def test_ranges_are_checked(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, source="c.toml")
    assert str(exc.value) == message


def test_octal_socket_mode_is_accepted() -> None:
    assert parse_config("[control]\nsocket_mode = 0o640").control.socket_mode == 0o640


def test_check_config_checks_credentials(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[venues]]\nname = "alpha"\nbase_url = "http://x"\n'
                   'key_id_credential = "alpha-key"\n')
    assert cli_main(["check-config", "--config", str(cfg)]) == 2
    assert "names credential 'alpha-key' but $CREDENTIALS_DIRECTORY is not set" in (
        capsys.readouterr().err)


def test_run_reports_startup_errors_in_one_line(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    sock = tmp_path / "busy.sock"
    import socket

    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock))
    listener.listen()
    try:
        cfg.write_text(f'state_dir = "{tmp_path / "state"}"\n[control]\nsocket = "{sock}"\n')
        assert cli_main(["run", "--config", str(cfg)]) == 2
    finally:
        listener.close()
    assert capsys.readouterr().err == (
        f"desk-supervisor: control socket {sock} is in use by a running daemon\n")
