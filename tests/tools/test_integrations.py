"""diffusers and k-diffusion models in sdeflow without a closure (sdeflow.integrations, sdeflow.adapters).

diffusers: a tiny random-weight ``UNet2DModel`` (float64, built here; nothing is downloaded) is sampled by
each scheduler's own loop and by ``sdeflow.sample`` on the recipe ``from_diffusers`` returns, from the same
initial noise. diffusers keeps its schedule in float32 (``alphas_cumprod``, ``sigmas``) and DPM-Solver and
Euler round the state to float32 after every step, so the two agree to float32 rounding accumulated over the
steps: a few roundings (unit roundoff u = 2^-24) of the coefficients and the state per step, and the tolerance
is ``16 n u max|x_ref|`` for n steps (measured: at most 3.6 n u, Euler on Karras sigmas with a data model;
the figures are in docs/tutorials/diffusers-k-diffusion.md), times the cancellation factor of DEIS's closed-form
coefficients for DEISMultistepScheduler (``_cancellation``). UniPC is a strict xfail: sdeflow's ``unipc``
integrates the interpolants exactly where diffusers' bh2 uses B(h) = e^h - 1 (measured 4e-3 relative at 10
steps).

k-diffusion: a denoiser with k-diffusion's interface ``D(x, sigma)`` (the exact mixture denoiser the stored
references used) against k-diffusion's ``sample_euler``, ``sample_heun`` and ``sample_dpmpp_2m`` outputs in
tests/data/references (float64, to 1e-12 relative as in tests/solvers/test_references.py).
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

import references as R
import sdeflow as sf
from sdeflow.integrations.diffusers import path_from_scheduler, unwrap_output

needs_diffusers = pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason="diffusers not installed")
U32 = 2.0 ** -24
D = torch.float64


@pytest.fixture(scope="module")
def unet():
    import diffusers

    torch.manual_seed(0)
    net = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    return net.double().eval()


LATENTS = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=D)


def _their_loop(unet, sch, n, latents=LATENTS, noise=None, **step_kw):
    """The scheduler's own loop (a diffusers pipeline's): latents * init_noise_sigma, scale_model_input, step."""
    sch.set_timesteps(n)
    y = latents * sch.init_noise_sigma
    for k, t in enumerate(sch.timesteps):
        kw = dict(step_kw)
        if noise is not None:
            kw["variance_noise"] = noise[k]
        y = sch.step(unet(sch.scale_model_input(y, t), t).sample, t, y, **kw).prev_sample
    return y


def _compare(unet, sch, n, **step_kw):
    recipe = sf.from_diffusers(unet, sch, num_inference_steps=n)
    with torch.no_grad():
        theirs = _their_loop(unet, sch, n, **step_kw)
        ours = recipe.sample(x_init=recipe.x_init(LATENTS)).x * recipe.output_scale
    return recipe, theirs, ours


def _scheduler(name, **kw):
    import diffusers

    return getattr(diffusers, name)(**kw)


PREDICTIONS = ["epsilon", "sample", "v_prediction"]
# (label, scheduler class, its options, steps, step() options)
SCHEDULERS = [
    ("ddim", "DDIMScheduler", dict(clip_sample=False), 10, {}),
    ("ddim_clip", "DDIMScheduler", dict(clip_sample=True), 10, dict(use_clipped_model_output=True)),
    ("ddim_trailing", "DDIMScheduler", dict(clip_sample=False, timestep_spacing="trailing"), 10, {}),
    ("dpmpp_2m", "DPMSolverMultistepScheduler", {}, 10, {}),
    ("dpmpp_2m_heun", "DPMSolverMultistepScheduler", dict(solver_type="heun"), 10, {}),
    ("dpmpp_2m_thresholding", "DPMSolverMultistepScheduler", dict(thresholding=True, sample_max_value=3.0), 10, {}),
    ("euler_fractional", "EulerDiscreteScheduler", {}, 7, {}),  # linspace(0, 999, 7): timesteps 166.5, ...
    ("euler_karras", "EulerDiscreteScheduler", dict(use_karras_sigmas=True), 10, {}),
    ("deis_2", "DEISMultistepScheduler", {}, 10, {}),  # diffusers' default solver_order=2
    ("deis_2_20", "DEISMultistepScheduler", {}, 20, {}),
    ("deis_3", "DEISMultistepScheduler", dict(solver_order=3), 10, {}),
    ("deis_3_20", "DEISMultistepScheduler", dict(solver_order=3), 20, {}),
]
# more settings, with the noise prediction
SETTINGS = [
    ("ddim_final_alpha_cumprod0", "DDIMScheduler", dict(clip_sample=False, set_alpha_to_one=False), 10, {}),
    ("ddim_steps_offset", "DDIMScheduler", dict(clip_sample=False, steps_offset=1), 10, {}),
    ("ddim_thresholding", "DDIMScheduler", dict(thresholding=True, sample_max_value=2.0), 10,
     dict(use_clipped_model_output=True)),
    ("dpmpp_2m_sigma_min", "DPMSolverMultistepScheduler", dict(final_sigmas_type="sigma_min"), 10, {}),
    ("dpmpp_2m_sigma_min_20", "DPMSolverMultistepScheduler", dict(final_sigmas_type="sigma_min"), 20, {}),
    ("dpmpp_2m_euler_at_final_20", "DPMSolverMultistepScheduler", dict(final_sigmas_type="sigma_min",
                                                                        euler_at_final=True), 20, {}),
    ("dpmsolver_heun", "DPMSolverMultistepScheduler", dict(algorithm_type="dpmsolver", solver_type="heun",
                                                           final_sigmas_type="sigma_min"), 10, {}),
    ("dpmpp_1", "DPMSolverMultistepScheduler", dict(solver_order=1), 10, {}),
    ("dpmpp_2m_trailing", "DPMSolverMultistepScheduler", dict(timestep_spacing="trailing"), 10, {}),
    ("dpmpp_2m_leading", "DPMSolverMultistepScheduler", dict(timestep_spacing="leading", steps_offset=1), 10, {}),
    ("euler_sigma_min", "EulerDiscreteScheduler", dict(final_sigmas_type="sigma_min"), 10, {}),
    ("euler_trailing", "EulerDiscreteScheduler", dict(timestep_spacing="trailing"), 7, {}),
    ("euler_leading", "EulerDiscreteScheduler", dict(timestep_spacing="leading"), 10, {}),
    # solver_order=3: sdeflow's dpmpp_3m / unipc(order=3); fewer than 15 steps lowers the last two steps' orders
    ("dpmpp_3m", "DPMSolverMultistepScheduler", dict(solver_order=3), 10, {}),
    ("dpmpp_3m_20", "DPMSolverMultistepScheduler", dict(solver_order=3), 20, {}),
    ("dpmpp_3m_heun", "DPMSolverMultistepScheduler", dict(solver_order=3, solver_type="heun"), 10, {}),
    ("dpmpp_3m_sigma_min", "DPMSolverMultistepScheduler", dict(solver_order=3, final_sigmas_type="sigma_min"), 10, {}),
    ("dpmpp_3m_no_lower_order_final", "DPMSolverMultistepScheduler", dict(solver_order=3, lower_order_final=False),
     10, {}),
    ("unipc_3", "UniPCMultistepScheduler", dict(solver_order=3), 10, {}),
    ("unipc_3_sigma_min", "UniPCMultistepScheduler", dict(solver_order=3, final_sigmas_type="sigma_min"), 10, {}),
    ("unipc_bh1_sigma_min", "UniPCMultistepScheduler", dict(solver_type="bh1", final_sigmas_type="sigma_min"), 10,
     {}),
    # DEIS (log-rho multistep; no final_sigmas_type: its last step goes to alphas_cumprod[0])
    ("deis_1", "DEISMultistepScheduler", dict(solver_order=1), 10, {}),
    ("deis_3_no_lower_order_final", "DEISMultistepScheduler", dict(solver_order=3, lower_order_final=False), 10, {}),
    ("deis_3_trailing", "DEISMultistepScheduler", dict(solver_order=3, timestep_spacing="trailing"), 10, {}),
    ("deis_3_leading", "DEISMultistepScheduler", dict(solver_order=3, timestep_spacing="leading", steps_offset=1),
     10, {}),
    ("deis_thresholding", "DEISMultistepScheduler", dict(thresholding=True, sample_max_value=3.0), 10, {}),
]


def _deis_terms(sigmas, order: int, k: int):
    """DEIS's closed-form coefficients at step ``k`` as diffusers evaluates them (``ind_fn``): pairs (A, B) of
    the antiderivative of each Lagrange basis polynomial in log rho at rho_t and rho_s0 (coefficient A - B)."""
    L = np.log
    t, s = sigmas[k + 1], [sigmas[k - i] for i in range(order)]
    if order == 2:
        def ind(x, b, c):
            return x * (-L(c) + L(x) - 1) / (L(b) - L(c))
        nodes = ((s[0], s[1]), (s[1], s[0]))
    else:
        def ind(x, b, c, d):
            num = x * (L(c) * (L(d) - L(x) + 1) - L(d) * L(x) + L(d) + L(x) ** 2 - 2 * L(x) + 2)
            return num / ((L(b) - L(c)) * (L(b) - L(d)))
        nodes = ((s[0], s[1], s[2]), (s[1], s[2], s[0]), (s[2], s[0], s[1]))
    return [(ind(t, *v), ind(s[0], *v)) for v in nodes]


def _cancellation(cls, opts, n) -> float:
    """How much diffusers' own coefficient formulas amplify a rounding: 1, except for DEISMultistepScheduler,
    whose order-2/3 coefficient is the difference A - B of two antiderivative values (``ind_fn``), so a
    rounding of A or B is amplified by kappa = (|A| + |B|) / |A - B| (the largest over the steps; it grows as
    the steps shrink: 66 at 10 steps, 414 at 20 with order 3). With diffusers' sigmas in float64 the two loops
    agree to 5e-13 relative at 25 steps (test_deis_is_diffusers_formula_in_float64): the gap in float32 is
    diffusers' rounding, not a different update."""
    order = int(opts.get("solver_order", 2))
    if cls != "DEISMultistepScheduler" or order == 1:
        return 1.0
    sch = _scheduler(cls, **opts)
    sch.set_timesteps(n)
    sig = sch.sigmas.double().numpy()
    kap = [(abs(a) + abs(b)) / abs(a - b) for k in range(order - 1, n) for a, b in _deis_terms(sig, order, k)]
    return float(max(kap))


