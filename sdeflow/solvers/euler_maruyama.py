r"""Euler-Maruyama: :math:`x' = x + h\,f(x, t) + g(x, t)\,\Delta W`, :math:`\Delta W = \sqrt{|h|}\,z`.

Strong order 0.5 and weak order 1 for general Itô noise; strong order 1 for additive noise
(Kloeden & Platen 1992, Sections 10.2 and 14.1). With zero noise it is Euler's method.

On an affine term (drift :math:`A x + B n`, diffusion a float :math:`g`: the sampler's field, or a user's
drift with a number as diffusion, :attr:`sdeflow.terms.Term.affine`) the step is tabulated
(a :class:`~sdeflow.solvers.program.Program`, all steps at once, the method's definition) as
:math:`x' = (1 + hA)x + hB\,n + g\sqrt{|h|}\,z`: a scaled copy and two fused adds besides the draw.
A diffusion that is a tensor function of ``x`` (multiplicative or diagonal noise, ``sdeflow.solve``) has no
such form: :meth:`EulerMaruyama.step` writes that case by hand.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .base import SDESolver, add_noise, step_tables
from .program import Program

__all__ = ["EulerMaruyama"]


class EulerMaruyama(SDESolver):
    __doc__ = __doc__
    name = "euler_maruyama"
    order = 1
    strong_order = 0.5
    weak_order = 1.0
    strong_order_additive = 1.0
    weak_order_additive = 1.0
    evals_per_step = 1
    sde_type = "ito"

    def init_state(self, term, x, grid):
        if term.affine is None:  # g(x, t) a tensor: the hand-written step
            return {"program": None}

        def build():
            h, A, B, g = step_tables(term, grid, 1)
            A, B, g = A[:, 0], B[:, 0], g[:, 0]
            prog = Program(len(h)).net("n", "x", 1, 0)
            if np.any(g != 0.0):
                prog.draw("z", mask=g != 0.0)
            return prog.comb("x", 1.0 + h * A, [(h * B, "n"), (g * np.sqrt(np.abs(h)), "z")]).done()

        return {"program": self.cached_program(term, grid, build)}

    def step(self, term, k, x, t0, t1, noise, state):
        prog = state["program"]
        if prog is not None:
            return prog.step(term, k, x, t0, t1, noise, state)
        # a diffusion g(x, t) evaluated per step (multiplicative/diagonal noise): no tabulated form
        h = t1 - t0
        out = torch.add(x, term.drift(k, x), alpha=h)
        g = term.diffusion(k, x)
        if not (isinstance(g, float) and g == 0.0):
            add_noise(out, g, noise.draw(k, t0, t1, term.noise_like(x)), math.sqrt(abs(h)))
        return out
