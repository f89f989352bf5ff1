"""The classical fourth-order Runge-Kutta method (Kutta 1901)."""

from .explicit_rk import ExplicitRK
from .tableau import RK4

__all__ = ["RK4"]


class RK4(ExplicitRK):
    """The classical fourth-order Runge-Kutta method (Kutta 1901)."""

    name = "rk4"
    tableau = RK4
    order = 4
    evals_per_step = RK4.stages
