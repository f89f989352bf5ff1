"""The grid optimiser: a valid grid in the window, no worse than its best named start on held-out pilot
samples, the reported pilot cost equal to the network calls it made, and the grid reusable in sample."""

import pytest
import torch

import sdeflow as sf
from sdeflow.testing import CountingField
from sdeflow.grid_opt import optimize_grid


Counting = CountingField


def test_optimized_grid_is_valid_better_and_its_cost_is_counted():
    target = sf.two_blobs()
    path = sf.VE(0.002, 80.0)
    field = Counting(target.field("data"))
    res = optimize_grid(path, field, "dpmpp_2m", 8, shape=(2,), n_pilot=64, n_validation=64, t_min=0.0,
                        final_denoise=True, integration_path=sf.EDM(80.0), maxfev=80,
                        generator=torch.Generator().manual_seed(0))
    g = res.grid
    assert g.dtype == torch.float64 and float(g[0]) == 1.0 and float(g[-1]) == 0.0
    assert (g[1:] < g[:-1]).all() and len(g) == 8  # 7 steps + the final denoise = 8 evaluations
    assert res.nfe == 8
    assert res.error_optimized <= res.error_start
    assert res.validation_optimized < res.validation_start  # held-out samples improve too
    assert res.pilot_network_calls == field.calls
    assert str(res.nfe) in res.summary() and "pilot cost" in res.summary()
    # reuse: the grid drives sample() with the same budget
    x = path.prior_sample((32, 2), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    sol = sf.sample(path, target.field("data"), "dpmpp_2m", grid=g, x_init=x, final_denoise=True,
                    integration_path=sf.EDM(80.0))
    assert sol.nfe == 8


def test_optimize_grid_refuses_what_it_cannot_do():
    target = sf.two_blobs()
    with pytest.raises(ValueError, match="fixed-step"):
        optimize_grid(sf.VP(), target.field("noise"), "dopri5", 10, shape=(2,))
    with pytest.raises(ValueError, match="ODE solver"):
        optimize_grid(sf.VP(), target.field("noise"), "euler_maruyama", 10, shape=(2,))
    with pytest.raises(ValueError, match="nothing to optimise"):
        optimize_grid(sf.VP(), target.field("noise"), "heun", 2, shape=(2,))


def test_knot_parametrisation_improves_a_long_grid():
    """With more steps than knots, the smooth step density is optimised first (few parameters)."""
    target = sf.two_blobs()
    res = optimize_grid(sf.VE(0.002, 80.0), target.field("data"), "unipc", 21, shape=(2,), n_pilot=64,
                        n_validation=64, t_min=0.0, final_denoise=True, integration_path=sf.EDM(80.0),
                        maxfev=60, knots=5, generator=torch.Generator().manual_seed(1))
    assert len(res.grid) == 21 and (res.grid[1:] < res.grid[:-1]).all()
    assert res.objective_evaluations <= 60 + 4  # + the named starting grids
    assert res.error_optimized < res.error_start and res.validation_optimized < res.validation_start
