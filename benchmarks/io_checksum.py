"""Cost of sdeflow.io's checks: save/load of one float32 tensor against bare safetensors.

    python benchmarks/io_checksum.py               # 256 MiB
    python benchmarks/io_checksum.py --mib 1024

Prints the best of 3 wall times for: safetensors ``save_file``; ``io.save_tensors`` (validation, checksum,
atomic rename); safetensors ``load_file`` followed by one pass over the data (``x.sum()``: safetensors maps
the file lazily, so a bare load costs nothing until the data is touched); ``io.load_tensors`` followed by the
same pass (the checksum reads every byte during the load).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from sdeflow import io


def _best(fn, k: int = 3) -> float:
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(mib: int = 256) -> dict[str, float]:
    from safetensors.torch import load_file, save_file

    x = torch.randn(mib * 2 ** 18, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as d:
        f = os.path.join(d, "x.safetensors")
        out = {"safetensors save": _best(lambda: save_file({"x": x}, f)),
               "io.save_tensors": _best(lambda: io.save_tensors(f, {"x": x})),
               "safetensors load + pass": _best(lambda: load_file(f)["x"].sum()),
               "io.load_tensors + pass": _best(lambda: io.load_tensors(f)[0]["x"].sum())}
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256)
    args = ap.parse_args()
    for k, v in measure(args.mib).items():
        print(f"{k:26s} {v:7.3f} s   ({args.mib / 1024 / v:5.2f} GiB/s)")
