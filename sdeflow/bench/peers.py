"""Peers in the same run: other libraries' samplers on the same problem, noise and exact denoiser.

Every peer integrates the probability-flow ODE of a benchmark problem in EDM form,
:math:`dx/d\\sigma = (x - D(x, \\sigma))/\\sigma` with :math:`D` the problem's exact denoiser, from
:math:`\\sigma(t_{max})` down to :math:`\\sigma(t_{min})` and then to :math:`\\sigma = 0` (the final step
``x -> D(x, sigma_min)`` where the peer has none of its own), on Karras' rho = 7 sigmas, as a user of that
library would. Every call of :math:`D` counts as one NFE and a budget is never exceeded. Peers:

* ``torchdiffeq:euler`` / ``midpoint`` / ``rk4`` (fixed grid) and ``torchdiffeq:dopri5`` (adaptive: its
  tolerance is lowered until it fits the budget, and the NFE it used is reported);
* ``diffusers:edm_dpmpp_2m`` / ``edm_dpmpp_3m`` (``EDMDPMSolverMultistepScheduler``, solver_order 2 / 3,
  final sigma 0) and ``diffusers:edm_euler`` (``EDMEulerScheduler``), driven through the schedulers'
  own preconditioning so that their data prediction is exactly :math:`D`.

Only problems on a path with :math:`\\alpha = 1` (VE) are posed this way; a missing library is skipped
with a note (``available_peers()`` says which ran).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["PEERS", "available_peers", "applicable", "run_peer"]


class _Counted:
    """The problem's exact denoiser D(x, sigma), counting calls and refusing to exceed ``cap``."""

    def __init__(self, problem, cap: int):
        self.problem, self.cap, self.calls = problem, cap, 0

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        if self.calls >= self.cap:
            raise RuntimeError("peer exceeded its NFE budget")  # a bug in the adapter, never silent
        self.calls += 1
        p = self.problem
        t = float(p.path.t_from_log_snr(torch.tensor(-2.0 * math.log(sigma), dtype=torch.float64)))
        return p.target.predict(x, t, p.path, "data").to(x.dtype)


def _sigmas(problem) -> tuple[float, float]:
    s_max = float(problem.path.sigma(problem.t_max))
    s_min = float(problem.path.sigma(problem.t_min))
    return s_max, s_min


def _karras(n: int, s_max: float, s_min: float, rho: float = 7.0) -> list[float]:
    i = np.linspace(0.0, 1.0, n + 1)
    return list((s_max ** (1 / rho) + i * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho)


# ---- torchdiffeq --------------------------------------------------------------------------------
_TD_EVALS = {"euler": 1, "midpoint": 2, "rk4": 4}


def _torchdiffeq(method: str):
    def run(problem, x, nfe):
        from torchdiffeq import odeint

        s_max, s_min = _sigmas(problem)
        D = _Counted(problem, nfe)
        f = lambda s, y: (y - D(y, float(s))) / s
        if method in _TD_EVALS:
            steps = (nfe - 1) // _TD_EVALS[method]
            if steps < 1:
                return None
            ts = torch.tensor(_karras(steps, s_max, s_min), dtype=x.dtype)
            y = odeint(f, x, ts, method=method, options={"perturb": False})[-1]
            return D(y, s_min), D.calls
        # adaptive, in log-sigma time (torchdiffeq steps past the end and interpolates: sigma stays > 0):
        # dx/dlog(sigma) = x - D; the tightest tolerance (decades from 1e-2) that fits the budget
        g = lambda u, y: y - D(y, math.exp(float(u)))
        best = None
        for tol in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8):
            D = _Counted(problem, nfe)
            try:
                y = odeint(g, x, torch.tensor([math.log(s_max), math.log(s_min)], dtype=x.dtype), method=method,
                           rtol=tol, atol=tol)[-1]
                best = (D(y, s_min), D.calls)
            except (RuntimeError, AssertionError, ValueError):  # over budget, or stepped past sigma = 0
                break
        return best
    return run


# ---- diffusers ----------------------------------------------------------------------------------
def _diffusers(kind: str):
    def run(problem, x, nfe):
        import diffusers

        s_max, s_min = _sigmas(problem)
        if kind == "edm_euler":
            sch = diffusers.EDMEulerScheduler(sigma_min=s_min, sigma_max=s_max)
        else:
            sch = diffusers.EDMDPMSolverMultistepScheduler(
                sigma_min=s_min, sigma_max=s_max, algorithm_type="dpmsolver++",
                solver_order=2 if kind == "edm_dpmpp_2m" else 3, final_sigmas_type="zero")
        steps = nfe if kind != "edm_euler" else nfe - 1  # Euler's last sigma is 0: one final denoise
        if steps < 1:
            return None
        sch.set_timesteps(steps)
        D = _Counted(problem, nfe)
        y = x.clone()
        for i, t in enumerate(sch.timesteps):
            sigma = float(sch.sigmas[i])
            if sigma == 0.0:
                break
            sch.scale_model_input(y, t)  # what a user calls before the network (its output is the network input)
            d = D(y, sigma)
            # the scheduler's data prediction is c_skip y + c_out F: choose F so that it equals D exactly
            p0 = sch.precondition_outputs(y, torch.zeros_like(y), sigma)
            c_out = sch.precondition_outputs(y, torch.ones_like(y), sigma) - p0
            y = sch.step((d - p0) / c_out, t, y).prev_sample
        if kind == "edm_euler":
            y = D(y, float(sch.sigmas[-2]))
        return y, D.calls
    return run


PEERS = {
    "torchdiffeq:euler": ("torchdiffeq", _torchdiffeq("euler")),
    "torchdiffeq:midpoint": ("torchdiffeq", _torchdiffeq("midpoint")),
    "torchdiffeq:rk4": ("torchdiffeq", _torchdiffeq("rk4")),
    "torchdiffeq:dopri5": ("torchdiffeq", _torchdiffeq("dopri5")),
    "diffusers:edm_dpmpp_2m": ("diffusers", _diffusers("edm_dpmpp_2m")),
    "diffusers:edm_dpmpp_3m": ("diffusers", _diffusers("edm_dpmpp_3m")),
    "diffusers:edm_euler": ("diffusers", _diffusers("edm_euler")),
}


def available_peers() -> tuple[list[str], list[str]]:
    """``(names that can run, notes on the skipped ones)``."""
    import importlib.util

    ok, notes = [], []
    for name, (lib, _) in PEERS.items():
        if importlib.util.find_spec(lib) is None:
            notes.append(f"skipped peer {name}: {lib} is not installed (pip install 'sdeflow[bench]')")
        else:
            ok.append(name)
    if importlib.util.find_spec("k_diffusion") is None:
        notes.append("skipped peer k-diffusion: not installed (its package needs torchvision)")
    return ok, notes


def applicable(problem) -> bool:
    """Peers are posed in EDM form: the problem's path must have alpha = 1 (VE)."""
    return float(problem.path.coefficients(torch.tensor([problem.t_max], dtype=torch.float64))[0]) == 1.0


def run_peer(name: str, problem, x: torch.Tensor, nfe: int):
    """``(x_final, nfe_used)`` of peer ``name`` on ``problem`` from ``x`` within ``nfe`` evaluations, or
    None when the budget is below the peer's minimum."""
    if not applicable(problem):
        raise ValueError(f"peers are posed in EDM form and need a VE problem (alpha = 1); {problem.name} is not")
    return PEERS[name][1](problem, x, nfe)
