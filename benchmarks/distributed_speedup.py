"""Speed-up of sharded sampling and DDP training on W processes over one process (CPU, gloo).

    python benchmarks/distributed_speedup.py              # 1 process vs 2 processes, 1 thread each
    python benchmarks/distributed_speedup.py --threads 2  # also 1 process with 2 intra-op threads
    python benchmarks/distributed_speedup.py --nproc 2 4  # also 4 processes (on a machine with the cores)

Each configuration is a ``torchrun --standalone`` launch of this file in worker mode; the worker times,
after a warm-up and a barrier (process start-up and imports are excluded):

* sampling: ``sdeflow.distributed.sample_sharded`` of ``--samples`` 2-D samples through a 3x128 MLP velocity
  field (``sdeflow.train.mlp``), Heun ``--steps`` steps on the linear flow, ``PerSampleNoise``, gathered
  to rank 0 (the gather is included);
* training: ``--train-steps`` steps of ``sdeflow.train.fit`` on ``cfm_loss`` with a global batch
  ``--batch`` split across the ranks, the MLP wrapped in ``DistributedDataParallel`` (gradient
  all-reduce included);

as the slowest rank's wall time, best of ``--repeats``. The 1-minute load average before each launch
is printed: the figures only mean something on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def worker(args) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    import sdeflow as sf
    from sdeflow import distributed as sd

    dist.init_process_group("gloo")
    rank, world = sd.rank_and_world()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.manual_seed(0)
    net = sf.train.mlp(2, hidden=128)
    path, target = sf.LinearFlow(), sf.eight_gaussians()

    def slowest(wall: float, cpu: float) -> tuple[float, float]:
        t = torch.tensor([wall, cpu], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t[0]), float(t[1])

    def timed(fn):
        best = (float("inf"), float("inf"))
        for _ in range(args.repeats):
            dist.barrier()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            best = min(best, slowest(time.perf_counter() - t0, time.process_time() - c0))
        return best

    def sample_once():
        with torch.no_grad():
            return sd.sample_sharded(path, sf.VelocityField(net), "heun", steps=args.steps, t_min=1e-3, n=args.samples,
                                     shape=(2,), noise=0, gather_to=0)

    sample_once()  # warm-up
    sample_s, sample_cpu = timed(sample_once)

    model = DistributedDataParallel(net)
    field = sf.VelocityField(model)
    g = torch.Generator().manual_seed(1000 + rank)

    def train(steps):
        return sf.train.fit(lambda x0: sf.losses.cfm_loss(field, path, x0, generator=g), model,
                            lambda b: target.sample(b, generator=g), steps=steps, lr=1e-3,
                            batch=args.batch // world)

    train(3)  # warm-up
    train_s, train_cpu = timed(lambda: train(args.train_steps))
    if rank == 0:
        print("RESULT " + json.dumps({"world": world, "threads": torch.get_num_threads(), "sample_s": sample_s,
                                      "sample_cpu": sample_cpu, "train_s": train_s, "train_cpu": train_cpu}),
              flush=True)
    dist.destroy_process_group()


def launch(args, nproc: int, threads: int) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           os.path.abspath(__file__), "--worker", "--samples", str(args.samples), "--steps", str(args.steps),
           "--train-steps", str(args.train_steps), "--batch", str(args.batch), "--repeats", str(args.repeats)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    out = json.loads(lines[-1][len("RESULT "):])
    out["load"] = load
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--samples", type=int, default=50000, help="samples")
    p.add_argument("--steps", type=int, default=20, help="Heun steps (2 field evaluations each)")
    p.add_argument("--train-steps", type=int, default=100, help="optimiser steps")
    p.add_argument("--batch", type=int, default=4096, help="global training batch")
    p.add_argument("--repeats", type=int, default=3, help="timings per configuration (best is kept)")
    p.add_argument("--nproc", type=int, nargs="*", default=[2], help="process counts to compare with 1")
    p.add_argument("--threads", type=int, default=0,
                   help="also time 1 process with this many intra-op threads (e.g. 2; slow on a loaded machine: "
                        "OpenMP threads spin while waiting for a core)")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    configs = [(1, 1)] + ([(1, args.threads)] if args.threads > 1 else []) + [(w, 1) for w in args.nproc if w > 1]
    print(f"n={args.samples} samples, heun {args.steps} steps; training {args.train_steps} steps, global batch "
          f"{args.batch}; MLP 3x128; {os.cpu_count()} logical CPUs")
    print("wall: slowest rank's wall time (best of repeats); cpu: slowest rank's process CPU time; x: speed-up "
          "over 1 x 1")
    print(f"{'processes x threads':>20} {'load':>5} | {'sample wall':>11} {'x':>5} {'cpu':>6} {'x':>5} | "
          f"{'train wall':>10} {'x':>5} {'cpu':>6} {'x':>5}")
    base = None
    for nproc, threads in configs:
        r = launch(args, nproc, threads)
        base = base or r
        cols = []
        for task in ("sample", "train"):
            w, c = r[f"{task}_s"], r[f"{task}_cpu"]
            cols.append(f"{w:{11 if task == 'sample' else 10}.2f} {base[f'{task}_s'] / w:5.2f} {c:6.2f} "
                        f"{base[f'{task}_cpu'] / c:5.2f}")
        print(f"{f'{nproc} x {threads}':>20} {r['load']:5.2f} | {cols[0]} | {cols[1]}", flush=True)


if __name__ == "__main__":
    main()
