r"""Distances between sample sets, and per-mode weights: how the examples, tests and the bench score samples.

* :func:`sliced_w2` — sliced 2-Wasserstein distance,
  :math:`\big(\mathbb E_\theta W_2^2(\theta^\top X, \theta^\top Y)\big)^{1/2}` over random unit directions
  (Rabin et al. 2011; Bonneel et al. 2015), exact 1-D W2 by sorting.
* :func:`mmd2` — unbiased squared maximum mean discrepancy with a Gaussian kernel (Gretton et al. 2012).
* :func:`mode_weights` — fraction of samples nearest to each mode centre.
* :func:`moment_errors` — mean and covariance errors against exact moments.
"""

from __future__ import annotations

import torch

from .errors import SdeflowTypeError, SdeflowValueError, check_int, check_number

__all__ = ["sliced_w2", "mmd2", "mode_weights", "moment_errors"]

Tensor = torch.Tensor


def _flat(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise SdeflowTypeError(f"{name} must be a torch.Tensor of shape (n >= 2, *event), got {type(x).__name__}")
    if not x.is_floating_point():
        raise SdeflowTypeError(f"{name} must have a floating dtype, got {x.dtype}; use {name}.float()")
    if x.dim() < 2 or x.shape[0] < 2:
        raise SdeflowValueError(f"{name} must be a tensor of shape (n >= 2, *event), got {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1).to(torch.float64)


def _quantiles(v: Tensor, m: int) -> Tensor:
    """``m`` equally spaced quantiles (midpoints) of the columns of ``v`` (sorted), by linear interpolation."""
    n = v.shape[0]
    if n == m:
        return v
    q = (torch.arange(m, dtype=v.dtype, device=v.device) + 0.5) / m * n - 0.5
    lo = q.floor().clamp(0, n - 1).long()
    hi = (lo + 1).clamp(max=n - 1)
    w = (q - lo.to(q.dtype)).clamp(0, 1)[:, None]
    return v[lo] * (1 - w) + v[hi] * w


def sliced_w2(x: Tensor, y: Tensor, n_projections: int = 256, generator: torch.Generator | None = None) -> float:
    """Sliced W2 between the empirical distributions of ``x`` and ``y`` (sizes may differ)."""
    a, b = _flat(x, "x"), _flat(y, "y").to(x.device)
    n_projections = check_int("n_projections", n_projections)
    if a.shape[1] != b.shape[1]:
        raise SdeflowValueError(f"x and y must have the same event size, got {a.shape[1]} and {b.shape[1]}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    theta = torch.randn(a.shape[1], n_projections, generator=g, dtype=torch.float64).to(a.device)
    theta = theta / theta.norm(dim=0, keepdim=True)
    pa, _ = torch.sort(a @ theta, dim=0)
    pb, _ = torch.sort(b @ theta, dim=0)
    m = max(pa.shape[0], pb.shape[0])
    d = _quantiles(pa, m) - _quantiles(pb, m)
    return float(d.pow(2).mean().sqrt())


def mmd2(x: Tensor, y: Tensor, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 with kernel exp(-|u - v|^2 / (2 bandwidth^2)); bandwidth: median pairwise distance."""
    a, b = _flat(x, "x"), _flat(y, "y").to(x.device)
    if a.shape[1] != b.shape[1]:
        raise SdeflowValueError(f"x and y must have the same event size, got {a.shape[1]} and {b.shape[1]}")
    if bandwidth is not None:
        bandwidth = check_number("bandwidth", bandwidth, gt=0.0)
    z = torch.cat([a, b])
    d2 = torch.cdist(z, z).pow(2)
    if bandwidth is None:
        bandwidth = float(d2[d2 > 0].median().sqrt()) if (d2 > 0).any() else 1.0
    k = torch.exp(-d2 / (2 * bandwidth ** 2))
    n, m = a.shape[0], b.shape[0]
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(sxx + syy - 2 * kxy.mean())


def mode_weights(x: Tensor, centres: Tensor) -> Tensor:
    """Fraction of the samples ``x`` (n, d) whose nearest centre (K, d) is each centre; shape (K,)."""
    a = _flat(x, "x")
    c = torch.as_tensor(centres, dtype=torch.float64, device=a.device)
    if c.dim() != 2 or c.shape[1] != a.shape[1] or c.shape[0] < 1:
        raise SdeflowValueError(f"centres must have shape (K >= 1, {a.shape[1]}) to match x, got {tuple(c.shape)}")
    idx = torch.cdist(a, c).argmin(dim=1)
    return torch.bincount(idx, minlength=c.shape[0]).to(torch.float64) / a.shape[0]


def moment_errors(x: Tensor, mean: Tensor, cov: Tensor) -> dict:
    """``{"mean": |mean_hat - mean|_2, "cov": |cov_hat - cov|_F}`` for samples ``x`` (n, d)."""
    a = _flat(x, "x")
    m = torch.as_tensor(mean, dtype=torch.float64, device=a.device)
    c = torch.as_tensor(cov, dtype=torch.float64, device=a.device)
    d = a.shape[1]
    if m.shape != (d,) or c.shape != (d, d):
        raise SdeflowValueError(f"mean must have shape ({d},) and cov ({d}, {d}) to match x, got "
                                f"{tuple(m.shape)} and {tuple(c.shape)}")
    return {"mean": float((a.mean(0) - m).norm()), "cov": float((torch.cov(a.T).reshape(c.shape) - c).norm())}
