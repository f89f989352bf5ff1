r"""Time grids for sampling, from ``t_max`` (noise) down to ``t_min`` (data).

All grids are float64 tensors of ``steps + 1`` strictly decreasing times in ``[0, 1]``:

* ``uniform`` — equal steps in ``t``;
* ``log_snr`` — equal steps in :math:`\lambda_t` (DPM-Solver's default, Lu et al. 2022);
* ``karras`` — :math:`\tilde\sigma_i = (\tilde\sigma_{max}^{1/\rho} + \tfrac{i}{n}(\tilde\sigma_{min}^{1/\rho}
  - \tilde\sigma_{max}^{1/\rho}))^\rho` with :math:`\tilde\sigma = \sigma/\alpha`, ``rho = 7``
  (Karras et al. 2022, eq. (5)), mapped to ``t`` through the path's log-SNR;
* ``quadratic`` — :math:`t = t_{min} + (t_{max}-t_{min}) s^2` for ``s`` uniform (DDIM's quadratic
  schedule, Song et al. 2021), denser near the data;
* ``discrete`` — knots ``i/T`` of a :class:`~sdeflow.paths.DiscreteVP`, evenly spaced in the index.
"""

from __future__ import annotations


import numpy as np
import torch

from .errors import SdeflowTypeError, SdeflowValueError, check_int, check_number, unknown_name
from .paths import DiscreteVP, GaussianPath

__all__ = ["GRIDS", "make_grid", "uniform", "log_snr", "karras", "quadratic", "discrete", "check_grid",
           "Grid", "Uniform", "LogSNR", "Karras", "Quadratic", "Discrete", "GRID_TYPES", "as_grid", "unpack"]

Tensor = torch.Tensor


def _check_steps(steps) -> int:
    return check_int("steps", steps, what="a positive integer", error=SdeflowValueError)


def _check_ends(t_max, t_min, path=None) -> tuple[float, float]:
    # a path defined beyond t = 1 (EDM, VE: t_upper = inf) may serve as integration coordinates of any window
    upper = getattr(path, "t_upper", 1.0) if path is not None else 1.0
    t_max = check_number("t_max", t_max, ge=0.0, le=upper)
    t_min = check_number("t_min", t_min, ge=0.0, le=upper)
    if not t_min < t_max:
        raise SdeflowValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}; grids run "
                                f"from t_max (noise) down to t_min (data)")
    return t_max, t_min


def _check_path(path, grid: str) -> None:
    if not isinstance(path, GaussianPath):
        raise SdeflowTypeError(f"the {grid!r} grid needs a GaussianPath (it is laid out in log-SNR), got "
                               f"{type(path).__name__}")


def uniform(path: GaussianPath | None, steps: int, t_max: float = 1.0, t_min: float = 0.0) -> Tensor:
    t_max, t_min = _check_ends(t_max, t_min, path)
    return torch.linspace(t_max, t_min, _check_steps(steps) + 1, dtype=torch.float64)


def _from_log_snr(path: GaussianPath, lam: Tensor, t_max: float, t_min: float) -> Tensor:
    t = path.t_from_log_snr(lam).to(torch.float64)
    t[0], t[-1] = t_max, t_min  # endpoints exactly as asked, not via a round trip
    return t


def _finite_log_snr(path: GaussianPath, t_max: float, t_min: float, grid: str):
    l0, l1 = float(path.log_snr(t_max)), float(path.log_snr(t_min))
    if not (np.isfinite(l0) and np.isfinite(l1)):
        raise SdeflowValueError(
            f"the {grid!r} grid needs a finite log-SNR at both ends, but {path!r} has log-SNR {l0:g} at "
            f"t_max={t_max} and {l1:g} at t_min={t_min}; choose t_max < 1 / t_min > 0, or grid='uniform'")
    return l0, l1


