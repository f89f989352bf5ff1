r"""Exponential multistep solvers: DPM-Solver++(2M/3M), UniPC, SDE-DPM-Solver++(2M/3M), and sdeflow's
exact-integral variants.

Each step evaluates the field once, at the step's start :math:`s`, and integrates the polynomial through
the last ``order`` predictions (at half log-SNRs :math:`\hat\lambda_j`) exactly against the exponential
kernel (:mod:`sdeflow.solvers.exponential`):

.. math:: x_t = \frac{\sigma_t}{\sigma_s}e^{-E}x_s + \alpha_t\rho h\sum_j w_j D_j \;(+\ \text{noise}),
          \qquad u_j = (\hat\lambda_j - \hat\lambda_s)/h.

The first steps use the history available (order 1, 2, ...). A step into :math:`\sigma_t = 0` or out of
:math:`\alpha_s = 0` (infinite :math:`h`) is taken at order 1, where it is exact for constant :math:`D`
(:math:`x_t = \hat x_0` at :math:`\sigma_t = 0`). ``lower_order_final`` also lowers the last steps
(diffusers' stabilisation for very few steps).

Variants (``variant``):

* ``"exact"`` — exact integration of the interpolant (sdeflow's own): true order ``order``
  (``exp_3m_exact`` is ``order=3`` with data prediction);
* ``"dpmsolver"`` / ``"taylor"`` — dpm-solver's multistep updates (Lu et al. 2022b; its ``solver_type``),
  orders 1 to 3 (:func:`~sdeflow.solvers.exponential.dpm_solver_weights`): order 2 ``"dpmsolver"`` is the
  published DPM-Solver++(2M)
  :math:`x_t = \frac{\sigma_t}{\sigma_s}x_s + \alpha_t(1-e^{-h})[(1+\frac1{2r})D_s - \frac1{2r}D_{s'}]`,
  :math:`r = h_{prev}/h` (Algorithm 2; ``"taylor"`` is the exact integral there); order 3 is their
  DPM-Solver++(3M), whose third-order term is half the quadratic's, so it converges at order 2 (declared);
* ``"bh1"`` / ``"bh2"`` — UniPC's B(h) updates (Zhao et al. 2023;
  :func:`~sdeflow.solvers.exponential.unipc_weights`), orders 1 to 3;
* ``corrector=True`` — UniPC-style (Zhao et al. 2023): after the field is evaluated at the predicted
  :math:`x_t` (an evaluation the next step needs anyway), :math:`x_t` is recomputed from :math:`x_s` with the
  interpolant that also passes through the new prediction (an exponential Adams-Moulton corrector), raising
  the order by one at no extra NFE: with ``"exact"`` the weights are the exact integrals (``exp_pc``), with
  ``"bh1"`` / ``"bh2"`` UniPC's (``unipc``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import SdeflowValueError, SingularityError
from .exp_singlestep import DPMSolver2, DPMSolver3, eval_tables, stage_predictions, stage_times
from .ddim import neg_expm1
from .exponential import apply_exp, dpm_solver_weights, exp_coefficients, unipc_weights
from .prediction import PredictionSolver
from .program import Program

__all__ = ["ExpMultistep", "DPMSolverPP2M", "DPMSolverPP3M", "Exp3MExact", "UniPC", "ExpPC", "SDEDPMSolverPP2M",
           "SDEDPMSolverPP3M", "step_damping", "dpmpp_2m_weights", "VARIANTS"]

#: update formulas of :class:`ExpMultistep` (see the module docstring)
VARIANTS = ("exact", "dpmsolver", "taylor", "bh1", "bh2")
_AUTHORS = ("dpmsolver", "taylor")
_UNIPC = ("bh1", "bh2")


def step_damping(term, grid: list[float], hh: list[float]) -> list[float]:
    r""":math:`E_k = \int \eta^2 d\hat\lambda = \int_{t_{k+1}}^{t_k}\gamma^2/(2\sigma^2)\,dt` per step, 0 for the
    probability-flow ODE. For the reverse SDE (:math:`\gamma = g`), :math:`g^2/(2\sigma^2) = d\hat\lambda/dt`, so
    :math:`E_k` is exactly the step's half log-SNR :math:`h_k` (DPM-Solver++'s SDE); any other :math:`\gamma`: 16-point
    Gauss-Legendre in the integration path's time."""
    fn = term.gamma2_fn
    if fn is None:
        return [0.0] * (len(grid) - 1)
    if fn == term.ipath.g2:  # the reverse SDE: g^2/(2 sigma^2) = d(half log-SNR)/dt, so E is exactly the step h
        return [float(v) if math.isfinite(v) else math.inf for v in hh]
    x, w = np.polynomial.legendre.leggauss(16)
    out = []
    for k in range(len(grid) - 1):
        a, b = grid[k + 1], grid[k]
        t = torch.as_tensor(0.5 * (b - a) * x + 0.5 * (a + b))
        g2 = fn(t)
        s = term.ipath.sigma(t)
        val = float(0.5 * (b - a) * torch.sum(torch.as_tensor(w) * g2 / (2 * s * s)))
        # into sigma = 0 the damping diverges (the step lands on the data prediction); out of alpha = 0
        # (h infinite, sigma finite) it stays finite
        out.append(math.inf if float(term.ipath.sigma(torch.tensor(a, dtype=torch.float64))) == 0.0 else val)
    return out


