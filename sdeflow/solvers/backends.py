"""torchdiffeq and torchsde methods as sdeflow solvers: ``"torchdiffeq:<method>"``, ``"torchsde:<method>"``.

They integrate the same term as sdeflow's own solvers (``term.drift_at``), so every field kind, path,
path transfer and ``gamma`` works, and NFE is counted the same way (one per drift evaluation). torchdiffeq
fixed-grid methods step on the sampler's grid; adaptive ones take ``rtol``/``atol`` and stop at every grid
time. torchsde solves one sdeint per grid interval (``dt`` = the interval, or ``dt=`` for finer steps),
on a ``BrownianInterval`` seeded from the sampler's generator, in reversed time when the grid decreases.
"""

from __future__ import annotations

import math

import torch

from ..errors import BudgetError, SdeflowTypeError, SdeflowValueError, unknown_name
from .adaptive_sde import brownian_interval
from .base import ODESolver, SDESolver

__all__ = ["TorchdiffeqSolver", "TorchsdeSolver"]

_MAX_STEPS = 100000  # attempted steps of an adaptive torchdiffeq method before BudgetError (as sdeflow's dopri5)

# (order, evaluations per step) of torchdiffeq's fixed-grid methods; adaptive ones: (order, None)
_TORCHDIFFEQ = {"euler": (1, 1), "midpoint": (2, 2), "heun3": (3, 3), "rk4": (4, 4), "explicit_adams": (4, 1),
                "implicit_adams": (4, None), "fixed_adams": (4, 1), "dopri5": (5, None), "dopri8": (8, None),
                "bosh3": (3, None), "fehlberg2": (2, None), "adaptive_heun": (2, None), "heun2": (2, 2)}
# (strong order for additive noise, sde_type)
_TORCHSDE = {"euler": (1.0, "ito"), "milstein": (1.0, "ito"), "srk": (1.5, "ito"), "heun": (1.0, "stratonovich"),
             "midpoint": (1.0, "stratonovich"), "euler_heun": (1.0, "stratonovich"),
             "reversible_heun": (1.0, "stratonovich"), "log_ode": (1.0, "stratonovich")}


# the options torchdiffeq's solvers read (it warns about others and ignores them), and the range of the numbers
_ADAPTIVE_OPTIONS = {"min_step", "max_step", "first_step", "step_t", "jump_t", "safety", "ifactor", "dfactor",
                     "max_num_steps", "dtype", "norm"}
_FIXED_OPTIONS = {"step_size", "grid_constructor", "interp", "perturb"}
_ADAMS_OPTIONS = _FIXED_OPTIONS | {"max_iters", "max_order"}
_POSITIVE = {"first_step": "a step size", "step_size": "a step size", "max_step": "a step size",
             "ifactor": "the largest growth of a step", "max_num_steps": "a number of steps", "max_iters": "a count",
             "max_order": "an order"}
_OPEN_UNIT = {"safety": "the step-size safety factor", "dfactor": "the largest shrink of a step"}


def _check_torchdiffeq_options(method: str, options: dict) -> None:
    """Refuse an option ``method`` does not read, and numbers out of their range, by name (torchdiffeq would
    ignore the first with a warning, and fail on the second far from its cause: a zero ``first_step`` as an
    "underflow in dt", blamed on the drift)."""
    known = (_ADAMS_OPTIONS if method in ("implicit_adams", "fixed_adams")
             else _ADAPTIVE_OPTIONS if _TORCHDIFFEQ[method][1] is None else _FIXED_OPTIONS)
    unknown = sorted(set(options) - known)
    if unknown:
        raise SdeflowValueError(f"torchdiffeq:{method} has no option(s) {unknown} (torchdiffeq would ignore them); "
                                f"its options are {sorted(known)}")
    for key, value in options.items():
        if key in _POSITIVE or key in _OPEN_UNIT or key == "min_step":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if ok and key in _POSITIVE:
                ok = value > 0 and (key not in ("max_num_steps", "max_iters", "max_order") or float(value).is_integer())
                ok = ok and (key != "ifactor" or value > 1)
            elif ok and key in _OPEN_UNIT:
                ok = 0 < value < 1 or (key == "safety" and value == 1)
            elif ok:
                ok = value >= 0
            if not ok:
                what = _POSITIVE.get(key) or _OPEN_UNIT.get(key) or "the smallest step"
                need = ("an integer >= 1" if key in ("max_num_steps", "max_iters", "max_order")
                        else "a number > 1" if key == "ifactor" else "a number in (0, 1)" if key == "dfactor"
                        else "a number in (0, 1]" if key == "safety" else "a number >= 0" if key == "min_step"
                        else "a positive finite number")
                raise SdeflowValueError(f"torchdiffeq:{method} options: {key}={value!r} ({what}) must be {need}")


