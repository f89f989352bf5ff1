"""Cost of reproducible per-sample noise: PerSampleNoise against the default GeneratorNoise (torch.randn).

    python benchmarks/noise_cost.py                # draws of 10^4..10^6 x 2 float32 normals, and a sampler
    python benchmarks/noise_cost.py --threads 1
    python benchmarks/noise_cost.py --memory       # also: peak memory of 10^6 samples, chunked or not

Prints, per size, the median time of one draw for each source and the ratio, then the wall time of a
reverse-SDE sample (euler_maruyama, 50 steps) with a cheap exact field, where the noise is a large part
of the work; with a real network the ratio shrinks towards 1. ``measure`` is the function the bench can
call (``from benchmarks.noise_cost import measure`` or copy it): it returns a dict of seconds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch

import sdeflow as sf


def _median_time(fn, repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(n: int, event=(2,), dtype=torch.float32, repeats: int = 7, count: int = 1) -> dict:
    """Median seconds of one ``draw`` of ``n`` samples of ``event`` normals: ``{"generator": s, "per_sample": s,
    "ratio": per_sample / generator}``."""
    like = torch.empty((n,) + tuple(event), dtype=dtype)
    gen = sf.GeneratorNoise(torch.Generator().manual_seed(0))
    per = sf.PerSampleNoise(0)
    k = iter(range(10 ** 9))
    tg = _median_time(lambda: gen.draw(next(k), 1.0, 0.9, like, count), repeats)
    tp = _median_time(lambda: per.draw(next(k), 1.0, 0.9, like, count), repeats)
    return {"generator": tg, "per_sample": tp, "ratio": tp / tg}


def measure_sampler(n: int = 100_000, steps: int = 50, repeats: int = 3) -> dict:
    """Median seconds of a 2-D reverse-SDE sample (euler_maruyama, exact Gaussian noise field) with each
    noise source."""
    target = sf.Gaussian([1.0, -0.5], [0.5, 2.0])
    field = target.field("noise")
    kw = dict(steps=steps, n=n, shape=(2,), gamma="reverse")
    tg = _median_time(lambda: sf.sample(sf.VP(), field, "euler_maruyama", generator=torch.Generator().manual_seed(0),
                                        **kw), repeats)
    tp = _median_time(lambda: sf.sample(sf.VP(), field, "euler_maruyama", noise=sf.PerSampleNoise(0), **kw), repeats)
    return {"generator": tg, "per_sample": tp, "ratio": tp / tg}


_MEMORY = """
import resource, sys, torch, sdeflow as sf
chunk = None if sys.argv[1] == "None" else int(sys.argv[1])
field = sf.NoiseField(lambda x, t: 0.5 * x)
kw = dict(steps=2, n=10**6, shape=(2,), noise=sf.PerSampleNoise(0), gamma="reverse")
sf.sample(sf.VP(), field, "euler_maruyama", **{**kw, "n": 1000})
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sf.sample(sf.VP(), field, "euler_maruyama", chunk_size=chunk, **kw)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
"""


def measure_chunk_memory(chunk: int | None) -> float:
    """Peak RSS growth (MB, Linux ru_maxrss) of 10^6 2-D float32 reverse-SDE samples (2 steps, near-free
    field, PerSampleNoise) with ``chunk_size=chunk``, in a fresh process. The output itself is 7.6 MB."""
    out = subprocess.run([sys.executable, "-c", _MEMORY, str(chunk)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--memory", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'draw of n x 2 float32':>24} {'randn (ms)':>11} {'per-sample (ms)':>16} {'ratio':>6}")
    for n in (10_000, 100_000, 1_000_000):
        r = measure(n, repeats=args.repeats)
        print(f"{n:>24,} {1e3 * r['generator']:>11.2f} {1e3 * r['per_sample']:>16.2f} {r['ratio']:>6.1f}")
    r = measure_sampler()
    print(f"sample(n=100000, euler_maruyama, 50 steps, exact field): randn {r['generator']:.2f} s, "
          f"per-sample {r['per_sample']:.2f} s, ratio {r['ratio']:.2f}")
    if args.memory:
        for chunk in (None, 2 ** 16, 2 ** 14):
            print(f"10^6 samples, chunk_size={chunk}: peak memory +{measure_chunk_memory(chunk):.0f} MB")


if __name__ == "__main__":
    main()
