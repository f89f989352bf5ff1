r"""DEIS (Zhang & Chen 2022, "Fast Sampling of Diffusion Models with Exponential Integrator", ICLR 2023):
the log-rho multistep exponential integrator (:math:`\rho\mathrm{AB}`), as diffusers' ``DEISMultistepScheduler``
computes it (``algorithm_type="deis"``, ``solver_type="logrho"``, orders 1 to 3).

With :math:`\rho = \sigma/\alpha` the probability-flow ODE is :math:`d(x/\alpha) = \hat\varepsilon\,d\rho`, so

.. math:: \frac{x_t}{\alpha_t} = \frac{x_s}{\alpha_s} + \int_{\rho_s}^{\rho_t} P(\log\rho)\,d\rho,

:math:`P` the Lagrange polynomial through the last ``order`` noise predictions :math:`\hat\varepsilon_j` in
:math:`\log\rho_j` (diffusers integrates its basis in closed form, ``ind_fn``). Since
:math:`\log\rho = -\hat\lambda` (the half log-SNR) and :math:`d\rho = -e^{-\hat\lambda}d\hat\lambda`, this is
exactly the noise-prediction exponential multistep step with its interpolant integrated exactly,

.. math:: x_t = \frac{\alpha_t}{\alpha_s}x_s - \alpha_t\int_{\hat\lambda_s}^{\hat\lambda_t}
          e^{-\hat\lambda}P(\hat\lambda)\,d\hat\lambda
          = \frac{\alpha_t}{\alpha_s}x_s - \sigma_t h\sum_j w_j\hat\varepsilon_j,

which is :class:`~sdeflow.solvers.exp_multistep.ExpMultistep` with ``predict="noise"``, ``variant="exact"``
(one formula, :func:`~sdeflow.solvers.exponential.exp_coefficients`): order 1 is DDIM
(:math:`x_t = \frac{\alpha_t}{\alpha_s}x_s - \sigma_t(e^h - 1)\hat\varepsilon_s`, diffusers'
``deis_first_order_update``), orders 2 and 3 converge at their order (declared). The first steps use the
history they have; diffusers' ``lower_order_final`` (order 1 on the last step and at most 2 on the one before,
below 15 steps) is ``lower_order_final=True`` (:func:`sdeflow.from_diffusers` sets it).
"""

from __future__ import annotations

from ..errors import SdeflowValueError
from .exp_multistep import ExpMultistep

__all__ = ["DEIS"]


class DEIS(ExpMultistep):
    """DEIS, log-rho multistep (:math:`\\rho\\mathrm{AB}`; see the module docstring): noise prediction,
    ``order`` 1 to 3 (diffusers' ``solver_order``; default 3, as the paper's DEIS-3), ``lower_order_final`` and
    ``startup`` as :class:`~sdeflow.solvers.exp_multistep.ExpMultistep`."""

    name = "deis"
    order = 3

    def __init__(self, order: int = 3, lower_order_final: bool | int = False, startup: str = "lower_order"):
        if order not in (1, 2, 3):
            raise SdeflowValueError(f"DEIS order must be 1, 2 or 3 (diffusers' solver_order), got {order!r}")
        super().__init__(order, "noise", "exact", lower_order_final=lower_order_final, startup=startup)

    def __repr__(self):
        return f"DEIS(order={self.steps_order}, lower_order_final={self.lower_order_final}, startup={self.startup!r})"
