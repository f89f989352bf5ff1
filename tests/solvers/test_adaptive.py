"""Adaptive solvers and the torchdiffeq / torchsde backends: tolerances met on the exact Gaussian flow,
NFE and rejections reported and equal to the field's call count, budgets never exceeded."""

import math

import numpy as np
import pytest
import torch

import sdeflow as sf
from sdeflow.testing import CountingField
from sdeflow.testing import fit_order

D = torch.float64
TARGET = sf.Gaussian([1.0, -0.5], [0.4, 2.0])


Counting = CountingField


def _case(name):
    path = getattr(sf, name)()
    t_max = 0.999 if name == "LinearFlow" else 1.0
    x = TARGET.marginal(path, t_max).sample(64, generator=torch.Generator().manual_seed(1), dtype=D)
    return path, t_max, x, TARGET.flow(x, path, t_max, 1e-2)


MODES = {"per-sample": dict(per_sample=True), "shared, worst sample": dict(per_sample=False, error_norm="sample"),
         "shared, batch RMS": dict(per_sample=False, error_norm="batch")}


@pytest.mark.parametrize("name", ["VP", "VE", "LinearFlow"])
@pytest.mark.parametrize("mode", list(MODES))
def test_dopri5_meets_its_tolerance_and_reports_its_steps(name, mode):
    """Local error control keeps the global error within a small multiple of the tolerance (measured: 0.2 to
    3 tolerances with a shared step, up to 6 per sample; a broken controller or error estimate is off by
    orders of magnitude) and the global error is proportional to the tolerance (a 1e4 tighter tolerance gives
    at least a 1e3 smaller error).

    Per sample, each row is controlled like a batch of one: at rtol = atol = 1e-4 a VP sample takes 4 steps over
    the whole window and the embedded estimate underestimates its error (measured 25 tolerances; the shared
    step hid it behind the worst sample, and a shared-step solve of that sample alone gives the same 25), so
    the envelope is asserted per sample from 1e-6, where the estimate is asymptotic."""
    path, t_max, x, exact = _case(name)
    per_sample = MODES[mode]["per_sample"]
    errs = []
    for tol in (1e-4, 1e-6, 1e-8):
        field = Counting(TARGET.field("velocity"))
        sol = sf.sample(path, field, "dopri5", x_init=x, t_max=t_max, t_min=1e-2, rtol=tol, atol=tol, **MODES[mode])
        scaled = float(((sol.x - exact).abs() / (tol + tol * exact.abs())).max())
        if not (per_sample and tol == 1e-4):
            assert scaled < 10.0, (tol, scaled)
        errs.append(float((sol.x - exact).abs().max()))
        st = sol.stats
        acc, rej, ev = st["accepted"], st["rejected"], st["evaluations"]
        assert acc.shape == rej.shape == ev.shape == (x.shape[0],) and acc.dtype == torch.int64
        assert bool((acc >= 1).all() and (rej >= 0).all())
        assert torch.equal(ev, 6 * (acc + rej) + 2)  # FSAL stages + f0 and the initial-step probe
        assert (st["accepted_total"], st["rejected_total"], st["evaluations_total"]) == (
            int(acc.sum()), int(rej.sum()), int(ev.sum()))
        assert sol.nfe == field.calls == int(ev.max())  # batched calls: the sample with the most work
        if per_sample:
            assert field.rows == st["evaluations_total"]  # finished rows leave the batched evaluation
            assert "step_times" not in st
        else:
            assert bool((acc == acc[0]).all() and (ev == ev[0]).all())
            assert field.rows == x.shape[0] * field.calls
            assert len(st["step_times"]) == int(acc[0]) + 1
    assert errs[2] < 1e-3 * errs[0]


def test_per_sample_norm_is_stricter_than_the_batch_norm():
    """With one outlying sample, the per-sample norm controls that sample; the batch RMS lets it slide."""
    path, t_max, x, exact = _case("VE")
    x = x.clone()
    x[0] *= 4.0
    exact = TARGET.flow(x, path, t_max, 1e-2)
    out = {}
    for norm in ("sample", "batch"):
        sol = sf.sample(path, TARGET.field("data"), "dopri5", x_init=x, t_min=1e-2, rtol=1e-5, atol=1e-5,
                        error_norm=norm, per_sample=False)
        out[norm] = (sol.nfe, float((sol.x - exact).abs().max()))
    assert out["sample"][0] >= out["batch"][0]
    assert out["sample"][1] <= out["batch"][1]


