"""The result of :func:`sdeflow.sample` and :func:`sdeflow.solve`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Solution", "merge_chunk_stats"]


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
        stats: ``solver``, ``steps``, ``nfe`` and solver-specific figures. Adaptive solvers report per
            sample, as ``(batch,)`` int64 tensors in the batch's row order, ``accepted`` and ``rejected`` steps
            and ``evaluations`` (field evaluations the solver made on that sample's state, without the final
            denoising step), with their batch sums ``accepted_total``, ``rejected_total`` and
            ``evaluations_total``; a shared-step solver (``dopri5(per_sample=False)``, ``adaptive_heun_sde``)
            gives every sample the batch's figures and also lists the accepted times in ``step_times``.
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


def merge_chunk_stats(done: dict, new: dict, rows: int) -> dict:
    """The statistics of consecutive chunks of one batch: per-sample tensors (keys ``k`` with a ``k_total``)
    concatenated in row order, batch sums (``k_total``) added, any other entry the last chunk's."""
    out = dict(new)
    for k, v in new.items():
        if k + "_total" in new and k in done:
            out[k] = torch.cat([done[k], v])
        elif k.endswith("_total") and k in done:
            out[k] = done[k] + v
    return out
