"""Adapters between sdeflow's time convention and the inputs a trained network expects.

sdeflow calls a network as ``net(x, t)`` with ``t`` a ``(batch,)`` tensor in ``[0, 1]``, ``t = 0`` data.
Wrap a network that expects something else:

* :class:`FlipTime` — trained with ``t = 0`` at the noise end (flow-matching code often is): calls
  ``net(x, 1 - t)``, negating the output for velocities (``Field(..., flip_time=True)`` does this for you);
* :class:`ColumnTime` — wants ``t`` as ``(batch, 1)``;
* :class:`IndexTime` — a DDPM network taking the integer step index ``i`` (``t = (i + 1)/T``);
* :class:`SigmaTime` — wants the noise level ``sigma(t)`` of a path (EDM/NCSN style).

Adapters are plain callables; they can be stacked.

Models from other libraries need no closure: :func:`from_diffusers` (a diffusers model and its scheduler)
and :func:`from_k_diffusion` (a k-diffusion denoiser ``D(x, sigma)``) return a
:class:`~sdeflow.integrations.Recipe` with the path, the field and the grid and solver that reproduce the
library's loop (:mod:`sdeflow.integrations`; the libraries are imported only when used).
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import SdeflowTypeError, SdeflowValueError, check_int

__all__ = ["FlipTime", "ColumnTime", "IndexTime", "SigmaTime", "from_diffusers", "from_k_diffusion"]


def _check_callable(net):
    if not callable(net):
        raise SdeflowTypeError(f"net must be callable as net(x, t), got {type(net).__name__}")
    return net


class _Adapter:
    def __init__(self, net):
        self.net = _check_callable(net)

    def validate_times(self, times: np.ndarray) -> None:
        inner = getattr(self.net, "validate_times", None)
        if inner is not None:
            inner(self._map_times(times))

    def _map_times(self, times: np.ndarray) -> np.ndarray:
        return times

    def __repr__(self):
        return f"{type(self).__name__}({self.net!r})"


class FlipTime(_Adapter):
    """``net`` trained with ``t = 0`` at the noise end: returns ``sign * net(x, 1 - t)``.

    ``negate=True`` for velocity networks (the direction of travel flips with time); scores, noise and
    data predictions keep their sign.
    """

    def __init__(self, net, negate: bool = False):
        super().__init__(net)
        self.negate = bool(negate)

    def __call__(self, x, t, **model_kwargs):
        out = self.net(x, 1.0 - t, **model_kwargs)
        return -out if self.negate else out

    def _map_times(self, times):
        return 1.0 - times


class ColumnTime(_Adapter):
    """``net`` wants ``t`` shaped ``(batch, 1)``."""

    def __call__(self, x, t, **model_kwargs):
        return self.net(x, t.reshape(-1, 1), **model_kwargs)


class IndexTime(_Adapter):
    """A DDPM network taking the 0-based integer step index ``i`` with ``t = (i + 1)/T``.

    Every time it is evaluated at must be a knot ``i/T`` with ``i >= 1``; samplers check this before the
    first step (``validate_times``) instead of rounding silently. Use a grid of knots
    (``sdeflow.grids.discrete``) and a solver that evaluates only at grid points (Euler, exponential
    integrators, the DDPM samplers).
    """

    def __init__(self, net, T: int):
        super().__init__(net)
        self.T = check_int("T", T, what="a positive integer (the number of DDPM steps)", error=SdeflowValueError)

    def __call__(self, x, t, **model_kwargs):
        return self.net(x, torch.round(t * self.T).long() - 1, **model_kwargs)

    def validate_times(self, times: np.ndarray) -> None:
        u = np.asarray(times, dtype=np.float64) * self.T
        bad = np.flatnonzero((np.abs(u - np.round(u)) > 1e-6 * self.T) | (np.round(u) < 1))
        if bad.size:
            raise SdeflowValueError(
                f"IndexTime(T={self.T}) network evaluated at t={float(times[bad[0]]):.6g}, which is not a "
                f"knot i/T with i >= 1; use a grid of knots (sdeflow.grids.discrete(path, steps)) and a "
                f"solver that evaluates only at grid points")
        super().validate_times(times)


class SigmaTime(_Adapter):
    """``net`` wants the noise level ``sigma(t)`` of ``path`` instead of ``t``."""

    def __init__(self, net, path):
        super().__init__(net)
        from .paths import GaussianPath

        if not isinstance(path, GaussianPath):
            raise SdeflowTypeError(f"path must be the GaussianPath whose sigma(t) the network expects (VE(), "
                                   f"EDM(), ...), got {type(path).__name__}")
        self.path = path

    def __call__(self, x, t, **model_kwargs):
        return self.net(x, self.path.sigma(t), **model_kwargs)


def from_diffusers(model, scheduler, **kw):
    """A diffusers model and scheduler as a :class:`~sdeflow.integrations.Recipe`: see
    :func:`sdeflow.integrations.diffusers.from_diffusers` (same arguments)."""
    from .integrations.diffusers import from_diffusers as impl

    return impl(model, scheduler, **kw)


def from_k_diffusion(denoiser, sigma_min, sigma_max, **kw):
    """A k-diffusion denoiser ``D(x, sigma)`` as a :class:`~sdeflow.integrations.Recipe`: see
    :func:`sdeflow.integrations.k_diffusion.from_k_diffusion` (same arguments)."""
    from .integrations.k_diffusion import from_k_diffusion as impl

    return impl(denoiser, sigma_min, sigma_max, **kw)
