"""Accuracy against cost per request, one point per replayed configuration (a PNG, matplotlib);
``live`` adds points measured through the gateway (``coe demo``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.errors import CoEError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from gateway.evaluation.replay import ReplayReport

_STYLE = {
    "single": ("o", "tab:blue", "single model"),
    "ensemble": ("s", "tab:purple", "whole tier, majority vote"),
    "coe": ("^", "tab:green", "CoE cascade"),
    "confidence": ("x", "tab:orange", "confidence cascade"),
}


def plot_report(
    report: ReplayReport,
    out: Path,
    *,
    title: str,
    live: Sequence[tuple[str, float, float]] = (),
) -> Path:
    """Write the plot to ``out``; ``live``: (name, $/request, accuracy) of measured points."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CoEError("--plot needs matplotlib: pip install 'coe-gateway[eval]'") from None

    figure, axes = plt.subplots(figsize=(8, 5.5), dpi=120)
    try:
        for kind, (marker, colour, legend) in _STYLE.items():
            rows = [row for row in report.rows if row.config.kind == kind]
            if rows:
                axes.scatter(
                    [row.cost_per_request_usd for row in rows],
                    [row.accuracy for row in rows],
                    marker=marker,
                    color=colour,
                    label=legend,
                    s=46,
                    zorder=3,
                )
        frontier = sorted(
            (row for row in report.rows if row.pareto), key=lambda row: row.cost_per_request_usd
        )
        axes.step(
            [row.cost_per_request_usd for row in frontier],
            [row.accuracy for row in frontier],
            where="post",
            color="grey",
            linewidth=1,
            label="Pareto frontier",
            zorder=2,
        )
        best = report.best_single
        axes.axhline(best.accuracy, color="tab:blue", linestyle=":", linewidth=1,
                     label=f"best single model ({best.config.name})")
        labelled = {row.config.name for row in report.rows if row.config.kind in ("single",
                                                                                  "ensemble")}
        labelled.add(report.recommended.config.name)
        for row in report.rows:
            if row.config.name in labelled:
                axes.annotate(row.config.name, (row.cost_per_request_usd, row.accuracy),
                              textcoords="offset points", xytext=(5, 4), fontsize=7)
        recommended = report.recommended
        axes.scatter([recommended.cost_per_request_usd], [recommended.accuracy], s=180,
                     facecolors="none", edgecolors="red", linewidths=1.5, zorder=4,
                     label="recommended")
        if live:
            axes.scatter([cost for _, cost, _ in live], [accuracy for _, _, accuracy in live],
                         marker="*", s=160, color="tab:red", zorder=5,
                         label="CoE cascade through the live gateway")
            for name, cost, accuracy in live:
                axes.annotate(name, (cost, accuracy), textcoords="offset points",
                              xytext=(6, -10), fontsize=7, color="tab:red")
        costs = [row.cost_per_request_usd for row in report.rows if row.cost_per_request_usd > 0]
        if costs and max(costs) / min(costs) > 20:
            axes.set_xscale("log")
        axes.set_xlabel("mean cost per request (USD)")
        axes.set_ylabel("accuracy")
        axes.set_title(title)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7, loc="lower right")
        figure.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out)
    finally:
        plt.close(figure)
    return out
