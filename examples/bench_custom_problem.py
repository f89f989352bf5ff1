"""Benchmark every solver on your own problem: a path, a field (your network, exact or a trusted
reference), and samples of the target.

    python examples/bench_custom_problem.py            # ~15 s on 2 idle cores; --out DIR for PNGs

Here the "network" is the closed-form noise predictor of a 3-D Gaussian N(mu, diag(c)) on the VP path,
eps(x, t) = sigma_t (x - alpha_t mu) / (alpha_t^2 c + sigma_t^2), so the float64 reference that the bench
computes (RK4, 1024 log-SNR steps) can be checked against the exact flow; put your own network in its place.
Without an analytic target the bench's pathwise reference is that fine solve of the same field, and the
weak SDE metrics compare to ``target_sampler``'s samples.
"""

import argparse

import torch

import sdeflow as sf
from sdeflow.bench import Problem, format_table, register_problem, run_bench

MU = torch.tensor([1.0, -0.5, 0.0], dtype=torch.float64)
C = torch.tensor([0.05, 0.5, 2.0], dtype=torch.float64)
PATH = sf.VP()


def eps_net(x, t):
    """A stand-in for a trained noise-prediction network: net(x, t) with t of shape (batch,)."""
    a, s = PATH.alpha(t).to(x.dtype)[:, None], PATH.sigma(t).to(x.dtype)[:, None]
    mu, c = MU.to(x.dtype), C.to(x.dtype)
    return s * (x - a * mu) / (a * a * c + s * s)


def data_sampler(n, generator):
    """Exact samples of what a perfect sampler returns (here: the data distribution)."""
    return MU + C.sqrt() * torch.randn(n, 3, generator=generator, dtype=torch.float64)


PROBLEM = register_problem(Problem(
    "my_vp_gaussian3", path=PATH, exact_field=sf.NoiseField(eps_net), target_sampler=data_sampler, dim=3,
    final_denoise=True, description="a 3-D Gaussian behind a noise-prediction net on VP (example)"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None, help="directory for rows.json and the PNG diagrams")
    a = ap.parse_args()
    # the bench's reference (a fine float64 solve of the net) against the exact flow of this Gaussian
    x = PROBLEM.initial(500, seed=0)
    exact = sf.Gaussian(MU, C).reference_flow(x, PATH, PROBLEM.t_max, PROBLEM.t_min, final_denoise=True)
    print(f"reference solve vs exact flow: max |diff| = {float((PROBLEM.reference(x) - exact).abs().max()):.1e}")
    notes = []
    rows = run_bench(problems=["my_vp_gaussian3"], solvers=["euler", "heun", "dpmpp_2m", "euler_maruyama", "sra1"],
                     nfes=[10, 20, 50], sde_nfes=[33, 65, 129], n=500, optimized=False, notes=notes)
    print(format_table(rows))
    print("\n".join(dict.fromkeys(notes)))
    if a.out:
        from sdeflow.bench.plots import write_plots

        print("\n".join(write_plots(rows, a.out)))


if __name__ == "__main__":
    main()
