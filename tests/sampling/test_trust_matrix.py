"""The trust matrix: every registered solver x every path (its default window, and the full window [0, 1] a user
might pick) x every field kind (noise, data, score, velocity, energy), on exact Gaussian oracles.

Each cell has exactly two allowed outcomes:

* **refused up front** with a named sdeflow error (SingularityError, UnstableError, or another
  SdeflowValueError/SdeflowTypeError) before the field is evaluated once; or
* **right at the declared order**: over halving steps (float64) the error against the exact answer falls at
  the solver's declared order (pathwise for ODE solvers against the exact probability-flow map; for samplers
  that draw noise, the exact output mean and variance, from the sampler's affine map, against the exact
  marginal), with levels the solver refuses (unstable at that step size) left out and at least three left
  in; an adaptive solver's error falls with its tolerance and stays within a small multiple of it.

A third outcome (a wrong answer, NaN, a generic exception, an evaluation before a refusal) fails the cell.
Declared exceptions (documented in docs/reliability.md): on a path whose drift jumps at its knots
(``path.piecewise``: DiscreteVP) a solver stepping in that path's time has an error floor set by the jumps
while its steps are not much shorter than the knots' spacing (the cell asserts the answer is within it);
exponential integrators, which step in log-SNR, keep their order there. An exponential integrator whose
window starts where alpha = 0 (log-SNR -inf) takes that first step at order 1 (exact for a constant data
prediction), which caps its global order at 2. A sampler of infinite order (``consistency``, run with the exact
consistency function, the one field kind it takes) must be exact at every level: errors at rounding (<= 1e-11).
"""

from __future__ import annotations

import math

import pytest
import torch

import sdeflow as sf
from paths_catalogue import PATHS
from sdeflow.sample import resolve_gamma2
from sdeflow.testing import fit_order
from sdeflow.window import default_window
from sdeflow.testing.moments import affine_output_moments

D = torch.float64
TARGET = sf.Gaussian([1.0, -0.5], [0.4, 2.0])
KINDS = ["noise", "data", "score", "velocity", "energy"]
WINDOWS = {"default": {}, "full": {"t_max": 1.0, "t_min": 0.0}}
TOL = 0.3
REFUSALS = (sf.SdeflowValueError, sf.SdeflowTypeError)


class Counting(sf.Field):
    """The oracle field of ``kind`` (``energy``: an EnergyField of the exact log-density), counting calls;
    ``consistency=(path, t_min)``: for kind ``data``, the exact consistency function towards ``t_min`` (what a
    solver with ``requires_consistency`` samples; every other kind is then refused up front)."""

    def __init__(self, kind: str, consistency=None):
        self.calls = 0
        self.consistency = consistency is not None and kind == "data"
        if self.consistency:
            self.kind = kind
            self._inner = TARGET.consistency_field(*consistency)
        elif kind == "energy":
            self.kind = "score"
            self._inner = None
        else:
            self.kind = kind
            self._inner = TARGET.field(kind)

    def bind(self, path):
        if self._inner is not None:
            fn = self._inner.bind(path)
        else:
            fn = sf.EnergyField(lambda x, t: -TARGET.log_prob_t(x, t, path)).bind(path)

        def counted(x, t):
            self.calls += 1
            return fn(x, t)
        return counted

    def predict(self, x, t, path):
        return self.bind(path)(x, sf.fields.batch_time(t, x))


def _declared(solver, path, stochastic: bool, t_max: float, t_min: float) -> float | None:
    order = (solver.weak_order_additive if solver.sde else solver.order) if stochastic else solver.order
    if order is None:
        return None
    if solver.needs == "prediction" and _infinite_end(path, t_max, t_min) and order != math.inf:
        # a step out of alpha = 0 or into sigma = 0 (log-SNR infinite) has no second node to interpolate: order 1,
        # exact for a constant data prediction; its O(h^2) local error caps the global order at 2
        # (docs/reliability.md)
        return float(min(order, 2))
    return float(order)


def _infinite_end(path, t_max, t_min) -> bool:
    return not bool(torch.isfinite(path.log_snr(torch.tensor([t_max, t_min], dtype=D))).all())


