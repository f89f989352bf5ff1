"""Paths: derivatives, log-SNR inverses, SDE coefficients and q(x_t | x_0) against their definitions."""

import math

import numpy as np
import pytest
import torch

import sdeflow as sf
from paths_catalogue import PATHS

D = torch.float64


def _interior_times(name, n=33):
    if name == "DiscreteVP":  # derivatives are piecewise constant: stay inside knot segments
        T = 1000
        return (torch.arange(5, T, 31, dtype=torch.float64)[:n] + 0.5) / T, 1e-5 / T
    return torch.linspace(0.02, 0.98, n, dtype=torch.float64), 1e-6


@pytest.mark.parametrize("name", list(PATHS))
def test_derivatives_match_finite_differences(name):
    path = PATHS[name]()
    t, h = _interior_times(name)
    a, s, da, ds = path.coefficients(t)
    fd_a = (path.alpha(t + h) - path.alpha(t - h)) / (2 * h)
    fd_s = (path.sigma(t + h) - path.sigma(t - h)) / (2 * h)
    torch.testing.assert_close(da, fd_a, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(ds, fd_s, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", list(PATHS))
def test_coefficients_in_window_are_the_coefficients_without_the_domain_check(name):
    """Inside the domain the same tensors bitwise (one-sided too); outside it no error is raised (the caller
    confines the times: adaptive solvers clamp them to a window checked once)."""
    path = PATHS[name]()
    t, _ = _interior_times(name)
    for side in (None, torch.ones_like(t), -torch.ones_like(t)):
        want = path.coefficients(t) if side is None else path.coefficients_one_sided(t, side)
        got = path.coefficients_in_window(t, side)
        assert all(torch.equal(g, w) for g, w in zip(got, want))
    with pytest.raises(sf.SdeflowValueError, match="must be in"):
        path.coefficients(torch.tensor([-0.5], dtype=D))
    path.coefficients_in_window(torch.tensor([-0.5], dtype=D))  # not checked: no error


@pytest.mark.parametrize("name", list(PATHS))
def test_log_snr_inverse_round_trip(name):
    path = PATHS[name]()
    t = torch.linspace(0.001, 0.999, 101, dtype=torch.float64)
    lam = path.log_snr(t)
    assert (lam[1:] < lam[:-1]).all(), "log-SNR must decrease"
    a, s, _, _ = path.coefficients(t)
    torch.testing.assert_close(lam, 2 * torch.log(a / s), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(path.t_from_log_snr(lam), t, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", list(PATHS))
def test_sde_coefficients_match_definitions(name):
    """f = alpha'/alpha and g^2 = d(sigma^2)/dt - 2 f sigma^2 (closed forms override the generic ones)."""
    path = PATHS[name]()
    t, h = _interior_times(name)
    a, s, da, ds = path.coefficients(t)
    torch.testing.assert_close(path.f(t), da / a, rtol=1e-10, atol=1e-12)
    dvar = (path.sigma(t + h) ** 2 - path.sigma(t - h) ** 2) / (2 * h)
    torch.testing.assert_close(path.g2(t), dvar - 2 * (da / a) * s * s, rtol=1e-6, atol=1e-8)
    assert (path.g2(t) > 0).all()


def test_closed_forms_of_song_et_al():
    vp, svp, ve = sf.VP(0.1, 20.0), sf.SubVP(0.1, 20.0), sf.VE(0.01, 50.0)
    t = torch.linspace(0.01, 1, 50, dtype=D)
    beta = 0.1 + t * 19.9
    torch.testing.assert_close(vp.g2(t), beta)
    torch.testing.assert_close(vp.f(t), -beta / 2)
    alpha = torch.exp(-0.5 * (0.1 * t + 0.5 * 19.9 * t * t))
    torch.testing.assert_close(vp.alpha(t), alpha)
    torch.testing.assert_close(svp.sigma(t), 1 - alpha ** 2)
    torch.testing.assert_close(svp.g2(t), beta * (1 - alpha ** 4))
    torch.testing.assert_close(ve.sigma(t), 0.01 * (5000.0 ** t))
    torch.testing.assert_close(ve.g2(t), 2 * ve.sigma(t) ** 2 * math.log(5000.0))


def test_discrete_vp_matches_ddpm_table():
    p = sf.DiscreteVP()
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    torch.testing.assert_close(p.alphas_cumprod, abar)
    knots = p.timesteps
    torch.testing.assert_close(p.alpha(knots) ** 2, abar)
    torch.testing.assert_close(p.sigma(knots) ** 2, 1 - abar)
    i = torch.arange(1000)
    assert torch.equal(p.t_to_index(p.index_to_t(i)), i)
    torch.testing.assert_close(p.t_from_log_snr(p.log_snr(knots)), knots, rtol=1e-12, atol=1e-12)
    assert float(p.alpha(0.0)) == 1.0 and float(p.sigma(0.0)) == 0.0


def test_affine_path_autograd_derivatives_match_given_ones():
    auto = sf.AffinePath(lambda t: torch.cos(0.5 * math.pi * t), lambda t: torch.sin(0.5 * math.pi * t))
    given = sf.AffinePath(lambda t: torch.cos(0.5 * math.pi * t), lambda t: torch.sin(0.5 * math.pi * t),
                          lambda t: -0.5 * math.pi * torch.sin(0.5 * math.pi * t),
                          lambda t: 0.5 * math.pi * torch.cos(0.5 * math.pi * t))
    t = torch.rand(20, dtype=torch.float64)
    for u, v in zip(auto.coefficients(t), given.coefficients(t)):
        torch.testing.assert_close(u, v)


def test_affine_path_rejects_a_path_whose_log_snr_rises():
    with pytest.raises(ValueError, match="decrease strictly"):
        sf.AffinePath(lambda t: t, lambda t: 1 - t)


@pytest.mark.parametrize("name", list(PATHS))
def test_q_sample_moments(name, gen):
    """x_t | x_0 ~ N(alpha x_0, sigma^2): sample mean and variance within 4 standard errors."""
    path = PATHS[name]()
    n = 40000
    x0 = torch.tensor([1.5, -0.5], dtype=D).expand(n, 2)
    for t in (0.1, 0.5, 0.9):
        xt, eps = path.q_sample(x0, torch.full((n,), t, dtype=D), generator=gen)
        a, s = float(path.alpha(t)), float(path.sigma(t))
        torch.testing.assert_close(xt, a * x0 + s * eps)
        mean, var = xt.mean(0), xt.var(0)
        se_mean = s / math.sqrt(n)
        se_var = s * s * math.sqrt(2.0 / (n - 1))
        assert torch.all((mean - a * x0[0]).abs() < 4 * se_mean), (t, mean)
        assert torch.all((var - s * s).abs() < 4 * se_var), (t, var)


def test_prior_sample_scale(gen):
    for path in (sf.VP(), sf.VE(0.01, 50.0), sf.LinearFlow()):
        z = path.prior_sample((50000, 2), generator=gen, dtype=torch.float64)
        s = float(path.sigma(1.0))
        assert abs(float(z.std()) / s - 1) < 4 * math.sqrt(1 / (2 * 1e5))


@pytest.mark.parametrize("bad, match", [
    (lambda: sf.VP(beta_min=20.0, beta_max=0.1), "beta_min must be < beta_max"),
    (lambda: sf.VP(beta_min=-1.0), "beta_min must be >= 0"),
    (lambda: sf.VE(sigma_min=0.0), "sigma_min must be > 0"),
    (lambda: sf.VE(sigma_min=2.0, sigma_max=1.0), "sigma_max must be > sigma_min"),
    (lambda: sf.DiscreteVP(betas=[0.1, 1.5]), "betas must be"),
    (lambda: sf.CosineVP(s=-1), "s must be > 0"),
])
def test_parameter_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


# ---- the path maths the sampler uses: one definition each, in sdeflow.paths ---------------------------------
def test_map_times_and_transfer_scale():
    from sdeflow.paths import map_times, transfer_scale

    import sdeflow.terms

    assert sdeflow.terms.map_times is map_times  # the old import keeps working
    vp, lf = sf.VP(), sf.LinearFlow()
    t = np.array([0.9, 0.5, 0.01])
    tau = map_times(vp, lf, t)
    torch.testing.assert_close(lf.log_snr(torch.as_tensor(tau)), vp.log_snr(torch.as_tensor(t)))
    assert np.array_equal(map_times(vp, vp, t), t)
    # a state of vp at t, times the factor, is the state of lf at tau (same log-SNR: alpha and sigma both scale)
    c = transfer_scale(vp, lf, torch.as_tensor(t), torch.as_tensor(tau))
    torch.testing.assert_close(vp.alpha(torch.as_tensor(t)) * c, lf.alpha(torch.as_tensor(tau)))
    torch.testing.assert_close(vp.sigma(torch.as_tensor(t)) * c, lf.sigma(torch.as_tensor(tau)))
    assert float(transfer_scale(vp, lf, 0.5, float(tau[1]))) == float(lf.scale(float(tau[1])) / vp.scale(0.5))


def test_prior_draw_is_sigma_times_the_sources_first_draw():
    path, like = sf.VE(0.002, 80.0), torch.empty(5, 3, dtype=D)
    z = sf.PerSampleNoise(4).draw(-1, 0.7, 0.7, like)
    assert torch.equal(path.prior_draw(sf.PerSampleNoise(4), like, 0.7), float(path.sigma(0.7)) * z)
    assert torch.equal(path.prior_draw(sf.PerSampleNoise(4), like), float(path.sigma(path.t_max)) * sf.PerSampleNoise(4).draw(-1, 1.0, 1.0, like))


def test_check_shape_and_check_int_messages():
    from sdeflow.errors import check_int
    from sdeflow.paths import check_shape

    assert check_shape(3) == (3,) and check_shape([2, np.int64(4)]) == (2, 4)
    with pytest.raises(sf.SdeflowValueError, match="non-negative integers"):
        check_shape((2, -1))
    with pytest.raises(sf.SdeflowTypeError, match=r"^k must be an integer >= 1, got 2.5 \(float\)$"):
        check_int("k", 2.5)
    with pytest.raises(sf.SdeflowValueError, match=r"^T must be a positive integer, got 2.5 \(float\) \(the steps\)$"):
        check_int("T", 2.5, what="a positive integer", hint=" (the steps)", error=sf.SdeflowValueError)
    with pytest.raises(sf.SdeflowValueError, match=r"^steps must be a non-negative integer, got -1$"):
        check_int("steps", -1, minimum=0, what="a non-negative integer")
    assert check_int("n", np.int64(3)) == 3 and type(check_int("n", np.int64(3))) is int