def test_row_data_follow_their_samples_through_per_sample_steps():
    """``solve(..., row_data=)``: ``x' = -a x`` with a per-sample rate ``a`` (1 to 30: the fast samples take more
    steps, the slow ones leave the batched evaluation early). Each sample gets its own rate whatever rows are
    still running: it meets ``exp(-a t)`` within 100 tolerances (the local errors of its steps, which a decaying
    flow does not amplify) and is bitwise the same solved alone."""
    a = torch.linspace(1.0, 30.0, 12, dtype=torch.float64)
    x0 = torch.ones(12, 3, dtype=torch.float64)
    seen = []

    def drift(x, t, rate):
        seen.append(x.shape[0])
        return -rate[:, None] * x

    sol = sf.solve(drift, None, x0, [0.0, 1.0], "dopri5", rtol=1e-8, atol=1e-10, row_data=(a,))
    assert min(seen) < 12  # compaction happened: the drift saw a subset of the rows
    err = (sol.x - torch.exp(-a)[:, None]).abs().max()
    assert float(err) < 1e-6
    for i in (0, 5, 11):
        alone = sf.solve(drift, None, x0[i:i + 1], [0.0, 1.0], "dopri5", rtol=1e-8, atol=1e-10,
                         row_data=(a[i:i + 1],))
        assert torch.equal(alone.x, sol.x[i:i + 1])
    with pytest.raises(sf.SdeflowValueError, match="row_data must be tensors with one row per sample"):
        sf.solve(drift, None, x0, [0.0, 1.0], "dopri5", row_data=(a[:3],))


@pytest.mark.parametrize("solver", ["dopri5", "adaptive_heun_sde", "torchdiffeq:dopri5", "torchdiffeq:rk4",
                                    "torchsde:euler"])
def test_adaptive_and_backend_budgets_are_never_exceeded(solver):
    s = sf.solvers.get(solver)
    gamma = "reverse" if s.sde else 0.0
    for budget in (3, 12, 40, 400):
        field = Counting(TARGET.field("noise"))
        kw = dict(nfe=budget, x_init=torch.randn(4, 2, dtype=D, generator=torch.Generator().manual_seed(0)),
                  gamma=gamma, t_min=1e-2, generator=torch.Generator().manual_seed(1),
                  preflight=False)  # budgets, not accuracy: a fixed-step backend's coarse grid is its own case
        try:
            sol = sf.sample(sf.VP(), field, solver, **kw)
        except ValueError as e:
            assert "nfe=" in str(e)
            assert field.calls <= budget
            continue
        assert sol.nfe == field.calls <= budget


def test_adaptive_heun_sde_reproduces_the_exact_marginals():
    """Reverse SDE from the exact prior with the exact score (Jolicoeur-Martineau et al.'s adaptive pair):
    mean and variance at t_min within 4 standard errors; accepted/rejected steps reported."""
    path, n, t_min = sf.VP(), 10000, 1e-3
    mt, Vt = TARGET.moments(path, t_min)
    gen = torch.Generator().manual_seed(3)
    x1 = TARGET.marginal(path, 1.0).sample(n, generator=gen, dtype=D)
    field = Counting(TARGET.field("noise"))
    sol = sf.sample(path, field, "adaptive_heun_sde", x_init=x1, gamma="reverse", t_min=t_min, generator=gen,
                    rtol=1e-2, atol=1e-3)
    se_mean, se_var = torch.sqrt(Vt / n), Vt * math.sqrt(2.0 / (n - 1))
    assert torch.all((sol.x.mean(0) - mt).abs() < 4 * se_mean)
    assert torch.all((sol.x.var(0) - Vt).abs() < 4 * se_var)
    acc, rej = sol.stats["accepted"], sol.stats["rejected"]
    assert acc.shape == (n,) and bool((acc == acc[0]).all() and (rej == rej[0]).all())  # one step size
    acc, rej = int(acc[0]), int(rej[0])
    assert acc > 1 and sol.nfe == field.calls == 2 * (acc + rej) == int(sol.stats["evaluations"][0])


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun3", "rk4"])
def test_torchdiffeq_fixed_grid_methods_converge_at_their_order(method):
    path = sf.VP()
    x = TARGET.marginal(path, 1.0).sample(32, generator=torch.Generator().manual_seed(2), dtype=D)
    exact = TARGET.flow(x, path, 1.0, 1e-2)
    s = sf.solvers.get("torchdiffeq:" + method)
    steps, errs = [16, 32, 64, 128], []
    for n in steps:
        field = Counting(TARGET.field("noise"))
        sol = sf.sample(path, field, s, steps=n, x_init=x, t_min=1e-2)
        assert sol.nfe == field.calls == n * s.evals_per_step
        errs.append(float((sol.x - exact).abs().max()))
    fit = fit_order([1 / n for n in steps], errs)
    assert abs(fit.slope - s.order) < 0.3, fit


