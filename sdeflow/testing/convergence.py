"""Convergence-order estimation: the slope of log(error) against log(step size), by least squares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["OrderFit", "fit_order"]


@dataclass
class OrderFit:
    """A fitted convergence order: ``slope`` with its standard error, and the data it came from."""

    slope: float
    stderr: float
    intercept: float
    h: np.ndarray
    errors: np.ndarray

    def __str__(self):
        pairs = ", ".join(f"h={h:.3g}: {e:.3e}" for h, e in zip(self.h, self.errors))
        return f"order {self.slope:.3f} ± {self.stderr:.3f} ({pairs})"


def fit_order(h: Sequence[float], errors: Sequence[float]) -> OrderFit:
    """Least-squares fit of ``log(err) = p log(h) + c``; returns the order ``p`` and its standard error.

    Errors must be positive and finite (an exact zero means the method is exact on the problem: no
    order can be measured).
    """
    h = np.asarray(h, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    if h.shape != e.shape or h.size < 2:
        raise ValueError("need at least two (h, error) pairs of equal length")
    if not (np.all(np.isfinite(e)) and np.all(e > 0)):
        raise ValueError(f"errors must be finite and > 0 to fit an order, got {e}")
    X = np.log(h)
    Y = np.log(e)
    A = np.stack([X, np.ones_like(X)], 1)
    coef, res, *_ = np.linalg.lstsq(A, Y, rcond=None)
    n = h.size
    if n > 2:
        resid = Y - A @ coef
        s2 = float(resid @ resid) / (n - 2)
        cov = s2 * np.linalg.inv(A.T @ A)
        se = float(np.sqrt(cov[0, 0]))
    else:
        se = float("nan")
    return OrderFit(float(coef[0]), se, float(coef[1]), h, e)
