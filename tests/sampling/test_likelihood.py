"""sdeflow.log_likelihood against exact oracles.

Reference answers: on a Gaussian or Gaussian-mixture oracle the marginal density p_t is exact under every path
(`log_prob_t`), so the ODE's answer log p_{t_min}(x) is known; where alpha(t_max) != 0 the test passes the exact
marginal at t_max as the prior (the default Gaussian prior is an approximation, documented in the module), or uses
LinearFlow (alpha(1) = 0: the Gaussian prior is exact) down to t_min = 0, where the answer is the data's log_prob.
"""

from __future__ import annotations

import math

import pytest
import torch

import sdeflow as sf
from sdeflow.likelihood import EXACT_MAX_DIM, bits_per_dim, gaussian_log_prob

from shared import GAUSSIAN as GAUSS

D64 = torch.float64


def _x(target, n, seed):
    return target.sample(n, generator=torch.Generator().manual_seed(seed), dtype=D64)


def _bound(r, tol):
    """The sum of the local errors dopri5 allows over its accepted steps, atol + rtol |state| each (the global
    error of a flow that does not amplify errors; log p at the end point reads x_T through |x_T| / sigma^2)."""
    m = 1.0 + max(float(r.log_lik.abs().max()), float(r.x_T.abs().max()))
    acc = r.stats["accepted"]  # per sample (dopri5's own steps): the most any sample took
    return int(acc.max()) * tol * m * m if isinstance(acc, torch.Tensor) else acc * tol * m * m


@pytest.mark.parametrize("target", [GAUSS, sf.eight_gaussians()], ids=["gaussian", "eight_gaussians"])
def test_linear_flow_to_t0_converges_to_log_prob(target):
    """LinearFlow, velocity oracle, window [0, 1]: the prior N(0, I) is exact and t_min = 0 is the data, so the
    answer is target.log_prob(x). The error falls as the tolerance shrinks and stays within the sum of the
    allowed local errors."""
    x = _x(target, 64, 0)
    exact = target.log_prob(x)
    errs = []
    for tol in (1e-4, 1e-6, 1e-8):
        r = sf.log_likelihood(sf.LinearFlow(), target.field("velocity"), x, "dopri5", rtol=tol, atol=tol)
        assert r.stats["divergence"] == "exact" and r.stderr is None and r.stats["t_min"] == 0.0
        err = float((r.log_lik - exact).abs().max())
        assert err <= _bound(r, tol), (tol, err)
        errs.append(err)
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-6


@pytest.mark.parametrize("target, kind", [(GAUSS, "noise"), (sf.two_blobs(), "score")], ids=["gaussian", "two_blobs"])
def test_vp_with_exact_prior_converges_to_log_prob_t(target, kind):
    """VP (alpha(1) = 0.0067): with the exact marginal at t_max as the prior, the answer is log p_{t_min}(x)
    (x_at="t_min") or log p_{t_min}(alpha x) + D log alpha (x_at="data", the data smoothed by N(0, tau^2))."""
    path = sf.VP()
    x = _x(target, 48, 1)
    t_min, t_max = path.t_min, path.t_max
    prior = lambda z: target.log_prob_t(z, t_max, path)  # noqa: E731
    a = float(path.alpha(t_min))
    exact = {"t_min": target.log_prob_t(x, t_min, path),
             "data": target.log_prob_t(a * x, t_min, path) + 2 * math.log(a)}
    for x_at in ("t_min", "data"):
        errs = []
        for tol in (1e-5, 1e-7, 1e-9):
            r = sf.log_likelihood(path, target.field(kind), x, "dopri5", rtol=tol, atol=tol, prior=prior, x_at=x_at)
            err = float((r.log_lik - exact[x_at]).abs().max())
            assert err <= _bound(r, tol), (x_at, tol, err)
            errs.append(err)
        assert errs[0] > errs[2] and errs[2] < 1e-6, errs
    assert r.stats["smoothing"] == pytest.approx(float(path.sigma(t_min)) / a)


