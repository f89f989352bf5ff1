"""Each loss at the exact oracle field equals its analytic minimum (Monte Carlo, a few standard errors) and is
lower than at a perturbed field."""

import math

import pytest
import torch

import sdeflow as sf
from sdeflow import losses

N = 20000
K = 4.0  # standard errors

MU = torch.tensor([0.5, -1.0], dtype=torch.float64)
C = torch.tensor([0.3, 1.5], dtype=torch.float64)
G = sf.Gaussian(MU, C)


class Perturbed:
    """The oracle field plus a constant 0.2 in every kind."""

    def __init__(self, f):
        self.f = f

    def noise(self, x, t, p):
        return self.f.noise(x, t, p) + 0.2

    def score(self, x, t, p):
        return self.f.score(x, t, p) + 0.2

    def velocity(self, x, t, p):
        return self.f.velocity(x, t, p) + 0.2


def _t_average(path, fn):
    """E_t fn(t) for the loss's time law: all knots of a DiscreteVP, else uniform on [t_min, 1] (midpoints)."""
    if isinstance(path, sf.DiscreteVP):
        t = path.timesteps
    else:
        lo = float(path.t_min)
        t = lo + (1 - lo) * (torch.arange(20000, dtype=torch.float64) + 0.5) / 20000
    return float(fn(t).mean())


def _eps_min(path):
    def fn(t):
        a, s, _, _ = path.coefficients(t)
        V = a[:, None] ** 2 * C + s[:, None] ** 2
        return (a[:, None] ** 2 * C / V).sum(-1)  # tr Cov(eps | x_t)
    return _t_average(path, fn)


def _cfm_min(path):
    def fn(t):
        a, s, da, ds = path.coefficients(t)
        a, s, da, ds = (v[:, None] for v in (a, s, da, ds))
        V = a * a * C + s * s
        return (da * da * C + ds * ds - (da * a * C + ds * s) ** 2 / V).sum(-1)  # tr Cov(u | x_t)
    return _t_average(path, fn)


def _check(per_sample, expected):
    m, se = float(per_sample.mean()), float(per_sample.std() / math.sqrt(per_sample.numel()))
    assert abs(m - expected) < K * se, (m, expected, se)


def _x0(seed):
    g = torch.Generator().manual_seed(seed)
    return G.sample(N, generator=g, dtype=torch.float64), g


@pytest.mark.parametrize("path", [sf.DiscreteVP(), sf.VP(), sf.LinearFlow()], ids=repr)
def test_eps_loss_minimum(path):
    x0, g = _x0(1)
    f = G.field("noise")
    per = losses.eps_loss(f, path, x0, generator=g, reduce=False)
    _check(per, _eps_min(path))
    x0, g = _x0(1)
    assert losses.eps_loss(Perturbed(f), path, x0, generator=g) > per.mean()


@pytest.mark.parametrize("path", [sf.VP(), sf.VE(), sf.DiscreteVP()], ids=repr)
def test_dsm_loss_minimum(path):
    # with lambda = sigma^2, sigma^2 |s + eps/sigma|^2 = |eps + sigma s|^2: the same minimum as the eps loss
    x0, g = _x0(2)
    f = G.field("score")
    per = losses.dsm_loss(f, path, x0, generator=g, reduce=False)
    _check(per, _eps_min(path))
    x0, g = _x0(2)
    assert losses.dsm_loss(Perturbed(f), path, x0, generator=g) > per.mean()


@pytest.mark.parametrize("path", [sf.LinearFlow(), sf.AffinePath(lambda t: 1 - t, lambda t: torch.sqrt(t)),
                                  sf.VP()], ids=["linear", "affine_sqrt", "vp"])
def test_cfm_loss_minimum(path):
    x0, g = _x0(3)
    f = G.field("velocity")
    per = losses.cfm_loss(f, path, x0, generator=g, reduce=False, t_min=path.t_min)
    _check(per, _cfm_min(path))
    x0, g = _x0(3)
    assert losses.cfm_loss(Perturbed(f), path, x0, generator=g, t_min=path.t_min) > per.mean()


def test_ncsn_loss_minimum():
    sig = torch.logspace(math.log10(2.0), math.log10(0.05), 6, dtype=torch.float64)

    def score(x, s):
        return G.posterior(x, torch.ones_like(s), s)[2]

    x0, g = _x0(4)
    per = losses.ncsn_loss(score, sig, x0, generator=g, reduce=False)
    expected = float((C / (C + sig[:, None] ** 2)).sum(-1).mean())  # sigma^2 tr Cov(z/sigma... ) = tr c/(c+s^2)
    _check(per, expected)
    x0, g = _x0(4)
    assert losses.ncsn_loss(lambda x, s: score(x, s) + 0.2, sig, x0, generator=g) > per.mean()


def test_cd_loss_zero_at_true_energy_with_exact_negatives():
    # exact negatives (K = 0 Langevin steps from exact samples): E[E(x+) - E(x-)] = 0
    def energy(x):
        return (0.5 * (x - MU) ** 2 / C).sum(-1)

    g = torch.Generator().manual_seed(5)
    xp = G.sample(N, generator=g, dtype=torch.float64)
    xn = G.sample(N, generator=g, dtype=torch.float64)
    d = energy(xp) - energy(xn)
    loss = losses.cd_loss(energy, xp, x_neg_init=xn, steps=0, l2=0.0)
    assert abs(float(loss)) < K * float(d.std()) / math.sqrt(N)
    # the energy penalty adds lam * (E+^2 + E-^2)
    lp = losses.cd_loss(energy, xp, x_neg_init=xn, steps=0, l2=0.1)
    assert torch.allclose(lp, loss + 0.1 * (energy(xp).pow(2).mean() + energy(xn).pow(2).mean()))


def test_replay_buffer_reinit():
    buf = losses.ReplayBuffer(lambda n: torch.zeros(n, 2), size=100, reinit=0.25)
    buf.push(torch.ones(100, 2))
    x = buf.draw(4000, generator=torch.Generator().manual_seed(0))
    frac = float((x[:, 0] == 0).double().mean())
    assert abs(frac - 0.25) < K * math.sqrt(0.25 * 0.75 / 4000)


def test_errors_name_argument():
    with pytest.raises(sf.SdeflowValueError, match="sigmas"):
        losses.ncsn_loss(lambda x, s: x, [], torch.zeros(3, 2))
    with pytest.raises(sf.SdeflowValueError, match="x_neg_init"):
        losses.cd_loss(lambda x: x.sum(-1), torch.zeros(3, 2))