def dpmpp_2m_weights(e, r):
    r"""The published DPM-Solver++(2M) update's weights (Lu et al. 2022b, Algorithm 2):
    :math:`x_t = \frac{\sigma_t}{\sigma_s}x_s + w_0 D_s + w_1 D_{s'}` with :math:`w_0 = e(1 + \frac1{2r})`,
    :math:`w_1 = -\frac{e}{2r}`, :math:`e = \alpha_t(1 - e^{-h})` and :math:`r = h_{prev}/h` (floats or arrays
    over the steps). The one definition of these weights: the step programs of :class:`ExpMultistep` and the
    minimal reference loop of :mod:`sdeflow.bench.overhead` call it."""
    return e * (1 + 0.5 / r), -e * 0.5 / r


#: the single-step start of ``startup="singlestep"``, by its order: DPM-Solver-2/3's stage layouts
#: (``nodes_c``, ``uses``), read from their classes
_STARTUPS = {2: DPMSolver2, 3: DPMSolver3}


class ExpMultistep(PredictionSolver):
    """Exponential multistep solver (see the module docstring).

    Args:
        order: 1 to 4, the number of predictions interpolated by the predictor.
        predict: ``"data"`` (DPM-Solver++) or ``"noise"`` (DPM-Solver; probability-flow ODE only).
        variant: ``"exact"``, ``"dpmsolver"``, ``"taylor"``, ``"bh1"`` or ``"bh2"`` (module docstring).
        corrector: UniPC-style corrector (declared order ``order + 1``; variants ``"exact"``, ``"bh1"``,
            ``"bh2"``).
        lower_order_final: lower the order on the last steps: ``True`` (or 1) makes the last step order 1, the
            one before at most order 2, and so on; an integer ``m`` makes the last step at most order ``m``,
            the one before at most ``m + 1``, ... (``m = 2`` is diffusers' ``lower_order_final`` when a final
            denoising step, of order 1, follows the solve). ``False`` (or 0): no lowering.
        startup: ``"lower_order"`` (the first steps use the history they have: no extra evaluations;
            their local error is tiny where the prediction barely changes, at high noise) or
            ``"singlestep"`` (the first step is a DPM-Solver-2/3-style single step of order
            ``order - 1``, whose stage predictions join the history: the declared order holds however
            the first step looks, for 1 or 2 extra evaluations).
    """

    name = "exp_multistep"
    order = 2
    evals_per_step = 1
    # (half log-SNR, prediction) pairs; the corrector's previous state; the step program's history buffers
    carried = ("hist", "x_prev", "carry")

    def __init__(self, order: int = 2, predict: str = "data", variant: str = "exact", corrector: bool = False,
                 lower_order_final: bool | int = False, startup: str = "lower_order"):
        if order not in (1, 2, 3, 4):
            raise SdeflowValueError(f"order must be 1, 2, 3 or 4, got {order!r}")
        if predict not in ("data", "noise"):
            raise SdeflowValueError(f"predict must be 'data' or 'noise', got {predict!r}")
        if variant not in VARIANTS:
            raise SdeflowValueError(f"variant must be one of {', '.join(map(repr, VARIANTS))}, got {variant!r}")
        if variant in _AUTHORS and (order > 3 or corrector):
            raise SdeflowValueError(f"variant={variant!r} is dpm-solver's multistep update: order 1 to 3 and no "
                                    f"corrector (got order={order}, corrector={corrector}); use variant='exact'")
        if variant in _UNIPC and order > 3:
            raise SdeflowValueError(f"variant={variant!r} is UniPC's B(h) update: order 1 to 3, got {order}; "
                                    f"use variant='exact'")
        if startup not in ("lower_order", "singlestep"):
            raise SdeflowValueError(f"startup must be 'lower_order' or 'singlestep', got {startup!r}")
        self.steps_order = int(order)
        self.predict = predict
        self.variant = variant
        self.corrector = bool(corrector)
        if isinstance(lower_order_final, bool) or lower_order_final is None:
            lower_order_final = int(bool(lower_order_final))
        if not isinstance(lower_order_final, int) or lower_order_final < 0:
            raise SdeflowValueError(f"lower_order_final must be True, False or an integer >= 1 (the largest order "
                                    f"of the last step), got {lower_order_final!r}")
        self.lower_order_final = lower_order_final
        # dpm-solver's third-order multistep term is half the quadratic's (dpm_solver_weights): second order
        self.order = (min(self.steps_order, 2) if variant in _AUTHORS
                      else self.steps_order + (1 if self.corrector else 0))
        self.startup = startup
        # the start-up step: DPM-Solver-2/3 of one order below the interpolation (+ corrector) order
        start = self.steps_order + (1 if self.corrector else 0) - 1
        self._start = _STARTUPS.get(start) if startup == "singlestep" else None
        self._extra = len(self._start.nodes_c) - 1 if self._start is not None else 0

    # ---- plan and budget ----------------------------------------------------------------------
    def nfe_for_steps(self, steps):
        return steps + (self._extra if steps > 0 else 0)

    def eval_times(self, grid, path=None):
        times, step_of = super().eval_times(grid, path)
        if not self._extra:
            return times, step_of
        if path is None:
            raise SdeflowValueError(f"{self.name} with startup='singlestep' needs a path (use sample)")
        first = stage_times(self._start.nodes_c, np.asarray(grid[:2]), path)[0]
        return np.concatenate([first, times[1:]]), np.concatenate([np.zeros(self._extra, dtype=np.int64), step_of])

    # ---- tables -------------------------------------------------------------------------------
    def init_state(self, term, x, grid):
        st = super().init_state(term, x, grid)
        lam = st["half"]
        if self.predict == "noise" and any(a == 0.0 for a in st["alpha"][:-1]):
            k = next(k for k in range(len(grid) - 1) if st["alpha"][k] == 0.0)
            # x_t = (alpha_t / alpha_s)(x_s - sigma_s eps) has no limit at alpha_s = 0 (x_s / alpha_s is infinite)
            raise SingularityError(f"{self!r} steps the noise prediction as x/alpha, which is infinite at t={grid[k]:g} "
                                   f"where alpha = 0 on {term.ipath!r}; use a t_max where alpha > 0 (the default "
                                   f"window of sample() for the path) or predict='data'", t=float(grid[k]))
        st["h"] = [lam[k + 1] - lam[k] for k in range(len(grid) - 1)]
        st["grid"] = [float(t) for t in grid]
        st["E"] = step_damping(term, grid, st["h"]) if self.sde else [0.0] * (len(grid) - 1)
        st["hist"] = []  # (half log-SNR, prediction tensor), oldest first
        st["carry"] = {}  # the step program's history buffers (Program.step)
        st["n_steps"] = len(grid) - 1
        if self._extra:
            st.update(eval_tables(term))
        st["program"] = self._program(term, st) if not (self.corrector or self._extra) else None
        if st["program"] is None:  # the per-step predictions' floats, built in setup (steps stay traceable)
            term.coeffs(self.predict)
        return st

    @staticmethod
    def _finite_tail(nodes) -> int:
        """How many of the newest history nodes (newest last) have a finite half log-SNR: a prediction made
        where alpha = 0 (log-SNR -inf) cannot join a polynomial in lambda."""
        n = 0
        for lam in reversed(nodes):
            if not math.isfinite(lam):
                break
            n += 1
        return n

    def _order_at(self, k: int, st: dict, avail: int) -> int:
        p = min(self.steps_order, avail)
        if self.lower_order_final:
            p = min(p, st["n_steps"] - k + self.lower_order_final - 1)
        if not math.isfinite(st["h"][k]):
            p = 1
        return max(p, 1)

    def _coefs(self, k: int, nodes_lam: list, st: dict, corrector: bool = False) -> tuple[float, list, float]:
        """``(lin, w, nz)`` of step ``k``: ``x_{k+1} = lin x_k + sum_j w_j D_j + nz z`` for predictions at
        ``nodes_lam`` (half log-SNRs, newest first; ``corrector``: the first is at the step's end)."""
        a, s, lam = st["alpha"], st["sigma"], st["half"]
        h = st["h"][k]
        nz = 0.0
        if not math.isfinite(h):
            # into sigma = 0 or out of alpha = 0: order 1, exact for a constant prediction
            if self.predict == "data":
                E = st["E"][k]
                damp = math.exp(-E) if math.isfinite(E) else 0.0
                lin = damp * s[k + 1] / s[k] if (s[k + 1] > 0 and math.isfinite(s[k])) else 0.0
                w = [a[k + 1]]
                nz = s[k + 1] * math.sqrt(-math.expm1(-2.0 * E)) if (self.sde and s[k + 1] > 0 and E > 0) else 0.0
            else:  # x_t = (alpha_t / alpha_s)(x_s - sigma_s eps), finite when sigma_t = 0
                lin = a[k + 1] / a[k]
                w = [-lin * s[k]]
        elif self.variant in _AUTHORS or self.variant in _UNIPC:
            E = st["E"][k]
            lin = (s[k + 1] / s[k]) * math.exp(-E) if self.predict == "data" else a[k + 1] / a[k]
            c = a[k + 1] if self.predict == "data" else s[k + 1]
            if self.variant in _AUTHORS:
                w = dpm_solver_weights(self.variant, self.predict, h, nodes_lam, c, E)
            else:
                w = unipc_weights(self.variant, self.predict, h, nodes_lam, c, corrector)
            if E > 0:
                nz = s[k + 1] * math.sqrt(-math.expm1(-2.0 * E))
        else:
            E = st["E"][k]
            u = [(lj - lam[k]) / h for lj in nodes_lam]
            lin, w = exp_coefficients(self.predict, h, u, a[k], s[k], a[k + 1], s[k + 1], E)
            if E > 0:
                nz = s[k + 1] * math.sqrt(-math.expm1(-2.0 * E))
        return lin, list(w), nz

    def _combine(self, k: int, x, preds: list, nodes_lam: list, st: dict, noise=None, t0=0.0, t1=0.0,
                 corrector: bool = False):
        """``x_{k+1}`` from ``x_k`` and predictions at ``nodes_lam`` (half log-SNRs)."""
        lin, w, nz = self._coefs(k, nodes_lam, st, corrector)
        out = apply_exp(x, lin, w, preds)
        if nz > 0.0:
            out.add_(noise.draw(k, t0, t1, x), alpha=nz)
        return out

    def _program(self, term, st: dict) -> Program:
        """Without corrector or single-step start, every step's order and coefficients are known before the
        solve: ``D_k = P x + Q n``, ``x' = lin x + sum_i w_i D_{k-i} + nz z``, history ``d1, d2, ...``
        (placeholders ``x`` with weight 0 before they exist). The published DPM-Solver++(2M) weights are
        computed vectorised (:func:`dpmpp_2m_weights`); other steps through :meth:`_coefs`."""
        S, q = st["n_steps"], self.steps_order
        lam = st["half"]
        W = np.zeros((S, q))
        lin, nz = np.ones(S), np.zeros(S)
        done = np.zeros(S, dtype=bool)
        h = np.asarray(st["h"], dtype=np.float64)
        if self.variant == "dpmsolver" and self.predict == "data" and S > 1 and not any(st["E"]):
            order = np.array([self._order_at(k, st, self._finite_tail(lam[max(0, k + 1 - q):k + 1]))
                              for k in range(S)])
            ok = (order == 2) & np.isfinite(h)
            ok[0] = False
            if np.any(ok):
                half = np.asarray(lam, dtype=np.float64)
                a1, s0, s1 = (np.asarray(v, dtype=np.float64) for v in (st["alpha"][1:], st["sigma"][:-1],
                                                                     st["sigma"][1:]))
                r = np.ones(S)
                r[1:] = (half[1:-1] - half[:-2]) / np.where(ok[1:], h[1:], 1.0)
                w0, w1 = dpmpp_2m_weights(-a1 * -neg_expm1(np.where(ok, h, 0.0)), r)
                W[ok, 0], W[ok, 1] = w0[ok], w1[ok]
                lin[ok] = (s1 / s0)[ok]
                done = ok
        for k in range(S):
            if done[k]:
                continue
            p = self._order_at(k, st, self._finite_tail(lam[max(0, k + 1 - q):k + 1]))
            l, w, z = self._coefs(k, [lam[k - i] for i in range(p)], st)
            lin[k], W[k, :len(w)], nz[k] = l, w, z
        P, Q = (v[:S] for v in term.coeff_arrays(self.predict))
        prog = Program(S)
        prog.prologue = [(f"d{i}", "x") for i in range(1, q)]
        prog.net("n", "x", 1, 0).comb("d0", P, [(Q, "n")])
        if np.any(nz > 0.0):
            prog.draw("z", mask=nz > 0.0)
        prog.comb("x", lin, [(W[:, i], f"d{i}") for i in range(q)] + [(nz, "z")])
        for i in range(q - 1, 0, -1):
            prog.set(f"d{i}", f"d{i - 1}")
        return prog.done()

    # ---- the step -----------------------------------------------------------------------------
    def step(self, term, k, x, t0, t1, noise, st):
        if st.get("program") is not None:
            return st["program"].step(term, k, x, t0, t1, noise, st)
        hist = st["hist"]
        lam = st["half"]
        j = k + self._extra if k > 0 else 0
        if k == 0 and self._extra and math.isfinite(st["h"][0]):
            preds, nodes = stage_predictions(self._start, term, 0, x, st, 0, self.predict)
            hist.extend(zip(nodes, preds))
            if self.corrector:
                st["x_prev"] = x
            return self._combine(0, x, preds[::-1], nodes[::-1], st, noise, t0, t1)
        pred = term.predict(j, x, self.predict)
        if self.corrector and k > 0 and "x_prev" in st and math.isfinite(st["h"][k - 1]):
            # re-take the previous step with the interpolant through the new prediction too
            p = self._order_at(k - 1, st, self._finite_tail([n for n, _ in hist]))
            nodes = [lam[k]] + [hist[-1 - i][0] for i in range(p)]
            preds = [pred] + [hist[-1 - i][1] for i in range(p)]
            x = self._combine(k - 1, st["x_prev"], preds, nodes, st, corrector=True)
        hist.append((lam[k], pred))
        if len(hist) > self.steps_order:
            del hist[: len(hist) - self.steps_order]
        p = self._order_at(k, st, self._finite_tail([n for n, _ in hist]))
        nodes = [hist[-1 - i][0] for i in range(p)]
        preds = [hist[-1 - i][1] for i in range(p)]
        if self.corrector:
            st["x_prev"] = x
        return self._combine(k, x, preds, nodes, st, noise, t0, t1)

    def __repr__(self):
        return (f"{type(self).__name__}(order={self.steps_order}, predict={self.predict!r}, "
                f"variant={self.variant!r}, corrector={self.corrector}, startup={self.startup!r})")