def _cases():
    out = [pytest.param(cls, {**opts, "prediction_type": p}, n, kw, id=f"{label}-{p}")
           for label, cls, opts, n, kw in SCHEDULERS for p in PREDICTIONS]
    out += [pytest.param(cls, opts, n, kw, id=f"{label}-epsilon") for label, cls, opts, n, kw in SETTINGS]
    return out


@needs_diffusers
@pytest.mark.parametrize("cls, opts, n, step_kw", _cases())
def test_sdeflow_reproduces_the_schedulers_loop(unet, cls, opts, n, step_kw):
    recipe, theirs, ours = _compare(unet, _scheduler(cls, **opts), n, **step_kw)
    assert recipe.exact and ours.shape == theirs.shape and ours.dtype == theirs.dtype
    tol = 16 * n * U32 * _cancellation(cls, opts, n) * float(theirs.abs().max())
    err = float((ours - theirs).abs().max())
    assert err <= tol, f"{cls} {opts}: max |sdeflow - diffusers| = {err:.3g} > {tol:.3g}"


@needs_diffusers
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_deis_is_diffusers_formula_in_float64(unet, prediction):
    """DEISMultistepScheduler's loop with its sigmas (rho = sigma/alpha) recomputed in float64 from its own
    alphas_cumprod equals sdeflow's deis to float64 rounding amplified by the same cancellation (measured
    5e-13 relative at 25 steps, order 3): one update, up to diffusers' float32 schedule."""
    n, opts = 25, dict(solver_order=3, prediction_type=prediction)
    sch = _scheduler("DEISMultistepScheduler", **opts)
    recipe = sf.from_diffusers(unet, sch, num_inference_steps=n)
    sch.set_timesteps(n)
    ac = sch.alphas_cumprod.double()
    rho = ((1 - ac) / ac) ** 0.5
    sch.sigmas = torch.cat([rho[sch.timesteps], rho[:1]])
    y = LATENTS * sch.init_noise_sigma
    with torch.no_grad():
        for t in sch.timesteps:
            y = sch.step(unet(sch.scale_model_input(y, t), t).sample, t, y).prev_sample
        ours = recipe.sample(x_init=recipe.x_init(LATENTS)).x * recipe.output_scale
    tol = 16 * n * 2.0 ** -53 * _cancellation("DEISMultistepScheduler", opts, n) * float(y.abs().max())
    err = float((ours - y).abs().max())
    assert err <= tol, f"max |sdeflow - diffusers (float64 sigmas)| = {err:.3g} > {tol:.3g}"


