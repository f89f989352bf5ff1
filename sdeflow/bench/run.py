"""The benchmark loop: every problem x solver x grid x NFE budget, errors against exact references.

ODE solvers: pathwise RMS error against the probability-flow reference from the same initial noise.
SDE solvers (reverse SDE, ``gamma="reverse"``, in the problem path's own coordinates): strong RMS error
against a fine stochastic-Heun solve driven by the same Brownian path (grids uniform in the path's time,
i.e. geometric in sigma for VE, so that they nest in the fine one).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .. import solvers as _solvers
from ..noise import BrownianPath
from ..sample import sample
from .metrics import pathwise_rms
from .problems import get_problem

__all__ = ["run_bench", "DEFAULT_NFES", "DEFAULT_SDE_NFES"]

DEFAULT_NFES = (10, 20, 50, 100)
DEFAULT_SDE_NFES = (16, 32, 64, 128)
_SDE_FINE = 2048


def _timed(fn, repeats: int):
    fn()  # warm-up
    times, out = [], None
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times))


def _ode_rows(problem, solver, grids, nfes, x, repeats):
    ref = problem.reference(x)
    rows = []
    for grid in grids:
        for nfe in nfes:
            try:
                sol, wall = _timed(lambda: sample(problem.path, problem.field(), solver, nfe=nfe, grid=grid,
                                                  x_init=x, **problem.sample_kwargs()), repeats)
            except ValueError as e:  # budget below the solver's minimum
                rows.append(dict(problem=problem.name, solver=solver, grid=grid, nfe_budget=nfe, nfe=None,
                                 error=None, metric="pathwise_rms", wall_s=None, note=str(e)))
                continue
            rows.append(dict(problem=problem.name, solver=solver, grid=grid, nfe_budget=nfe, nfe=sol.nfe,
                             error=pathwise_rms(sol.x, ref), metric="pathwise_rms", wall_s=wall))
    return rows


def _sde_rows(problem, solver, nfes, x, seed, repeats):
    s = _solvers.get(solver)
    train_grid = np.linspace(problem.t_max, problem.t_min, _SDE_FINE + 1)
    bm = BrownianPath(train_grid, generator=torch.Generator().manual_seed(seed + 1))
    kw = dict(final_denoise=problem.final_denoise)
    ref = sample(problem.path, problem.field(), "stochastic_heun", grid=train_grid, x_init=x, gamma="reverse",
                 noise=bm, **kw).x
    rows = []
    for nfe in nfes:
        steps = s.max_steps(nfe - (1 if problem.final_denoise else 0))
        if steps < 1:
            continue
        steps = 1 << (steps.bit_length() - 1)  # a power of two, so the grid nests in the fine one
        grid = train_grid[:: _SDE_FINE // steps]
        sol, wall = _timed(lambda: sample(problem.path, problem.field(), solver, grid=grid, x_init=x,
                                          gamma="reverse", noise=bm, **kw), repeats)
        rows.append(dict(problem=problem.name, solver=solver, grid="uniform", nfe_budget=nfe,
                         nfe=sol.nfe, error=pathwise_rms(sol.x, ref), metric="strong_rms", wall_s=wall))
    return rows


def run_bench(problems=("eight_gaussians",), solvers=None, nfes=DEFAULT_NFES, sde_nfes=DEFAULT_SDE_NFES,
              grids=("karras",), n: int = 1000, seed: int = 0, dtype=torch.float64, device="cpu",
              repeats: int = 1, sde: bool = True) -> list[dict]:
    """Rows of ``{problem, solver, grid, nfe_budget, nfe, error, metric, wall_s}``."""
    if solvers is None:
        solvers = _solvers.available(needs="drift")
    rows = []
    for pname in problems:
        problem = get_problem(pname)
        x = problem.initial(n, seed, dtype=dtype, device=device)
        for solver in solvers:
            if _solvers.get(solver).sde:
                if sde:
                    rows += _sde_rows(problem, solver, sde_nfes, x, seed, repeats)
            else:
                rows += _ode_rows(problem, solver, grids, nfes, x, repeats)
    return rows
