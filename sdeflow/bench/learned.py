r"""Learned-network problems of ``sdeflow bench --full``: small networks trained reproducibly on the CPU,
shipped as weight files (``sdeflow/bench/networks/``) with the code that regenerates them, and measured
against a tight float64 solve of the same network from the same noise.

The networks (``SPECS``; each a :class:`NoiseLevelMLP`: SiLU layers on ``[x, sin(w c), cos(w c)]`` with the
noise-level feature ``c`` and 8 frequencies ``w`` log-spaced from 1 to 8):

* ``learned_pinwheel``: an EDM-preconditioned denoiser (Karras et al. 2022, Table 1)
  :math:`D(x;\sigma) = c_{skip}x + c_{out}F(c_{in}x, c_{noise})`, :math:`c_{skip} = \sigma_d^2/(\sigma^2+\sigma_d^2)`,
  :math:`c_{out} = \sigma\sigma_d/\sqrt{\sigma^2+\sigma_d^2}`, :math:`c_{in} = 1/\sqrt{\sigma^2+\sigma_d^2}`,
  :math:`c_{noise} = \tfrac14\ln\sigma`, trained with EDM's loss (:math:`\ln\sigma\sim\mathcal N(-1.2, 1.2^2)`,
  weight :math:`(\sigma^2+\sigma_d^2)/(\sigma\sigma_d)^2`, i.e. unit weight on :math:`F`'s target
  :math:`(x_0 - c_{skip}x)/c_{out}`) on a 5-arm pinwheel (2-D); posed like the oracle problems: a
  ``DataField`` on ``VE(0.002, 80)``, sigma 80 -> 0.002, a final step to sigma = 0, integrated in EDM
  coordinates.
* ``learned_mix16``: the same on a 16-dimensional anisotropic Gaussian mixture (8 components, per-axis
  standard deviations 0.05 .. 0.8).
* ``learned_spiral_ddpm``: a noise (epsilon) predictor trained with DDPM's loss (uniform timesteps) on DDPM's
  schedule (``DiscreteVP()``, beta 1e-4 .. 0.02, T = 1000) on a 2-D spiral, fed the noise level
  :math:`c = -\lambda/8` (the log-SNR; smooth in the noise level between the schedule's knots); posed like
  ``eight_gaussians_ddpm`` (timestep 999 -> 0, then the final denoising), so diffusers' DDPM-schedule
  schedulers (DPM-Solver++, Euler, Heun, and DDIM / UniPC on their own timesteps) run on it too.

**Shipped, not trained on first use.** Training is deterministic on one machine (seeded generators for the
initial weights, the data and the noise; one intra-op thread; ``torch.use_deterministic_algorithms``), but
float32 training on another CPU or PyTorch version rounds differently and, after thousands of Adam steps,
ends at a slightly different network: shipping the weights (float32, 40-48 KB each) makes every machine
benchmark the same network. ``python benchmarks/train_bench_networks.py --write`` retrains them (16-30 s each
on one core) and rewrites ``networks/manifest.json``: each network's SHA-256 (over its tensors), training
configuration and record, and check values (the validation loss of a ``PROBE_STEPS`` retraining, and the
pathwise errors of Heun with 20 evaluations on Karras' grid against the reference on 64 samples).
:func:`load_network` refuses weights whose checksum does not match; ``tests/tools/test_bench.py`` recomputes the
recorded checks and the ``PROBE_STEPS`` retraining's validation loss (the training code's fingerprint);
``python benchmarks/train_bench_networks.py --check`` retrains and compares with the shipped networks
(:func:`regenerate`).

**Reference.** :func:`field_reference` integrates the network's probability-flow ODE with SciPy's DOP853 in
log-SNR time (:func:`sdeflow.analytic.flow_in_log_snr`, the solve behind the mixtures' references) at
``rtol = atol = 1e-10`` in float64 from the same initial noise, then applies the network's own final
denoising step, as the samplers do. It is cached on disk (:func:`cache_dir`; ``SDEFLOW_CACHE`` overrides)
keyed by the network's checksum, the initial noise, the window and the tolerance.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass

import torch

from ..errors import SdeflowValueError, unknown_name

__all__ = ["NetSpec", "SPECS", "NoiseLevelMLP", "EDMDenoiser", "EpsNet", "train_network", "load_network",
           "network_field", "field_reference", "cache_dir", "tensor_sha256", "DATASETS", "build_problems",
           "regenerate", "check_errors", "validation_loss"]

_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "networks")
MANIFEST = os.path.join(_DIR, "manifest.json")
_FREQS = 8  # sinusoidal features of the noise level: frequencies log-spaced 1 .. 8
P_MEAN, P_STD = -1.2, 1.2  # EDM's training distribution of ln(sigma)
VE_SIGMA_MIN, VE_SIGMA_MAX = 0.002, 80.0


# ---- data: seeded generators, fresh samples every step ----------------------------------------------------
def pinwheel(n: int, generator: torch.Generator) -> torch.Tensor:
    """A 5-arm pinwheel (Johnson et al. 2016): radial std 0.3, tangential std 0.1, twist rate 0.25, scale 2."""
    arms, rate = 5, 0.25
    f = torch.randn(n, 2, generator=generator, dtype=torch.float64) * torch.tensor([0.3, 0.1], dtype=torch.float64)
    f[:, 0] += 1.0
    k = torch.randint(0, arms, (n,), generator=generator)
    ang = k.to(torch.float64) * (2 * math.pi / arms) + rate * torch.exp(f[:, 0])
    c, s = torch.cos(ang), torch.sin(ang)
    return 2.0 * torch.stack([f[:, 0] * c - f[:, 1] * s, f[:, 0] * s + f[:, 1] * c], 1)


def spiral(n: int, generator: torch.Generator) -> torch.Tensor:
    """A 2-D spiral (a Swiss roll's cross-section): angle 1.5 pi .. 4.5 pi, radius = angle / 5, noise std 0.08."""
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    a = 1.5 * math.pi * (1.0 + 2.0 * u)
    x = torch.stack([a * torch.cos(a), a * torch.sin(a)], 1) / 5.0
    return x + 0.08 * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def random_mixture(k: int, d: int, std_range: tuple, seed: int):
    """``k`` components in ``d`` dimensions: means N(0, I), per-axis stds log-uniform in ``std_range``, weights
    proportional to exp(0.5 N(0, 1)) (all drawn from ``seed``, in that order)."""
    from ..analytic import GaussianMixture

    g = torch.Generator().manual_seed(seed)
    lo, hi = std_range
    means = torch.randn(k, d, generator=g, dtype=torch.float64)
    stds = torch.exp(math.log(lo) + math.log(hi / lo) * torch.rand(k, d, generator=g, dtype=torch.float64))
    w = torch.exp(0.5 * torch.randn(k, generator=g, dtype=torch.float64))
    return GaussianMixture(w, means, stds)


def mixture16():
    """The 16-D anisotropic mixture: :func:`random_mixture` with 8 components, stds in [0.05, 0.8], seed 16."""
    return random_mixture(8, 16, (0.05, 0.8), 16)


def _mix16(n: int, generator: torch.Generator) -> torch.Tensor:
    return mixture16().sample(n, generator=generator, dtype=torch.float64)


DATASETS = {"pinwheel": pinwheel, "spiral": spiral, "mixture16": _mix16}


# ---- networks --------------------------------------------------------------------------------------------
class NoiseLevelMLP(torch.nn.Module):
    """``F(x, c)``: ``depth`` SiLU layers of width ``hidden`` on ``[x, sin(w c), cos(w c)]`` (``c`` the noise
    level feature, ``(batch,)``; ``w``: 8 frequencies log-spaced 1 .. 8), a linear output of ``dim``. Initial
    weights and biases uniform in :math:`\\pm 1/\\sqrt{\\text{fan-in}}` from ``generator``."""

    def __init__(self, dim: int, hidden: int, depth: int, generator: torch.Generator | None = None):
        super().__init__()
        layers, d = [], dim + 2 * _FREQS
        for _ in range(depth):
            layers += [torch.nn.Linear(d, hidden), torch.nn.SiLU()]
            d = hidden
        layers.append(torch.nn.Linear(d, dim))
        self.body = torch.nn.Sequential(*layers)
        if generator is not None:
            with torch.no_grad():
                for m in self.body:
                    if isinstance(m, torch.nn.Linear):
                        b = 1.0 / math.sqrt(m.in_features)
                        for p in (m.weight, m.bias):
                            p.copy_((2 * torch.rand(p.shape, generator=generator) - 1) * b)

    def forward(self, x, c):
        w = torch.exp(torch.linspace(0.0, math.log(8.0), _FREQS, dtype=x.dtype, device=x.device))
        a = c.reshape(-1, 1).to(x.dtype) * w
        return self.body(torch.cat([x, torch.sin(a), torch.cos(a)], -1))


class EDMDenoiser(torch.nn.Module):
    r"""Karras et al.'s preconditioned denoiser :math:`D(x;\sigma) = c_{skip}x + c_{out}F(c_{in}x, \tfrac14\ln\sigma)`
    (see the module doc), called as ``net(x, t)`` on a VE path (``sigma = path.sigma(t)``)."""

    def __init__(self, F: NoiseLevelMLP, sigma_data: float, path):
        super().__init__()
        self.F, self.sigma_data, self.path = F, float(sigma_data), path

    def coefficients(self, sigma):
        sd2 = self.sigma_data ** 2
        r = torch.sqrt(sigma * sigma + sd2)
        return sd2 / (sigma * sigma + sd2), sigma * self.sigma_data / r, 1.0 / r, 0.25 * torch.log(sigma)

    def denoise(self, x, sigma):
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma.to(x.dtype))
        return c_skip[:, None] * x + c_out[:, None] * self.F(c_in[:, None] * x, c_noise)

    def forward(self, x, t):
        return self.denoise(x, self.path.sigma(t).to(x.dtype))


