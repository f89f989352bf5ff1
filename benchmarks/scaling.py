"""Wall time and peak live tensor memory of a fixed-step sampler against batch, steps (NFE) and dimension.

    python benchmarks/scaling.py            # batches 1e2..1e5
    python benchmarks/scaling.py --full     # up to 1e6
"""

import argparse
import json

from sdeflow.bench.scaling import FULL_BATCHES, QUICK_BATCHES, format_scaling, run_scaling

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--full", action="store_true")
ap.add_argument("--solver", default="heun")
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--json", default=None)
a = ap.parse_args()
rows = run_scaling(FULL_BATCHES if a.full else QUICK_BATCHES, solver=a.solver, repeats=a.repeats)
print(format_scaling(rows))
if a.json:
    with open(a.json, "w") as f:
        json.dump(rows, f, indent=1)
