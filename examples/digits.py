"""Class-conditional diffusion on scikit-learn's 8x8 digits, a diffusers UNet2DModel sampled by sdeflow.

scikit-learn's bundled digits (1797 images, 8x8, 16 grey levels; no download) scaled to [-1, 1]; a small
class-conditional diffusers UNet2DModel (labels 0-9, and 10 the null label of classifier-free guidance,
dropped in for 10% of the training labels) trained with DDPM's noise loss (sdeflow.losses.eps_loss on the
DDPMScheduler's own schedule, sdeflow.train.fit); then sdeflow samples it through sdeflow.from_diffusers,
with classifier-free guidance, by several solvers from the same initial noise. A logistic-regression
classifier trained on the real digits reads the samples: the share it assigns to the class asked for is the
figure of merit (its accuracy on held-out real digits is printed beside it).

    python examples/digits.py [--quick] [--train-steps N] [--guidance W] [--cache DIR] [--out PNG]

The trained weights are cached (safetensors, sdeflow.io) under --cache (default $SDEFLOW_CACHE or
~/.cache/sdeflow); ``trained_model()`` returns the network and its path for reuse (e.g. a benchmark).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time

import torch

import sdeflow as sf
from sdeflow.integrations.diffusers import path_from_scheduler

NULL = 10  # the null label of classifier-free guidance
CONFIG = dict(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(32, 64),
              down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
              norm_num_groups=8, num_class_embeds=NULL + 1)
QUICK_CONFIG = dict(CONFIG, block_out_channels=(8, 16), norm_num_groups=4)
TRAIN = dict(steps=2000, batch=128, lr=2e-3, p_uncond=0.1, seed=0)
SOLVERS = [  # (name, solver, steps, sample() options): every one on the DDPM knots (integer timesteps)
    ("DDIM", "ddim", 20, {}),
    ("DPM-Solver++(2M)", "dpmpp_2m", 20, {}),
    ("UniPC", "unipc", 20, {}),
    ("Heun", "heun", 10, {}),
    ("Euler-Maruyama (SDE)", "euler_maruyama", 100, {"gamma": "reverse"}),
]


def load_data(dtype=torch.float32):
    """The digits as ``(1797, 1, 8, 8)`` images in [-1, 1] and their labels (scikit-learn's bundled copy)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=dtype).unsqueeze(1) / 8.0 - 1.0  # grey levels 0..16 -> [-1, 1]
    return x, torch.as_tensor(d.target, dtype=torch.long)


def build_unet(config=CONFIG):
    import diffusers

    return diffusers.UNet2DModel(**config)


def scheduler():
    """The training schedule: diffusers' DDPMScheduler defaults (beta linear 1e-4..0.02, T = 1000, epsilon)."""
    import diffusers

    return diffusers.DDPMScheduler(num_train_timesteps=1000)


def field(unet, *, clipping=None):
    """The noise field of ``unet`` (sdeflow.from_diffusers' field); the labels reach ``unet(..., class_labels=)``
    through ``sample(..., model_kwargs={"class_labels": labels})``."""
    return sf.from_diffusers(unet, scheduler(), clipping=clipping).field


def guided(unet, scale: float, clip: bool = False):
    """Classifier-free guidance ``(1 + w) eps(x | y) - w eps(x | null)`` (Ho & Salimans 2022) in one network call
    per evaluation (the batch [x; x] with labels [y; NULL]); with ``clip=True`` its data prediction clipped to
    [-1, 1] (diffusers' clip_sample: then no longer the guided network's own probability flow)."""
    f = sf.classifier_free_guidance(field(unet), scale, null={"class_labels": NULL})
    return sf.ClippedField(f, clip_data=(-1.0, 1.0)) if clip else f


def train(unet, x, y, *, steps, batch, lr, p_uncond, seed):
    """DDPM's noise loss on the scheduler's path, labels dropped to NULL with probability ``p_uncond``."""
    gen = torch.Generator().manual_seed(seed)
    path = path_from_scheduler(scheduler())

    def data(n):
        i = torch.randint(0, x.shape[0], (n,), generator=gen)
        drop = torch.rand(n, generator=gen) < p_uncond
        return x[i], torch.where(drop, torch.full_like(y[i], NULL), y[i])

    def loss(b):
        x0, labels = b
        return sf.losses.eps_loss(field(unet), path, x0, generator=gen, model_kwargs={"class_labels": labels})

    unet.train()
    losses = sf.train.fit(loss, unet, data, steps=steps, lr=lr, batch=batch)
    unet.eval()
    return losses


def _key(config, train_args) -> str:
    blob = json.dumps({"config": config, "train": train_args, "version": 1}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cache_dir(path=None) -> str:
    return path or os.environ.get("SDEFLOW_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sdeflow")


def trained_model(cache=None, *, config=CONFIG, retrain: bool = False, verbose: bool = True, **train_args):
    """The trained class-conditional UNet (eval mode, float32) and its path (sdeflow.DiscreteVP), from the cache
    ``<cache>/digits_unet_<hash>.safetensors`` if present, else trained (seeded, one thread: a few minutes on
    a CPU) and saved there. ``train_args`` override :data:`TRAIN`."""
    args = dict(TRAIN, **train_args)
    path = path_from_scheduler(scheduler())
    file = os.path.join(cache_dir(cache), f"digits_unet_{_key(config, args)}.safetensors")
    torch.manual_seed(args["seed"])  # the network's initialisation
    unet = build_unet(config)
    if os.path.exists(file) and not retrain:
        state, meta = sf.io.load_tensors(file)
        unet.load_state_dict(state)
        if verbose:
            cpu = meta.get("train_cpu_seconds", meta.get("train_seconds", float("nan")))
            print(f"loaded {file} (trained in {cpu:.0f} s CPU, final loss {meta['final_loss']:.4f})")
        return unet.eval(), path
    x, y = load_data()
    t0, c0 = time.perf_counter(), time.process_time()
    losses = train(unet, x, y, **args)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    k = max(1, len(losses) // 20)
    if verbose:
        print(f"trained {args['steps']} steps in {secs:.1f} s wall, {cpu:.1f} s CPU (one thread): eps loss "
              f"{sum(losses[:k]) / k:.4f} (first {k}) -> {sum(losses[-k:]) / k:.4f} (last {k})")
    os.makedirs(os.path.dirname(file), exist_ok=True)
    sf.io.save_tensors(file, {k_: v.detach().contiguous() for k_, v in unet.state_dict().items()},
                       {"config": config, "train": args, "train_seconds": secs, "train_cpu_seconds": cpu,
                        "final_loss": sum(losses[-k:]) / k})
    if verbose:
        print("saved", file)
    return unet.eval(), path


def classifier(seed: int = 0):
    """Logistic regression on the real digits (pixels 0..16); returns (model, its held-out accuracy)."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    d = load_digits()
    a, b, ya, yb = train_test_split(d.data, d.target, test_size=0.3, random_state=seed, stratify=d.target)
    held_out = LogisticRegression(max_iter=5000).fit(a, ya).score(b, yb)
    return LogisticRegression(max_iter=5000).fit(d.data, d.target), held_out


def read(clf, x: torch.Tensor):
    """The classifier's labels for images in [-1, 1] (mapped back to grey levels 0..16)."""
    pixels = ((x.detach().double().clamp(-1, 1) + 1.0) * 8.0).reshape(x.shape[0], -1).numpy()
    return torch.as_tensor(clf.predict(pixels))


def picture(rows, file: str) -> None:
    """A grid: one row per (label, images (10, 1, 8, 8)), digits 0-9 across."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 10, figsize=(10 * 0.75 + 2.6, len(rows) * 0.8 + 0.2), squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for c in range(10):
            ax = axes[r][c]
            ax.imshow(imgs[c, 0].detach().float().clamp(-1, 1).numpy(), cmap="gray_r", vmin=-1, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(left=0.26, right=0.99, top=0.99, bottom=0.01, wspace=0.08, hspace=0.12)
    os.makedirs(os.path.dirname(os.path.abspath(file)), exist_ok=True)
    fig.savefig(file, dpi=80)
    plt.close(fig)
    print("saved", file)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a tiny network and few steps (seconds: a smoke run)")
    p.add_argument("--train-steps", type=int, default=None, help=f"training steps (default {TRAIN['steps']})")
    p.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance weight w")
    p.add_argument("--clip", action="store_true", help="clip the guided data prediction to [-1, 1]")
    p.add_argument("--samples", type=int, default=200, help="samples per solver for the classifier's reading")
    p.add_argument("--cache", default=None, help="cache directory of the trained weights")
    p.add_argument("--retrain", action="store_true", help="train even if cached weights exist")
    p.add_argument("--out", default=None, help="write the picture grid here (PNG)")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if args.quick:
        import tempfile

        config, train_args = QUICK_CONFIG, dict(steps=args.train_steps or 10, batch=16)
        n, solvers = 10, [(name, s, max(2, k // 20), o) for name, s, k, o in SOLVERS]
        tmp = tempfile.TemporaryDirectory(prefix="sdeflow-digits-") if args.cache is None else None
        cache = args.cache if tmp is None else tmp.name
    else:
        config, train_args = CONFIG, ({} if args.train_steps is None else dict(steps=args.train_steps))
        n, solvers, cache, tmp = args.samples, SOLVERS, args.cache, None
    unet, path = trained_model(cache, config=config, retrain=args.retrain, **train_args)
    if tmp is not None:
        tmp.cleanup()
    labels = torch.arange(n) % 10
    x_T = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    f = guided(unet, args.guidance, clip=args.clip)
    clf, held_out = (None, None) if args.quick else classifier()
    rows, results = [], []
    real, real_labels = load_data()
    rows.append(("scikit-learn digits", torch.stack([real[real_labels == c][0] for c in range(10)])))
    if held_out is not None:
        print(f"classifier (logistic regression) accuracy on held-out real digits: {held_out:.3f}")
    with torch.no_grad():
        for name, solver, k, opts in solvers:
            t1 = time.perf_counter()
            # --quick runs a few steps per solver to exercise the plumbing: coarser than the preflight accepts
            sol = sf.sample(path, f, solver, grid="discrete", steps=k, x_init=x_T, final_denoise=True,
                            generator=torch.Generator().manual_seed(2), model_kwargs={"class_labels": labels},
                            preflight=not args.quick, **opts)
            secs = time.perf_counter() - t1
            acc = None if clf is None else float((read(clf, sol.x) == labels).double().mean())
            label = f"{name}, {k} steps" + (f" ({sol.nfe} NFE)" if sol.nfe != k + 1 else "")
            results.append({"label": label, "solver": solver, "nfe": sol.nfe, "seconds": secs, "class_accuracy": acc})
            print(f"{label:38s} NFE {sol.nfe:4d} (each: one network call on [cond; uncond])  {secs:5.1f} s"
                  + ("" if acc is None else f"  classified as the class asked for: {acc:.3f}"))
            rows.append((label, sol.x[:10]))
    if not args.no_plot:
        out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "digits.png")
        picture(rows, out)
    print(f"total time {time.perf_counter() - t0:.1f} s")
    return results


if __name__ == "__main__":
    main()
