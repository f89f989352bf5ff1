"""The figures of docs/performance.md, "Gradients through the sampler": memory and time of
``sample(..., grad=None | "full" | "checkpoint")``, and the agreement of their gradients.

Run: OMP_NUM_THREADS=1 python benchmarks/gradients.py   (about a minute on one CPU thread; Linux, glibc;
prints markdown tables)

Network: an MLP (3 -> 256 -> 256 -> 2, tanh) taking (x, t), as a noise field on VP, float32, batch 1024, window
[0.01, 0.99]; the loss is sum(x^2) of the samples. Columns:

* saved bytes: distinct storages autograd saves for backward during the solve, counted through
  ``torch.autograd.graph.saved_tensors_hooks`` (deterministic). Under "checkpoint" these are the inputs of the
  checkpointed steps (the state and carried tensors); their activations are recomputed in backward.
* live after forward / peak: tensor bytes alive after the forward pass, and their maximum over the forward and
  backward passes, by live tensor bytes accounting (``sdeflow.bench.scaling.LiveBytes``: every storage an
  operation creates, until its last tensor is freed; exact and deterministic; tensors only).
* retained heap: in-use heap bytes (glibc ``mallinfo2``) after the forward pass minus before it: everything the
  graph keeps alive, including what LiveBytes does not see (autograd nodes, the checkpoint's bookkeeping, the
  generator and global RNG states recorded per step).
* time: forward + backward (forward only for None), the fastest of 3, one thread (indicative: other jobs share
  the machine).

Gradient agreement (float64, batch 64, 16 steps): the largest relative difference between "checkpoint" and
"full" over x_init and every parameter, and the relative error of "full" against a central difference
(h = 1e-5) along a random unit direction of the parameters.
"""

from __future__ import annotations

import ctypes
import gc
import math
import time

import torch

import sdeflow as sf
from sdeflow.bench.scaling import LiveBytes

torch.set_num_threads(1)
WINDOW = {"t_max": 0.99, "t_min": 0.01, "preflight": False}
SOLVERS = [("heun", {}, {}), ("dpmpp_2m", {}, {}),
           ("euler_maruyama", {"gamma": "reverse"}, {"generator": lambda: torch.Generator().manual_seed(3)})]


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _MallInfo2


def heap() -> int:
    """In-use heap bytes: small blocks plus mmapped ones."""
    m = _libc.mallinfo2()
    return m.uordblks + m.hblkhd


def network(dtype, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 256), torch.nn.Tanh(), torch.nn.Linear(256, 256), torch.nn.Tanh(),
                              torch.nn.Linear(256, 2)).to(dtype)
    return net, sf.NoiseField(lambda x, t: net(torch.cat([x, t[:, None].to(x.dtype)], -1)))


def _kw(opts, extra):
    return dict(opts, **{k: v() for k, v in extra.items()})


def memory(name, opts, extra, mode, steps, net, field, x0):
    """(saved bytes, live tensor bytes after forward, peak live tensor bytes, retained heap, seconds)."""
    seen, saved = set(), [0]

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in seen:
            seen.add(s.data_ptr())
            saved[0] += s.nbytes()
        return t

    gc.collect()
    base = heap()
    x = x0.clone().requires_grad_(mode is not None)
    with LiveBytes() as mem:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = sf.sample(sf.VP(), field, name, x_init=x, steps=steps, grad=mode, **WINDOW, **_kw(opts, extra)).x
        gc.collect()
        retained, live = heap() - base, mem.live
        if mode is not None:
            out.square().sum().backward()
    del out, x
    net.zero_grad(set_to_none=True)
    times = []
    for _ in range(3):
        x = x0.clone().requires_grad_(mode is not None)
        t0 = time.perf_counter()
        out = sf.sample(sf.VP(), field, name, x_init=x, steps=steps, grad=mode, **WINDOW, **_kw(opts, extra)).x
        if mode is not None:
            out.square().sum().backward()
        times.append(time.perf_counter() - t0)
        del out, x
        net.zero_grad(set_to_none=True)
    return saved[0], live, mem.peak, retained, min(times)


def memory_table(steps_list=(8, 16, 32, 64)):
    net, field = network(torch.float32)
    x0 = torch.randn(1024, 2, generator=torch.Generator().manual_seed(1))
    print("### Memory and time against the number of steps (float32, batch 1024, MLP 256x256)\n")
    print("| solver | grad | steps | saved bytes (MB) | live after forward (MB) | peak, forward + backward (MB) | "
          "retained heap (MB) | time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, opts, extra in SOLVERS:
        for mode in (None, "full", "checkpoint"):
            memory(name, opts, extra, mode, steps_list[0], net, field, x0)  # warm-up: caches, generated loops
            for steps in steps_list:
                s, lv, p, r, t = memory(name, opts, extra, mode, steps, net, field, x0)
                print(f"| {name} | {mode} | {steps} | {s / 1e6:.3f} | {lv / 1e6:.3f} | {p / 1e6:.2f} | {r / 1e6:.3f} | "
                      f"{t:.3f} |")


def agreement():
    print("\n### Gradient agreement (float64, batch 64, 16 steps)\n")
    print("| solver | checkpoint vs full (max relative difference) | full vs central difference (h = 1e-5, "
          "relative) |")
    print("|---|---|---|")
    net, field = network(torch.float64)
    params = list(net.parameters())
    x0 = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(11)
    v = [torch.randn(p.shape, dtype=torch.float64, generator=gen) for p in params]
    norm = math.sqrt(sum(float(t.square().sum()) for t in v))
    v = [t / norm for t in v]
    for name, opts, extra in SOLVERS:
        grads = {}
        for mode in ("full", "checkpoint"):
            x = x0.clone().requires_grad_(True)
            net.zero_grad(set_to_none=True)
            out = sf.sample(sf.VP(), field, name, x_init=x, steps=16, grad=mode, **WINDOW, **_kw(opts, extra)).x
            out.square().sum().backward()
            grads[mode] = [x.grad] + [p.grad.clone() for p in params]
        diff = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(grads["checkpoint"], grads["full"]))
        exact = sum(float((g * d).sum()) for g, d in zip(grads["full"][1:], v))

        def loss(eps):
            with torch.no_grad():
                for p, d in zip(params, v):
                    p.add_(d, alpha=eps)
                out = sf.sample(sf.VP(), field, name, x_init=x0, steps=16, **WINDOW, **_kw(opts, extra)).x
                for p, d in zip(params, v):
                    p.sub_(d, alpha=eps)
            return float(out.square().sum())

        h = 1e-5
        fd = (loss(h) - loss(-h)) / (2 * h)
        print(f"| {name} | {diff:.1e} | {abs(fd - exact) / abs(exact):.1e} |")


if __name__ == "__main__":
    memory_table()
    agreement()
