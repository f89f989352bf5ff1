r"""Time grids optimised for a field, a path, a solver and an NFE budget, from a few pilot trajectories.

A user with a trained network pays once: :func:`optimize_grid` draws ``n_pilot`` prior samples, solves them
tightly (adaptive Dopri5 with the same field) for a reference, then adjusts the interior grid times to
minimise the RMS distance between the solver's output at the budget and that reference. The grid is
parametrised by the logarithms of its increments in the integration path's time (any positive increments
summing to the window: monotone by construction) and optimised with Nelder-Mead, starting from the best of
the named grids. The result reports the pilot cost (network evaluations per pilot sample, and in total)
and the error before and after on held-out pilot samples; ``result.grid`` is passed to
:func:`sdeflow.sample` as ``grid=`` and reused.

**The end point.** With neither ``t_min`` nor ``final_denoise`` given (and the probability-flow ODE), the end
of the window is optimised together with the interior times: the reference runs to the default data end
(:func:`sdeflow.window.default_window`) and finishes with the denoising step where :math:`\sigma > 0` there, and
the candidate grids stop at a log-SNR :math:`\lambda_e` (one more parameter, started from the rule of
:func:`sdeflow.window.budget_end`) and finish with the denoising step (``result.final_denoise`` is then True:
pass it to :func:`sdeflow.sample` with the grid). An explicit ``t_min`` or ``final_denoise`` fixes the end as
before.

This generalises "equalise the local error" heuristics: it minimises the global error of the actual
solver directly (in the spirit of Sabour et al. 2024, "Align Your Steps", with pilot trajectories of the
field itself instead of a KL bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field as dc_field

import numpy as np
import torch

from . import solvers as _solvers
from .errors import SdeflowTypeError, SdeflowValueError
from .grids import make_grid
from .noise import as_noise_source
from .paths import GaussianPath, check_shape, map_times
from .sample import resolve_gamma2, resolve_steps, sample
from .window import budget_end, default_window, singular_reason

__all__ = ["OptimizedGrid", "optimize_grid", "network_dtype"]

Tensor = torch.Tensor


@dataclass
class OptimizedGrid:
    """An optimised grid and what it cost. ``grid`` is in the training path's time (pass as ``grid=``)."""

    grid: Tensor
    solver: str
    solver_options: dict
    nfe: int
    start: str
    error_start: float
    error_optimized: float
    validation_start: float
    validation_optimized: float
    pilot_network_calls: int
    pilot_sample_evaluations: int
    pilot_samples: int
    objective_evaluations: int
    final_denoise: bool = False
    history: list = dc_field(default_factory=list, repr=False)

    def summary(self) -> str:
        return (f"{self.solver} at nfe={self.nfe}: held-out RMS error {self.validation_start:.3e} ({self.start} grid) "
                f"-> {self.validation_optimized:.3e}; pilot cost {self.pilot_network_calls} batched network calls, "
                f"{self.pilot_sample_evaluations} sample evaluations ({self.pilot_samples} pilot samples)")


def network_dtype(field) -> torch.dtype | None:
    """The floating dtype of the parameters and buffers of the ``torch.nn.Module`` objects reachable from
    ``field`` through its attributes (a ``NoiseField(net)``, adapters, ``SumField`` terms, ...); None when
    there is none (an exact oracle, a plain function) or they disagree."""
    seen, found, todo = set(), set(), [(field, 0)]
    while todo:
        obj, depth = todo.pop()
        if id(obj) in seen or depth > 6:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.nn.Module):
            found |= {p.dtype for p in list(obj.parameters()) + list(obj.buffers()) if p.is_floating_point()}
            continue
        if isinstance(obj, (list, tuple)):
            todo += [(v, depth + 1) for v in obj[:64]]
        elif hasattr(obj, "__dict__") and not isinstance(obj, (type, torch.Tensor)):
            todo += [(v, depth + 1) for v in vars(obj).values()]
    return found.pop() if len(found) == 1 else None


