"""Models trained with other libraries, plugged in without a closure.

* :func:`sdeflow.integrations.diffusers.from_diffusers` — a diffusers model (``UNet2DModel``, ...) and its
  scheduler (``DDIMScheduler``, ``DPMSolverMultistepScheduler``, ``EulerDiscreteScheduler``,
  ``UniPCMultistepScheduler``, ``DEISMultistepScheduler``);
* :func:`sdeflow.integrations.k_diffusion.from_k_diffusion` — a k-diffusion denoiser ``D(x, sigma)``.

Both return a :class:`Recipe`: the path, the field and, when a number of steps is known, the grid, solver and
options with which :func:`sdeflow.sample` reproduces the library's own sampling loop. They are also
``sdeflow.adapters.from_diffusers`` / ``from_k_diffusion``. Neither library is imported by sdeflow itself;
diffusers is imported only when a scheduler is read.
"""

from .recipe import Recipe

__all__ = ["Recipe", "from_diffusers", "from_k_diffusion"]


def __getattr__(name: str):
    if name == "from_diffusers":
        from .diffusers import from_diffusers

        return from_diffusers
    if name == "from_k_diffusion":
        from .k_diffusion import from_k_diffusion

        return from_k_diffusion
    raise AttributeError(f"module 'sdeflow.integrations' has no attribute {name!r}")
