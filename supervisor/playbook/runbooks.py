"""Playbook 01's ten runbook procedures as data: trigger, exact steps, verify, cadence.

"If a procedure is not written down, it does not exist" (playbook 06 principle 01). The words
are the playbook's; a reader can hold section 01 beside this table and check it line by line.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Category = Literal["DEPLOY", "ROLLBACK", "INCIDENT", "DRIFT", "BROKER"]


class Runbook(msgspec.Struct, frozen=True):
    id: str
    category: Category
    title: str
    frequency: str
    trigger: str
    steps: tuple[str, ...]
    verify: str


_ALL = (
    Runbook(
        "rolling-deploy", "DEPLOY", "Rolling deploy of new model version",
        "1-2 times per month, per active model",
        "New model passed all 15 production gates and was approved by the model committee.",
        ("Tag the model and feature set: model_v1.4.0, features_v2.3.0",
         "Deploy to shadow mode behind the live model for 3 trading days",
         "Compare PnL, Sharpe, and turnover against the live model",
         "Promote to 25% capital allocation; hold for 5 trading days",
         "If no band exit at 25%, promote to 100% the next session"),
        "Live model_hash matches the tagged release in the model registry; shadow log shows "
        "<= 1.2x prediction divergence vs. the previous version."),
    Runbook(
        "feature-deploy", "DEPLOY", "Deploy a new feature into production",
        "Weekly cadence during research; monthly to production",
        "Feature passed offline validation: stable PSI, no look-ahead, contributes >= 5% to "
        "feature importance.",
        ("Backfill the feature for the full training window",
         "Re-run cross-validation with the new feature added",
         "If CV Sharpe improves, retrain the production model",
         "Run 1 trading week in shadow before going live",
         "Update the feature schema doc with the new filed_at timestamp"),
        "Feature is present in /api/predict requests for 100% of symbols; PSI < 0.1 between "
        "offline and live distributions in the first session."),
    Runbook(
        "model-rollback", "ROLLBACK", "Rollback to previous model version",
        "Rare - but practice quarterly on a paper-trading sandbox",
        "Live PnL exits the 95% backtest band for 3 consecutive days OR a P1 incident is "
        "filed against the current version.",
        ("Flip the model_version flag in production config back to the prior tag",
         "Confirm the prior model_hash is still pinned and reachable in the registry",
         "Restart the inference workers; check the first 100 predictions for sanity",
         "Notify the on-call channel with the reason and reference to the incident ticket"),
        "Production /healthz reports the prior model_hash; PnL on the first session "
        "post-rollback returns to within the backtest band."),
    Runbook(
        "config-rollback", "ROLLBACK", "Rollback a config change",
        "As needed; aim for < 1 per quarter",
        "Risk service or PnL monitor alerts within 60 minutes of a config change being "
        "applied.",
        ("git revert the offending commit; force-push is forbidden",
         "Redeploy with the revert; confirm the live config hash matches the revert commit",
         "Inspect any positions opened in the affected window for exposure mismatches",
         "File a hot-fix ticket with the original change author for a proper redo"),
        "git rev-parse HEAD on the live host matches the revert commit; no further alerts in "
        "the next 30 minutes."),
    Runbook(
        "killswitch", "INCIDENT", "Pull the kill-switch",
        "0 to a few times per year. Drill quarterly.",
        "Any P0 incident: broker outage, risk breach, stale data, runaway model behavior.",
        ("Hit the kill-switch endpoint or physical button - both are equivalent",
         "Cancel all open orders across all venues; do NOT wait for venue confirmation",
         "Snapshot the current position book, the model_hash, and the last 10 minutes of "
         "predictions",
         "Open an incident channel; assign an incident commander before triaging the cause"),
        "Order log shows zero new orders for >= 60 seconds after the switch; venue-side "
        "open-order count is zero."),
    Runbook(
        "reconciliation", "INCIDENT", "Position reconciliation after partial outage",
        "After every P0 incident; spot-check monthly",
        "Order acknowledgements went silent for any window during a trading session.",
        ("Pull the canonical position file from the broker, not your own order log",
         "Diff against the internal position state at the start of the silence window",
         "Manually classify any discrepancy: filled but not reported, reported but not "
         "filled, duplicate",
         "Adjust internal state to match broker truth; do not let the model recover from a "
         "wrong position"),
        "Broker position file and internal state agree to the share; the next session opens "
        "from a single source of truth."),
    Runbook(
        "drift-investigation", "DRIFT", "Investigate a feature-drift alert",
        "Weekly review of all production features",
        "PSI > 0.25 on any production feature, OR Sharpe contribution of a top-3 feature "
        "halves over a rolling 30-day window.",
        ("Plot the live and training distributions side-by-side for the offending feature",
         "Check if the cause is pipeline (new vendor format, missing column) or genuine "
         "regime",
         "Pipeline: roll back. Regime: schedule a controlled retrain with the new data "
         "included",
         "If neither, audit the feature for hidden look-ahead - drift is often the late "
         "discovery of leakage"),
        "PSI returns under 0.15 within one trading week of the fix, OR the model is "
        "officially retired."),
    Runbook(
        "retrain", "DRIFT", "Scheduled model retrain", "Quarterly minimum",
        "Quarterly cadence OR drift event resolved with 'retrain' decision.",
        ("Refresh the training window by N most-recent days (defined per model)",
         "Re-run purged k-fold CV; require deflated Sharpe >= the existing model",
         "Deploy via the rolling-deploy procedure, not a hot replace",
         "Archive the prior model_hash with its full training data hash and date stamps"),
        "New model out-of-sample Sharpe within 10% of the prior model; predictions agree on "
        ">= 70% of symbols on day one."),
    Runbook(
        "broker-failover", "BROKER", "Failover to backup broker",
        "Test on a paper account monthly",
        "Primary broker heartbeat fails for 3 consecutive checks, OR scheduled maintenance "
        "window.",
        ("Flip the broker_route flag to the secondary venue",
         "Confirm authentication on the secondary; check rate-limit headroom",
         "Open a single-share test order on a liquid symbol; cancel immediately",
         "Resume trading; reconcile any pending orders from the primary"),
        "First five orders on the secondary fill within the expected latency band; "
        "primary's status page confirms outage."),
    Runbook(
        "api-credentials", "BROKER", "Rotate broker API credentials", "Quarterly",
        "Quarterly cadence, OR any credential exposure event (commit to a public repo, lost "
        "laptop).",
        ("Generate the new credential in the broker UI; do not delete the old one yet",
         "Push the new credential to the secret manager with a future activation timestamp",
         "Verify the new credential works by issuing a non-mutating call (account balance)",
         "Activate; wait 5 minutes; revoke the old credential"),
        "Live trading uses the new credential hash; broker UI shows the old credential as "
        "revoked."),
)

RUNBOOKS: dict[str, Runbook] = {r.id: r for r in _ALL}