def test_default_gaussian_prior_error_is_the_documented_one():
    """The default prior N(0, sigma(t_max)^2) changes the result by exactly log N - log p_T at x_T (same
    trajectory), and that is the documented -r mu.z up to the second-order term r^2 (z^T C z - tr C)/2 (bounded
    here by 10 r^2 (1 + max|z|)^2 for C = diag(0.5, 2)), r = alpha/sigma at t_max, z = x_T/sigma."""
    path = sf.VP()
    x = _x(GAUSS, 32, 2)
    field = GAUSS.field("noise")
    exact = sf.log_likelihood(path, field, x, "rk4", steps=40, prior=lambda z: GAUSS.log_prob_t(z, 1.0, path))
    approx = sf.log_likelihood(path, field, x, "rk4", steps=40)
    by_prior = gaussian_log_prob(exact.x_T, float(path.sigma(1.0))) - GAUSS.log_prob_t(exact.x_T, 1.0, path)
    torch.testing.assert_close(approx.log_lik - exact.log_lik, by_prior)
    r = approx.stats["prior_r"]
    assert r == pytest.approx(float(path.alpha(1.0) / path.sigma(1.0)), rel=1e-12)  # 0.0066 on the default VP
    z = exact.x_T / float(path.sigma(1.0))
    first_order = -r * (z @ GAUSS.mu.to(D64))  # the per-sample leading term -r mu.z
    diff = approx.log_lik - exact.log_lik
    assert float((diff - first_order).abs().max()) < 10 * r * r * (1 + float(z.abs().max())) ** 2


def test_hutchinson_is_unbiased_within_its_standard_error():
    """Fixed steps: each probe's integrated estimate is unbiased for the exact-divergence integral on the same
    steps, so the mean over samples of (Hutchinson - exact) is within 4 standard errors of 0, and the reported
    per-sample standard errors are honest (their squares match the squared deviations within 4 standard errors)."""
    target = sf.eight_gaussians()
    x = _x(target, 64, 3)
    path, field = sf.LinearFlow(), target.field("velocity")
    exact = sf.log_likelihood(path, field, x, "rk4", steps=8)
    for probe in ("rademacher", "gaussian"):
        h = sf.log_likelihood(path, field, x, "rk4", steps=8, divergence="hutchinson", probe=probe, n_probes=24, seed=7)
        assert h.stats["divergence"] == "hutchinson" and h.stats["backward_passes"] == h.nfe * 24
        torch.testing.assert_close(h.x_T, exact.x_T, rtol=0, atol=0)  # the probes do not touch the trajectory
        d = h.log_lik - exact.log_lik
        assert float(h.stderr.min()) > 0
        se_mean = float(h.stderr.pow(2).sum().sqrt()) / len(d)
        assert abs(float(d.mean())) < 4 * se_mean, (probe, float(d.mean()), se_mean)
        # d_i is sample i's probe noise alone: E d_i^2 = sigma_i^2 / K = E stderr_i^2, a paired zero-mean difference
        v = d.pow(2) - h.stderr.pow(2)
        assert abs(float(v.mean())) < 4 * float(v.std()) / math.sqrt(len(v)), (probe, float(v.mean()))


def test_rademacher_is_exact_for_a_diagonal_jacobian():
    """A Gaussian with diagonal covariance has a diagonal velocity Jacobian: e^T J e = tr J for every sign
    vector, so Rademacher probes give the exact divergence (zero standard error); Gaussian probes do not."""
    x = _x(GAUSS, 16, 4)
    path, field = sf.VP(), GAUSS.field("score")
    exact = sf.log_likelihood(path, field, x, "heun", steps=10)
    rad = sf.log_likelihood(path, field, x, "heun", steps=10, divergence="hutchinson", n_probes=3)
    torch.testing.assert_close(rad.log_lik, exact.log_lik, rtol=0, atol=1e-12)
    assert float(rad.stderr.max()) < 1e-12
    gau = sf.log_likelihood(path, field, x, "heun", steps=10, divergence="hutchinson", probe="gaussian", n_probes=3)
    assert float(gau.stderr.min()) > 1e-3


