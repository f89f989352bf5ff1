"""What every example shares: the 8-mode target, command line, seeds, the report (sliced-W2 to the target and
the weight of each mode) and plotting helpers (matplotlib imported lazily, only when a figure is saved)."""

from __future__ import annotations

import argparse
import os
import time

import torch

import sdeflow as sf
import sdeflow.metrics  # noqa: F401  (sf.metrics)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
TARGET = sf.eight_gaussians()  # centres (±2, 0), (0, ±2), (±2, ±2); std 0.25; equal weights
BOX = 3.5  # plotting window [-BOX, BOX]^2


def setup(description: str, argv=None) -> argparse.Namespace:
    """Parse ``--quick`` (tiny settings: seconds, for the smoke test), ``--seed``, ``--no-plot``; seed and
    limit threads (2 at most)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny training and sampling (a smoke run, not a result)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    torch.manual_seed(args.seed)  # network initialisation; data and sampling use explicit generators
    args.gen = torch.Generator().manual_seed(args.seed)
    args.t0, args.c0 = time.perf_counter(), time.process_time()
    return args


def data(gen: torch.Generator):
    """``data(n)``: n float32 samples of the target (the training stream for :func:`sdeflow.train.fit`)."""
    return lambda n: TARGET.sample(n, generator=gen, dtype=torch.float32)


def report(label: str, x: torch.Tensor, gen: torch.Generator | None = None, n_ref: int = 20000) -> dict:
    """Print and return sliced-W2 to fresh target samples and the weight of each mode (nearest centre), and
    whether every weight lies in 0.125 ± 0.04."""
    g = torch.Generator().manual_seed(12345) if gen is None else gen
    ref = TARGET.sample(n_ref, generator=g, dtype=torch.float64)
    x = x.detach().to(torch.float64)
    finite = torch.isfinite(x).all(dim=1)
    sw2 = sf.metrics.sliced_w2(x[finite], ref, generator=torch.Generator().manual_seed(1))
    w = sf.metrics.mode_weights(x[finite], TARGET.means)
    ok = bool(finite.all()) and bool(((w - 0.125).abs() <= 0.04).all())
    ws = " ".join(f"{v:.3f}" for v in w.tolist())
    print(f"{label:<28s} sliced-W2 {sw2:.4f}  mode weights [{ws}]  {'OK' if ok else 'OUT OF 0.125 +- 0.04'}")
    return {"label": label, "sliced_w2": sw2, "weights": w.tolist(), "ok": ok}


def reference_sw2(n: int, gen: torch.Generator | None = None) -> float:
    """Sliced-W2 between two independent target samples of size ``n``: the floor a perfect sampler reaches."""
    g = torch.Generator().manual_seed(777) if gen is None else gen
    a = TARGET.sample(n, generator=g, dtype=torch.float64)
    b = TARGET.sample(20000, generator=torch.Generator().manual_seed(12345), dtype=torch.float64)
    return sf.metrics.sliced_w2(a, b, generator=torch.Generator().manual_seed(1))


def figure(ncols: int, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(3.6 * ncols, 3.6), squeeze=False)
    fig.suptitle(title)
    return fig, list(axes[0])


def _frame(ax, label):
    ax.set_xlim(-BOX, BOX), ax.set_ylim(-BOX, BOX), ax.set_aspect("equal"), ax.set_title(label, fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])


def plot_samples(ax, x: torch.Tensor, label: str, n_max: int = 2000):
    """Samples (blue) over target samples (grey)."""
    ref = TARGET.sample(n_max, generator=torch.Generator().manual_seed(3))
    ax.scatter(ref[:, 0], ref[:, 1], s=2, c="0.7", lw=0)
    x = x.detach().float()[:n_max]
    ax.scatter(x[:, 0], x[:, 1], s=2, c="C0", lw=0)
    _frame(ax, label)


def plot_trajectories(ax, traj: torch.Tensor, label: str, n_paths: int = 60):
    """Trajectories ``(time, batch, 2)``: paths grey, start black, end blue."""
    tr = traj.detach().float()[:, :n_paths]
    ax.plot(tr[:, :, 0], tr[:, :, 1], c="0.5", lw=0.4, alpha=0.7)
    ax.scatter(tr[0, :, 0], tr[0, :, 1], s=4, c="k", lw=0)
    ax.scatter(tr[-1, :, 0], tr[-1, :, 1], s=4, c="C0", lw=0)
    _frame(ax, label)


def plot_energy(ax, energy, label: str):
    """The energy landscape E(x) on the window (lower is darker)."""
    g = torch.linspace(-BOX, BOX, 150)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    with torch.no_grad():
        e = energy(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)).reshape(xx.shape)
    ax.contourf(xx, yy, e, levels=30, cmap="viridis")
    c = TARGET.means
    ax.scatter(c[:, 0], c[:, 1], marker="x", c="w", s=20)
    _frame(ax, label)


def save(fig, name: str) -> str:
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    import matplotlib.pyplot as plt

    plt.close(fig)
    print("saved", path)
    return path


def done(args) -> None:
    print(f"total time {time.perf_counter() - args.t0:.1f} s wall, {time.process_time() - args.c0:.1f} s CPU")
