"""Step callbacks, SDEdit, inpainting and inversion, on exact Gaussian fields.

Run: python docs/tutorials/editing.py [--small]

Every "network" is an exact oracle, so each result is checked against the answer theory gives.
"""

import sys

import torch

import sdeflow as sf
from sdeflow import editing as ed

SMALL = "--small" in sys.argv
n = 4000 if SMALL else 40_000
f64 = torch.float64
path = sf.VP()
mu, c = torch.tensor([0.5, -1.0], dtype=f64), torch.tensor([0.09, 0.64], dtype=f64)
target = sf.Gaussian(mu, c)
field = sf.analytic.OracleField(target, "noise")

# 1. A step callback: callback(i, t, x, x0_hat) after every step. x0_hat is the data prediction of the step's
#    last network evaluation (for DDIM: at the step's start, diffusers' pred_original_sample); no extra call.
previews = []


def preview(i, t, x, x0_hat):
    previews.append((t, x0_hat.mean(0)))  # e.g. show a progress image; return None: x unchanged


sol = sf.sample(path, field, "ddim", steps=10, n=256, shape=(2,), dtype=f64, noise=0, callback=preview)
print("DDIM steps: t and the mean of x0_hat ->", ", ".join(f"{t:.2f}: {m[0]:+.2f}" for t, m in previews[::3]))
assert len(previews) == 10 and sol.nfe == 10

# 2. SDEdit: noise a guide to t_edit, then sample from there. From one guide point x_g, the reverse SDE with the
#    exact field samples p(x0 | x_te): per coordinate N(mu + a^2 c (x_g - mu) / D, c s^2 (D + a^2 c) / D^2).
t_edit, xg = 0.4, torch.tensor([1.5, 0.0], dtype=f64)
out = ed.sdedit(path, field, xg.expand(n, 2).contiguous(), t_edit, "stochastic_heun", steps=40, noise=1).x
a, s = float(path.alpha(t_edit)), float(path.sigma(t_edit))
D = a * a * c + s * s
mean, var = mu + a * a * c * (xg - mu) / D, c * s * s * (D + a * a * c) / D**2
print(f"SDEdit at t={t_edit}: mean {out.mean(0).numpy().round(3)} (exact {mean.numpy().round(3)}), "
      f"variance {out.var(0).numpy().round(4)} (exact {var.numpy().round(4)})")
assert ((out.mean(0) - mean).abs() <= 4 * (var / n).sqrt()).all()
assert ((out.var(0) - var).abs() <= 4 * var * (2 / n) ** 0.5).all()

# 3. Inpainting: after each step the known region is replaced by the noised known data (Song et al. 2021).
#    Independent regions: the unknown one is sampled from its exact conditional (= its marginal).
known = target.sample(n, generator=torch.Generator().manual_seed(2), dtype=f64)
mask = torch.tensor([[1.0, 0.0]], dtype=f64)  # coordinate 0 known
res = ed.inpaint(path, field, known, mask, "stochastic_heun", steps=100, noise=3).x
assert torch.equal(res[:, 0], known[:, 0])  # the known region, exactly
u = res[:, 1]
print(f"inpainting, independent coordinates: unknown mean {float(u.mean()):+.3f} (exact {float(mu[1]):+.3f}), "
      f"variance {float(u.var()):.4f} (exact {float(c[1]):.4f})")
assert abs(float(u.mean() - mu[1])) <= 4 * (float(c[1]) / n) ** 0.5
assert abs(float(u.var() - c[1])) <= 4 * float(c[1]) * (2 / n) ** 0.5

#    Correlated regions: the replacement method is an approximation. Rotate N(0, diag(1, 0.05)) by 45 degrees
#    (correlation 0.905) and condition on x_0 = 1: the exact conditional of x_1 is N(0.905, 0.0952).
R = torch.tensor([[1.0, -1.0], [1.0, 1.0]], dtype=f64) / 2**0.5
base = sf.Gaussian(torch.zeros(2, dtype=f64), torch.tensor([1.0, 0.05], dtype=f64))
rotated = sf.NoiseField(lambda x, t: base.predict(x @ R, t, path, "noise") @ R.T)  # eps of R y is R eps(y)
cov = R @ torch.diag(torch.tensor([1.0, 0.05], dtype=f64)) @ R.T
m_exact = cov[1, 0] / cov[0, 0] * 1.0
v_exact = cov[1, 1] - cov[1, 0] ** 2 / cov[0, 0]
k = torch.tensor([[1.0, 0.0]], dtype=f64).expand(n, 2).contiguous()
res = ed.inpaint(path, rotated, k, mask, "stochastic_heun", steps=100, noise=4).x[:, 1]
print(f"inpainting, correlation 0.905: unknown mean {float(res.mean()):.3f} (exact conditional {float(m_exact):.3f}), "
      f"variance {float(res.var()):.4f} (exact {float(v_exact):.4f}): the replacement method's bias")

# 4. Inversion: data -> noise with any ODE solver (DDIM inversion: solver="ddim"), and back.
x0 = target.sample(512, generator=torch.Generator().manual_seed(5), dtype=f64)
for solver in ("ddim", "dpmpp_2m", "dpm_solver_3"):
    errs = []
    for steps in (10, 20, 40):
        z = ed.invert(path, field, x0, solver, steps=steps, grid="log_snr")
        back = sf.sample(path, field, solver, grid=z.ts.tolist()[::-1], x_init=z.x)
        errs.append(float((back.x - x0).abs().max()))
    print(f"{solver:13s} round trip at 10/20/40 steps: " + " ".join(f"{e:.1e}" for e in errs))
    assert errs[2] < errs[0]
