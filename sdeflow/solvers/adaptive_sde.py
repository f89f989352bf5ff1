r"""Adaptive reverse-SDE solver of Jolicoeur-Martineau et al. (2021, "Gotta Go Fast"): an embedded
Euler-Maruyama / stochastic Heun pair with extrapolation.

Per attempted step :math:`h` with Brownian increment :math:`\Delta W`:
:math:`x' = x + h f(x,t) + g(t)\Delta W` (Euler-Maruyama) and
:math:`x'' = x + \tfrac h2[f(x,t) + f(x', t+h)] + \tfrac12[g(t) + g(t+h)]\Delta W` (stochastic Heun).
The scaled error :math:`E = \|(x' - x'')/\delta\|`, :math:`\delta = \max(a_{tol}, r_{tol}\max(|x'|, |x|))`,
per sample (worst sample) or over the batch, accepts the step when :math:`E \le 1`, continuing from the
higher-order :math:`x''` (extrapolation); the next step is :math:`\min(h_{max}, \theta h E^{-r})` with
:math:`\theta = 0.9`, :math:`r = 0.9` (the paper's choices). With a
``torch.Generator`` (``generator=``) one step size serves the whole batch and the Brownian path is a
``torchsde.BrownianInterval`` seeded from the generator, so a rejected step is retried on the same path
(Brownian bridge), not on fresh noise. With :class:`~sdeflow.noise.PerSampleNoise` (``noise=seed``) every sample
has its own time, step size, error norm and decision (as :mod:`sdeflow.solvers.dopri5`'s per-sample control, the
finished rows leaving the batched evaluation) and its own Brownian path, a
:class:`~sdeflow.noise.VirtualBrownianTree` hashed from ``(seed, sample, node)``: a sample's output is bitwise the
same alone, in any batch, chunk or shard, and from the same seed it follows the same Brownian path at any
tolerance. Two evaluations per attempted step.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import BudgetError, SdeflowValueError
from ..noise import GeneratorNoise, PerSampleNoise, VirtualBrownianTree
from .adaptive import (
    Controller,
    check_budget,
    check_budget_rows,
    check_options,
    check_progress,
    check_progress_rows,
    check_step_option,
    error_ratio,
    row_errors,
    sample_stats,
)
from .base import SDESolver, add_noise

__all__ = ["AdaptiveHeunSDE"]


def brownian_interval(noise, grid, like):
    """A ``torchsde.BrownianInterval`` over the grid's span, seeded from a generator-backed source."""
    import torchsde

    if not isinstance(noise, GeneratorNoise):
        raise SdeflowValueError("adaptive and torchsde SDE solvers draw one Brownian path for the batch from a "
                                "torch.Generator; pass generator= (table and fine-grid noise sources are not "
                                "supported by them; adaptive_heun_sde also takes noise=PerSampleNoise(seed))")
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=noise.generator))
    lo, hi = min(grid), max(grid)
    return torchsde.BrownianInterval(t0=lo, t1=hi, size=tuple(like.shape), dtype=like.dtype,
                                     device=like.device, entropy=seed, levy_area_approximation="space-time")


