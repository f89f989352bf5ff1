"""The classical fourth-order Runge-Kutta method (Kutta 1901).

k1 = f(x, t), k2 = f(x + h/2 k1, t + h/2), k3 = f(x + h/2 k2, t + h/2), k4 = f(x + h k3, t + h);
x' = x + h/6 (k1 + 2 k2 + 2 k3 + k4) (order 4; Hairer, Norsett & Wanner 1993, Sec. II.1).
"""

from .explicit_rk import ExplicitRK
from .tableau import RK4_TABLEAU

__all__ = ["RK4"]


class RK4(ExplicitRK):
    """The classical fourth-order Runge-Kutta method (Kutta 1901)."""

    name = "rk4"
    tableau = RK4_TABLEAU
