r"""diffusers models and schedulers in sdeflow.

:func:`from_diffusers` reads a diffusers scheduler and wraps its model (``UNet2DModel``, ``UNet2DConditionModel``
with its conditioning bound, any ``model(x, timestep)``):

* **path** — :class:`~sdeflow.paths.DiscreteVP` with the scheduler's own :math:`\bar\alpha` table
  (``alphas_cumprod``, float32 in diffusers, exact in float64 here): knot :math:`t = (\tau + 1)/T` is
  diffusers' timestep :math:`\tau = 0, \dots, T-1`, and :math:`t = 0` is :math:`\bar\alpha = 1`;
* **field** — ``prediction_type`` ``"epsilon"`` → :class:`~sdeflow.fields.NoiseField`, ``"sample"`` →
  :class:`~sdeflow.fields.DataField`, ``"v_prediction"`` → :class:`~sdeflow.fields.VPredictionField`
  (:math:`v = \alpha\varepsilon - \sigma x_0`); the output object is unwrapped (``.sample``, or a tuple's
  first element; the first half of the channels for ``variance_type="learned"``); the model gets
  diffusers' timestep (:class:`DiffusersTime`); the scheduler's ``clip_sample`` / ``thresholding`` become the
  field's ``clip_data`` / ``thresholding``;
* **grid, solver** — the scheduler's ``set_timesteps(num_inference_steps)`` (its ``timestep_spacing``
  "leading", "trailing" or "linspace", ``steps_offset``, custom timesteps) as an explicit grid, and the
  sdeflow solver that takes the same steps:

  - ``DDIMScheduler`` (``eta``): ``ddim`` on the timesteps; its last step goes to :math:`\bar\alpha = 1`
    (``set_alpha_to_one=True``: ``final_denoise``) or to ``alphas_cumprod[0]`` (the knot :math:`1/T`);
  - ``DPMSolverMultistepScheduler``: ``dpmpp_2m`` (dpmsolver++, midpoint) or ``exp_multistep`` (solver_type heun,
    the exact integral of the linear interpolant; order 1; dpmsolver with heun); ``solver_order=3`` (dpmsolver++)
    is ``dpmpp_3m`` (its start-up step in the midpoint or heun form: ``solver_type="dpmsolver"`` or
    ``"taylor"``); its first-order step into :math:`\sigma = 0` (``final_sigmas_type="zero"``) is
    ``final_denoise``, and its lowered last orders (``lower_order_final`` below 15 steps) are the solver's
    ``lower_order_final``;
  - ``EulerDiscreteScheduler``: ``euler`` in :class:`~sdeflow.paths.EDM` coordinates (Euler in
    :math:`\sigma/\alpha`, as diffusers steps), its interpolated sigmas (fractional timesteps) and Karras,
    exponential and beta sigmas included;
  - ``UniPCMultistepScheduler``: ``solver_type`` bh1 or bh2, orders 1 to 3 (sdeflow's ``unipc`` with the same
    ``variant``; bh1 into :math:`\sigma = 0` is refused: diffusers' own loop returns NaN there);
  - ``DEISMultistepScheduler`` (``algorithm_type="deis"``, ``solver_type="logrho"``): ``deis`` with its
    ``solver_order``; its last step goes to ``alphas_cumprod[0]`` (the knot :math:`1/T`), and its lowered last
    orders (``lower_order_final`` below 15 steps) are the solver's ``lower_order_final``.

* **consistency models** — ``CMStochasticIterativeScheduler`` (Song et al. 2023's multistep sampling): path
  :class:`~sdeflow.paths.EDM` (``sigma_max``; :math:`t = \sigma/\sigma_{max}`), field a
  :class:`~sdeflow.fields.ConsistencyField` of :class:`DiffusersConsistency` (the model in the preconditioned
  form :math:`c_{skip}(\sigma)x + c_{out}(\sigma)F(x/\sqrt{\sigma^2+\sigma_d^2}, 250\log\sigma)` with the
  boundary scalings at :math:`\epsilon = \sigma_{min}`; ``clip_denoised`` is ``clip_data=1``), the
  scheduler's sigmas then :math:`\sigma_{min}` as the grid, solver ``consistency`` (its re-noising
  :math:`\hat x + \sqrt{\sigma_{next}^2 - \sigma_{min}^2}\,z` is the scheduler's step; ``s_noise`` other than
  1 is refused). diffusers draws one normal per step, the last multiplied by 0; sdeflow draws none there, so
  the same generator gives the same samples.

Exactness: diffusers computes its coefficients from float32 tables and (DPM-Solver, Euler) rounds the state to
float32 after every step, so the two agree to float32 rounding, accumulated over the steps (the tests measure
it). DDIM's clipping: diffusers' ``step(..., use_clipped_model_output=False)`` (its pipelines' default) combines
the clipped :math:`\hat x_0` with the *unclipped* noise prediction, which is no single field; sdeflow's clipped
field is consistent (the noise rebuilt from the clipped :math:`\hat x_0`), which is diffusers'
``use_clipped_model_output=True``. Anything the adapter cannot reproduce (DDIM's "linspace" spacing, whose
steps land between its timesteps; DPM-Solver's SDE variants; Karras sigmas on DPM-Solver, whose
model times are rounded away from its sigmas) raises :class:`~sdeflow.errors.SdeflowValueError` unless
``strict=False``, which returns sdeflow's closest sampler with ``exact=False`` and a ``note``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import SdeflowTypeError, SdeflowValueError, check_int
from ..fields import ConsistencyField, DataField, DynamicThresholding, NoiseField, VPredictionField
from ..paths import EDM, DiscreteVP
from .recipe import Recipe

__all__ = ["from_diffusers", "path_from_scheduler", "DiffusersTime", "DiffusersConsistency", "unwrap_output"]

Tensor = torch.Tensor
SUPPORTED = ("DDIMScheduler", "DPMSolverMultistepScheduler", "EulerDiscreteScheduler", "UniPCMultistepScheduler",
             "DEISMultistepScheduler")
_FIELDS = {"epsilon": NoiseField, "sample": DataField, "v_prediction": VPredictionField}


# ---- the path --------------------------------------------------------------------------------------------
def path_from_scheduler(scheduler) -> DiscreteVP:
    r""":class:`~sdeflow.paths.DiscreteVP` with ``scheduler.alphas_cumprod`` as its :math:`\bar\alpha` table:
    :math:`\beta_i = 1 - \bar\alpha_i/\bar\alpha_{i-1}` in float64, so sdeflow's :math:`\bar\alpha` at knot
    :math:`(i+1)/T` is the scheduler's ``alphas_cumprod[i]`` to float64 rounding (diffusers' own float32
    values, not a float64 recomputation of its betas)."""
    ac = getattr(scheduler, "alphas_cumprod", None)
    if ac is None:
        raise SdeflowTypeError(f"scheduler must be a diffusers scheduler with an alphas_cumprod table (DDIMScheduler, "
                               f"DPMSolverMultistepScheduler, ...), got {type(scheduler).__name__}")
    ac = torch.as_tensor(np.asarray(ac.detach().cpu() if isinstance(ac, Tensor) else ac, dtype=np.float64))
    if ac.dim() != 1 or ac.numel() < 1 or not torch.isfinite(ac).all():
        raise SdeflowValueError("scheduler.alphas_cumprod must be a finite 1-D table")
    if not (ac[-1] > 0 and ac[0] < 1 and (ac[1:] < ac[:-1]).all()):
        zero = " (rescale_betas_zero_snr=True makes the last one 0: pure noise, log-SNR -inf)" if ac[-1] <= 0 else ""
        raise SdeflowValueError(f"the scheduler's alphas_cumprod must decrease strictly inside (0, 1){zero}; "
                                f"sdeflow's DiscreteVP needs alpha > 0 and sigma > 0 at every knot")
    prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    return DiscreteVP(-torch.expm1(torch.log(ac) - torch.log(prev)))


def _sigmas_ve(path: DiscreteVP) -> Tensor:
    """:math:`\\sigma/\\alpha = \\sqrt{(1-\\bar\\alpha)/\\bar\\alpha}` at the knots ``tau = 0..T-1`` (float64),
    diffusers' ``sigmas`` table before interpolation."""
    ac = path.alphas_cumprod
    return torch.sqrt((1.0 - ac) / ac)


