"""Exceptions raised by sdeflow, and the small checks that build their messages.

Every message names the argument at fault and says how to fix it. The exception types are ordinary
Python ones (``ValueError``, ``TypeError``), so ``except ValueError`` keeps working; the subclasses let a
caller tell sdeflow's validation apart from errors raised inside a user's network.
"""

from __future__ import annotations

import difflib
from typing import Iterable

import torch

__all__ = [
    "SdeflowValueError",
    "SdeflowTypeError",
    "NonFiniteError",
    "check_float_tensor",
    "check_int",
    "check_number",
    "unknown_name",
]


class SdeflowValueError(ValueError):
    """An argument has a wrong value, shape or range."""


class SdeflowTypeError(TypeError):
    """An argument has a wrong type or dtype."""


class NonFiniteError(FloatingPointError):
    """A field returned NaN/Inf, or an update produced it.

    Attributes ``step`` (0-based solver step), ``t`` (time of the evaluation) and ``kind`` (what the field
    predicts) locate the failure.
    """

    def __init__(self, message: str, *, step: int | None = None, t: float | None = None,
                 kind: str | None = None):
        super().__init__(message)
        self.step = step
        self.t = t
        self.kind = kind


def check_float_tensor(name: str, x, *, allow_half: bool = True) -> torch.Tensor:
    """``x`` must be a floating-point tensor; return it."""
    if not isinstance(x, torch.Tensor):
        raise SdeflowTypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}; "
                               f"wrap it with torch.as_tensor(...)")
    if not x.is_floating_point():
        raise SdeflowTypeError(f"{name} must have a floating dtype, got {x.dtype}; "
                               f"convert it with {name}.float() or {name}.double()")
    if not allow_half and x.dtype in (torch.float16, torch.bfloat16):
        raise SdeflowTypeError(f"{name} has dtype {x.dtype}, too coarse for solver state; "
                               f"integrate in float32 or float64 (networks may still run in half precision)")
    return x


def check_int(name: str, v, *, minimum: int = 1) -> int:
    """``v`` must be an integer (not a bool) ``>= minimum``; return it as ``int``."""
    import numbers

    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise SdeflowTypeError(f"{name} must be an integer >= {minimum}, got {v!r} ({type(v).__name__})")
    if v < minimum:
        raise SdeflowValueError(f"{name} must be an integer >= {minimum}, got {v}")
    return int(v)


def check_number(name: str, v, *, gt: float | None = None, ge: float | None = None,
                 lt: float | None = None, le: float | None = None, hint: str = "") -> float:
    """``v`` must be a finite real number within the given bounds; return it as ``float``."""
    import math
    import numbers

    if isinstance(v, torch.Tensor) and v.numel() == 1 and v.is_floating_point():
        v = float(v)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise SdeflowTypeError(f"{name} must be a real number, got {v!r} ({type(v).__name__})")
    f = float(v)
    bounds = [(gt, lambda a, b: a > b, ">"), (ge, lambda a, b: a >= b, ">="),
              (lt, lambda a, b: a < b, "<"), (le, lambda a, b: a <= b, "<=")]
    ok = math.isfinite(f) and all(b is None or op(f, b) for b, op, _ in bounds)
    if not ok:
        need = " and ".join(f"{sym} {b:g}" for b, _, sym in bounds if b is not None)
        need = f"finite and {need}" if need else "finite"
        raise SdeflowValueError(f"{name} must be {need}, got {v!r}" + (f"; {hint}" if hint else ""))
    return f


def unknown_name(what: str, name: str, known: Iterable[str]) -> SdeflowValueError:
    """An error for an unknown registry name, with the closest known names."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return SdeflowValueError(f"unknown {what} {name!r}.{hint} Known: {', '.join(known)}.")
