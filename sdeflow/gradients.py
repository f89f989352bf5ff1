r"""Gradients through a solve: the ``grad=`` modes of :func:`sdeflow.sample`.

* ``None`` (default): no autograd graph. The solve runs under ``torch.no_grad()``, even when the network has
  parameters that require grad, so memory holds only the current state (and a multistep method's history),
  flat in the number of steps, at the fast loop's speed. An ``x_init`` that requires grad is refused
  (:class:`~sdeflow.errors.GradientError`) unless autograd is already off: its gradient would be dropped.
* ``"full"``: plain backpropagation through every step (the graph keeps every step's network activations:
  memory linear in the steps).
* ``"checkpoint"``: per-step activation checkpointing (``torch.utils.checkpoint``, non-reentrant). Step
  :math:`k` is one segment :math:`(x_k, c_k) \mapsto (x_{k+1}, c_{k+1})` whose inputs and outputs are the
  state and every tensor the solver carries from step to step (:math:`c`: a multistep method's earlier
  predictions, a corrector's previous state). The forward pass keeps only the segments' inputs; backward
  re-runs one step at a time to rebuild its activations, so at most one step's activations are alive. The
  recomputation replays the step's noise exactly: a :class:`~sdeflow.noise.GeneratorNoise` is rewound to
  the generator state recorded before the step (and put back afterwards), the counter-based and tabulated
  sources (:class:`~sdeflow.noise.PerSampleNoise`, :class:`~sdeflow.noise.TableNoise`,
  :class:`~sdeflow.noise.BrownianPath`) are functions of the step, and any other source's draws are
  recorded in the forward pass and handed back. The same operations run in the same order as in ``"full"``,
  so the gradients agree with full backpropagation to rounding. Fixed-step solvers only.

The adjoint method (a second ODE solved backwards, e.g. torchdiffeq's ``odeint_adjoint``) is refused: it
differentiates the continuous dynamics, not the discrete solve (its gradient differs from the samples' own
by the solver's error), and its backward solve sees only the parameters it is handed, so a network whose
parameters a closure captures would get no gradient at all; ``"checkpoint"`` is exact and bounded.

Reference: Chen, Xu, Zhang and Guestrin, *Training deep nets with sublinear memory cost* (2016), for
recomputation; ``torch.utils.checkpoint`` for the mechanism.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager

import torch
from torch.utils import checkpoint as _ckpt
from torch.utils._pytree import tree_flatten, tree_unflatten

from .errors import GradientError
from .noise import BrownianPath, GeneratorNoise, NoiseSource, PerSampleNoise, TableNoise

__all__ = ["GRAD_MODES", "check_grad", "grad_context", "integrate_checkpointed"]

Tensor = torch.Tensor
GRAD_MODES = (None, "full", "checkpoint")
_PURE = (PerSampleNoise, TableNoise, BrownianPath)  # draws are functions of (k, t0, t1): nothing to replay


def check_grad(grad, solver=None, x_init=None) -> str | None:
    """``grad`` checked against the solver and ``x_init`` (:class:`~sdeflow.errors.GradientError` if it
    cannot be honoured, or if a gradient would be dropped silently)."""
    if grad is not None and (not isinstance(grad, str) or grad not in GRAD_MODES):
        if grad == "adjoint":
            raise GradientError(
                "grad='adjoint' is not supported: the adjoint ODE differentiates the continuous dynamics (its "
                "gradient differs from the samples' own by the solver's error) and sees only the parameters it "
                "is handed (a network captured by a closure would get none); use grad='checkpoint' (exact "
                "gradients of the discrete solve, one step's activations in memory) or grad='full'")
        raise GradientError(f"grad must be None (no autograd graph), 'full' (backpropagation through every step) "
                            f"or 'checkpoint' (per-step recomputation, bounded memory), got {grad!r}")
    if grad is not None and torch.is_inference_mode_enabled():
        raise GradientError(f"grad={grad!r} needs autograd, but sample was called under torch.inference_mode(); "
                            f"call it outside inference mode, or drop grad")
    if grad == "checkpoint" and solver is not None and not checkpointable(solver):
        raise GradientError(f"grad='checkpoint' needs a fixed-step solver, but {solver.name!r} "
                            f"{'chooses its own steps' if solver.adaptive else 'runs its own loop'}; use "
                            f"grad='full' with it, or a fixed-step solver ({_fixed_hint()}) with grad='checkpoint'")
    if (grad is None and isinstance(x_init, Tensor) and x_init.requires_grad and torch.is_grad_enabled()):
        raise GradientError("x_init requires grad, but grad=None builds no autograd graph, so its gradient would "
                            "be dropped; pass grad='full' (backpropagation through every step) or "
                            "grad='checkpoint' (bounded memory), or x_init.detach() if no gradient is wanted")
    return grad


def _fixed_hint() -> str:
    from . import solvers

    return ", ".join(n for n in ("heun", "dpmpp_2m", "euler_maruyama") if n in solvers.available())


def checkpointable(solver) -> bool:
    """Whether the solver runs the shared fixed-step loop (:meth:`~sdeflow.solvers.base.Solver.integrate`)."""
    from .solvers.base import Solver

    return (solver.planned and not solver.adaptive
            and getattr(type(solver).integrate, "__func__", type(solver).integrate) is Solver.integrate)


def grad_context(grad):
    """``torch.no_grad()`` for ``grad=None``, ``torch.enable_grad()`` otherwise (an explicit mode is honoured
    inside an outer ``no_grad`` too)."""
    return torch.no_grad() if grad is None else torch.enable_grad()


# ---- noise replay -----------------------------------------------------------------------------------
class _Recorded(NoiseSource):
    """A source's draws for one step, recorded on the first pass and handed back in order on replays."""

    def __init__(self, src: NoiseSource, draws: list, record: bool):
        self.src, self.draws, self.record, self.i = src, draws, record, 0

    def draw(self, k, t0, t1, like, count=1):
        if self.record:
            v = self.src.draw(k, t0, t1, like, count)
            self.draws.append(v)
            return v
        v = self.draws[self.i]
        self.i += 1
        return v