@needs_diffusers
def test_ddim_with_eta_on_the_same_draws(unet):
    """DDIM with eta = 1: diffusers' variance_noise and sdeflow's TableNoise are the same standard normals."""
    n = 10
    sch = _scheduler("DDIMScheduler", clip_sample=False)
    z = torch.randn((n,) + LATENTS.shape, generator=torch.Generator().manual_seed(3), dtype=D)
    recipe = sf.from_diffusers(unet, sch, num_inference_steps=n, eta=1.0)
    assert recipe.solver_options == {"eta": 1.0}
    with torch.no_grad():
        theirs = _their_loop(unet, sch, n, noise=z, eta=1.0)
        ours = recipe.sample(x_init=recipe.x_init(LATENTS), noise=sf.TableNoise(list(z))).x
    assert float((ours - theirs).abs().max()) <= 16 * n * U32 * float(theirs.abs().max())


@needs_diffusers
def test_a_scheduler_with_its_timesteps_set_is_read_as_it_is(unet):
    """No num_inference_steps: the scheduler's own timesteps, here EulerDiscrete's custom sigmas (the model times
    then come from the sigmas, linear in log sigma)."""
    sch = _scheduler("EulerDiscreteScheduler")
    sch.set_timesteps(sigmas=[100.0, 30.0, 10.0, 3.0, 1.0, 0.3, 0.1, 0.0])
    recipe = sf.from_diffusers(unet, sch)
    assert recipe.field.net.interpolation == "log" and len(recipe.grid) == 7 and recipe.final_denoise
    y = LATENTS * sch.init_noise_sigma
    with torch.no_grad():
        for t in sch.timesteps:
            y = sch.step(unet(sch.scale_model_input(y, t), t).sample, t, y).prev_sample
        ours = recipe.sample(x_init=recipe.x_init(LATENTS)).x
    assert float((ours - y).abs().max()) <= 16 * 7 * U32 * float(y.abs().max())