def _mlp_field():
    torch.manual_seed(0)
    return sf.VelocityField(sf.train.mlp(dim=2, hidden=16, depth=2).double())


@pytest.mark.parametrize("solver", ["euler", "rk4", "torchdiffeq:midpoint"])
@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_a_sample_does_not_depend_on_its_batch_with_fixed_steps(solver, divergence):
    """Fixed steps: sample i alone (its probes from PerSampleNoise(seed).for_rows(i)) equals row i of the batch,
    bitwise."""
    field, path = _mlp_field(), sf.LinearFlow()
    x = torch.randn(9, 2, dtype=D64, generator=torch.Generator().manual_seed(5))
    kw = dict(steps=6, divergence=divergence, n_probes=2)
    batch = sf.log_likelihood(path, field, x, solver, seed=11, **kw)
    for i in (0, 4, 8):
        alone = sf.log_likelihood(path, field, x[i:i + 1], solver, seed=sf.PerSampleNoise(11).for_rows(i), **kw)
        assert torch.equal(alone.log_lik[0], batch.log_lik[i])
        if divergence == "hutchinson":
            assert torch.equal(alone.stderr[0], batch.stderr[i])


def test_event_shapes_and_auto_divergence():
    """(batch, *event) data: a 4x5 event (D = 20 > 16) picks Hutchinson, a 2x2 one the exact divergence; both
    agree with the flat 2-D computation of a product of independent Gaussians."""
    path = sf.LinearFlow()
    for shape, method in (((2, 2), "exact"), ((4, 5), "hutchinson")):
        D = shape[0] * shape[1]
        target = sf.Gaussian(torch.zeros(D), torch.linspace(0.5, 2.0, D))
        x = _x(target, 8, 6)
        f = sf.VelocityField(lambda xx, t, tg=target: tg.velocity(xx.reshape(-1, D), t, path).reshape(xx.shape))
        r = sf.log_likelihood(path, f, x.reshape(8, *shape), "rk4", steps=12, n_probes=4)
        assert r.stats["divergence"] == method and r.log_lik.shape == (8,) and r.x_T.shape == (8,) + shape
        # a diagonal Jacobian: Rademacher Hutchinson is exact, so both agree with the flat computation
        flat = sf.log_likelihood(path, target.field("velocity"), x, "rk4", steps=12)
        torch.testing.assert_close(r.log_lik, flat.log_lik, rtol=0, atol=1e-10)
    assert EXACT_MAX_DIM == 16


def test_bits_per_dim_convention():
    """Uniform density on [0, 1]^D (log p = 0) with 8-bit bins of width 1/256 is 8 bits per dimension; data on
    [-1, 1] (bins 2/256) under the uniform density 2^-D is 8 bits too. The result's bpd applies the formula."""
    D = 5
    assert float(bits_per_dim(torch.zeros(1, dtype=D64), D, 1 / 256)) == pytest.approx(8.0)
    assert float(bits_per_dim(torch.full((1,), -D * math.log(2.0), dtype=D64), D, 2 / 256)) == pytest.approx(8.0)
    x = _x(GAUSS, 8, 7)
    r = sf.log_likelihood(sf.LinearFlow(), GAUSS.field("velocity"), x, "rk4", steps=8, bin_width=2 / 256)
    torch.testing.assert_close(r.bpd, -(r.log_lik + 2 * math.log(2 / 256)) / (2 * math.log(2.0)))


