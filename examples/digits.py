"""Class-conditional diffusion on scikit-learn's 8x8 digits, a diffusers UNet2DModel sampled by sdeflow.

scikit-learn's bundled digits (1797 images, 8x8, 16 grey levels; no download) scaled to [-1, 1]; a small
class-conditional diffusers UNet2DModel (labels 0-9, and 10 the null label of classifier-free guidance,
dropped in for 10% of the training labels) trained with DDPM's noise loss (sdeflow.losses.eps_loss on the
DDPMScheduler's own schedule, sdeflow.train.fit); then sdeflow samples it through sdeflow.from_diffusers,
with classifier-free guidance, by several solvers from the same initial noise. A logistic-regression
classifier trained on the real digits reads the samples: the share it assigns to the class asked for is the
figure of merit (its accuracy on held-out real digits is printed beside it).

    python examples/digits.py [--quick] [--train-steps N] [--guidance W] [--cache DIR] [--out PNG]

The network, its training and its cache live in sdeflow.bench.digits (the ``digits_unet`` problem of ``sdeflow
bench`` samples the same network): the trained weights are cached (safetensors) under --cache (default
sdeflow.bench.learned.cache_dir()).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import sdeflow as sf
from sdeflow.bench.digits import (CONFIG, NULL, QUICK_CONFIG, TRAIN, field, guided, load_data,  # noqa: F401
                                  scheduler, trained_model)

SOLVERS = [  # (name, solver, steps, sample() options): every one on the DDPM knots (integer timesteps)
    ("DDIM", "ddim", 20, {}),
    ("DPM-Solver++(2M)", "dpmpp_2m", 20, {}),
    ("UniPC", "unipc", 20, {}),
    ("Heun", "heun", 10, {}),
    ("Euler-Maruyama (SDE)", "euler_maruyama", 100, {"gamma": "reverse"}),
]


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
