r"""Properties every solver must have, as functions you can run on your own solver.

Each ``assert_*`` function runs ``solver`` (a registered name, a class, or an instance of your
:class:`~sdeflow.solvers.Solver` subclass) through :func:`sdeflow.sample` (or :func:`sdeflow.solve`) with an
exact Gaussian or mixture field, raises :class:`AssertionError` with what it measured if the property fails,
and returns what it measured otherwise. :func:`check_solver` runs all that apply and returns a report.

* :func:`assert_declared_orders` — the order the solver declares (pathwise ODE order; weak order and strong
  order for SDE solvers), see :mod:`sdeflow.testing.checks`;
* :func:`assert_time_reversible` — integrating the probability-flow ODE from ``t_max`` to ``t_min`` and back
  returns the start within an error that decays at least like :math:`h^{p}` (for even ``p`` the leading
  local errors of the two legs cancel and it decays like :math:`h^{p+1}`);
* :func:`assert_batch_independent` — a sample's result does not depend on the rest of the batch (its size
  or its other rows; SDE solvers with :class:`~sdeflow.noise.PerSampleNoise`);
* :func:`assert_rotation_equivariant` — for a mixture with isotropic components, rotating the target, the
  input and the noise by ``Q`` rotates the output by ``Q``;
* :func:`assert_preserves_dtype_device` — outputs and trajectories keep the input's dtype and device, and
  float32 agrees with float64 to float32 rounding;
* :func:`assert_deterministic` — the same seeded generator gives the same bits, another seed other bits
  (for solvers that draw noise), and the global RNG is never touched;
* :func:`assert_nfe_accounting` — the reported NFE equals the field's call count
  (:class:`~sdeflow.testing.CountingField`) and the solver's declared cost.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .. import solvers as _solvers
from ..analytic import GaussianMixture
from ..errors import SdeflowValueError
from ..noise import NoiseSource, PerSampleNoise
from ..paths import VP, GaussianPath
from .checks import (DEFAULT_TOL, _make_check, assert_ode_order, assert_order, assert_strong_order,
                     assert_weak_order, default_target, is_stochastic, oracle_field, solver_label)
from .counting import CountingField

__all__ = ["assert_declared_orders", "assert_time_reversible", "assert_batch_independent",
           "assert_rotation_equivariant", "assert_preserves_dtype_device", "assert_deterministic",
           "assert_nfe_accounting", "check_solver", "time_reversal", "RotatedNoise", "random_rotation",
           "PROPERTIES"]

D = torch.float64


def _setup(solver, path, target, kind, solver_options):
    s = _solvers.get(solver, **solver_options)
    return s, (VP() if path is None else path), (default_target() if target is None else target), kind


def _run(s, path, field, x, steps, *, noise=None, generator=None, t_max=1.0, t_min=1e-2, **kw):
    from ..sample import sample

    if is_stochastic(s) and noise is None and generator is None:
        noise = PerSampleNoise(0)
    # structural properties (determinism, batch independence, counts...) are checked at coarse steps on purpose:
    # the accuracy preflight (sdeflow.stability) is not what is under test here
    kw.setdefault("preflight", False)
    return sample(path, field, s, steps=steps, x_init=x, t_max=t_max, t_min=t_min, noise=noise,
                  generator=generator, gamma="reverse" if s.sde else 0.0, **kw)


def _adaptive_steps(s, steps):
    return None if s.adaptive else steps


def _prior(target, path, n, t_max, seed, dtype=D):
    return target.marginal(path, t_max).sample(n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _close(a, b, atol, what):
    err = float((a - b).abs().max())
    scale = 1.0 + float(b.abs().max())
    if not err <= atol * scale:
        raise AssertionError(f"{what}: max difference {err:.3e} > {atol:g} x (1 + max|x| = {scale:.3g})")
    return err


# ---- declared orders ------------------------------------------------------------------------------
def assert_declared_orders(solver, *, tol: float = DEFAULT_TOL, ode: dict | None = None,
                           weak: dict | None = None, strong: dict | bool | None = None, **solver_options) -> dict:
    """Check every order the solver declares: pathwise ODE order for deterministic solvers; weak order
    (exact output moments) for solvers that draw noise; strong order (additive noise) for SDE solvers.
    Orders the solver does not declare (None) are reported as ``"not declared"``; ``strong=False`` skips the
    strong-order check (the most expensive: a fine reference solve). ``ode``, ``weak``, ``strong``: keyword
    arguments for :func:`~sdeflow.testing.checks.ode_order`,
    :func:`~sdeflow.testing.checks.weak_order`, :func:`~sdeflow.testing.checks.strong_order`. Returns the
    :class:`~sdeflow.testing.checks.OrderCheck` of each."""
    s = _solvers.get(solver, **solver_options)
    if s.adaptive:
        raise SdeflowValueError(f"solver {solver_label(s)!r} is adaptive: it has no fixed step whose halving "
                                f"an order refers to")
    out = {}
    if not is_stochastic(s):
        out["ode"] = assert_ode_order(s, tol=tol, **(ode or {}))
        return out
    if (s.weak_order_additive if s.sde else s.order) is None:
        out["weak"] = "not declared"
    else:
        out["weak"] = assert_weak_order(s, tol=tol, **(weak or {}))
    if s.sde and strong is not False:
        if s.strong_order_additive is None:
            out["strong"] = "not declared"
        else:
            out["strong"] = assert_strong_order(s, tol=tol, **(strong if isinstance(strong, dict) else {}))
    return out


# ---- time reversal --------------------------------------------------------------------------------
def time_reversal(solver, *, path: GaussianPath | None = None, target=None, kind: str = "velocity",
                  steps: Sequence[int] = (8, 16, 32, 64), t_max: float = 1.0, t_min: float = 0.1, n: int = 16,
                  seed: int = 0, **solver_options):
    """Round-trip error :math:`\\max_i\\|x_i - \\Phi_{t_{min}\\to t_{max}}\\Phi_{t_{max}\\to t_{min}} x_i\\|` of
    the probability-flow ODE per number of steps (each leg on a uniform grid), as an
    :class:`~sdeflow.testing.checks.OrderCheck`. Needs a drift solver (:func:`sdeflow.solve` integrates
    forward in time; prediction solvers only step from noise to data)."""
    from ..solve import solve

    s, path, target, kind = _setup(solver, path, target, kind, solver_options)
    if s.needs != "drift" or is_stochastic(s):
        raise SdeflowValueError(f"time reversal needs a deterministic drift solver; {solver_label(s)!r} has "
                                f"needs={s.needs!r}, stochastic={is_stochastic(s)}")
    field = target.field(kind)
    drift = lambda x, t: field.velocity(x, t, path)  # noqa: E731
    x = _prior(target, path, n, t_max, seed)
    errs = []
    for m in steps:
        g = np.linspace(t_max, t_min, m + 1)
        y = solve(drift, None, x, g, s).x
        back = solve(drift, None, y, g[::-1].copy(), s).x
        errs.append(float((back - x).reshape(n, -1).norm(dim=1).max()))
    return _make_check("time-reversal error", s, steps, errs, s.order)


def assert_time_reversible(solver, *, tol: float = DEFAULT_TOL, **kw):
    """:func:`time_reversal`, then assert the round-trip error decays at least at the declared order."""
    return assert_order(time_reversal(solver, **kw), None, tol, at_least=True)


# ---- batch independence ---------------------------------------------------------------------------
def assert_batch_independent(solver, *, path: GaussianPath | None = None, target=None, kind: str = "velocity",
                             steps: int = 8, rows: int = 4, others: int = 12, t_max: float = 1.0,
                             t_min: float = 1e-2, seed: int = 0, atol: float = 1e-12, **solver_options) -> float:
    """The first ``rows`` samples give the same result alone, in a batch with ``others`` further samples,
    and in a batch whose other samples differ (noise from :class:`~sdeflow.noise.PerSampleNoise`, so
    sample ``i``'s noise depends only on ``i``). Returns the largest difference. A solver that couples
    the samples of a batch on purpose (e.g. batch-averaged step sizes) declares ``batch_independent =
    False``; :func:`check_solver` then skips this property."""
    s, path, target, kind = _setup(solver, path, target, kind, solver_options)
    field = oracle_field(s, target, kind, path, t_min)
    x = _prior(target, path, rows + others, t_max, seed)
    y = _prior(target, path, rows + others, t_max, seed + 1)
    y[:rows] = x[:rows]
    st = _adaptive_steps(s, steps)
    kw = dict(t_max=t_max, t_min=t_min)
    alone = _run(s, path, field, x[:rows], st, noise=PerSampleNoise(seed) if is_stochastic(s) else None, **kw).x
    err = 0.0
    for name, batch in (("a larger batch", x), ("a batch with other samples", y)):
        out = _run(s, path, field, batch, st, noise=PerSampleNoise(seed) if is_stochastic(s) else None, **kw).x
        err = max(err, _close(out[:rows], alone, atol,
                              f"{solver_label(s)!r}: samples alone vs in {name} ({batch.shape[0]} rows)"))
    return err


# ---- rotation equivariance ------------------------------------------------------------------------
def random_rotation(d: int, seed: int = 0, dtype=D) -> torch.Tensor:
    """A random orthogonal ``(d, d)`` matrix (QR of a seeded Gaussian matrix, signs fixed)."""
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=D)
    q, r = torch.linalg.qr(a)
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


class RotatedNoise(NoiseSource):
    """Draws of ``inner`` rotated by ``Q`` over the last dimension (``z -> z Q^T``)."""

    def __init__(self, inner: NoiseSource, Q: torch.Tensor):
        self.inner, self.Q = inner, Q

    def _rot(self, z):
        return z @ self.Q.to(dtype=z.dtype, device=z.device).T

    def draw(self, k, t0, t1, like, count=1):
        z = self.inner.draw(k, t0, t1, like, count)
        return self._rot(z) if count == 1 else tuple(self._rot(v) for v in z)

    def for_rows(self, start):
        return RotatedNoise(self.inner.for_rows(start), self.Q)


def isotropic_mixture(dim: int = 3) -> GaussianMixture:
    """Two components with isotropic covariances (std 0.5 and 0.8), off-centre means."""
    means = torch.zeros(2, dim, dtype=D)
    means[0, 0], means[1, :] = 1.5, torch.linspace(-1.0, 0.5, dim, dtype=D)
    return GaussianMixture([0.3, 0.7], means, [0.5, 0.8])


def assert_rotation_equivariant(solver, *, path: GaussianPath | None = None, target: GaussianMixture | None = None,
                                kind: str = "velocity", steps: int = 8, n: int = 8, t_max: float = 1.0,
                                t_min: float = 1e-2, seed: int = 0, atol: float = 1e-10,
                                **solver_options) -> float:
    """With ``target`` a mixture of isotropic components (default: :func:`isotropic_mixture`), solving for
    the rotated mixture (means ``Q mu_k``) from ``Q x`` with noise ``Q z`` gives ``Q`` times the solution
    for the original from ``x`` with noise ``z``. Returns the largest difference."""
    s, path, _, kind = _setup(solver, path, None, kind, solver_options)
    target = isotropic_mixture() if target is None else target
    if not torch.allclose(target.var, target.var[:, :1].expand_as(target.var)):
        raise SdeflowValueError("rotation equivariance needs a mixture with isotropic components")
    if target.dim < 2:
        raise SdeflowValueError("rotation equivariance needs dimension >= 2")
    Q = random_rotation(target.dim, seed)
    rotated = GaussianMixture(target.weights, target.means @ Q.T, target.var[:, 0].sqrt())
    x = _prior(target, path, n, t_max, seed)
    st = _adaptive_steps(s, steps)
    kw = dict(t_max=t_max, t_min=t_min)
    base_noise = PerSampleNoise(seed) if is_stochastic(s) else None
    out = _run(s, path, oracle_field(s, target, kind, path, t_min), x, st, noise=base_noise, **kw).x
    out_r = _run(s, path, oracle_field(s, rotated, kind, path, t_min), x @ Q.T, st,
                 noise=RotatedNoise(base_noise, Q) if base_noise is not None else None, **kw).x
    return _close(out_r, out @ Q.T, atol, f"{solver_label(s)!r}: solve(Q x) vs Q solve(x)")


# ---- dtype and device -----------------------------------------------------------------------------
def _devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def assert_preserves_dtype_device(solver, *, path: GaussianPath | None = None, target=None,
                                  kind: str = "velocity", steps: int = 8, n: int = 8, devices=None,
                                  t_max: float = 1.0, t_min: float = 1e-2, rtol32: float = 1e-4,
                                  seed: int = 0, **solver_options) -> float:
    """In float32 and float64 on every device of ``devices`` (default: CPU, and CUDA when available), the
    output and the trajectory keep the input's dtype and device, and float32 agrees with float64 within
    ``rtol32`` x (1 + max|x|) (same normals in both: :class:`~sdeflow.noise.PerSampleNoise`). Returns the
    largest float32 - float64 difference."""
    s, path, target, kind = _setup(solver, path, target, kind, solver_options)
    field = oracle_field(s, target, kind, path, t_min)
    x64 = _prior(target, path, n, t_max, seed)
    st = _adaptive_steps(s, steps)
    worst = 0.0
    for dev in (devices or _devices()):
        res = {}
        for dtype in (torch.float32, torch.float64):
            x = x64.to(device=dev, dtype=dtype)
            sol = _run(s, path, field, x, st, noise=PerSampleNoise(seed) if is_stochastic(s) else None,
                       t_max=t_max, t_min=t_min, return_trajectory=True)
            for what, v in (("output", sol.x), ("trajectory", sol.trajectory)):
                if v.dtype != dtype or v.device != x.device:
                    raise AssertionError(f"{solver_label(s)!r}: {what} is {v.dtype} on {v.device}, input was "
                                         f"{dtype} on {x.device}")
            if sol.x.shape != x.shape:
                raise AssertionError(f"{solver_label(s)!r}: output shape {tuple(sol.x.shape)} != input "
                                     f"{tuple(x.shape)}")
            res[dtype] = sol.x
        worst = max(worst, _close(res[torch.float32].double(), res[torch.float64], rtol32,
                                  f"{solver_label(s)!r} on {dev}: float32 vs float64"))
    return worst


# ---- determinism ----------------------------------------------------------------------------------
def assert_deterministic(solver, *, path: GaussianPath | None = None, target=None, kind: str = "velocity",
                         steps: int = 8, n: int = 8, t_max: float = 1.0, t_min: float = 1e-2, seed: int = 0,
                         **solver_options) -> None:
    """Two solves from ``torch.Generator().manual_seed(seed)`` (which also draws the prior) are bitwise
    equal; a solve with another seed differs (its prior and, if the solver draws noise, its noise); and the
    global RNG state is unchanged."""
    from ..sample import sample

    s, path, target, kind = _setup(solver, path, target, kind, solver_options)
    field = oracle_field(s, target, kind, path, t_min)
    st = _adaptive_steps(s, steps)
    dim = target.dim

    def go(sd, x_init=None):
        g = torch.Generator().manual_seed(sd)
        kw = dict(x_init=x_init) if x_init is not None else dict(n=n, shape=(dim,), dtype=D)
        return sample(path, field, s, steps=st, t_max=t_max, t_min=t_min, generator=g,
                      gamma="reverse" if s.sde else 0.0, preflight=False, **kw).x

    before = torch.get_rng_state()
    a, b = go(seed), go(seed)
    if not torch.equal(a, b):
        raise AssertionError(f"{solver_label(s)!r}: two solves with the same seeded generator differ by "
                             f"{float((a - b).abs().max()):.3e}")
    if torch.equal(a, go(seed + 1)):
        raise AssertionError(f"{solver_label(s)!r}: another seed gives the same output (the generator is "
                             f"not used)")
    if is_stochastic(s):
        x = _prior(target, path, n, t_max, seed)
        if torch.equal(go(seed, x), go(seed + 1, x)):
            raise AssertionError(f"{solver_label(s)!r} draws noise, but two seeds give the same output from "
                                 f"the same input (the generator does not reach the noise)")
    if not torch.equal(before, torch.get_rng_state()):
        raise AssertionError(f"{solver_label(s)!r}: the global torch RNG was used (pass a generator through)")


# ---- NFE accounting -------------------------------------------------------------------------------
def assert_nfe_accounting(solver, *, path: GaussianPath | None = None, target=None, kind: str = "velocity",
                          steps: Sequence[int] = (1, 5), n: int = 4, t_max: float = 1.0, t_min: float = 1e-2,
                          seed: int = 0, **solver_options) -> dict:
    """For each number of steps, with and without ``final_denoise`` and under an ``nfe`` budget: the field is
    called exactly ``Solution.nfe`` times (:class:`~sdeflow.testing.CountingField`), which equals
    ``solver.nfe_for_steps(steps)`` (+1 for the final denoising step) for fixed-step solvers and never
    exceeds the budget. Returns ``{(steps, final_denoise): nfe}``."""
    s, path, target, kind = _setup(solver, path, target, kind, solver_options)
    x = _prior(target, path, n, t_max, seed)
    label = solver_label(s)
    seen = {}
    for m in steps:
        for fd in (False, True):
            f = CountingField(oracle_field(s, target, kind, path, t_min))
            sol = _run(s, path, f, x, _adaptive_steps(s, m), t_max=t_max, t_min=t_min, final_denoise=fd)
            if f.calls != sol.nfe:
                raise AssertionError(f"{label!r}, steps={m}, final_denoise={fd}: reports nfe={sol.nfe} but "
                                     f"the field was called {f.calls} times")
            if not s.adaptive and sol.nfe != s.nfe_for_steps(m) + fd:
                raise AssertionError(f"{label!r}, steps={m}, final_denoise={fd}: nfe={sol.nfe}, declared "
                                     f"nfe_for_steps({m}) + {int(fd)} = {s.nfe_for_steps(m) + fd}")
            seen[(m, fd)] = sol.nfe
    budget = s.nfe_for_steps(max(steps)) + 1
    f = CountingField(oracle_field(s, target, kind, path, t_min))
    sol = _run(s, path, f, x, None, t_max=t_max, t_min=t_min, nfe=budget)
    if not (f.calls == sol.nfe <= budget):
        raise AssertionError(f"{label!r} with nfe={budget}: reports {sol.nfe}, field called {f.calls} times")
    seen[("budget", budget)] = sol.nfe
    return seen


PROPERTIES = {
    "declared_orders": assert_declared_orders,
    "time_reversal": assert_time_reversible,
    "batch_independence": assert_batch_independent,
    "rotation_equivariance": assert_rotation_equivariant,
    "dtype_device": assert_preserves_dtype_device,
    "determinism": assert_deterministic,
    "nfe_accounting": assert_nfe_accounting,
}


def applicable(solver, prop: str) -> str | None:
    """None if property ``prop`` applies to ``solver``, else the reason it does not."""
    s = _solvers.get(solver)
    if prop == "declared_orders" and s.adaptive:
        return "adaptive: no fixed step"

    if prop == "batch_independence" and not s.batch_independent:
        return "declares batch_independent = False (couples the samples of a batch by design)"
    if prop == "time_reversal" and is_stochastic(s):
        return "draws noise: the ODE round trip applies to deterministic solvers"
    if prop == "time_reversal" and s.needs != "drift":
        return "prediction solver: it only steps from noise to data (sample), not back (solve)"
    return None


def check_solver(solver, *, skip: Sequence[str] = (), **solver_options) -> dict:
    """Run every applicable property on ``solver``; returns ``{property: "ok" | "skipped: why"}`` and raises
    the first :class:`AssertionError` (prefixed with the property's name)."""
    s = _solvers.get(solver, **solver_options)
    report = {}
    for name, fn in PROPERTIES.items():
        why = "skipped by request" if name in skip else applicable(s, name)
        if why:
            report[name] = "skipped: " + why
            continue
        try:
            fn(s)
        except AssertionError as e:
            raise AssertionError(f"[{name}] {e}") from None
        report[name] = "ok"
    return report
