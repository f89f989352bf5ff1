"""Plug in your trained network: every field kind, and the time adapters.

Run: python docs/tutorials/plug_your_network.py [--small]

A "trained network" here is an exact oracle (a Gaussian's noise, data, score or velocity), so every
result can be checked: the five field kinds drive the same probability-flow ODE, and every adapter gives
back exactly the network sdeflow expects.
"""

import sys

import torch

import sdeflow as sf

SMALL = "--small" in sys.argv
n, steps = (256, 20) if SMALL else (2000, 50)
f64 = dict(dtype=torch.float64)

# The data distribution the networks were "trained" on, and the path they were trained with.
target = sf.Gaussian(torch.tensor([1.0, -0.5]), torch.tensor([0.3, 1.5]))
path = sf.VP()  # linear beta from 0.1 to 20, t = 0 data, t = 1 noise


# 1. Your networks: any callable net(x, t) with t a (batch,) tensor. Each predicts something else.
def eps_net(x, t):  # DDPM-style noise prediction
    return target.predict(x, t, path, "noise")


def x0_net(x, t):  # a denoiser
    return target.predict(x, t, path, "data")


def score_net(x, t):  # a score network
    return target.predict(x, t, path, "score")


def v_net(x, t):  # a velocity network (the probability-flow drift)
    return target.predict(x, t, path, "velocity")


def energy_net(x, t):  # an energy: E(x, t) = -log p_t(x) up to a constant, one number per sample
    m, V = target.moments(path, t[0])
    return ((x - m) ** 2 / (2 * V)).sum(-1)


# 2. Wrap each by what it predicts. Any field answers as any other kind on any path.
fields = {
    "noise": sf.NoiseField(eps_net),
    "data": sf.DataField(x0_net),
    "score": sf.ScoreField(score_net),
    "velocity": sf.VelocityField(v_net),
    "energy": sf.EnergyField(energy_net),
}
x = torch.randn(4, 2, **f64, generator=torch.Generator().manual_seed(0))
print("score at t=0.5 from each field kind:")
for kind, field in fields.items():
    print(f"  {kind:9s}", field.score(x, 0.5, path)[0].tolist())

# 3. Sample: the same initial noise through the same solver gives the same samples whatever the kind
#    (the conversions are exact), and they match the exact probability-flow map of the Gaussian.
x1 = path.prior_sample((n, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
exact = target.flow(x1, path, path.t_max, path.t_min)
results = {}
for kind, field in fields.items():
    sol = sf.sample(path, field, "heun", steps=steps, x_init=x1)
    results[kind] = sol.x
    err = (sol.x - exact).pow(2).sum(-1).mean().sqrt().item()
    print(f"{kind:9s} heun, {steps} steps, NFE {sol.nfe}: RMS distance to the exact flow {err:.2e}")
for kind, xk in results.items():
    torch.testing.assert_close(xk, results["noise"], rtol=1e-9, atol=1e-9)

# 4. Adapters for networks that expect other inputs.
# 4a. Flow-matching code often puts noise at t = 0 and data at t = 1. Such a velocity network is
#     u(x, s) = -v(x, 1 - s) in sdeflow's time; flip_time=True (sf.FlipTime) undoes both the time and the sign.
def fm_net(x, s):
    return -v_net(x, 1.0 - s)


flipped = sf.VelocityField(fm_net, flip_time=True)
torch.testing.assert_close(flipped.velocity(x, 0.3, path), fields["velocity"].velocity(x, 0.3, path))


# 4b. A network that wants t as a (batch, 1) column.
def column_net(x, t_col):
    assert t_col.shape == (x.shape[0], 1)
    return eps_net(x, t_col[:, 0])


col = sf.NoiseField(sf.ColumnTime(column_net))
torch.testing.assert_close(col.noise(x, 0.3, path), fields["noise"].noise(x, 0.3, path))


# 4c. An EDM/NCSN-style network taking the noise level sigma instead of t (here on a VE path).
ve = sf.VE(sigma_min=0.01, sigma_max=50.0)


def denoiser_of_sigma(x, sigma):  # D(x, sigma): the Gaussian's denoiser at noise level sigma
    t = torch.log(sigma / 0.01) / torch.log(torch.tensor(50.0 / 0.01, dtype=sigma.dtype))
    return target.predict(x, t, ve, "data")


edm = sf.DataField(sf.SigmaTime(denoiser_of_sigma, ve))
torch.testing.assert_close(edm.data(x, 0.3, ve), target.predict(x, torch.full((4,), 0.3, **f64), ve, "data"))

# 4d. A DDPM network taking the integer step index i (t = (i + 1) / T) on DDPM's discrete chain.
ddpm = sf.DiscreteVP()  # beta linear 1e-4..0.02, T = 1000


def index_net(x, i):
    assert i.dtype == torch.long
    return target.predict(x, (i + 1).to(x.dtype) / 1000, ddpm, "noise")


idx = sf.NoiseField(sf.IndexTime(index_net, T=1000))
x1d = ddpm.prior_sample((n, 2), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
a = sf.sample(ddpm, idx, "ddim", steps=steps, grid="discrete", x_init=x1d)  # evaluates only at knots
b = sf.sample(ddpm, sf.NoiseField(lambda x, t: target.predict(x, t, ddpm, "noise")), "ddim",
              steps=steps, grid="discrete", x_init=x1d)
torch.testing.assert_close(a.x, b.x)
print(f"DDIM with an index network on {steps} DDPM knots: same samples as the time network; "
      f"sample mean {a.x.mean(0).tolist()} (data mean {target.mu.tolist()})")
# An index network evaluated between knots is refused, never rounded silently:
try:
    sf.sample(ddpm, idx, "heun", steps=steps, x_init=x1d)
except sf.SdeflowValueError as e:
    print("refused:", str(e)[:90], "...")
else:
    raise AssertionError("IndexTime should refuse off-knot evaluations")
