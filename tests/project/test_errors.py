"""Errors that say more than their row of the validation table, and behaviour beside them.

The table (``tests/validation_cases.py``, run by ``tests/project/test_validation.py``) checks each bad input's
exception class and message once; the tests here add what a row does not: a message naming more (the
offending grid entries, both dtypes or devices), the error's attributes (step, t, kind), other inputs of the
same check (increasing or unsorted grids, a grid ending below 0), and what happens instead of an error
(half-precision outputs cast, the guard switched off, the default window off a singular end)."""

import pytest
import torch

import sdeflow as sf

from shared import GAUSSIAN as TARGET

D = torch.float64
X = torch.randn(4, 2, dtype=D)


def run(field=None, **kw):
    args = dict(x_init=X)
    if isinstance(kw.get("grid", "uniform"), str):
        args["steps"] = 5
    args.update(kw)
    return sf.sample(sf.VP(), field or TARGET.field("noise"), args.pop("solver", "euler"), **args)


# ---- shapes, dtypes and devices that disagree -----------------------------------------------------
def test_half_precision_network_output_is_brought_to_x_dtype():
    sol = run(sf.NoiseField(lambda x, t: TARGET.noise(x, t, sf.VP()).half()))
    assert sol.x.dtype == D


def test_x_init_dtype_disagrees_with_dtype_argument():
    with pytest.raises(TypeError, match=r"dtype=torch.float32 disagrees with x_init.dtype=torch.float64"):
        run(dtype=torch.float32)


def test_a_device_argument_naming_x_inits_device_is_no_disagreement():
    """"cpu:0" and "cpu" are one device (torch.device compares them unequal); a CPU-only machine has no other
    device to disagree with (the meta device and CUDA without a GPU have their own validation rows)."""
    assert torch.equal(run(device="cpu:0").x, run(device="cpu").x)
    assert not sf.errors.same_device(torch.device("cpu"), torch.device("meta"))
    assert sf.errors.same_device(torch.device("cuda"), torch.device("cuda:1"))
    assert not sf.errors.same_device(torch.device("cuda:0"), torch.device("cuda:1"))


def test_shape_disagrees_with_x_init():
    with pytest.raises(ValueError, match=r"shape=\(3,\) disagrees"):
        run(shape=(3,))


# ---- grids ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid, match", [
    ([1.0, 0.5, 0.5, 0.1], r"strictly decreasing.*grid\[1\]=0.5 -> grid\[2\]=0.5"),
    ([0.1, 0.5, 1.0], "strictly decreasing"),
    ([1.0, 0.6, 0.8, 0.1], "strictly decreasing"),
    ([1.5, 0.5, 0.1], r"leaves \[0, 1\] \(found t=1.5\)"),
    ([1.0, 0.5, -0.1], r"leaves \[0, 1\]"),
])
def test_bad_grids(grid, match):
    with pytest.raises((ValueError, TypeError), match=match):
        sf.sample(sf.VP(), TARGET.field("noise"), "euler", grid=grid, x_init=X)


def test_solve_accepts_increasing_grids_but_not_unsorted_ones():
    sol = sf.solve(lambda x, t: -x, None, X, [0.0, 1.0, 2.0], "euler")
    torch.testing.assert_close(sol.x, X * 0.0)
    with pytest.raises(ValueError, match="strictly monotone"):
        sf.solve(lambda x, t: -x, None, X, [0.0, 1.0, 0.5], "euler")


def test_neither_steps_nor_nfe():
    with pytest.raises(ValueError, match=r"give steps= .* or nfe="):
        run(steps=None)


# ---- gamma ----------------------------------------------------------------------------------------
def test_gamma_needs_an_sde_solver():
    with pytest.raises(ValueError, match="gamma='reverse' makes the dynamics an SDE.*euler_maruyama"):
        run(gamma="reverse", solver="heun")


# ---- non-finite values ----------------------------------------------------------------------------
def _nan_after(t_bad, value=float("nan")):
    def net(x, t):
        out = TARGET.noise(x, t, sf.VP())
        return torch.where(t[:, None] < t_bad, torch.full_like(out, value), out)
    return sf.NoiseField(net)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_field_returning_nan_or_inf_names_step_time_and_kind(value):
    with pytest.raises(sf.NonFiniteError, match=r"field returned NaN or Inf at step 3, t=0.4") as info:
        run(_nan_after(0.45, value), grid=[1.0, 0.8, 0.6, 0.4, 0.2, 0.1])
    assert info.value.step == 3 and abs(info.value.t - 0.4) < 1e-12 and info.value.kind == "noise"


def test_nan_in_a_later_stage_names_its_step():
    with pytest.raises(sf.NonFiniteError, match=r"step 1, t=0.7"):  # heun's second stage of step 1
        run(_nan_after(0.75), grid=[1.0, 0.8, 0.7, 0.6], solver="heun")


def test_nan_guard_with_sde_replays_the_same_noise():
    with pytest.raises(sf.NonFiniteError, match=r"step 3, t=0.6"):
        run(_nan_after(0.65), grid=[1.0, 0.8, 0.7, 0.6, 0.5], solver="euler_maruyama", gamma="reverse",
            generator=torch.Generator().manual_seed(0))


def test_nan_guard_can_be_switched_off():
    sol = run(_nan_after(0.45), grid=[1.0, 0.8, 0.6, 0.4, 0.2], check_finite=False)
    assert torch.isnan(sol.x).all()


def test_singular_update_is_reported_as_such():
    """A noise field converted at alpha = 0 (linear flow, t = 1) is singular: refused before any evaluation,
    naming the time, the kind and alpha; by default the window starts off the singular end instead."""
    with pytest.raises(sf.SingularityError, match="noise field at t=1 .*alpha = 0"):
        sf.sample(sf.LinearFlow(), TARGET.field("noise"), "euler", steps=4, x_init=X, t_max=1.0)
    out = sf.sample(sf.LinearFlow(), TARGET.field("noise"), "euler", steps=4, n=4, shape=(2,))
    assert float(out.ts[0]) < 1.0 and torch.isfinite(out.x).all()


def test_solve_reports_nan_of_user_drift():
    with pytest.raises(sf.NonFiniteError, match="drift returned NaN or Inf at step 2, t=2"):
        sf.solve(lambda x, t: torch.where(t[:, None] >= 2, x * float("nan"), -x), None, X, [0.0, 1.0, 2.0, 3.0],
                 "euler")
