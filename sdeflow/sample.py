r"""Samplers: path + field + solver + time grid.

:func:`sample` integrates the reverse-time family with the same marginals as the path,

.. math:: dx = \big[v_t(x) - \tfrac{\gamma_t^2}{2} s_t(x)\big]\,dt + \gamma_t\, d\bar W,

from ``t_max`` down to ``t_min`` (``gamma = 0``: the probability-flow ODE; ``gamma="reverse"``: the reverse
SDE of Song et al. 2021 with :math:`\gamma = g`; a number or a function of ``t``: anything between), then
optionally applies a final denoising step :math:`x \mapsto \hat x_0(x, t_{min})`.
"""

from __future__ import annotations

import numbers
from typing import Callable, Sequence

import numpy as np
import torch

from . import solvers as _solvers
from .errors import (InputMutationError, SdeflowTypeError, SdeflowValueError, SingularityError, check_device, check_float_tensor,
                     check_int, check_memory, check_number, same_device)
from .fields import Field
from .gradients import check_grad, grad_context
from .grids import Grid, check_grid, make_grid, unpack
from .conditioning import check_model_kwargs, mismatched
from .conversions import conversion
from .noise import as_noise_source
from .paths import GaussianPath, check_shape, map_times, transfer_scale
from .runner import diagnose, run
from .solution import Solution, merge_chunk_stats
from .solve import make_solver
from .terms import FieldTerm
from .stability import check_rounding, probe
from .window import (EXTREME_LOG_SNR, budget_end, check_ends, check_prior, default_configuration,
                     default_window, finish_at)

__all__ = ["sample", "resolve_gamma2", "resolve_steps"]

Tensor = torch.Tensor
_HALF_RECIPE = ("wrap it as NoiseField(net, dtype=torch.float16) (any field kind): the network gets its inputs in "
                "that dtype and its outputs return to the state's")


def resolve_gamma2(gamma, path: GaussianPath) -> Callable[[Tensor], Tensor] | None:
    """``gamma`` as a function of float64 times returning :math:`\\gamma_t^2` (None for the ODE)."""
    if gamma is None or (isinstance(gamma, numbers.Real) and not isinstance(gamma, bool) and gamma == 0):
        return None
    if isinstance(gamma, str):
        if gamma != "reverse":
            raise SdeflowValueError(f"gamma must be a number >= 0, 'reverse' (the reverse SDE, gamma = g) or a "
                                    f"function of t; got {gamma!r}")
        return path.g2
    if isinstance(gamma, numbers.Real) and not isinstance(gamma, bool):
        g = float(gamma)
        if not (g > 0 and np.isfinite(g)):
            raise SdeflowValueError(f"gamma must be >= 0 and finite, got {gamma}")
        return lambda t: torch.full_like(t, g * g)
    if callable(gamma):
        def g2(t):
            try:
                v = torch.as_tensor(gamma(t), dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError) as e:
                raise SdeflowTypeError(f"gamma(t) must return a number or a tensor of numbers, got an error "
                                       f"converting its output: {e}") from None
            if v.dim() == 0:
                v = v.expand_as(t)
            elif v.shape != t.shape:
                raise SdeflowValueError(f"gamma(t) must return a number or a tensor shaped like t "
                                        f"{tuple(t.shape)} (one noise level per time, elementwise), got shape "
                                        f"{tuple(v.shape)}")
            if not (torch.isfinite(v).all() and (v >= 0).all()):
                raise SdeflowValueError("gamma(t) must return finite values >= 0")
            return v * v
        return g2
    raise SdeflowTypeError(f"gamma must be a number, 'reverse' or a callable of t, got {type(gamma).__name__}")


def resolve_steps(solver, steps, nfe, extra_nfe: int) -> int:
    """Number of steps from ``steps`` or an ``nfe`` budget (which also pays ``extra_nfe``)."""
    if steps is not None and nfe is not None:
        raise SdeflowValueError("give either steps= or nfe=, not both")
    if steps is None and nfe is None:
        raise SdeflowValueError("give steps= (number of solver steps) or nfe= (a budget of field evaluations), "
                                "or an explicit grid")
    if steps is not None:
        return check_int("steps", steps, what="a positive integer", error=SdeflowValueError)
    nfe = check_int("nfe", nfe, what="a positive integer", error=SdeflowValueError)
    s = solver.max_steps(int(nfe) - extra_nfe)
    if s < 1:
        need = solver.min_nfe + extra_nfe
        extra = " (including 1 for final_denoise)" if extra_nfe else ""
        raise SdeflowValueError(f"nfe={nfe} is below the minimum of {need}{extra} for solver "
                                f"{solver.name!r}; raise nfe or pick a solver with fewer evaluations per step")
    return s


