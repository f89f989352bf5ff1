r"""Gaussian probability paths :math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon`.

Convention: ``t`` runs over ``[0, 1]``; ``t = 0`` is data, ``t = 1`` is noise. Every path gives

* ``alpha(t)``, ``sigma(t)`` and their time derivatives ``dalpha(t)``, ``dsigma(t)``
  (``coefficients(t)`` returns all four at once);
* the log signal-to-noise ratio :math:`\lambda_t = \log(\alpha_t^2/\sigma_t^2)` and its inverse
  ``t_from_log_snr``;
* the forward SDE :math:`dx = f_t x\,dt + g_t\,dW` with :math:`f = \alpha'/\alpha` and
  :math:`g^2 = d\sigma^2/dt - 2 f \sigma^2` (``f(t)``, ``g2(t)``);
* ``prior_sample`` (the noise end) and ``q_sample`` (draws of :math:`q(x_t | x_0)` returning
  ``(x_t, eps)``).

Paths are pure mathematics: no networks, no loops. They accept a Python number or a tensor ``t`` of any
shape and compute in ``t``'s floating dtype (float64 for Python numbers). References: Song et al. 2021
(VP, sub-VP, VE SDEs), Nichol & Dhariwal 2021 (cosine schedule), Ho et al. 2020 (DDPM), Lipman et al. 2023
(linear flow).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .errors import (SdeflowTypeError, SdeflowValueError, check_float_tensor, check_generator, check_int,
                     check_number)

__all__ = [
    "GaussianPath",
    "VP",
    "CosineVP",
    "SubVP",
    "VE",
    "LinearFlow",
    "EDM",
    "AffinePath",
    "DiscreteVP",
]

Tensor = torch.Tensor

#: The default noise end of a path whose :math:`\alpha` vanishes at ``t = 1`` when the sampler needs
#: :math:`\alpha > 0` there (a noise or score field, the reverse SDE): the log-SNR of :class:`VP` at ``t = 1``
#: with its default betas (Song et al. 2021), where the prior :math:`N(0, \sigma^2)` neglects
#: :math:`\alpha/\sigma \approx 0.0067` of the data.
LOG_SNR_NOISE_END = -10.0
#: The default data end of a path whose :math:`\sigma` vanishes at ``t = 0`` when the sampler needs
#: :math:`\sigma > 0` there (a data or score field, the reverse SDE): :math:`\sigma/\alpha = 0.002`, EDM's
#: smallest noise level (Karras et al. 2022).
LOG_SNR_DATA_END = 2.0 * math.log(1.0 / 0.002)


def as_time(t) -> Tensor:
    """A tensor view of ``t``: Python numbers become float64 tensors, integer tensors become float64."""
    if isinstance(t, Tensor):
        return t if t.is_floating_point() else t.to(torch.float64)
    try:
        return torch.as_tensor(t, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise SdeflowTypeError(f"a time must be a number, a sequence of numbers or a tensor, got "
                               f"{type(t).__name__} {t!r:.60}") from None


def _check_range(v: Tensor, lo: float, hi: float, name: str, what: str) -> None:
    """``v`` (host-checked when on the CPU) within ``[lo, hi]`` (to 1e-9 relative), else a named error."""
    if v.numel() == 0 or v.device.type != "cpu" or _compiling():
        return
    vmin, vmax = (float(u) for u in torch.aminmax(v.detach().double()))
    tol = 1e-9 * max(1.0, abs(hi))
    if not (vmin >= lo - tol and vmax <= hi + tol):
        bad = vmin if not vmin >= lo - tol else vmax
        raise SdeflowValueError(f"{name} must be {what}, got {bad:g}")


def check_time(t, upper: float = 1.0, name: str = "t"):
    """``t`` (a number or a tensor) must lie in ``[0, upper]``: numbers and CPU tensors are checked on the
    host (one ``aminmax``); tensors on an accelerator with a device-side assertion (no host synchronisation);
    nothing while ``torch.compile`` traces."""
    if isinstance(t, Tensor):
        if t.numel() == 0 or _compiling():
            return t
        if t.device.type == "cpu":
            lo, hi = torch.aminmax(t.detach())
            if not (float(lo) >= 0.0 and float(hi) <= upper):
                bad = float(lo) if not float(lo) >= 0.0 else float(hi)
                raise SdeflowValueError(f"{name} must be in [0, {upper:g}] (t = 0 data, t = 1 noise), got {bad:g}")
        elif t.device.type != "meta":
            torch._assert_async(((t >= 0) & (t <= upper)).all(),
                                f"{name} must be in [0, {upper:g}] (t = 0 data, t = 1 noise)")
        return t
    import numbers

    if isinstance(t, numbers.Real) and not isinstance(t, bool) and not (0.0 <= float(t) <= upper):
        raise SdeflowValueError(f"{name} must be in [0, {upper:g}] (t = 0 data, t = 1 noise), got {t!r}")
    return t


_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)


def check_shape(shape) -> tuple[int, ...]:
    """A shape: a tuple of non-negative integers (an int is a 1-tuple)."""
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        out = tuple(shape)
    except TypeError:
        raise SdeflowTypeError(f"shape must be a tuple of integers, got {shape!r}") from None
    import numbers

    if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0 for v in out):
        raise SdeflowValueError(f"shape must be a tuple of non-negative integers, got {shape!r}")
    return tuple(int(v) for v in out)


def _time_checked(fn):
    import functools

    @functools.wraps(fn)
    def checked(self, t, *args, **kw):
        check_time(t, self.t_upper)
        return fn(self, t, *args, **kw)

    checked._checks_time = True
    checked._unchecked = fn  # GaussianPath.coefficients_in_window calls it on times known to be in the domain
    return checked


def bcast(c: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample coefficient ``(batch,)`` (or a scalar) to broadcast against ``x`` (its dtype kept)."""
    return c.reshape(c.shape + (1,) * (x.dim() - c.dim()))