def optimize_grid(path: GaussianPath, field, solver, nfe: int, *, shape, n_pilot: int = 128,
                  n_validation: int = 128, generator: torch.Generator | None = None, t_max: float | None = None,
                  t_min: float | None = None, final_denoise: bool | None = None,
                  integration_path: GaussianPath | None = None, dtype: torch.dtype | None = None, device=None,
                  starts=("karras", "log_snr", "uniform", "quadratic"), maxfev: int = 600,
                  reference_rtol: float | None = None, reference_atol: float | None = None,
                  solver_options: dict | None = None,
                  gamma=0.0, knots: int | None = 10) -> OptimizedGrid:
    """Optimise the time grid of ``solver`` at ``nfe`` evaluations for ``field`` on ``path``.

    Args mirror :func:`sdeflow.sample`; ``n_pilot`` samples drive the optimisation, ``n_validation`` other
    samples measure it; ``starts`` are the named grids tried as starting points; ``maxfev`` bounds the
    objective evaluations (each costs ``nfe`` network calls on the pilot batch). ``knots``: with more steps
    than this, the log step sizes are a piecewise-linear function of the step index through ``knots``
    control values (a smooth step density, few parameters: Nelder-Mead converges), optimised first, then
    every increment is refined with the budget left; ``None`` optimises every increment from the start.

    ``t_min`` / ``final_denoise``: fix the end as in :func:`sdeflow.sample`; with neither (and ``gamma=0``)
    the end is optimised too (module docstring) and ``result.final_denoise`` says to finish with the
    denoising step.

    ``dtype``: the pilot samples' dtype (the solves run in it). By default the dtype of the field's network
    (its ``torch.nn.Module`` parameters, found through the field's attributes: a float32 network is solved in
    float32), and float64 when the field has none (exact oracles, plain functions). ``reference_rtol`` /
    ``reference_atol`` of the Dopri5 reference: by default ``1e-7`` / ``1e-8`` in float64 and ``1e-5`` /
    ``1e-6`` in float32 (tighter than float32 rounding cannot be met). The pilot solves run without autograd
    (``torch.no_grad``): nothing here is differentiated.
    """
    auto = dtype is None
    if auto:
        dtype = network_dtype(field) or torch.float64
    if not (isinstance(dtype, torch.dtype) and dtype in (torch.float32, torch.float64)):
        raise SdeflowTypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}"
                               f"{' (the dtype of the field network)' if auto else ''}; pass dtype=torch.float32 "
                               f"or torch.float64, one the network accepts")
    tight = dtype == torch.float64
    reference_rtol = (1e-7 if tight else 1e-5) if reference_rtol is None else reference_rtol
    reference_atol = (1e-8 if tight else 1e-6) if reference_atol is None else reference_atol
    with torch.no_grad():
        return _optimize(path, field, solver, nfe, shape, n_pilot, n_validation, generator, t_max, t_min,
                         final_denoise, integration_path, dtype, device, starts, maxfev, reference_rtol,
                         reference_atol, solver_options, gamma, knots)


