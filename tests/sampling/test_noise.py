"""Reproducible per-sample noise: sample i's result depends only on (seed, i), never on the batch it ran in.

PerSampleNoise draws the normals of sample i at step k from a counter-based hash of (seed, i, k, draw,
element); these tests check the promise end to end, for the prior draw and every fixed-step SDE solver
(SRA1 and the predictor-corrector draw several normals per step), under batch size changes, chunking and
row offsets (the distributed shards). The field is an exact oracle, which computes each row on its own.
"""

import math

import pytest
import torch

import sdeflow as sf

from shared import GAUSSIAN as TARGET

D = torch.float64
SDE_SOLVERS = sf.solvers.available(sde=True, adaptive=False)


def test_every_fixed_step_sde_solver_is_covered():
    assert {"euler_maruyama", "stochastic_heun", "sra1", "sde_dpmpp_2m"} <= set(SDE_SOLVERS)
    assert sf.solvers.get("sra1").normals_per_step == 2


# solvers whose step couples the samples of a batch, and the option that makes it per sample
PER_SAMPLE_OPTIONS = {"pc": {"norm": "sample"}}  # batch-averaged norms in the corrector's step size


@pytest.mark.parametrize("solver", SDE_SOLVERS)
def test_sample_i_is_bitwise_identical_whatever_the_batch(solver):
    kw = dict(steps=4, shape=(2,), dtype=D, gamma="reverse", t_min=1e-2, preflight=False,  # bits, not accuracy
              **PER_SAMPLE_OPTIONS.get(solver, {}))
    run = lambda **k: sf.sample(sf.VP(), TARGET.field("noise"), solver, **{**kw, **k}).x  # noqa: E731
    whole = run(n=11, noise=sf.PerSampleNoise(5))
    assert torch.isfinite(whole).all()
    assert torch.equal(run(n=4, noise=sf.PerSampleNoise(5)), whole[:4])  # a smaller batch
    assert torch.equal(run(n=11, noise=sf.PerSampleNoise(5), chunk_size=3), whole)  # chunks of 3, 3, 3, 2
    assert torch.equal(run(n=5, noise=sf.PerSampleNoise(5, offset=6)), whole[6:])  # a shard of rows 6..10
    assert not torch.equal(run(n=4, noise=sf.PerSampleNoise(6)), whole[:4])  # the seed matters


def test_prior_draw_is_per_sample():
    """The prior draw is the step k = -1 normals of each sample, scaled by sigma(t_max)."""
    src = sf.PerSampleNoise(3)
    big = src.draw(-1, 1.0, 1.0, torch.empty(9, 3, 2, dtype=D))
    assert torch.equal(src.for_rows(4).draw(-1, 1.0, 1.0, torch.empty(5, 3, 2, dtype=D)), big[4:])
    sol = sf.sample(sf.VP(), TARGET.field("noise"), "euler", steps=1, n=9, shape=(3, 2), dtype=D, noise=3,
                    return_trajectory=True, preflight=False)  # one step: only the draw matters here
    assert torch.equal(sol.trajectory[0], float(sf.VP().sigma(1.0)) * big)


def test_draws_are_standard_normal_and_independent_across_steps_draws_and_elements():
    """10^5 values per stream: mean, variance and cross-correlations within 5 standard errors
    (SE of a mean or correlation = 1/sqrt(n); of the variance sqrt(2/n)); Kolmogorov-Smirnov statistic
    below its 0.1% critical value 1.95/sqrt(n)."""
    n = 50_000
    src = sf.PerSampleNoise(11)
    like = torch.empty(n, 2, dtype=D)
    a1, a2 = src.draw(0, 1.0, 0.9, like, count=2)
    b = src.draw(1, 0.9, 0.8, like)
    assert torch.equal(a1, src.draw(0, 1.0, 0.9, like))  # draw 0 of a count=2 call is the count=1 draw
    streams = {"step0": a1.flatten(), "step0_draw2": a2.flatten(), "step1": b.flatten()}
    m = 2 * n
    for name, z in streams.items():
        assert abs(float(z.mean())) < 5 / math.sqrt(m), name
        assert abs(float(z.var()) - 1) < 5 * math.sqrt(2 / m), name
        zs, _ = torch.sort(z)
        cdf = 0.5 * (1 + torch.erf(zs / math.sqrt(2)))
        ecdf = torch.arange(1, m + 1, dtype=D) / m
        assert float((cdf - ecdf).abs().max()) < 1.95 / math.sqrt(m), name
    pairs = [(a1.flatten(), a2.flatten()), (a1.flatten(), b.flatten()), (a1[:, 0], a1[:, 1]),
             (a1[:-1, 0], a1[1:, 0])]  # draws, steps, elements of one sample, neighbouring samples
    for u, v in pairs:
        assert abs(float(torch.corrcoef(torch.stack([u, v]))[0, 1])) < 5 / math.sqrt(u.numel())


def test_float32_draws_are_the_float64_draws_rounded():
    src = sf.PerSampleNoise(2)
    z64 = src.draw(3, 0.5, 0.4, torch.empty(6, 4, dtype=D))
    z32 = src.draw(3, 0.5, 0.4, torch.empty(6, 4, dtype=torch.float32))
    assert torch.equal(z32, z64.to(torch.float32))


@pytest.mark.skipif("pc" not in SDE_SOLVERS, reason="no predictor-corrector solver")
def test_batch_coupled_solver_options_are_not_per_sample():
    """pc's default norm='batch' averages norms over the batch: a sample depends on its batch-mates."""
    kw = dict(steps=4, shape=(2,), dtype=D, gamma="reverse", t_min=1e-2, noise=sf.PerSampleNoise(5), preflight=False)
    a = sf.sample(sf.VP(), TARGET.field("noise"), "pc", n=8, **kw).x
    b = sf.sample(sf.VP(), TARGET.field("noise"), "pc", n=4, **kw).x
    assert not torch.equal(a[:4], b)


def test_generator_noise_is_not_per_sample():
    """The default (fast) source ties a sample's noise to the batch: the documented trade-off."""
    kw = dict(steps=4, shape=(2,), dtype=D, gamma="reverse", solver="euler_maruyama", preflight=False)
    a = sf.sample(sf.VP(), TARGET.field("noise"), n=8, generator=torch.Generator().manual_seed(0), **kw).x
    b = sf.sample(sf.VP(), TARGET.field("noise"), n=4, generator=torch.Generator().manual_seed(0), **kw).x
    assert not torch.equal(a[:4], b)
