r"""Single-step exponential Runge-Kutta solvers: DPM-Solver-2 and DPM-Solver-3 (Lu et al. 2022a), and with
data prediction their DPM-Solver++ (2S/3S) counterparts (Lu et al. 2022b).

Stages sit at half log-SNR fractions :math:`c_i` of the step (:math:`\hat\lambda_s + c_i h`). Stage ``i``
takes the exponential step of length :math:`c_i h` with the polynomial through the predictions of the
stages it uses (:mod:`sdeflow.solvers.exponential`), and the update uses the final set:

* DPM-Solver-2: :math:`c = (0, \tfrac12)`; stage 1 is a first-order step; the update is Lu et al.'s
  Algorithm 1 (``solver_type="dpmsolver"``, default:
  :func:`~sdeflow.solvers.exponential.dpm_solver_2_weights`) or the exact integral of the line through stages
  0 and 1 (``"taylor"``); second order;
* DPM-Solver-3: :math:`c = (0, \tfrac13, \tfrac23)`; stage 2 interpolates stages 0 and 1, the update stages
  0 and 2 (``"dpmsolver"``, Lu et al.'s Algorithm 2) or all three (``"taylor"``); third order.

These are dpm-solver's ``singlestep_fixed`` updates of each ``solver_type`` to rounding: with its
``skip_type='logSNR'`` (stages at the fixed log-SNR fractions, ``stages="log_snr"``, default) and with
``skip_type='time_uniform'``, whose inner stages are uniform in time (``stages="time_uniform"``). ``predict="noise"`` (DPM-Solver, default) or ``"data"`` (DPM-Solver++).
Every grid time must have a finite log-SNR (start at ``t_max < 1`` on paths with :math:`\alpha_1 = 0`).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from ..errors import SdeflowValueError
from .exponential import apply_exp, dpm_solver_2_weights, exp_coefficients
from .prediction import PredictionSolver

__all__ = ["ExpSingleStep", "DPMSolver2", "DPMSolver3"]


def stage_times(nodes_c, grid, path) -> np.ndarray:
    """``(steps, stages)`` times at half log-SNR fractions ``nodes_c`` of each step of ``grid``."""
    g = torch.as_tensor(np.asarray(grid, dtype=np.float64))
    lam = 0.5 * path.log_snr(g)
    if not torch.isfinite(lam).all():
        raise SdeflowValueError(
            f"stages placed in log-SNR need a finite log-SNR at every grid time, but {path!r} has log-SNR "
            f"{float(2 * lam[0]):g} at t={float(g[0]):g} and {float(2 * lam[-1]):g} at t={float(g[-1]):g}; "
            f"use t_max < 1 / t_min > 0 on this path (multistep solvers step to sigma = 0 at order 1)")
    h = lam[1:] - lam[:-1]
    c = torch.as_tensor(nodes_c, dtype=torch.float64)
    times = path.t_from_log_snr(2.0 * (lam[:-1, None] + h[:, None] * c[None, :])).numpy().copy()
    times[:, 0] = np.asarray(grid[:-1], dtype=np.float64)  # stage 0 exactly at the grid point
    return times


def stage_predictions(spec, term, j0: int, x, st: dict, k: int, predict: str):
    """Predictions at the stages of ``spec`` (``nodes_c``, ``uses``) for step ``k``, evaluations ``j0...``.

    Stage ``i`` is the exponential step of length ``c_i h`` with the interpolant through the stages in
    ``uses[i]``. Returns the predictions and their half log-SNRs."""
    lam0 = st["half"][k]
    h = st["half"][k + 1] - lam0
    a_e, s_e = st["a_eval"], st["s_eval"]
    preds = [term.predict(j0, x, predict)]
    for i in range(1, len(spec.nodes_c)):
        ci = spec.nodes_c[i]
        used = spec.uses[i]
        lin, w = exp_coefficients(predict, ci * h, [spec.nodes_c[j] / ci for j in used], a_e[j0], s_e[j0],
                                  a_e[j0 + i], s_e[j0 + i])
        preds.append(term.predict(j0 + i, apply_exp(x, lin, w, [preds[j] for j in used]), predict))
    return preds, [lam0 + c * h for c in spec.nodes_c]


def eval_tables(term) -> dict:
    """``alpha`` and ``sigma`` at every planned evaluation (stage) time."""
    a, s, _, _ = term.ipath.coefficients(torch.as_tensor(term.times))
    return {"a_eval": a.tolist(), "s_eval": s.tolist()}


class _Stages:
    """One step's stage layout: fractions ``nodes_c`` of its half log-SNR, and what each stage interpolates."""

    def __init__(self, nodes_c, uses):
        self.nodes_c, self.uses = tuple(nodes_c), uses