# ---- the model -------------------------------------------------------------------------------------------
def unwrap_output(out, channels: int | None = None) -> Tensor:
    """A model's output tensor: ``out`` itself, ``out.sample`` (diffusers' output classes) or ``out[0]``
    (``return_dict=False``); with ``channels``, its first ``channels`` channels (a learned variance's other
    half dropped)."""
    if not isinstance(out, Tensor):
        s = getattr(out, "sample", None)
        if isinstance(s, Tensor):
            out = s
        elif isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
            out = out[0]
        else:
            raise SdeflowTypeError(f"the model returned {type(out).__name__}; expected a tensor, an output with a "
                                   f".sample tensor, or a tuple whose first element is the prediction")
    if channels is not None and out.dim() >= 2 and out.shape[1] == 2 * channels:
        out = out[:, :channels]
    return out


class DiffusersTime:
    r"""``model(x, timestep)`` called as sdeflow's ``net(x, t)`` on a :class:`~sdeflow.paths.DiscreteVP`:
    the timestep of sdeflow time ``t`` is diffusers' :math:`\tau` with the same noise level, and the output
    is unwrapped (:func:`unwrap_output`).

    * ``time_input="integer"``: :math:`\tau = tT - 1` as an int64 tensor (DDIM, DPM-Solver, UniPC pass their
      integer timesteps); every evaluation must be at a knot :math:`i/T`, :math:`i \ge 1` (checked before
      sampling, never rounded silently);
    * ``time_input="continuous"``: a float32 :math:`\tau` for any :math:`t \in [1/T, 1]`: the knot value at a
      knot, between knots the inverse of diffusers' interpolation of :math:`\sigma/\alpha` in :math:`\tau`,
      linear (``interpolation="linear"``, EulerDiscrete's default) or linear in :math:`\log\sigma`
      (``"log"``, its ``_sigma_to_t`` for Karras, exponential and beta sigmas).

    ``channels`` keeps the first ``channels`` output channels (a learned variance). ``dtype`` is the model's
    (e.g. ``torch.float16``): ``x`` is cast to it and the output back to ``x``'s dtype; the timestep is always
    computed from ``t`` at the state's precision.
    """

    def __init__(self, model, path: DiscreteVP, *, time_input: str = "integer", interpolation: str = "linear",
                 channels: int | None = None, dtype: torch.dtype | None = None):
        if not callable(model):
            raise SdeflowTypeError(f"model must be callable as model(x, timestep), got {type(model).__name__}")
        if not isinstance(path, DiscreteVP):
            raise SdeflowTypeError(f"path must be the DiscreteVP of the model's scheduler, got {type(path).__name__}")
        if time_input not in ("integer", "continuous"):
            raise SdeflowValueError(f"time_input must be 'integer' or 'continuous', got {time_input!r}")
        if interpolation not in ("linear", "log"):
            raise SdeflowValueError(f"interpolation must be 'linear' or 'log', got {interpolation!r}")
        self.model, self.path, self.T = model, path, path.T
        self.time_input, self.interpolation, self.channels = time_input, interpolation, channels
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise SdeflowTypeError(f"dtype must be a floating torch.dtype (the model's), got {dtype!r}")
        self.dtype = dtype
        s = _sigmas_ve(path)
        self._table = torch.log(s) if interpolation == "log" else s
        self._tables: dict = {}

    def timestep(self, t: Tensor) -> Tensor:
        """diffusers' timestep of sdeflow time ``t`` (int64 or float32, see the class docstring)."""
        u = t * self.T
        r = torch.round(u)
        if self.time_input == "integer":
            return r.long() - 1
        tt = t if t.dtype == torch.float64 or t.device.type == "mps" else t.to(torch.float64)
        knot = (u - r).abs() <= 8 * torch.finfo(t.dtype).eps * self.T
        a, s, _, _ = self.path.coefficients(tt.clamp(1.0 / self.T, 1.0))
        v = s / a
        key = (tt.device, tt.dtype)
        tab = self._tables.get(key)
        if tab is None:
            tab = self._tables[key] = self._table.to(device=tt.device, dtype=tt.dtype)
        if self.interpolation == "log":
            v = torch.log(v)
        i = torch.clamp(torch.searchsorted(tab, v.contiguous()), 1, self.T - 1)
        lo, hi = tab[i - 1], tab[i]
        tau = (i - 1).to(tt.dtype) + (v - lo) / (hi - lo)
        tau = torch.where(knot, r.to(tt.dtype) - 1.0, tau)
        return tau.to(torch.float32)

    def __call__(self, x, t, **model_kwargs):
        tau = self.timestep(t)
        if self.dtype is None or self.dtype == x.dtype:
            return unwrap_output(self.model(x, tau, **model_kwargs), self.channels)
        return unwrap_output(self.model(x.to(self.dtype), tau, **model_kwargs), self.channels).to(x.dtype)

    def validate_times(self, times: np.ndarray) -> None:
        u = np.asarray(times, dtype=np.float64) * self.T
        if self.time_input == "integer":
            bad = np.flatnonzero((np.abs(u - np.round(u)) > 1e-6 * self.T) | (np.round(u) < 1))
            why = "not a knot i/T with i >= 1 (the model takes integer timesteps i - 1)"
            fix = ("use the recipe's grid, sdeflow.grids.discrete(path, steps) or grid='discrete', and a solver that "
                   "evaluates only at grid points; or time_input='continuous' for a model that accepts fractional "
                   "timesteps (diffusers' UNets do)")
        else:
            bad = np.flatnonzero(u < 1.0 - 1e-9 * self.T)
            why = "below the first knot 1/T (diffusers has no timestep below 0)"
            fix = "stop at t_min >= 1/T and finish with final_denoise=True"
        if bad.size:
            raise SdeflowValueError(f"the diffusers model (T={self.T}) would be evaluated at t={float(times[bad[0]]):.6g}, "
                                    f"{why}; {fix}")

    def __repr__(self):
        name = type(self.model).__name__
        return f"DiffusersTime({name}, T={self.T}, time_input={self.time_input!r})"