class EpsNet(torch.nn.Module):
    r"""A noise predictor :math:`\hat\varepsilon = F(x, -\lambda_t/8)` (``net(x, t)`` on its path; the
    feature is :math:`\tfrac14\ln(\sigma_t/\alpha_t)`, EDM's :math:`c_{noise}` of the VE-equivalent level)."""

    def __init__(self, F: NoiseLevelMLP, path):
        super().__init__()
        self.F, self.path = F, path

    def forward(self, x, t):
        return self.F(x, (-self.path.log_snr(t) / 8.0).to(x.dtype))


@dataclass(frozen=True)
class NetSpec:
    """A learned problem's network and its training (everything that determines the weights)."""

    name: str
    data: str  # key of DATASETS
    param: str  # "edm": EDM-preconditioned denoiser on VE(0.002, 80); "eps": noise predictor on DiscreteVP()
    dim: int
    sigma_data: float  # EDM's sigma_data (the data's per-axis RMS standard deviation, rounded; "edm" only)
    hidden: int = 64
    depth: int = 3
    steps: int = 6000
    batch: int = 512
    lr: float = 2e-3
    seed: int = 0
    description: str = ""

    def config(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "description"}

    def path(self):
        from ..paths import VE, DiscreteVP

        return VE(VE_SIGMA_MIN, VE_SIGMA_MAX) if self.param == "edm" else DiscreteVP()


