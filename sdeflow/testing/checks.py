r"""Convergence checkers for any solver and any field: measure, then assert.

Each ``*_order`` function runs a solver at halving step sizes in float64 and returns an :class:`OrderCheck`
(errors per level, the slope fitted by :func:`~sdeflow.testing.fit_order`, its standard error and the
order the solver declares); each ``assert_*`` form raises :class:`AssertionError` showing all of them.

* :func:`ode_order` — pathwise error of the probability-flow ODE against the exact Gaussian solution
  :math:`x_t = m_t + \sqrt{V_t/V_s}(x_s - m_s)` (:meth:`sdeflow.Gaussian.flow`), or against a fine
  reference solve when the field is not the exact one.
* :func:`strong_order` — root-mean-square pathwise error against a fine solve driven by the *same*
  Brownian path (:class:`sdeflow.BrownianPath`: coarse increments and their time integrals are exact sums of
  the fine ones), :math:`E\|X_h - X_{ref}\|^2)^{1/2} = O(h^{p})` (Kloeden & Platen 1992, Section 9.6).
* :func:`weak_order` — error of the output mean and variance against the exact Gaussian marginal
  :math:`(m_{t}, V_{t})`, either exactly (the sampler is affine in its input and noise:
  :func:`~sdeflow.testing.affine_output_moments`) or by Monte Carlo, with levels under the Monte Carlo floor
  (a few standard errors) left out of the fit.
* :func:`langevin_bias` — stationary variance of a Langevin sampler on :math:`N(0, s^2)` against ULA's
  :math:`s^2/(1 - h/(2s^2))` (or :math:`s^2` for an unbiased sampler such as MALA).

A solver is anything :func:`sdeflow.solvers.get` accepts: a registered name, a class, or an instance of a
user-written :class:`~sdeflow.solvers.Solver` subclass; a field is any :class:`~sdeflow.fields.Field`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field as dc_field
from typing import Callable, Sequence

import numpy as np
import torch

from .. import solvers as _solvers
from ..analytic import Gaussian
from ..errors import SdeflowValueError
from ..fields import Field
from ..noise import BrownianPath
from ..paths import VP, GaussianPath
from .convergence import OrderFit, fit_order
from .moments import affine_output_moments

__all__ = ["OrderCheck", "LangevinCheck", "ode_order", "strong_order", "weak_order", "langevin_bias",
           "assert_ode_order", "assert_strong_order", "assert_weak_order", "assert_langevin_bias",
           "assert_order", "solver_label", "default_target", "is_stochastic", "oracle_field", "AsConsistency"]

D = torch.float64
DEFAULT_TOL = 0.3  # slopes over four halvings land within ~0.1 of the order once asymptotic
EXACT_TOL = 1e-10  # what "exact" means for a solver of infinite order: float64 rounding over the steps


def default_target(dim: int = 2) -> Gaussian:
    """The default Gaussian target: anisotropic, off-centre (every coordinate moves differently)."""
    mean = torch.linspace(1.0, -0.5, dim, dtype=D)
    var = torch.linspace(0.4, 2.0, dim, dtype=D)
    return Gaussian(mean, var)


def solver_label(solver) -> str:
    return solver.name or type(solver).__name__


def is_stochastic(solver) -> bool:
    """Whether a solver draws noise (an SDE solver, or e.g. DDPM's ancestral sampler)."""
    return bool(solver.sde or solver.stochastic)


class AsConsistency(Field):
    """``inner``'s data prediction *declared* a consistency function, for the structural checks of a solver that
    requires one (dtype, determinism, batch independence, equivariance, counts), where any field will do: a
    denoiser is not a consistency function, so nothing here is about accuracy."""

    kind = "data"
    consistency = True

    def __init__(self, inner: Field):
        self.inner = inner

    def predict(self, x, t, path):
        return self.inner.as_kind("data", x, t, path)

    def __repr__(self):
        return f"AsConsistency({self.inner!r})"


def oracle_field(solver, target, kind: str, path: GaussianPath, t_end: float):
    """The exact field a check runs ``solver`` with: ``target.field(kind)``, or for a solver that requires a
    consistency function (``requires_consistency``) the target's exact one towards ``t_end``
    (:meth:`~sdeflow.Gaussian.consistency_field`) for a Gaussian, else :class:`AsConsistency` of its data
    prediction (structural checks only)."""
    if not solver.requires_consistency:
        return target.field(kind)
    if isinstance(target, Gaussian):
        return target.consistency_field(path, t_end)
    return AsConsistency(target.field("data"))


@dataclass
class OrderCheck:
    """A measured convergence order.

    ``steps`` and ``h`` per level, ``errors`` per level, ``fit`` (slope, stderr) over the levels in ``used``
    (all of them unless a Monte Carlo ``floor`` hid some), and the ``declared`` order of the solver.
    """

    what: str
    solver: str
    steps: np.ndarray
    h: np.ndarray
    errors: np.ndarray
    declared: float | None
    fit: OrderFit | None
    used: np.ndarray
    floor: np.ndarray | None = None
    note: str = ""

    @property
    def slope(self) -> float:
        return float("nan") if self.fit is None else self.fit.slope

    @property
    def stderr(self) -> float:
        return float("nan") if self.fit is None else self.fit.stderr

    def table(self) -> str:
        rows = ["  steps        h        error" + ("     MC floor" if self.floor is not None else "")]
        for i, (n, h, e) in enumerate(zip(self.steps, self.h, self.errors)):
            r = f"  {int(n):5d}  {h:9.3g}  {e:11.4e}"
            if self.floor is not None:
                r += f"  {self.floor[i]:11.4e}" + ("" if self.used[i] else "  (under the floor: not fitted)")
            rows.append(r)
        return "\n".join(rows)

    def __str__(self):
        fitted = ("no slope (fewer than 2 levels above the floor)" if self.fit is None
                  else f"slope {self.slope:.3f} ± {self.stderr:.3f}")
        head = f"{self.what} of {self.solver!r}: {fitted}, declared {self.declared}"
        return head + (f" ({self.note})" if self.note else "") + "\n" + self.table()


def _make_check(what, solver, steps, errors, declared, *, floor=None, note="") -> OrderCheck:
    steps = np.asarray(steps, dtype=np.int64)
    h = 1.0 / steps
    errors = np.asarray(errors, dtype=np.float64)
    used = np.ones(len(steps), dtype=bool) if floor is None else errors > floor
    fit = fit_order(h[used], errors[used]) if used.sum() >= 2 and np.all(errors[used] > 0) else None
    return OrderCheck(what, solver_label(solver), steps, h, errors, declared, fit, used, floor, note)


def assert_order(check: OrderCheck, expected: float | None = None, tol: float = DEFAULT_TOL, *,
                 at_least: bool = False) -> OrderCheck:
    """Raise :class:`AssertionError` unless ``|slope - expected| <= tol`` (``slope >= expected - tol`` with
    ``at_least``); ``expected`` defaults to the declared order. An infinite order (a sampler with no
    discretisation error: ``consistency`` with the exact consistency function) means every level is exact:
    each error at most :data:`EXACT_TOL` (float64 rounding). Returns ``check``."""
    exp = check.declared if expected is None else expected
    if exp is None:
        raise AssertionError(f"{check.what} of {check.solver!r}: the solver declares no order for this "
                             f"check; pass expected=\n{check.table()}")
    if exp == math.inf:
        if not float(np.max(check.errors)) <= EXACT_TOL:
            raise AssertionError(f"{check}\nexpected exact answers (declared order inf): every error "
                                 f"<= {EXACT_TOL:g}")
        return check
    if check.fit is None:
        raise AssertionError(f"{check}\nno order could be fitted: raise n (the Monte Carlo sample size) or "
                             f"use fewer steps, so that at least two levels' errors exceed the floor")
    ok = check.slope >= exp - tol if at_least else abs(check.slope - exp) <= tol
    if not ok:
        want = f">= {exp - tol:.2f}" if at_least else f"{exp} ± {tol}"
        raise AssertionError(f"{check}\nexpected order {want}")
    return check


# ---- the probability-flow ODE ---------------------------------------------------------------------
def ode_order(solver, *, path: GaussianPath | None = None, target: Gaussian | None = None, field=None,
              kind: str = "velocity", steps: Sequence[int] = (32, 64, 128, 256), grid: str = "uniform",
              t_max: float = 1.0, t_min: float = 1e-2, n: int = 32, seed: int = 0,
              reference: str | None = None, reference_steps: int | None = None,
              **solver_options) -> OrderCheck:
    """Pathwise order of ``solver`` on the probability-flow ODE of ``target`` under ``path``.

    The error of a level is :math:`\\max_i \\|x_i - x_i^{exact}\\|` over ``n`` samples drawn from the
    marginal at ``t_max``, integrated to ``t_min`` on ``grid`` in float64. With the default exact field
    ``target.field(kind)`` the reference is :meth:`~sdeflow.Gaussian.flow`; with your own ``field`` (or
    ``reference="rk4"``, ...) it is a fine solve with that solver and ``reference_steps`` (default 4 x the
    finest level).
    """
    from ..sample import sample

    s = _solvers.get(solver, **solver_options)
    path = VP() if path is None else path
    target = default_target() if target is None else target
    if field is not None and reference is None:
        reference = "rk4"
    field = target.field(kind) if field is None else field
    x1 = target.marginal(path, t_max).sample(n, generator=torch.Generator().manual_seed(seed), dtype=D)
    # the order is measured at the given steps: the preflight's verdict on coarse ones (sdeflow.stability) is not
    # what is under test (an unstable level shows in the fitted slope)
    kw = dict(grid=grid, x_init=x1, t_max=t_max, t_min=t_min, preflight=False)
    if reference is None:
        exact = target.flow(x1, path, t_max, t_min)
    else:
        exact = sample(path, field, reference, steps=reference_steps or 4 * max(steps), **kw).x
    errs = []
    for m in steps:
        x = sample(path, field, s, steps=m, **kw).x
        errs.append(float((x - exact).reshape(n, -1).norm(dim=1).max()))
    return _make_check("pathwise ODE order", s, steps, errs, s.order)


def assert_ode_order(solver, *, expected: float | None = None, tol: float = DEFAULT_TOL, **kw) -> OrderCheck:
    """:func:`ode_order`, then :func:`assert_order` (``expected`` defaults to ``solver.order``)."""
    return assert_order(ode_order(solver, **kw), expected, tol)


# ---- strong order on a shared Brownian path -------------------------------------------------------
def nonlinear_drift(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The default strong-order problem's drift, ``sin(2x) - x + cos(3t)`` (smooth, nonlinear)."""
    return torch.sin(2 * x) - x + torch.cos(3 * t).reshape((-1,) + (1,) * (x.dim() - 1))


def strong_order(solver, *, drift: Callable | None = None, diffusion=None, x0: torch.Tensor | None = None,
                 noise_type: str | None = None, path: GaussianPath | None = None, target=None, field=None,
                 kind: str = "velocity", gamma="reverse", t_max: float = 1.0, t_min: float = 1e-2,
                 steps: Sequence[int] = (16, 32, 64, 128), fine: int = 4096, reference=None, n: int = 256,
                 seed: int = 0, **solver_options) -> OrderCheck:
    """Strong order of ``solver``: RMS pathwise error against a fine solve on the same Brownian path.

    Two problems: a drift SDE through :func:`sdeflow.solve` (``drift``, ``diffusion``, ``x0`` on
    ``[0, 1]``; the default for solvers that need only a drift is the nonlinear additive SDE
    ``dx = (sin 2x - x + cos 3t) dt + 0.8 dW``), or the reverse-time dynamics of ``target`` under ``path``
    with noise level ``gamma`` through :func:`sdeflow.sample` (the default for prediction solvers). The
    reference is ``reference`` (default SRA1, strong order 1.5, for additive noise; the solver itself
    otherwise) on the fine grid of ``fine`` steps, of which every level is a sub-grid.
    """
    from ..sample import sample
    from ..solve import solve

    s = _solvers.get(solver, **solver_options)
    if not s.sde:
        raise SdeflowValueError(f"solver {solver_label(s)!r} is not an SDE solver (solver.sde is False); "
                                f"strong order needs one")
    if any(fine % m for m in steps):
        raise SdeflowValueError(f"every level of steps={tuple(steps)} must divide fine={fine}")
    use_solve = drift is not None or (path is None and s.needs == "drift")
    gen = torch.Generator().manual_seed(seed)
    if use_solve:
        if drift is None:
            drift, diffusion, noise_type = nonlinear_drift, 0.8, "additive"
        if x0 is None:
            x0 = torch.randn(n, 2, dtype=D, generator=gen)
        noise_type = noise_type or ("additive" if isinstance(diffusion, (int, float)) else "diagonal")
        additive = noise_type == "additive"
        grid = np.linspace(0.0, 1.0, fine + 1)

        def run(sol, g, bm):
            return solve(drift, diffusion, x0, g, sol, noise=bm, noise_type=noise_type).x
    else:
        path = VP() if path is None else path
        target = default_target() if target is None else target
        field = target.field(kind) if field is None else field
        additive = True
        x1 = target.marginal(path, t_max).sample(n, generator=gen, dtype=D)
        grid = np.linspace(t_max, t_min, fine + 1)

        def run(sol, g, bm):
            return sample(path, field, sol, grid=g, x_init=x1, gamma=gamma, noise=bm, preflight=False).x
    if reference is None:
        reference = "sra1" if additive else s
    bm = BrownianPath(grid, generator=torch.Generator().manual_seed(seed + 1))
    ref = run(reference, grid, bm)
    errs = []
    for m in steps:
        x = run(s, grid[:: fine // m], bm)
        errs.append(float((x - ref).reshape(x.shape[0], -1).pow(2).sum(1).mean().sqrt()))
    declared = s.strong_order_additive if additive else s.strong_order
    return _make_check("strong order" + (" (additive noise)" if additive else ""), s, steps, errs, declared)


def assert_strong_order(solver, *, expected: float | None = None, tol: float = DEFAULT_TOL,
                        **kw) -> OrderCheck:
    """:func:`strong_order`, then :func:`assert_order` (``expected``: the declared strong order)."""
    return assert_order(strong_order(solver, **kw), expected, tol)


# ---- weak order on exact Gaussian marginals -------------------------------------------------------
def weak_order(solver, *, path: GaussianPath | None = None, target: Gaussian | None = None, field=None,
               kind: str = "velocity", gamma="reverse", t_max: float = 1.0, t_min: float = 1e-2,
               steps: Sequence[int] = (32, 64, 128, 256), method: str = "exact", n: int = 20000,
               n_se: float = 3.0, seed: int = 0, **solver_options) -> OrderCheck:
    r"""Weak order of ``solver`` on the reverse-time dynamics of a Gaussian ``target``.

    The error of a level is :math:`\max|E x - m_{t}| + \max|\mathrm{Var}\,x - V_{t}|` at ``t_min``, from
    the exact prior at ``t_max``. ``method="exact"`` computes the output moments exactly (the sampler must
    be affine in its input and noise, which holds for fixed-step solvers with a Gaussian's exact field; it
    is verified on a random input); ``"monte_carlo"`` uses ``n`` samples, and levels whose error is under
    ``n_se`` standard errors of the estimate (the floor) are left out of the fit. Solvers that draw
    their own noise without being SDE solvers (DDPM's ancestral sampler) run with ``gamma = 0``.
    """
    from ..sample import sample

    s = _solvers.get(solver, **solver_options)
    if not is_stochastic(s):
        raise SdeflowValueError(f"solver {solver_label(s)!r} draws no noise; use ode_order for its order")
    if method not in ("exact", "monte_carlo"):
        raise SdeflowValueError(f"method must be 'exact' or 'monte_carlo', got {method!r}")
    path = VP() if path is None else path
    target = default_target() if target is None else target
    field = oracle_field(s, target, kind, path, t_min) if field is None else field
    gamma = gamma if s.sde else 0.0
    m0, V0 = target.moments(path, t_max)
    mt, Vt = target.moments(path, t_min)
    kw = dict(gamma=gamma, t_max=t_max, t_min=t_min, preflight=False)  # as in ode_order
    errs, floor = [], None
    if method == "exact":
        for m in steps:
            run = lambda x, noise, m=m: sample(path, field, s, steps=m, x_init=x, noise=noise, **kw).x
            mean, var = affine_output_moments(run, m0, V0, m, s.normals_per_step, verify=True)
            errs.append(float((mean - mt).abs().max() + (var - Vt).abs().max()))
    else:
        floor = []
        se = float((Vt / n).sqrt().max() + (Vt * math.sqrt(2.0 / (n - 1))).max())
        for i, m in enumerate(steps):
            gen = torch.Generator().manual_seed(seed + i)
            x1 = target.marginal(path, t_max).sample(n, generator=gen, dtype=D)
            x = sample(path, field, s, steps=m, x_init=x1, generator=gen, **kw).x
            errs.append(float((x.mean(0) - mt).abs().max() + (x.var(0) - Vt).abs().max()))
            floor.append(n_se * se)
        floor = np.asarray(floor)
    declared = s.weak_order_additive if s.sde else s.order
    return _make_check("weak order" + (" (Monte Carlo)" if method != "exact" else ""), s, steps, errs,
                       declared, floor=floor)


def assert_weak_order(solver, *, expected: float | None = None, tol: float = DEFAULT_TOL, **kw) -> OrderCheck:
    """:func:`weak_order`, then :func:`assert_order` (``expected``: the declared weak order)."""
    return assert_order(weak_order(solver, **kw), expected, tol)


# ---- Langevin stationary bias ---------------------------------------------------------------------
@dataclass
class LangevinCheck:
    """Stationary variance of a Langevin sampler on :math:`N(0, s^2)` per step size ``h``: ``measured``
    with standard error ``se``, against ``expected`` (ULA: :math:`s^2/(1 - h/(2s^2))`)."""

    variance: float
    h: np.ndarray
    measured: np.ndarray
    se: np.ndarray
    expected: np.ndarray
    ula: np.ndarray
    n_se: float
    what: str = "ULA"
    steps: list = dc_field(default_factory=list)

    @property
    def z(self) -> np.ndarray:
        return (self.measured - self.expected) / self.se

    @property
    def resolved(self) -> np.ndarray:
        """Whether the sample size separates ULA's bias from zero bias at each step size."""
        return np.abs(self.ula - self.variance) > self.n_se * self.se

    def __str__(self):
        rows = [f"Langevin stationary variance on N(0, {self.variance:g}) against {self.what}:",
                "      h    measured  ± se          expected   ULA formula   z"]
        for i in range(len(self.h)):
            rows.append(f"  {self.h[i]:6.3g}  {self.measured[i]:.5f} ± {self.se[i]:.5f}  {self.expected[i]:.5f}"
                        f"    {self.ula[i]:.5f}   {self.z[i]:+.2f}")
        return "\n".join(rows)


def langevin_bias(sampler: Callable | None = None, *, variance: float = 1.0,
                  step_sizes: Sequence[float] = (0.4, 0.2, 0.1), n: int = 20000, dim: int = 1,
                  steps: int | None = None, unbiased: bool = False, n_se: float = 4.0,
                  seed: int = 0) -> LangevinCheck:
    """Run ``sampler(score, x, h, steps, generator)`` (default :func:`sdeflow.langevin.ula`; it may return a
    tensor or a result with ``.x``) on :math:`N(0, s^2)` from ``n`` independent chains started at the
    target, for each step size ``h``, and compare the final variance with ULA's
    :math:`s^2/(1 - h/(2 s^2))` (``unbiased=True``: with :math:`s^2`, e.g. for MALA).

    ``steps`` defaults to enough steps for the initial variance to be forgotten to 1e-12
    (:math:`(1 - h/s^2)^{2\\,steps}`). The chains are i.i.d., so the standard error of the variance is
    exact: :math:`v\\sqrt{2/(N - 1)}`, ``N = n * dim``.
    """
    from ..langevin import ula

    sampler = ula if sampler is None else sampler
    s2 = float(variance)
    measured, se, used_steps = [], [], []
    for i, h in enumerate(step_sizes):
        if not 0 < h < s2:
            raise SdeflowValueError(f"step sizes must lie in (0, variance={s2}) for a stable chain, got {h}")
        k = steps or int(math.ceil(math.log(1e-12) / (2 * math.log(abs(1 - h / s2)))))
        gen = torch.Generator().manual_seed(seed + i)
        x = math.sqrt(s2) * torch.randn(n, dim, generator=gen, dtype=D)
        out = sampler(lambda y: -y / s2, x, h, k, generator=gen)
        out = getattr(out, "x", out)
        v = float(out.var())
        measured.append(v)
        se.append(v * math.sqrt(2.0 / (out.numel() - 1)))
        used_steps.append(k)
    h = np.asarray(step_sizes, dtype=np.float64)
    ula_v = s2 / (1 - h / (2 * s2))
    expected = np.full_like(h, s2) if unbiased else ula_v
    return LangevinCheck(s2, h, np.asarray(measured), np.asarray(se), expected, ula_v, n_se,
                         "no bias" if unbiased else "ULA", used_steps)


def assert_langevin_bias(sampler: Callable | None = None, **kw) -> LangevinCheck:
    """:func:`langevin_bias`, then assert every step size's variance is within ``n_se`` standard errors of
    the expected one, and that the sample size resolves ULA's bias (else the check could not fail)."""
    res = langevin_bias(sampler, **kw)
    if not res.resolved.all():
        raise AssertionError(f"{res}\nthe sample size cannot separate ULA's bias from none at every h: raise n "
                             f"or use larger step sizes")
    bad = np.abs(res.z) > res.n_se
    if bad.any():
        raise AssertionError(f"{res}\nvariance off by more than {res.n_se} standard errors at "
                             f"h = {res.h[bad].tolist()}")
    return res