@needs_diffusers
def test_ddim_default_clipping_is_not_a_field(unet):
    """diffusers' DDIM with clip_sample and use_clipped_model_output=False (its pipelines' default) pairs the
    clipped x0 with the unclipped noise: no single field does that. The recipe is the consistent variant
    (use_clipped_model_output=True, reproduced above); the default differs by far more than rounding."""
    sch = _scheduler("DDIMScheduler")  # clip_sample=True by default
    recipe, theirs, ours = _compare(unet, sch, 10)
    assert "use_clipped_model_output=True" in recipe.note
    assert float((ours - theirs).abs().max()) > 1e3 * 16 * 10 * U32 * float(theirs.abs().max())


@needs_diffusers
def test_unipc_reproduces_diffusers(unet):
    sch = _scheduler("UniPCMultistepScheduler")
    recipe = sf.from_diffusers(unet, sch, num_inference_steps=10)  # strict: unipc's bh2 variant is diffusers'
    assert recipe.exact and recipe.solver == "unipc" and recipe.solver_options.get("variant") == "bh2"
    with torch.no_grad():
        theirs = _their_loop(unet, sch, 10)
        ours = recipe.sample(x_init=recipe.x_init(LATENTS)).x
    assert float((ours - theirs).abs().max()) <= 16 * 10 * U32 * float(theirs.abs().max())


