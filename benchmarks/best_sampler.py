"""sdeflow's best sampler per NFE budget on the benchmark problems: ``exp_pc`` (sdeflow's exact-weight
UniPC-style predictor-corrector, order 2 and 3) on a grid bought
once with ``sdeflow.grid_opt.optimize_grid``, beside the same solver on the log-SNR grid.

    python benchmarks/best_sampler.py                       # eight_gaussians at 10, 20, 50 NFE
    python benchmarks/best_sampler.py --problems two_blobs,gaussian16 --nfe 10,20,50
    python benchmarks/best_sampler.py --problems learned_pinwheel,learned_mix16,learned_spiral_ddpm --free-end \
        --orders 2 --maxfev 300 --grids-out sdeflow/bench/optimized_grids.json --merge

``--free-end``: the grid's end is optimised too (no ``t_min`` / ``final_denoise`` given to ``optimize_grid``;
it stops where the optimiser puts it and finishes with the denoising step). ``--merge``: keep the other
problems' grids already in ``--grids-out``.

Errors: RMS over 1000 samples (seed 0, not the pilot samples) of the distance to the float64 reference
probability-flow solution from the same noise. Pilot cost: batched network calls of the optimisation.
"""

import argparse
import json
import time

import torch

import sdeflow as sf
from sdeflow.bench import get_problem, pathwise_rms
from sdeflow.grid_opt import optimize_grid

CONFIGS = [("exp_pc", {}), ("exp_pc", {"order": 3})]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", default="eight_gaussians")
    ap.add_argument("--nfe", default="10,20,50")
    ap.add_argument("--maxfev", type=int, default=800)
    ap.add_argument("--n-pilot", type=int, default=128, help="pilot samples driving the optimisation")
    ap.add_argument("--json", default=None)
    ap.add_argument("--free-end", action="store_true", help="optimise the end point with the interior times")
    ap.add_argument("--orders", default="2,3", help="UniPC orders to run (2: unipc, 3: unipc(order=3))")
    ap.add_argument("--merge", action="store_true", help="keep other problems' grids in --grids-out")
    ap.add_argument("--grids-out", default=None, help="write the optimised grids for `sdeflow bench` here "
                    "(sdeflow/bench/optimized_grids.json)")
    a = ap.parse_args()
    rows = []
    for name in a.problems.split(","):
        p = get_problem(name)
        x = p.initial(1000, 0)
        ref = p.reference(x)
        configs = [(sv, o) for sv, o in CONFIGS if str(o.get("order", 2)) in a.orders.split(",")]
        for solver, opts in configs:
            for nfe in (int(v) for v in a.nfe.split(",")):
                t0 = time.perf_counter()
                named = sf.sample(p.path, p.field(), solver, nfe=nfe, grid="log_snr", x_init=x, **p.sample_kwargs(),
                                  **opts)
                end = {} if a.free_end else dict(t_min=p.t_min, final_denoise=p.final_denoise)
                res = optimize_grid(p.path, p.field(), solver, nfe, shape=(p.dim,), t_max=p.t_max,
                                    integration_path=p.integration_path, maxfev=a.maxfev, solver_options=opts, n_pilot=a.n_pilot,
                                    generator=torch.Generator().manual_seed(12345), **end)
                fd = res.final_denoise if a.free_end else p.final_denoise
                opt = sf.sample(p.path, p.field(), solver, grid=res.grid, x_init=x, final_denoise=fd,
                                integration_path=p.integration_path, **opts)
                row = dict(problem=name, solver=solver, options=opts, nfe=opt.nfe, error_log_snr=pathwise_rms(named.x, ref),
                           error_optimized=pathwise_rms(opt.x, ref), pilot_network_calls=res.pilot_network_calls,
                           seconds=time.perf_counter() - t0, grid=res.grid.tolist(), final_denoise=fd)
                rows.append(row)
                print(f"{name:16} {solver}{opts or ''}  nfe={opt.nfe:3d}  log_snr {row['error_log_snr']:.3e}  "
                      f"optimized {row['error_optimized']:.3e}  pilot calls {res.pilot_network_calls}  "
                      f"({row['seconds']:.0f} s)", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    if a.grids_out:
        keep = ("problem", "solver", "options", "nfe", "grid", "pilot_network_calls", "final_denoise")
        command = ("python benchmarks/best_sampler.py --problems " + a.problems + " --nfe " + a.nfe
                   + (" --free-end" if a.free_end else "") + " --orders " + a.orders + " --maxfev "
                   + str(a.maxfev) + (f" --n-pilot {a.n_pilot}" if a.n_pilot != 128 else "") + " --grids-out "
                   + a.grids_out)
        grids = [{k: r[k] for k in keep} for r in rows]
        if a.merge:
            with open(a.grids_out) as f:
                old = json.load(f)
            done = {r["problem"] for r in rows}
            grids = [g for g in old["grids"] if g["problem"] not in done] + grids
            command = old["generated_by"] + "; " + command + " --merge"
        with open(a.grids_out, "w") as f:
            json.dump({"generated_by": command, "grids": grids}, f, indent=0)


if __name__ == "__main__":
    main()
