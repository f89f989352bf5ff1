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
    "SingularityError",
    "UnstableError",
    "InputMutationError",
    "BudgetError",
    "GradientError",
    "check_float_tensor",
    "check_device",
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


class SingularityError(SdeflowValueError):
    r"""Refused before the first step: a coefficient the sampler needs is infinite, undefined, or loses all
    its digits at a planned time (e.g. a noise prediction converted where :math:`\alpha = 0`, the reverse
    SDE's :math:`g^2 = \infty` where :math:`\alpha = 0`, a data prediction where :math:`\sigma = 0`).

    Attributes ``t`` (the time, in the field's path) and ``kind`` (what the field predicts)."""

    def __init__(self, message: str, *, t: float | None = None, kind: str | None = None):
        super().__init__(message)
        self.t = t
        self.kind = kind


class UnstableError(SdeflowValueError):
    """Refused before the first step: the solver cannot integrate this window on this grid (its result on an
    exact Gaussian problem with the same path, field kind, grid and noise level is wrong by more than the
    answer itself: an unstable or far too coarse step). Attributes ``step`` and ``t`` locate it."""

    def __init__(self, message: str, *, step: int | None = None, t: float | None = None):
        super().__init__(message)
        self.step = step
        self.t = t


class InputMutationError(SdeflowValueError):
    """The network modified its input tensor in place (e.g. ``x.mul_(0.5)``); the solver's state would be
    corrupted, so the solve stops at that evaluation."""


class BudgetError(SdeflowValueError):
    """A solve would exceed a bound it was given or that the machine has: evaluations (``nfe``), steps
    (``max_steps``), a step size that no longer moves time, or memory (estimated before allocating)."""


class GradientError(SdeflowValueError):
    """A gradient through a solve was asked for in a way the sampler cannot honour (an unknown ``grad`` mode,
    checkpointing an adaptive solver, inference mode), or would be dropped silently (``x_init`` requires grad
    but ``grad`` was not given); the message names the mode to pass instead."""


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


def check_int(name: str, v, *, minimum: int = 1, what: str | None = None, hint: str = "",
              error: type | None = None) -> int:
    """``v`` must be an integer (not a bool) ``>= minimum``; return it as ``int``.

    The message reads ``"{name} must be {what}, got {v}"`` plus ``hint`` (what the argument is, or the fix);
    ``what`` defaults to ``"an integer >= {minimum}"``. A non-integer raises ``error`` (default
    :class:`SdeflowTypeError`; some arguments have always raised :class:`SdeflowValueError` for any bad value)."""
    import numbers

    what = f"an integer >= {minimum}" if what is None else what
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise (error or SdeflowTypeError)(f"{name} must be {what}, got {v!r} ({type(v).__name__}){hint}")
    if v < minimum:
        raise SdeflowValueError(f"{name} must be {what}, got {v}{hint}")
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


def check_generator(generator, name: str = "generator"):
    """``generator`` is None or a ``torch.Generator`` (a numpy Generator or a seed gets an error with the fix)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise SdeflowTypeError(f"{name} must be a torch.Generator (e.g. torch.Generator().manual_seed(0)) or None, "
                               f"got {type(generator).__name__}")
    return generator


def check_device(device, name: str = "device") -> torch.device:
    """A ``torch.device`` this machine has: names torch does not know, and CUDA/MPS devices on a machine
    without them, raise an error saying so (instead of failing later inside a generator or an allocation)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise SdeflowValueError(f"{name}={device!r} is not a device torch knows; use 'cpu', 'cuda', 'cuda:0', "
                                f"'mps', ... or a torch.device") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SdeflowValueError(f"{name}={device!r} but CUDA is not available on this machine "
                                    f"(torch.cuda.is_available() is False: no GPU, or a CPU-only torch build); "
                                    f"use device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SdeflowValueError(f"{name}={device!r} but this machine has {torch.cuda.device_count()} CUDA "
                                    f"device(s)")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise SdeflowValueError(f"{name}={device!r} but MPS is not available on this machine; use device='cpu'")
    elif dev.type == "meta":
        raise SdeflowValueError(f"{name}={device!r}: the meta device holds shapes, not values, and a solve computes "
                                f"values; use 'cpu' or an accelerator")
    return dev


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are one: the same type, and the same index where both name one (``"cpu"`` is
    ``"cpu:0"``; ``"cuda"`` is the current CUDA device)."""
    if a.type != b.type:
        return False
    if a.type == "cpu" or a.index is None or b.index is None:
        return True
    return a.index == b.index


def total_memory(device: torch.device) -> int | None:
    """Bytes of memory of ``device`` (physical RAM for the CPU), or None when unknown."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        if device.type == "cpu":
            import os

            return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError, RuntimeError):
        return None
    return None


def check_memory(nbytes: float, what: str, device: torch.device, fix: str) -> None:
    """Refuse before allocating when ``nbytes`` exceeds the device's memory (:class:`BudgetError`)."""
    total = total_memory(device)
    if total is not None and nbytes > total:
        raise BudgetError(f"{what} needs about {nbytes / 2 ** 30:.3g} GiB, more than the "
                          f"{total / 2 ** 30:.3g} GiB of {device} (estimated before allocating); {fix}")
