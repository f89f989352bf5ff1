r"""Training objectives each path implies (t = 0 data, t = 1 noise; x is (batch, *event)).

All losses take a :class:`~sdeflow.fields.Field` (or anything with ``predict(x, t, path)``, e.g. an
oracle's ``.field(kind)``) and a data batch ``x0``, and return a scalar tensor. Randomness only through
``generator``.

* :func:`eps_loss` — DDPM (Ho et al. 2020): ``E_{i, eps} |eps - eps_hat(x_i, t_i)|^2``, ``i`` uniform over the
  T steps of a :class:`~sdeflow.paths.DiscreteVP` (uniform ``t`` on a continuous path).
* :func:`dsm_loss` — denoising score matching (Vincent 2011; Song et al. 2021):
  ``E lambda(t) |s(x_t, t) + eps / sigma_t|^2``, default ``lambda = sigma_t^2``.
* :func:`cfm_loss` — conditional flow matching (Lipman et al. 2023): ``E |v(x_t, t) - (alpha' x0 + sigma' eps)|^2``.
* :func:`ncsn_loss` — NCSN multi-level DSM (Song & Ermon 2019): level ``i`` uniform,
  ``sigma_i^2 |s(x0 + sigma_i z, sigma_i) + z / sigma_i|^2``.
* :func:`cd_loss` — contrastive divergence for an energy ``E``: ``E(x+) - E(x-) + lam (E(x+)^2 + E(x-)^2)``,
  negatives from K ULA steps (Du & Mordatch 2019), optionally from a :class:`ReplayBuffer`.

Every loss is a mean over the batch of a per-sample squared norm summed over event dims.
"""

from __future__ import annotations

from typing import Callable

import torch

from .errors import SdeflowTypeError, SdeflowValueError, check_float_tensor, check_number
from .paths import DiscreteVP, GaussianPath

__all__ = ["eps_loss", "dsm_loss", "cfm_loss", "ncsn_loss", "cd_loss", "ReplayBuffer", "draw_times"]

Tensor = torch.Tensor


def _check(x0, path, field=None, method=None, t_min=None, sigma_positive=False):
    if not isinstance(x0, Tensor) or x0.dim() < 1:
        raise SdeflowTypeError("x0 must be a tensor of shape (batch, *event)")
    check_float_tensor("x0", x0)
    if path is not None and not isinstance(path, GaussianPath):
        raise SdeflowTypeError(f"path must be a GaussianPath (VP(), LinearFlow(), ...), got {type(path).__name__}")
    if method is not None and not callable(getattr(field, method, None)):
        raise SdeflowTypeError(f"field must be a sdeflow Field (with .{method}(x, t, path)), got "
                               f"{type(field).__name__}; wrap the network: NoiseField(net), ScoreField(net), ...")
    if sigma_positive and t_min is None and path is not None:
        t_min = path.t_min  # the default the loss will use
    if t_min is not None and not isinstance(path, DiscreteVP):
        t_min = check_number("t_min", t_min, ge=0.0, lt=1.0, hint="training times are drawn from [t_min, 1]")
        if sigma_positive and not float(path.sigma(t_min)) > 0:
            raise SdeflowValueError(f"t_min={t_min} gives sigma = 0 on {path!r}: the loss divides by sigma; "
                                    f"use t_min > 0 (e.g. path.t_min = {path.t_min})")


def _sq(d: Tensor) -> Tensor:
    return d.reshape(d.shape[0], -1).pow(2).sum(-1)


def draw_times(path: GaussianPath, n: int, like: Tensor, generator=None, t_min: float | None = None) -> Tensor:
    """Training times: DDPM's uniform step index on a DiscreteVP (knots ``(i+1)/T``), else uniform on
    ``[t_min, 1]`` (default ``path.t_min``)."""
    if isinstance(path, DiscreteVP):
        i = torch.randint(0, path.T, (n,), generator=generator)
        return ((i + 1).to(torch.float64) / path.T).to(like.dtype)
    lo = float(path.t_min if t_min is None else t_min)
    u = torch.rand(n, generator=generator, dtype=like.dtype)
    return lo + (1.0 - lo) * u


def _noised(path, x0, generator, t_min, t=None):
    t = draw_times(path, x0.shape[0], x0, generator, t_min) if t is None else t
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    a, s, da, ds = path.coefficients(t.to(torch.float64))
    sh = (-1,) + (1,) * (x0.dim() - 1)
    a, s, da, ds = (c.to(x0.dtype).reshape(sh) for c in (a, s, da, ds))
    return t, eps, a * x0 + s * eps, a, s, da, ds


def _predicted(field, kind: str, xt: Tensor, t: Tensor, path: GaussianPath, model_kwargs: dict | None) -> Tensor:
    """``field.<kind>(xt, t, path)``, with ``model_kwargs`` only when given (a custom field may override the
    three-argument methods)."""
    fn = getattr(field, kind)
    return fn(xt, t, path) if model_kwargs is None else fn(xt, t, path, model_kwargs)


def eps_loss(field, path: GaussianPath, x0: Tensor, *, generator=None, t_min=None, reduce=True,
             model_kwargs: dict | None = None) -> Tensor:
    """DDPM's simple loss ``|eps - eps_hat|^2`` (Ho et al. 2020, Alg. 1), index uniform on a DiscreteVP.
    ``model_kwargs``: the conditioning of each row (``{"class_labels": y}``), passed to the network."""
    _check(x0, path, field, "noise", t_min)
    t, eps, xt, *_ = _noised(path, x0, generator, t_min)
    l = _sq(_predicted(field, "noise", xt, t, path, model_kwargs) - eps)
    return l.mean() if reduce else l


