"""Model monitors (playbook 02 feature-drift; playbook 04 model and infra layers; playbook 05 D2,
W1).

Six of the playbook 04 monitors, one actor (``model``, not critical: a blind model monitor
degrades nothing by itself; the supervisor's actor-failure P1 covers it):

- **Feature PSI vs training** (daily, and on demand: ``check_drift``). The training
  reference (``reference`` file) gives per feature its bins and proportions, or a sample
  binned at its deciles; ``features`` telemetry is counted into the same bins, per UTC
  day, over the last ``psi_window_days`` days (playbook 02: "rolling 5-day live
  distribution"). PSI above 0.25 on a top-10 feature reports feature-drift (a P1: the
  runtime throttles to 25%); above it on a top-3 feature also disables the model
  (``disabled``); a second drift episode on the same model within 90 days marks it
  "retire" (playbook 02 postmortem).
- **Prediction distribution** (hourly): two-sample Kolmogorov-Smirnov statistic of
  today's predictions against the 30 days before, from capped daily samples; above
  0.15 a QUEUE alert.
- **Feature-importance churn** (weekly): the top-5 set of the ``importance`` file
  against the one a week before; 2 or more features changed: a QUEUE alert.
- **Inference worker liveness** (every 30 s): ``GET healthz_url`` must answer 200 with
  ``{"model_hash": ...}``; 2 failures in 60 s page. A hash other than the registry's
  pinned production version sets ``blocked`` (gate D2 "Mismatch blocks trading") and
  pages.
- **Inference latency** (every minute): p99 of ``inference`` telemetry over the last
  minute above 50% of ``decay_horizon_s`` pages.
- **Job queue depth** (every minute): the newest ``queue`` telemetry depth above 1000:
  a QUEUE alert.

Each alert is raised once per episode and re-armed when its metric is back within the
threshold. Telemetry is handled synchronously in ``on_telemetry`` (O(1) an event, never
raises); memory is bounded by the reference's features x bins x days, the capped
prediction samples, and the capped latency buffer, whatever the engine sends. Files
are small and read in place (as the risk actor's limits file); the state file (drift
registry, disabled and retired models, the windows) is written atomically from a
worker thread. Cancelling ``run`` loses nothing that was saved.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, cast

import httpx
import msgspec
import numpy as np
import numpy.typing as npt
import trio

from supervisor.core.errors import ConfigError
from supervisor.core.protocol import (
    Features,
    Inference,
    Model,
    Prediction,
    QueueDepth,
    TelemetryEvent,
)
from supervisor.core.tomlconf import decode_toml
from supervisor.files import write_atomic

from ._files import read_config_file
from .base import AlertRaised, Finding, Report

__all__ = [
    "Inference",
    "ModelMonitor",
    "ModelMonitorConfig",
    "QueueDepth",
    "Reference",
    "ks_statistic",
    "load_importance",
    "load_reference",
    "psi",
]

log = logging.getLogger("desk.model")

DAY_S = 86_400
# An empty bin's proportion is floored here before the log: ln(0) would be -inf, and
# one empty bin would make every PSI infinite. 1e-4 is 0.01% of the values: an empty
# live bin against a training bin of p adds (p - 1e-4) * ln(p / 1e-4), large but finite.
PSI_EPSILON = 1e-4
# At most this many drift episodes are kept in the registry (status and state file).
MAX_DRIFTS = 200
# At most this many latency samples are held (the newest win): a flood of inference
# telemetry cannot grow memory; at 100k samples a minute the p99 is still exact.
MAX_LATENCY_SAMPLES = 100_000
# Days kept beyond the window: a feature or prediction stamped up to a day ahead of our
# clock (a skewed engine clock) is counted; further ahead it is ignored and counted.
_AHEAD_DAYS = 1


# --- configuration ------------------------------------------------------------------------


class ModelMonitorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[model]`` section (playbook 02 feature-drift; playbook 04 model monitors;
    playbook 05 D2)."""

    # Feature PSI vs training. Path of the training reference (TOML, or JSON if it ends
    # in .json; docs/monitors-model.md); empty: the PSI monitor is off.
    reference: str = ""
    # The model's most important features, most important first; empty: ranked from the
    # importance file; both empty: every reference feature counts, none can disable.
    top_features: list[str] = []
    # Path of the feature-importance file (TOML or JSON): the ranking for the top-10 and
    # the weekly churn check; empty: no churn check.
    importance: str = ""
    psi_threshold: float = 0.25  # playbook 02 feature-drift / playbook 04: "PSI > 0.25"
    top_n: int = 10  # playbook 02 / playbook 04: "on any top-10 feature"
    disable_top: int = 3  # playbook 02: "Disable any model whose top-3 features show PSI > 0.25"
    psi_window_days: int = 5  # playbook 02: "rolling 5-day live distribution"
    retire_days: float = 90.0  # playbook 02 postmortem: "2nd drift on the same model in 90 days"
    retire_drifts: int = 2  # playbook 02 postmortem: "the 2nd drift ... the model retires"
    # playbook 01 drift-investigation verify: "PSI returns under 0.15": a drift episode ends,
    # and a disabled model is enabled again, only once every PSI is under this.
    psi_clear: float = 0.15
    psi_epsilon: float = PSI_EPSILON  # floor of an empty bin's proportion (see PSI_EPSILON)
    psi_bins: int = 10  # a reference sample is binned at its deciles (PSI's usual 10 bins)
    # Fewer live values of a feature in the window: its PSI is not evaluated (ours).
    psi_min_count: int = 100
    # playbook 04 "daily": the UTC time of the daily run, "HH:MM". The playbook gives no time:
    # after the US equity close (16:00 New York is 20:00 or 21:00 UTC), so the day's
    # session is in the window.
    drift_at: str = "21:00"

    # Prediction distribution.
    ks_threshold: float = 0.15  # playbook 04: "KS-stat vs. baseline > 0.15"
    ks_interval_s: float = 3600.0  # playbook 04: "hourly"
    ks_baseline_days: int = 30  # playbook 04: "a rolling 30-day baseline"
    # Predictions kept a day (a uniform reservoir sample): 30 days x 2000 = 60k floats.
    # At 2000 vs 2000 values the KS noise (~0.04) is well below 0.15.
    ks_day_samples: int = 2000
    ks_min_samples: int = 100  # fewer today or in the baseline: not evaluated (ours)

    # Feature-importance churn.
    churn_top: int = 5  # playbook 04: "Top-5 set changes by >= 2 features"
    churn_changes: int = 2  # playbook 04: "changes by >= 2 features"
    churn_interval_s: float = 7 * DAY_S  # playbook 04: "weekly"

    # Inference worker liveness; empty healthz_url: off.
    healthz_url: str = ""
    liveness_interval_s: float = 30.0  # playbook 04: "every 30s"
    liveness_failures: int = 2  # playbook 04: "Healthcheck fails 2x in 60s"
    liveness_window_s: float = 60.0  # playbook 04: "2x in 60s"
    liveness_timeout_s: float = 5.0  # a slower answer is a failure (ours)
    # playbook 05 D2: "Model_hash matches the registry's pinned production version". A
    # value, or a file (the registry's production tag: the hash alone, or TOML/JSON
    # with a model_hash key) re-read at every check; the value wins; neither: D2 off.
    pinned_model_hash: str = ""
    pinned_model_file: str = ""

    # Inference latency.
    latency_interval_s: float = 60.0  # playbook 04: "every 1m"
    latency_window_s: float = 60.0  # the p99 is over the last minute's calls
    latency_percentile: float = 99.0  # playbook 04: "p99 is the right percentile here"
    latency_fraction: float = 0.5  # playbook 04: "p99 > 50% of decay horizon"
    # playbook 04: "A signal decaying in 5 minutes must reach the broker in well under 2.5
    # minutes including inference": the model's signal decay horizon.
    decay_horizon_s: float = 300.0

    # Job queue depth.
    queue_interval_s: float = 60.0  # playbook 04: "every 1m"
    queue_depth_max: int = 1000  # playbook 04: "> 1000 unprocessed"

    def __post_init__(self) -> None:
        for key in ("psi_threshold", "psi_clear", "psi_epsilon", "retire_days",
                    "ks_threshold", "ks_interval_s", "churn_interval_s",
                    "liveness_interval_s", "liveness_window_s", "liveness_timeout_s",
                    "latency_interval_s", "latency_window_s", "latency_fraction",
                    "decay_horizon_s", "queue_interval_s"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{key} must be a finite number > 0, got {value}")
        for key in ("top_n", "disable_top", "psi_window_days", "retire_drifts", "psi_bins",
                    "psi_min_count", "ks_baseline_days", "ks_day_samples", "ks_min_samples",
                    "churn_top", "churn_changes", "liveness_failures", "queue_depth_max"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1")
        if self.psi_bins < 2:
            raise ValueError("psi_bins must be >= 2")
        if self.disable_top > self.top_n:
            raise ValueError(f"disable_top ({self.disable_top}) must be <= top_n ({self.top_n})")
        if self.psi_clear > self.psi_threshold:
            raise ValueError(f"psi_clear ({self.psi_clear}) must be <= psi_threshold "
                             f"({self.psi_threshold})")
        if self.psi_epsilon >= 0.01:
            raise ValueError("psi_epsilon must be < 0.01")
        if self.churn_changes > self.churn_top:
            raise ValueError("churn_changes must be <= churn_top")
        if self.liveness_timeout_s >= self.liveness_interval_s:
            raise ValueError("liveness_timeout_s must be < liveness_interval_s")
        if not 0 < self.latency_percentile <= 100:
            raise ValueError("latency_percentile must be in (0, 100]")
        if self.healthz_url and not self.healthz_url.startswith(("http://", "https://")):
            raise ValueError(f"healthz_url must be an http:// or https:// URL, got "
                             f"{self.healthz_url!r}")
        if len(set(self.top_features)) != len(self.top_features) or "" in self.top_features:
            raise ValueError("top_features must be distinct, non-empty names")
        _hhmm(self.drift_at)


def _hhmm(text: str) -> int:
    """Seconds after 00:00 of ``"HH:MM"``."""
    hh, sep, mm = text.partition(":")
    if not (sep and len(hh) in (1, 2) and len(mm) == 2 and (hh + mm).isascii()
            and (hh + mm).isdigit() and int(hh) < 24 and int(mm) < 60):
        raise ValueError(f"drift_at must be 'HH:MM' (UTC), got {text!r}")
    return int(hh) * 3600 + int(mm) * 60


# --- the statistics (pure) ----------------------------------------------------------------


def psi(expected: npt.ArrayLike, actual: npt.ArrayLike, *,
        epsilon: float = PSI_EPSILON) -> float:
    """Population Stability Index, sum of ``(a - e) * ln(a / e)`` over the bins.

    ``expected`` (training) and ``actual`` (live) are counts or proportions of the same
    bins; each is normalised to sum to 1, then floored at ``epsilon`` so that an empty
    bin gives a large finite term instead of an infinity.

    Raises:
        ValueError: different bin counts, a negative or non-finite entry, or all zero.
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 1 or e.size < 2:
        raise ValueError(f"psi needs two 1-d arrays of the same >= 2 bins, got shapes "
                         f"{e.shape} and {a.shape}")
    for name, arr in (("expected", e), ("actual", a)):
        if not np.all(np.isfinite(arr)) or np.any(arr < 0) or not arr.sum() > 0:
            raise ValueError(f"psi: {name} must be finite, >= 0 and not all zero")
    e = np.maximum(e / e.sum(), epsilon)
    a = np.maximum(a / a.sum(), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_statistic(a: npt.ArrayLike, b: npt.ArrayLike,
                 b_weights: npt.ArrayLike | None = None) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs.

    Without ``b_weights`` the gap is computed on integer counts (one division at the
    end), so a statistic of exactly 0.15 compares equal to 0.15, never just above it.
    ``b_weights`` weighs each value of ``b`` (a capped day's sample stands for all of
    that day's predictions).

    Raises:
        ValueError: an empty or non-finite sample, or weights not matching ``b``.
    """
    x = np.sort(np.asarray(a, dtype=np.float64))
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1 or x.size == 0 or y.size == 0:
        raise ValueError("ks_statistic needs two non-empty 1-d samples")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("ks_statistic: samples must be finite")
    points = np.concatenate([x, y])
    fx = np.searchsorted(x, points, side="right")
    if b_weights is None:
        y = np.sort(y)
        fy = np.searchsorted(y, points, side="right")
        n, m = x.size, y.size
        return float(np.max(np.abs(fx * m - fy * n)) / (n * m))
    w = np.asarray(b_weights, dtype=np.float64)
    if w.shape != y.shape or not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError("ks_statistic: b_weights must be finite, >= 0, one per value of b")
    order = np.argsort(y, kind="stable")
    y, cw = y[order], np.cumsum(w[order]) / w.sum()
    idx = np.searchsorted(y, points, side="right")
    fy_w = np.where(idx > 0, cw[np.maximum(idx - 1, 0)], 0.0)
    return float(np.max(np.abs(fx / x.size - fy_w)))


# --- the reference and importance files ------------------------------------------------------


class FeatureReference(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One feature's training distribution: ``edges`` + ``proportions``, or a ``sample``."""

    edges: list[float] | None = None
    proportions: list[float] | None = None
    sample: list[float] | None = None
    bins: int | None = None  # a sample's bin count; default ModelMonitorConfig.psi_bins

    def __post_init__(self) -> None:
        if self.sample is not None:
            if self.edges is not None or self.proportions is not None:
                raise ValueError("give either sample, or edges and proportions, not both")
            if not all(math.isfinite(v) for v in self.sample):
                raise ValueError("sample values must be finite numbers")
            if self.bins is not None and self.bins < 2:
                raise ValueError(f"bins must be >= 2, got {self.bins}")
            return
        if self.edges is None or self.proportions is None:
            raise ValueError("give edges and proportions, or a sample")
        if self.bins is not None:
            raise ValueError("bins goes with a sample only (edges already define the bins)")
        k = len(self.proportions)
        if k < 2 or len(self.edges) != k + 1:
            raise ValueError(f"need >= 2 bins and one more edge than proportions, got "
                             f"{len(self.edges)} edges and {k} proportions")
        if any(math.isnan(v) for v in self.edges) or any(
                b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("edges must be strictly increasing numbers")
        if not all(math.isfinite(p) and p >= 0 for p in self.proportions):
            raise ValueError("proportions must be finite numbers >= 0")
        if abs(sum(self.proportions) - 1.0) > 1e-3:
            raise ValueError(f"proportions must sum to 1, got {sum(self.proportions):.6g}")


class _ReferenceFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    features: dict[str, Any]
    model_hash: str | None = None  # the model this training reference belongs to


class _Bins(msgspec.Struct, frozen=True):
    inner: list[float]  # a value v falls in bin bisect_right(inner, v)
    expected: list[float]  # training proportions, one per bin


class Reference(msgspec.Struct, frozen=True, kw_only=True):
    """A decoded reference: per feature, the bins and their training proportions."""

    features: dict[str, _Bins]
    model_hash: str | None
    sha256: str


_T = TypeVar("_T")


def _decode(data: bytes, source: str, type_: type[_T]) -> _T:
    if not source.endswith(".json"):
        return decode_toml(data, type_, source=source)
    try:
        return msgspec.json.decode(data, type=type_)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON: {exc}") from exc


def parse_reference(data: bytes, *, source: str = "<reference>",
                    bins: int = 10) -> Reference:
    """Decode a training reference (TOML, or JSON when ``source`` ends in .json).

    Raises:
        ConfigError: naming the file, the feature and what was expected.
    """
    raw = _decode(data, source, _ReferenceFile)
    if not raw.features:
        raise ConfigError(f"{source}: features: give at least one feature")
    out: dict[str, _Bins] = {}
    for name, value in raw.features.items():
        try:
            ref = msgspec.convert(value, FeatureReference)
            out[name] = _bins_of(ref, bins)
        except (msgspec.ValidationError, ValueError) as exc:
            raise ConfigError(f"{source}: features.{name}: {exc}") from exc
    return Reference(features=out, model_hash=raw.model_hash,
                     sha256=hashlib.sha256(data).hexdigest())


def _bins_of(ref: FeatureReference, default_bins: int) -> _Bins:
    if ref.sample is None:
        assert ref.edges is not None and ref.proportions is not None
        total = sum(ref.proportions)
        # The outer bins reach -inf and +inf: a live value outside the training range
        # counts in the first or last bin, so it moves the PSI rather than vanishing.
        return _Bins(inner=list(ref.edges[1:-1]), expected=[p / total for p in ref.proportions])
    sample = np.asarray(ref.sample, dtype=np.float64)
    k = ref.bins or default_bins
    inner = np.unique(np.quantile(sample, np.arange(1, k) / k))
    inner = inner[inner > sample.min()]  # a cut at the minimum would leave bin 0 empty
    if inner.size == 0:
        raise ValueError("sample needs at least 2 distinct values")
    counts = np.bincount(np.searchsorted(inner, sample, side="right"), minlength=inner.size + 1)
    return _Bins(inner=inner.tolist(), expected=(counts / counts.sum()).tolist())


def load_reference(path: str, *, bins: int = 10) -> Reference:
    """Read and decode the reference file at ``path`` (ConfigError if unusable)."""
    return parse_reference(read_config_file(path, "reference"), source=path, bins=bins)


class _ImportanceFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    importance: dict[str, Any]


def parse_importance(data: bytes, *, source: str = "<importance>") -> list[str]:
    """Decode an importance file: the features ranked, most important first (ties by
    name).

    Raises:
        ConfigError: naming the file, the feature and what was expected.
    """
    raw = _decode(data, source, _ImportanceFile)
    if not raw.importance:
        raise ConfigError(f"{source}: importance: give at least one feature")
    scores: dict[str, float] = {}
    for name, value in raw.importance.items():
        try:
            score = msgspec.convert(value, float)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{source}: importance.{name}: {exc}") from exc
        if not math.isfinite(score):
            raise ConfigError(f"{source}: importance.{name}: must be a finite number")
        scores[name] = score
    return sorted(scores, key=lambda n: (-scores[n], n))


def load_importance(path: str) -> list[str]:
    """Read and decode the importance file at ``path`` (ConfigError if unusable)."""
    return parse_importance(read_config_file(path, "importance"), source=path)


class _PinnedFile(msgspec.Struct, frozen=True):
    model_hash: Annotated[str, msgspec.Meta(min_length=1)]


def load_pinned(path: str) -> str:
    """The registry's pinned production model_hash: the file's text, or the
    ``model_hash`` key of a .json or .toml file."""
    data = read_config_file(path, "pinned model")
    if path.endswith((".json", ".toml")):
        return _decode(data, path, _PinnedFile).model_hash
    text = data.decode("utf-8", "replace").strip()
    if not text or len(text.split()) != 1:
        raise ConfigError(f"{path}: must hold one model_hash, got {text[:80]!r}")
    return text


class _Health(msgspec.Struct, frozen=True):
    model_hash: Annotated[str, msgspec.Meta(min_length=1)]


# --- what is kept and saved -------------------------------------------------------------


class DriftEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One drift episode in the registry (playbook 02 postmortem "Add the drift event to the
    model registry")."""

    model_hash: str
    at: float  # epoch seconds the episode was first found
    features: list[str]  # the top features over the threshold then
    max_psi: float


class _Day(msgspec.Struct, kw_only=True):
    """One UTC day of predictions: how many, and a uniform sample of at most the cap."""

    n: int = 0
    sample: list[float] = []


class _Saved(msgspec.Struct, kw_only=True):
    """The state file: what must survive a restart (90 days of drifts, disabled models)."""

    drifts: list[DriftEvent] = []
    open_drift: dict[str, float] = {}  # model_hash -> start of its open drift episode
    disabled: dict[str, str] = {}  # model_hash -> why
    retire: dict[str, str] = {}  # model_hash -> why
    top5: list[str] | None = None
    top5_at: float | None = None
    reference_sha256: str | None = None
    psi_days: dict[int, dict[str, list[int]]] = {}
    prediction_days: dict[int, _Day] = {}


class MonitorState(msgspec.Struct, kw_only=True):
    """What ``status`` shows of one monitor."""

    metric: str
    threshold: float
    rule: str
    channel: str
    every: str
    seed: str
    value: float | None = None
    last_run: float | None = None  # epoch seconds
    verdict: Literal["pending", "ok", "alert", "no-data", "error", "off"] = "pending"
    detail: str = ""


# The playbook 04 table rows of this actor: key -> (metric, rule, channel, frequency, seed).
MONITORS: dict[str, tuple[str, str, str, str, str]] = {
    "feature_psi": ("Feature PSI vs training", "PSI > {} on any top-10 feature",
                    "incident feature-drift P1 (playbook 04: SLACK)", "daily",
                    "playbook 02 feature-drift; playbook 04; playbook 05 W1"),
    "prediction_ks": ("Prediction distribution", "KS-stat vs. 30-day baseline > {}",
                      "QUEUE", "hourly", "playbook 04 model layer"),
    "importance_churn": ("Feature-importance churn", "top-5 set changes by >= {} features",
                         "QUEUE", "weekly", "playbook 04 model layer"),
    "worker_liveness": ("Inference worker liveness", "healthcheck fails {}x in 60s",
                        "PAGE", "every 30s", "playbook 04 infra layer; playbook 05 D2"),
    "inference_latency": ("Inference latency", "p99 > {} s (50% of decay horizon)",
                          "PAGE", "every 1m", "playbook 04 model layer"),
    "queue_depth": ("Job queue depth", "> {} unprocessed", "QUEUE", "every 1m",
                    "playbook 04 infra layer"),
}


def _day(ts: float) -> int:
    return math.floor(ts / DAY_S)


def _num(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".") if value == value else "nan"


# --- the actor ----------------------------------------------------------------------------


class ModelMonitor:
    """Watches the live model against its training and its pinned release."""

    name = "model"
    critical = False

    def __init__(
        self,
        config: ModelMonitorConfig,
        report: Callable[[Report], Awaitable[None]],
        *,
        wall_clock: Callable[[], float],
        model_hash: str | None = None,
        state_path: str | Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``model_hash``: the engine's model until ``model`` telemetry says (the
        ``[engine]`` value); ``state_path``: the state file (None: memory only);
        ``transport``: an httpx transport for the health check (None: the network)."""
        self.config = config
        self.report = report
        self.wall = wall_clock
        self.state_path = None if state_path is None else Path(state_path)
        self.transport = transport
        self._engine_hash = model_hash
        self._telemetry_hash: str | None = None
        self.healthz_hash: str | None = None  # what /healthz reported last
        self.reference: Reference | None = None
        self.reference_error: str | None = None
        self.ranking: list[str] | None = None  # from the importance file
        self.importance_error: str | None = None
        self.saved = _Saved()
        self.blocked: str | None = None  # gate D2: why trading is blocked, or None
        # The registry pin: the configured one from the start (a pinned file is read at
        # the first /healthz check).
        self.pinned: str | None = config.pinned_model_hash or None
        self.pinned_error: str | None = None
        self.last_psi: dict[str, float | None] = {}
        self.counters = dict.fromkeys(
            ("unknown_feature", "invalid", "late", "future", "errors"), 0)
        thresholds = {
            "feature_psi": config.psi_threshold, "prediction_ks": config.ks_threshold,
            "importance_churn": config.churn_changes,
            "worker_liveness": config.liveness_failures,
            "inference_latency": config.latency_fraction * config.decay_horizon_s,
            "queue_depth": config.queue_depth_max}
        self.monitors = {
            key: MonitorState(metric=metric, rule=rule.format(_num(thresholds[key])),
                              channel=channel, every=every, seed=seed,
                              threshold=thresholds[key])
            for key, (metric, rule, channel, every, seed) in MONITORS.items()}
        self._latencies: deque[tuple[float, float]] = deque(maxlen=MAX_LATENCY_SAMPLES)
        self._queue: tuple[float, int] | None = None  # newest (ts, depth)
        self._failures: deque[float] = deque()  # trio times of failed health checks
        self._alerted: set[str] = set()  # monitors whose alert is out this episode
        self._drift_lock = trio.Lock()
        self._client: httpx.AsyncClient | None = None
        self._saved_day: int | None = None
        # The predictions' reservoir sampling; seeded, so a replay keeps the same sample.
        self._rng = random.Random(0)
        self.state_error: str | None = None
        self.save_error: str | None = None
        for key, on in (("feature_psi", config.reference), ("importance_churn", config.importance),
                        ("worker_liveness", config.healthz_url)):
            if not on:
                self.monitors[key].verdict = "off"

    # --- what the gate and status read ---------------------------------------------------

    @property
    def model_hash(self) -> str:
        """The live model: ``model`` telemetry, else the configured one, else /healthz's."""
        return self._telemetry_hash or self._engine_hash or self.healthz_hash or "unknown"

    @property
    def disabled(self) -> bool:
        """playbook 02 feature-drift: the live model's top-3 features drifted: disabled."""
        return self.model_hash in self.saved.disabled

    @property
    def disabled_reason(self) -> str | None:
        return self.saved.disabled.get(self.model_hash)

    @property
    def retire(self) -> str | None:
        """Why the live model is to retire (playbook 02 postmortem), or None."""
        return self.saved.retire.get(self.model_hash)

    def status(self) -> dict[str, object]:
        """What ``deskctl status`` shows (JSON-able)."""
        h = self.model_hash
        return {
            "model_hash": h,
            "pinned_model_hash": self.pinned,
            "healthz_model_hash": self.healthz_hash,
            "blocked": self.blocked,
            "disabled": self.disabled,
            "disabled_reason": self.disabled_reason,
            "retire": self.retire is not None,
            "retire_reason": self.retire,
            "drift_open_since": self.saved.open_drift.get(h),
            "drifts": [msgspec.to_builtins(d) for d in self.saved.drifts
                       if d.model_hash == h][-20:],
            "psi": dict(self.last_psi),
            "top_features": self.top_features(),
            "top5": self.saved.top5,
            "reference": None if self.reference is None else {
                "path": self.config.reference, "sha256": self.reference.sha256,
                "model_hash": self.reference.model_hash,
                "features": len(self.reference.features)},
            "errors": {k: v for k, v in (("reference", self.reference_error),
                                         ("importance", self.importance_error),
                                         ("pinned", self.pinned_error),
                                         ("state", self.state_error),
                                         ("save", self.save_error)) if v},
            "memory": self.memory(),
            "monitors": {k: msgspec.to_builtins(m) for k, m in self.monitors.items()},
            "ignored": dict(self.counters),
        }

    def memory(self) -> dict[str, int]:
        """What the windows hold: bounded by the reference, the caps and the day counts."""
        return {
            "psi_days": len(self.saved.psi_days),
            "psi_counters": sum(len(c) for b in self.saved.psi_days.values()
                                for c in b.values()),
            "prediction_days": len(self.saved.prediction_days),
            "prediction_samples": sum(len(d.sample)
                                      for d in self.saved.prediction_days.values()),
            "latency_samples": len(self._latencies),
        }

    def top_features(self) -> list[str]:
        """The top-10 (``top_n``) features, most important first."""
        cfg = self.config
        if cfg.top_features:
            return list(cfg.top_features[:cfg.top_n])
        if self.ranking is not None:
            return self.ranking[:cfg.top_n]
        return sorted(self.reference.features) if self.reference is not None else []

    def _ranked(self) -> bool:
        return bool(self.config.top_features) or self.ranking is not None

    # --- telemetry (sync, from Book.subscribe) ---------------------------------------------

    def on_telemetry(self, events: Sequence[TelemetryEvent]) -> None:
        """Count features, predictions, latencies and queue depths. Never raises."""
        today: int | None = None
        failed: Exception | None = None
        for ev in events:
            try:
                match ev:
                    case Features():
                        if today is None:
                            today = _day(self.wall())
                        self._on_features(ev.ts, ev.values, today)
                    case Prediction():
                        if today is None:
                            today = _day(self.wall())
                        self._on_prediction(ev.ts, ev.value, today)
                    case Model():
                        self._telemetry_hash = ev.model_hash
                    case _:
                        # The two kinds this module adds (Inference, QueueDepth), matched
                        # by tag so that the copies in supervisor.core.protocol match too.
                        other = cast(Any, ev)
                        kind = type(other).__struct_config__.tag
                        if kind == "inference":
                            self._on_latency(float(other.ts), float(other.latency_s))
                        elif kind == "queue":
                            self._on_queue(float(other.ts), int(other.depth))
            except Exception as exc:  # a bug must not stop the book's other listeners
                self.counters["errors"] += 1
                failed = exc
        if failed is not None:
            log.error("model: telemetry event not applied", exc_info=failed)

    def _bucket_day(self, ts: float, today: int, keep_days: int) -> int | None:
        if not math.isfinite(ts):
            self.counters["invalid"] += 1
            return None
        day = _day(ts)
        if day > today + _AHEAD_DAYS:
            self.counters["future"] += 1
            return None
        if day <= today - keep_days:
            self.counters["late"] += 1
            return None
        return day

    def _on_features(self, ts: float, values: dict[str, float], today: int) -> None:
        ref = self.reference
        if ref is None:
            return
        day = self._bucket_day(ts, today, self.config.psi_window_days)
        if day is None:
            return
        days = self.saved.psi_days
        bucket = days.get(day)
        if bucket is None:
            bucket = days[day] = {}
            self._prune(days, today - self.config.psi_window_days)
        for name, value in values.items():
            bins = ref.features.get(name)
            if bins is None:
                self.counters["unknown_feature"] += 1
                continue
            if value != value:  # NaN: no bin
                self.counters["invalid"] += 1
                continue
            counts = bucket.get(name)
            if counts is None:
                counts = bucket[name] = [0] * len(bins.expected)
            counts[bisect.bisect_right(bins.inner, value)] += 1

    def _on_prediction(self, ts: float, value: float, today: int) -> None:
        if not math.isfinite(value):
            self.counters["invalid"] += 1
            return
        day = self._bucket_day(ts, today, self.config.ks_baseline_days + 1)
        if day is None:
            return
        days = self.saved.prediction_days
        d = days.get(day)
        if d is None:
            d = days[day] = _Day()
            self._prune(days, today - self.config.ks_baseline_days - 1)
        d.n += 1
        cap = self.config.ks_day_samples
        if len(d.sample) < cap:
            d.sample.append(value)
        else:
            # Reservoir sampling (Vitter's algorithm R): each of the day's n predictions
            # stays in the sample with probability cap / n.
            j = self._rng.randrange(d.n)
            if j < cap:
                d.sample[j] = value

    def _on_latency(self, ts: float, latency_s: float) -> None:
        if not (math.isfinite(ts) and math.isfinite(latency_s)):
            self.counters["invalid"] += 1
            return
        self._latencies.append((ts, latency_s))

    def _on_queue(self, ts: float, depth: int) -> None:
        if not math.isfinite(ts):
            self.counters["invalid"] += 1
            return
        if self._queue is None or ts >= self._queue[0]:
            self._queue = (ts, depth)

    @staticmethod
    def _prune(days: dict[int, Any], oldest_dropped: int) -> None:
        for old in [d for d in days if d <= oldest_dropped]:
            del days[old]

    # --- the loops -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the state, reference and importance files, then watch until cancelled;
        started once they are read (an unusable file is shown in status and alerted,
        and read again at the next check). The HTTP client is closed on the way out."""
        cfg = self.config
        self.load()
        client = httpx.AsyncClient(transport=self.transport, timeout=None) \
            if cfg.healthz_url else None
        self._client = client
        try:
            async with trio.open_nursery() as nursery:
                if cfg.reference:
                    nursery.start_soon(self._drift_loop)
                if cfg.importance:
                    nursery.start_soon(self._churn_loop)
                if cfg.healthz_url:
                    # At once: a dead worker is paged within a minute of start.
                    nursery.start_soon(self._every, self.check_liveness,
                                       cfg.liveness_interval_s, 0.0)
                # The others first after one interval of telemetry.
                for check, every in ((self.check_predictions, cfg.ks_interval_s),
                                     (self.check_latency, cfg.latency_interval_s),
                                     (self.check_queue, cfg.queue_interval_s)):
                    nursery.start_soon(self._every, check, every, every)
                task_status.started()
        finally:
            self._client = None
            if client is not None:
                with trio.move_on_after(1.0, shield=True):
                    await client.aclose()

    @staticmethod
    async def _every(check: Callable[[], Awaitable[object]], interval: float,
                     first: float) -> None:
        t0 = trio.current_time() + first
        while True:
            await trio.sleep_until(max(t0, trio.current_time()))
            await check()
            t0 += interval

    async def _drift_loop(self) -> None:
        at = _hhmm(self.config.drift_at)
        while True:
            now = self.wall()
            due = _day(now) * DAY_S + at
            if due <= now:
                due += DAY_S
            await trio.sleep(due - now)
            await self.check_drift()

    async def _churn_loop(self) -> None:
        while True:
            since = self.saved.top5_at
            if since is not None:
                await trio.sleep(max(0.0, since + self.config.churn_interval_s - self.wall()))
            await self.check_churn()
            if self.saved.top5_at == since:  # not taken (file unusable): retry in an hour
                await trio.sleep(3600.0)

    # --- files and the state file --------------------------------------------------------------

    def load(self) -> None:
        """Read the state file, the reference and the importance file (``run`` does it
        first; an unusable file is recorded in ``status`` and read again later)."""
        self._load_state()
        self._load_reference()
        self._load_importance()

    def _load_state(self) -> None:
        path = self.state_path
        if path is None or not path.exists():
            return
        try:
            self.saved = msgspec.json.decode(path.read_bytes(), type=_Saved)
        except (OSError, msgspec.DecodeError) as exc:
            # Never start as if nothing had drifted without saying so.
            log.error("model: state file %s unusable, starting empty: %s", path, exc)
            self.state_error = f"state file {path} unusable, started empty: {exc}"

    async def _save(self) -> None:
        path = self.state_path
        if path is None:
            return
        data = msgspec.json.encode(self.saved)
        try:
            await trio.to_thread.run_sync(write_atomic, path, data)
        except OSError as exc:
            self.save_error = f"cannot write state file {path}: {exc}"
            log.error("model: %s", self.save_error)
        else:
            self.save_error = None

    def _load_reference(self) -> None:
        if not self.config.reference:
            return
        try:
            ref = load_reference(self.config.reference, bins=self.config.psi_bins)
        except ConfigError as exc:
            self.reference_error = str(exc)
            log.error("model: %s", exc)
            return
        self.reference_error = None
        if ref.sha256 != self.saved.reference_sha256:
            # New bins: the counts in the old ones mean nothing against them.
            self.saved.psi_days = {}
            self.saved.reference_sha256 = ref.sha256
        self.reference = ref

    def _load_importance(self) -> list[str] | None:
        if not self.config.importance:
            return None
        try:
            self.ranking = load_importance(self.config.importance)
        except ConfigError as exc:
            self.importance_error = str(exc)
            log.error("model: %s", exc)
            return None
        self.importance_error = None
        return self.ranking

    async def _alert(self, key: str, channel: Literal["PAGE", "QUEUE"], scope: str,
                     summary: str, evidence: dict[str, object]) -> None:
        """Raise ``key``'s alert once per episode (``_rearm`` ends the episode)."""
        if key in self._alerted:
            return
        self._alerted.add(key)
        log.warning("model: %s", summary)
        await self.report(AlertRaised(actor=self.name, channel=channel, scope=scope,
                                      summary=summary, evidence=evidence))

    def _rearm(self, key: str) -> None:
        self._alerted.discard(key)

    def _mark(self, key: str, verdict: Literal["ok", "alert", "no-data", "error"] | None,
              value: float | None = None, detail: str = "") -> dict[str, object]:
        """Record a run of monitor ``key`` (None: it is off); its status row (JSON-able)."""
        m = self.monitors[key]
        if verdict is not None:
            m.verdict, m.value, m.last_run, m.detail = verdict, value, self.wall(), detail
        return cast("dict[str, object]", msgspec.to_builtins(m))

    # --- playbook 04 Feature PSI vs training; playbook 02 feature-drift ---------------------------

    async def check_drift(self) -> dict[str, object]:
        """The daily PSI check, on demand too (``deskctl``); returns the monitor's status.

        Re-reads the reference file. Reports feature-drift when a top-10 feature is over
        the threshold; sets ``disabled`` for a top-3 one; marks the model "retire" on
        its second drift episode within 90 days; saves the state file.
        """
        async with self._drift_lock:
            self._load_reference()
            if self.config.importance:
                self._load_importance()
            m = await self._check_drift()
            await self._save()
            return m

    async def _check_drift(self) -> dict[str, object]:
        cfg, key = self.config, "feature_psi"
        ref, h = self.reference, self.model_hash
        if not cfg.reference:
            return self._mark(key, None)
        if ref is None:
            why = self.reference_error or "no reference"
            await self._alert(key + ":file", "QUEUE", f"model:{h}",
                              f"model {h}: feature PSI not checked: {why}",
                              {"reference": cfg.reference})
            return self._mark(key, "error", None, why)
        self._rearm(key + ":file")
        if ref.model_hash is not None and h != "unknown" and ref.model_hash != h:
            why = (f"the reference is for model {ref.model_hash}, the live model is {h}: "
                   "give the live model's training reference")
            await self._alert(key + ":file", "QUEUE", f"model:{h}",
                              f"model {h}: feature PSI not checked: {why}",
                              {"reference": cfg.reference, "reference_model": ref.model_hash})
            return self._mark(key, "error", None, why)
        today = _day(self.wall())
        window = [d for d in sorted(self.saved.psi_days)
                  if today - cfg.psi_window_days < d <= today + _AHEAD_DAYS]
        values: dict[str, float | None] = {}
        counts: dict[str, int] = {}
        for name, bins in ref.features.items():
            live = np.zeros(len(bins.expected), dtype=np.int64)
            for d in window:
                c = self.saved.psi_days[d].get(name)
                if c is not None:
                    live += np.asarray(c, dtype=np.int64)
            counts[name] = int(live.sum())
            values[name] = (psi(bins.expected, live, epsilon=cfg.psi_epsilon)
                            if counts[name] >= cfg.psi_min_count else None)
        self.last_psi = values
        top = self.top_features()
        top3 = top[:cfg.disable_top] if self._ranked() else []
        thr = cfg.psi_threshold

        def over(names: list[str], limit: float) -> list[str]:
            return [n for n in names if (values.get(n) or 0.0) > limit]

        drifted, top3_over = over(top, thr), over(top3, thr)
        unevaluated = [n for n in top if values.get(n) is None]
        scored = [v for n in top if (v := values.get(n)) is not None]
        worst = max(scored) if scored else None
        if unevaluated:
            # playbook 02 containment: "missing field" is a pipeline cause; say it.
            await self._alert(
                key + ":missing", "QUEUE", f"model:{h}",
                f"model {h}: PSI not evaluated for top feature(s) {', '.join(unevaluated)}: "
                f"fewer than {cfg.psi_min_count} live values in {cfg.psi_window_days} days "
                "or no training reference (a missing field?)",
                {"features": unevaluated, "counts": {n: counts.get(n, 0) for n in unevaluated}})
        else:
            self._rearm(key + ":missing")
        if not drifted:
            self._end_episodes(h, values, top, top3)
            if not scored:
                return self._mark(key, "no-data", None,
                                  f"no top feature has {cfg.psi_min_count} live values")
            return self._mark(key, "ok", worst, self._drift_detail(h))
        return await self._drift_found(h, values, counts, top, drifted, top3_over, worst,
                                       window)

    def _end_episodes(self, h: str, values: dict[str, float | None], top: list[str],
                      top3: list[str]) -> None:
        clear = self.config.psi_clear

        scored = {n: v for n in top if (v := values.get(n)) is not None}
        # playbook 01 drift-investigation verify: "PSI returns under 0.15". The episode ends
        # on the features that could be scored (a missing one is queued on its own); a
        # disabled model is enabled again only on all three scored.
        if h in self.saved.open_drift and scored and all(v < clear for v in scored.values()):
            del self.saved.open_drift[h]
        if h in self.saved.disabled and top3 and all(
                n in scored and scored[n] < clear for n in top3):
            log.warning("model %s: top-3 PSI back under %s: enabled again", h, clear)
            del self.saved.disabled[h]

    def _drift_detail(self, h: str) -> str:
        parts = []
        if h in self.saved.open_drift:
            parts.append(f"drift episode open until every top PSI < {self.config.psi_clear:g}")
        if self.disabled:
            parts.append("disabled")
        if self.retire:
            parts.append("retire")
        return "; ".join(parts)

    async def _drift_found(self, h: str, values: dict[str, float | None],
                           counts: dict[str, int], top: list[str], drifted: list[str],
                           top3_over: list[str], worst: float | None,
                           window: list[int]) -> dict[str, object]:
        cfg, saved, now = self.config, self.saved, self.wall()
        thr = cfg.psi_threshold
        new_episode = h not in saved.open_drift
        if new_episode:
            saved.open_drift[h] = now
            saved.drifts.append(DriftEvent(model_hash=h, at=now, features=drifted,
                                           max_psi=worst or 0.0))
            del saved.drifts[:-MAX_DRIFTS]
        recent = [d.at for d in saved.drifts
                  if d.model_hash == h and d.at > now - cfg.retire_days * DAY_S]
        if new_episode and len(recent) >= cfg.retire_drifts and h not in saved.retire:
            saved.retire[h] = (f"drift #{len(recent)} within {cfg.retire_days:g} days: the "
                               "model retires on schedule rather than relaxing the threshold "
                               "(playbook 02 postmortem)")
        if top3_over and h not in saved.disabled:
            saved.disabled[h] = (f"top-{cfg.disable_top} feature(s) "
                                 f"{', '.join(top3_over)} PSI > {thr:g} "
                                 "(playbook 02 feature-drift)")
        listed = ", ".join(f"{n} {values[n]:.3f}" for n in drifted)
        summary = (f"model {h}: feature drift: PSI > {thr:g} on {len(drifted)} of the top-"
                   f"{len(top)} features ({listed}) over {len(window)} day(s): throttle; "
                   "investigate (drift-investigation)")
        if self.disabled:
            summary += f"; model disabled: {self.disabled_reason}"
        if self.retire:
            summary += f"; retire: {self.retire}"
        evidence: dict[str, object] = {
            "model_hash": h, "psi": values, "threshold": thr, "top_features": top,
            "drifted": drifted, "top3_over": top3_over, "counts": counts,
            "window_days": [_iso_day(d) for d in window],
            "disabled": self.disabled, "disabled_reason": self.disabled_reason,
            "retire": self.retire is not None, "retire_reason": self.retire,
            "recent_drifts": recent, "retire_days": cfg.retire_days,
            "episode_since": saved.open_drift[h],
            "new_episode": new_episode, "reference_sha256": saved.reference_sha256}
        log.warning("model: %s", summary)
        await self.report(Finding(actor=self.name, incident_class="feature-drift",
                                  scope=f"model:{h}", summary=summary, evidence=evidence))
        return self._mark("feature_psi", "alert", worst, self._drift_detail(h))

    # --- playbook 04 Prediction distribution ------------------------------------------------------

    async def check_predictions(self) -> dict[str, object]:
        """The hourly KS check of today's predictions against the 30 days before."""
        cfg, key, h = self.config, "prediction_ks", self.model_hash
        today = _day(self.wall())
        days = self.saved.prediction_days
        self._prune(days, today - cfg.ks_baseline_days - 1)
        if self._saved_day != today:  # a day closed: save the windows once a day
            self._saved_day = today
            await self._save()
        current = days.get(today)
        base = [days[d] for d in sorted(days) if today - cfg.ks_baseline_days <= d < today]
        base_n = sum(len(d.sample) for d in base)
        n = 0 if current is None else len(current.sample)
        if n < cfg.ks_min_samples or base_n < cfg.ks_min_samples:
            return self._mark(
                key, "no-data", None, f"today {n} predictions, baseline {base_n} over "
                f"{len(base)} day(s); needs {cfg.ks_min_samples} each")
        assert current is not None
        sample = np.concatenate([np.asarray(d.sample) for d in base])
        capped = any(d.n > len(d.sample) for d in base)
        weights = (np.concatenate([np.full(len(d.sample), d.n / len(d.sample)) for d in base])
                   if capped else None)
        stat = ks_statistic(current.sample, sample, weights)
        detail = (f"today {current.n} predictions vs {sum(d.n for d in base)} over "
                  f"{len(base)} day(s)")
        if stat > cfg.ks_threshold:
            await self._alert(
                key, "QUEUE", f"model:{h}",
                f"model {h}: prediction distribution drifted: KS {stat:.3f} > "
                f"{cfg.ks_threshold:g} against the {cfg.ks_baseline_days}-day baseline "
                "(the strongest early signal of edge decay)",
                {"ks": stat, "threshold": cfg.ks_threshold, "today": current.n,
                 "baseline": sum(d.n for d in base), "baseline_days": len(base)})
            return self._mark(key, "alert", stat, detail)
        self._rearm(key)
        return self._mark(key, "ok", stat, detail)

    # --- playbook 04 Feature-importance churn -----------------------------------------------------

    async def check_churn(self) -> dict[str, object]:
        """The weekly churn check: re-read the importance file and compare its top-5 set
        with the one taken a week before (the first read only takes it)."""
        cfg, key, h = self.config, "importance_churn", self.model_hash
        if not cfg.importance:
            return self._mark(key, None)
        ranking = self._load_importance()
        if ranking is None:
            why = self.importance_error or "no importance file"
            await self._alert(key + ":file", "QUEUE", f"model:{h}",
                              f"model {h}: importance churn not checked: {why}",
                              {"importance": cfg.importance})
            return self._mark(key, "error", None, why)
        self._rearm(key + ":file")
        new, old = ranking[:cfg.churn_top], self.saved.top5
        self.saved.top5, self.saved.top5_at = new, self.wall()
        if old is None:
            m = self._mark(key, "ok", None, f"baseline taken: {', '.join(new)}")
        else:
            gone, came = [f for f in old if f not in new], [f for f in new if f not in old]
            changes = max(len(gone), len(came))
            detail = f"out: {', '.join(gone) or '-'}; in: {', '.join(came) or '-'}"
            if changes >= cfg.churn_changes:
                m = self._mark(key, "alert", changes, detail)
                # Each weekly comparison is its own episode: no re-arming needed.
                await self.report(AlertRaised(
                    actor=self.name, channel="QUEUE", scope=f"model:{h}",
                    summary=(f"model {h}: feature-importance churn: the top-{cfg.churn_top} "
                             f"set changed by {changes} features ({detail}): decide "
                             "retrain or retire"),
                    evidence={"before": old, "after": new, "out": gone, "in": came,
                              "changes": changes, "threshold": cfg.churn_changes}))
            else:
                m = self._mark(key, "ok", changes, detail)
        await self._save()
        return m

    # --- playbook 04 Inference worker liveness; playbook 05 D2 ------------------------------------

    async def check_liveness(self) -> dict[str, object]:
        """One health check of the inference worker, and gate D2 against the pin."""
        cfg, key = self.config, "worker_liveness"
        if not cfg.healthz_url:
            return self._mark(key, None)
        t0 = trio.current_time()
        try:
            if self._client is not None:
                live = await self._healthz(self._client)
            else:  # on demand outside ``run``: a client for this check only
                async with httpx.AsyncClient(transport=self.transport, timeout=None) as c:
                    live = await self._healthz(c)
        except _HealthFailed as exc:
            failures = self._failures_in_window(t0, failed=True)
            if failures >= cfg.liveness_failures:
                await self._alert(
                    key, "PAGE", "inference-worker",
                    f"inference worker {cfg.healthz_url}: health check failed "
                    f"{failures} times in {cfg.liveness_window_s:g} s (last: {exc})",
                    {"url": cfg.healthz_url, "failures": failures,
                     "window_s": cfg.liveness_window_s, "last_error": str(exc)})
                return self._mark(key, "alert", failures, str(exc))
            return self._mark(key, "ok", failures, f"failed: {exc}")
        failures = self._failures_in_window(t0, failed=False)
        if failures < cfg.liveness_failures:
            self._rearm(key)
        self.healthz_hash = live
        await self._check_pinned(live)
        detail = f"model_hash {live}" + (f"; blocked: {self.blocked}" if self.blocked else "")
        return self._mark(key, "ok", failures, detail)

    def _failures_in_window(self, t0: float, *, failed: bool) -> int:
        # playbook 04: "Healthcheck fails 2x in 60s": failures, not only consecutive ones;
        # one exactly 60 s before another is not within 60 s of it.
        failures = self._failures
        if failed:
            failures.append(t0)
        while failures and failures[0] <= t0 - self.config.liveness_window_s:
            failures.popleft()
        return len(failures)

    async def _healthz(self, client: httpx.AsyncClient) -> str:
        url = self.config.healthz_url
        try:
            with trio.fail_after(self.config.liveness_timeout_s):
                response = await client.get(url)
        except trio.TooSlowError:
            raise _HealthFailed(
                f"no answer in {self.config.liveness_timeout_s:g} s") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise _HealthFailed(f"{type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise _HealthFailed(f"HTTP {response.status_code}")
        try:
            return msgspec.json.decode(response.content, type=_Health).model_hash
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise _HealthFailed(f"200 without a model_hash: {exc}") from None

    async def _check_pinned(self, live: str) -> None:
        cfg = self.config
        pinned = cfg.pinned_model_hash or None
        if pinned is None and cfg.pinned_model_file:
            try:
                pinned = load_pinned(cfg.pinned_model_file)
                self.pinned_error = None
                self._rearm("pinned:file")
            except ConfigError as exc:
                # The last pin read stays in force; D2 cannot be re-verified: say so.
                self.pinned_error = str(exc)
                pinned = self.pinned
                await self._alert("pinned:file", "QUEUE", "gate:D2",
                                  f"gate D2 not verified: {exc}", {"file": cfg.pinned_model_file})
        self.pinned = pinned
        if pinned is None or live == pinned:
            if self.blocked is not None:
                log.warning("model: /healthz reports the pinned model_hash %s again", live)
            self.blocked = None
            self._rearm("pinned")
            return
        self.blocked = (f"live model_hash {live} at {cfg.healthz_url} is not the registry's "
                        f"pinned production version {pinned} (gate D2)")
        await self._alert("pinned", "PAGE", "gate:D2",
                          f"trading blocked: {self.blocked}: roll back, or pin the release "
                          "(rolling-deploy verify)",
                          {"live": live, "pinned": pinned, "url": cfg.healthz_url})

    # --- playbook 04 Inference latency; Job queue depth -------------------------------------------

    async def check_latency(self) -> dict[str, object]:
        """p99 inference latency over the last ``latency_window_s`` against half the decay
        horizon."""
        cfg, key = self.config, "inference_latency"
        horizon = self.wall() - cfg.latency_window_s
        lat = self._latencies
        while lat and lat[0][0] <= horizon:
            lat.popleft()
        samples = [x for ts, x in lat if ts > horizon]
        limit = cfg.latency_fraction * cfg.decay_horizon_s
        if not samples:
            self._rearm(key)
            return self._mark(key, "no-data", None, "no inference telemetry in the window")
        p = float(np.percentile(np.asarray(samples), cfg.latency_percentile))
        detail = f"{len(samples)} calls in {cfg.latency_window_s:g} s"
        if p > limit:
            await self._alert(
                key, "PAGE", "inference-latency",
                f"inference latency p{cfg.latency_percentile:g} {p:.3f} s > {limit:g} s "
                f"({cfg.latency_fraction:.0%} of the {cfg.decay_horizon_s:g} s decay "
                "horizon): signals reach the broker too late",
                {"p99_s": p, "threshold_s": limit, "decay_horizon_s": cfg.decay_horizon_s,
                 "calls": len(samples)})
            return self._mark(key, "alert", p, detail)
        self._rearm(key)
        return self._mark(key, "ok", p, detail)

    async def check_queue(self) -> dict[str, object]:
        """The newest job-queue depth against ``queue_depth_max``."""
        cfg, key = self.config, "queue_depth"
        if self._queue is None:
            self._rearm(key)
            return self._mark(key, "no-data", None, "no queue telemetry yet")
        ts, depth = self._queue
        detail = f"at {ts:.0f}"
        if depth > cfg.queue_depth_max:
            await self._alert(
                key, "QUEUE", "job-queue",
                f"job queue depth {depth} > {cfg.queue_depth_max} unprocessed: a worker "
                "may be wedged", {"depth": depth, "threshold": cfg.queue_depth_max, "ts": ts})
            return self._mark(key, "alert", depth, detail)
        self._rearm(key)
        return self._mark(key, "ok", depth, detail)


class _HealthFailed(Exception):
    """One failed health check (internal: counted, never raised out of the actor)."""


def _iso_day(day: int) -> str:
    import datetime as dt

    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()
