"""Score SDE and predictor-corrector: the reverse SDE of Song et al. (2021) with a score network.

Run: python docs/tutorials/score_sde.py [--small]

With a Gaussian target and its exact score, every fixed-step SDE sampler is an affine map of its initial
noise and of the normals it draws, so the exact mean and variance of its output are computable
(sdeflow.testing.affine_output_moments): weak errors without Monte Carlo noise.
"""

import math
import sys

import torch

import sdeflow as sf
import sdeflow.metrics
from sdeflow.testing import affine_output_moments, fit_order

SMALL = "--small" in sys.argv
n = 4000 if SMALL else 20000
f64 = dict(dtype=torch.float64)

path = sf.VP()                                             # dx = -beta/2 x dt + sqrt(beta) dW
target = sf.Gaussian(torch.tensor([1.0, -0.5]), torch.tensor([0.5, 2.0]))
score = target.field("score")                             # stands in for a trained score network
m1, V1 = target.moments(path, 1.0)                        # the exact distribution at t = 1
mt, Vt = target.moments(path, path.t_min)                 # ... and at t_min, where sampling stops

# ---- 1. Weak order: exact output variance of Euler-Maruyama and stochastic Heun as steps double -------
for solver in ("euler_maruyama", "stochastic_heun"):
    steps_list = (32, 64, 128) if SMALL else (32, 64, 128, 256)  # from 25 steps the preflight accepts VP's EM
    errors = []
    for steps in steps_list:
        def run(x, noise):
            return sf.sample(path, score, solver, steps=steps, gamma="reverse", x_init=x, noise=noise).x
        mean, var = affine_output_moments(run, m1, V1, steps, sf.solvers.get(solver).normals_per_step)
        errors.append((var - Vt).abs().max().item())
    fit = fit_order([1 / s for s in steps_list], errors)
    declared = sf.solvers.get(solver).weak_order_additive
    print(f"{solver:16s} variance error {['%.2e' % e for e in errors]}: weak order {fit.slope:.2f} "
          f"(declared {declared})")
    assert all(b < a for a, b in zip(errors, errors[1:]))

# ---- 2. Sampling: Monte Carlo moments agree with the exact output moments within 4 standard errors ----
steps = 100
x1 = target.marginal(path, 1.0).sample(n, generator=torch.Generator().manual_seed(0), **f64)
sol = sf.sample(path, score, "stochastic_heun", steps=steps, gamma="reverse", x_init=x1,
                generator=torch.Generator().manual_seed(1))
run = lambda x, noise: sf.sample(path, score, "stochastic_heun", steps=steps, gamma="reverse",  # noqa: E731
                                 x_init=x, noise=noise).x
mean, var = affine_output_moments(run, m1, V1, steps, 1)
se_mean, se_var = (var / n).sqrt(), var * math.sqrt(2 / (n - 1))
print(f"stochastic_heun {steps} steps (NFE {sol.nfe}): sample mean {sol.x.mean(0).tolist()}, "
      f"var {sol.x.var(0).tolist()}; exact output mean {mean.tolist()}, var {var.tolist()}")
assert ((sol.x.mean(0) - mean).abs() < 4 * se_mean).all()
assert ((sol.x.var(0) - var).abs() < 4 * se_var).all()

# ---- 3. Predictor-corrector (Song et al. 2021, Alg. 1): an Euler-Maruyama predictor, then Langevin ----
# corrector steps at the new time with step size set by a signal-to-noise ratio `snr`. The corrector's
# Langevin bias (about snr^2 relative in the variance of a Gaussian) does not vanish with the step size.
for snr in (0.05, 0.16):
    pc = sf.sample(path, score, "pc", steps=steps, gamma="reverse", snr=snr, corrector_steps=1, x_init=x1,
                   generator=torch.Generator().manual_seed(2))
    rel = (pc.x.var(0) / Vt - 1).tolist()
    print(f"pc snr={snr}: NFE {pc.nfe} (1 predictor + 1 corrector evaluation per step), "
          f"relative variance error {['%.3f' % r for r in rel]}, snr^2 = {snr ** 2:.4f}")
    if snr == 0.05:  # bias 0.0025 relative, far below the 4-standard-error band (about 0.09 at n = 4000)
        assert ((pc.x.var(0) - Vt).abs() < 4 * Vt * math.sqrt(2 / (n - 1)) + 2 * snr ** 2 * Vt).all()
        assert ((pc.x.mean(0) - mt).abs() < 4 * (Vt / n).sqrt()).all()

# ---- 4. On a mixture, with a noise network instead of a score network --------------------------------
blobs = sf.two_blobs()
eps_field = blobs.field("noise")
x = sf.sample(path, eps_field, "pc", steps=steps, gamma="reverse", n=2000, shape=(2,), final_denoise=True,
              generator=torch.Generator().manual_seed(3), **f64).x
ref = blobs.sample(2000, generator=torch.Generator().manual_seed(4), **f64)
print(f"two blobs, pc + final denoise: sliced W2 to fresh data {sf.metrics.sliced_w2(x, ref, generator=torch.Generator().manual_seed(5)):.3f}")
