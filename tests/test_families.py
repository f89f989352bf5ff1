"""DDPM ancestral / DDIM with the exact eps of a Gaussian reproduce its moments; untrained models fail
differently (reverse SDE blows up, flow ODE stays put)."""

import math

import pytest
import torch

import sdeflow as sf

MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
C = torch.tensor([0.5, 2.0], dtype=torch.float64)
G = sf.Gaussian(MU, C)
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
