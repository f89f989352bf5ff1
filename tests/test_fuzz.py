"""Fuzzing the public API with hypothesis: random valid and invalid arguments.

The contract: a call either returns a finite result, or raises one of sdeflow's documented errors
(SdeflowValueError, SdeflowTypeError, NonFiniteError). Never another exception, never a hang (sizes,
steps and adaptive budgets are bounded), never a silent NaN (every input here is finite).
"""

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

import sdeflow as sf
from sdeflow import grids as G
from sdeflow import io
from sdeflow import langevin as L
from sdeflow import losses as Lo
from sdeflow import metrics as M

ERRORS = (sf.SdeflowValueError, sf.SdeflowTypeError, sf.NonFiniteError)
TARGET = sf.Gaussian([1.0, -0.5], [0.5, 2.0])
KINDS = ("score", "noise", "data", "velocity")

numbers = st.one_of(st.floats(-5, 5), st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3),
                    st.sampled_from([0.0, 1e-12, 1.0, 1 - 1e-12, 1e6]))
times = st.one_of(st.floats(0, 1), st.sampled_from([0.0, 1.0, 1e-5, -0.1, 1.5, float("nan")]), st.none())
PATHS = [sf.VP(), sf.SubVP(), sf.CosineVP(), sf.VE(0.01, 50.0), sf.VE(0.01, 1000.0), sf.EDM(), sf.LinearFlow(),
         sf.DiscreteVP(T=100), sf.AffinePath(lambda t: 1 - t, lambda t: t.sqrt())]
paths = st.sampled_from(PATHS)
solver_names = st.sampled_from(sf.solvers.available() + ["hune", "torchdiffeq:rk4", "torchsde:euler"])


def outcome(fn):
    """Run ``fn``; a result must be finite, an error must be documented. Returns the result or None."""
    try:
        out = fn()
    except ERRORS:
        return None
    for v in (out if isinstance(out, tuple) else (out,)):
        v = getattr(v, "x", v)
        if isinstance(v, torch.Tensor):
            assert torch.isfinite(v).all(), "silent NaN/Inf"
        elif isinstance(v, float):
            assert math.isfinite(v), "silent NaN/Inf"
    return out


# ---- paths -----------------------------------------------------------------------------------------
@given(cls=st.sampled_from([sf.VP, sf.SubVP, sf.VE, sf.EDM, sf.CosineVP]), a=numbers, b=numbers,
       t=st.floats(1e-3, 1.0))
def test_path_parameters(cls, a, b, t):
    args = (a,) if cls in (sf.EDM, sf.CosineVP) else (a, b)
    try:
        path = cls(*args)
    except ERRORS:
        return
    alpha, sigma, da, ds = path.coefficients(t)
    assert not math.isnan(float(alpha)) and not math.isnan(float(sigma))
    assert float(alpha) >= 0 and float(sigma) >= 0


@given(T=st.one_of(st.integers(-2, 50), st.floats(-1, 10), st.booleans()),
       betas=st.one_of(st.none(), st.lists(st.floats(-0.5, 1.5), max_size=5)))
def test_discrete_vp(T, betas):
    p = outcome(lambda: sf.DiscreteVP(betas, T=T) if betas is not None else sf.DiscreteVP(T=T))
    if p is not None:
        a, s, _, _ = p.coefficients(p.timesteps)
        assert torch.isfinite(a).all() and (a > 0).all() and (s > 0).all() and (s <= 1).all()


# ---- grids -----------------------------------------------------------------------------------------
@given(kind=st.sampled_from(list(G.GRIDS) + ["cosine", 3]), path=paths, steps=st.integers(-1, 12),
       t_max=st.floats(-0.2, 1.2), t_min=st.floats(-0.2, 1.2))
def test_named_grids(kind, path, steps, t_max, t_min):
    g = outcome(lambda: G.make_grid(kind, path, steps, t_max, t_min))
    if g is not None:
        assert g.dtype == torch.float64 and g.dim() == 1 and 2 <= g.numel() <= steps + 1
        assert (g[1:] < g[:-1]).all() and float(g.min()) >= 0 and float(g.max()) <= 1


