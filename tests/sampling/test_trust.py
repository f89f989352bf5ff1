"""The guards behind the trust matrix: default windows off singular ends, the preflight probe, one-sided
derivatives at DiscreteVP's knots, networks that write into their input, half-precision networks."""

import math

import numpy as np
import pytest
import torch

import sdeflow as sf
from sdeflow.stability import PROBE_VARIANCE, conditional_mean_factor
from sdeflow.testing import fit_order
from sdeflow.window import default_window

D = torch.float64
TARGET = sf.Gaussian([1.0, -0.5], [0.4, 2.0])


# ---- windows ----------------------------------------------------------------------------------------
def test_cosine_alpha_is_exactly_zero_at_one_and_its_default_end_is_dpm_solvers():
    p = sf.CosineVP()
    assert float(p.alpha(1.0)) == 0.0 and float(p.log_snr(1.0)) == -math.inf
    assert p.t_max == 0.9946
    t = torch.tensor([0.9, 0.999, 0.999999], dtype=D)
    assert float((p.t_from_log_snr(p.log_snr(t)) - t).abs().max()) < 1e-12


@pytest.mark.parametrize("kind,sde,expect", [("velocity", False, 1.0), ("data", False, 1.0), ("noise", False, None),
                                             ("score", False, None), ("velocity", True, None)])
def test_linear_flow_default_noise_end_follows_the_field_kind_and_noise(kind, sde, expect):
    """At t = 1 a velocity or data field is regular on LinearFlow; a noise/score field (x0 divides by alpha = 0)
    and the reverse SDE (g^2 infinite) start at log-SNR -10 instead."""
    p = sf.LinearFlow()
    g2 = p.g2 if sde else None
    t_max, _ = default_window(p, kind, gamma2_fn=g2)
    want = expect if expect is not None else float(torch.sigmoid(torch.tensor(5.0, dtype=D)))
    assert t_max == pytest.approx(want, rel=1e-12)
    assert float(p.log_snr(t_max)) == pytest.approx(-10.0 if expect is None else -math.inf)


@pytest.mark.parametrize("make", [lambda: sf.DiscreteVP(T=20), lambda: sf.VE(0.01, 0.5), lambda: sf.VP(beta_max=1.0)])
def test_the_default_prior_is_refused_where_the_path_does_not_reach_noise(make):
    """alpha/sigma > e^-2 at t_max: N(0, sigma^2) is not the marginal (a data mean of 2 would be off by several
    standard errors); refused by name, and accepted with an explicit x_init (the user's marginal)."""
    p = make()
    with pytest.raises(sf.SdeflowValueError, match="default prior N.0, sigma.2. is not the marginal"):
        sf.sample(p, TARGET.field("noise"), "heun", steps=32, n=4, shape=(2,))
    x = TARGET.marginal(p, float(p.t_max)).sample(4, generator=torch.Generator().manual_seed(0), dtype=D)
    sf.sample(p, TARGET.field("noise"), "heun", steps=32, x_init=x)


@pytest.mark.parametrize("make,kind", [(lambda: sf.VE(1e-30, 1e30), "data"), (lambda: sf.VP(beta_max=1e6), "data"),
                                       (lambda: sf.VE(1e-30, 1e30), "noise")])
def test_ends_beyond_the_extreme_log_snr_move_to_the_default_ends(make, kind):
    """Beyond |log-SNR| = 30 steps change nothing: the default window starts at log-SNR -10 (and stops at
    sigma/alpha = 0.002) for every kind, and the samples have the exact marginal at the window's end."""
    p = make()
    t_max, t_min = default_window(p, kind)
    assert float(p.log_snr(t_max)) == pytest.approx(-10.0, abs=1e-6)
    assert float(p.log_snr(t_min)) <= 30.0
    n = 4000
    x = sf.sample(p, TARGET.field(kind), "dpmpp_2m", steps=100, grid="karras", n=n, shape=(2,), dtype=D,
                  generator=torch.Generator().manual_seed(3)).x
    mean, var = TARGET.moments(p, t_min)
    assert ((x.mean(0) - mean).abs() < 5 * (var / n).sqrt()).all()
    assert ((x.var(0) / var - 1).abs() < 5 * math.sqrt(2 / n) + 0.02).all()  # 5 SE of a variance + solver error


