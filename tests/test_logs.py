"""Logs for journald: priority prefixes, one line per event, fields, and no secrets."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import trio

from simulators.venue import VenueSimulator, serve_venue
from supervisor.config import Config, ControlConfig, HeartbeatConfig, VenueConfig
from supervisor.ops.logs import setup_logging
from supervisor.runtime.daemon import serve_desk

from .deskenv import wait_for


def _capture(journald: bool) -> io.StringIO:
    out = io.StringIO()
    setup_logging(stream=out, journald=journald)
    return out


def test_journald_lines_carry_the_priority_and_the_fields() -> None:
    out = _capture(journald=True)
    log = logging.getLogger("desk.test")
    log.error("kill: cancel-all failed", extra={"incident": "INC-1", "venue": "alpha"})
    log.warning("mode change", extra={"mode": "HALTED"})
    log.info("ready")
    assert out.getvalue().splitlines() == [
        "<3>desk.test: kill: cancel-all failed incident=INC-1 venue=alpha",
        "<4>desk.test: mode change mode=HALTED",
        "<6>desk.test: ready",
    ]


def test_a_traceback_stays_on_one_line() -> None:
    out = _capture(journald=True)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("desk.test").exception("it broke")
    (line,) = out.getvalue().splitlines()
    assert line.startswith("<3>desk.test: it broke | Traceback (most recent call last):")
    assert line.endswith("ValueError: boom")


async def test_a_configured_api_key_never_appears_in_the_logs(tmp_path: Path) -> None:
    secret, key_id = "SECRET-s3cr3t-value-0123456789", "AKIDKEYID42"
    out = _capture(journald=True)
    sim = VenueSimulator("alpha", key_id="other-key", secret_key="other-secret")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_venue, sim)
            config = Config(
                state_dir=str(tmp_path / "state"),
                venues=[VenueConfig(name="alpha", base_url=url, key_id=key_id,
                                    secret_key=secret, timeout_s=0.5)],
                control=ControlConfig(socket=str(tmp_path / "c.sock")),
                heartbeat=HeartbeatConfig(interval_s=0.1, window_s=1.0, timeout_s=0.5),
            )
            desk = await nursery.start(serve_desk, config)
            # The venue refuses our credentials: pings fail, a P0, a kill, cancels fail.
            await wait_for(lambda: desk.state.kill.latched, 5)
            await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
    text = out.getvalue()
    assert "401" in text or "not authorized" in text  # the failure itself is logged
    assert secret not in text and key_id not in text
