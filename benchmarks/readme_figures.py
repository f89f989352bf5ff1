"""Regenerate the README's bench section: the headline table (printed as Markdown) and the work-precision
diagrams docs/img/bench_<problem>_<metric>.png, from the quick `sdeflow bench` configuration.

    python benchmarks/readme_figures.py                 # same rows as `sdeflow bench` (quick), ~1-2 min
    python benchmarks/readme_figures.py --out docs/img  # default

Headline: at each NFE budget, sdeflow's most accurate sampler (any solver, grid, including the cached
optimised grids) against the most accurate peer run in the same process on the same inputs.
"""

import argparse
import json
import time

from sdeflow.bench import QUICK, format_table, run_bench
from sdeflow.bench.plots import write_plots


def _best(rows, peer: bool, budget: int, metric: str):
    cand = [r for r in rows if r["metric"] == metric and r["nfe_budget"] == budget and r["error"] is not None
            and bool(r.get("peer")) == peer]
    return min(cand, key=lambda r: r["error"]) if cand else None


def headline(rows) -> str:
    lines = ["| metric | NFE budget | sdeflow best | error | best peer | error | peer / sdeflow |",
             "|---|---|---|---|---|---|---|"]
    for metric in ("pathwise_rms", "strong_rms"):
        for b in sorted({r["nfe_budget"] for r in rows if r["metric"] == metric}):
            ours, theirs = _best(rows, False, b, metric), _best(rows, True, b, metric)
            if ours is None or theirs is None:
                continue
            lines.append(f"| {metric} | {b} | {ours['solver']} ({ours['grid']}) | {ours['error']:.2e} | "
                         f"{theirs['solver']} | {theirs['error']:.2e} | {theirs['error'] / ours['error']:.1f}x |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/img")
    ap.add_argument("--json", default=None, help="also write the rows here")
    a = ap.parse_args()
    t0 = time.perf_counter()
    rows = run_bench(problems=QUICK["problems"], nfes=QUICK["nfes"], sde_nfes=QUICK["sde_nfes"], n=QUICK["n"],
                     repeats=QUICK["repeats"])
    print(format_table(rows))
    print()
    print(headline(rows))
    for p in write_plots(rows, a.out, prefix="bench_"):
        print("wrote", p)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
