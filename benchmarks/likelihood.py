"""The figures of docs/likelihood.md: sdeflow.log_likelihood against exact oracles.

Run: OMP_NUM_THREADS=1 python benchmarks/likelihood.py   (about a minute on one CPU thread; prints markdown tables)

1. Convergence with dopri5's tolerance (rtol = atol), exact divergence, float64: eight_gaussians on LinearFlow
   over [0, 1] (the prior N(0, I) is exact and t_min = 0 is the data: the answer is log_prob), two_blobs on VP with
   the exact marginal at t_max as the prior (the answer is log p_{t_min}).
2. Fixed-step rk4 on the first problem: the error against the number of steps.
3. Hutchinson's estimator: the per-probe standard deviation of the integrated estimate (Rademacher, Gaussian) and
   its bias against the exact divergence on the same steps.
4. The default Gaussian prior on VP: its error against the exact marginal, with the documented first-order term.
5. dopri5's batch coupling: one sample's log-likelihood computed alone vs in a batch of 256, against the error of
   each against a fine rk4 reference, for a flow-matching network trained as in tests/sampling/test_likelihood.py.
"""

from __future__ import annotations

import math

import torch

import sdeflow as sf
from sdeflow.likelihood import gaussian_log_prob

D64 = torch.float64


def x_of(target, n, seed, dtype=D64):
    return target.sample(n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def convergence():
    print("### 1. dopri5: error against the tolerance (exact divergence, float64, 256 samples)\n")
    print("| problem | rtol = atol | NFE | accepted steps | max abs error (nats) | mean abs error |")
    print("|---|---|---|---|---|---|")
    tg = sf.eight_gaussians()
    x = x_of(tg, 256, 0)
    ex = tg.log_prob(x)
    for tol in (1e-3, 1e-5, 1e-7, 1e-9):
        r = sf.log_likelihood(sf.LinearFlow(), tg.field("velocity"), x, "dopri5", rtol=tol, atol=tol)
        e = (r.log_lik - ex).abs()
        print(f"| eight_gaussians, LinearFlow [0, 1] | {tol:g} | {r.nfe} | {r.stats['accepted']} | {e.max():.2e} | "
              f"{e.mean():.2e} |")
    tg, path = sf.two_blobs(), sf.VP()
    x = x_of(tg, 256, 1)
    ex = tg.log_prob_t(x, path.t_min, path)
    prior = lambda z: tg.log_prob_t(z, path.t_max, path)  # noqa: E731
    for tol in (1e-3, 1e-5, 1e-7, 1e-9):
        r = sf.log_likelihood(path, tg.field("score"), x, "dopri5", rtol=tol, atol=tol, prior=prior, x_at="t_min")
        e = (r.log_lik - ex).abs()
        print(f"| two_blobs, VP [1e-3, 1], exact prior | {tol:g} | {r.nfe} | {r.stats['accepted']} | {e.max():.2e} | "
              f"{e.mean():.2e} |")
    print("\n### 2. rk4: error against the number of steps (eight_gaussians, LinearFlow [0, 1])\n")
    print("| steps | NFE | max abs error | mean abs error | observed order |")
    print("|---|---|---|---|---|")
    tg = sf.eight_gaussians()
    x = x_of(tg, 256, 0)
    ex = tg.log_prob(x)
    prev = None
    for steps in (4, 8, 16, 32, 64):
        r = sf.log_likelihood(sf.LinearFlow(), tg.field("velocity"), x, "rk4", steps=steps)
        e = (r.log_lik - ex).abs()
        order = "" if prev is None else f"{math.log2(prev / float(e.mean())):.2f}"
        prev = float(e.mean())
        print(f"| {steps} | {r.nfe} | {e.max():.2e} | {e.mean():.2e} | {order} |")


def hutchinson():
    print("\n### 3. Hutchinson: spread and bias (eight_gaussians, LinearFlow [0, 1], rk4 16 steps, 256 samples)\n")
    print("| probe | probes / sample | per-probe sd (median over samples) | mean(Hutchinson - exact) | its standard "
          "error | honesty of stderr: mean(d^2 - stderr^2) / its SE |")
    print("|---|---|---|---|---|---|")
    tg = sf.eight_gaussians()
    x = x_of(tg, 256, 3)
    path, f = sf.LinearFlow(), tg.field("velocity")
    exact = sf.log_likelihood(path, f, x, "rk4", steps=16)
    for probe in ("rademacher", "gaussian"):
        K = 16
        h = sf.log_likelihood(path, f, x, "rk4", steps=16, divergence="hutchinson", probe=probe, n_probes=K, seed=1)
        d = h.log_lik - exact.log_lik
        se = float(h.stderr.pow(2).sum().sqrt()) / len(d)
        v = d.pow(2) - h.stderr.pow(2)  # d is probe noise alone: E d^2 = E stderr^2, so v has mean 0
        z2 = float(v.mean()) / (float(v.std()) / math.sqrt(len(v)))
        print(f"| {probe} | {K} | {float(h.stderr.median()) * math.sqrt(K):.3f} | {float(d.mean()):+.4f} | {se:.4f} | "
              f"{z2:+.2f} |")


def prior_error():
    print("\n### 4. The default prior N(0, sigma(1)^2 I) on VP (Gaussian N([1, -0.5], diag(0.5, 2)), 4096 samples)\n")
    tg, path = sf.Gaussian([1.0, -0.5], [0.5, 2.0]), sf.VP()
    x = x_of(tg, 4096, 2)
    exact = sf.log_likelihood(path, tg.field("noise"), x, "rk4", steps=40,
                              prior=lambda z: tg.log_prob_t(z, 1.0, path))
    s = float(path.sigma(1.0))
    diff = gaussian_log_prob(exact.x_T, s) - tg.log_prob_t(exact.x_T, 1.0, path)
    r = float(path.alpha(1.0)) / s
    first = -r * (exact.x_T / s) @ tg.mu.to(D64)
    m, V = tg.moments(path, 1.0)
    kl = 0.5 * float((V / s ** 2 - 1 - torch.log(V / s ** 2) + m ** 2 / s ** 2).sum())
    print(f"r = alpha/sigma at t = 1: {r:.5f}. Error of the default prior per sample: mean {float(diff.mean()):+.2e} "
          f"(exact -KL = {-kl:+.2e}, -(r|mu|)^2/2 = {-(r * float(tg.mu.norm())) ** 2 / 2:+.2e}), "
          f"sd {float(diff.std()):.2e} "
          f"(r |mu| = {r * float(tg.mu.norm()):.2e}); after removing the first-order term -r mu.z: max "
          f"{float((diff - first).abs().max()):.1e}.")


def batch_coupling():
    print("\n### 5. dopri5 couples a batch (trained flow-matching MLP, eight_gaussians, float64, first 64 of 256 "
          "samples)\n")
    path, tg = sf.LinearFlow(), sf.eight_gaussians()
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = sf.train.mlp(dim=2, hidden=64, depth=2)
    field = sf.VelocityField(net)
    sf.train.fit(lambda x0: sf.losses.cfm_loss(field, path, x0, generator=gen), net,
                 lambda n: tg.sample(n, generator=gen), steps=300, lr=3e-3, batch=256)
    net.double()
    x = x_of(tg, 256, 1)
    ref = sf.log_likelihood(path, field, x, "rk4", steps=1000).log_lik
    chk = sf.log_likelihood(path, field, x, "rk4", steps=500).log_lik
    print(f"reference: rk4 with 1000 steps (differs from 500 steps by {float((ref - chk).abs().max()):.1e})\n")
    print("| rtol = atol | error_norm | NFE (batch) | error in batch: max / median | error alone: max / median | "
          "batch vs alone: max / median |")
    print("|---|---|---|---|---|---|")
    m = 64
    for tol in (1e-3, 1e-5, 1e-7):
        for norm in ("sample", "batch"):
            rb = sf.log_likelihood(path, field, x, "dopri5", rtol=tol, atol=tol, error_norm=norm)
            alone = torch.cat([sf.log_likelihood(path, field, x[i:i + 1], "dopri5", rtol=tol, atol=tol,
                                                 error_norm=norm).log_lik for i in range(m)])
            eb, ea, dd = ((rb.log_lik[:m] - ref[:m]).abs(), (alone - ref[:m]).abs(), (alone - rb.log_lik[:m]).abs())
            print(f"| {tol:g} | {norm} | {rb.nfe} | {eb.max():.1e} / {eb.median():.1e} | {ea.max():.1e} / "
                  f"{ea.median():.1e} | {dd.max():.1e} / {dd.median():.1e} |")


if __name__ == "__main__":
    torch.set_num_threads(1)
    convergence()
    hutchinson()
    prior_error()
    batch_coupling()
