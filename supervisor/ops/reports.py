"""Report data series for ``deskctl report`` (docs/alerts.md, "Plots"), built from the live Desk.

The daemon returns only numbers over the control socket (``{"cmd": "report", ...}``);
deskctl draws them client-side (``supervisor/ops/plots.py``, the optional ``plots`` extra), so
the daemon never needs matplotlib.

- ``pnl_band``: per trading day of the backtest (and of the live run), the band the PnL
  monitor judges against (its ``band_percentile``, the median, ``100 - band_percentile``)
  and the live cumulative PnL (None on a day without live PnL yet; today's value is the
  day so far).
- ``drift``: one feature's training proportions per bin (the reference), the live
  proportions over the monitor's rolling PSI window, and their PSI (None under
  ``psi_min_count`` live values, as in the daily check). ``edges`` are the inner cut
  points; the first and last bins are open (-inf and +inf), as the monitor bins them.

Either returns ``{"error": message, "code": "bad_request" | "not_found"}`` when it cannot
be built (the monitor not configured, its file unusable, an unknown feature).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from actors.model import _AHEAD_DAYS, _day, psi
from actors.pnl import DAY_S, _pkey

if TYPE_CHECKING:
    from supervisor.runtime.desk import Desk

__all__ = ["drift", "pnl_band"]


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": message, "code": code}


def pnl_band(desk: Desk) -> dict[str, Any]:
    """Cumulative live PnL against the backtest band, one entry per trading day."""
    mon = desk.pnl
    cfg = mon.config
    if not cfg.backtest:
        return _error("bad_request", "pnl-band: no backtest file configured ([pnl] backtest): "
                                     "the band is not evaluated")
    if mon.backtest_error is not None:
        return _error("bad_request", f"pnl-band: {mon.backtest_error}")
    if mon._backtest is None:
        return _error("bad_request", f"pnl-band: the backtest file {cfg.backtest} is not "
                                     "loaded yet")
    # Today included: the day so far (the monitor judges only closed days).
    points = mon._points(int(mon.wall() // DAY_S) + 1)
    live = {pt.trading_day: pt for pt in points}
    days = sorted(set(mon._bands) | set(live))
    bands = [mon._bands.get(d) for d in days]
    return {
        "days": days,
        "dates": [live[d].date if d in live else None for d in days],
        "band_percentile": cfg.band_percentile,
        "low_label": f"p{_pkey(cfg.band_percentile)}",
        "high_label": f"p{_pkey(100 - cfg.band_percentile)}",
        "low": [None if b is None else b.low for b in bands],
        "mid": [None if b is None else b.mid for b in bands],
        "high": [None if b is None else b.high for b in bands],
        "live": [live[d].cum_pnl if d in live else None for d in days],
        "backtest": cfg.backtest,
        "note": mon._blind_reason(),  # e.g. the backtest is for another model
    }


def drift(desk: Desk, feature: str | None) -> dict[str, Any]:
    """One feature's live and training distributions over the same bins, and their PSI."""
    mon = desk.model
    cfg = mon.config
    if not feature:
        return _error("bad_request", "drift needs a feature name")
    if not cfg.reference:
        return _error("bad_request", "drift: no training reference configured ([model] "
                                     "reference): feature PSI is not evaluated")
    ref = mon.reference
    if ref is None:
        return _error("bad_request", "drift: the training reference is not loaded: "
                      + (mon.reference_error or "not read yet"))
    bins = ref.features.get(feature)
    if bins is None:
        return _error("not_found", f"drift: no feature {feature!r} in the training reference "
                                   f"{cfg.reference}; known features: "
                                   + ", ".join(sorted(ref.features)))
    today = _day(mon.wall())
    window = [d for d in sorted(mon.saved.psi_days)
              if today - cfg.psi_window_days < d <= today + _AHEAD_DAYS]
    counts = np.zeros(len(bins.expected), dtype=np.int64)
    for d in window:
        c = mon.saved.psi_days[d].get(feature)
        if c is not None:
            counts += np.asarray(c, dtype=np.int64)
    n = int(counts.sum())
    value = (psi(bins.expected, counts, epsilon=cfg.psi_epsilon)
             if n >= cfg.psi_min_count else None)
    return {
        "feature": feature,
        "edges": list(bins.inner),
        "training": list(bins.expected),
        "live": (counts / n).tolist() if n else [0.0] * len(bins.expected),
        "live_counts": counts.tolist(),
        "count": n,
        "min_count": cfg.psi_min_count,
        "psi": value,
        "threshold": cfg.psi_threshold,
        "window_days": cfg.psi_window_days,
        "model_hash": mon.model_hash,
    }
