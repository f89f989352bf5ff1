"""Error metrics of the benchmark."""

from __future__ import annotations

import torch

__all__ = ["pathwise_rms"]


def pathwise_rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Root mean square over samples of the Euclidean distance between ``x`` and ``ref`` (same noise)."""
    d = (x.to(torch.float64) - ref.to(torch.float64)).reshape(x.shape[0], -1)
    return float(d.pow(2).sum(1).mean().sqrt())
