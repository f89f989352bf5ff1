"""Work-precision diagrams of benchmark rows (PNG; matplotlib is imported here only, lazily).

For each problem and metric, two log-log panels: error against the NFE spent and error against wall time.
One line per solver (its best grid: the lowest mean log error over the budgets every grid of that solver ran)
and one per peer. The colour and marker name the algorithm, so a peer running the same algorithm as an
sdeflow solver shares its colour (torchdiffeq's rk4, Kutta's 3/8 rule, and sdeflow's ``rk4_38``, torchsde's
Euler and sdeflow's ``euler_maruyama``); the line style names the library (sdeflow solid with filled markers,
peers dashed / dotted / dash-dotted with hollow markers). The weak metrics' Monte Carlo floor is a dotted black line.
"""

from __future__ import annotations

import math
import os

from ..errors import SdeflowValueError
from .report import metric_tables

__all__ = ["plot_work_precision", "write_plots", "plot_lines", "PLOTTED_METRICS"]

PLOTTED_METRICS = ("pathwise_rms", "pathwise_max", "strong_rms", "weak_sliced_w2")
_TITLES = {"pathwise_rms": "ODE: RMS error to the exact flow (same noise)",
           "pathwise_max": "ODE: the worst sample's error to the exact flow (same noise)",
           "pathwise_q99": "ODE: 99th percentile of the per-sample errors to the exact flow (same noise)",
           "strong_rms": "SDE: strong RMS error (same Brownian path)",
           "weak_sliced_w2": "SDE: sliced W2 to exact samples (weak)",
           "weak_mean": "SDE: mean error (weak)", "weak_cov": "SDE: covariance error (weak)",
           "weak_mmd": "SDE: MMD (weak)"}
# strong, distinct colours (tab10 without grey, then Dark2) and markers, assigned per algorithm
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d")
_MARKERS = "osD^vP*Xph<>"
_LIBRARY_STYLE = {"sdeflow": "-", "torchdiffeq": "--", "diffusers": ":", "torchsde": "-.", "k_diffusion": "--"}
# a peer's name -> the sdeflow algorithm it runs, where the names differ
_SAME_ALGORITHM = {"torchdiffeq:rk4": "rk4_38", "torchsde:euler": "euler_maruyama", "torchsde:srk": "sra1",
                   "diffusers:ddim(eta=1)": "ddim(eta=1)", "diffusers:unipc_karras": "unipc",
                   "diffusers:unipc3_karras": "unipc(order=3)"}


def _library(solver: str) -> str:
    return solver.split(":", 1)[0] if ":" in solver else "sdeflow"


def _algorithm(solver: str) -> str:
    """The algorithm a row runs, for its colour: ``diffusers:edm_dpmpp_2m`` -> ``dpmpp_2m``."""
    if solver in _SAME_ALGORITHM:
        return _SAME_ALGORITHM[solver]
    name = solver.split(":", 1)[1] if ":" in solver else solver
    return name[4:] if name.startswith("edm_") else name


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SdeflowValueError("the work-precision diagrams need matplotlib: pip install 'sdeflow[bench]' (or "
                                "matplotlib); the JSON rows do not") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_lines(rows: list[dict], metric: str, problem: str) -> tuple[list[dict], float | None]:
    """The lines of the diagram of ``metric`` on ``problem``: ``[{solver, grid, peer, points: [(nfe, wall_s,
    value), ...]}]`` (one per solver: its best grid) and the Monte Carlo floor (None if absent)."""
    tables = metric_tables([r for r in rows if r["problem"] == problem])
    if metric not in tables:
        return [], None
    sel, value = tables[metric]
    by: dict = {}
    floor = None
    for r in sel:
        v = value(r)
        if r["solver"] == "mc_floor":
            floor = v
            continue
        if v is None or r["nfe"] is None or not v > 0:
            continue
        by.setdefault(r["solver"], {}).setdefault(r["grid"], {})[r["nfe_budget"]] = (r["nfe"], r["wall_s"], v,
                                                                                     bool(r.get("peer")))
    lines = []
    for solver, grids in by.items():
        common = set.intersection(*(set(b) for b in grids.values()))

        def score(item):
            budgets = common or set(item[1])
            return sum(math.log(item[1][b][2]) for b in budgets) / len(budgets)

        grid, pts = min(grids.items(), key=lambda item: (score(item), item[0]))
        points = sorted((p[0], p[1], p[2]) for p in pts.values())
        lines.append(dict(solver=solver, grid=grid, peer=any(p[3] for p in pts.values()), points=points))
    lines.sort(key=lambda ln: (ln["peer"], _library(ln["solver"]), _algorithm(ln["solver"]), ln["solver"]))
    return lines, floor


