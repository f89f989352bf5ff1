r"""Exact output moments of a sampler that is affine in its input and its noise.

With a Gaussian target and its exact field, every fixed-step solver of the reverse-time dynamics is an
affine map of the initial state and the normals it draws, independently per coordinate:
:math:`x_{out} = M x_{in} + \sum_k N_k z_k + c`. Running the sampler on a handful of unit impulses
(one row per normal drawn) recovers ``M``, ``N_k`` and ``c`` exactly, hence the mean
:math:`M m_0 + c` and variance :math:`M^2 V_0 + \sum_k N_k^2` of its output distribution: weak errors
without Monte Carlo noise.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..noise import TableNoise

__all__ = ["affine_output_moments"]


def affine_output_moments(run: Callable[[torch.Tensor, TableNoise], torch.Tensor], mean0: torch.Tensor,
                          var0: torch.Tensor, n_steps: int, draws_per_step: int = 1, *, verify: bool = False,
                          seed: int = 0, rtol: float = 1e-8):
    """``(mean, var)`` per coordinate of ``run(x_init, noise)``'s output for ``x_init ~ N(mean0, var0)``.

    ``run`` must integrate ``n_steps`` steps drawing ``draws_per_step`` normals per step from ``noise``,
    and be affine in ``x_init`` and those normals (e.g. any fixed-step sampler with a Gaussian oracle).
    ``verify=True`` adds one random row (seeded by ``seed``) and raises :class:`AssertionError` if its output
    differs from the affine prediction by more than ``rtol`` relative to the output's scale.
    """
    d = mean0.shape[0]
    n_imp = n_steps * draws_per_step
    rows = 2 + n_imp + (1 if verify else 0)
    x = mean0.expand(rows, d).clone()
    x[1] += 1.0
    if verify:
        gen = torch.Generator().manual_seed(seed)
        x[-1] += torch.randn(d, generator=gen, dtype=mean0.dtype)
    table, rand = [], []
    for k in range(n_steps):
        zs = []
        for i in range(draws_per_step):
            z = torch.zeros(rows, d, dtype=mean0.dtype)
            z[2 + k * draws_per_step + i] = 1.0
            if verify:
                z[-1] = torch.randn(d, generator=gen, dtype=mean0.dtype)
                rand.append(z[-1])
            zs.append(z)
        table.append(zs[0] if draws_per_step == 1 else tuple(zs))
    out = run(x, TableNoise(table))
    base = out[0]
    M = out[1] - base
    N = out[2:2 + n_imp] - base
    if verify:
        pred = base + M * (x[-1] - mean0) + (N * torch.stack(rand)).sum(0) if n_imp else base + M * (x[-1] - mean0)
        err = float((out[-1] - pred).abs().max())
        scale = 1.0 + float(out.abs().max())
        if err > rtol * scale:
            raise AssertionError(f"the sampler is not affine in its input and noise (a random input misses the "
                                 f"affine prediction by {err:.3e}); exact output moments do not apply: use "
                                 f"Monte Carlo")
    return base, M * M * var0 + (N * N).sum(0)
