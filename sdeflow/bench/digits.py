"""A benchmark problem on a real trained image network: ``digits_unet``.

A class-conditional diffusers ``UNet2DModel`` trained with DDPM's noise loss on scikit-learn's bundled 8x8 digits
(1797 images scaled to [-1, 1]; no download), labels 0-9 and the null label 10 of classifier-free guidance
(dropped in for 10% of the training labels). The problem samples it with guidance w = 2 toward label ``i mod 10``
for sample ``i`` (one network call per evaluation on the doubled batch, :func:`sdeflow.classifier_free_guidance`),
on its own DDPM schedule (diffusers' float32 ``alphas_cumprod``, T = 1000) with fractional timesteps, from t = 1 to
the first knot 1/T, then the final denoising step. States are the 64 pixels flattened (the bench's problems are
``(n, dim)``); the network runs in float64. There is no exact answer: the reference is a float64 RK4 solve of the
same network on :data:`REFERENCE_STEPS` log-SNR steps from the same initial noise (``python
examples/bench_digits.py`` prints its distance to a solve with half the steps, which bounds its own error).

The network is trained on first use (seeded, one thread; a few minutes on a CPU) and cached as safetensors under
:func:`sdeflow.bench.learned.cache_dir`, keyed by its configuration and training settings; registering the problem
reads no file and imports neither diffusers nor scikit-learn (``pip install "sdeflow[bench]"`` brings both)::

    sdeflow bench --problems digits_unet --n 16 --no-sde

It is a real network, so each evaluation costs what a real network costs: the UNet runs in float64 (for the
reference's sake), about 0.1-0.4 s per call on 32 rows (16 samples, guided) on one CPU core, so keep ``--n``
small.

``examples/digits.py`` samples the same network with several solvers and reads the samples with a classifier.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from types import SimpleNamespace

import torch

from ..errors import SdeflowValueError
from ..fields import Field, batch_time

__all__ = ["NULL", "CONFIG", "QUICK_CONFIG", "TRAIN", "REFERENCE_STEPS", "load_data", "build_unet", "scheduler",
           "ddpm_path", "field", "guided", "train", "trained_model", "DigitsField", "problem"]

NULL = 10  # the null label of classifier-free guidance
CONFIG = dict(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(32, 64),
              down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
              norm_num_groups=8, num_class_embeds=NULL + 1)
QUICK_CONFIG = dict(CONFIG, block_out_channels=(8, 16), norm_num_groups=4)  # plumbing tests: seconds to train
TRAIN = dict(steps=2000, batch=128, lr=2e-3, p_uncond=0.1, seed=0)
REFERENCE_STEPS = 128  # RK4 log-SNR steps of the float64 reference (4 x 128 network calls)
GUIDANCE = 2.0
_MISSING = ("the digits problem needs diffusers (the UNet) and scikit-learn (the data): "
            "pip install \"sdeflow[bench]\" scikit-learn")


def _need(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(_MISSING) from e


def load_data(dtype=torch.float32):
    """The digits as ``(1797, 1, 8, 8)`` images in [-1, 1] and their labels (scikit-learn's bundled copy)."""
    d = _need("sklearn.datasets").load_digits()
    x = torch.as_tensor(d.images, dtype=dtype).unsqueeze(1) / 8.0 - 1.0  # grey levels 0..16 -> [-1, 1]
    return x, torch.as_tensor(d.target, dtype=torch.long)


def build_unet(config=CONFIG):
    return _need("diffusers").UNet2DModel(**config)


def scheduler():
    """The training schedule: diffusers' DDPMScheduler defaults (beta linear 1e-4..0.02, T = 1000, epsilon)."""
    return _need("diffusers").DDPMScheduler(num_train_timesteps=1000)


def ddpm_path():
    """The path of :func:`scheduler` without importing diffusers: its ``alphas_cumprod`` is the float32 cumulative
    product of ``1 - linspace(1e-4, 0.02, 1000)`` (diffusers computes it so), read as
    :func:`sdeflow.integrations.diffusers.path_from_scheduler` reads a scheduler."""
    from ..integrations.diffusers import path_from_scheduler

    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32)
    return path_from_scheduler(SimpleNamespace(alphas_cumprod=torch.cumprod(1.0 - betas, dim=0)))