@needs_diffusers
@pytest.mark.parametrize("cls, opts, n, match", [
    ("DDIMScheduler", dict(timestep_spacing="linspace"), 10, "disagree"),
    ("DDIMScheduler", dict(timestep_spacing="trailing"), 7, "disagree"),
    ("DPMSolverMultistepScheduler", dict(solver_order=3, final_sigmas_type="sigma_min", euler_at_final=True), 15,
     "euler_at_final"),
    ("DPMSolverMultistepScheduler", dict(solver_order=3, algorithm_type="dpmsolver", final_sigmas_type="sigma_min"), 10,
     "noise"),
    ("UniPCMultistepScheduler", dict(solver_type="bh1"), 10, "NaN"),
    ("DPMSolverMultistepScheduler", dict(use_karras_sigmas=True), 10, "rounded"),
    ("DEISMultistepScheduler", dict(use_karras_sigmas=True), 10, "rounded"),
    ("DPMSolverMultistepScheduler", dict(algorithm_type="dpmsolver", final_sigmas_type="sigma_min"), 10, "midpoint"),
    ("DPMSolverMultistepScheduler", dict(algorithm_type="sde-dpmsolver++"), 10, "SDE"),
])
def test_what_is_not_reproduced_is_refused(unet, cls, opts, n, match):
    sch = _scheduler(cls, **opts)
    with pytest.raises(sf.SdeflowValueError, match=match):
        sf.from_diffusers(unet, sch, num_inference_steps=n)
    recipe = sf.from_diffusers(unet, sch, num_inference_steps=n, strict=False)
    assert not recipe.exact and match in recipe.note


@needs_diffusers
def test_path_is_the_schedulers_table_and_the_scheduler_is_untouched(unet):
    sch = _scheduler("DDIMScheduler", beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    path = path_from_scheduler(sch)
    assert float((path.alphas_cumprod - sch.alphas_cumprod.double()).abs().max()) < 1e-15
    a, s, _, _ = path.coefficients(torch.tensor([0.0, 1 / 1000, 1.0], dtype=D))
    assert float(a[0]) == 1.0 and float(s[0]) == 0.0  # t = 0: alpha_cumprod = 1 (DDIM's set_alpha_to_one)
    assert abs(float(a[1]) ** 2 - float(sch.alphas_cumprod[0])) < 1e-15
    recipe = sf.from_diffusers(unet, sch, num_inference_steps=10)
    assert sch.num_inference_steps is None  # set_timesteps ran on a copy
    assert recipe.timesteps == list(range(900, -1, -100)) and recipe.final_denoise  # "leading", then alpha = 1
    with pytest.raises(sf.SdeflowValueError, match="rescale_betas_zero_snr"):
        path_from_scheduler(_scheduler("DDIMScheduler", rescale_betas_zero_snr=True))


@needs_diffusers
def test_model_time_input(unet):
    """Integer timesteps at knots only (a solver stepping between knots is refused); continuous timesteps
    invert diffusers' interpolation: the model gets exactly EulerDiscrete's fractional timesteps."""
    recipe = sf.from_diffusers(unet, _scheduler("DDIMScheduler"), num_inference_steps=10)
    x = LATENTS.clone()
    with pytest.raises(sf.SdeflowValueError, match="not a knot"):
        sf.sample(recipe.path, recipe.field, "midpoint", grid=[0.901, 0.9], x_init=x)  # a stage at t = 0.9005
    net = recipe.field.net
    assert net.timestep(torch.tensor([0.901, 0.001], dtype=torch.float32)).tolist() == [900, 0]
    for opts, n in ((dict(), 7), (dict(use_karras_sigmas=True), 10)):
        sch = _scheduler("EulerDiscreteScheduler", **opts)
        r = sf.from_diffusers(unet, sch, num_inference_steps=n)
        sch.set_timesteps(n)
        tau = r.field.net.timestep(torch.tensor(r.grid[:n], dtype=D))
        assert tau.dtype == torch.float32
        # linear: the same float32 timesteps; Karras: its _sigma_to_t from float32 log-sigmas, ours from float64
        torch.testing.assert_close(tau, sch.timesteps, rtol=0 if not opts else 1e-6, atol=0 if not opts else 1e-3)
    with pytest.raises(sf.SdeflowValueError, match="below the first knot"):
        r.field.validate_times([0.5, 0.0004])


def test_unwrap_output():
    class Out:
        def __init__(self, sample):
            self.sample = sample

    x = torch.ones(2, 3, 4, 4)
    assert unwrap_output(Out(x)) is x and unwrap_output((x, None)) is x and unwrap_output(x) is x
    assert unwrap_output(torch.ones(2, 6, 4, 4), channels=3).shape == (2, 3, 4, 4)  # a learned variance dropped
    with pytest.raises(sf.SdeflowTypeError, match="the model returned dict"):
        unwrap_output({"x": x})


@needs_diffusers
def test_a_recipe_without_steps_is_a_path_and_a_field(unet):
    recipe = sf.from_diffusers(unet, _scheduler("DDIMScheduler", clip_sample=False))
    assert recipe.grid is None and recipe.solver is None
    with pytest.raises(sf.SdeflowValueError, match="no grid"):
        recipe.kwargs
    with torch.no_grad():
        sol = sf.sample(recipe.path, recipe.field, "ddim", grid="discrete", steps=5, x_init=LATENTS)
    assert torch.isfinite(sol.x).all() and sol.nfe == 5


@needs_diffusers
def test_float32_model_and_state(unet):
    """The common case: a float32 model and state. The model's own float32 rounding adds to the schedule's."""
    import copy

    net = copy.deepcopy(unet).float()
    sch = _scheduler("DPMSolverMultistepScheduler")
    recipe = sf.from_diffusers(net, sch, num_inference_steps=10)
    lat = LATENTS.float()
    with torch.no_grad():
        theirs = _their_loop(net, sch, 10, latents=lat)
        ours = recipe.sample(x_init=recipe.x_init(lat)).x
    assert ours.dtype == torch.float32
    assert float((ours - theirs).abs().max()) <= 16 * 10 * U32 * float(theirs.abs().max())


@needs_diffusers
def test_dynamic_thresholding_is_diffusers(unet):
    sch = _scheduler("DPMSolverMultistepScheduler", thresholding=True, dynamic_thresholding_ratio=0.9,
                     sample_max_value=2.5)
    x0 = 3 * torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0), dtype=D)
    ours = sf.DynamicThresholding(0.9, 2.5)(x0)
    torch.testing.assert_close(ours, sch._threshold_sample(x0), rtol=0, atol=0)
    field = sf.from_diffusers(unet, sch).field
    assert isinstance(field.transform, sf.DynamicThresholding) and field.transform.ratio == 0.9


