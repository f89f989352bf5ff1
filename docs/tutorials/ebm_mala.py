"""Energy-based models with MALA: Langevin sampling of p ∝ exp(-E), its bias, and a tiny CD training.

Run: python docs/tutorials/ebm_mala.py [--small]

ULA, x <- x + h s(x) + sqrt(2h) z with s = -grad E, samples a biased distribution: on N(0, s^2) its
stationary variance is s^2 / (1 - h / (2 s^2)). MALA adds a Metropolis test (it needs the energy itself,
not only its gradient) and removes that bias exactly.
"""

import math
import sys

import torch

import sdeflow as sf
import sdeflow.metrics

SMALL = "--small" in sys.argv
n = 4000 if SMALL else 40000
f64 = dict(dtype=torch.float64)

# ---- 1. ULA's bias and MALA's correction on a Gaussian energy ------------------------------------------
s2 = torch.tensor([0.5, 2.0], **f64)                     # target N(0, diag(s2))


def energy(x):                                            # E(x) = sum x^2 / (2 s^2), shape (batch,)
    return (x ** 2 / (2 * s2)).sum(-1)


def score(x):
    return -x / s2


h = 0.25                                                  # step size: h / (2 s^2) = 0.25 and 0.0625
x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), **f64) * 2.0   # chains start too wide
steps = 200
ula = sf.langevin.ula(score, x0, h, steps, generator=torch.Generator().manual_seed(1))
mala = sf.langevin.mala(energy, x0, h, steps, generator=torch.Generator().manual_seed(2))
ula_theory = s2 / (1 - h / (2 * s2))
se = lambda v: v * math.sqrt(2 / (n - 1))                 # noqa: E731  standard error of a sample variance
print(f"target variance          {s2.tolist()}")
print(f"ULA  h={h}: variance {ula.x.var(0).tolist()}  (theory s^2/(1-h/(2s^2)) = {ula_theory.tolist()})")
print(f"MALA h={h}: variance {mala.x.var(0).tolist()}  (acceptance rate {mala.stats['acceptance_rate']:.3f})")
assert ((ula.x.var(0) - ula_theory).abs() < 4 * se(ula_theory)).all()
assert ((mala.x.var(0) - s2).abs() < 4 * se(s2)).all()

# ---- 2. MALA on a multimodal energy: a Gaussian mixture's -log p -------------------------------------
blobs = sf.two_blobs()
res = sf.langevin.mala(lambda x: -blobs.log_prob(x), blobs.sample(n, generator=torch.Generator().manual_seed(3), **f64),
                       0.05, 50, generator=torch.Generator().manual_seed(4))
err = sf.metrics.moment_errors(res.x, blobs.mean(), blobs.covariance())
print(f"MALA on two blobs (started at the target, 50 steps): acceptance {res.stats['acceptance_rate']:.3f}, "
      f"moment errors {({k: round(float(v), 4) for k, v in err.items()})}")

# ---- 3. A tiny EBM trained by contrastive divergence (negatives from ULA, a replay buffer) -------------
data_mean, data_std = torch.tensor([1.0, -1.0]), torch.tensor([0.5, 1.0])
gen = torch.Generator().manual_seed(5)
mu = torch.zeros(2, requires_grad=True)                   # the energy's parameters: a diagonal Gaussian
log_std = torch.zeros(2, requires_grad=True)


def ebm(x):
    return (((x - mu) / log_std.exp()) ** 2 / 2).sum(-1)


buffer = sf.losses.ReplayBuffer(lambda k: torch.randn(k, 2, generator=gen) * 2, size=4096, reinit=0.05)


def cd(x_pos):
    return sf.losses.cd_loss(ebm, x_pos, buffer=buffer, steps=20, step_size=0.01, l2=0.0, generator=gen)


sf.train.fit(cd, [mu, log_std], lambda b: data_mean + data_std * torch.randn(b, 2, generator=gen),
             steps=150 if SMALL else 1000, lr=0.05, batch=256)
print(f"CD-trained energy: mean {mu.detach().tolist()}, std {log_std.exp().detach().tolist()} "
      f"(data: mean {data_mean.tolist()}, std {data_std.tolist()})")
# sample the trained energy with MALA
with torch.no_grad():
    x = sf.langevin.mala(ebm, torch.zeros(2000, 2), 0.05, 200, generator=torch.Generator().manual_seed(6)).x
print(f"MALA samples of the trained energy: mean {x.mean(0).tolist()}, std {x.std(0).tolist()}")
