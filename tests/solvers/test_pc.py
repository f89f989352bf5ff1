"""Predictor-corrector sampling (Song et al. 2021): the corrector's signal-to-noise step, its invariance of p_t
up to the Langevin step bias, and exact Gaussian marginals from the exact score."""

import math

import pytest
import torch

import sdeflow as sf
from sdeflow.solvers.predictor_corrector import langevin_correct

from shared import GAUSSIAN as TARGET

D = torch.float64


@pytest.mark.parametrize("norm", ["sample", "batch"])
def test_corrector_step_is_the_snr_rule(norm):
    g = torch.Generator().manual_seed(0)
    x, s, z = (torch.randn(5, 3, generator=g, dtype=D) for _ in range(3))
    r, a = 0.16, 0.9
    zn, sn = z.norm(dim=1, keepdim=True), s.norm(dim=1, keepdim=True)
    if norm == "batch":
        zn, sn = zn.mean().expand(5, 1), sn.mean().expand(5, 1)
    eps = 2 * a * (r * zn / sn) ** 2
    want = x + eps * s + torch.sqrt(2 * eps) * z
    torch.testing.assert_close(langevin_correct(x, s, z, r, a, norm), want, rtol=1e-14, atol=1e-14)


def test_corrector_keeps_p_t_invariant_up_to_its_step_bias():
    """From exact samples of p_t (VP, t = 0.3), K corrector steps with the exact score leave the mean and
    follow ULA's variance recursion V_k = (1 - h_k/V)^2 V_{k-1} + 2 h_k (stationary V / (1 - h/(2V)),
    a relative bias of about r^2 on the narrow coordinate) within 4 standard errors."""
    path, t, n, K, r = sf.VP(), 0.3, 20000, 100, 0.16
    m, V = TARGET.moments(path, t)
    score = TARGET.field("score")
    g = torch.Generator().manual_seed(5)
    x = TARGET.marginal(path, t).sample(n, generator=g, dtype=D)
    Vk = V.clone()
    for _ in range(K):
        s = score.score(x, t, path)
        z = torch.randn(x.shape, generator=g, dtype=D)
        h = 2 * r * r * (z.norm(dim=1).mean() / s.norm(dim=1).mean()) ** 2
        x = langevin_correct(x, s, z, r)
        Vk = (1 - h / V) ** 2 * Vk + 2 * h
    se_m, se_v = (Vk / n).sqrt(), Vk * math.sqrt(2.0 / (n - 1))
    assert torch.all((x.mean(0) - m).abs() < 4 * se_m)
    assert torch.all((x.var(0) - Vk).abs() < 4 * se_v), (x.var(0), Vk, V)
    # the step bias is real and resolved by this sample size on the narrow coordinate
    assert (Vk[0] - V[0]) > 2 * se_v[0]


@pytest.mark.parametrize("path,t_min,kind", [(sf.VP(), 1e-3, "noise"), (sf.VE(), 0.0, "data")],
                         ids=["VP", "VE"])
def test_pc_sampler_reproduces_gaussian_marginals(path, t_min, kind):
    """Exact prior and exact field (given as noise/data: the corrector converts to the score): samples at
    t_min have mean m_t and variance V_t within 4 standard errors. snr = 0.05 keeps the corrector's bias
    (about r^2 = 0.25% relative) and the predictor's O(h) bias at 200 steps below the Monte Carlo error
    (1.4% relative for n = 10000)."""
    n, steps, M = 10000, 200, 1
    mt, Vt = TARGET.moments(path, t_min)
    g = torch.Generator().manual_seed(11)
    x1 = TARGET.marginal(path, 1.0).sample(n, generator=g, dtype=D)
    sol = sf.sample(path, TARGET.field(kind), "pc", steps=steps, x_init=x1, gamma="reverse", t_min=t_min,
                    generator=g, snr=0.05, corrector_steps=M)
    assert sol.nfe == steps * (1 + M)
    se_m, se_v = (Vt / n).sqrt(), Vt * math.sqrt(2.0 / (n - 1))
    assert torch.all((sol.x.mean(0) - mt).abs() < 4 * se_m), (sol.x.mean(0), mt)
    assert torch.all((sol.x.var(0) - Vt).abs() < 4 * se_v), (sol.x.var(0), Vt)


def test_per_sample_norms_do_not_depend_on_the_batch():
    kw = dict(steps=6, x_init=torch.randn(6, 2, dtype=D), gamma="reverse", noise=sf.PerSampleNoise(2), preflight=False,
              norm="sample", t_min=1e-2)
    a = sf.sample(sf.VP(), TARGET.field("noise"), "pc", **kw).x
    b = sf.sample(sf.VP(), TARGET.field("noise"), "pc", chunk_size=2, **kw).x
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bad_options_name_the_argument():
    for kw, word in (({"snr": 0}, "snr"), ({"corrector_steps": -1}, "corrector_steps"), ({"norm": "x"}, "norm"),
                     ({"alpha": float("nan")}, "alpha")):
        with pytest.raises(ValueError, match=word):
            sf.solvers.get("pc", **kw)


def test_per_sample_norms_make_pc_batch_independent():
    """norm="sample" declares (and is) batch independent; the default batch norms declare the coupling."""
    from sdeflow.solvers.predictor_corrector import PredictorCorrector
    from sdeflow.testing.properties import assert_batch_independent

    assert PredictorCorrector(norm="sample").batch_independent
    assert not PredictorCorrector().batch_independent
    assert_batch_independent(PredictorCorrector(norm="sample"))
