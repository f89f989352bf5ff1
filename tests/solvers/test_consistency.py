"""Multistep consistency sampling (``consistency``; Song et al. 2023, Algorithm 1) against what theory says.

With the exact consistency function of a Gaussian target (its probability-flow map to the window's end,
``Gaussian.consistency_field``) one step from the exact marginal at ``t_max`` gives exactly the marginal at the
window's end, and so does every multistep schedule (each re-noising draws from the path's transition out of the
end): the output moments, computed exactly (the sampler is affine in its input and normals), equal the exact ones
to rounding on every path, grid and step count, and a Monte Carlo sample passes a moment test at its standard
errors. With a mixture whose "consistency function" is only its exact denoiser (the posterior mean, which is not
one), the same test fails.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import sdeflow as sf
from paths_catalogue import PATHS
from sdeflow.testing import CountingField
from sdeflow.testing.moments import affine_output_moments

D = torch.float64
TARGET = sf.Gaussian([1.0, -0.5], [0.4, 2.0])


def _ends(name, path):
    t_max = 0.99 if name in ("CosineVP", "LinearFlow", "AffineSqrt") else 1.0
    return t_max, float(path.t_min)


def _exact_moments(path, field, grid):
    """Exact output (mean, var) of the consistency sampler on ``grid`` from the exact marginal at grid[0]."""
    m0, V0 = TARGET.moments(path, grid[0])

    def run(x, noise):
        return sf.sample(path, field, "consistency", grid=grid, x_init=x, noise=noise).x
    return affine_output_moments(run, m0, V0, len(grid) - 1, 1, verify=True)


@pytest.mark.parametrize("name", list(PATHS))
def test_every_schedule_gives_the_exact_marginal(name):
    """One step, and every multistep schedule (uniform, Karras-like, random), lands exactly on the marginal at
    the window's end (exact moments, to float64 rounding)."""
    path = PATHS[name]()
    t_max, t_min = _ends(name, path)
    field = TARGET.consistency_field(path, t_min)
    mt, Vt = TARGET.moments(path, t_min)
    rng = np.random.default_rng(0)
    grids = [[t_max, t_min], list(np.linspace(t_max, t_min, 3)), list(np.linspace(t_max, t_min, 8)),
             [t_max] + sorted(rng.uniform(t_min, t_max, 5).tolist(), reverse=True) + [t_min]]
    if name == "DiscreteVP":  # its knots
        grids.append([1.0, 0.5, 0.25, 0.1, 0.02, t_min])
    for grid in grids:
        mean, var = _exact_moments(path, field, grid)
        err = float((mean - mt).abs().max() + (var - Vt).abs().max())
        assert err <= 1e-12 * (1 + float(Vt.max())), (name, grid, err)


def _moment_test(x, mean, var, n_se: float = 5.0):
    """Sample mean and covariance against N(mean, diag(var)), each entry within ``n_se`` standard errors."""
    n = x.shape[0]
    m = x.mean(0)
    C = torch.cov(x.T)
    se_m = (var / n).sqrt()
    V = torch.diag(var)
    se_C = ((V * V + torch.outer(var, var)) / (n - 1)).sqrt()  # Var of a sample covariance entry (Gaussian)
    assert bool(((m - mean).abs() <= n_se * se_m).all()), ("mean", m, mean)
    assert bool(((C - V).abs() <= n_se * se_C).all()), ("covariance", C, V)


N_MC = 20000


@pytest.mark.parametrize("steps", [1, 4])
@pytest.mark.parametrize("path", [sf.VP(), sf.EDM(), sf.LinearFlow()], ids=["VP", "EDM", "LinearFlow"])
def test_monte_carlo_samples_are_the_target(path, steps):
    """A sample drawn by the sampler (PerSampleNoise) passes the moment test at its standard errors: the exact
    consistency function's one-step and multistep samples are the target's (window's end) marginal."""
    t_max = 0.99 if isinstance(path, sf.LinearFlow) else 1.0
    t_min = float(path.t_min)
    x1 = TARGET.marginal(path, t_max).sample(N_MC, generator=torch.Generator().manual_seed(1), dtype=D)
    sol = sf.sample(path, TARGET.consistency_field(path, t_min), "consistency", steps=steps, grid="uniform",
                    t_max=t_max, t_min=t_min, x_init=x1, noise=sf.PerSampleNoise(2))
    assert sol.nfe == steps
    _moment_test(sol.x, *TARGET.moments(path, t_min))


def test_a_denoiser_used_as_the_consistency_function_does_not_sample_the_target():
    """The moment test can fail: a mixture's exact posterior mean E[x0|x_t] declared a consistency function
    gives a collapsed, wrong distribution (one step: the posterior mean of the prior sample; four steps:
    still far off), while the same test passes for the Gaussian's exact consistency function above."""
    mix = sf.analytic.two_blobs()
    path = sf.VP()
    t_min = 0.0
    f = sf.ConsistencyField(lambda x, t: mix.data(x, t, path))
    cov = mix.covariance()
    for steps in (1, 4):
        x1 = mix.marginal(path, 1.0).sample(N_MC, generator=torch.Generator().manual_seed(3), dtype=D)
        x = sf.sample(path, f, "consistency", steps=steps, grid="uniform", t_min=t_min, x_init=x1,
                      noise=sf.PerSampleNoise(4)).x
        with pytest.raises(AssertionError):
            _moment_test(x, mix.mean(), torch.diagonal(cov))
        # not a borderline failure: the total variance is far below the target's
        assert float(torch.cov(x.T).trace()) < 0.9 * float(cov.trace())


