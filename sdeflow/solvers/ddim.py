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

import numpy as np

from ..errors import SdeflowValueError

from .prediction import PredictionSolver
from .program import Program

__all__ = ["DDIM", "posterior_program", "PosteriorSolver", "neg_expm1"]


def posterior_program(term, tab: dict, mean_var, noise_var) -> Program:
    """``alpha_t x0 + sqrt(sigma_t^2 - mean_var) eps + sqrt(noise_var) z`` from one network evaluation at each
    step's start (``mean_var = noise_var`` for DDIM; DDPM's beta variance keeps the posterior mean), for every
    step at once (``mean_var``, ``noise_var``: arrays over the steps) as a
    :class:`~sdeflow.solvers.program.Program` ``x' = A x + B n (+ sd z)`` over ``(x, n, z)``, the predictions
    folded through the term's conversion tables. A step with ``noise_var = 0`` draws nothing."""
    S = len(tab["alpha"]) - 1
    Pd, Qd = (v[:S] for v in term.coeff_arrays("data"))
    Pe, Qe = (v[:S] for v in term.coeff_arrays("noise"))
    a1, s1 = np.asarray(tab["alpha"][1:]), np.asarray(tab["sigma"][1:])
    c = np.sqrt(np.maximum(s1 * s1 - np.asarray(mean_var, dtype=np.float64), 0.0))
    nv = np.asarray(noise_var, dtype=np.float64)
    sd = np.where(nv > 0.0, np.sqrt(np.maximum(nv, 0.0)), 0.0)
    prog = Program(S).net("n", "x", 1, 0)
    if np.any(sd > 0.0):
        prog.draw("z", mask=sd > 0.0)
    return prog.comb("x", a1 * Pd + c * Pe, [(a1 * Qd + c * Qe, "n"), (sd, "z")]).done()


def neg_expm1(h) -> np.ndarray:
    """:math:`1 - e^{-h}` elementwise with :func:`math.expm1` (numpy's ``expm1`` can differ in the last bit;
    sdeflow's tables use one implementation everywhere)."""
    return -np.array([math.expm1(-v) for v in np.asarray(h, dtype=np.float64).tolist()], dtype=np.float64)


class PosteriorSolver(PredictionSolver):
    """One network evaluation and one tabulated posterior update per step (DDIM, DDPM ancestral);
    subclasses give ``variances(tab) -> (mean_var, noise_var)``, arrays over the steps."""

    def variances(self, tab: dict) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def init_state(self, term, x, grid):
        tab = super().init_state(term, x, grid)
        tab["program"] = posterior_program(term, tab, *self.variances(tab))
        return tab

    def step(self, term, k, x, t0, t1, noise, tab):
        return tab["program"].step(term, k, x, t0, t1, noise, tab)


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

    def variances(self, tab):
        lam, s1 = np.asarray(tab["lam"]), np.asarray(tab["sigma"][1:])
        v = (self.eta * s1) ** 2 * neg_expm1(lam[1:] - lam[:-1]) if self.eta > 0 else np.zeros_like(s1)
        return v, v

    def __repr__(self):
        return f"DDIM(eta={self.eta})"
