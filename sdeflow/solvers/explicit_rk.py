r"""Explicit Runge-Kutta methods from a Butcher tableau (fixed step).

For ``dx/dt = f(x, t)`` and step ``h``: stages :math:`k_i = f(x + h\sum_{j<i} a_{ij}k_j,\ t + c_i h)`,
update :math:`x' = x + h\sum_i b_i k_i`.

Every term presents its drift in the affine form :math:`k_i = A_i X_i + B_i n_i` (network outputs
:math:`n_i` at stage inputs :math:`X_i`, :math:`X_0 = x`; the sampler's field, or a user's drift as
:math:`A = 0`, :math:`B = 1`, see :attr:`sdeflow.terms.Term.affine`), so the drifts are never formed: each
stage input and the update are tabulated once per solve, for all steps at once, as
:math:`X_i = (1 + h a_{i0} A_0)x + h\sum_{l<i} a_{il}(A_l [l>0] X_l + B_l n_l)`
(a :class:`~sdeflow.solvers.program.Program`, the method's only definition), so Euler is two tensor
operations per step (one when :math:`A = 0`).

A subclass sets ``name`` and ``tableau``; its ``order`` and ``evals_per_step`` are the tableau's
(``sdeflow/solvers/ssprk3.py`` is a complete example).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from ..errors import SdeflowTypeError
from .base import ODESolver, step_tables
from .program import Program
from .tableau import ButcherTableau

__all__ = ["ExplicitRK", "combine", "rk_program"]


def combine(x: torch.Tensor, ks: list, row, h: float) -> torch.Tensor:
    """``x + h * sum_j row_j k_j`` over the nonzero ``(j, row_j)`` pairs of ``row`` (the stages of the adaptive
    solvers, whose steps are not planned)."""
    out = None
    for j, a in row:
        if out is None:
            out = torch.add(x, ks[j], alpha=h * a)
        else:
            out.add_(ks[j], alpha=h * a)
    return x if out is None else out


def rk_program(tab: ButcherTableau, h: np.ndarray, A: np.ndarray, B: np.ndarray) -> Program:
    """The :class:`~sdeflow.solvers.program.Program` of ``tab`` on an affine term (``h``, ``A``, ``B`` from
    :func:`~sdeflow.solvers.base.step_tables`): stage ``i`` evaluates ``n_i`` at ``y_i`` (``y_0 = x``) and the
    stage inputs and update are ``(1 + h a_{i0} A_0) x + h sum_l a_{il} (A_l [l > 0] y_l + B_l n_l)``, all
    steps' coefficients at once."""
    s = tab.stages
    prog = Program(len(h)).net("n0", "x", s, 0)
    rows = list(tab._rows[1:]) + [tab._brow]
    for i, row in enumerate(rows, start=1):
        cx, terms = 1.0, []
        for l, a in row:
            if l == 0:
                cx = cx + h * a * A[:, 0]
            else:
                terms.append((h * a * A[:, l], f"y{l}"))
            terms.append((h * a * B[:, l], f"n{l}"))
        if i < s:
            prog.comb(f"y{i}", cx, terms).net(f"n{i}", f"y{i}", s, i)
        else:
            prog.comb("x", cx, terms)
    return prog.done()


class ExplicitRK(ODESolver):
    """Base of the fixed-step explicit Runge-Kutta solvers: a subclass sets ``name`` and ``tableau``; its
    ``order`` and ``evals_per_step`` are derived from the tableau (stating them too is allowed only if they
    agree)."""

    tableau: ClassVar[ButcherTableau]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        tab = cls.__dict__.get("tableau")
        if tab is None:
            return
        for key in ("order", "evals_per_step"):
            derived = getattr(tab, key)
            stated = cls.__dict__.get(key, derived)
            if stated != derived:
                raise SdeflowTypeError(f"{cls.__name__}.{key} = {stated!r} but its tableau declares {derived!r}; "
                                       f"omit {key} (it is derived from the tableau)")
            setattr(cls, key, derived)

    def nodes(self):
        return list(self.tableau.c)

    def init_state(self, term, x, grid):
        tab = self.tableau
        if term.affine is None:  # a term with a drift only: the affine form A = 0, B = 1, its drift the network
            h = np.diff(np.asarray(grid, dtype=np.float64))
            ones = np.ones((len(h), tab.stages))
            return {"program": rk_program(tab, h, 0.0 * ones, ones), "net": DriftAsNetwork(term)}
        prog = self.cached_program(term, grid, lambda: rk_program(tab, *step_tables(term, grid, tab.stages)[:3]))
        return {"program": prog}

    def step(self, term, k, x, t0, t1, noise, state):
        return state["program"].step(state.get("net", term), k, x, t0, t1, noise, state)


class DriftAsNetwork:
    """A term that has a drift only (no ``affine`` form), seen in the affine form a step program reads:
    :math:`A = 0`, :math:`B = 1` and ``net(j, x) = term.drift(j, x)``."""

    __slots__ = ("term",)

    def __init__(self, term):
        self.term = term

    def net(self, j: int, x):
        return self.term.drift(j, x)

    def noise_like(self, x):
        return self.term.noise_like(x)
