r"""Step callbacks, SDEdit, masked inpainting and inversion, on exact Gaussian oracles.

* Callbacks: called once per step with the grid time reached; ``x0_hat`` is the data prediction of the
  step's last evaluation (for one-evaluation solvers the oracle's at the step's start, to rounding); a
  callback that returns None leaves the result bitwise unchanged (the step path and the generated loop
  perform the same operations) and the NFE unchanged.
* SDEdit from one guide point :math:`x_g` with the exact field: the reverse SDE started at
  :math:`x_{t_e} = \alpha x_g + \sigma z` samples :math:`p(x_0 \mid x_{t_e})`, so per coordinate of
  :math:`N(\mu, c)` the output is Gaussian with mean :math:`\mu + \alpha^2 c (x_g - \mu)/D` and variance
  :math:`c\sigma^2 (D + \alpha^2 c)/D^2`, :math:`D = \alpha^2 c + \sigma^2`.
* Inpainting: the known region is the known data exactly; for data whose regions are independent the
  unknown region's marginal is the exact conditional (= its marginal).
* Monte Carlo tolerances: 4 standard errors, :math:`4\sqrt{v/n}` for a mean and :math:`4 v \sqrt{2/n}` for a
  variance; the sampler's bias at the chosen steps was measured far below them (stochastic Heun: at n=200 000,
  mean within 2.1 standard errors, variance within 0.4 %).
* Inversion: pathwise errors in float64 against the exact flow map, slopes over halving steps
  (``sdeflow.testing.fit_order``), at least the declared order minus the usual 0.3.
"""

from __future__ import annotations

import pytest
import torch

import sdeflow as sf
from sdeflow import editing as ed
from sdeflow.errors import SdeflowTypeError, SdeflowValueError
from sdeflow.testing.checks import DEFAULT_TOL
from sdeflow.testing.convergence import fit_order

D = torch.float64
MU = torch.tensor([0.5, -1.0, 0.3], dtype=D)
C = torch.tensor([0.09, 0.64, 1.44], dtype=D)
TARGET = sf.Gaussian(MU, C)
PATH = sf.VP()
FIELD = sf.analytic.OracleField(TARGET, "noise")


# ---- callbacks ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["euler", "ddim", "dpmpp_2m", "heun", "euler_maruyama"])
def test_callback_sees_every_step_and_changes_nothing_when_it_returns_none(solver):
    seen = []

    def cb(i, t, x, x0_hat):
        seen.append((i, t, x.clone(), None if x0_hat is None else x0_hat.clone()))

    kw = dict(steps=6, n=5, shape=(3,), dtype=D, noise=sf.PerSampleNoise(4), preflight=False)  # equality, not accuracy
    plain = sf.sample(PATH, FIELD, solver, return_trajectory=True, **kw)
    with_cb = sf.sample(PATH, FIELD, solver, callback=cb, **kw)
    assert torch.equal(plain.x, with_cb.x) and plain.nfe == with_cb.nfe
    assert [s[0] for s in seen] == list(range(6))
    assert [s[1] for s in seen] == plain.ts[1:].tolist()
    for (_, _, x, _), xt in zip(seen, plain.trajectory[1:]):
        assert torch.equal(x, xt)
    if sf.solvers.get(solver).evals_per_step == 1:  # x0_hat: the oracle's data prediction at the step's start
        for i, _, _, x0 in seen:
            exact = TARGET.predict(plain.trajectory[i], float(plain.ts[i]), PATH, "data")
            torch.testing.assert_close(x0, exact, rtol=1e-12, atol=1e-12)


def test_callback_may_replace_the_state():
    def cb(i, t, x, x0_hat):
        return x0_hat if i == 2 else None  # jump to the data prediction after the last step

    out = sf.sample(PATH, FIELD, "ddim", steps=3, n=4, shape=(3,), dtype=D, noise=1, callback=cb,
                    return_trajectory=True)
    ref = sf.sample(PATH, FIELD, "ddim", steps=3, n=4, shape=(3,), dtype=D, noise=1, return_trajectory=True)
    last = TARGET.predict(ref.trajectory[2], float(ref.ts[2]), PATH, "data")
    torch.testing.assert_close(out.x, last, rtol=1e-12, atol=1e-12)
    assert torch.equal(out.trajectory[-1], out.x)