def field(unet, *, clipping=None):
    """The noise field of ``unet`` (:func:`sdeflow.from_diffusers`' field); labels reach
    ``unet(..., class_labels=)`` through ``sample(..., model_kwargs={"class_labels": labels})``."""
    from ..integrations.diffusers import from_diffusers

    return from_diffusers(unet, scheduler(), clipping=clipping).field


def guided(unet, scale: float = GUIDANCE, clip: bool = False):
    """Classifier-free guidance ``(1 + w) eps(x | y) - w eps(x | null)`` (Ho & Salimans 2022) in one network call
    per evaluation (the batch [x; x] with labels [y; NULL]); ``clip=True`` clips its data prediction to [-1, 1]
    (diffusers' clip_sample: then no longer the guided network's own probability flow)."""
    from ..fields import ClippedField, classifier_free_guidance

    f = classifier_free_guidance(field(unet), scale, null={"class_labels": NULL})
    return ClippedField(f, clip_data=(-1.0, 1.0)) if clip else f


def train(unet, x, y, *, steps, batch, lr, p_uncond, seed):
    """DDPM's noise loss (:func:`sdeflow.losses.eps_loss`) on the scheduler's path, labels dropped to ``NULL``
    with probability ``p_uncond``; returns the losses."""
    from .. import losses
    from ..train import fit

    gen = torch.Generator().manual_seed(seed)
    path = ddpm_path()

    def data(n):
        i = torch.randint(0, x.shape[0], (n,), generator=gen)
        drop = torch.rand(n, generator=gen) < p_uncond
        return x[i], torch.where(drop, torch.full_like(y[i], NULL), y[i])

    def loss(b):
        x0, labels = b
        return losses.eps_loss(field(unet), path, x0, generator=gen, model_kwargs={"class_labels": labels})

    unet.train()
    out = fit(loss, unet, data, steps=steps, lr=lr, batch=batch)
    unet.eval()
    return out


