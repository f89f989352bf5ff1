r"""SRA1 (Rößler 2010): strong order 1.5 for SDEs with additive noise :math:`dx = f(x,t)dt + g(t)dW`.

With :math:`\Delta W` and :math:`\chi = \Delta Z/h`, :math:`\Delta Z = \int_t^{t+h}(W_s - W_t)ds`
(drawn jointly, :mod:`sdeflow.noise`):

.. math::
   H = x + \tfrac34 h f(x, t) + \tfrac32 g(t + h)\chi,\qquad
   x' = x + h\big[\tfrac13 f(x,t) + \tfrac23 f(H, t + \tfrac34 h)\big] + g(t+h)(\Delta W - \chi) + g(t)\chi.

(Rößler's SRA tableau: :math:`c_0 = (0, \tfrac34)`, :math:`c_1 = (1, 0)`, :math:`A_0 = [[0,0],[\tfrac34,0]]`,
:math:`B_0 = [[0,0],[\tfrac32,0]]`, :math:`\alpha = (\tfrac13,\tfrac23)`, :math:`\beta_1 = (1,0)`,
:math:`\beta_2 = (-1,1)`.) Reverse-time steps use :math:`|h|` for the noise. Two evaluations per step;
with zero noise it is the explicit two-stage second-order Runge-Kutta method with :math:`c_2 = \tfrac34`,
:math:`b = (\tfrac13, \tfrac23)` (not Ralston's, whose :math:`c_2 = \tfrac23`, :math:`b = (\tfrac14, \tfrac34)`).
Reference: A. Rößler, SIAM J. Numer. Anal. 48 (2010) (the method SRA1 there; SRA3 is its three-stage
sibling of weak order 3).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .base import SDESolver, add_noise

__all__ = ["SRA1"]


class SRA1(SDESolver):
    __doc__ = __doc__
    name = "sra1"
    order = 2
    strong_order = None
    weak_order = None
    strong_order_additive = 1.5
    weak_order_additive = 2.0
    evals_per_step = 2
    sde_type = "additive"
    requires_additive = True
    normals_per_step = 2

    def nodes(self):
        return [0.0, 0.75]

    def init_state(self, term, x, grid):
        fn = term.gamma2_fn
        if fn is not None:  # the sampler's additive noise: gamma at the grid times, once
            return {"g": torch.sqrt(fn(torch.as_tensor(np.asarray(grid)))).tolist()}
        return {"g": None}

    def step(self, term, k, x, t0, t1, noise, st):
        h = t1 - t0
        j = 2 * k
        f0 = term.drift(j, x)
        if not term.is_sde:
            f1 = term.drift(j + 1, torch.add(x, f0, alpha=0.75 * h))
            return torch.add(x, f0, alpha=h / 3).add_(f1, alpha=2 * h / 3)
        if st["g"] is not None:
            g0, g1 = st["g"][k], st["g"][k + 1]
        else:
            g0, g1 = term.diffusion_at(t0, x), term.diffusion_at(t1, x)
        z1, z2 = noise.draw(k, t0, t1, term.noise_like(x), 2)
        sq = math.sqrt(abs(h))
        chi = (0.5 * sq) * (z1 + z2 * (1.0 / math.sqrt(3.0)))  # Delta Z / |h|
        H = add_noise(torch.add(x, f0, alpha=0.75 * h), g1, chi, 1.5)
        f1 = term.drift(j + 1, H)
        out = torch.add(x, f0, alpha=h / 3).add_(f1, alpha=2 * h / 3)
        add_noise(out, g1, z1, sq)
        return add_noise(out, g0 - g1, chi, 1.0)
