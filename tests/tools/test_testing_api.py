"""sdeflow.testing's checkers and properties catch wrong solvers (user-written, unregistered) and pass right
ones; the worked example of docs/testing.md runs and catches its solver's wrong order."""

import math
import runpy

import pytest
import torch

import sdeflow as sf
from sdeflow.solvers import ODESolver, SDESolver
from sdeflow.testing import (PerturbedField, assert_langevin_bias, assert_ode_order, assert_strong_order,
                             assert_weak_order, ode_order, weak_order)
from sdeflow.testing import properties as P

from shared import ROOT

EXAMPLE = ROOT / "examples" / "testing_wrong_order.py"


def test_worked_example_catches_the_wrong_order(capsys):
    bad, good = runpy.run_path(str(EXAMPLE))["main"]()
    assert "caught:" in capsys.readouterr().out
    assert bad.declared == 2 and abs(bad.slope - 1.0) < 0.1  # the bug makes it first order
    assert abs(good.slope - 2.0) < 0.3


def test_assert_message_shows_errors_slope_stderr_and_declared():
    class EulerClaimingTwo(ODESolver):
        order = 2

        def step(self, term, k, x, t0, t1, noise, state):
            return x + (t1 - t0) * term.drift(k, x)

    with pytest.raises(AssertionError) as e:
        assert_ode_order(EulerClaimingTwo(), steps=(16, 32, 64), n=4)
    msg = str(e.value)
    assert "EulerClaimingTwo" in msg and "declared 2" in msg and "expected order 2 ± 0.3" in msg
    assert len([ln for ln in msg.splitlines() if ln.strip().startswith(("16 ", "32 ", "64 "))]) == 3
    slope, se = (float(v) for v in msg.split("slope ")[1].split(",")[0].split(" ± "))
    assert abs(slope - 1.0) < 0.1 and 0 <= se < 0.05
    assert_ode_order(EulerClaimingTwo(), expected=1, steps=(16, 32, 64), n=4)  # its true order passes


def test_any_field_is_checked_against_a_fine_reference_solve():
    """A perturbed (non-exact) field has no closed-form flow: the reference is a fine RK4 solve."""
    target = sf.Gaussian([0.5, -1.0, 0.2], [0.3, 1.5, 0.8])
    field = PerturbedField(target.field("velocity"), 0.2, frequency=2.0, phase=0.3)
    chk = assert_ode_order("heun", target=target, field=field, steps=(8, 16, 32, 64), n=8)
    exact = ode_order("heun", target=target, steps=(8, 16, 32, 64), n=8)
    assert not (chk.errors == exact.errors).all()  # it is a different problem


def test_weak_order_by_monte_carlo_with_its_floor():
    """Monte Carlo weak errors agree with the exact ones within the floor (3 standard errors of the
    estimate, from the sample size); a level under the floor is left out of the fit."""
    n, target = 20_000, sf.Gaussian([1.0], [0.5])
    kw = dict(path=sf.VP(0.1, 5.0), target=target, steps=(4, 8, 16, 32))
    mc = weak_order("euler_maruyama", method="monte_carlo", n=n, **kw)
    exact = assert_weak_order("euler_maruyama", **kw)
    vt = target.moments(sf.VP(0.1, 5.0), 1e-2)[1]
    se = float((vt / n).sqrt().max() + (vt * math.sqrt(2 / (n - 1))).max())
    assert mc.floor == pytest.approx([3 * se] * 4)
    assert (abs(mc.errors - exact.errors) <= mc.floor).all(), (mc, exact)
    assert (mc.used == (mc.errors > mc.floor)).all() and mc.used[:2].all()
    with pytest.raises(AssertionError, match="raise n"):  # too few samples: every level under the floor
        assert_weak_order("stochastic_heun", method="monte_carlo", steps=(64, 128), n=200)


def test_exact_moments_refuse_a_solver_that_is_not_affine():
    class ClampedEM(SDESolver):
        weak_order_additive = 1.0

        def step(self, term, k, x, t0, t1, noise, state):
            h = t1 - t0
            out = x + h * term.drift(k, x) + term.diffusion(k, x) * math.sqrt(abs(h)) * noise.draw(
                k, t0, t1, term.noise_like(x))
            return out.clamp(-3.0, 3.0)

    with pytest.raises(AssertionError, match="not affine"):
        weak_order(ClampedEM(), steps=(8, 16))


