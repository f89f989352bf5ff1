"""Retrain the networks of the learned bench problems (sdeflow/bench/networks/) from their specs
(``sdeflow.bench.learned.SPECS``): deterministic, one intra-op thread, about 30 s each on one idle core.

    python benchmarks/train_bench_networks.py --write    # rewrite the weights and networks/manifest.json
    python benchmarks/train_bench_networks.py --check    # retrain and compare with the shipped weights
    python benchmarks/train_bench_networks.py --check --only learned_pinwheel

On the machine and PyTorch version that wrote them, ``--check`` reproduces the shipped weights bit for bit
(same SHA-256); elsewhere float32 rounding differs and the retrained network is a close sibling (compare the
validation losses). After ``--write`` the cached references (``sdeflow.bench.learned.cache_dir()``) of the old
weights are simply never used again (their keys hold the weights' checksum).
"""

import argparse

from sdeflow.bench.learned import regenerate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="save the weights and the manifest")
    ap.add_argument("--check", action="store_true", help="compare the retrained weights with the shipped ones")
    ap.add_argument("--only", default=None, help="comma-separated network names (default: all)")
    a = ap.parse_args(argv)
    if not (a.write or a.check):
        ap.error("give --write or --check")
    regenerate(None if a.only is None else a.only.split(","), write=a.write, check=a.check)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
