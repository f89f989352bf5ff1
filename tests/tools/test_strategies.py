"""sdeflow.testing.strategies draw valid objects, and hypothesis-driven properties over random targets,
paths, grids and solvers: batch independence and exact NFE accounting on random explicit grids, and
pathwise convergence of the midpoint method on the exact flow of random Gaussians under random paths."""

import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sdeflow as sf
from sdeflow.testing import CountingField, PerturbedField
from sdeflow.testing import strategies as sst
from sdeflow.testing.properties import assert_batch_independent
from sdeflow.testing.checks import oracle_field

D = torch.float64


def test_import_sdeflow_does_not_import_hypothesis():
    code = "import sys, sdeflow, sdeflow.testing, sdeflow.testing.strategies; print('hypothesis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@given(sst.targets(1, 8))
def test_targets_are_valid(target):
    assert 1 <= target.dim <= 8
    assert torch.isclose(target.weights.sum(), torch.tensor(1.0, dtype=D))
    assert (target.var >= 0.2 ** 2 - 1e-12).all() and (target.var <= 4.0 + 1e-12).all()


@given(sst.paths())
def test_paths_have_decreasing_log_snr_and_finite_coefficients(path):
    t = torch.linspace(0.01, 0.99, 99, dtype=D)
    a, s, da, ds = path.coefficients(t)
    assert all(torch.isfinite(v).all() for v in (a, s, da, ds))
    lam = path.log_snr(t)
    assert (lam[1:] < lam[:-1]).all()


@given(sst.time_grids(1, 40, t_max=0.9, t_min=0.05))
def test_time_grids_are_strictly_decreasing_with_exact_ends(grid):
    g = torch.tensor(grid, dtype=D)
    assert grid[0] == 0.9 and grid[-1] == 0.05 and (g[1:] < g[:-1]).all()
    sf.grids.check_grid(grid)  # the library's own validation accepts it


@given(sst.fields(sst.gaussians(1, 4), max_perturbation=0.3), st.floats(0.05, 0.95))
def test_perturbed_fields_stay_within_their_bound(field, t):
    x = torch.linspace(-3, 3, 24, dtype=D).reshape(-1, 1)
    inner = field.inner if isinstance(field, PerturbedField) else field
    x = x.expand(-1, inner.target.dim).contiguous()
    path = sf.VP()
    diff = field.predict(x, t, path) - inner.predict(x, t, path)
    bound = field.amplitude if isinstance(field, PerturbedField) else 0.0
    assert float(diff.abs().max()) <= bound + 1e-12


@given(sst.solvers(sde=True, adaptive=False))
def test_solver_strategy_respects_its_filters(name):
    s = sf.solvers.get(name)
    assert s.sde and not s.adaptive


@settings(max_examples=15)
@given(target=sst.mixtures(1, 4, max_components=3), path=sst.paths(("vp", "subvp", "ve")),
       grid=sst.time_grids(1, 12, t_max=1.0, t_min=0.02),
       solver=sst.solvers(adaptive=False, instances=True))
def test_random_problems_batch_independence_and_nfe(target, path, grid, solver):
    """A solver's declaration holds on random problems either way: declared independent, each sample's result
    is the same alone and in any batch; declared coupled ("pc" with norm="batch", its default, averages its
    corrector's step size over the batch like Song et al.'s code), the coupling is real."""
    def independent():
        assert_batch_independent(solver, path=path, target=target, kind="noise", steps=3, rows=2, others=3)
    if getattr(solver, "batch_independent", True):
        independent()
    else:
        with pytest.raises(AssertionError, match="samples alone vs in"):
            independent()
    field = CountingField(oracle_field(solver, target, "noise", path, grid[-1]))
    x = target.marginal(path, 1.0).sample(3, generator=torch.Generator().manual_seed(0), dtype=D)
    sol = sf.sample(path, field, solver, grid=grid, x_init=x, gamma="reverse" if solver.sde else 0.0,
                    noise=sf.PerSampleNoise(0), preflight=False)  # counts on random coarse grids, not accuracy
    assert field.calls == sol.nfe == solver.nfe_for_steps(len(grid) - 1)
    assert torch.isfinite(sol.x).all()


@settings(max_examples=6)
@given(target=sst.gaussians(1, 8), path=sst.paths(("vp", "subvp", "cosine", "ve", "linear", "affine")))
def test_midpoint_converges_at_order_two_on_random_gaussians_and_paths(target, path):
    """Doubling the steps divides the pathwise error by about 4 (order 2) in the asymptotic range."""
    t_max, t_min = 0.98, 0.05
    x = target.marginal(path, t_max).sample(4, generator=torch.Generator().manual_seed(1), dtype=D)
    exact = target.flow(x, path, t_max, t_min)
    errs = [float((sf.sample(path, target.field("velocity"), "midpoint", steps=n, x_init=x, t_max=t_max,
                             t_min=t_min).x - exact).abs().max()) for n in (64, 128)]
    ratio = errs[0] / errs[1]
    # slope log2(ratio) within 0.3 of 2, or up to 3.3: the midpoint method superconverges (order 3) on the
    # linear flow's Gaussian solution (see test_ode_order.py)
    assert 4 * 2 ** -0.3 <= ratio <= 4 * 2 ** 1.3, (errs, ratio)