class DPMSolverPP2M(ExpMultistep):
    """DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2): data prediction, the published second-order update
    (dpm-solver's ``solver_type='dpmsolver'``); equal to dpm-solver's and k-diffusion's ``sample_dpmpp_2m``
    to rounding."""

    name = "dpmpp_2m"
    order = 2

    def __init__(self, lower_order_final: bool | int = False, startup: str = "lower_order"):
        super().__init__(2, "data", "dpmsolver", lower_order_final=lower_order_final, startup=startup)


class DPMSolverPP3M(ExpMultistep):
    r"""DPM-Solver++(3M) as its authors compute it (Lu et al. 2022b; dpm-solver's
    ``multistep_dpm_solver_third_update``, k-diffusion's ``sample_dpmpp_3m_sde(eta=0)``, diffusers'
    ``DPMSolverMultistepScheduler(solver_order=3)``): data prediction, one evaluation per step,

    .. math:: x_t = \frac{\sigma_t}{\sigma_s}x_s - \alpha_t\varphi_1 m_0 + \alpha_t\varphi_2 D_1
              - \alpha_t\varphi_3 D_2

    with :math:`D_2 = (D_{1,0} - D_{1,1})/(r_0 + r_1)` (formulas in
    :func:`~sdeflow.solvers.exponential.dpm_solver_weights`). Step 1 is order 1, step 2 order 2 in the form
    ``solver_type`` (``"dpmsolver"``, dpm-solver's default, or ``"taylor"``, k-diffusion's). Because
    :math:`D_2` is half the quadratic interpolant's term, the method converges at **order 2** (declared;
    measured ~2): it is usually more accurate than the exact third-order integral (``exp_3m_exact``) at
    10-20 log-SNR steps and less accurate at 50-100 (docs/solvers.md).
    """

    name = "dpmpp_3m"
    order = 2
    #: order checks on a window ending where the log-SNR is infinite take 8x finer steps: there the exact
    #: part's higher-order error and the halved third-order term's O(h^2) error cross near 1000 steps (full
    #: EDM window, quadratic grid, local slopes 3.90, 3.42, 1.09, 1.63, 1.86, 1.94, 1.97 from 128 to 16384
    #: steps; docs/reliability.md)
    pre_asymptotic_factor = 8

    def __init__(self, solver_type: str = "dpmsolver", lower_order_final: bool | int = False,
                 startup: str = "lower_order"):
        if solver_type not in _AUTHORS:
            raise SdeflowValueError(f"solver_type must be 'dpmsolver' or 'taylor', got {solver_type!r}")
        super().__init__(3, "data", solver_type, lower_order_final=lower_order_final, startup=startup)


