"""DDPM ancestral / DDIM with the exact eps of a Gaussian reproduce its moments; untrained models fail
differently (reverse SDE blows up, flow ODE stays put)."""

import math

import pytest
import torch

import sdeflow as sf

from shared import GAUSSIAN as G

N = 20000


@pytest.mark.parametrize("solver,opts", [("ancestral", {"variance": "posterior"}),
                                         ("ancestral", {"variance": "beta"}),
                                         ("ddim", {"eta": 0.0}), ("ddim", {"eta": 1.0})])
def test_ddpm_samplers_reproduce_gaussian(solver, opts):
    path = sf.DiscreteVP()
    g = torch.Generator().manual_seed(0)
    m1, v1 = G.moments(path, 1.0)
    x1 = m1 + v1.sqrt() * torch.randn(N, 2, generator=g, dtype=torch.float64)
    sol = sf.sample(path, G.field("noise"), solver, grid="discrete", steps=path.T - 1, x_init=x1,
                    generator=g, **opts)
    m, v = G.moments(path, float(sol.ts[-1]))
    x = sol.x
    assert ((x.mean(0) - m).abs() < 4 * (v / N).sqrt()).all()
    assert ((x.var(0) - v).abs() < 4 * v * math.sqrt(2 / N)).all()


def test_untrained_models_fail_differently():
    torch.manual_seed(0)  # network initialisation only; sampling uses explicit generators
    net_eps = sf.train.mlp(2)
    net_v = sf.train.mlp(2)
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(2000, 2, generator=g)
    with torch.no_grad():
        sde = sf.sample(sf.VP(), sf.NoiseField(net_eps), "euler_maruyama", gamma="reverse", steps=200,
                        x_init=x1, generator=g).x
        ode = sf.sample(sf.LinearFlow(), sf.VelocityField(net_v), "euler", steps=200, x_init=x1).x
    assert float(sde.std()) > 5.0 * float(x1.std())  # actively: spread far beyond the prior
    assert float((ode - x1).norm(dim=1).mean()) < 0.5 * float(x1.norm(dim=1).mean())  # passively


# ---- the flow + score SDE with two networks ("A Gentle Intro to Diffusion Models") ----------------
class _Net(torch.nn.Module):
    """A fixed random nonlinear net(x, t) (the two nets need not agree with each other)."""

    def __init__(self, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(3, 2, generator=g, dtype=torch.float64)

    def forward(self, x, t):
        return torch.tanh(torch.cat([x, t[:, None]], 1) @ self.W)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
def test_flow_score_field_drift_is_v_minus_half_gamma2_s(gamma):
    """For two unrelated nets, sampling the combination field is the SDE dx = [v - gamma^2/2 s] dt + gamma dW
    integrated by `solve` with that drift, step for step (same normals)."""
    v, s = _Net(1), _Net(2)
    field = sf.FlowScoreField(sf.VelocityField(v), sf.ScoreField(s), gamma)
    x1 = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    solver = "euler_maruyama" if gamma > 0 else "euler"
    a = sf.sample(sf.LinearFlow(), field, solver, steps=20, x_init=x1, gamma=gamma, t_min=1e-2,
                  noise=sf.PerSampleNoise(4), preflight=False).x  # equality with solve(), not accuracy
    grid = torch.linspace(1.0, 1e-2, 21, dtype=torch.float64)
    b = sf.solve(lambda x, t: v(x, t) - 0.5 * gamma ** 2 * s(x, t), gamma if gamma > 0 else None, x1, grid,
                 solver, noise=sf.PerSampleNoise(4)).x
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("gamma", [0.5, 1.0])
def test_flow_score_sde_with_exact_fields_has_exact_marginals(gamma):
    """The oracle's velocity and score on the linear flow: Euler-Maruyama from the exact prior lands on p_t at
    t_min within 4 standard errors (400 steps: the O(h) bias is below the Monte Carlo error at n = 8000)."""
    path, t_min, n = sf.LinearFlow(), 1e-2, 8000
    field = sf.FlowScoreField(G.field("velocity"), G.field("score"), gamma)
    g = torch.Generator().manual_seed(7)
    x1 = G.marginal(path, 1.0).sample(n, generator=g, dtype=torch.float64)
    x = sf.sample(path, field, "euler_maruyama", steps=400, x_init=x1, gamma=gamma, t_min=t_min, generator=g).x
    m, v = G.moments(path, t_min)
    assert ((x.mean(0) - m).abs() < 4 * (v / n).sqrt()).all(), (x.mean(0), m)
    assert ((x.var(0) - v).abs() < 4 * v * math.sqrt(2 / (n - 1))).all(), (x.var(0), v)


def test_flow_score_field_checks_its_arguments():
    with pytest.raises(TypeError, match="velocity"):
        sf.FlowScoreField(lambda x, t: x, G.field("score"), 0.5)
    with pytest.raises(ValueError, match="gamma"):
        sf.FlowScoreField(G.field("velocity"), G.field("score"), -1.0)
