"""ULA's stationary bias, MALA's removal of it, annealed Langevin with the exact mixture score."""

import math

import torch

import sdeflow as sf
from sdeflow.langevin import annealed_langevin, mala, ula

N = 20000  # independent chains: the final states are i.i.d., so the standard errors are exact
S2, H = 1.0, 0.2


def _var_se(x):
    v = float(x.var())
    return v, v * math.sqrt(2.0 / (x.numel() - 1))


def test_ula_stationary_variance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 1, generator=g, dtype=torch.float64)
    out = ula(lambda y: -y / S2, x, H, 150, generator=g).x  # contraction (1 - h/s^2)^150 ~ 1e-15
    v, se = _var_se(out)
    assert abs(v - S2 / (1 - H / (2 * S2))) < 4 * se
    assert abs(v - S2) > 4 * se  # the bias is resolved at this sample size


def test_mala_removes_bias_and_reports_acceptance():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, 1, generator=g, dtype=torch.float64)
    res = mala(lambda y: 0.5 * (y ** 2).sum(-1) / S2, x, H, 150, generator=g)
    v, se = _var_se(res.x)
    assert abs(v - S2) < 4 * se
    assert 0.5 < res.stats["acceptance_rate"] < 1.0


def test_annealed_langevin_mixture_moments():
    mix = sf.two_blobs()
    sig = torch.logspace(math.log10(3.0), math.log10(0.05), 10, dtype=torch.float64)

    mu_k = torch.tensor([[-2.0, 0.0], [1.5, 1.0]], dtype=torch.float64)
    var_k = torch.tensor([[0.25, 0.25], [0.09, 0.36]], dtype=torch.float64)
    logw = torch.log(torch.tensor([0.3, 0.7], dtype=torch.float64))

    def score(x, s):  # closed-form score of two_blobs smoothed at s (checked against the oracle below)
        v = var_k[None] + s[:, None, None] ** 2
        d = x[:, None, :] - mu_k[None]
        logp = logw - 0.5 * (d * d / v + torch.log(v)).sum(-1)
        r = torch.softmax(logp, -1)
        return -(r[:, :, None] * d / v).sum(1)

    xc = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    sc = torch.full((5,), 0.7, dtype=torch.float64)
    assert torch.allclose(score(xc, sc), mix.posterior(xc, torch.ones_like(sc), sc)[2])

    g = torch.Generator().manual_seed(2)
    x = 3.0 * torch.randn(3000, 2, generator=g, dtype=torch.float64)
    out = annealed_langevin(score, x, sig, eps=0.02 * 0.05 ** 2, steps_per_level=200, generator=g).x
    # target: the mixture smoothed at sigma_L (covariance + sigma_L^2 I)
    mean = mix.mean().to(torch.float64)
    cov = mix.covariance().to(torch.float64) + float(sig[-1]) ** 2 * torch.eye(2, dtype=torch.float64)
    n = out.shape[0]
    m = out.mean(0)
    assert ((m - mean).abs() < 4 * out.std(0) / math.sqrt(n)).all(), (m, mean)
    d = out - m
    prods = d[:, :, None] * d[:, None, :]
    se = prods.reshape(n, -1).std(0).reshape(2, 2) / math.sqrt(n)
    assert ((torch.cov(out.T) - cov).abs() < 4 * se).all(), (torch.cov(out.T), cov)


def test_energy_field_keeps_no_graph():
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    f = sf.EnergyField(lambda x: net(x).squeeze(-1), time=False)
    s = f.predict(torch.randn(8, 2, generator=torch.Generator().manual_seed(0)), 0.5)
    assert s.grad_fn is None and not s.requires_grad