# ---- sample ----------------------------------------------------------------------------------------
@given(path=paths, kind=st.sampled_from(KINDS), solver=solver_names,
       steps=st.one_of(st.none(), st.integers(-1, 6)), nfe=st.one_of(st.none(), st.integers(0, 40)),
       grid=st.one_of(st.sampled_from(list(G.GRIDS) + ["bogus"]),
                      st.lists(st.floats(-0.1, 1.1), min_size=1, max_size=5)),
       t_min=times, t_max=times, gamma=st.sampled_from([0.0, "reverse", 0.5, -1.0, "x"]),
       final_denoise=st.booleans(), n=st.one_of(st.integers(1, 5), st.sampled_from([-1, 0, 2.5])), dtype=st.sampled_from([torch.float32, torch.float64]),
       chunk=st.one_of(st.none(), st.integers(0, 3)), seed=st.integers(0, 2 ** 63 - 1))
def test_sample(path, kind, solver, steps, nfe, grid, t_min, t_max, gamma, final_denoise, n, dtype, chunk, seed):
    if solver in sf.solvers.available(adaptive=True) and steps is None and nfe is None:
        nfe = 300  # bound the adaptive solve: exceeding the budget is a documented SdeflowValueError
    out = outcome(lambda: sf.sample(path, TARGET.field(kind), solver, steps=steps, nfe=nfe, grid=grid, t_min=t_min,
                                    t_max=t_max, gamma=gamma, final_denoise=final_denoise, n=n, shape=(2,),
                                    dtype=dtype, chunk_size=chunk, noise=sf.PerSampleNoise(seed)))
    if out is not None:
        assert out.x.shape == (n, 2) and out.x.dtype == dtype
        if nfe is not None:
            assert out.nfe <= nfe


@given(path=paths, kind=st.sampled_from(KINDS), solver=st.sampled_from(sf.solvers.available(adaptive=False)),
       steps=st.integers(1, 6), grid=st.sampled_from(["uniform", "log_snr", "karras", "quadratic"]),
       t_min=st.one_of(st.none(), st.floats(1e-4, 0.5)), gamma=st.sampled_from([0.0, "reverse", 0.5]),
       final_denoise=st.booleans(), n=st.integers(1, 5), dtype=st.sampled_from([torch.float32, torch.float64]),
       chunk=st.one_of(st.none(), st.integers(1, 3)), seed=st.integers(0, 2 ** 63 - 1))
def test_sample_valid(path, kind, solver, steps, grid, t_min, gamma, final_denoise, n, dtype, chunk, seed):
    """Arguments each valid on its own; combinations a path or solver cannot serve (an SDE gamma with an
    ODE solver, a noise field at alpha = 0, a log-SNR grid to sigma = 0) must fail with a documented error,
    everything else gives a finite sample."""
    if isinstance(path, sf.DiscreteVP) and t_min is not None:
        t_min = max(t_min, 0.01)
    out = outcome(lambda: sf.sample(path, TARGET.field(kind), solver, steps=steps, grid=grid, t_min=t_min,
                                    gamma=gamma, final_denoise=final_denoise, n=n, shape=(2,), dtype=dtype,
                                    chunk_size=chunk, noise=sf.PerSampleNoise(seed)))
    if out is not None:
        assert out.x.shape == (n, 2) and out.x.dtype == dtype and len(out.ts) == steps + 1 + final_denoise


