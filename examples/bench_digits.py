"""Work-precision on a learned field: the ``digits_unet`` problem of ``sdeflow bench`` (sdeflow.bench.digits).

    python examples/bench_digits.py [--quick] [--n 16] [--ref-steps 128] [--nfes 10,20,50] [--solvers a,b] [--out DIR]

The same as ``sdeflow bench --problems digits_unet --no-sde --solvers ...``, with the reference's own error
printed first (its distance to a solve with half its steps). ``--quick``: the small network of the quick mode,
trained 10 steps in a temporary directory, 8 samples (a plumbing smoke run).
"""

from __future__ import annotations

import argparse

import torch

import sdeflow as sf
from sdeflow.bench import digits, format_table, register_problem, run_bench

SOLVERS = ["euler", "heun", "ddim", "dpmpp_2m", "dpmpp_3m", "unipc", "dpm_solver_3", "rk4"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the quick-mode network, few samples and budgets")
    ap.add_argument("--n", type=int, default=16, help="samples (each evaluation is a float64 UNet call on 2n rows)")
    ap.add_argument("--ref-steps", type=int, default=digits.REFERENCE_STEPS, help="RK4 steps of the reference")
    ap.add_argument("--nfes", default="10,20,50", help="NFE budgets, comma-separated")
    ap.add_argument("--solvers", default=",".join(SOLVERS), help="sdeflow solvers, comma-separated")
    ap.add_argument("--out", default=None, help="directory for the PNG diagrams")
    ap.add_argument("--no-plot", action="store_true", help="(no plots unless --out)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if a.quick:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="sdeflow-digits-") as tmp:
            unet, _ = digits.trained_model(tmp, config=digits.QUICK_CONFIG, steps=10, batch=16, verbose=False)
        prob = register_problem(digits.problem(unet=unet, name="digits_unet_quick", reference_steps=64))
        n, nfes, solvers = 8, (10, 20), SOLVERS[:4]
    else:
        prob = sf.bench.register_problem(digits.problem(reference_steps=a.ref_steps))
        n, solvers, nfes = a.n, a.solvers.split(","), tuple(int(v) for v in a.nfes.split(","))
    x = prob.initial(n, seed=0)
    steps = prob.reference_solver[1]
    with torch.no_grad():
        fine = prob.reference(x)
        half = sf.sample(prob.path, prob.field(), "rk4", steps=steps // 2, grid="log_snr", x_init=x,
                         **prob.sample_kwargs()).x
        print(f"reference (rk4, {steps} log-SNR steps) against half its steps: RMS "
              f"{float((fine - half).pow(2).mean().sqrt()):.1e}, max {float((fine - half).abs().max()):.1e}")
        notes: list = []
        rows = run_bench(problems=[prob.name], solvers=solvers, nfes=nfes, n=n, sde=False, peers=False,
                         optimized=False, notes=notes)
    print(format_table(rows))
    if notes:
        print("\n".join(dict.fromkeys(notes)))
    if a.out:
        from sdeflow.bench.plots import write_plots

        print("\n".join(write_plots(rows, a.out)))
    return rows


if __name__ == "__main__":
    main()
