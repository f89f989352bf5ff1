"""Strong convergence for additive noise: every SDE solver, driven by one shared Brownian path refined on a
fine grid (sdeflow.noise.BrownianPath: coarse increments and their time integrals are exact sums of the fine
ones), converges pathwise to a fine solve at its declared strong order for additive noise (SRA1: 1.5;
Euler-Maruyama and stochastic Heun: 1). The solvers are the registry's: every fixed-step SDE solver declaring
``strong_order_additive`` is measured, or named in ``NOT_MEASURED`` with the reason. Measured with
sdeflow.testing.strong_order, the checker users run.

Two problems: the reverse-time dynamics of a Gaussian target with its exact score (through ``sample``), and
a nonlinear SDE through ``solve``. On the Gaussian the drift is linear in x, SRA1's h^2 error terms vanish
and it measures strong order 2.0, so SRA1's 1.5 is tested on the nonlinear problem. (A Gaussian mixture's
reverse SDE is nonlinear too, but its pathwise errors are dominated by the rare samples that a coarse
solve sends to another mode, which makes slopes noisy rather than informative.)
"""

import pytest
import torch

import sdeflow as sf
from sdeflow.testing import assert_strong_order
from sdeflow.testing.checks import nonlinear_drift

D = torch.float64
TARGET = sf.Gaussian([1.0, -0.5], [0.5, 2.0])
FINE = 4096  # reference: SRA1 (strong order 1.5) 32x finer than the finest level
STEPS = (16, 32, 64, 128)
REFERENCE = "sra1"

#: every registered SDE solver declaring a strong order for additive noise is measured at it, on both problems
#: it can run, except (each with its reason):
NOT_MEASURED = {
    "sra1": ("reverse-SDE", "the reference; on the Gaussian's linear drift its h^2 terms vanish and it measures "
                            "2.0, so its 1.5 is measured on the nonlinear problem"),
    "sde_dpmpp_2m": ("reverse-SDE", "off its declared 1 at these steps: 1.41 (VP; its data prediction is affine on "
                                    "a Gaussian, docs/solvers.md) and 0.68 (LinearFlow, gamma 0.7), against SRA1 "
                                    "with this test's settings. Pre-asymptotic, not a defect: its noise term is the "
                                    "step's normalised Brownian increment times the exact standard deviation of "
                                    "the stochastic integral of the kernel sigma_t/sigma_u e^-(E_t-E_u), whose "
                                    "correlation with that integral is poor while the kernel varies by O(1) over "
                                    "a step, i.e. while the step is not small against t near t_min = 0.01 on "
                                    "LinearFlow (sigma = t). Measured: slope 0.99 then 1.16 between 256, 512 and "
                                    "1024 steps (t_max 0.9, t_min 0.01, fine 16384); 1.30 at this test's steps "
                                    "with t_min = 0.1 (1.45 from 64 to 1024 steps)"),
    "sde_dpmpp_3m": ("reverse-SDE", "as sde_dpmpp_2m: 1.61 (VP) and 0.85 (LinearFlow, gamma 0.7; 1.35 with "
                                    "t_min = 0.1)"),
}
_DECLARED = [n for n in sf.solvers.available(sde=True) if sf.solvers.get(n).strong_order_additive is not None]
#: adaptive solvers choose their own steps: there is no sequence of halved steps to fit a slope to
FIXED = [n for n in _DECLARED if not sf.solvers.get(n).adaptive]
REVERSE = [n for n in FIXED if NOT_MEASURED.get(n, ("",))[0] != "reverse-SDE"]
NONLINEAR = [n for n in FIXED if sf.solvers.get(n).needs == "drift"]  # sdeflow.solve: drift solvers only


def test_every_declared_strong_order_is_measured_or_excused():
    assert {"euler_maruyama", "stochastic_heun"} <= set(REVERSE)
    assert {"euler_maruyama", "stochastic_heun", "sra1"} <= set(NONLINEAR)
    assert set(NOT_MEASURED) <= set(FIXED), "stale entries in NOT_MEASURED"
    unmeasured = set(FIXED) - set(REVERSE) - set(NONLINEAR)
    assert unmeasured <= set(NOT_MEASURED), f"declared strong orders never measured: {unmeasured}"


@pytest.mark.parametrize("case", ["VP-reverse", "LinearFlow-gamma0.7"])
@pytest.mark.parametrize("solver", REVERSE)
def test_strong_order_on_the_reverse_sde(solver, case):
    path, gamma, kind, t_max = {"VP-reverse": (sf.VP(), "reverse", "noise", 1.0),
                                "LinearFlow-gamma0.7": (sf.LinearFlow(), 0.7, "velocity", 0.999)}[case]
    chk = assert_strong_order(solver, path=path, target=TARGET, kind=kind, gamma=gamma, t_max=t_max, t_min=1e-2,
                              steps=STEPS, fine=FINE, reference=REFERENCE, n=256, seed=4)
    assert chk.declared == sf.solvers.get(solver).strong_order_additive


@pytest.mark.parametrize("solver", NONLINEAR)
def test_strong_order_on_a_nonlinear_additive_sde(solver):
    """dx = (sin(2x) - x + cos(3t)) dt + 0.8 dW on [0, 1] (smooth, nonlinear drift; additive noise)."""
    x0 = torch.randn(256, 2, dtype=D, generator=torch.Generator().manual_seed(7))
    chk = assert_strong_order(solver, drift=nonlinear_drift, diffusion=0.8, x0=x0, steps=STEPS, fine=FINE,
                              reference=REFERENCE, seed=6)
    assert chk.declared == sf.solvers.get(solver).strong_order_additive
