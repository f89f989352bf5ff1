r"""Sources of Brownian increments for the SDE solvers.

A solver step from ``t0`` to ``t1`` (``h = |t1 - t0|``) asks its source for standard normals:
``draw(k, t0, t1, like)`` returns ``z`` with :math:`\Delta W = \sqrt h\, z`; ``count=2`` returns
``(z1, z2)`` with :math:`\Delta W = \sqrt h\, z_1` and the time integral
:math:`\Delta Z = \int_{t_0}^{t_1}(W_s - W_{t_0})\,ds = \tfrac12 h^{3/2}(z_1 + z_2/\sqrt3)` (needed by SRA
methods). Sources:

* :class:`GeneratorNoise` — ``torch.randn`` from a ``torch.Generator``; the fast default. A sample's noise
  depends on its position in the batch and on the batch size.
* :class:`PerSampleNoise` — counter-based: the noise of sample ``i`` at step ``k`` depends only on
  ``(seed, i, k)``, so results are bitwise identical whatever the batch size, chunking or sharding
  (a few times slower to generate than ``randn``; ``sdeflow bench`` measures it).
* :class:`BrownianPath` — one Brownian path on a fine grid, summed onto any coarser sub-grid: strong
  convergence studies compare solves on the same path.
* :class:`TableNoise` — prescribed values (exact moment propagation in tests).

``for_rows(start)`` gives the source for a block of rows starting at global sample index ``start``
(chunked and distributed sampling).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .errors import SdeflowTypeError, SdeflowValueError, check_int

__all__ = ["NoiseSource", "GeneratorNoise", "PerSampleNoise", "VirtualBrownianTree", "BrownianPath", "TableNoise",
           "as_noise_source"]

Tensor = torch.Tensor


class NoiseSource:
    """Interface of a source of standard normals for step ``k`` over ``[t0, t1]``."""

    def draw(self, k: int, t0: float, t1: float, like: Tensor, count: int = 1):
        raise NotImplementedError

    def for_rows(self, start: int) -> "NoiseSource":
        """The source for rows ``start, start + 1, ...`` of a larger batch."""
        return self

    def get_state(self):
        """Opaque state such that ``set_state`` replays the same draws (used to re-run diagnostics)."""
        return None

    def set_state(self, state) -> None:
        pass


class GeneratorNoise(NoiseSource):
    """``torch.randn`` from ``generator`` (a fresh non-deterministically seeded one if None)."""

    def __init__(self, generator: torch.Generator | None = None, device=None):
        if generator is None:
            generator = torch.Generator(device=device if device is not None else "cpu")
            generator.seed()
        if not isinstance(generator, torch.Generator):
            raise SdeflowTypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.generator = generator

    def draw(self, k, t0, t1, like, count=1):
        g = self.generator
        if count == 1:
            return torch.randn(like.shape, generator=g, dtype=like.dtype, device=like.device)
        return tuple(torch.randn(like.shape, generator=g, dtype=like.dtype, device=like.device)
                     for _ in range(count))

    def get_state(self):
        return self.generator.get_state()

    def set_state(self, state):
        self.generator.set_state(state)


# ---- counter-based per-sample noise ---------------------------------------------------------------
_M64 = (1 << 64) - 1


def _s64(v: int) -> int:
    """An unsigned 64-bit constant as the signed int64 torch stores."""
    v &= _M64
    return v - (1 << 64) if v >= (1 << 63) else v


_GOLDEN = _s64(0x9E3779B97F4A7C15)
_C1 = _s64(0xBF58476D1CE4E5B9)
_C2 = _s64(0x94D049BB133111EB)


def _lsr(z: Tensor, s: int) -> Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _mix64(z: Tensor) -> Tensor:
    """SplitMix64's finaliser (Steele, Lea & Flood 2014), wrapping int64 arithmetic."""
    z = (z ^ _lsr(z, 30)) * _C1
    z = (z ^ _lsr(z, 27)) * _C2
    return z ^ _lsr(z, 31)