def log_snr(path: GaussianPath, steps: int, t_max: float = 1.0, t_min: float = 1e-3) -> Tensor:
    _check_path(path, "log_snr")
    t_max, t_min = _check_ends(t_max, t_min, path)
    l0, l1 = _finite_log_snr(path, t_max, t_min, "log_snr")
    lam = torch.linspace(l0, l1, _check_steps(steps) + 1, dtype=torch.float64)
    return _from_log_snr(path, lam, t_max, t_min)


def karras(path: GaussianPath, steps: int, t_max: float = 1.0, t_min: float = 1e-3, rho: float = 7.0) -> Tensor:
    _check_path(path, "karras")
    t_max, t_min = _check_ends(t_max, t_min, path)
    rho = check_number("rho", rho)
    l0, l1 = _finite_log_snr(path, t_max, t_min, "karras")
    if not rho > 0:
        raise SdeflowValueError(f"rho must be > 0, got {rho}")
    s_max, s_min = np.exp(-0.5 * l0), np.exp(-0.5 * l1)
    i = torch.linspace(0.0, 1.0, _check_steps(steps) + 1, dtype=torch.float64)
    s = (s_max ** (1 / rho) + i * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    return _from_log_snr(path, -2.0 * torch.log(s), t_max, t_min)


def quadratic(path: GaussianPath | None, steps: int, t_max: float = 1.0, t_min: float = 0.0) -> Tensor:
    t_max, t_min = _check_ends(t_max, t_min, path)
    s = torch.linspace(1.0, 0.0, _check_steps(steps) + 1, dtype=torch.float64)
    return t_min + (t_max - t_min) * s * s


def discrete(path: DiscreteVP, steps: int, t_max: float = 1.0, t_min: float | None = None) -> Tensor:
    """Knots of a :class:`~sdeflow.paths.DiscreteVP`, ``steps + 1`` of them, evenly spaced in the index."""
    if not isinstance(path, DiscreteVP):
        raise SdeflowTypeError(f"the 'discrete' grid needs a DiscreteVP path, got {path!r}")
    T = path.T
    t_max, t_min = _check_ends(t_max, 1.0 / T if t_min is None else t_min, path)
    i_max, i_min = int(round(t_max * T)), int(round(t_min * T))
    steps = _check_steps(steps)
    if steps > i_max - i_min:
        raise SdeflowValueError(f"steps={steps} exceeds the {i_max - i_min} knot intervals between "
                                f"t_max={t_max} and t_min={t_min} of DiscreteVP(T={T})")
    idx = np.unique(np.round(np.linspace(i_max, i_min, steps + 1)).astype(np.int64))[::-1]
    return torch.as_tensor(idx.copy(), dtype=torch.float64) / T


GRIDS = {"uniform": uniform, "log_snr": log_snr, "karras": karras, "quadratic": quadratic,
         "discrete": discrete}


class Grid:
    """A named grid as an object: its kind, its options and (optionally) its window ends, for
    ``sample(..., grid=Karras(rho=5.0, t_min=0.002))``. The ends default to None: the sampler's default window
    (:func:`sdeflow.window.default_window`); ``sample``'s own ``t_max=``/``t_min=`` mean the same and may be
    given instead (not both with different values). ``grid="karras"`` is ``grid=Karras()``."""

    name: str = ""

    def __init__(self, *, t_max: float | None = None, t_min: float | None = None):
        hint = "sampling runs from t_max (noise, <= 1) down to t_min (data, >= 0)"
        self.t_max = None if t_max is None else check_number("t_max", t_max, ge=0.0, le=1.0, hint=hint)
        self.t_min = None if t_min is None else check_number("t_min", t_min, ge=0.0, le=1.0, hint=hint)
        if self.t_max is not None and self.t_min is not None and not self.t_min < self.t_max:
            raise SdeflowValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}; grids run "
                                    f"from t_max (noise) down to t_min (data)")

    def options(self) -> dict:
        """The keyword arguments of the grid function beyond ``(path, steps, t_max, t_min)``."""
        return {}

    def __call__(self, path: GaussianPath, steps: int, t_max: float | None = None,
                 t_min: float | None = None) -> Tensor:
        """The grid of ``steps`` steps on ``path`` from ``t_max`` to ``t_min`` (default: this object's ends, else
        the path's ``t_max``/``t_min``), as :func:`make_grid` returns it."""
        t_max = next(v for v in (t_max, self.t_max, path.t_max) if v is not None)
        t_min = next(v for v in (t_min, self.t_min, path.t_min) if v is not None)
        return make_grid(self.name, path, steps, t_max, t_min, **self.options())

    def _fields(self) -> dict:
        return dict(self.options(), t_max=self.t_max, t_min=self.t_min)

    def __eq__(self, other):
        return type(other) is type(self) and other._fields() == self._fields()

    def __hash__(self):
        return hash((type(self), tuple(sorted(self._fields().items()))))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._fields().items() if v is not None)
        return f"{type(self).__name__}({args})"


