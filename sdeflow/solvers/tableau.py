"""Butcher tableaus of the explicit Runge-Kutta methods, shared by the fixed-step and adaptive solvers.

Coefficients from Hairer, Norsett & Wanner, *Solving Ordinary Differential Equations I* (1993), and
Dormand & Prince (1980) for Dopri5.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ButcherTableau", "EULER", "HEUN", "MIDPOINT", "RK4"]


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
