"""Flow matching on the 8-mode mixture with DistributedDataParallel, then sharded sampling.

Run on 2 CPU processes (gloo) with torchrun::

    torchrun --standalone --nproc_per_node 2 examples/distributed_flow_matching.py

or on one process with plain ``python examples/distributed_flow_matching.py`` (same code path, world size 1;
on a busy machine prefix ``OMP_NUM_THREADS=1``: waiting intra-op threads spin).
On GPUs, ``--nproc_per_node <gpus>`` picks nccl and one device per process.

1. Training: every rank holds a replica of a small MLP velocity network wrapped in
   ``torch.nn.parallel.DistributedDataParallel``; each draws its own ``batch / world_size`` data points and
   noise (generator seeded by rank), ``sdeflow.losses.cfm_loss`` on the linear flow path (t = 0 data,
   t = 1 noise), and DDP averages the gradients, so W ranks take the steps of one process with the
   global batch. ``sdeflow.train.fit`` runs the loop (Adam, cosine schedule, gradient clipping).
2. Sampling: ``sdeflow.distributed.sample_sharded`` splits the ``--samples`` samples into contiguous blocks, one
   per rank, each integrating the probability-flow ODE with ``PerSampleNoise(--seed)``; rank 0 gathers
   them, every rank writes its shard next to a manifest (``--out``), and rank 0 reloads the shards,
   checks them against the gathered samples and prints the sliced W2 distance to fresh data, the
   weights of the 8 modes (each 1/8 for the target), and whether one process drawing all the samples in
   one batch gives the same bits (it does when the network's kernels do not depend on the batch size;
   see docs/scaling.md).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import sdeflow as sf
from sdeflow import distributed as sd
from sdeflow import metrics


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=1500, help="optimiser steps")
    p.add_argument("--batch", type=int, default=512, help="global batch (split across ranks)")
    p.add_argument("--samples", type=int, default=20000, help="samples to draw")
    p.add_argument("--sample-steps", type=int, default=40, help="Heun steps of the ODE sampler")
    p.add_argument("--seed", type=int, default=0, help="PerSampleNoise seed of the samples")
    p.add_argument("--out", default="distributed_flow_matching_samples", help="shard directory")
    args = p.parse_args()

    launched = "RANK" in os.environ  # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR, ...
    cuda = torch.cuda.is_available()
    if launched:
        dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = sd.rank_and_world()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
    if args.batch % world:
        raise SystemExit(f"--batch {args.batch} must be divisible by the number of processes ({world})")

    # ---- 1. data-parallel training ----------------------------------------------------------------
    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    net = sf.train.mlp(2, hidden=128).to(device)
    model = DistributedDataParallel(net) if launched else net
    path, target = sf.LinearFlow(), sf.eight_gaussians()
    field = sf.VelocityField(model)
    g = torch.Generator().manual_seed(1000 + rank)  # this rank's data and noise stream

    def data(b):
        return target.sample(b, generator=g).to(device)

    def loss(x0):
        return sf.losses.cfm_loss(field, path, x0, generator=g)

    t0 = time.perf_counter()
    losses = sf.train.fit(loss, model, data, steps=args.steps, lr=2e-3, batch=args.batch // world)
    train_s = time.perf_counter() - t0

    # ---- 2. sharded sampling ------------------------------------------------------------------------
    net.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        out = sd.sample_sharded(path, sf.VelocityField(net), "heun", steps=args.sample_steps, t_min=1e-3,
                                n=args.samples, shape=(2,), device=device, noise=args.seed, gather_to=0,
                                shard_dir=args.out)
    sample_s = time.perf_counter() - t0
    tail = losses[-100:]
    print(f"[rank {rank}/{world}] trained {args.steps} steps in {train_s:.1f} s (mean loss of the last "
          f"{len(tail)} steps {sum(tail) / len(tail):.3f}); sampled rows {out.start}:{out.stop} in {sample_s:.1f} s",
          flush=True)

    if rank == 0:
        x = out.x.cpu()
        assert torch.equal(sd.load_shards(args.out), x), "shards disagree with the gathered samples"
        ref = target.sample(args.samples, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
        w2 = metrics.sliced_w2(x, ref)
        w2_ref = metrics.sliced_w2(target.sample(args.samples, generator=torch.Generator().manual_seed(2)), ref)
        modes = metrics.mode_weights(x, target.means)
        with torch.no_grad():  # the same N samples on this one process, in one batch
            single = sf.sample(path, sf.VelocityField(net), "heun", steps=args.sample_steps, t_min=1e-3,
                               n=args.samples, shape=(2,), device=device, noise=sf.PerSampleNoise(args.seed)).x.cpu()
        same = "bitwise identical" if torch.equal(single, x) else \
            f"NOT bitwise identical (max |diff| {float((single - x).abs().max()):.1e}: batch-size dependent kernels)"
        print(f"{args.samples} samples from {world} process(es); shards + manifest in {out.manifest}")
        print(f"sliced W2 to fresh data {w2:.4f} (two data sets of this size: {w2_ref:.4f})")
        print("mode weights (target 0.125 each): " + " ".join(f"{w:.3f}" for w in modes.tolist()))
        print(f"single-process sample(..., noise=PerSampleNoise({args.seed})) of all {args.samples}: {same}")
    if launched:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