def test_energy_field_needs_its_graph():
    """An EnergyField's score is taken on a detached x unless create_graph=True: refused, not a silent zero
    divergence; with create_graph=True the exact Gaussian energy gives the exact answer."""
    path = sf.VP()

    def energy(x, t):
        a, s, _, _ = path.coefficients(t.to(D64))
        V = a[:, None] ** 2 * GAUSS.c + s[:, None] ** 2
        return 0.5 * ((x - a[:, None] * GAUSS.mu) ** 2 / V).sum(1)

    x = _x(GAUSS, 8, 8)
    prior = lambda z: GAUSS.log_prob_t(z, 1.0, path)  # noqa: E731
    with pytest.raises(sf.SdeflowValueError, match="create_graph=True"):
        sf.log_likelihood(path, sf.EnergyField(energy), x, "rk4", steps=4)
    r = sf.log_likelihood(path, sf.EnergyField(energy, create_graph=True), x, "dopri5", rtol=1e-9, atol=1e-9,
                          prior=prior, x_at="t_min")
    torch.testing.assert_close(r.log_lik, GAUSS.log_prob_t(x, path.t_min, path), rtol=0, atol=1e-6)


def test_differentiable_gives_the_gradient_of_the_discrete_computation():
    """A linear CNF v = theta x on LinearFlow: log_lik is differentiable in theta (discretise-then-optimise); the
    autograd gradient equals a central finite difference of the same fixed-step computation."""
    x = _x(GAUSS, 6, 9)
    theta = torch.tensor(0.3, dtype=D64, requires_grad=True)

    def ll(th, differentiable):
        f = sf.VelocityField(lambda xx, t: th * xx)
        return sf.log_likelihood(sf.LinearFlow(), f, x, "rk4", steps=5, differentiable=differentiable).log_lik.sum()

    (grad,) = torch.autograd.grad(ll(theta, True), theta)
    h = 1e-5
    with torch.no_grad():
        fd = (ll(theta.detach() + h, False) - ll(theta.detach() - h, False)) / (2 * h)
    torch.testing.assert_close(grad, fd, rtol=1e-7, atol=1e-9)
    # exact flow: x_T = e^theta x, log_lik = log N(e^theta x; 0, I) + D theta
    xt = math.exp(0.3) * x
    exact = (gaussian_log_prob(xt, 1.0) + 2 * 0.3).sum()
    assert abs(float(ll(theta.detach(), False)) - float(exact)) < 1e-4


def test_no_graph_is_kept_by_default():
    field = _mlp_field()
    x = torch.randn(4, 2, dtype=D64, generator=torch.Generator().manual_seed(10))
    r = sf.log_likelihood(sf.LinearFlow(), field, x, "euler", steps=3)
    assert not r.log_lik.requires_grad and not r.x_T.requires_grad
    assert all(p.grad is None for p in field.net.parameters())


def test_trained_flow_matching_model_beats_untrained():
    """A tiny velocity MLP trained with cfm_loss for 300 steps on eight_gaussians has a higher mean held-out
    log-likelihood than the same network untrained, by more than 6 standard errors of the paired difference,
    and no higher than the data's own log density (KL >= 0) beyond 4 standard errors."""
    path, target = sf.LinearFlow(), sf.eight_gaussians()
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    untrained = sf.VelocityField(sf.train.mlp(dim=2, hidden=64, depth=2))
    torch.manual_seed(0)
    net = sf.train.mlp(dim=2, hidden=64, depth=2)
    field = sf.VelocityField(net)
    sf.train.fit(lambda x0: sf.losses.cfm_loss(field, path, x0, generator=gen), net,
                 lambda n: target.sample(n, generator=gen), steps=300, lr=3e-3, batch=256)
    x = target.sample(512, generator=torch.Generator().manual_seed(1))
    a = sf.log_likelihood(path, field, x, "rk4", steps=20)
    b = sf.log_likelihood(path, untrained, x, "rk4", steps=20)
    d = a.log_lik - b.log_lik
    assert float(d.mean()) > 6 * float(d.std()) / math.sqrt(len(d))
    gap = a.log_lik.double() - target.log_prob(x.double())
    assert float(gap.mean()) < 4 * float(gap.std()) / math.sqrt(len(gap))


