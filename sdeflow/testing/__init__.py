"""Tools to test solvers and fields against exact answers (used by sdeflow's own tests)."""

from .convergence import OrderFit, fit_order
from .counting import CountingField
from .moments import affine_output_moments

__all__ = ["OrderFit", "fit_order", "affine_output_moments", "CountingField"]
