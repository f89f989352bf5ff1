r"""Stochastic Heun (the trapezoidal predictor-corrector for SDEs).

.. math::
   \tilde x = x + h f(x, t) + g(x, t)\Delta W, \qquad
   x' = x + \tfrac h2[f(x, t) + f(\tilde x, t + h)] + \tfrac12[g(x, t) + g(\tilde x, t + h)]\Delta W.

It converges to the Stratonovich solution: strong order 0.5 in general (1 for commutative noise); for
additive noise, where Itô and Stratonovich agree, strong order 1 and weak order 2 (the trapezoidal
:math:`g` makes the variance of the noise increment exact to :math:`O(h^3)` per step). Two field
evaluations per step. References: Kloeden & Platen 1992, Section 15.1; Rümelin 1982.

On an affine term (drift :math:`A_j x + B_j n_j`, float :math:`g_j`: the sampler's field, or a user's drift
with a number as diffusion, :attr:`sdeflow.terms.Term.affine`) both combinations are tabulated once per
solve over :math:`(x, n_0, z, \tilde x, n_1)` (a :class:`~sdeflow.solvers.program.Program`, the method's
definition): :math:`\tilde x = (1 + hA_0)x + hB_0 n_0 + g_0\sqrt{|h|}z`,
:math:`x' = (1 + \tfrac h2 A_0)x + \tfrac h2(B_0 n_0 + A_1\tilde x + B_1 n_1) + \tfrac12(g_0 + g_1)\sqrt{|h|}z`.
A diffusion that is a tensor function of ``x`` (``sdeflow.solve`` with a callable ``diffusion``) has no
such form: :meth:`StochasticHeun.step` writes that case by hand.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .base import SDESolver, add_noise, step_tables
from .program import Program

__all__ = ["StochasticHeun"]


class StochasticHeun(SDESolver):
    __doc__ = __doc__
    name = "stochastic_heun"
    order = 2
    strong_order = 0.5
    weak_order = 1.0
    strong_order_additive = 1.0
    weak_order_additive = 2.0
    evals_per_step = 2
    sde_type = "stratonovich"

    def nodes(self):
        return [0.0, 1.0]

    def init_state(self, term, x, grid):
        if term.affine is None:  # g(x, t) a tensor: the hand-written step
            return {"program": None}

        def build():
            h, A, B, g = step_tables(term, grid, 2)
            sq = np.sqrt(np.abs(h))
            prog = Program(len(h)).net("n0", "x", 2, 0)
            if term.is_sde:  # one draw per step of an SDE, as the generic step
                prog.draw("z")
            prog.comb("p", 1.0 + h * A[:, 0], [(h * B[:, 0], "n0"), (g[:, 0] * sq, "z")]).net("n1", "p", 2, 1)
            prog.comb("x", 1.0 + 0.5 * h * A[:, 0], [(0.5 * h * B[:, 0], "n0"), (0.5 * h * A[:, 1], "p"),
                                                      (0.5 * h * B[:, 1], "n1"),
                                                      (0.5 * (g[:, 0] + g[:, 1]) * sq, "z")])
            return prog.done()

        return {"program": self.cached_program(term, grid, build)}

    def step(self, term, k, x, t0, t1, noise, state):
        prog = state["program"]
        if prog is not None:
            return prog.step(term, k, x, t0, t1, noise, state)
        # a diffusion g(x, t) evaluated at both stages (multiplicative/diagonal noise): no tabulated form
        h = t1 - t0
        j = 2 * k
        f0 = term.drift(j, x)
        pred = torch.add(x, f0, alpha=h)
        g0 = term.diffusion(j, x)
        sq = math.sqrt(abs(h))
        z = noise.draw(k, t0, t1, term.noise_like(x))
        add_noise(pred, g0, z, sq)
        f1 = term.drift(j + 1, pred)
        out = torch.add(x, f0, alpha=0.5 * h).add_(f1, alpha=0.5 * h)
        return add_noise(out, 0.5 * (g0 + term.diffusion(j + 1, pred)), z, sq)
