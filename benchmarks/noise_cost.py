"""Cost of reproducible per-sample noise: PerSampleNoise against the default GeneratorNoise (torch.randn).

    python benchmarks/noise_cost.py                # draws of 10^4..10^6 x 2 float32 normals, and a sampler
    python benchmarks/noise_cost.py --threads 1

Prints, per size, the median time of one draw for each source and the ratio, then the wall time of a
reverse-SDE sample (euler_maruyama, 50 steps) with a cheap exact field, where the noise is a large part
of the work; with a real network the ratio shrinks towards 1. ``measure`` is the function the bench can
call (``from benchmarks.noise_cost import measure`` or copy it): it returns a dict of seconds.
"""

from __future__ import annotations

import argparse
import statistics
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=7)
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


if __name__ == "__main__":
    main()