@pytest.mark.parametrize("solver,path,kw", [
    ("torchdiffeq:rk4", sf.VE, {"steps": 1}),
    ("torchsde:euler", lambda: sf.VE(0.002, 500.0), {"steps": 10, "grid": "log_snr", "gamma": "reverse"})])
def test_backend_fixed_step_methods_are_probed_too(solver, path, kw):
    """torchdiffeq's fixed-step methods get the pathwise probe, torchsde's the Monte Carlo one (their answers
    there were 112x / 3000x off); more steps pass."""
    with pytest.raises(sf.UnstableError, match=f"solver '{solver}' cannot integrate"):
        sf.sample(path(), TARGET.field("score"), solver, n=4, shape=(2,), dtype=D, **kw)
    kw = {**kw, "steps": 128}
    sf.sample(path(), TARGET.field("score"), solver, n=4, shape=(2,), dtype=D,
              generator=torch.Generator().manual_seed(0), **kw)


def test_default_window_samples_converge_where_t_max_1_is_refused():
    p = sf.LinearFlow()
    with pytest.raises(sf.SingularityError, match="noise field at t=1"):
        sf.sample(p, TARGET.field("noise"), "rk4", steps=8, n=4, shape=(2,), t_max=1.0)
    t_max, t_min = default_window(p, "noise")
    x = TARGET.marginal(p, t_max).sample(16, generator=torch.Generator().manual_seed(0), dtype=D)
    errs = [float((sf.sample(p, TARGET.field("noise"), "rk4", steps=m, x_init=x, t_max=t_max).x
                   - TARGET.flow(x, p, t_max, t_min)).abs().max()) for m in (8, 16, 32, 64)]
    assert fit_order([1 / 8, 1 / 16, 1 / 32, 1 / 64], errs).slope > 3.7, errs


def test_x_init_with_a_moved_default_end_is_refused_and_explicit_ends_are_kept():
    p = sf.LinearFlow()
    x = torch.randn(4, 2, dtype=D, generator=torch.Generator().manual_seed(1))
    with pytest.raises(sf.SingularityError, match="x_init was given"):
        sf.sample(p, TARGET.field("score"), "heun", steps=4, x_init=x)
    out = sf.sample(p, TARGET.field("score"), "heun", steps=16, x_init=x, t_max=0.99)
    assert float(out.ts[0]) == 0.99


def test_singular_tables_are_refused_before_any_network_call():
    calls = []

    def net(x, t):
        calls.append(1)
        return TARGET.predict(x, t, sf.VP(), "data")
    with pytest.raises(sf.SingularityError, match="data field at t=0"):
        sf.sample(sf.VP(), sf.DataField(net), "heun", steps=4, n=2, shape=(2,), t_min=0.0)
    assert not calls


def test_edm_integration_coordinates_cover_any_window():
    """EDM's time is defined beyond t = 1 (sigma > sigma_max): VP's log-SNR -10 (sigma/alpha = 152 > 80) is
    reachable, so integrating a VP field in EDM coordinates converges to the exact VP flow."""
    x = TARGET.marginal(sf.VP(), 1.0).sample(16, generator=torch.Generator().manual_seed(2), dtype=D)
    exact = TARGET.flow(x, sf.VP(), 1.0, 1e-3)
    errs = [float((sf.sample(sf.VP(), TARGET.field("noise"), "heun", steps=m, grid="karras", x_init=x,
                             integration_path=sf.EDM()).x - exact).abs().max()) for m in (16, 32, 64, 128)]
    assert abs(fit_order([1 / 16, 1 / 32, 1 / 64, 1 / 128], errs).slope - 2) < 0.3, errs


