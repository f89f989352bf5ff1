"""Property-based tests for your own solver: declared order, NFE accounting, invariances.

Run: python docs/tutorials/testing_your_solver.py [--small]
(or turn each check into a pytest test: they are plain functions that raise AssertionError).

The solver here is Ralston's second-order Runge-Kutta method, written as a Butcher tableau in a few lines;
the checks are the ones sdeflow's own test suite applies to every registered solver.
"""

import sys

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sdeflow as sf
from sdeflow.solvers.explicit_rk import ExplicitRK
from sdeflow.solvers.tableau import ButcherTableau
from sdeflow.testing import CountingField, fit_order

SMALL = "--small" in sys.argv

# ---- Your solver -------------------------------------------------------------------------------------
RALSTON = ButcherTableau(c=(0.0, 2 / 3), a=((), (2 / 3,)), b=(0.25, 0.75), order=2)


class Ralston(ExplicitRK):
    """Ralston's method: k1 = f(x, t), k2 = f(x + 2h/3 k1, t + 2h/3), x' = x + h (k1/4 + 3 k2/4)
    (order 2, minimum error bound among two-stage methods; Ralston 1962)."""

    name = "ralston"                 # subclassing registers it: sf.sample(..., "ralston") now works
    tableau = RALSTON
    order = 2
    evals_per_step = RALSTON.stages


PATHS = {"VP": sf.VP(), "VE": sf.VE(), "LinearFlow": sf.LinearFlow(), "CosineVP": sf.CosineVP()}
TARGET = sf.Gaussian(torch.tensor([1.0, -0.5]), torch.tensor([0.5, 2.0]))


# ---- 1. The declared order, measured against the exact probability-flow map (float64) -----------------
def check_order(solver="ralston", path=sf.VP(), kind="noise", steps=(32, 64, 128, 256)):
    x1 = path.prior_sample((64, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t_max = min(path.t_max, 0.999)   # CosineVP: alpha = 0 at t = 1, where noise predictions do not convert
    t_min = max(path.t_min, 1e-3)
    exact = TARGET.flow(x1, path, t_max, t_min)
    errors = [(sf.sample(path, TARGET.field(kind), solver, steps=k, x_init=x1, t_max=t_max, t_min=t_min).x
               - exact).abs().max().item() for k in steps]
    fit = fit_order([1 / k for k in steps], errors)
    declared = sf.solvers.get(solver).order
    assert abs(fit.slope - declared) < 0.25, f"{solver} on {path}: {fit}, declared {declared}"
    return fit


for name, path in PATHS.items():
    print(f"{name:10s}", check_order(path=path, steps=(32, 64, 128) if SMALL else (32, 64, 128, 256)))


# ---- 2. NFE accounting: what the solution reports is what the network was called ---------------------
def check_nfe(solver="ralston", steps=10):
    field = CountingField(TARGET.field("noise"))
    sol = sf.sample(sf.VP(), field, solver, steps=steps, n=8, shape=(2,), generator=torch.Generator().manual_seed(1))
    assert sol.nfe == field.calls == steps * sf.solvers.get(solver).evals_per_step, (sol.nfe, field.calls)
    budget = sf.sample(sf.VP(), TARGET.field("noise"), solver, nfe=11, n=8, shape=(2,))
    assert budget.nfe <= 11                       # a budget is a hard cap


check_nfe()


# ---- 3. Properties over many inputs, with hypothesis ------------------------------------------------
@settings(max_examples=10 if SMALL else 50, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 16), steps=st.integers(1, 20),
       path_name=st.sampled_from(sorted(PATHS)))
def check_properties(seed, batch, steps, path_name):
    path = PATHS[path_name]
    t_max = min(path.t_max, 0.999)
    x1 = path.prior_sample((batch, 2), generator=torch.Generator().manual_seed(seed), dtype=torch.float64,
                           t=t_max)
    field = TARGET.field("data")
    try:
        out = sf.sample(path, field, "ralston", steps=steps, x_init=x1, t_max=t_max).x
    except sf.UnstableError:  # a grid too coarse for the solver is refused up front: a valid outcome, no answer
        return
    # a sample does not depend on the rest of its batch
    first = sf.sample(path, field, "ralston", steps=steps, x_init=x1[:1], t_max=t_max).x
    torch.testing.assert_close(out[:1], first)
    # dtype and device follow the input; float32 agrees with float64 to float32 rounding
    out32 = sf.sample(path, field, "ralston", steps=steps, x_init=x1.float(), t_max=t_max).x
    assert out32.dtype == torch.float32 and out32.device == x1.device
    torch.testing.assert_close(out32.double(), out, rtol=1e-4, atol=1e-4)


check_properties()
print("ralston: orders, NFE accounting, batch independence and dtype properties hold")


# ---- 4. The same checks, ready-made: sdeflow.testing's checkers and property suite ---------------------
# assert_ode_order measures the pathwise order against the exact flow; check_solver runs every property
# that applies to the solver (orders, time reversal, batch independence, rotation equivariance,
# dtype/device, determinism, NFE accounting) and reports what it ran.
from sdeflow.testing import assert_ode_order, check_solver  # noqa: E402

print(assert_ode_order("ralston", path=sf.VP()))
for prop, status in check_solver("ralston").items():   # raises AssertionError on the first failure
    print(f"  {prop}: {status}")