#: drift solvers on a piecewise path (DiscreteVP): the drift jumps at every knot, so while steps are not much
#: shorter than the knot spacing the error sits at a floor set by the jumps (docs/reliability.md); the cell
#: asserts the answer is within it instead of an order
PIECEWISE_FLOOR = 1e-3


def _x_init(path, t_max: float, n: int, seed: int):
    return TARGET.marginal(path, t_max).sample(n, generator=torch.Generator().manual_seed(seed), dtype=D)


def _window(path, kind, solver, window):
    """The window the sampler uses for this field kind and noise level (its defaults, resolved as sample does)."""
    g2 = resolve_gamma2("reverse" if solver.sde else 0.0, path)
    return default_window(path, "score" if kind == "energy" else kind, gamma2_fn=g2, dtype=D, targets=solver.targets,
                          **window)


def _grid(path, t_max, t_min) -> str:
    """Halving steps reach the asymptotic regime soonest on a grid uniform in log-SNR (every solver family:
    RK in t, exponential integrators in log-SNR, posterior samplers); where an end's log-SNR is infinite,
    quadratic in t (dense at the data end; uniform steps in sigma stay pre-asymptotic there for hundreds of
    steps: a step from sigma = h to 0 is a 100% change whatever h)."""
    lam = path.log_snr(torch.tensor([t_max, t_min], dtype=D))
    return "log_snr" if bool(torch.isfinite(lam).all()) else "quadratic"


def _steps(solver, path, t_max, t_min) -> list[int]:
    """Four levels, the order fitted on the finest three: coarser for high orders; finer where an exponential
    integrator meets an end of infinite log-SNR (the steps next to it stay pre-asymptotic longest); on every
    window times the solver's declared ``pre_asymptotic_factor`` if it has one."""
    if path.piecewise and solver.needs == "drift":
        return [125, 250, 500]  # towards the error floor of the knots' jumps (or first order above it)
    if _infinite_end(path, t_max, t_min) and solver.needs == "prediction":
        # a solver may declare that it needs finer steps still there (dpmpp_3m: docs/reliability.md)
        f = solver.pre_asymptotic_factor
        return [64 * f, 128 * f, 256 * f, 512 * f]
    f = solver.pre_asymptotic_factor
    return [f * m for m in ([32, 64, 128, 256] if solver.order < 3 else [16, 32, 64, 128])]


def _error(path, kind, s, m, t_max, t_min, grid):
    """``(error, evaluations)`` of one level: pathwise against the exact flow (ODE), or the exact output
    moments against the exact marginal (samplers that draw noise)."""
    field = Counting(kind, (path, t_min) if s.requires_consistency else None)
    kw = dict(steps=m, t_max=t_max, t_min=t_min, grid=grid, gamma="reverse" if s.sde else 0.0)
    try:
        if not (s.sde or getattr(s, "stochastic", False)):
            x1 = _x_init(path, t_max, 8, 3)
            out = sf.sample(path, field, s, x_init=x1, **kw).x
            return out, float((out - TARGET.flow(x1, path, t_max, t_min)).norm(dim=1).max())
        m0, V0 = TARGET.moments(path, t_max)
        mt, Vt = TARGET.moments(path, t_min)

        def run(x, noise):
            return sf.sample(path, field, s, x_init=x, noise=noise, **kw).x
        mean, var = affine_output_moments(run, m0, V0, m, s.normals_per_step, verify=True)
        return torch.cat([mean, var]), float((mean - mt).abs().max() + (var - Vt).abs().max())
    except REFUSALS as e:
        assert field.calls == 0, f"{type(e).__name__} raised after {field.calls} evaluations: {e}"
        return None, e


FIXED = [n for n in sf.solvers.available(adaptive=False) if n != "pc"]