class Exp3MExact(ExpMultistep):
    """Third-order exponential multistep with the quadratic interpolant integrated exactly (sdeflow's own:
    ``exp_multistep(order=3)``; data prediction). True order 3; see :class:`DPMSolverPP3M` for the authors'
    DPM-Solver++(3M), which differs in the third-order term."""

    name = "exp_3m_exact"
    order = 3

    def __init__(self, lower_order_final: bool | int = False, startup: str = "lower_order"):
        super().__init__(3, "data", "exact", lower_order_final=lower_order_final, startup=startup)


class UniPC(ExpMultistep):
    r"""UniPC (Zhao et al. 2023): UniP-``order`` predictor and the UniC corrector, which re-takes each step
    with the prediction made at its predicted end (the evaluation the next step needs anyway) and raises the
    order to ``order + 1`` at no extra NFE; data prediction by default.

    ``variant``: ``"bh2"`` (default; :math:`B(h) = e^{\hat h} - 1`) or ``"bh1"`` (:math:`B(h) = \hat h`)
    reproduce the reference code (wl-zhao/UniPC ``multistep_uni_pc_bh_update``; diffusers'
    ``UniPCMultistepScheduler``) to rounding, including its hard-coded :math:`\rho = 1/2` in the order-2
    predictor and the order-1 corrector (formulas in :func:`~sdeflow.solvers.exponential.unipc_weights`).
    As in the reference the corrector is not applied on the last step (no evaluation follows it). The reference's
    own default is ``"bh1"``; diffusers' is ``"bh2"``. sdeflow's variant integrating every interpolant
    exactly against the exponential kernel is ``exp_pc``.
    """

    name = "unipc"
    order = 3

    def __init__(self, order: int = 2, predict: str = "data", variant: str = "bh2", lower_order_final: bool | int = False,
                 startup: str = "lower_order"):
        if order not in (1, 2, 3):
            raise SdeflowValueError(f"UniPC order must be 1, 2 or 3 (corrected order up to 4), got {order!r}")
        if variant not in _UNIPC:
            raise SdeflowValueError(f"UniPC variant must be 'bh1' or 'bh2', got {variant!r} (the exact-integral "
                                    f"corrector is exp_pc(order={order}))")
        super().__init__(order, predict, variant, corrector=True, lower_order_final=lower_order_final,
                         startup=startup)