# ---- the scheduler ---------------------------------------------------------------------------------------
def _clipping(cfg, kind_name: str, clipping):
    """(clip_data, thresholding) of the scheduler's config, or of ``clipping`` when given."""
    if not (isinstance(clipping, str) and clipping == "scheduler"):
        if clipping is None:
            return None, None
        if isinstance(clipping, DynamicThresholding) or clipping is True:
            return None, clipping
        return clipping, None
    if cfg.get("thresholding", False):
        return None, DynamicThresholding(float(cfg.get("dynamic_thresholding_ratio", 0.995)),
                                         float(cfg.get("sample_max_value", 1.0)))
    if cfg.get("clip_sample", False):  # DDIM, DDPM
        r = float(cfg.get("clip_sample_range", 1.0))
        return (-r, r), None
    return None, None


def _prepared(scheduler, num_inference_steps):
    """A fresh copy of ``scheduler`` with ``set_timesteps(num_inference_steps)`` (the user's is not touched),
    or ``scheduler`` itself when its timesteps are already set and no number is given; None if neither."""
    if num_inference_steps is None:
        return scheduler if getattr(scheduler, "num_inference_steps", None) else None
    check_int("num_inference_steps", num_inference_steps, what="a positive integer", error=SdeflowValueError)
    sch = type(scheduler).from_config(scheduler.config)
    sch.set_timesteps(int(num_inference_steps))
    return sch


