"""Regenerate the README's bench section: the headline table (printed as Markdown, pasted verbatim into the
README) and the work-precision diagrams docs/img/bench_<problem>_<metric>.png, from the quick `sdeflow bench`
configuration (one intra-op thread, as `sdeflow bench` runs it).

    python benchmarks/readme_figures.py                 # same rows as `sdeflow bench` (quick)
    python benchmarks/readme_figures.py --out docs/img  # default

Headline: at each ODE NFE budget, sdeflow's most accurate sampler (any solver, grid, including the cached
optimised grids) against the most accurate peer run in the same process on the same inputs.
"""

import argparse
import json
import sys
import time

import torch

from sdeflow.bench import QUICK, format_table, run_bench
from sdeflow.bench.plots import write_plots


def _best(rows, peer: bool, budget: int, metric: str):
    cand = [r for r in rows if r["metric"] == metric and r["nfe_budget"] == budget and r["error"] is not None
            and bool(r.get("peer")) == peer]
    return min(cand, key=lambda r: r["error"]) if cand else None


def _g2(v: float) -> str:
    """Two significant digits, trailing zeros kept: 0.030, 0.0091, 1.2."""
    return f"{v:#.2g}".rstrip(".")


def _name(r) -> str:
    if r["solver"] == "default":
        return "default (sample(path, field, nfe=N))"
    return r["solver"] if r["grid"] in ("uniform", "exact") else f"{r['solver']} ({r['grid']} grid)"


def headline(rows, metric: str = "pathwise_rms") -> str:
    """The README's table: per NFE budget, sdeflow's best and the best peer on ``metric``."""
    lines = ["| NFE | sdeflow best | error | best peer | error | peer / sdeflow |", "|---|---|---|---|---|---|"]
    for b in sorted({r["nfe_budget"] for r in rows if r["metric"] == metric}):
        ours, theirs = _best(rows, False, b, metric), _best(rows, True, b, metric)
        if ours is None or theirs is None:
            continue
        lines.append(f"| {b} | {_name(ours)} | {_g2(ours['error'])} | {_name(theirs)} | {_g2(theirs['error'])} | "
                     f"{theirs['error'] / ours['error']:.1f}x |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/img")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (sdeflow bench's default: 1)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    rows = run_bench(problems=QUICK["problems"], nfes=QUICK["nfes"], sde_nfes=QUICK["sde_nfes"], n=QUICK["n"],
                     repeats=QUICK["repeats"], progress=sys.stderr.isatty())
    print(format_table(rows))
    print()
    print(headline(rows))
    for p in write_plots(rows, a.out, prefix="bench_"):
        print("wrote", p)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    print(f"{time.perf_counter() - t0:.0f} s with {torch.get_num_threads()} intra-op thread(s)")


if __name__ == "__main__":
    main()
