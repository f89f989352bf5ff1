"""The validation table: one row per (entry point, argument, bad condition), shared by
tests/project/test_validation.py (each row must raise its exception with its message) and docs/errors.md
(regenerate the table with ``python tests/validation_cases.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

import sdeflow as sf
from sdeflow import distributed as sd
from sdeflow import grids as G
from sdeflow import io
from sdeflow import langevin as L
from sdeflow import losses as Lo
from sdeflow import metrics as M

import validation_files as VF

D = torch.float64
TARGET = sf.Gaussian([1.0, -0.5], [0.5, 2.0])
X = torch.zeros(4, 2, dtype=D)
VP = sf.VP()
NOISE = TARGET.field("noise")
VE_, TE_, NF_ = sf.SdeflowValueError, sf.SdeflowTypeError, sf.NonFiniteError
SG_, UE_, ME_, BE_ = (sf.errors.SingularityError, sf.errors.UnstableError, sf.errors.InputMutationError,
                      sf.errors.BudgetError)
SE_ = sd.ShardError
GE_ = sf.GradientError


def _inference(call):
    def run():
        with torch.inference_mode():
            return call()
    return run


@dataclass
class Case:
    entry: str
    argument: str
    condition: str
    exc: type
    match: str
    call: Callable


def _s(**kw):
    # three Euler steps are too coarse for the preflight's narrow probe (its own rows below): these rows check
    # what comes after it
    args = dict(x_init=X, steps=3, preflight=False)
    args.update(kw)
    for k in [k for k, v in args.items() if v is None]:
        del args[k]
    return lambda: sf.sample(VP, args.pop("field", NOISE), args.pop("solver", "euler"), **args)


def _ll(**kw):
    args = dict(solver="dopri5", x=X)
    args.update(kw)
    return lambda: sf.log_likelihood(VP, args.pop("field", NOISE), args.pop("x"), args.pop("solver"), **args)


def _solve(*a, **kw):
    return lambda: sf.solve(*a, **kw)


_neg = lambda x, t: -x  # noqa: E731
_labelled = lambda x, t, y: -x  # noqa: E731 - a network taking a label y


def _diffusers(name, **kw):
    import diffusers

    return getattr(diffusers, name)(**kw)
_nan = lambda x, t: x * float("nan")  # noqa: E731

CASES = [
    # ---- paths -------------------------------------------------------------------------------
    Case("VP / SubVP", "beta_min", "< 0", VE_, "beta_min must be >= 0", lambda: sf.VP(-0.1, 20.0)),
    Case("VP / SubVP", "beta_max", "<= beta_min", VE_, "beta_min must be < beta_max", lambda: sf.SubVP(20.0, 1.0)),
    Case("VP / SubVP", "beta_min, beta_max", "NaN, Inf", VE_, "beta_max must be finite", lambda: sf.VP(0.1, float("inf"))),
    Case("VP / SubVP", "beta_min, beta_max", "not a number", TE_, "beta_min must be a real number", lambda: sf.VP("a", 2.0)),
    Case("VE", "sigma_min", "<= 0", VE_, "sigma_min must be > 0", lambda: sf.VE(0.0, 1.0)),
    Case("VE", "sigma_max", "<= sigma_min", VE_, "sigma_max must be > sigma_min", lambda: sf.VE(2.0, 1.0)),
    Case("VE", "sigma_max", "Inf", VE_, "sigma_max must be finite", lambda: sf.VE(0.01, float("inf"))),
    Case("EDM", "sigma_max", "<= 0", VE_, "sigma_max must be > 0", lambda: sf.EDM(0.0)),
    Case("CosineVP", "s", "<= 0", VE_, "s must be > 0", lambda: sf.CosineVP(0.0)),
    Case("DiscreteVP", "T", "< 1 or not an int", VE_, "T must be a positive integer", lambda: sf.DiscreteVP(T=0)),
    Case("DiscreteVP", "betas", "an entry outside (0, 1)", VE_, r"every entry in \(0, 1\)", lambda: sf.DiscreteVP([0.5, 1.0])),
    Case("DiscreteVP", "beta_start, beta_end", "not 0 < start < end < 1", VE_, "need 0 < beta_start < beta_end < 1",
         lambda: sf.DiscreteVP(beta_start=0.02, beta_end=1e-4)),
    Case("AffinePath", "t_min", "outside [0, 1)", VE_, r"t_min must be finite and >= 0 and < 1",
         lambda: sf.AffinePath(lambda t: 1 - t, lambda t: t, t_min=1.5)),
    Case("AffinePath", "alpha, sigma", "log-SNR not decreasing", VE_, "must decrease strictly",
         lambda: sf.AffinePath(lambda t: t, lambda t: 1 - t)),
    Case("AffinePath", "alpha", "not callable", TE_, "alpha must be a callable", lambda: sf.AffinePath(1.0, lambda t: t)),
    Case("AffinePath", "dalpha", "not the derivative of alpha", VE_, r"dalpha\(t\) is not the derivative of alpha",
         lambda: sf.AffinePath(lambda t: 1 - t, lambda t: t, lambda t: -2 * torch.ones_like(t))),
    Case("AffinePath", "alpha", "autograd cannot see its derivative (a detach inside)", VE_,
         r"autograd's derivative of alpha\(t\) is wrong",
         lambda: sf.AffinePath(lambda t: torch.cos(0.5 * torch.pi * t.detach()), lambda t: torch.sin(0.5 * torch.pi * t))),
    Case("AffinePath", "sigma", "autograd cannot differentiate it (numpy inside)", VE_,
         r"sigma\(t\) cannot be differentiated by autograd",
         lambda: sf.AffinePath(lambda t: 1 - t, lambda t: torch.as_tensor(np.sqrt(t.numpy())))),
    Case("path.q_sample", "x0", "not a floating tensor", TE_, "x0 must be a torch.Tensor", lambda: VP.q_sample([1.0], 0.5)),
    Case("path.q_sample", "t", "tensor not (batch,)", VE_, r"t must be a number or a \(batch,\) tensor",
         lambda: VP.q_sample(X, torch.ones(3, dtype=D))),
    Case("path.prior_sample", "shape", "negative entries", VE_, "shape must be a tuple of non-negative integers",
         lambda: VP.prior_sample((2, -1))),
    Case("path.prior_sample", "dtype", "not floating", TE_, "dtype must be a floating", lambda: VP.prior_sample((2,), dtype=torch.long)),
    Case("DiscreteVP", "betas", "not 1-D", VE_, "betas must be a 1-D table", lambda: sf.DiscreteVP(torch.full((2, 3), 0.01))),
    Case("path.q_sample", "t", "outside [0, 1]", VE_, r"t must be in \[0, 1\]", lambda: VP.q_sample(X, 1.5)),
    Case("path.alpha / sigma / ...", "t", "not a number", TE_, "a time must be a number", lambda: VP.alpha("a")),
    Case("DiscreteVP.index_to_t", "i", "outside [0, T - 1]", VE_, r"i must be a DDPM index in \[0, T - 1\]",
         lambda: sf.DiscreteVP().index_to_t(-5)),
    Case("DiscreteVP.t_to_index", "t", "outside [1/T, 1]", VE_, r"t must be a time in \[1/T, 1\]",
         lambda: sf.DiscreteVP().t_to_index(2.0)),
    Case("path.q_sample / prior_sample, langevin", "generator", "not a torch.Generator", TE_,
         "generator must be a torch.Generator", lambda: VP.q_sample(X, 0.5, generator=np.random.default_rng(0))),
    Case("sample", "noise", "a TableNoise with fewer steps than the solve", VE_, "the noise table holds 1 steps",
         _s(solver="euler_maruyama", noise=sf.TableNoise([torch.zeros(4, 2, dtype=D)]))),
    Case("sample (adaptive solvers)", "rtol, atol", "below float64's resolution", VE_, "below float64's resolution",
         lambda: sf.sample(VP, NOISE, "dopri5", n=2, shape=(2,), rtol=1e-300, atol=1e-300)),
    Case("sample", "callback", "with per-sample adaptive steps", VE_, "callback= needs one time for the whole batch",
         lambda: sf.sample(VP, NOISE, "dopri5", n=2, shape=(2,), callback=lambda *a: None)),
    Case("sample", "callback", "with grad='checkpoint'", VE_, "cannot replace the state inside checkpointed steps",
         _s(grad="checkpoint", callback=lambda *a: None)),
    Case("path.alpha/sigma/coefficients/...", "t", "outside [0, 1]", VE_, r"t must be in \[0, 1\].*got -0.5",
         lambda: sf.CosineVP().sigma(-0.5)),
    # ---- oracles, fields, adapters, noise sources ---------------------------------------------------------
    Case("Gaussian", "var", "not positive or wrong shape", VE_, "var must be positive", lambda: sf.Gaussian([0.0], [-1.0])),
    Case("GaussianMixture", "weights", "negative or zero sum", VE_, "weights must be 2 non-negative numbers",
         lambda: sf.GaussianMixture(torch.zeros(2, 2), torch.ones(2, 2), [0.5, -0.5])),
    Case("oracle.field / Field.as_kind", "kind", "unknown", VE_, "unknown field kind 'bogus'", lambda: TARGET.field("bogus")),
    Case("Field.score/noise/data/velocity", "t", "tensor not (batch,)", VE_, r"t must be a number or a \(batch,\) tensor",
         lambda: NOISE.score(X, torch.ones(3), VP)),
    Case("NoiseField / ScoreField / ...", "net", "not callable", TE_, "net must be callable", lambda: sf.NoiseField(3)),
    Case("SumField", "terms", "not Fields", TE_, "SumField terms must be Fields", lambda: sf.SumField([(1.0, 3)])),
    Case("IndexTime", "T", "< 1", VE_, "T must be a positive integer", lambda: sf.IndexTime(_neg, T=0)),
    Case("SigmaTime", "path", "not a GaussianPath", TE_, "path must be the GaussianPath", lambda: sf.SigmaTime(_neg, 80.0)),
    Case("classifier_free_guidance", "scale", "NaN, Inf", VE_, "scale must be finite",
         lambda: sf.classifier_free_guidance(NOISE, NOISE, float("nan"))),
    Case("classifier_free_guidance", "null", "missing (one conditional field)", VE_, r"null \(the null condition",
         lambda: sf.classifier_free_guidance(sf.NoiseField(_labelled), 2.0)),
    Case("classifier_free_guidance", "null", "names an argument not in model_kwargs", VE_,
         "null names 'y', which is not in model_kwargs", _s(field=sf.classifier_free_guidance(
             sf.NoiseField(_labelled), 2.0, null={"y": 10}))),
    Case("classifier_free_guidance", "null", "shape neither one condition nor one per sample", VE_,
         r"null\['y'\] has shape \(3,\)", _s(field=sf.classifier_free_guidance(
             sf.NoiseField(_labelled), 2.0, null={"y": torch.full((3,), 10)}), model_kwargs={"y": torch.zeros(4).long()})),
    Case("GuidedField", "field", "passes no model_kwargs (an oracle)", TE_, "cannot be guided by a null condition",
         lambda: sf.GuidedField(NOISE, 2.0, {"y": 10})),
    Case("sample", "model_kwargs", "not a dict", TE_, "model_kwargs must be a dict", _s(model_kwargs=[1])),
    Case("sample", "model_kwargs", "a field that passes none to a network", TE_,
         "OracleField passes no keyword arguments", _s(model_kwargs={"y": torch.zeros(4)})),
    Case("sample", "callback", "not callable", TE_, "callback must be callable", _s(callback=3)),
    Case("sample: consistency", "field", "not a consistency function (a denoiser, any kind)", TE_,
         r"does not declare itself one: wrap a consistency model as ConsistencyField\(net\)", _s(solver="consistency")),
    Case("sample: consistency", "integration_path", "another path", VE_, "drop integration_path",
         _s(solver="consistency", field=TARGET.consistency_field(VP, VP.t_min), integration_path=sf.EDM())),
    Case("sample", "callback", "returns a tensor unlike x", TE_, r"callback returned \(1, 2\)",
         _s(callback=lambda i, t, x, x0: x[:1])),
    Case("invert", "solver", "draws noise (SDE, ancestral, ddim eta > 0)", VE_,
         "inversion needs a deterministic ODE solver", lambda: sf.invert(VP, NOISE, X, "euler_maruyama", steps=3)),
    Case("invert", "final_denoise", "True (the state at t_max is the code)", VE_, "drop final_denoise",
         lambda: sf.invert(VP, NOISE, X, "euler", steps=3, final_denoise=True)),
    Case("invert", "grid", "not strictly increasing", VE_, "inversion grid must be strictly increasing",
         lambda: sf.invert(VP, NOISE, X, "euler", grid=[0.5, 0.1])),
    Case("sdedit", "t_edit", "outside (0, 1]", VE_, "t_edit must be", lambda: sf.sdedit(VP, NOISE, X, 0.0)),
    Case("Inpaint", "mask", "values other than 0 and 1", VE_, "mask must hold only 0",
         lambda: sf.Inpaint(VP, X, torch.full((1, 2), 0.5))),
    Case("Inpaint", "mask", "does not broadcast against known", VE_, "does not broadcast",
         lambda: sf.Inpaint(VP, X, torch.ones(3, 3))),
    Case("TableNoise", "table", "not a sequence", TE_, "table must be a sequence", lambda: sf.TableNoise(3)),
    Case("BrownianPath", "times", "fewer than 2 points", VE_, "times must be a 1-D grid", lambda: sf.BrownianPath([0.5])),
    Case("solvers.get / describe", "solver", "unknown name", VE_, "unknown solver 'hune'", lambda: sf.solvers.describe("hune")),
    Case("solvers.get: unipc", "variant", "not 'bh1' or 'bh2'", VE_, r"UniPC variant must be 'bh1' or 'bh2'.*exp_pc",
         lambda: sf.solvers.get("unipc", variant="exact")),
    Case("solvers.get: dpmpp_3m, dpm_solver_2/3", "solver_type", "not 'dpmsolver' or 'taylor'", VE_,
         "solver_type must be 'dpmsolver' or 'taylor'", lambda: sf.solvers.get("dpm_solver_2", solver_type="midpoint")),
    Case("solvers.get: dpm_solver_2/3", "stages", "not 'log_snr' or 'time_uniform'", VE_,
         "stages must be 'log_snr' or 'time_uniform'", lambda: sf.solvers.get("dpm_solver_3", stages="uniform")),
    Case("solvers.get: sde_dpmpp_2m", "solver_type", "not 'heun' or 'midpoint'", VE_,
         "solver_type must be 'heun' or 'midpoint'", lambda: sf.solvers.get("sde_dpmpp_2m", solver_type="taylor")),
    Case("solvers.get: exp_multistep", "variant", "an authors' form with order 4 or a corrector", VE_,
         r"variant='dpmsolver' is dpm-solver's multistep update: order 1 to 3 and no corrector",
         lambda: sf.solvers.get("exp_multistep", order=3, variant="dpmsolver", corrector=True)),
    Case("solvers.get: lms", "order", "not 1 to 4", VE_, "lms order must be 1, 2, 3 or 4",
         lambda: sf.solvers.get("lms", order=5)),
    Case("solvers.get: edm_heun / edm_euler", "S_churn, S_tmin, S_noise", "< 0", VE_, "S_churn must be finite and >= 0",
         lambda: sf.solvers.get("edm_heun", S_churn=-1.0)),
    Case("solvers.get: edm_heun / edm_euler", "S_tmax", "< S_tmin", VE_, "S_tmax must be >= S_tmin",
         lambda: sf.solvers.get("edm_heun", S_tmin=1.0, S_tmax=0.5)),
    Case("sample: edm_heun / edm_euler", "S_tmax", "churn beyond the path's noise end", VE_,
         r"churn raises the noise level .* lower S_tmax",
         lambda: sf.sample(sf.EDM(80.0), NOISE, "edm_heun", steps=4, x_init=X, S_churn=40.0, t_max=1.0, t_min=0.01)),
    # ---- clipping, other libraries' models ---------------------------------------------------------------
    Case("NoiseField / ... / ClippedField", "clip_data", "lo >= hi", VE_, r"clip_data must be \(lo, hi\) with lo < hi",
         lambda: sf.NoiseField(_neg, clip_data=(1.0, -1.0))),
    Case("NoiseField / ... / ClippedField", "clip_data, thresholding", "both given", VE_,
         "give clip_data or thresholding, not both", lambda: sf.NoiseField(_neg, clip_data=1.0, thresholding=True)),
    Case("ClippedField", "clip_data, thresholding", "neither given", VE_, "ClippedField needs clip_data",
         lambda: sf.ClippedField(NOISE)),
    Case("DynamicThresholding", "ratio", "outside (0, 1]", VE_, r"ratio must be finite and > 0 and <= 1",
         lambda: sf.DynamicThresholding(ratio=1.5)),
    Case("DynamicThresholding", "max_value", "< 1", VE_, "max_value must be finite and >= 1",
         lambda: sf.DynamicThresholding(max_value=0.5)),
    Case("from_diffusers", "scheduler", "no alphas_cumprod table", TE_, "scheduler must be a diffusers scheduler",
         lambda: sf.from_diffusers(_neg, object())),
    Case("from_diffusers", "scheduler", "zero terminal SNR (rescale_betas_zero_snr)", VE_, "rescale_betas_zero_snr",
         lambda: sf.from_diffusers(_neg, _diffusers("DDIMScheduler", rescale_betas_zero_snr=True))),
    Case("from_diffusers", "scheduler", "a loop sdeflow does not reproduce (strict)", VE_,
         "pass strict=False for sdeflow's closest sampler",
         lambda: sf.from_diffusers(_neg, _diffusers("DDIMScheduler", timestep_spacing="linspace"),
                                   num_inference_steps=10)),
    Case("from_diffusers", "scheduler", "a scheduler whose loop is not mapped", VE_, "loop is not mapped",
         lambda: sf.from_diffusers(_neg, _diffusers("DDPMScheduler"), num_inference_steps=10)),
    Case("from_diffusers", "num_inference_steps", "< 1", VE_, "num_inference_steps must be a positive integer",
         lambda: sf.from_diffusers(_neg, _diffusers("DDIMScheduler"), num_inference_steps=0)),
    Case("from_diffusers", "eta", "with a scheduler other than DDIM", VE_, "eta is DDIMScheduler's noise level",
         lambda: sf.from_diffusers(_neg, _diffusers("EulerDiscreteScheduler"), eta=1.0)),
    Case("from_diffusers (integer timesteps)", "grid, solver", "an evaluation between knots", VE_, "not a knot i/T",
         lambda: sf.sample(sf.from_diffusers(_neg, _diffusers("DDIMScheduler")).path,
                           sf.from_diffusers(_neg, _diffusers("DDIMScheduler")).field, "midpoint", grid=[0.901, 0.9],
                           x_init=X)),
    Case("from_k_diffusion", "sampler", "unknown", VE_, "unknown k-diffusion sampler 'lms'",
         lambda: sf.from_k_diffusion(_neg, 0.002, 80.0, steps=5, sampler="lms")),
    Case("from_k_diffusion", "sigma_min, sigma_max", "sigma_min >= sigma_max", VE_, "need sigma_min < sigma_max",
         lambda: sf.from_k_diffusion(_neg, 80.0, 0.002, steps=5)),
    # ---- sample: state, sizes --------------------------------------------------------------------
    Case("sample", "path", "not a GaussianPath", TE_, "path must be a GaussianPath", lambda: sf.sample("VP", NOISE, steps=2, x_init=X)),
    Case("sample", "field", "a bare network", TE_, r"field must be a sdeflow Field.*NoiseField\(net\)",
         lambda: sf.sample(VP, _neg, steps=2, x_init=X)),
    Case("sample", "x_init", "integer dtype", TE_, "x_init must have a floating dtype", _s(x_init=torch.zeros(3, 2, dtype=torch.long))),
    Case("sample", "x_init", "float16/bfloat16", TE_, r"too coarse for the solver state.*NoiseField\(net, dtype", _s(x_init=X.half())),
    Case("sample", "x_init", "not a tensor", TE_, "x_init must be a torch.Tensor", _s(x_init=[[0.0, 1.0]])),
    Case("sample", "n, shape, dtype, device", "disagree with x_init", VE_, "n=3 disagrees with x_init's batch size 4", _s(n=3)),
    Case("sample", "dtype", "disagrees with x_init", TE_, "dtype=torch.float32 disagrees", _s(dtype=torch.float32)),
    Case("sample", "device", "the meta device (shapes, no values)", VE_, "the meta device holds shapes, not values",
         _s(device="meta")),
    Case("sample", "x_init", "on the meta device", VE_, "x_init is on the meta device",
         _s(x_init=torch.empty(4, 2, dtype=D, device="meta"))),
    Case("sample", "n", "missing, < 1 or not an int", VE_, "give x_init, or n", _s(x_init=None, n=2.5, shape=2)),
    Case("sample", "shape", "missing with n", VE_, "shape .* is needed with n", _s(x_init=None, n=3)),
    Case("sample", "shape", "negative entries", VE_, "shape must be a tuple of non-negative integers",
         _s(x_init=None, n=2, shape=(-1,))),
    Case("sample", "dtype", "not floating", TE_, "dtype must be torch.float32 or torch.float64",
         _s(x_init=None, n=2, shape=2, dtype=torch.int32)),
    Case("sample", "chunk_size", "< 1", VE_, "chunk_size must be an integer >= 1", _s(chunk_size=0)),
    Case("sample", "chunk_size", "not an integer", TE_, "chunk_size must be an integer >= 1", _s(chunk_size=2.5)),
    Case("sample", "device", "a name torch does not know", VE_, "device='tpu' is not a device torch knows",
         _s(x_init=None, n=2, shape=2, device="tpu")),
    *([Case("sample", "device", "CUDA on a machine without it", VE_, "CUDA is not available on this machine",
            _s(x_init=None, n=2, shape=2, device="cuda"))] if not torch.cuda.is_available() else []),
    Case("sample", "dtype", "float16/bfloat16 state", TE_, "keep dtype=torch.float32 and let a half-precision network",
         _s(x_init=None, n=2, shape=2, dtype=torch.float16)),
    Case("sample", "steps", "a plan beyond memory (10^9 steps)", BE_, "estimated before allocating.*use fewer steps",
         _s(steps=10 ** 9)),
    Case("sample", "n", "samples beyond memory (10^12)", BE_, "estimated before allocating.*chunk_size",
         _s(x_init=None, n=10 ** 12, shape=2)),
    Case("sample", "x_init", "NaN/Inf", NF_, "initial state holds NaN or Inf", _s(x_init=X * float("nan"))),
    # ---- sample: steps, budgets, grids ------------------------------------------------------------
    Case("sample", "steps", "< 1 or not an int", VE_, "steps must be a positive integer", _s(steps=0)),
    Case("sample", "steps, nfe", "both or neither", VE_, "either steps= or nfe=", _s(nfe=3)),
    Case("sample", "nfe", "below the solver's minimum", VE_, "nfe=1 is below the minimum of 2 for solver 'heun'",
         _s(steps=None, nfe=1, solver="heun")),
    Case("sample", "nfe", "below the minimum with final_denoise", VE_, r"minimum of 3 \(including 1 for final_denoise\)",
         _s(steps=None, nfe=2, solver="heun", final_denoise=True)),
    Case("sample", "nfe", "an explicit grid needs more", VE_, "the grid needs 4 evaluations",
         _s(steps=None, nfe=3, solver="heun", grid=[1.0, 0.5, 0.1])),
    Case("sample", "t_min, t_max", "not 0 <= t_min < t_max <= 1", VE_, "need 0 <= t_min < t_max <= 1", _s(t_min=0.5, t_max=0.2)),
    Case("sample", "grid", "unknown name", VE_, "unknown grid 'cosine'", _s(grid="cosine")),
    Case("sample", "grid", "not strictly decreasing", VE_, "strictly decreasing", _s(steps=None, grid=[1.0, 0.5, 0.5, 0.1])),
    Case("sample", "grid", "outside [0, 1]", VE_, r"leaves \[0, 1\]", _s(steps=None, grid=[1.5, 0.5])),
    Case("sample", "grid", "fewer than 2 points", VE_, "at least 2 times", _s(steps=None, grid=[1.0])),
    Case("sample", "grid", "NaN/Inf", VE_, "NaN or Inf", _s(steps=None, grid=[1.0, float("nan")])),
    Case("sample", "grid", "integer tensor", TE_, "floating tensor of times", _s(steps=None, grid=torch.tensor([1, 0]))),
    Case("sample", "steps", "given with an explicit grid", VE_, "steps is set by the explicit grid", _s(grid=[1.0, 0.5])),
    Case("sample", "t_min, t_max", "disagree with an explicit grid", VE_, "t_min=0.1 disagrees",
         _s(steps=None, grid=[1.0, 0.5], t_min=0.1)),
    Case("sample", "rho", "<= 0", VE_, "rho must be > 0", _s(grid="karras", rho=-1.0)),
    Case("sample", "rho", "with a grid other than 'karras'", VE_, "rho is the exponent of the Karras grid",
         _s(grid="uniform", rho=5.0)),
    Case("sample", "rho", "beside a Grid object", TE_, "rho= is the Karras grid's option", _s(grid=G.Karras(), rho=5.0)),
    Case("sample", "t_max, t_min", "disagree with the Grid object's", VE_, "t_min=0.1 disagrees with grid=",
         _s(grid=G.Uniform(t_min=0.01), t_min=0.1)),
    Case("sample", "grid='log_snr'/'karras'", "infinite log-SNR at an end", VE_, "needs a finite log-SNR",
         _s(grid="log_snr", t_min=0.0)),
    Case("sample", "t_max, t_min", "outside [0, 1]", VE_, "t_max must be finite and >= 0 and <= 1", _s(t_max=1.5)),
    Case("grids.make_grid", "steps", "more than float64 resolves there", VE_, "has repeated times",
         lambda: G.make_grid("log_snr", sf.CosineVP(), 10 ** 6, 0.9999999999999, 1e-3)),
    # ---- sample: singular ends, unstable steps, networks writing into their input --------------------------
    Case("sample", "t_max", "a noise field where alpha = 0", SG_, "cannot be formed from a noise field at t=1",
         lambda: sf.sample(sf.LinearFlow(), NOISE, "heun", steps=4, n=2, shape=(2,), t_max=1.0)),
    Case("sample", "t_max", "the reverse SDE where alpha = 0 (g^2 infinite)", SG_, r"gamma\^2 = inf",
         lambda: sf.sample(sf.LinearFlow(), TARGET.field("velocity"), "euler_maruyama", steps=4, n=2, shape=(2,), t_max=1.0)),
    Case("sample", "t_min", "a data field where sigma = 0", SG_, "cannot be formed from a data field at t=0",
         lambda: sf.sample(sf.LinearFlow(), TARGET.field("data"), "heun", steps=4, n=2, shape=(2,), t_min=0.0)),
    Case("sample", "final_denoise", "at t_min where a score field has no data prediction", SG_, "final denoising step",
         lambda: sf.sample(sf.LinearFlow(), TARGET.field("score"), "euler", steps=4, n=2, shape=(2,), t_min=0.0,
                           t_max=0.9, final_denoise=True)),
    Case("sample", "x_init", "given while the default window moved off a singular end", SG_,
         "x_init was given for the path's own end", lambda: sf.sample(sf.LinearFlow(), NOISE, "heun", steps=4, x_init=X)),
    Case("sample", "path, t_max", "the window starts where the path has not reached noise (no x_init)", VE_,
         r"default prior N\(0, sigma\^2\) is not the marginal",
         lambda: sf.sample(sf.DiscreteVP(T=20), NOISE, "heun", steps=32, n=4, shape=(2,))),
    Case("sample (adaptive solver)", "t_max", "a singular end of the window", SG_, "t_max=1 is singular",
         lambda: sf.sample(sf.CosineVP(), NOISE, "dopri5", n=2, shape=(2,), t_max=1.0)),
    Case("sample", "steps, grid", "an explicit step beyond its stability limit", UE_, "cannot integrate this window",
         lambda: sf.sample(sf.CosineVP(), NOISE, "euler_maruyama", steps=5, n=2, shape=(2,))),
    Case("sample", "grid", "steps far too coarse for the change they span", UE_, "cannot integrate this window",
         lambda: sf.sample(sf.VE(1e-30, 1e30), TARGET.field("data"), "heun", steps=20, grid="karras", n=2, shape=(2,),
                           t_max=1.0, t_min=0.0)),
    Case("sample (field)", "net", "modifies its input in place", ME_, "modified its input x in place",
         _s(field=sf.NoiseField(lambda x, t: x.mul_(0.5)))),
    Case("sample (field)", "net", "modifies its time input t in place", ME_, "modified its time input t in place",
         _s(field=sf.NoiseField(lambda x, t: (t.mul_(0.5), torch.zeros_like(x))[1]))),
    Case("sample (field)", "EnergyField net", "modifies its input x in place", ME_,
         "energy network modified its input x in place",
         _s(field=sf.EnergyField(lambda x, t: (x.mul_(2.0) ** 2).sum(-1)))),
    Case("sample", "options (torchdiffeq)", "a step size <= 0", VE_,
         r"options: first_step=0.0 \(a step size\) must be a positive finite number",
         _s(solver="torchdiffeq:dopri5", steps=None, options={"first_step": 0.0})),
    Case("sample", "options (torchdiffeq)", "an option the method does not read", VE_,
         r"torchdiffeq:dopri5 has no option\(s\) \['step_size'\]",
         _s(solver="torchdiffeq:dopri5", steps=None, options={"step_size": 0.1})),
    Case("sample", "options (torchdiffeq)", "a count that is not a positive integer", VE_,
         "options: max_num_steps=2.5 .* must be an integer >= 1",
         _s(solver="torchdiffeq:dopri5", steps=None, options={"max_num_steps": 2.5})),
    Case("sample (field)", "oracle", "event shape that does not fit", VE_, r"oracle takes x of shape \(batch, 2\)",
         _s(x_init=torch.zeros(2, 3, dtype=D))),
    Case("sample (field output)", "EnergyField net", "energy does not depend on x", VE_, "does not depend on x",
         _s(field=sf.EnergyField(lambda x, t: t * 0 + 1.0))),
    Case("sample", "gamma", "a callable returning the wrong shape", VE_, "gamma.t. must return a number or a tensor shaped like t",
         _s(solver="euler_maruyama", gamma=lambda t: torch.ones(3))),
    Case("sample / solve", "first_step (dopri5)", "<= 0", VE_, "first_step must be finite and > 0",
         _s(steps=None, solver="dopri5", first_step=0.0)),
    Case("sample / solve", "error_norm, per_sample (dopri5)", "'batch' with per-sample control", VE_,
         "error_norm='batch' pools the whole batch's error into one step size",
         _s(steps=None, solver="dopri5", error_norm="batch")),
    Case("sample / solve", "error_norm, noise (adaptive_heun_sde)", "'batch' with PerSampleNoise", VE_,
         "error_norm='batch' pools the whole batch's error into one step size, but noise=PerSampleNoise",
         _s(steps=None, solver="adaptive_heun_sde", error_norm="batch", noise=1, gamma="reverse")),
    Case("sample / solve", "per_sample (dopri5)", "not a bool", TE_, "per_sample must be True or False",
         _s(steps=None, solver="dopri5", per_sample="yes")),
    Case("sample / solve", "h_init, h_max (adaptive_heun_sde)", "<= 0", VE_, "h_max must be finite and > 0",
         _s(steps=None, solver="adaptive_heun_sde", h_max=-0.1, generator=torch.Generator())),
    Case("sample / solve", "max_steps (adaptive)", "reached", BE_, "took more than max_steps=2 steps",
         _s(steps=None, solver="dopri5", max_steps=2, rtol=1e-12, atol=1e-12)),
    Case("sample / solve", "dt (torchsde)", "<= 0", VE_, "dt must be finite and > 0",
         _s(solver="torchsde:euler", dt=0.0, generator=torch.Generator())),
    Case("PerSampleNoise", "seed", "outside [0, 2**64)", VE_, r"seed must be in \[0, 2\*\*64\)", lambda: sf.PerSampleNoise(2 ** 70)),
    Case("NoiseField / ScoreField / ...", "dtype", "not a floating dtype", TE_, "dtype must be a floating torch.dtype",
         lambda: sf.NoiseField(_neg, dtype=torch.long)),
    # ---- sample: solvers, gamma, noise -------------------------------------------------------------
    Case("sample / solve", "solver", "unknown name", VE_, r"unknown solver 'hune'. Did you mean 'heun'\?", _s(solver="hune")),
    Case("sample / solve", "solver", "not a name/class/instance", TE_, "solver must be a name", _s(solver=3)),
    Case("sample / solve", "solver options", "unknown option name", TE_, "solver 'heun' has no option.*foo", _s(solver="heun", foo=1)),
    Case("sample", "eta (ddim)", "outside [0, 1]", VE_, r"eta must be in \[0, 1\]", _s(solver="ddim", eta=2.0)),
    Case("sample / solve", "rtol, atol (adaptive)", "< 0 or both 0", VE_, "rtol must be finite and >= 0",
         _s(steps=None, solver="dopri5", rtol=-1.0)),
    Case("sample", "gamma", "negative or NaN", VE_, "gamma must be >= 0", _s(solver="euler_maruyama", gamma=-1.0)),
    Case("sample", "gamma", "unknown string", VE_, "gamma must be a number >= 0, 'reverse'", _s(solver="euler_maruyama", gamma="fwd")),
    Case("sample", "gamma", "> 0 with an ODE solver", VE_, "makes the dynamics an SDE", _s(solver="heun", gamma="reverse")),
    Case("sample / solve", "generator", "not a torch.Generator", TE_, "generator must be a torch.Generator",
         _s(solver="euler_maruyama", gamma=1.0, generator=3)),
    Case("sample / solve", "generator", "on another device than x", VE_, "generator is on cpu but x is on meta",
         lambda: sf.noise.as_noise_source(None, torch.Generator(), torch.device("meta"))),
    Case("sample / solve", "noise", "not a NoiseSource or int", TE_, "noise must be a NoiseSource",
         _s(solver="euler_maruyama", gamma=1.0, noise="a")),
    Case("sample / solve", "noise, generator", "both given", VE_, "either noise=", _s(solver="euler_maruyama", gamma=1.0, noise=1,
                                                                                       generator=torch.Generator())),
    Case("PerSampleNoise", "seed", "not an integer", TE_, "seed must be an integer", lambda: sf.PerSampleNoise(1.5)),
    Case("sample", "grad", "unknown mode (e.g. 'ful', True)", GE_, "grad must be None .no autograd graph., 'full'",
         _s(grad="ful")),
    Case("sample", "grad", "'adjoint'", GE_, "grad='adjoint' is not supported.*use grad='checkpoint'", _s(grad="adjoint")),
    Case("sample", "grad", "'checkpoint' with an adaptive or backend solver", GE_,
         "grad='checkpoint' needs a fixed-step solver, but 'dopri5' chooses its own steps.*grad='full'",
         _s(steps=None, solver="dopri5", grad="checkpoint")),
    Case("sample", "grad", "given under torch.inference_mode()", GE_, "needs autograd, but sample was called under "
         "torch.inference_mode", _inference(_s(grad="full"))),
    Case("sample", "x_init", "requires grad with grad=None (its gradient would be dropped)", GE_,
         "x_init requires grad, but grad=None builds no autograd graph.*grad='full'.*grad='checkpoint'",
         _s(x_init=X.clone().requires_grad_(True))),
    # ---- field outputs -------------------------------------------------------------------------
    Case("sample (field output)", "field", "output of the wrong shape", VE_, r"returned shape \(4, 1\).*x has shape \(4, 2\)",
         _s(field=sf.NoiseField(lambda x, t: x[:, :1]))),
    Case("sample (field output)", "field", "output on another device", VE_, "on meta.*move the network",
         _s(field=sf.NoiseField(lambda x, t: torch.empty(x.shape, device="meta", dtype=x.dtype)))),
    Case("sample (field output)", "field", "integer output", TE_, "dtype torch.int64.*floating",
         _s(field=sf.NoiseField(lambda x, t: torch.zeros(x.shape, dtype=torch.int64)))),
    Case("sample (field output)", "EnergyField net", "not one energy per sample", VE_, "EnergyField needs one energy per sample",
         _s(field=sf.EnergyField(lambda x, t: x))),
    Case("sample (field output)", "field", "NaN/Inf output", NF_, "field returned NaN or Inf at step 0, t=1",
         _s(field=sf.NoiseField(_nan))),
    Case("sample (adaptive)", "field", "NaN/Inf output", NF_, "field returned NaN or Inf at t=1",
         _s(steps=None, solver="dopri5", field=sf.NoiseField(_nan))),
    # ---- solve -----------------------------------------------------------------------------------
    Case("solve", "x0", "float16/bfloat16", TE_, "x0 has dtype torch.float16, too coarse", _solve(_neg, None, X.half(), [0.0, 1.0])),
    Case("solve", "x0", "0-d", VE_, r"x0 must have shape \(batch, \*event\)", _solve(_neg, None, torch.tensor(1.0), [0.0, 1.0])),
    Case("solve", "grid", "not strictly monotone", VE_, "strictly monotone", _solve(_neg, None, X, [0.0, 1.0, 0.5])),
    Case("solve", "drift", "not callable", TE_, "drift must be callable", _solve(3, None, X, [0.0, 1.0])),
    Case("solve", "diffusion", "negative number", VE_, "diffusion must be >= 0", _solve(_neg, -1.0, X, [0.0, 1.0], "euler_maruyama")),
    Case("solve", "diffusion", "given to an ODE solver", VE_, "diffusion is given but solver 'rk4' is an ODE solver",
         _solve(_neg, 1.0, X, [0.0, 1.0], "rk4")),
    Case("solve", "noise_type", "unknown", VE_, "noise_type must be 'diagonal', 'scalar' or 'additive'",
         _solve(_neg, 1.0, X, [0.0, 1.0], "euler_maruyama", noise_type="x")),
    Case("solve", "sde_type", "unknown", VE_, "sde_type must be 'ito' or 'stratonovich'", _solve(_neg, None, X, [0.0, 1.0], sde_type="x")),
    Case("solve", "solver", "needs a path (DDIM, DPM-Solver)", VE_, "needs a Gaussian path and a field",
         _solve(_neg, None, X, [1.0, 0.5], "ddim")),
    Case("solve", "nfe", "given (not a solve() argument)", TE_, "has no option.*nfe", _solve(_neg, None, X, [0.0, 1.0], "heun", nfe=2)),
    Case("solve", "drift", "NaN/Inf output", NF_, "drift returned NaN or Inf at step 0", _solve(_nan, None, X, [0.0, 1.0], "euler")),
    Case("solve", "drift", "modifies its input in place", ME_, "drift modified its input x in place",
         _solve(lambda x, t: x.mul_(0.5), None, X.clone(), [0.0, 1.0], "euler")),
    Case("solve", "generator", "not a torch.Generator (numpy's)", TE_, "generator must be a torch.Generator",
         _solve(_neg, 1.0, X, [0.0, 1.0], "euler_maruyama", generator=np.random.default_rng(0))),
    Case("solve (adaptive)", "drift", "NaN/Inf output", NF_, "drift returned NaN or Inf at t=0", _solve(_nan, None, X, [0.0, 1.0], "dopri5")),
    # ---- log_likelihood -------------------------------------------------------------------------
    Case("log_likelihood", "solver", "exponential integrator / DDIM-like", VE_, "cannot integrate the divergence",
         _ll(solver="dpm_solver_2", steps=3)),
    Case("log_likelihood", "solver", "SDE solver", VE_, "is an SDE solver", _ll(solver="euler_maruyama", steps=3)),
    Case("log_likelihood", "steps", "missing for a fixed-step solver", VE_, "give steps=", _ll(solver="rk4")),
    Case("log_likelihood", "grid", "not increasing", VE_, "grid must be strictly increasing", _ll(grid=[1.0, 0.5, 0.1])),
    Case("log_likelihood", "divergence", "unknown name", VE_, "divergence must be 'auto', 'exact' or 'hutchinson'",
         _ll(divergence="hutch")),
    Case("log_likelihood", "probe", "unknown name", VE_, "probe must be 'rademacher' or 'gaussian'", _ll(probe="normal")),
    Case("log_likelihood", "n_probes", "< 1", VE_, "n_probes must be an integer >= 1", _ll(n_probes=0)),
    Case("log_likelihood", "seed", "not an int or PerSampleNoise", TE_, "seed must be an integer or a PerSampleNoise",
         _ll(seed=torch.Generator())),
    Case("log_likelihood", "x_at", "unknown", VE_, "x_at must be 'data'", _ll(x_at="x0")),
    Case("log_likelihood", "bin_width", "<= 0", VE_, "bin_width must be finite and > 0", _ll(bin_width=0.0)),
    Case("log_likelihood", "prior", "output not (batch,)", VE_, r"prior\(x_T\) must return a \(batch,\)",
         _ll(prior=lambda z: z)),
    Case("log_likelihood", "field", "EnergyField without create_graph=True", VE_, "create_graph=True",
         _ll(field=sf.EnergyField(lambda x, t: (x * x).sum(1)))),
    Case("log_likelihood", "x", "NaN/Inf", VE_, "x holds NaN or Inf", _ll(x=X * float("nan"))),
    # ---- grids -----------------------------------------------------------------------------------
    Case("grids.*", "steps", "< 1 or not an int", VE_, "steps must be a positive integer", lambda: G.uniform(None, 0)),
    Case("grids.*", "t_max, t_min", "not 0 <= t_min < t_max <= 1", VE_, "need 0 <= t_min < t_max <= 1", lambda: G.uniform(None, 3, 0.0, 1.0)),
    Case("grids.log_snr / karras", "path", "not a GaussianPath", TE_, "needs a GaussianPath", lambda: G.log_snr(None, 3)),
    Case("grids.discrete", "path", "not a DiscreteVP", TE_, "needs a DiscreteVP", lambda: G.discrete(VP, 3)),
    Case("grids.discrete", "steps", "more than the knots", VE_, "exceeds the", lambda: G.discrete(sf.DiscreteVP(T=10), 20)),
    Case("grids.make_grid", "grid name", "unknown name", VE_, "unknown grid 'foo'", lambda: G.make_grid("foo", VP, 3, 1.0, 0.0)),
    Case("grids.Karras", "rho", "<= 0", VE_, "rho must be > 0", lambda: G.Karras(rho=0.0)),
    Case("grids.Grid", "t_max, t_min", "not 0 <= t_min < t_max <= 1", VE_, "need 0 <= t_min < t_max <= 1",
         lambda: G.LogSNR(t_max=0.5, t_min=0.5)),
    Case("grids.Grid", "t_max, t_min", "outside [0, 1]", VE_, "t_min must be finite and >= 0", lambda: G.Uniform(t_min=-0.1)),
    Case("grids.as_grid", "grid", "unknown name or not a grid", TE_, "grid must be a name", lambda: G.as_grid(3)),
    # ---- Langevin --------------------------------------------------------------------------------
    Case("ula / mala / annealed_langevin", "x", "not a floating tensor", TE_, "x must be a torch.Tensor",
         lambda: L.ula(lambda x: -x, [1.0], 0.1, 3)),
    Case("ula / mala / annealed_langevin", "x", "integer dtype", TE_, "x must have a floating dtype",
         lambda: L.ula(lambda x: -x, torch.zeros(3, 2, dtype=torch.long), 0.1, 3)),
    Case("ula / mala", "step_size", "<= 0, NaN or Inf", VE_, "step_size must be a positive finite number", lambda: L.ula(lambda x: -x, X, 0.0, 3)),
    Case("ula / mala", "steps", "< 0 or not an int", VE_, "steps must be a non-negative integer", lambda: L.ula(lambda x: -x, X, 0.1, -1)),
    Case("ula", "score", "output not shaped like x", VE_, r"score returned \(4, 1\) but x has shape \(4, 2\)",
         lambda: L.ula(lambda x: x[:, :1], X, 0.1, 3)),
    Case("ula / annealed_langevin", "score", "NaN/Inf (or divergence)", NF_, "ULA produced NaN or Inf",
         lambda: L.ula(lambda x: x * float("nan"), X, 0.1, 3)),
    Case("mala", "energy", "not one value per sample", VE_, "energy returned .*one energy per sample",
         lambda: L.mala(lambda x: x, X, 0.1, 3)),
    Case("mala", "x", "NaN/Inf energy at the start", NF_, "starting point has NaN/Inf energy",
         lambda: L.mala(lambda x: x.sum(1) * float("nan"), X, 0.1, 3)),
    Case("annealed_langevin", "sigmas", "not strictly decreasing and positive", VE_, "sigmas must be a strictly decreasing",
         lambda: L.annealed_langevin(lambda x, s: -x, X, [1.0, 2.0])),
    Case("annealed_langevin", "eps", "<= 0", VE_, "eps must be a positive finite number",
         lambda: L.annealed_langevin(lambda x, s: -x, X, [2.0, 1.0], eps=0.0)),
    # ---- losses ----------------------------------------------------------------------------------
    Case("eps_loss / dsm_loss / cfm_loss", "x0", "integer dtype", TE_, "x0 must have a floating dtype",
         lambda: Lo.eps_loss(NOISE, VP, torch.zeros(3, 2, dtype=torch.long))),
    Case("eps_loss / dsm_loss / cfm_loss", "path", "not a GaussianPath", TE_, "path must be a GaussianPath",
         lambda: Lo.dsm_loss(NOISE, "VP", X)),
    Case("eps_loss / dsm_loss / cfm_loss", "field", "a bare network", TE_, r"field must be a sdeflow Field \(with .score",
         lambda: Lo.dsm_loss(_neg, VP, X)),
    Case("eps_loss / dsm_loss / cfm_loss", "t_min", "outside [0, 1)", VE_, "t_min must be finite and >= 0 and < 1",
         lambda: Lo.eps_loss(NOISE, VP, X, t_min=2.0)),
    Case("dsm_loss", "t_min", "sigma(t_min) = 0", VE_, "gives sigma = 0", lambda: Lo.dsm_loss(NOISE, VP, X, t_min=0.0)),
    Case("ncsn_loss", "sigmas", "empty or not positive", VE_, "sigmas must be a non-empty sequence", lambda: Lo.ncsn_loss(_neg, [], X)),
    Case("cd_loss", "x_neg_init, buffer", "neither given", VE_, "give x_neg_init", lambda: Lo.cd_loss(lambda x: x.sum(1), X)),
    Case("ReplayBuffer", "reinit", "outside [0, 1]", VE_, r"reinit must be a probability in \[0, 1\]",
         lambda: Lo.ReplayBuffer(lambda n: torch.zeros(n, 2), reinit=2.0)),
    # ---- metrics ---------------------------------------------------------------------------------
    Case("metrics.*", "x, y", "fewer than 2 samples or 1-D", VE_, r"x must be a tensor of shape \(n >= 2, \*event\)",
         lambda: M.sliced_w2(torch.randn(5), torch.randn(5))),
    Case("metrics.*", "x, y", "integer dtype", TE_, "x must have a floating dtype", lambda: M.mmd2(torch.zeros(3, 2, dtype=torch.long), X)),
    Case("sliced_w2 / mmd2", "x, y", "different event sizes", VE_, "same event size", lambda: M.mmd2(X, torch.zeros(3, 3, dtype=D))),
    Case("sliced_w2", "n_projections", "< 1", VE_, "n_projections must be an integer >= 1", lambda: M.sliced_w2(X, X, n_projections=0)),
    Case("mmd2", "bandwidth", "<= 0", VE_, "bandwidth must be finite and > 0", lambda: M.mmd2(X, X, bandwidth=-1.0)),
    Case("mode_weights", "centres", "not (K, d)", VE_, r"centres must have shape \(K >= 1, 2\)", lambda: M.mode_weights(X, torch.randn(3, 3))),
    Case("moment_errors", "mean, cov", "shapes not (d,), (d, d)", VE_, r"mean must have shape \(2,\)",
         lambda: M.moment_errors(X, torch.zeros(3), torch.eye(2))),
    # ---- training ------------------------------------------------------------------------------
    Case("train.fit", "steps, batch", "< 1", VE_, "steps must be an integer >= 1",
         lambda: sf.train.fit(lambda b: b.sum(), sf.train.mlp(2), lambda n: X, steps=0)),
    Case("train.fit", "lr", "<= 0", VE_, "lr must be finite and > 0",
         lambda: sf.train.fit(lambda b: b.sum(), sf.train.mlp(2), lambda n: X, steps=1, lr=0.0)),
    Case("train.fit", "net", "no trainable parameters", VE_, "net must be a torch.nn.Module with parameters",
         lambda: sf.train.fit(lambda b: b.sum(), [], lambda n: X, steps=1)),
    # ---- io --------------------------------------------------------------------------------------
    Case("io.load_*", "file", "not a safetensors file (e.g. a pickle)", VE_, "not a safetensors file",
         lambda: io.load_tensors(VF.pickled())),
    Case("io.save_tensors", "metadata", "not JSON-serialisable", TE_, "not JSON-serialisable",
         lambda: io.save_tensors("/nonexistent/x.safetensors", {}, {"a": {1, 2}})),
    Case("io.save_tensors", "metadata", "a key that is not a string", TE_, "JSON object keys are strings",
         lambda: io.save_tensors(VF.path("k.safetensors"), {}, {"steps": {1: 2}})),
    Case("io.save_*", "metadata", "a key the saver writes itself", VE_, "metadata key 'kind' is reserved: save_grid",
         lambda: io.save_grid(VF.path("g.safetensors"), [1.0, 0.0], {"kind": "mine"})),
    Case("io.save_tensors", "tensors", "a tensor named '__metadata__'", VE_, "tensor name '__metadata__' is reserved",
         lambda: io.save_tensors(VF.path("m.safetensors"), {"__metadata__": torch.zeros(1)})),
    Case("io.save_tensors / save_field", "tensors", "a meta-device tensor (no data)", VE_,
         r"tensors\['w'\] is on the meta device", lambda: io.save_tensors(VF.path("m.safetensors"),
                                                                           {"w": torch.zeros(2, device="meta")})),
    Case("io.save_tensors", "tensors", "sparse, or a dtype safetensors cannot store", TE_, "complex128",
         lambda: io.save_tensors(VF.path("c.safetensors"), {"c": torch.zeros(2, dtype=torch.complex128)})),
    Case("io.load_*", "file", "missing", VE_, "no file at", lambda: io.load_tensors(VF.path("absent.safetensors"))),
    Case("io.load_*", "file", "truncated", VE_, "not a safetensors file, or it is truncated or corrupt",
         lambda: io.load_grid(VF.damaged("truncated"))),
    Case("io.load_*", "file", "a flipped bit (checksum mismatch)", VE_, "is corrupt: .* SHA-256 checksum",
         lambda: io.load_grid(VF.damaged("bit"))),
    Case("io.load_*", "file", "metadata JSON not an object", VE_, "a JSON list, not an object",
         lambda: io.load_tensors(VF.raw("list.safetensors", VF.G, "[1, 2]"))),
    Case("io.load_*", "file", "written by a newer sdeflow", VE_, "written by a newer sdeflow",
         lambda: io.load_grid(VF.raw("new.safetensors", VF.G, {"format_version": 99, "kind": "grid"}))),
    Case("io.load_*", "device", "unknown or 'meta'", VE_, "is not a device torch knows",
         lambda: io.load_solution(VF.grid(), device="gpu")),
    Case("io.load_grid / load_solution / load_field_state", "file", "another kind of file", VE_,
         r"holds a 'grid', not a solution; load the file with the matching function \(load_grid\)",
         lambda: io.load_solution(VF.grid())),
    Case("io.load_grid / load_solution / load_field_state", "file", "a tensor missing or unknown", VE_,
         "is a solution file with no tensor 'ts'",
         lambda: io.load_solution(VF.solution("s.safetensors", {"x": VF.SOL["x"]}))),
    Case("io.load_grid", "file", "stored grid not monotone / finite", VE_, "stored tensor 'grid' is not a valid grid",
         lambda: io.load_grid(VF.raw("g2.safetensors", {"grid": torch.ones(2, dtype=D)},
                                     {"format_version": 2, "kind": "grid"}))),
    Case("io.load_solution", "file", "nfe not an integer >= 0, stats not an object", VE_,
         "metadata field 'nfe' must be",
         lambda: io.load_solution(VF.solution("n.safetensors", nfe="7"))),
    Case("io.load_solution", "file", "trajectory not (len(ts), *x.shape)", VE_, "tensor 'trajectory' has shape",
         lambda: io.load_solution(VF.solution("t.safetensors", {**VF.SOL, "trajectory": torch.zeros(2, 3, 2)}))),
    Case("io.path_from_metadata", "meta", "a parameter the path does not take", TE_,
         "has the parameter 'foo', which VP does not take",
         lambda: io.path_from_metadata({"path": {"class": "VP", "params": {"foo": 1}}})),
    Case("io.path_from_metadata", "meta", "not a built-in path class", VE_, "names the class 'Tensor', which is not a built-in path",
         lambda: io.path_from_metadata({"path": {"class": "Tensor", "params": {}}})),
    Case("io.path_from_metadata", "meta", "a value the path refuses", VE_, "cannot be rebuilt: beta_min must be >= 0",
         lambda: io.path_from_metadata({"path": {"class": "VP", "params": {"beta_min": -1.0}}})),
    Case("io.load_state_dict", "file", "an sdeflow grid, solution or shard (no weights)", VE_, "not weights",
         lambda: io.load_state_dict(VF.grid())),
    # ---- distributed: shards and manifests ---------------------------------------------------------
    Case("distributed.load_shards", "manifest", "missing (unfinished run)", SE_, "no manifest at .*did not finish",
         lambda: sd.load_shards(VF.path("empty-dir"))),
    Case("distributed.load_shards", "manifest", "not a JSON object", SE_, "a JSON list, not an object",
         lambda: sd.load_shards(VF.run("list", lambda doc: [doc]))),
    Case("distributed.load_shards", "manifest", "a field missing or not a JSON integer", SE_,
         r"shards\[1\]\.start must be an integer in \[0, 37\], got '13' \(str\)",
         lambda: sd.load_shards(VF.run("str", lambda doc: doc["shards"][1].update(start="13")))),
    Case("distributed.load_shards", "manifest", "two shards claim one rank", SE_,
         r"shards\[1\] \(shard-00001-of-00003.safetensors\) and shards\[2\] \(shard-00002-of-00003.safetensors\) "
         r"both claim rank 1", lambda: sd.load_shards(VF.run("dup", lambda doc: doc["shards"][2].update(rank=1)))),
    Case("distributed.load_shards", "manifest", "rows with a gap or an overlap", SE_, "overlap on rows 25:26",
         lambda: sd.load_shards(VF.run("overlap", lambda doc: doc["shards"][1].update(stop=26)))),
    Case("distributed.load_shards", "manifest", "more rows than the shard files hold (e.g. n = 10**12)", SE_,
         "but the manifest declares 333333333334 rows .*nothing was read or allocated",
         lambda: sd.load_shards(VF.run("huge", VF.huge))),
    Case("distributed.load_shards", "shard file", "missing", SE_, r"\(rank 1, rows 13:25 of n=37\) is missing",
         lambda: sd.load_shards(VF.without_shard("missing", 1))),
    Case("distributed.load_shards", "shard file", "checksum mismatch", SE_, "is corrupt: its sha256 is",
         lambda: sd.load_shards(VF.flipped_shard("flipped", 0))),
    Case("distributed.load_shards", "shard file", "not one tensor 'x'", SE_, r"holds the tensors \['y'\]",
         lambda: sd.load_shards(VF.replace_shard("key", 1, {"y": VF.X[13:25]}))),
    Case("distributed.load_shards", "shard file", "dtype or shape not the manifest's", SE_,
         r"holds \(12, 2\) torch.float32, the manifest declares \(12, 2\) torch.float64",
         lambda: sd.load_shards(VF.replace_shard("dtype", 1, {"x": VF.X[13:25].float()}))),
    Case("distributed.load_shards", "shard file", "records other rows than the manifest", SE_,
         "records rank 1, rows 12:25",
         lambda: sd.load_shards(VF.replace_shard("rows", 1, {"x": VF.X[13:25]}, start=12))),
    Case("distributed.load_shards", "rows", "outside [0, n]", VE_, r"rows=\(5, 40\) must satisfy",
         lambda: sd.load_shards(VF.run("rows"), rows=(5, 40))),
]


def markdown_table() -> str:
    """The table of docs/errors.md, with each row's actual message (first 110 characters)."""
    rows = ["| entry point | argument | bad condition | exception | message (start) |",
            "|---|---|---|---|---|"]
    for c in CASES:
        try:
            c.call()
            msg = "(no error!)"
        except Exception as e:  # noqa: BLE001
            msg = VF.shown(str(e)).replace("|", "/").replace("\n", " ")
            msg = msg if len(msg) <= 110 else msg[:107] + "..."
        rows.append(f"| `{c.entry}` | `{c.argument}` | {c.condition} | `{c.exc.__name__}` | {msg} |")
    return "\n".join(rows)


def row_prefix(c: Case) -> str:
    return f"| `{c.entry}` | `{c.argument}` | {c.condition} | `{c.exc.__name__}` |"


def case_id(c: Case) -> str:
    return re.sub(r"\W+", "_", f"{c.entry}-{c.argument}-{c.condition}").strip("_")


if __name__ == "__main__":
    print(markdown_table())
