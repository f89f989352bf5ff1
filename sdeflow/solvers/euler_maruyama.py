r"""Euler-Maruyama: :math:`x' = x + h\,f(x, t) + g(x, t)\,\Delta W`, :math:`\Delta W = \sqrt{|h|}\,z`.

Strong order 0.5 and weak order 1 for general Itô noise; strong order 1 for additive noise
(Kloeden & Platen 1992, Sections 10.2 and 14.1). With zero noise it is Euler's method.

On the sampler's affine term (drift :math:`A x + B n`, diffusion a float :math:`g`) the step is tabulated
as :math:`x' = (1 + hA)x + hB\,n + g\sqrt{|h|}\,z`: a scaled copy and two fused adds besides the draw.
"""

from __future__ import annotations

import math

import torch

from .base import Row, SDESolver, add_noise, affine_tables, lincomb

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
        aff = affine_tables(term)
        if aff is None:
            return {"fold": None}
        A, B, g = aff
        fold = []
        for k in range(len(grid) - 1):
            h = grid[k + 1] - grid[k]
            gk = g[k] if term.is_sde else 0.0
            fold.append((Row(1.0 + h * A[k], ((h * B[k], 1), (gk * math.sqrt(abs(h)), 2))), gk != 0.0))
        return {"fold": fold}

    def step(self, term, k, x, t0, t1, noise, state):
        fold = state.get("fold")
        if fold is not None:
            row, noisy = fold[k]
            buf = [x, term.net(k, x), noise.draw(k, t0, t1, x) if noisy else None]
            return lincomb(x, row, buf)
        h = t1 - t0
        out = torch.add(x, term.drift(k, x), alpha=h)
        if term.is_sde:
            g = term.diffusion(k, x)
            if not (isinstance(g, float) and g == 0.0):
                add_noise(out, g, noise.draw(k, t0, t1, term.noise_like(x)), math.sqrt(abs(h)))
        return out
