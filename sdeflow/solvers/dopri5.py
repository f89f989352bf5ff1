r"""Dopri5: adaptive Dormand-Prince 5(4) (Dormand & Prince 1980) with error control.

Stages of the :data:`~sdeflow.solvers.tableau.DOPRI5` tableau (first same as last: 6 new evaluations per
attempted step); the embedded 4th-order solution estimates the local error, scaled by
``atol + rtol * max(|x|, |x_new|)`` and reduced per sample (worst sample: every sample meets the tolerance,
``error_norm="sample"``) or over the batch (``"batch"``). Steps are accepted when the scaled error is at
most 1; an integral controller picks the next step. The initial step follows Hairer, Norsett & Wanner
(1993, II.4). The solve stops exactly at every grid time (the trajectory is recorded there); statistics:
accepted and rejected steps.
"""

from __future__ import annotations

import math

import torch

from ..errors import BudgetError
from .adaptive import Controller, check_budget, check_options, check_progress, check_step_option, error_ratio
from .base import ODESolver
from .explicit_rk import combine
from .tableau import DOPRI5

__all__ = ["Dopri5"]


class Dopri5(ODESolver):
    __doc__ = __doc__
    name = "dopri5"
    order = 5
    evals_per_step = 6
    adaptive = True
    planned = False

    def __init__(self, rtol: float = 1e-5, atol: float = 1e-6, error_norm: str = "sample",
                 max_steps: int = 100000, first_step: float | None = None):
        check_options(rtol, atol, error_norm, max_steps)
        self.rtol, self.atol, self.error_norm, self.max_steps = float(rtol), float(atol), error_norm, max_steps
        self.first_step = check_step_option("first_step", first_step)
        self.controller = Controller(q=4)

    def _initial_step(self, term, x, t0, t1, f0):
        if self.first_step is not None:
            return math.copysign(abs(self.first_step), t1 - t0)
        x, f0 = x.detach(), f0.detach()  # the step size only reads values: no graph, no requires_grad warning
        sc = self.atol + self.rtol * x.abs()
        d0 = float((x / sc).pow(2).mean().sqrt())
        d1 = float((f0 / sc).pow(2).mean().sqrt())
        h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
        h0 = min(h0, abs(t1 - t0))
        d = math.copysign(h0, t1 - t0)
        f1 = term.drift_at(t0 + d, x + d * f0).detach()
        d2 = float(((f1 - f0) / sc).pow(2).mean().sqrt()) / h0
        h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / 5)
        return math.copysign(min(100 * h0, h1, abs(t1 - t0)), t1 - t0)

    def integrate(self, term, x, grid, noise=None, callback=None):
        tab = DOPRI5
        acc = rej = 0
        times = [grid[0]]
        check_budget(term, "dopri5", 2 if self.first_step is None else 1)
        f0 = term.drift_at(grid[0], x)
        h = self._initial_step(term, x, grid[0], grid[-1], f0)
        span = abs(grid[-1] - grid[0])
        for i in range(len(grid) - 1):
            t, t_end = grid[i], grid[i + 1]
            direction = 1.0 if t_end > t else -1.0
            term.interval = (grid[i], grid[i + 1])  # a stage at a knot sees the interval's segment
            if i and getattr(term, "piecewise", False):  # the drift jumps at this grid time: no FSAL across it
                check_budget(term, "dopri5", 1)
                f0 = term.drift_at(t, x)
            while (t_end - t) * direction > 1e-14 * max(1.0, abs(t_end)):
                if acc + rej >= self.max_steps:
                    raise BudgetError(f"dopri5 took more than max_steps={self.max_steps} steps; loosen "
                                      f"rtol/atol or raise max_steps")
                check_progress("dopri5", t, h, span)
                last = abs(h) >= abs(t_end - t)
                hs = (t_end - t) if last else h
                check_budget(term, "dopri5", tab.stages - 1)
                ks = [f0]
                for s in range(1, tab.stages):
                    ks.append(term.drift_at(t + tab.c[s] * hs, combine(x, ks, tab._rows[s], hs)))
                x_new = combine(x, ks, tab._brow, hs)  # equals the last stage's input (FSAL)
                err = combine(torch.zeros_like(x), ks, tuple((j, v) for j, v in enumerate(tab.b_err) if v), hs)
                ratio = error_ratio(err, x, x_new, self.rtol, self.atol, self.error_norm)
                check_progress("dopri5", t, hs, span, ratio)
                proposal = hs * self.controller.factor(ratio)
                if ratio <= 1.0:
                    acc += 1
                    t = t_end if last else t + hs
                    x, f0 = x_new, ks[-1]
                    times.append(t)
                    hook = getattr(term, "on_accept", None)
                    if hook is not None:  # a replaced state has no FSAL derivative: one more evaluation
                        r = hook(acc - 1, t, x)
                        if r is not None:
                            check_budget(term, "dopri5", 1)
                            x, f0 = r, term.drift_at(t, r)
                    # a step clipped to land on a grid time must not shrink the next one
                    h = math.copysign(max(abs(h), abs(proposal)), direction) if last else proposal
                else:
                    rej += 1
                    h = proposal
            if callback is not None:
                callback(i, x)
        return x, {"accepted": acc, "rejected": rej, "step_times": times}

    def stats(self, state):
        return {"accepted": state["accepted"], "rejected": state["rejected"], "step_times": state["step_times"]}

    def __repr__(self):
        return f"Dopri5(rtol={self.rtol}, atol={self.atol}, error_norm={self.error_norm!r})"