@pytest.mark.parametrize("path_name", list(PATHS))
@pytest.mark.parametrize("solver", FIXED)
def test_fixed_step_solver_on_path(solver, path_name):
    """Every window and field kind of one (solver, path): per window, the first kind that runs is measured at
    halving steps (order); every other kind must either be refused up front or give the same answer to
    rounding at the finest accepted level (the conversions between kinds are exact), so it has that order."""
    path = PATHS[path_name]()
    s = sf.solvers.get(solver)
    stochastic = s.sde or getattr(s, "stochastic", False)
    done = set()  # (kind, window ends): the full window often resolves to the default one
    for wname, window in WINDOWS.items():
        reference = None  # (finest accepted steps, grid, window ends, answer)
        for kind in KINDS:
            t_max, t_min = _window(path, kind, s, window)
            if (kind, t_max, t_min) in done:
                continue
            done.add((kind, t_max, t_min))
            grid = _grid(path, t_max, t_min)
            where = f"{solver} on {path_name}/{kind}/{wname} (t {t_max:.4g} -> {t_min:.4g}, {grid})"
            if reference is not None and reference[1:3] == (grid, (t_max, t_min)):
                out, err = _error(path, kind, s, reference[0], t_max, t_min, grid)
                if out is not None and path.piecewise:
                    # at a knot a velocity (or its conversion) is one-sided by convention: the kinds agree to
                    # within the knots' error floor, not to rounding
                    assert err <= PIECEWISE_FLOOR + 2 * reference[4], (where, err, reference[4])
                elif out is not None:
                    scale = 1.0 + float(reference[3].abs().max())
                    assert float((out - reference[3]).abs().max()) <= 1e-8 * scale, where
                continue
            levels = []
            for m in _steps(s, path, t_max, t_min):
                out, err = _error(path, kind, s, m, t_max, t_min, grid)
                levels.append((m, out, err))
            ok = [(m, out, e) for m, out, e in levels if out is not None]
            if not ok:
                continue  # refused at every level, up front
            refused = [m for m, out, _ in levels if out is None]
            summary = [(m, e if out is not None else type(e).__name__) for m, out, e in levels]
            # refusals are for steps too coarse (UnstableError): every finer level is accepted
            assert not refused or max(refused) < min(m for m, _, _ in ok), (where, summary)
            assert all(isinstance(e, sf.errors.UnstableError) for m, out, e in levels if out is None), (where, summary)
            assert all(math.isfinite(e) for _, _, e in ok), (where, summary)
            declared = _declared(s, path, stochastic, t_max, t_min)
            assert declared is not None, (where, "declares no order")
            if path.piecewise and s.needs == "drift":  # first order at least, until the knots' floor
                errs = [e for _, _, e in ok]
                fit = fit_order([1.0 / m for m, _, _ in ok], errs)
                assert errs[-1] < PIECEWISE_FLOOR or fit.slope >= min(declared, 1.0) - TOL, (where, summary)
            else:
                used = [(1.0 / m, e) for m, _, e in ok[-3:] if e > 1e-11]  # the finest three, above rounding
                if len(used) >= 2:
                    assert len(ok) >= 3, (where, summary)
                    fit = fit_order([h for h, _ in used], [e for _, e in used])
                    assert fit.slope >= declared - TOL, (where, f"{fit} (declared {declared})")
            reference = (ok[-1][0], grid, (t_max, t_min), ok[-1][1], ok[-1][2])


def test_matrix_covers_every_registered_solver():
    """A new solver joins the matrix by registering: nothing here lists solvers by hand."""
    covered = set(FIXED) | {"pc"} | set(sf.solvers.available(adaptive=True))
    assert covered == set(sf.solvers.available())


