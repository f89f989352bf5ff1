r"""Stochastic Heun (the trapezoidal predictor-corrector for SDEs).

.. math::
   \tilde x = x + h f(x, t) + g(x, t)\Delta W, \qquad
   x' = x + \tfrac h2[f(x, t) + f(\tilde x, t + h)] + \tfrac12[g(x, t) + g(\tilde x, t + h)]\Delta W.

It converges to the Stratonovich solution: strong order 0.5 in general (1 for commutative noise); for
additive noise, where Itô and Stratonovich agree, strong order 1 and weak order 2 (the trapezoidal
:math:`g` makes the variance of the noise increment exact to :math:`O(h^3)` per step). Two field
evaluations per step. References: Kloeden & Platen 1992, Section 15.1; Rümelin 1982.
"""

from __future__ import annotations

import math

import torch

from .base import SDESolver, add_noise

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

    def step(self, term, k, x, t0, t1, noise, state):
        h = t1 - t0
        j = 2 * k
        f0 = term.drift(j, x)
        pred = torch.add(x, f0, alpha=h)
        sde = term.is_sde
        if sde:
            g0 = term.diffusion(j, x)
            sq = math.sqrt(abs(h))
            z = noise.draw(k, t0, t1, term.noise_like(x))
            add_noise(pred, g0, z, sq)
        f1 = term.drift(j + 1, pred)
        out = torch.add(x, f0, alpha=0.5 * h).add_(f1, alpha=0.5 * h)
        if sde:
            add_noise(out, 0.5 * (g0 + term.diffusion(j + 1, pred)), z, sq)
        return out