@pytest.mark.parametrize("solver", ["dopri5", "adaptive_heun_sde"])
def test_adaptive_solvers_call_back_after_each_accepted_step(solver):
    calls = []
    shared = {"per_sample": False} if solver == "dopri5" else {}  # a callback needs one time for the batch
    r = sf.sample(PATH, FIELD, solver, n=4, shape=(3,), dtype=D, generator=torch.Generator().manual_seed(2),
                  rtol=1e-3, atol=1e-3, **shared,
                  callback=lambda i, t, x, x0: calls.append((i, t)))
    assert [i for i, _ in calls] == list(range(int(r.stats["accepted"][0])))  # shared steps: every row's count
    assert [t for _, t in calls] == r.stats["step_times"][1:]


def test_callback_refusals():
    kw = dict(steps=2, n=2, shape=(3,), dtype=D, preflight=False)
    with pytest.raises(SdeflowTypeError, match="callback must be callable"):
        sf.sample(PATH, FIELD, "euler", callback=3, **kw)
    with pytest.raises(SdeflowTypeError, match="callback returned"):
        sf.sample(PATH, FIELD, "euler", callback=lambda i, t, x, x0: x[:1], **kw)


# ---- SDEdit ---------------------------------------------------------------------------------------------
def test_sdedit_samples_the_exact_posterior_of_the_noised_guide():
    n, te = 20_000, 0.5
    xg = torch.tensor([1.5, 0.0, -2.0], dtype=D)
    r = ed.sdedit(PATH, FIELD, xg.expand(n, 3).contiguous(), te, "stochastic_heun", steps=50, noise=1)
    a, s = float(PATH.alpha(te)), float(PATH.sigma(te))
    d = a * a * C + s * s
    mean, var = MU + a * a * C * (xg - MU) / d, C * s * s * (d + a * a * C) / d**2
    assert ((r.x.mean(0) - mean).abs() <= 4 * (var / n).sqrt()).all()
    assert ((r.x.var(0) - var).abs() <= 4 * var * (2 / n) ** 0.5).all()
    assert r.ts[0] == te


def test_sdedit_rows_do_not_depend_on_the_batch():
    xg = TARGET.sample(9, generator=torch.Generator().manual_seed(0), dtype=D)
    a = ed.sdedit(PATH, FIELD, xg, 0.4, "euler_maruyama", steps=5, noise=3, preflight=False).x
    b = ed.sdedit(PATH, FIELD, xg[:4], 0.4, "euler_maruyama", steps=5, noise=3, preflight=False).x
    assert torch.equal(a[:4], b)


# ---- inpainting -----------------------------------------------------------------------------------------
def test_inpainting_keeps_the_known_region_and_samples_the_unknown_marginal():
    n = 20_000
    known = TARGET.sample(n, generator=torch.Generator().manual_seed(3), dtype=D)
    mask = torch.tensor([[1.0, 0.0, 0.0]], dtype=D)
    r = ed.inpaint(PATH, FIELD, known, mask, "stochastic_heun", steps=100, noise=2)
    assert torch.equal(r.x[:, 0], known[:, 0])
    u, mu, c = r.x[:, 1:], MU[1:], C[1:]  # independent coordinates: the conditional is the marginal
    assert ((u.mean(0) - mu).abs() <= 4 * (c / n).sqrt()).all()
    assert ((u.var(0) - c).abs() <= 4 * c * (2 / n) ** 0.5).all()


def test_inpainting_is_batch_and_chunk_invariant():
    known = TARGET.sample(12, generator=torch.Generator().manual_seed(5), dtype=D)
    mask = torch.tensor([[0.0, 1.0, 0.0]], dtype=D)
    full = ed.inpaint(PATH, FIELD, known, mask, "euler_maruyama", steps=6, noise=9, preflight=False).x
    part = ed.inpaint(PATH, FIELD, known[:5], mask, "euler_maruyama", steps=6, noise=9, preflight=False).x
    chunked = ed.inpaint(PATH, FIELD, known, mask, "euler_maruyama", steps=6, noise=9, chunk_size=5,
                         preflight=False).x
    assert torch.equal(full[:5], part) and torch.equal(full, chunked)