SPECS = {s.name: s for s in (
    NetSpec("learned_pinwheel", "pinwheel", "edm", 2, sigma_data=1.5,
            description="EDM-preconditioned MLP denoiser trained on a 5-arm pinwheel (2-D); VE sigma 80 -> 0.002, "
                        "then a step to sigma = 0; reference: DOP853 solve of the same network"),
    NetSpec("learned_mix16", "mixture16", "edm", 16, sigma_data=1.0,
            description="EDM-preconditioned MLP denoiser trained on a 16-D anisotropic 8-component mixture; VE as "
                        "above; reference: DOP853 solve of the same network"),
    NetSpec("learned_spiral_ddpm", "spiral", "eps", 2, sigma_data=1.4,  # sigma_data: recorded, unused by eps
            description="noise-prediction MLP trained with DDPM's loss on a 2-D spiral, DDPM's schedule, timestep "
                        "999 -> 0 then the final denoising; peers: diffusers' DDPM schedulers; reference: DOP853 "
                        "solve of the same network"),
)}


def _get_spec(spec) -> NetSpec:
    if isinstance(spec, NetSpec):
        return spec
    if spec not in SPECS:
        raise unknown_name("learned network", spec, SPECS)
    return SPECS[spec]


def _wrap(spec: NetSpec, F: NoiseLevelMLP) -> torch.nn.Module:
    return EDMDenoiser(F, spec.sigma_data, spec.path()) if spec.param == "edm" else EpsNet(F, spec.path())


# ---- training ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def deterministic(threads: int = 1):
    """One intra-op thread and ``torch.use_deterministic_algorithms(True)`` inside; restored afterwards."""
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])


