"""Work-precision on a learned field: ``sdeflow bench`` on the trained digits UNet (examples/digits.py).

    python examples/bench_digits.py [--quick] [--n 200] [--ref-steps 1024] [--nfes 10,20,50,100] [--cache DIR]
                                    [--out DIR]

The problem ``digits_unet``: the class-conditional diffusers UNet of examples/digits.py (trained once and cached;
``--quick``: the small untrained-for-long network of its quick mode), guided with w = 2 toward label i mod 10
for sample i (one network call per evaluation on the doubled batch), on its own DDPM schedule (DiscreteVP,
T = 1000) with fractional timesteps (``time_input="continuous"``) from t = 1 to the first knot 1/T, then the
final denoising step; states are the 64 pixels flattened (the bench's problems are (n, dim)), the network runs
in float64. There is no exact answer: the reference is a float64 RK4 solve of the same network on
``--ref-steps`` log-SNR steps (the script prints its distance to a solve with half the steps, which bounds its own
error), and the error is the RMS distance per pixel to it from the same initial noise. Only ODE solvers (the weak
SDE metrics would need samples of the network's own distribution).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

import sdeflow as sf
from sdeflow.bench import Problem, format_table, register_problem, run_bench
from sdeflow.fields import Field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import digits  # noqa: E402

SOLVERS = ["euler", "heun", "ddim", "dpmpp_2m", "dpmpp_3m", "unipc", "dpm_solver_3", "rk4"]


class FlatDigits(Field):
    """The guided field on flattened (n, 64) states: reshaped to (n, 1, 8, 8) for the UNet and back; labels
    ``i mod 10`` for row ``i`` of the batch (the bench integrates one batch, never chunks)."""

    def __init__(self, guided: Field):
        self.guided, self.kind = guided, guided.kind

    def bind(self, path, model_kwargs=None):
        fns: dict = {}

        def fn(x, t):
            n = x.shape[0]
            if n not in fns:
                fns[n] = self.guided.bind(path, {"class_labels": torch.arange(n, device=x.device) % 10})
            return fns[n](x.reshape(n, 1, 8, 8), t).reshape(n, 64)
        return fn

    def predict(self, x, t, path):
        return self.bind(path)(x, sf.fields.batch_time(t, x))

    def validate_times(self, times):
        self.guided.validate_times(times)


def problem(unet, scale: float = 2.0) -> Problem:
    unet = unet.double().eval()
    for p in unet.parameters():
        p.requires_grad_(False)
    recipe = sf.from_diffusers(unet, digits.scheduler(), time_input="continuous")
    field = FlatDigits(sf.classifier_free_guidance(recipe.field, scale, null={"class_labels": digits.NULL}))
    return register_problem(Problem(
        "digits_unet", path=recipe.path, exact_field=field, dim=64, t_max=1.0, t_min=1.0 / recipe.path.T,
        final_denoise=True, description="the trained digits UNet (examples/digits.py), guided w=2, DDPM schedule "
                                        "with fractional timesteps; reference: a float64 RK4 solve on log-SNR steps"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the quick-mode network, few samples and budgets")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--ref-steps", type=int, default=1024, help="RK4 log-SNR steps of the float64 reference")
    ap.add_argument("--nfes", default="10,20,50,100", help="NFE budgets, comma-separated")
    ap.add_argument("--cache", default=None)
    ap.add_argument("--out", default=None, help="directory for rows.json and the PNG diagrams")
    ap.add_argument("--no-plot", action="store_true", help="(no plots unless --out)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if a.quick:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="sdeflow-digits-") as tmp:
            unet, _ = digits.trained_model(tmp, config=digits.QUICK_CONFIG, steps=10, batch=16, verbose=False)
        n, nfes, solvers, ref = 8, (10, 20), SOLVERS[:4], ("rk4", 64, "log_snr")
    else:
        unet, _ = digits.trained_model(a.cache)
        n, solvers, ref = a.n, SOLVERS, ("rk4", a.ref_steps, "log_snr")
        nfes = tuple(int(v) for v in a.nfes.split(","))
    prob = problem(unet)
    prob.reference_solver = ref
    x = prob.initial(n, seed=0)
    with torch.no_grad():
        fine = prob.reference(x)
        half = sf.sample(prob.path, prob.field(), ref[0], steps=ref[1] // 2, grid=ref[2], x_init=x,
                         **prob.sample_kwargs()).x
        print(f"reference ({ref[0]}, {ref[1]} {ref[2]} steps) against half its steps: RMS "
              f"{float((fine - half).pow(2).mean().sqrt()):.1e}, max {float((fine - half).abs().max()):.1e}")
        notes: list = []
        rows = run_bench(problems=["digits_unet"], solvers=solvers, nfes=nfes, n=n, sde=False, peers=False,
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