def map_times(from_path: "GaussianPath", to_path: "GaussianPath", t) -> np.ndarray:
    """Times of ``to_path`` with the same log-SNR as times ``t`` of ``from_path`` (float64 numpy)."""
    if to_path is from_path:
        return np.asarray(t, dtype=np.float64)
    tt = torch.as_tensor(np.asarray(t, dtype=np.float64))
    lam = from_path.log_snr(tt)
    out = to_path.t_from_log_snr(lam).numpy()
    upper = to_path.t_upper
    inside = np.isfinite(out) & (out >= -1e-12) & (out <= upper + 1e-12)
    out = np.clip(np.where(inside, out, 0.0), 0.0, upper)
    with np.errstate(invalid="ignore"):
        exact = inside & np.isclose(lam.numpy(), to_path.log_snr(torch.as_tensor(out)).numpy(), rtol=1e-6,
                                    atol=1e-6)
    if not exact.all():
        bad = float(tt[~torch.as_tensor(exact)][0])
        raise SdeflowValueError(
            f"{to_path!r} has no time with the log-SNR {float(from_path.log_snr(bad)):g} of {from_path!r} at "
            f"t={bad:g}; narrow [t_min, t_max] to log-SNRs both paths reach")
    return out


def transfer_scale(from_path: "GaussianPath", to_path: "GaussianPath", t_from, t_to) -> Tensor:
    r"""The factor :math:`s^{to}(t_{to}) / s^{from}(t_{from})` (:meth:`GaussianPath.scale`) taking a state of
    ``from_path`` at ``t_from`` to the state of ``to_path`` at ``t_to``, the time of equal log-SNR
    (:func:`map_times`): two paths with one log-SNR differ by this factor only (path transfer; Karras et al.
    2022, sec. 4). Numbers or tensors, elementwise."""
    return to_path.scale(t_to) / from_path.scale(t_from)


