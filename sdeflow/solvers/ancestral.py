r"""DDPM's ancestral sampler (Ho et al. 2020, Algorithm 2) on any Gaussian path and any grid.

From :math:`s` to :math:`t < s`: the posterior mean of :math:`q(x_t | x_s, \hat x_0)` plus Gaussian noise of
variance

* ``variance="posterior"``: :math:`\tilde\beta = \sigma_t^2(1 - e^{-h})` (the exact posterior; the same
  update as DDIM with ``eta = 1``), or
* ``variance="beta"``: :math:`\beta = \sigma_s^2(1 - e^{-h})`, the forward step's variance
  (:math:`\sigma_{s|t}^2 = \sigma_s^2 - (\alpha_s/\alpha_t)^2\sigma_t^2`),

with :math:`h = \lambda_t - \lambda_s`. On a :class:`~sdeflow.paths.DiscreteVP` grid of adjacent knots these
are DDPM's :math:`\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t` and :math:`\beta_t`.
As in Ho et al., no noise is added on a step that ends at :math:`\sigma_t = 0`. One evaluation per step.
"""

from __future__ import annotations

import numpy as np

from ..errors import SdeflowValueError
from .ddim import PosteriorSolver, neg_expm1

__all__ = ["Ancestral"]


class Ancestral(PosteriorSolver):
    __doc__ = __doc__
    name = "ancestral"
    order = 1
    evals_per_step = 1
    stochastic = True

    def __init__(self, variance: str = "posterior"):
        if variance not in ("posterior", "beta"):
            raise SdeflowValueError(f"variance must be 'posterior' (beta tilde) or 'beta', got {variance!r}")
        self.variance = variance

    def variances(self, tab):
        lam, sig = np.asarray(tab["lam"]), np.asarray(tab["sigma"])
        s0, s1 = sig[:-1], sig[1:]
        e = neg_expm1(lam[1:] - lam[:-1])
        posterior = s1 * s1 * e
        v = posterior if self.variance == "posterior" else s0 * s0 * e
        return posterior, np.where(s1 == 0.0, 0.0, v)

    def __repr__(self):
        return f"Ancestral(variance={self.variance!r})"
