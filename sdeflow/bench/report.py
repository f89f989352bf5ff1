"""Plain-text tables of benchmark rows."""

from __future__ import annotations

__all__ = ["format_table"]


def _section(rows: list[dict]) -> list[str]:
    budgets = sorted({r["nfe_budget"] for r in rows})
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["problem"], r["solver"], r["grid"]), {})[r["nfe_budget"]] = r
    head = f"{'problem':16} {'solver':24} {'grid':10}" + "".join(f"{'NFE<=' + str(b):>11}" for b in budgets)
    lines = [head, "-" * len(head)]
    for (prob, solver, grid), by in sorted(groups.items()):
        cells = []
        for b in budgets:
            r = by.get(b)
            cells.append(f"{'-':>11}" if r is None or r["error"] is None else f"{r['error']:11.3e}")
        lines.append(f"{prob:16} {solver:24} {grid:10}" + "".join(cells))
    return lines


def format_table(rows: list[dict]) -> str:
    """One table per metric: a line per (problem, solver, grid), a column per NFE budget."""
    out = []
    for metric in sorted({r["metric"] for r in rows}):
        out.append(f"[{metric}]")
        out += _section([r for r in rows if r["metric"] == metric])
        out.append("")
    return "\n".join(out).rstrip()