def _sides(grid: np.ndarray, times: np.ndarray, step_of: np.ndarray) -> np.ndarray:
    """Per planned evaluation, the side of its time where its step lies (-1 below, +1 above, 0 inside): a
    path whose derivatives jump at some times (DiscreteVP's knots) gives each stage the step's segment."""
    if not len(times):
        return np.zeros(0)
    mid = 0.5 * (grid[:-1] + grid[1:])
    return np.sign(mid[np.asarray(step_of, dtype=np.int64)] - times)


_PLAN_BYTES_PER_EVAL = 400  # times, tables and a time-tensor view per planned evaluation (measured: ~350)


def _check_plan(solver, n_steps: int, N: int, shape, dtype, device, trajectory: bool, chunk_size) -> None:
    """Refuse, before allocating, a solve whose plan, state or output cannot fit in the device's memory."""
    item = torch.finfo(dtype).bits // 8
    event = int(np.prod(shape, dtype=np.float64)) if len(shape) else 1
    rows = N if chunk_size is None else min(N, chunk_size)
    evals = float(solver.nfe_for_steps(n_steps))
    plan = evals * _PLAN_BYTES_PER_EVAL
    state = float(rows) * event * item * (solver.evals_per_step + 4)
    out = float(N) * event * item * ((n_steps + 2) if trajectory else 1)
    fix = ("use fewer steps" if plan >= max(state, out) else
           "pass chunk_size= (at most that many samples at a time)" if state >= out else
           "draw fewer samples per call" + (" or drop return_trajectory" if trajectory else ""))
    check_memory(plan + state + out, f"sampling {N} samples of shape {tuple(shape)} in {n_steps} steps "
                 f"({int(evals)} planned evaluations" + (", with the trajectory" if trajectory else "") + ")",
                 device if device is not None else torch.device("cpu"), fix)


def _mutation_error(e: RuntimeError) -> None:
    """Raise :class:`~sdeflow.errors.InputMutationError` for torch's error that means the network wrote into the
    time tensor sdeflow handed it (a stride-0 view shared by the batch, so an in-place write fails in torch; an
    energy writing into ``x`` is caught where its score is taken, :func:`sdeflow.fields.energy_and_score`)."""
    msg = str(e)
    if "more than one element of the written-to tensor refers to a single memory location" in msg:
        raise InputMutationError(
            "the network modified its time input t in place (t.mul_(), t += ..., t[...] = ...): sdeflow's time "
            "tensors are read-only views shared by the batch and the steps. Work on a copy (t = t.clone() "
            "first, or out-of-place ops)") from e


def _dtype_hint(e: RuntimeError, field, dtype: torch.dtype) -> None:
    """Add a note to a network's dtype mismatch error when its parameters are in another dtype than the state."""
    if "dtype" not in str(e) and "scalar type" not in str(e):
        return
    net = getattr(field, "net", None)
    params = getattr(net, "parameters", None)
    kinds = set()
    if callable(params):
        try:
            kinds = {p.dtype for p in params()}
        except Exception:  # noqa: BLE001 - a hint only
            kinds = set()
    if not kinds:  # a closure: read the dtypes named in torch's message
        names = {"Half": torch.float16, "BFloat16": torch.bfloat16, "Float": torch.float32, "Double": torch.float64}
        kinds = {v for k, v in names.items() if k in str(e)}
    other = sorted(str(k) for k in kinds if k != dtype)
    if other and hasattr(e, "add_note"):
        e.add_note(f"sdeflow: the network's parameters are {', '.join(other)} but the solver state is {dtype}; "
                   f"{_HALF_RECIPE.replace('torch.float16', other[0])}")


def _kwargs_hint(e: RuntimeError, model_kwargs: dict | None, n: int) -> None:
    """Add a note to a network's size mismatch error naming the ``model_kwargs`` tensors whose first dimension is
    neither ``n`` nor 1: they are passed unchanged to every call (:mod:`sdeflow.conditioning`), so a network that
    reads one row per sample gets the wrong number of rows."""
    msg = str(e)
    if "size" not in msg and "shape" not in msg:
        return
    bad = mismatched(model_kwargs, n)
    if bad and hasattr(e, "add_note"):
        e.add_note(f"sdeflow: {', '.join(bad)} has a first dimension other than the number of samples n={n} (or 1); "
                   f"only tensors with one row per sample follow the rows each network call evaluates (chunks, "
                   f"shards, per-sample solvers), others reach every call unchanged: give one row per sample")