def _loss_fn(spec: NetSpec, F: NoiseLevelMLP, generator: torch.Generator):
    """``x0 -> loss`` of the spec's objective (float32), drawing noise levels and noise from ``generator``."""
    if spec.param == "edm":
        net = EDMDenoiser(F, spec.sigma_data, None)

        def loss(x0):
            n = x0.shape[0]
            sigma = torch.exp(P_MEAN + P_STD * torch.randn(n, generator=generator))
            x = x0 + sigma[:, None] * torch.randn(x0.shape, generator=generator)
            c_skip, c_out, c_in, c_noise = net.coefficients(sigma)
            target = (x0 - c_skip[:, None] * x) / c_out[:, None]  # EDM's effective target: unit weight on F
            return (F(c_in[:, None] * x, c_noise) - target).pow(2).sum(1).mean()
        return loss
    path = spec.path()
    a_tab = path.alphas_cumprod.sqrt().to(torch.float32)
    s_tab = (1.0 - path.alphas_cumprod).sqrt().to(torch.float32)
    c_tab = (-path.log_snr(path.timesteps) / 8.0).to(torch.float32)  # the feature at t = (i + 1) / T

    def loss(x0):
        i = torch.randint(0, path.T, (x0.shape[0],), generator=generator)
        eps = torch.randn(x0.shape, generator=generator)
        x = a_tab[i, None] * x0 + s_tab[i, None] * eps
        return (F(x, c_tab[i]) - eps).pow(2).sum(1).mean()
    return loss


def train_network(spec, steps: int | None = None) -> tuple[torch.nn.Module, dict]:
    """Train ``spec``'s network from scratch (float32, CPU, one thread, deterministic): ``(net, info)`` with
    ``net(x, t)`` the problem's network (float32) and ``info = {steps, seconds, final_loss, val_loss}``
    (``final_loss``: mean of the last 100 steps' losses; ``val_loss``: the objective on a fixed validation set
    of 8192 samples, seed 10 ** 6). ``steps`` overrides the spec's (a tiny budget for tests)."""
    from ..train import fit

    spec = _get_spec(spec)
    steps = spec.steps if steps is None else int(steps)
    with deterministic():
        F = NoiseLevelMLP(spec.dim, spec.hidden, spec.depth, generator=torch.Generator().manual_seed(spec.seed))
        g_data = torch.Generator().manual_seed(spec.seed + 1)
        loss = _loss_fn(spec, F, torch.Generator().manual_seed(spec.seed + 2))
        t0 = time.perf_counter()
        losses = fit(loss, F, lambda n: DATASETS[spec.data](n, g_data).to(torch.float32), steps=steps, lr=spec.lr,
                     batch=spec.batch)
        seconds = time.perf_counter() - t0
        val = validation_loss(spec, F)
    F.eval()
    info = dict(steps=steps, seconds=round(seconds, 1), final_loss=sum(losses[-100:]) / len(losses[-100:]),
                val_loss=val)
    return _wrap(spec, F), info


def validation_loss(spec, F: NoiseLevelMLP) -> float:
    """The training objective of ``F`` on a fixed validation set (8192 samples and noise draws, seed 10 ** 6)."""
    spec = _get_spec(spec)
    g = torch.Generator().manual_seed(10 ** 6)
    x0 = DATASETS[spec.data](8192, g).to(torch.float32)
    with torch.no_grad(), deterministic():
        return float(_loss_fn(spec, F, g)(x0))


