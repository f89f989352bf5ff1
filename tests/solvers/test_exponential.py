"""Exponential integrators (DDIM / DPM-Solver / DPM-Solver++ / UniPC-style) converge at their declared
order on the exact Gaussian probability-flow solution, on every path of the order sweep, in float64.

Grids: the multistep methods use Karras' rho = 7 schedule. On a grid uniform in log-SNR the exact three-step
method (``exp_3m_exact``) is superconvergent on a Gaussian target (it measures ~4, so the test would not test
its declaration); on the Karras grid every multistep method measures its order within 0.1. The authors'
DPM-Solver++(3M) (``dpmpp_3m``: third-order term half the quadratic's) declares 2 and measures it from about
256 steps on (local slopes 1.91-1.99 from 128 to 2048 steps on every path; 1.0-1.3 at 32-64 steps, where the
higher-order error of its exact part and the O(h^2) error of the halved term partly cancel): it is checked
at its declared ``pre_asymptotic_factor`` (8) times the steps. The single-step
methods use the log-SNR grid their stages are laid out in; DPM-Solver-3 with data prediction reaches its
asymptotic regime later (local slopes 2.5, 2.8, 2.9, 2.96 from 16 steps), so it is fitted from 64 steps.
"""

import pytest
import torch

import sdeflow as sf
from sdeflow.testing import fit_order
from paths_catalogue import ALPHA_ZERO_AT_1, PATHS

D = torch.float64
ORDER_PATHS = ["VP", "SubVP", "CosineVP", "VE", "LinearFlow"]
TARGET = sf.Gaussian([1.0, -0.5], [0.4, 2.0])

K, L = ("karras", [32, 64, 128, 256]), ("log_snr", [16, 32, 64, 128])
# (solver, options, field kind, (grid, steps)); kinds vary so every conversion is exercised
CONFIGS = [
    ("ddim", {}, "noise", K),
    ("dpm_solver_2", {}, "noise", L),
    ("dpm_solver_2", {"predict": "data"}, "data", L),
    ("dpm_solver_3", {}, "noise", L),
    ("dpm_solver_3", {"predict": "data"}, "data", ("log_snr", [64, 128, 256, 512])),
    ("dpmpp_2m", {}, "data", K),
    ("dpm_solver_2", {"solver_type": "taylor"}, "noise", L),
    ("dpm_solver_3", {"solver_type": "taylor"}, "noise", L),
    ("dpm_solver_2", {"stages": "time_uniform"}, "noise", L),
    ("dpm_solver_3", {"stages": "time_uniform", "solver_type": "taylor"}, "data", ("log_snr", [64, 128, 256, 512])),
    ("dpmpp_3m", {}, "velocity", K),
    ("dpmpp_3m", {"solver_type": "taylor"}, "data", K),
    ("dpmpp_3m", {"startup": "singlestep"}, "score", K),
    ("exp_3m_exact", {}, "velocity", K),
    ("exp_3m_exact", {"startup": "singlestep"}, "data", K),
    ("unipc", {}, "data", K),
    ("unipc", {"variant": "bh1"}, "data", K),
    ("unipc", {"order": 1}, "score", K),
    ("unipc", {"order": 3, "variant": "bh1"}, "noise", K),
    ("exp_multistep", {"order": 2, "corrector": True}, "data", K),
    ("exp_multistep", {"order": 3, "predict": "noise", "variant": "dpmsolver"}, "noise", K),
    ("exp_multistep", {"order": 2, "predict": "noise"}, "noise", K),
    ("deis", {}, "noise", K),
    ("deis", {"order": 2}, "velocity", K),
    ("deis", {"order": 3, "startup": "singlestep"}, "data", K),
    ("deis_tab", {}, "noise", K),
    ("deis_tab", {"order": 2}, "data", K),
    ("deis_tab", {"order": 1}, "velocity", K),
]


def _id(c):
    return c[0] + "".join(f"-{k}={v}" for k, v in c[1].items())