def _knots(taus, T: int) -> list[float]:
    return [(int(v) + 1) / T for v in taus]


def _append(grid: list[float], t: float) -> list[float]:
    """``grid`` then ``t``, unless it already ends there (a zero-length last step, which is the identity for a
    consistent field: diffusers' step from a timestep to itself)."""
    return grid if abs(grid[-1] - t) <= 1e-12 else grid + [t]


def _refuse(strict: bool, msg: str, notes: list) -> None:
    if strict:
        raise SdeflowValueError(msg + "; pass strict=False for sdeflow's closest sampler on the scheduler's grid "
                                "(Recipe.exact is then False)")
    notes.append(msg)


def _ddim(sch, path, notes, strict, eta):
    cfg, T = sch.config, path.T
    taus = [int(v) for v in sch.timesteps]
    stride = T // sch.num_inference_steps
    prevs = [v - stride for v in taus]
    if any(prevs[k] != taus[k + 1] for k in range(len(taus) - 1)):
        k = next(k for k in range(len(taus) - 1) if prevs[k] != taus[k + 1])
        _refuse(strict, f"DDIMScheduler with timestep_spacing={cfg.timestep_spacing!r} steps from timestep {taus[k]} "
                f"to {prevs[k]} (T // num_inference_steps below it) but evaluates the model next at {taus[k + 1]}: "
                f"its state and the model's noise level disagree, which no sampler on one grid reproduces; use "
                f"timestep_spacing='leading' or 'trailing' with num_inference_steps dividing {T}", notes)
        prevs = taus[1:] + [prevs[-1]]
    grid, final = _knots(taus, T), False
    last = prevs[-1]
    if last >= 0:
        grid = _append(grid, (last + 1) / T)
    elif cfg.get("set_alpha_to_one", True):
        final = True  # into alpha_cumprod = 1: x -> x0_hat
    else:
        grid = _append(grid, 1.0 / T)  # into alphas_cumprod[0]
    return grid, final, "ddim", {"eta": float(eta)} if eta else {}, None, 1.0, taus


def _final(cfg, grid, T):
    """DPM-Solver / UniPC: the step after the last timestep goes to sigma = 0 (final_denoise) or sigma_min."""
    fst = cfg.get("final_sigmas_type", "zero")
    if fst == "zero":
        return grid, True
    return _append(grid, 1.0 / T), False


def _sigma_schedules(cfg) -> list[str]:
    return [k for k in ("use_karras_sigmas", "use_lu_lambdas", "use_exponential_sigmas", "use_beta_sigmas",
                        "use_flow_sigmas") if cfg.get(k, False)]


def _dpm(sch, path, notes, strict):
    cfg, T = sch.config, path.T
    taus = [int(v) for v in sch.timesteps]
    algo, order, stype = cfg.algorithm_type, int(cfg.solver_order), cfg.solver_type
    special = _sigma_schedules(cfg)
    if special:
        _refuse(strict, f"DPMSolverMultistepScheduler with {special[0]}=True steps between its own sigmas but "
                f"evaluates the model at timesteps rounded to integers (another noise level)", notes)
    grid, final = _final(cfg, _knots(taus, T), T)
    n = len(taus)
    # diffusers' order at its last step is 1 when euler_at_final, lower_order_final with fewer than 15 steps, or
    # into sigma = 0 (sdeflow's final_denoise); at the step before it is at most 2 with lower_order_final and fewer
    # than 15 steps. sdeflow's lower_order_final=m: its last step at most order m, the one before at most m + 1.
    short = bool(cfg.get("lower_order_final", True) and n < 15)
    if final:  # sdeflow's last step is diffusers' second to last
        lof = 2 if short else 0
    else:
        lof = 1 if (short or cfg.get("euler_at_final", False)) else 0
        if order == 3 and lof and not short:
            _refuse(strict, "DPMSolverMultistepScheduler solver_order=3 with euler_at_final and 15 or more steps "
                    "(order 1 on the last step after order 3 on the one before) is not mapped; sdeflow's "
                    "lower_order_final lowers the steps before the last too", notes)
    if algo not in ("dpmsolver++", "dpmsolver"):
        _refuse(strict, f"DPMSolverMultistepScheduler algorithm_type={algo!r} (an SDE solver on diffusers' own "
                f"noise draws) is not mapped", notes)
        algo = "dpmsolver++"
    predict = "data" if algo == "dpmsolver++" else "noise"
    if order == 1:
        return grid, final, "exp_multistep", dict(order=1, predict=predict), taus
    if order == 3:
        if predict != "data":
            _refuse(strict, "DPMSolverMultistepScheduler solver_order=3 with algorithm_type='dpmsolver' (the noise "
                    "prediction) is not mapped; 'dpmsolver++' is (sdeflow's dpmpp_3m)", notes)
        # dpmpp_3m is dpm-solver's multistep third-order update; diffusers' midpoint/heun solver_type only
        # changes its second-order start-up step, which is dpm-solver's 'dpmsolver'/'taylor' form
        return grid, final, "dpmpp_3m", dict(solver_type="dpmsolver" if stype == "midpoint" else "taylor",
                                             lower_order_final=lof), taus
    if predict == "data" and stype == "midpoint":
        return grid, final, "dpmpp_2m", dict(lower_order_final=lof), taus
    if stype == "midpoint":
        _refuse(strict, "DPMSolverMultistepScheduler algorithm_type='dpmsolver' with solver_type='midpoint' (the "
                "'dpmsolver' form of the noise-prediction update) is not in sdeflow; solver_type='heun' is", notes)
    return grid, final, "exp_multistep", dict(order=2, predict=predict, lower_order_final=lof), taus


