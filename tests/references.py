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
import math
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


#: known gaps, by key: none since issue 14 (every stored case is reproduced); a new gap gets a key and a reason
GAPS: dict[str, str] = {}


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
            if order == 3 and predict == "data":
                return Closest("dpmpp_3m", dict(solver_type=stype, lower_order_final=lof))
            return Closest("exp_multistep", dict(order=order, predict=predict, variant=stype, lower_order_final=lof))
        solver = "dpm_solver_2" if order == 2 else "dpm_solver_3"
        stages = "log_snr" if c["skip_type"] == "logSNR" else "time_uniform"
        return Closest(solver, dict(predict=predict, solver_type=stype, stages=stages))
    if ref == "unipc":
        return Closest("unipc", dict(order=c["order"], predict="data" if c["predict_x0"] else "noise",
                                     variant=c["variant"], lower_order_final=bool(c["lower_order_final"])))
    label = c["label"]
    # EDM's and k-diffusion's Heun step into sigma = 0 is an Euler step, x -> D(x, sigma_{N-1}): sdeflow's
    # final_denoise after the grid without its last point
    if ref == "edm":
        if label == "churn":
            kw = c["kwargs"]
            return Closest("edm_heun", dict(S_churn=kw["S_churn"], S_tmin=kw["S_min"], S_tmax=kw["S_max"],
                                            S_noise=kw["S_noise"]))
        return Closest("heun", denoise_last=True)
    sde = dict(gamma="reverse")
    kw = c["kwargs"]
    churn = dict(S_churn=kw.get("s_churn", 0.0), S_tmin=kw.get("s_tmin", 0.0), S_tmax=kw.get("s_tmax", math.inf),
                 S_noise=kw.get("s_noise", 1.0))
    table = {
        "euler": Closest("euler"),
        "euler_churn": Closest("edm_euler", churn),
        "heun": Closest("heun", denoise_last=True),
        "heun_churn": Closest("edm_heun", churn),
        "lms": Closest("lms"),
        "dpmpp_2m": Closest("dpmpp_2m"),
        "dpmpp_2m_sde_heun": Closest("sde_dpmpp_2m", sample=sde, gaps=()),  # E = h exactly for the reverse SDE
        "dpmpp_2m_sde_midpoint": Closest("sde_dpmpp_2m", dict(solver_type="midpoint"), sample=sde),
        "dpmpp_3m_sde_eta0": Closest("dpmpp_3m", dict(solver_type="taylor")),
        "dpmpp_3m_sde_eta1": Closest("sde_dpmpp_3m", sample=sde),
        "euler_ancestral": Closest("ancestral", dict(variance="posterior")),
    }
    return table[label]


def run_sdeflow(case: dict, how: Closest | None = None) -> torch.Tensor:
    """sdeflow's output on the case's problem, grid, initial state and noise, with ``closest`` by default."""
    how = closest(case["meta"]) if how is None else how
    kw = dict(how.sample)
    if case["noise_table"] is not None and _is_stochastic(how.solver, how.options):
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


def _is_stochastic(solver: str, options: dict) -> bool:
    s = sf.solvers.get(solver, **options)
    return bool(s.sde or getattr(s, "stochastic", False))


def rel_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """``max |x - ref| / max |ref|``."""
    return float((x - ref).abs().max() / ref.abs().max())
