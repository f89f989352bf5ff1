"""Every kind converts to every other on every path, exactly (round trips and the exact oracle)."""

import itertools

import pytest
import torch

import sdeflow as sf
from paths_catalogue import PATHS

D = torch.float64
KINDS = ("score", "noise", "data", "velocity", "v")


def _point(gen, n=64, d=3):
    x = torch.randn(n, d, generator=gen, dtype=D)
    t = 0.05 + 0.9 * torch.rand(n, generator=gen, dtype=D)
    return x, t


@pytest.mark.parametrize("name", list(PATHS))
@pytest.mark.parametrize("a,b", list(itertools.permutations(KINDS, 2)))
def test_round_trip(name, a, b, gen):
    path = PATHS[name]()
    x, t = _point(gen)
    n_a = torch.randn(x.shape, generator=gen, dtype=D)
    fa = sf.fields.NetField(lambda x_, t_: n_a, a)
    n_b = fa.as_kind(b, x, t, path)
    back = sf.fields.NetField(lambda x_, t_: n_b, b).as_kind(a, x, t, path)
    torch.testing.assert_close(back, n_a, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list(PATHS))
@pytest.mark.parametrize("a,b", list(itertools.product(KINDS, KINDS)))
def test_converted_oracle_equals_oracle(name, a, b, gen):
    """The exact field of kind a, converted to b, equals the exact field of kind b (derived directly)."""
    path = PATHS[name]()
    target = sf.two_blobs()
    x, t = _point(gen, d=2)
    got = target.field(a).as_kind(b, x, t, path)
    want = target.predict(x, t, path, b)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list(PATHS))
def test_design_formulas(name, gen):
    """The DESIGN table, written out: x0 from v, eps from v, v = f x - g^2 s / 2."""
    path = PATHS[name]()
    target = sf.eight_gaussians()
    x, t = _point(gen, d=2)
    a, s, da, ds = (c[:, None] for c in path.coefficients(t))
    v = target.velocity(x, t, path)
    score = target.score(x, t, path)
    den = ds * a - s * da
    torch.testing.assert_close(target.data(x, t, path), (ds * x - s * v) / den, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(target.noise(x, t, path), (a * v - da * x) / den, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(v, path.f(t)[:, None] * x - 0.5 * path.g2(t)[:, None] * score,
                               rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(score, -target.noise(x, t, path) / s, rtol=1e-10, atol=1e-10)


def test_velocity_converts_to_data_where_alpha_vanishes():
    """At t = 1 on the linear flow alpha = 0: x0 = x - v is still defined and the formula gives it."""
    path = sf.LinearFlow()
    x = torch.randn(8, 2, dtype=D)
    v = torch.randn(8, 2, dtype=D)
    x0 = sf.VelocityField(lambda x_, t_: v).data(x, 1.0, path)
    torch.testing.assert_close(x0, x - v)


@pytest.mark.parametrize("solver", ["heun", "rk4"])
def test_velocity_ode_reaches_sigma_zero(solver):
    """The probability-flow drift of a velocity field needs no 1/sigma: LinearFlow integrates to t = 0
    (sigma = 0) with no 0/0 from the gamma term, converging to the Gaussian's exact flow map at the
    solver's declared order."""
    from sdeflow.testing import fit_order
    g = sf.Gaussian(torch.tensor([1.0, -1.0], dtype=torch.float64), torch.tensor([0.5, 2.0], dtype=torch.float64))
    path = sf.LinearFlow()
    x1 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = g.flow(x1, path, 1.0, 0.0)
    steps = [16, 32, 64, 128]
    errs = []
    for s in steps:
        x = sf.sample(path, g.field("velocity"), solver, steps=s, t_min=0.0, x_init=x1).x
        assert torch.isfinite(x).all()
        errs.append(float((x - exact).pow(2).mean().sqrt()))
    fit = fit_order([1 / s for s in steps], errs)
    assert abs(fit.slope - sf.solvers.get(solver).order) < 0.3, fit


@pytest.mark.parametrize("name", list(PATHS))
@pytest.mark.parametrize("a,b", list(itertools.product(KINDS, KINDS + ("drift",))))
def test_identity_conversions_are_exactly_the_prediction(name, a, b, gen):
    """``is_identity(a, b)``: the formula's ``(P, Q)`` is exactly ``(0, 1)`` at regular points (what an evaluation at
    arbitrary times skips computing); for every other pair it is not."""
    path = PATHS[name]()
    _, t = _point(gen)
    P, Q = sf.conversions.conversion(a, b, *path.coefficients(t))
    exact = bool((P == 0).all() and (Q == 1).all())
    assert sf.conversions.is_identity(a, b) == exact
    assert not sf.conversions.is_identity(a, b, gamma2=torch.ones(1)) or a == b
