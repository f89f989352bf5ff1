"""What an integration returns: a path, a field and the sampler settings that reproduce a library's loop."""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Any

import torch

from ..errors import SdeflowValueError
from ..fields import Field
from ..paths import GaussianPath

__all__ = ["Recipe"]


@dataclass
class Recipe:
    r"""A model from another library, as sdeflow sees it.

    ``sdeflow.sample(r.path, r.field, r.solver, x_init=r.x_init(latents), **r.kwargs)`` (or
    ``r.sample(x_init=r.x_init(latents))``) runs the library's own loop from the same initial noise
    ``latents`` (the standard normals the library draws).

    Attributes:
        path: the Gaussian path the model was trained on (sdeflow time: ``t = 0`` data, ``t = 1`` noise).
        field: the model as a :class:`~sdeflow.fields.Field` (its output unwrapped, its time input adapted,
            the library's clipping or thresholding applied).
        grid: the library's time grid in ``path``'s time (strictly decreasing), or None when no number of
            steps was given.
        solver: the sdeflow solver that takes the library's steps (None without a grid).
        solver_options: its constructor options.
        final_denoise: whether the library's last step is :math:`x \mapsto \hat x_0` (a step into
            :math:`\sigma = 0` of a first-order method).
        integration_path: the coordinates the library steps in (e.g. ``EDM`` for sigma-stepping samplers).
        init_scale: ``x_init = init_scale * latents`` (the library's initial state, in ``path``'s coordinates).
        output_scale: the library's final sample is ``output_scale * x`` (1 except where the library ends
            in its own coordinates above :math:`\sigma = 0`: EulerDiscrete with ``final_sigmas_type="sigma_min"``
            returns :math:`x/\alpha`).
        exact: whether ``sample`` reproduces the library's loop to rounding (False only when asked for
            the closest sdeflow sampler with ``strict=False``; ``note`` says what differs).
        note: what the reproduction does and does not cover.
        timesteps: the library's own time values (diffusers' timesteps, k-diffusion's sigmas).
    """

    path: GaussianPath
    field: Field
    grid: list | None = None
    solver: str | None = None
    solver_options: dict = dc_field(default_factory=dict)
    final_denoise: bool = False
    integration_path: GaussianPath | None = None
    init_scale: float = 1.0
    output_scale: float = 1.0
    exact: bool = True
    note: str = ""
    timesteps: list | None = None

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`sdeflow.sample` besides path, field and solver."""
        if self.grid is None:
            raise SdeflowValueError("this recipe has no grid (no number of steps was given): pass num_inference_steps "
                             "(diffusers) or steps (k-diffusion), or choose sdeflow's grid and solver yourself")
        kw: dict[str, Any] = {"grid": list(self.grid), "final_denoise": self.final_denoise}
        if self.integration_path is not None:
            kw["integration_path"] = self.integration_path
        kw.update(self.solver_options)
        return kw

    def x_init(self, latents: torch.Tensor) -> torch.Tensor:
        """The initial state for ``sample`` from the library's initial standard normals ``latents``."""
        return latents * self.init_scale

    def sample(self, **kw):
        """:func:`sdeflow.sample` with this recipe's path, field, solver and settings; ``kw`` adds or
        overrides (``x_init=``, ``n=``/``shape=``, ``generator=``, ``return_trajectory=``, ...)."""
        from ..sample import sample

        return sample(self.path, self.field, self.solver, **{**self.kwargs, **kw})

    def __repr__(self):
        g = "None" if self.grid is None else f"<{len(self.grid)} times {self.grid[0]:.4g}..{self.grid[-1]:.4g}>"
        return (f"Recipe(path={self.path!r}, field={self.field!r}, solver={self.solver!r}, "
                f"solver_options={self.solver_options!r}, grid={g}, final_denoise={self.final_denoise}, "
                f"integration_path={self.integration_path!r}, init_scale={self.init_scale:.6g}, exact={self.exact})")