def test_torchdiffeq_through_solve_matches_our_own_solver():
    f = lambda x, t: -x * t[:, None]
    x0 = torch.tensor([[1.0, 2.0]], dtype=D)
    a = sf.solve(f, None, x0, np.linspace(0, 2, 33), "torchdiffeq:midpoint")
    b = sf.solve(f, None, x0, np.linspace(0, 2, 33), "midpoint")
    torch.testing.assert_close(a.x, b.x, rtol=1e-12, atol=1e-12)  # the same tableau (torchdiffeq's rk4 is the 3/8 rule)
    assert a.nfe == b.nfe == 64
    d = sf.solve(f, None, x0, np.linspace(0, 2, 9), "torchdiffeq:rk4")
    e = sf.solve(f, None, x0, np.linspace(0, 2, 9), "rk4_38")
    torch.testing.assert_close(e.x, d.x, rtol=1e-14, atol=1e-14)  # Kutta's 3/8 rule, both
    assert float((sf.solve(f, None, x0, np.linspace(0, 2, 9), "rk4").x - d.x).abs().max()) > 1e-7  # not the classical
    c = sf.solve(f, None, x0, [0.0, 2.0], "torchdiffeq:dopri5", rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(c.x, x0 * math.exp(-2.0), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("method", ["euler", "srk", "milstein"])
def test_torchsde_methods_reproduce_the_exact_marginals(method):
    from sdeflow.testing import affine_output_moments

    path, n, t_min, steps = sf.VP(), 10000, 1e-3, 200
    mt, Vt = TARGET.moments(path, t_min)
    se_mean, se_var = torch.sqrt(Vt / n), Vt * math.sqrt(2.0 / (n - 1))
    # premise: the weak bias of Euler-Maruyama (the lowest order of the three) at this step count, from its
    # exact output moments, is below one standard error
    run = lambda x, noise: sf.sample(path, TARGET.field("score"), "euler_maruyama", steps=steps, x_init=x,
                                     noise=noise, gamma="reverse", t_min=t_min).x
    m_s, v_s = affine_output_moments(run, *TARGET.moments(path, 1.0), steps)
    assert torch.all((m_s - mt).abs() < se_mean) and torch.all((v_s - Vt).abs() < se_var)
    gen = torch.Generator().manual_seed(5)
    x1 = TARGET.marginal(path, 1.0).sample(n, generator=gen, dtype=D)
    field = Counting(TARGET.field("score"))
    sol = sf.sample(path, field, "torchsde:" + method, steps=steps, x_init=x1, gamma="reverse", t_min=t_min,
                    generator=gen)
    assert sol.nfe == field.calls
    assert torch.all((sol.x.mean(0) - mt).abs() < 4 * se_mean)
    assert torch.all((sol.x.var(0) - Vt).abs() < 4 * se_var)


def test_torchdiffeq_and_torchsde_methods_are_listed():
    names = sf.solvers.available(backends=True)
    assert "torchdiffeq:dopri5" in names and "torchsde:srk" in names
    with pytest.raises(ValueError, match="unknown torchdiffeq method 'nope'"):
        sf.solvers.get("torchdiffeq:nope")
