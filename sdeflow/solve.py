r"""The low-level solver entry point: any ODE or SDE, no path needed.

``solve(drift, diffusion, x0, grid, solver)`` integrates :math:`dx = f(x, t)\,dt + g(x, t)\,dW` over the
times of ``grid`` (increasing or decreasing). ``drift(x, t)`` receives ``t`` as a ``(batch,)`` tensor,
like a network. ``diffusion`` is None (an ODE), a number (additive noise), or ``g(x, t)`` returning a
tensor broadcastable to ``x`` (``noise_type="diagonal"``: independent noise per entry; ``"scalar"``: one
Brownian motion per sample; ``"additive"``: declares that ``g`` ignores ``x``).
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

import numpy as np
import torch

from . import solvers as _solvers
from .errors import SdeflowTypeError, SdeflowValueError, check_float_tensor
from .grids import check_grid
from .noise import as_noise_source
from .runner import diagnose, run
from .solution import Solution
from .terms import CallableTerm

__all__ = ["solve", "make_solver"]

Tensor = torch.Tensor


def make_solver(solver, options: dict):
    """``solvers.get(solver, **options)`` with option names checked against the solver's constructor:
    an unknown option, or a value its constructor cannot take, raises an sdeflow error naming it. A name may
    carry options (``"unipc(order=3)"``); ``options`` override them."""
    if isinstance(solver, str) and "(" in solver:
        solver, spelled = _solvers.parse_spec(solver)
        options = {**spelled, **options}
    try:
        base = _solvers.get(solver)
    except TypeError as e:  # a backend needs its method argument, etc.
        if isinstance(e, SdeflowTypeError):
            raise
        base = None
    if not options:
        if base is None:
            return _solvers.get(solver)
        return base
    if base is not None and not isinstance(solver, _solvers.Solver):
        init = type(base).__init__
        params = {} if init is object.__init__ else inspect.signature(init).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            known = [n for n, p in params.items() if n != "self" and p.kind is not p.VAR_POSITIONAL]
            unknown = sorted(set(options) - set(known))
            if unknown:
                raise SdeflowTypeError(f"solver {base.name!r} has no option(s) {', '.join(unknown)}; its options "
                                       f"are: {', '.join(known) or 'none'} (sampler arguments such as steps/nfe/"
                                       f"grid are not solver options for solve())")
    try:
        return _solvers.get(solver, **options)
    except (SdeflowValueError, SdeflowTypeError):
        raise
    except (TypeError, ValueError) as e:
        raise SdeflowValueError(f"solver options {options!r} were refused by {solver!r}: {e}") from None


def solve(drift: Callable[[Tensor, Tensor], Tensor], diffusion, x0: Tensor, grid: Sequence[float] | Tensor,
          solver=None, *, noise_type: str = "diagonal", sde_type: str = "ito",
          generator: torch.Generator | None = None, noise=None, return_trajectory: bool = False,
          progress: bool = False, check_finite: bool = True, row_data: Sequence[Tensor] = (),
          **solver_options) -> Solution:
    """Integrate ``dx = drift(x, t) dt + diffusion dW`` over ``grid`` with ``solver``.

    ``solver`` defaults to ``"heun"`` for ODEs, ``"stochastic_heun"`` for additive noise and
    ``"euler_maruyama"`` otherwise. ``sde_type`` (``"ito"`` or ``"stratonovich"``) says how to read a
    multiplicative-noise SDE; a solver converging to the other interpretation is refused. Returns a
    :class:`~sdeflow.solution.Solution` with the final state, optional trajectory and NFE.

    ``check_finite`` (default True): a NaN/Inf output raises :class:`~sdeflow.errors.NonFiniteError` naming
    the step and time (fixed-step solvers: one reduction after the solve, then a checked replay; adaptive
    solvers check each drift evaluation, as they synchronise every step anyway). False turns it off.

    ``row_data``: per-sample tensors (first dimension the batch, on ``x0``'s device) passed to the drift as
    ``drift(x, t, *row_data)``. A per-sample adaptive solver (``dopri5``) evaluates only the rows still running;
    the drift then gets those rows' data, so data that belong to a sample (Hutchinson probes, conditioning)
    follow it and its result does not depend on its batch.
    """
    x0 = check_float_tensor("x0", x0, allow_half=False)
    if x0.dim() < 1:
        raise SdeflowValueError("x0 must have shape (batch, *event)")
    row_data = tuple(row_data)
    for d in row_data:
        if not isinstance(d, Tensor) or d.dim() < 1 or d.shape[0] != x0.shape[0] or d.device != x0.device:
            got = f"shape {tuple(d.shape)} on {d.device}" if isinstance(d, Tensor) else type(d).__name__
            raise SdeflowValueError(f"row_data must be tensors with one row per sample of x0 (first dimension "
                                    f"{x0.shape[0]}, on {x0.device}), got {got}")
    g = check_grid(grid, "grid", decreasing=None, unit=False).numpy()
    if sde_type not in ("ito", "stratonovich"):
        raise SdeflowValueError(f"sde_type must be 'ito' or 'stratonovich', got {sde_type!r}")
    additive_hint = diffusion is None or isinstance(diffusion, (int, float)) or noise_type == "additive"
    if solver is None:
        solver = "heun" if diffusion is None else ("stochastic_heun" if additive_hint else "euler_maruyama")
    solver = make_solver(solver, solver_options)
    if solver.needs != "drift":
        raise SdeflowValueError(f"solver {solver.name!r} needs a Gaussian path and a field (it steps with data or "
                                f"noise predictions); use sdeflow.sample, or a drift solver: "
                                f"{', '.join(_solvers.available(needs='drift'))}")
    if diffusion is not None and not solver.sde:
        raise SdeflowValueError(f"diffusion is given but solver {solver.name!r} is an ODE solver; use an SDE "
                                f"solver ({', '.join(_solvers.available(sde=True, needs='drift'))}) or "
                                f"diffusion=None")
    times, step_of = (np.zeros(0), np.zeros(0, dtype=np.int64)) if not solver.planned else solver.eval_times(g)
    term = CallableTerm(drift, diffusion, times, x0, noise_type=noise_type, step_of=step_of, row_data=row_data)
    if term.is_sde and not term.additive and solver.sde_type != sde_type:
        raise SdeflowValueError(f"solver {solver.name!r} converges to the {solver.sde_type} solution, but "
                                f"sde_type={sde_type!r} and the noise is multiplicative; use "
                                f"{'euler_maruyama' if sde_type == 'ito' else 'stochastic_heun'} or set "
                                f"sde_type={solver.sde_type!r}")
    if solver.requires_additive and term.is_sde and not term.additive:
        raise SdeflowValueError(f"solver {solver.name!r} is for additive noise; pass noise_type='additive' if "
                                f"diffusion ignores x, or use euler_maruyama")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise SdeflowTypeError(f"generator must be a torch.Generator, got {type(generator).__name__}; for an "
                               f"integer seed use noise=seed (PerSampleNoise)")
    src = as_noise_source(noise, generator, x0.device) if term.is_sde else None
    state0 = src.get_state() if (check_finite and src is not None) else None
    grid_list = [float(v) for v in g]
    # adaptive: already one host sync per step, so check every evaluation
    x, traj, st = run(solver, term, x0, grid_list, src, trajectory=return_trajectory, progress=progress,
                      check=bool(check_finite) and not solver.planned)
    if check_finite and not bool(torch.isfinite(x).all()):
        diagnose(solver, term, x0, grid_list, src, state0)
    stats = {"solver": solver.name, "steps": len(g) - 1, "nfe": term.nfe}
    stats.update(st)
    return Solution(x=x, ts=torch.as_tensor(g), trajectory=torch.stack(traj) if traj is not None else None,
                    nfe=term.nfe, stats=stats)
