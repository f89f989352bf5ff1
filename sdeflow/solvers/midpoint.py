"""Explicit midpoint, x' = x + h f(x + h/2 f(x, t), t + h/2) (order 2; Runge 1895, see Hairer, Norsett & Wanner 1993, Sec. II.1)."""

from .explicit_rk import ExplicitRK
from .tableau import MIDPOINT

__all__ = ["Midpoint"]


class Midpoint(ExplicitRK):
    """Explicit midpoint, x' = x + h f(x + h/2 f(x, t), t + h/2) (order 2)."""

    name = "midpoint"
    tableau = MIDPOINT
