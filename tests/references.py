"""Stored outputs of the named samplers' reference implementations, and sdeflow's closest sampler for each.

The files in ``tests/data/references/`` were computed once with the authors' own code (dpm-solver, UniPC,
k-diffusion, NVlabs EDM) by ``benchmarks/references/make_reference_figures.py``; ``PROVENANCE.md`` there
says from which commit, with which arguments and inputs. A *case* is one run: a problem (an exact
Gaussian-mixture oracle), a method with its arguments, a grid, and for stochastic methods the normals it
consumed. ``load(name)`` gives its tensors and metadata plus what sdeflow needs to replay it:

* VP references (dpm-solver, UniPC): ``sdeflow.VP()``, whose time *is* their continuous time ``t`` (same
  linear schedule, beta 0.1 to 20, t = 1 noise); the grid is theirs;
* sigma references (k-diffusion, EDM): ``sdeflow.EDM(S)`` with ``S`` the first sigma, so ``t = sigma / S``;
  the grid ends at ``t = 0`` (sigma = 0) as theirs does; ``x_init = x_T * S`` as the reference computes it;
* the field is the oracle's (``mix.field(kind)``) with the kind the reference's network predicted;
* the noise, where there is any, as a :class:`sdeflow.TableNoise` (``table[k]`` the normal of step ``k``;
  NaN where the reference drew none, so a replay that uses one shows up).

``closest(case)`` names sdeflow's closest sampler and whether it is expected to reproduce the reference to
rounding (``equal``) or is a known gap; ``run_sdeflow(case)`` runs it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import torch

import sdeflow as sf
from sdeflow.io import load_tensors

DATA = Path(__file__).resolve().parent / "data" / "references"
REFERENCES = ("dpm_solver", "unipc", "k_diffusion", "edm")
PROBLEMS = {"eight_gaussians": sf.eight_gaussians, "two_blobs": sf.two_blobs}


@functools.lru_cache(maxsize=None)
def _file(reference: str):
    tensors, meta = load_tensors(DATA / f"{reference}.safetensors")
    return tensors, meta, {c["name"]: c for c in meta["cases"]}


def names(reference: str | None = None, problem: str | None = None) -> list[str]:
    """Names of the stored cases (``<problem>/<reference>/<configuration>/n<steps>``)."""
    out = []
    for ref in REFERENCES if reference is None else (reference,):
        for c in _file(ref)[1]["cases"]:
            if problem is None or c["problem"] == problem:
                out.append(c["name"])
    return out


def load(name: str) -> dict:
    """One case: ``meta`` (its metadata), ``source`` (repository, commit, file), tensors ``x_T``, ``x_init``,
    ``grid`` (the reference's times or sigmas), ``eval_times`` (of every network call, in order), ``out``,
    and ``noise``/``noise_step`` for stochastic cases; plus sdeflow's ``path``, ``field``, ``t_grid``,
    ``noise_table`` and the oracle ``target``."""
    reference = name.split("/")[1]
    tensors, meta, cases = _file(reference)
    c = cases[name]
    case = {k: v for k, v in tensors.items() if k.startswith(name + "/")}
    case = {k[len(name) + 1:]: v for k, v in case.items()}
    case["meta"] = c
    case["source"] = {k: meta[k] for k in ("repo", "commit", "file")}
    case["x_T"] = tensors[f"x_T/{c['problem']}"]
    case["target"] = PROBLEMS[c["problem"]]()
    case["field"] = case["target"].field(c["network_kind"])
    if c["grid_kind"] == "t":
        case["path"] = sf.VP(**c["sdeflow_path"]["args"])
        case["t_grid"] = case["grid"]
        case["x_init"] = case["x_T"]
    else:
        S = c["sdeflow_path"]["args"]["sigma_max"]
        case["path"] = sf.EDM(S)
        case["t_grid"] = case["grid"] / S
        case["x_init"] = case["x_T"] * case["grid"][0]
    case["noise_table"] = None
    if "noise" in case:
        steps = len(case["grid"]) - 1
        table = [torch.full_like(case["x_T"], float("nan")) for _ in range(steps)]
        for z, k in zip(case["noise"], case["noise_step"].tolist()):
            table[k] = z
        case["noise_table"] = table
    return case


GAPS = {
    "3m-D2": "the authors' third-order multistep term is -phi_3 D2 with D2 = (D1_0 - D1_1)/(r0 + r1) = "
             "h^2 P''/2, half what the exact integral of the quadratic interpolant P needs (h^2 P''); their "
             "DPM-Solver++(3M) converges at order 2 (dpm-solver, k-diffusion's dpmpp_3m_sde and diffusers alike)",
    "2-form": "their order-2 multistep steps (the start-up step; the lowered final steps) use the 'dpmsolver' "
              "form -(1/2) phi_1 (m0 - m1)/r0 instead of the exact integral of the linear interpolant",
    "ss2-form": "DPM-Solver-2 'dpmsolver' type: the update uses -(1/(2 r1)) phi_1 (m_s1 - m_s), not the exact "
                "integral of the line through the two stages ('taylor' type)",
    "ss3-taylor": "DPM-Solver-3 'taylor' type: the update integrates the quadratic through all three stages; "
                  "sdeflow's (Lu et al. Alg. 2, 'dpmsolver' type) uses stages 0 and 2 only",
    "stages": "on a 'time_uniform' grid their inner stages are uniform in time (r1, r2 the log-SNR fractions "
              "of those times); sdeflow's sit at fixed log-SNR fractions (1/2; 1/3, 2/3)",
    "bh": "UniPC B(h) variants (bh1: B(h) = h, bh2: B(h) = e^h - 1, h in their sign) and rho = 1/2 at order 1 "
          "(corrector) and 2 (predictor); sdeflow's unipc integrates the interpolants exactly",
    "churn": "churn (Karras et al. 2022, Alg. 2: the noise raised to sigma_hat = (1 + gamma) sigma before the "
             "step) is not implemented",
    "lms": "no linear multistep (k-diffusion's 4-step Adams-Bashforth in sigma, coefficients by scipy quad) in "
           "sdeflow; Euler is its first step",
    "sde-midpoint": "'midpoint' type: (1/2)(1 - e^{-2h}) (D - D_prev)/r; the exact integral of the linear "
                    "interpolant is the 'heun' type",
    "sde-3m": "no third-order SDE-DPM-Solver++ in sdeflow",
}


@dataclass
class Closest:
    """sdeflow's closest sampler to a case: ``solver`` and its ``options``, extra ``sample`` arguments,
    whether it reproduces the reference to rounding (``equal``) and, if not, why (``gaps``: keys of
    :data:`GAPS`)."""

    solver: str
    options: dict = field(default_factory=dict)
    sample: dict = field(default_factory=dict)
    gaps: tuple = ()
    denoise_last: bool = False  # replace the last step (into sigma = 0) by sdeflow's final_denoise

    @property
    def equal(self) -> bool:
        return not self.gaps

    @property
    def note(self) -> str:
        return "; ".join(GAPS[g] for g in self.gaps)


def closest(c: dict) -> Closest:
    """sdeflow's closest sampler to the case with metadata ``c`` (see the module docstring)."""
    ref = c["reference"]
    if ref == "dpm_solver":
        predict = c["network_kind"]
        order, stype = c["order"], c["solver_type"]
        if c["method"] == "multistep":
            lof = bool(c["lower_order_final"]) and c["steps"] < 10  # their rule: lowered only below 10 steps
            if order == 1:
                return Closest("exp_multistep", dict(order=1, predict=predict))
            if order == 2 and predict == "data" and stype == "dpmsolver":
                return Closest("dpmpp_2m", dict(lower_order_final=lof))
            solver, opts = (("dpmpp_3m", {}) if order == 3 and predict == "data"
                            else ("exp_multistep", dict(order=order, predict=predict)))
            opts["lower_order_final"] = lof
            gaps = (("3m-D2",) if order == 3 else ()) + (("2-form",) if stype == "dpmsolver" else ())
            return Closest(solver, opts, gaps=gaps)
        solver = "dpm_solver_2" if order == 2 else "dpm_solver_3"
        gaps = () if c["skip_type"] == "logSNR" else ("stages",)
        if (order, stype) == (2, "dpmsolver"):
            gaps += ("ss2-form",)
        if (order, stype) == (3, "taylor"):
            gaps += ("ss3-taylor",)
        return Closest(solver, dict(predict=predict), gaps=gaps)
    if ref == "unipc":
        return Closest("unipc", dict(order=c["order"], predict="data" if c["predict_x0"] else "noise",
                                     lower_order_final=bool(c["lower_order_final"])), gaps=("bh",))
    label = c["label"]
    # EDM's and k-diffusion's Heun step into sigma = 0 is an Euler step, x -> D(x, sigma_{N-1}): sdeflow's
    # final_denoise after the grid without its last point
    if ref == "edm":
        return Closest("heun", denoise_last=True, gaps=("churn",) if label == "churn" else ())
    sde = dict(gamma="reverse")
    table = {
        "euler": Closest("euler"),
        "euler_churn": Closest("euler", gaps=("churn",)),
        "heun": Closest("heun", denoise_last=True),
        "heun_churn": Closest("heun", denoise_last=True, gaps=("churn",)),
        "lms": Closest("euler", gaps=("lms",)),
        "dpmpp_2m": Closest("dpmpp_2m"),
        "dpmpp_2m_sde_heun": Closest("sde_dpmpp_2m", sample=sde, gaps=()),  # E = h exactly for the reverse SDE
        "dpmpp_2m_sde_midpoint": Closest("sde_dpmpp_2m", sample=sde, gaps=("sde-midpoint",)),
        "dpmpp_3m_sde_eta0": Closest("dpmpp_3m", gaps=("3m-D2",)),
        "dpmpp_3m_sde_eta1": Closest("sde_dpmpp_2m", sample=sde, gaps=("sde-3m",)),
        "euler_ancestral": Closest("ancestral", dict(variance="posterior")),
    }
    return table[label]


def run_sdeflow(case: dict, how: Closest | None = None) -> torch.Tensor:
    """sdeflow's output on the case's problem, grid, initial state and noise, with ``closest`` by default."""
    how = closest(case["meta"]) if how is None else how
    kw = dict(how.sample)
    if case["noise_table"] is not None and _is_stochastic(how.solver):
        kw["noise"] = sf.TableNoise(case["noise_table"])
    grid = case["t_grid"]
    if how.denoise_last:
        if float(grid[-1]) != 0.0:
            raise ValueError(f"{case['meta']['name']}: denoise_last needs a grid ending at t = 0")
        grid, kw["final_denoise"] = grid[:-1], True
    # the authors' own grids and step counts, accurate or not: faithfulness is under test, not the preflight
    sol = sf.sample(case["path"], case["field"], how.solver, grid=grid, x_init=case["x_init"].clone(), **kw,
                    preflight=False, **how.options)
    return sol.x


def _is_stochastic(solver: str) -> bool:
    cls = sf.solvers.registry()[solver]
    return bool(getattr(cls, "sde", False) or getattr(cls, "stochastic", False))


def rel_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """``max |x - ref| / max |ref|``."""
    return float((x - ref).abs().max() / ref.abs().max())
