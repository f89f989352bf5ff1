"""Reference outputs of the named samplers, computed once with their authors' own code (float64).

    python benchmarks/references/make_reference_figures.py REFS_DIR            # write tests/data/references/
    python benchmarks/references/make_reference_figures.py REFS_DIR --out DIR

``REFS_DIR`` holds the authors' files, extracted from their repositories at the commits of
``REFERENCES`` below (never copied into this repository; see ``tests/data/references/PROVENANCE.md``)::

    REFS_DIR/dpm_solver_pytorch.py        LuChengTHU/dpm-solver   dpm_solver_pytorch.py
    REFS_DIR/uni_pc.py                    wl-zhao/UniPC           uni_pc.py
    REFS_DIR/k_diffusion/sampling.py      crowsonkb/k-diffusion   k_diffusion/sampling.py
    REFS_DIR/generate.py                  NVlabs/edm              generate.py

Each file's SHA-256 is checked against the one recorded here. This script is our code that *calls* theirs:

* dpm-solver and UniPC are single modules, loaded from their files;
* ``k_diffusion/sampling.py`` is loaded as ``k_diffusion.sampling`` under a stub ``k_diffusion`` package whose
  only member is ``utils.append_dims`` (the real ``k_diffusion/utils.py`` imports torchvision and PIL; the
  sampling module needs nothing else from it); its ``torchsde``, ``torchdiffeq``, ``scipy`` and ``tqdm``
  imports are the installed packages;
* from EDM's ``generate.py`` (which imports ``click``, ``dnnlib``, ``torch_utils`` at module level) only the
  ``edm_sampler`` function is compiled, from its own source text, with ``torch`` and ``numpy`` as globals.

The problems are sdeflow's exact Gaussian-mixture oracles (``sdeflow.eight_gaussians()``,
``sdeflow.two_blobs()``), so sdeflow can be run on the same network, grid and noise:

* VP references (dpm-solver, UniPC): their ``NoiseScheduleVP('linear', 0.1, 20)`` is sdeflow's ``VP()``
  (same formula; alpha equal to 2e-15 relative, sigma to 1e-12 relative near t = 1e-4 where their
  ``sqrt(1 - exp(2 log alpha))`` cancels), and the network is ``mix.predict(x, t, VP(), kind)`` at the
  continuous time t (``kind = "data"`` with ``model_type="x_start"`` for data-prediction algorithms,
  ``"noise"`` otherwise; UniPC always gets the noise network as its ``model_fn``);
* sigma references (k-diffusion, EDM): the denoiser is ``D(x, sigma) = mix.predict(x, sigma / S, EDM(S),
  "data")`` (alpha = 1: the exact posterior mean at noise level sigma), with ``S`` the case's first sigma, so
  sdeflow on ``EDM(S)`` with the grid ``sigmas / S`` evaluates the same function at the same times.

Every stochastic case gets its standard normals from a recorder seeded per case; the normals, in the
order drawn, and the step each belongs to, are stored. torch's default dtype is set to float64 before any
reference code runs (their ``torch.tensor(...)``/``torch.linspace`` calls follow it).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime
import hashlib
import importlib.util
import io
import json
import math
import os
import platform
import re
import sys
import types
import zlib

import numpy as np
import torch

import sdeflow as sf
from sdeflow.io import save_tensors

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_OUT = os.path.join(ROOT, "tests", "data", "references")

REFERENCES = {
    "dpm_solver": dict(repo="LuChengTHU/dpm-solver", commit="52bc3fbcd5de56d60917b826b15d2b69460fc2fa",
                       file="dpm_solver_pytorch.py",
                       sha256="673c59fd6ec4ce40f339d7335bc00711552cf87ea15acfa3548f5dcca026d9d2"),
    "unipc": dict(repo="wl-zhao/UniPC", commit="cf9de85bf2ed68137e6fba5f165f451677b174c4", file="uni_pc.py",
                  sha256="3f41b67a80ec8548c1d64aa6a33bb57429bf946e95c05d0595277cb2e0d83ade"),
    "k_diffusion": dict(repo="crowsonkb/k-diffusion", commit="4601bf085320592473f681a62808ed873d17fad5",
                        file="k_diffusion/sampling.py",
                        sha256="4c5c2d92ddc2a07f9964440979430908d47a09634ac79f4a4e97c4f4682560bc"),
    "edm": dict(repo="NVlabs/edm", commit="008a4e5316c8e3bfe61a62f874bddba254295afb", file="generate.py",
                sha256="1af4e135d3a17f7cba1e022f22260d4e7534ea525e6162783e00805c53204c2a"),
}

BATCH = 32
SEEDS = {"eight_gaussians": 0, "two_blobs": 1}  # x_T = torch.randn(BATCH, 2, generator=manual_seed(seed))
STEPS = (5, 10, 20)
T_END = 1e-3  # dpm-solver / UniPC t_0 (their default 1/N with N = 1000); t_T = 1
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0
CHURN = dict(S_churn=40.0, S_min=0.05, S_max=50.0, S_noise=1.003)  # EDM, Table 5 (ImageNet-64)


def problems():
    return {"eight_gaussians": sf.eight_gaussians(), "two_blobs": sf.two_blobs()}


# ---- loading the authors' code ---------------------------------------------------------------------
def _check_file(refs_dir: str, key: str) -> str:
    ref = REFERENCES[key]
    path = os.path.join(refs_dir, ref["file"])
    if not os.path.isfile(path):
        raise SystemExit(f"{path} not found: extract it with\n  git --git-dir=<mirror of {ref['repo']}> show "
                         f"{ref['commit']}:{ref['file']} > {path}")
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    if digest != ref["sha256"]:
        raise SystemExit(f"{path}: sha256 {digest} is not that of {ref['repo']}@{ref['commit']}:{ref['file']} "
                         f"({ref['sha256']})")
    return path


def _load_module(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_references(refs_dir: str) -> dict:
    mods = {"dpm_solver": _load_module("dpm_solver_pytorch", _check_file(refs_dir, "dpm_solver")),
            "unipc": _load_module("uni_pc", _check_file(refs_dir, "unipc"))}
    # k-diffusion: a stub package with the one helper sampling.py uses from utils
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = []
    utils = types.ModuleType("k_diffusion.utils")

    def append_dims(x, target_dims):
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims
    pkg.utils = utils
    sys.modules["k_diffusion"], sys.modules["k_diffusion.utils"] = pkg, utils
    mods["k_diffusion"] = _load_module("k_diffusion.sampling", _check_file(refs_dir, "k_diffusion"))
    # EDM: compile edm_sampler alone from generate.py's source
    src = open(_check_file(refs_dir, "edm")).read()
    fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "edm_sampler")
    ns = {"torch": torch, "np": np}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), REFERENCES["edm"]["file"], "exec"), ns)
    mods["edm"] = types.SimpleNamespace(edm_sampler=ns["edm_sampler"])
    return mods


# ---- networks and noise ----------------------------------------------------------------------------
class Counter:
    """Wraps a network: counts calls and records the (first) time of each call."""

    def __init__(self, fn):
        self.fn, self.calls, self.times = fn, 0, []

    def __call__(self, x, t, *args):
        self.calls += 1
        tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        if tt.numel() > 1 and not bool((tt == tt[0]).all()):
            raise RuntimeError("a reference called the network with different times in one batch")
        self.times.append(float(tt[0]))
        return self.fn(x, t)


def vp_network(mix, kind: str):
    vp = sf.VP()

    def net(x, t):
        x2 = x.reshape(x.shape[0], -1)
        out = mix.predict(x2, t, vp, kind)
        return out.reshape(x.shape)

    return net


def sigma_denoiser(mix, S: float):
    path = sf.EDM(S)

    def D(x, sigma):
        return mix.predict(x, torch.as_tensor(sigma, dtype=torch.float64) / S, path, "data")

    return D


class Recorder:
    """Standard normals from a seeded generator, recorded in the order drawn with the step of each."""

    def __init__(self, seed: int):
        self.seed = seed
        self.gen = torch.Generator().manual_seed(seed)
        self.draws, self.steps = [], []

    def draw(self, like, step: int):
        z = torch.randn(like.shape, generator=self.gen, dtype=torch.float64)
        self.draws.append(z.clone())
        self.steps.append(step)
        return z.to(like.dtype)

    def tensors(self, name: str) -> dict:
        if not self.draws:
            return {}
        return {f"{name}/noise": torch.stack(self.draws), f"{name}/noise_step": torch.tensor(self.steps)}


def case_seed(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


class _TorchWithRecordedRandn:
    """Stands in for the ``torch`` global of k-diffusion's sampling module: ``randn_like`` draws from a
    recorder (sample_euler/sample_heun call ``torch.randn_like(x)`` once per step, churn or not)."""

    def __init__(self, rec: Recorder):
        self._rec, self._k = rec, 0

    def __getattr__(self, name):
        return getattr(torch, name)

    def randn_like(self, x, *args, **kwargs):
        self._k += 1
        return self._rec.draw(x, self._k - 1)


# ---- the cases ---------------------------------------------------------------------------------------
class Store:
    def __init__(self):
        self.tensors, self.cases = {}, []

    def add(self, meta: dict, out, grid, counter: Counter, extra: dict | None = None):
        name = meta["name"]
        if any(c["name"] == name for c in self.cases):
            raise RuntimeError(f"duplicate case {name}")
        meta["nfe"] = counter.calls
        self.tensors[f"{name}/out"] = out.detach().reshape(out.shape[0], -1).to(torch.float64).clone()
        self.tensors[f"{name}/grid"] = torch.as_tensor(grid, dtype=torch.float64).reshape(-1).clone()
        self.tensors[f"{name}/eval_times"] = torch.tensor(counter.times, dtype=torch.float64)
        self.tensors.update(extra or {})
        self.cases.append(meta)


def run_dpm_solver(dpm, mix, pname: str, z, store: Store):
    nsched = dpm.NoiseScheduleVP("linear", continuous_beta_0=0.1, continuous_beta_1=20.0)
    base = dict(reference="dpm_solver", problem=pname, sdeflow_path={"class": "VP", "args": {}},
                grid_kind="t", x_init="x_T")
    for algo in ("dpmsolver++", "dpmsolver"):
        kind = "data" if algo == "dpmsolver++" else "noise"
        model_type = "x_start" if kind == "data" else "noise"
        for skip in ("logSNR", "time_uniform"):
            # multistep, orders 1-3; lower_order_final (default True) only acts for steps < 10
            for order in (1, 2, 3):
                for stype in (("dpmsolver",) if order == 1 else ("dpmsolver", "taylor")):
                    for steps in STEPS:
                        for lof in ((True, False) if steps < 10 and order > 1 else (True,)):
                            net = Counter(vp_network(mix, kind))
                            mf = dpm.model_wrapper(net, nsched, model_type=model_type)
                            solver = dpm.DPM_Solver(mf, nsched, algorithm_type=algo)
                            kw = dict(steps=steps, t_start=1.0, t_end=T_END, order=order, skip_type=skip,
                                      method="multistep", lower_order_final=lof, solver_type=stype)
                            grid = solver.get_time_steps(skip, 1.0, T_END, steps, "cpu")
                            out = solver.sample(z.clone(), **kw)
                            label = f"multistep/{algo}/o{order}/{stype}/{skip}" + ("" if lof else "/no_lof")
                            meta = dict(base, name=f"{pname}/dpm_solver/{label}/n{steps}", method="multistep",
                                        function="DPM_Solver.sample",
                                        constructor=dict(model_wrapper=dict(model_type=model_type),
                                                         noise_schedule=dict(schedule="linear",
                                                                             continuous_beta_0=0.1,
                                                                             continuous_beta_1=20.0),
                                                         algorithm_type=algo),
                                        kwargs=kw, network_kind=kind, steps=steps, order=order,
                                        algorithm_type=algo, solver_type=stype, skip_type=skip,
                                        lower_order_final=lof)
                            store.add(meta, out, grid, net)
            # singlestep_fixed (pure DPM-Solver-2 / -3): NFE = order * K for K outer steps
            for order in (2, 3):
                for stype in ("dpmsolver", "taylor"):
                    for K in STEPS:
                        net = Counter(vp_network(mix, kind))
                        mf = dpm.model_wrapper(net, nsched, model_type=model_type)
                        solver = dpm.DPM_Solver(mf, nsched, algorithm_type=algo)
                        kw = dict(steps=order * K, t_start=1.0, t_end=T_END, order=order, skip_type=skip,
                                  method="singlestep_fixed", solver_type=stype)
                        grid = solver.get_time_steps(skip, 1.0, T_END, K, "cpu")
                        out = solver.sample(z.clone(), **kw)
                        label = f"singlestep_fixed/{algo}/o{order}/{stype}/{skip}"
                        meta = dict(base, name=f"{pname}/dpm_solver/{label}/n{K}", method="singlestep_fixed",
                                    function="DPM_Solver.sample",
                                    constructor=dict(model_wrapper=dict(model_type=model_type),
                                                     noise_schedule=dict(schedule="linear", continuous_beta_0=0.1,
                                                                         continuous_beta_1=20.0),
                                                     algorithm_type=algo),
                                    kwargs=kw, network_kind=kind, steps=K, order=order, algorithm_type=algo,
                                    solver_type=stype, skip_type=skip)
                        store.add(meta, out, grid, net)


def run_unipc(up, mix, pname: str, z, store: Store):
    nsched = up.NoiseScheduleVP("linear", continuous_beta_0=0.1, continuous_beta_1=20.0)
    base = dict(reference="unipc", problem=pname, sdeflow_path={"class": "VP", "args": {}}, grid_kind="t",
                x_init="x_T", network_kind="noise")
    z4 = z.reshape(z.shape[0], z.shape[1], 1, 1)  # their einsum 'k,bkchw->bchw' wants (batch, C, H, W)
    configs = [(v, o, "data_prediction") for v in ("bh1", "bh2") for o in (1, 2, 3)]
    configs += [(v, 2, "noise_prediction") for v in ("bh1", "bh2")]
    for variant, order, algo in configs:
        for skip in ("logSNR", "time_uniform"):
            for steps in STEPS:
                for lof in ((True, False) if order > 1 else (True,)):
                    net = Counter(vp_network(mix, "noise"))
                    solver = up.UniPC(net, nsched, algorithm_type=algo, variant=variant)
                    kw = dict(steps=steps, t_start=1.0, t_end=T_END, order=order, skip_type=skip,
                              method="multistep", lower_order_final=lof)
                    grid = solver.get_time_steps(skip, 1.0, T_END, steps, "cpu")
                    with contextlib.redirect_stdout(io.StringIO()):  # it prints at every step
                        out = solver.sample(z4.clone(), **kw)
                    label = f"{variant}/{algo}/o{order}/{skip}" + ("" if lof else "/no_lof")
                    meta = dict(base, name=f"{pname}/unipc/{label}/n{steps}", function="UniPC.sample",
                                constructor=dict(model_fn="noise network (no model_wrapper)",
                                                 noise_schedule=dict(schedule="linear", continuous_beta_0=0.1,
                                                                     continuous_beta_1=20.0),
                                                 algorithm_type=algo, variant=variant),
                                kwargs=kw, steps=steps, order=order, variant=variant,
                                predict_x0=algo == "data_prediction", skip_type=skip, lower_order_final=lof,
                                use_corrector=True, final_corrector=False)
                    store.add(meta, out, grid, net)


K_SAMPLERS = [  # (label, function, kwargs, noise: None | "randn_like" | "noise_sampler")
    ("euler", "sample_euler", {}, None),
    ("euler_churn", "sample_euler", dict(s_churn=CHURN["S_churn"], s_tmin=CHURN["S_min"], s_tmax=CHURN["S_max"],
                                         s_noise=CHURN["S_noise"]), "randn_like"),
    ("heun", "sample_heun", {}, None),
    ("heun_churn", "sample_heun", dict(s_churn=CHURN["S_churn"], s_tmin=CHURN["S_min"], s_tmax=CHURN["S_max"],
                                       s_noise=CHURN["S_noise"]), "randn_like"),
    ("lms", "sample_lms", {}, None),
    ("dpmpp_2m", "sample_dpmpp_2m", {}, None),
    ("dpmpp_2m_sde_midpoint", "sample_dpmpp_2m_sde", dict(eta=1.0, s_noise=1.0, solver_type="midpoint"),
     "noise_sampler"),
    ("dpmpp_2m_sde_heun", "sample_dpmpp_2m_sde", dict(eta=1.0, s_noise=1.0, solver_type="heun"), "noise_sampler"),
    ("dpmpp_3m_sde_eta0", "sample_dpmpp_3m_sde", dict(eta=0.0, s_noise=1.0), "noise_sampler"),
    ("dpmpp_3m_sde_eta1", "sample_dpmpp_3m_sde", dict(eta=1.0, s_noise=1.0), "noise_sampler"),
    ("euler_ancestral", "sample_euler_ancestral", dict(eta=1.0, s_noise=1.0), "noise_sampler"),
]


def run_k_diffusion(kd, mix, pname: str, z, store: Store):
    for label, fname, kw, noise in K_SAMPLERS:
        for n in STEPS:
            sigmas = kd.get_sigmas_karras(n, SIGMA_MIN, SIGMA_MAX, rho=RHO)  # n sigmas, then 0 appended
            S = float(sigmas[0])
            name = f"{pname}/k_diffusion/{label}/n{n}"
            rec = Recorder(case_seed(name))
            net = Counter(sigma_denoiser(mix, S))
            args = dict(kw, disable=True)
            if noise == "noise_sampler":
                sig = sigmas.tolist()
                args["noise_sampler"] = lambda s, s_next, x=z: rec.draw(x, sig.index(float(s)))
            x = z * sigmas[0]
            real_torch = kd.torch
            kd.torch = _TorchWithRecordedRandn(rec)  # sample_euler / sample_heun draw torch.randn_like each step
            try:
                out = getattr(kd, fname)(net, x, sigmas, **args)
            finally:
                kd.torch = real_torch
            stochastic = (noise == "noise_sampler" and kw.get("eta", 0.0) != 0.0) or noise == "randn_like"
            meta = dict(reference="k_diffusion", problem=pname, name=name, function=fname,
                        kwargs={k: v for k, v in kw.items()},
                        sigmas=f"get_sigmas_karras({n}, {SIGMA_MIN}, {SIGMA_MAX}, rho={RHO})",
                        sdeflow_path={"class": "EDM", "args": {"sigma_max": S}}, grid_kind="sigma",
                        x_init="x_T * grid[0]", network_kind="data", steps=n, label=label,
                        noise=(dict(source="torch.randn_like" if noise == "randn_like" else "noise_sampler",
                                    seed=rec.seed, draws=len(rec.draws)) if stochastic else None))
            if not stochastic and rec.draws:
                meta["discarded_draws"] = len(rec.draws)  # randn_like drawn every step, multiplied by 0
            store.add(meta, out, sigmas, net, rec.tensors(name) if stochastic else None)


def run_edm(edm, mix, pname: str, z, store: Store):
    for label, churn in (("deterministic", {}), ("churn", CHURN)):
        for n in STEPS + (18,):
            name = f"{pname}/edm/{label}/n{n}"
            rec = Recorder(case_seed(name))
            seen = []

            class Net:  # what edm_sampler asks of a network; round_sigma is the identity
                sigma_min, sigma_max = 0.0, float("inf")

                def round_sigma(self, sigma):
                    seen.append(torch.as_tensor(sigma).clone())
                    return sigma

                def __call__(self, x, sigma, class_labels=None):
                    if counter.fn is None:  # S = edm_sampler's first sigma (its grid, seen by round_sigma)
                        counter.fn = sigma_denoiser(mix, float(seen[0][0]))
                    return counter(x, sigma.reshape(()).expand(x.shape[0]))

            counter = Counter(None)
            kw = dict(num_steps=n, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, rho=RHO, **churn)
            k = [0]

            def randn_like(x):
                k[0] += 1
                return rec.draw(x, k[0] - 1)

            out = edm.edm_sampler(Net(), z.clone(), randn_like=randn_like, **kw)
            t_steps = torch.cat([seen[0], torch.zeros(1, dtype=torch.float64)])  # edm_sampler appends t_N = 0
            S = float(t_steps[0])
            stochastic = bool(churn)
            meta = dict(reference="edm", problem=pname, name=name, function="edm_sampler",
                        kwargs=dict(kw, randn_like="recorded", class_labels=None),
                        net=dict(sigma_min=0.0, sigma_max="inf", round_sigma="identity"),
                        sdeflow_path={"class": "EDM", "args": {"sigma_max": S}}, grid_kind="sigma",
                        x_init="x_T * grid[0]", network_kind="data", steps=n, label=label,
                        noise=dict(source="randn_like", seed=rec.seed, draws=len(rec.draws)) if stochastic else None)
            if not stochastic:
                meta["discarded_draws"] = len(rec.draws)  # drawn every step, scaled by sqrt(t_hat^2 - t^2) = 0
            store.add(meta, out, t_steps, counter, rec.tensors(name) if stochastic else None)


# ---- DPM-Solver++(3M): authors' method against sdeflow's exact-quadratic exp_3m_exact (until issue 14, sdeflow's
# dpmpp_3m), pathwise against a tight reference ------------------------------------------------------------
def measure_3m(dpm, steps_list=(5, 10, 20, 50, 100, 200, 400), n=256, skips=("logSNR", "time_uniform")) -> str:
    mix = sf.eight_gaussians()
    vp = sf.VP()
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(SEEDS["eight_gaussians"]))
    nsched = dpm.NoiseScheduleVP("linear", continuous_beta_0=0.1, continuous_beta_1=20.0)
    ref = mix.reference_flow(z, vp, 1.0, T_END, rtol=1e-13, atol=1e-13)
    lines = ["| grid | steps | authors' 3M, solver_type='dpmsolver' (default) | authors' 3M, 'taylor' | "
             "sdeflow `exp_3m_exact` | observed order, authors / sdeflow | sdeflow vs authors' 'taylor' (rel.) |",
             "|---|---|---|---|---|---|---|"]
    for skip in skips:
        prev = None
        for steps in steps_list:
            row = []
            outs = {}
            for stype in ("dpmsolver", "taylor"):
                mf = dpm.model_wrapper(vp_network(mix, "data"), nsched, model_type="x_start")
                solver = dpm.DPM_Solver(mf, nsched, algorithm_type="dpmsolver++")
                outs[stype] = solver.sample(z.clone(), steps=steps, t_start=1.0, t_end=T_END, order=3, skip_type=skip,
                                            method="multistep", solver_type=stype)
                grid = solver.get_time_steps(skip, 1.0, T_END, steps, "cpu")
            outs["sdeflow"] = sf.sample(vp, mix.field("data"), "exp_3m_exact", grid=grid, x_init=z.clone(),
                                        lower_order_final=steps < 10).x
            rms = {}
            for key in ("dpmsolver", "taylor", "sdeflow"):
                e = (outs[key] - ref).norm(dim=1)
                rms[key] = float(e.pow(2).mean().sqrt())
                row.append(f"{e.max():.2e} / {rms[key]:.2e}")
            if prev is None:
                row.append("")
            else:
                r = math.log(steps / prev[0])
                row.append(f"{math.log(prev[1]['taylor'] / rms['taylor']) / r:.2f} / "
                           f"{math.log(prev[1]['sdeflow'] / rms['sdeflow']) / r:.2f}")
            prev = (steps, rms)
            agree = (outs["sdeflow"] - outs["taylor"]).abs().max() / outs["taylor"].abs().max()
            lines.append(f"| {skip} | {steps} | " + " | ".join(row) + f" | {agree:.1e} |")
    return "\n".join(lines)


# ---- writing -------------------------------------------------------------------------------------------
def _replace_block(text: str, key: str, body: str) -> str:
    start, end = f"<!-- BEGIN generated:{key} -->", f"<!-- END generated:{key} -->"
    pat = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    block = f"{start}\n{body}\n{end}"
    if pat.search(text):
        return pat.sub(lambda _: block, text)
    return text.rstrip("\n") + "\n\n" + block + "\n"


def case_table(cases: list) -> str:
    """One row per configuration (problems and step counts grouped)."""
    groups: dict = {}
    for c in cases:
        label = c["name"].split("/", 2)[2].rsplit("/n", 1)[0]
        g = groups.setdefault(label, dict(case=c, problems=[], steps={}))
        if c["problem"] not in g["problems"]:
            g["problems"].append(c["problem"])
        g["steps"][c["steps"]] = c["nfe"]
    lines = ["| configuration (`<problem>/<reference>/<configuration>/n<steps>`) | function | arguments "
             "(besides steps) | steps: NFE | noise |", "|---|---|---|---|---|"]
    for label, g in groups.items():
        c = g["case"]
        kw = {k: v for k, v in c["kwargs"].items() if k not in ("steps", "num_steps")}
        args = json.dumps(kw, sort_keys=True)
        if c.get("constructor"):
            args = json.dumps(c["constructor"], sort_keys=True) + "; " + args
        if c.get("sigmas"):
            args += "; sigmas = " + c["sigmas"].replace(str(c["steps"]), "n", 1) + " (n sigmas, then 0)"
        noise = c.get("noise")
        ns = f"recorded ({noise['source']})" if noise else "none"
        steps = ", ".join(f"{k}: {v}" for k, v in sorted(g["steps"].items()))
        lines.append(f"| `{label}` | `{c['function']}` | `{args}` | {steps} | {ns} |")
    return "\n".join(lines)


def _git_head() -> str:
    """The commit of this repository the oracle (the network) came from (uncommitted changes flagged)."""
    import subprocess
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "sdeflow"], capture_output=True,
                               text=True, check=True).stdout.strip()
        return head + (" (sdeflow/ modified)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("refs_dir", help="directory holding the extracted reference files (see the docstring)")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--skip-3m", action="store_true", help="do not re-measure the DPM-Solver++(3M) accuracy table")
    a = ap.parse_args(argv)
    torch.set_default_dtype(torch.float64)
    mods = load_references(os.path.abspath(a.refs_dir))
    os.makedirs(a.out, exist_ok=True)
    date = datetime.date.today().isoformat()
    env = dict(date=date, python=platform.python_version(), torch=torch.__version__, numpy=np.__version__,
               scipy=__import__("scipy").__version__, torchsde=__import__("torchsde").__version__,
               sdeflow=getattr(sf, "__version__", "?"), sdeflow_commit=_git_head(),
               command="python benchmarks/references/make_reference_figures.py REFS_DIR",
               default_dtype="torch.float64", batch=BATCH, seeds=SEEDS)
    runners = {"dpm_solver": run_dpm_solver, "unipc": run_unipc, "k_diffusion": run_k_diffusion, "edm": run_edm}
    summaries = []
    for key, run in runners.items():
        store = Store()
        for pname, mix in problems().items():
            z = torch.randn(BATCH, 2, generator=torch.Generator().manual_seed(SEEDS[pname]), dtype=torch.float64)
            store.tensors[f"x_T/{pname}"] = z.clone()
            run(mods[key], mix, pname, z, store)
        meta = dict(REFERENCES[key], env=env, cases=store.cases)
        path = os.path.join(a.out, f"{key}.safetensors")
        save_tensors(path, store.tensors, meta)
        summaries.append((key, path, store.cases))
        print(f"{key}: {len(store.cases)} cases -> {path} ({os.path.getsize(path) / 1024:.0f} KiB)", flush=True)

    prov = os.path.join(a.out, "PROVENANCE.md")
    text = open(prov).read() if os.path.exists(prov) else "# Reference outputs: provenance\n"
    env_lines = [f"- generated {date} with Python {env['python']}, torch {env['torch']}, numpy {env['numpy']}, "
                 f"scipy {env['scipy']}, torchsde {env['torchsde']}; default dtype float64; batch {BATCH}; "
                 f"x_T seeds {SEEDS}; the oracles (networks) from sdeflow {env['sdeflow']} at commit "
                 f"`{env['sdeflow_commit']}`", f"- command: `{env['command']}`"]
    for key, path, cases in summaries:
        r = REFERENCES[key]
        env_lines.append(f"- `{os.path.basename(path)}`: {len(cases)} cases from "
                         f"[{r['repo']}](https://github.com/{r['repo']}) @ `{r['commit']}`, `{r['file']}` "
                         f"(sha256 `{r['sha256'][:16]}…`), {os.path.getsize(path) / 1024:.0f} KiB")
    text = _replace_block(text, "files", "\n".join(env_lines))
    for key, path, cases in summaries:
        text = _replace_block(text, f"cases:{key}", case_table(cases))
    if not a.skip_3m:
        text = _replace_block(text, "dpmpp_3m", measure_3m(mods["dpm_solver"]))
    with open(prov, "w") as f:
        f.write(text)
    print(f"wrote {prov}")


if __name__ == "__main__":
    main()