def _uniform53(z: Tensor) -> Tensor:
    """Top 53 bits of an int64 hash as a float64 in (0, 1)."""
    return (_lsr(z, 11).to(torch.float64) + 0.5) * (1.0 / (1 << 53))


_TREE = _s64(0x6A09E667F3BCC909)  # domain of the Brownian-tree normals (apart from the step draws' keys)


def _box_muller(base: Tensor, shape: tuple) -> Tensor:
    """Float64 standard normals of ``shape`` from one int64 key per row ``base`` (``(shape[0],)``): element ``e`` of
    row ``i`` is Box-Muller of two uniforms hashed from ``base[i]`` and ``e``."""
    m = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    e = torch.arange(m, dtype=torch.int64, device=base.device)
    ctr = base[:, None] + (2 * e[None, :] + 1) * _C2
    u1 = _uniform53(_mix64(ctr))
    u2 = _uniform53(_mix64(ctr ^ _C1))
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)).reshape(shape)


class PerSampleNoise(NoiseSource):
    """Counter-based normals: sample ``i``'s noise at step ``k`` depends only on ``(seed, i, k)``.

    Each value is a SplitMix64 hash of ``(seed, i, k, draw, element)`` turned into a normal by Box-Muller
    in float64, then cast to ``like``'s dtype. Deterministic across batch sizes, chunks and processes on
    the same device type.
    """

    def __init__(self, seed: int, offset: int = 0):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise SdeflowTypeError(f"seed must be an integer, got {type(seed).__name__}")
        if not 0 <= int(seed) < 2 ** 64:
            raise SdeflowValueError(f"seed must be in [0, 2**64) (the hash takes 64 bits: larger seeds would "
                                    f"repeat smaller ones), got {seed}")
        check_int("offset", offset, minimum=0, error=SdeflowValueError)
        self.seed = int(seed)
        self.offset = int(offset)

    def for_rows(self, start):
        return PerSampleNoise(self.seed, self.offset + int(start))

    def _seed_key(self, dev) -> Tensor:
        return _mix64(torch.full((1,), _s64(self.seed), dtype=torch.int64, device=dev) + _GOLDEN)

    def _normals(self, k: int, c: int, like: Tensor) -> Tensor:
        n = like.shape[0]
        dev = like.device
        rows = torch.arange(self.offset, self.offset + n, dtype=torch.int64, device=dev)
        key = _mix64(self._seed_key(dev) + _s64((k + 1) * 0xD1B54A32D192ED03) + _s64((c + 1) * 0x8CB92BA72F3D8DD7))
        return _box_muller(_mix64(key + rows * _GOLDEN), like.shape).to(like.dtype)  # base: (n,)

    def node_normals(self, rows: Tensor, nodes: Tensor, event: tuple) -> Tensor:
        """Float64 standard normals of shape ``(len(rows), *event)``: row ``rows[i]`` (an index inside this block:
        the sample is ``offset + rows[i]``) at tree node ``nodes[i]`` (int64), a hash of ``(seed, sample, node,
        element)`` apart from the step draws (:class:`VirtualBrownianTree`)."""
        key = _mix64(self._seed_key(rows.device) + _TREE)
        base = _mix64(_mix64(key + nodes * _C2) + (rows + self.offset) * _GOLDEN)
        return _box_muller(base, (rows.shape[0],) + tuple(event))

    def draw(self, k, t0, t1, like, count=1):
        if count == 1:
            return self._normals(k, 0, like)
        return tuple(self._normals(k, c, like) for c in range(count))

    def __repr__(self):
        return f"PerSampleNoise(seed={self.seed}, offset={self.offset})"


