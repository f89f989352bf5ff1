"""Butcher tableaus of the explicit Runge-Kutta methods, shared by the fixed-step and adaptive solvers.

A tableau declares what its solvers declare: the method's ``order`` and, through :attr:`ButcherTableau.stages`
and ``fsal``, its evaluations per step (:attr:`ButcherTableau.evals_per_step`).
:class:`~sdeflow.solvers.explicit_rk.ExplicitRK` subclasses take both from their ``tableau``.

Coefficients from Hairer, Norsett & Wanner, *Solving Ordinary Differential Equations I* (1993), and
Dormand & Prince (1980) for Dopri5. A method's own module may hold its tableau (``ssprk3.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ButcherTableau", "EULER", "HEUN", "MIDPOINT", "RK4_TABLEAU", "DOPRI5"]


@dataclass(frozen=True)
class ButcherTableau:
    """``c`` nodes, ``a`` strictly lower-triangular rows, ``b`` weights, ``order`` the method's order
    (``b_err``: embedded error weights, ``b - b_hat``; ``fsal``: the last stage is evaluated at the update,
    ``a[-1] = b`` and ``c[-1] = 1``, so an accepted step's last evaluation is the next step's first)."""

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
        if len(self.a) != len(self.c) or len(self.b) != len(self.c) or any(
                len(r) != i for i, r in enumerate(self.a)):
            raise ValueError("a Butcher tableau needs len(c) == len(b) stages and row i of a with i entries")
        if self.fsal and (tuple(self.a[-1]) + (0.0,) != tuple(self.b) or self.c[-1] != 1.0):
            raise ValueError("fsal=True needs the last row of a equal to b (and c[-1] = 1)")
        rows = tuple(tuple((j, float(v)) for j, v in enumerate(r) if v != 0) for r in self.a)
        object.__setattr__(self, "_rows", rows)
        object.__setattr__(self, "_brow", tuple((j, float(v)) for j, v in enumerate(self.b) if v != 0))

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def evals_per_step(self) -> int:
        """Field evaluations per accepted step: ``stages``, one fewer with ``fsal``."""
        return self.stages - 1 if self.fsal else self.stages


EULER = ButcherTableau(c=(0.0,), a=((),), b=(1.0,), order=1)
HEUN = ButcherTableau(c=(0.0, 1.0), a=((), (1.0,)), b=(0.5, 0.5), order=2)
MIDPOINT = ButcherTableau(c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0), order=2)
#: the classical fourth-order method (Kutta 1901); the solver class is :class:`~sdeflow.solvers.rk4.RK4`
RK4_TABLEAU = ButcherTableau(c=(0.0, 0.5, 0.5, 1.0), a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
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


def __getattr__(name: str):
    if name == "RK4":  # the tableau's name before the solver class rk4.RK4 took it (kept working)
        return RK4_TABLEAU
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
