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

__all__ = ["kernel_moments", "exp_weights", "exp_coefficients", "apply_exp", "dpm_solver_weights", "dpm_solver_2_weights",
           "unipc_weights"]

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


def _phis(predict: str, H: float) -> tuple[float, float, float, float]:
    r"""``(sign, phi_1, phi_2, phi_3)`` of dpm-solver's multistep updates at rate ``H``: data prediction
    :math:`\varphi_1 = e^{-H} - 1,\ \varphi_2 = \varphi_1/H + 1` (sign +1), noise prediction
    :math:`\varphi_1 = e^{H} - 1,\ \varphi_2 = \varphi_1/H - 1` (sign -1); :math:`\varphi_3 = \varphi_2/H - 1/2`."""
    if predict == "data":
        p1 = math.expm1(-H)
        p2 = p1 / H + 1.0
        sign = 1.0
    else:
        p1 = math.expm1(H)
        p2 = p1 / H - 1.0
        sign = -1.0
    return sign, p1, p2, p2 / H - 0.5


def dpm_solver_weights(form: str, predict: str, h: float, nodes, c: float, E: float = 0.0) -> list:
    r"""Weights ``w_j`` (predictions at half log-SNRs ``nodes``, newest first, ``nodes[0]`` the step's start)
    of dpm-solver's multistep update of order ``len(nodes)`` (Lu et al. 2022b; ``multistep_dpm_solver_*_update``
    of LuChengTHU/dpm-solver, k-diffusion's ``sample_dpmpp_2m_sde``/``sample_dpmpp_3m_sde``), ``c`` being
    :math:`\alpha_t` (data) or :math:`\sigma_t` (noise); the state's own coefficient is the exact one.

    With :math:`r_0 = (\hat\lambda_0 - \hat\lambda_1)/h`, :math:`r_1 = (\hat\lambda_1 - \hat\lambda_2)/h`,
    :math:`D_{1,0} = (m_0 - m_1)/r_0`, :math:`D_{1,1} = (m_1 - m_2)/r_1`, ``s`` = +1 (data), -1 (noise):

    * order 1: :math:`-c\varphi_1 m_0`;
    * order 2, ``form="dpmsolver"``: :math:`-c\varphi_1 m_0 - \tfrac12 c\varphi_1 D_{1,0}`;
      ``form="taylor"``: :math:`-c\varphi_1 m_0 + s\,c\varphi_2 D_{1,0}` (the exact integral of the line);
    * order 3 (either form): :math:`-c\varphi_1 m_0 + s\,c\varphi_2 D_1 - c\varphi_3 D_2`,
      :math:`D_1 = D_{1,0} + \frac{r_0}{r_0 + r_1}(D_{1,0} - D_{1,1})`,
      :math:`D_2 = \frac{D_{1,0} - D_{1,1}}{r_0 + r_1}` (:math:`h^2 P''/2` of the quadratic interpolant
      :math:`P`, half what its exact integral needs: the update is second order).

    The :math:`\varphi` are taken at :math:`H = h + E` (``E`` the damping of SDE-DPM-Solver++, data
    prediction; k-diffusion's ``h_eta``), the ratios :math:`r` in ``h``.
    """
    p = len(nodes)
    sign, p1, p2, p3 = _phis(predict, h + E)
    w = np.zeros(p)
    w[0] = -c * p1
    if p == 1:
        return w.tolist()
    r0 = (nodes[0] - nodes[1]) / h
    d10 = np.zeros(p)
    d10[0], d10[1] = 1.0 / r0, -1.0 / r0
    if p == 2:
        w += (-0.5 * c * p1 if form == "dpmsolver" else sign * c * p2) * d10
        return w.tolist()
    if p != 3:
        raise ValueError(f"dpm-solver's multistep updates have orders 1 to 3, got {p}")
    r1 = (nodes[1] - nodes[2]) / h
    d11 = np.array([0.0, 1.0 / r1, -1.0 / r1])
    d1 = d10 + (r0 / (r0 + r1)) * (d10 - d11)
    d2 = (1.0 / (r0 + r1)) * (d10 - d11)
    w += sign * c * p2 * d1 - c * p3 * d2
    return w.tolist()