def test_path_times_outside_the_domain_are_errors_not_nans():
    for fn in (lambda: sf.CosineVP().sigma(-0.5), lambda: sf.VP().alpha(torch.tensor([0.5, 1.2])),
               lambda: sf.DiscreteVP().log_snr(2.0)):
        with pytest.raises(sf.SdeflowValueError, match=r"t must be in \[0, 1\]"):
            fn()
    assert torch.isfinite(sf.EDM().sigma(3.0))  # integration coordinates beyond t = 1


# ---- the preflight probe ----------------------------------------------------------------------------
def test_conditional_mean_factor_is_the_exact_flow_for_the_ode_and_damped_for_the_sde():
    p = sf.VP()
    grid = np.linspace(1.0, 1e-3, 9)
    g = sf.Gaussian([0.0], [PROBE_VARIANCE])
    ode = conditional_mean_factor(p, grid)
    for k, t in enumerate(grid):
        assert ode[k] == pytest.approx(float(g.flow(torch.ones(1, 1, dtype=D), p, 1.0, float(t))), rel=1e-12)
    # reverse SDE: the mean solves dm/dt = lambda m, lambda = f + (g^2 + gamma^2)/(2V) with gamma = g, so the
    # factor is exp(-int_{t_min}^{1} lambda dt) (adaptive quadrature, independent of the 8-point rule)
    from scipy.integrate import quad

    def lam(t):
        tt = torch.tensor([t], dtype=D)
        return float(p.f(tt)) + float(p.g2(tt)) / float(g.moments(p, t)[1])
    sde = conditional_mean_factor(p, grid, p.g2)
    exact = math.exp(-quad(lam, 1e-3, 1.0, epsabs=1e-13, epsrel=1e-12, limit=200)[0])
    assert sde[-1] == pytest.approx(exact, rel=1e-9)
    assert sde[-1] < ode[-1]


def test_unstable_euler_maruyama_is_refused_and_the_refusal_is_right():
    """The reverse SDE of CosineVP at its default window contracts at rate ~185 near t = 0.9946: at 5 steps
    Euler-Maruyama's first step multiplies the state by |1 - h 185| = 36, and on a wide target (variance 2)
    the later steps cannot undo it: refused, and bypassing the refusal indeed gives a variance several times
    too large; at 400 steps it runs."""
    p = sf.CosineVP()
    kw = dict(n=2000, shape=(2,), dtype=D, generator=torch.Generator().manual_seed(3))
    with pytest.raises(sf.UnstableError, match="step 0"):
        sf.sample(p, TARGET.field("noise"), "euler_maruyama", steps=5, **kw)
    bad = sf.sample(p, TARGET.field("noise"), "euler_maruyama", steps=5, preflight=False, **kw).x
    mt, Vt = TARGET.moments(p, p.t_min)
    assert float((bad.var(0) / Vt).max()) > 4
    good = sf.sample(p, TARGET.field("noise"), "euler_maruyama", steps=400, **kw).x
    assert ((good.mean(0) - mt).abs() < 5 * (Vt / 2000).sqrt() + 0.02).all()
    # the exponential integrator takes the same window in 10 steps of log-SNR: its linear part is exact
    sf.sample(p, TARGET.field("noise"), "sde_dpmpp_2m", steps=10, grid="log_snr", **kw)


def test_probe_verdicts_are_cached_per_configuration():
    p = sf.VE(1e-3, 1e3)
    grid = sf.grids.make_grid("log_snr", p, 32, 1.0, 0.0).numpy()
    sf.sample(p, TARGET.field("data"), "heun", grid=grid, n=2, shape=(2,))
    assert len(p.__dict__["_preflight"]) == 1
    sf.sample(p, TARGET.field("data"), "heun", grid=grid, n=2, shape=(2,))
    assert len(p.__dict__["_preflight"]) == 1