def _initial_state(x_init, n, shape, dtype, device):
    if x_init is not None:
        if isinstance(x_init, Tensor) and x_init.dtype in (torch.float16, torch.bfloat16):
            raise SdeflowTypeError(f"x_init has dtype {x_init.dtype}, too coarse for the solver state; keep the "
                                   f"state in float32 (x_init.float()) and let a half-precision network run "
                                   f"in its own dtype: {_HALF_RECIPE}")
        x_init = check_float_tensor("x_init", x_init, allow_half=False)
        if x_init.is_meta:
            raise SdeflowValueError("x_init is on the meta device (shapes, no values); a solve computes values: "
                                    "pass real initial noise, or n, shape and device='cpu' (or an accelerator)")
        if x_init.dim() < 1 or x_init.shape[0] < 1:
            raise SdeflowValueError(f"x_init must have shape (batch, *event) with batch >= 1, got "
                                    f"{tuple(x_init.shape)}")
        if n is not None and n != x_init.shape[0]:
            raise SdeflowValueError(f"n={n} disagrees with x_init's batch size {x_init.shape[0]}; drop n")
        if shape is not None and tuple(shape) != tuple(x_init.shape[1:]):
            raise SdeflowValueError(f"shape={tuple(shape)} disagrees with x_init's event shape "
                                    f"{tuple(x_init.shape[1:])}; drop shape")
        if dtype is not None and dtype != x_init.dtype:
            raise SdeflowTypeError(f"dtype={dtype} disagrees with x_init.dtype={x_init.dtype}; convert x_init "
                                   f"with x_init.to({dtype}) or drop dtype")
        if device is not None and not same_device(check_device(device), x_init.device):
            raise SdeflowValueError(f"device={device} disagrees with x_init.device={x_init.device}; move "
                                    f"x_init with x_init.to({str(device)!r}) or drop device")
        return x_init, x_init.shape[0], tuple(x_init.shape[1:]), x_init.dtype, x_init.device
    if n is None or isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SdeflowValueError(f"give x_init, or n (a positive number of samples) with shape; got n={n!r}")
    if shape is None:
        raise SdeflowValueError("shape (the event shape of one sample, e.g. (2,)) is needed with n; or pass "
                                "x_init")
    shape = check_shape(shape)
    dtype = torch.float32 if dtype is None else dtype
    if dtype in (torch.float16, torch.bfloat16):
        raise SdeflowTypeError(f"dtype={dtype} is too coarse for the solver state; keep dtype=torch.float32 and let "
                               f"a half-precision network run in its own dtype: {_HALF_RECIPE}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise SdeflowTypeError(f"dtype must be torch.float32 or torch.float64 for the solver state, got {dtype}")
    device = torch.device("cpu") if device is None else check_device(device)
    return None, int(n), shape, dtype, device


def _step_callback(user: Callable, term: FieldTerm, path: GaussianPath, ipath: GaussianPath, grid_train,
                   c_out) -> Callable:
    r"""The runner's ``step_callback(k, x[, tau])`` for a user's ``callback(i, t, x, x0_hat)``: records the last
    network evaluation (its input, time and output, in the training path's coordinates) on ``term`` and turns
    it into the data prediction :math:`\hat x_0 = P x + Q n` (:mod:`sdeflow.conversions`; no evaluation);
    states go to the user in the training path's coordinates and come back in the integration path's."""
    fn, last = term.fn, []

    def recording(x, t):
        n = fn(x, t)
        last[:] = (x, t, n)
        return n

    term.fn = recording
    kind = term.kind

    def x0_hat():
        if not last:
            return None
        x, t, n = last
        if kind == "data":
            return n
        t0 = t.reshape(-1)[:1].to(torch.float64)
        P, Q = conversion(kind, "data", *path.coefficients(t0))
        return torch.add(x * float(P[0]), n, alpha=float(Q[0]))

    transfer = ipath is not path

    def cb(k, x, tau=None):
        if tau is None:
            t, c = float(grid_train[k + 1]), (c_out[k + 1] if c_out is not None else 1.0)
        else:
            t = float(map_times(ipath, path, np.array([tau]))[0]) if transfer else float(tau)
            c = float(transfer_scale(ipath, path, tau, t)) if transfer else 1.0
        r = user(k, t, x * c if c != 1.0 else x, x0_hat())
        if r is None:
            return None
        if not isinstance(r, Tensor) or r.shape != x.shape or r.dtype != x.dtype or r.device != x.device:
            got = (f"{tuple(r.shape)} {r.dtype} on {r.device}" if isinstance(r, Tensor) else type(r).__name__)
            raise SdeflowTypeError(f"callback returned {got} at step {k}; return None (state unchanged) or a tensor "
                                   f"like x: {tuple(x.shape)} {x.dtype} on {x.device}")
        return r / c if c != 1.0 else r

    return cb


def sample(path: GaussianPath, field: Field, solver=None, *, steps: int | None = None,
           nfe: int | None = None, grid: str | Grid | Sequence[float] | Tensor | None = None,
           t_max: float | None = None, t_min: float | None = None, gamma=None,
           final_denoise: bool | None = None, x_init: Tensor | None = None, n: int | None = None,
           shape: Sequence[int] | None = None, dtype: torch.dtype | None = None, device=None,
           generator: torch.Generator | None = None, noise=None,
           integration_path: GaussianPath | None = None, return_trajectory: bool = False,
           progress: bool = False, check_finite: bool = True, chunk_size: int | None = None,
           preflight: bool = True, grad: str | None = None, model_kwargs: dict | None = None,
           callback: Callable | None = None, **solver_options) -> Solution:
    """Draw samples by integrating the reverse-time dynamics of ``path`` driven by ``field``.

    The arguments come in groups: the model (``path``, ``field``); the method, with its own options on the
    solver object (``solver=solvers.get("pc", alpha=0.5)``, as diffrax passes solver instances); the time grid
    with its options as one object (``grid=grids.Karras(rho=7.0)``) and its length (``steps`` or ``nfe``); the
    dynamics (``gamma``, ``final_denoise``, ``integration_path``); the initial state and its noise
    (``x_init``, or ``n``/``shape``/``dtype``/``device``; ``generator`` or ``noise``); the network calls
    (``model_kwargs``, ``callback``, ``grad``); the output and checks (``return_trajectory``, ``progress``,
    ``check_finite``, ``chunk_size``, ``preflight``). The API page (``docs/api/sample.md``) shows each group.

    Args:
        path: the Gaussian path the field was trained on.
        field: a :class:`~sdeflow.fields.Field` (wrap a bare network: ``NoiseField(net)`` etc.).
        solver: a name (``"heun"``, ``"euler_maruyama"``, ...; with options as ``"unipc(order=3)"``), class or
            instance; default ``"heun"`` for
            the ODE and ``"stochastic_heun"`` when ``gamma`` is not 0, and
            :func:`sdeflow.window.default_configuration`'s when the budget chooses the window (``t_max, t_min`` below). A solver's options belong to the solver
            object: ``sdeflow.solvers.get("pc", alpha=0.5)`` (or the class, ``PredictorCorrector(alpha=0.5)``).
        steps / nfe: number of steps, or a budget of field evaluations (never exceeded; the final
            denoising step counts).
        grid: a :class:`~sdeflow.grids.Grid` (``Uniform()``, ``LogSNR()``, ``Karras(rho=7.0)``,
            ``Quadratic()``, ``Discrete()``, each with optional ``t_max=``/``t_min=``), a grid's name
            (``"uniform"``, ``"log_snr"``, ``"karras"``, ``"quadratic"``, ``"discrete"``: that object with its
            defaults), or an explicit strictly decreasing sequence of times in ``[0, 1]``. Default
            ``"uniform"``; when the budget chooses the window, :func:`sdeflow.window.default_configuration`'s (no
            solver given) or ``"log_snr"``.
        t_max, t_min: ends of the named grids (the same as the Grid object's ``t_max=``/``t_min=``: give
            each end once). Defaults: ``path.t_max`` and ``path.t_min``, moved off an end
            where the field kind or the noise level is singular (:func:`sdeflow.window.default_window`). With a
            budget (``nfe=``), a named grid, the probability-flow ODE and neither ``t_min`` nor
            ``final_denoise`` given, the budget chooses the end: it stops at
            ``sigma_e = kappa * h**p`` and finishes with a denoising step
            (:func:`sdeflow.window.budget_end`; ``sol.stats["window"] == "budget"``), or, with no solver given
            where :func:`sdeflow.window.default_configuration` says ``"path"``, runs to the default data end and
            finishes with the denoising step there.
        gamma: 0 (probability-flow ODE), ``"reverse"`` (:math:`\\gamma = g`), a number, or a function of a
            float64 time tensor. Default: ``"reverse"`` for an SDE solver, 0 otherwise.
        final_denoise: finish with :math:`x \\mapsto \\hat x_0(x, t_{min})` (one more evaluation). Default
            (None): no, unless the budget chooses the window (``t_max, t_min`` above).
        x_init, n, shape, dtype, device: the initial noise, or how many samples of which event shape to
            draw from ``path.prior_sample`` (default float32 on CPU).
        generator / noise: a ``torch.Generator``, or a :class:`~sdeflow.noise.NoiseSource` (an int seeds
            :class:`~sdeflow.noise.PerSampleNoise`). The global RNG is never used.
        integration_path: integrate in the coordinates of another Gaussian path (same samples up to the
            solver's error; e.g. a VP network on ``LinearFlow()``'s straighter trajectories). Named grids
            are laid out in its time; ``t_max``/``t_min``/explicit grids and the outputs stay in ``path``'s.
        return_trajectory: keep the state at every grid time (memory grows with steps).
        progress: show a tqdm progress bar.
        check_finite: raise :class:`~sdeflow.errors.NonFiniteError` naming the step, time and field kind if
            the result holds NaN/Inf (one reduction after the solve; off for graph capture).
        chunk_size: integrate at most this many samples at a time (bounded memory).
        preflight: before the first network call, run the same solver, path, field kind, grid and noise
            level on exact Gaussian problems (data standard deviations 0.1, 0.5, 2 and 10; once per
            configuration, cached) and refuse with :class:`~sdeflow.errors.UnstableError` if its answer there
            is more than twice the exact one or of the other sign (an unstable or far too coarse step; see
            ``docs/reliability.md``).
        grad: gradients through the solve (:mod:`sdeflow.gradients`). ``None`` (default): no autograd graph;
            the solve runs under ``torch.no_grad()`` even when the network has parameters that require grad,
            so memory stays flat in the steps; an ``x_init`` that requires grad raises
            :class:`~sdeflow.errors.GradientError` (its gradient would be dropped) unless autograd is off.
            ``"full"``: backpropagation through every step (keeps every step's activations). ``"checkpoint"``:
            each step is recomputed in backward (``torch.utils.checkpoint``) from its input state and the
            tensors a multistep solver carries, with the same noise; gradients equal ``"full"``'s to rounding,
            with one step's activations in memory plus the state per step; fixed-step solvers only.
        model_kwargs: conditioning passed to the network on every call as keyword arguments
            (``net(x, t, **model_kwargs)``, e.g. ``{"class_labels": y}``). Tensors whose first dimension is the
            number of samples are per-sample: each chunk (and each shard of
            :func:`sdeflow.distributed.sample_sharded`) passes its own rows, and a per-sample adaptive solver
            (``dopri5``; ``adaptive_heun_sde`` with ``PerSampleNoise``) passes the rows of the samples it is still
            integrating (:mod:`sdeflow.conditioning`).
        callback: ``callback(i, t, x, x0_hat)`` after step ``i`` of a fixed-step solver (after each accepted
            step of an adaptive one), with ``t`` the time reached, ``x`` the state there and ``x0_hat`` the data
            prediction of the step's last field evaluation (at the step's start for one-evaluation solvers;
            no extra evaluation). A tensor it returns replaces ``x`` (None: unchanged): inpainting, RePaint,
            previews (:mod:`sdeflow.editing`). It runs once per chunk with that chunk's rows; a callback with a
            ``for_rows(start, stop)`` method is asked for the chunk's own callback first. With a callback the
            solver runs step by step instead of its generated loop.
        **solver_options: spellings kept for existing code: ``rho=`` with ``grid="karras"`` (the Karras
            grid's exponent; ``grid=Karras(rho=...)`` says it in one place) and the solver's constructor options
            beside a solver name or class (``sample(path, field, "pc", alpha=0.5)``; on the solver object the
            corrector's ``alpha`` never shares a namespace with the sampler's arguments).

    Returns:
        a :class:`~sdeflow.solution.Solution`.
    """
    if not isinstance(path, GaussianPath):
        raise SdeflowTypeError(f"path must be a GaussianPath (VP(), VE(), LinearFlow(), ...), got "
                               f"{type(path).__name__}")
    if not isinstance(field, Field):
        hint = " wrap the network: NoiseField(net), ScoreField(net), VelocityField(net), ..." if callable(field) else ""
        raise SdeflowTypeError(f"field must be a sdeflow Field, got {type(field).__name__};{hint}")
    ipath = path if integration_path is None else integration_path
    if not isinstance(ipath, GaussianPath):
        raise SdeflowTypeError(f"integration_path must be a GaussianPath, got {type(ipath).__name__}")
    # sdeflow.editing.invert integrates the ODE forward (data -> noise) on an increasing explicit grid
    forward = bool(solver_options.pop("_forward", False))
    grid, t_max, t_min, grid_options = unpack(grid, t_max, t_min, solver_options.pop("rho", None))
    if gamma is None and solver is not None:  # an SDE solver integrates the reverse SDE unless told otherwise
        gamma = "reverse" if make_solver(solver, solver_options).sde else 0.0
    gamma2_fn = resolve_gamma2(gamma, ipath)
    # the budget chooses the window (sdeflow.window.budget_end) when the user chose neither end nor finish, and
    # with it the configuration measured best with it: sdeflow.window.default_configuration (by budget and path;
    # docs/bench.md)
    budget_window = (nfe is not None and steps is None and t_min is None and final_denoise is None
                     and gamma2_fn is None and (grid is None or isinstance(grid, str)))
    budget_default = default_configuration(nfe, path, field.kind) if budget_window and solver is None else None
    if solver is None:
        solver = (budget_default[0] if budget_window else "heun") if gamma2_fn is None else "stochastic_heun"
    if budget_default is not None:  # the rule's solver options (UniPC-3); the user's override them
        solver_options = {**dict(budget_default.options), **solver_options}
    auto_grid = grid is None
    if auto_grid:
        grid = ((budget_default or (None, "log_snr"))[1]) if budget_window else "uniform"
    solver = make_solver(solver, solver_options)
    if solver.requires_consistency and not field.consistency:
        raise SdeflowTypeError(f"solver {solver.name!r} samples with a consistency function (its data prediction the "
                               f"probability-flow endpoint at the window's end), but {type(field).__name__} "
                               f"(kind {field.kind!r}) does not declare itself one: wrap a consistency model as "
                               f"ConsistencyField(net) (a denoiser's E[x0|x_t] used as one does not sample the target)")
    # the budget's window is balanced on a discretisation order; a consistency sampler has none
    budget_window = budget_window and not solver.adaptive and not solver.requires_consistency
    if gamma2_fn is not None and not solver.sde:
        raise SdeflowValueError(f"gamma={gamma!r} makes the dynamics an SDE, but solver {solver.name!r} is an ODE "
                                f"solver; use an SDE solver ({', '.join(_solvers.available(sde=True))}) "
                                f"or gamma=0")
    x_init, N, shape, dtype, device = _initial_state(x_init, n, shape, dtype, device)
    grad = check_grad(grad, solver, x_init)
    model_kwargs = check_model_kwargs(model_kwargs)
    if model_kwargs is not None and not field.takes_model_kwargs:
        raise SdeflowTypeError(f"model_kwargs were given but {type(field).__name__} passes no keyword arguments to a "
                               f"network (an oracle or a custom Field without model_kwargs); condition a NetField "
                               f"(NoiseField(net), ...) whose net accepts them, or drop model_kwargs")
    if callback is not None:
        if not callable(callback):
            raise SdeflowTypeError(f"callback must be callable as callback(i, t, x, x0_hat), got "
                                   f"{type(callback).__name__}")
        if solver.name.startswith(("torchdiffeq:", "torchsde:")):
            raise SdeflowValueError(f"callback cannot act between the steps of {solver.name!r} (the backend runs "
                                    f"its own loop); use one of sdeflow's solvers ({', '.join(_solvers.available())})")
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size)
    final_denoise = bool(final_denoise)
    extra = 1 if final_denoise else 0

    # ---- the grid, in training time and in integration time ------------------------------------
    if isinstance(grid, str):
        for name, v in (("t_max", t_max), ("t_min", t_min)):
            if v is not None:
                check_number(name, v, ge=0.0, le=1.0, hint="sampling runs from t_max (noise, <= 1) down to t_min "
                                                         "(data, >= 0)")
        state_dtype = x_init.dtype if x_init is not None else dtype
        given = t_max
        t_max, t_min = default_window(path, field.kind, gamma2_fn=resolve_gamma2(gamma, path),
                                      final_denoise=final_denoise, dtype=state_dtype, t_max=t_max, t_min=t_min,
                                      targets=solver.targets)
        if given is None and x_init is not None and t_max != float(path.t_max):
            raise SingularityError(
                f"{path!r}'s noise end t={float(path.t_max):g} is singular for a {field.kind} field"
                f"{' with this noise level' if gamma2_fn is not None else ''} (or beyond log-SNR "
                f"-{EXTREME_LOG_SNR:g}, where steps change nothing), so the default window starts at "
                f"t_max={t_max:.6g} instead, but x_init was given for the path's own end; pass t_max explicitly "
                f"and draw x_init there (path.prior_sample(shape, t=t_max)), or omit x_init (n=, shape=)",
                t=float(path.t_max), kind=field.kind)
        if not (0.0 <= t_min < t_max <= 1.0):
            raise SdeflowValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
        if budget_window:
            # the whole window, then the final step: as measured, with the rule's own grid (a grid the user names
            # stops where the budget puts it, as with a solver of the user's)
            if budget_default is not None and budget_default[2] == "path" and auto_grid:
                t_min, final_denoise = finish_at(path, field.kind, t_min, t_min) if solver.max_steps(nfe - 1) >= 1 \
                    else (t_min, False)
            else:
                t_min, final_denoise = budget_end(path, field.kind, solver, nfe, t_max, t_min)
            extra = 1 if final_denoise else 0
            if auto_grid and not np.all(np.isfinite(ipath.log_snr(torch.as_tensor(
                    map_times(path, ipath, np.array([t_max, t_min])))).numpy())):
                grid = "uniform"  # log-SNR infinite at an end (LinearFlow at t = 1): equal steps in t
        tau_max, tau_min = map_times(path, ipath, np.array([t_max, t_min]))
        if solver.adaptive and steps is None:  # steps on its own; nfe caps it
            # it stops at every time where the drift jumps (DiscreteVP's knots): it never steps across one
            inner = map_times(path, ipath, path.breakpoints(t_max, t_min).numpy())
            grid_tau = np.concatenate([[tau_max], inner, [tau_min]])
        else:
            n_steps = resolve_steps(solver, steps, nfe, extra)
            _check_plan(solver, n_steps, N, shape, dtype, device, return_trajectory, chunk_size)
            grid_tau = make_grid(grid, ipath, n_steps, float(tau_max), float(tau_min), **grid_options).numpy()
        grid_train = map_times(ipath, path, grid_tau)
        grid_train[0], grid_train[-1] = t_max, t_min
    else:
        if steps is not None:
            raise SdeflowValueError("steps is set by the explicit grid; drop steps=")
        g = check_grid(grid, "grid", decreasing=not forward).numpy()
        if forward and not g[-1] > g[0]:
            raise SdeflowValueError("an inversion grid must be strictly increasing (data -> noise)")
        for name, v, end in (("t_max", t_max, g[0]), ("t_min", t_min, g[-1])):
            if v is not None and abs(float(v) - end) > 1e-12:
                raise SdeflowValueError(f"{name}={v} disagrees with the explicit grid's end {end}; drop {name}")
        if nfe is not None and solver.nfe_for_steps(len(g) - 1) + extra > nfe:
            raise SdeflowValueError(f"the grid needs {solver.nfe_for_steps(len(g) - 1) + extra} evaluations with "
                                    f"solver {solver.name!r}, above nfe={nfe}; use fewer grid points")
        _check_plan(solver, len(g) - 1, N, shape, dtype, device, return_trajectory, chunk_size)
        grid_train = g
        grid_tau = map_times(path, ipath, g)
        t_max, t_min = float(g[0]), float(g[-1])
        if forward:
            t_max, t_min = t_min, t_max
    grid_list = np.asarray(grid_tau, dtype=np.float64).tolist()
    if not solver.planned:  # no tables to check: the window's ends, where our paths are singular, up front
        check_ends(path, t_max, t_min, field.kind, gamma2_fn=resolve_gamma2(gamma, path),
                   final_denoise=final_denoise, dtype=dtype, targets=solver.targets)

    # ---- the evaluation plan and gamma table ---------------------------------------------------
    if not solver.planned:
        times, step_of = np.zeros(0), np.zeros(0, dtype=np.int64)
    else:
        times, step_of = solver.eval_times(np.asarray(grid_tau, dtype=np.float64), ipath)
    sides = _sides(np.asarray(grid_tau, dtype=np.float64), times, step_of)
    if final_denoise:
        times = np.append(times, grid_tau[-1])
        sides = np.append(sides, 1.0)  # the last step's segment, above t_min
    gamma2 = None if gamma2_fn is None else gamma2_fn(torch.as_tensor(times)).numpy()

    if generator is not None and not isinstance(generator, torch.Generator):
        raise SdeflowTypeError(f"generator must be a torch.Generator, got {type(generator).__name__}; for an "
                               f"integer seed use noise=seed (PerSampleNoise)")
    noise_src = as_noise_source(noise, generator, device)
    transfer = ipath is not path
    c_in = float(transfer_scale(path, ipath, float(grid_train[0]), grid_list[0])) if transfer else 1.0
    c_out = torch.as_tensor(transfer_scale(ipath, path, torch.as_tensor(grid_tau), torch.as_tensor(grid_train))
                            ).tolist() if transfer else None

    chunk = N if chunk_size is None else chunk_size
    if x_init is None:
        check_prior(path, t_max)
    if preflight and not solver.adaptive:  # fixed-step solvers, the torchdiffeq/torchsde backends' included
        probe(path, field.kind, solver, grid_train, grid_tau, integration_path=ipath, gamma=gamma,
              gamma2_fn=gamma2_fn, dtype=dtype)
    with grad_context(grad):  # None: no graph, even for a network with parameters
        xs, trajs, nfe_max, calls, stats = [], [], 0, 0, {}
        term = None
        for start in range(0, N, chunk):
            rows = min(chunk, N - start)
            src = noise_src.for_rows(start)
            if x_init is None:
                like = torch.empty((rows,) + shape, dtype=dtype, device=device)
                x0 = path.prior_draw(src, like, t_max)
            else:
                x0 = x_init[start:start + rows]
            if transfer:
                x0 = x0 * c_in
            if term is None or term.batch != rows:
                term = FieldTerm(path, field, times, x0, integration_path=ipath, gamma2=gamma2,
                                 gamma2_fn=gamma2_fn, step_of=step_of, sides=sides)
                if final_denoise:
                    term.check_final()
                if start == 0 and preflight:
                    check_rounding(term, grid_train, grid_tau, solver, x0.dtype)
                if not solver.planned:
                    term.span = (min(grid_list), max(grid_list))
                    if nfe is not None:
                        term.max_nfe = int(nfe) - extra
                if start == 0:
                    field.validate_times(term.train_times)
            if model_kwargs is not None:  # this chunk's rows of the per-sample arguments (and the rows it runs)
                term.condition(model_kwargs, N, start)
            step_cb = None
            if callback is not None:
                user = callback.for_rows(start, start + rows) if hasattr(callback, "for_rows") else callback
                step_cb = _step_callback(user, term, path, ipath, grid_train, c_out)
            term.nfe = 0
            term.check = bool(check_finite) and not solver.planned  # adaptive: syncs every step anyway
            state0 = src.get_state() if check_finite else None

            def finish(x, term=term):
                if final_denoise:
                    return term.predict(len(times) - 1, x, "data")
                return x if c_out is None else x * c_out[-1]

            try:
                x, traj, st = run(solver, term, x0, grid_list, src, trajectory=return_trajectory,
                                  progress=progress, grad=grad, step_callback=step_cb)
            except RuntimeError as e:
                _mutation_error(e)
                _dtype_hint(e, field, x0.dtype)
                _kwargs_hint(e, model_kwargs, N)
                raise
            x = finish(x)
            if check_finite and not bool(torch.isfinite(x).all()):
                with torch.no_grad():
                    diagnose(solver, term, x0, grid_list, src, state0, finish=finish,
                             time_label=lambda tau: float(map_times(ipath, path, np.array([tau]))[0]),
                             step_callback=step_cb)
            xs.append(x)
            if traj is not None:
                if c_out is not None:
                    traj = [xt * c for xt, c in zip(traj, c_out)]
                if final_denoise:
                    traj.append(x)
                trajs.append(torch.stack(traj))
            nfe_max = max(nfe_max, term.nfe)
            calls += term.nfe
            stats = merge_chunk_stats(stats, st, rows)
    ts = torch.as_tensor(np.append(grid_train, 0.0) if final_denoise else grid_train, dtype=torch.float64)
    out = torch.cat(xs) if len(xs) > 1 else xs[0]
    trajectory = (torch.cat(trajs, dim=1) if len(trajs) > 1 else trajs[0]) if trajs else None
    steps_done = len(grid_list) - 1
    info = {"solver": solver.name, "steps": steps_done, "nfe": nfe_max, "network_calls": calls,
            "grid": grid if isinstance(grid, str) else "explicit", "final_denoise": final_denoise,
            "t_max": float(t_max), "t_min": float(t_min), "window": "budget" if budget_window else "given",
            "path": repr(path), "integration_path": repr(ipath), "chunks": (N + chunk - 1) // chunk, "grad": grad}
    info.update(stats)
    return Solution(x=out, ts=ts, trajectory=trajectory, nfe=nfe_max, stats=info)
