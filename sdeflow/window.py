r"""The sampling window ``[t_min, t_max]``: where a sampler starts and where it stops.

A path's ends can be singular for what a sampler needs there:

* at the noise end, where :math:`\alpha \to 0` (:class:`~sdeflow.paths.CosineVP`,
  :class:`~sdeflow.paths.LinearFlow`, most :class:`~sdeflow.paths.AffinePath`\ s), a noise or score
  prediction cannot be converted (:math:`x_0 = (x - \sigma\varepsilon)/\alpha`) and the reverse SDE's
  :math:`g^2 = 2\sigma\sigma' - 2(\alpha'/\alpha)\sigma^2` is infinite;
* at the data end, where :math:`\sigma \to 0` (:class:`~sdeflow.paths.VP` at ``t = 0``,
  :class:`~sdeflow.paths.LinearFlow`), a data prediction cannot be turned into a velocity
  (:math:`\varepsilon = (x - \alpha x_0)/\sigma`), a score is infinite, and the noise term
  :math:`\gamma^2/(2\sigma)` of the reverse family diverges.

:func:`default_window` gives each path's default ends (``path.t_max``, ``path.t_min``) unless the field's kind
or the noise level makes an end singular; then that end moves to a fixed log-SNR: the noise end to
:data:`~sdeflow.paths.LOG_SNR_NOISE_END` (-10, :class:`~sdeflow.paths.VP`'s at ``t = 1``), the data end to
:data:`~sdeflow.paths.LOG_SNR_DATA_END` (:math:`\sigma/\alpha = 0.002`, EDM's smallest noise level). Ends
the user gives are kept as given: the sampler's term then refuses the singular times before any network call
(:class:`~sdeflow.errors.SingularityError`).

An end far beyond those log-SNRs but finite (:data:`EXTREME_LOG_SNR`: :math:`30 < |\lambda| < \infty`, e.g.
``VE(1e-30, 1e30)`` or ``VP(beta_max=1e6)``; an exact end such as LinearFlow's :math:`\alpha(1) = 0` is the
path's own) moves to them too, for every field kind: there the data's share of the state
(:math:`\alpha/\sigma`, or the noise's, :math:`\sigma/\alpha`) is below :math:`e^{-15} = 3\cdot10^{-7}`, under
float32's resolution, so steps there change nothing while every named grid would spend most of its steps
on them (a data field's samples collapse to the mean on such a window).

:func:`check_prior` refuses the default prior draw :math:`N(0, \sigma_{t_{max}}^2)` where it does not stand for
the marginal :math:`\alpha x_0 + \sigma\varepsilon`: a window starting above log-SNR :data:`LOG_SNR_PRIOR_MAX`
(-4, :math:`\alpha/\sigma > e^{-2} = 0.14`: a path that never reaches noise, e.g. ``DiscreteVP(T=20)`` or
``VE(sigma_max=0.5)``, or an early ``t_max``). Stable Diffusion's schedule ends at -5.4 (the noise end of
common latent models); VP, DDPM's and cosine schedules at -10, VE/EDM with ``sigma_max = 80`` at -8.8.
"""

from __future__ import annotations

import math

import torch

from .conversions import conversion
from .paths import LOG_SNR_DATA_END, LOG_SNR_NOISE_END, GaussianPath

__all__ = ["EXTREME_LOG_SNR", "LOG_SNR_PRIOR_MAX", "check_ends", "check_prior", "default_window", "singular_reason"]

#: ends beyond this log-SNR (in absolute value) are moved to the default ends: steps there change nothing
EXTREME_LOG_SNR = 30.0
#: the default prior N(0, sigma^2) is refused for a window starting above this log-SNR (alpha/sigma > 0.14)
LOG_SNR_PRIOR_MAX = -4.0


def _log_snr(path: GaussianPath, t: float) -> float:
    with torch.no_grad():
        return float(path.log_snr(torch.tensor([float(t)], dtype=torch.float64))[0])


def check_prior(path: GaussianPath, t_max: float) -> None:
    r"""Raise :class:`~sdeflow.errors.SdeflowValueError` if the default prior draw :math:`N(0, \sigma^2)` at
    ``t_max`` would misstate the marginal (log-SNR above :data:`LOG_SNR_PRIOR_MAX`; module docstring)."""
    from .errors import SdeflowValueError

    lam = _log_snr(path, t_max)
    if lam > LOG_SNR_PRIOR_MAX:
        raise SdeflowValueError(
            f"the window starts at t_max={float(t_max):.6g} where {path!r} has log-SNR {lam:.3g} (alpha/sigma = "
            f"{math.exp(lam / 2):.3g}): the data still make up a large part of x_t there, so the default prior "
            f"N(0, sigma^2) is not the marginal alpha*x0 + sigma*eps and the samples would be wrong. Start where "
            f"the path reaches noise (log-SNR <= {LOG_SNR_PRIOR_MAX:g}: a larger t_max, or a path/schedule that "
            f"ends in noise), or pass x_init drawn from the marginal at t_max (e.g. path.q_sample(data, t_max) "
            f"for SDEdit-style editing; path.prior_sample(...) if you accept the approximation)")


