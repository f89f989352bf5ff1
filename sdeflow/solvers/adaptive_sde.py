r"""Adaptive reverse-SDE solver of Jolicoeur-Martineau et al. (2021, "Gotta Go Fast"): an embedded
Euler-Maruyama / stochastic Heun pair with extrapolation.

Per attempted step :math:`h` with Brownian increment :math:`\Delta W`:
:math:`x' = x + h f(x,t) + g(t)\Delta W` (Euler-Maruyama) and
:math:`x'' = x + \tfrac h2[f(x,t) + f(x', t+h)] + \tfrac12[g(t) + g(t+h)]\Delta W` (stochastic Heun).
The scaled error :math:`E = \|(x' - x'')/\delta\|`, :math:`\delta = \max(a_{tol}, r_{tol}\max(|x'|, |x|))`,
per sample (worst sample) or over the batch, accepts the step when :math:`E \le 1`, continuing from the
higher-order :math:`x''` (extrapolation); the next step is :math:`\min(h_{max}, \theta h E^{-r})` with
:math:`\theta = 0.9`, :math:`r = 0.9` (the paper's choices). The Brownian path is a
``torchsde.BrownianInterval`` seeded from the sampler's generator, so a rejected step is retried on the
same path (Brownian bridge), not on fresh noise. Two evaluations per attempted step.
"""

from __future__ import annotations

import math

import torch

from ..errors import BudgetError, SdeflowValueError
from ..noise import GeneratorNoise
from .adaptive import Controller, check_budget, check_options, check_progress, check_step_option, error_ratio
from .base import SDESolver, add_noise

__all__ = ["AdaptiveHeunSDE"]


def brownian_interval(noise, grid, like):
    """A ``torchsde.BrownianInterval`` over the grid's span, seeded from a generator-backed source."""
    import torchsde

    if not isinstance(noise, GeneratorNoise):
        raise SdeflowValueError("adaptive and torchsde SDE solvers draw one Brownian path for the batch from a "
                                "torch.Generator; pass generator= (per-sample or table noise sources are not "
                                "supported by them)")
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

    def integrate(self, term, x, grid, noise=None, callback=None):
        bm = brownian_interval(noise, grid, term.noise_like(x)) if term.is_sde else None
        acc = rej = 0
        times = [grid[0]]
        direction = 1.0 if grid[-1] > grid[0] else -1.0
        h_max = abs(grid[-1] - grid[0]) if self.h_max is None else float(self.h_max)
        h = min(self.h_init, h_max)
        t = grid[0]
        span = abs(grid[-1] - grid[0])
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
                    dw = bm(min(t, t + hs), max(t, t + hs))
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
                    hook = getattr(term, "on_accept", None)
                    if hook is not None:
                        r = hook(acc - 1, t, x)
                        if r is not None:
                            x = r
                else:
                    rej += 1
                h = min(h_max, abs(hs) * self.controller.factor(ratio)) if not (last and ratio <= 1.0) else h
            if callback is not None:
                callback(i, x)
        return x, {"accepted": acc, "rejected": rej, "step_times": times}

    def stats(self, state):
        return dict(state)

    def __repr__(self):
        return f"AdaptiveHeunSDE(rtol={self.rtol}, atol={self.atol}, error_norm={self.error_norm!r})"