@given(path=paths, kind=st.sampled_from(KINDS), solver=st.sampled_from(sf.solvers.available(adaptive=False)),
       steps=st.integers(1, 40), grid=st.sampled_from(["uniform", "log_snr", "karras", "quadratic"]),
       t_max=st.one_of(st.none(), st.sampled_from([1.0, 0.999, 0.9, 0.5])),
       t_min=st.one_of(st.none(), st.sampled_from([0.0, 1e-6, 1e-3, 0.05, 0.3])), sde=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_sample_right_or_refused(path, kind, solver, steps, grid, t_max, t_min, sde, dtype):
    """No silent wrong answer: any valid-looking combination either raises a documented error or gives a
    probability-flow sample within 10x the target's scale of the exact one (a coarse step may be inaccurate,
    never unbounded; the preflight probe refuses the configurations that are)."""
    s = sf.solvers.get(solver)
    if s.sde != sde or getattr(s, "stochastic", False) or isinstance(path, sf.DiscreteVP):
        return  # deterministic samplers on continuous paths: the exact flow is the answer
    try:
        sol = sf.sample(path, TARGET.field(kind), s, steps=steps, grid=grid, t_max=t_max, t_min=t_min, n=16,
                        shape=(2,), dtype=dtype, noise=sf.PerSampleNoise(0), gamma=0.0)
    except ERRORS:
        return
    t0, t1 = float(sol.ts[0]), float(sol.ts[-1])
    x0 = float(path.sigma(t0)) * sf.PerSampleNoise(0).draw(-1, t0, t0, torch.empty(16, 2, dtype=dtype))
    exact = TARGET.flow(x0.double(), path, t0, t1)
    mt, Vt = TARGET.moments(path, t1)
    scale = float(mt.abs().max() + Vt.sqrt().max())
    err = float((sol.x.double() - exact).abs().max())
    assert err <= 10 * scale, (err, scale, sol.stats)


@given(solver=st.sampled_from(sf.solvers.available()), name=st.sampled_from(
    ["rtol", "atol", "first_step", "h_init", "h_max", "max_steps", "eta", "order", "variance", "snr", "alpha",
     "corrector_steps", "norm", "predict", "startup", "error_norm", "bogus"]),
       value=st.one_of(numbers, st.sampled_from([None, "x", "sample", "data", True, 10 ** 12, -(10 ** 12)])))
def test_solver_options(solver, name, value):
    """Any option value: a finite sample in bounded time (adaptive solves capped by nfe), or a documented
    error naming the option."""
    kw = {"nfe": 400} if solver in sf.solvers.available(adaptive=True) else {"steps": 4}
    gamma = "reverse" if sf.solvers.get(solver).sde else 0.0
    try:
        out = sf.sample(sf.VP(), TARGET.field("noise"), solver, n=3, shape=(2,), dtype=torch.float64, gamma=gamma,
                        generator=torch.Generator().manual_seed(0), **{name: value}, **kw)
    except ERRORS:
        return
    assert torch.isfinite(out.x).all()


@given(a=st.floats(-3, 3), b=st.floats(-3, 3), p=st.floats(0.2, 3), q=st.floats(0.2, 3))
def test_affine_path_parameters(a, b, p, q):
    """Random affine paths alpha = (1 - t)^p (1 + a t), sigma = t^q (1 + b t): refused at construction, or
    coefficients finite and >= 0 inside (0, 1), log-SNR decreasing, and its inverse consistent."""
    try:
        path = sf.AffinePath(lambda t: (1 - t) ** p * (1 + a * t), lambda t: t ** q * (1 + b * t))
    except ERRORS:
        return
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    al, sg, da, ds = path.coefficients(t)
    assert torch.isfinite(al).all() and torch.isfinite(sg).all() and (al > 0).all() and (sg > 0).all()
    lam = path.log_snr(t)
    assert (lam[1:] < lam[:-1]).all()
    back = path.t_from_log_snr(lam)
    assert float((back - t).abs().max()) < 1e-6
    for bad in (-0.1, 1.1, float("nan")):
        try:
            path.sigma(bad)
        except ERRORS:
            continue
        raise AssertionError(f"t={bad} accepted")


# ---- solve -----------------------------------------------------------------------------------------
@given(rate=st.floats(-3, 3), diffusion=st.sampled_from([None, 0.5, -1.0, "g", "str"]), solver=solver_names,
       grid=st.one_of(st.lists(st.floats(-2, 2), min_size=2, max_size=6, unique=True).map(sorted),
                      st.lists(st.floats(-2, 2), min_size=1, max_size=6)), noise_type=st.sampled_from(
           ["diagonal", "scalar", "additive", "bogus"]), sde_type=st.sampled_from(["ito", "stratonovich", "x"]),
       shape=st.sampled_from([(3,), (2, 2), ()]), dtype=st.sampled_from([torch.float32, torch.float64, torch.int64]))
def test_solve(rate, diffusion, solver, grid, noise_type, sde_type, shape, dtype):
    x0 = torch.ones(shape, dtype=dtype)
    diff = (lambda x, t: 0.3 * x) if diffusion == "g" else diffusion
    kw = {"max_steps": 2000} if solver in sf.solvers.available(adaptive=True) else {}
    outcome(lambda: sf.solve(lambda x, t: rate * x, diff, x0, grid, solver, noise_type=noise_type,
                             sde_type=sde_type, noise=1, **kw))


@given(rate=st.floats(-3, 3), diffusion=st.sampled_from([None, 0.5, "g"]),
       solver=st.sampled_from(sf.solvers.available(needs="drift")),
       grid=st.lists(st.floats(-2, 2), min_size=2, max_size=6, unique=True).map(sorted),
       reverse=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_solve_valid(rate, diffusion, solver, grid, reverse, dtype):
    """A linear SDE on a monotone grid: a finite solution, or a documented refusal (ODE solver with noise,
    an additive-noise solver with multiplicative noise, an adaptive solve over its step budget)."""
    x0 = torch.ones(3, 2, dtype=dtype)
    diff = (lambda x, t: 0.3 * x) if diffusion == "g" else diffusion
    kw = {"max_steps": 2000} if solver in sf.solvers.available(adaptive=True) else {}
    out = outcome(lambda: sf.solve(lambda x, t: rate * x, diff, x0, grid[::-1] if reverse else grid, solver,
                                   noise=1, **kw))
    if out is not None:
        assert out.x.shape == x0.shape and out.x.dtype == dtype
        if diffusion is None and solver == "dopri5" and dtype == torch.float64:  # rtol 1e-5: global error ~1e-5
            span = (grid[0] - grid[-1]) if reverse else (grid[-1] - grid[0])
            exact = math.exp(rate * span)
            assert abs(float(out.x[0, 0]) - exact) < 1e-3 * exact


# ---- fields ----------------------------------------------------------------------------------------
@given(path=paths, kind=st.sampled_from(KINDS), to=st.sampled_from(KINDS + ("energy",)),
       t=st.one_of(st.floats(1e-3, 0.99), st.sampled_from([1.5, -0.1])), batch=st.integers(1, 3))
def test_field_conversions(path, kind, to, t, batch):
    """Away from the singular ends (alpha = 0 or sigma = 0) every kind converts to every kind, finitely."""
    x = torch.linspace(-1, 1, 2 * batch, dtype=torch.float64).reshape(batch, 2)
    a, s = float(path.alpha(min(max(t, 0.0), 1.0))), float(path.sigma(min(max(t, 0.0), 1.0)))
    if not (0 <= t <= 1) or a < 1e-6 or s < 1e-6 or to == "energy":
        try:
            TARGET.field(kind).as_kind(to, x, t, path)
        except (ValueError, TypeError):  # our errors, or a documented kind check
            return
        return
    outcome(lambda: TARGET.field(kind).as_kind(to, x, t, path))


@given(out_shape=st.sampled_from([(4,), (4, 1), (4, 2), (1,), ()]), time=st.booleans())
def test_energy_field_output_shape(out_shape, time):
    def net(x, t=None):
        e = 0.5 * (x * x).sum(1)
        return e.reshape(out_shape) if out_shape in ((4,), (4, 1)) else e.sum().expand(out_shape) if out_shape else e.sum()
    f = sf.EnergyField(net if time else (lambda x: net(x)), time=time)
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    s = outcome(lambda: f.score(x, 0.5, sf.VP()))
    assert (s is not None) == (out_shape in ((4,), (4, 1)))


# ---- losses ----------------------------------------------------------------------------------------
@given(loss=st.sampled_from([Lo.eps_loss, Lo.dsm_loss, Lo.cfm_loss]), path=paths, kind=st.sampled_from(KINDS),
       t_min=st.one_of(st.none(), st.floats(-0.5, 1.5)), shape=st.sampled_from([(3, 2), ()]),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.int64]), seed=st.integers(0, 100))
