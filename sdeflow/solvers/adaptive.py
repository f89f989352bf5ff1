"""Step-size control shared by the adaptive solvers: error norms, the controller and the budget check."""

from __future__ import annotations

import math

import torch

from ..errors import SdeflowValueError

__all__ = ["error_ratio", "Controller", "check_budget", "check_options"]


def error_ratio(err: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor, rtol: float, atol: float,
                norm: str) -> float:
    """Scaled RMS error ``|err / (atol + rtol max(|x0|, |x1|))|``: per sample then the worst sample
    (``norm="sample"``: every sample meets the tolerance) or over the whole batch (``"batch"``).

    One host synchronisation per step: adaptive stepping decides on the host. The norm only reads values:
    it is taken on detached tensors (no autograd graph, no requires_grad-to-scalar warning)."""
    err, x0, x1 = err.detach(), x0.detach(), x1.detach()
    sc = atol + rtol * torch.maximum(x0.abs(), x1.abs())
    r = (err / sc).reshape(err.shape[0], -1).pow(2)
    if norm == "sample":
        return float(r.mean(1).max().sqrt())
    return float(r.mean().sqrt())


class Controller:
    """Integral controller ``h <- h * clip(safety * err^(-1/(q + 1)), fac_min, fac_max)`` (Hairer,
    Norsett & Wanner 1993, II.4), ``q`` the lower order of the embedded pair."""

    def __init__(self, q: float, safety: float = 0.9, fac_min: float = 0.2, fac_max: float = 5.0,
                 exponent: float | None = None):
        self.k = exponent if exponent is not None else 1.0 / (q + 1.0)
        self.safety, self.fac_min, self.fac_max = safety, fac_min, fac_max

    def factor(self, err: float) -> float:
        if err == 0.0:
            return self.fac_max
        if not math.isfinite(err):
            return self.fac_min
        return min(self.fac_max, max(self.fac_min, self.safety * err ** (-self.k)))


def check_options(rtol: float, atol: float, norm: str, max_steps: int) -> None:
    if not (rtol >= 0 and atol >= 0 and rtol + atol > 0):
        raise SdeflowValueError(f"rtol and atol must be >= 0 and not both 0, got rtol={rtol}, atol={atol}")
    if norm not in ("sample", "batch"):
        raise SdeflowValueError(f"error_norm must be 'sample' or 'batch', got {norm!r}")
    if not (isinstance(max_steps, int) and max_steps > 0):
        raise SdeflowValueError(f"max_steps must be a positive integer, got {max_steps!r}")


def check_budget(term, what: str, upcoming: int = 1) -> None:
    """Raise *before* ``upcoming`` more evaluations would exceed the sampler's ``nfe`` budget
    (``term.max_nfe``): an adaptive solve never spends more than its budget."""
    cap = getattr(term, "max_nfe", None)
    if cap is not None and term.nfe + upcoming > cap:
        raise SdeflowValueError(f"{what} needs more than nfe={cap} evaluations at this tolerance; loosen "
                                f"rtol/atol, raise nfe, or use a fixed-step solver with steps=")