# ---- k-diffusion ----------------------------------------------------------------------------------------
KD_CASES = [name for name in R.names("k_diffusion") if name.split("/")[2] in ("euler", "heun", "dpmpp_2m")]


@pytest.mark.parametrize("name", KD_CASES)
def test_from_k_diffusion_reproduces_k_diffusion(name):
    case = R.load(name)
    label, n = name.split("/")[2], case["meta"]["steps"]
    S, mix = float(case["grid"][0]), case["target"]

    def denoiser(x, sigma):  # k-diffusion's interface: D(x, sigma), sigma a (batch,) tensor
        return mix.predict(x, sigma / S, sf.EDM(S), "data")

    recipe = sf.from_k_diffusion(denoiser, 0.002, 80.0, steps=n, sampler=label, dtype=D)
    assert torch.equal(torch.tensor(recipe.timesteps, dtype=D), case["grid"])  # get_sigmas_karras, bit for bit
    # a reproduction (structure): preflight=False, as sdeflow refuses k-diffusion's 5-step Heun on its probe
    x = recipe.sample(x_init=recipe.x_init(case["x_T"]), preflight=False).x
    assert R.rel_error(x, case["out"]) <= 1e-12


def test_from_k_diffusion_arguments():
    den = lambda x, sigma: x  # noqa: E731
    r = sf.from_k_diffusion(den, 0.002, 80.0)
    assert r.grid is None and isinstance(r.path, sf.EDM) and r.init_scale == 80.0
    r = sf.from_k_diffusion(den, 0.002, 80.0, steps=4, sampler="heun", dtype=D)
    assert r.final_denoise and len(r.grid) == 4 and r.grid[0] == 1.0 and r.grid[-1] > 0
    with pytest.raises(sf.SdeflowValueError, match="unknown k-diffusion sampler"):
        sf.from_k_diffusion(den, 0.002, 80.0, steps=4, sampler="lms")
    with pytest.raises(sf.SdeflowValueError, match="sigma_min < sigma_max"):
        sf.from_k_diffusion(den, 80.0, 0.002, steps=4)


