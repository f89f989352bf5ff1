"""Maximum likelihood through the ODE: a small continuous normalising flow on a 2-D target.

Run: python docs/tutorials/likelihood.py [--small] [--plot]

A velocity network v(x, t) defines the flow dx/dt = v from the data (t = 0) to the noise end (t = 1), where the
prior is N(0, I) (LinearFlow's sigma(1) = 1, alpha(1) = 0). sdeflow.log_likelihood integrates x and the
divergence of v together: log p(x) = log N(x_1; 0, I) + integral_0^1 div v(x_t, t) dt. Training maximises it
directly (FFJORD-style, discretise-then-optimise: differentiable=True back-propagates through 4 RK4 steps);
held-out log-likelihoods are measured with adaptive dopri5. The mixture oracle's own log density is the ceiling:
no model beats it on average (KL >= 0).
"""

import math
import sys

import torch

import sdeflow as sf

SMALL = "--small" in sys.argv
PLOT = "--plot" in sys.argv

path = sf.LinearFlow()                       # only the prior N(0, sigma(1)^2 I) = N(0, I) and the window [0, 1]
target = sf.eight_gaussians()
gen = torch.Generator().manual_seed(0)


class Net(torch.nn.Module):
    """A small MLP on (x, t): smooth in t, so the flow between the training steps is the flow at them."""

    def __init__(self, hidden=64):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden),
                                        torch.nn.Tanh(), torch.nn.Linear(hidden, 2))

    def forward(self, x, t):
        return self.body(torch.cat([x, t[:, None]], 1))


torch.manual_seed(0)
net = Net()
field = sf.VelocityField(net)
torch.manual_seed(0)
untrained = sf.VelocityField(Net())

x_test = target.sample(1000, generator=torch.Generator().manual_seed(1))
ceiling = target.log_prob(x_test)            # the data's own log density


def held_out(f, solver="dopri5", **kw):
    kw = kw or dict(rtol=1e-5, atol=1e-5)
    return sf.log_likelihood(path, f, x_test, solver, **kw)


steps, every = (150, 50) if SMALL else (1000, 100)
opt = torch.optim.Adam(net.parameters(), lr=3e-3)
train_curve, test_curve = [], []
print(f"ceiling (the data's own log density, held out): {ceiling.mean():.3f}")
print(" step | train log-lik (rk4, 4 steps) | held-out log-lik, dopri5 (NFE) | held-out, rk4 4 steps")
for i in range(steps + 1):
    if i % every == 0:
        r = held_out(field)
        r4 = held_out(field, "rk4", steps=4)
        test_curve.append((i, float(r.log_lik.mean()), r.mean_stderr))
        print(f"{i:5d} | {train_curve[-1][1] if train_curve else float('nan'):28.3f} | "
              f"{r.log_lik.mean():8.3f} +- {r.mean_stderr:.3f} ({r.nfe:3d}) | {r4.log_lik.mean():8.3f}")
    if i == steps:
        break
    x = target.sample(256, generator=gen)
    loss = -sf.log_likelihood(path, field, x, "rk4", steps=4, differentiable=True).log_lik.mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    train_curve.append((i, -float(loss.detach())))

trained = held_out(field)
before = held_out(untrained)
gain = trained.log_lik - before.log_lik                      # paired over the same held-out points
gap = trained.log_lik.double() - ceiling.double()
print(f"held-out log-likelihood: untrained {before.log_lik.mean():.3f}, trained {trained.log_lik.mean():.3f} "
      f"(gain {gain.mean():.3f} +- {gain.std() / math.sqrt(len(gain)):.3f}), ceiling {ceiling.mean():.3f} "
      f"(gap {gap.mean():.3f} +- {gap.std() / math.sqrt(len(gap)):.3f})")
assert gain.mean() > 4 * gain.std() / math.sqrt(len(gain))         # training helped, by more than 4 SE
assert gap.mean() < 4 * gap.std() / math.sqrt(len(gap))            # nothing beats the data's own density

# Hutchinson's estimator on the trained flow: unbiased for the same computation (fixed steps), within its SE.
exact = sf.log_likelihood(path, field, x_test, "rk4", steps=8)
hutch = sf.log_likelihood(path, field, x_test, "rk4", steps=8, divergence="hutchinson", n_probes=4, seed=0)
d = hutch.log_lik - exact.log_lik
se = float(hutch.stderr.pow(2).sum().sqrt()) / len(d)
print(f"Hutchinson (4 Rademacher probes) - exact divergence: {d.mean():+.4f} (standard error {se:.4f}); "
      f"backward passes {hutch.stats['backward_passes']} vs {exact.stats['backward_passes']}")
assert abs(d.mean()) < 4 * se

# The same network trained by flow matching for the same number of steps (no ODE in the loss): its likelihood.
torch.manual_seed(0)
net_fm = Net()
field_fm = sf.VelocityField(net_fm)
sf.train.fit(lambda x0: sf.losses.cfm_loss(field_fm, path, x0, generator=gen), net_fm,
             lambda n: target.sample(n, generator=gen), steps=steps, lr=3e-3, batch=256)
fm = held_out(field_fm)
print(f"flow matching, same network and steps: held-out log-likelihood {fm.log_lik.mean():.3f} +- {fm.mean_stderr:.3f}")

if PLOT:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
    it, tr = zip(*train_curve)
    w = 20
    smooth = [sum(tr[max(0, k - w + 1):k + 1]) / len(tr[max(0, k - w + 1):k + 1]) for k in range(len(tr))]
    ax[0].plot(it, tr, color="0.8", lw=0.8, label="training batch (rk4, 4 steps)")
    ax[0].plot(it, smooth, color="C0", label="same, running mean")
    ti, tm, ts = zip(*test_curve)
    ax[0].errorbar(ti, tm, yerr=[2 * s for s in ts], color="C1", marker="o", label="held out (dopri5)")
    ax[0].axhline(float(ceiling.mean()), color="k", ls="--", lw=1, label="data's own log density")
    ax[0].set_ylim(float(ceiling.mean()) - 2.5, float(ceiling.mean()) + 0.5)
    ax[0].set_xlabel("training step")
    ax[0].set_ylabel("mean log-likelihood (nats)")
    ax[0].legend(fontsize=7)
    g = torch.linspace(-3.5, 3.5, 90)
    grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    dens = sf.log_likelihood(path, field, grid, "dopri5", rtol=1e-5, atol=1e-5).log_lik.exp().reshape(90, 90)
    for a, img, title in ((ax[1], dens, "trained CNF density"),
                          (ax[2], target.log_prob(grid).exp().reshape(90, 90), "target density")):
        a.imshow(img.numpy(), extent=(-3.5, 3.5, -3.5, 3.5), origin="lower", cmap="magma")
        a.set_title(title)
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    fig.savefig("docs/img/likelihood_cnf.png", dpi=70)
    print("wrote docs/img/likelihood_cnf.png")