class Uniform(Grid):
    """Equal steps in ``t`` (:func:`uniform`)."""

    name = "uniform"


class LogSNR(Grid):
    r"""Equal steps in :math:`\lambda_t` (:func:`log_snr`)."""

    name = "log_snr"


class Karras(Grid):
    """Karras et al.'s schedule with exponent ``rho`` (:func:`karras`; ``rho = 7`` by default)."""

    name = "karras"

    def __init__(self, rho: float = 7.0, *, t_max: float | None = None, t_min: float | None = None):
        rho = check_number("rho", rho)
        if not rho > 0:
            raise SdeflowValueError(f"rho must be > 0, got {rho}")
        self.rho = rho
        super().__init__(t_max=t_max, t_min=t_min)

    def options(self) -> dict:
        return {"rho": self.rho}


class Quadratic(Grid):
    """DDIM's quadratic schedule (:func:`quadratic`)."""

    name = "quadratic"


class Discrete(Grid):
    """Knots of a :class:`~sdeflow.paths.DiscreteVP` (:func:`discrete`)."""

    name = "discrete"


#: the grid objects by name: ``GRID_TYPES["karras"]`` is :class:`Karras`
GRID_TYPES = {cls.name: cls for cls in (Uniform, LogSNR, Karras, Quadratic, Discrete)}


def as_grid(grid) -> Grid:
    """A grid name or a :class:`Grid` as a :class:`Grid` (``"karras"`` -> ``Karras()``)."""
    if isinstance(grid, Grid):
        return grid
    if isinstance(grid, str):
        if grid not in GRID_TYPES:
            raise unknown_name("grid", grid, GRIDS)
        return GRID_TYPES[grid]()
    raise SdeflowTypeError(f"grid must be a name ({', '.join(GRIDS)}), a Grid (Karras(rho=7), ...) or a "
                           f"sequence of times, got {type(grid).__name__}")


def make_grid(kind: str, path: GaussianPath, steps: int, t_max: float, t_min: float, **kw) -> Tensor:
    """A named grid (see the module docstring; a name or a :class:`Grid`) with ``steps`` steps from ``t_max`` to
    ``t_min``."""
    if isinstance(kind, Grid):
        kw = {**kind.options(), **kw}
        kind = kind.name
    if not isinstance(kind, str):
        raise SdeflowTypeError(f"grid must be a name ({', '.join(GRIDS)}) or a sequence of times, got "
                               f"{type(kind).__name__}")
    if kind not in GRIDS:
        raise unknown_name("grid", kind, GRIDS)
    g = GRIDS[kind](path, steps, t_max, t_min, **kw)
    try:
        return check_grid(g, "grid", upper=getattr(path, "t_upper", 1.0))
    except SdeflowValueError:
        d = np.diff(g.numpy())
        if np.all(np.isfinite(g.numpy())) and not np.all(d < 0):
            k = int(np.flatnonzero(d >= 0)[0])
            raise SdeflowValueError(
                f"the {kind!r} grid with {steps} steps on {path!r} between t_max={t_max!r} and t_min={t_min!r} has "
                f"repeated times (t[{k}] = t[{k + 1}] = {float(g[k]):.17g}): float64 cannot resolve that many "
                f"steps of this spacing there. Use fewer steps, a smaller t_max / larger t_min, or another grid"
            ) from None
        raise


