"""Work-precision diagrams of benchmark rows (PNG; matplotlib is imported here only, lazily).

For each problem and metric, two log-log panels: error against NFE and error against wall time, one line
per (solver, grid); peers dashed, sdeflow solid; the weak metrics' Monte Carlo floor as a dotted line.
"""

from __future__ import annotations

import os

from ..errors import SdeflowValueError
from .report import metric_tables

__all__ = ["plot_work_precision", "write_plots", "PLOTTED_METRICS"]

PLOTTED_METRICS = ("pathwise_rms", "strong_rms", "weak_sliced_w2")
_TITLES = {"pathwise_rms": "ODE: RMS error to the exact flow (same noise)",
           "strong_rms": "SDE: strong RMS error (same Brownian path)",
           "weak_sliced_w2": "SDE: sliced W2 to exact samples (weak)",
           "weak_mean": "SDE: mean error (weak)", "weak_cov": "SDE: covariance error (weak)",
           "weak_mmd": "SDE: MMD (weak)"}


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SdeflowValueError("the work-precision diagrams need matplotlib: pip install 'sdeflow[bench]' (or "
                                "matplotlib); the JSON rows do not") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_work_precision(rows: list[dict], metric: str, problem: str, path: str, dpi: int = 80) -> str | None:
    """Write the two-panel diagram of ``metric`` on ``problem`` to ``path``; None if there is nothing to plot."""
    tables = metric_tables([r for r in rows if r["problem"] == problem])
    if metric not in tables:
        return None
    sel, value = tables[metric]
    lines: dict = {}
    floor = None
    for r in sel:
        v = value(r)
        if r["solver"] == "mc_floor":
            floor = v
            continue
        if v is None or r["nfe"] is None or not v > 0:
            continue
        lines.setdefault((r["solver"], r["grid"], bool(r.get("peer"))), []).append((r["nfe"], r["wall_s"], v))
    if not lines:
        return None
    plt = _pyplot()
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    cmap = plt.get_cmap("tab20")
    markers = "os^vD<>ph*"
    for i, ((solver, grid, peer), pts) in enumerate(sorted(lines.items())):
        pts.sort()
        label = f"{solver} ({grid})" if grid not in ("uniform", "exact") else solver
        style = dict(color=cmap(i % 20), marker=markers[i % len(markers)], markersize=4, linewidth=1.3,
                     linestyle="--" if peer else "-", label=label)
        axes[0].plot([p[0] for p in pts], [p[2] for p in pts], **style)
        timed = [p for p in pts if p[1]]
        axes[1].plot([p[1] for p in timed], [p[2] for p in timed], **style)
    for ax, xl in zip(axes, ("evaluations of the field (NFE)", "wall time [s] (median of repeats)")):
        if floor is not None:
            ax.axhline(floor, color="k", linestyle=":", linewidth=1.2, label="Monte Carlo floor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xl)
        ax.grid(True, which="both", alpha=0.25)
    budgets = sorted({r["nfe_budget"] for r in sel})
    axes[0].set_xticks(budgets)  # NFE ticks at the budgets (used NFE may fall below them)
    axes[0].xaxis.set_major_formatter(ScalarFormatter())
    axes[0].set_ylabel(metric)
    fig.suptitle(f"{problem} - {_TITLES.get(metric, metric)}; dashed: peers", fontsize=11)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 0.8, 0.95))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def write_plots(rows: list[dict], out_dir: str, metrics=PLOTTED_METRICS, prefix: str = "") -> list[str]:
    """One PNG per problem and metric, ``<out_dir>/<prefix><problem>_<metric>.png``; the paths written."""
    written = []
    for problem in dict.fromkeys(r["problem"] for r in rows):
        for metric in metrics:
            p = plot_work_precision(rows, metric, problem, os.path.join(out_dir, f"{prefix}{problem}_{metric}.png"))
            if p:
                written.append(p)
    return written
