"""Every error of the core issue's item 7 is raised, and its message names the argument and the fix."""

import pytest
import torch

import sdeflow as sf

D = torch.float64
TARGET = sf.Gaussian([1.0, -0.5], [0.5, 2.0])
X = torch.randn(4, 2, dtype=D)


def run(field=None, **kw):
    args = dict(x_init=X)
    if isinstance(kw.get("grid", "uniform"), str):
        args["steps"] = 5
    args.update(kw)
    return sf.sample(sf.VP(), field or TARGET.field("noise"), args.pop("solver", "euler"), **args)


# ---- shapes, dtypes and devices that disagree -----------------------------------------------------
def test_field_output_of_wrong_shape():
    with pytest.raises(ValueError, match=r"returned shape \(4, 1\).*x has shape \(4, 2\)"):
        run(sf.NoiseField(lambda x, t: x[:, :1]))


def test_field_output_on_another_device():
    with pytest.raises(ValueError, match="on meta.*move the network"):
        run(sf.NoiseField(lambda x, t: torch.empty(x.shape, device="meta", dtype=x.dtype)))


def test_field_output_of_integer_dtype():
    with pytest.raises(TypeError, match="dtype torch.int64.*floating"):
        run(sf.NoiseField(lambda x, t: torch.zeros(x.shape, dtype=torch.int64)))


def test_half_precision_network_output_is_brought_to_x_dtype():
    sol = run(sf.NoiseField(lambda x, t: TARGET.noise(x, t, sf.VP()).half()))
    assert sol.x.dtype == D


def test_x_init_dtype_disagrees_with_dtype_argument():
    with pytest.raises(TypeError, match=r"dtype=torch.float32 disagrees with x_init.dtype=torch.float64"):
        run(dtype=torch.float32)


def test_x_init_device_disagrees_with_device_argument():
    with pytest.raises(ValueError, match="device=meta disagrees with x_init.device=cpu"):
        run(device="meta")


@pytest.mark.parametrize("x, match", [
    (torch.zeros(3, 2, dtype=torch.int64), "x_init must have a floating dtype"),
    (torch.zeros(3, 2, dtype=torch.float16), "too coarse for the solver state"),
    ([[0.0, 1.0]], "x_init must be a torch.Tensor"),
])
def test_x_init_type(x, match):
    with pytest.raises((TypeError, ValueError), match=match):
        run(x_init=x)


def test_n_or_shape_disagree_with_x_init():
    with pytest.raises(ValueError, match="n=3 disagrees with x_init's batch size 4"):
        run(n=3)
    with pytest.raises(ValueError, match=r"shape=\(3,\) disagrees"):
        run(shape=(3,))
    with pytest.raises(ValueError, match="shape .* is needed with n"):
        sf.sample(sf.VP(), TARGET.field("noise"), "euler", steps=2, n=3)


def test_generator_on_another_device_than_x():
    gen = torch.Generator()
    with pytest.raises(ValueError, match="generator is on cpu but x is on meta"):
        sf.noise.as_noise_source(None, gen, torch.device("meta"))


# ---- grids ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid, match", [
    ([1.0, 0.5, 0.5, 0.1], r"strictly decreasing.*grid\[1\]=0.5 -> grid\[2\]=0.5"),
    ([0.1, 0.5, 1.0], "strictly decreasing"),
    ([1.0, 0.6, 0.8, 0.1], "strictly decreasing"),
    ([1.5, 0.5, 0.1], r"leaves \[0, 1\] \(found t=1.5\)"),
    ([1.0, 0.5, -0.1], r"leaves \[0, 1\]"),
    ([1.0], "at least 2 times"),
    ([1.0, float("nan")], "NaN or Inf"),
    (torch.tensor([1, 0]), "floating tensor of times"),
])
def test_bad_grids(grid, match):
    with pytest.raises((ValueError, TypeError), match=match):
        sf.sample(sf.VP(), TARGET.field("noise"), "euler", grid=grid, x_init=X)


def test_solve_accepts_increasing_grids_but_not_unsorted_ones():
    sol = sf.solve(lambda x, t: -x, None, X, [0.0, 1.0, 2.0], "euler")
    torch.testing.assert_close(sol.x, X * 0.0)
    with pytest.raises(ValueError, match="strictly monotone"):
        sf.solve(lambda x, t: -x, None, X, [0.0, 1.0, 0.5], "euler")


@pytest.mark.parametrize("kw, match", [
    (dict(steps=0), "steps must be a positive integer"),
    (dict(steps=None), r"give steps= .* or nfe="),
    (dict(steps=3, nfe=3), "either steps= or nfe="),
    (dict(t_min=0.5, t_max=0.2), "need 0 <= t_min < t_max <= 1"),
    (dict(grid="cosine"), "unknown grid 'cosine'"),
    (dict(grid=[1.0, 0.5], steps=2), "steps is set by the explicit grid"),
    (dict(grid=[1.0, 0.5], t_min=0.1, steps=None), "t_min=0.1 disagrees"),
    (dict(steps=None, nfe=1, solver="heun"), "nfe=1 is below the minimum of 2 for solver 'heun'"),
    (dict(steps=None, nfe=2, solver="heun", final_denoise=True), r"minimum of 3 \(including 1 for final_denoise\)"),
    (dict(chunk_size=0), "chunk_size must be an integer >= 1"),
])
def test_bad_sampler_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        run(**kw)


# ---- solvers and gamma ----------------------------------------------------------------------------
def test_unknown_solver_name_suggests_the_closest():
    with pytest.raises(ValueError, match=r"unknown solver 'hune'. Did you mean 'heun'\?"):
        run(solver="hune")
    with pytest.raises(TypeError, match="solver must be a name"):
        run(solver=3)


def test_gamma_needs_an_sde_solver():
    with pytest.raises(ValueError, match="gamma='reverse' makes the dynamics an SDE.*euler_maruyama"):
        run(gamma="reverse", solver="heun")
    with pytest.raises(ValueError, match="gamma must be"):
        run(gamma="forward", solver="euler_maruyama")
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        run(gamma=-1.0, solver="euler_maruyama")


def test_solve_diffusion_needs_an_sde_solver():
    with pytest.raises(ValueError, match="diffusion is given but solver 'rk4' is an ODE solver"):
        sf.solve(lambda x, t: -x, 1.0, X, [0.0, 1.0], "rk4")


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