def check_grid(grid, name: str = "grid", *, decreasing: bool | None = True, unit: bool = True,
               upper: float = 1.0) -> Tensor:
    """Validate an explicit time grid; return it as a float64 CPU tensor.

    It must be 1-D with at least 2 finite points, in ``[0, 1]`` (unless ``unit=False``), strictly
    monotone (decreasing for sampling; ``decreasing=None`` accepts either direction).
    """
    if isinstance(grid, Tensor):
        if not (grid.is_floating_point()):
            raise SdeflowTypeError(f"{name} must be a floating tensor of times, got dtype {grid.dtype}; "
                                   f"use {name}.double()")
        g = grid.detach().to("cpu", torch.float64)
    else:
        try:
            g = torch.as_tensor(np.asarray(grid, dtype=np.float64))
        except (TypeError, ValueError) as e:
            raise SdeflowTypeError(f"{name} must be a sequence of times, got {type(grid).__name__}") from e
    if g.dim() != 1 or g.numel() < 2:
        raise SdeflowValueError(f"{name} must be 1-D with at least 2 times, got shape {tuple(g.shape)}")
    if not torch.isfinite(g).all():
        raise SdeflowValueError(f"{name} contains NaN or Inf")
    if unit and ((g < 0).any() or (g > upper).any()):
        bad = float(g[(g < 0) | (g > upper)][0])
        raise SdeflowValueError(f"{name} leaves [0, 1] (found t={bad:g}); sdeflow's time runs from 0 "
                                f"(data) to 1 (noise): rescale your times into [0, 1]")
    d = g[1:] - g[:-1]
    if decreasing is True and not (d < 0).all():
        k = int(torch.nonzero(d >= 0)[0])
        raise SdeflowValueError(f"{name} must be strictly decreasing from noise (t near 1) to data "
                                f"(t near 0); {name}[{k}]={float(g[k]):g} -> {name}[{k + 1}]="
                                f"{float(g[k + 1]):g}. Reverse it or remove repeated times")
    if decreasing is None and not ((d < 0).all() or (d > 0).all()):
        raise SdeflowValueError(f"{name} must be strictly monotone (no repeated or out-of-order times)")
    return g


def unpack(grid, t_max: float | None = None, t_min: float | None = None, rho: float | None = None):
    """``(grid, t_max, t_min, options)`` from a sampler's ``grid=`` (a name, a :class:`Grid` or explicit times),
    ``t_max=``/``t_min=`` and the flat ``rho=`` (the Karras grid's option, an alias of ``Karras(rho=...)``): a
    Grid becomes its name, its ends (each given once, here or there) and the keyword options of
    :func:`make_grid`; names and explicit times pass through."""
    if isinstance(grid, Grid):
        if rho is not None:
            raise SdeflowTypeError(f"rho= is the Karras grid's option; with grid={grid!r} give it there "
                                   f"(grids.Karras(rho=...)), not beside it")
        ends = []
        for name, flat, own in (("t_max", t_max, grid.t_max), ("t_min", t_min, grid.t_min)):
            if flat is not None and own is not None and check_number(name, flat) != own:
                raise SdeflowValueError(f"{name}={flat} disagrees with grid={grid!r}; give {name} once")
            ends.append(own if own is not None else flat)
        return grid.name, ends[0], ends[1], grid.options()
    if rho is not None:
        if grid != "karras":
            raise SdeflowValueError(f"rho is the exponent of the Karras grid (grid=grids.Karras(rho=...) or "
                                    f"grid='karras'); with grid={grid!r} it does nothing: drop rho")
        return grid, t_max, t_min, Karras(rho).options()
    return grid, t_max, t_min, {}