class AdaptiveHeunSDE(SDESolver):
    __doc__ = __doc__
    name = "adaptive_heun_sde"
    order = 2
    strong_order_additive = 1.0
    weak_order_additive = 2.0
    evals_per_step = 2
    adaptive = True
    planned = False
    sde_type = "stratonovich"

    def __init__(self, rtol: float = 1e-2, atol: float = 1e-3, error_norm: str = "sample",
                 h_init: float = 0.01, h_max: float | None = None, max_steps: int = 100000):
        check_options(rtol, atol, error_norm, max_steps)
        self.rtol, self.atol, self.error_norm, self.max_steps = float(rtol), float(atol), error_norm, max_steps
        self.h_init = check_step_option("h_init", h_init, optional=False)
        self.h_max = check_step_option("h_max", h_max)
        self.controller = Controller(q=1, exponent=0.9, fac_max=math.inf)

    def steps_per_sample(self, noise) -> bool:
        return isinstance(noise, PerSampleNoise)

    def integrate(self, term, x, grid, noise=None, callback=None):
        if self.steps_per_sample(noise):
            if self.error_norm == "batch":
                raise SdeflowValueError("error_norm='batch' pools the whole batch's error into one step size, but "
                                        "noise=PerSampleNoise steps every sample on its own; use the default "
                                        "error_norm='sample' (or generator= for one step size)")
            return self._integrate_rows(term, x, grid, noise, callback)
        bm = brownian_interval(noise, grid, term.noise_like(x)) if term.is_sde else None
        acc = rej = 0
        times = [grid[0]]
        direction = 1.0 if grid[-1] > grid[0] else -1.0
        h_max = abs(grid[-1] - grid[0]) if self.h_max is None else float(self.h_max)
        h = min(self.h_init, h_max)
        t = grid[0]
        span = abs(grid[-1] - grid[0])
        lo, hi = min(grid), max(grid)
        for i in range(len(grid) - 1):
            t_end = grid[i + 1]
            term.interval = (grid[i], grid[i + 1])  # a stage at a knot sees the interval's segment
            while (t_end - t) * direction > 1e-14 * max(1.0, abs(t_end)):
                if acc + rej >= self.max_steps:
                    raise BudgetError(f"{self.name} took more than max_steps={self.max_steps} steps; loosen "
                                      f"rtol/atol or raise max_steps")
                check_progress(self.name, t, h, span)
                last = h >= abs(t_end - t)
                hs = (t_end - t) if last else direction * h
                check_budget(term, self.name, 2)
                f0 = term.drift_at(t, x)
                em = torch.add(x, f0, alpha=hs)
                if bm is not None:
                    # the ends clamped to the interval's span: t + hs may round past the grid's end
                    dw = bm(max(min(t, t + hs), lo), min(max(t, t + hs), hi))
                    g0 = term.diffusion_at(t, x)
                    add_noise(em, g0, dw, 1.0)
                f1 = term.drift_at(t + hs, em)
                heun = torch.add(x, f0, alpha=0.5 * hs).add_(f1, alpha=0.5 * hs)
                if bm is not None:
                    add_noise(heun, 0.5 * (g0 + term.diffusion_at(t + hs, em)), dw, 1.0)
                ratio = error_ratio(em - heun, x, em, self.rtol, self.atol, self.error_norm)
                check_progress(self.name, t, hs, span, ratio)
                if ratio <= 1.0:
                    acc += 1
                    t = t_end if last else t + hs
                    x = heun
                    times.append(t)
                    hook = term.on_accept
                    if hook is not None:
                        r = hook(acc - 1, t, x)
                        if r is not None:
                            x = r
                else:
                    rej += 1
                h = min(h_max, abs(hs) * self.controller.factor(ratio)) if not (last and ratio <= 1.0) else h
            if callback is not None:
                callback(i, x)
        n = x.shape[0]
        return x, {"accepted": np.full(n, acc), "rejected": np.full(n, rej), "evaluations": np.full(n, 2 * (acc + rej)),
                   "step_times": times}

    def _integrate_rows(self, term, x, grid, noise, callback):
        """Every sample on its own, on its own Brownian path (the same formulas row by row, each product and sum
        rounded separately)."""
        n = x.shape[0]
        shape = (-1,) + (1,) * (x.dim() - 1)
        acc = np.zeros(n, dtype=np.int64)
        rej = np.zeros(n, dtype=np.int64)
        evals = np.zeros(n, dtype=np.int64)
        span = abs(grid[-1] - grid[0])
        direction = 1.0 if grid[-1] > grid[0] else -1.0
        h_max = span if self.h_max is None else float(self.h_max)
        h = np.full(n, min(self.h_init, h_max))
        tree = None
        if term.is_sde:
            like = term.noise_like(x)
            tree = VirtualBrownianTree(noise, grid[0], grid[-1], tuple(like.shape[1:]), device=x.device)
            w = tree(np.full(n, grid[0]), np.arange(n))  # W at each row's time (float64)
        for i in range(len(grid) - 1):
            t_end = grid[i + 1]
            term.interval = (grid[i], grid[i + 1])  # a stage at a knot sees the interval's segment
            idx = np.arange(n)
            term.rows = None  # every row, in batch order (term.rows: the rows the evaluations receive)
            xa, ta, ha, wa = x, np.full(n, grid[i]), h.copy(), (w if tree is not None else None)
            x_out = torch.empty_like(x)
            w_out = torch.empty_like(w) if tree is not None else None
            while idx.size:
                over = acc[idx] + rej[idx] >= self.max_steps
                if over.any():
                    raise BudgetError(f"{self.name} took more than max_steps={self.max_steps} steps on sample "
                                      f"{int(idx[over][0])}; loosen rtol/atol or raise max_steps")
                check_progress_rows(self.name, ta, ha, span, rows=idx)
                remaining = t_end - ta
                last = ha >= np.abs(remaining)
                hs = np.where(last, remaining, direction * ha)
                check_budget_rows(term, self.name, evals[idx], 2)
                hd = torch.as_tensor(hs).to(dtype=x.dtype, device=x.device).reshape(shape)
                half = torch.as_tensor(0.5 * hs).to(dtype=x.dtype, device=x.device).reshape(shape)
                t0, t1 = torch.as_tensor(ta), torch.as_tensor(ta + hs)
                f0 = term.drift_at(t0, xa)
                em = xa + f0 * hd
                if tree is not None:
                    w1 = tree(ta + hs, idx)
                    dw = (w1 - wa).to(x.dtype)
                    g0 = term.diffusion_at(t0, xa)
                    em = em + g0 * dw
                f1 = term.drift_at(t1, em)
                heun = xa + f0 * half + f1 * half
                if tree is not None:
                    heun = heun + (0.5 * (g0 + term.diffusion_at(t1, em))) * dw
                evals[idx] += 2
                ratio = row_errors(em - heun, xa, em, self.rtol, self.atol)
                check_progress_rows(self.name, ta, hs, span, ratio, rows=idx)
                ok = ratio <= 1.0
                acc[idx] += ok
                rej[idx] += ~ok
                ta = np.where(ok, np.where(last, t_end, ta + hs), ta)
                ha = np.where(ok & last, ha, np.minimum(h_max, np.abs(hs) * self.controller.factors(ratio)))
                if ok.any():
                    keep = torch.as_tensor(ok, device=x.device).reshape(shape)
                    xa = heun if ok.all() else torch.where(keep, heun, xa)
                    if tree is not None:
                        wa = w1 if ok.all() else torch.where(keep.reshape((-1,) + (1,) * (wa.dim() - 1)), w1, wa)
                done = (t_end - ta) * direction <= 1e-14 * max(1.0, abs(t_end))
                if done.any():  # rows at the grid time leave the batched evaluation
                    d = torch.as_tensor(np.flatnonzero(done), device=x.device)
                    rows = torch.as_tensor(idx[done], device=x.device)
                    x_out.index_copy_(0, rows, xa.index_select(0, d))
                    if tree is not None:
                        w_out.index_copy_(0, rows, wa.index_select(0, d))
                    h[idx[done]] = ha[done]
                    if done.all():
                        break
                    k = torch.as_tensor(np.flatnonzero(~done), device=x.device)
                    xa = xa.index_select(0, k)
                    wa = wa.index_select(0, k) if tree is not None else None
                    idx, ta, ha = idx[~done], ta[~done], ha[~done]
                    term.rows = torch.from_numpy(idx).to(x.device)
            term.rows = None
            x = x_out
            if tree is not None:
                w = w_out
            if callback is not None:
                callback(i, x)
        return x, {"accepted": acc, "rejected": rej, "evaluations": evals}

    def stats(self, state):
        """Per sample (:func:`~sdeflow.solvers.adaptive.sample_stats`); with a generator (one step size for the batch)
        every sample's figures are the batch's, and ``step_times`` lists the accepted times."""
        return sample_stats(state["accepted"], state["rejected"], state["evaluations"],
                            **({"step_times": state["step_times"]} if "step_times" in state else {}))

    def __repr__(self):
        return f"AdaptiveHeunSDE(rtol={self.rtol}, atol={self.atol}, error_norm={self.error_norm!r})"