def dsm_loss(field, path: GaussianPath, x0: Tensor, *, weight: Callable | None = None, generator=None,
             t_min=None, reduce=True, model_kwargs: dict | None = None) -> Tensor:
    """DSM ``lambda(t) |s(x_t, t) + eps / sigma_t|^2``; ``weight(t) -> lambda`` (default ``sigma_t^2``);
    ``model_kwargs`` as in :func:`eps_loss`."""
    _check(x0, path, field, "score", t_min, sigma_positive=True)
    t, eps, xt, a, s, *_ = _noised(path, x0, generator, t_min)
    lam = s.pow(2) if weight is None else torch.as_tensor(weight(t), dtype=x0.dtype).reshape(s.shape)
    l = _sq(lam.sqrt() * (_predicted(field, "score", xt, t, path, model_kwargs) + eps / s))
    return l.mean() if reduce else l


def cfm_loss(field, path: GaussianPath, x0: Tensor, *, generator=None, t_min=None, reduce=True,
             model_kwargs: dict | None = None) -> Tensor:
    """Conditional flow matching ``|v(x_t, t) - (alpha'_t x0 + sigma'_t eps)|^2`` (Lipman et al. 2023)."""
    _check(x0, path, field, "velocity", t_min)
    t, eps, xt, a, s, da, ds = _noised(path, x0, generator, 0.0 if t_min is None else t_min)
    l = _sq(_predicted(field, "velocity", xt, t, path, model_kwargs) - (da * x0 + ds * eps))
    return l.mean() if reduce else l


def ncsn_loss(score_fn: Callable, sigmas, x0: Tensor, *, generator=None, reduce=True) -> Tensor:
    r"""NCSN loss (Song & Ermon 2019, eq. 5-6): level ``i`` uniform, ``sigma_i^2 |s(x~, sigma_i) + z/sigma_i|^2``
    with ``x~ = x0 + sigma_i z``. ``score_fn(x, sigma)`` gets ``sigma`` as a ``(batch,)`` tensor."""
    _check(x0, None)
    sig = torch.as_tensor(sigmas, dtype=x0.dtype).flatten()
    if sig.numel() < 1 or not bool((sig > 0).all()):
        raise SdeflowValueError("sigmas must be a non-empty sequence of positive noise levels")
    i = torch.randint(0, sig.numel(), (x0.shape[0],), generator=generator)
    s = sig[i]
    sh = (-1,) + (1,) * (x0.dim() - 1)
    z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    xt = x0 + s.reshape(sh) * z
    l = _sq(s.reshape(sh) * score_fn(xt, s) + z)
    return l.mean() if reduce else l


class ReplayBuffer:
    """Buffer of past negatives (Du & Mordatch 2019): each draw re-initialises a sample from ``init(n)``
    with probability ``reinit``, else takes a stored one. ``push`` stores the new negatives."""

    def __init__(self, init: Callable[[int], Tensor], size: int = 10000, reinit: float = 0.05):
        if not 0.0 <= reinit <= 1.0:
            raise SdeflowValueError(f"reinit must be a probability in [0, 1], got {reinit}")
        self.init, self.size, self.reinit = init, int(size), float(reinit)
        self.data: Tensor | None = None

    def draw(self, n: int, generator=None) -> Tensor:
        fresh = self.init(n)
        if self.data is None or self.data.shape[0] == 0:
            return fresh
        idx = torch.randint(0, self.data.shape[0], (n,), generator=generator)
        keep = (torch.rand(n, generator=generator) >= self.reinit).reshape((-1,) + (1,) * (fresh.dim() - 1))
        return torch.where(keep, self.data[idx], fresh)

    def push(self, x: Tensor) -> None:
        x = x.detach()
        self.data = x if self.data is None else torch.cat([x, self.data])[: self.size]


def cd_loss(energy: Callable[[Tensor], Tensor], x_pos: Tensor, *, x_neg_init: Tensor | None = None,
            buffer: ReplayBuffer | None = None, steps: int = 20, step_size: float = 0.01, l2: float = 1.0,
            generator=None, return_negatives: bool = False):
    r"""Contrastive divergence ``mean E(x+) - mean E(x-) + l2 * mean(E(x+)^2 + E(x-)^2)``.

    Negatives: K = ``steps`` ULA steps ``x <- x - h grad E(x) + sqrt(2h) z`` (no graph kept) from
    ``x_neg_init`` or from ``buffer.draw`` (then pushed back). ``energy(x)`` returns ``(batch,)``.
    """
    _check(x_pos, None)
    if x_neg_init is None:
        if buffer is None:
            raise SdeflowValueError("give x_neg_init (initial negatives) or buffer (a ReplayBuffer)")
        x_neg_init = buffer.draw(x_pos.shape[0], generator)
    from .langevin import ula
    x_neg = ula(lambda x: -_grad_energy(energy, x), x_neg_init, step_size, steps, generator=generator).x
    if buffer is not None:
        buffer.push(x_neg)
    ep = energy(x_pos).reshape(-1)
    en = energy(x_neg.detach()).reshape(-1)
    loss = ep.mean() - en.mean() + l2 * (ep.pow(2).mean() + en.pow(2).mean())
    return (loss, x_neg) if return_negatives else loss


def _grad_energy(energy, x):
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(energy(xr).sum(), xr)
    return g
