"""Fields: energy fields through autograd, adapters, sums and guidance."""

import pytest
import torch

import sdeflow as sf

D = torch.float64


def test_energy_field_score_is_minus_gradient(gen):
    target, path = sf.two_blobs(), sf.VP()
    energy = sf.EnergyField(lambda x, t: -target.log_prob_t(x, t, path))
    x = torch.randn(32, 2, generator=gen, dtype=D)
    for t in (0.05, 0.5, 0.95):
        torch.testing.assert_close(energy.score(x, t, path), target.score(x, t, path), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(energy.noise(x, t, path), target.noise(x, t, path), rtol=1e-10, atol=1e-10)


def test_energy_field_keeps_no_graph_when_sampling():
    w = torch.tensor(2.0, dtype=D, requires_grad=True)
    field = sf.EnergyField(lambda x: 0.5 * w * (x ** 2).sum(-1), time=False)
    out = field.score(torch.randn(4, 2, dtype=D), 0.5, sf.VP())
    assert not out.requires_grad
    torch.testing.assert_close(sf.EnergyField(lambda x: 0.5 * w * (x ** 2).sum(-1), time=False,
                                              create_graph=True).score(torch.ones(1, 2, dtype=D), 0.5, sf.VP()),
                               -2.0 * torch.ones(1, 2, dtype=D))


def test_time_flip_adapter_for_noise_at_zero_velocity_nets():
    """A flow-matching net trained with t = 0 noise (x_s = (1-s) z + s x0, v = x0 - z) is our LinearFlow."""
    target, path = sf.Gaussian([1.0, 2.0], [0.3, 0.5]), sf.LinearFlow()
    ours = target.field("velocity")
    theirs = lambda x, s: -target.velocity(x, 1 - s, path)  # their velocity at their time s = 1 - t
    flipped = sf.VelocityField(theirs, flip_time=True)
    x = torch.randn(8, 2, dtype=D)
    for t in (0.1, 0.6):
        torch.testing.assert_close(flipped.velocity(x, t, path), ours.velocity(x, t, path))
    # kinds other than velocity keep their sign
    eps_theirs = lambda x, s: target.noise(x, 1 - s, path)
    torch.testing.assert_close(sf.NoiseField(eps_theirs, flip_time=True).noise(x, 0.3, path),
                               target.noise(x, 0.3, path))


def test_column_and_index_adapters():
    path = sf.DiscreteVP()
    target = sf.Gaussian([0.5, -1.0], [1.0, 0.5])
    seen = {}

    def column_net(x, t):
        seen["column"] = t.shape
        return target.noise(x, t[:, 0], path)

    def index_net(x, i):
        seen["index"] = (i.dtype, i[:2].tolist())
        return target.noise(x, path.index_to_t(i), path)

    x = torch.randn(5, 2, dtype=D)
    t = torch.full((5,), 0.25, dtype=D)
    torch.testing.assert_close(sf.NoiseField(sf.ColumnTime(column_net)).noise(x, t, path), target.noise(x, t, path))
    torch.testing.assert_close(sf.NoiseField(sf.IndexTime(index_net, 1000)).noise(x, t, path),
                               target.noise(x, t, path))
    assert seen["column"] == (5, 1) and seen["index"] == (torch.int64, [249, 249])


def test_index_adapter_refuses_off_knot_times():
    net = sf.NoiseField(sf.IndexTime(lambda x, i: torch.zeros_like(x), 1000))
    with pytest.raises(ValueError, match="not a knot"):
        sf.sample(sf.DiscreteVP(), net, "heun", steps=10, grid="uniform", x_init=torch.randn(2, 2),
                  t_min=0.001, t_max=0.999)
    # euler on knots works
    sol = sf.sample(sf.DiscreteVP(), net, "euler", steps=10, grid="discrete", x_init=torch.randn(2, 2))
    assert sol.nfe == 10


def test_weighted_sums_and_guidance(gen):
    path = sf.VP()
    a, b = sf.Gaussian([1.0, 0.0], [0.5, 0.5]), sf.Gaussian([-1.0, 1.0], [1.0, 2.0])
    x = torch.randn(16, 2, generator=gen, dtype=D)
    t = 0.4
    fa, fb = a.field("noise"), b.field("data")
    cfg = sf.classifier_free_guidance(fa, fb, 3.0)
    # weights sum to 1: the same field in every kind
    for kind in ("score", "noise", "data", "velocity"):
        want = 4.0 * a.predict(x, t, path, kind) - 3.0 * b.predict(x, t, path, kind)
        torch.testing.assert_close(cfg.as_kind(kind, x, t, path), want, rtol=1e-10, atol=1e-10)
    # otherwise a product of experts: scores add
    poe = 0.5 * fa + 2.0 * fb
    assert poe.kind == "score"
    torch.testing.assert_close(poe.score(x, t, path), 0.5 * a.score(x, t, path) + 2.0 * b.score(x, t, path))
    diff = fa - fb
    torch.testing.assert_close(diff.score(x, t, path), a.score(x, t, path) - b.score(x, t, path))


def test_bare_network_is_refused_with_a_hint():
    with pytest.raises(TypeError, match="NoiseField"):
        sf.sample(sf.VP(), lambda x, t: x, "euler", steps=2, n=2, shape=(2,))