class GaussianPath:
    r"""Base class of the paths :math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon`.

    Subclasses implement :meth:`coefficients` and may override :meth:`log_snr` and
    :meth:`t_from_log_snr` with closed forms (the base class inverts ``log_snr`` by bisection).

    Attributes:
        t_min: the default end time of sampling (documented per path; every sampler takes ``t_min``).
        t_max: the noise end, 1.
    """

    t_min: float = 1e-3
    t_max: float = 1.0
    #: the largest time at which the formulas hold (1; ``inf`` for paths defined beyond their noise end, such
    #: as :class:`EDM` and :class:`VE`, which may then serve as integration coordinates of any window)
    t_upper: float = 1.0
    #: times at which the coefficients' derivatives jump (empty for smooth paths; :class:`DiscreteVP`'s knots)
    piecewise: bool = False

    def __init_subclass__(cls, **kw):
        # every time-taking function a path defines checks its domain (t in [0, t_upper]): a time outside it
        # is an error naming the time, never a NaN from the formulas
        super().__init_subclass__(**kw)
        for name in ("coefficients", "coefficients_one_sided", "log_snr", "f", "g2"):
            fn = cls.__dict__.get(name)
            if fn is not None and not getattr(fn, "_checks_time", False):
                setattr(cls, name, _time_checked(fn))

    # ---- the four functions -------------------------------------------------------------------
    def coefficients(self, t) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(alpha, sigma, dalpha/dt, dsigma/dt)`` at ``t``."""
        raise NotImplementedError

    def breakpoints(self, t_max: float, t_min: float) -> Tensor:
        """Times strictly inside ``(t_min, t_max)`` where the coefficients' derivatives jump (float64, decreasing;
        empty for smooth paths). An adaptive solver stops at each, so it never steps across a jump of the drift."""
        return torch.zeros(0, dtype=torch.float64)

    def coefficients_one_sided(self, t, side) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`coefficients` with the derivatives taken as limits from below (``side < 0``) or above
        (``side > 0``) where they jump (``side``: numbers or an array like ``t``). Smooth paths ignore
        ``side``; :class:`DiscreteVP` uses it at its knots, where a solver's stage at a step's end must see
        the derivative of the segment inside the step."""
        return self.coefficients(t)

    def coefficients_in_window(self, t: Tensor, side=None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`coefficients` (``side`` given: :meth:`coefficients_one_sided`) at float64 times the caller has
        already confined to a checked window (an adaptive solver's stage times, clamped to its window): without
        the domain check, a host synchronisation per call on the CPU, paid once per solve for the window."""
        fn = type(self).coefficients if side is None else type(self).coefficients_one_sided
        fn = getattr(fn, "_unchecked", fn)
        return fn(self, t) if side is None else fn(self, t, side)

    def alpha(self, t) -> Tensor:
        return self.coefficients(t)[0]

    def sigma(self, t) -> Tensor:
        return self.coefficients(t)[1]

    def dalpha(self, t) -> Tensor:
        return self.coefficients(t)[2]

    def dsigma(self, t) -> Tensor:
        return self.coefficients(t)[3]

    # ---- derived quantities -------------------------------------------------------------------
    def log_snr(self, t) -> Tensor:
        r""":math:`\lambda_t = 2\log\alpha_t - 2\log\sigma_t` (decreasing in ``t``)."""
        a, s, _, _ = self.coefficients(t)
        return 2.0 * (torch.log(a) - torch.log(s))

    def t_from_log_snr(self, lam) -> Tensor:
        """Inverse of :meth:`log_snr` (bisection on ``[0, 1]``; subclasses give closed forms)."""
        lam = as_time(lam)
        lo = torch.zeros_like(lam, dtype=torch.float64)
        hi = torch.ones_like(lam, dtype=torch.float64)
        target = lam.to(torch.float64)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            above = self.log_snr(mid) > target  # log-SNR decreases: still too early
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return (0.5 * (lo + hi)).to(lam.dtype)

    def scale(self, t) -> Tensor:
        r""":math:`\sqrt{\alpha_t^2+\sigma_t^2}`, the factor between this path and its variance-preserving
        twin with the same log-SNR (used by path transfer)."""
        a, s, _, _ = self.coefficients(t)
        return torch.sqrt(a * a + s * s)

    def f(self, t) -> Tensor:
        r"""Forward drift coefficient :math:`f_t = \alpha_t'/\alpha_t`."""
        a, _, da, _ = self.coefficients(t)
        return da / a

    def g2(self, t) -> Tensor:
        r"""Squared forward diffusion :math:`g_t^2 = 2\sigma\sigma' - 2 f \sigma^2`."""
        a, s, da, ds = self.coefficients(t)
        return 2.0 * s * (ds - da / a * s)

    def g(self, t) -> Tensor:
        return torch.sqrt(self.g2(t))

    # ---- sampling -----------------------------------------------------------------------------
    def prior_sample(self, shape: Sequence[int], *, t: float | None = None,
                     generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                     device=None) -> Tensor:
        r"""Draw from the noise end :math:`\mathcal N(0, \sigma_{t}^2 I)` at ``t`` (default ``t_max``).

        This neglects the data term :math:`\alpha_t x_0`, exact when :math:`\alpha_t = 0` (linear flow,
        cosine VP) and within :math:`\alpha_1` otherwise (VP: 0.0066 for the default betas).
        """
        t = self.t_max if t is None else check_number("t", t, ge=0.0, le=1.0)
        shape = check_shape(shape)
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise SdeflowTypeError(f"dtype must be a floating torch.dtype, got {dtype}")
        s = float(self.sigma(t))
        return s * torch.randn(tuple(shape), generator=check_generator(generator), dtype=dtype, device=device)

    def prior_draw(self, noise, like: Tensor, t: float | None = None) -> Tensor:
        r"""The sampler's starting point :math:`\sigma_t z` at ``t`` (default ``t_max``), with ``z`` the initial
        draw of a :mod:`sdeflow.noise` source (``noise.draw(-1, t, t, like)``, shaped and typed like ``like``):
        :meth:`prior_sample` driven by the sampler's noise source, so a seed gives the same samples however they
        are chunked or sharded (:func:`sdeflow.sample`, :func:`sdeflow.grid_opt.optimize_grid`)."""
        t = self.t_max if t is None else t
        return float(self.sigma(t)) * noise.draw(-1, t, t, like)

    def q_sample(self, x0: Tensor, t, *, generator: torch.Generator | None = None,
                 eps: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""Draw :math:`x_t \sim q(x_t|x_0) = \mathcal N(\alpha_t x_0, \sigma_t^2 I)`; returns ``(x_t, eps)``.

        ``t`` is a number or a ``(batch,)`` tensor.
        """
        check_float_tensor("x0", x0)
        check_generator(generator)
        if x0.dim() < 1:
            raise SdeflowValueError("x0 must have shape (batch, *event)")
        if isinstance(t, Tensor) and t.dim() > 0 and t.shape != (x0.shape[0],):
            raise SdeflowValueError(f"t must be a number or a (batch,) tensor with batch={x0.shape[0]}, got "
                                    f"shape {tuple(t.shape)}")
        if eps is not None and (not isinstance(eps, Tensor) or eps.shape != x0.shape):
            raise SdeflowValueError(f"eps must be a tensor shaped like x0 {tuple(x0.shape)}")
        if eps is None:
            eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        a, s, _, _ = self.coefficients(as_time(t).to(x0.device))
        return bcast(a.to(x0.dtype), x0) * x0 + bcast(s.to(x0.dtype), x0) * eps, eps

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({params})"

    def _params(self) -> dict:
        return {}


# ---------------------------------------------------------------------------------------------------
class VP(GaussianPath):
    r"""Variance-preserving SDE with linear :math:`\beta(t) = \beta_{min} + t(\beta_{max}-\beta_{min})`.

    :math:`\alpha_t = e^{-B(t)/2}`, :math:`\sigma_t = \sqrt{1 - e^{-B(t)}}`,
    :math:`B(t) = \int_0^t\beta = \beta_{min} t + \tfrac12(\beta_{max}-\beta_{min})t^2`;
    :math:`f = -\beta/2`, :math:`g^2 = \beta`. Song et al. 2021, eq. (11). Default ``t_min = 1e-3``.
    """

    t_min = 1e-3

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        beta_min = check_number("beta_min", beta_min)
        beta_max = check_number("beta_max", beta_max)
        if not (beta_min >= 0.0):
            raise SdeflowValueError(f"beta_min must be >= 0, got {beta_min}")
        if not (beta_max > beta_min):
            raise SdeflowValueError(f"beta_min must be < beta_max, got beta_min={beta_min}, "
                                    f"beta_max={beta_max}; swap them or raise beta_max")
        self.beta_min, self.beta_max = beta_min, beta_max

    def _params(self):
        return {"beta_min": self.beta_min, "beta_max": self.beta_max}

    def beta(self, t) -> Tensor:
        t = as_time(t)
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integrated_beta(self, t) -> Tensor:
        t = as_time(t)
        return t * (self.beta_min + 0.5 * t * (self.beta_max - self.beta_min))

    def _t_from_integrated_beta(self, B: Tensor) -> Tensor:
        d = self.beta_max - self.beta_min
        return 2.0 * B / (self.beta_min + torch.sqrt(self.beta_min ** 2 + 2.0 * d * B))

    def coefficients(self, t):
        t = as_time(t)
        B = self.integrated_beta(t)
        beta = self.beta(t)
        a = torch.exp(-0.5 * B)
        s = torch.sqrt(-torch.expm1(-B))
        return a, s, -0.5 * beta * a, 0.5 * beta * a * a / s

    def log_snr(self, t):
        B = self.integrated_beta(t)
        return -B - torch.log(-torch.expm1(-B))

    def t_from_log_snr(self, lam):
        lam = as_time(lam)
        return self._t_from_integrated_beta(torch.nn.functional.softplus(-lam))

    def f(self, t):
        return -0.5 * self.beta(t)

    def g2(self, t):
        return self.beta(t)


class SubVP(VP):
    r"""Sub-VP SDE (Song et al. 2021, eq. (12)): :math:`\alpha_t` as in :class:`VP`,
    :math:`\sigma_t = 1 - \alpha_t^2`; :math:`f = -\beta/2`, :math:`g^2 = \beta(1 - \alpha_t^4)`.
    Default ``t_min = 1e-3``."""

    def coefficients(self, t):
        t = as_time(t)
        B = self.integrated_beta(t)
        beta = self.beta(t)
        a = torch.exp(-0.5 * B)
        a2 = a * a
        return a, -torch.expm1(-B), -0.5 * beta * a, beta * a2

    def log_snr(self, t):
        B = self.integrated_beta(t)
        return -B - 2.0 * torch.log(-torch.expm1(-B))

    def t_from_log_snr(self, lam):
        lam = as_time(lam)
        # w = 1 - alpha^2 solves w^2 + u w - u = 0 with u = exp(-lambda)
        u = torch.exp(-lam)
        w = 2.0 * u / (u + torch.sqrt(u * u + 4.0 * u))
        B = torch.where(torch.isfinite(u), -torch.log1p(-w), -lam)
        return self._t_from_integrated_beta(B)

    def g2(self, t):
        a = torch.exp(-0.5 * self.integrated_beta(t))
        return self.beta(t) * (1.0 - a ** 4)


class CosineVP(GaussianPath):
    r"""Cosine schedule (Nichol & Dhariwal 2021) in continuous time:
    :math:`\alpha_t = \cos\phi_t/\cos\phi_0`, :math:`\phi_t = \frac{\pi}{2}\frac{t+s}{1+s}`,
    :math:`\sigma_t = \sqrt{1-\alpha_t^2}`; :math:`\alpha` is computed as
    :math:`\sin(\tfrac{\pi}{2}\tfrac{1-t}{1+s})/\cos\phi_0`, exactly 0 at ``t = 1`` and accurate near it.

    At ``t = 1``, :math:`\alpha = 0` (log-SNR :math:`-\infty`) and the forward drift :math:`f = \alpha'/\alpha`
    is infinite: noise and score predictions cannot be converted there, and the reverse SDE is arbitrarily
    stiff near it. The default ``t_max = 0.9946`` is DPM-Solver's ending time for this schedule (Lu et al.
    2022, ``NoiseScheduleVP('cosine')``; log-SNR -9.56, :math:`\alpha = 0.0084`, close to :class:`VP`'s
    :math:`\alpha(1) = 0.0066`), as Nichol & Dhariwal clip :math:`\beta_t \le 0.999` at this end.
    Default ``t_min = 1e-3``."""

    t_min = 1e-3
    t_max = 0.9946

    def __init__(self, s: float = 0.008):
        s = check_number("s", s)
        if not s > 0:
            raise SdeflowValueError(f"s must be > 0, got {s}")
        self.s = s
        self._phi0 = 0.5 * math.pi * s / (1.0 + s)
        self._dphi = 0.5 * math.pi / (1.0 + s)

    def _params(self):
        return {"s": self.s}

    def coefficients(self, t):
        t = as_time(t)
        c0 = math.cos(self._phi0)
        # cos(phi) = sin(pi/2 - phi) = sin(dphi (1 - t)): exactly 0 at t = 1, no cancellation near it
        a = torch.sin(self._dphi * (1.0 - t)) / c0
        phi = self._phi0 + self._dphi * t
        # 1 - cos^2(phi)/cos^2(phi0) = sin(phi - phi0) sin(phi + phi0) / cos^2(phi0), exact near t = 0
        s = torch.sqrt(torch.sin(phi - self._phi0) * torch.sin(phi + self._phi0)) / c0
        da = -torch.sin(phi) * self._dphi / c0
        return a, s, da, -a * da / s

    def t_from_log_snr(self, lam):
        lam = as_time(lam)
        tan0 = math.tan(self._phi0)
        sec0 = 1.0 / math.cos(self._phi0)
        # pi/2 - phi = atan(1 / sqrt(tan0^2 + sec0^2 e^-lam)): exact as lam -> -inf (t -> 1)
        rest = torch.atan(torch.rsqrt(tan0 ** 2 + sec0 ** 2 * torch.exp(-lam)))
        return 1.0 - rest / self._dphi


class VE(GaussianPath):
    r"""Variance-exploding SDE: :math:`\alpha = 1`,
    :math:`\sigma_t = \sigma_{min}(\sigma_{max}/\sigma_{min})^t`; :math:`f = 0`,
    :math:`g^2 = 2\sigma_t^2\log(\sigma_{max}/\sigma_{min})` (Song et al. 2021, eq. (9)). ``sigma(0)`` is
    ``sigma_min > 0``, so ``t_min`` defaults to 0 and a final denoising step maps to :math:`\sigma = 0`."""

    t_min = 0.0
    t_upper = math.inf  # sigma keeps growing geometrically beyond sigma_max (integration coordinates)

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        sigma_min = check_number("sigma_min", sigma_min)
        sigma_max = check_number("sigma_max", sigma_max)
        if not sigma_min > 0:
            raise SdeflowValueError(f"sigma_min must be > 0, got {sigma_min}; the VE path needs a positive "
                                    f"smallest noise level (use a final denoising step to reach sigma = 0)")
        if not sigma_max > sigma_min:
            raise SdeflowValueError(f"sigma_max must be > sigma_min, got sigma_min={sigma_min}, "
                                    f"sigma_max={sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self._log_ratio = math.log(sigma_max / sigma_min)

    def _params(self):
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def coefficients(self, t):
        t = as_time(t)
        s = self.sigma_min * torch.exp(self._log_ratio * t)
        one = torch.ones_like(s)
        return one, s, torch.zeros_like(s), s * self._log_ratio

    def log_snr(self, t):
        t = as_time(t)
        return -2.0 * (math.log(self.sigma_min) + self._log_ratio * t)

    def t_from_log_snr(self, lam):
        lam = as_time(lam)
        return (-0.5 * lam - math.log(self.sigma_min)) / self._log_ratio

    def f(self, t):
        return torch.zeros_like(as_time(t))

    def g2(self, t):
        s = self.sigma(t)
        return 2.0 * s * s * self._log_ratio


class LinearFlow(GaussianPath):
    r"""Linear interpolation (rectified flow / conditional OT flow matching):
    :math:`\alpha_t = 1 - t`, :math:`\sigma_t = t`, velocity :math:`v = \varepsilon - x_0`.
    Default ``t_min = 0`` (the velocity is finite there; score-based dynamics need ``t_min > 0``)."""

    t_min = 0.0

    def coefficients(self, t):
        t = as_time(t)
        one = torch.ones_like(t)
        return 1.0 - t, t, -one, one

    def log_snr(self, t):
        t = as_time(t)
        return 2.0 * (torch.log1p(-t) - torch.log(t))

    def t_from_log_snr(self, lam):
        return torch.sigmoid(-0.5 * as_time(lam))


class EDM(GaussianPath):
    r"""Variance exploding with the noise level as time (Karras et al. 2022, "EDM"):
    :math:`\alpha = 1`, :math:`\sigma_t = \sigma_{max} t`. Its probability-flow ODE in this time is
    :math:`dx/d\sigma = (x - \hat x_0)/\sigma`, the coordinates in which EDM's samplers step; use it as an
    ``integration_path`` for fields trained on any other path (its time is defined beyond ``t = 1``,
    :math:`\sigma > \sigma_{max}`, so it covers any window). Default ``t_min = 0.002/sigma_max``."""

    t_upper = math.inf

    def __init__(self, sigma_max: float = 80.0):
        sigma_max = check_number("sigma_max", sigma_max)
        if not sigma_max > 0:
            raise SdeflowValueError(f"sigma_max must be > 0, got {sigma_max}")
        self.sigma_max = sigma_max
        self.t_min = 0.002 / sigma_max

    def _params(self):
        return {"sigma_max": self.sigma_max}

    def coefficients(self, t):
        t = as_time(t)
        one = torch.ones_like(t)
        return one, self.sigma_max * t, torch.zeros_like(t), self.sigma_max * one

    def log_snr(self, t):
        return -2.0 * torch.log(self.sigma_max * as_time(t))

    def t_from_log_snr(self, lam):
        return torch.exp(-0.5 * as_time(lam)) / self.sigma_max

    def f(self, t):
        return torch.zeros_like(as_time(t))


def _autograd_derivative(fn: Callable[[Tensor], Tensor], t: Tensor, name: str = "alpha") -> Tensor:
    with torch.enable_grad():
        tt = t.detach().clone().requires_grad_(True)
        try:
            y = fn(tt)
        except RuntimeError as e:
            raise SdeflowValueError(f"{name}(t) cannot be differentiated by autograd ({e}); write {name} with torch "
                                    f"operations, or pass d{name}") from e
        if not isinstance(y, Tensor) or not y.requires_grad:  # constant in t (a number, or no graph to t)
            return torch.zeros_like(t)
        (d,) = torch.autograd.grad(y.sum(), tt, allow_unused=True)
    return torch.zeros_like(t) if d is None else d.detach()


class AffinePath(GaussianPath):
    r"""Any Gaussian path from user functions ``alpha(t)``, ``sigma(t)`` (elementwise on tensors).

    Derivatives come from ``dalpha``/``dsigma`` when given, else from autograd. The log-SNR must decrease
    strictly on ``[0, 1]`` (checked on 257 points at construction); its inverse is found by bisection.
    Example: ``AffinePath(lambda t: 1 - t, lambda t: t.sqrt())``.
    """

    def __init__(self, alpha: Callable[[Tensor], Tensor], sigma: Callable[[Tensor], Tensor],
                 dalpha: Optional[Callable[[Tensor], Tensor]] = None,
                 dsigma: Optional[Callable[[Tensor], Tensor]] = None, *, t_min: float = 1e-3,
                 name: str = "AffinePath"):
        for arg, fn in (("alpha", alpha), ("sigma", sigma), ("dalpha", dalpha), ("dsigma", dsigma)):
            if fn is not None and not callable(fn):
                raise SdeflowTypeError(f"{arg} must be a callable of a tensor t, got {type(fn).__name__}")
        self._alpha, self._sigma, self._dalpha, self._dsigma = alpha, sigma, dalpha, dsigma
        self.t_min = check_number("t_min", t_min, ge=0.0, lt=1.0, hint="t_min is where sampling stops, in [0, 1)")
        self.name = name
        tt = torch.linspace(0.0, 1.0, 257, dtype=torch.float64)
        a, s, _, _ = self.coefficients(tt)
        if a.shape != tt.shape or s.shape != tt.shape:
            raise SdeflowValueError("alpha and sigma must act elementwise: alpha(t) and sigma(t) must have "
                                    "t's shape")
        if (a < 0).any() or (s < 0).any() or not torch.isfinite(a).all() or not torch.isfinite(s).all():
            raise SdeflowValueError("alpha(t) and sigma(t) must be finite and >= 0 on [0, 1]")
        lam = 2.0 * (torch.log(a) - torch.log(s))
        inner = lam[1:-1]
        if not (inner[1:] < inner[:-1]).all():
            raise SdeflowValueError("alpha(t)/sigma(t) must decrease strictly on (0, 1) (log-SNR "
                                    "decreasing: t = 0 is data, t = 1 is noise)")
        self._check_derivatives()

    def _check_derivatives(self) -> None:
        """The derivatives the dynamics use (given ``dalpha``/``dsigma``, or autograd's) against central
        differences of ``alpha``/``sigma`` on 33 points of [0.02, 0.98] (float64, step 1e-5: error ~1e-9
        relative): a derivative that is not the function's (a typo, a numpy function autograd cannot see
        through, read as constant) would drive every sampler to a wrong answer silently."""
        t = torch.linspace(0.02, 0.98, 33, dtype=torch.float64)
        h = 1e-5
        _, _, da, ds = self.coefficients(t)
        for arg, fn, d, given in (("alpha", self._alpha, da, self._dalpha), ("sigma", self._sigma, ds, self._dsigma)):
            f = torch.as_tensor(fn(t), dtype=torch.float64)
            fd = (torch.as_tensor(fn(t + h), dtype=torch.float64) - torch.as_tensor(fn(t - h), dtype=torch.float64))
            fd = fd / (2 * h)
            bad = (d - fd).abs() > 1e-4 * (fd.abs() + f.abs()) + 1e-9
            if bad.any():
                i = int(bad.nonzero()[0])
                at = f"t={float(t[i]):.3g}: {float(d[i]):.6g} against {float(fd[i]):.6g} by central differences"
                if given is not None:
                    raise SdeflowValueError(f"d{arg}(t) is not the derivative of {arg}(t) at {at}; fix d{arg}, or "
                                            f"drop it to let autograd differentiate {arg}")
                raise SdeflowValueError(f"autograd's derivative of {arg}(t) is wrong at {at} ({arg} is not "
                                        f"differentiable by autograd: numpy, .item() or a detach inside it?); "
                                        f"write {arg} with torch operations, or pass d{arg}")

    def _params(self):
        return {"name": self.name}

    def coefficients(self, t):
        t = as_time(t)
        a = self._alpha(t)
        s = self._sigma(t)
        a = torch.as_tensor(a, dtype=t.dtype).expand_as(t) if not isinstance(a, Tensor) else a
        s = torch.as_tensor(s, dtype=t.dtype).expand_as(t) if not isinstance(s, Tensor) else s
        da = self._dalpha(t) if self._dalpha is not None else _autograd_derivative(self._alpha, t, "alpha")
        ds = self._dsigma(t) if self._dsigma is not None else _autograd_derivative(self._sigma, t, "sigma")
        return a, s, torch.as_tensor(da, dtype=t.dtype), torch.as_tensor(ds, dtype=t.dtype)


class DiscreteVP(GaussianPath):
    r"""DDPM's discrete chain as a path: a table :math:`\beta_1..\beta_T`, knots :math:`t_i = i/T` with
    :math:`\bar\alpha_i = \prod_{j\le i}(1-\beta_j)`, :math:`\alpha = \sqrt{\bar\alpha}`,
    :math:`\sigma = \sqrt{1-\bar\alpha}`. Between knots :math:`\log\bar\alpha` is linear in ``t``
    (so ``t_from_log_snr`` is exact and derivatives are piecewise constant). Default: beta linear from
    1e-4 to 0.02, T = 1000 (Ho et al. 2020). Default ``t_min = 1/T``.

    ``index_to_t(i)`` maps DDPM's 0-based step index ``i`` (noise level ``alphas_cumprod[i]``) to
    ``t = (i + 1)/T``.
    """

    def __init__(self, betas: Sequence[float] | Tensor | None = None, *, T: int = 1000,
                 beta_start: float = 1e-4, beta_end: float = 0.02):
        if betas is None:
            check_int("T", T, what="a positive integer", hint=" (the number of DDPM steps)", error=SdeflowValueError)
            beta_start, beta_end = check_number("beta_start", beta_start), check_number("beta_end", beta_end)
            if not (0 < beta_start < beta_end < 1):
                raise SdeflowValueError(f"need 0 < beta_start < beta_end < 1, got beta_start={beta_start}, "
                                        f"beta_end={beta_end}")
            betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        try:
            betas = torch.as_tensor(betas, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as e:
            raise SdeflowTypeError(f"betas must be a sequence or tensor of numbers in (0, 1), got "
                                   f"{type(betas).__name__}") from e
        if betas.dim() != 1:
            raise SdeflowValueError(f"betas must be a 1-D table beta_1..beta_T, got shape {tuple(betas.shape)}; "
                                    f"pass one schedule (e.g. betas.flatten() if that is what you mean)")
        if betas.numel() < 1 or not ((betas > 0) & (betas < 1)).all():
            raise SdeflowValueError("betas must be a non-empty table with every entry in (0, 1)")
        self.betas = betas
        self.T = int(betas.numel())
        self._log1m = torch.log1p(-betas)  # per-segment log(1 - beta_i)
        self._L = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(self._log1m, 0)])
        self.alphas_cumprod = torch.exp(self._L[1:])
        self.t_min = 1.0 / self.T

    def _params(self):
        return {"T": self.T}

    @property
    def timesteps(self) -> Tensor:
        """Knot times ``i/T`` for ``i = 1..T`` (float64)."""
        return torch.arange(1, self.T + 1, dtype=torch.float64) / self.T

    def index_to_t(self, i) -> Tensor:
        """Time of the schedule's index ``i`` in ``[0, T - 1]`` (index ``i`` is ``t = (i + 1) / T``)."""
        i = as_time(i)
        _check_range(i, 0.0, self.T - 1, "i", f"a DDPM index in [0, T - 1] = [0, {self.T - 1}]")
        return (i + 1.0) / self.T

    def t_to_index(self, t) -> Tensor:
        """The nearest index of time ``t`` in ``[1/T, 1]`` (inverse of :meth:`index_to_t`)."""
        t = as_time(t)
        _check_range(t, 0.5 / self.T, 1.0, "t", f"a time in [1/T, 1] = [{1.0 / self.T:g}, 1] (index 0 is t = 1/T)")
        return torch.round(t * self.T).long() - 1

    def _segment(self, t: Tensor, side=None):
        u = t * self.T
        i = torch.ceil(u)
        if side is not None:  # at a knot (to rounding), the segment below (side < 0) or above (side > 0) it
            r = torch.round(u)
            knot = (u - r).abs() <= 1e-9 * max(self.T, 1)
            side = torch.as_tensor(side, dtype=u.dtype, device=u.device).expand_as(u)
            i = torch.where(knot & (side < 0), r, torch.where(knot & (side > 0), r + 1, i))
        i = torch.clamp(i, 1, self.T).long()
        L = self._L.to(t.device, t.dtype)
        slope = self._log1m.to(t.device, t.dtype)
        Li = L[i - 1] + (u - (i - 1).to(t.dtype)) * slope[i - 1]
        return Li, slope[i - 1] * self.T

    piecewise = True

    def breakpoints(self, t_max: float, t_min: float) -> Tensor:
        """The knots ``i/T`` strictly inside ``(t_min, t_max)``, decreasing."""
        i = torch.arange(self.T, 0, -1, dtype=torch.float64)
        t = i / self.T
        return t[(t < t_max - 1e-12) & (t > t_min + 1e-12)]

    def coefficients(self, t):
        return self._coefficients(as_time(t), None)

    def coefficients_one_sided(self, t, side):
        r"""The derivatives are piecewise constant in :math:`\log\bar\alpha`: at a knot ``i/T`` they are the
        limit from below (segment ``i``, the default) or from above (segment ``i + 1``) by ``side``."""
        return self._coefficients(as_time(t), side)

    def _coefficients(self, t: Tensor, side):
        L, dL = self._segment(t, side)
        a = torch.exp(0.5 * L)
        s = torch.sqrt(-torch.expm1(L))
        da = 0.5 * a * dL
        return a, s, da, -a * da / s

    def log_snr(self, t):
        L, _ = self._segment(as_time(t))
        return L - torch.log(-torch.expm1(L))

    def t_from_log_snr(self, lam):
        lam = as_time(lam)
        Lstar = torch.nn.functional.logsigmoid(lam)
        negL = (-self._L).to(lam.device, lam.dtype)
        i = torch.clamp(torch.searchsorted(negL, (-Lstar).contiguous()), 1, self.T)
        slope = self._log1m.to(lam.device, lam.dtype)
        frac = (Lstar - (-negL[i - 1])) / slope[i - 1]
        return ((i - 1).to(lam.dtype) + frac) / self.T