class ExpPC(ExpMultistep):
    """Exponential predictor-corrector with exact weights (sdeflow's own; ``exp_multistep(corrector=True)``):
    the structure of UniPC (a predictor through ``order`` predictions, then a corrector through the
    prediction at the predicted end too, no extra evaluation) with every interpolant integrated exactly
    against the exponential kernel instead of UniPC's B(h) weights. Declared order ``order + 1``. This was
    sdeflow's ``unipc`` before ``unipc`` reproduced the reference (``variant="bh1"|"bh2"``)."""

    name = "exp_pc"
    order = 3

    def __init__(self, order: int = 2, predict: str = "data", lower_order_final: bool | int = False,
                 startup: str = "lower_order"):
        if order not in (1, 2, 3):
            raise SdeflowValueError(f"exp_pc order must be 1, 2 or 3 (corrected order up to 4), got {order!r}")
        super().__init__(order, predict, "exact", corrector=True, lower_order_final=lower_order_final,
                         startup=startup)


class SDEDPMSolverPP2M(ExpMultistep):
    r"""SDE-DPM-Solver++(2M) (Lu et al. 2022b) for the reverse family with :math:`\gamma > 0`: the linear
    part and the noise are integrated exactly (:math:`e^{-E}`, :math:`\sigma_t\sqrt{1-e^{-2E}}`), the data
    prediction by the second-order multistep interpolant. ``gamma="reverse"`` is :math:`\eta = 1`.

    ``solver_type``: ``"heun"`` (default: the exact integral of the linear interpolant; k-diffusion's
    ``sample_dpmpp_2m_sde(solver_type='heun')``) or ``"midpoint"`` (k-diffusion's default,
    :math:`\tfrac12(1 - e^{-h-E})(m_0 - m_1)/r_0`), each equal to k-diffusion's to rounding."""

    name = "sde_dpmpp_2m"
    order = 2
    sde = True
    strong_order_additive = 1.0
    weak_order_additive = 2.0

    def __init__(self, solver_type: str = "heun"):
        if solver_type not in ("heun", "midpoint"):
            raise SdeflowValueError(f"solver_type must be 'heun' or 'midpoint', got {solver_type!r}")
        self.solver_type = solver_type
        super().__init__(2, "data", "exact" if solver_type == "heun" else "dpmsolver")


class SDEDPMSolverPP3M(ExpMultistep):
    r"""SDE-DPM-Solver++(3M) as k-diffusion computes it (``sample_dpmpp_3m_sde``): the update of
    :class:`DPMSolverPP3M` (``solver_type='taylor'`` start) with its :math:`\varphi` functions at
    :math:`h + E` (:math:`E = \eta h`, the reverse SDE's damping: :math:`E = h` for ``gamma="reverse"``) and
    noise :math:`\sigma_t\sqrt{1 - e^{-2E}}\,z`. Like the ODE method it is second order (its third-order
    term is half the quadratic's); with ``gamma=0`` it is ``dpmpp_3m(solver_type='taylor')``."""

    name = "sde_dpmpp_3m"
    order = 2
    pre_asymptotic_factor = 4  # as dpmpp_3m (full EDM window: observed weak order 1.07, 1.71, 1.88 to 2048 steps)
    sde = True
    strong_order_additive = 1.0
    weak_order_additive = 2.0

    def __init__(self):
        super().__init__(3, "data", "taylor")