def test_inpaint_refusals():
    known = torch.zeros(4, 3, dtype=D)
    with pytest.raises(SdeflowValueError, match="mask must hold only 0"):
        ed.Inpaint(PATH, known, torch.full((1, 3), 0.5, dtype=D))
    with pytest.raises(SdeflowValueError, match="does not broadcast"):
        ed.Inpaint(PATH, known, torch.ones(2, 2, dtype=D))


# ---- inversion ------------------------------------------------------------------------------------------
ODE_SOLVERS = [s for s in sf.solvers.available(sde=False)
               if not sf.solvers.get(s).adaptive and not getattr(sf.solvers.get(s), "stochastic", False)]
X0 = torch.randn(6, 3, dtype=D, generator=torch.Generator().manual_seed(0)) * C.sqrt() + MU
STEPS = [24, 48, 96, 192]


@pytest.mark.parametrize("solver", ODE_SOLVERS)
def test_inversion_and_round_trip_converge_at_the_solver_order(solver):
    order = sf.solvers.get(solver).order
    inv, rt = [], []
    steps = [n * sf.solvers.get(solver).pre_asymptotic_factor for n in STEPS]  # late-crossing error terms
    for n in steps:
        z = ed.invert(PATH, FIELD, X0, solver, steps=n, grid="log_snr")
        assert z.ts[0] < z.ts[-1]
        exact = TARGET.flow(X0, PATH, float(z.ts[0]), float(z.ts[-1]))
        inv.append(float((z.x - exact).abs().max()))
        back = sf.sample(PATH, FIELD, solver, grid=z.ts.tolist()[::-1], x_init=z.x)
        rt.append(float((back.x - X0).abs().max()))
    h = [1.0 / n for n in steps]
    assert fit_order(h, inv).slope >= order - DEFAULT_TOL, (solver, inv)
    assert fit_order(h, rt).slope >= order - DEFAULT_TOL, (solver, rt)


def test_dopri5_inversion_follows_its_tolerance():
    errs = []
    for tol in (1e-4, 1e-6, 1e-8):
        z = ed.invert(PATH, FIELD, X0, "dopri5", rtol=tol, atol=tol)
        errs.append(float((z.x - TARGET.flow(X0, PATH, float(z.ts[0]), float(z.ts[-1]))).abs().max()))
    assert errs[1] < errs[0] / 10 and errs[2] < errs[1] / 10


@pytest.mark.parametrize("ipath", [None, sf.EDM(80.0)])
def test_invert_grid_is_the_sampling_grid_reversed(ipath):
    z = ed.invert(PATH, FIELD, X0, "dpmpp_2m", steps=10, grid="log_snr", integration_path=ipath)
    s = sf.sample(PATH, FIELD, "dpmpp_2m", steps=10, grid="log_snr", n=2, shape=(3,), dtype=D,
                  integration_path=ipath)
    assert z.ts.tolist() == s.ts.tolist()[::-1]


def test_invert_refusals():
    for solver, opts in (("euler_maruyama", {}), ("ancestral", {}), ("ddim", {"eta": 1.0})):
        with pytest.raises(SdeflowValueError, match="inversion needs a deterministic ODE solver"):
            ed.invert(PATH, FIELD, X0, solver, steps=4, **opts)
    with pytest.raises(SdeflowValueError, match="gamma"):
        ed.invert(PATH, FIELD, X0, "euler", steps=4, gamma="reverse")
    with pytest.raises(SdeflowValueError, match="drop final_denoise"):
        ed.invert(PATH, FIELD, X0, "euler", steps=4, final_denoise=True)
    with pytest.raises(SdeflowValueError, match="strictly increasing"):
        ed.invert(PATH, FIELD, X0, "euler", grid=[0.5, 0.1])


def test_a_callback_that_breaks_the_state_is_located_by_the_replay():
    def cb(i, t, x, x0_hat):
        return x * float("nan") if i == 3 else None

    with pytest.raises(sf.NonFiniteError, match="step 3 .*the state the step callback returned"):
        sf.sample(PATH, FIELD, "heun", steps=6, n=2, shape=(3,), dtype=D, noise=0, callback=cb, preflight=False)
