"""Per-step overhead of sdeflow's fixed-step solvers and of peers, as ratios to hand-written minimal loops.

    python benchmarks/overhead.py                 # batch 1 and 65536, float32, 400 steps, 5 repeats
    python benchmarks/overhead.py --batches 1 --steps 800 --repeats 9 --json overhead.json

See sdeflow/bench/overhead.py for what is measured and docs/performance.md for the figures.
"""

import argparse
import json

import torch

from sdeflow.bench.overhead import format_overhead, format_overhead_markdown, run_overhead

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--solvers", nargs="*", default=None)
ap.add_argument("--batches", nargs="*", type=int, default=[1, 65536])
ap.add_argument("--steps", type=int, default=400)
ap.add_argument("--repeats", type=int, default=5)
ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
ap.add_argument("--no-peers", action="store_true")
ap.add_argument("--stat", choices=["median", "min"], default="median")
ap.add_argument("--markdown", action="store_true", help="also print the Markdown table of docs/performance.md")
ap.add_argument("--json", default=None, help="write the rows to this file")
a = ap.parse_args()

notes = []
rows = run_overhead(a.solvers, batches=tuple(a.batches), steps=a.steps, repeats=a.repeats, peers=not a.no_peers,
                    notes=notes, dtype=getattr(torch, a.dtype), stat=a.stat)
for n in notes:
    print(n)
print(format_overhead(rows))
if a.markdown:
    print()
    print(format_overhead_markdown(rows))
if a.json:
    with open(a.json, "w") as f:
        json.dump(rows, f, indent=1)
