r"""Dopri5: adaptive Dormand-Prince 5(4) (Dormand & Prince 1980) with error control, every sample on its own.

Stages of the :data:`~sdeflow.solvers.tableau.DOPRI5` tableau (first same as last: 6 new evaluations per
attempted step). With step ``h`` from ``(t, x)`` and stage derivatives ``k_1 .. k_7``,

.. math::

    x_{new} = x + h \sum_j b_j k_j, \qquad e = h \sum_j (b_j - \hat b_j) k_j, \qquad
    r = \Big(\tfrac1D \sum_i \big(e_i / (\mathrm{atol} + \mathrm{rtol} \max(|x_i|, |x_{new,i}|))\big)^2\Big)^{1/2}

(``D`` the entries of one sample); the step is accepted when ``r <= 1`` and the next step is
``h * clip(0.9 r^{-1/5}, 0.2, 5)`` (integral controller; Hairer, Norsett & Wanner 1993, II.4, whose
starting-step heuristic gives the first step).

``per_sample=True`` (the default): every sample (row) has its own time, step size, error norm ``r``,
accept/reject decision and controller. Each stage evaluates the field once, on the rows still running, at
their own times (a ``(rows,)`` time tensor, :meth:`sdeflow.terms.FieldTerm.predict_at`); a row that reaches
the next grid time leaves the batched evaluation (compaction), so a batch costs the sum of its samples'
work. A row's arithmetic involves only that row (elementwise updates, no fused multiply-adds, per-row
reductions), so its result is bitwise the same whatever rows share its batch, chunk or shard, given a field
that computes each row on its own. Samples wait for each other only at grid times (the trajectory is
recorded there, and a piecewise path's knots are grid times). The term's :attr:`~sdeflow.terms.Term.rows` names
the rows an evaluation receives (per-sample data, such as :func:`sdeflow.solve`'s ``row_data`` and
:func:`sdeflow.sample`'s per-sample ``model_kwargs``, follow them).
Finiteness (``check_finite``) is read from each step's error norms, which are NaN for a row whose evaluations
were not finite: such a step is replayed with per-evaluation checks, which name the evaluation at fault.

``per_sample=False``: one step size for the whole batch, from the worst sample's error (``error_norm="sample"``)
or the batch RMS (``"batch"``), one host decision per step; the result of a row depends on the others.

The solve stops exactly at every grid time; at a time where the drift jumps (a grid time inside a piecewise
path, DiscreteVP's knots) the stages are one-sided and the first stage is re-evaluated (no FSAL across it).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import BudgetError, SdeflowTypeError, SdeflowValueError
from .adaptive import (Controller, check_budget, check_budget_rows, check_options, check_progress,
                       check_progress_rows, check_step_option, error_ratio, row_errors, sample_stats)
from .base import ODESolver
from .explicit_rk import combine
from .tableau import DOPRI5

__all__ = ["Dopri5"]


def _combine_rows(x: torch.Tensor | None, ks: list, pairs: tuple, h: torch.Tensor) -> torch.Tensor:
    """``x + (sum_j c_j k_j) * h`` (``x`` None: without it; ``pairs``: the nonzero ``(j, c_j)``; ``h``: the rows'
    steps, ``(rows, 1, ...)``), every product and sum a separate rounding (no fused multiply-add, whose vectorised
    and scalar kernels can round a row differently by its position)."""
    out = None
    for j, c in pairs:
        term = ks[j] * c
        out = term if out is None else out.add_(term)
    out = out.mul_(h)
    return out if x is None else x + out


class Dopri5(ODESolver):
    __doc__ = __doc__
    name = "dopri5"
    order = 5
    evals_per_step = 6
    adaptive = True
    planned = False

    def __init__(self, rtol: float = 1e-5, atol: float = 1e-6, error_norm: str = "sample",
                 max_steps: int = 100000, first_step: float | None = None, per_sample: bool = True):
        check_options(rtol, atol, error_norm, max_steps)
        if not isinstance(per_sample, bool):
            raise SdeflowTypeError(f"per_sample must be True or False, got {per_sample!r}")
        if per_sample and error_norm == "batch":
            raise SdeflowValueError("error_norm='batch' pools the whole batch's error into one step size, which "
                                    "per-sample step control cannot do; use per_sample=False with it (or the "
                                    "default error_norm='sample')")
        self.rtol, self.atol, self.error_norm, self.max_steps = float(rtol), float(atol), error_norm, max_steps
        self.first_step = check_step_option("first_step", first_step)
        self.per_sample = per_sample
        self.controller = Controller(q=4)

    # ---- one step size for the batch -------------------------------------------------------------------
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

    def _integrate_shared(self, term, x, grid, callback):
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
            term.rows = None  # every row, in batch order (term.rows: the rows the evaluations receive)
            if i and term.piecewise:  # the drift jumps at this grid time: no FSAL across it
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
                    hook = term.on_accept
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
        n = x.shape[0]
        evals = term.nfe
        return x, {"accepted": np.full(n, acc), "rejected": np.full(n, rej), "evaluations": np.full(n, evals),
                   "step_times": times}

    # ---- every sample on its own -------------------------------------------------------------------------
    def _initial_steps(self, term, x, t0: float, t1: float, f0, evals: np.ndarray) -> np.ndarray:
        """Hairer, Norsett & Wanner's starting step (II.4) for each row, from that row's norms only."""
        n = x.shape[0]
        direction = 1.0 if t1 > t0 else -1.0
        if self.first_step is not None:
            return np.full(n, math.copysign(abs(self.first_step), direction))
        x, f0 = x.detach(), f0.detach()
        d0 = row_errors(x, x, x, self.rtol, self.atol)
        d1 = row_errors(f0, x, x, self.rtol, self.atol)
        with np.errstate(divide="ignore", invalid="ignore"):
            h0 = np.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1)
        h0 = np.minimum(h0, abs(t1 - t0))
        d = direction * h0
        dd = torch.as_tensor(d).to(dtype=x.dtype, device=x.device).reshape((-1,) + (1,) * (x.dim() - 1))
        f1 = term.drift_at(torch.as_tensor(t0 + d), x + f0 * dd).detach()
        evals += 1
        d2 = row_errors(f1 - f0, x, x, self.rtol, self.atol) / h0
        dm = np.maximum(d1, d2)
        with np.errstate(divide="ignore", invalid="ignore"):
            h1 = np.where(dm <= 1e-15, np.maximum(1e-6, h0 * 1e-3), (0.01 / dm) ** (1 / 5))
        return direction * np.minimum(np.minimum(100 * h0, h1), abs(t1 - t0))

    def _integrate_rows(self, term, x, grid, callback):
        n = x.shape[0]
        acc = np.zeros(n, dtype=np.int64)
        rej = np.zeros(n, dtype=np.int64)
        evals = np.zeros(n, dtype=np.int64)
        check_budget_rows(term, "dopri5", evals, 2 if self.first_step is None else 1)
        f0 = term.drift_at(torch.full((n,), grid[0], dtype=torch.float64), x)
        evals += 1
        h = self._initial_steps(term, x, grid[0], grid[-1], f0, evals)
        # per-evaluation finiteness checks (term.check) cost a synchronisation per evaluation; a step's error norm
        # synchronises anyway and is NaN for a row whose stages were not finite, so the loop checks that instead
        # and replays only such a step with the checks on (the same evaluations: they name the one at fault)
        check = term.check
        try:
            term.check = False
            x = self._rows_loop(term, x, grid, callback, f0, h, acc, rej, evals, check)
        finally:
            term.check, term.rows = check, None
        return x, {"accepted": acc, "rejected": rej, "evaluations": evals}

    def _rows_loop(self, term, x, grid, callback, f0, h, acc, rej, evals, check: bool):
        """:meth:`_integrate_rows`'s steps from ``(grid[0], x)`` (derivative ``f0``, first steps ``h``), counting
        into ``acc``, ``rej``, ``evals``; the state at ``grid[-1]``."""
        tab = DOPRI5
        stage_rows, err_row = tab._rows, tuple((j, float(v)) for j, v in enumerate(tab.b_err) if v)
        n = x.shape[0]
        col = (-1,) + (1,) * (x.dim() - 1)
        span = abs(grid[-1] - grid[0])

        def stages(xa, fa, ta, hs, hcol):
            """The stage derivatives of one attempted step from ``(ta, xa)`` with steps ``hs`` (``hcol`` on the
            device); the last stage's input is the update (FSAL): ``(ks, x_new)``."""
            ks = [fa]
            for s in range(1, tab.stages):
                x_new = _combine_rows(xa, ks, stage_rows[s], hcol)
                ks.append(term.drift_at(torch.from_numpy(ta + tab.c[s] * hs), x_new))
            return ks, x_new

        for i in range(len(grid) - 1):
            t_end = grid[i + 1]
            direction = 1.0 if t_end > grid[i] else -1.0
            close = 1e-14 * max(1.0, abs(t_end))  # a row this close to the grid time has reached it
            term.interval = (grid[i], grid[i + 1])  # a stage at a knot sees the interval's segment
            term.rows = None  # every row, in batch order (term.rows: the rows the evaluations receive)
            if i and term.piecewise:  # the drift jumps at this grid time: no FSAL across it
                check_budget_rows(term, "dopri5", evals, 1)
                term.check = check  # no step replays this evaluation: checked here
                f0 = term.drift_at(torch.full((n,), grid[i], dtype=torch.float64), x)
                term.check = False
                evals += 1
            # the rows still running in this interval: their batch indices, state, derivative, time, step and
            # attempted steps (acc + rej)
            idx = np.arange(n)
            xa, fa, ta, ha, na = x, f0, np.full(n, grid[i]), h.copy(), acc + rej
            x_out, f_out = torch.empty_like(x), torch.empty_like(f0)
            while idx.size:
                if na.max() >= self.max_steps:
                    raise BudgetError(f"dopri5 took more than max_steps={self.max_steps} steps on sample "
                                      f"{int(idx[np.argmax(na)])}; loosen rtol/atol or raise max_steps")
                check_progress_rows("dopri5", ta, ha, span, rows=idx)
                remaining = t_end - ta
                last = np.abs(ha) >= np.abs(remaining)
                hs = np.where(last, remaining, ha)
                check_budget_rows(term, "dopri5", evals[idx], tab.stages - 1)
                hcol = torch.from_numpy(hs).to(dtype=x.dtype, device=x.device).reshape(col)
                ks, x_new = stages(xa, fa, ta, hs, hcol)
                evals[idx] += tab.stages - 1
                na += 1
                ratio = row_errors(_combine_rows(None, ks, err_row, hcol), xa, x_new, self.rtol, self.atol)
                if check and not np.isfinite(ratio).all():
                    term.check = True  # raises at the first evaluation that is not finite, if one is
                    stages(xa, fa, ta, hs, hcol)
                check_progress_rows("dopri5", ta, hs, span, ratio, rows=idx)
                proposal = hs * self.controller.factors(ratio)
                ok = ratio <= 1.0
                if ok.all():
                    acc[idx] += 1
                    ta = np.where(last, t_end, ta + hs)
                    xa, fa = x_new, ks[-1]
                else:
                    acc[idx] += ok
                    rej[idx] += ~ok
                    ta = np.where(ok, np.where(last, t_end, ta + hs), ta)
                    if ok.any():
                        keep = torch.from_numpy(ok).to(device=x.device).reshape(col)
                        xa, fa = torch.where(keep, x_new, xa), torch.where(keep, ks[-1], fa)
                # a step clipped to land on a grid time must not shrink the next one
                ha = np.where(ok & last, direction * np.maximum(np.abs(ha), np.abs(proposal)), proposal)
                done = (t_end - ta) * direction <= close
                if done.any():  # rows at the grid time leave the batched evaluation
                    d = np.flatnonzero(done)
                    rows = torch.from_numpy(idx[d]).to(x.device)
                    if d.size == idx.size:
                        x_out.index_copy_(0, rows, xa)
                        f_out.index_copy_(0, rows, fa)
                    else:
                        dd = torch.from_numpy(d).to(x.device)
                        x_out.index_copy_(0, rows, xa.index_select(0, dd))
                        f_out.index_copy_(0, rows, fa.index_select(0, dd))
                        k = torch.from_numpy(np.flatnonzero(~done)).to(x.device)
                        xa, fa = xa.index_select(0, k), fa.index_select(0, k)
                    h[idx[d]] = ha[d]
                    idx, ta, ha, na = idx[~done], ta[~done], ha[~done], na[~done]
                    term.rows = torch.from_numpy(idx).to(x.device)
            x, f0 = x_out, f_out
            if callback is not None:
                callback(i, x)
        return x

    def steps_per_sample(self, noise) -> bool:
        return self.per_sample

    def integrate(self, term, x, grid, noise=None, callback=None):
        if self.per_sample:
            return self._integrate_rows(term, x, grid, callback)
        return self._integrate_shared(term, x, grid, callback)

    def stats(self, state):
        """Per sample ``(batch,)`` tensors and batch sums (:func:`~sdeflow.solvers.adaptive.sample_stats`);
        with ``per_sample=False`` also the shared steps' times ``step_times``."""
        return sample_stats(state["accepted"], state["rejected"], state["evaluations"],
                            **({"step_times": state["step_times"]} if "step_times" in state else {}))

    def __repr__(self):
        return (f"Dopri5(rtol={self.rtol}, atol={self.atol}, error_norm={self.error_norm!r}, "
                f"per_sample={self.per_sample})")
