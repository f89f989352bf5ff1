"""diffusers and k-diffusion models in sdeflow, without a closure.

Run: python docs/tutorials/diffusers_k_diffusion.py [--small]

A diffusers model comes with its scheduler; sdeflow.from_diffusers reads the scheduler (its alpha-bar table,
prediction type, clipping, timestep spacing and solver settings) and returns a Recipe: the path, the field and
the grid and solver with which sdeflow.sample takes the scheduler's own steps. Here a tiny random-weight
UNet2DModel stands in for your trained one (nothing is downloaded), and every claim is checked against
diffusers' own loop from the same noise. A k-diffusion denoiser D(x, sigma) goes through sdeflow.from_k_diffusion.
"""

import sys

import diffusers
import torch

import sdeflow as sf

SMALL = "--small" in sys.argv
steps = 10 if SMALL else 25
torch.manual_seed(0)

# 1. "Your trained model": any diffusers UNet (here tiny, random weights, float64 to show rounding only).
unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                             block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                             up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4).double().eval()
latents = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def diffusers_loop(scheduler, n, **step_kw):
    """What a diffusers pipeline does: scale the initial noise, then scale_model_input / model / step."""
    scheduler.set_timesteps(n)
    x = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(unet(scheduler.scale_model_input(x, t), t).sample, t, x, **step_kw).prev_sample
    return x


def float32_tolerance(reference, n):
    """diffusers keeps its schedule in float32: agreement to a few float32 roundings per step."""
    return 16 * n * 2.0 ** -24 * float(reference.abs().max())


# 2. DDIM, as DDIMScheduler() is configured by default: "leading" timesteps (900, 800, ..., 0 for 10 steps),
#    clip_sample=True, then a last step to alpha-bar = 1.
scheduler = diffusers.DDIMScheduler()
recipe = sf.from_diffusers(unet, scheduler, num_inference_steps=steps)
print(recipe)
print("diffusers timesteps:", recipe.timesteps[:4], "...", "-> sdeflow times", [round(t, 4) for t in recipe.grid[:4]])
with torch.no_grad():
    ours = recipe.sample(x_init=recipe.x_init(latents)).x
    # the clipped field pairs the clipped x0 with the noise rebuilt from it: diffusers' use_clipped_model_output
    theirs = diffusers_loop(scheduler, steps, use_clipped_model_output=True)
err = float((ours - theirs).abs().max())
print(f"DDIM, {steps} steps: max |sdeflow - diffusers| = {err:.2e} (relative {err / float(theirs.abs().max()):.1e})")
assert err <= float32_tolerance(theirs, steps)

# 3. The same model under DPM-Solver++(2M) and Euler: only the scheduler changes.
for scheduler in (diffusers.DPMSolverMultistepScheduler(), diffusers.EulerDiscreteScheduler()):
    recipe = sf.from_diffusers(unet, scheduler, num_inference_steps=steps)
    with torch.no_grad():
        ours = recipe.sample(x_init=recipe.x_init(latents)).x
        theirs = diffusers_loop(scheduler, steps)
    err = float((ours - theirs).abs().max())
    print(f"{type(scheduler).__name__:28s} -> sdeflow {recipe.solver:9s}: max |sdeflow - diffusers| = {err:.2e} "
          f"(relative {err / float(theirs.abs().max()):.1e})")
    assert err <= float32_tolerance(theirs, steps)

# 4. A v-prediction model is a VPredictionField (v = alpha eps - sigma x0, not the probability-flow velocity).
scheduler = diffusers.DPMSolverMultistepScheduler(prediction_type="v_prediction")
recipe = sf.from_diffusers(unet, scheduler, num_inference_steps=steps)
assert isinstance(recipe.field, sf.VPredictionField) and recipe.field.kind == "v"

# 5. The path and field work with every sdeflow solver and grid. Integer timesteps exist only at the knots,
#    so a solver with stages between them needs time_input="continuous" (diffusers' UNets accept fractional
#    timesteps: the timestep of the same noise level, as EulerDiscreteScheduler interpolates them).
recipe = sf.from_diffusers(unet, diffusers.DDIMScheduler(clip_sample=False), time_input="continuous")
with torch.no_grad():
    heun = sf.sample(recipe.path, recipe.field, "heun", steps=steps, grid="log_snr", x_init=latents,
                     final_denoise=True)
print(f"the same model with sdeflow's heun on a log-SNR grid: {heun.nfe} evaluations, all finite: "
      f"{bool(torch.isfinite(heun.x).all())} (random weights: the samples are noise; the plumbing is the point)")
assert torch.isfinite(heun.x).all()

# 6. What sdeflow does not reproduce is refused, not approximated: DPM-Solver's SDE variants draw diffusers' own
#    noise inside its scheduler (strict=False gives sdeflow's closest sampler, with recipe.exact False).
try:
    sf.from_diffusers(unet, diffusers.DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++"),
                      num_inference_steps=steps)
except sf.SdeflowValueError as e:
    print("refused:", str(e)[:100], "...")
else:
    raise AssertionError("DPM-Solver's SDE variant should be refused in strict mode")

# 7. k-diffusion: a denoiser D(x, sigma). Here the exact denoiser of a Gaussian, so the answer is known:
#    the probability-flow map from sigma = 80 to 0, which Heun (second order) approaches as steps double.
target = sf.Gaussian(torch.tensor([1.0, -1.0], dtype=torch.float64), torch.tensor([0.25, 1.0], dtype=torch.float64))


def denoiser(x, sigma):  # k-diffusion's interface: sigma a (batch,) tensor
    return target.predict(x, sigma / 80.0, sf.EDM(80.0), "data")


z = torch.randn(1000, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
errs = []
for n in (steps, 2 * steps):
    recipe = sf.from_k_diffusion(denoiser, 0.002, 80.0, steps=n, sampler="heun", dtype=torch.float64)
    x = recipe.sample(x_init=recipe.x_init(z)).x
    exact = target.flow(recipe.x_init(z), recipe.path, 1.0, 0.0)
    errs.append(float((x - exact).pow(2).sum(-1).mean().sqrt()))
    print(f"k-diffusion sample_heun as sdeflow heun, {n} steps ({recipe.solver}, "
          f"final_denoise={recipe.final_denoise}): RMS error to the exact flow {errs[-1]:.2e}")
assert errs[1] < 0.5 * errs[0]  # second order on the Karras grid (the last step into sigma = 0 is Euler's)
