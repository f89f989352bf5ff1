"""Step-size control shared by the adaptive solvers: error norms, the controller and the budget check."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import BudgetError, NonFiniteError, SdeflowValueError, check_int, check_number

__all__ = ["error_ratio", "row_errors", "Controller", "check_budget", "check_budget_rows", "check_options",
           "check_step_option", "check_progress", "check_progress_rows", "sample_stats"]


def _scaled_squares(err, x0, x1, rtol: float, atol: float):
    """``(err / (atol + rtol max(|x0|, |x1|)))^2`` per row, shape ``(batch, -1)``: of detached tensors (the norm only
    reads values: no autograd graph, no requires_grad-to-scalar warning) or of numpy arrays, the same formula."""
    xp = np if isinstance(err, np.ndarray) else torch
    sc = atol + rtol * xp.maximum(abs(x0), abs(x1))
    r = (err / sc).reshape(err.shape[0], -1)
    return r * r


def error_ratio(err: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor, rtol: float, atol: float,
                norm: str) -> float:
    """Scaled RMS error ``|err / (atol + rtol max(|x0|, |x1|))|``: per sample then the worst sample
    (``norm="sample"``: every sample meets the tolerance) or over the whole batch (``"batch"``).

    One host synchronisation per step: adaptive stepping decides on the host."""
    r = _scaled_squares(err.detach(), x0.detach(), x1.detach(), rtol, atol)
    if norm == "sample":
        return float(r.mean(1).max().sqrt())
    return float(r.mean().sqrt())


def row_errors(err: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor, rtol: float, atol: float) -> np.ndarray:
    """The scaled RMS error of :func:`error_ratio` for each row on its own: a float64 array ``(batch,)`` on the
    host (one synchronisation).

    Each row's mean is reduced over that row only. On the CPU the norm is taken in numpy on the tensors' memory
    (no copy; a row's reduction runs over its own entries whatever the batch, and a handful of numpy operations
    on small arrays cost a fraction of torch's per-operation dispatch). On an accelerator it is taken by torch
    and a single row is reduced as two identical rows, so that torch never splits one row's reduction across
    threads (its two-pass reduction of a single output), which would sum in another order than the same row
    inside a larger batch."""
    err, x0, x1 = err.detach(), x0.detach(), x1.detach()
    if err.device.type == "cpu" and x0.device.type == "cpu" and x1.device.type == "cpu":
        r = _scaled_squares(err.numpy(), x0.numpy(), x1.numpy(), rtol, atol)
        return np.sqrt(np.add.reduce(r, axis=1) / r.shape[1]).astype(np.float64)  # r.mean(1), without its wrapper
    r = _scaled_squares(err, x0, x1, rtol, atol)
    m = r.shape[0]
    if m == 1:
        r = torch.cat([r, r])
    return r.mean(1).sqrt()[:m].to(device="cpu", dtype=torch.float64).numpy()


class Controller:
    """Integral controller ``h <- h * clip(safety * err^(-1/(q + 1)), fac_min, fac_max)`` (Hairer,
    Norsett & Wanner 1993, II.4), ``q`` the lower order of the embedded pair."""

    def __init__(self, q: float, safety: float = 0.9, fac_min: float = 0.2, fac_max: float = 5.0,
                 exponent: float | None = None):
        self.k = exponent if exponent is not None else 1.0 / (q + 1.0)
        self.safety, self.fac_min, self.fac_max = safety, fac_min, fac_max

    def factor(self, err: float) -> float:
        return float(self.factors(np.array([err], dtype=np.float64))[0])

    def factors(self, err: np.ndarray) -> np.ndarray:
        """The step-size factor for each entry of a float64 array of error ratios (one controller per sample;
        elementwise, so an entry's factor does not depend on the others): ``fac_max`` for a zero error,
        ``fac_min`` for a non-finite one."""
        err = np.asarray(err, dtype=np.float64)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            f = np.clip(self.safety * np.power(err, -self.k), self.fac_min, self.fac_max)
        f = np.where(err == 0.0, self.fac_max, f)
        return np.where(np.isfinite(err), f, self.fac_min)


def check_options(rtol: float, atol: float, norm: str, max_steps: int) -> None:
    rtol = check_number("rtol", rtol, ge=0.0)
    atol = check_number("atol", atol, ge=0.0)
    if not rtol + atol > 0:
        raise SdeflowValueError(f"rtol and atol must be >= 0 and not both 0, got rtol={rtol}, atol={atol}")
    if rtol + atol < 1e-14:  # below float64's resolution of the state: no step size meets it
        raise SdeflowValueError(f"rtol={rtol:g} and atol={atol:g} are below float64's resolution (rtol + atol must be "
                                f">= 1e-14): no step can meet them; use rtol=1e-12 or looser")
    if norm not in ("sample", "batch"):
        raise SdeflowValueError(f"error_norm must be 'sample' or 'batch', got {norm!r}")
    check_int("max_steps", max_steps)


def check_step_option(name: str, value, *, optional: bool = True) -> float | None:
    """A step-size option (``first_step``, ``h_init``, ``h_max``): None (when ``optional``) or a finite number
    ``> 0``, in units of the solve's time; a zero or negative step would never move time."""
    if value is None and optional:
        return None
    return check_number(name, value, gt=0.0, hint="a step size in units of time (t runs over [0, 1])")


def check_progress(what: str, t: float, h: float, span: float, ratio: float | None = None) -> None:
    """Every adaptive loop calls this before an attempted step: the step size must be finite, non-zero and move
    time (``t + h != t``); an error ratio that is NaN means the drift or the state is not finite. Raises a named
    error instead of looping for ever or stepping to ``t = nan``."""
    if ratio is not None and not math.isfinite(ratio):
        raise NonFiniteError(f"{what}: the error estimate at t={t:.6g} is NaN or Inf: the drift returned NaN/Inf "
                             f"there or the state overflowed (step {h:.3g})", t=t)
    if not (math.isfinite(h) and h != 0.0):
        raise BudgetError(f"{what}: the step size became {h!r} at t={t:.6g}; the error control cannot continue "
                          f"(a singular or discontinuous drift there?)")
    if t + h == t or abs(h) < 1e-14 * max(span, 1e-300):
        raise BudgetError(f"{what}: the step size {abs(h):.3g} at t={t:.6g} no longer moves time ({abs(h) / span:.3g} "
                          f"of the span): the error control cannot meet rtol/atol there (a singular or very stiff "
                          f"drift: check the window's ends, or loosen rtol/atol)")


def sample_stats(accepted, rejected, evaluations, **extra) -> dict:
    """An adaptive solver's statistics: per sample (``(batch,)`` int64 tensors; a shared-step solver gives every
    sample the batch's figures) ``accepted``, ``rejected`` steps and field ``evaluations`` (made by the solver on
    that sample's state, the final denoising step not included), and their batch sums ``accepted_total``,
    ``rejected_total``, ``evaluations_total``."""
    out = {}
    for k, v in (("accepted", accepted), ("rejected", rejected), ("evaluations", evaluations)):
        v = torch.as_tensor(np.asarray(v), dtype=torch.int64)
        out[k], out[k + "_total"] = v, int(v.sum())
    out.update(extra)
    return out


def check_progress_rows(what: str, t: np.ndarray, h: np.ndarray, span: float, ratio: np.ndarray | None = None,
                        rows: np.ndarray | None = None) -> None:
    """:func:`check_progress` for per-sample step control (``t``, ``h``, ``ratio``: float64 arrays, one entry per
    running row; ``rows``: their indices in the batch): the first row at fault raises :func:`check_progress`'s
    error, naming the sample."""
    with np.errstate(invalid="ignore", over="ignore"):
        bad = ~np.isfinite(h) | (h == 0.0) | (t + h == t) | (np.abs(h) < 1e-14 * max(span, 1e-300))
        if ratio is not None:
            bad |= ~np.isfinite(ratio)
    if not bad.any():
        return
    i = int(np.flatnonzero(bad)[0])
    row = i if rows is None else int(rows[i])
    check_progress(f"{what} (sample {row})", float(t[i]), float(h[i]), span,
                   None if ratio is None else float(ratio[i]))


def check_budget_rows(term, what: str, evals: np.ndarray, upcoming: int = 1) -> None:
    """:func:`check_budget` for per-sample step control: ``evals`` holds each running sample's own evaluations;
    raise before any sample would exceed the budget ``term.max_nfe``."""
    cap = term.max_nfe
    if cap is not None and evals.size and int(evals.max()) + upcoming > cap:
        raise BudgetError(f"{what} needs more than nfe={cap} evaluations for some sample at this tolerance; loosen "
                          f"rtol/atol, raise nfe, or use a fixed-step solver with steps=")


def check_budget(term, what: str, upcoming: int = 1) -> None:
    """Raise *before* ``upcoming`` more evaluations would exceed the sampler's ``nfe`` budget
    (``term.max_nfe``): an adaptive solve never spends more than its budget."""
    cap = term.max_nfe
    if cap is not None and term.nfe + upcoming > cap:
        raise BudgetError(f"{what} needs more than nfe={cap} evaluations at this tolerance; loosen "
                                f"rtol/atol, raise nfe, or use a fixed-step solver with steps=")
