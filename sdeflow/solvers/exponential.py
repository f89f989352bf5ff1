r"""Shared mathematics of the exponential integrators (DPM-Solver family, UniPC, SDE-DPM-Solver++).

With the half log-SNR :math:`\hat\lambda = \log(\alpha/\sigma)` as time, the reverse-family dynamics with
:math:`\gamma_t^2 = \eta_t^2 g_t^2` are solved exactly in their linear part (variation of constants):

* data prediction :math:`D = \hat x_0`, from :math:`s` to :math:`t` (:math:`h = \hat\lambda_t - \hat\lambda_s`,
  :math:`E = \int_s^t \eta^2 d\hat\lambda`, :math:`\rho = 1 + E/h`):

  .. math:: x_t = \frac{\sigma_t}{\sigma_s}e^{-E}x_s + \alpha_t\rho\int_0^h e^{-\rho(h-\tau)}D(\tau)\,d\tau
            + \sigma_t\sqrt{1-e^{-2E}}\,z

  (:math:`\eta = 0`: DPM-Solver++, Lu et al. 2022b; :math:`\eta = 1`: SDE-DPM-Solver++);
* noise prediction :math:`\varepsilon` (probability-flow ODE only):

  .. math:: x_t = \frac{\alpha_t}{\alpha_s}x_s - \sigma_t\int_0^h e^{(h-\tau)}\varepsilon(\tau)\,d\tau
            \quad\text{(DPM-Solver, Lu et al. 2022a).}

The integrand's prediction is replaced by the polynomial through known predictions at nodes
:math:`\tau_j = u_j h` and integrated exactly: :func:`exp_weights` returns ``w`` with
:math:`\int_0^1 e^{-r(1-u)}P(u)\,du = \sum_j w_j P(u_j)` for every polynomial of degree < len(u),
from the moments :math:`m_k(r) = \int_0^1 e^{-r(1-u)}u^k du` (48-point Gauss-Legendre: exact to rounding
for :math:`|r| \le 40`; beyond, the stable recurrence :math:`m_k = (1 - k\,m_{k-1})/r`).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["kernel_moments", "exp_weights", "exp_coefficients", "apply_exp"]

_GL_X, _GL_W = np.polynomial.legendre.leggauss(48)
_GL_U = 0.5 * (_GL_X + 1.0)
_GL_W = 0.5 * _GL_W


def kernel_moments(r: float, kmax: int) -> np.ndarray:
    r""":math:`m_k(r) = \int_0^1 e^{-r(1-u)}u^k\,du` for ``k = 0..kmax``."""
    if abs(r) <= 40.0:
        kern = np.exp(-r * (1.0 - _GL_U))
        return np.array([np.sum(_GL_W * kern * _GL_U ** k) for k in range(kmax + 1)])
    if r > 0:  # e^{-r(1-u)} concentrates at u = 1: forward recurrence is stable (errors shrink by k/r)
        m = [-math.expm1(-r) / r]
        for k in range(1, kmax + 1):
            m.append((1.0 - k * m[-1]) / r)
        return np.array(m)
    raise ValueError(f"kernel rate {r} out of range: the noise-prediction step is too long (h = {-r:g}); "
                     f"use more steps or data prediction")


def exp_weights(r: float, u) -> np.ndarray:
    """Quadrature weights ``w_j`` at nodes ``u_j`` (exact for polynomials of degree < len(u))."""
    u = np.asarray(u, dtype=np.float64)
    n = u.size
    m = kernel_moments(r, n - 1)
    V = np.vander(u, n, increasing=True)  # V[j, k] = u_j^k
    return np.linalg.solve(V.T, m)


def exp_coefficients(predict: str, h: float, u, a_s: float, s_s: float, a_t: float, s_t: float,
                     E: float = 0.0) -> tuple[float, list]:
    """``(lin, w)`` of the exponential step ``x_t = lin x_s + sum_j w_j P_j`` of length ``h`` (half log-SNR)
    with predictions ``P_j`` of ``predict`` at fractions ``u`` of the step; ``E`` the extra damping of the
    stochastic family (data prediction only)."""
    if predict == "data":
        rho = 1.0 + E / h
        return (s_t / s_s) * math.exp(-E), (a_t * rho * h * exp_weights(rho * h, u)).tolist()
    return a_t / a_s, (-s_t * h * exp_weights(-h, u)).tolist()


def apply_exp(x, lin: float, w: list, preds: list):
    """``lin x + sum_j w_j preds_j`` as one scaled copy and in-place fused adds."""
    out = x * lin if lin != 1.0 else x.clone()
    for wj, pj in zip(w, preds):
        out.add_(pj, alpha=wj)
    return out