@pytest.mark.parametrize("path_name", list(PATHS))
def test_dopri5_on_path(path_name):
    """Adaptive Dopri5, every window and kind: refused up front, or its error falls with the tolerance and
    stays within a small multiple of it. On a piecewise path it stops at every knot (never steps across a jump
    of the drift), so one tolerance suffices there."""
    path = PATHS[path_name]()
    s = sf.solvers.get("dopri5")
    tols = (1e-6,) if path.piecewise else (1e-5, 1e-8)
    done = set()
    for window in WINDOWS.values():
        for kind in KINDS:
            t_max, t_min = _window(path, kind, s, window)
            if (kind, t_max, t_min) in done:
                continue
            done.add((kind, t_max, t_min))
            x1 = _x_init(path, t_max, 8, 4)
            exact = TARGET.flow(x1, path, t_max, t_min)
            errs = []
            for tol in tols:
                field = Counting(kind)
                try:
                    out = sf.sample(path, field, "dopri5", x_init=x1, t_max=t_max, t_min=t_min, rtol=tol, atol=tol).x
                except REFUSALS as e:
                    assert field.calls == 0 or isinstance(e, sf.errors.BudgetError), e
                    break
                errs.append(float((out - exact).abs().max()))
                assert math.isfinite(errs[-1])
            if len(errs) == len(tols):
                scale = 1.0 + float(exact.abs().max())
                # on a piecewise path a velocity field is one-sided at the knots by its own convention
                floor = PIECEWISE_FLOOR if (path.piecewise and kind == "velocity") else 0.0
                assert errs[-1] < 10 * tols[0] * scale + floor, (path_name, kind, errs)
                assert len(errs) == 1 or errs[-1] < errs[0] or errs[0] < 1e-9, (path_name, kind, errs)


@pytest.mark.parametrize("path_name", list(PATHS))
@pytest.mark.parametrize("kind", KINDS)
def test_adaptive_sde_cell(path_name, kind):
    """Adaptive reverse-SDE Heun at its default window: refused up front, or (a bounded number of steps) an
    output whose mean and variance match the exact marginal within the Monte Carlo error and the tolerance."""
    path = PATHS[path_name]()
    field = Counting(kind)
    n = 1000
    try:
        t_max, t_min = _window(path, kind, sf.solvers.get("adaptive_heun_sde"), {})
        x1 = _x_init(path, t_max, n, 5)
        out = sf.sample(path, field, "adaptive_heun_sde", x_init=x1, t_max=t_max, t_min=t_min, rtol=1e-2,
                        atol=1e-2, max_steps=5000, generator=torch.Generator().manual_seed(6)).x
    except REFUSALS as e:
        assert field.calls == 0 or isinstance(e, sf.errors.BudgetError), e
        return
    mt, Vt = TARGET.moments(path, t_min)
    se_mean = (Vt / n).sqrt()
    se_var = Vt * math.sqrt(2.0 / (n - 1))
    # Monte Carlo error (5 standard errors) plus the tolerance's bias (rtol 1e-2: a few percent of the scale)
    assert ((out.mean(0) - mt).abs() <= 5 * se_mean + 0.05 * Vt.sqrt()).all(), (out.mean(0), mt)
    assert ((out.var(0) - Vt).abs() <= 5 * se_var + 0.1 * Vt).all(), (out.var(0), Vt)


@pytest.mark.parametrize("path_name", list(PATHS))
@pytest.mark.parametrize("kind", KINDS)
def test_predictor_corrector_cell(path_name, kind):
    """PC declares no order (its corrector's bias is set by snr, not the step): refused up front, or its mean
    within Monte Carlo error and its variance within the documented Langevin bias (about 2 a r^2 relative,
    a = 1, r = 0.16) plus the predictor's first-order error at 64 steps."""
    path = PATHS[path_name]()
    field = Counting(kind)
    n = 4000
    try:
        t_max, t_min = _window(path, kind, sf.solvers.get("pc"), {})
        x1 = _x_init(path, t_max, n, 7)
        out = sf.sample(path, field, "pc", steps=64, x_init=x1, t_max=t_max, t_min=t_min,
                        generator=torch.Generator().manual_seed(8)).x
    except REFUSALS as e:
        assert field.calls == 0, e
        return
    mt, Vt = TARGET.moments(path, t_min)
    assert torch.isfinite(out).all()
    se_mean = (Vt / n).sqrt()
    assert ((out.mean(0) - mt).abs() <= 5 * se_mean + 0.05 * Vt.sqrt()).all(), (out.mean(0), mt)
    rel = ((out.var(0) - Vt) / Vt).abs()
    assert (rel <= 2 * 0.16 ** 2 + 0.15 + 5 * math.sqrt(2.0 / n)).all(), (out.var(0), Vt)