# ---- clipping and v-prediction ----------------------------------------------------------------------------
def test_clipped_field_is_the_consistent_native_prediction(gen):
    """clip_data clamps the implied x0; the native prediction is rebuilt from it at the same x, for every kind
    (and the guided SumField through ClippedField)."""
    path = sf.DiscreteVP()
    target = sf.Gaussian(torch.tensor([1.5, -2.0], dtype=D), torch.tensor([0.5, 1.0], dtype=D))
    x = 3 * torch.randn(64, 2, generator=gen, dtype=D)
    t = torch.full((64,), 0.3, dtype=D)
    x0 = target.predict(x, t, path, "data").clamp(-1, 1)
    for kind in ("noise", "data", "score", "v", "velocity"):
        net = lambda x_, t_, k=kind: target.predict(x_, t_, path, k)  # noqa: E731
        f = sf.fields.NetField(net, kind, clip_data=(-1, 1))
        torch.testing.assert_close(f.data(x, t, path), x0, rtol=1e-10, atol=1e-10)
        a, s, _, _ = (c[:, None] for c in path.coefficients(t))
        torch.testing.assert_close(f.noise(x, t, path), (x - a * x0) / s, rtol=1e-10, atol=1e-10)
        g = sf.ClippedField(sf.fields.NetField(net, kind), clip_data=1.0)
        torch.testing.assert_close(g.predict(x, t, path), f.predict(x, t, path), rtol=1e-12, atol=1e-12)
    guided = sf.classifier_free_guidance(target.field("noise"), target.field("noise"), 2.0)
    torch.testing.assert_close(sf.ClippedField(guided, clip_data=(-1, 1)).data(x, t, path), x0, rtol=1e-10,
                               atol=1e-10)


def test_clipping_arguments():
    net = lambda x, t: x  # noqa: E731
    with pytest.raises(sf.SdeflowValueError, match="not both"):
        sf.NoiseField(net, clip_data=1.0, thresholding=True)
    with pytest.raises(sf.SdeflowValueError, match="lo < hi"):
        sf.NoiseField(net, clip_data=(1.0, -1.0))
    with pytest.raises(sf.SdeflowTypeError, match="clip_data must be a pair"):
        sf.NoiseField(net, clip_data="yes")
    with pytest.raises(sf.SdeflowValueError, match="ratio"):
        sf.DynamicThresholding(ratio=1.5)
    with pytest.raises(sf.SdeflowValueError, match="needs clip_data"):
        sf.ClippedField(sf.NoiseField(net))