def test_losses(loss, path, kind, t_min, shape, dtype, seed):
    if shape != (3, 2):
        return outcome(lambda: loss(TARGET.field(kind), path, torch.zeros(shape, dtype=dtype), t_min=t_min))
    x0 = TARGET.sample(3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)
    if t_min is not None and t_min < 1e-3 and not isinstance(path, sf.DiscreteVP):
        t_min = None if t_min < 0 else t_min  # the oracle's own singular end is not under test
    outcome(lambda: loss(TARGET.field(kind), path, x0, t_min=t_min, generator=torch.Generator().manual_seed(seed)))


# ---- Langevin --------------------------------------------------------------------------------------
@given(fn=st.sampled_from(["ula", "mala", "annealed"]), h=numbers, steps=st.one_of(st.integers(0, 5), st.sampled_from([-1, 1.5])),
       shape=st.sampled_from([(4, 2), (4,), ()]), dtype=st.sampled_from([torch.float32, torch.float64, torch.int64]),
       sigmas=st.one_of(st.lists(st.floats(0.01, 10), min_size=1, max_size=3, unique=True).map(sorted).map(
           lambda v: v[::-1]), st.lists(st.floats(-1, 10), max_size=3)))
def test_langevin(fn, h, steps, shape, dtype, sigmas):
    x = torch.ones(shape, dtype=dtype)
    g = torch.Generator().manual_seed(0)
    if fn == "ula":
        outcome(lambda: L.ula(lambda y: -y, x, h, steps, generator=g))
    elif fn == "mala":
        outcome(lambda: L.mala(lambda y: 0.5 * (y * y).reshape(y.shape[0], -1).sum(1), x, h, steps, generator=g))
    else:
        outcome(lambda: L.annealed_langevin(lambda y, s: -y / (1 + s[:, None] ** 2) if y.dim() == 2 else -y, x, sigmas,
                                            eps=h, steps_per_level=steps, generator=g))