def _unipc(sch, path, notes, strict):
    cfg, T = sch.config, path.T
    taus = [int(v) for v in sch.timesteps]
    if cfg.solver_type not in ("bh1", "bh2"):
        _refuse(strict, f"UniPCMultistepScheduler solver_type={cfg.solver_type!r} is not a UniPC variant sdeflow's "
                f"unipc reproduces (bh1, bh2)", notes)
    if _sigma_schedules(cfg):
        _refuse(strict, "UniPCMultistepScheduler with a sigma schedule (Karras, ...) evaluates the model at rounded "
                "timesteps", notes)
    if cfg.solver_type == "bh1" and cfg.get("final_sigmas_type", "zero") == "zero":
        _refuse(strict, "UniPCMultistepScheduler solver_type='bh1' into sigma = 0 (final_sigmas_type='zero'): its "
                "last step divides by B(h) = h, which is infinite there, and diffusers' own loop returns NaN; "
                "sdeflow's unipc takes the limit (the data prediction)", notes)
    if cfg.get("disable_corrector"):
        _refuse(strict, "UniPCMultistepScheduler disable_corrector is not mapped", notes)
    grid, final = _final(cfg, _knots(taus, T), T)
    # diffusers' order at step k is min(order, steps - k) with lower_order_final: order 1 on its last step, at
    # most 2 on the one before; into sigma = 0 its last step is sdeflow's final_denoise, so sdeflow's last step is
    # at most order 2 (lower_order_final=2)
    lof = (2 if final else 1) if cfg.get("lower_order_final", True) else 0
    opts = dict(order=int(cfg.solver_order), predict="data" if cfg.predict_x0 else "noise", lower_order_final=lof)
    if cfg.solver_type in ("bh1", "bh2"):
        opts["variant"] = cfg.solver_type  # sdeflow's unipc equals UniPC's code (and diffusers') per variant
    return grid, final, "unipc", opts, taus


def _deis(sch, path, notes, strict):
    cfg, T = sch.config, path.T
    taus = [int(v) for v in sch.timesteps]
    if _sigma_schedules(cfg):
        _refuse(strict, "DEISMultistepScheduler with a sigma schedule (Karras, ...) evaluates the model at rounded "
                "timesteps", notes)
    if cfg.algorithm_type != "deis" or cfg.solver_type != "logrho":  # diffusers' only ones (it rewrites others)
        _refuse(strict, f"DEISMultistepScheduler algorithm_type={cfg.algorithm_type!r}, solver_type="
                f"{cfg.solver_type!r} is not mapped (sdeflow's deis is 'deis' / 'logrho')", notes)
    # no final_sigmas_type: the step after the last timestep goes to alphas_cumprod[0], the knot 1/T
    grid = _append(_knots(taus, T), 1.0 / T)
    # diffusers' order at its last step is 1 and at most 2 on the one before with lower_order_final and fewer
    # than 15 steps: sdeflow's lower_order_final=1
    lof = 1 if (cfg.get("lower_order_final", True) and len(taus) < 15) else 0
    return grid, False, "deis", dict(order=int(cfg.solver_order), lower_order_final=lof), taus


