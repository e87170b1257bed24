"""Plots: the report series over the control socket, and deskctl drawing them."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.model import ModelMonitorConfig
from actors.pnl import PnlMonitorConfig
from supervisor.cli import deskctl
from supervisor.control.authz import READ_ONLY
from supervisor.control.client import ControlError
from supervisor.ops import reports

from .deskenv import open_desk, run_deskctl

REFERENCE = {"features": {
    "spread": {"edges": [0.0, 1.0, 2.0, 3.0], "proportions": [0.25, 0.5, 0.25]},
    "volume": {"edges": [0.0, 10.0, 20.0], "proportions": [0.5, 0.5]}}}
BACKTEST = {"days": [
    {"day": 1, "percentiles": {"5": -10.0, "50": 1.0, "95": 12.0}},
    {"day": 2, "percentiles": {"5": -14.0, "50": 2.0, "95": 18.0}},
    {"day": 3, "samples": [float(x) for x in range(-20, 21)]}]}


def _monitors(tmp_path: Path) -> dict[str, Any]:
    ref, bt = tmp_path / "reference.json", tmp_path / "backtest.json"
    ref.write_text(json.dumps(REFERENCE))
    bt.write_text(json.dumps(BACKTEST))
    return {"model": ModelMonitorConfig(reference=str(ref), top_features=["spread", "volume"],
                                        psi_min_count=10),
            "pnl": PnlMonitorConfig(backtest=str(bt))}


async def _feed(env: Any) -> None:
    now = time.time()
    # 20 live spread values: 10 in bin 0, 10 in bin 2 (training: mostly bin 1).
    events = [{"kind": "features", "ts": now, "values": {"spread": v}}
              for v in [0.5] * 10 + [2.5] * 10]
    events.append({"kind": "pnl", "ts": now, "value": 3.5})
    await env.request("telemetry", events=events)


async def test_series_over_a_real_desk(tmp_path: Path) -> None:
    assert "report" in READ_ONLY
    with trio.fail_after(15):
        async with open_desk(tmp_path, ("alpha",), **_monitors(tmp_path)) as env:
            await _feed(env)
            band = await env.request("report", kind="pnl-band")
            assert band["days"] == [1, 2, 3]
            assert band["low"][:2] == [-10.0, -14.0] and band["high"][:2] == [12.0, 18.0]
            assert band["mid"][:2] == [1.0, 2.0] and band["low"][2] == pytest.approx(-18.0)
            assert band["live"] == [3.5, None, None]
            assert band["low_label"] == "p5" and band["high_label"] == "p95"
            assert band == reports.pnl_band(env.desk)

            d = await env.request("report", kind="drift", feature="spread")
            assert d["feature"] == "spread" and d["edges"] == [1.0, 2.0]
            assert d["training"] == [0.25, 0.5, 0.25]
            assert d["live"] == [0.5, 0.0, 0.5] and d["count"] == 20
            assert d["psi"] is not None and d["psi"] > 0.25

            quiet = await env.request("report", kind="drift", feature="volume")
            assert quiet["count"] == 0 and quiet["psi"] is None  # under psi_min_count

            with pytest.raises(ControlError) as err:
                await env.request("report", kind="drift", feature="nope")
            assert err.value.code == "not_found"
            assert "'nope'" in err.value.message and "spread, volume" in err.value.message
            with pytest.raises(ControlError) as err:
                await env.request("report", kind="drift")
            assert err.value.code == "bad_request"
            with pytest.raises(ControlError) as err:
                await env.request("report", kind="histogram")
            assert err.value.code == "bad_request"


async def test_unconfigured_monitors_are_an_error(tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with open_desk(tmp_path, ("alpha",)) as env:
            with pytest.raises(ControlError) as err:
                await env.request("report", kind="pnl-band")
            assert err.value.code == "bad_request"
            assert "no backtest file configured" in err.value.message
            with pytest.raises(ControlError) as err:
                await env.request("report", kind="drift", feature="spread")
            assert err.value.code == "bad_request"
            assert "no training reference configured" in err.value.message


async def test_deskctl_json_usage_and_missing_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with trio.fail_after(15):
        async with open_desk(tmp_path, ("alpha",), **_monitors(tmp_path)) as env:
            await _feed(env)
            assert await run_deskctl(env.socket, "report", "drift", "spread", "--json") == 0
            assert json.loads(capsys.readouterr().out)["count"] == 20
            assert await run_deskctl(env.socket, "--json", "report", "pnl-band") == 0
            assert json.loads(capsys.readouterr().out)["live"][0] == 3.5
            assert await run_deskctl(env.socket, "report", "drift", "--json") == deskctl.EXIT_USAGE
            assert await run_deskctl(env.socket, "report", "pnl-band") == deskctl.EXIT_USAGE
            assert await run_deskctl(env.socket, "report", "drift", "nope", "--json") \
                == deskctl.EXIT_REFUSED
            assert "known features: spread, volume" in capsys.readouterr().err

            monkeypatch.setitem(sys.modules, "matplotlib", None)
            monkeypatch.setitem(sys.modules, "supervisor.ops.plots", None)
            out = tmp_path / "band.png"
            assert await run_deskctl(env.socket, "report", "pnl-band", "--out", str(out)) == 1
            assert deskctl.PLOTS_MISSING in capsys.readouterr().err
            assert not out.exists()


async def test_deskctl_draws_pngs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    with trio.fail_after(30):
        async with open_desk(tmp_path, ("alpha",), **_monitors(tmp_path)) as env:
            await _feed(env)
            for args, name in ((("pnl-band",), "band.png"), (("drift", "spread"), "drift.png"),
                               (("drift", "volume"), "empty.png")):
                out = tmp_path / name
                assert await run_deskctl(env.socket, "report", *args, "--out", str(out)) == 0
                assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
                assert f"written to {out}" in capsys.readouterr().out
