"""Playbook 05's twenty gates (each: pass and fail), DISARMED on a fresh install, `arm`,
`disarm`, `gate attest`, and D1/D2 at the open.

The evaluators are pure: most tests give them a status dict and a desk state folded from
journal events. The arming flow runs against the real daemon over its socket
(tests/deskenv.py), the open check on the MockClock world (tests/world.py).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import trio

from simulators.feed import Stall
from supervisor.config import ControlConfig, FreshnessConfig
from supervisor.control.authz import Caller
from supervisor.core.desk import Incident, replay
from supervisor.core.errors import ControlError
from supervisor.core.events import (
    AnyEvent,
    DrillCompleted,
    GateAttested,
    ReconciliationCompleted,
)
from supervisor.playbook.gates import (
    DAY_S,
    GATE_IDS,
    GATES,
    GatesConfig,
    Inputs,
    arm_blockers,
    evaluate,
)

from .deskenv import open_desk, run_deskctl
from .world import T0, open_world

NOW = 1_800_000_000.0
CFG = GatesConfig()


def gate(gate_id: str, status: dict[str, Any] | None = None,
         events: list[AnyEvent] | None = None, now: float = NOW, **kw: Any) -> Any:
    state = replay(events or [])
    results = evaluate(Inputs(status=status or {}, state=state, now=now, **kw), CFG)
    return next(r for r in results if r.id == gate_id)


def drill(kind: str, ok: bool, ts: float, detail: str = "flat") -> DrillCompleted:
    return DrillCompleted(ts=ts, actor="operator:alice(uid=1000)", kind=kind,  # type: ignore[arg-type]
                          ok=ok, seconds=1.5, detail=detail, report="/x/drill.json")


def attested(gate_id: str, ts: float, note: str = "done") -> GateAttested:
    return GateAttested(ts=ts, actor="operator:bob(uid=1001)", gate=gate_id, note=note)


def test_twenty_gates_five_cadences_in_the_seeds_order() -> None:
    assert GATE_IDS == ("P1", "P2", "P3", "P4", "D1", "D2", "D3", "D4", "D5", "W1", "W2",
                        "W3", "W4", "M1", "M2", "M3", "M4", "Q1", "Q2", "Q3")
    assert {g.cadence for g in GATES} == {"PRE-LAUNCH", "DAILY", "WEEKLY", "MONTHLY",
                                          "QUARTERLY"}
    assert GATES[0].title == ("Kill-switch tested on a paper run within the "
                                           "last 7 days")


# --- P1, M1: drills ------------------------------------------------------------------------


@pytest.mark.parametrize(("gate_id", "kind", "max_age"),
                         [("P1", "killswitch", 7 * DAY_S), ("M1", "failover", 31 * DAY_S)])
def test_drill_gates(gate_id: str, kind: str, max_age: float) -> None:
    r = gate(gate_id)
    assert r.state == "DUE" and f"deskctl drill {kind}" in r.evidence
    r = gate(gate_id, events=[drill(kind, True, NOW - DAY_S)])
    assert r.state == "PASS" and r.source == "drill" and r.by == "operator:alice(uid=1000)"
    assert r.last_satisfied == NOW - DAY_S and r.expires_at == NOW - DAY_S + max_age
    assert "/x/drill.json" in r.evidence
    r = gate(gate_id, events=[drill(kind, True, NOW - DAY_S),
                              drill(kind, False, NOW - 60, "venue beta kept 1 order open")])
    assert r.state == "FAIL" and "venue beta kept 1 order open" in r.evidence
    r = gate(gate_id, events=[drill(kind, True, NOW - max_age - 60)])
    assert r.state == "EXPIRED"


# --- P2: risk limits in git ----------------------------------------------------------------


ALL_FOUR = {"max_position": 100.0, "daily_drawdown": 5000.0, "var_1d": 9000.0,
            "concentration": 0.3}


def _p2_status(tmp: Path, match: bool | None, *, watched: bool = True,
               limits: dict[str, Any] | None = None) -> dict[str, Any]:
    live = tmp / "limits.toml"
    live.write_text("[limits]\n")
    files = {"risk/limits.toml": {"file": str(live), "path": "risk/limits.toml",
                                  "match": match, "live_sha256": "a" * 64,
                                  "expected_sha256": "b" * 64, "checked_at": NOW - 5}}
    return {"risk": {"limits_file": str(live), "limits": ALL_FOUR if limits is None else limits,
                     "limits_hash": "c" * 64},
            "config_drift": {"files": files if watched else {}, "commit": "d" * 40}}


def test_p2_limits_committed_and_matching(tmp_path: Path) -> None:
    limits = str(tmp_path / "limits.toml")  # the [config_drift] entry that is the limits
    r = gate("P2", _p2_status(tmp_path, True), limits_watched=limits)
    assert r.state == "PASS" and "matches risk/limits.toml at dddddddddddd" in r.evidence
    r = gate("P2", _p2_status(tmp_path, False), limits_watched=limits)
    assert r.state == "FAIL" and "differs from risk/limits.toml" in r.evidence
    r = gate("P2", _p2_status(tmp_path, True, watched=False), limits_watched=limits)
    assert r.state == "FAIL" and "add it to [config_drift] files" in r.evidence
    r = gate("P2", _p2_status(tmp_path, None), limits_watched=limits)
    assert r.state == "DUE"
    # playbook 05 P2 "Risk limits committed": all four of playbook 02 risk-breach
    r = gate("P2", _p2_status(tmp_path, True, limits={"max_position": 100.0,
                                                      "max_position_by_symbol": {}}),
             limits_watched=limits)
    assert r.state == "FAIL" and r.evidence == (
        "the limits file defines no daily_drawdown, var_1d, concentration: playbook 02 "
        "risk-breach names four limits (max position, daily drawdown floor, 1-day VaR "
        "ceiling, single-name concentration); define each")
    r = gate("P2", {"risk": {"limits_file": None}})
    assert r.state == "FAIL" and "no risk limits file" in r.evidence
    # A failing gate is not covered by an attestation: the evidence says no.
    r = gate("P2", {"risk": {"limits_file": None}}, events=[attested("P2", NOW - 60)])
    assert r.state == "FAIL"


# --- P3: credentials -----------------------------------------------------------------------


def test_p3_every_venue_rotated_or_attested() -> None:
    def rot(at: float, verified: bool = True) -> dict[str, Any]:
        return {"last_rotation": {"venue": "x", "revoked_at": at,
                                  "verified_before_revoke": verified}}

    def st(**venues: dict[str, Any]) -> dict[str, Any]:
        return {"credentials": {"venues": venues}}

    assert gate("P3", st(alpha={}, beta={})).state == "DUE"
    r = gate("P3", st(alpha=rot(NOW - 10 * DAY_S), beta=rot(NOW - 2 * DAY_S)))
    assert r.state == "PASS" and "alpha 10.0 days ago, beta 2.0 days ago" in r.evidence
    assert r.expires_at == NOW - 10 * DAY_S + 90 * DAY_S  # the oldest rotation's
    # One venue rotated is not every venue rotated.
    r = gate("P3", st(alpha=rot(NOW - DAY_S), beta={}))
    assert r.state == "DUE" and "no credential rotation on record for beta" in r.evidence
    r = gate("P3", st(alpha=rot(NOW - DAY_S), beta=rot(NOW - 91 * DAY_S)))
    assert r.state == "EXPIRED" and "beta (91.0 days ago)" in r.evidence
    r = gate("P3", st(alpha=rot(NOW - DAY_S, verified=False), beta=rot(NOW - DAY_S)))
    assert r.state == "FAIL" and "alpha were revoked before the new key was verified" \
        in r.evidence
    # Rotations this supervisor did not see: a person's attestation covers them, 90 days.
    r = gate("P3", st(alpha={}), events=[attested("P3", NOW - DAY_S, "rotated, ticket 42")])
    assert r.state == "PASS" and r.source == "attestation" and "ticket 42" in r.evidence
    assert r.expires_at == NOW - DAY_S + 90 * DAY_S
    assert gate("P3", st(alpha={}),
                events=[attested("P3", NOW - 91 * DAY_S)]).state == "EXPIRED"
    # Never over a FAIL.
    assert gate("P3", st(alpha=rot(NOW - DAY_S, verified=False)),
                events=[attested("P3", NOW - 60)]).state == "FAIL"


# --- P4: backup vendor ---------------------------------------------------------------------


def test_p4_backup_feed_divergence() -> None:
    def st(windows: int, divergence: float | None, p4: bool) -> dict[str, Any]:
        return {"freshness": {"primary_vendor": "primary", "backup_vendor": "backup",
                              "feed_divergence": {"windows": windows, "windows_needed": 5,
                                                  "divergence": divergence,
                                                  "divergence_max": 0.005, "p4_pass": p4}}}

    r = gate("P4", st(5, 0.001, True))
    assert r.state == "PASS" and "bar-count divergence 0.100%" in r.evidence
    r = gate("P4", st(5, 0.02, False))
    assert r.state == "FAIL" and "2.000%" in r.evidence
    assert gate("P4", st(2, 0.001, False)).state == "DUE"
    assert gate("P4", st(0, None, False)).state == "DUE"
    assert gate("P4", {"freshness": {"backup_vendor": ""}}).state == "FAIL"


# --- daily ---------------------------------------------------------------------------------


def _fresh(stale: list[str], suppressed: list[str], *, in_session: bool = True,
           whole: bool = False) -> dict[str, Any]:
    return {"freshness": {"universe": 3, "active_vendor": "primary", "in_session": in_session,
                          "next_open": NOW + 60,
                          "stale": {"primary": {"bars": 10, "count": len(stale),
                                                "symbols": stale, "whole_feed": whole}},
                          "suppressed": dict.fromkeys(suppressed, "stale")}}


def test_d1_freshness_at_the_open() -> None:
    r = gate("D1", _fresh([], []))
    assert r.state == "PASS" and r.evidence == "3 of 3 symbol(s) fresh on primary"
    r = gate("D1", _fresh(["MSFT"], ["MSFT"]))
    assert r.state == "PASS" and "suppressed: MSFT" in r.evidence
    r = gate("D1", _fresh(["MSFT"], []))
    assert r.state == "FAIL" and "stale and not suppressed on primary: MSFT" in r.evidence
    assert gate("D1", _fresh(["A", "B", "C"], [], whole=True)).state == "FAIL"
    assert gate("D1", _fresh([], [], in_session=False)).state == "DUE"
    assert gate("D1", {"freshness": {"universe": 0}}).state == "DUE"


def test_d2_model_hash_against_the_registry() -> None:
    def st(live: str | None, pinned: str | None) -> dict[str, Any]:
        return {"model": {"healthz_model_hash": live, "pinned_model_hash": pinned,
                          "blocked": live is not None and pinned is not None and live != pinned}}

    r = gate("D2", st("sha256:v1", "sha256:v1"))
    assert r.state == "PASS" and "(/healthz) is the pinned production version" in r.evidence
    r = gate("D2", st("sha256:v2", "sha256:v1"))
    assert r.state == "FAIL" and "differs from the pinned production version" in r.evidence
    r = gate("D2", st("sha256:v1", None))  # no pin: a FAIL that says why, not a silent DUE
    assert r.state == "FAIL" and "no registry pin configured" in r.evidence
    assert gate("D2", st(None, "sha256:v1")).state == "DUE"


def test_d3_pnl_band() -> None:
    def st(inside: bool) -> dict[str, Any]:
        return {"pnl": {"pnl_band": {"d3": {"date": "2027-01-14", "trading_day": 4,
                                            "cum_pnl": 100.0 if inside else -9000.0,
                                            "band_low": -3000.0, "inside_band": inside}}}}

    now = 1_800_000_000.0  # 2027-01-15
    r = gate("D3", st(True), now=now)
    assert r.state == "PASS" and "inside the 95% band" in r.evidence
    r = gate("D3", st(False), now=now)
    assert r.state == "FAIL" and "wrong-pnl" in r.evidence
    assert gate("D3", st(True), now=now + 10 * DAY_S).state == "EXPIRED"
    assert gate("D3", {"pnl": {"pnl_band": {"verdict": "no_data"}}}).state == "DUE"


def test_d4_reconciliation_to_broker_truth() -> None:
    def rec(ts: float, clean: bool) -> ReconciliationCompleted:
        return ReconciliationCompleted(ts=ts, actor="actor:reconciliation", clean=clean,
                                       differences=0 if clean else 2, report="/r/rec.json")

    r = gate("D4", events=[rec(NOW - 3600, True)])
    assert r.state == "PASS" and "/r/rec.json" in r.evidence
    r = gate("D4", events=[rec(NOW - 3600, False)])
    assert r.state == "FAIL" and "2 difference(s)" in r.evidence
    assert gate("D4", events=[rec(NOW - 2 * DAY_S, True)]).state == "EXPIRED"
    assert gate("D4").state == "DUE"


def test_daily_evidence_holds_until_the_end_of_the_next_trading_day() -> None:
    """NOW is a Friday: Friday's attestation of D5 holds over the weekend, until Monday's
    end; Wednesday's has lapsed (Thursday was a trading day)."""
    import time

    assert time.gmtime(NOW).tm_wday == 4
    friday = NOW - 3600
    r = gate("D5", events=[attested("D5", friday)])
    assert r.state == "PASS" and time.gmtime(r.expires_at).tm_wday == 1  # Tuesday 00:00
    assert r.expires_at == (NOW // DAY_S + 4) * DAY_S
    assert gate("D5", events=[attested("D5", friday)], now=NOW + 3 * DAY_S).state == "PASS"
    assert gate("D5", events=[attested("D5", friday)], now=NOW + 4 * DAY_S).state == "EXPIRED"
    assert gate("D5", events=[attested("D5", NOW - 2 * DAY_S)]).state == "EXPIRED"
    # A desk that trades every day: Friday's lasts until Saturday's end.
    r = evaluate(Inputs(status={}, state=replay([attested("D5", friday)]), now=NOW,
                        session_days=(0, 1, 2, 3, 4, 5, 6)), CFG)[8]
    assert r.id == "D5" and r.expires_at == (NOW // DAY_S + 2) * DAY_S


@pytest.mark.parametrize(("gate_id", "period"), [
    ("W3", 7 * DAY_S), ("M2", 31 * DAY_S), ("M3", 31 * DAY_S),
    ("M4", 31 * DAY_S), ("Q1", 92 * DAY_S), ("Q2", 92 * DAY_S), ("Q3", 92 * DAY_S)])
def test_attested_gates_hold_for_their_cadence(gate_id: str, period: float) -> None:
    r = gate(gate_id)
    assert r.state == "DUE" and r.evaluator == "attest"
    assert f"deskctl gate attest {gate_id}" in r.evidence
    r = gate(gate_id, events=[attested(gate_id, NOW - period + 60, "reviewed, doc 7")])
    assert r.state == "PASS" and r.by == "operator:bob(uid=1001)" and "doc 7" in r.evidence
    assert r.expires_at == NOW + 60
    assert gate(gate_id, events=[attested(gate_id, NOW - period - 60)]).state == "EXPIRED"


# --- weekly --------------------------------------------------------------------------------


def test_w1_feature_drift_report() -> None:
    def st(verdict: str, last: float | None, psi: dict[str, float]) -> dict[str, Any]:
        return {"model": {"monitors": {"feature_psi": {"verdict": verdict, "last_run": last,
                                                       "detail": ""}}, "psi": psi}}

    r = gate("W1", st("ok", NOW - DAY_S, {"mom_5d": 0.02, "vol_20d": 0.1}))
    assert r.state == "PASS" and "max 0.100" in r.evidence
    r = gate("W1", st("alert", NOW - DAY_S, {"mom_5d": 0.4}))
    assert r.state == "FAIL" and "mom_5d" in r.evidence
    assert gate("W1", st("ok", NOW - 8 * DAY_S, {"mom_5d": 0.02})).state == "EXPIRED"
    assert gate("W1", st("pending", None, {})).state == "DUE"
    # the monitor's own comparison, playbook 02 feature-drift "PSI > 0.25": 0.25 is not over
    r = gate("W1", st("ok", NOW - DAY_S, {"mom_5d": 0.25}))
    assert r.state == "PASS" and "every PSI <= 0.25 (max 0.250)" in r.evidence


def test_w2_alert_noise() -> None:
    r = gate("W2", {"alerts": {"counts": {"PAGE": 3}}})
    assert r.state == "PASS" and "PAGE 3" in r.evidence
    noisy = [{"summary": "latency high", "unactioned": 9}]
    r = gate("W2", {"alerts": {}}, noise=noisy)
    assert r.state == "FAIL" and "latency high (9x)" in r.evidence


def _inc(inc_id: str, severity: str, *, commander: str | None, resolved: bool) -> Incident:
    return Incident(id=inc_id, incident_class="feature-drift", severity=severity,  # type: ignore[arg-type]
                    scope="desk", summary="x", opened_at=NOW - DAY_S, opened_by="actor:model",
                    commander=commander, state="resolved" if resolved else "acknowledged",
                    resolved_at=NOW - 3600 if resolved else None)


def test_w4_incident_grooming() -> None:
    import msgspec

    def st(*incs: Incident) -> Any:
        return msgspec.structs.replace(replay([]), incidents=incs)

    def w4(state: Any, pms: dict[str, Any] | None = None) -> Any:
        return next(r for r in evaluate(Inputs(status={}, state=state, now=NOW,
                                               postmortems=pms or {}), CFG) if r.id == "W4")

    assert w4(st()).state == "PASS"
    r = w4(st(_inc("INC-1", "P1", commander=None, resolved=False)))
    assert r.state == "FAIL" and "INC-1 has no owner" in r.evidence
    closed = st(_inc("INC-2", "P2", commander="alice", resolved=True))
    r = w4(closed, {"INC-2": {"written": False, "path": "/pm/INC-2.md"}})
    assert r.state == "FAIL" and "INC-2 is closed without a written postmortem" in r.evidence
    assert w4(closed, {"INC-2": {"written": True}}).state == "PASS"


# --- arming --------------------------------------------------------------------------------


def test_arm_blockers_are_the_pre_launch_gates_and_d1_d2_in_session() -> None:
    results = evaluate(Inputs(status=_fresh(["MSFT"], []), state=replay([]), now=NOW), CFG)
    blockers = arm_blockers(results, in_session=True, block_at_open=["D1", "D2"])
    assert [b.split(" (")[0] for b in blockers] == [
        "pre-launch gate P1", "pre-launch gate P2", "pre-launch gate P3",
        "pre-launch gate P4", "daily gate D1", "daily gate D2"]
    assert not any("D1" in b for b in arm_blockers(results, in_session=False,
                                                   block_at_open=["D1", "D2"]))


def test_config_names_an_unknown_gate() -> None:
    with pytest.raises(ValueError, match="block_at_open: unknown gate"):
        GatesConfig(block_at_open=["D9"])


async def test_a_fresh_install_starts_disarmed_and_arm_is_refused_while_gates_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with trio.fail_after(20):
        async with open_desk(tmp_path, ("alpha",), gates=GatesConfig()) as env:
            desk = env.desk
            st = await env.request("status")
            assert st["mode"] == "DISARMED" and st["size_multiplier"] == 0.0
            assert not st["gate"]["open"]
            assert st["arming"]["disarmed_reason"].startswith("fresh install")
            assert "deskctl arm" in st["next_step"]
            # Refused, in the gates' words, while a pre-launch gate does not pass.
            assert await run_deskctl(env.socket, "arm") == 2
            err = capsys.readouterr().err
            assert "pre-launch gate P1" in err and "pre-launch gate P2" in err
            assert await run_deskctl(env.socket, "gates") == 1
            out = capsys.readouterr().out
            assert "arming blocked by P1, P2, P3, P4" in out
            # P2 is the supervisor's own evidence (the limits' hash against git): no
            # signature can say yes over it; nor over P4's partial evidence, nor a FAIL.
            assert await run_deskctl(env.socket, "gate", "attest", "P2", "--note", "trust me") == 2
            assert "is judged on the supervisor's own evidence only" in capsys.readouterr().err
            assert await run_deskctl(env.socket, "gate", "attest", "D5", "--note",
                                  "slippage report reviewed, doc 12") == 0
            assert capsys.readouterr().out.startswith("gate D5 PASS: attested")
            # An unknown gate is a bad request naming the field.
            async with env.client() as c:
                with pytest.raises(ControlError, match="gate"):
                    await c.request("gate_attest", gate="Z9", note="x")
            assert desk.state.mode == "DISARMED"
            events = await desk.journal.read_all()
            assert type(events[0]).__name__ == "Disarmed" and events[0].actor == "supervisor"


async def test_arm_disarm_and_a_restart_keep_the_armed_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    limits = tmp_path / "limits.toml"
    limits.write_text("[limits]\nmax_position = 100\ndaily_drawdown = 5000\n"
                      "var_1d = 9000\nconcentration = 0.5\n")  # all four (gate P2)
    with trio.fail_after(30):
        async with open_desk(tmp_path, ("alpha",), gates=GatesConfig()) as env:
            # No limits file configured: P2 FAILs, whatever else passes.
            results = {r.id: r for r in await env.desk.arming.evaluate()}
            assert results["P2"].state == "FAIL"
    # The same state directory (not a fresh install any more), now with a limits file
    # committed in git and watched by the config-drift monitor.
    repo = _git_repo(tmp_path / "repo", limits.read_text())
    from actors.configdrift import ConfigDriftConfig
    from actors.model import ModelMonitorConfig
    from supervisor.config import RiskConfig

    live = tmp_path / "live-limits.toml"
    live.write_text(limits.read_text())
    sections: dict[str, Any] = {
        "risk": RiskConfig(limits=str(live)),
        # gate D2: a registry pin (no /healthz here: D2 is DUE, not a FAIL)
        "model": ModelMonitorConfig(pinned_model_hash="sha256:prod"),
        "config_drift": ConfigDriftConfig(files=[str(live)], paths=["limits.toml"],
                                          repository=str(repo), ref="HEAD"),
    }
    with trio.fail_after(30):
        async with open_desk(tmp_path, ("alpha",), gates=GatesConfig(),
                             drill_names=("paper-a",), **sections) as env:
            desk = env.desk
            assert desk.state.mode == "DISARMED"  # not a fresh install: still disarmed
            await desk.config_drift.check()
            # P1 is the drill's alone: no signature stands in for it.
            assert await run_deskctl(env.socket, "gate", "attest", "P1", "--note", "done") == 2
            assert "judged on the supervisor's own evidence only" in capsys.readouterr().err
            assert await run_deskctl(env.socket, "drill", "killswitch") == 0
            for g, note in (("P3", "rotated 2026-11-01, ticket 9"),
                            ("P4", "vendor B in parallel since 2026-11-10")):
                assert await run_deskctl(env.socket, "gate", "attest", g, "--note", note) == 0
            capsys.readouterr()
            assert await run_deskctl(env.socket, "gates") == 0
            out = capsys.readouterr().out
            assert "pre-launch gates pass" in out
            assert await run_deskctl(env.socket, "arm") == 0
            assert capsys.readouterr().out == "armed: mode NORMAL at size 1.00\n"
            assert desk.state.mode == "NORMAL" and (await env.request("status"))["gate"]["open"]
            assert await run_deskctl(env.socket, "arm") == 2  # already armed
            assert "already armed" in capsys.readouterr().err
            events = await desk.journal.read_all()
            arm = next(e for e in events if type(e).__name__ == "ArmRequested")
            assert arm.actor.startswith("operator:") and arm.blockers == ()
            assert any(getattr(e, "text", "").startswith("armed with gates: P1 PASS, P2 PASS")
                       for e in events)
            assert await run_deskctl(env.socket, "disarm", "--reason", "end of the pilot") == 0
            assert desk.state.mode == "DISARMED"
            assert desk.state.disarmed_reason == "end of the pilot"
            # A kill while disarmed still latches: HALTED wins over DISARMED.
            await env.request("kill", reason="test")
            assert desk.state.mode == "HALTED"
    async with open_desk(tmp_path, ("alpha",), gates=GatesConfig(), **sections) as env:
        # Replayed: halted, disarmed underneath, attestations kept.
        assert env.desk.state.mode == "HALTED" and not env.desk.state.armed
        assert env.desk.state.attestation("P3") is not None
        assert env.desk.state.last_drill("killswitch", ok=True) is not None
        with pytest.raises(ControlError, match="the kill-switch is latched"):
            await env.desk.arming.arm(caller=Caller(uid=0))


async def test_arm_needs_an_authorised_operator(tmp_path: Path) -> None:
    control = ControlConfig(socket=str(tmp_path / "c.sock"), operators=["alice"],
                            resume_operators=["alice"])
    async with open_desk(tmp_path, ("alpha",), gates=GatesConfig(), control=control) as env:
        with pytest.raises(ControlError, match="not allowed to arm"):
            await env.desk.arming.arm(caller=Caller(uid=65534, gid=65534))


@pytest.mark.parametrize("stalled", [True, False])
async def test_d1_at_the_open(
    tmp_path: Path, autojump_clock: trio.abc.Clock, stalled: bool
) -> None:
    """A stale feed at the open disarms the desk (D1 FAIL); a fresh one keeps it armed."""
    # T0 is a Wednesday 11:06:40 UTC; the session opens at 11:08.
    from actors.model import ModelMonitorConfig

    fresh = FreshnessConfig(bar_interval_s=1.0, session="11:08-23:00",
                            session_days=[0, 1, 2, 3, 4, 5, 6])
    # a registry pin for D2 (no /healthz here: DUE, which does not block the open)
    pinned = ModelMonitorConfig(pinned_model_hash="sha256:prod")
    async with open_world(tmp_path, freshness=fresh, model=pinned) as world:
        desk = world.desk
        assert desk.state.mode == "NORMAL" and not desk.freshness.in_session
        if stalled:
            world.feed.faults.set(Stall())  # no bars from any vendor
        await trio.sleep(T0 // 60 * 60 + 180 - T0)  # past the open and its grace
        assert desk.arming.open_checks == 1
        d1 = next(r for r in desk.arming.results if r.id == "D1")
        events = await desk.journal.read_all()
        disarms = [e for e in events if type(e).__name__ == "Disarmed"]
        if not stalled:
            assert d1.state == "PASS" and desk.state.mode == "NORMAL" and not disarms
            return
        assert d1.state == "FAIL", d1.evidence
        assert not desk.state.armed
        assert desk.state.disarmed_reason is not None
        assert desk.state.disarmed_reason.startswith("at the open: gate D1")
        assert [e.actor for e in disarms] == ["supervisor:gates"]


async def test_d1_d2_run_at_the_exchanges_open_in_its_own_time_zone(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """The open check follows the desk's trading calendar, in the exchange's zone: a
    session opening at New York's next whole minute plus two, whatever the host's zone."""
    from actors.model import ModelMonitorConfig
    from supervisor.config import CalendarConfig

    ny = ZoneInfo("America/New_York")
    start = dt.datetime.fromtimestamp(T0, ny)
    opens = (start + dt.timedelta(minutes=3)).replace(second=0, microsecond=0)
    calendar = CalendarConfig(calendar="custom", session=f"{opens:%H:%M}-23:59",
                              timezone="America/New_York", days=list(range(7)), venue=False)
    pinned = ModelMonitorConfig(pinned_model_hash="sha256:prod")
    async with open_world(tmp_path, calendar=calendar, model=pinned) as world:
        desk = world.desk
        assert not desk.freshness.in_session and desk.arming.open_checks == 0
        await trio.sleep(opens.timestamp() - desk.wall() - 1)
        assert desk.arming.open_checks == 0
        await trio.sleep(90)
        assert desk.freshness.in_session and desk.arming.open_checks == 1


def _git_repo(path: Path, limits: str) -> Path:
    import subprocess

    path.mkdir()
    (path / "limits.toml").write_text(limits)
    for args in (["init", "-q"], ["add", "limits.toml"],
                 ["-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q", "-m", "l"]):
        subprocess.run(["git", "-C", str(path), *args], check=True)
    return path


def test_the_recovery_session_runs_only_while_armed() -> None:
    """playbook 03 post-incident: "Resume at 25% size for one full session": a disarmed desk
    does not trade, so none of that session runs while disarmed."""
    from supervisor.core.desk import StartRecoveryClock, apply
    from supervisor.core.events import (
        ArmRequested,
        Disarmed,
        IncidentResolved,
        KillRequested,
        KillVerified,
        LimitsAtHalt,
        RecoveryCompleted,
        ResumeRequested,
    )

    def step(state: Any, event: Any) -> tuple[Any, list[Any]]:
        new, effects = apply(state, event)
        assert not any(type(e).__name__ == "Refused" for e in effects), effects
        return new, effects

    s = replay([KillRequested(ts=1.0, actor="operator:a", reason="drill", source="operator")])
    s, _ = step(s, Disarmed(ts=2.0, actor="operator:a", reason="maintenance"))
    s, _ = step(s, IncidentResolved(ts=3.0, actor="operator:a",
                                    incident_id=s.incidents[0].id, root_cause="drill"))
    s, _ = step(s, ReconciliationCompleted(ts=4.0, actor="actor:r", clean=True, differences=0,
                                           report="r"))
    s, _ = step(s, KillVerified(ts=4.5, actor="supervisor", verified=True, detail="flat"))
    s, _ = step(s, LimitsAtHalt(ts=1.0, actor="supervisor", limits="{}"))
    s, effects = step(s, ResumeRequested(ts=5.0, actor="operator:a", authorised=True))
    assert s.mode == "DISARMED" and s.recovering and s.recovering_since is None
    assert not any(isinstance(e, StartRecoveryClock) for e in effects)
    _, refused = apply(s, RecoveryCompleted(ts=5.0 + 3600, actor="supervisor", session_s=60))
    assert type(refused[0]).__name__ == "Refused"
    s, effects = step(s, ArmRequested(ts=9000.0, actor="operator:a", authorised=True))
    assert s.mode == "RECOVERING" and s.size_multiplier == 0.25
    assert [e.since for e in effects if isinstance(e, StartRecoveryClock)] == [9000.0]
    _, early = apply(s, RecoveryCompleted(ts=9030.0, actor="supervisor", session_s=60))
    assert type(early[0]).__name__ == "Refused"
    # Disarmed mid-session: the clock stops; armed again, it starts over.
    s, _ = step(s, Disarmed(ts=9040.0, actor="supervisor:gates", reason="D1 at the open"))
    assert s.recovering_since is None and s.mode == "DISARMED"
    s, _ = step(s, ArmRequested(ts=9100.0, actor="operator:a", authorised=True))
    assert s.recovering_since == 9100.0
    s, _ = step(s, RecoveryCompleted(ts=9160.0, actor="supervisor", session_s=60))
    assert s.mode == "NORMAL" and s.size_multiplier == 1.0


def test_drills_are_kept_per_kind() -> None:
    events: list[AnyEvent] = [drill("killswitch", True, NOW - DAY_S)]
    events += [drill("failover", True, NOW - 3600 + k) for k in range(40)]
    events += [drill("failover", True, NOW - 60)] * 5  # identical records count too
    state = replay(events)
    assert state.last_drill("killswitch", ok=True) is not None
    assert sum(d.kind == "failover" for d in state.drills) == 20
    assert gate("P1", events=events).state == "PASS"


def test_partial_or_failing_evidence_is_not_covered_by_an_attestation() -> None:
    p4 = {"freshness": {"primary_vendor": "primary", "backup_vendor": "backup",
                        "feed_divergence": {"windows": 2, "windows_needed": 5,
                                            "divergence": 0.001, "divergence_max": 0.005,
                                            "p4_pass": False}}}
    # Partial evidence: no new attestation (the command refuses it: "existing" only)...
    from supervisor.playbook.gates import GATES_BY_ID, auto_verdict

    inp = Inputs(status=p4, state=replay([]), now=NOW)
    assert auto_verdict(GATES_BY_ID["P4"], inp, CFG)[3] == "existing"
    # ...but one made before the supervisor began counting still covers the days it has
    # not seen, until it expires.
    r = gate("P4", p4, events=[attested("P4", NOW - 60, "vendor report: 12 days, 0.1%")])
    assert r.state == "PASS" and r.source == "attestation" and "not yet long enough" in r.evidence
    # A rotation the supervisor recorded that lapsed is not covered by an attestation.
    rotations = {"credentials": {"venues": {
        "alpha": {"last_rotation": {"revoked_at": NOW - 100 * DAY_S,
                                    "verified_before_revoke": True}},
        "beta": {}}}}
    r = gate("P3", rotations, events=[attested("P3", NOW - 60, "beta rotated in the UI")])
    assert r.state == "EXPIRED" and "alpha (100.0 days ago)" in r.evidence
    # No evidence at all yet: the attestation stands in, for a quarter at most.
    none = {"freshness": {"backup_vendor": "backup", "feed_divergence": {"windows": 0}}}
    r = gate("P4", none, events=[attested("P4", NOW - 60, "in parallel since May")])
    assert r.state == "PASS" and r.expires_at == NOW - 60 + 92 * DAY_S
    # P1 is the drill's alone.
    assert gate("P1", events=[attested("P1", NOW - 60)]).state == "DUE"


def test_d2_an_unreported_model_is_due_not_a_mismatch() -> None:
    r = gate("D2", {"model": {"model_hash": "unknown", "healthz_model_hash": None,
                              "pinned_model_hash": "sha256:v1", "blocked": False}})
    assert r.state == "DUE" and "live model_hash is unknown" in r.evidence


async def test_a_journal_from_before_the_gates_starts_disarmed(tmp_path: Path) -> None:
    from supervisor.ops.arming import UPGRADED
    from supervisor.runtime.journal import open_journal

    state = tmp_path / "state"
    state.mkdir()
    journal = await open_journal(state / "journal.sqlite3")
    await journal.append([ReconciliationCompleted(ts=NOW, actor="actor:reconciliation",
                                                  clean=True, differences=0, report="r")])
    await journal.aclose()
    async with open_desk(tmp_path, ("alpha",), gates=GatesConfig()) as env:
        assert env.desk.state.mode == "DISARMED"
        assert env.desk.state.disarmed_reason == UPGRADED


async def test_the_demo_does_not_re_arm_a_desk_someone_disarmed(tmp_path: Path) -> None:
    from simulators.demo import arm_demo

    async with open_desk(tmp_path, ("alpha",), gates=GatesConfig()) as env:
        await env.request("disarm", reason="maintenance window")
        await arm_demo(env.desk)  # what the demo runs at every start
        assert env.desk.state.mode == "DISARMED"
        assert env.desk.state.disarmed_reason == "maintenance window"
        # It did not even try: no drill, no attestation.
        assert env.desk.state.attestations == () and env.desk.state.drills == ()


def test_attested_gates_show_the_live_data_to_review() -> None:
    status = {
        "venues": {"alpha": {"heartbeat": {"ok": True, "p95_ms_last_window": 12.0},
                             "rate_limit": {"limit": 200, "remaining": 40, "reset": NOW,
                                            "ts": NOW}},
                   "beta": {"heartbeat": {"ok": False}, "rate_limit": None}},
        "freshness": {"active_vendor": "primary", "feed_down": False},
        "pnl": {"slippage": {"d5": {"bps": 3.0, "deviation_sigma": 2.5, "flag": True}}},
        "model": {"model_hash": "sha256:v1", "retire": True, "retire_reason": "2 drifts"},
    }
    r = gate("W3", status)
    assert r.state == "DUE" and r.evidence.endswith(
        "; now: alpha ok p95 12 ms, beta FAILING, feed primary up")
    assert gate("M4", status).evidence.endswith(
        "; now: rate-limit budget: alpha 80% of 200/min used (approaching 70%)")
    r = gate("D5", status, events=[attested("D5", NOW - 60, "reviewed")])
    assert r.state == "PASS" and r.evidence.endswith(
        "now: last day 3.00 bps, 2.5 sigma from the mean: DEVIATION > 1 sigma, document it")
    assert gate("Q1", status).evidence.endswith(
        "; now: live model sha256:v1: flagged to retire (2 drifts)")
