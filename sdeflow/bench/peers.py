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
  own preconditioning so that their data prediction is exactly :math:`D`;
* ``diffusers:unipc_karras`` / ``unipc3_karras`` (``UniPCMultistepScheduler``, bh2, solver_order 2 / 3, on
  Karras' sigmas between the problem's ends, final sigma 0, :math:`D` as its ``"sample"`` prediction).

On ``eight_gaussians_ddpm`` (DDPM's schedule): ``DDPM_PEERS`` (diffusers' DPM-Solver++ 2M/3M, Euler, Heun on
common timesteps) and ``OWN_GRID_PEERS`` (``DDIMScheduler`` and ``UniPCMultistepScheduler`` on the timesteps
their ``set_timesteps`` chooses, beside sdeflow's ``ddim`` / ``unipc`` on exactly those times).

Only problems on a path with :math:`\\alpha = 1` (VE) are posed this way; a missing library is skipped
with a note (``available_peers()`` says which ran).

SDE peers (``SDE_PEERS``): ``torchsde:euler`` / ``milstein`` / ``srk`` integrate the same reverse SDE as
sdeflow's SDE rows, :math:`dx = [f_t x - g_t^2 \\nabla\\log p_t(x)]\\,dt + g_t\\,d\\bar W` from ``t_max`` to
``t_min`` in the problem path's time, written for ``torchsde.sdeint`` in reversed time :math:`\\tau = -t`
(additive noise, ``g`` a diagonal matrix) on the same uniform grid, and are driven by **the same Brownian
path** as sdeflow's solvers and the fine reference: :class:`BrownianPathForTorchsde` hands torchsde the
increments :math:`\\Delta W` and space-time integrals :math:`\\int(W_s - W_{t_0})ds` (torchsde's ``U``) summed
from one :class:`~sdeflow.noise.BrownianPath`. Any problem with an exact or reference score qualifies.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["PEERS", "SDE_PEERS", "DDPM_PEERS", "OWN_GRID_PEERS", "own_grid", "available_peers", "applicable", "run_peer", "run_sde_peer",
           "BrownianPathForTorchsde"]


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
        t = min(max(t, 0.0), 1.0)  # a peer's float32 sigma may round just below sigma_min (t = -2e-8)
        return p.field().data(x, t, p.path).to(x.dtype)


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
def _diffusers_unipc(order: int):
    """diffusers' ``UniPCMultistepScheduler`` (bh2, ``solver_order``) on Karras' sigmas from the problem's
    sigma_max to sigma_min, then a last step to sigma = 0 (``use_karras_sigmas=True`` with the problem's ends,
    ``final_sigmas_type="zero"``), the network's data prediction its model output (``prediction_type="sample"``):
    as a user with an EDM-style network runs it. The scheduler's state is variance-preserving, x / sqrt(1 +
    sigma^2); one evaluation per step."""
    def run(problem, x, nfe):
        import diffusers

        s_max, s_min = _sigmas(problem)
        if nfe < 2:
            return None
        sch = diffusers.UniPCMultistepScheduler(solver_order=order, prediction_type="sample", use_karras_sigmas=True,
                                                sigma_min=s_min, sigma_max=s_max, final_sigmas_type="zero")
        sch.set_timesteps(nfe)
        D = _Counted(problem, nfe)
        y = x / math.sqrt(1.0 + float(sch.sigmas[0]) ** 2)
        for i, t in enumerate(sch.timesteps):
            sigma = float(sch.sigmas[i])
            y = sch.step(D(y * math.sqrt(1.0 + sigma * sigma), sigma), t, y).prev_sample
        return y, D.calls  # at sigma = 0 the scheduler's state is x
    return run



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
    "diffusers:unipc_karras": ("diffusers", _diffusers_unipc(2)),
    "diffusers:unipc3_karras": ("diffusers", _diffusers_unipc(3)),
}


def available_peers(sde: bool = False) -> tuple[list[str], list[str]]:
    """``(names that can run, notes on the skipped ones)`` among the ODE peers, or the SDE peers."""
    import importlib.util

    ok, notes = [], []
    for name, (lib, _) in (SDE_PEERS if sde else PEERS).items():
        if importlib.util.find_spec(lib) is None:
            notes.append(f"skipped peer {name}: {lib} is not installed (pip install 'sdeflow[bench]')")
        else:
            ok.append(name)
    if not sde and importlib.util.find_spec("k_diffusion") is None:
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


# ---- torchsde, on sdeflow's Brownian path ------------------------------------------------------------
class BrownianPathForTorchsde:
    """A :class:`~sdeflow.noise.BrownianPath` (fine grid in decreasing ``t``) as a torchsde Brownian motion
    in :math:`\\tau = -t`: ``bm(ta, tb)`` is the summed increment over the fine steps between ``-ta`` and
    ``-tb`` (times snap to the nearest fine-grid point, within a quarter of its spacing), ``return_U=True``
    adds :math:`U = \\int_{t_a}^{t_b}(W_s - W_{t_a})\\,ds`; shape ``(batch, d)`` like ``like``."""

    levy_area_approximation = "space-time"

    def __init__(self, path, like: torch.Tensor):
        self.path, self.like = path, like
        self._times = path.times.numpy()
        self._tol = 0.25 * float(np.min(np.abs(np.diff(self._times))))

    def _snap(self, tau) -> float:
        t = -float(tau)
        j = int(np.argmin(np.abs(self._times - t)))
        if abs(self._times[j] - t) > self._tol:
            raise ValueError(f"torchsde asked for the Brownian path at t={t}, not on the fine grid")
        return float(self._times[j])

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if tb is None or return_A:
            raise ValueError("BrownianPathForTorchsde answers increments bm(ta, tb) (optionally with U) only")
        dw, dz = self.path.increments(self._snap(ta), self._snap(tb), self.like)
        cast = dict(dtype=self.like.dtype, device=self.like.device)
        return (dw.to(**cast), dz.to(**cast)) if return_U else dw.to(**cast)

    @property
    def shape(self):
        return tuple(self.like.shape)

    @property
    def dtype(self):
        return self.like.dtype

    @property
    def device(self):
        return self.like.device

    def size(self):
        return self.shape

    def __repr__(self):
        return f"BrownianPathForTorchsde(shape={self.shape})"


_TS_EVALS = {"euler": 1, "milstein": 1, "srk": 3}  # drift evaluations per step (srk: SRA1 for additive
# noise, two stages, but torchsde re-evaluates the first stage's drift inside the second: 3 per step)


class _ReverseSDE(torch.nn.Module):
    """The problem's reverse SDE in tau = -t for torchsde: f = g^2 score - f_t x, g = diag(g_t)."""

    noise_type, sde_type = "additive", "ito"

    def __init__(self, problem, cap: int):
        super().__init__()
        self.problem, self.field, self.cap, self.calls = problem, problem.field(), cap, 0

    def f(self, tau, y):
        if self.calls >= self.cap:
            raise RuntimeError("peer exceeded its NFE budget")  # a bug in the adapter, never silent
        self.calls += 1
        t = -float(tau)
        p = self.problem
        tt = torch.tensor([t], dtype=torch.float64)
        g2, ft = float(p.path.g2(tt)[0]), float(p.path.f(tt)[0])
        return g2 * self.field.score(y, t, p.path).to(y.dtype) - ft * y

    def g(self, tau, y):
        g = float(self.problem.path.g(torch.tensor([-float(tau)], dtype=torch.float64))[0])
        return torch.diag_embed(torch.full_like(y, g))


def _torchsde(method: str):
    def run(problem, x, grid, path, nfe):
        import torchsde

        extra = 1 if problem.final_denoise else 0
        steps = len(grid) - 1
        if _TS_EVALS[method] * steps + extra > nfe:
            return None
        # + 1: sdeint checks the shapes of f and g once before integrating (in the wall time, not in the NFE)
        sde = _ReverseSDE(problem, nfe - extra + 1)
        ts = torch.tensor([-grid[0], -grid[-1]], dtype=x.dtype, device=x.device)
        # dt a hair above the grid step: torchsde accumulates t += dt, and a rounding shortfall at the end
        # would cost one more (tiny) step; its last step is clamped to the end time
        dt = abs(float(grid[1] - grid[0])) * (1 + 1e-9)
        y = torchsde.sdeint(sde, x, ts, method=method, dt=dt, bm=BrownianPathForTorchsde(path, x))[-1]
        if problem.final_denoise:
            y = problem.field().data(y, float(grid[-1]), problem.path).to(x.dtype)
        return y, sde.calls - 1 + extra
    return run


SDE_PEERS = {f"torchsde:{m}": ("torchsde", _torchsde(m)) for m in _TS_EVALS}


def sde_peer_steps(name: str, nfe: int, final_denoise: bool) -> int:
    """Steps an SDE peer takes within ``nfe`` evaluations."""
    return (nfe - (1 if final_denoise else 0)) // _TS_EVALS[name.split(":", 1)[1]]


def run_sde_peer(name: str, problem, x: torch.Tensor, grid, path, nfe: int):
    """``(x_final, nfe_used)`` of SDE peer ``name`` on ``problem``'s reverse SDE from ``x`` over the uniform
    ``grid`` (decreasing, a sub-grid of the :class:`~sdeflow.noise.BrownianPath` ``path``), or None when
    the grid needs more than ``nfe`` evaluations."""
    g = np.asarray(grid, dtype=np.float64)
    if len(g) > 2 and np.ptp(np.diff(g)) > 1e-9 * abs(g[0] - g[-1]):
        raise ValueError("SDE peers step torchsde with a fixed dt: pass a uniform grid")
    return SDE_PEERS[name][1](problem, x, g, path, nfe)


# ---- diffusers' DDPM-schedule schedulers, on a problem posed on DiscreteVP ------------------------------
class _CountedEps:
    """The problem's exact noise prediction at diffusers' integer timestep ``tau`` (sdeflow's DiscreteVP
    time ``(tau + 1) / T``), counting calls and refusing to exceed ``cap``."""

    def __init__(self, problem, cap: int):
        self.problem, self.field, self.cap, self.calls = problem, problem.field(), cap, 0

    def __call__(self, x, tau):
        if self.calls >= self.cap:
            raise RuntimeError("peer exceeded its NFE budget")
        self.calls += 1
        t = (float(tau) + 1.0) / self.problem.path.T
        return self.field.noise(x, t, self.problem.path).to(x.dtype)


def ddpm_timesteps(k: int, T: int = 1000) -> list[int]:
    """``k`` integer timesteps from ``T - 1`` down to 0, evenly spaced (rounded): the grid every DDPM peer
    and the matching sdeflow row use (sdeflow time ``(tau + 1) / T``)."""
    return [int(v) for v in np.unique(np.round(np.linspace(T - 1, 0, k)).astype(int))[::-1]]


def _ddpm_config(problem) -> dict:
    """diffusers' scheduler configuration of the problem's DDPM schedule, noise prediction."""
    return dict(num_train_timesteps=problem.path.T, beta_start=float(problem.path.betas[0]),
                beta_end=float(problem.path.betas[-1]), beta_schedule="linear", prediction_type="epsilon")


def _diffusers_ddpm(kind: str):
    def run(problem, x, nfe):
        import diffusers

        k = (nfe + 1) // 2 if kind == "heun" else nfe  # Heun: 2 calls per step, 1 for the last (to sigma 0)
        if k < 2:
            return None
        taus = ddpm_timesteps(k, problem.path.T)
        common = _ddpm_config(problem)
        if kind in ("dpmpp_2m", "dpmpp_3m"):
            sch = diffusers.DPMSolverMultistepScheduler(solver_order=int(kind[-2]), algorithm_type="dpmsolver++",
                                                        final_sigmas_type="zero", **common)
            sch.set_timesteps(timesteps=taus)
        elif kind == "euler":
            sch = diffusers.EulerDiscreteScheduler(final_sigmas_type="zero", **common)
            sch.set_timesteps(timesteps=taus)
        else:
            sch = diffusers.HeunDiscreteScheduler(**common)
            sch.set_timesteps(timesteps=taus)
        eps = _CountedEps(problem, nfe)
        # the sample in the scheduler's own coordinates (VE-scaled for Euler/Heun: x / alpha)
        y = x * sch.init_noise_sigma / float(problem.path.sigma(problem.t_max)) if kind in ("euler", "heun") \
            else x.clone()
        for t in sch.timesteps:
            inp = sch.scale_model_input(y, t)
            y = sch.step(eps(inp, t), t, y).prev_sample
        return y, eps.calls
    return run


DDPM_PEERS = {f"diffusers:{k}": ("diffusers", _diffusers_ddpm(k))
              for k in ("dpmpp_2m", "dpmpp_3m", "euler", "heun")}


# ---- diffusers' schedulers on the timesteps they choose themselves --------------------------------------
def _own_scheduler(kind: str, problem):
    import diffusers

    if kind == "ddim":  # clip_sample off: the targets are not images in [-1, 1]
        return diffusers.DDIMScheduler(clip_sample=False, **_ddpm_config(problem))
    return diffusers.UniPCMultistepScheduler(**_ddpm_config(problem))  # bh2, order 2, lower_order_final


def _diffusers_own(kind: str):
    def run(problem, x, nfe, noise=None):
        if nfe < 2:
            return None
        sch = _own_scheduler(kind, problem)
        sch.set_timesteps(nfe)  # its default spacing; one evaluation per timestep (the last ends at sigma 0)
        eps = _CountedEps(problem, nfe)
        y = x.clone()
        for i, t in enumerate(sch.timesteps):
            if noise is None:
                y = sch.step(eps(y, t), t, y).prev_sample
            else:  # DDIM with eta = 1 on the given standard-normal draws, one per step
                y = sch.step(eps(y, t), t, y, eta=1.0, variance_noise=noise[i].to(y)).prev_sample
        return y, eps.calls, [int(t) for t in sch.timesteps]
    return run


#: Peers on the timesteps their scheduler chooses with ``set_timesteps(nfe)`` (its default spacing), and the
#: sdeflow solver run beside each on exactly those times: ``name -> (library, run, sdeflow solver, grid label)``.
#: ``DDIMScheduler``'s "leading" spacing starts at timestep ``T - T/n`` and ends at 0, then steps to
#: alpha = 1 (the final denoising); ``UniPCMultistepScheduler``'s "linspace" spacing starts at ``T - 1`` and
#: ends near ``T/n``, then steps to sigma = 0. ``run(problem, x, nfe) -> (x, nfe_used, timesteps)``.
OWN_GRID_PEERS = {
    "diffusers:ddim": ("diffusers", _diffusers_own("ddim"), "ddim", "ddim_leading"),
    "diffusers:unipc": ("diffusers", _diffusers_own("unipc"), "unipc", "unipc_linspace"),
}


def own_grid(problem, timesteps) -> list[float]:
    """sdeflow's times of diffusers' integer ``timesteps`` (:meth:`~sdeflow.paths.DiscreteVP.index_to_t`:
    ``(tau + 1) / T``, the same noise level): the explicit grid of the matching sdeflow row; its ends are the
    window (``t_max = grid[0]``, ``t_min = grid[-1]``, then the final denoising)."""
    return [float(problem.path.index_to_t(tau)) for tau in timesteps]


def ddim_sde_noise(problem, x, nfe, generator):
    """The standard-normal draws (one ``x``-shaped tensor per step) shared by ``diffusers:ddim(eta=1)`` and
    sdeflow's ``ddim(eta=1)`` (the latter reads them through :class:`sdeflow.noise.TableNoise`)."""
    return torch.randn((nfe,) + tuple(x.shape), generator=generator, dtype=torch.float64)


def ddpm_applicable(problem) -> bool:
    """The DDPM-schedule peers need a problem on diffusers' default schedule: ``DiscreteVP()`` (beta linear
    1e-4..0.02, T = 1000; its noise levels computed in float64 or, as diffusers and a network trained with it
    have them, in float32: the cumulative products agree to 4e-7 relative) from t = 1 (timestep 999) to
    t_min = 1/T (timestep 0), then the final denoising."""
    from ..paths import DiscreteVP

    p = problem.path
    if not (isinstance(p, DiscreteVP) and p.T == 1000):
        return False
    default = DiscreteVP().alphas_cumprod
    return (problem.final_denoise and problem.t_max == 1.0 and abs(problem.t_min - 1.0 / p.T) < 1e-12
            and problem.integration_path is None and torch.allclose(p.alphas_cumprod, default, rtol=1e-5, atol=0.0))
