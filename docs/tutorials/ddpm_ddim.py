"""DDPM and DDIM: train a noise-prediction network on DDPM's chain, sample ancestrally and with DDIM.

Run: python docs/tutorials/ddpm_ddim.py [--small]

Part 1 uses the exact noise prediction of a Gaussian (the best any network could learn) so the samplers
can be checked against exact answers; part 2 trains a small network with DDPM's loss.
"""

import math
import sys

import torch

import sdeflow as sf
import sdeflow.testing

SMALL = "--small" in sys.argv
n = 2000 if SMALL else 20000
f64 = dict(dtype=torch.float64)

path = sf.DiscreteVP()                       # beta linear 1e-4..0.02, T = 1000, knots t_i = i/T
target = sf.Gaussian(torch.tensor([1.0, -1.0]), torch.tensor([0.25, 1.0]))
eps_field = target.field("noise")            # exact E[eps | x_t]: stands in for a perfectly trained net

# ---- Part 1a: DDPM's ancestral sampler on all 1000 knots (999 steps) reproduces the data distribution
x1 = path.prior_sample((n, 2), generator=torch.Generator().manual_seed(0), **f64)
for variance in ("posterior",) if SMALL else ("posterior", "beta"):
    sol = sf.sample(path, eps_field, "ancestral", grid="discrete", steps=path.T - 1, variance=variance,
                    x_init=x1, generator=torch.Generator().manual_seed(1))
    mean, var = sol.x.mean(0), sol.x.var(0)
    se_mean, se_var = (target.c / n).sqrt(), target.c * math.sqrt(2 / (n - 1))
    print(f"ancestral ({variance:9s}): mean {mean.tolist()}, var {var.tolist()}  (NFE {sol.nfe})")
    # Monte Carlo tolerance: 4 standard errors of the sample mean and variance
    assert ((mean - target.mu).abs() < 4 * se_mean).all() and ((var - target.c).abs() < 4 * se_var).all()

# ---- Part 1b: DDIM (eta = 0) is the first-order solver of the probability-flow ODE ------------------
# Against the exact flow map of the Gaussian from the same noise, its error halves as the steps double.
exact = target.flow(x1, path, path.t_max, path.t_min)
errors = []
for steps in (10, 20, 40, 80):
    sol = sf.sample(path, eps_field, "ddim", eta=0.0, grid="discrete", steps=steps, x_init=x1)
    errors.append((sol.x - exact).pow(2).sum(-1).mean().sqrt().item())
    print(f"DDIM eta=0, {steps:3d} steps: RMS distance to the exact flow {errors[-1]:.3e}")
fit = sf.testing.fit_order([1 / 10, 1 / 20, 1 / 40, 1 / 80], errors)
print(f"fitted order {fit.slope:.2f} +- {fit.stderr:.2f} (DDIM declares {sf.solvers.get('ddim').order})")
assert all(b < a for a, b in zip(errors, errors[1:]))

# DDIM with eta = 1 is stochastic (DDPM's posterior noise) and keeps the marginals.
if not SMALL:
    sol = sf.sample(path, eps_field, "ddim", eta=1.0, grid="discrete", steps=path.T - 1, x_init=x1,
                    generator=torch.Generator().manual_seed(2))
    print(f"DDIM eta=1: mean {sol.x.mean(0).tolist()}, var {sol.x.var(0).tolist()}")

# ---- Part 2: train a noise-prediction network with DDPM's loss, then sample ---------------------------
torch.manual_seed(0)                          # the network's initial weights (the user's choice)
net = sf.train.mlp(dim=2, hidden=64, depth=2)
field = sf.NoiseField(net)
gen = torch.Generator().manual_seed(3)


def data(batch):
    return target.sample(batch, generator=gen)


def loss_fn(x0):
    return sf.losses.eps_loss(field, path, x0, generator=gen)


# evaluate both on the same held-out data, times and noise
x_eval = target.sample(4096, generator=torch.Generator().manual_seed(4))


def held_out(f):
    with torch.no_grad():
        return sf.losses.eps_loss(f, path, x_eval, generator=torch.Generator().manual_seed(5), reduce=False)


before = held_out(field).mean().item()
sf.train.fit(loss_fn, net, data, steps=150 if SMALL else 2000, lr=3e-3, batch=256)
after = held_out(field)
best = held_out(target.field("noise"))  # the minimiser of the loss: E tr Cov(eps | x_t)
print(f"eps loss on held-out data: untrained {before:.3f}, trained {after.mean():.3f}, "
      f"exact minimiser {best.mean():.3f}")
assert after.mean() < before
# the exact noise prediction minimises the loss: no network beats it beyond Monte Carlo noise
diff = after.double() - best
assert diff.mean() > -4 * diff.std() / math.sqrt(diff.numel())

with torch.no_grad():
    sol = sf.sample(path, field, "ddim", eta=0.0, grid="discrete", steps=50, n=2000, shape=(2,),
                    generator=torch.Generator().manual_seed(6))
print(f"trained net, DDIM 50 steps: mean {sol.x.mean(0).tolist()}, var {sol.x.var(0).tolist()} "
      f"(data: mean {target.mu.tolist()}, var {target.c.tolist()})")
