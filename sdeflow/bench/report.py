"""Plain-text tables of benchmark rows: one table per metric, a line per (problem, solver, grid), a column
per NFE budget. The ODE rows' tail gets two tables after ``pathwise_rms``: ``pathwise_q99`` (99th percentile
of the per-sample errors) and ``pathwise_max`` (the worst sample); rows on diffusers' own timesteps, measured
like every row against the problem's reference, also get ``own_window_rms`` / ``own_window_max`` (against the
exact flow over their own window: the same algorithm on the same times, peer beside sdeflow). Weak SDE metrics
(``row["weak"]``) get a table each, with the Monte Carlo floor (``solver="mc_floor"``) as a line of its own.
The SDE rows' tail (``error_q99``, ``error_max``) is in the rows only."""

from __future__ import annotations

from .metrics import WEAK_METRICS

__all__ = ["format_table", "metric_tables", "PRIMARY_METRICS"]

PRIMARY_METRICS = ("pathwise_rms", "strong_rms")


def _section(rows: list[dict], value) -> list[str]:
    budgets = sorted({r["nfe_budget"] for r in rows})
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["problem"], r["solver"], r["grid"]), {})[r["nfe_budget"]] = r
    w = max([16] + [len(r["problem"]) for r in rows])
    head = f"{'problem':{w}} {'solver':24} {'grid':14}" + "".join(f"{'NFE<=' + str(b):>11}" for b in budgets)
    lines = [head, "-" * len(head)]
    for (prob, solver, grid), by in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] == "mc_floor",
                                                                          kv[0][1], kv[0][2])):
        cells = []
        for b in budgets:
            v = value(by[b]) if b in by else None
            mark = "!" if b in by and by[b].get("preflight") else ""
            cells.append(f"{'-':>11}" if v is None else f"{v:{11 - len(mark)}.3e}{mark}")
        lines.append(f"{prob:{w}} {solver:24} {grid:14}" + "".join(cells))
    return lines


def metric_tables(rows: list[dict]) -> dict:
    """``{metric name: (rows, value function)}`` for every metric present in ``rows``."""
    out = {}
    for metric in PRIMARY_METRICS + tuple(sorted({r["metric"] for r in rows} - set(PRIMARY_METRICS)
                                                 - {"mc_floor"})):
        sel = [r for r in rows if r["metric"] == metric]
        if sel:
            out[metric] = (sel, lambda r: r["error"])
        if sel and metric == "pathwise_rms":
            out["pathwise_q99"] = (sel, lambda r: r.get("error_q99"))
            out["pathwise_max"] = (sel, lambda r: r.get("error_max"))
            own = [r for r in sel if r.get("own_window")]
            if own:
                out["own_window_rms"] = (own, lambda r: r["own_window"]["rms"])
                out["own_window_max"] = (own, lambda r: r["own_window"]["max"])
    weak = [r for r in rows if r.get("weak")]
    for k in WEAK_METRICS:
        if weak:
            out[f"weak_{k}"] = (weak, lambda r, k=k: r["weak"][k])
    return out


def format_table(rows: list[dict]) -> str:
    """One table per metric (see the module doc)."""
    out = []
    for metric, (sel, value) in metric_tables(rows).items():
        out.append(f"[{metric}]")
        out += _section(sel, value)
        out.append("")
    if any(r.get("preflight") for r in rows):
        out.append("!: sdeflow.sample refuses this configuration up front (its preflight: the answer on an exact "
                   "Gaussian is off by more than itself); shown as run with preflight=False")
    return "\n".join(out).rstrip()
