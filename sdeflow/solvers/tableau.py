"""Butcher tableaus of the explicit Runge-Kutta methods, shared by the fixed-step and adaptive solvers.

Coefficients from Hairer, Norsett & Wanner, *Solving Ordinary Differential Equations I* (1993), and
Dormand & Prince (1980) for Dopri5.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ButcherTableau", "EULER", "HEUN", "MIDPOINT", "RK4", "DOPRI5"]


@dataclass(frozen=True)
class ButcherTableau:
    """``c`` nodes, ``a`` strictly lower-triangular rows, ``b`` weights (``b_err``: embedded weights)."""

    c: tuple
    a: tuple
    b: tuple
    order: int
    b_err: tuple | None = None
    fsal: bool = False
    # nonzero (index, coefficient) pairs per stage row and for b, computed once
    _rows: tuple = field(init=False, repr=False, compare=False)
    _brow: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        rows = tuple(tuple((j, float(v)) for j, v in enumerate(r) if v != 0) for r in self.a)
        object.__setattr__(self, "_rows", rows)
        object.__setattr__(self, "_brow", tuple((j, float(v)) for j, v in enumerate(self.b) if v != 0))

    @property
    def stages(self) -> int:
        return len(self.c)


EULER = ButcherTableau(c=(0.0,), a=((),), b=(1.0,), order=1)
HEUN = ButcherTableau(c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5), order=2)
MIDPOINT = ButcherTableau(c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0), order=2)
RK4 = ButcherTableau(c=(0.0, 0.5, 0.5, 1.0), a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
                     b=(1 / 6, 1 / 3, 1 / 3, 1 / 6), order=4)

# Dormand & Prince (1980): 5th-order solution, embedded 4th-order error estimate, first same as last.
DOPRI5 = ButcherTableau(
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=((),
       (1 / 5,),
       (3 / 40, 9 / 40),
       (44 / 45, -56 / 15, 32 / 9),
       (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
       (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
       (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)),
    b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0),
    b_err=(35 / 384 - 5179 / 57600, 0.0, 500 / 1113 - 7571 / 16695, 125 / 192 - 393 / 640,
           -2187 / 6784 + 92097 / 339200, 11 / 84 - 187 / 2100, -1 / 40),
    order=5,
    fsal=True,
)