def singular_reason(path: GaussianPath, t: float, kind: str, *, gamma2=None, targets=("drift",),
                    dtype: torch.dtype = torch.float64, span: float = 1.0) -> str | None:
    r"""Why a field of ``kind`` on ``path`` cannot be used at time ``t`` (None when it can): a conversion to
    one of ``targets`` (``"drift"`` with noise level ``gamma2`` = :math:`\gamma_t^2`, ``"data"``, ...) is not
    finite, or a noise/score prediction's conversion, which carries :math:`f = \alpha'/\alpha` times the
    state, would lose more than half of ``dtype``'s digits over a step of length ``span``
    (:math:`|f|\,\mathrm{span} > \epsilon^{-1/2}`: :math:`\alpha` is zero to rounding)."""
    tt = torch.tensor([float(t)], dtype=torch.float64)
    co = path.coefficients(tt)
    a, s, da = float(co[0][0]), float(co[1][0]), float(co[2][0])
    if kind in ("noise", "score") and a != 0.0:
        f = abs(da / a)
        if not f * span <= torch.finfo(dtype).eps ** -0.5:
            return (f"a {kind} prediction is converted through x0 = (x - sigma*eps)/alpha where alpha = {a:.3g} is "
                    f"zero to rounding (|dalpha/dt / alpha| = {f:.3g})")
    g2 = None if gamma2 is None else torch.tensor([float(gamma2)], dtype=torch.float64)
    for target in targets:
        with torch.no_grad():
            P, Q = conversion(kind, target, *co, gamma2=g2 if target == "drift" else None)
        if not (math.isfinite(float(P[0])) and math.isfinite(float(Q[0]))):
            what = "the reverse dynamics' drift" if target == "drift" else f"a {target} prediction"
            extra = f", gamma^2 = {float(gamma2):.3g}" if (target == "drift" and gamma2) else ""
            return f"{what} is infinite or undefined from a {kind} field where alpha = {a:.3g}, sigma = {s:.3g}{extra}"
    return None


def default_window(path: GaussianPath, kind: str, *, gamma2_fn=None, final_denoise: bool = False,
                   dtype: torch.dtype = torch.float64, t_max: float | None = None,
                   t_min: float | None = None, targets=("drift",)) -> tuple[float, float]:
    r"""``(t_max, t_min)``: the given ends, or the path's defaults moved off a singular end (module docstring).

    ``gamma2_fn`` maps float64 times to :math:`\\gamma_t^2` (None: the probability-flow ODE); ``final_denoise``
    adds the data prediction at ``t_min`` to what must be regular there; ``targets`` are the conversions the
    solver asks for (``solver.targets``: ``"drift"``, ``"data"``, ``"noise"``, ``"score"``)."""
    def g2(t):
        if gamma2_fn is None:
            return None
        with torch.no_grad():
            return float(gamma2_fn(torch.tensor([t], dtype=torch.float64))[0])

    span = float(path.t_max - path.t_min)
    if t_max is None:
        t_max = float(path.t_max)
        if (singular_reason(path, t_max, kind, gamma2=g2(t_max), targets=targets, dtype=dtype, span=span) is not None
                or -math.inf < _log_snr(path, t_max) < -EXTREME_LOG_SNR):
            alt = float(path.t_from_log_snr(torch.tensor(LOG_SNR_NOISE_END, dtype=torch.float64)))
            if 0.0 < alt < t_max:
                t_max = alt
    if t_min is None:
        t_min = float(path.t_min)
        at_min = tuple(targets) + (("data",) if final_denoise else ())
        if (singular_reason(path, t_min, kind, gamma2=g2(t_min), targets=at_min, dtype=dtype, span=span) is not None
                or EXTREME_LOG_SNR < _log_snr(path, t_min) < math.inf):
            alt = float(path.t_from_log_snr(torch.tensor(LOG_SNR_DATA_END, dtype=torch.float64)))
            if t_min < alt < t_max:
                t_min = alt
    return float(t_max), float(t_min)


def check_ends(path: GaussianPath, t_max: float, t_min: float, kind: str, *, gamma2_fn=None,
               final_denoise: bool = False, dtype: torch.dtype = torch.float64, targets=("drift",)) -> None:
    """Raise :class:`~sdeflow.errors.SingularityError` if either end of the window is singular for this field
    kind and noise level (the check adaptive solvers get up front; fixed-step solvers check every planned
    evaluation in their term's tables)."""
    from .errors import SingularityError

    span = abs(float(t_max) - float(t_min))
    ends = (("t_max", t_max, tuple(targets)), ("t_min", t_min, tuple(targets) + (("data",) if final_denoise else ())))
    for end, t, targets in ends:
        g2 = None
        if gamma2_fn is not None:
            with torch.no_grad():
                g2 = float(gamma2_fn(torch.tensor([float(t)], dtype=torch.float64))[0])
        why = singular_reason(path, t, kind, gamma2=g2, targets=targets, dtype=dtype, span=span)
        if why is not None:
            move = "a smaller t_max" if end == "t_max" else "a larger t_min"
            raise SingularityError(f"{end}={float(t):.6g} is singular on {path!r}: {why}. Use {move} (omit it "
                                   f"for the path's default window for this field kind and noise level)",
                                   t=float(t), kind=kind)