def test_paper_form_on_edm():
    """On EDM with the window ending at eps = sigma_min, the step is Song et al.'s x + sqrt(tau^2 - eps^2) z:
    sdeflow equals that loop written out, on the same normals (TableNoise), to rounding."""
    path = sf.EDM(80.0)
    eps = 0.002
    taus = [80.0, 20.0, 3.0, 0.5]
    grid = [s / 80.0 for s in taus] + [eps / 80.0]
    f = TARGET.consistency_field(path, eps / 80.0)
    x1 = TARGET.marginal(path, 1.0).sample(64, generator=torch.Generator().manual_seed(0), dtype=D)
    zs = [torch.randn(64, 2, generator=torch.Generator().manual_seed(10 + k), dtype=D) for k in range(len(taus))]
    ours = sf.sample(path, f, "consistency", grid=grid, x_init=x1, noise=sf.TableNoise(zs)).x
    x = f.predict(x1, torch.full((64,), 1.0, dtype=D), path)
    for k, tau in enumerate(taus[1:]):
        x = x + math.sqrt(tau ** 2 - eps ** 2) * zs[k]
        x = f.predict(x, torch.full((64,), tau / 80.0, dtype=D), path)
    assert float((ours - x).abs().max()) <= 1e-13 * float(x.abs().max())


def test_one_evaluation_per_grid_point_and_no_draw_at_the_end():
    path = sf.VP()
    f = CountingField(TARGET.consistency_field(path, path.t_min))
    for steps in (1, 2, 7):
        f.calls = 0
        sol = sf.sample(path, f, "consistency", steps=steps, n=5, shape=(2,), dtype=D, noise=sf.PerSampleNoise(0))
        assert sol.nfe == f.calls == steps
    # steps - 1 draws: a table of that many normals suffices
    zs = [torch.zeros(5, 2, dtype=D) for _ in range(3)]
    sf.sample(path, f, "consistency", steps=4, x_init=torch.zeros(5, 2, dtype=D), noise=sf.TableNoise(zs))


def test_batch_invariance_with_per_sample_noise():
    path = sf.EDM()
    f = TARGET.consistency_field(path, path.t_min)
    x = TARGET.marginal(path, 1.0).sample(12, generator=torch.Generator().manual_seed(0), dtype=D)
    full = sf.sample(path, f, "consistency", steps=5, grid="karras", x_init=x, noise=sf.PerSampleNoise(7)).x
    part = sf.sample(path, f, "consistency", steps=5, grid="karras", x_init=x[:3], noise=sf.PerSampleNoise(7),
                     chunk_size=2).x
    assert torch.equal(full[:3], part)


def test_refusals_before_any_evaluation():
    """A field that does not declare itself a consistency function, and an integration path, are refused up
    front (no evaluation)."""
    path = sf.VP()
    for kind in ("noise", "data", "velocity"):
        f = CountingField(TARGET.field(kind))
        with pytest.raises(sf.SdeflowTypeError, match="ConsistencyField"):
            sf.sample(path, f, "consistency", steps=3, n=4, shape=(2,))
        assert f.calls == 0
    f = CountingField(TARGET.consistency_field(path, path.t_min))
    with pytest.raises(sf.SdeflowValueError, match="integration_path"):
        sf.sample(path, f, "consistency", steps=3, n=4, shape=(2,), integration_path=sf.EDM())
    assert f.calls == 0


def test_budget_does_not_move_the_window():
    """``nfe=`` with the consistency sampler keeps the path's window (the budget's end balances a
    discretisation order, which this sampler does not have) and uses the budget as its steps."""
    path = sf.EDM()
    sol = sf.sample(path, TARGET.consistency_field(path, path.t_min), "consistency", nfe=3, n=4, shape=(2,),
                    noise=sf.PerSampleNoise(0))
    assert sol.nfe == 3 and sol.stats["window"] == "given" and sol.stats["t_min"] == path.t_min


def test_consistency_field_wraps_a_network():
    """ConsistencyField(net): kind "data", declares consistency, clips like diffusers' clip_denoised."""
    f = sf.ConsistencyField(lambda x, t: 3.0 * x, clip_data=1.0)
    assert f.kind == "data" and f.consistency and not sf.DataField(lambda x, t: x).consistency
    x = torch.tensor([[0.1, -0.5]], dtype=D)
    torch.testing.assert_close(f.predict(x, 0.5, sf.VP()), torch.tensor([[0.3, -1.0]], dtype=D), rtol=1e-15,
                               atol=0)
