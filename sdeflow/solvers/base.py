"""What every solver declares, and the fixed-step loop they share.

A solver is a small class with class-level declarations (as in diffrax):

* ``name`` — the registry name (``sdeflow.solvers.get(name)``);
* ``order`` — convergence order of the deterministic (ODE) error;
* ``strong_order`` / ``weak_order`` — for SDE solvers, for general noise, and ``strong_order_additive`` /
  ``weak_order_additive`` for additive noise (the reverse-time dynamics of a Gaussian path);
* ``evals_per_step`` — field evaluations per step (NFE = steps x evals_per_step, plus start-up costs a
  solver declares in :meth:`Solver.nfe_for_steps`);
* ``sde`` — whether it integrates noise; ``sde_type`` — ``"ito"``, ``"stratonovich"`` or
  ``"additive"`` (the two agree);
* ``needs`` — ``"drift"`` (any ``dx = f dt + g dW``), or ``"prediction"`` (data/noise predictions of a field
  on a Gaussian path: exponential integrators, DDPM; usable from :func:`sdeflow.sample` only);
* ``normals_per_step`` — standard normals an SDE step draws from its noise source (2 for SRA methods,
  which also need the time integral of the Brownian increment);
* ``adaptive`` — chooses its own steps; ``planned`` — evaluates only at times known before the solve (fixed
  steps: coefficient tables precomputed); unplanned solvers call ``term.drift_at(t, x)``;
* ``pre_asymptotic_factor`` — the order checks (``tests/solvers/test_ode_order.py``, ``test_exponential.py``, the
  trust matrix on every window) take this many times their usual steps: for a solver whose error terms of
  different orders cross late (``lms``: its start-up's order-2 term against the Adams-Bashforth steps';
  ``dpmpp_3m``: its halved third-order term against the rest) or that reaches its order late on a wide window
  (``deis_tab``: a polynomial in time over decades of t), measured and documented where it is declared.
* ``stochastic`` — draws noise of its own although it is not an SDE solver (``sde = False``): DDIM with
  ``eta > 0``, ancestral sampling, churn; such a solver needs a noise source, is tested in distribution and
  skips the deterministic checks (the preflight probe, time reversal);
* ``requires_additive`` — converges only for additive noise (SRA methods): :func:`sdeflow.solve` refuses
  multiplicative noise;
* ``requires_consistency`` — samples only with a field that is a consistency function (``consistency``:
  multistep consistency sampling): :func:`sdeflow.sample` refuses any other field (a field declares itself
  one with ``Field.consistency``, e.g. :class:`~sdeflow.fields.ConsistencyField`);
* ``batch_independent`` — each sample's result depends on its own inputs only (True unless the solver
  couples the samples of a batch on purpose, e.g. ``pc`` with batch-averaged SNR norms);
* ``carried`` — the keys of the state dict that a step reads from earlier steps or writes for later ones
  (a multistep method's history); with a step program's carried buffers, they are the inputs and outputs of
  each checkpointed step (``sample(..., grad="checkpoint")``, :mod:`sdeflow.gradients`).
"""

from __future__ import annotations

from typing import Callable, ClassVar

import numpy as np
import torch

Tensor = torch.Tensor

__all__ = ["Solver", "ODESolver", "SDESolver", "add_noise", "step_tables"]