def _optimize(path, field, solver, nfe, shape, n_pilot, n_validation, generator, t_max, t_min, final_denoise,
              integration_path, dtype, device, starts, maxfev, reference_rtol, reference_atol, solver_options,
              gamma, knots) -> OptimizedGrid:
    from .bench.metrics import pathwise_rms  # the bench's error metric (sdeflow.bench loads lazily)

    solver_options = dict(solver_options or {})
    s = _solvers.get(solver, **solver_options)
    if s.adaptive:
        raise SdeflowValueError("optimize_grid is for fixed-step solvers; adaptive solvers choose their own steps")
    if s.sde or s.stochastic:
        raise SdeflowValueError("optimize_grid compares with a deterministic reference: use an ODE solver")
    ipath = path if integration_path is None else integration_path
    free_end = (t_min is None and final_denoise is None and resolve_gamma2(gamma, path) is None
                and s.max_steps(int(nfe) - 1) >= 2)
    ref_denoise = bool(final_denoise)
    t_max = float(path.t_max if t_max is None else t_max)
    if free_end:  # the answer at the default data end; the candidates stop at lambda_e and denoise
        t_max, t_floor = default_window(path, field.kind, t_max=t_max, targets=s.targets)
        t_e0, _ = budget_end(path, field.kind, s, nfe, t_max, t_floor)
        sig_floor = float(path.sigma(torch.tensor([t_floor], dtype=torch.float64))[0])
        ref_denoise = sig_floor > 0 and singular_reason(path, t_floor, field.kind, targets=("data",)) is None
        final_denoise, t_min = True, t_e0
    else:
        t_min = float(path.t_min if t_min is None else t_min)
        t_floor = t_min
    final_denoise = bool(final_denoise)
    steps = resolve_steps(s, None, nfe, 1 if final_denoise else 0)
    if steps < 2:
        raise SdeflowValueError(f"nfe={nfe} leaves {steps} step(s) for {s.name}: nothing to optimise")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    src = as_noise_source(None, gen, torch.device("cpu"))
    shape = check_shape(shape)
    like = torch.empty((n_pilot + n_validation,) + shape, dtype=dtype)
    x_all = path.prior_draw(src, like, t_max)
    if device is not None:
        x_all = x_all.to(device)
    common = dict(t_max=t_max, t_min=t_min, final_denoise=final_denoise, integration_path=integration_path,
                  gamma=gamma)
    try:
        ref = sample(path, field, "dopri5", x_init=x_all, rtol=reference_rtol, atol=reference_atol,
                     **dict(common, t_min=t_floor, final_denoise=ref_denoise))
    except RuntimeError as e:
        if "dtype" not in str(e) and "Double" not in str(e) and "Float" not in str(e):
            raise
        raise SdeflowTypeError(f"the field failed on {dtype} pilot samples ({e}); pass dtype= with the dtype "
                               f"its network computes in, e.g. dtype=torch.float32") from e
    ref_nfe = ref.nfe
    x_p, x_v = x_all[:n_pilot], x_all[n_pilot:]
    r_p, r_v = ref.x[:n_pilot], ref.x[n_pilot:]
    tau_max, tau_min = (float(v) for v in map_times(path, ipath, np.array([t_max, t_min])))
    span = tau_min - tau_max
    evals = [0]
    lam_floor = float(path.log_snr(torch.tensor(t_floor, dtype=torch.float64)))
    lam_max = float(path.log_snr(torch.tensor(t_max, dtype=torch.float64)))

    def end_of(theta: np.ndarray) -> float | None:
        """The end time: t_min, or (free end) the time at log-SNR theta[-1], None outside the window."""
        if not free_end:
            return t_min
        lam = float(theta[-1])
        if not lam_max < lam <= lam_floor:  # lam_floor = inf where sigma = 0 at the data end
            return None
        t = float(path.t_from_log_snr(torch.tensor(lam, dtype=torch.float64)))
        return t if t_floor <= t < t_max else None

    def grid_of(theta: np.ndarray) -> np.ndarray | None:
        t_end = end_of(theta)
        if t_end is None:
            return None
        inc_theta = theta[:-1] if free_end else theta
        w = np.exp(inc_theta - inc_theta.max())
        inc = w / w.sum()
        t_hi, t_lo = (float(v) for v in map_times(path, ipath, np.array([t_max, t_end])))
        tau = t_hi + (t_lo - t_hi) * np.concatenate([[0.0], np.cumsum(inc)])
        tau[-1] = t_lo
        g = map_times(ipath, path, tau)
        g[0], g[-1] = t_max, t_end
        return g

    def error(g: np.ndarray, x: Tensor, r: Tensor) -> float:
        kw = dict(common)
        kw.pop("t_max"), kw.pop("t_min")
        out = sample(path, field, s, grid=g, x_init=x, check_finite=False, preflight=False, **kw).x
        e = pathwise_rms(out, r)
        return e if math.isfinite(e) else 1e30

    def objective(theta: np.ndarray) -> float:
        evals[0] += 1
        g = grid_of(theta)
        if g is None or not np.all(np.diff(g) < 0):
            return 1e30
        return math.log(error(g, x_p, r_p))

    # starting point: the best named grid
    best = None
    for name in starts:
        try:
            tau = make_grid(name, ipath, steps, tau_max, tau_min).numpy()  # karras: rho = 7
        except (SdeflowValueError, ValueError):
            continue
        inc = np.diff(tau) / span
        if np.any(inc <= 0):
            continue
        theta = np.log(inc)
        if free_end:
            theta = np.append(theta, float(path.log_snr(torch.tensor(t_min, dtype=torch.float64))))
        val = objective(theta)
        if best is None or val < best[0]:
            best = (val, name, theta)
    if best is None:
        raise SdeflowValueError(f"none of the starting grids {starts} applies on this window")
    from scipy.optimize import minimize

    val0, start_name, theta0 = best
    theta, fun = theta0, val0
    nm = {"xatol": 1e-4, "fatol": 1e-5, "adaptive": True}
    if knots is not None and steps > int(knots) >= 2:
        u_k = np.linspace(0.0, 1.0, int(knots))
        u_s = (np.arange(steps) + 0.5) / steps
        basis = np.stack([np.interp(u_s, u_k, np.eye(int(knots))[i]) for i in range(int(knots))], 1)
        if free_end:  # the end's parameter passes through the knot basis unchanged
            basis = np.block([[basis, np.zeros((steps, 1))], [np.zeros((1, int(knots))), np.ones((1, 1))]])
        c0 = np.linalg.lstsq(basis, theta0, rcond=None)[0]
        res = minimize(lambda c: objective(basis @ c), c0, method="Nelder-Mead",
                       options=dict(nm, maxfev=max(maxfev * 2 // 3, 1)))
        if res.fun < fun:
            theta, fun = basis @ res.x, res.fun
    left = maxfev - evals[0]
    if left > 0:
        res = minimize(objective, theta, method="Nelder-Mead", options=dict(nm, maxfev=left))
        if res.fun < fun:
            theta, fun = res.x, res.fun
    g_opt, g_start = grid_of(theta), grid_of(theta0)
    per_eval = s.nfe_for_steps(steps) + (1 if final_denoise else 0)
    calls = ref_nfe + (evals[0] + 2) * per_eval
    sample_evals = ref_nfe * (n_pilot + n_validation) + evals[0] * per_eval * n_pilot + 2 * per_eval * n_validation
    return OptimizedGrid(
        grid=torch.as_tensor(g_opt), solver=s.name, solver_options=solver_options, nfe=per_eval, start=start_name,
        error_start=math.exp(val0), error_optimized=math.exp(fun),
        validation_start=error(g_start, x_v, r_v), validation_optimized=error(g_opt, x_v, r_v),
        pilot_network_calls=calls, pilot_sample_evaluations=sample_evals, pilot_samples=n_pilot + n_validation,
        objective_evaluations=evals[0], final_denoise=final_denoise)