def _key(config, train_args) -> str:
    blob = json.dumps({"config": config, "train": train_args, "version": 1}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def trained_model(cache=None, *, config=CONFIG, retrain: bool = False, verbose: bool = True, **train_args):
    """The trained class-conditional UNet (eval mode, float32) and its path, from ``<cache>/digits_unet_<key>
    .safetensors`` if present, else trained (seeded; a few minutes on one CPU thread) and saved there. ``cache``:
    a directory (default :func:`sdeflow.bench.learned.cache_dir`); ``train_args`` override :data:`TRAIN`."""
    from .. import io
    from .learned import cache_dir

    args = dict(TRAIN, **train_args)
    unknown = set(args) - set(TRAIN)
    if unknown:
        raise SdeflowValueError(f"unknown training argument(s) {sorted(unknown)}; known: {sorted(TRAIN)}")
    file = os.path.join(cache or cache_dir(), f"digits_unet_{_key(config, args)}.safetensors")
    with torch.random.fork_rng(devices=[]):  # the network's initialisation, seeded; the global RNG left as it was
        torch.manual_seed(args["seed"])
        unet = build_unet(config)
    if os.path.exists(file) and not retrain:
        state, meta = io.load_tensors(file)
        unet.load_state_dict(state)
        if verbose:
            print(f"loaded {file} (trained in {meta.get('train_cpu_seconds', float('nan')):.0f} s CPU, final loss "
                  f"{meta.get('final_loss', float('nan')):.4f})")
        return unet.eval(), ddpm_path()
    x, y = load_data()
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.inference_mode(False), torch.enable_grad():  # also when first used inside a no-grad solve
        losses = train(unet, x, y, **args)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    k = max(1, len(losses) // 20)
    if verbose:
        print(f"trained {args['steps']} steps in {secs:.1f} s wall, {cpu:.1f} s CPU: eps loss "
              f"{sum(losses[:k]) / k:.4f} (first {k}) -> {sum(losses[-k:]) / k:.4f} (last {k})")
    os.makedirs(os.path.dirname(file), exist_ok=True)
    io.save_tensors(file, {n: v.detach().contiguous() for n, v in unet.state_dict().items()},
                    {"config": config, "train": args, "train_seconds": secs, "train_cpu_seconds": cpu,
                     "final_loss": sum(losses[-k:]) / k})
    if verbose:
        print("saved", file)
    return unet.eval(), ddpm_path()


class DigitsField(Field):
    """The guided digits network on flattened ``(n, 64)`` states (reshaped to ``(n, 1, 8, 8)`` for the UNet and
    back), in float64. Labels: ``model_kwargs={"class_labels": labels}`` (one per sample; they follow their
    rows through chunks, shards and the per-sample steps of adaptive solvers), else ``i mod 10`` for row ``i``
    of each call (the bench's fixed-step solves and peers, which evaluate the whole batch). The network is
    loaded (or trained) on the first ``bind``, so registering a problem with it costs nothing."""

    kind = "noise"
    takes_model_kwargs = True

    def __init__(self, scale: float = GUIDANCE, *, config=CONFIG, cache=None, unet=None, **train_args):
        self.scale, self.config, self.cache, self.train_args = float(scale), config, cache, train_args
        self._unet = unet
        self._guided = None

    def network(self):
        """The UNet (float64, eval mode, no parameter gradients), loaded or trained on first use."""
        if self._unet is None:
            self._unet, _ = trained_model(self.cache, config=self.config, **self.train_args)
        if self._guided is None:
            self._unet = self._unet.double().eval()
            for p in self._unet.parameters():
                p.requires_grad_(False)
            self._guided = guided(self._unet, self.scale)
        return self._unet

    def bind(self, path, model_kwargs=None):
        self.network()
        if model_kwargs:
            net = self._guided.bind(path, model_kwargs)
            return lambda x, t: net(x.reshape(x.shape[0], 1, 8, 8), t).reshape(x.shape[0], 64)
        fns: dict = {}

        def fn(x, t):
            n = x.shape[0]
            if n not in fns:
                fns[n] = self._guided.bind(path, {"class_labels": torch.arange(n, device=x.device) % 10})
            return fns[n](x.reshape(n, 1, 8, 8), t).reshape(n, 64)

        return fn

    def predict(self, x, t, path):
        return self.bind(path)(x, batch_time(t, x))

    def validate_times(self, times):
        pass  # fractional timesteps: any time in [1/T, 1] is a noise level of the schedule


def problem(scale: float = GUIDANCE, *, name: str = "digits_unet", config=CONFIG, cache=None, unet=None,
            reference_steps: int = REFERENCE_STEPS, **train_args):
    """The :class:`~sdeflow.bench.Problem` (not registered; :func:`sdeflow.bench.register_problem` it). ``unet``:
    a network to use instead of the cached/trained one (e.g. the quick configuration in tests)."""
    from .problems import Problem

    path = ddpm_path()
    return Problem(name, path=path, exact_field=DigitsField(scale, config=config, cache=cache, unet=unet,
                                                             **train_args),
                   dim=64, t_max=1.0, t_min=1.0 / path.T, final_denoise=True,
                   reference_solver=("rk4", int(reference_steps), "log_snr"),
                   description=f"a class-conditional diffusers UNet trained on scikit-learn's 8x8 digits (trained on "
                               f"first use and cached), guided w={scale:g}, DDPM schedule with fractional timesteps; "
                               f"reference: float64 RK4 on {reference_steps} log-SNR steps")