# ---- metrics and io --------------------------------------------------------------------------------
@given(fn=st.sampled_from(["sliced_w2", "mmd2", "mode_weights", "moment_errors"]),
       n=st.integers(0, 6), m=st.integers(0, 6), d=st.integers(1, 3), e=st.integers(1, 3), extra=numbers)
def test_metrics(fn, n, m, d, e, extra):
    x = torch.linspace(0, 1, n * d, dtype=torch.float64).reshape(n, d)
    y = torch.linspace(-1, 1, m * e, dtype=torch.float64).reshape(m, e)
    call = {"sliced_w2": lambda: M.sliced_w2(x, y, n_projections=int(extra) if extra == extra and abs(extra) < 1e3 else 0),
            "mmd2": lambda: M.mmd2(x, y, bandwidth=extra),
            "mode_weights": lambda: M.mode_weights(x, y),
            "moment_errors": lambda: M.moment_errors(x, torch.zeros(e), torch.eye(e))}[fn]
    outcome(call)


@given(shapes=st.lists(st.lists(st.integers(0, 3), max_size=3), max_size=4),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.int64, torch.bool]),
       meta=st.dictionaries(st.text(max_size=5), st.one_of(st.integers(-10, 10), st.floats(allow_nan=False),
                                                          st.text(max_size=5), st.none()), max_size=3))
def test_io_round_trip(tmp_path_factory, shapes, dtype, meta):
    f = tmp_path_factory.mktemp("io") / "t.safetensors"
    tensors = {f"t{i}": torch.zeros(s, dtype=dtype) for i, s in enumerate(shapes)}
    io.save_tensors(f, tensors, meta)
    back, m = io.load_tensors(f)
    assert set(back) == set(tensors) and all(torch.equal(back[k], v) for k, v in tensors.items())
    assert all(m[str(k)] == v or (isinstance(v, float) and not math.isfinite(v)) for k, v in meta.items())