# ---- DiscreteVP: one-sided derivatives at the knots -----------------------------------------------------
@pytest.mark.parametrize("solver", ["heun", "rk4", "stochastic_heun"])
def test_steps_inside_one_knot_interval_keep_the_declared_order(solver):
    """Inside one knot interval DiscreteVP's coefficients are smooth; a stage at the interval's lower knot
    must see that interval's derivative (the limit from above), or the order falls to 1."""
    p = sf.DiscreteVP([0.2, 0.4, 0.6, 0.8])  # strongly varying coefficients inside each interval
    t_max, t_min = 0.75, 0.5
    x = TARGET.marginal(p, t_max).sample(16, generator=torch.Generator().manual_seed(4), dtype=D)
    exact = TARGET.flow(x, p, t_max, t_min)
    steps = (2, 4, 8, 16)
    errs = [float((sf.sample(p, TARGET.field("noise"), solver, steps=m, x_init=x, t_max=t_max, t_min=t_min,
                             gamma=0.0).x - exact).abs().max()) for m in steps]
    order = sf.solvers.get(solver).order
    assert abs(fit_order([1 / m for m in steps], errs).slope - order) < 0.3, errs


def test_one_sided_coefficients_at_a_knot():
    p = sf.DiscreteVP(T=10)
    t = torch.tensor([0.5, 0.5], dtype=D)
    below, above = p.coefficients_one_sided(t, torch.tensor([-1.0, 1.0]))[2]
    assert float(below) == pytest.approx(0.5 * float(p.alpha(0.5)) * 10 * math.log1p(-float(p.betas[4])))
    assert float(above) == pytest.approx(0.5 * float(p.alpha(0.5)) * 10 * math.log1p(-float(p.betas[5])))


# ---- networks that write into their input --------------------------------------------------------------
def _mutating(x, t):
    out = TARGET.predict(x.clone(), t, sf.VP(), "noise")
    x.mul_(0.5)
    return out


@pytest.mark.parametrize("solver,kw", [("euler", {}), ("heun", {}), ("dpmpp_2m", {}), ("ddim", {}),
                                       ("euler_maruyama", {}), ("dopri5", {}), ("heun", {"return_trajectory": True})])
def test_a_network_writing_into_its_input_is_stopped(solver, kw):
    steps = {} if solver == "dopri5" else {"steps": 64}
    with pytest.raises(sf.InputMutationError, match="modified its input x in place"):
        sf.sample(sf.VP(), sf.NoiseField(_mutating), solver, n=3, shape=(2,), generator=torch.Generator(), **steps,
                  **kw)


def test_under_inference_mode_the_network_gets_a_copy_and_the_answer_is_right():
    x = TARGET.marginal(sf.VP(), 1.0).sample(8, generator=torch.Generator().manual_seed(5), dtype=D)
    want = sf.sample(sf.VP(), TARGET.field("noise"), "heun", steps=32, x_init=x).x
    with torch.inference_mode():
        got = sf.sample(sf.VP(), sf.NoiseField(_mutating), "heun", steps=32, x_init=x.clone()).x
    assert torch.equal(got, want)


def test_solve_drift_writing_into_its_input_is_stopped():
    with pytest.raises(sf.InputMutationError, match="drift modified its input"):
        sf.solve(lambda x, t: x.mul_(0.5), None, torch.ones(2, 2), [0.0, 0.5, 1.0], "rk4")


# ---- half-precision networks -----------------------------------------------------------------------------
def test_a_half_precision_network_runs_through_the_field_dtype_option():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x, t):
            return self.lin(x)
    net = Net().to(torch.bfloat16)
    with pytest.raises(RuntimeError) as info:
        sf.sample(sf.VP(), sf.NoiseField(net), "heun", steps=32, n=2, shape=(2,))
    assert any("NoiseField(net, dtype=torch.bfloat16)" in n for n in getattr(info.value, "__notes__", []))
    out = sf.sample(sf.VP(), sf.NoiseField(net, dtype=torch.bfloat16), "heun", steps=32, n=2, shape=(2,))
    assert out.x.dtype == torch.float32 and torch.isfinite(out.x).all()
