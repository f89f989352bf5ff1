"""The result of :func:`sdeflow.sample` and :func:`sdeflow.solve`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Solution"]


@dataclass
class Solution:
    """Final state, optional trajectory and statistics of a solve.

    Attributes:
        x: the final state, shape ``(batch, *event)``.
        ts: float64 times of the grid (for a sampler with ``final_denoise``, a last entry 0.0 labels the
            denoised output).
        trajectory: ``(len(ts), batch, *event)`` states at ``ts`` when requested, else None.
        nfe: field (drift) evaluations made along each sample's trajectory (with ``chunk_size``, each
            chunk makes this many network calls; ``stats['network_calls']`` counts them all).
        stats: ``solver``, ``steps``, ``nfe``, ``accepted``/``rejected`` (adaptive solvers) and any
            solver-specific figures.
    """

    x: torch.Tensor
    ts: torch.Tensor
    trajectory: torch.Tensor | None = None
    nfe: int = 0
    stats: dict = field(default_factory=dict)

    def __repr__(self):
        traj = "None" if self.trajectory is None else f"<{tuple(self.trajectory.shape)}>"
        return (f"Solution(x=<{tuple(self.x.shape)} {self.x.dtype}>, steps={self.stats.get('steps')}, "
                f"nfe={self.nfe}, trajectory={traj})")