class VirtualBrownianTree:
    r"""A Brownian motion per sample on ``[t0, t1]`` (zero at the earlier end), evaluated at any time, whose values
    depend only on ``(seed, sample, t)``: a virtual Brownian tree (Gaines & Lyons 1997; Li et al. 2020) on the dyadic grid of
    ``2^depth`` intervals, with the normals of :meth:`PerSampleNoise.node_normals`.

    With ``lo, hi`` the ends, :math:`W(hi) = \sqrt{hi - lo}\, z_0`; a tree node ``k`` (root ``k = 1``, children ``2k``, ``2k + 1``) over an
    interval of length :math:`\ell` with end values :math:`W_a`, :math:`W_b` places its midpoint by Brownian-bridge
    refinement, :math:`W_m = 	frac12 (W_a + W_b) + 	frac12\sqrt{\ell}\, z_k`. A query descends ``depth`` levels to
    the grid point nearest to ``t`` (``depth = 40``: within :math:`2^{-41}` of the span, so an increment over a step
    ``h`` is exact Brownian over a length within ``1e-12 (t1 - t0)`` of ``h``). Every value is computed from the
    row's own normals in float64, so a sample's path is bitwise the same whatever rows are queried with it, in any
    order, at any tolerance of the solver that queries it.
    """

    def __init__(self, noise: PerSampleNoise, t0: float, t1: float, event: tuple, device=None, depth: int = 40):
        if not isinstance(noise, PerSampleNoise):
            raise SdeflowTypeError(f"a virtual Brownian tree takes its normals from a PerSampleNoise, got "
                                   f"{type(noise).__name__}")
        self.noise, self.event, self.device, self.depth = noise, tuple(event), device, int(depth)
        self.lo, self.hi = min(float(t0), float(t1)), max(float(t0), float(t1))

    def __call__(self, t: np.ndarray, rows: np.ndarray) -> Tensor:
        """``W(t[i])`` of block row ``rows[i]``: float64, shape ``(len(rows), *event)``."""
        span = self.hi - self.lo
        n, depth, dev = 1 << self.depth, self.depth, self.device
        pos = np.rint(np.clip((np.asarray(t, dtype=np.float64) - self.lo) / span, 0.0, 1.0) * n).astype(np.int64)
        m = len(pos)
        # the descent to grid point p (the cell [p, p + 1]) follows p's bits: level l's node is 2^l + (p >> (depth - l))
        p = np.minimum(pos, n - 1)
        lev = np.arange(depth, dtype=np.int64)
        nodes = np.concatenate([np.zeros((m, 1), dtype=np.int64), (1 << lev)[None, :] + (p[:, None] >> (depth - lev))], 1)
        r = torch.as_tensor(np.repeat(np.asarray(rows, dtype=np.int64), depth + 1), device=dev)
        z = self.noise.node_normals(r, torch.as_tensor(nodes.reshape(-1), device=dev), self.event)
        z = z.reshape((m, depth + 1) + self.event)
        shape = (m,) + (1,) * len(self.event)
        right = torch.as_tensor(((p[:, None] >> (depth - 1 - lev)) & 1).astype(bool), device=dev)
        wa = torch.zeros((m,) + self.event, dtype=torch.float64, device=dev)
        wb = math.sqrt(span) * z[:, 0]
        half = 0.5 * math.sqrt(span)  # the bridge's standard deviation at the root's midpoint: sqrt(span / 4)
        for level in range(depth):
            wm = 0.5 * (wa + wb) + half * z[:, level + 1]
            go = right[:, level].reshape(shape)
            wa, wb = torch.where(go, wm, wa), torch.where(go, wb, wm)
            half *= math.sqrt(0.5)
        return torch.where(torch.as_tensor(pos == p, device=dev).reshape(shape), wa, wb)


class TableNoise(NoiseSource):
    """Prescribed normals: ``table[k]`` for step ``k`` (a tensor, or a tuple for ``count > 1``)."""

    def __init__(self, table: Sequence):
        if isinstance(table, (torch.Tensor, str)) or not hasattr(table, "__len__"):
            raise SdeflowTypeError(f"table must be a sequence with one entry per step (a tensor, or a tuple of "
                                   f"tensors for count > 1), got {type(table).__name__}")
        self.table = list(table)

    def draw(self, k, t0, t1, like, count=1):
        if not -len(self.table) <= k < len(self.table):
            raise SdeflowValueError(f"the noise table holds {len(self.table)} steps but the solve draws the normals of "
                                    f"step {k}: give one entry per step (steps x normals per step)")
        v = self.table[k]
        if count == 1:
            return (v[0] if isinstance(v, tuple) else v).to(dtype=like.dtype, device=like.device)
        return tuple(u.to(dtype=like.dtype, device=like.device) for u in v)


