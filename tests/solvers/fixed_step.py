"""A fixed-step solver's loop on a prebuilt sampler term (what ``sdeflow.sample`` runs after its setup), shared by
``test_compile.py`` and ``test_programs.py``: a Gaussian target's noise field on VP, SDE solvers at gamma =
``GAMMA``, normals from a TableNoise (equal seeds give identical tables and normals)."""

import numpy as np
import torch

import sdeflow as sf
from sdeflow import solvers
from sdeflow.grids import make_grid
from sdeflow.noise import TableNoise
from sdeflow.terms import FieldTerm

BATCH, STEPS = 16, 4
PATH = sf.VP()
TARGET = sf.Gaussian(torch.zeros(2, dtype=torch.float64), torch.full((2,), 0.25, dtype=torch.float64))
GAMMA = 0.7


def setup(name: str, seed: int = 0):
    """A fresh ``(solver, term, x0, grid, noise)`` for solver ``name``."""
    s = solvers.get(name)
    grid = make_grid("uniform", PATH, STEPS, 1.0, 1e-3).numpy()
    times, step_of = s.eval_times(grid, PATH)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(BATCH, 2, generator=gen)
    term = FieldTerm(PATH, TARGET.field("noise"), times, x0, step_of=step_of,
                     gamma2=np.full(len(times), GAMMA ** 2) if s.sde else None,
                     gamma2_fn=(lambda t: torch.full_like(t, GAMMA ** 2)) if s.sde else None)
    noise = TableNoise([torch.randn(BATCH, 2, generator=gen) for _ in range(STEPS)])
    return s, term, x0, grid.tolist(), noise