class TorchdiffeqSolver(ODESolver):
    """``torchdiffeq.odeint`` with ``method`` (any of torchdiffeq's methods)."""

    name = "torchdiffeq:"
    planned = False

    def __init__(self, method: str = "dopri5", rtol: float = 1e-7, atol: float = 1e-9, options: dict | None = None):
        import torchdiffeq  # noqa: F401  (a core dependency)

        if method not in _TORCHDIFFEQ:
            raise unknown_name("torchdiffeq method", method, _TORCHDIFFEQ)
        from .adaptive import check_options

        check_options(rtol, atol, "sample", 1)
        if options is not None and not isinstance(options, dict):
            raise SdeflowTypeError(f"options must be a dict of torchdiffeq options, got {type(options).__name__}")
        _check_torchdiffeq_options(method, options or {})
        self.method, self.rtol, self.atol, self.options = method, float(rtol), float(atol), options
        self.order, per = _TORCHDIFFEQ[method]
        self.adaptive = per is None
        self.evals_per_step = per if per is not None else 1
        self.name = f"torchdiffeq:{method}"

    @staticmethod
    def methods() -> list[str]:
        """torchdiffeq methods usable as ``"torchdiffeq:<method>"``."""
        return sorted(_TORCHDIFFEQ)

    def integrate(self, term, x, grid, noise=None, callback=None):
        from torchdiffeq import odeint

        from .adaptive import check_budget

        def func(t, y):
            check_budget(term, self.name)
            return term.drift_at(float(t), y)

        ts = torch.tensor(grid, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32,
                          device=x.device)
        if self.adaptive and term.piecewise:
            raise SdeflowValueError(f"{self.name}'s adaptive steps would cross the knots of this path, where the drift "
                                    f"jumps (it steps past the grid times and interpolates); use sdeflow's dopri5, "
                                    f"which stops at every knot, or a fixed-step method")
        # adaptive methods stop after max_num_steps (torchdiffeq's default is 2**31 - 1: unbounded in practice)
        kw = {"options": {"max_num_steps": _MAX_STEPS}} if self.adaptive else {"options": {"perturb": False}}
        if self.options:
            kw["options"] = dict(kw["options"], **self.options)
        try:
            ys = odeint(func, x, ts.to(x.dtype), method=self.method, rtol=self.rtol, atol=self.atol, **kw)
        except AssertionError as e:  # torchdiffeq's own guards: "max_num_steps exceeded", "underflow in dt"
            raise BudgetError(f"{self.name} stopped: {e} (a singular or very stiff drift, or a tolerance it cannot "
                              f"meet; loosen rtol/atol, or pass options={{'max_num_steps': ...}})") from None
        if callback is not None:
            for i in range(1, len(grid)):
                callback(i - 1, ys[i])
        return ys[-1], {}

    def __repr__(self):
        return f"TorchdiffeqSolver({self.method!r})"


class _TorchsdeSDE(torch.nn.Module):
    def __init__(self, term, shape, sign, noise_type, sde_type):
        super().__init__()
        self.term, self.shape, self.sign = term, shape, sign
        self.noise_type, self.sde_type = noise_type, sde_type

    def f(self, tau, y):
        from .adaptive import check_budget

        check_budget(self.term, "torchsde")
        return self.sign * self.term.drift_at(self.sign * float(tau), y.reshape(self.shape)).reshape(y.shape)

    def g(self, tau, y):
        g = self.term.diffusion_at(self.sign * float(tau), y.reshape(self.shape))
        if isinstance(g, float):
            return torch.full_like(y, g)
        return torch.broadcast_to(g, self.shape).reshape(y.shape)


class TorchsdeSolver(SDESolver):
    """``torchsde.sdeint`` with ``method`` (euler, milstein, srk, heun, midpoint, ...), diagonal noise."""

    name = "torchsde:"
    planned = False

    def __init__(self, method: str = "euler", dt: float | None = None):
        import torchsde  # noqa: F401  (a core dependency)

        if method not in _TORCHSDE:
            raise unknown_name("torchsde method", method, _TORCHSDE)
        from .adaptive import check_step_option

        self.method, self.dt = method, check_step_option("dt", dt)
        self.strong_order_additive, self.sde_type = _TORCHSDE[method]
        self.name = f"torchsde:{method}"

    @staticmethod
    def methods() -> list[str]:
        """torchsde methods usable as ``"torchsde:<method>"``."""
        return sorted(_TORCHSDE)

    def integrate(self, term, x, grid, noise=None, callback=None):
        import torchsde

        if not term.additive or term.noise_type == "scalar":
            if term.noise_type == "scalar":
                raise SdeflowValueError("the torchsde backend here supports diagonal or additive noise")
        shape = x.shape
        flat = x.reshape(shape[0], -1)
        sign = -1.0 if grid[-1] < grid[0] else 1.0
        sde = _TorchsdeSDE(term, shape, sign, "diagonal", self.sde_type)
        taus = [sign * t for t in grid]
        bm = brownian_interval(noise, taus, flat) if term.is_sde else None
        y = flat
        for i in range(len(grid) - 1):
            dt = abs(taus[i + 1] - taus[i]) if self.dt is None else float(self.dt)
            ts = torch.tensor([taus[i], taus[i + 1]], dtype=x.dtype, device=x.device)
            y = torchsde.sdeint(sde, y, ts, method=self.method, dt=dt, bm=bm)[-1]
            if callback is not None:
                callback(i, y.reshape(shape))
        return y.reshape(shape), {}

    def __repr__(self):
        return f"TorchsdeSolver({self.method!r})"
