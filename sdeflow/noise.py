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

from .errors import SdeflowTypeError, SdeflowValueError

__all__ = ["NoiseSource", "GeneratorNoise", "PerSampleNoise", "BrownianPath", "TableNoise",
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
        if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or offset < 0:
            raise SdeflowValueError(f"offset must be an integer >= 0, got {offset!r}")
        self.seed = int(seed)
        self.offset = int(offset)

    def for_rows(self, start):
        return PerSampleNoise(self.seed, self.offset + int(start))

    def _normals(self, k: int, c: int, like: Tensor) -> Tensor:
        n = like.shape[0]
        m = int(np.prod(like.shape[1:], dtype=np.int64)) if like.dim() > 1 else 1
        dev = like.device
        rows = torch.arange(self.offset, self.offset + n, dtype=torch.int64, device=dev)
        key = _mix64(torch.full((1,), _s64(self.seed), dtype=torch.int64, device=dev) + _GOLDEN)
        key = _mix64(key + _s64((k + 1) * 0xD1B54A32D192ED03) + _s64((c + 1) * 0x8CB92BA72F3D8DD7))
        base = _mix64(key + rows * _GOLDEN)  # (n,)
        e = torch.arange(m, dtype=torch.int64, device=dev)
        ctr = base[:, None] + (2 * e[None, :] + 1) * _C2
        u1 = _uniform53(_mix64(ctr))
        u2 = _uniform53(_mix64(ctr ^ _C1))
        z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
        return z.to(like.dtype).reshape(like.shape)

    def draw(self, k, t0, t1, like, count=1):
        if count == 1:
            return self._normals(k, 0, like)
        return tuple(self._normals(k, c, like) for c in range(count))

    def __repr__(self):
        return f"PerSampleNoise(seed={self.seed}, offset={self.offset})"


class TableNoise(NoiseSource):
    """Prescribed normals: ``table[k]`` for step ``k`` (a tensor, or a tuple for ``count > 1``)."""

    def __init__(self, table: Sequence):
        if isinstance(table, (torch.Tensor, str)) or not hasattr(table, "__len__"):
            raise SdeflowTypeError(f"table must be a sequence with one entry per step (a tensor, or a tuple of "
                                   f"tensors for count > 1), got {type(table).__name__}")
        self.table = list(table)

    def draw(self, k, t0, t1, like, count=1):
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
