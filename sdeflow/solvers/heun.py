"""Heun's method (explicit trapezoid), x' = x + h/2 [f(x, t) + f(x + h f(x, t), t + h)] (order 2; Karras et al. 2022, Alg. 1 without churn)."""

from .explicit_rk import ExplicitRK
from .tableau import HEUN

__all__ = ["Heun"]


class Heun(ExplicitRK):
    """Heun's method (explicit trapezoid), x' = x + h/2 [f(x, t) + f(x + h f(x, t), t + h)] (order 2; Karras et al. 2022, Alg. 1 without churn)."""

    name = "heun"
    tableau = HEUN
