r"""Linear multistep (variable-step Adams-Bashforth) on the drift, as k-diffusion's ``sample_lms``.

Step ``k`` evaluates the drift once, at the step's start :math:`t_k`, and integrates the Lagrange polynomial
through the last :math:`q = \min(k + 1, \text{order})` drifts :math:`d_{k-j}` (at :math:`t_{k-j}`) exactly:

.. math:: x_{k+1} = x_k + \sum_{j=0}^{q-1} c_{kj}\,d_{k-j},\qquad
          c_{kj} = \int_{t_k}^{t_{k+1}} \prod_{l \ne j,\ l < q}\frac{\tau - t_{k-l}}{t_{k-j} - t_{k-l}}\,d\tau

(the coefficients by 8-point Gauss-Legendre on each step, exact to rounding for these polynomials of degree
< 8; k-diffusion integrates the same polynomials with ``scipy.integrate.quad``, also exact to rounding).
The first steps use the drifts available (Euler, then 2, 3, ... steps), as k-diffusion does.

On ``sdeflow.EDM(S)`` (sigma = S t, alpha = 1) the drift is ``S`` times k-diffusion's
``d = (x - D)/sigma`` and polynomials in t are polynomials in sigma, so this is ``sample_lms`` to rounding
(order 4 by default; the step into sigma = 0 included). On other paths it is the same scheme in the path's
time.

**Order.** Adams-Bashforth with ``q`` drifts has local error :math:`O(h^{q+1})`, but the start-up steps
(Euler first) have local error :math:`O(h^2)`, :math:`O(h^3)`, ..., so the global order is
``min(order, 2)``: declared 2 for ``order >= 2`` (the start-up steps sit at high noise, where the drift is
nearly linear, so the error constant of that term is small and the higher-order steps dominate at practical
step counts). Reference: k-diffusion ``sampling.py`` (``linear_multistep_coeff``, ``sample_lms``);
Hairer, Norsett & Wanner 1993, Sec. III.5 (variable-step Adams methods).
"""

from __future__ import annotations

import numpy as np

from ..errors import SdeflowValueError
from .base import ODESolver

__all__ = ["LMS", "lms_coefficients"]

_GL_X, _GL_W = np.polynomial.legendre.leggauss(8)
_GL_U, _GL_W = 0.5 * (_GL_X + 1.0), 0.5 * _GL_W


def lms_coefficients(grid, order: int) -> list[list[float]]:
    """Per step ``k`` of ``grid``, the weights ``c_kj`` (``j = 0..q-1``, newest drift first)."""
    t = np.asarray(grid, dtype=np.float64)
    out = []
    for k in range(len(t) - 1):
        q = min(k + 1, order)
        tau = t[k] + (t[k + 1] - t[k]) * _GL_U
        row = []
        for j in range(q):
            basis = np.ones_like(tau)
            for m in range(q):
                if m != j:
                    basis = basis * (tau - t[k - m]) / (t[k - j] - t[k - m])
            row.append(float((t[k + 1] - t[k]) * np.sum(_GL_W * basis)))
        out.append(row)
    return out


class LMS(ODESolver):
    __doc__ = __doc__ + "\n    Args:\n        order: how many drifts the polynomial interpolates, 1 to 4 (default 4).\n"
    name = "lms"
    order = 2
    evals_per_step = 1
    #: the start-up's O(h^2) term overtakes the Adams-Bashforth steps' error late: local slopes 2.15, 2.04,
    #: 2.02 (VP), 2.27, 2.07, 2.01 (SubVP) from 128 to 1024 steps, but 2.8-3.0 at 32-64 steps
    pre_asymptotic_factor = 4
    carried = ("hist",)  # the last drifts, newest first

    def __init__(self, order: int = 4):
        if order not in (1, 2, 3, 4):
            raise SdeflowValueError(f"lms order must be 1, 2, 3 or 4, got {order!r}")
        self.steps_order = int(order)
        self.order = min(self.steps_order, 2)

    def init_state(self, term, x, grid):
        return {"coef": lms_coefficients(grid, self.steps_order), "hist": []}

    def step(self, term, k, x, t0, t1, noise, st):
        hist = st["hist"]
        hist.insert(0, term.drift(k, x))
        del hist[self.steps_order:]
        out = None
        for c, d in zip(st["coef"][k], hist):
            out = x.add(d, alpha=c) if out is None else out.add_(d, alpha=c)
        return out

    def __repr__(self):
        return f"LMS(order={self.steps_order})"