def _euler(sch, path, notes, strict):
    cfg, T = sch.config, path.T
    if cfg.get("interpolation_type", "linear") != "linear":
        raise SdeflowValueError(f"EulerDiscreteScheduler interpolation_type={cfg.interpolation_type!r} is not mapped "
                                f"(its sigmas are not those of its timesteps); use 'linear'")
    if cfg.get("timestep_type", "discrete") != "discrete":
        raise SdeflowValueError("EulerDiscreteScheduler timestep_type='continuous' (the model takes 0.25 log sigma) "
                                "is not mapped; wrap the model with sdeflow.SigmaTime yourself")
    sigmas = np.asarray(sch.sigmas.detach().cpu(), dtype=np.float64)
    taus = np.asarray(sch.timesteps.detach().cpu(), dtype=np.float64)
    if len(sigmas) != len(taus) + 1:
        raise SdeflowValueError(f"EulerDiscreteScheduler has {len(taus)} timesteps and {len(sigmas)} sigmas; expected "
                                f"one more sigma (the final one)")
    table = _sigmas_ve(path).numpy()
    ve = np.interp(taus, np.arange(T), table)  # its sigmas from its timesteps (np.interp), in float64
    # Karras / exponential / beta sigmas, or custom sigmas=: the model times come from the sigmas (_sigma_to_t,
    # linear in log sigma), not the other way round; step in its own sigmas then
    from_sigmas = bool(_sigma_schedules(cfg)) or bool(np.max(np.abs(ve / sigmas[:-1] - 1.0)) > 1e-5)
    if from_sigmas:
        ve = sigmas[:-1]
    integer = np.abs(taus - np.round(taus)) == 0
    grid = []
    for tau, s, is_int in zip(taus, ve, integer):
        grid.append((int(round(tau)) + 1) / T if is_int and not from_sigmas else _t_of_ve(path, s))
    final = float(sigmas[-1]) == 0.0
    if not final:
        grid = _append(grid, _t_of_ve(path, sigmas[-1]))
    s0, s1 = float(_ve_at(path, grid[0])), float(_ve_at(path, grid[-1]))
    init = float(sch.init_noise_sigma) / math.sqrt(1.0 + s0 * s0)
    out = 1.0 if final else math.sqrt(1.0 + s1 * s1)  # it returns its sigma-scaled sample x / alpha
    return grid, final, "euler", {}, EDM(s0), init, out, taus.tolist(), ("log" if from_sigmas else "linear")


def _t_of_ve(path, s: float) -> float:
    """sdeflow time of the noise level ``sigma/alpha = s`` (the scheduler's own float32 sigmas at the table's
    ends are its first and last knots to rounding: kept inside [1/T, 1])."""
    t = float(path.t_from_log_snr(torch.tensor(-2.0 * math.log(float(s)), dtype=torch.float64)))
    tol = 1e-4 / path.T  # float32 sigmas: a few 1e-8 relative, well under 1e-4 of a knot interval
    return min(max(t, 1.0 / path.T), 1.0) if 1.0 / path.T - tol <= t <= 1.0 + tol else t


def _ve_at(path, t):
    a, s, _, _ = path.coefficients(torch.tensor(float(t), dtype=torch.float64))
    return s / a


