"""Running a solver over a term: trajectory recording, progress bar, and the non-finite guard.

Every solve begins a fresh :class:`~sdeflow.terms.RunContext` on its term (:meth:`~sdeflow.terms.Term.start_run`):
its evaluation count, check flag and accepted-step hook belong to that solve only, while the term's tables and
cached step programs serve every solve on it.

The guard costs nothing inside the loop: after the solve, one reduction checks the final state. Only if
it holds NaN/Inf is the solve replayed (same inputs, the noise source rewound) with per-evaluation checks,
to name the step, the time and the field kind at fault.
"""

from __future__ import annotations

from typing import Callable

import torch

from .errors import NonFiniteError, SdeflowValueError

__all__ = ["run", "diagnose"]

Tensor = torch.Tensor


def run(solver, term, x: Tensor, grid: list[float], noise, *, trajectory: bool = False,
        progress: bool = False, desc: str = "sdeflow", grad: str | None = None,
        step_callback: Callable | None = None, check: bool | None = None):
    """``(x_final, trajectory list or None, solver stats)``; ``grad="checkpoint"`` runs each step as a
    checkpointed segment (:func:`sdeflow.gradients.integrate_checkpointed`), other modes the solver's loop.

    The solve runs in a new :class:`~sdeflow.terms.RunContext` of ``term`` (``term.nfe`` counts this solve's
    evaluations, and still does after it returns); ``check`` turns on per-evaluation finiteness checks (None:
    the term's current setting, ``term.check``).

    ``step_callback(k, x)`` runs after step ``k`` of a fixed-step solver (``step_callback(k, x, t)`` after the
    ``k``-th accepted step of an adaptive one, at its integration time ``t``, through ``term.on_accept``) and may
    return a replacement state (None: unchanged); the trajectory records the state it returns."""
    traj = [x] if trajectory else None
    pbar = None
    if progress:
        from tqdm.auto import tqdm

        pbar = tqdm(total=len(grid) - 1, desc=desc, unit="step", leave=False)
    cb: Callable | None = None
    user = step_callback
    if user is not None and solver.steps_per_sample(noise):
        raise SdeflowValueError(f"callback= needs one time for the whole batch, but {solver.name} steps every sample "
                                f"on its own here (per-sample step control); pass per_sample=False (dopri5) or "
                                f"generator= (adaptive_heun_sde) for shared steps, or use a fixed-step solver")
    if user is not None and grad == "checkpoint":
        raise SdeflowValueError("callback= cannot replace the state inside checkpointed steps (grad='checkpoint' "
                                "recomputes them in backward); use grad='full' with a callback")
    on_accept = None
    if user is not None and solver.adaptive:
        on_accept, user = (lambda i, t, xk: step_callback(i, xk, t)), None
    ctx = term.start_run(check=term.check if check is None else bool(check), on_accept=on_accept)
    if traj is not None or pbar is not None or user is not None:
        def cb(k, xk):
            if user is not None:
                r = user(k, xk)
                if r is not None:
                    xk = r
            if traj is not None:
                traj.append(xk)
            if pbar is not None:
                pbar.update(1)
            return xk
    try:
        if grad == "checkpoint":
            from .gradients import integrate_checkpointed

            out, state = integrate_checkpointed(solver, term, x, grid, noise, cb)
        else:
            out, state = solver.integrate(term, x, grid, noise, cb)
    finally:
        if pbar is not None:
            pbar.close()
        ctx.on_accept = None  # the solve is over: drop the user's callback
    return out, traj, solver.stats(state)


def diagnose(solver, term, x: Tensor, grid: list[float], noise, noise_state, *,
             finish: Callable[[Tensor], Tensor] | None = None, time_label=lambda t: t,
             step_callback: Callable | None = None) -> None:
    """Replay a solve whose output was not finite and raise a :class:`NonFiniteError` locating it."""
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise NonFiniteError(f"the initial state holds NaN or Inf ({bad} of {x.numel()} entries): check x_init (or "
                             f"the prior draw)", step=None, t=float(grid[0]) if len(grid) else None)
    if noise is not None and noise_state is not None:
        noise.set_state(noise_state)
    solved = term.context  # the failed solve's context, back on the term afterwards
    term.start_run(check=True, on_accept=(lambda i, t, xk: step_callback(i, xk, t))
                   if step_callback is not None and solver.adaptive else None)

    def cb(k, xk):
        if step_callback is not None and not solver.adaptive:  # the replay applies the user's callback too
            r = step_callback(k, xk)
            xk = xk if r is None else r
        if not bool(torch.isfinite(xk).all()):
            t0, t1 = time_label(grid[k]), time_label(grid[k + 1])
            raise NonFiniteError(
                f"step {k} (t={t0:.6g} -> {t1:.6g}) produced NaN or Inf although the field returned finite "
                f"values: the update overflowed or a path coefficient is singular there (e.g. a noise "
                f"prediction converted at alpha = 0); move t_max/t_min away from the singular end or take "
                f"smaller steps" + ("; or the state the step callback returned is not finite"
                                    if step_callback is not None else ""),
                step=k, t=float(t0), kind=term.kind)
        return xk

    try:
        out, _ = solver.integrate(term, x, grid, noise, cb)
        if finish is not None:
            out = finish(out)
    finally:
        term.context = solved
    if not bool(torch.isfinite(out).all()):
        raise NonFiniteError("the final denoising step produced NaN or Inf from finite field values: the data "
                             "prediction is singular at t_min for this field kind; use final_denoise=False "
                             "or a t_min where sigma > 0", kind=term.kind)
    raise NonFiniteError("the output contained NaN or Inf, but a checked replay of the same solve was "
                         "finite: the field is not deterministic (dropout? global RNG?), so the failing "
                         "step could not be located")
