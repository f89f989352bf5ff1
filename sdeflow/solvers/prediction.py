r"""Base of the solvers that step with a field's data/noise predictions on a Gaussian path.

These solvers (DDIM, DDPM ancestral, exponential integrators) need the path's :math:`\alpha, \sigma,
\lambda` at the grid times and the field's :math:`\hat x_0` / :math:`\hat\varepsilon` there, so they run
only from :func:`sdeflow.sample`. Each prediction is one fused operation on the network output
(``FieldTerm.predict``); path transfer works unchanged (predictions of ``x_0`` and ``eps`` do not depend
on the coordinates).
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Solver

__all__ = ["PredictionSolver", "path_tables"]


def path_tables(term, grid: list[float]) -> dict:
    """Per grid point: ``alpha``, ``sigma``, ``lam`` (log-SNR) and ``half`` (= lam / 2), as Python floats."""
    t = torch.as_tensor(np.asarray(grid, dtype=np.float64))
    a, s, _, _ = term.ipath.coefficients(t)
    lam = term.ipath.log_snr(t)
    return {"alpha": a.tolist(), "sigma": s.tolist(), "lam": lam.tolist(),
            "half": (0.5 * lam).tolist()}


class PredictionSolver(Solver):
    """A solver that needs ``FieldTerm`` predictions (``needs = "prediction"``)."""

    needs = "prediction"
    targets = ("data", "noise")
    stochastic: bool = False  # draws its own noise (set by eta or a variance rule, not by gamma)

    def init_state(self, term, x, grid):
        return path_tables(term, grid)

