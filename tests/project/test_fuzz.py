"""Fuzzing the public API with hypothesis: random valid and invalid arguments.

The contract: a call either returns a finite result, or raises one of sdeflow's documented errors
(SdeflowValueError, SdeflowTypeError, NonFiniteError). Never another exception, never a hang (sizes,
steps and adaptive budgets are bounded), never a silent NaN (every input here is finite).
"""

import copy
import json
import math

import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st

import sdeflow as sf
from sdeflow import distributed as sd
from sdeflow import grids as G
from sdeflow import io
from sdeflow import langevin as L
from sdeflow import losses as Lo
from sdeflow import metrics as M

from shared import GAUSSIAN as TARGET
from validation_files import same

ERRORS = (sf.SdeflowValueError, sf.SdeflowTypeError, sf.NonFiniteError)
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
    """Inside the window (t in [1e-3, 0.99]: alpha, sigma >= 1e-4 on these paths, off the singular ends) every
    kind converts to every kind, finitely. An energy is no conversion target (it would take an integral of the
    score, known up to a constant): refused as an unknown kind. A time outside [0, 1] is refused, or (a path
    whose coefficients extend past t = 1: VE, EDM) converted exactly, as the oracle's own field of that kind."""
    x = torch.linspace(-1, 1, 2 * batch, dtype=torch.float64).reshape(batch, 2)
    if to == "energy":
        with pytest.raises(sf.SdeflowValueError, match="unknown field kind 'energy'"):
            TARGET.field(kind).as_kind(to, x, t, path)
        return
    out = outcome(lambda: TARGET.field(kind).as_kind(to, x, t, path))
    if 0 <= t <= 1:
        assert out is not None, "a conversion inside the window was refused"
    elif out is not None:
        torch.testing.assert_close(out, TARGET.field(to).as_kind(to, x, t, path), rtol=1e-9, atol=1e-12)


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
       meta=st.dictionaries(st.text(max_size=5), st.one_of(st.integers(-10, 10), st.floats(), st.text(max_size=5),
                                                          st.none(), st.lists(st.floats(), max_size=2)), max_size=3))
def test_io_round_trip(tmp_path_factory, shapes, dtype, meta):
    """Every JSON value, NaN and +-Inf included, comes back exactly (tuples/lists as lists)."""
    f = tmp_path_factory.mktemp("io") / "t.safetensors"
    tensors = {f"t{i}": torch.zeros(s, dtype=dtype) for i, s in enumerate(shapes)}
    io.save_tensors(f, tensors, meta)
    back, m = io.load_tensors(f)
    assert set(back) == set(tensors) and all(same(back[k], v) for k, v in tensors.items())
    assert same({k: m[k] for k in meta}, meta)


# ---- damaged files and manifests: the exact original data, or an sdeflow error ------------------------------
FILE_ERRORS = (sf.SdeflowValueError, sf.SdeflowTypeError)  # distributed.ShardError is a SdeflowValueError
REPLACEMENTS = [None, True, False, 0, -1, 1, 7, 10 ** 12, 2 ** 64, 1.5, float("nan"), float("inf"), "", "x", "0",
                "F32", [], {}, [1, 2], [0, 10 ** 12], {"a": 1}]


