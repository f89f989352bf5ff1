"""Strong convergence for additive noise: every SDE solver, driven by one shared Brownian path refined on a
fine grid (sdeflow.noise.BrownianPath: coarse increments and their time integrals are exact sums of the fine
ones), converges pathwise to a fine solve at its declared strong order for additive noise (SRA1: 1.5;
Euler-Maruyama and stochastic Heun: 1). Measured with sdeflow.testing.strong_order, the checker users run.

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


@pytest.mark.parametrize("case", ["VP-reverse", "LinearFlow-gamma0.7"])
@pytest.mark.parametrize("solver", ["euler_maruyama", "stochastic_heun"])
def test_strong_order_on_the_reverse_sde(solver, case):
    path, gamma, kind, t_max = {"VP-reverse": (sf.VP(), "reverse", "noise", 1.0),
                                "LinearFlow-gamma0.7": (sf.LinearFlow(), 0.7, "velocity", 0.999)}[case]
    assert_strong_order(solver, path=path, target=TARGET, kind=kind, gamma=gamma, t_max=t_max, t_min=1e-2,
                        steps=STEPS, fine=FINE, reference="sra1", n=256, seed=4)


@pytest.mark.parametrize("solver", ["euler_maruyama", "stochastic_heun", "sra1"])
def test_strong_order_on_a_nonlinear_additive_sde(solver):
    """dx = (sin(2x) - x + cos(3t)) dt + 0.8 dW on [0, 1] (smooth, nonlinear drift; additive noise)."""
    x0 = torch.randn(256, 2, dtype=D, generator=torch.Generator().manual_seed(7))
    chk = assert_strong_order(solver, drift=nonlinear_drift, diffusion=0.8, x0=x0, steps=STEPS, fine=FINE,
                              reference="sra1", seed=6)
    assert chk.declared == sf.solvers.get(solver).strong_order_additive
