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

**Where a budget stops** (:func:`budget_end`). Given a budget of ``nfe`` evaluations and no ``t_min`` /
``final_denoise``, :func:`sdeflow.sample` stops the probability-flow ODE early, at a noise level
:math:`\sigma_e` (the path's :math:`\sigma/\alpha`, data of unit scale), and finishes with one denoising step
:math:`x \mapsto \hat x_0(x, t_e)`. Two errors trade against each other:

* the denoising step's, growing as the stop moves away from the data. In EDM's coordinates the flow from
  :math:`\sigma_e` to 0 moves :math:`x` by :math:`\int_0^{\sigma_e} s\,\nabla\log p_s\,ds`, the denoiser by
  :math:`\sigma_e^2\nabla\log p_{\sigma_e}`. For a Gaussian of unit variance they differ by
  :math:`1-(1+\sigma_e^2)^{-1/2}\approx\sigma_e^2/2` per unit of the sample; for data with structure finer
  than :math:`\sigma_e` (narrow modes, thin arms, manifolds: what trained networks model),
  :math:`|\nabla\log p_s|\sim 1/s` and they differ by :math:`c_d\,\sigma_e`, first order. The rule takes the
  first-order term;
* the discretisation's: an order-:math:`p` solver spending :math:`m` evaluations on its steps across the
  log-SNR range :math:`[\lambda_{max}, \lambda_e]` has a global error :math:`C h^p` with :math:`h =
  (\lambda_e - \lambda_{max})/m` the log-SNR spacing of its evaluations, shrinking as the range shrinks
  (every step is shorter when the window is shorter).

Their sum is smallest, to leading order, where they are of the same size: :math:`c_d\,\sigma_e = C h^p`, i.e.

.. math:: \sigma_e = \kappa\, h^{p},\qquad h = \frac{\lambda_e - \lambda_{max}}{m},\qquad
          \lambda_e = -2\ln\sigma_e,

solved for :math:`\lambda_e` (one root: the left side falls and the right side rises with
:math:`\lambda_e`). :math:`m` counts the evaluations of the steps the budget buys after paying the denoising
step (:math:`n` steps of ``solver.evals_per_step``; per evaluation rather than per step: with the per-step
spacing the rule stops RK4 so early that its error is 3-24x the best stop's at 10-50 evaluations, its few
long steps being far outside their asymptotic regime), :math:`p` the solver's declared order (``solver.order``),
:math:`\lambda_{max}` the start's log-SNR (at least :data:`~sdeflow.paths.LOG_SNR_NOISE_END`). The form is
derived; the constant :math:`\kappa = C/c_d` (:data:`END_BALANCE`), a ratio of error constants no order
argument gives, is measured once for all solvers, grids and problems together: over the benchmark suite (4
oracle and 3 learned-network problems; Euler, midpoint and RK4 on the Karras grid, Heun, DPM-Solver++ 2M/3M
and UniPC on the log-SNR and Karras grids; 10/20/50 evaluations: 231 configurations, a scan of 19 stops from
sigma 0.002 to 3 on 300 samples, ``docs/bench.md``) the error at this stop is 1.31x the error at the best
stop of the scan in geometric mean (1.18x on the learned problems, 1.42x on the oracles; worst 6.2x) for
:math:`\kappa` = 0.08, within 1.29x-1.32x for every :math:`\kappa` from 0.07 to 0.16 (the optimum is flat),
against 2.0x (worst 22x) for stopping at the path's data end. The Gaussian's second-order balance
(:math:`\sigma_e = \kappa h^{p/2}`) fitted less well (per-step spacing, the 168 configurations of the four
solvers on both grids: 1.27x against 1.24x). More budget stops closer to the data
(:math:`n` larger, :math:`\lambda_e` larger); the stop never passes the default data end, where the rule
keeps the path's end and still finishes with the denoising step when :math:`\sigma > 0` there.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .conversions import conversion
from .paths import LOG_SNR_DATA_END, LOG_SNR_NOISE_END, GaussianPath

__all__ = ["END_BALANCE", "EXTREME_LOG_SNR", "LOG_SNR_PRIOR_MAX", "budget_end", "check_ends", "check_prior",
           "DefaultConfiguration", "DEFAULT_BANDS", "UNIPC3", "default_configuration", "default_solver",
           "default_window", "finish_at", "singular_reason", "LMS_MIN_NFE"]

#: ends beyond this log-SNR (in absolute value) are moved to the default ends: steps there change nothing
EXTREME_LOG_SNR = 30.0
#: the default prior N(0, sigma^2) is refused for a window starting above this log-SNR (alpha/sigma > 0.14)
LOG_SNR_PRIOR_MAX = -4.0
#: :math:`\\kappa` of the stop rule :math:`\\sigma_e = \\kappa h^p` (module docstring; measured on the
#: benchmark suite, flat between 0.07 and 0.16)
END_BALANCE = 0.08


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


def budget_end(path: GaussianPath, kind: str, solver, nfe: int, t_max: float, t_floor: float) -> tuple[float, bool]:
    r"""``(t_min, final_denoise)`` for a probability-flow ODE with a budget of ``nfe`` evaluations from
    ``t_max``: the stop :math:`\sigma_e = \kappa h^p` of the module docstring, never past ``t_floor``
    (the default data end), and a final denoising step whenever the stop has :math:`\sigma > 0`, a data
    prediction is regular there and the budget leaves a step after paying it. ``solver`` is a solver
    instance (its ``order`` and ``max_steps``)."""
    t_max, t_floor = float(t_max), float(t_floor)
    n = solver.max_steps(int(nfe) - 1)
    if n < 1:
        return t_floor, False
    p = float(solver.order)
    m = solver.nfe_for_steps(n)  # the evaluations the steps spend: h is their log-SNR spacing
    lam_max = float(path.log_snr(torch.tensor(t_max, dtype=torch.float64)))
    lam_floor = float(path.log_snr(torch.tensor(t_floor, dtype=torch.float64)))
    lam_max = max(lam_max, LOG_SNR_NOISE_END)  # below it, nothing of the data is left to resolve (LinearFlow: -inf)
    # sigma_e = exp(-lam/2) falls, kappa*h^(p/2) rises with lam: bisect their difference's sign change
    lo, hi = lam_max, lam_max + 200.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if math.exp(-0.5 * mid) > END_BALANCE * ((mid - lam_max) / m) ** p:
            lo = mid
        else:
            hi = mid
    lam_e = 0.5 * (lo + hi)
    t_e = t_floor
    if lam_e < lam_floor:
        t = float(path.t_from_log_snr(torch.tensor(lam_e, dtype=torch.float64)))
        if t_floor < t < t_max:
            t_e = t
    return finish_at(path, kind, t_e, t_floor)


def finish_at(path: GaussianPath, kind: str, t_e: float, t_floor: float) -> tuple[float, bool]:
    r"""``(t_min, final_denoise)`` for a stop at ``t_e``: finish with the denoising step when :math:`\sigma > 0`
    there and a data prediction is regular there; where it is not, keep the default data end ``t_floor``
    without it. :func:`budget_end`'s last step, and the whole window of a default that runs to the path's end
    (:func:`default_configuration`'s ``"path"``) when the budget pays a step besides the denoising one."""
    sigma = float(path.sigma(torch.tensor([t_e], dtype=torch.float64))[0])
    if not sigma > 0.0:
        return t_e, False
    if singular_reason(path, t_e, kind, targets=("data",)) is not None:
        return t_floor, False
    return t_e, True


#: the smallest budget at which :func:`default_configuration` runs LMS over a VP schedule's whole window: with
#: one to three evaluations (Euler, then two- and three-drift steps across the whole window) the preflight's
#: narrow Gaussian probe finds it unstable, and UniPC with the budget's end runs instead
LMS_MIN_NFE = 4
#: the budget bands of :func:`default_configuration` off the VP schedules: up to 14 evaluations as measured at 10,
#: 15-35 as at 15-32 (UniPC-3 on the log-SNR grid with the budget's stop), 36 and above as at 40-100 (on Karras'
#: grid): 14 at the geometric mean of 10 and 20, 35 of 32 and 40, where the two UniPC-3 settings swap places
DEFAULT_BANDS = (14, 35)
#: the solver options of UniPC-3 (``unipc`` with the third-order predictor; corrected order 4)
UNIPC3 = (("order", 3),)


class DefaultConfiguration(NamedTuple):
    r"""What :func:`default_configuration` chooses: ``solver`` and ``grid`` names, ``window`` (``"budget"``:
    :func:`budget_end`'s stop; ``"path"``: the path's default data end, then :func:`finish_at`'s final step)
    and the solver's ``options`` (pairs, e.g. ``(("order", 3),)``: UniPC-3)."""

    solver: str
    grid: str
    window: str
    options: tuple = ()


def default_solver(nfe: int, path: GaussianPath, kind: str | None = None) -> tuple[str, str]:
    """``(solver, grid)`` of :func:`default_configuration` (without its window and the solver's options)."""
    return tuple(default_configuration(nfe, path, kind)[:2])


def default_configuration(nfe: int, path: GaussianPath, kind: str | None = None) -> DefaultConfiguration:
    r"""``(solver, grid, window, options)`` (:class:`DefaultConfiguration`): the configuration
    :func:`sdeflow.sample` runs with only a budget (``nfe=``, no solver, no grid, no window; with a grid named
    and no solver, the rule's solver runs on that grid with the budget's stop). ``window`` is
    ``"budget"`` (stop where :func:`budget_end` puts it for that solver's order, then the denoising step) or
    ``"path"`` (run to the path's default data end, then the denoising step where a data prediction is regular
    there: :func:`finish_at`); ``options`` the solver's (``(("order", 3),)``: UniPC-3, the third-order
    predictor with the corrector, diffusers' ``UniPCMultistepScheduler(solver_order=3)``).

    * On the linear-beta VP schedules (:class:`~sdeflow.paths.DiscreteVP`, DDPM's, and its continuous twin
      :class:`~sdeflow.paths.VP`): from 4 (:data:`LMS_MIN_NFE`) to 14 evaluations, k-diffusion's linear
      multistep (``lms``, 4 drifts) on the ``"quadratic"`` grid (quadratic in the path's time, as DDIM's and
      DPM-Solver's ``time_quadratic`` skip) over the path's whole window; from 36 UniPC-3 on the log-SNR grid;
      otherwise UniPC (``unipc``, bh2) on the quadratic grid; both on the budget's window.
    * On every other path: UniPC (bh2) on the ``"log_snr"`` grid up to 14 evaluations, UniPC-3 on the
      log-SNR grid from 15 to 35, both on the budget's window; from 36, UniPC-3 on Karras' grid, over the
      path's whole window on :class:`~sdeflow.paths.VE` and :class:`~sdeflow.paths.EDM` (then the denoising
      step: diffusers' UniPC-3 with Karras' sigmas as EDM's samplers set them) and on the budget's window on
      the others (their data end can be at infinite log-SNR, where Karras' grid has no end).

    ``kind`` (the field's prediction) does not enter the choice: every solver here converts the field to
    the prediction it integrates.

    How it was chosen (``benchmarks/generalisation.py``, ``benchmarks/heldout_networks.py``,
    ``docs/bench.md``, "The window a budget chooses"). Up to 14 evaluations on VE and the VP schedules as
    before: at 10, 20 and 50 evaluations each configuration (solver, named grid, the budget's window or the
    path's) was ranked by its worst ratio of pathwise RMS error to the best named configuration of each
    problem, per path family (on VE the 13 problems of the suite and two held-out networks: worst 2.2x; on the
    VP schedules 11 problems: LMS over the whole window, worst 3.9x, geometric mean 1.5x, where UniPC with the
    budget's end was 7.0x on a network trained on thin rings; UniPC at 20 and 50, 6.8x and 4.8x; LMS is not
    kept beyond 14: on anisotropic mixtures its error stops falling). From 15 evaluations on VE/EDM the rule
    was re-derived against the best *peer*, diffusers' UniPC-3 on Karras' sigmas among them (the strongest
    peer there: on the trained networks up to 5.5x more accurate in RMS than the rule before at 50
    evaluations), on
    16 trained-network cases (the suite's two and seven held-out networks, on two noise draws) and 11 oracles at
    10-100 evaluations: UniPC-3 on the log-SNR grid with the budget's stop is within 0.79-0.89x of the best
    peer's RMS on every network at 15-25 evaluations and 1.03x at 32 (the rule before, DPM-Solver++(3M) and
    the exact-interpolant 3M, 1.1-2.5x), and on Karras' grid over the whole window within 1.02-1.10x at
    40-100 (the rule before 2.9-14.8x; Kutta's 3/8 rule, torchdiffeq's ``rk4``, 4.9-8.5x). On the VP
    schedules at 32-100 evaluations UniPC-3 on the log-SNR grid with the budget's stop is 0.10-0.65x the RMS of the rule before
    (UniPC on the quadratic grid) on every trained network (seven cases; at 50 on one the rule before was 9x
    the peer's worst sample, a sample changing mode), at the price of 1.4-4x on two 8- and 16-D oracles (still
    within 0.33x of the best peer). The quadratic grid is 3-3000x less accurate than the log-SNR grid
    on the VE problems and 2-8x more accurate on DDPM's schedule, hence the split by path.
    """
    from .paths import EDM, VE, VP, DiscreteVP

    nfe = int(nfe)
    if type(path) in (DiscreteVP, VP):  # the measured schedules (not SubVP, CosineVP, ...: log-SNR below)
        if LMS_MIN_NFE <= nfe <= DEFAULT_BANDS[0]:
            return DefaultConfiguration("lms", "quadratic", "path")
        if nfe > DEFAULT_BANDS[1]:
            return DefaultConfiguration("unipc", "log_snr", "budget", UNIPC3)
        return DefaultConfiguration("unipc", "quadratic", "budget")
    if nfe <= DEFAULT_BANDS[0]:
        return DefaultConfiguration("unipc", "log_snr", "budget")
    if nfe <= DEFAULT_BANDS[1]:
        return DefaultConfiguration("unipc", "log_snr", "budget", UNIPC3)
    return DefaultConfiguration("unipc", "karras", "path" if type(path) in (VE, EDM) else "budget", UNIPC3)
