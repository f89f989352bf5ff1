r"""SSPRK3: the three-stage, third-order strong-stability-preserving Runge-Kutta method (Shu & Osher 1988).

.. math::
   k_1 = f(x, t),\quad k_2 = f(x + h k_1,\ t + h),\quad k_3 = f(x + \tfrac h4(k_1 + k_2),\ t + \tfrac h2),\qquad
   x' = x + \tfrac h6(k_1 + k_2 + 4k_3).

Butcher tableau: :math:`c = (0, 1, \tfrac12)`, :math:`a_{21} = 1`, :math:`a_{31} = a_{32} = \tfrac14`,
:math:`b = (\tfrac16, \tfrac16, \tfrac23)`. Order 3 (three evaluations per step); a convex combination of
forward Euler steps, so it keeps any norm or total-variation bound that Euler keeps with a step of at most
:math:`h` (CFL coefficient 1). References: C.-W. Shu & S. Osher, J. Comput. Phys. 77 (1988);
S. Gottlieb & C.-W. Shu, Math. Comp. 67 (1998) (as "TVD Runge-Kutta of order 3").

This module is the worked example of adding a Runge-Kutta method (CONTRIBUTING.md, "Writing a solver"):
the tableau, and a class naming it; the order and evaluations per step are the tableau's, the step program
is :func:`~sdeflow.solvers.explicit_rk.rk_program`'s, and the registry finds the class by its ``name``.
"""

from .explicit_rk import ExplicitRK
from .tableau import ButcherTableau

__all__ = ["SSPRK3", "SSPRK3_TABLEAU"]

SSPRK3_TABLEAU = ButcherTableau(c=(0.0, 1.0, 0.5), a=((), (1.0,), (0.25, 0.25)), b=(1 / 6, 1 / 6, 2 / 3), order=3)


class SSPRK3(ExplicitRK):
    __doc__ = __doc__
    name = "ssprk3"
    tableau = SSPRK3_TABLEAU
