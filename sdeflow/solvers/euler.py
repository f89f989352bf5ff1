"""Euler's method, x' = x + h f(x, t) (order 1; Euler 1768, see Hairer, Norsett & Wanner 1993, Sec. II.1)."""

from .explicit_rk import ExplicitRK
from .tableau import EULER

__all__ = ["Euler"]


class Euler(ExplicitRK):
    """Euler's method, x' = x + h f(x, t) (order 1)."""

    name = "euler"
    tableau = EULER
