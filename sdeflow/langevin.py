r"""Langevin dynamics with stationary target :math:`p \propto e^{-E}`: ``dX = score(X) dt + sqrt(2) dW``.

* :func:`ula` — unadjusted Langevin, ``x <- x + h s(x) + sqrt(2h) z`` (Roberts & Tweedie 1996). On
  N(0, s^2) its stationary variance is ``s^2 / (1 - h / (2 s^2))``.
* :func:`mala` — Metropolis-adjusted: propose with ULA, accept with probability
  ``min(1, exp(-E(y) + E(x) - |x - y - h s(y)|^2/(4h) + |y - x - h s(x)|^2/(4h)))``; unbiased; reports
  the acceptance rate.
* :func:`annealed_langevin` — NCSN (Song & Ermon 2019, Alg. 1): levels ``sigma_1 > ... > sigma_L``, K steps
  each with ``h_i = eps * sigma_i^2 / sigma_L^2`` and the score at ``sigma_i``.

Score/energy functions take ``x`` (and ``sigma`` as a ``(batch,)`` tensor for annealed Langevin). No host
synchronisation inside the loops; randomness only through ``generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from .errors import NonFiniteError, SdeflowValueError, check_float_tensor, check_generator, check_int
from .fields import energy_and_score

__all__ = ["ula", "mala", "annealed_langevin", "LangevinResult"]

Tensor = torch.Tensor


@dataclass
class LangevinResult:
    x: Tensor
    trajectory: Tensor | None = None
    stats: dict = field(default_factory=dict)


def _pos(name, v):
    if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
        raise SdeflowValueError(f"{name} must be a positive finite number, got {v!r}")


def _nsteps(v, name="steps"):
    check_int(name, v, minimum=0, what="a non-negative integer", error=SdeflowValueError)


def _check_x(x):
    check_float_tensor("x", x, allow_half=False)
    if x.dim() < 1 or x.shape[0] < 1:
        raise SdeflowValueError(f"x must have shape (batch, *event) with batch >= 1, got {tuple(x.shape)}")


def _check_out(name, out, x, what="score"):
    """The score function's output must be a tensor shaped like ``x`` (metadata only: no host sync)."""
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise SdeflowValueError(f"{name} returned {got} but x has shape {tuple(x.shape)}; it must return the "
                                f"{what} shaped like x")
    return out


def _guard(x, what, h, check):
    """One reduction after the chain: NaN/Inf raises instead of being returned."""
    if check and not bool(torch.isfinite(x).all()):
        raise NonFiniteError(f"{what} produced NaN or Inf (step_size={h:g}): the score returned NaN/Inf, or the "
                             f"chain diverged (Langevin steps are unstable for step_size above about 2/L, L the "
                             f"score's Lipschitz constant); lower step_size or check the score "
                             f"(check_finite=False returns the values)", kind="score")


def ula(score: Callable[[Tensor], Tensor], x: Tensor, step_size: float, steps: int, *, generator=None,
        return_trajectory: bool = False, check_finite: bool = True) -> LangevinResult:
    """``steps`` ULA steps ``x + h score(x) + sqrt(2h) z`` from ``x`` (h = ``step_size``).

    ``check_finite``: a NaN/Inf final state raises :class:`~sdeflow.errors.NonFiniteError` (one reduction
    after the loop)."""
    _pos("step_size", step_size), _nsteps(steps), _check_x(x), check_generator(generator)
    h, c = float(step_size), math.sqrt(2.0 * step_size)
    x = x.detach().clone()
    traj = [x] if return_trajectory else None
    for _ in range(steps):
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        with torch.no_grad():
            s = _check_out("score", score(x), x).detach()
        x = x + h * s + c * z
        if traj is not None:
            traj.append(x)
    _guard(x, "ULA", h, check_finite)
    return LangevinResult(x, torch.stack(traj) if traj else None, {"steps": steps})


def _energy_and_score(energy, x):
    e, s = energy_and_score(energy, x, name="energy", user="mala", hint="")
    return e.detach(), s