def _write_kind(kind: str, f, seed: int):
    """A valid file of ``kind`` and the function that loads it (field: state, metadata and rebuilt path)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "tensors":
        io.save_tensors(f, {"a": torch.randn(3, 2, generator=g, dtype=torch.float64), "b": torch.arange(4),
                            "h": torch.randn(2, generator=g).bfloat16()},
                        {"v": float("nan"), "s": "text", "l": [1, 2.5], "d": {"k": None}})
        return io.load_tensors
    if kind == "grid":
        io.save_grid(f, torch.linspace(1.0, 0.01, 5, dtype=torch.float64) ** (1 + seed % 3))
        return io.load_grid
    if kind == "solution":
        ts = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
        io.save_solution(f, sf.Solution(x=torch.randn(2, 2, generator=g), ts=ts, nfe=6,
                                        trajectory=torch.randn(3, 2, 2, generator=g),
                                        stats={"solver": "heun", "steps": 2, "err": float("inf")}))
        return io.load_solution
    net = torch.nn.Linear(2, 2)
    with torch.no_grad():  # every byte of the file a function of seed (hypothesis replays examples)
        net.weight.copy_(torch.randn(2, 2, generator=g))
        net.bias.copy_(torch.randn(2, generator=g))
    io.save_field(f, sf.NoiseField(net), sde_path=[sf.VP(0.2, 15.0), sf.DiscreteVP(T=4), sf.VE()][seed % 3])

    def load_field(f):
        state, meta = io.load_field_state(f)
        return state, meta, io.path_from_metadata(meta), io.load_state_dict(f)
    return load_field


def _nodes(doc, path=()):
    yield path, doc
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        yield from _nodes(v, path + (k,))


def _mutate_json(data, doc):
    """One random edit of a JSON document: drop, rename or retype a key, nudge an integer, duplicate a list
    entry, or replace the whole document."""
    doc = copy.deepcopy(doc)
    nodes = [p for p, _ in _nodes(doc) if p]
    how = data.draw(st.sampled_from(["drop", "rename", "retype", "nudge", "duplicate", "root"]))
    if how == "root" or not nodes:
        return data.draw(st.sampled_from([[doc], None, "doc", 3, {}]))
    path = data.draw(st.sampled_from(nodes))
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    if how == "drop":
        del parent[key]
    elif how == "rename" and isinstance(parent, dict):
        parent[key + data.draw(st.sampled_from(["_", "s", " "]))] = parent.pop(key)
    elif how == "nudge" and isinstance(parent[key], int) and not isinstance(parent[key], bool):
        parent[key] += data.draw(st.sampled_from([-1, 1, 10 ** 12]))
    elif how == "duplicate" and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]))
    else:
        parent[key] = copy.deepcopy(data.draw(st.sampled_from(REPLACEMENTS)))
    return doc


def _split(raw: bytes):
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _join(header, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + body


@given(kind=st.sampled_from(["tensors", "grid", "solution", "field"]), seed=st.integers(0, 100), data=st.data())
def test_io_damaged_files(tmp_path_factory, kind, seed, data):
    """Random damage (truncation, bit and byte flips, inserted/deleted/appended bytes, edits of the
    safetensors header or of the sdeflow metadata inside it): the loader returns exactly what it returned
    for the intact file, or raises an sdeflow error; never another exception, never different data. (An
    edit deleting all of sdeflow's header entries leaves a plain safetensors file: its tensors, no metadata.)"""
    d = tmp_path_factory.mktemp("io")
    f = d / "f.safetensors"
    load = _write_kind(kind, f, seed)
    ref = load(f)
    raw = f.read_bytes()
    for op in data.draw(st.lists(st.sampled_from(["truncate", "flip", "byte", "insert", "delete", "append", "header",
                                                  "metadata"]), min_size=1, max_size=3)):
        if not raw:
            break
        i = data.draw(st.integers(0, len(raw) - 1))
        if op == "truncate":
            raw = raw[:i]
        elif op == "flip":
            raw = raw[:i] + bytes([raw[i] ^ (1 << data.draw(st.integers(0, 7)))]) + raw[i + 1:]
        elif op == "byte":
            raw = raw[:i] + bytes([data.draw(st.integers(0, 255))]) + raw[i + 1:]
        elif op == "insert":
            raw = raw[:i] + data.draw(st.binary(min_size=1, max_size=16)) + raw[i:]
        elif op == "delete":
            raw = raw[:i] + raw[i + data.draw(st.integers(1, 16)):]
        elif op == "append":
            raw = raw + data.draw(st.binary(min_size=1, max_size=16))
        else:
            try:
                header, body = _split(raw)
                inner = json.loads(header["__metadata__"]["sdeflow"])
            except (ValueError, KeyError, TypeError):
                continue  # already damaged beyond a JSON edit
            if op == "header":
                header = _mutate_json(data, header)
            else:
                header["__metadata__"]["sdeflow"] = json.dumps(_mutate_json(data, inner))
            raw = _join(header, body)
    g = d / "damaged.safetensors"
    g.write_bytes(raw)
    try:
        got = load(g)
    except FILE_ERRORS as e:
        event("refused: " + next((w for w in ("checksum", "not a safetensors", "metadata", "kind", "tensor")
                                  if w in str(e)), "other"))
        return
    event("loaded")
    if kind == "tensors" and got[1] == {}:  # the edit removed all sdeflow metadata: a plain safetensors file
        header, _ = _split(raw)
        assert "sdeflow" not in (header.get("__metadata__") or {}), "metadata dropped"
        ref = (ref[0], {})
    assert same(got, ref), "a damaged file loaded as different data"


@given(kind=st.sampled_from(["grid", "solution", "field"]), seed=st.integers(0, 100), data=st.data())
def test_io_edited_metadata_with_a_valid_checksum(tmp_path_factory, kind, seed, data):
    """Metadata edited and re-signed (a program imitating sdeflow.io): the typed loader raises an sdeflow
    error or returns a well-formed result of its kind; never another exception type."""
    d = tmp_path_factory.mktemp("io")
    f = d / "f.safetensors"
    load = _write_kind(kind, f, seed)
    tensors, _ = io.load_tensors(f)
    header, body = _split(f.read_bytes())
    meta = json.loads(header["__metadata__"]["sdeflow"])
    del meta["sha256"]
    meta = _mutate_json(data, meta)
    text = json.dumps(meta)
    header["__metadata__"]["sdeflow"] = io._signed(text, tensors) if isinstance(meta, dict) and meta else text
    f.write_bytes(_join(header, body))
    try:
        got = load(f)
    except FILE_ERRORS:
        event("refused")
        return
    event("loaded")
    if kind == "grid":
        assert got.dtype == torch.float64 and got.dim() == 1 and ((got.diff() > 0).all() or (got.diff() < 0).all())
    elif kind == "solution":
        assert isinstance(got.nfe, int) and got.nfe >= 0 and isinstance(got.stats, dict) and got.x.dim() >= 1
    else:
        assert isinstance(got[2], sf.GaussianPath) and set(got[0]) == {"weight", "bias"}


@given(n=st.integers(1, 12), world=st.integers(1, 4), shape=st.sampled_from([(), (2,), (1, 3)]),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.int64]), data=st.data())
def test_damaged_manifests_and_shards(tmp_path_factory, n, world, shape, dtype, data):
    """Random edits of a valid manifest (drop/rename/retype keys, nudged or huge row numbers, duplicated
    rows, reordered entries) and damage to its shards (deleted, truncated, flipped, swapped files): the
    exact original samples (or the requested rows), or an sdeflow error (ShardError for the files)."""
    d = tmp_path_factory.mktemp("shards")
    x = torch.arange(n * math.prod(shape)).reshape((n,) + shape).to(dtype)
    sd._write_shards(x, d, world)
    man = d / sd.MANIFEST
    files = sorted(p for p in d.iterdir() if p.name.startswith("shard-"))
    for op in data.draw(st.lists(st.sampled_from(["json", "json", "duplicate_row", "reorder", "huge_n", "shard_bytes",
                                                  "delete_shard", "swap_files"]), min_size=1, max_size=3)):
        try:
            doc = json.loads(man.read_text())
        except ValueError:
            doc = None
        if op == "json" and doc is not None:
            man.write_text(json.dumps(_mutate_json(data, doc)))
        elif op in ("duplicate_row", "reorder") and isinstance(doc, dict) and isinstance(doc.get("shards"), list):
            rows = doc["shards"]
            if rows and op == "duplicate_row":
                i, j = data.draw(st.integers(0, len(rows) - 1)), data.draw(st.integers(0, len(rows) - 1))
                rows[j] = copy.deepcopy(rows[i])
            else:
                rows.reverse()
            man.write_text(json.dumps(doc))
        elif op == "huge_n" and isinstance(doc, dict):
            doc["n"] = 10 ** 12
            if isinstance(doc.get("shards"), list) and doc["shards"] and isinstance(doc["shards"][-1], dict):
                doc["shards"][-1]["stop"] = 10 ** 12
            man.write_text(json.dumps(doc))
        elif op == "shard_bytes":
            f = files[data.draw(st.integers(0, len(files) - 1))]
            if f.exists() and f.stat().st_size:
                raw = f.read_bytes()
                i = data.draw(st.integers(0, max(len(raw) - 1, 0)))
                f.write_bytes(raw[:i] if data.draw(st.booleans()) else raw[:i] + bytes([raw[i] ^ 0x10]) + raw[i + 1:])
        elif op == "delete_shard":
            f = files[data.draw(st.integers(0, len(files) - 1))]
            if f.exists():
                f.unlink()
        elif op == "swap_files" and len(files) > 1 and all(f.exists() for f in files[:2]):
            a, b = files[0].read_bytes(), files[1].read_bytes()
            files[0].write_bytes(b)
            files[1].write_bytes(a)
    rows = data.draw(st.one_of(st.none(), st.tuples(st.integers(0, n), st.integers(0, n)).map(sorted).map(tuple)))
    try:
        got = sd.load_shards(d, rows=rows)
    except FILE_ERRORS as e:
        event(f"refused: {type(e).__name__}")
        return
    event("loaded")
    a, b = rows or (0, n)
    assert got.dtype == x.dtype and torch.equal(got, x[a:b]), "damaged shards loaded as different data"