class Solver:
    name: ClassVar[str] = ""
    order: ClassVar[float] = 1.0
    strong_order: ClassVar[float | None] = None
    weak_order: ClassVar[float | None] = None
    strong_order_additive: ClassVar[float | None] = None
    weak_order_additive: ClassVar[float | None] = None
    evals_per_step: ClassVar[int] = 1
    sde: ClassVar[bool] = False
    sde_type: ClassVar[str] = "ito"
    needs: ClassVar[str] = "drift"
    #: what the solver asks the term for (``term.drift`` / ``term.predict(kind)``): the conversions that must be
    #: regular in the sampling window (``sdeflow.window`` moves a default end off a singular one)
    targets: ClassVar[tuple] = ("drift",)
    normals_per_step: ClassVar[int] = 1  # standard normals drawn per step (NoiseSource.draw count)
    adaptive: ClassVar[bool] = False  # chooses its own steps
    planned: ClassVar[bool] = True  # evaluates at times known before the solve (term.drift(j, x))
    pre_asymptotic_factor: ClassVar[int] = 1  # order checks take this many times their usual steps
    carried: ClassVar[tuple] = ()  # state keys passed from step to step (checkpointing replays them)
    stochastic: bool = False  # draws noise although not an SDE solver (an instance may set it from its options)
    requires_additive: ClassVar[bool] = False  # converges for additive noise only (SRA methods)
    requires_consistency: ClassVar[bool] = False  # samples only with a consistency-function field
    batch_independent: bool = True  # a sample's result ignores the rest of its batch (instances may say False)

    # ---- budgets ------------------------------------------------------------------------------
    def nfe_for_steps(self, steps: int) -> int:
        """Field evaluations used by ``steps`` steps."""
        return steps * self.evals_per_step

    def max_steps(self, nfe: int) -> int:
        """The most steps whose cost fits in ``nfe`` evaluations (0 if none)."""
        steps = max(nfe // self.evals_per_step, 0)
        while steps > 0 and self.nfe_for_steps(steps) > nfe:
            steps -= 1
        return steps

    @property
    def min_nfe(self) -> int:
        return self.nfe_for_steps(1)

    def steps_per_sample(self, noise) -> bool:
        """True if this solve steps every sample on its own (its own times: no time shared by the batch, and
        the field evaluated on the rows still running) with this noise source; fixed-step solvers never do."""
        return False

    # ---- the plan -----------------------------------------------------------------------------
    def eval_times(self, grid: np.ndarray, path=None) -> tuple[np.ndarray, np.ndarray]:
        """Times of every field evaluation, in call order, and the step each belongs to (``path``: the
        integration path, for solvers whose nodes are placed in log-SNR)."""
        t0, h = grid[:-1], np.diff(grid)
        c = np.asarray(self.nodes(), dtype=np.float64)
        times = (t0[:, None] + h[:, None] * c[None, :]).reshape(-1)
        step_of = np.repeat(np.arange(len(h)), len(c))
        return times, step_of

    def nodes(self) -> list[float]:
        """Evaluation points of a step as fractions of it (Butcher ``c``)."""
        return [0.0]

    # ---- the loop -----------------------------------------------------------------------------
    def init_state(self, term, x: Tensor, grid: list[float]) -> dict:
        return {}

    def step(self, term, k: int, x: Tensor, t0: float, t1: float, noise, state: dict) -> Tensor:
        raise NotImplementedError

    def cached_program(self, term, grid: list[float], build: Callable[[], object]):
        """``build()`` (a :class:`~sdeflow.solvers.program.Program`), kept by ``term`` per solver and grid
        (:meth:`sdeflow.terms.Term.cached_program`): numpy builds it once, and later solves on the same term and
        grid (e.g. under ``torch.compile``, which cannot trace numpy's branches) only look it up."""
        return term.cached_program(self, grid, build)

    def integrate(self, term, x: Tensor, grid: list[float], noise=None,
                  callback: Callable[[int, Tensor], None] | None = None) -> tuple[Tensor, dict]:
        """Run every step of ``grid`` (a list of floats); ``callback(k, x)`` after step ``k`` (a tensor it returns
        replaces the state).

        Returns the final state and the solver's state dict (read by :meth:`stats`). A solver whose
        ``init_state`` puts a :class:`~sdeflow.solvers.program.Program` under ``"program"`` runs all steps in
        its generated loop when there is no callback and the term allows it (``term.fast_parts(x)``);
        otherwise step by step (``step``, the path of checked replays and of ``solve()``'s terms)."""
        state = self.init_state(term, x, grid)
        prog = state.get("program") if isinstance(state, dict) else None
        if prog is not None and callback is None:  # the fast path (sdeflow.solvers.program)
            parts = term.fast_parts(x)
            if parts is not None:
                return prog.run(term, x, grid, noise, parts), state
        step = self.step
        for k in range(len(grid) - 1):
            x = step(term, k, x, grid[k], grid[k + 1], noise, state)
            if callback is not None:
                r = callback(k, x)
                if r is not None:
                    x = r
        return x, state

    def stats(self, state: dict) -> dict:
        """Solver-specific statistics from the state returned by :meth:`integrate`."""
        return {}

    def __repr__(self):
        return f"{type(self).__name__}()"


class ODESolver(Solver):
    sde = False


class SDESolver(Solver):
    sde = True


# ---- folded updates on affine terms ----------------------------------------------------------------
# A sampler's drift at planned evaluation j is A_j x + B_j n_j (n_j the network output; FieldTerm.affine)
# and its diffusion a float g_j, so every stage input and update of a fixed-step method is a linear
# combination c_x x + sum_i c_i buf_i of the step's start x and tensors it already holds (network outputs,
# stage inputs, normals). Solvers tabulate those coefficients for all steps at once (init_state) as a
# sdeflow.solvers.program.Program: one scaled copy plus one fused add per nonzero coefficient, the fewest
# kernels the update allows.


def step_tables(term, grid, stages: int):
    """``(h, A, B, g)`` as float64 arrays when ``term`` is affine (drift ``A_j x + B_j n_j``, diffusion a
    float ``g_j``; sdeflow's sampler term), else None (the solver then takes its generic path): ``h`` the
    step sizes, shape ``(S,)``; ``A``, ``B``, ``g`` the planned evaluations' tables, shape ``(S, stages)``
    (``g`` zero for an ODE). Shared by the step programs of explicit RK, Euler-Maruyama and stochastic Heun."""
    aff = term.affine
    if aff is None:
        return None
    h = np.diff(np.asarray(grid, dtype=np.float64))
    n = len(h) * stages
    A, B = (np.asarray(v[:n], dtype=np.float64).reshape(-1, stages) for v in aff[:2])
    g = (np.asarray(aff[2][:n], dtype=np.float64).reshape(-1, stages) if term.is_sde
         else np.zeros((len(h), stages)))
    return h, A, B, g


def add_noise(x: Tensor, g, z: Tensor, scale: float) -> Tensor:
    """``x + g * scale * z`` in place on ``x`` (a fresh tensor): ``g`` a float (additive) or a tensor."""
    if isinstance(g, float):
        if g != 0.0:
            x.add_(z, alpha=g * scale)
        return x
    return x.addcmul_(g, z, value=scale)
