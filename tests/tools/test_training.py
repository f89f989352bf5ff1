"""Training smoke tests: for each family a few hundred Adam steps on the 8-mode mixture make the loss fall and
bring the samples closer to the target (sliced-W2) than the same sampler with the untrained network; and every
example script runs in its --quick mode (so the examples do not rot).

"The loss falls": on one fixed evaluation batch with the same noise for both nets (a paired comparison), the
untrained net's per-sample loss exceeds the trained net's by more than 4 standard errors of the paired
difference. Measured (seeds 0-2, 300 steps): falls of 44 (DDPM), 45 (DSM), 38-40 (CFM), 21 (NCSN) standard
errors, loss ratios 0.38, 0.38, 0.66-0.69, 0.81. Sliced-W2 ratios trained/untrained: DDPM 0.003, score 0.0001-
0.0007 (the untrained samplers blow up), flow 0.42-0.54, NCSN 0.02, EBM 0.36 (seed 0); asserted below 0.75
(0.85 for the EBM, whose CD loss is not a divergence and is not asserted to fall).
"""

import copy
import math
import importlib
import importlib.util
import os
import sys

import pytest
import torch

import sdeflow as sf
import sdeflow.metrics  # noqa: F401  (sf.metrics)

from shared import ROOT

TARGET = sf.eight_gaussians()
EXAMPLES = os.path.join(ROOT, "examples")


def _sw2(x):
    ref = TARGET.sample(4000, generator=torch.Generator().manual_seed(99), dtype=torch.float64)
    return sf.metrics.sliced_w2(x.detach().double(), ref, generator=torch.Generator().manual_seed(1))


def _ddpm(net, gen):
    path, field = sf.DiscreteVP(), sf.NoiseField(net)
    return (lambda x0, reduce=True: sf.losses.eps_loss(field, path, x0, generator=gen, reduce=reduce),
            lambda: sf.sample(path, field, "ddim", grid="discrete", steps=30, n=1000, shape=(2,), generator=gen).x)


def _score(net, gen):
    path, field = sf.VP(), sf.NoiseField(net)
    return (lambda x0, reduce=True: sf.losses.dsm_loss(field, path, x0, generator=gen, reduce=reduce),
            lambda: sf.sample(path, field, "pc", gamma="reverse", steps=60, n=1000, shape=(2,), generator=gen).x)


def _flow(net, gen):
    path, field = sf.LinearFlow(), sf.VelocityField(net)
    return (lambda x0, reduce=True: sf.losses.cfm_loss(field, path, x0, generator=gen, reduce=reduce),
            lambda: sf.sample(path, field, "euler", steps=30, n=1000, shape=(2,), t_min=0.0).x)


SIGMAS = torch.logspace(0.6, -2, 10, dtype=torch.float64)  # 4 -> 0.01


def _ncsn(net, gen):
    score = lambda x, s: net(x, (torch.log(s.to(x.dtype)) + 4.6) / 6.0) / s.to(x.dtype)[:, None]
    return (lambda x0, reduce=True: sf.losses.ncsn_loss(score, SIGMAS, x0, generator=gen, reduce=reduce),
            lambda: sf.langevin.annealed_langevin(score, 4.0 * torch.randn(1000, 2, generator=gen), SIGMAS,
                                                  eps=5e-5, steps_per_level=20, generator=gen,
                                                  final_denoise=True).x)


FAMILIES = {"ddpm": _ddpm, "score": _score, "flow": _flow, "ncsn": _ncsn}


def _run(name, seed=0, steps=300):
    """(fall of the loss in standard errors, loss ratio, sliced-W2 ratio), trained over untrained."""
    make = FAMILIES[name]
    torch.manual_seed(seed)  # network initialisation
    gen = torch.Generator().manual_seed(seed)
    net = sf.train.mlp(2, hidden=64)
    untrained = copy.deepcopy(net)
    data = lambda n: TARGET.sample(n, generator=gen, dtype=torch.float32)
    sf.train.fit(make(net, gen)[0], net, data, steps=steps, lr=3e-3, batch=256)
    x_eval = TARGET.sample(4096, generator=torch.Generator().manual_seed(123), dtype=torch.float32)
    with torch.no_grad():  # the same evaluation batch and noise for both nets: a paired comparison
        l_before = make(untrained, torch.Generator().manual_seed(42))[0](x_eval, reduce=False)
        l_after = make(net, torch.Generator().manual_seed(42))[0](x_eval, reduce=False)
        w_before = _sw2(make(untrained, torch.Generator().manual_seed(5))[1]())
        w_after = _sw2(make(net, torch.Generator().manual_seed(5))[1]())
    d = (l_before - l_after).double()
    fall = float(d.mean() / (d.std() / math.sqrt(d.numel())))
    return fall, float(l_after.mean() / l_before.mean()), w_after / w_before


@pytest.mark.parametrize("name", list(FAMILIES))
def test_training_lowers_the_loss_and_the_distance_to_the_target(name):
    fall, _, w2_ratio = _run(name)
    assert fall > 4.0, fall
    assert w2_ratio < 0.75, w2_ratio


def _ebm(seed=0, steps=200):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64), torch.nn.SiLU(),
                              torch.nn.Linear(64, 1))
    untrained = copy.deepcopy(net)
    box = lambda m: (torch.rand(m, 2, generator=gen) * 2 - 1) * 3.5
    buf = sf.losses.ReplayBuffer(box, size=5000, reinit=0.05)
    energy = lambda x: net(x).reshape(-1)
    data = lambda n: TARGET.sample(n, generator=gen, dtype=torch.float32)
    losses = sf.train.fit(lambda xp: sf.losses.cd_loss(energy, xp, buffer=buf, steps=20, step_size=0.01, l2=0.1,
                                                       generator=gen), net, data, steps=steps, lr=1e-3, batch=256)

    def chains(m):
        f = sf.EnergyField(m, time=False)
        x0 = (torch.rand(1000, 2, generator=torch.Generator().manual_seed(5)) * 2 - 1) * 3.5
        return sf.langevin.ula(lambda x: f.score(x, 0.0, None), x0, 0.01, 200,
                               generator=torch.Generator().manual_seed(6)).x

    w_before, w_after = _sw2(chains(untrained)), _sw2(chains(net))
    return losses, w_after / w_before


def test_ebm_training_brings_langevin_samples_closer_to_the_target():
    """The CD loss is a difference of energies whose level drifts with the negatives (measured: -0.18 early,
    -0.13 late), not a divergence that must fall; the test asserts on the samples."""
    losses, w2_ratio = _ebm()
    assert w2_ratio < 0.85, w2_ratio


@pytest.mark.parametrize("name", ["ddpm", "score_sde", "flow_matching", "ebm", "ncsn", "untrained", "digits",
                                  "bench_digits"])
def test_example_runs_in_quick_mode(name):
    if name in ("digits", "bench_digits") and not all(importlib.util.find_spec(m) for m in ("diffusers", "sklearn")):
        pytest.skip("the digits example needs diffusers and scikit-learn (the dev extra)")
    sys.path.insert(0, EXAMPLES)
    try:
        mod = importlib.import_module(name)
        out = mod.main(["--quick", "--no-plot"])
    finally:
        sys.path.remove(EXAMPLES)
    assert out
