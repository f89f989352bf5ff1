"""The sampler's interface: budgets, grids, trajectories, denoising, randomness, chunking, path transfer."""

import math

import numpy as np
import pytest
import torch

import sdeflow as sf
from sdeflow.testing.checks import oracle_field

D = torch.float64
TARGET = sf.Gaussian([1.0, -0.5], [0.5, 2.0])


@pytest.mark.parametrize("solver", sf.solvers.available(adaptive=False))
@pytest.mark.parametrize("final_denoise", [False, True])
def test_nfe_budget_is_never_exceeded(solver, final_denoise):
    s = sf.solvers.get(solver)
    gamma = "reverse" if s.sde else 0.0
    for budget in range(1, 13):
        # budgets from 1 evaluation: counting, not accuracy (the preflight would refuse the coarsest)
        kw = dict(nfe=budget, x_init=torch.randn(3, 2, dtype=D), gamma=gamma, final_denoise=final_denoise,
                  preflight=False)
        field = oracle_field(s, TARGET, "noise", sf.VP(), sf.VP().t_min)
        if budget < s.min_nfe + final_denoise:
            with pytest.raises(ValueError, match="below the minimum"):
                sf.sample(sf.VP(), field, solver, **kw)
            continue
        sol = sf.sample(sf.VP(), field, solver, **kw)
        assert sol.nfe <= budget
        assert sol.nfe > budget - s.evals_per_step  # and the budget is used


@pytest.mark.parametrize("grid", ["uniform", "log_snr", "karras", "quadratic"])
@pytest.mark.parametrize("path", [sf.VP(), sf.VE(0.002, 80.0), sf.CosineVP(), sf.LinearFlow()])
def test_named_grids(grid, path):
    t_max = 0.999 if isinstance(path, (sf.CosineVP, sf.LinearFlow)) else 1.0
    t_min = 0.01
    sol = sf.sample(path, TARGET.field("velocity"), "euler", steps=12, grid=grid, t_max=t_max, t_min=t_min,
                    x_init=torch.randn(2, 2, dtype=D), preflight=False)  # the grid's times, not the answer
    ts = sol.ts
    assert ts.shape == (13,) and float(ts[0]) == t_max and float(ts[-1]) == t_min
    assert (ts[1:] < ts[:-1]).all()
    lam = path.log_snr(ts)
    if grid == "log_snr":
        torch.testing.assert_close(lam[1:] - lam[:-1], torch.full((12,), float(lam[1] - lam[0]), dtype=D))
    if grid == "karras":  # sigma/alpha follows Karras et al.'s rho = 7 schedule
        s = torch.exp(-0.5 * lam)
        i = torch.arange(13, dtype=D) / 12
        want = (s[0] ** (1 / 7) + i * (s[-1] ** (1 / 7) - s[0] ** (1 / 7))) ** 7
        torch.testing.assert_close(s, want)
    if grid == "uniform":
        torch.testing.assert_close(ts, torch.linspace(t_max, t_min, 13, dtype=D))
    if grid == "quadratic":
        torch.testing.assert_close(ts, t_min + (t_max - t_min) * torch.linspace(1, 0, 13, dtype=D) ** 2)


def test_log_snr_grid_needs_finite_ends():
    with pytest.raises(ValueError, match="finite log-SNR"):
        sf.sample(sf.LinearFlow(), TARGET.field("velocity"), "euler", steps=4, grid="log_snr", t_min=0.01,
                  x_init=torch.randn(2, 2))


