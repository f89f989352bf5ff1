r"""Explicit Runge-Kutta methods from a Butcher tableau (fixed step).

For ``dx/dt = f(x, t)`` and step ``h``: stages :math:`k_i = f(x + h\sum_{j<i} a_{ij}k_j,\ t + c_i h)`,
update :math:`x' = x + h\sum_i b_i k_i`. Each stage combination is a chain of fused ``add(..., alpha)``
operations over the nonzero tableau entries.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from .base import ODESolver
from .tableau import ButcherTableau

__all__ = ["ExplicitRK", "combine"]


def combine(x: torch.Tensor, ks: list, row, h: float) -> torch.Tensor:
    """``x + h * sum_j row_j k_j`` over the nonzero ``(j, row_j)`` pairs of ``row``."""
    out = None
    for j, a in row:
        if out is None:
            out = torch.add(x, ks[j], alpha=h * a)
        else:
            out.add_(ks[j], alpha=h * a)
    return x if out is None else out


class ExplicitRK(ODESolver):
    """Base of the fixed-step explicit Runge-Kutta solvers; subclasses set ``tableau``."""

    tableau: ClassVar[ButcherTableau]

    def nodes(self):
        return list(self.tableau.c)

    def step(self, term, k, x, t0, t1, noise, state):
        tab = self.tableau
        h = t1 - t0
        j0 = k * tab.stages
        ks = [term.drift(j0, x)]
        for i in range(1, tab.stages):
            ks.append(term.drift(j0 + i, combine(x, ks, tab._rows[i], h)))
        return combine(x, ks, tab._brow, h)
