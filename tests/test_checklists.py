"""Runbook checklists (playbook 01) and credential rotation (playbook 01 api-credentials, playbook
05
P3) over a real desk: venue simulators on 127.0.0.1, the daemon's journal in a SQLite file,
a real git repository for config-rollback, a real HTTP inference worker for the model
hash. Each test is bounded by ``fail_after``."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.configdrift import ConfigDriftConfig
from actors.model import ModelMonitorConfig
from simulators.http import serve_asgi
from simulators.inference import InferenceWorker
from simulators.venue import PartialCancel
from supervisor.config import CredentialsConfig, KillConfig
from supervisor.control.authz import Caller
from supervisor.core.errors import ControlError
from supervisor.core.events import CredentialStaged
from supervisor.ops import credentials
from supervisor.ops.credentials import fingerprint
from tests.deskenv import open_desk, run_deskctl, wait_for

LIMIT = 30.0


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=desk", "-c", "user.email=desk@example.com",
         "-c", "commit.gpgsign=false", *args], check=True, capture_output=True, text=True)
    return done.stdout.strip()


async def refused(env: Any, cmd: str, **args: Any) -> tuple[str, str]:
    with pytest.raises(ControlError) as info:
        await env.request(cmd, **args)
    return info.value.code, info.value.message


# --- runs, steps, replay, bad input ------------------------------------------------------


async def test_steps_are_journaled_with_who_and_when_and_survive_a_restart(
        tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with open_desk(tmp_path) as env:
            run = await env.request("runbook_start", id="reconciliation")
            rid = run["id"]
            assert rid.startswith("RUN-") and run["steps"] == 4 and run["pending"] == [1, 2, 3, 4]
            assert run["started_by"].startswith("operator:")
            r = await env.request("runbook_done", run=rid, step=2, note="diffed at 09:31")
            step = r["checklist"][1]["done"]
            assert step["actor"] == run["started_by"] and step["note"] == "diffed at 09:31"
            assert step["ts"] >= run["started_at"] and r["pending"] == [1, 3, 4]
            events = await env.desk.journal.read_all()
            assert [type(e).__name__ for e in events[-2:]] == ["RunbookStarted",
                                                               "RunbookStepDone"]
        async with open_desk(tmp_path) as env:  # the same state directory: a restart
            again = await env.request("runbook_runs", run=rid)
            assert again["pending"] == [1, 3, 4]
            assert again["checklist"][1]["done"] == step
            listed = await env.request("runbook_runs")
            assert [x["id"] for x in listed] == [rid]


async def test_bad_input_gets_clear_errors(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with open_desk(tmp_path) as env:
            code, msg = await refused(env, "runbook_start", id="nope")
            assert code == "not_found" and msg.startswith("no runbook 'nope'; runbooks: ")
            code, msg = await refused(env, "runbook_start", id="retrain", incident="INC-X")
            assert (code, msg) == ("unknown_incident", "no incident INC-X")
            code, msg = await refused(env, "runbook_done", run="RUN-1", step=1)
            assert code == "unknown_run" and "no runbook run 'RUN-1'" in msg
            rid = (await env.request("runbook_start", id="retrain"))["id"]
            for bad in (0, 5):
                code, msg = await refused(env, "runbook_done", run=rid, step=bad)
                assert (code, msg) == ("bad_request", f"run {rid} (retrain) has steps 1 to 4, "
                                                      f"not {bad}")
            await env.request("runbook_done", run=rid, step=1)
            code, msg = await refused(env, "runbook_done", run=rid, step=1)
            assert code == "bad_state" and "step 1 was already done by operator:" in msg
            code, msg = await refused(env, "runbook_close", run=rid)
            assert code == "bad_state" and "steps not done: 2, 3, 4" in msg
            assert "the verify check has not passed" in msg
            code, msg = await refused(env, "runbook_close", run=rid, abandon=" ")
            assert (code, msg) == ("bad_request", f"run {rid}: say why it is abandoned")
            closed = await env.request("runbook_close", run=rid, abandon="drill postponed")
            assert closed["state"] == "abandoned" and closed["close_note"] == "drill postponed"
            code, msg = await refused(env, "runbook_done", run=rid, step=2)
            assert (code, msg) == ("bad_state", f"run {rid} (retrain) is abandoned: cannot "
                                                "mark step 2 done")
            code, _ = await refused(env, "runbook_verify", run=rid)
            assert code == "bad_state"


async def test_a_manual_runbook_is_verified_by_attestation_and_completes(
        tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with open_desk(tmp_path) as env:
            rid = (await env.request("runbook_start", id="drift-investigation"))["id"]
            r = await env.request("runbook_verify", run=rid)
            v = r["verifications"][-1]
            assert v["ok"] is None and v["method"] == "manual"
            for n in (1, 2, 3, 4):
                await env.request("runbook_done", run=rid, step=n)
            code, _ = await refused(env, "runbook_close", run=rid)
            assert code == "bad_state"  # not judged is not a pass
            r = await env.request("runbook_verify", run=rid, attest="PSI 0.08 on day 3")
            assert r["verifications"][-1]["ok"] is True
            assert r["verifications"][-1]["method"] == "attested"
            done = await env.request("runbook_close", run=rid)
            assert done["state"] == "completed"
            # An automated runbook takes no attestation.
            kid = (await env.request("runbook_start", id="killswitch"))["id"]
            code, msg = await refused(env, "runbook_verify", run=kid, attest="looks fine")
            assert (code, msg) == ("bad_request", "runbook killswitch has an automated verify: "
                                                  "run --verify without --attest")
            bid = (await env.request("runbook_start", id="broker-failover"))["id"]
            code, _ = await refused(env, "runbook_verify", run=bid, attest="looks fine")
            assert code == "bad_request"


# --- reconciliation ------------------------------------------------------------------------


async def test_reconciliation_verify_reconciles_to_broker_truth_now(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        async with open_desk(tmp_path) as env:
            rid = (await env.request("runbook_start", id="reconciliation"))["id"]
            v = (await env.request("runbook_verify", run=rid))["verifications"][-1]
            assert v["ok"] is True and v["method"] == "automated", v
            assert v["detail"].startswith("broker positions and internal state agree")
            # The broker filled 10 AAPL the engine never reported: not reconciled.
            order = env.sims["alpha"].place("AAPL", 10, "buy")
            env.sims["alpha"].fill(str(order["id"]))
            v = (await env.request("runbook_verify", run=rid))["verifications"][-1]
            assert v["ok"] is False, v
            assert v["detail"].startswith("not reconciled: AAPL: broker 10, engine 0")
            assert v["evidence"]["report"] and v["evidence"]["differences"][0]["symbol"] == "AAPL"
            code, _ = await refused(env, "runbook_verify", run=rid, attest="looks fine")
            assert code == "bad_request"  # automated: no attestation in its place


# --- broker-failover -------------------------------------------------------------------------


async def test_broker_failover_verify_flips_the_route_and_sends_a_test_order(
        tmp_path: Path) -> None:
    from simulators.venue import RateLimited

    with trio.fail_after(LIMIT):
        async with open_desk(tmp_path) as env:
            rid = (await env.request("runbook_start", id="broker-failover"))["id"]
            v = (await env.request("runbook_verify", run=rid))["verifications"][-1]
            assert v["ok"] is False and v["detail"].startswith(
                "the route has not been flipped (step 01)")
            code, msg = await refused(env, "route", venue="gamma", reason="failover")
            assert (code, msg) == ("not_found", "no venue 'gamma'; venues: alpha, beta")
            r = await env.request("route", venue="beta", reason="alpha down: runbook step 01")
            assert r["route"] == "beta"
            st = await env.request("status")
            assert st["gate"]["route"] == "beta"
            code, _ = await refused(env, "route", venue="beta", reason="again")
            assert code == "bad_state"  # already there
            beta = env.sims["beta"]
            v = (await env.request("runbook_verify", run=rid))["verifications"][-1]
            assert v["ok"] is True, v
            assert v["detail"].startswith("route on beta: ")
            assert [s["name"] for s in v["evidence"]["steps"]] == [
                "auth", "rate-limit headroom", "test order", "test cancel"]
            # The one-share test order went to beta and was cancelled: nothing rests.
            assert beta.open_orders() == []
            assert any(float(o["qty"]) == 1.0 and o["status"] == "canceled" for o in beta.orders())
            assert v["evidence"]["not_automated"][0].startswith("first five orders")
            # Out of budget on the secondary: the verify fails at the headroom step.
            beta.faults.set(RateLimited(remaining=1))
            v = (await env.request("runbook_verify", run=rid))["verifications"][-1]
            assert v["ok"] is False and "rate-limit headroom" in v["detail"]
            beta.faults.clear()
            # The route is journaled: it survives a restart (replay), and clears.
            events = await env.desk.journal.read_all()
            flip = [e for e in events if type(e).__name__ == "RouteChanged"]
            assert [(e.venue, e.reason) for e in flip] == [
                ("beta", "alpha down: runbook step 01")]
            assert flip[0].actor.startswith("operator:")
            r = await env.request("route", venue=None, reason="alpha back")
            assert r["route"] is None and env.desk.status()["gate"]["route"] is None


# --- killswitch ----------------------------------------------------------------------------


async def test_killswitch_verify_needs_zero_open_orders_and_the_quiet_period(
        tmp_path: Path) -> None:
    kill = KillConfig(quiet_s=1.0, verify_poll_s=0.05, watch_poll_s=0.1,
                      recancel_backoff_s=0.1, stuck_after_s=0.5)
    with trio.fail_after(LIMIT):
        async with open_desk(tmp_path, kill=kill) as env:
            rid = (await env.request("runbook_start", id="killswitch"))["id"]
            v = (await env.request("runbook_verify", run=rid))["verifications"][-1]
            assert v["ok"] is False and v["detail"].startswith("the kill-switch is not latched")
            beta = env.sims["beta"]
            beta.place("AAPL", 10, "buy")
            beta.faults.set(PartialCancel(fraction=1.0))  # beta's cancels fail: stays open
            await env.request("kill", reason="drill")
            v = (await env.request("runbook_verify", run=rid))["verifications"][-1]
            assert v["ok"] is False
            assert "venue beta has 1 open order(s)" in v["detail"]
            assert v["evidence"]["venues"]["alpha"]["open_orders"] == 0
            beta.faults.clear()
            await wait_for(lambda: env.desk.state.kill.verified, limit=10.0)
            v = (await env.request("runbook_verify", run=rid))["verifications"][-1]
            assert v["ok"] is True, v
            assert v["evidence"]["quiet_for_s"] >= 1.0
            assert v["evidence"]["quiet_required_s"] == 1.0
            assert {n: x["open_orders"] for n, x in v["evidence"]["venues"].items()} == {
                "alpha": 0, "beta": 0}


async def test_a_killswitch_run_started_during_a_halt_records_what_the_desk_did(
        tmp_path: Path) -> None:
    """playbook 01 killswitch steps 01-03 are the desk's own the moment the switch is pulled;
    step 04 once a commander is assigned: the checklist shows them done, by whom, when."""
    with trio.fail_after(LIMIT):
        async with open_desk(tmp_path) as env:
            await env.request("kill", reason="3am drill")
            await wait_for(lambda: env.desk.killswitch.snapshot_path is not None)
            inc = env.desk.state.kill.incident_id
            await env.request("ack", id=inc, commander="alice")
            run = await env.request("runbook_start", id="killswitch")
            assert run["incident_id"] == inc and run["pending"] == []
            done = {c["step"]: c["done"] for c in run["checklist"]}
            since = env.desk.state.kill.since
            assert done[1]["actor"].startswith("operator:") and done[1]["ts"] == since
            assert done[1]["note"] == "kill-switch pulled (operator): 3am drill"
            assert (done[2]["actor"], done[2]["note"]) == (
                "supervisor:kill-switch", "cancel-all sent to 2 venue(s) at the switch, no "
                "wait for confirmation")
            assert done[3]["note"].endswith(str(env.desk.killswitch.snapshot_path))
            assert done[4]["note"] == f"incident {inc}: commander alice"
            # Not latched: nothing is claimed.
            plain = await env.request("runbook_start", id="retrain")
            assert plain["pending"] == [1, 2, 3, 4]


# --- model-rollback / rolling-deploy --------------------------------------------------------


async def test_model_rollback_verify_compares_healthz_with_the_registry_pin(
        tmp_path: Path) -> None:
    worker = InferenceWorker("model-v1.3.2")
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_asgi, worker)
            model = ModelMonitorConfig(healthz_url=f"{url}/healthz",
                                       pinned_model_hash="model-v1.3.2")
            async with open_desk(tmp_path, model=model) as env:
                rid = (await env.request("runbook_start", id="model-rollback"))["id"]
                v = (await env.request("runbook_verify", run=rid))["verifications"][-1]
                assert v["ok"] is True, v
                assert v["evidence"]["live_model_hash"] == "model-v1.3.2"
                assert v["evidence"]["live_source"] == f"inference worker {url}/healthz"
                assert v["evidence"]["pinned_source"] == "model.pinned_model_hash"
                worker.model_hash = "model-v1.4.0"  # the rollback did not take
                v = (await env.request("runbook_verify", run=rid))["verifications"][-1]
                assert v["ok"] is False
                assert v["detail"] == (f"live model_hash model-v1.4.0 (inference worker "
                                       f"{url}/healthz) is not the registry's pinned version "
                                       "model-v1.3.2 (model.pinned_model_hash)")
            nursery.cancel_scope.cancel()


async def test_rolling_deploy_verify_reads_the_pin_file_and_fails_without_a_pin(
        tmp_path: Path) -> None:
    pin = tmp_path / "production.json"
    pin.write_text('{"model_hash": "model-v1.4.0"}')
    with trio.fail_after(LIMIT):
        async with open_desk(tmp_path / "a", model=ModelMonitorConfig()) as env:
            rid = (await env.request("runbook_start", id="rolling-deploy"))["id"]
            v = (await env.request("runbook_verify", run=rid))["verifications"][-1]
            assert v["ok"] is False and "no registry pin configured" in v["detail"]
        model = ModelMonitorConfig(pinned_model_file=str(pin))
        async with open_desk(tmp_path / "b", model=model) as env:
            rid = (await env.request("runbook_start", id="rolling-deploy"))["id"]
            env.desk.model._telemetry_hash = None
            env.desk.model._engine_hash = "model-v1.4.0"
            v = (await env.request("runbook_verify", run=rid))["verifications"][-1]
            assert v["ok"] is True and v["evidence"]["pinned_source"] == str(pin)
            env.desk.model._engine_hash = "model-v1.3.2"
            v = (await env.request("runbook_verify", run=rid))["verifications"][-1]
            assert v["ok"] is False and "is not the registry's pinned version" in v["detail"]


# --- config-rollback ------------------------------------------------------------------------


async def test_config_rollback_verify_hashes_the_live_files_against_the_revert_commit(
        tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "strategy").mkdir()
    good, bad = "max_position: 100\n", "max_position: 1000\n"
    (repo / "strategy" / "config.yml").write_text(good)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "config")
    (repo / "strategy" / "config.yml").write_text(bad)
    git(repo, "commit", "-q", "-am", "loosen")
    git(repo, "revert", "--no-edit", "HEAD")
    revert = git(repo, "rev-parse", "HEAD")
    live = tmp_path / "etc" / "config.yml"
    live.parent.mkdir()
    live.write_text(bad)  # not redeployed yet
    drift = ConfigDriftConfig(files=[str(live)], repository=str(repo), ref="main",
                              paths=["strategy/config.yml"], interval_s=3600.0)
    with trio.fail_after(LIMIT):
        async with open_desk(tmp_path, config_drift=drift) as env:
            rid = (await env.request("runbook_start", id="config-rollback"))["id"]
            v = (await env.request("runbook_verify", run=rid))["verifications"][-1]
            assert v["ok"] is False and v["detail"].startswith("give the revert commit")
            v = (await env.request("runbook_verify", run=rid,
                                   commit="deadbeef"))["verifications"][-1]
            assert v["ok"] is False
            assert v["detail"].startswith(f"commit 'deadbeef' not found in repository {repo}")
            v = (await env.request("runbook_verify", run=rid,
                                   commit=revert[:10]))["verifications"][-1]
            assert v["ok"] is False and v["evidence"]["commit"] == revert
            assert f"live {live} sha256" in v["detail"]
            live.write_text(good)  # redeployed with the revert
            v = (await env.request("runbook_verify", run=rid,
                                   commit=revert))["verifications"][-1]
            assert v["ok"] is True, v
            row = v["evidence"]["files"]["strategy/config.yml"]
            assert row["live_sha256"] == row["commit_sha256"]
            assert v["evidence"]["deployed_commit"] == revert
            # The deployed ref must be the revert commit too (seed: rev-parse HEAD).
            git(repo, "commit", "-q", "--allow-empty", "-m", "later")
            v = (await env.request("runbook_verify", run=rid,
                                   commit=revert))["verifications"][-1]
            assert v["ok"] is False and "not the revert commit" in v["detail"]


# --- api-credentials -------------------------------------------------------------------------


async def test_credential_rotation_end_to_end_against_the_simulator(tmp_path: Path) -> None:
    old = {"key_id": "AKOLDKEY0001", "secret_key": "old-secret-value"}
    creds = CredentialsConfig(revoke_after_s=0.5)
    secret_file = tmp_path / "new.secret"
    secret_file.write_text("new-secret-value\n")
    with trio.fail_after(LIMIT):
        async with open_desk(tmp_path, ("alpha",), venue_alpha=old, credentials=creds) as env:
            sim = env.sims["alpha"]
            sim.accept_key(old["key_id"], old["secret_key"])
            venue = env.desk.venues[0]
            rid = (await env.request("runbook_start", id="api-credentials"))["id"]
            # A key not generated at the broker fails the non-mutating check.
            await env.request("credentials_stage", venue="alpha", key_id="AKNEWKEY0002",
                              secret_key="new-secret-value")
            c = await env.request("credentials_check", venue="alpha")
            assert c["check_ok"] is False and "answered 401" in c["check_detail"]
            code, msg = await refused(env, "credentials_activate", venue="alpha")
            assert code == "bad_state" and "has not passed a non-mutating check" in msg
            sim.accept_key("AKNEWKEY0002", "new-secret-value")  # step 01, in the broker UI
            # Staged with a future activation time: checked, but not activated early.
            await env.request("credentials_stage", venue="alpha", key_id="AKNEWKEY0002",
                              secret_key="new-secret-value", activate_at=env.desk.wall() + 3600)
            assert (await env.request("credentials_check", venue="alpha"))["check_ok"] is True
            code, msg = await refused(env, "credentials_activate", venue="alpha")
            assert code == "bad_state" and "activates at" in msg
            assert venue.credentials() == (old["key_id"], old["secret_key"])
            await env.request("credentials_stage", venue="alpha", key_id="AKNEWKEY0002",
                              secret_key="new-secret-value")
            await env.request("credentials_check", venue="alpha")
            c = await env.request("credentials_activate", venue="alpha")
            new_fp = fingerprint("AKNEWKEY0002", "new-secret-value")
            assert c["active"] == new_fp and venue.credentials() == ("AKNEWKEY0002",
                                                                     "new-secret-value")
            code, msg = await refused(env, "credentials_revoke", venue="alpha")
            assert code == "bad_state" and "may be revoked from" in msg
            await trio.sleep(0.6)
            code, msg = await refused(env, "credentials_revoke", venue="alpha")
            assert code == "revoke_refused" and "still accepts the previous credential" in msg
            v = (await env.request("runbook_verify", run=rid))["verifications"][-1]
            assert v["ok"] is False and "not revoked yet" in v["detail"]
            sim.revoke_key(old["key_id"])  # in the broker UI
            c = await env.request("credentials_revoke", venue="alpha")
            assert c["previous"] is None and c["last_rotation"]["confirmed_by_venue"] is True
            last = (await env.request("status"))["credentials"]["last_rotation"]
            assert last["venue"] == "alpha" and last["fingerprint"] == new_fp
            assert last["verified_before_revoke"] is True and last["at"] == last["revoked_at"]
            assert last["checked_at"] <= last["activated_at"] <= last["revoked_at"]
            v = (await env.request("runbook_verify", run=rid))["verifications"][-1]
            assert v["ok"] is True, v
            # The kill path runs on the new key too: the old one is refused at the venue.
            order = sim.place("AAPL", 5, "buy")
            await env.request("kill", reason="after rotation")
            await wait_for(lambda: sim.order(str(order["id"]))["status"] == "canceled")
            names = [type(e).__name__ for e in await env.desk.journal.read_all()]
            assert names.count("CredentialStaged") == 3 and "CredentialRevoked" in names
            store = Path(env.config.state_dir) / "credentials" / "alpha"
            assert sorted(p.name for p in store.iterdir()) == ["active"]
            assert (store / "active" / "secret_key").stat().st_mode & 0o777 == 0o600
        async with open_desk(tmp_path, ("alpha",), venue_alpha=old, credentials=creds) as env:
            # A restart keeps the rotated key, not the configured one, and the record.
            assert env.desk.venues[0].credentials() == ("AKNEWKEY0002", "new-secret-value")
            st = await env.request("credentials")
            assert st["last_rotation"]["fingerprint"] == new_fp


async def test_credentials_stage_refuses_an_activation_time_out_of_range(
        tmp_path: Path) -> None:
    key = {"venue": "alpha", "key_id": "AKNEWKEY0002", "secret_key": "new-secret-value"}
    with trio.fail_after(LIMIT):
        async with open_desk(tmp_path, ("alpha",)) as env:
            now = env.desk.wall()
            for bad in (1e17, 1e308, -5.0, 0.0, now - 2 * 86_400, now + 367 * 86_400):
                code, msg = await refused(env, "credentials_stage", **key, activate_at=bad)
                assert code == "bad_request", msg
                assert msg.startswith(f"activate_at {bad!r} is out of range: give an epoch "
                                      "time from "), msg
                assert "(now - 1 day to now + 366 days)" in msg
            # Not a number at all: JSON cannot carry them, the function refuses them too.
            for bad in (float("nan"), float("inf"), float("-inf")):
                with pytest.raises(ControlError, match=rf"activate_at {bad!r} is out of "
                                                       "range"):
                    await credentials.stage(env.desk, "alpha", key["key_id"],
                                            key["secret_key"], bad, caller=Caller(uid=0))
            names = [type(e).__name__ for e in await env.desk.journal.read_all()]
            assert "CredentialStaged" not in names
            assert credentials.desk_store(env.desk).read("alpha", "staged") is None
            # The bounds themselves are accepted.
            for good in (now - 86_000, now + 365 * 86_400):
                c = await env.request("credentials_stage", **key, activate_at=good)
                assert c["activate_at"] == good


async def test_an_old_journal_with_an_unprintable_activation_time_still_answers(
        tmp_path: Path) -> None:
    old = {"key_id": "AKOLDKEY0001", "secret_key": "old-secret-value"}
    new = ("AKNEWKEY0002", "new-secret-value")
    with trio.fail_after(LIMIT):
        async with open_desk(tmp_path, ("alpha",), venue_alpha=old) as env:
            env.sims["alpha"].accept_key(*new)
            await env.request("credentials_stage", venue="alpha", key_id=new[0],
                              secret_key=new[1])
            # What a journal written before the bounds may hold: 1e17 is past year 9999.
            await env.desk.submit(CredentialStaged(
                ts=env.desk.wall(), actor="operator:old", venue="alpha",
                fingerprint=fingerprint(*new) or "", activate_at=1e17))
            assert (await env.request("credentials_check", venue="alpha"))["check_ok"] is True
            code, msg = await refused(env, "credentials_activate", venue="alpha")
            assert code == "bad_state"
            assert msg.startswith("venue alpha: the staged credential activates at epoch "
                                  "1e+17, "), msg
        async with open_desk(tmp_path, ("alpha",), venue_alpha=old) as env:  # a restart
            assert (await env.request("credentials"))["venues"]["alpha"]["activate_at"] == 1e17
            assert env.desk.status()["credentials"]["venues"]["alpha"]["staged"]
            code, msg = await refused(env, "credentials_activate", venue="alpha")
            assert code == "bad_state" and "activates at epoch 1e+17" in msg


# --- deskctl ---------------------------------------------------------------------------------


async def test_deskctl_runs_a_checklist_and_shows_who_did_what(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    with trio.fail_after(LIMIT):
        async with open_desk(tmp_path, ("alpha",)) as env:
            assert await run_deskctl(env.socket, "--json", "runbook", "retrain", "--start") == 0
            rid = json.loads(capsys.readouterr().out)["id"]
            assert await run_deskctl(env.socket, "runbook", rid, "--done", "2", "--note",
                                  "purged k-fold") == 0
            out = capsys.readouterr().out
            assert out.startswith(f"run {rid} · runbook retrain (Scheduled model retrain) · "
                                  "OPEN\n")
            assert "  [ ] 01 Refresh the training window" in out
            assert "  [x] 02 Re-run purged k-fold CV" in out
            assert ": purged k-fold\n" in out and out.endswith("--done 1\n")
            assert await run_deskctl(env.socket, "runbook", rid, "--verify") == 1
            assert "=> NOT JUDGED (manual)" in capsys.readouterr().out
            assert await run_deskctl(env.socket, "runbook", rid, "--verify", "--attest",
                                  "Sharpe within 10%") == 0
            assert "=> PASS (attested)" in capsys.readouterr().out
            assert await run_deskctl(env.socket, "runbook", rid, "--close") == 2
            assert "cannot be completed: steps not done: 1, 3, 4" in capsys.readouterr().err
            assert await run_deskctl(env.socket, "runbook", "--runs") == 0
            rows = capsys.readouterr().out.splitlines()
            assert rows[1].split()[:5] == [rid, "retrain", "open", "1/4", "pass"]
            assert await run_deskctl(env.socket, "runbook", "--done", "1") == 64
            assert await run_deskctl(env.socket, "credentials") == 0
            assert "last rotation: none" in capsys.readouterr().out