class _Replay:
    """Per step, the noise of the first pass again on every recomputation (see the module docstring)."""

    def __init__(self, src):
        self.src = src
        t = type(src)
        self.mode = ("none" if src is None else "state" if t is GeneratorNoise else "pure" if t in _PURE
                     else "record")
        self.saved: dict = {}

    @contextmanager
    def step(self, k: int, first: bool):
        src = self.src
        if self.mode in ("none", "pure"):
            yield src
        elif self.mode == "state":
            if first:
                self.saved[k] = src.get_state()
                yield src
            else:
                now = src.get_state()
                src.set_state(self.saved[k])
                try:
                    yield src
                finally:
                    src.set_state(now)
        elif first:
            self.saved[k] = []
            yield _Recorded(src, self.saved[k], True)
        else:
            yield _Recorded(src, self.saved[k], False)


# ---- carried state ----------------------------------------------------------------------------------
def _get_carry(solver, state) -> dict:
    """What a step of ``solver`` reads from earlier steps: the state keys the solver declares in ``carried``
    (a step program's carried buffers are one of them, ``"carry"``; missing keys stay missing)."""
    parts = {}
    for key in solver.carried:
        if key in state:
            v = state[key]
            parts[key] = list(v) if isinstance(v, list) else v
    return parts


def _set_carry(solver, state, parts: dict) -> None:
    for key in solver.carried:
        if key in parts:
            v = parts[key]
            state[key] = list(v) if isinstance(v, list) else v
        else:
            state.pop(key, None)


def _split(parts: dict):
    """``(tensors, rebuild)``: the carried tensors, and a function of new tensors giving the parts back."""
    leaves, spec = tree_flatten(parts)
    where = [i for i, v in enumerate(leaves) if isinstance(v, Tensor)]

    def rebuild(tensors):
        out = list(leaves)
        for i, t in zip(where, tensors):
            out[i] = t
        return tree_unflatten(out, spec)

    return tuple(leaves[i] for i in where), rebuild


def _layout(state) -> dict:
    """Identity and length of every state entry: a step that changes one the solver did not declare in
    ``carried`` would carry state the segments cannot see."""
    return {k: (id(v), len(v) if isinstance(v, (list, dict)) else None) for k, v in state.items()}


def _segment(solver, term, k, t0, t1, replay, state, rebuild_in, out_box, calls, x, *carry):
    """Step ``k`` as a function of its inputs only: the state is set from ``carry``, the step runs with its
    noise replayed, and the carried tensors are returned; the state is put back afterwards."""
    first = calls[0] == 0
    calls[0] += 1
    before = _get_carry(solver, state)
    _set_carry(solver, state, rebuild_in(carry))
    try:
        with replay.step(k, first) as noise:
            x_new = solver.step(term, k, x, t0, t1, noise, state)
        tensors, rebuild = _split(_get_carry(solver, state))
        if first:
            out_box["rebuild"] = rebuild
    finally:
        _set_carry(solver, state, before)
    return (x_new, *tensors)


def integrate_checkpointed(solver, term, x: Tensor, grid: list, noise=None, callback=None):
    """:meth:`~sdeflow.solvers.base.Solver.integrate` with each step a checkpointed segment (module docstring).

    Returns ``(x_final, state)`` like ``integrate``."""
    state = solver.init_state(term, x, grid)
    replay = _Replay(noise)
    carry, rebuild = _split(_get_carry(solver, state))
    declared = set(solver.carried) | {"program"}
    for k in range(len(grid) - 1):
        layout = _layout(state)
        box: dict = {}
        seg = functools.partial(_segment, solver, term, k, grid[k], grid[k + 1], replay, state, rebuild, box, [0])
        out = _ckpt.checkpoint(seg, x, *carry, use_reentrant=False)
        x, carry, rebuild = out[0], tuple(out[1:]), box["rebuild"]
        _set_carry(solver, state, rebuild(carry))
        changed = [key for key, v in _layout(state).items() if key not in declared and layout.get(key) != v]
        if changed:
            raise GradientError(f"solver {solver.name!r} changed its state {changed} during step {k}, which "
                                f"grad='checkpoint' cannot replay; declare those keys in the solver's `carried` "
                                f"(class attribute) or use grad='full'")
        if callback is not None:
            callback(k, x)
    return x, state
