r"""Karras et al.'s (2022) sampler with churn: EDM's ``edm_sampler`` (Algorithm 2) and k-diffusion's
``sample_heun`` / ``sample_euler`` with ``s_churn``.

With :math:`s = \sigma/\alpha` the path's noise level, step ``k`` from :math:`t_k` to :math:`t_{k+1}`:

1. churn: :math:`\gamma_k = \min(S_{churn}/N, \sqrt2 - 1)` if :math:`S_{tmin} \le s_k \le S_{tmax}`, else 0
   (``N`` the number of steps); :math:`\hat t_k` the time of noise level :math:`\hat s = (1 + \gamma_k)s_k`;
   if :math:`\gamma_k > 0`,
   :math:`\hat x = \frac{\hat\alpha}{\alpha_k}x_k + \hat\alpha\sqrt{\hat s^2 - s_k^2}\,S_{noise}\,z`
   (the forward process from :math:`s_k` to :math:`\hat s`: on ``EDM``/``VE`` paths,
   :math:`\hat x = x_k + \sqrt{\hat\sigma^2 - \sigma_k^2}\,S_{noise} z` as in the reference);
2. a step of the probability-flow ODE from :math:`\hat t_k` to :math:`t_{k+1}` with the drift ``v``:
   Heun (``edm_heun``), :math:`x' = \hat x + \Delta(v(\hat x, \hat t) + v(\tilde x, t_{k+1}))/2`,
   :math:`\tilde x = \hat x + \Delta v(\hat x, \hat t)`, :math:`\Delta = t_{k+1} - \hat t_k`; or Euler
   (``edm_euler``). A step into :math:`\sigma = 0` is an Euler step (the reference's; on ``EDM`` it lands on
   the data prediction).

With ``S_churn = 0`` (default) it is deterministic: ``edm_heun`` is Heun's method with that last step
(order 2), ``edm_euler`` Euler's (order 1). On ``sdeflow.EDM(S)`` with the reference's sigmas as the grid
(``t = sigma / S``, ending at 0) both equal the references to rounding, with the churn's normals replayed
through a :class:`~sdeflow.noise.TableNoise` (``table[k]``: step ``k``'s normal).
With ``S_churn > 0`` the sampler draws noise (``stochastic``) and its declared order is weak: the output
distribution converges at order 2 (``edm_heun``) or 1 (``edm_euler``) as the steps grow
(``tests/solvers/test_churn.py``: exact output moments on a Gaussian, ``S_churn = 10``); with the paper's
``S_churn = 40``, :math:`\gamma_k` stays at its cap :math:`\sqrt2 - 1` up to 96 steps and the rate shows only
beyond. A churn that would raise the noise level past the path's noise end is refused (lower ``S_tmax``).
References: Karras, Aittala, Aila & Laine 2022, Algorithm 2; NVlabs/edm ``generate.py``; k-diffusion
``sampling.py``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import SdeflowValueError, check_number
from .base import ODESolver

__all__ = ["EDMEuler", "EDMHeun"]


class _Churn(ODESolver):
    heun: bool = True
    targets = ("drift",)

    def __init__(self, S_churn: float = 0.0, S_tmin: float = 0.0, S_tmax: float = math.inf, S_noise: float = 1.0):
        self.S_churn = check_number("S_churn", S_churn, ge=0.0, hint="the churn: 0 (deterministic) to ~80")
        self.S_tmin = check_number("S_tmin", S_tmin, ge=0.0, hint="the lowest noise level sigma/alpha to churn at")
        self.S_tmax = float(S_tmax)
        if not self.S_tmax >= self.S_tmin:
            raise SdeflowValueError(f"S_tmax must be >= S_tmin={self.S_tmin}, got {S_tmax!r}")
        self.S_noise = check_number("S_noise", S_noise, ge=0.0, hint="the churn noise's scale, usually 1 to 1.01")
        self.stochastic = self.S_churn > 0.0

    # ---- the plan ----------------------------------------------------------------------------
    def _plan(self, grid, path) -> dict:
        """Per step: gamma, the churned time and whether the step ends at sigma = 0 (Euler). Without a path
        (``sdeflow.solve`` on a user's ODE) and without churn: Heun (or Euler) on the grid."""
        n = len(grid) - 1
        if path is None:
            if self.S_churn > 0.0:
                raise SdeflowValueError(f"{self.name} with S_churn > 0 places its churn in noise level: it "
                                        f"needs a Gaussian path (use sample), or S_churn=0")
            return {"gamma": [0.0] * n, "t_hat": [float(v) for v in grid[:-1]], "euler": [not self.heun] * n,
                    "level": [math.nan] * (n + 1)}
        g = torch.as_tensor(np.asarray(grid, dtype=np.float64))
        a, s, _, _ = path.coefficients(g)
        level = (s / a).tolist()
        gam = min(self.S_churn / n, math.sqrt(2.0) - 1.0) if n > 0 else 0.0
        gammas, t_hat = [], []
        for k in range(n):
            gk = gam if (gam > 0.0 and self.S_tmin <= level[k] <= self.S_tmax) else 0.0
            gammas.append(gk)
            if gk > 0.0:
                s_hat = (1.0 + gk) * level[k]
                th = float(path.t_from_log_snr(torch.tensor(-2.0 * math.log(s_hat), dtype=torch.float64)))
                if not (math.isfinite(th) and th <= float(path.t_max)):
                    raise SdeflowValueError(
                        f"churn raises the noise level {level[k]:g} at t={grid[k]:g} to {s_hat:g}, beyond "
                        f"{path!r}'s noise end t={float(path.t_max):g}; lower S_tmax below {level[k]:g} or "
                        f"start the grid lower")
            else:
                th = float(grid[k])
            t_hat.append(th)
        euler = [(not self.heun) or float(s[k + 1]) == 0.0 for k in range(n)]
        return {"gamma": gammas, "t_hat": t_hat, "euler": euler, "level": level}

    def eval_times(self, grid, path=None):
        plan = self._plan(grid, path)
        times, step_of = [], []
        for k in range(len(grid) - 1):
            times.append(plan["t_hat"][k])
            step_of.append(k)
            if not plan["euler"][k]:
                times.append(float(grid[k + 1]))
                step_of.append(k)
        return np.asarray(times, dtype=np.float64), np.asarray(step_of, dtype=np.int64)

    def init_state(self, term, x, grid):
        path = term.ipath
        plan = self._plan(grid, path)
        first, j = [], 0
        for k in range(len(grid) - 1):
            first.append(j)
            j += 1 if plan["euler"][k] else 2
        plan["first"] = first
        # the churn's affine map x_hat = c_x x + c_z z (floats, tabulated here: the steps stay traceable)
        plan["cx"], plan["cz"] = [1.0] * len(plan["gamma"]), [0.0] * len(plan["gamma"])
        if path is None:
            return plan
        t = torch.as_tensor(np.asarray([grid[:-1], plan["t_hat"]], dtype=np.float64))
        a, _, _, _ = path.coefficients(t)
        a = a.tolist()
        plan["cx"], plan["cz"] = [], []
        for k, gk in enumerate(plan["gamma"]):
            if gk > 0.0:
                lv = plan["level"][k]
                plan["cx"].append(a[1][k] / a[0][k])
                plan["cz"].append(a[1][k] * math.sqrt(((1.0 + gk) * lv) ** 2 - lv * lv) * self.S_noise)
            else:
                plan["cx"].append(1.0)
                plan["cz"].append(0.0)
        return plan

    def step(self, term, k, x, t0, t1, noise, st):
        if st["gamma"][k] > 0.0:
            cx = st["cx"][k]
            x = (x * cx if cx != 1.0 else x.clone()).add_(noise.draw(k, t0, t1, x), alpha=st["cz"][k])
        dt = t1 - st["t_hat"][k]
        j = st["first"][k]
        d = term.drift(j, x)
        x2 = x.add(d, alpha=dt)
        if st["euler"][k]:
            return x2
        d2 = term.drift(j + 1, x2)
        return x.add(d, alpha=0.5 * dt).add_(d2, alpha=0.5 * dt)

    def __repr__(self):
        return (f"{type(self).__name__}(S_churn={self.S_churn}, S_tmin={self.S_tmin}, S_tmax={self.S_tmax}, "
                f"S_noise={self.S_noise})")


class EDMHeun(_Churn):
    __doc__ = __doc__
    name = "edm_heun"
    order = 2
    evals_per_step = 2
    heun = True


class EDMEuler(_Churn):
    __doc__ = __doc__
    name = "edm_euler"
    order = 1
    evals_per_step = 1
    heun = False
