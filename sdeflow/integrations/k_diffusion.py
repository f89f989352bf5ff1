r"""k-diffusion denoisers in sdeflow.

A k-diffusion model is a denoiser :math:`D(x, \sigma)` (``model(x, sigma)`` with ``sigma`` a ``(batch,)``
tensor, returning :math:`\hat x_0`) on the variance-exploding path :math:`x = x_0 + \sigma\varepsilon`.
:func:`from_k_diffusion` wraps it as a :class:`~sdeflow.fields.DataField` on :class:`~sdeflow.paths.EDM`
(:math:`\alpha = 1`, :math:`\sigma = \sigma_{max} t`, called through :class:`~sdeflow.adapters.SigmaTime`,
so the denoiser gets exactly :math:`\sigma`), and with ``steps`` lays out k-diffusion's
``get_sigmas_karras(steps, sigma_min, sigma_max, rho)`` grid (``steps`` sigmas, then 0) with the sdeflow
sampler that takes k-diffusion's steps on it:

* ``sample_euler``: ``euler`` on the grid (its last step, into :math:`\sigma = 0`, lands on :math:`\hat x_0`);
* ``sample_heun``: ``heun`` on the grid without its 0, then ``final_denoise`` (k-diffusion's step into
  :math:`\sigma = 0` is an Euler step);
* ``sample_dpmpp_2m``: ``dpmpp_2m`` on the grid (first and last steps first order).

Churn (``s_churn > 0``) is not reproduced (sdeflow has no churn); these are the samplers with their default
``s_churn = 0``. The initial state is k-diffusion's ``x = latents * sigmas[0]``.
"""

from __future__ import annotations

import torch

from ..adapters import SigmaTime
from ..errors import SdeflowValueError, check_int, check_number, unknown_name
from ..fields import DataField
from ..paths import EDM
from .recipe import Recipe

__all__ = ["from_k_diffusion", "karras_sigmas", "SAMPLERS"]

#: k-diffusion sampler -> (sdeflow solver, whether its last step into sigma = 0 is sdeflow's final_denoise)
SAMPLERS = {"euler": ("euler", False), "heun": ("heun", True), "dpmpp_2m": ("dpmpp_2m", False)}


def denoise_last_of(sampler: str) -> bool:
    return SAMPLERS[sampler][1]


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, dtype=None) -> torch.Tensor:
    r"""k-diffusion's ``get_sigmas_karras``: :math:`\sigma_i = (\sigma_{max}^{1/\rho} + \tfrac{i}{n-1}
    (\sigma_{min}^{1/\rho} - \sigma_{max}^{1/\rho}))^\rho`, :math:`i = 0..n-1`, then 0 (Karras et al. 2022,
    eq. 5), computed as k-diffusion does in ``dtype`` (default: torch's default dtype, which is what
    k-diffusion's ``torch.linspace`` uses)."""
    ramp = torch.linspace(0, 1, n, dtype=torch.get_default_dtype() if dtype is None else dtype)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (max_inv + ramp * (min_inv - max_inv)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def from_k_diffusion(denoiser, sigma_min: float, sigma_max: float, *, steps: int | None = None,
                     sampler: str = "dpmpp_2m", rho: float = 7.0, dtype: torch.dtype | None = None) -> Recipe:
    """A k-diffusion denoiser ``denoiser(x, sigma)`` as a sdeflow :class:`~sdeflow.integrations.Recipe`.

    Args:
        denoiser: the model, called as ``denoiser(x, sigma)`` with ``sigma`` a ``(batch,)`` tensor (k-diffusion's
            ``Denoiser``/``CompVisDenoiser`` wrappers, an EDM ``Precond`` net with its labels bound, ...).
        sigma_min, sigma_max: the noise levels of the grid (k-diffusion's ``get_sigmas_karras`` arguments).
        steps: the number of sampler steps (``n`` of ``get_sigmas_karras``); None: path and field only.
        sampler: ``"euler"``, ``"heun"`` or ``"dpmpp_2m"`` (see the module docstring).
        rho: the Karras grid's exponent.
        dtype: the dtype the grid is computed in (default: torch's default dtype, as k-diffusion does).

    Returns:
        a :class:`~sdeflow.integrations.Recipe` on ``EDM(sigmas[0])`` (``t = sigma / sigmas[0]``, so the denoiser
        is called at k-diffusion's sigmas to one rounding); ``recipe.sample(x_init=recipe.x_init(latents))`` is
        k-diffusion's ``sample_<sampler>(denoiser, latents * sigmas[0], sigmas)``.
    """
    if not callable(denoiser):
        raise SdeflowValueError(f"denoiser must be callable as denoiser(x, sigma), got {type(denoiser).__name__}")
    sigma_min = check_number("sigma_min", sigma_min, gt=0.0)
    sigma_max = check_number("sigma_max", sigma_max, gt=0.0)
    rho = check_number("rho", rho, gt=0.0)
    if not sigma_min < sigma_max:
        raise SdeflowValueError(f"need sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if sampler not in SAMPLERS:
        raise unknown_name("k-diffusion sampler", str(sampler), SAMPLERS)
    if steps is None:
        path = EDM(sigma_max)
        return Recipe(path=path, field=DataField(SigmaTime(denoiser, path)), init_scale=sigma_max)
    steps = check_int("steps", steps, minimum=2 if denoise_last_of(sampler) else 1)
    sigmas = karras_sigmas(steps, sigma_min, sigma_max, rho, dtype).to(torch.float64)
    s0 = float(sigmas[0])
    path = EDM(s0)  # t = sigma / sigmas[0]: the grid starts at t = 1 exactly
    grid = (sigmas / s0).tolist()
    grid[0] = 1.0
    solver, denoise_last = SAMPLERS[sampler]
    if denoise_last:
        grid = grid[:-1]
    return Recipe(path=path, field=DataField(SigmaTime(denoiser, path)), grid=grid, solver=solver,
                  final_denoise=denoise_last, init_scale=s0, timesteps=sigmas.tolist())