def test_v_prediction_is_salimans_and_hos_v():
    """v = alpha eps - sigma x0; on a VP path x0 = alpha x - sigma v and eps = sigma x + alpha v (diffusers'
    v_prediction formulas), and the VPredictionField drives the same ODE as the noise field."""
    path = sf.DiscreteVP()
    target = sf.two_blobs()
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=D)
    t = torch.full((32,), 0.37, dtype=D)
    a, s, _, _ = (c[:, None] for c in path.coefficients(t))
    x0, eps = target.predict(x, t, path, "data"), target.predict(x, t, path, "noise")
    v = target.predict(x, t, path, "v")
    torch.testing.assert_close(v, a * eps - s * x0, rtol=1e-12, atol=1e-12)
    f = sf.VPredictionField(lambda x_, t_: target.predict(x_, t_, path, "v"))
    torch.testing.assert_close(f.data(x, t, path), a * x - s * v, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f.noise(x, t, path), s * x + a * v, rtol=1e-12, atol=1e-12)
    xT = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=D)
    one = sf.sample(path, f, "dpmpp_2m", grid="discrete", steps=20, x_init=xT).x
    two = sf.sample(path, target.field("noise"), "dpmpp_2m", grid="discrete", steps=20, x_init=xT).x
    torch.testing.assert_close(one, two, rtol=1e-10, atol=1e-10)
    assert math.isfinite(float(one.abs().max()))
    # any path (docs/concepts/conversions.md): x0 = (alpha x - sigma v) / (alpha^2 + sigma^2)
    for p in (sf.VE(), sf.LinearFlow(), sf.EDM()):
        a, s, _, _ = (c[:, None] for c in p.coefficients(t))
        v = target.predict(x, t, p, "v")
        den = a * a + s * s
        torch.testing.assert_close(target.field("v").data(x, t, p), (a * x - s * v) / den, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(target.field("v").noise(x, t, p), (s * x + a * v) / den, rtol=1e-12,
                                   atol=1e-12)


# ---- consistency models (CMStochasticIterativeScheduler) -------------------------------------------------
def _cm_loop(unet, sch, n, seed):
    """ConsistencyModelPipeline's loop: latents * init_noise_sigma, scale_model_input, model, step(generator)."""
    sch.set_timesteps(n)
    g = torch.Generator().manual_seed(seed)
    y = LATENTS * sch.init_noise_sigma
    for t in sch.timesteps:
        y = sch.step(unet(sch.scale_model_input(y, t), t).sample, t, y, generator=g).prev_sample
    return y


@needs_diffusers
@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_consistency_sampling_reproduces_cm_stochastic_iterative(unet, n, clip):
    """Song et al.'s multistep consistency sampling: ``from_diffusers`` maps the scheduler to EDM coordinates, a
    ConsistencyField in the scheduler's preconditioned form and the ``consistency`` sampler on its sigmas; the
    same generator gives the same normals (diffusers draws one more at its last step and multiplies it by
    sqrt(float32(sigma_min)^2 - sigma_min^2) = 6.7e-7, its float32 sigma_min against the float64 one: that term
    is added back here, from the same draw). Equal to float32 rounding of diffusers' sigmas and scalings."""
    import diffusers

    sch = diffusers.CMStochasticIterativeScheduler(clip_denoised=clip)
    recipe = sf.from_diffusers(unet, sch, num_inference_steps=n)
    assert recipe.solver == "consistency" and isinstance(recipe.path, sf.EDM) and recipe.field.consistency
    with torch.no_grad():
        theirs = _cm_loop(unet, sch, n, seed=5)
        sol = recipe.sample(x_init=recipe.x_init(LATENTS), generator=torch.Generator().manual_seed(5))
    assert sol.nfe == n
    g = torch.Generator().manual_seed(5)
    z_last = [torch.randn(LATENTS.shape, generator=g, dtype=D) for _ in range(n)][-1]
    last = float((sch.sigmas[-1] ** 2 - sch.config.sigma_min ** 2) ** 0.5) if n > 1 else 0.0
    assert 0.0 <= last < 1e-6
    ours = sol.x + last * z_last
    assert float((ours - theirs).abs().max()) <= 16 * n * U32 * float(theirs.abs().max())


@needs_diffusers
def test_consistency_all_train_timesteps_ends_with_the_identity_step(unet):
    """With every training timestep the scheduler's last step goes from sigma_min to sigma_min (f(x, eps) = x,
    clipped): sdeflow's final_denoise. sigma_min = 2^-9 is exact in float32 (no re-noising artifact)."""
    import diffusers

    sch = diffusers.CMStochasticIterativeScheduler(num_train_timesteps=12, sigma_min=2.0 ** -9)
    recipe = sf.from_diffusers(unet, sch, num_inference_steps=12)
    assert recipe.final_denoise and len(recipe.grid) == 12
    with torch.no_grad():
        theirs = _cm_loop(unet, sch, 12, seed=2)
        sol = recipe.sample(x_init=recipe.x_init(LATENTS), generator=torch.Generator().manual_seed(2))
    assert sol.nfe == 12
    assert float((sol.x - theirs).abs().max()) <= 16 * 12 * U32 * float(theirs.abs().max())


@needs_diffusers
def test_consistency_recipe_refusals_and_field_only(unet):
    import diffusers

    with pytest.raises(sf.SdeflowValueError, match="s_noise"):
        sf.from_diffusers(unet, diffusers.CMStochasticIterativeScheduler(s_noise=1.007), num_inference_steps=2)
    r = sf.from_diffusers(unet, diffusers.CMStochasticIterativeScheduler())
    assert r.grid is None and r.field.consistency and r.path.sigma_max == 80.0
