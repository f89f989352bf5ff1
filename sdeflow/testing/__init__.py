"""Tools to test solvers and fields against exact answers (sdeflow's own tests use them too).

* :func:`fit_order` / :class:`OrderFit` — convergence-order fits over halving steps;
* :mod:`~sdeflow.testing.checks` — order checkers that return errors per level and the fitted slope, and
  their ``assert_*`` forms: pathwise ODE order, strong and weak SDE order, Langevin stationary bias;
* :mod:`~sdeflow.testing.properties` — properties every solver must have (time reversal, batch
  independence, rotation equivariance, dtype/device, determinism, NFE accounting), runnable on yours;
* :class:`CountingField`, :class:`PerturbedField`, :func:`affine_output_moments`;
* :mod:`~sdeflow.testing.strategies` — hypothesis strategies (imported on use; hypothesis is a test
  dependency, not a dependency of ``import sdeflow``).

See ``docs/testing.md``.
"""

from . import checks, properties
from .checks import (LangevinCheck, OrderCheck, assert_langevin_bias, assert_ode_order, assert_order,
                     assert_strong_order, assert_weak_order, langevin_bias, ode_order, strong_order, weak_order)
from .convergence import OrderFit, fit_order
from .counting import CountingField
from .fields import PerturbedField
from .moments import affine_output_moments
from .properties import check_solver

__all__ = ["OrderFit", "fit_order", "affine_output_moments", "CountingField", "PerturbedField",
           "OrderCheck", "LangevinCheck", "ode_order", "strong_order", "weak_order", "langevin_bias",
           "assert_order", "assert_ode_order", "assert_strong_order", "assert_weak_order", "assert_langevin_bias",
           "check_solver", "checks", "properties"]