@pytest.mark.parametrize("solver,options,kind,plan", CONFIGS, ids=[_id(c) for c in CONFIGS])
@pytest.mark.parametrize("name", ORDER_PATHS)
def test_exponential_order(solver, options, kind, plan, name):
    path = PATHS[name]()
    t_max = 0.99 if name in ALPHA_ZERO_AT_1 else 1.0  # finite log-SNR at every grid time
    t_min = 1e-2
    if name in ALPHA_ZERO_AT_1 and kind in ("noise", "score"):
        kind = "velocity"
    x1 = TARGET.marginal(path, t_max).sample(64, generator=torch.Generator().manual_seed(7), dtype=D)
    exact = TARGET.flow(x1, path, t_max, t_min)
    s = sf.solvers.get(solver, **options)
    (grid, steps), errs = plan, []
    steps = [n * s.pre_asymptotic_factor for n in steps]  # dpmpp_3m: its halved third-order term crosses late
    for n in steps:
        sol = sf.sample(path, TARGET.field(kind), s, steps=n, grid=grid, x_init=x1, t_max=t_max, t_min=t_min)
        assert sol.nfe == s.nfe_for_steps(n)
        errs.append(float((sol.x - exact).norm(dim=1).max()))
    fit = fit_order([1.0 / n for n in steps], errs)
    assert abs(fit.slope - s.order) <= 0.3, f"{s!r} on {name}: {fit} (declared {s.order})"


def test_ddim_eta0_is_the_first_order_exponential_integrator():
    path, x = sf.VP(), torch.randn(32, 2, dtype=D, generator=torch.Generator().manual_seed(0))
    for kind in ("noise", "data", "score", "velocity"):
        a = sf.sample(path, TARGET.field(kind), "ddim", steps=17, x_init=x, t_min=1e-3).x
        b = sf.sample(path, TARGET.field(kind), "exp_multistep", order=1, steps=17, x_init=x, t_min=1e-3).x
        c = sf.sample(path, TARGET.field(kind), "exp_multistep", order=1, predict="noise", steps=17, x_init=x,
                      t_min=1e-3).x
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
        torch.testing.assert_close(a, c, rtol=0, atol=1e-10)


def test_multistep_steps_into_sigma_zero_exactly():
    """The last step to sigma = 0 (VE t_min with final sigma 0 is not a grid time; on VP t = 0 is) is taken
    at order 1, where x_t = x0-prediction: finite, and equal to a final denoising step."""
    path = sf.VP()
    x = TARGET.marginal(path, 1.0).sample(16, generator=torch.Generator().manual_seed(3), dtype=D)
    grid = [1.0, 0.5, 0.2, 0.05, 0.0]
    out = sf.sample(path, TARGET.field("data"), "dpmpp_3m", grid=grid, x_init=x, return_trajectory=True)
    torch.testing.assert_close(out.x, TARGET.data(out.trajectory[-2], 0.05, path), rtol=0, atol=1e-12)


def test_deis_tab_is_deis_where_time_is_affine_in_log_snr():
    """On VE (sigma = sigma_min (sigma_max / sigma_min)^t, alpha = 1) log rho is affine in t, so DEIS's
    polynomial in time (tAB, weights by quadrature) and in log rho (deis, closed form) are the same interpolant:
    the two agree to rounding; order 1 of both is DDIM."""
    path = sf.VE()
    x = TARGET.marginal(path, 1.0).sample(16, generator=torch.Generator().manual_seed(5), dtype=D)
    for order in (1, 2, 3):
        a = sf.sample(path, TARGET.field("noise"), "deis_tab", order=order, steps=12, grid="karras", x_init=x).x
        b = sf.sample(path, TARGET.field("noise"), "deis", order=order, steps=12, grid="karras", x_init=x).x
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12 * float(b.abs().max()))
    one = sf.sample(path, TARGET.field("noise"), "deis_tab", order=1, steps=12, grid="karras", x_init=x).x
    ddim = sf.sample(path, TARGET.field("noise"), "ddim", steps=12, grid="karras", x_init=x).x
    torch.testing.assert_close(one, ddim, rtol=1e-12, atol=1e-12 * float(ddim.abs().max()))
