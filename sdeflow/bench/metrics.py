r"""Error metrics of the benchmark (built on :mod:`sdeflow.metrics`).

* :func:`pathwise_rms` — ODE samplers against the exact/reference flow from the same noise, SDE samplers
  against a fine solve on the same Brownian path (strong error):
  :math:`\big(\tfrac1n\sum_i |x_i - x_i^{ref}|^2\big)^{1/2}`; :func:`pathwise_errors` adds the tail of the
  per-sample distances :math:`e_i = |x_i - x_i^{ref}|`: the 99th percentile ``q99`` (``torch.quantile``,
  linear interpolation between order statistics) and the worst sample's ``max``, which the RMS hides.
* :func:`weak_metrics` — distribution-level (weak) error of samples ``x`` against exact samples ``y`` of
  the same size: ``mean`` :math:`|\bar x - \bar y|_2`, ``cov`` :math:`|\hat C_x - \hat C_y|_F`,
  ``sliced_w2`` (:func:`sdeflow.metrics.sliced_w2`, fixed projections), ``mmd``
  :math:`\sqrt{\max(\widehat{\mathrm{MMD}}^2_u, 0)}` (:func:`sdeflow.metrics.mmd2`, Gaussian kernel with a
  bandwidth fixed by the exact samples, so every solver is scored with the same kernel).
* :func:`mc_floor` — the same metrics between independent exact sample sets of the same size (root mean
  square over a few pairs): the Monte Carlo error floor below which a weak error means nothing.
"""

from __future__ import annotations

import torch

from ..metrics import mmd2, moment_errors, sliced_w2

__all__ = ["pathwise_rms", "pathwise_errors", "sample_errors", "TAIL_QUANTILE", "weak_metrics", "mc_floor",
           "WEAK_METRICS", "MMD_MAX_SAMPLES"]

WEAK_METRICS = ("mean", "cov", "sliced_w2", "mmd")
MMD_MAX_SAMPLES = 2000  # MMD uses the first 2000 samples of each set (an n x n kernel matrix)
_PROJ_SEED = 12345


TAIL_QUANTILE = 0.99  # the tail quantile of the per-sample errors (q99)


def sample_errors(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The Euclidean distance between ``x`` and ``ref`` (same noise) of every sample, float64 ``(n,)``."""
    d = (x.to(torch.float64) - ref.to(torch.float64).to(x.device)).reshape(x.shape[0], -1)
    return d.pow(2).sum(1).sqrt()


def pathwise_rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Root mean square over samples of the Euclidean distance between ``x`` and ``ref`` (same noise)."""
    return float(sample_errors(x, ref).pow(2).mean().sqrt())


def pathwise_errors(x: torch.Tensor, ref: torch.Tensor) -> dict:
    """``{rms, q99, max}`` of the per-sample distances between ``x`` and ``ref``: their root mean square, 99th
    percentile (``TAIL_QUANTILE``, linear interpolation) and maximum (the worst sample)."""
    e = sample_errors(x, ref)
    return {"rms": float(e.pow(2).mean().sqrt()), "q99": float(torch.quantile(e, TAIL_QUANTILE)),
            "max": float(e.max())}


def mmd_bandwidth(y: torch.Tensor) -> float:
    """Median pairwise distance of (the first ``MMD_MAX_SAMPLES`` of) the exact samples ``y``."""
    a = y.reshape(y.shape[0], -1)[:MMD_MAX_SAMPLES].to(torch.float64)
    d = torch.pdist(a)
    return float(d.median()) if d.numel() else 1.0


def weak_metrics(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> dict:
    """``{mean, cov, sliced_w2, mmd}`` between samples ``x`` and exact samples ``y`` (see the module doc)."""
    a = x.reshape(x.shape[0], -1).to(torch.float64)
    b = y.reshape(y.shape[0], -1).to(torch.float64).to(a.device)
    mom = moment_errors(a, b.mean(0), torch.cov(b.T).reshape(a.shape[1], a.shape[1]))
    bw = mmd_bandwidth(b) if bandwidth is None else bandwidth
    m = MMD_MAX_SAMPLES
    return {"mean": mom["mean"], "cov": mom["cov"],
            "sliced_w2": sliced_w2(a, b, generator=torch.Generator().manual_seed(_PROJ_SEED)),
            "mmd": max(mmd2(a[:m], b[:m], bandwidth=bw), 0.0) ** 0.5}


def mc_floor(draw, n: int, bandwidth: float, pairs: int = 3) -> dict:
    """Root mean square over ``pairs`` pairs of independent exact sets (``draw(n)`` each) of every weak
    metric: what :func:`weak_metrics` reports for a perfect sampler with ``n`` samples."""
    acc = dict.fromkeys(WEAK_METRICS, 0.0)
    for _ in range(pairs):
        w = weak_metrics(draw(n), draw(n), bandwidth)
        for k in acc:
            acc[k] += w[k] ** 2 / pairs
    return {k: v ** 0.5 for k, v in acc.items()}