def test_strong_order_catches_an_overclaiming_sde_solver():
    class EMClaimingSRA(SDESolver):
        strong_order_additive = 1.5

        def step(self, term, k, x, t0, t1, noise, state):
            h = t1 - t0
            z = noise.draw(k, t0, t1, term.noise_like(x))
            return x + h * term.drift(k, x) + term.diffusion(k, x) * math.sqrt(abs(h)) * z

    kw = dict(steps=(16, 32, 64, 128), fine=1024, n=64)
    with pytest.raises(AssertionError, match="declared 1.5"):
        assert_strong_order(EMClaimingSRA(), **kw)
    assert_strong_order(EMClaimingSRA(), expected=1.0, **kw)  # Euler-Maruyama's order on additive noise


def test_langevin_bias_matches_ula_and_exposes_it():
    res = assert_langevin_bias()  # sdeflow.langevin.ula
    assert (res.measured > 1.0).all() and res.resolved.all()
    with pytest.raises(AssertionError, match="no bias"):
        assert_langevin_bias(unbiased=True)  # ULA is biased: claiming otherwise fails

    def mala(score, x, h, steps, generator):  # MALA on N(0, 1) has no bias
        return sf.langevin.mala(lambda y: 0.5 * y.pow(2).sum(-1), x, h, steps, generator=generator).x
    assert_langevin_bias(mala, unbiased=True, step_sizes=(0.4, 0.2))


# ---- the properties, on user-written solvers ---------------------------------------------------
class UserMidpoint(ODESolver):
    order, evals_per_step = 2, 2

    def nodes(self):
        return [0.0, 0.5]

    def step(self, term, k, x, t0, t1, noise, state):
        h = t1 - t0
        return x + h * term.drift(2 * k + 1, x + 0.5 * h * term.drift(2 * k, x))


def test_a_correct_user_solver_passes_every_property():
    report = P.check_solver(UserMidpoint())
    assert report["declared_orders"] == "ok" and report["time_reversal"] == "ok"
    assert all(v == "ok" for v in report.values())


def test_batch_coupling_is_caught():
    class BatchNormalisedEuler(ODESolver):  # step size scaled by a batch statistic
        def step(self, term, k, x, t0, t1, noise, state):
            f = term.drift(k, x)
            return x + (t1 - t0) * f / f.norm(dim=1).mean() * f.norm(dim=1, keepdim=True).clamp_min(1e-12) ** 0

    with pytest.raises(AssertionError, match="samples alone vs in a larger batch"):
        P.assert_batch_independent(BatchNormalisedEuler())


def test_global_rng_and_unseeded_noise_are_caught():
    class GlobalRNGEM(SDESolver):
        def step(self, term, k, x, t0, t1, noise, state):
            h = t1 - t0
            return x + h * term.drift(k, x) + term.diffusion(k, x) * math.sqrt(abs(h)) * torch.randn_like(x)

    with pytest.raises(AssertionError, match="differ|global"):
        P.assert_deterministic(GlobalRNGEM())


def test_nfe_miscount_is_caught():
    class HeunDeclaringOne(UserMidpoint):
        evals_per_step = 1  # but it evaluates twice per step

    with pytest.raises(AssertionError, match="nfe"):
        P.assert_nfe_accounting(HeunDeclaringOne())


def test_wrong_rotation_behaviour_is_caught():
    class CoordinatewiseClip(UserMidpoint):  # clipping per coordinate is not rotation equivariant
        def step(self, term, k, x, t0, t1, noise, state):
            return super().step(term, k, x, t0, t1, noise, state).clamp(-1.0, 1.0)

    with pytest.raises(AssertionError, match="solve\\(Q x\\) vs Q solve\\(x\\)"):
        P.assert_rotation_equivariant(CoordinatewiseClip())


def test_dtype_change_is_caught():
    class PromotingEuler(ODESolver):
        def step(self, term, k, x, t0, t1, noise, state):
            return (x + (t1 - t0) * term.drift(k, x)).double()

    with pytest.raises(AssertionError, match="float64"):
        P.assert_preserves_dtype_device(PromotingEuler())
