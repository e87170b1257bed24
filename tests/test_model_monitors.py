"""Model monitors on trio's MockClock (playbook 02 feature-drift; playbook 04 "Feature PSI vs
training", "Prediction distribution", "Feature-importance churn", "Inference worker
liveness", "Inference latency", "Job queue depth"; playbook 05 D2).

The wall clock is ``T0 + trio.current_time()`` with ``T0`` a UTC midnight, so trio time
``t`` is ``t`` seconds into UTC day 0 and every threshold is checked at an exact virtual
time. Features and predictions go through a real ``Book`` to which the monitor is
subscribed, as the runtime wires it. The inference worker is a real HTTP server on
127.0.0.1 where the wire matters, an ``httpx.MockTransport`` elsewhere (it is an
external worker, not our code).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import httpx
import msgspec
import pytest
import trio
import trio.testing

from actors.model import (
    MAX_LATENCY_SAMPLES,
    Inference,
    ModelMonitor,
    ModelMonitorConfig,
    QueueDepth,
    ks_statistic,
    load_importance,
    load_reference,
    psi,
)
from simulators.http import Receive, Scope, Send, handle_lifespan, send_json, serve_asgi
from supervisor.core.book import Book
from supervisor.core.errors import ConfigError
from supervisor.core.protocol import Features, Model, Prediction, TelemetryEvent

from .reports import Reports

T0 = 1_699_920_000.0  # 2023-11-14T00:00:00Z, UTC day 19675
DAY = 86_400.0
HASH = "m-1a2b3c"
TOP = ["f0", "f1", "f2", "f3"]

REFERENCE_TOML = """\
model_hash = "m-1a2b3c"
[features.f0]
edges = [-1.0, 0.0, 1.0]
proportions = [0.5, 0.5]
[features.f1]
edges = [-1.0, 0.0, 1.0]
proportions = [0.5, 0.5]
[features.f2]
edges = [-1.0, 0.0, 1.0]
proportions = [0.5, 0.5]
[features.f3]
edges = [-1.0, 0.0, 1.0]
proportions = [0.5, 0.5]
[features.extra]
edges = [-inf, 0.0, inf]
proportions = [0.5, 0.5]
"""


def wall() -> float:
    return T0 + trio.current_time()


def config(tmp_path: Path, **kw: Any) -> ModelMonitorConfig:
    ref = tmp_path / "reference.toml"
    if not ref.exists():
        ref.write_text(REFERENCE_TOML)
    base: dict[str, Any] = {"reference": str(ref), "top_features": TOP}
    base.update(kw)
    return ModelMonitorConfig(**base)


def make(cfg: ModelMonitorConfig, *, state_path: Path | None = None,
         transport: httpx.AsyncBaseTransport | None = None,
         ) -> tuple[ModelMonitor, Book, Reports]:
    book, reports = Book(clock=trio.current_time), Reports()
    monitor = ModelMonitor(cfg, reports, wall_clock=wall, model_hash=HASH,
                           state_path=state_path, transport=transport)
    book.subscribe(monitor.on_telemetry)
    monitor.load()
    return monitor, book, reports


def feed_features(book: Book, low: dict[str, int], *, n: int = 100, ts: float | None = None,
                  ) -> None:
    """``n`` feature events stamped ``ts`` (default now): feature ``f`` is -0.5 (bin 0) in
    the first ``low[f]`` of them and 0.5 (bin 1) in the rest; the others half and half."""
    stamp = wall() if ts is None else ts
    names = [*TOP, "extra"]
    book.ingest([
        Features(ts=stamp, values={f: -0.5 if i < low.get(f, n // 2) else 0.5 for f in names})
        for i in range(n)])


# --- PSI (playbook 02 feature-drift; playbook 04) -------------------------------------------------


def test_psi_matches_hand_computed_values() -> None:
    # Training 50/50; live 74/26: (0.74 - 0.5) ln(0.74/0.5) + (0.26 - 0.5) ln(0.26/0.5)
    # = 0.24 ln(74/26) = 0.24 x 1.0459685 = 0.2510325.
    assert psi([0.5, 0.5], [74, 26]) == pytest.approx(0.2510325, abs=1e-7)
    # 73/27: 0.23 ln(73/27) = 0.23 x 0.9946226 = 0.2287632.
    assert psi([0.5, 0.5], [73, 27]) == pytest.approx(0.2287632, abs=1e-7)
    assert psi([0.2, 0.3, 0.5], [20, 30, 50]) == 0.0


def test_psi_empty_bins_are_floored_at_epsilon_not_infinite() -> None:
    # Training bin 3 empty, live has 25% there: floored at 1e-4,
    # (0.25 - 0.5) ln(0.25/0.5) + (0.25 - 1e-4) ln(0.25/1e-4)
    # = 0.1732868 + 0.2499 x 7.8240460 = 0.1732868 + 1.9552291 = 2.1285159.
    value = psi([0.5, 0.5, 0.0], [0.5, 0.25, 0.25])
    assert math.isfinite(value) and value == pytest.approx(2.1285159, abs=1e-7)
    # An empty live bin too: finite.
    assert math.isfinite(psi([0.5, 0.5], [100, 0]))
    with pytest.raises(ValueError, match="same >= 2 bins"):
        psi([0.5, 0.5], [1, 2, 3])
    with pytest.raises(ValueError, match="actual must be finite, >= 0 and not all zero"):
        psi([0.5, 0.5], [0, 0])


def test_reference_decodes_edges_and_samples_and_errors_name_the_feature(
    tmp_path: Path,
) -> None:
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"features": {
        "spread": {"edges": [0, 1, 2, 3], "proportions": [0.25, 0.5, 0.25]},
        "vol": {"sample": list(range(100)), "bins": 4}}}))
    loaded = load_reference(str(ref))
    assert loaded.features["spread"].inner == [1.0, 2.0]
    assert loaded.features["spread"].expected == [0.25, 0.5, 0.25]
    # A sample is binned at its quartiles (bins = 4): 25 values a bin.
    assert loaded.features["vol"].inner == [24.75, 49.5, 74.25]
    assert loaded.features["vol"].expected == [0.25, 0.25, 0.25, 0.25]
    bad = tmp_path / "bad.toml"
    for text, message in [
        ("[features.spread]\nedges = [0, 1]\nproportions = [0.5, 0.5]\n",
         "features.spread: need >= 2 bins and one more edge than proportions, got 2 edges "
         "and 2 proportions"),
        ("[features.spread]\nedges = [0, 1, 2]\nproportions = [0.5, 0.6]\n",
         "features.spread: proportions must sum to 1, got 1.1"),
        ("[features.vol]\nsampel = [1, 2]\n",
         "features.vol: Object contains unknown field `sampel`"),
        ("[features.vol]\nsample = [1, 'x']\n",
         "features.vol: Expected `float`, got `str` - at `$.sample[1]`"),
        ("[features.vol]\nsample = [1, 1, 1]\n",
         "features.vol: sample needs at least 2 distinct values"),
    ]:
        bad.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_reference(str(bad))
        assert str(info.value) == f"{bad}: {message}"
    with pytest.raises(ConfigError, match=r"cannot read reference file .*missing\.toml"):
        load_reference(str(tmp_path / "missing.toml"))


async def test_psi_over_025_on_a_top_feature_reports_feature_drift_with_every_psi(
    tmp_path: Path, autojump_clock: trio.abc.Clock,
) -> None:
    monitor, book, reports = make(config(tmp_path))
    feed_features(book, {"f3": 74})  # the 4th feature: drift, but not a top-3 one
    result = await monitor.check_drift()
    ((t, finding),) = reports.findings()
    assert t == 0.0 and finding.incident_class == "feature-drift" and finding.actor == "model"
    assert finding.scope == f"model:{HASH}" and finding.severity is None  # the class's P1
    psis = cast("dict[str, float]", finding.evidence["psi"])
    assert set(psis) == {"f0", "f1", "f2", "f3", "extra"}  # every feature, top or not
    assert psis["f3"] == pytest.approx(0.2510325, abs=1e-7)
    assert psis["f0"] == 0.0
    assert finding.evidence["drifted"] == ["f3"] and finding.evidence["top3_over"] == []
    assert finding.evidence["disabled"] is False and finding.evidence["retire"] is False
    assert finding.summary.startswith(
        f"model {HASH}: feature drift: PSI > 0.25 on 1 of the top-4 features (f3 0.251) "
        "over 1 day(s)")
    assert not monitor.disabled and result["verdict"] == "alert"
    assert result["value"] == pytest.approx(0.2510325, abs=1e-7)
    assert result["threshold"] == 0.25 and result["last_run"] == T0


async def test_psi_just_under_025_reports_nothing(
    tmp_path: Path, autojump_clock: trio.abc.Clock,
) -> None:
    monitor, book, reports = make(config(tmp_path))
    feed_features(book, {"f0": 73})  # PSI 0.2288
    result = await monitor.check_drift()
    assert reports.items == []
    assert result["verdict"] == "ok"
    assert result["value"] == pytest.approx(0.2287632, abs=1e-7)


async def test_drift_on_a_non_top_feature_is_in_evidence_but_reports_nothing(
    tmp_path: Path, autojump_clock: trio.abc.Clock,
) -> None:
    monitor, book, reports = make(config(tmp_path))
    feed_features(book, {"extra": 90})
    await monitor.check_drift()
    assert reports.findings() == []
    assert monitor.status()["psi"]["extra"] > 0.25  # type: ignore[index]


async def test_top3_feature_over_025_disables_the_model_until_psi_is_under_015(
    tmp_path: Path, autojump_clock: trio.abc.Clock,
) -> None:
    monitor, book, reports = make(config(tmp_path))
    feed_features(book, {"f2": 75})  # the 3rd feature: 0.25 ln 3 = 0.2747
    await monitor.check_drift()
    ((_, finding),) = reports.findings()
    assert monitor.disabled
    assert monitor.disabled_reason == "top-3 feature(s) f2 PSI > 0.25 (playbook 02 feature-drift)"
    assert finding.evidence["top3_over"] == ["f2"] and finding.evidence["disabled"] is True
    assert "; model disabled: top-3 feature(s) f2 PSI > 0.25" in finding.summary
    status = monitor.status()
    assert status["disabled"] is True and status["disabled_reason"] == monitor.disabled_reason
    # Five days later the window holds only balanced values: PSI 0 < 0.15 (playbook 01
    # drift-investigation verify): enabled again, the episode ends.
    await trio.sleep(5 * DAY)
    feed_features(book, {})
    await monitor.check_drift()
    assert not monitor.disabled and monitor.status()["drift_open_since"] is None


async def test_the_window_is_5_days_of_day_histograms(
    tmp_path: Path, autojump_clock: trio.abc.Clock,
) -> None:
    monitor, book, reports = make(config(tmp_path))
    feed_features(book, {"f0": 100})  # day 0: all in bin 0
    await trio.sleep(4 * DAY)
    feed_features(book, {"f0": 0})  # day 4: all in bin 1; with day 0: 50/50
    await monitor.check_drift()
    assert monitor.last_psi["f0"] == 0.0 and reports.findings() == []
    await trio.sleep(DAY)  # day 5: day 0 has left the window, day 4 alone is all bin 1
    await monitor.check_drift()
    assert monitor.last_psi["f0"] == pytest.approx(psi([0.5, 0.5], [0, 1]))
    assert [f.evidence["window_days"] for _, f in reports.findings()] == [["2023-11-18"]]


async def test_daily_run_at_drift_at_utc(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    monitor, book, reports = make(config(tmp_path))  # drift_at 21:00 by default
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run)
        feed_features(book, {"f0": 80})
        await trio.sleep(2 * DAY)
        nursery.cancel_scope.cancel()
    # playbook 04 "daily": at 21:00 UTC each day; the same episode is reported both days.
    assert [t for t, _ in reports.findings()] == [21 * 3600.0, DAY + 21 * 3600.0]
    assert [f.evidence["new_episode"] for _, f in reports.findings()] == [True, False]
    assert len(monitor.saved.drifts) == 1


@pytest.mark.parametrize(("second_at", "retire"), [(90 * DAY - 1, True), (90 * DAY, False)])
async def test_second_drift_on_the_same_model_within_90_days_marks_it_retire(
    tmp_path: Path, autojump_clock: trio.abc.Clock, second_at: float, retire: bool,
) -> None:
    state = tmp_path / "model-monitor.json"
    monitor, book, reports = make(config(tmp_path), state_path=state)
    feed_features(book, {"f0": 80})
    await monitor.check_drift()  # episode 1 at day 0
    await trio.sleep_until(10 * DAY)
    feed_features(book, {})
    await monitor.check_drift()  # every PSI under 0.15: the episode ends
    await trio.sleep_until(second_at)
    feed_features(book, {"f0": 80})
    await monitor.check_drift()  # episode 2
    first, second = (f for _, f in reports.findings())
    assert first.evidence["retire"] is False
    assert second.evidence["retire"] is retire
    assert monitor.status()["retire"] is retire
    if retire:
        assert second.evidence["recent_drifts"] == [T0, T0 + second_at]
        assert second.summary.endswith(
            "; retire: drift #2 within 90 days: the model retires on schedule rather than "
            "relaxing the threshold (playbook 02 postmortem)")
    # The registry survives a restart (playbook 02 postmortem "Add the drift event to the
    # model registry"); the disabled flag with it.
    again, _, _ = make(config(tmp_path), state_path=state)
    assert again.status()["retire"] is retire and again.disabled
    assert [d.at for d in again.saved.drifts] == [T0, T0 + second_at]


async def test_a_drift_still_open_is_not_a_second_drift(
    tmp_path: Path, autojump_clock: trio.abc.Clock,
) -> None:
    monitor, book, reports = make(config(tmp_path))
    feed_features(book, {"f0": 80})
    await monitor.check_drift()
    await trio.sleep(5 * DAY)  # day 0 has left the window
    feed_features(book, {"f0": 70})  # 0.2 ln(7/3) = 0.1695: between 0.15 and 0.25
    result = await monitor.check_drift()
    assert result["verdict"] == "ok" and result["value"] == pytest.approx(0.1694596)
    assert "drift episode open until every top PSI < 0.15" in cast(str, result["detail"])
    await trio.sleep(5 * DAY)
    feed_features(book, {"f0": 90})
    await monitor.check_drift()
    assert len(reports.findings()) == 2 and len(monitor.saved.drifts) == 1
    assert monitor.retire is None


async def test_drift_scope_follows_the_model_telemetry(
    tmp_path: Path, autojump_clock: trio.abc.Clock,
) -> None:
    (tmp_path / "reference.toml").write_text(REFERENCE_TOML.replace(HASH, "m-new"))
    monitor, book, reports = make(config(tmp_path))
    book.ingest([Model(model_hash="m-new", ts=T0)])
    feed_features(book, {"f0": 80})
    await monitor.check_drift()
    ((_, finding),) = reports.findings()
    assert finding.scope == "model:m-new"


async def test_a_reference_for_another_model_is_an_error_not_a_psi(
    tmp_path: Path, autojump_clock: trio.abc.Clock,
) -> None:
    monitor, book, reports = make(config(tmp_path))
    book.ingest([Model(model_hash="m-other", ts=T0)])
    feed_features(book, {"f0": 80})
    result = await monitor.check_drift()
    assert result["verdict"] == "error" and reports.findings() == []
    ((_, alert),) = reports.alerts("QUEUE")
    assert alert.summary == (
        "model m-other: feature PSI not checked: the reference is for model m-1a2b3c, the "
        "live model is m-other: give the live model's training reference")


async def test_a_top_feature_missing_from_live_telemetry_is_queued(
    tmp_path: Path, autojump_clock: trio.abc.Clock,
) -> None:
    monitor, book, reports = make(config(tmp_path))
    book.ingest([Features(ts=wall(), values={"f0": 0.5, "f1": -0.5}) for _ in range(100)])
    result = await monitor.check_drift()
    ((_, alert),) = reports.alerts("QUEUE")
    assert alert.evidence == {"features": ["f2", "f3"], "counts": {"f2": 0, "f3": 0}}
    assert result["verdict"] == "alert"  # f0 and f1 are all in one bin: drift
    assert monitor.last_psi["f2"] is None


async def test_top_features_from_the_importance_file(
    tmp_path: Path, autojump_clock: trio.abc.Clock,
) -> None:
    imp = tmp_path / "importance.toml"
    imp.write_text("[importance]\nf3 = 0.4\nf2 = 0.3\nf1 = 0.2\nf0 = 0.1\nextra = 0.0\n")
    monitor, book, _ = make(config(tmp_path, top_features=[], importance=str(imp)))
    assert monitor.top_features() == ["f3", "f2", "f1", "f0", "extra"]
    feed_features(book, {"f3": 80})  # now the most important feature: disables
    await monitor.check_drift()
    assert monitor.disabled


# --- Prediction distribution (playbook 04: KS > 0.15, QUEUE, hourly) ---------------------------


def test_ks_statistic_matches_hand_computed_values() -> None:
    # ECDFs of {1,2,3,4} and {3,4,5,6}: at x = 2, 2/4 vs 0; at 4, 4/4 vs 2/4: D = 0.5.
    assert ks_statistic([1, 2, 3, 4], [3, 4, 5, 6]) == 0.5
    # {3..22} vs {0..19}: at x = 2, 0 vs 3/20 = 0.15 exactly (exact arithmetic).
    assert ks_statistic(range(3, 23), range(20)) == 0.15
    # Weighted baseline {0 (weight 3), 10 (weight 1)} vs {5}: at x = 0, 0 vs 0.75.
    assert ks_statistic([5], [0, 10], [3, 1]) == 0.75
    assert ks_statistic([1.0, 2.0], [1.0, 2.0]) == 0.0
    with pytest.raises(ValueError, match="two non-empty 1-d samples"):
        ks_statistic([], [1.0])


def predictions(values: Sequence[float], ts: float) -> list[TelemetryEvent]:
    return [Prediction(symbol="AAA", value=v, ts=ts) for v in values]


@pytest.mark.parametrize(("shift", "alert"), [(3, False), (4, True)])
async def test_hourly_ks_of_today_against_the_30_day_baseline(
    tmp_path: Path, autojump_clock: trio.abc.Clock, shift: int, alert: bool,
) -> None:
    monitor, book, reports = make(ModelMonitorConfig(ks_min_samples=20))
    book.ingest(predictions(range(20), T0 - 3600))  # yesterday: the baseline
    book.ingest(predictions(range(shift, 20 + shift), T0 + 60))
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run)
        await trio.sleep(2 * 3600 + 1)
        nursery.cancel_scope.cancel()
    ks = monitor.status()["monitors"]["prediction_ks"]  # type: ignore[index]
    assert ks["value"] == shift / 20 and ks["last_run"] == T0 + 7200
    if alert:  # 0.2 > 0.15: one QUEUE alert at the first hourly check, not again
        ((t, item),) = reports.alerts()
        assert t == 3600.0 and item.channel == "QUEUE" and item.scope == f"model:{HASH}"
        assert item.summary == (
            f"model {HASH}: prediction distribution drifted: KS 0.200 > 0.15 against the "
            "30-day baseline (the strongest early signal of edge decay)")
    else:  # exactly 0.15 is not above 0.15
        assert reports.items == [] and ks["verdict"] == "ok"


async def test_ks_needs_enough_predictions(autojump_clock: trio.abc.Clock) -> None:
    monitor, book, reports = make(ModelMonitorConfig())
    book.ingest(predictions(range(500), T0 - 3600))
    book.ingest(predictions(range(99), T0))
    result = await monitor.check_predictions()
    assert result["verdict"] == "no-data" and reports.items == []
    assert result["detail"] == "today 99 predictions, baseline 500 over 1 day(s); needs 100 each"


async def test_baseline_days_are_weighted_by_their_prediction_count(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Day -2 has 1000 predictions at 0 (sampled down to 100), day -1 100 at 1: the
    # baseline is 10/11 zeros, not half. Today 100 at 0: KS = 1/11.
    monitor, book, _ = make(ModelMonitorConfig(ks_day_samples=100))
    book.ingest(predictions([0.0] * 1000, T0 - DAY - 60))
    book.ingest(predictions([1.0] * 100, T0 - 60))
    book.ingest(predictions([0.0] * 100, T0))
    result = await monitor.check_predictions()
    assert result["value"] == pytest.approx(1 / 11)


# --- Feature-importance churn (playbook 04: top-5 changes by >= 2, QUEUE, weekly) ----------------


async def test_weekly_churn_of_the_top5_set(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    imp = tmp_path / "importance.json"

    def write(top: list[str]) -> None:
        imp.write_text(json.dumps({"importance": {f: 10 - i for i, f in enumerate(top)}}))

    write(["a", "b", "c", "d", "e", "f"])
    monitor, _, reports = make(ModelMonitorConfig(importance=str(imp)))
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run)
        await trio.sleep(1)
        write(["a", "b", "c", "d", "f", "e"])  # one feature out (e), one in (f)
        await trio.sleep(7 * DAY)
        assert reports.items == []
        churn = monitor.status()["monitors"]["importance_churn"]  # type: ignore[index]
        assert churn["value"] == 1 and churn["last_run"] == T0 + 7 * DAY
        write(["a", "b", "c", "x", "y", "f"])  # d and e out: 2 changes
        await trio.sleep(7 * DAY)
        nursery.cancel_scope.cancel()
    ((t, alert),) = reports.alerts()
    assert t == 14 * DAY and alert.channel == "QUEUE"
    assert alert.evidence["out"] == ["d", "f"] and alert.evidence["in"] == ["x", "y"]
    assert alert.evidence["changes"] == 2


def test_importance_file_errors_name_the_feature(tmp_path: Path) -> None:
    imp = tmp_path / "importance.toml"
    imp.write_text("[importance]\nspread = 'high'\n")
    with pytest.raises(ConfigError) as info:
        load_importance(str(imp))
    assert str(info.value) == f"{imp}: importance.spread: Expected `float`, got `str`"


# --- Inference worker liveness (playbook 04: 2 failures in 60 s, PAGE, every 30 s); D2 -----------


class Worker:
    """A stand-in inference worker: ``GET /healthz`` answers ``status`` with the hash."""

    def __init__(self) -> None:
        self.status = 200
        self.model_hash = HASH
        self.hits: list[float] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await handle_lifespan(receive, send)
            return
        self.hits.append(trio.current_time())
        if scope["path"] != "/healthz":
            await send_json(send, 404, {"error": "no route"})
            return
        await send_json(send, self.status, {"model_hash": self.model_hash, "ok": True})


async def test_liveness_against_a_real_worker_pages_on_2_failures_and_blocks_on_d2(
    autojump_clock: trio.abc.Clock,
) -> None:
    worker = Worker()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_asgi, worker)
            monitor, _, reports = make(ModelMonitorConfig(
                healthz_url=f"{url}/healthz", pinned_model_hash=HASH))
            await nursery.start(monitor.run)
            await trio.sleep(45)
            assert reports.items == [] and monitor.healthz_hash == HASH
            assert monitor.blocked is None
            worker.status = 503  # checks at 60 and 90 fail
            await trio.sleep_until(91)
            worker.status = 200
            worker.model_hash = "m-rogue"  # playbook 05 D2: not the pinned release
            await trio.sleep_until(121)
            nursery.cancel_scope.cancel()
    assert worker.hits[:5] == [0.0, 30.0, 60.0, 90.0, 120.0]
    (t1, page), (t2, d2) = reports.alerts("PAGE")
    assert t1 == 90.0 and page.scope == "inference-worker"
    assert page.summary == (f"inference worker {url}/healthz: health check failed 2 times in "
                            "60 s (last: HTTP 503)")
    assert t2 == 120.0 and d2.scope == "gate:D2"
    assert monitor.blocked == (f"live model_hash m-rogue at {url}/healthz is not the "
                               f"registry's pinned production version {HASH} (gate D2)")
    assert monitor.status()["blocked"] == monitor.blocked
    assert reports.findings() == []  # not a config-drift finding


def mock_worker(script: Callable[[float], httpx.Response | None]) -> httpx.MockTransport:
    """A MockTransport worker: ``script(now)`` answers, or None hangs until cancelled."""

    async def handle(request: httpx.Request) -> httpx.Response:
        answer = script(trio.current_time())
        if answer is None:
            await trio.sleep_forever()
        assert answer is not None
        return answer

    return httpx.MockTransport(handle)


def ok(model_hash: str = HASH) -> httpx.Response:
    return httpx.Response(200, json={"model_hash": model_hash})


async def test_2_failures_in_60s_page_even_with_a_success_between(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Every 20 s: fails at 0, answers at 20, fails at 40: 2 failures within 60 s.
    transport = mock_worker(lambda now: ok() if now % 40 else httpx.Response(500))
    monitor, _, reports = make(ModelMonitorConfig(healthz_url="http://worker/healthz",
                                                  liveness_interval_s=20),
                               transport=transport)
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run)
        await trio.sleep(41)
        nursery.cancel_scope.cancel()
    ((t, page),) = reports.alerts("PAGE")
    assert t == 40.0 and page.evidence["failures"] == 2


async def test_failures_exactly_60s_apart_do_not_page(autojump_clock: trio.abc.Clock) -> None:
    # Every 30 s: fails at 0, 60, 120 (answers at 30, 90): never 2 within 60 s.
    transport = mock_worker(lambda now: ok() if now % 60 else httpx.Response(500))
    monitor, _, reports = make(ModelMonitorConfig(healthz_url="http://worker/healthz"),
                               transport=transport)
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run)
        await trio.sleep(121)
        nursery.cancel_scope.cancel()
    assert reports.items == []
    live = monitor.status()["monitors"]["worker_liveness"]  # type: ignore[index]
    assert live["value"] == 1 and live["detail"] == "failed: HTTP 500"


async def test_hung_worker_and_200_without_hash_are_failures(
    autojump_clock: trio.abc.Clock,
) -> None:
    transport = mock_worker(lambda now: None if now < 1 else httpx.Response(200, json={}))
    monitor, _, reports = make(ModelMonitorConfig(healthz_url="http://worker/healthz"),
                               transport=transport)
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run)
        await trio.sleep(31)
        nursery.cancel_scope.cancel()
    ((t, page),) = reports.alerts("PAGE")
    assert t == 30.0  # the first check times out at 5 s, the second is answered at 30
    assert cast(str, page.evidence["last_error"]).startswith("200 without a model_hash: ")


async def test_pinned_file_is_reread_and_unblocks(
    tmp_path: Path, autojump_clock: trio.abc.Clock,
) -> None:
    pinned = tmp_path / "production.json"
    pinned.write_text(json.dumps({"model_hash": "m-old"}))
    monitor, _, reports = make(
        ModelMonitorConfig(healthz_url="http://worker/healthz",
                           pinned_model_file=str(pinned)),
        transport=mock_worker(lambda now: ok()))
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run)
        await trio.sleep(61)
        assert monitor.blocked is not None and len(reports.alerts("PAGE")) == 1  # once
        pinned.write_text(json.dumps({"model_hash": HASH}))  # the registry pins it
        await trio.sleep(30)
        nursery.cancel_scope.cancel()
    assert monitor.blocked is None and monitor.pinned == HASH


# --- Inference latency (playbook 04: p99 > 50% of decay horizon, PAGE, every 1m) ------------------


async def test_latency_p99_at_and_over_half_the_decay_horizon(
    autojump_clock: trio.abc.Clock,
) -> None:
    monitor, _, reports = make(ModelMonitorConfig(decay_horizon_s=300))
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run)
        await trio.sleep(30)
        monitor.on_telemetry([cast(TelemetryEvent, Inference(ts=wall(), latency_s=150.0))
                              for _ in range(100)])
        await trio.sleep_until(61)  # p99 150 s: exactly 50% of 300 s, not over
        assert reports.items == []
        monitor.on_telemetry([cast(TelemetryEvent, Inference(ts=wall(), latency_s=150.5))
                              for _ in range(100)])
        await trio.sleep_until(121)
        nursery.cancel_scope.cancel()
    ((t, page),) = reports.alerts("PAGE")
    assert t == 120.0 and page.evidence["p99_s"] == 150.5 and page.scope == "inference-latency"


async def test_latency_p99_is_numpy_linear_over_the_last_minute(
    autojump_clock: trio.abc.Clock,
) -> None:
    monitor, _, _ = make(ModelMonitorConfig())
    old = [cast(TelemetryEvent, Inference(ts=wall(), latency_s=1000.0))]
    monitor.on_telemetry(old)
    await trio.sleep(60)  # the 1000 s call is now 60 s old: out of the window
    # 99 calls of 1 s and one of 200 s: p99 = 1 + 0.01 x (200 - 1) = 2.99 (rank 98.01).
    monitor.on_telemetry([cast(TelemetryEvent, Inference(ts=wall(), latency_s=x))
                          for x in [1.0] * 99 + [200.0]])
    result = await monitor.check_latency()
    assert result["value"] == pytest.approx(2.99) and result["verdict"] == "ok"


# --- Job queue depth (playbook 04: > 1000 unprocessed, QUEUE, every 1m) ---------------------------


async def test_queue_depth_at_and_over_1000(autojump_clock: trio.abc.Clock) -> None:
    monitor, _, reports = make(ModelMonitorConfig())

    def depth(n: int) -> None:
        monitor.on_telemetry([cast(TelemetryEvent, QueueDepth(ts=wall(), depth=n))])

    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run)
        depth(1000)
        await trio.sleep_until(61)
        assert reports.items == []
        depth(1001)
        await trio.sleep_until(181)  # over at 120 and 180: one alert
        depth(10)
        await trio.sleep_until(241)  # back under: re-armed
        depth(5000)
        await trio.sleep_until(301)
        nursery.cancel_scope.cancel()
    assert [(t, a.channel, a.evidence["depth"]) for t, a in reports.alerts()] == [
        (120.0, "QUEUE", 1001), (300.0, "QUEUE", 5000)]


def test_new_telemetry_kinds_decode_as_tagged_structs() -> None:
    decoder = msgspec.json.Decoder(Inference | QueueDepth)
    assert decoder.decode(b'{"kind":"inference","ts":1.0,"latency_s":0.02}') == Inference(
        ts=1.0, latency_s=0.02)
    assert decoder.decode(b'{"kind":"queue","ts":1.0,"depth":7}') == QueueDepth(ts=1.0, depth=7)
    with pytest.raises(msgspec.ValidationError, match="Expected `float` >= 0"):
        decoder.decode(b'{"kind":"inference","ts":1.0,"latency_s":-1}')


# --- bounded memory, config, status -----------------------------------------------------------


async def test_memory_is_bounded_whatever_the_engine_sends(
    tmp_path: Path, autojump_clock: trio.abc.Clock,
) -> None:
    monitor, book, _ = make(config(tmp_path, ks_day_samples=50))
    for day in range(40):
        await trio.sleep_until(day * DAY)
        book.ingest([Features(ts=wall(), values={"f0": 0.1, f"junk{day}": 1.0})
                     for _ in range(20)])
        book.ingest(predictions([float(i) for i in range(500)], wall()))
    book.ingest([Features(ts=wall() + 30 * DAY, values={"f0": 0.1})])  # far future
    book.ingest(predictions([1.0], wall() - 90 * DAY))  # far past
    memory = monitor.memory()
    # 5 days of one 2-bin histogram; unknown features are counted, not stored.
    assert memory["psi_days"] == 5 and memory["psi_counters"] == 5 * 2
    # 31 days (today and the 30-day baseline) of at most 50 samples.
    assert memory["prediction_days"] == 31 and memory["prediction_samples"] == 31 * 50
    assert monitor.saved.prediction_days[39 + 19675].n == 500
    assert monitor.counters["unknown_feature"] == 40 * 20
    assert monitor.counters["future"] == 1 and monitor.counters["late"] == 1
    monitor.on_telemetry([cast(TelemetryEvent, Inference(ts=wall(), latency_s=0.1))
                          for _ in range(MAX_LATENCY_SAMPLES + 10)])
    assert monitor.memory()["latency_samples"] == MAX_LATENCY_SAMPLES


def test_config_defaults_are_the_seeds_numbers() -> None:
    cfg = ModelMonitorConfig()
    assert (cfg.psi_threshold, cfg.top_n, cfg.disable_top, cfg.psi_window_days,
            cfg.retire_days, cfg.retire_drifts, cfg.psi_clear) == (0.25, 10, 3, 5, 90, 2, 0.15)
    assert (cfg.ks_threshold, cfg.ks_interval_s, cfg.ks_baseline_days) == (0.15, 3600, 30)
    assert (cfg.churn_top, cfg.churn_changes, cfg.churn_interval_s) == (5, 2, 7 * DAY)
    assert (cfg.liveness_interval_s, cfg.liveness_failures, cfg.liveness_window_s) == (
        30, 2, 60)
    assert (cfg.latency_interval_s, cfg.latency_percentile, cfg.latency_fraction,
            cfg.decay_horizon_s) == (60, 99, 0.5, 300)
    assert (cfg.queue_interval_s, cfg.queue_depth_max) == (60, 1000)


def test_config_decodes_as_the_model_section_and_errors_name_the_key() -> None:
    class File(msgspec.Struct, forbid_unknown_fields=True):
        model: ModelMonitorConfig = ModelMonitorConfig()

    cfg = msgspec.toml.decode(b'[model]\nhealthz_url = "http://w/healthz"\n', type=File).model
    assert cfg.healthz_url == "http://w/healthz"
    for text, message in [
        (b"[model]\npsi_treshold = 0.3\n", "Object contains unknown field `psi_treshold`"),
        (b"[model]\npsi_clear = 0.3\n", "psi_clear (0.3) must be <= psi_threshold (0.25)"),
        (b'[model]\ndrift_at = "25:00"\n', "drift_at must be 'HH:MM' (UTC), got '25:00'"),
        (b"[model]\nliveness_timeout_s = 30\n",
         "liveness_timeout_s must be < liveness_interval_s"),
    ]:
        with pytest.raises(msgspec.ValidationError) as info:
            msgspec.toml.decode(text, type=File)
        assert str(info.value) == f"{message} - at `$.model`"


async def test_status_is_json_and_shows_every_monitor(
    tmp_path: Path, autojump_clock: trio.abc.Clock,
) -> None:
    monitor, book, _ = make(config(tmp_path))
    feed_features(book, {})
    await monitor.check_drift()
    status = json.loads(msgspec.json.encode(monitor.status()))
    assert set(status["monitors"]) == {"feature_psi", "prediction_ks", "importance_churn",
                                       "worker_liveness", "inference_latency", "queue_depth"}
    for row in status["monitors"].values():
        assert {"value", "threshold", "last_run", "verdict"} <= set(row)
    assert status["monitors"]["feature_psi"]["verdict"] == "ok"
    assert status["monitors"]["worker_liveness"]["verdict"] == "off"  # no healthz_url
    assert status["monitors"]["inference_latency"]["threshold"] == 150.0
    assert status["blocked"] is None and status["disabled"] is False
    assert status["retire"] is False and status["model_hash"] == HASH
