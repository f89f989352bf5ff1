r"""Preflight: refuse, before the first network call, a configuration its solver cannot integrate.

A fixed-step solver fails badly in two ways that no per-step check of the user's network can see in time:
an explicit step beyond its stability limit (the reverse SDE of a path whose :math:`\alpha \to 0`, e.g.
:class:`~sdeflow.paths.CosineVP` or :class:`~sdeflow.paths.LinearFlow` near ``t = 1``, contracts at a rate
:math:`-f = -\alpha'/\alpha \to \infty`), and a step far too long for the change it spans (a Karras grid
across sixty decades of :math:`\sigma`). Both show on the simplest problem with the same path, field kind,
grid, noise level and solver: Gaussian data :math:`N(0, c)`, whose reverse dynamics are linear,
:math:`dx = \lambda_t x\,dt + \gamma_t d\bar W` with :math:`\lambda_t = f_t + (g_t^2 + \gamma_t^2)/(2V_t)`,
:math:`V_t = \alpha_t^2 c + \sigma_t^2`, so everything about the solve is known exactly, e.g. the conditional
mean

.. math:: E[x_{t} \mid x_{s}] = \sqrt{V_{t}/V_{s}}\;\exp\Big(-\int_{t}^{s}\frac{\gamma_u^2}{2V_u}du\Big)\,x_{s}.

:func:`probe` runs the solver on four such problems at once (one coordinate each, :data:`PROBE_VARIANCES`:
data standard deviations 0.1, 0.5 (EDM's data scale), 2 and 10: a narrow direction makes the steps near the
data end stiffest, a wide one lets an unstable step near the noise end survive the contraction longest) and
compares the answer with the exact one:

* an ODE solver (and the probability-flow family) from :math:`x = \sqrt{V_{t_{max}}}`: its answer against the
  exact flow's;
* a fixed-step SDE solver: its output is affine in ``x_init`` and in the normals it draws, so one row without
  noise (the conditional mean) and one row per normal (a unit impulse, the rest zero) give the output's exact
  standard deviation, compared with the exact marginal's :math:`\sqrt{V_{t_{min}}}` (``pc`` is probed through
  its Euler-Maruyama predictor, its corrector's step sizes are not affine);
* a solver with its own Brownian path (``torchsde:*``): the sample standard deviation of 512 seeded rows drawn
  from the exact prior (within about 6 % of the output's).

An answer more than twice the exact one or of the other sign (a sign flip, growth where the solution
contracts, an exploding variance) refuses the configuration with
:class:`~sdeflow.errors.UnstableError` naming the first step where the conditional mean leaves the exact one by
more than itself. The probe costs one solve of a few rows; its verdict is cached per configuration (solver,
field kind, grid, noise level, integration path, dtype). Solvers that choose their own steps (adaptive) and
samplers whose noise is part of the update rather than of the dynamics (DDIM with ``eta > 0``, DDPM's
ancestral sampler: posterior steps, stable by construction) are not probed.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import SdeflowValueError, SingularityError, UnstableError
from .paths import transfer_scale

__all__ = ["PROBE_VARIANCE", "PROBE_VARIANCES", "check_rounding", "conditional_mean_factor", "probe"]

#: data variances of the probe problem, one per coordinate: standard deviations 0.1 (a narrow direction, as real
#: data has many: the dynamics are stiffest near the data end; twice the final noise level sigma/alpha = 0.045 of
#: VP's and DDPM's windows, the finest scale those windows resolve), 0.5 (EDM's :math:`\sigma_{data}`), 2 and 10
#: (wide targets, where an unstable step near the noise end survives the reverse SDE's contraction longest)
PROBE_VARIANCES = (0.1 ** 2, 0.5 ** 2, 2.0 ** 2, 10.0 ** 2)
PROBE_VARIANCE = PROBE_VARIANCES[1]
_LIMIT = 1.0  # relative error of the probe's conditional mean that names the first bad step
_FACTOR = 2.0  # an answer more than this factor above the exact one (or of the other sign) is refused
_MC_ROWS = 512  # samples of the Monte Carlo probe (solvers with their own Brownian path: torchsde)
_GL_X, _GL_W = np.polynomial.legendre.leggauss(8)


def _variance(path, t: torch.Tensor, c: float = PROBE_VARIANCE) -> torch.Tensor:
    a, s, _, _ = path.coefficients(t)
    return a * a * c + s * s


def conditional_mean_factor(path, grid: np.ndarray, gamma2_fn=None, c: float = PROBE_VARIANCE) -> np.ndarray:
    r"""Per grid time :math:`t_k` (``grid`` decreasing, in ``path``'s time), the exact factor
    :math:`E[x_{t_k} \mid x_{t_0}]/x_{t_0}` of the reverse family with noise level :math:`\gamma^2`
    (``gamma2_fn``; None: the probability-flow ODE) for data :math:`N(0, c)`."""
    g = torch.as_tensor(np.asarray(grid, dtype=np.float64))
    V = _variance(path, g, c)
    factor = torch.sqrt(V / V[0])
    if gamma2_fn is not None:  # damping exp(-int gamma^2 / (2V)) per step, Gauss-Legendre (8 points)
        a, b = g[1:], g[:-1]
        u = 0.5 * (b - a)[:, None] * torch.as_tensor(_GL_X)[None, :] + 0.5 * (a + b)[:, None]
        with torch.no_grad():
            integrand = gamma2_fn(u.reshape(-1)).reshape(u.shape) / (2.0 * _variance(path, u.reshape(-1), c).reshape(u.shape))
        step = 0.5 * (b - a) * (integrand * torch.as_tensor(_GL_W)[None, :]).sum(1)
        factor = factor * torch.exp(-torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(step, 0)]))
    return factor.numpy()


def _key(path, kind, solver, grid_tau, ipath, gamma, dtype):
    g = gamma if isinstance(gamma, (str, int, float, type(None))) else id(gamma)
    return (kind, repr(solver), id(ipath), repr(ipath), g, str(dtype), np.asarray(grid_tau, dtype=np.float64).tobytes())


def _rel_errors(path, ipath, grid_train, grid_tau, gamma2_fn, traj, scale, c) -> tuple[np.ndarray, np.ndarray]:
    """Per grid point, the probe state's relative error against the exact conditional mean (and that mean)."""
    exact = scale * conditional_mean_factor(ipath, grid_tau, gamma2_fn, c)
    if ipath is not path:  # exact in the integration path's coordinates (where gamma is defined), reported in the path's
        tr, ta = torch.as_tensor(np.asarray(grid_train)), torch.as_tensor(np.asarray(grid_tau))
        ratio = transfer_scale(ipath, path, ta, tr).numpy()
        exact = exact * ratio / ratio[0]
    with np.errstate(all="ignore"):
        return np.abs(traj - exact) / np.abs(exact), exact


def probe(path, kind: str, solver, grid_train: np.ndarray, grid_tau: np.ndarray, *, integration_path=None,
          gamma=None, gamma2_fn=None, dtype: torch.dtype = torch.float64) -> None:
    """Raise :class:`~sdeflow.errors.UnstableError` if ``solver`` on this configuration gets the exact Gaussian
    probe wrong by more than the answer itself (module docstring); ``grid_train`` in ``path``'s time,
    ``grid_tau`` in the integration path's. Cached on ``path`` per configuration."""
    if solver.adaptive or (solver.stochastic and not solver.sde):
        return
    cache = path.__dict__.setdefault("_preflight", {})
    key = _key(path, kind, solver, grid_tau, integration_path, gamma, dtype)
    if key in cache:
        return
    from .analytic import Gaussian
    from .noise import TableNoise
    from .sample import sample

    cs = PROBE_VARIANCES
    target = Gaussian(torch.zeros(len(cs), dtype=torch.float64), torch.tensor(cs, dtype=torch.float64))
    t0, t1 = float(grid_train[0]), float(grid_train[-1])
    tt = torch.tensor([t0, t1], dtype=torch.float64)
    V0 = [float(_variance(path, tt, c)[0]) for c in cs]
    V1 = [float(_variance(path, tt, c)[1]) for c in cs]
    ipath = path if integration_path is None else integration_path
    steps = len(grid_train) - 1
    run_solver = solver
    start = torch.tensor([v ** 0.5 for v in V0], dtype=dtype)
    monte_carlo = solver.sde and not solver.planned  # torchsde: its own Brownian path, no prescribed normals
    if monte_carlo:  # row 0 noise-free is unavailable: 512 rows from the exact prior, seeded
        gen = torch.Generator().manual_seed(0)
        x0 = torch.randn(_MC_ROWS, len(cs), generator=gen, dtype=torch.float64).to(dtype) * start
        noise = None
    elif solver.sde:
        # the output is affine in x_init and the normals: row 0 is x = sqrt(V_max) without noise (the conditional
        # mean), each further row one unit normal (the noise's contribution): the exact output variance
        if solver.name == "pc":  # its corrector's norms are not affine: probe its predictor
            from . import solvers as _solvers

            run_solver = _solvers.get("euler_maruyama")
        per = run_solver.normals_per_step
        rows = 1 + steps * per
        x0 = torch.zeros(rows, len(cs), dtype=dtype)
        x0[0] = start
        table = []
        for k in range(steps):
            zs = []
            for i in range(per):
                z = torch.zeros(rows, len(cs), dtype=dtype)
                z[1 + k * per + i] = 1.0
                zs.append(z)
            table.append(zs[0] if per == 1 else tuple(zs))
        noise = TableNoise(table)
    else:
        x0, noise = start[None], None
    try:
        sol = sample(path, target.field(kind), run_solver, grid=np.asarray(grid_train), x_init=x0,
                     integration_path=integration_path, gamma=gamma, noise=noise, return_trajectory=True,
                     check_finite=False, preflight=False,
                     generator=torch.Generator().manual_seed(1) if monte_carlo else None)
    except (SingularityError, SdeflowValueError):
        return  # refused by the same checks the real solve makes: let it raise them there, with its context
    out = sol.x.to(torch.float64)
    for i, c in enumerate(cs):
        traj = sol.trajectory[:, 0, i].to(torch.float64).numpy()
        rel, exact = _rel_errors(path, ipath, grid_train, grid_tau, gamma2_fn, traj, V0[i] ** 0.5, c)
        if monte_carlo:  # the sample standard deviation (512 rows: within about 6% of the output's)
            got = float(out[:, i].std())
            want = V1[i] ** 0.5
            what = f"its output's standard deviation is {got:.3g} where the exact marginal's is {want:.3g}"
            rel = np.zeros_like(rel)  # row 0 is a sample, not the conditional mean: name the worst step below
        elif solver.sde:  # the output's standard deviation against the exact marginal's
            got = float((out[0, i] ** 2 + (out[1:, i] ** 2).sum()).sqrt())
            want = V1[i] ** 0.5
            what = f"its output's standard deviation is {got:.3g} where the exact marginal's is {want:.3g}"
        else:  # the pathwise answer from x = sqrt(V_max)
            got, want = float(out[0, i]), float(exact[-1])
            what = f"its answer from x = {V0[i] ** 0.5:.3g} is {got:.3g} where the exact flow gives {want:.3g}"
        with np.errstate(all="ignore"):
            err = abs(got - want) / abs(want)
            ratio = got / want
        if 0.0 <= ratio <= _FACTOR:  # an answer shrunk towards 0 is inaccurate, not unstable: accepted
            continue
        bad = np.flatnonzero(~(rel <= _LIMIT))
        k = int(bad[0]) if bad.size else int(np.argmax(np.nan_to_num(rel, nan=np.inf)))
        k = max(k, 1)
        ta, tb = float(grid_train[k - 1]), float(grid_train[k])
        raise UnstableError(
            f"solver {solver.name!r} cannot integrate this window on this grid: on the exact Gaussian probe (data "
            f"N(0, {c ** 0.5:g}^2), same path {path!r}, field kind {kind!r}, grid and noise level) {what} "
            f"(relative error {err:.3g}: more than {_FACTOR:g}x it, or of the other sign). The state first leaves the exact conditional mean by more "
            f"than itself at step {k - 1} (t={ta:.6g} -> {tb:.6g}): the step is unstable or far too coarse there. "
            f"Take more steps, a grid denser there (e.g. grid='log_snr'), "
            f"{'an exponential integrator (sde_dpmpp_2m) whose linear part is exact, ' if solver.sde else ''}"
            f"or a window away from the singular end (omit t_max/t_min for the path's default); "
            f"preflight=False skips this check", step=k - 1, t=ta)
    if len(cache) > 256:
        cache.clear()
    cache[key] = True


def check_rounding(term, grid_train: np.ndarray, grid_tau: np.ndarray, solver, dtype: torch.dtype) -> None:
    r"""Refuse a configuration whose conversions lose more than half of ``dtype``'s digits in the update
    (:class:`~sdeflow.errors.SingularityError`), before any network call:

    * a drift solver's step adds :math:`h(A_j x + B_j n_j)`; rounding :math:`A_j x` costs
      :math:`\epsilon|hA_j|` of the state, so :math:`\epsilon|hA_j| > \sqrt\epsilon` refuses the step (a noise
      or score field where :math:`\alpha` is zero to rounding has :math:`A = \alpha'/\alpha`);
    * a solver stepping with data predictions :math:`\hat x_0 = (x - \sigma\hat\varepsilon)/\alpha` of a noise
      or score field loses :math:`\epsilon\sigma_s/\alpha_s` of :math:`\hat x_0`, weighted by
      :math:`\alpha_t` in a state of scale :math:`\sqrt{\alpha_t^2+\sigma_t^2}`: the step from :math:`s` to
      :math:`t` is refused when :math:`\epsilon\,\sigma_s\alpha_t/(\alpha_s\sqrt{\alpha_t^2+\sigma_t^2})` exceeds
      :math:`\sqrt\epsilon`.
    """
    from .errors import SingularityError

    eps = torch.finfo(dtype).eps
    limit = eps ** 0.5
    if term.step_of is None or not len(term.step_of):
        return
    h = np.abs(np.diff(np.asarray(grid_tau, dtype=np.float64)))
    if solver.needs == "drift" and term.affine is not None:
        A = np.abs(np.asarray(term.affine[0][: len(term.step_of)], dtype=np.float64))
        with np.errstate(invalid="ignore", over="ignore"):
            harm = eps * h[term.step_of] * A
        bad = np.flatnonzero(~(harm <= limit))
        if bad.size:
            j = int(bad[0])
            t = float(term.train_times[j])
            raise SingularityError(
                f"the drift of a {term.kind} field at t={t:.6g} (step {int(term.step_of[j])}) on {term.path!r} "
                f"carries {float(term.affine[0][j]):.3g} x, which a step of {h[term.step_of[j]]:.3g} rounds to "
                f"{harm[j]:.3g} of the state in {dtype} (more than half its digits): the field's kind cannot be "
                f"converted there (alpha or sigma is zero to rounding). {term.fix_hint(t)[0].upper()}"
                f"{term.fix_hint(t)[1:]}", t=t, kind=term.kind)
    if solver.needs == "prediction" and term.kind in ("noise", "score"):
        a, s, _, _ = (c.numpy() for c in term.path.coefficients(torch.as_tensor(np.asarray(grid_train))))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            harm = eps * s[:-1] * a[1:] / (a[:-1] * np.sqrt(a[1:] ** 2 + s[1:] ** 2))
        bad = np.flatnonzero(~(harm <= limit))
        if bad.size:
            k = int(bad[0])
            t = float(grid_train[k])
            raise SingularityError(
                f"step {k} (t={t:.6g} -> {float(grid_train[k + 1]):.6g}) on {term.path!r} steps with a data "
                f"prediction x0 = (x - sigma*eps)/alpha of a {term.kind} field at sigma/alpha = {s[k] / a[k]:.3g}: "
                f"its rounding reaches {harm[k]:.3g} of the next state in {dtype} (more than half its digits). "
                f"{term.fix_hint(t)[0].upper()}{term.fix_hint(t)[1:]}, or take more steps there (a grid "
                f"denser at that end)", t=t, kind=term.kind)