# ---- shipped weights ----------------------------------------------------------------------------------------
def tensor_sha256(state: dict) -> str:
    """SHA-256 over ``state``'s tensors (names in sorted order, each name, dtype, shape and raw bytes)."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()


def _weights_file(name: str) -> str:
    return os.path.join(_DIR, f"{name}.safetensors")


def _manifest() -> dict:
    if not os.path.exists(MANIFEST):
        return {}
    with open(MANIFEST) as f:
        return json.load(f)


_LOADED: dict = {}


def load_network(spec, dtype=torch.float64, device="cpu") -> torch.nn.Module:
    """The shipped network of ``spec`` as ``net(x, t)`` in ``dtype`` (float64 by default: the bench's
    precision; the weights are float32 values) on ``device``, parameters frozen. Refuses
    (``SdeflowValueError``) a missing file, weights whose SHA-256 differs from ``networks/manifest.json``, or a
    manifest whose training configuration differs from the spec's: regenerate with
    ``python benchmarks/train_bench_networks.py --write``."""
    from ..io import load_field_state

    spec = _get_spec(spec)
    key = (spec.name, dtype, str(torch.device(device)))
    if key in _LOADED:
        return _LOADED[key]
    path, fix = _weights_file(spec.name), "regenerate with: python benchmarks/train_bench_networks.py --write"
    entry = _manifest().get(spec.name)
    if not os.path.exists(path) or entry is None:
        raise SdeflowValueError(f"the weights of the learned problem {spec.name!r} are missing ({path}); {fix}")
    if entry["config"] != spec.config():
        raise SdeflowValueError(f"the shipped weights of {spec.name!r} were trained with {entry['config']}, but the "
                                f"spec is {spec.config()}; {fix}")
    state, _ = load_field_state(path)
    if tensor_sha256(state) != entry["sha256"]:
        raise SdeflowValueError(f"the weights in {path} do not match their recorded SHA-256 "
                                f"({entry['sha256'][:12]}...); {fix}")
    F = NoiseLevelMLP(spec.dim, spec.hidden, spec.depth)
    F.load_state_dict(state)
    net = _wrap(spec, F).to(dtype=dtype, device=device).eval().requires_grad_(False)
    _LOADED[key] = net
    return net


class _LazyNet:
    """``net(x, t)`` that loads the shipped network on its first call (registering a problem reads no file)."""

    def __init__(self, spec: NetSpec):
        self.spec = spec

    def __call__(self, x, t):
        return load_network(self.spec, device=x.device)(x, t)

    def __repr__(self):
        return f"learned network {self.spec.name!r}"


def network_field(spec):
    """The sdeflow field of ``spec``'s shipped network: ``DataField`` (EDM) or ``NoiseField`` (eps), evaluated
    in float64 whatever the solver's dtype (``dtype=torch.float64``)."""
    from ..fields import DataField, NoiseField

    spec = _get_spec(spec)
    cls = DataField if spec.param == "edm" else NoiseField
    return cls(_LazyNet(spec), dtype=torch.float64)