def from_diffusers(model, scheduler, *, num_inference_steps: int | None = None, clipping="scheduler",
                   time_input: str | None = None, eta: float = 0.0, strict: bool = True) -> Recipe:
    """A diffusers model and scheduler as a sdeflow :class:`~sdeflow.integrations.Recipe` (see the module
    docstring for the mapping).

    Args:
        model: the network, called as ``model(x, timestep)`` (a ``UNet2DModel``; bind conditioning with
            ``functools.partial(unet, encoder_hidden_states=...)`` or a lambda). Its output may be a tensor, a
            diffusers output object (``.sample``) or a tuple.
        scheduler: the diffusers scheduler it was trained with (its ``alphas_cumprod``, ``prediction_type``,
            clipping, spacing and solver settings are read; it is never modified). Any scheduler with an
            ``alphas_cumprod`` table (``DDPMScheduler``, ...) gives the path and the field; the loops of
            ``DDIMScheduler``, ``DPMSolverMultistepScheduler``, ``EulerDiscreteScheduler``,
            ``UniPCMultistepScheduler`` and ``DEISMultistepScheduler`` are reproduced, and
            ``CMStochasticIterativeScheduler`` (a consistency model: EDM path, :class:`DiffusersConsistency`, the
            ``consistency`` sampler).
        num_inference_steps: the number of steps of the scheduler's loop to reproduce (a copy of the scheduler
            gets ``set_timesteps(num_inference_steps)``). None: the scheduler's current timesteps if set,
            otherwise no grid (path and field only).
        clipping: ``"scheduler"`` (its ``clip_sample``/``thresholding``), None (off), ``(lo, hi)``, or a
            :class:`~sdeflow.fields.DynamicThresholding`.
        time_input: ``"integer"`` or ``"continuous"`` timesteps for the model (:class:`DiffusersTime`); default
            integer, except for EulerDiscreteScheduler, whose timesteps may be fractional.
        eta: DDIM's noise level (``DDIMScheduler.step(eta=...)``; 0 is the ODE).
        strict: refuse (:class:`~sdeflow.errors.SdeflowValueError`) a scheduler configuration sdeflow does not
            reproduce to rounding, instead of returning its closest sampler with ``exact=False``.

    Returns:
        a :class:`~sdeflow.integrations.Recipe`; ``recipe.sample(x_init=recipe.x_init(latents))`` runs the
        scheduler's loop from its initial noise ``latents`` (diffusers' ``latents * init_noise_sigma`` in
        sdeflow's coordinates).
    """
    name = type(scheduler).__name__
    if name == "CMStochasticIterativeScheduler":
        if eta:
            raise SdeflowValueError(f"eta is DDIMScheduler's noise level; {name} has none")
        return _consistency(model, scheduler, num_inference_steps, clipping)
    path = path_from_scheduler(scheduler)
    cfg = scheduler.config
    ptype = cfg.get("prediction_type", "epsilon")
    if ptype not in _FIELDS:
        raise SdeflowValueError(f"prediction_type={ptype!r} is not mapped; sdeflow maps "
                                f"{', '.join(map(repr, _FIELDS))}")
    sch = _prepared(scheduler, num_inference_steps)
    if sch is not None and name not in SUPPORTED:
        raise SdeflowValueError(f"{name}'s loop is not mapped; from_diffusers reproduces {', '.join(SUPPORTED)}, "
                                f"CMStochasticIterativeScheduler (without "
                                f"num_inference_steps, any scheduler with alphas_cumprod gives the path and field)")
    if eta and name != "DDIMScheduler":
        raise SdeflowValueError(f"eta is DDIMScheduler's noise level; {name} has none")
    eta = float(eta)
    if not 0.0 <= eta <= 1.0:
        raise SdeflowValueError(f"eta must be in [0, 1], got {eta}")
    notes: list[str] = []
    interpolation = "linear"
    grid = solver = ipath = taus = None
    final, opts, init, out = False, {}, 1.0, 1.0
    if sch is not None:
        if name == "DDIMScheduler":
            grid, final, solver, opts, ipath, init, taus = _ddim(sch, path, notes, strict, eta)
        elif name == "DPMSolverMultistepScheduler":
            grid, final, solver, opts, taus = _dpm(sch, path, notes, strict)
        elif name == "UniPCMultistepScheduler":
            grid, final, solver, opts, taus = _unipc(sch, path, notes, strict)
        elif name == "DEISMultistepScheduler":
            grid, final, solver, opts, taus = _deis(sch, path, notes, strict)
        else:
            grid, final, solver, opts, ipath, init, out, taus, interpolation = _euler(sch, path, notes, strict)
    elif name == "EulerDiscreteScheduler" and _sigma_schedules(cfg):
        interpolation = "log"
    if time_input is None:
        time_input = "continuous" if name == "EulerDiscreteScheduler" else "integer"
    clip, thresh = _clipping(cfg, name, clipping)
    channels = None
    if cfg.get("variance_type", None) in ("learned", "learned_range"):
        channels = _in_channels(model)
    net = DiffusersTime(model, path, time_input=time_input, interpolation=interpolation, channels=channels,
                        dtype=_model_dtype(model))
    field = _FIELDS[ptype](net, clip_data=clip, thresholding=thresh)
    note = "; ".join(notes)
    if name == "DDIMScheduler" and (clip is not None or thresh is not None):
        note = "; ".join(notes + ["DDIM's clipped x0 is paired with the noise rebuilt from it (diffusers' "
                                  "use_clipped_model_output=True)"])
    return Recipe(path=path, field=field, grid=grid, solver=solver, solver_options=opts, final_denoise=final,
                  integration_path=ipath, init_scale=init, output_scale=out, exact=not notes, note=note, timesteps=taus)


def _in_channels(model):
    cfg = getattr(model, "config", None)
    c = getattr(cfg, "in_channels", None) if cfg is not None else None
    if c is None and isinstance(cfg, dict):
        c = cfg.get("in_channels")
    if c is None:
        raise SdeflowValueError("the scheduler's variance_type is learned: the model's output has twice its input "
                                "channels, but the model has no config.in_channels to split it at")
    return int(c)


def _model_dtype(model):
    """The model's parameter dtype (diffusers' ``ModelMixin.dtype``) if it has one, else None."""
    dt = getattr(model, "dtype", None)
    return dt if isinstance(dt, torch.dtype) and dt.is_floating_point else None


