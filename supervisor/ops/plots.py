"""Draw ``deskctl report`` series as PNG files (the optional ``plots`` extra: matplotlib).

Imported only by deskctl, only when a picture is asked for: the daemon and the rest of
deskctl never import matplotlib. The "Agg" backend: no display needed.
"""

from __future__ import annotations

import itertools
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["draw", "plot_drift", "plot_pnl_band"]


def plot_pnl_band(series: dict[str, Any], out: str) -> None:
    """Cumulative live PnL over the backtest band, per trading day."""
    days = series["days"]
    fig, ax = plt.subplots(figsize=(9, 5))
    try:
        band = [(d, lo, hi) for d, lo, hi in zip(days, series["low"], series["high"],
                                                   strict=True)
                if lo is not None and hi is not None]
        if band:
            ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band],
                            alpha=0.25, label=f"backtest {series['low_label']}-"
                                              f"{series['high_label']}")
        low = [(d, v) for d, v in zip(days, series["low"], strict=True) if v is not None]
        if low and not band:
            ax.plot(*zip(*low, strict=True), "--", label=f"backtest {series['low_label']}")
        mid = [(d, v) for d, v in zip(days, series["mid"], strict=True) if v is not None]
        if mid:
            ax.plot(*zip(*mid, strict=True), ":", label="backtest median")
        live = [(d, v) for d, v in zip(days, series["live"], strict=True) if v is not None]
        if live:
            ax.plot(*zip(*live, strict=True), "o-", color="black", label="live cumulative")
        ax.set_xlabel("trading day")
        ax.set_ylabel("cumulative PnL")
        title = "Live PnL vs backtest band"
        if series.get("note"):
            title += f"\n{series['note']}"
        ax.set_title(title, fontsize=9 if series.get("note") else 12)
        ax.legend(loc="best")
        ax.grid(alpha=0.3)
        fig.savefig(out, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)


def _bin_labels(edges: list[float]) -> list[str]:
    cuts = [f"{e:.3g}" for e in edges]
    return [f"<{cuts[0]}", *(f"{a}..{b}" for a, b in itertools.pairwise(cuts)),
            f">={cuts[-1]}"] if cuts else ["all"]


def plot_drift(series: dict[str, Any], out: str) -> None:
    """One feature's training and live proportions per bin, side by side."""
    training, live = series["training"], series["live"]
    x = list(range(len(training)))
    width = 0.4
    fig, ax = plt.subplots(figsize=(max(6, len(x) * 0.8), 5))
    try:
        ax.bar([i - width / 2 for i in x], training, width, label="training")
        ax.bar([i + width / 2 for i in x], live, width,
               label=f"live ({series['count']} values, {series['window_days']} d)")
        ax.set_xticks(x, _bin_labels(series["edges"]), rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("proportion")
        value = series["psi"]
        shown = "n/a (too few live values)" if value is None else f"{value:.3f}"
        ax.set_title(f"{series['feature']}: PSI {shown} (threshold {series['threshold']:g})")
        ax.legend(loc="best")
        fig.savefig(out, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)


def draw(kind: str, series: dict[str, Any], out: str) -> None:
    """Write ``series`` (a ``report`` result of ``kind``) as a PNG at ``out``."""
    match kind:
        case "pnl-band":
            plot_pnl_band(series, out)
        case "drift":
            plot_drift(series, out)
        case _:
            raise ValueError(f"unknown report {kind!r}")
