"""Reading the small files the monitors are configured with (limits, reference,
importance, pinned model, backtest)."""

from __future__ import annotations

from pathlib import Path

from supervisor.core.errors import ConfigError


def read_config_file(path: str, what: str) -> bytes:
    """The bytes of the ``what`` file at ``path`` (blocking).

    The risk and model actors call it in place: a worker thread would let the tests'
    autojump clock skip past the read, and a small local file costs microseconds.

    Raises:
        ConfigError: ``cannot read WHAT file PATH: REASON``.
    """
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror or exc}") from exc
