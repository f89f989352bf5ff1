r"""Euler-Maruyama: :math:`x' = x + h\,f(x, t) + g(x, t)\,\Delta W`, :math:`\Delta W = \sqrt{|h|}\,z`.

Strong order 0.5 and weak order 1 for general Itô noise; strong order 1 for additive noise
(Kloeden & Platen 1992, Sections 10.2 and 14.1). With zero noise it is Euler's method.
"""

from __future__ import annotations

import math

import torch

from .base import SDESolver, add_noise

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

    def step(self, term, k, x, t0, t1, noise, state):
        h = t1 - t0
        out = torch.add(x, term.drift(k, x), alpha=h)
        if term.is_sde:
            g = term.diffusion(k, x)
            if not (isinstance(g, float) and g == 0.0):
                add_noise(out, g, noise.draw(k, t0, t1, term.noise_like(x)), math.sqrt(abs(h)))
        return out