def test_explicit_grid_trajectory_and_denoise():
    path, field = sf.VP(), TARGET.field("noise")
    x = torch.randn(5, 2, dtype=D)
    grid = [1.0, 0.7, 0.3, 0.1, 0.01]
    sol = sf.sample(path, field, "heun", grid=grid, x_init=x, return_trajectory=True, final_denoise=True)
    assert sol.trajectory.shape == (6, 5, 2)
    torch.testing.assert_close(sol.trajectory[0], x)
    torch.testing.assert_close(sol.ts, torch.tensor(grid + [0.0], dtype=D))
    before = sol.trajectory[-2]
    torch.testing.assert_close(sol.x, TARGET.data(before, 0.01, path))
    torch.testing.assert_close(sol.trajectory[-1], sol.x)
    assert sol.nfe == 2 * 4 + 1 and sol.stats["steps"] == 4 and sol.stats["solver"] == "heun"


def test_prior_sampling_shapes_dtypes_and_seeding():
    field = TARGET.field("noise")
    a = sf.sample(sf.VP(), field, "euler", steps=5, n=7, shape=(2,), generator=torch.Generator().manual_seed(0))
    b = sf.sample(sf.VP(), field, "euler", steps=5, n=7, shape=(2,), generator=torch.Generator().manual_seed(0))
    c = sf.sample(sf.VP(), field, "euler", steps=5, n=7, shape=(2,), generator=torch.Generator().manual_seed(1))
    assert a.x.shape == (7, 2) and a.x.dtype == torch.float32
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    d = sf.sample(sf.VP(), field, "euler", steps=5, n=7, shape=2, dtype=D, noise=sf.PerSampleNoise(3))
    assert d.x.dtype == D


def test_sde_sampling_is_reproducible_with_a_generator():
    kw = dict(steps=10, n=64, shape=(2,), gamma="reverse", preflight=False)  # reproducibility, not accuracy
    runs = [sf.sample(sf.VP(), TARGET.field("score"), "euler_maruyama", generator=torch.Generator().manual_seed(5),
                      **kw).x for _ in range(2)]
    assert torch.equal(*runs)


def test_chunking_gives_identical_samples_with_per_sample_noise():
    kw = dict(steps=20, n=50, shape=(2,), gamma="reverse", dtype=D)
    whole = sf.sample(sf.VP(), TARGET.field("noise"), "stochastic_heun", noise=sf.PerSampleNoise(9), **kw)
    parts = sf.sample(sf.VP(), TARGET.field("noise"), "stochastic_heun", noise=sf.PerSampleNoise(9),
                      chunk_size=7, return_trajectory=True, **kw)
    assert torch.equal(whole.x, parts.x)
    assert parts.trajectory.shape == (21, 50, 2) and parts.stats["chunks"] == 8
    assert whole.nfe == parts.nfe == 40 and parts.stats["network_calls"] == 8 * 40


@pytest.mark.parametrize("integ", [sf.LinearFlow(), sf.VE(0.001, 200.0), sf.CosineVP()])
def test_path_transfer_converges_to_the_exact_flow(integ):
    """A VP noise field integrated in another path's coordinates converges to the exact VP flow at the
    solver's order: the transfer itself adds no error."""
    from sdeflow.testing import fit_order

    path = sf.VP()
    x = TARGET.marginal(path, 1.0).sample(32, generator=torch.Generator().manual_seed(2), dtype=D)
    exact = TARGET.flow(x, path, 1.0, 1e-3)
    steps, errs = (32, 64, 128, 256), []
    for n in steps:
        sol = sf.sample(path, TARGET.field("noise"), "rk4", steps=n, x_init=x, t_min=1e-3, integration_path=integ,
                        return_trajectory=True)
        errs.append(float((sol.x - exact).abs().max()))
        assert float(sol.ts[0]) == 1.0 and float(sol.ts[-1]) == 1e-3
    fit = fit_order([1 / n for n in steps], errs)
    assert abs(fit.slope - 4) < 0.3 and errs[-1] < 1e-6, fit
    # the trajectory is reported in the training path's coordinates and times: a wrong scale would be off by
    # O(1) (scales differ up to 150x), the solver's error mid-way is below 1e-6 at 256 steps
    for k in (5, 100, 250):
        torch.testing.assert_close(sol.trajectory[k], TARGET.flow(x, path, 1.0, float(sol.ts[k])), atol=1e-5, rtol=0)