class ExpSingleStep(PredictionSolver):
    """Base: ``nodes_c`` stage fractions in half log-SNR; ``uses[i]`` the earlier stages stage ``i``
    interpolates (``uses[0]`` unused); ``final`` the stages of the update.

    ``stages``: ``"log_snr"`` (default) puts the stages at the fixed fractions ``nodes_c`` of each step's half
    log-SNR; ``"time_uniform"`` at equal fractions of each step's *time* (dpm-solver's ``singlestep_fixed``
    with ``skip_type='time_uniform'``), so that the fractions in log-SNR vary from step to step."""

    nodes_c: ClassVar[tuple] = (0.0,)
    uses: ClassVar[tuple] = ((),)
    final: ClassVar[tuple] = (0,)

    def __init__(self, predict: str = "noise", solver_type: str = "dpmsolver", stages: str = "log_snr"):
        if predict not in ("data", "noise"):
            raise SdeflowValueError(f"predict must be 'data' or 'noise', got {predict!r}")
        if solver_type not in ("dpmsolver", "taylor"):
            raise SdeflowValueError(f"solver_type must be 'dpmsolver' or 'taylor', got {solver_type!r}")
        if stages not in ("log_snr", "time_uniform"):
            raise SdeflowValueError(f"stages must be 'log_snr' or 'time_uniform', got {stages!r}")
        self.predict = predict
        self.solver_type = solver_type
        self.stages = stages

    def _times(self, grid, path) -> np.ndarray:
        """``(steps, stages)`` stage times."""
        if self.stages == "log_snr":
            return stage_times(self.nodes_c, grid, path)
        g = np.asarray(grid, dtype=np.float64)
        n = len(self.nodes_c)
        frac = np.arange(n, dtype=np.float64) / n
        times = g[:-1, None] + (g[1:] - g[:-1])[:, None] * frac[None, :]
        times[:, 0] = g[:-1]
        return times

    def eval_times(self, grid, path=None):
        if path is None:
            raise SdeflowValueError(f"{self.name} places its stages in log-SNR: it needs a path (use sample)")
        times = self._times(grid, path)
        return times.reshape(-1), np.repeat(np.arange(len(grid) - 1), len(self.nodes_c))

    def init_state(self, term, x, grid):
        st = super().init_state(term, x, grid)
        st.update(eval_tables(term))
        term.coeffs(self.predict)  # the prediction tables, built in setup (the steps stay traceable)
        n = len(self.nodes_c)
        if self.stages == "log_snr":
            st["layout"] = [_Stages(self.nodes_c, self.uses)] * (len(grid) - 1)
        else:  # the fractions of each step's half log-SNR at its stage times
            half = (0.5 * term.ipath.log_snr(torch.as_tensor(np.asarray(term.times, dtype=np.float64)))).tolist()
            st["layout"] = []
            for k in range(len(grid) - 1):
                h = st["half"][k + 1] - st["half"][k]
                c = [0.0] + [(half[k * n + i] - st["half"][k]) / h for i in range(1, n)]
                st["layout"].append(_Stages(c, self.uses))
        return st

    def step(self, term, k, x, t0, t1, noise, st):
        spec = st["layout"][k]
        preds, lam_nodes = stage_predictions(spec, term, k * len(self.nodes_c), x, st, k, self.predict)
        h = st["half"][k + 1] - st["half"][k]
        final = self.final_stages()
        u = [spec.nodes_c[j] for j in final]
        lin, w = exp_coefficients(self.predict, h, u, st["alpha"][k], st["sigma"][k], st["alpha"][k + 1],
                                  st["sigma"][k + 1])
        if len(self.nodes_c) == 2 and self.solver_type == "dpmsolver":
            c = st["alpha"][k + 1] if self.predict == "data" else st["sigma"][k + 1]
            w = dpm_solver_2_weights(self.predict, h, spec.nodes_c[1], c)
        return apply_exp(x, lin, w, [preds[j] for j in final])

    def final_stages(self) -> tuple:
        """The stages the update interpolates: ``final``, or all of them for ``solver_type='taylor'``."""
        return tuple(range(len(self.nodes_c))) if self.solver_type == "taylor" else self.final

    def __repr__(self):
        return (f"{type(self).__name__}(predict={self.predict!r}, solver_type={self.solver_type!r}, "
                f"stages={self.stages!r})")


class DPMSolver2(ExpSingleStep):
    r"""DPM-Solver-2 (Lu et al. 2022a, Algorithm 1 with :math:`r_1 = 1/2`); DPM-Solver++(2S) with
    ``predict="data"``. Stage :math:`s_1` at half the step's log-SNR, reached by a first-order step; then

    * ``solver_type="dpmsolver"`` (default, the authors' default and Algorithm 1):
      :math:`x_t = \ell x_s - c\varphi_1 m_s - \frac{1}{2r_1}c\varphi_1(m_{s_1} - m_s)`;
    * ``solver_type="taylor"``: the exact integral of the line through :math:`m_s, m_{s_1}`,
      :math:`x_t = \ell x_s - c\varphi_1 m_s + \frac{s}{r_1}c\varphi_2(m_{s_1} - m_s)`,

    with :math:`c, \varphi_1, \varphi_2`, the sign ``s`` and :math:`\ell` as in
    :func:`~sdeflow.solvers.exponential.dpm_solver_weights` (:math:`r_1` the stage's fraction of the step's
    half log-SNR, 1/2 with ``stages="log_snr"``). Both are second order and equal dpm-solver's
    ``singlestep_fixed`` (order 2) of that type to rounding."""

    name = "dpm_solver_2"
    order = 2
    evals_per_step = 2
    nodes_c = (0.0, 0.5)
    uses = ((), (0,))
    final = (0, 1)


class DPMSolver3(ExpSingleStep):
    """DPM-Solver-3 (Lu et al. 2022a, Algorithm 2 with r1 = 1/3, r2 = 2/3); DPM-Solver++(3S) with data.

    ``solver_type="dpmsolver"`` (default, Algorithm 2): the update integrates the line through stages 0
    and 2; ``"taylor"``: the quadratic through all three stages, exactly (dpm-solver's ``'taylor'`` type:
    its :math:`D_2 = 2(D_{1,1} - D_{1,0})/(r_2 - r_1)`). Both third order."""

    name = "dpm_solver_3"
    order = 3
    evals_per_step = 3
    nodes_c = (0.0, 1.0 / 3.0, 2.0 / 3.0)
    uses = ((), (0,), (0, 1))
    final = (0, 2)