# ---- consistency models ----------------------------------------------------------------------------------
class DiffusersConsistency:
    r"""A diffusers consistency model ``model(x, timestep)`` (``CMStochasticIterativeScheduler``'s) as the
    consistency function ``f(x, t)`` on :class:`~sdeflow.paths.EDM` (``sigma_max``): with
    :math:`\sigma = \sigma_{max}t`,

    .. math::
       f(x, t) = c_{skip}\,x + c_{out}\,F\Big(\frac{x}{\sqrt{\sigma^2+\sigma_d^2}},\ 250\log\sigma\Big),\quad
       c_{skip} = \frac{\sigma_d^2}{(\sigma-\epsilon)^2+\sigma_d^2},\quad
       c_{out} = \frac{(\sigma-\epsilon)\sigma_d}{\sqrt{\sigma^2+\sigma_d^2}}

    (Song et al. 2023, Appendix C; :math:`\epsilon = \sigma_{min}`, where :math:`f(x, \epsilon) = x`), the
    scheduler's ``scale_model_input``, ``sigma_to_t`` and ``get_scalings_for_boundary_condition``. Wrap it as
    :class:`~sdeflow.fields.ConsistencyField` (``from_diffusers`` does). ``schedule=(sigmas, timesteps)``: the
    scheduler's own pairs (its float32 sigmas, its timesteps from the float64 sigmas they round); at those
    sigmas the model gets those timesteps, elsewhere :math:`250\log\sigma`."""

    def __init__(self, model, *, sigma_min: float = 0.002, sigma_max: float = 80.0, sigma_data: float = 0.5,
                 schedule=None):
        if not callable(model):
            raise SdeflowTypeError(f"model must be callable as model(x, timestep), got {type(model).__name__}")
        self.model, self.sigma_min, self.sigma_max, self.sigma_data = model, float(sigma_min), float(sigma_max), \
            float(sigma_data)
        self.schedule = None if schedule is None else tuple(torch.as_tensor(np.asarray(v, dtype=np.float64))
                                                            for v in schedule)

    def timestep(self, sigma: Tensor) -> Tensor:
        """The model's time input at noise levels ``sigma`` (a ``(batch,)`` tensor)."""
        tau = 250.0 * torch.log(sigma + 1e-44)
        if self.schedule is None:
            return tau
        sig, taus = (v.to(dtype=sigma.dtype, device=sigma.device) for v in self.schedule)
        i = (sig[None, :] - sigma[:, None]).abs().argmin(1)
        return torch.where((sig[i] - sigma).abs() <= 1e-12 * sigma, taus[i], tau)

    def __call__(self, x, t, **model_kwargs):
        sigma = (self.sigma_max * t).to(x.dtype)
        sd, eps = self.sigma_data, self.sigma_min
        shape = (-1,) + (1,) * (x.dim() - 1)
        norm = torch.sqrt(sigma * sigma + sd * sd)
        c_skip = sd * sd / ((sigma - eps) ** 2 + sd * sd)
        c_out = (sigma - eps) * sd / norm
        out = unwrap_output(self.model(x / norm.reshape(shape), self.timestep(sigma), **model_kwargs))
        return c_skip.reshape(shape) * x + c_out.reshape(shape) * out

    def __repr__(self):
        return (f"DiffusersConsistency({type(self.model).__name__}, sigma_min={self.sigma_min:g}, "
                f"sigma_max={self.sigma_max:g}, sigma_data={self.sigma_data:g})")


def _consistency(model, scheduler, num_inference_steps, clipping) -> Recipe:
    """``from_diffusers`` for ``CMStochasticIterativeScheduler`` (module docstring)."""
    cfg = scheduler.config
    if float(cfg.get("s_noise", 1.0)) != 1.0:
        raise SdeflowValueError(f"s_noise={cfg['s_noise']} scales the re-noising beyond the consistency sampler's "
                                f"(Song et al.'s Algorithm 1 has s_noise = 1)")
    smin, smax = float(cfg.sigma_min), float(cfg.sigma_max)
    path = EDM(smax)
    if clipping == "scheduler":
        clip = 1.0 if cfg.get("clip_denoised", True) else None
    elif clipping is None or isinstance(clipping, (int, float, tuple, list)):
        clip = clipping
    else:
        raise SdeflowValueError(f"clipping must be 'scheduler', None, a number or (lo, hi) for {type(scheduler).__name__}, "
                                f"got {clipping!r}")
    sch = _prepared(scheduler, num_inference_steps)
    # the grid is the scheduler's float32 sigmas (its scalings and re-noising use them); the model gets its
    # timesteps, computed from the float64 sigmas they round
    sig = None if sch is None else np.asarray(sch.sigmas, dtype=np.float64)
    taus = None if sch is None else np.asarray(sch.timesteps, dtype=np.float64)
    net = DiffusersConsistency(model, sigma_min=smin, sigma_max=smax, sigma_data=float(cfg.sigma_data),
                               schedule=None if sch is None else (sig[:-1], taus))
    field = ConsistencyField(net, clip_data=clip, dtype=_model_dtype(model))
    if sch is None:
        return Recipe(path=path, field=field, init_scale=smax)
    grid = [min(float(v) / smax, 1.0) for v in sig]
    # a schedule whose last timestep is sigma_min itself (all num_train_timesteps) ends with a step from
    # epsilon to epsilon: one more evaluation, f(x, eps) = x (clipped), the sampler's final_denoise
    final = len(grid) > 2 and grid[-2] == grid[-1]
    return Recipe(path=path, field=field, grid=grid[:-1] if final else grid, solver="consistency",
                  final_denoise=final, init_scale=float(sch.init_noise_sigma), timesteps=taus.tolist(),
                  note="diffusers' last step adds sqrt(float32(sigma_min)^2 - sigma_min^2) z = 6.7e-7 z (its float32 "
                       "sigma_min against the float64 one); sdeflow's adds nothing")
