r"""DDIM (Song, Meng & Ermon 2021), on any Gaussian path; with ``eta = 0`` it is DPM-Solver-1 / the
first-order exponential integrator of the probability-flow ODE (Lu et al. 2022).

From :math:`s` to :math:`t` (:math:`h = \lambda_t - \lambda_s > 0`, :math:`\lambda = \log\alpha^2/\sigma^2`):

.. math::
   x_t = \alpha_t\hat x_0 + \sqrt{\sigma_t^2 - \sigma_\eta^2}\,\hat\varepsilon + \sigma_\eta z,\qquad
   \sigma_\eta = \eta\,\sigma_t\sqrt{1 - e^{-h}},

with :math:`\hat x_0, \hat\varepsilon` the field's predictions at :math:`(x_s, s)`. ``eta = 1`` draws from
the posterior :math:`q(x_t | x_s, \hat x_0)` (DDPM's ancestral step with variance
:math:`\tilde\beta`). Works on any subsequence of a :class:`~sdeflow.paths.DiscreteVP`'s steps (pass its
knots as the grid) and on any continuous path. One evaluation per step. Order 1.
"""

from __future__ import annotations

import math

import torch

from ..errors import SdeflowValueError
from .base import Row, lincomb
from .prediction import PredictionSolver, expm1_neg

__all__ = ["DDIM", "posterior_step", "posterior_rows", "PosteriorSolver"]


def posterior_step(term, k: int, x, tab: dict, mean_var: float, noise_var: float, t0: float, t1: float,
                   noise):
    """``alpha_t x0 + sqrt(sigma_t^2 - mean_var) eps + sqrt(noise_var) z`` from one network evaluation at
    step ``k``'s start (``mean_var = noise_var`` for DDIM; DDPM's beta variance keeps the posterior mean).

    The deterministic part is one fused operation on ``(x, n)`` from the term's conversion tables.
    """
    a1, s1 = tab["alpha"][k + 1], tab["sigma"][k + 1]
    c = math.sqrt(max(s1 * s1 - mean_var, 0.0))
    n = term.net(k, x)
    Pd, Qd = term.coeffs("data")
    Pe, Qe = term.coeffs("noise")
    A = a1 * Pd[k] + c * Pe[k]
    B = a1 * Qd[k] + c * Qe[k]
    out = torch.add(x * A, n, alpha=B) if A != 0.0 else n * B
    if noise_var > 0.0:
        out.add_(noise.draw(k, t0, t1, x), alpha=math.sqrt(noise_var))
    return out


def posterior_rows(term, tab: dict, variances) -> list[tuple[Row, bool]]:
    """Per step ``k``, the update of :func:`posterior_step` with ``variances(k) = (mean_var, noise_var)`` as a
    :class:`~sdeflow.solvers.base.Row` over ``(x, n, z)``, tabulated once per solve, and whether it draws."""
    Pd, Qd = term.coeffs("data")
    Pe, Qe = term.coeffs("noise")
    rows = []
    for k in range(len(tab["alpha"]) - 1):
        mean_var, noise_var = variances(k)
        a1, s1 = tab["alpha"][k + 1], tab["sigma"][k + 1]
        c = math.sqrt(max(s1 * s1 - mean_var, 0.0))
        A = a1 * Pd[k] + c * Pe[k]
        B = a1 * Qd[k] + c * Qe[k]
        sd = math.sqrt(noise_var) if noise_var > 0.0 else 0.0
        rows.append((Row(A, ((B, 1), (sd, 2))), sd > 0.0))
    return rows


class PosteriorSolver(PredictionSolver):
    """One network evaluation and one tabulated posterior update per step (DDIM, DDPM ancestral);
    subclasses give ``variances(tab, k) -> (mean_var, noise_var)``."""

    def variances(self, tab: dict, k: int) -> tuple[float, float]:
        raise NotImplementedError

    def init_state(self, term, x, grid):
        tab = super().init_state(term, x, grid)
        tab["rows"] = posterior_rows(term, tab, lambda k: self.variances(tab, k))
        return tab

    def step(self, term, k, x, t0, t1, noise, tab):
        row, noisy = tab["rows"][k]
        return lincomb(x, row, [x, term.net(k, x), noise.draw(k, t0, t1, x) if noisy else None])


class DDIM(PosteriorSolver):
    __doc__ = __doc__
    name = "ddim"
    order = 1
    evals_per_step = 1

    def __init__(self, eta: float = 0.0):
        eta = float(eta)
        if not 0.0 <= eta <= 1.0:
            raise SdeflowValueError(f"eta must be in [0, 1], got {eta}")
        self.eta = eta
        self.stochastic = eta > 0

    def variances(self, tab, k):
        h = tab["lam"][k + 1] - tab["lam"][k]
        s1 = tab["sigma"][k + 1]
        v = (self.eta * s1) ** 2 * expm1_neg(h) if self.eta > 0 else 0.0
        return v, v

    def __repr__(self):
        return f"DDIM(eta={self.eta})"