def plot_work_precision(rows: list[dict], metric: str, problem: str, path: str, dpi: int = 100) -> str | None:
    """Write the two-panel diagram of ``metric`` on ``problem`` to ``path``; None if there is nothing to plot."""
    lines, floor = plot_lines(rows, metric, problem)
    if not lines:
        return None
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, ScalarFormatter

    algorithms = list(dict.fromkeys(_algorithm(ln["solver"]) for ln in sorted(lines, key=lambda ln: ln["peer"])))
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    for ln in lines:
        k = algorithms.index(_algorithm(ln["solver"]))
        color, marker = _COLORS[k % len(_COLORS)], _MARKERS[k % len(_MARKERS)]
        grid = "" if ln["grid"] in ("uniform", "exact") else f" ({ln['grid']} grid)"
        style = dict(color=color, marker=marker, markersize=7 if ln["peer"] else 6, linewidth=1.8,
                     linestyle=_LIBRARY_STYLE.get(_library(ln["solver"]), "--"), label=ln["solver"] + grid,
                     markerfacecolor="white" if ln["peer"] else color, markeredgewidth=1.5)
        pts = ln["points"]
        axes[0].plot([p[0] for p in pts], [p[2] for p in pts], **style)
        timed = [p for p in pts if p[1]]
        axes[1].plot([p[1] for p in timed], [p[2] for p in timed], **style)
    for ax, xl in zip(axes, ("evaluations of the field spent (NFE; ticks at the budgets)",
                             "wall time [s] (median of repeats)")):
        if floor is not None:
            ax.axhline(floor, color="k", linestyle=":", linewidth=1.5, label="Monte Carlo floor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xl, fontsize=10)
        ax.grid(True, which="major", alpha=0.35)
        ax.grid(True, which="minor", alpha=0.12)
    budgets = sorted({r["nfe_budget"] for r in rows if r["problem"] == problem and r["metric"] != "mc_floor"
                      and _in_metric(r, metric)})
    axes[0].set_xticks(budgets)  # the budgets; a point sits at the NFE it spent (at most its budget)
    axes[0].xaxis.set_major_formatter(ScalarFormatter())
    axes[1].xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes[1].xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    for ax in axes:
        ax.xaxis.set_minor_formatter(NullFormatter())
    axes[0].set_ylabel(metric, fontsize=10)
    fig.suptitle(f"{problem} - {_TITLES.get(metric, metric)}\none line per solver on its best grid; "
                 f"colour and marker: algorithm; solid: sdeflow; dashed, dotted, dash-dot: peers", fontsize=11)
    handles, labels = axes[0].get_legend_handles_labels()
    axes[1].legend(handles, labels, loc="center left", bbox_to_anchor=(1.03, 0.5), fontsize=9, frameon=False,
                   handlelength=3.2)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _in_metric(r: dict, metric: str) -> bool:
    return r["metric"] == metric or (metric.startswith("weak_") and bool(r.get("weak")))


def write_plots(rows: list[dict], out_dir: str, metrics=PLOTTED_METRICS, prefix: str = "") -> list[str]:
    """One PNG per problem and metric, ``<out_dir>/<prefix><problem>_<metric>.png``; the paths written."""
    written = []
    for problem in dict.fromkeys(r["problem"] for r in rows):
        for metric in metrics:
            p = plot_work_precision(rows, metric, problem, os.path.join(out_dir, f"{prefix}{problem}_{metric}.png"))
            if p:
                written.append(p)
    return written
