r"""Log-likelihood of data under a trained field, through the probability-flow ODE.

Along the probability-flow ODE :math:`dx/dt = v(x, t)` of a path (every field converts to its velocity
:math:`v`, :meth:`sdeflow.fields.Field.velocity`), the marginal density obeys the instantaneous change of
variables (Chen et al. 2018, "Neural ODEs"; Grathwohl et al. 2019, FFJORD; Song et al. 2021, Sec. D.2)

.. math:: \frac{d}{dt}\log p_t(x_t) = -\nabla\cdot v(x_t, t),

so integrating :math:`x` and :math:`\int\nabla\cdot v\,dt` together from :math:`t_{min}` (the data end)
up to :math:`t_{max}` (the noise end) gives

.. math:: \log p_{t_{min}}(x) = \log p_{t_{max}}(x_{t_{max}}) + \int_{t_{min}}^{t_{max}}
          \nabla\cdot v(x_t, t)\,dt .

:func:`log_likelihood` integrates the augmented state :math:`[x, \ell]`, :math:`\ell' = \nabla\cdot v`,
with :func:`sdeflow.solve` and any ODE solver that needs only a drift (``euler``, ``heun``, ``midpoint``,
``rk4``, adaptive ``dopri5`` with ``rtol``/``atol``, ``torchdiffeq:<method>``).

**The prior at** :math:`t_{max}`. By default :math:`\log p_{t_{max}}` is the Gaussian
:math:`\mathcal N(0, \sigma_{t_{max}}^2 I)`, the density :meth:`~sdeflow.paths.GaussianPath.prior_sample`
draws from. It is exact when :math:`\alpha_{t_{max}} = 0` (:class:`~sdeflow.paths.LinearFlow` at
``t_max = 1``); otherwise the true marginal is the data scaled by :math:`\alpha` and blurred by
:math:`\sigma`, and with :math:`r = \alpha/\sigma` at :math:`t_{max}`, :math:`z = x_{t_{max}}/\sigma`, data
mean :math:`\mu` and covariance :math:`C`, the error :math:`\log\mathcal N(x;0,\sigma^2) - \log p_{t_{max}}(x)`
is :math:`-r\,\mu\cdot z - \tfrac12 r^2(z^\top Cz - \mathrm{tr}\,C) + O(r^3)` per sample (a cumulant
expansion), on average :math:`-\mathrm{KL}(p_{t_{max}}\,\|\,\mathcal N(0,\sigma^2 I))
\approx -\tfrac12 r^2|\mu|^2 - \tfrac14 r^4\,\mathrm{tr}\,C^2`. :class:`~sdeflow.paths.VP` at ``t = 1``
has :math:`r = 0.0066`; :class:`~sdeflow.paths.VE` with ``sigma_max = 50`` has :math:`r = 0.02`.
The result's ``stats['prior_r']`` reports :math:`r`. Pass ``prior=`` a callable for another density
(e.g. an oracle's exact marginal in a test).

**The data end.** The ODE gives the marginal :math:`p_{t_{min}}`, which is the data distribution only when
:math:`t_{min} = 0` and the field is regular there (a velocity field on ``LinearFlow``). With
``x_at="data"`` (the default) ``x`` is data: it enters the ODE as :math:`\alpha_{t_{min}}x` (the mean of
:math:`x_{t_{min}}` given :math:`x_0 = x`) and the Jacobian :math:`D\log\alpha_{t_{min}}` is added, so the
result is exactly (up to the solver) :math:`\log(p_0 * \mathcal N(0, \tau^2 I))(x)`, the data density
smoothed by Gaussian noise of standard deviation :math:`\tau = \sigma_{t_{min}}/\alpha_{t_{min}}`
(``stats['smoothing']``); it tends to :math:`\log p_0(x)` as :math:`t_{min}\to0`, with a difference
:math:`\tfrac12\tau^2\Delta p_0/p_0 + O(\tau^4)` for smooth data densities. With ``x_at="t_min"`` ``x`` is a
point of :math:`p_{t_{min}}` and the result is :math:`\log p_{t_{min}}(x)` (the convention of Song et al.'s
code, where :math:`\alpha_{t_{min}} \approx 1 - 5\cdot10^{-7}` makes the two agree).

**The divergence.** ``divergence="exact"``: :math:`\nabla\cdot v = \sum_i \partial v_i/\partial x_i` by
autograd, one backward pass per event dimension (cost :math:`D` backward passes per evaluation; chosen by
``"auto"`` when :math:`D \le 16`). ``"hutchinson"`` (Hutchinson 1989; FFJORD): :math:`\varepsilon^\top
(\partial v/\partial x)\,\varepsilon` with ``n_probes`` probes per sample, Rademacher (:math:`\pm1`, the
lower variance :math:`2\sum_{i\ne j}J_{ij}^2` for symmetric :math:`J`) or Gaussian (variance
:math:`2\|J_{sym}\|_F^2`), one backward pass per probe. Each probe is drawn once per sample and kept along
the whole trajectory, so the integrated estimate is unbiased for the exact-divergence integral computed on
the same steps. Probes come from :class:`~sdeflow.noise.PerSampleNoise`: sample ``i``'s probes depend only on
``(seed, i)``, never on the batch it is in. Both assume the network maps each sample of a batch
independently (no batch statistics).

**Cost and memory.** Each ODE evaluation is one forward pass of the network on the batch plus :math:`D`
(exact) or ``n_probes`` (Hutchinson) backward passes with respect to ``x`` only; ``nfe`` counts the forward
passes and ``stats['backward_passes']`` the rest. No graph is kept for the network's parameters: the solve
runs under ``torch.no_grad()`` and autograd is enabled only inside an evaluation, on a detached copy of
``x``, so memory is one forward graph plus the solver's stages of the state ``(batch, D + n_probes)``.
``differentiable=True`` keeps the graph through the whole solve instead (maximum-likelihood training of a
continuous normalising flow by discretise-then-optimise, see the tutorial), at a memory cost growing with the
number of evaluations.

**Batches and adaptive steps.** With a fixed-step solver every sample's result is independent of the batch
it is computed in. ``dopri5`` steps every sample on its own (``per_sample=True``, its default), with the exact
divergence or Hutchinson's probes (each sample's probes travel with it, :func:`sdeflow.solve`'s ``row_data``,
when finished samples leave the batched evaluation): a sample's log-likelihood is then bitwise the same alone
(with its probes, ``seed=PerSampleNoise(s).for_rows(i)``) or in any batch. ``per_sample=False`` takes one step
size for the batch from the worst sample, so a sample's result depends on its batch by up to about the
tolerance (``docs/likelihood.md`` measures it). The tolerance applies to the log-density component too.

**Bits per dimension.** For 8-bit data dequantised uniformly (Theis et al. 2016; Ho et al. 2019), pass
``bin_width``, the width :math:`\Delta` of one quantisation bin in ``x``'s units: data mapped to
:math:`[0, 1]` as :math:`x = (k + u)/256` have :math:`\Delta = 1/256`; mapped to :math:`[-1, 1]` as
:math:`x = 2(k + u)/256 - 1`, :math:`\Delta = 2/256`; :math:`u\sim U[0,1)^D`. Then
:math:`\mathrm{bpd} = -(\log p(x) + D\log\Delta)/(D\ln 2)`, and its average over the dequantisation noise
:math:`u` bounds the discrete model's bits per dimension from above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field as dc_field
from typing import Callable, Sequence

import numpy as np
import torch

from . import solvers as _solvers
from .errors import SdeflowTypeError, SdeflowValueError, check_float_tensor, check_int, check_number
from .fields import EnergyField, Field
from .grids import check_grid, make_grid
from .noise import PerSampleNoise
from .paths import GaussianPath
from .solve import make_solver, solve
from .window import check_ends, default_window

__all__ = ["log_likelihood", "LikelihoodResult", "bits_per_dim", "gaussian_log_prob", "EXACT_MAX_DIM"]

Tensor = torch.Tensor

#: the largest event size for which ``divergence="auto"`` takes the exact divergence (D backward passes)
EXACT_MAX_DIM = 16
_BIN_HINT = "the width of one quantisation bin in x's units, e.g. 1/256 for 8-bit data in [0, 1]"


@dataclass
class LikelihoodResult:
    """What :func:`log_likelihood` returns.

    Attributes:
        log_lik: ``(batch,)`` log-likelihood of each sample (nats), in ``x``'s dtype.
        stderr: ``(batch,)`` standard error of each sample's Hutchinson estimate (the sd over its
            ``n_probes`` probes divided by :math:`\\sqrt{n_{probes}}`); None for the exact divergence and for a
            single probe.
        bpd: ``(batch,)`` bits per dimension when ``bin_width`` was given, else None.
        log_prior: ``(batch,)`` the prior's log density at the ODE's end point.
        delta: ``(batch,)`` the integral of the divergence (mean over probes), plus :math:`D\\log\\alpha_{t_{min}}`
            with ``x_at="data"``: ``log_lik = log_prior + delta``.
        x_T: ``(batch, *event)`` the end point of the ODE at ``t_max`` (the latent code).
        nfe: network (velocity) evaluations along each sample's trajectory.
        stats: the solver's statistics (``solver``, ``steps``, ``accepted``/``rejected``, ...) and
            ``divergence``, ``n_probes``, ``probe``, ``event_size``, ``backward_passes``, ``t_min``, ``t_max``,
            ``x_at``, ``smoothing`` (:math:`\\sigma/\\alpha` at ``t_min``), ``prior``, ``prior_r``
            (:math:`\\alpha/\\sigma` at ``t_max``).
    """

    log_lik: Tensor
    stderr: Tensor | None
    bpd: Tensor | None
    log_prior: Tensor
    delta: Tensor
    x_T: Tensor
    nfe: int
    stats: dict = dc_field(default_factory=dict)

    @property
    def bpd_stderr(self) -> Tensor | None:
        """Per-sample standard error of ``bpd`` (``stderr / (D ln 2)``), None when either is missing."""
        if self.bpd is None or self.stderr is None:
            return None
        return self.stderr / (self.stats["event_size"] * math.log(2.0))

    @property
    def mean_stderr(self) -> float:
        """Standard error of ``log_lik.mean()`` as an estimate of the expected log-likelihood over the data
        distribution the batch was drawn from: the sd over the batch divided by :math:`\\sqrt{n}` (it
        includes the Hutchinson noise, independent across samples, whatever ``n_probes``)."""
        n = self.log_lik.shape[0]
        if n < 2:
            return float("nan")
        return float(self.log_lik.detach().std() / math.sqrt(n))

    def __repr__(self):
        se = "" if self.stderr is None else f", mean probe stderr {float(self.stderr.mean()):.3g}"
        bpd = "" if self.bpd is None else f", bpd {float(self.bpd.mean()):.4g}"
        return (f"LikelihoodResult(n={self.log_lik.shape[0]}, mean log_lik {float(self.log_lik.mean()):.5g} "
                f"+- {self.mean_stderr:.2g}{bpd}{se}, divergence={self.stats.get('divergence')!r}, "
                f"solver={self.stats.get('solver')!r}, nfe={self.nfe})")


def gaussian_log_prob(x: Tensor, sigma: float) -> Tensor:
    r"""``(batch,)`` log density of :math:`\mathcal N(0, \sigma^2 I)` at ``x`` of shape ``(batch, *event)``:
    :math:`-\tfrac12|x|^2/\sigma^2 - \tfrac D2\log(2\pi\sigma^2)`."""
    n = x.shape[0]
    xf = x.reshape(n, -1)
    d = xf.shape[1]
    return -0.5 * xf.pow(2).sum(1) / (sigma * sigma) - 0.5 * d * math.log(2.0 * math.pi * sigma * sigma)


def bits_per_dim(log_lik: Tensor, event_size: int, bin_width: float) -> Tensor:
    r"""Bits per dimension of uniformly dequantised data: :math:`-(\log p(x) + D\log\Delta)/(D\ln 2)`,
    ``bin_width`` :math:`=\Delta` the width of one quantisation bin in ``x``'s units (1/256 for 8-bit data
    mapped to [0, 1], 2/256 for [-1, 1]; module docstring)."""
    event_size = check_int("event_size", event_size)
    bin_width = check_number("bin_width", bin_width, gt=0.0, hint=_BIN_HINT)
    return -(log_lik + event_size * math.log(bin_width)) / (event_size * math.log(2.0))


def _usable_solvers() -> str:
    return ", ".join(_solvers.available(sde=False, needs="drift")) + ", torchdiffeq:<method>"


def _energy_without_graph(field: Field) -> bool:
    """True if ``field`` (or a term of it) is an EnergyField whose score is computed without a graph."""
    if isinstance(field, EnergyField):
        return not field.create_graph
    subs = [f for _, f in getattr(field, "terms", [])]
    subs += [getattr(field, a) for a in ("velocity_field", "score_field") if isinstance(getattr(field, a, None), Field)]
    return any(_energy_without_graph(f) for f in subs)


def _probes(noise: PerSampleNoise, shape, dtype, device, n_probes: int, kind: str) -> list[Tensor]:
    like = torch.empty(shape, dtype=dtype, device=device)
    out = []
    for k in range(n_probes):
        z = noise.draw(k, 0.0, 1.0, like)
        out.append(torch.sign(z) if kind == "rademacher" else z)
    return out


def _probe_mean_sd(ells: Tensor) -> tuple[Tensor, Tensor | None]:
    """Per sample, the mean and sample standard deviation (``K - 1`` denominator; None for ``K = 1``) of the ``K``
    integrated estimates ``ells`` ``(batch, K)``, summed column by column: elementwise operations only, so a
    sample's figures do not depend on its batch (torch's row reductions take another path for a single row)."""
    cols = ells.unbind(1)
    total = cols[0]
    for c in cols[1:]:
        total = total + c
    mean = total / len(cols)
    if len(cols) < 2:
        return mean, None
    ss = (cols[0] - mean) * (cols[0] - mean)
    for c in cols[1:]:
        ss = ss + (c - mean) * (c - mean)
    return mean, torch.sqrt(ss / (len(cols) - 1))


def _augmented_drift(field: Field, path: GaussianPath, shape, method: str, create_graph: bool):
    """``drift([x, l], t, *probes) = [v(x, t), div v(x, t)]`` on the flat state ``(batch, D + k)``, with the
    Hutchinson probes of the rows in the state (none for the exact divergence)."""
    D = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1

    def drift(state: Tensor, t: Tensor, *probes: Tensor) -> Tensor:
        # the rows still running: all of them, or a per-sample adaptive solver's subset, with their own probes
        # (solve's row_data)
        n = state.shape[0]
        x = state[:, :D].reshape((n,) + tuple(shape[1:]))
        with torch.enable_grad():
            xr = x if create_graph else x.detach().requires_grad_(True)
            v = field.velocity(xr, t, path)
            if not isinstance(v, Tensor) or v.shape != xr.shape:
                got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
                raise SdeflowValueError(f"the field's velocity has shape {got} but x has shape {tuple(x.shape)}")
            if not v.requires_grad:
                raise SdeflowValueError(
                    "the field's velocity does not depend on x through autograd (a detach(), torch.no_grad() or a "
                    "constant inside the network?); log_likelihood differentiates it with respect to x for the "
                    "divergence")
            vf = v.reshape(n, D)
            if method == "exact":
                div = torch.zeros(n, dtype=v.dtype, device=v.device)
                for i in range(D):
                    keep = create_graph or i < D - 1
                    (gi,) = torch.autograd.grad(vf[:, i].sum(), xr, retain_graph=keep, create_graph=create_graph,
                                                allow_unused=True)
                    if gi is not None:
                        div = div + gi.reshape(n, D)[:, i]
                dl = div[:, None]
            else:
                cols = []
                for k, e in enumerate(probes):
                    keep = create_graph or k < len(probes) - 1
                    (gk,) = torch.autograd.grad(v, xr, grad_outputs=e, retain_graph=keep, create_graph=create_graph,
                                                allow_unused=True)
                    cols.append(torch.zeros(n, dtype=v.dtype, device=v.device) if gk is None
                                else (gk * e).reshape(n, D).sum(1))
                dl = torch.stack(cols, 1)
        out = torch.cat([vf, dl.to(vf.dtype)], 1)
        return out if create_graph else out.detach()

    return drift


def log_likelihood(path: GaussianPath, field: Field, x: Tensor, solver="dopri5", *, steps: int | None = None,
                   grid: str | Sequence[float] | Tensor = "uniform", t_min: float | None = None,
                   t_max: float | None = None, x_at: str = "data", prior: str | Callable = "gaussian",
                   divergence: str = "auto", probe: str = "rademacher", n_probes: int = 1, seed=0,
                   bin_width: float | None = None, differentiable: bool = False, check_finite: bool = True,
                   **solver_options) -> LikelihoodResult:
    r"""Log-likelihood of ``x`` under ``field`` on ``path`` through the probability-flow ODE (module docstring).

    Args:
        path: the Gaussian path the field was trained on.
        field: a :class:`~sdeflow.fields.Field` of any kind (its velocity drives the ODE).
        x: ``(batch, *event)`` data (float32 or float64; the ODE runs in this dtype).
        solver: an ODE solver that needs only a drift: ``"dopri5"`` (default, adaptive; ``rtol``/``atol`` as
            solver options), ``"euler"``, ``"heun"``, ``"midpoint"``, ``"rk4"``, ``"torchdiffeq:<method>"``.
            Exponential integrators and DDIM-like solvers (they step with data predictions along the path and
            cannot carry the divergence) and SDE solvers are refused.
        steps: steps of a fixed-step solver (required for them); for an adaptive one, optional points at which
            it must stop.
        grid: a named grid (``"uniform"``, ``"log_snr"``, ``"karras"``, ``"quadratic"``), laid out between the
            ends and run from ``t_min`` up to ``t_max``, or an explicit strictly increasing sequence of times
            (then ``steps``, ``t_min`` and ``t_max`` are not given).
        t_min, t_max: the window. Defaults: the path's, moved off an end that is singular for the field's kind
            (:func:`sdeflow.window.default_window`); given ends are checked
            (:class:`~sdeflow.errors.SingularityError`).
        x_at: ``"data"`` (``x`` is data at ``t = 0``: the result is the data density smoothed by
            :math:`N(0, \tau^2 I)`, :math:`\tau = \sigma/\alpha` at ``t_min``) or ``"t_min"`` (the result is
            :math:`\log p_{t_{min}}(x)`).
        prior: ``"gaussian"`` (:math:`N(0, \sigma_{t_{max}}^2 I)`, exact when :math:`\alpha_{t_{max}} = 0`) or a
            callable ``log_prob(x_T) -> (batch,)``.
        divergence: ``"auto"`` (exact for event sizes up to :data:`EXACT_MAX_DIM` = 16, else Hutchinson),
            ``"exact"`` or ``"hutchinson"``.
        probe: ``"rademacher"`` or ``"gaussian"`` (Hutchinson probes).
        n_probes: probes per sample (Hutchinson); with 2 or more, ``stderr`` is reported.
        seed: an integer, or a :class:`~sdeflow.noise.PerSampleNoise` (``PerSampleNoise(seed).for_rows(i)``
            gives row ``i`` of a larger batch its probes).
        bin_width: the dequantisation bin width :math:`\Delta` in ``x``'s units, to report bits per dimension
            (``1/256`` for 8-bit data scaled to [0, 1], ``2/256`` for [-1, 1]).
        differentiable: keep the autograd graph so that ``log_lik`` can be back-propagated to the network's
            parameters (and to ``x``); memory grows with the number of evaluations.
        check_finite: raise :class:`~sdeflow.errors.NonFiniteError` if the solve produced NaN/Inf.
        solver_options: the solver's options, e.g. ``rtol=1e-6, atol=1e-6`` for ``dopri5``.

    Returns:
        a :class:`LikelihoodResult`.
    """
    if not isinstance(path, GaussianPath):
        raise SdeflowTypeError(f"path must be a GaussianPath (VP(), LinearFlow(), ...), got {type(path).__name__}")
    if not isinstance(field, Field):
        hint = " wrap the network: VelocityField(net), NoiseField(net), ..." if callable(field) else ""
        raise SdeflowTypeError(f"field must be a sdeflow Field, got {type(field).__name__};{hint}")
    x = check_float_tensor("x", x, allow_half=False)
    if x.dim() < 1 or x.shape[0] < 1:
        raise SdeflowValueError(f"x must have shape (batch >= 1, *event), got {tuple(x.shape)}")
    if torch.is_inference_mode_enabled():
        raise SdeflowValueError("log_likelihood differentiates the velocity with respect to x (the divergence), "
                                "which autograd cannot do under torch.inference_mode(); call it outside (it keeps "
                                "no graph of the network's parameters anyway)")
    if not bool(torch.isfinite(x).all()):
        raise SdeflowValueError("x holds NaN or Inf; the log-likelihood of such a point is undefined")
    if x_at not in ("data", "t_min"):
        raise SdeflowValueError(f"x_at must be 'data' (x is data at t = 0) or 't_min' (x is a point of the marginal "
                                f"at t_min), got {x_at!r}")
    if divergence not in ("auto", "exact", "hutchinson"):
        raise SdeflowValueError(f"divergence must be 'auto', 'exact' or 'hutchinson', got {divergence!r}")
    if probe not in ("rademacher", "gaussian"):
        raise SdeflowValueError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")
    n_probes = check_int("n_probes", n_probes)
    if isinstance(seed, PerSampleNoise):
        noise = seed
    elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        noise = PerSampleNoise(int(seed))
    else:
        raise SdeflowTypeError(f"seed must be an integer or a PerSampleNoise (per-sample probes), got "
                               f"{type(seed).__name__}")
    if not (prior == "gaussian" or callable(prior)):
        raise SdeflowValueError(f"prior must be 'gaussian' (N(0, sigma(t_max)^2 I)) or a callable log_prob(x_T) -> "
                                f"(batch,), got {prior!r}")
    if bin_width is not None:
        bin_width = check_number("bin_width", bin_width, gt=0.0, hint=_BIN_HINT)
    if _energy_without_graph(field):
        raise SdeflowValueError("the field holds an EnergyField built with create_graph=False: its score is computed "
                                "on a detached x, so its divergence would be lost; build it as EnergyField(net, "
                                "create_graph=True) for log_likelihood")

    D = int(np.prod(tuple(x.shape)[1:], dtype=np.int64)) if x.dim() > 1 else 1
    method = divergence if divergence != "auto" else ("exact" if D <= EXACT_MAX_DIM else "hutchinson")
    solver = make_solver(solver, solver_options)
    if solver.sde or solver.needs != "drift":
        why = ("is an SDE solver" if solver.sde else
               "steps with data or noise predictions along the path and cannot integrate the divergence")
        raise SdeflowValueError(f"solver {solver.name!r} {why}; log_likelihood integrates the probability-flow ODE "
                                f"with the log-density, use one of: {_usable_solvers()}")

    # ---- the window and the grid, increasing from t_min to t_max ----------------------------------------
    upper = getattr(path, "t_upper", 1.0)
    if not isinstance(grid, str):
        if steps is not None or t_min is not None or t_max is not None:
            raise SdeflowValueError("an explicit grid gives the times itself: do not pass steps, t_min or t_max "
                                    "with it")
        g = check_grid(grid, "grid", decreasing=None, upper=upper)
        if not bool((g[1:] > g[:-1]).all()):
            raise SdeflowValueError("grid must be strictly increasing, from t_min (data end) up to t_max (noise end): "
                                    "log_likelihood integrates the ODE forward in time")
        t_min, t_max = float(g[0]), float(g[-1])
        check_ends(path, t_max, t_min, field.kind, dtype=x.dtype)
    else:
        t_max0, t_min0 = t_max, t_min
        if t_max is not None:
            t_max = check_number("t_max", t_max, gt=0.0, le=upper)
        if t_min is not None:
            t_min = check_number("t_min", t_min, ge=0.0, lt=upper)
        t_max, t_min = default_window(path, field.kind, dtype=x.dtype, t_max=t_max, t_min=t_min)
        if not t_min < t_max:
            raise SdeflowValueError(f"need t_min < t_max, got t_min={t_min}, t_max={t_max}")
        if t_max0 is not None or t_min0 is not None:
            check_ends(path, t_max, t_min, field.kind, dtype=x.dtype)
        if steps is None:
            if not solver.adaptive:
                raise SdeflowValueError(f"solver {solver.name!r} takes fixed steps: give steps= (or an explicit grid), "
                                        f"or use an adaptive solver such as 'dopri5'")
            g = torch.tensor([t_min, t_max], dtype=torch.float64)
        else:
            steps = check_int("steps", steps)
            g = make_grid(grid, path, steps, t_max, t_min).flip(0)
    field.validate_times(g.numpy())

    # ---- the augmented state [x, l] -------------------------------------------------------------------------
    n, shape = x.shape[0], tuple(x.shape)
    K = 1 if method == "exact" else n_probes
    probes = _probes(noise, shape, x.dtype, x.device, K, probe) if method == "hutchinson" else None

    a_min, s_min, _, _ = (float(c) for c in path.coefficients(t_min))
    if x_at == "data":
        if not a_min > 0:
            raise SdeflowValueError(f"x_at='data' maps x to alpha(t_min) x, but alpha(t_min={t_min:g}) = {a_min:g}; "
                                    f"use a smaller t_min")
        x_start, jac = x * a_min, D * math.log(a_min)
    else:
        x_start, jac = x, 0.0
    a_max, s_max, _, _ = (float(c) for c in path.coefficients(t_max))
    if prior == "gaussian" and not s_max > 0:
        raise SdeflowValueError(f"the Gaussian prior N(0, sigma(t_max)^2 I) needs sigma(t_max) > 0, got "
                                f"sigma({t_max:g}) = {s_max:g}; use a larger t_max or pass prior=")

    state0 = torch.cat([x_start.reshape(n, D), torch.zeros(n, K, dtype=x.dtype, device=x.device)], 1)
    if differentiable and not state0.requires_grad:
        state0 = state0.requires_grad_(True)
    elif not differentiable:
        state0 = state0.detach()
    drift = _augmented_drift(field, path, shape, method, differentiable)
    ctx = torch.enable_grad() if differentiable else torch.no_grad()
    with ctx:
        sol = solve(drift, None, state0, g, solver, check_finite=check_finite, row_data=probes or ())
        xT = sol.x[:, :D].reshape(shape)
        ells = sol.x[:, D:]
        if prior == "gaussian":
            log_prior = gaussian_log_prob(xT, s_max)
        else:
            log_prior = prior(xT)
            if not isinstance(log_prior, Tensor) or log_prior.shape != (n,):
                got = tuple(log_prior.shape) if isinstance(log_prior, Tensor) else type(log_prior).__name__
                raise SdeflowValueError(f"prior(x_T) must return a (batch,) = ({n},) tensor of log densities, "
                                        f"got {got}")
            log_prior = log_prior.to(x.dtype)
        mean, sd = _probe_mean_sd(ells)
        delta = mean + jac
        log_lik = log_prior + delta
        stderr = sd / math.sqrt(K) if (method == "hutchinson" and K > 1) else None
    bpd = bits_per_dim(log_lik, D, bin_width) if bin_width is not None else None

    stats = dict(sol.stats)
    stats.update(divergence=method, n_probes=K if method == "hutchinson" else 0,
                 probe=probe if method == "hutchinson" else None, event_size=D,
                 backward_passes=sol.nfe * (D if method == "exact" else K), t_min=t_min, t_max=t_max, x_at=x_at,
                 smoothing=(s_min / a_min if a_min > 0 else float("inf")) if x_at == "data" else None,
                 prior="gaussian" if prior == "gaussian" else "callable",
                 prior_r=(a_max / s_max) if s_max > 0 else float("inf"))
    return LikelihoodResult(log_lik=log_lik, stderr=stderr, bpd=bpd, log_prior=log_prior, delta=delta, x_T=xT,
                            nfe=sol.nfe, stats=stats)
