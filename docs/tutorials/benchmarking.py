"""Benchmarking step counts against accuracy: the work-precision harness of `sdeflow bench`, as a library.

Run: python docs/tutorials/benchmarking.py [--small]

Every row is a solver, grid and budget of network evaluations (NFE); the error is the RMS distance of the
samples to the exact (or float64 reference) probability-flow solution from the same initial noise.
"""

import sys

import torch

import sdeflow as sf
from sdeflow.bench import Problem, format_table, register_problem, run_bench
from sdeflow.testing import fit_order

SMALL = "--small" in sys.argv
n = 200 if SMALL else 1000
nfes = (10, 20, 40) if SMALL else (10, 20, 50, 100)
solvers = ["euler", "heun", "dpmpp_2m", "unipc"]

# ---- 1. A built-in problem: a 2-D Gaussian with its exact denoiser (VE path, EDM coordinates) ---------
rows = run_bench(problems=["gaussian2"], solvers=solvers, nfes=nfes, n=n, sde=False, peers=False,
                 optimized=False)
print(format_table(rows))
# On the Gaussian the flow is exact, so each solver's error falls as its budget grows.
for solver in solvers:
    for grid in {r["grid"] for r in rows if r["solver"] == solver}:
        errs = [r["error"] for r in rows if r["solver"] == solver and r["grid"] == grid]
        assert all(b < a for a, b in zip(errs, errs[1:])), (solver, grid, errs)
        assert all(r["nfe"] <= r["nfe_budget"] for r in rows)  # budgets are hard caps

# ---- 2. Your own problem: your target and path, registered under a name ------------------------------
register_problem(Problem(name="my_vp_gaussian", path=sf.VP(), kind="noise", final_denoise=False,
                         target=sf.Gaussian(torch.tensor([2.0, 0.0, -1.0]), torch.tensor([0.1, 1.0, 3.0])),
                         description="a 3-D Gaussian on the VP path, noise prediction"))
rows = run_bench(problems=["my_vp_gaussian"], solvers=["heun", "dpmpp_2m"], nfes=nfes, n=n, sde=False,
                 peers=False, optimized=False, grids=("log_snr",))
print(format_table(rows))
# (the same from the command line: sdeflow bench --problems eight_gaussians --solvers heun,dpmpp_2m)

# ---- 3. By hand: measured order from halving steps (what sdeflow's tests do) ------------------------
target = sf.Gaussian(torch.tensor([2.0, 0.0]), torch.tensor([0.1, 3.0]))
path = sf.VP()
x1 = path.prior_sample((n, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
exact = target.flow(x1, path, path.t_max, path.t_min)
for solver in ("heun", "rk4"):
    steps_list = (32, 64, 128) if SMALL else (32, 64, 128, 256)
    errs = [(sf.sample(path, target.field("score"), solver, steps=k, x_init=x1).x - exact).abs().max().item()
            for k in steps_list]
    fit = fit_order([1 / k for k in steps_list], errs)
    print(f"{solver}: {fit}  (declared {sf.solvers.get(solver).order})")
    assert abs(fit.slope - sf.solvers.get(solver).order) < 0.3