def mala(energy: Callable[[Tensor], Tensor], x: Tensor, step_size: float, steps: int, *, generator=None,
         return_trajectory: bool = False, check_finite: bool = True) -> LangevinResult:
    """``steps`` MALA steps on ``p ∝ exp(-energy)``; ``stats["acceptance_rate"]`` is the mean acceptance.

    A proposal with NaN/Inf energy is rejected (zero density), so the chain stays finite; ``check_finite``
    refuses a starting point whose energy or score is not finite (it would never move)."""
    _pos("step_size", step_size), _nsteps(steps), _check_x(x), check_generator(generator)
    h, c = float(step_size), math.sqrt(2.0 * step_size)
    x = x.detach().clone()
    e, s = _energy_and_score(energy, x)
    if check_finite and not bool(torch.isfinite(e).all() & torch.isfinite(s).all()):
        raise NonFiniteError("MALA's starting point has NaN/Inf energy or score: the chain would never move; "
                             "start where the energy is finite", kind="energy")
    acc = torch.zeros((), dtype=x.dtype, device=x.device)
    traj = [x] if return_trajectory else None
    red = tuple(range(1, x.dim()))
    for _ in range(steps):
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        y = x + h * s + c * z
        ey, sy = _energy_and_score(energy, y)
        fwd = (y - x - h * s).pow(2).sum(red)
        bwd = (x - y - h * sy).pow(2).sum(red)
        log_a = (e - ey) + (fwd - bwd) / (4 * h)
        u = torch.rand(x.shape[0], generator=generator, dtype=x.dtype, device=x.device)
        ok = torch.log(u) < log_a
        m = ok.reshape((-1,) + (1,) * (x.dim() - 1))
        x, s, e = torch.where(m, y, x), torch.where(m, sy, s), torch.where(ok, ey, e)
        acc = acc + ok.to(x.dtype).mean()
        if traj is not None:
            traj.append(x)
    rate = float(acc / max(steps, 1))
    return LangevinResult(x, torch.stack(traj) if traj else None, {"steps": steps, "acceptance_rate": rate})


def annealed_langevin(score: Callable[[Tensor, Tensor], Tensor], x: Tensor, sigmas, *, eps: float = 2e-5,
                      steps_per_level: int = 100, generator=None, final_denoise: bool = False,
                      return_trajectory: bool = False, check_finite: bool = True) -> LangevinResult:
    r"""NCSN annealed Langevin: for each ``sigma_i`` (decreasing), K ULA steps with
    ``h_i = eps sigma_i^2 / sigma_L^2`` using ``score(x, sigma_i)``. ``final_denoise``: ``x + sigma_L^2 s``
    (Tweedie)."""
    check_generator(generator)
    try:
        sig = [float(v) for v in torch.as_tensor(sigmas, dtype=torch.float64).flatten()]
    except (TypeError, ValueError, RuntimeError):
        raise SdeflowValueError(f"sigmas must be a sequence of numbers, got {type(sigmas).__name__}") from None
    if not sig or any(not (0 < v < math.inf) for v in sig) or any(b >= a for a, b in zip(sig, sig[1:])):
        raise SdeflowValueError("sigmas must be a strictly decreasing sequence of positive noise levels")
    _pos("eps", eps), _nsteps(steps_per_level, "steps_per_level"), _check_x(x)
    x = x.detach().clone()
    traj = [x] if return_trajectory else None
    sL = sig[-1]
    for si in sig:
        h = eps * si * si / (sL * sL)
        st = torch.full((x.shape[0],), si, dtype=x.dtype, device=x.device)
        x = ula(lambda y: score(y, st), x, h, steps_per_level, generator=generator, check_finite=False).x
        if traj is not None:
            traj.append(x)
    if final_denoise:
        st = torch.full((x.shape[0],), sL, dtype=x.dtype, device=x.device)
        with torch.no_grad():
            x = x + sL * sL * _check_out("score", score(x, st), x)
    _guard(x, "annealed Langevin", eps, check_finite)
    return LangevinResult(x, torch.stack(traj) if traj else None,
                          {"levels": len(sig), "steps_per_level": steps_per_level})
