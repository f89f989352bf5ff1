r"""Scaling of the fixed-step samplers: wall time and peak memory against batch, steps (NFE) and dimension.

Memory is measured by **live tensor bytes accounting** (:class:`LiveBytes`): a
``TorchDispatchMode`` sees every tensor an operation returns, adds the bytes of each new storage and
subtracts them when the last tensor viewing that storage is freed (weakref finalizers). Its peak is the
most tensor memory the solve held at once beyond its inputs, exact and deterministic on any device (no
allocator caching, no RSS noise from other processes), so it can be asserted in tests. It does not count
Python objects or allocator slack. Wall time is measured separately, without the mode, as the median of
repeats after a warm-up.

With ``return_trajectory=False`` the peak does not depend on the number of steps (a step keeps only its
stage tensors); with ``return_trajectory=True`` it grows by one state per step.
"""

from __future__ import annotations

import statistics
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["LiveBytes", "run_scaling", "format_scaling", "peak_bytes", "solve_once", "QUICK_BATCHES", "FULL_BATCHES"]

QUICK_BATCHES = (100, 1_000, 10_000, 100_000)
FULL_BATCHES = (100, 1_000, 10_000, 100_000, 1_000_000)


class LiveBytes(TorchDispatchMode):
    """Count the bytes of tensor storages created inside the context and still alive; ``peak`` is their
    maximum, ``live`` the current value.

    >>> with LiveBytes() as mem:  # doctest: +SKIP
    ...     out = sdeflow.sample(...)
    >>> mem.peak
    """

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, int] = {}  # storage data_ptr -> live tensors viewing it
        self._size: dict[int, int] = {}
        self._seen: set[int] = set()  # ids of tracked tensor objects

    def _release(self, key: int, tid: int):
        self._seen.discard(tid)
        n = self._refs.get(key, 0) - 1
        if n > 0:
            self._refs[key] = n
            return
        self._refs.pop(key, None)
        self.live -= self._size.pop(key, 0)

    def _track(self, t: torch.Tensor):
        if id(t) in self._seen:
            return  # an in-place op returned a tensor already tracked
        st = t.untyped_storage()
        key, nbytes = st.data_ptr(), st.nbytes()
        if nbytes == 0:
            return
        self._seen.add(id(t))
        if key in self._refs:
            self._refs[key] += 1
        else:
            self._refs[key] = 1
            self._size[key] = nbytes
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        weakref.finalize(t, self._release, key, id(t))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self._track(leaf)
        return out


def _problem(dim: int):
    from ..analytic import Gaussian
    from ..paths import VP

    return VP(), Gaussian(torch.zeros(dim, dtype=torch.float64), torch.full((dim,), 0.25, dtype=torch.float64))


def solve_once(batch: int, steps: int, dim: int = 2, solver: str = "heun", *, return_trajectory=False,
               dtype=torch.float32, seed: int = 0):
    """One sample of the scaling problem: N(0, 0.25 I) in ``dim`` dimensions on VP, exact noise field."""
    from ..sample import sample

    path, target = _problem(dim)
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn((batch, dim), generator=gen, dtype=dtype)
    # the cost of the solve itself: no end-of-solve finiteness reduction, no preflight probe
    return sample(path, target.field("noise"), solver, x_init=x0, steps=steps, generator=gen,
                  return_trajectory=return_trajectory, check_finite=False, preflight=False)


def peak_bytes(batch: int, steps: int, dim: int = 2, solver: str = "heun", **kw) -> int:
    """Peak live tensor bytes of one solve (:class:`LiveBytes`)."""
    with LiveBytes() as mem:
        sol = solve_once(batch, steps, dim, solver, **kw)
        del sol
    return mem.peak


def _wall(batch, steps, dim, solver, repeats) -> float:
    solve_once(batch, steps, dim, solver)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        solve_once(batch, steps, dim, solver)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def run_scaling(batches=QUICK_BATCHES, steps=(10, 40, 160), dims=(2, 16, 64), solver: str = "heun",
                base_batch: int = 10_000, base_steps: int = 40, base_dim: int = 2, repeats: int = 3,
                trajectory: bool = True, verbose: bool = False) -> list[dict]:
    """Wall time (median of ``repeats``) and peak live tensor bytes of ``solver`` on the scaling problem,
    sweeping one axis at a time around ``(base_batch, base_steps, base_dim)``: batch, steps (NFE) and
    dimension; with ``trajectory`` also the step sweep with ``return_trajectory=True``.

    Rows: ``axis``, ``batch``, ``steps``, ``nfe``, ``dim``, ``trajectory``, ``seconds``, ``peak_bytes``,
    ``state_bytes`` (one state, ``batch * dim * itemsize``) and ``peak_states`` (their ratio)."""
    from .. import solvers

    eps = solvers.get(solver).nfe_for_steps
    plan = [("batch", b, base_steps, base_dim, False) for b in batches]
    plan += [("steps", base_batch, s, base_dim, False) for s in steps]
    if trajectory:
        plan += [("steps+trajectory", base_batch, s, base_dim, True) for s in steps]
    plan += [("dim", base_batch, base_steps, d, False) for d in dims]
    rows = []
    for axis, b, s, d, traj in plan:
        peak = peak_bytes(b, s, d, solver, return_trajectory=traj)
        secs = _wall(b, s, d, solver, repeats) if not traj else None
        state = b * d * 4
        row = {"axis": axis, "solver": solver, "batch": b, "steps": s, "nfe": eps(s), "dim": d,
               "trajectory": traj, "seconds": secs, "peak_bytes": peak, "state_bytes": state,
               "peak_states": peak / state}
        rows.append(row)
        if verbose:
            print(_fmt(row), flush=True)
    return rows


def _fmt(r: dict) -> str:
    secs = "-" if r["seconds"] is None else f"{r['seconds'] * 1e3:.1f}"
    return (f"{r['axis']:17s} {r['batch']:>8d} {r['steps']:>6d} {r['nfe']:>5d} {r['dim']:>4d} {secs:>10s} "
            f"{r['peak_bytes'] / 2**20:>10.2f} {r['peak_states']:>7.1f}")


def format_scaling(rows: list[dict]) -> str:
    """Plain-text table of :func:`run_scaling` rows (ms, MiB, peak in states)."""
    head = (f"{'axis':17s} {'batch':>8s} {'steps':>6s} {'nfe':>5s} {'dim':>4s} {'ms':>10s} {'peak MiB':>10s} "
            f"{'states':>7s}")
    return "\n".join([head, "-" * len(head)] + [_fmt(r) for r in rows])