def test_progress_bar_and_solution_repr(capsys):
    sol = sf.sample(sf.VP(), TARGET.field("noise"), "euler", steps=3, n=2, shape=(2,), progress=True, preflight=False)
    assert "steps=3" in repr(sol) and "nfe=3" in repr(sol)


def test_gamma_as_function_of_time():
    kw = dict(steps=8, x_init=torch.randn(4, 2, dtype=D), noise=sf.PerSampleNoise(1), preflight=False)
    a = sf.sample(sf.VP(), TARGET.field("noise"), "euler_maruyama", gamma=lambda t: 0.5 + 0 * t, **kw).x
    b = sf.sample(sf.VP(), TARGET.field("noise"), "euler_maruyama", gamma=0.5, **kw).x
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---- the low-level solve --------------------------------------------------------------------------
def test_solve_user_ode_converges_at_declared_order():
    from sdeflow.testing import fit_order

    x0 = torch.tensor([[1.0, 2.0]], dtype=D)
    f = lambda x, t: -x * t[:, None]  # x(t) = x0 exp(-t^2/2)
    for name in sf.solvers.available(sde=False, needs="drift", adaptive=False):
        steps = [n * sf.solvers.get(name).pre_asymptotic_factor for n in (8, 16, 32, 64)]
        errs = [float((sf.solve(f, None, x0, np.linspace(0, 2, n + 1), name).x - x0 * math.exp(-2)).abs().max())
                for n in steps]
        fit = fit_order([1 / n for n in steps], errs)
        assert abs(fit.slope - sf.solvers.get(name).order) < 0.3, (name, fit)


def test_solve_multiplicative_sde_moments():
    """Geometric Brownian motion dX = mu X dt + s X dW (Ito): E[X_T] = x0 exp(mu T)."""
    n, mu, s, T = 40000, 0.5, 0.4, 1.0
    x0 = torch.ones(n, 1, dtype=D)
    sol = sf.solve(lambda x, t: mu * x, lambda x, t: s * x, x0, np.linspace(0, T, 401), "euler_maruyama",
                   generator=torch.Generator().manual_seed(0))
    mean = float(sol.x.mean())
    sd = math.sqrt(math.exp(2 * mu * T) * (math.exp(s * s * T) - 1))
    assert abs(mean - math.exp(mu * T)) < 4 * sd / math.sqrt(n) + 1e-3  # + the O(h) weak bias bound
    with pytest.raises(ValueError, match="stratonovich"):
        sf.solve(lambda x, t: mu * x, lambda x, t: s * x, x0, [0.0, 1.0], "stochastic_heun")


def test_solve_scalar_noise_shares_one_brownian_motion():
    x0 = torch.zeros(3, 4, dtype=D)
    sol = sf.solve(lambda x, t: torch.zeros_like(x), lambda x, t: torch.ones_like(x), x0, [0.0, 0.5, 1.0],
                   "euler_maruyama", noise_type="scalar", generator=torch.Generator().manual_seed(0))
    assert torch.allclose(sol.x, sol.x[:, :1].expand(3, 4))
    assert not torch.allclose(sol.x[0], sol.x[1])


# ---- the grouped spelling: grid objects and solver objects equal the flat keywords, bitwise -------------------
@pytest.mark.parametrize("spec, flat", [
    (sf.grids.Karras(rho=5.0, t_max=0.95, t_min=0.01), dict(grid="karras", rho=5.0, t_max=0.95, t_min=0.01)),
    (sf.grids.Karras(), dict(grid="karras")),
    (sf.grids.LogSNR(t_min=0.02), dict(grid="log_snr", t_min=0.02)),
    (sf.grids.Uniform(t_max=0.9), dict(grid="uniform", t_max=0.9)),
    (sf.grids.Quadratic(), dict(grid="quadratic")),
])
def test_grid_object_equals_the_flat_keywords(spec, flat):
    x = torch.randn(8, 2, dtype=D, generator=torch.Generator().manual_seed(0))
    a = sf.sample(sf.VP(), TARGET.field("noise"), "dpmpp_2m", steps=6, x_init=x, grid=spec, preflight=False)
    b = sf.sample(sf.VP(), TARGET.field("noise"), "dpmpp_2m", steps=6, x_init=x, preflight=False, **flat)
    assert torch.equal(a.x, b.x) and torch.equal(a.ts, b.ts) and a.stats == b.stats


