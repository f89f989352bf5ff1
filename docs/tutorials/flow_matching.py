"""Flow matching: train a velocity network with the conditional flow-matching loss, sample with an ODE solver.

Run: python docs/tutorials/flow_matching.py [--small]

The path is the linear interpolation x_t = (1 - t) x0 + t eps (rectified flow / conditional OT flow
matching), t = 0 data. The loss regresses v(x_t, t) on alpha' x0 + sigma' eps = eps - x0; its minimiser is
the exact velocity E[eps - x0 | x_t], which the mixture oracle gives.
"""

import math
import sys

import torch

import sdeflow as sf
import sdeflow.metrics

SMALL = "--small" in sys.argv
f64 = dict(dtype=torch.float64)

path = sf.LinearFlow()
target = sf.two_blobs()                     # a 2-D Gaussian mixture with exact fields
gen = torch.Generator().manual_seed(0)

torch.manual_seed(0)                        # initial weights
net = sf.train.mlp(dim=2, hidden=64, depth=3)
field = sf.VelocityField(net)


def data(batch):
    return target.sample(batch, generator=gen)


def loss_fn(x0):
    return sf.losses.cfm_loss(field, path, x0, generator=gen)


x_eval = target.sample(4096, generator=torch.Generator().manual_seed(1))


def held_out(f):  # same held-out data, times and noise for every field
    with torch.no_grad():
        return sf.losses.cfm_loss(f, path, x_eval, generator=torch.Generator().manual_seed(2), reduce=False)


before = held_out(field).mean().item()
losses = sf.train.fit(loss_fn, net, data, steps=300 if SMALL else 3000, lr=3e-3, batch=256)
after = held_out(field)
best = held_out(target.field("velocity"))  # the minimiser: E tr Cov(eps - x0 | x_t)
print(f"CFM loss on held-out data: untrained {before:.3f}, trained {after.mean():.3f}, exact minimiser "
      f"{best.mean():.3f}")
assert after.mean() < before
diff = after.double() - best
assert diff.mean() > -4 * diff.std() / math.sqrt(diff.numel())  # nothing beats the exact velocity

# Sample: the probability-flow ODE dx/dt = v from t = 1 (pure noise on this path) to t = 0.
g = torch.Generator().manual_seed(3)
with torch.no_grad():
    for solver, steps in (("euler", 20), ("midpoint", 10)):
        sol = sf.sample(path, field, solver, steps=steps, n=2000, shape=(2,), generator=g)
        ref = target.sample(2000, generator=torch.Generator().manual_seed(4))
        w2 = sf.metrics.sliced_w2(sol.x, ref, generator=torch.Generator().manual_seed(5))
        print(f"trained net, {solver:5s} {steps:2d} steps, NFE {sol.nfe}: sliced W2 to data {w2:.3f}")

# The exact velocity on the same ODE: the error of the solver alone, against a float64 reference flow.
x1 = path.prior_sample((500, 2), generator=torch.Generator().manual_seed(6), **f64)
ref = target.reference_flow(x1, path, 1.0, 0.0)
for steps in (8, 16, 32):
    sol = sf.sample(path, target.field("velocity"), "midpoint", steps=steps, x_init=x1)
    print(f"exact velocity, midpoint {steps:2d} steps: RMS distance to the reference flow "
          f"{(sol.x - ref).pow(2).sum(-1).mean().sqrt():.2e}")

# A network trained with the other time convention (noise at t = 0, as in many flow-matching codebases)
# predicts u(x, s) = -v(x, 1 - s); flip_time=True adapts it without retraining.
flipped = sf.VelocityField(lambda x, s: -net(x, 1 - s), flip_time=True)
xt = torch.randn(8, 2, generator=torch.Generator().manual_seed(7))
with torch.no_grad():
    torch.testing.assert_close(flipped.velocity(xt, 0.3, path), field.velocity(xt, 0.3, path))

# The flow + score SDE: a velocity network and a score network drive dx = [v - gamma^2/2 s] dt + gamma dW
# (same marginals for every constant gamma); FlowScoreField combines the two for the sampler.
gamma = 0.7
pair = sf.FlowScoreField(target.field("velocity"), target.field("score"), gamma)
sol = sf.sample(path, pair, "stochastic_heun", steps=100, gamma=gamma, t_min=1e-2, n=2000, shape=(2,),
                generator=torch.Generator().manual_seed(8), **f64)
marg = target.marginal(path, 1e-2)
print(f"flow + score SDE (gamma={gamma}), stochastic Heun 100 steps: mean {sol.x.mean(0).tolist()} "
      f"(exact marginal at t_min: {marg.mean().tolist()})")
