r"""Conversions between what a field predicts, at a point ``(x, t)`` of a Gaussian path.

Write every prediction in the basis of the clean data :math:`x_0` and the noise :math:`\varepsilon`
(with :math:`x = \alpha x_0 + \sigma\varepsilon`):

=========  ======================================  ==========================================
kind       value                                   ``(u, w)``: value :math:`= u\,x_0 + w\,\varepsilon`
=========  ======================================  ==========================================
data       :math:`x_0`                             :math:`(1,\ 0)`
noise      :math:`\varepsilon`                     :math:`(0,\ 1)`
score      :math:`-\varepsilon/\sigma`             :math:`(0,\ -1/\sigma)`
velocity   :math:`\alpha' x_0 + \sigma'\varepsilon`  :math:`(\alpha',\ \sigma')`
v          :math:`\alpha\varepsilon - \sigma x_0`     :math:`(-\sigma,\ \alpha)`
drift      velocity :math:`- \tfrac{\gamma^2}{2}` score  :math:`(\alpha',\ \sigma' + \gamma^2/(2\sigma))`
=========  ======================================  ==========================================

A prediction ``n`` of kind ``a`` and the point ``x`` determine :math:`x_0` and :math:`\varepsilon`
(determinant :math:`d = \alpha w_a - \sigma u_a`), so the value of kind ``b`` is

.. math:: b = \frac{(u_b w_a - w_b u_a)\,x + (w_b\alpha - u_b\sigma)\,n}{\alpha w_a - \sigma u_a}.

This is the DESIGN table (e.g. from a velocity, :math:`x_0 = (\sigma' x - \sigma v)/(\sigma'\alpha -
\sigma\alpha')`) in one formula, finite wherever the conversion exists (a velocity converts to data at
:math:`\alpha = 0`; a noise prediction cannot). The basis does not depend on the path, so a prediction made
on another path at the same log-SNR (path transfer) converts with that path's ``(u_a, w_a)``.
An energy field predicts the score.

``v`` is the "v-prediction" of Salimans & Ho (2022) (diffusers' ``prediction_type="v_prediction"``),
:math:`v = \alpha\varepsilon - \sigma x_0`, which is *not* the probability-flow velocity ``velocity``: on a
variance-preserving path (:math:`\alpha^2 + \sigma^2 = 1`) it is the rate of change of :math:`x` along the
circle :math:`x = \cos\phi\,x_0 + \sin\phi\,\varepsilon`, :math:`v = dx/d\phi`. As a source its
determinant is :math:`\alpha^2 + \sigma^2 > 0`, so a v-prediction gives :math:`x_0` and :math:`\varepsilon`
everywhere, both ends of a VP path included.
"""

from __future__ import annotations

import torch

from .errors import unknown_name

__all__ = ["KINDS", "kind_uw", "conversion", "is_identity", "check_kind"]

Tensor = torch.Tensor

KINDS = ("score", "noise", "data", "velocity", "v")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise unknown_name("field kind", str(kind), KINDS)
    return kind


def kind_uw(kind: str, alpha: Tensor, sigma: Tensor, dalpha: Tensor, dsigma: Tensor,
            gamma2: Tensor | float | None = None) -> tuple[Tensor, Tensor]:
    r"""``(u, w)`` with prediction :math:`= u\,x_0 + w\,\varepsilon` (table above).

    ``kind="drift"`` is the reverse-family drift :math:`v - \tfrac{\gamma^2}{2}s` with ``gamma2``
    :math:`=\gamma^2` (None or 0: the probability-flow velocity).
    """
    if kind == "data":
        return torch.ones_like(sigma), torch.zeros_like(sigma)
    if kind == "noise":
        return torch.zeros_like(sigma), torch.ones_like(sigma)
    if kind == "score":
        return torch.zeros_like(sigma), -1.0 / sigma
    if kind == "velocity":
        return dalpha + torch.zeros_like(sigma), dsigma + torch.zeros_like(sigma)
    if kind == "v":  # Salimans & Ho's v = alpha eps - sigma x0
        return -sigma + torch.zeros_like(sigma), alpha + torch.zeros_like(sigma)
    if kind == "drift":
        w = dsigma + torch.zeros_like(sigma)
        if gamma2 is not None:  # gamma = 0 adds nothing, even where sigma = 0 (the data end)
            g2 = torch.as_tensor(gamma2, dtype=sigma.dtype, device=sigma.device)
            w = w + torch.where(g2 == 0, torch.zeros_like(w), 0.5 * g2 / sigma)
        return dalpha + torch.zeros_like(sigma), w
    raise unknown_name("field kind", str(kind), KINDS)


def is_identity(frm: str, to: str, gamma2=None) -> bool:
    r"""Whether a prediction of kind ``to`` is the prediction ``n`` of kind ``frm`` itself at every point of every
    path (``to = 0 x + 1 n``): the same kind, or the probability-flow drift (``gamma2`` None) of a velocity,
    whose ``(u, w)`` are the velocity's (:func:`conversion`'s formula gives exactly ``(0, 1)`` wherever its
    determinant is finite and nonzero). Evaluations at arbitrary times skip the conversion then."""
    return frm == to or (frm == "velocity" and to == "drift" and gamma2 is None)


def conversion(frm: str, to: str, alpha: Tensor, sigma: Tensor, dalpha: Tensor, dsigma: Tensor, *,
               frm_coeffs: tuple | None = None, gamma2=None) -> tuple[Tensor, Tensor]:
    r"""Coefficients ``(P, Q)`` with ``to = P x + Q n`` for a prediction ``n`` of kind ``frm``.

    ``(alpha, sigma, dalpha, dsigma)`` are the path's at the point. ``frm_coeffs`` gives another path's
    coefficients at the same log-SNR when ``n`` was predicted on that path (path transfer).
    """
    if frm == to and frm_coeffs is None:
        return torch.zeros_like(sigma), torch.ones_like(sigma)
    ua, wa = kind_uw(frm, *(frm_coeffs if frm_coeffs is not None else (alpha, sigma, dalpha, dsigma)))
    ub, wb = kind_uw(to, alpha, sigma, dalpha, dsigma, gamma2)
    det = alpha * wa - sigma * ua
    return (ub * wa - wb * ua) / det, (wb * alpha - ub * sigma) / det