class BrownianPath(NoiseSource):
    r"""One Brownian path on a fine grid ``times``, shared by solves on any sub-grid of it.

    The fine increments :math:`\Delta W_j` and time integrals :math:`\Delta Z_j` are drawn once (float64)
    on the first call; a coarse step over ``[t0, t1]`` (both fine-grid points) returns the exact sums
    :math:`\Delta W = \sum_j\Delta W_j`,
    :math:`\Delta Z = \sum_j[\Delta Z_j + (W_{s_j} - W_{t_0}) h_j]` in the normalised form of
    :class:`NoiseSource`.
    """

    def __init__(self, times, *, generator: torch.Generator | None = None):
        t = torch.as_tensor(np.asarray(times, dtype=np.float64))
        if t.dim() != 1 or t.numel() < 2:
            raise SdeflowValueError("times must be a 1-D grid with at least 2 points")
        self.times = t
        self._index = {float(v): i for i, v in enumerate(t.tolist())}
        self.generator = generator
        self._dw = self._dz = None

    def _ensure(self, like: Tensor):
        shape = (self.times.numel() - 1,) + tuple(like.shape)
        if self._dw is None or self._dw.shape != shape:
            h = (self.times[1:] - self.times[:-1]).abs().reshape((-1,) + (1,) * like.dim())
            z1 = torch.randn(shape, generator=self.generator, dtype=torch.float64)
            z2 = torch.randn(shape, generator=self.generator, dtype=torch.float64)
            self._dw = h.sqrt() * z1
            self._dz = 0.5 * h ** 1.5 * (z1 + z2 / math.sqrt(3.0))
            self._h = h

    def _locate(self, t: float) -> int:
        i = self._index.get(float(t))
        if i is None:
            j = int(np.argmin(np.abs(self.times.numpy() - t)))
            if abs(float(self.times[j]) - t) > 1e-12:
                raise SdeflowValueError(f"t={t} is not a point of the BrownianPath's fine grid; solve on a "
                                        f"sub-grid of its times")
            i = j
        return i

    def increments(self, t0: float, t1: float, like: Tensor) -> tuple[Tensor, Tensor]:
        """``(dW, dZ)`` over ``[t0, t1]`` in float64."""
        self._ensure(like)
        i0, i1 = sorted((self._locate(t0), self._locate(t1)))
        dw = self._dw[i0:i1]
        w_before = torch.cumsum(dw, 0) - dw  # W_{s_j} - W_{t0}
        return dw.sum(0), (self._dz[i0:i1] + w_before * self._h[i0:i1]).sum(0)

    def draw(self, k, t0, t1, like, count=1):
        dw, dz = self.increments(t0, t1, like)
        h = abs(t1 - t0)
        z1 = dw / math.sqrt(h)
        if count == 1:
            return z1.to(dtype=like.dtype, device=like.device)
        z2 = math.sqrt(3.0) * (2.0 * dz / h ** 1.5 - z1)
        return z1.to(dtype=like.dtype, device=like.device), z2.to(dtype=like.dtype, device=like.device)


def as_noise_source(noise, generator: torch.Generator | None, device) -> NoiseSource:
    """Resolve the ``noise``/``generator`` arguments of the samplers into a :class:`NoiseSource`."""
    if noise is not None and generator is not None:
        raise SdeflowValueError("pass either noise= (a NoiseSource) or generator=, not both")
    if noise is None:
        if generator is not None and torch.device(generator.device).type != torch.device(device).type:
            raise SdeflowValueError(f"generator is on {generator.device} but x is on {device}; create it "
                                    f"with torch.Generator(device={str(device)!r})")
        return GeneratorNoise(generator, device=device)
    if isinstance(noise, int) and not isinstance(noise, bool):
        return PerSampleNoise(noise)
    if not isinstance(noise, NoiseSource):
        raise SdeflowTypeError(f"noise must be a NoiseSource (e.g. PerSampleNoise(seed)) or an integer seed, "
                               f"got {type(noise).__name__}")
    return noise