def test_grid_object_with_a_budget_and_path_transfer_equals_the_name():
    field, kw = TARGET.field("noise"), dict(nfe=9, n=16, shape=(2,), noise=3, integration_path=sf.LinearFlow())
    a = sf.sample(sf.VP(), field, grid=sf.grids.LogSNR(), **kw)
    b = sf.sample(sf.VP(), field, grid="log_snr", **kw)
    assert a.stats["window"] == "budget" and torch.equal(a.x, b.x) and a.stats == b.stats
    # one end on the object and the other flat; the same end in both places when they agree
    c = sf.sample(sf.VP(), field, "heun", steps=4, grid=sf.grids.Karras(t_min=0.01), t_max=0.9, n=4, shape=(2,),
                  noise=1)
    d = sf.sample(sf.VP(), field, "heun", steps=4, grid="karras", t_min=0.01, t_max=0.9, n=4, shape=(2,), noise=1)
    e = sf.sample(sf.VP(), field, "heun", steps=4, grid=sf.grids.Karras(t_min=0.01), t_min=0.01, t_max=0.9, n=4,
                  shape=(2,), noise=1)
    assert torch.equal(c.x, d.x) and torch.equal(c.x, e.x)


def test_solver_object_options_equal_the_flat_keywords():
    kw = dict(steps=5, n=8, shape=(2,), noise=4, gamma="reverse", preflight=False)
    a = sf.sample(sf.VP(), TARGET.field("score"), sf.solvers.get("pc", snr=0.1, alpha=0.5), **kw)
    b = sf.sample(sf.VP(), TARGET.field("score"), "pc", snr=0.1, alpha=0.5, **kw)
    assert torch.equal(a.x, b.x) and a.stats == b.stats


def test_grid_objects_lay_out_the_named_grids():
    path = sf.VP()
    for spec, fn, kw in [(sf.grids.Karras(rho=3.0), sf.grids.karras, {"rho": 3.0}),
                         (sf.grids.LogSNR(), sf.grids.log_snr, {}), (sf.grids.Uniform(), sf.grids.uniform, {})]:
        assert torch.equal(spec(path, 7, 1.0, 1e-3), fn(path, 7, 1.0, 1e-3, **kw))
        assert torch.equal(sf.grids.make_grid(spec, path, 7, 1.0, 1e-3), spec(path, 7, 1.0, 1e-3))
        assert sf.grids.as_grid(spec.name) == type(spec)() and eval(repr(spec), vars(sf.grids)) == spec
    # the object's own ends, then the path's
    assert torch.equal(sf.grids.Uniform(t_min=0.1)(path, 3), sf.grids.uniform(path, 3, path.t_max, 0.1))
    assert sf.grids.Karras(rho=5.0) != sf.grids.Karras() and len({sf.grids.Karras(), sf.grids.Karras()}) == 1


def test_invert_takes_a_grid_object():
    x0 = torch.randn(6, 2, dtype=D, generator=torch.Generator().manual_seed(2))
    kw = dict(steps=5, t_min=0.01, preflight=False)
    a = sf.invert(sf.VP(), TARGET.field("noise"), x0, "dpmpp_2m", grid=sf.grids.Karras(rho=4.0), **kw)
    b = sf.invert(sf.VP(), TARGET.field("noise"), x0, "dpmpp_2m", grid="karras", rho=4.0, **kw)
    assert torch.equal(a.x, b.x) and torch.equal(a.ts, b.ts)
