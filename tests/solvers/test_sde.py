"""SDE solvers on the reverse-time dynamics with the exact Gaussian score: exact marginals at t_min
(Monte Carlo, 4 standard errors) and weak convergence at the declared rate (exact output moments)."""

import math

import pytest
import torch

import sdeflow as sf
from sdeflow.testing import affine_output_moments, fit_order

D = torch.float64
TARGET = sf.Gaussian([1.0, -0.5], [0.5, 2.0])

# (path, gamma, t_min, field kind): the reverse SDE of Song et al., a constant gamma on VP, and the
# flow + score SDE of "A Gentle Intro to Diffusion Models" (constant gamma on the linear flow).
CASES = {
    "VP-reverse": (sf.VP(), "reverse", 1e-3, "noise"),
    "VP-gamma1": (sf.VP(), 1.0, 1e-3, "score"),
    "LinearFlow-gamma0.7": (sf.LinearFlow(), 0.7, 1e-2, "velocity"),
    "VE-reverse": (sf.VE(), "reverse", 0.0, "data"),
}
# Solvers that declare no weak order do not converge to the SDE as h -> 0 (predictor-corrector: the corrector's
# step is set by its SNR, not by h); they are tested against their own theory in their own test files.
SDE_SOLVERS = [s for s in sf.solvers.available(sde=True, adaptive=False)
               if sf.solvers.get(s).weak_order_additive is not None]


def _moments(case, solver, steps):
    path, gamma, t_min, kind = CASES[case]
    m1, V1 = TARGET.moments(path, 1.0)
    run = lambda x, noise: sf.sample(path, TARGET.field(kind), solver, steps=steps, x_init=x, noise=noise,
                                     gamma=gamma, t_min=t_min).x
    return affine_output_moments(run, m1, V1, steps, sf.solvers.get(solver).normals_per_step)


@pytest.mark.parametrize("solver", SDE_SOLVERS)
@pytest.mark.parametrize("case", list(CASES))
def test_marginals_at_t_min(solver, case):
    """From the exact prior with the exact score, samples at t_min have mean m_t and variance V_t."""
    path, gamma, t_min, kind = CASES[case]
    steps = 2000 if (sf.solvers.get(solver).weak_order_additive < 2 or solver in PRE_ASYMPTOTIC) else 200
    mt, Vt = TARGET.moments(path, t_min)
    n = 20000
    se_mean, se_var = torch.sqrt(Vt / n), Vt * math.sqrt(2.0 / (n - 1))
    # the premise: the scheme's own bias (exact output moments) is far below the Monte Carlo error
    m_s, v_s = _moments(case, solver, steps)
    assert torch.all((m_s - mt).abs() < 0.5 * se_mean) and torch.all((v_s - Vt).abs() < 0.5 * se_var)

    gen = torch.Generator().manual_seed(11)
    x1 = TARGET.marginal(path, 1.0).sample(n, generator=gen, dtype=D)
    sol = sf.sample(path, TARGET.field(kind), solver, steps=steps, x_init=x1, gamma=gamma, t_min=t_min,
                    generator=gen)
    x = sol.x
    assert torch.all((x.mean(0) - mt).abs() < 4 * se_mean), (x.mean(0), mt, se_mean)
    assert torch.all((x.var(0) - Vt).abs() < 4 * se_var), (x.var(0), Vt, se_var)


# Euler-Maruyama on the VE reverse SDE is excluded from the rate test on purpose: its leading local
# variance error is h^2 (g^4/V - (g^2)'/2), which vanishes when sigma >> data std (g^2 = 2 sigma^2 log r,
# V ~ sigma^2), so it measures order 2 there, above its declared weak order 1.
#
# SDE-DPM-Solver++(2M) with a constant gamma is far from its asymptotic regime at these step counts: on VP
# with gamma = 1 (damping gamma^2 / (2 sigma^2) ~ 250 per unit time near t_min) its local weak slopes over
# 64..1024 steps are 1.42, 1.42, 1.49, 1.64, and 1.37, 1.45, 1.60, 1.81 on the linear flow with gamma = 0.7,
# rising towards 2; with gamma = g (eta = 1, what it is built for) they are 2.2 and 2.0 from 64 steps. Its
# rate is tested on the eta = 1 cases, its exact marginals (with 2000 steps) on all.
#
# SDE-DPM-Solver++(3M) (k-diffusion's: its third-order term is half the quadratic's, so it is second order) reaches
# its rate late: it declares pre_asymptotic_factor = 4 and its rate is fitted over 128..1024 steps on VE-reverse
# (local slopes 2.06, 2.02, 2.01). On VP-reverse a higher-order term dominates until ~2000 steps (2.94, 2.62,
# 2.34, 2.07 over 128..2000; unstable at 32, refused by the preflight); with a constant gamma the local slopes
# rise to 2 (1.71, 1.86, 2.07 on VP-gamma1; 1.69, 1.82, 1.92 on LinearFlow-gamma0.7, 128..1024) but the
# preflight's narrow probe (data std 0.05) refuses 128 steps there. Its exact marginals (2000 steps) are tested
# on all four cases, its rate on VE-reverse (and, every path, by the trust matrix).
PRE_ASYMPTOTIC = {"sde_dpmpp_2m": ("VP-gamma1", "LinearFlow-gamma0.7"),
                  "sde_dpmpp_3m": ("VP-reverse", "VP-gamma1", "LinearFlow-gamma0.7")}
WEAK_CASES = [(s, c) for s in SDE_SOLVERS for c in CASES
              if not (s == "euler_maruyama" and c == "VE-reverse") and c not in PRE_ASYMPTOTIC.get(s, ())]


@pytest.mark.parametrize("solver,case", WEAK_CASES)
def test_weak_order(solver, case):
    path, gamma, t_min, kind = CASES[case]
    mt, Vt = TARGET.moments(path, t_min)
    steps = [sf.solvers.get(solver).pre_asymptotic_factor * n for n in (32, 64, 128, 256)]
    errs = []
    for n in steps:
        m, v = _moments(case, solver, n)
        errs.append(float((m - mt).abs().max() + (v - Vt).abs().max()))
    fit = fit_order([1.0 / n for n in steps], errs)
    declared = sf.solvers.get(solver).weak_order_additive
    assert abs(fit.slope - declared) <= 0.3, f"{solver} on {case}: {fit}"


def test_sde_solvers_with_zero_noise_are_their_ode_counterparts():
    path, field = sf.VP(), TARGET.field("noise")
    x = torch.randn(16, 2, dtype=D)
    for sde, ode in (("euler_maruyama", "euler"), ("stochastic_heun", "heun")):
        a = sf.sample(path, field, sde, steps=20, x_init=x, gamma=0.0).x  # explicit: an SDE solver's default is the reverse SDE
        b = sf.sample(path, field, ode, steps=20, x_init=x).x
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
