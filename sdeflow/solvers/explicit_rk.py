r"""Explicit Runge-Kutta methods from a Butcher tableau (fixed step).

For ``dx/dt = f(x, t)`` and step ``h``: stages :math:`k_i = f(x + h\sum_{j<i} a_{ij}k_j,\ t + c_i h)`,
update :math:`x' = x + h\sum_i b_i k_i`. Each stage combination is a chain of fused ``add(..., alpha)``
operations over the nonzero tableau entries.

On an affine term (the sampler's, :math:`k_i = A_i X_i + B_i n_i` with network outputs :math:`n_i` and stage
inputs :math:`X_i`, :math:`X_0 = x`) the drifts are never formed: each stage input and the update are
tabulated once per solve as :math:`X_i = (1 + h a_{i0} A_0)x + h\sum_{l<i} a_{il}(A_l [l>0] X_l + B_l n_l)`
(:class:`~sdeflow.solvers.base.Row`), so Euler is two tensor operations per step (one when :math:`A = 0`).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from .base import ODESolver, Row, affine_tables, lincomb
from .tableau import ButcherTableau

__all__ = ["ExplicitRK", "combine", "fold_rk"]


def combine(x: torch.Tensor, ks: list, row, h: float) -> torch.Tensor:
    """``x + h * sum_j row_j k_j`` over the nonzero ``(j, row_j)`` pairs of ``row``."""
    out = None
    for j, a in row:
        if out is None:
            out = torch.add(x, ks[j], alpha=h * a)
        else:
            out.add_(ks[j], alpha=h * a)
    return x if out is None else out


def fold_rk(tab: ButcherTableau, A: list, B: list, grid: list[float]) -> list[tuple[Row, ...]]:
    """Per step: the :class:`Row` of every stage input ``X_1..X_{s-1}`` and of the update, over the
    buffer ``[x, n_0, X_1, n_1, X_2, n_2, ...]`` (``n_l`` at ``buf[2l + 1]``, ``X_l`` at ``buf[2l]``)."""
    s = tab.stages
    rows = list(tab._rows[1:]) + [tab._brow]
    plan = []
    for k in range(len(grid) - 1):
        h = grid[k + 1] - grid[k]
        j0 = k * s
        step_rows = []
        for row in rows:
            cx, pairs = 1.0, []
            for l, a in row:
                Al, Bl = A[j0 + l], B[j0 + l]
                if l == 0:
                    cx += h * a * Al
                else:
                    pairs.append((h * a * Al, 2 * l))
                pairs.append((h * a * Bl, 2 * l + 1))
            step_rows.append(Row(cx, pairs))
        plan.append(tuple(step_rows))
    return plan


class ExplicitRK(ODESolver):
    """Base of the fixed-step explicit Runge-Kutta solvers; subclasses set ``tableau``."""

    tableau: ClassVar[ButcherTableau]

    def nodes(self):
        return list(self.tableau.c)

    def init_state(self, term, x, grid):
        aff = affine_tables(term)
        return {"fold": None if aff is None else fold_rk(self.tableau, aff[0], aff[1], grid)}

    def step(self, term, k, x, t0, t1, noise, state):
        fold = state.get("fold")
        if fold is not None:
            rows = fold[k]
            net = term.net
            j0 = k * len(rows)
            buf = [x, net(j0, x)]
            for i in range(1, len(rows)):
                xi = lincomb(x, rows[i - 1], buf)
                buf.append(xi)
                buf.append(net(j0 + i, xi))
            return lincomb(x, rows[-1], buf)
        tab = self.tableau
        h = t1 - t0
        j0 = k * tab.stages
        ks = [term.drift(j0, x)]
        for i in range(1, tab.stages):
            ks.append(term.drift(j0 + i, combine(x, ks, tab._rows[i], h)))
        return combine(x, ks, tab._brow, h)