def unipc_weights(variant: str, predict: str, h: float, nodes, c: float, corrector: bool) -> list:
    r"""Weights of UniPC's B(h) update (Zhao et al. 2023; ``multistep_uni_pc_bh_update`` of wl-zhao/UniPC).

    ``nodes`` are half log-SNRs, newest first: the predictor's ``(λ_0, λ_1, ..., λ_{p-1})`` (``λ_0`` the
    step's start), the corrector's ``(λ_t, λ_0, ..., λ_{p-1})`` (``λ_t`` the step's end, its prediction made
    at the predicted state). With :math:`\hat h = -h` (data) or :math:`h` (noise), ``c`` = :math:`\alpha_t`
    or :math:`\sigma_t`, :math:`r_k = (\lambda_k - \lambda_0)/h` and :math:`D_k = (m_k - m_0)/r_k`:

    .. math:: x_t = \ell x_s - c(e^{\hat h} - 1)m_0 - c\,B(h)\Big(\sum_{k\ge1}\rho_k D_k
              \;[+\ \rho_t (m_t - m_0)]\Big),

    :math:`B(h) = \hat h` (``"bh1"``) or :math:`e^{\hat h} - 1` (``"bh2"``), and :math:`\rho` solving
    :math:`\sum_k \rho_k r_k^{i-1} = b_i = i!\,\hat h\varphi_{i+1}(\hat h)/B(h)` (:math:`r_t = 1`;
    :math:`\hat h\varphi_{k+1} = \hat h\varphi_k/\hat h - 1/k!`), except the hard-coded
    :math:`\rho = 1/2` of the reference for the order-2 predictor and the order-1 corrector.
    """
    hh = -h if predict == "data" else h
    h_phi_1 = math.expm1(hh)
    B = hh if variant == "bh1" else math.expm1(hh)
    lam0 = nodes[1] if corrector else nodes[0]
    hist = list(nodes[1:]) if corrector else list(nodes)
    p = len(hist)  # the reference's `order`
    rks = [(lj - lam0) / h for lj in hist[1:]] + [1.0]
    b, phi_k, fact = [], h_phi_1 / hh - 1.0, 1
    for i in range(1, p + 1):
        b.append(phi_k * fact / B)
        fact *= i + 1
        phi_k = phi_k / hh - 1.0 / fact
    R = np.array([[r ** (i - 1) for r in rks] for i in range(1, p + 1)])
    w = np.zeros(len(nodes))
    i0 = 1 if corrector else 0  # index of m_0 in nodes
    w[i0] = -c * h_phi_1
    if corrector:
        rho = [0.5] if p == 1 else np.linalg.solve(R, np.array(b)).tolist()
        w[0] += -c * B * rho[-1]
        w[i0] += c * B * rho[-1]
    elif p >= 2:
        rho = [0.5] if p == 2 else np.linalg.solve(R[:-1, :-1], np.array(b[:-1])).tolist()
    else:
        rho = []
    for k in range(p - 1):  # D_k terms, history node k + 1
        coef = -c * B * rho[k] / rks[k]
        w[i0 + 1 + k] += coef
        w[i0] -= coef
    return w.tolist()


def dpm_solver_2_weights(predict: str, h: float, r1: float, c: float) -> list:
    r"""Weights on :math:`(m_s, m_{s_1})` of DPM-Solver-2's ``'dpmsolver'`` update (Lu et al. 2022a,
    Algorithm 1; ``singlestep_dpm_solver_second_update`` of LuChengTHU/dpm-solver):
    :math:`-c\varphi_1 m_s - \frac{1}{2r_1}c\varphi_1(m_{s_1} - m_s)`, :math:`\varphi_1 = e^{-h} - 1` (data,
    ``c = \alpha_t``) or :math:`e^{h} - 1` (noise, ``c = \sigma_t``), the stage at fraction ``r1`` of ``h``."""
    p1 = _phis(predict, h)[1]
    half = 0.5 / r1 * c * p1
    return [-c * p1 + half, -half]
