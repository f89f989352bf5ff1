r"""Editing with a trained field: SDEdit, masked inpainting and inversion (data -> noise).

* :func:`sdedit` (Meng et al. 2022, "SDEdit"): noise a guide image to an intermediate time,
  :math:`x_{t_e} = \alpha_{t_e} x_{guide} + \sigma_{t_e} z`, and sample from ``t_max = t_e`` down.
* :class:`Inpaint` / :func:`inpaint` (the replacement method of Song et al. 2021, Sec. 5 and App. I.2): after
  every step, at the time :math:`t` it reached, the known region is replaced by a fresh draw of the noised
  known data, :math:`x \leftarrow m \odot (\alpha_t y + \sigma_t z) + (1 - m) \odot x`; the output's known
  region is ``y`` itself.
* :func:`invert`: the probability-flow ODE integrated forward, from data at ``t_min`` to noise at ``t_max``,
  with any ODE solver (DDIM inversion is ``solver="ddim"``); :func:`sdeflow.sample` on the reversed grid maps
  the result back, with a round-trip error of the solver's order.

All three are built on :func:`sdeflow.sample` and take its keyword arguments (``model_kwargs``, ``noise``,
``chunk_size``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .errors import (
    SdeflowTypeError,
    SdeflowValueError,
    check_float_tensor,
    check_number,
)
from .fields import Field
from .grids import Grid, make_grid, unpack
from .noise import as_noise_source
from .paths import GaussianPath, map_times
from .sample import resolve_steps, sample
from .solution import Solution
from .solve import make_solver
from .window import default_window

__all__ = ["Inpaint", "inpaint", "inversion_grid", "invert", "sdedit"]

Tensor = torch.Tensor


def sdedit(path: GaussianPath, field: Field, x_guide: Tensor, t_edit: float, solver=None, *,
           generator: torch.Generator | None = None, noise=None, **sample_kwargs) -> Solution:
    r"""SDEdit (Meng et al. 2022): :math:`x_{t_e} = \alpha_{t_e} x_{guide} + \sigma_{t_e} z` with
    :math:`z \sim N(0, I)` from ``noise``/``generator`` (the draw :func:`sdeflow.sample` would use for its
    prior: with ``PerSampleNoise`` sample ``i``'s edit depends only on its own row), then
    ``sample(path, field, solver, t_max=t_edit, x_init=x_te, ...)``.

    ``t_edit`` trades faithfulness to the guide (small) for realism (large); with the exact field and an
    exact sampler of the reverse SDE, a guide drawn from the data distribution gives output drawn from it.
    """
    x_guide = check_float_tensor("x_guide", x_guide, allow_half=False)
    if x_guide.dim() < 1:
        raise SdeflowValueError(f"x_guide must have shape (batch, *event), got {tuple(x_guide.shape)}")
    t_edit = check_number("t_edit", t_edit, gt=0.0, le=1.0, hint="the time the guide is noised to, in (0, 1]")
    if "x_init" in sample_kwargs or "t_max" in sample_kwargs:
        raise SdeflowValueError("sdedit sets x_init and t_max itself (from x_guide and t_edit); drop them")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise SdeflowTypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    src = as_noise_source(noise, generator, x_guide.device)
    z = src.draw(-1, t_edit, t_edit, x_guide)
    x_te, _ = path.q_sample(x_guide, t_edit, eps=z)
    return sample(path, field, solver, t_max=t_edit, x_init=x_te, noise=src, **sample_kwargs)


class Inpaint:
    r"""A step callback for :func:`sdeflow.sample` that keeps the known region on the path of the known data
    (the replacement method of Song et al. 2021): after each step, at the time :math:`t` reached,

    .. math:: x \leftarrow m \odot (\alpha_t\, y + \sigma_t\, z) + (1 - m) \odot x, \qquad z \sim N(0, I),

    ``known`` = :math:`y` (``(batch, *event)``, like the state), ``mask`` = :math:`m` (1 where known, 0 where
    unknown; broadcastable to ``known``, e.g. one ``(1, *event)`` mask for every sample). The normals come from ``noise`` (an int seeds a
    :class:`~sdeflow.noise.PerSampleNoise`, drawn per step with its own counter, so each sample's draws are its
    own) or ``generator``. Use :func:`inpaint`, which also puts ``y`` itself in the known region of the
    output.

    Exactness: the known region of :func:`inpaint`'s output is ``y`` exactly. The unknown region is a sample
    of the conditional :math:`p(x_u \mid x_k = y)` when the two regions are independent under the data
    distribution; when they are correlated the replacement method is an approximation (for a Gaussian its
    limit is another Gaussian: measured in ``docs/tutorials/editing.md``).
    """

    def __init__(self, path: GaussianPath, known: Tensor, mask: Tensor, *, noise=None,
                 generator: torch.Generator | None = None, _rows: tuple | None = None):
        if not isinstance(path, GaussianPath):
            raise SdeflowTypeError(f"path must be a GaussianPath, got {type(path).__name__}")
        self.path = path
        self.known = check_float_tensor("known", known, allow_half=False)
        if self.known.dim() < 1:
            raise SdeflowValueError(f"known must have shape (batch, *event), got {tuple(self.known.shape)}")
        if not isinstance(mask, Tensor):
            raise SdeflowTypeError(f"mask must be a tensor (1 where known, 0 where unknown), got {type(mask).__name__}")
        try:
            torch.broadcast_shapes(mask.shape, self.known.shape)
        except RuntimeError:
            raise SdeflowValueError(f"mask of shape {tuple(mask.shape)} does not broadcast against known of shape "
                                    f"{tuple(self.known.shape)}") from None
        m = mask.to(self.known.dtype)
        if not bool(((m == 0) | (m == 1)).all()):
            raise SdeflowValueError("mask must hold only 0 (unknown) and 1 (known)")
        self.mask = m
        if generator is not None and not isinstance(generator, torch.Generator):
            raise SdeflowTypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.noise = as_noise_source(noise, generator, self.known.device)
        self._rows = _rows

    def _cut(self, v: Tensor, n: int, start: int, stop: int) -> Tensor:
        return v[start:stop] if v.dim() >= 1 and v.shape[0] == n and v.dim() == self.known.dim() else v

    def for_rows(self, start: int, stop: int) -> Inpaint:
        """The callback of samples ``start:stop`` (what :func:`sdeflow.sample` asks for per chunk)."""
        n = self.known.shape[0]
        out = Inpaint.__new__(Inpaint)
        out.path, out._rows = self.path, (start, stop)
        out.known, out.mask = self._cut(self.known, n, start, stop), self._cut(self.mask, n, start, stop)
        out.noise = self.noise.for_rows(start)
        return out

    def known_at(self, t: float, like: Tensor, k: int) -> Tensor:
        r""":math:`\alpha_t y + \sigma_t z`, shaped like the state ``like``."""
        z = self.noise.draw(10_000_000 + k, t, t, like)  # a counter of its own: never the sampler's draws
        a, s = float(self.path.alpha(t)), float(self.path.sigma(t))
        return torch.add(self.known.to(like.dtype) * a, z, alpha=s)

    def paste(self, x: Tensor, values: Tensor) -> Tensor:
        """``values`` where the mask is 1, ``x`` elsewhere (a selection: both exact)."""
        return torch.where(self.mask.to(device=x.device) != 0, values.to(x.dtype), x)

    def __call__(self, i: int, t: float, x: Tensor, x0_hat: Tensor | None) -> Tensor:
        return self.paste(x, self.known_at(t, x, i))


def inpaint(path: GaussianPath, field: Field, known: Tensor, mask: Tensor, solver=None, *, noise=None,
            generator: torch.Generator | None = None, **sample_kwargs) -> Solution:
    """Masked inpainting: :func:`sdeflow.sample` with the :class:`Inpaint` callback, then the known region of the
    output set to ``known`` itself. ``n`` defaults to ``known``'s batch; ``noise``/``generator`` drive both
    the sampler and the replacement draws (their counters never overlap)."""
    if "callback" in sample_kwargs:
        raise SdeflowValueError("inpaint sets callback itself (an Inpaint); for your own callback call "
                                "sample(..., callback=...) and paste the known region in it")
    known = check_float_tensor("known", known, allow_half=False)
    dev = known.device
    src = as_noise_source(noise, generator, dev)
    cb = Inpaint(path, known, mask, noise=src)
    if "x_init" not in sample_kwargs:
        sample_kwargs.setdefault("n", known.shape[0])
        sample_kwargs.setdefault("shape", tuple(known.shape[1:]))
        sample_kwargs.setdefault("dtype", known.dtype)
        sample_kwargs.setdefault("device", dev)
    sol = sample(path, field, solver, noise=src, callback=cb, **sample_kwargs)
    x = cb.paste(sol.x, known)
    return Solution(x=x, ts=sol.ts, trajectory=sol.trajectory, nfe=sol.nfe, stats=dict(sol.stats, inpaint=True))


def inversion_grid(path: GaussianPath, field: Field, solver=None, *, steps: int | None = None,
                   nfe: int | None = None, grid: str = "uniform", t_min: float | None = None,
                   t_max: float | None = None, rho: float = 7.0, dtype: torch.dtype = torch.float32,
                   integration_path: GaussianPath | None = None) -> list:
    """The increasing grid (data -> noise, in ``path``'s time) that :func:`invert` integrates on: the reverse of
    the grid :func:`sdeflow.sample` would lay out for the same ``solver``, ``steps``/``nfe``, ``grid``, window and
    ``integration_path`` (named grids are laid out in its time), so
    ``sample(path, field, solver, grid=inversion_grid(...)[::-1], x_init=z)`` is the matching decoder."""
    s = make_solver("heun" if solver is None else solver, {})
    grid, t_max, t_min, kw = unpack(grid, t_max, t_min, rho if grid == "karras" else None)
    t_max, t_min = default_window(path, field.kind, gamma2_fn=None, final_denoise=False, dtype=dtype, t_max=t_max,
                                  t_min=t_min, targets=s.targets)
    n_steps = resolve_steps(s, steps, nfe, 0)
    ipath = path if integration_path is None else integration_path
    tau_max, tau_min = map_times(path, ipath, np.array([t_max, t_min]))
    g = map_times(ipath, path, make_grid(grid, ipath, n_steps, float(tau_max), float(tau_min), **kw).numpy())
    g[0], g[-1] = t_max, t_min
    return np.asarray(g[::-1], dtype=np.float64).tolist()


def invert(path: GaussianPath, field: Field, x0: Tensor, solver=None, *, steps: int | None = None,
           nfe: int | None = None, grid: str | Sequence[float] = "uniform", t_min: float | None = None,
           t_max: float | None = None, rho: float = 7.0, **sample_kwargs) -> Solution:
    r"""Inversion: integrate the probability-flow ODE :math:`dx/dt = v_t(x)` **forward**, from ``x0`` taken as
    the state at ``t_min`` (data end) to ``t_max`` (noise end), with any fixed-step ODE solver or ``dopri5``:
    ``solver="ddim"`` is DDIM inversion (Song et al. 2021, Sec. 4.3; Mokady et al. 2023), the exponential
    integrators (``dpmpp_2m``, ``dpm_solver_3``, ``unipc``, ...) are their inversions. The solvers' updates are
    direction-free (:math:`h < 0` in log-SNR), so they keep their order.

    ``grid``: a named grid laid out as :func:`sdeflow.sample` would for the same arguments, then reversed
    (:func:`inversion_grid`), or an explicit strictly increasing sequence. Decoding
    ``sample(path, field, solver, grid=sol.ts.tolist()[::-1], x_init=sol.x)`` returns ``x0`` up to the two
    solves' error (:math:`O(h^p)`, measured per solver in ``docs/tutorials/editing.md``).

    The ODE only: ``gamma`` must be 0 and ``final_denoise`` is refused (the state at ``t_max`` is the code).
    """
    x0 = check_float_tensor("x0", x0, allow_half=False)
    if x0.dim() < 1:
        raise SdeflowValueError(f"x0 must have shape (batch, *event), got {tuple(x0.shape)}")
    for k in ("x_init", "n", "shape", "final_denoise"):
        if sample_kwargs.get(k) not in (None, False):
            raise SdeflowValueError(f"invert takes the data as x0 and returns the state at t_max; drop {k}=")
    sample_kwargs.pop("final_denoise", None)
    g = sample_kwargs.pop("gamma", None)
    if g not in (None, 0, 0.0):
        raise SdeflowValueError(f"invert integrates the probability-flow ODE (deterministic, invertible); gamma={g!r} "
                                f"would make it an SDE: drop gamma")
    names = _solver_option_names(solver)
    s = make_solver("heun" if solver is None else solver,
                    {k: sample_kwargs.pop(k) for k in list(sample_kwargs) if k in names})
    if s.sde or s.stochastic:
        raise SdeflowValueError(f"solver {s!r} draws noise; inversion needs a deterministic ODE solver (ddim with "
                                f"eta=0, euler, heun, dpmpp_2m, dpm_solver_3, unipc, dopri5, ...)")
    if isinstance(grid, (str, Grid)):
        if s.adaptive and steps is None:
            _, t_max, t_min, _ = unpack(grid, t_max, t_min)
            tmax, tmin = default_window(path, field.kind, gamma2_fn=None, final_denoise=False, dtype=x0.dtype,
                                        t_max=t_max, t_min=t_min, targets=s.targets)
            inner = path.breakpoints(tmax, tmin).numpy()[::-1]
            g_list = [float(tmin), *inner.tolist(), float(tmax)]
        else:
            g_list = inversion_grid(path, field, s, steps=steps, nfe=nfe, grid=grid, t_min=t_min, t_max=t_max,
                                    rho=rho, dtype=x0.dtype, integration_path=sample_kwargs.get("integration_path"))
    else:
        if steps is not None or t_min is not None or t_max is not None:
            raise SdeflowValueError("an explicit grid sets the steps and ends; drop steps=, t_min= and t_max=")
        g_list = grid
    return sample(path, field, s, grid=g_list, x_init=x0, gamma=0.0, nfe=None if isinstance(grid, (str, Grid)) else nfe,
                  _forward=True, **sample_kwargs)


def _solver_option_names(solver) -> set:
    """The constructor options of ``solver`` (so sample's own keywords are not passed to it)."""
    import inspect

    if solver is None:
        return set()
    cls = solver if isinstance(solver, type) else type(make_solver(solver, {}))
    return {p for p in inspect.signature(cls.__init__).parameters if p != "self"}
