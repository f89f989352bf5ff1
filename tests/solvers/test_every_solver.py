"""Every fixed-step solver runs on every path in float32 and float64, keeps the dtype, and its float32
result agrees with its float64 result to float32 rounding (no hidden float64 or precision loss)."""

import pytest
import torch

import sdeflow as sf
from sdeflow.testing.checks import oracle_field
from paths_catalogue import ALPHA_ZERO_AT_1, PATHS

TARGET = sf.Gaussian([1.0, -0.5], [0.4, 2.0])
SOLVERS = sf.solvers.available(adaptive=False)


@pytest.mark.parametrize("name", list(PATHS))
@pytest.mark.parametrize("solver", SOLVERS)
def test_every_solver_on_every_path_and_dtype(solver, name):
    path = PATHS[name]()
    s = sf.solvers.get(solver)
    t_max = 0.99 if name in ALPHA_ZERO_AT_1 else 1.0
    t_min = max(path.t_min, 1e-2) if name != "DiscreteVP" else path.t_min * 10
    stochastic = s.sde or getattr(s, "stochastic", False)
    gamma = "reverse" if s.sde else 0.0
    kind = "velocity" if name in ALPHA_ZERO_AT_1 else "noise"
    x64 = TARGET.marginal(path, t_max).sample(16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = {}
    for dtype in (torch.float32, torch.float64):
        # a structural check at 10 steps, accurate or not: the accuracy preflight is not under test here
        kw = dict(steps=10, x_init=x64.to(dtype), t_max=t_max, t_min=t_min, gamma=gamma, preflight=False)
        if stochastic:
            kw["noise"] = sf.PerSampleNoise(3)  # the same normals in both precisions
        sol = sf.sample(path, oracle_field(s, TARGET, kind, path, t_min), s, **kw)
        assert sol.x.dtype == dtype and sol.x.shape == x64.shape
        assert torch.isfinite(sol.x).all()
        out[dtype] = sol.x
    # float32 rounding (2^-24 ~ 6e-8 relative) accumulated over 10 steps of O(1)-conditioned updates
    scale = 1.0 + out[torch.float64].abs().max()
    assert float((out[torch.float32].double() - out[torch.float64]).abs().max()) < 1e-4 * scale
