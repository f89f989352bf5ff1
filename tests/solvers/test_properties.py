"""Properties every registered fixed-step solver must have, checked with sdeflow.testing.properties (the
same functions users run on their own solvers): declared orders, ODE time reversal, batch independence,
rotation equivariance, dtype/device preservation, determinism under a seeded generator, NFE accounting.

Orders here are measured on one path (VP) with few samples; test_ode_order.py, test_exponential.py and
test_sde.py sweep paths and field kinds, and test_strong_order.py checks strong orders (so the expensive
fine reference solve is not repeated here: strong=False).
"""

import pytest

import sdeflow as sf
from sdeflow.testing import properties as P
from sdeflow.testing.checks import is_stochastic

FIXED = sf.solvers.available(adaptive=False)


def _order_options(s):
    """Step sizes in each solver family's asymptotic range; grids as in test_exponential.py (single-step
    exponential integrators on the log-SNR grid their stages live on, multistep ones on Karras')."""
    f = s.pre_asymptotic_factor  # a solver whose error terms cross late declares it (lms, dpmpp_3m)
    if s.needs == "prediction":
        grid = "log_snr" if s.evals_per_step > 1 else "karras"
        steps = (16, 32, 64, 128) if grid == "log_snr" else (32, 64, 128, 256)
        return dict(grid=grid, steps=tuple(f * m for m in steps), n=8)
    return dict(steps=tuple(f * m for m in ((8, 16, 32, 64) if s.order >= 4 else (16, 32, 64, 128))), n=8)


@pytest.mark.parametrize("solver", FIXED)
def test_declared_orders(solver):
    s = sf.solvers.get(solver)
    weak = dict(steps=tuple(s.pre_asymptotic_factor * m for m in (32, 64, 128, 256)))
    out = P.assert_declared_orders(s, ode=_order_options(s), weak=weak, strong=False)
    assert out  # at least one order was checked or reported as not declared


@pytest.mark.parametrize("solver", [n for n in FIXED if P.applicable(n, "time_reversal") is None])
def test_time_reversal(solver):
    f = sf.solvers.get(solver).pre_asymptotic_factor
    P.assert_time_reversible(solver, steps=tuple(f * m for m in (8, 16, 32, 64)))


@pytest.mark.parametrize("solver", FIXED)
def test_batch_independence(solver):
    if not getattr(sf.solvers.get(solver), "batch_independent", True):
        with pytest.raises(AssertionError, match="samples alone vs in"):  # the declaration is true
            P.assert_batch_independent(solver)
        return
    P.assert_batch_independent(solver)


@pytest.mark.parametrize("solver", FIXED)
def test_rotation_equivariance(solver):
    P.assert_rotation_equivariant(solver)


@pytest.mark.parametrize("solver", FIXED)
def test_dtype_and_device(solver):
    P.assert_preserves_dtype_device(solver)


@pytest.mark.parametrize("solver", FIXED)
def test_determinism(solver):
    P.assert_deterministic(solver)


@pytest.mark.parametrize("solver", FIXED)
def test_nfe_accounting(solver):
    P.assert_nfe_accounting(solver)


def test_time_reversal_is_skipped_only_where_it_cannot_apply():
    for n in FIXED:
        s = sf.solvers.get(n)
        assert (P.applicable(n, "time_reversal") is None) == (s.needs == "drift" and not is_stochastic(s))
