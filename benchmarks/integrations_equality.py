"""How exactly sdeflow reproduces diffusers' scheduler loops through ``sdeflow.from_diffusers``: the table of
docs/tutorials/diffusers-k-diffusion.md (printed as Markdown).

The network is a tiny random-weight diffusers ``UNet2DModel`` (1 channel, 8x8, float64, seed 0; the same as
tests/tools/test_integrations.py), 4 samples from the same latents (seed 1); each scheduler's own loop (a pipeline's:
``latents * init_noise_sigma``, ``scale_model_input``, ``step``) against ``recipe.sample`` on its recipe. The
relative figure is ``max |x_sdeflow - x_diffusers| / max |x_diffusers|``, the largest over 10 and 25 steps (with
the absolute difference and the steps where it occurred); diffusers' float32 schedule makes it a few float32
roundings (2^-24 = 6e-8) per step.

    python benchmarks/integrations_equality.py
"""

from __future__ import annotations

import diffusers
import torch

import sdeflow as sf

torch.set_num_threads(1)
torch.manual_seed(0)
UNET = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                             block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                             up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4).double().eval()
LATENTS = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

ROWS = [  # (label, scheduler class, options, step() options, strict)
    ("DDIM (leading)", "DDIMScheduler", dict(clip_sample=False), {}, True),
    ("DDIM (trailing)", "DDIMScheduler", dict(clip_sample=False, timestep_spacing="trailing"), {}, True),
    ("DDIM, clip_sample, use_clipped_model_output=True", "DDIMScheduler", dict(clip_sample=True),
     dict(use_clipped_model_output=True), True),
    ("DPMSolverMultistep (dpmsolver++, midpoint, order 2)", "DPMSolverMultistepScheduler", {}, {}, True),
    ("DPMSolverMultistep (heun)", "DPMSolverMultistepScheduler", dict(solver_type="heun"), {}, True),
    ("DPMSolverMultistep, thresholding (max 3)", "DPMSolverMultistepScheduler",
     dict(thresholding=True, sample_max_value=3.0), {}, True),
    ("EulerDiscrete (linspace)", "EulerDiscreteScheduler", {}, {}, True),
    ("EulerDiscrete (Karras sigmas)", "EulerDiscreteScheduler", dict(use_karras_sigmas=True), {}, True),
    ("DPMSolverMultistep (dpmsolver++, order 3)", "DPMSolverMultistepScheduler", dict(solver_order=3), {}, True),
    ("UniPCMultistep (bh2, order 2)", "UniPCMultistepScheduler", {}, {}, True),
    ("UniPCMultistep (bh2, order 3)", "UniPCMultistepScheduler", dict(solver_order=3), {}, True),
    ("UniPCMultistep (bh1, final sigma_min)", "UniPCMultistepScheduler",
     dict(solver_type="bh1", final_sigmas_type="sigma_min"), {}, True),
    ("DEISMultistep (logrho, order 2)", "DEISMultistepScheduler", {}, {}, True),
    ("DEISMultistep (logrho, order 3)", "DEISMultistepScheduler", dict(solver_order=3), {}, True),
    ("*gap*: DDIM, clip_sample, use_clipped_model_output=False (default)", "DDIMScheduler", dict(clip_sample=True),
     {}, True),
]


def loop(sch, n, **step_kw):
    sch.set_timesteps(n)
    y = LATENTS * sch.init_noise_sigma
    for t in sch.timesteps:
        y = sch.step(UNET(sch.scale_model_input(y, t), t).sample, t, y, **step_kw).prev_sample
    return y


def main():
    preds = ("epsilon", "sample", "v_prediction")
    print("| diffusers scheduler | sdeflow | " + " | ".join(f"`{p}`" for p in preds) + " |")
    print("|---|---|" + "---|" * len(preds))
    for label, cls, opts, step_kw, strict in ROWS:
        cells, solver = [], None
        for pred in preds:
            worst = (0.0, 0.0, 0)
            for n in (10, 25):
                sch = getattr(diffusers, cls)(prediction_type=pred, **opts)
                r = sf.from_diffusers(UNET, sch, num_inference_steps=n, strict=strict)
                with torch.no_grad():
                    theirs = loop(sch, n, **step_kw)
                    ours = r.sample(x_init=r.x_init(LATENTS)).x * r.output_scale
                d = float((ours - theirs).abs().max())
                rel = d / float(theirs.abs().max())
                worst = max(worst, (rel, d, n))
                solver = r.solver
            cells.append(f"{worst[0]:.1e} ({worst[1]:.1e} abs, {worst[2]} steps)")
        print(f"| {label} | `{solver}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