# ---- refusals --------------------------------------------------------------------------------------------------
def test_refusals():
    x = _x(GAUSS, 4, 11)
    path, f = sf.VP(), GAUSS.field("noise")
    with pytest.raises(sf.SdeflowValueError, match="cannot integrate the divergence.*dopri5"):
        sf.log_likelihood(path, f, x, "dpm_solver_2", steps=4)
    with pytest.raises(sf.SdeflowValueError, match="SDE solver"):
        sf.log_likelihood(path, f, x, "euler_maruyama", steps=4)
    with pytest.raises(sf.SdeflowValueError, match="give steps="):
        sf.log_likelihood(path, f, x, "rk4")
    with pytest.raises(sf.SdeflowValueError, match="strictly increasing"):
        sf.log_likelihood(path, f, x, "rk4", grid=[1.0, 0.5, 0.01])
    with pytest.raises(sf.SingularityError):
        sf.log_likelihood(sf.LinearFlow(), GAUSS.field("noise"), x, "rk4", steps=4, t_max=1.0)
    with pytest.raises(sf.SdeflowValueError, match="prior"):
        sf.log_likelihood(path, f, x, "rk4", steps=2, prior=lambda z: z)
    with pytest.raises(sf.SdeflowValueError, match="inference_mode"):
        with torch.inference_mode():
            sf.log_likelihood(path, f, x, "rk4", steps=2)
    with pytest.raises(sf.SdeflowValueError, match="does not depend on x"):
        sf.log_likelihood(path, sf.VelocityField(lambda xx, t: xx.detach()), x, "rk4", steps=2)


def test_dopri5_exact_divergence_is_per_sample_and_batch_invariant():
    """Per-sample step control (dopri5's default): each sample's log-likelihood is bitwise the same computed
    alone or in a batch of 64, and meets its tolerance against the exact log_prob."""
    target = sf.eight_gaussians()
    x = _x(target, 64, 1)
    whole = sf.log_likelihood(sf.LinearFlow(), target.field("velocity"), x, "dopri5", rtol=1e-6, atol=1e-6)
    for i in (0, 17, 63):
        alone = sf.log_likelihood(sf.LinearFlow(), target.field("velocity"), x[i:i + 1], "dopri5", rtol=1e-6,
                                  atol=1e-6)
        assert torch.equal(alone.log_lik, whole.log_lik[i:i + 1])
    assert whole.stats["accepted"].shape == (64,)


def test_dopri5_hutchinson_is_per_sample_and_batch_invariant():
    """Hutchinson's probes travel with their samples through per-sample step control (finished samples leave the
    batched evaluation): a sample's estimate is bitwise the same alone (with its probes, ``for_rows(i)``) or in a
    batch, its steps are its own (they differ across the batch), and with Rademacher probes in 2-D the estimate
    stays within its tolerance-sized distance of the exact divergence's on average (the probe noise has mean 0:
    ``E[e^T J e] = tr J``)."""
    target = sf.eight_gaussians()
    x = _x(target, 64, 2)
    field, path, noise = target.field("velocity"), sf.LinearFlow(), sf.PerSampleNoise(5)
    kw = dict(divergence="hutchinson", n_probes=2, rtol=1e-6, atol=1e-6)
    whole = sf.log_likelihood(path, field, x, "dopri5", seed=noise, **kw)
    assert whole.stats["accepted"].shape == (64,) and len(set(whole.stats["evaluations"].tolist())) > 1
    for i in (0, 17, 63):
        alone = sf.log_likelihood(path, field, x[i:i + 1], "dopri5", seed=noise.for_rows(i), **kw)
        assert torch.equal(alone.log_lik, whole.log_lik[i:i + 1])
        assert torch.equal(alone.stderr, whole.stderr[i:i + 1])
        assert torch.equal(alone.stats["evaluations"], whole.stats["evaluations"][i:i + 1])
    exact = sf.log_likelihood(path, field, x, "dopri5", rtol=1e-6, atol=1e-6)
    d = whole.log_lik - exact.log_lik  # probe noise (mean 0) plus two solves' errors at 1e-6
    assert abs(float(d.mean())) < 4 * float(d.std()) / math.sqrt(len(d)) + 1e-4
