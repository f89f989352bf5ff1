r"""Multistep consistency sampling (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models", Algorithm 1)
on any Gaussian path.

The field is a *consistency function* :math:`f(x, t)` (:class:`~sdeflow.fields.ConsistencyField`, or
:meth:`sdeflow.Gaussian.consistency_field` for the exact one of a Gaussian target): it maps a state at
:math:`t` to the end of its probability-flow trajectory at the window's end :math:`t_N` (the last grid time,
where :math:`f(x, t_N) = x`). On a grid :math:`t_0 > t_1 > \dots > t_N`, step :math:`k` evaluates the
function once and re-noises its output to the next grid time with the path's own transition from
:math:`t_N` to :math:`t_{k+1}`:

.. math::
   \hat x = f(x_k, t_k),\qquad
   x_{k+1} = r_k\,\hat x + \sqrt{\sigma_{k+1}^2 - r_k^2\sigma_N^2}\; z,\qquad
   r_k = \alpha_{k+1}/\alpha_N,\quad z \sim \mathcal N(0, I),

so :math:`x_{k+1}` has the marginal at :math:`t_{k+1}` whenever :math:`\hat x` has the marginal at
:math:`t_N`. The last step (:math:`t_{k+1} = t_N`: :math:`r = 1`, no noise) returns :math:`\hat x` and draws
nothing; one evaluation per step, so ``steps`` = number of evaluated grid points = NFE (``steps=1`` is
one-step generation :math:`f(x_T, T)`). Where the window ends at :math:`\sigma_N = 0` (e.g. :math:`t_N = 0` on
VP paths) the update is :math:`x_{k+1} = \alpha_{k+1}\hat x + \sigma_{k+1} z`. On VE/EDM
(:math:`\alpha = 1`) with the window ending at the consistency model's :math:`\epsilon = \sigma_{min}` (EDM's
default ``t_min = 0.002 / sigma_max``) it is the paper's
:math:`x_{\tau_n} = \hat x + \sqrt{\tau_n^2 - \epsilon^2}\,z`, as diffusers' ``CMStochasticIterativeScheduler``
steps (``tests/tools/test_integrations.py`` reproduces its loop).

Declarations: a prediction solver (``sample`` only) that draws noise (``stochastic``); it requires a field
that declares itself a consistency function (``requires_consistency``: ``sample`` refuses any other field
with :class:`~sdeflow.errors.SdeflowTypeError` before evaluating it, since a denoiser's
:math:`E[x_0|x_t]` used as :math:`f` does not sample the target at any step count). With the exact
consistency function every grid gives exactly the target's marginal at :math:`t_N` (no discretisation
error: ``order = inf``; ``tests/solvers/test_consistency.py`` checks it on every path); with a trained one
the error is the network's. It re-noises in the training path's coordinates (no ``integration_path``).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import SdeflowValueError
from .prediction import PredictionSolver, path_tables
from .program import Program

__all__ = ["Consistency", "consistency_program"]


def consistency_program(term, tab: dict) -> Program:
    """The steps as one :class:`~sdeflow.solvers.program.Program`: ``x' = r (P x + Q n) + sd z`` with
    ``(P, Q)`` the term's data-prediction conversion (identity for a consistency field) and ``r``, ``sd`` the
    transition from the window's end to each step's end (module docstring); no draw where ``sd = 0``."""
    S = len(tab["alpha"]) - 1
    Pd, Qd = (v[:S] for v in term.coeff_arrays("data"))
    a, s = np.asarray(tab["alpha"], dtype=np.float64), np.asarray(tab["sigma"], dtype=np.float64)
    r = a[1:] / a[-1]
    var = s[1:] ** 2 - (r * s[-1]) ** 2
    var[-1] = 0.0  # the window's end: the consistency function's output itself
    sd = np.sqrt(np.maximum(var, 0.0))
    prog = Program(S).net("n", "x", 1, 0)
    if np.any(sd > 0.0):
        prog.draw("z", mask=sd > 0.0)
    return prog.comb("x", r * Pd, [(r * Qd, "n"), (sd, "z")]).done()


class Consistency(PredictionSolver):
    __doc__ = __doc__
    name = "consistency"
    order = math.inf  # exact at every grid with the exact consistency function (no discretisation error)
    evals_per_step = 1
    stochastic = True
    targets = ("data",)
    requires_consistency = True

    def init_state(self, term, x, grid):
        if term.ipath is not term.path:
            raise SdeflowValueError("the consistency sampler re-noises the consistency function's output (a state "
                                    "of the training path at the window's end) in that path's coordinates; drop "
                                    "integration_path")
        # the path's tables are read once per term and grid, inside the cached build (a compiled solve traces none)
        return {"program": self.cached_program(term, grid, lambda: consistency_program(term, path_tables(term, grid)))}

    def step(self, term, k, x, t0, t1, noise, tab):
        return tab["program"].step(term, k, x, t0, t1, noise, tab)
