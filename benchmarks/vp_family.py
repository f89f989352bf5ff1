"""The budget default on the VP schedules (``DiscreteVP``, DDPM's; ``VP``): the 11 problems it was chosen on.

    python benchmarks/vp_family.py --out results/vp --n 500                 # run (resumes), tables, ranking
    python benchmarks/vp_family.py --out results/vp --digits                # + the digits UNet (16 samples)
    python benchmarks/vp_family.py --out results/vp --table-only --candidates
    python benchmarks/vp_family.py --out results/vp --rerun-default         # after changing the default

``sdeflow.window.default_configuration`` chooses, per path family and budget, the configuration (solver,
named grid, the budget's window or the path's) with the smallest worst ratio of RMS error to the best named
configuration of each problem (``generalisation.py --candidates``). On the VP schedules the suite of
``generalisation.py`` has two problems (``eight_gaussians_ddpm``, ``learned_spiral_ddpm``); this script adds:

* oracles on DDPM's schedule (``DiscreteVP()``, timestep 999 -> 0, then the final denoising step, noise
  field): a 16-D and a 64-D anisotropic mixture (per-axis standard deviations 0.01-1,
  ``sdeflow.analytic.anisotropic_mixture``) and a 16-D Gaussian with standard deviations 0.1-3.2;
* the same kind of oracles on ``VP()`` (t = 1 -> 1e-3, then the final denoising step): the 8-mode mixture,
  the 16-D anisotropic mixture and the 16-D Gaussian;
* the two held-out networks on DDPM's schedule of ``heldout_networks.py`` (noise predictors on thin rings and
  on two moons);
* with ``--digits``: the class-conditional UNet ``digits_unet`` (:mod:`sdeflow.bench.digits`; 16 samples, a
  subset of the solvers: each evaluation is a real network call).

Every problem runs every fixed-step deterministic ODE solver (``--digits``: ``DIGITS_SOLVERS``) on every named
grid, on the problem's window and the budget's (``+end``), the default, and every installed peer; rows are
stored per problem under ``--out`` as ``generalisation.py`` stores them (and summarised by its functions).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import torch  # noqa: E402

import generalisation as gen  # noqa: E402

SUITE_VP = ("eight_gaussians_ddpm", "learned_spiral_ddpm")
ORACLES = ("aniso16_ddpm", "aniso64_ddpm", "gaussian16_ddpm", "eight_gaussians_vp", "aniso16_vp", "gaussian16_vp")
HELDOUT = ("heldout_rings_ddpm", "heldout_moons_ddpm")
DIGITS_SOLVERS = ("unipc", "dpmpp_2m", "dpmpp_3m", "exp_pc", "exp_3m_exact", "lms", "deis")
DIGITS_GRIDS = ("log_snr", "quadratic", "uniform")


def register_oracles() -> None:
    import sdeflow as sf
    from sdeflow import analytic
    from sdeflow.bench import Problem, register_problem

    ddpm = sf.DiscreteVP()
    gauss16 = analytic.Gaussian(torch.linspace(-1.0, 1.0, 16), torch.logspace(-1.0, 0.5, 16))
    targets = {"aniso16": analytic.anisotropic_mixture(16), "aniso64": analytic.anisotropic_mixture(64),
               "gaussian16": gauss16, "eight_gaussians": analytic.eight_gaussians()}
    for name in ORACLES:
        data, path = name.rsplit("_", 1)
        if path == "ddpm":
            register_problem(Problem(name, targets[data], ddpm, kind="noise", t_max=1.0, t_min=1.0 / ddpm.T,
                                     final_denoise=True))
        else:
            register_problem(Problem(name, targets[data], sf.VP(), kind="noise", t_max=1.0, final_denoise=True))


def register_all(digits: bool) -> tuple:
    import heldout_networks

    register_oracles()
    heldout_networks.register(HELDOUT, log=lambda s: print(s, file=sys.stderr))
    names = SUITE_VP + ORACLES + HELDOUT
    if digits:
        from sdeflow.bench import digits as dg
        from sdeflow.bench import register_problem

        register_problem(dg.problem())
        names += ("digits_unet",)
    return names


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/vp_family")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--digits", action="store_true", help="add the digits UNet (16 samples, DIGITS_SOLVERS)")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--rerun-default", action="store_true", help="re-run only the default rows of stored runs")
    ap.add_argument("--candidates", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    names = register_all(a.digits)
    nfes = gen.NFES
    if a.rerun_default:
        gen.rerun_default(names, a.out, a.n, a.seed, nfes)
    elif not a.table_only:
        for name in names:
            if name == "digits_unet":
                gen.run([name], a.out, 16, a.seed, nfes, DIGITS_SOLVERS, DIGITS_GRIDS)
            else:
                gen.run([name], a.out, a.n, a.seed, nfes, gen.ode_solvers(), gen.GRIDS)
    summary = gen.summarise(a.out, names, nfes, gen.GRIDS)
    print(gen.table(summary, nfes))
    if a.candidates:
        grids = DIGITS_GRIDS if a.digits else gen.GRIDS
        print(gen.candidates(a.out, names, nfes, grids))
        # a single Gaussian lets one configuration's errors cancel (its steps' against the final denoising
        # step's): the ranking without them, the one the default follows (docs/bench.md)
        print("\nwithout the single Gaussians:")
        print(gen.candidates(a.out, tuple(p for p in names if not p.startswith("gaussian")), nfes, grids))


if __name__ == "__main__":
    main()