# ---- the reference solve, cached ---------------------------------------------------------------------------
def cache_dir() -> str:
    """Where references are cached: ``$SDEFLOW_CACHE``, else ``$XDG_CACHE_HOME/sdeflow``, else
    ``~/.cache/sdeflow`` (files under ``bench/``; delete them freely)."""
    root = os.environ.get("SDEFLOW_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "sdeflow")
    return os.path.join(root, "bench")


def field_reference(field, path, x: torch.Tensor, t_from: float, t_to: float, *, final_denoise: bool,
                    rtol: float = 1e-10, chunk: int = 256, cache_key: str | None = None) -> torch.Tensor:
    r"""The probability-flow answer of ``field`` on ``path`` for the initial ``x`` at ``t_from``, in float64:
    DOP853 in log-SNR time (:func:`sdeflow.analytic.flow_in_log_snr`, ``rtol = atol``) to ``t_to``, then the
    field's own denoising step :math:`x\mapsto\hat x_0(x, t_{to})` if ``final_denoise``. With ``cache_key``
    (a string naming the field, e.g. its weights' SHA-256) the answer is cached on disk under
    :func:`cache_dir`, keyed by it, ``x``'s bytes, the window, the tolerance and the path."""
    from ..analytic import flow_in_log_snr
    from ..io import load_tensors, save_tensors

    x64 = x.detach().to(torch.float64).cpu().contiguous()
    file = None
    if cache_key is not None:
        h = hashlib.sha256()
        h.update(json.dumps([cache_key, repr(path), float(t_from), float(t_to), bool(final_denoise), float(rtol),
                             int(chunk), tuple(x64.shape)]).encode())
        h.update(x64.numpy().tobytes())
        file = os.path.join(cache_dir(), f"ref-{h.hexdigest()[:32]}.safetensors")
        if os.path.exists(file):
            with contextlib.suppress(Exception):  # an unreadable cache file is recomputed (and rewritten)
                return load_tensors(file)[0]["ref"].to(x.device)

    def denoise(xh, lam, ah, sh):
        t = float(path.t_from_log_snr(torch.tensor(lam, dtype=torch.float64)))
        scale = float(path.scale(t))
        return field.data(xh * scale, t, path).to(torch.float64)

    with torch.no_grad():
        ref = flow_in_log_snr(denoise, x64, path, t_from, t_to, rtol=rtol, atol=rtol, chunk=chunk)
        if final_denoise:
            ref = field.data(ref, float(t_to), path).to(torch.float64)
    if file is not None:
        with contextlib.suppress(OSError):  # a read-only cache directory only costs the solve next time
            os.makedirs(os.path.dirname(file), exist_ok=True)
            save_tensors(file + ".tmp", {"ref": ref})
            os.replace(file + ".tmp", file)
    return ref.to(x.device)


def build_problems() -> list:
    """The learned problems (``sdeflow.bench.Problem``), in the windows of the oracle problems."""
    from ..paths import EDM
    from .problems import Problem

    out = []
    for spec in SPECS.values():
        entry = _manifest().get(spec.name, {})
        common = dict(exact_field=network_field(spec), dim=spec.dim, description=spec.description,
                      reference_solver="dop853", cache_key=entry.get("sha256", spec.name))
        if spec.param == "edm":
            out.append(Problem(spec.name, path=spec.path(), t_max=1.0, t_min=0.0, final_denoise=True,
                               integration_path=EDM(VE_SIGMA_MAX), **common))
        else:
            out.append(Problem(spec.name, path=spec.path(), t_max=1.0, final_denoise=True, **common))
    return out


# ---- regeneration ------------------------------------------------------------------------------------------
CHECK = dict(n=64, seed=0, solver="heun", nfe=20, grid="karras")
PROBE_STEPS = 200  # a short retraining whose validation loss the manifest records (the training code's fingerprint)


def check_errors(problem) -> dict:
    """The recorded check of a learned problem: pathwise errors (rms, q99, max) of ``CHECK['solver']`` with
    ``CHECK['nfe']`` evaluations on ``CHECK['grid']`` against the reference, ``CHECK['n']`` samples."""
    from ..sample import sample
    from .metrics import pathwise_errors

    x = problem.initial(CHECK["n"], CHECK["seed"])
    ref = problem.reference(x)
    y = sample(problem.path, problem.field(), CHECK["solver"], nfe=CHECK["nfe"], grid=CHECK["grid"], x_init=x,
               **problem.sample_kwargs()).x
    return pathwise_errors(y, ref)


def regenerate(names=None, *, write: bool = False, check: bool = False, log=print) -> dict:
    """Retrain the networks ``names`` (default: all) from their specs. ``write``: save the weights to
    ``networks/<name>.safetensors`` and their checksum, training record and check values to
    ``networks/manifest.json``; ``check``: report whether the retrained weights are the shipped ones and how
    their validation loss compares. Returns ``{name: (sha256, info)}``."""
    from ..io import save_field
    from .problems import get_problem

    manifest, out = _manifest(), {}
    for name in list(SPECS) if names is None else names:
        spec = _get_spec(name)
        net, info = train_network(spec)
        sha = tensor_sha256(net.F.state_dict())
        out[name] = (sha, info)
        log(f"{name}: trained {info['steps']} steps in {info['seconds']} s, final loss {info['final_loss']:.4f}, "
            f"validation loss {info['val_loss']:.4f}, sha256 {sha[:12]}")
        if check:
            old = manifest.get(name)
            if old is None:
                log(f"  nothing shipped for {name}")
            else:
                same = "identical weights" if old["sha256"] == sha else "different weights (another CPU or torch?)"
                log(f"  shipped: validation loss {old['train']['val_loss']:.4f} (torch {old['torch']}); retrained: "
                    f"{info['val_loss']:.4f} (torch {torch.__version__}); {same}")
        if write:
            os.makedirs(_DIR, exist_ok=True)
            save_field(_weights_file(name), net.F, sde_path=spec.path(),
                       metadata={"problem": name, "config": spec.config(), "sha256": sha})
            probe = {"steps": PROBE_STEPS, "val_loss": train_network(spec, steps=PROBE_STEPS)[1]["val_loss"]}
            manifest[name] = {"config": spec.config(), "sha256": sha, "train": info, "torch": torch.__version__,
                              "probe": probe}
            _write_manifest(manifest)
            _LOADED.clear()
            problem = get_problem(name)
            problem._ref_cache.clear()
            problem.cache_key = sha
            manifest[name]["check"] = dict(CHECK, **check_errors(problem))
            log(f"  check: {manifest[name]['check']}")
            _write_manifest(manifest)
    return out


def _write_manifest(manifest: dict) -> None:
    with open(MANIFEST, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
