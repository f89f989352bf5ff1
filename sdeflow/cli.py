"""The ``sdeflow`` command. ``sdeflow bench`` prints error against NFE for every solver on exact problems."""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

__all__ = ["main"]


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v]


def _strs(s: str) -> list[str]:
    return [v for v in s.split(",") if v]


def _bench(args) -> int:
    from . import solvers as _solvers
    from .bench import PROBLEMS, format_table, run_bench

    if args.list:
        for name, p in PROBLEMS.items():
            print(f"{name:18} {p.description}")
        print("solvers:", ", ".join(_solvers.available()))
        return 0
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    t0 = time.perf_counter()
    notes: list[str] = []
    rows = run_bench(problems=args.problems, solvers=args.solvers, nfes=args.nfe, sde_nfes=args.sde_nfe,
                     grids=args.grids, n=args.n, seed=args.seed, dtype=dtype, device=args.device,
                     repeats=args.repeats, peers=args.peers, optimized=args.optimized, notes=notes)
    print(format_table(rows))
    for line in dict.fromkeys(notes):
        print(line)
    print(f"\n{len(rows)} rows in {time.perf_counter() - t0:.1f} s; pathwise_rms: RMS distance to the float64 "
          f"probability-flow reference from the same noise; strong_rms: to a fine reverse-SDE solve on the same "
          f"Brownian path. Peers (torchdiffeq:*, diffusers:*) integrate the same problem from the same noise; "
          f"'optimized' rows use grids bought once by sdeflow.grid_opt.optimize_grid (pilot cost in --json).")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"rows written to {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sdeflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="error against NFE on exact problems (quick by default)")
    b.add_argument("--problems", type=_strs, default=["eight_gaussians"], help="comma-separated problem names")
    b.add_argument("--solvers", type=_strs, default=None, help="comma-separated solver names (default: all)")
    b.add_argument("--nfe", type=_ints, default=[10, 20, 50, 100], help="ODE NFE budgets")
    b.add_argument("--sde-nfe", type=_ints, default=[16, 32, 64, 128], help="SDE NFE budgets")
    b.add_argument("--grids", type=_strs, default=["karras", "log_snr"],
                   help="named grids (log_snr only for the exponential integrators)")
    b.add_argument("--no-peers", dest="peers", action="store_false",
                   help="skip torchdiffeq / diffusers peers (run in the same process on the same noise)")
    b.add_argument("--no-optimized", dest="optimized", action="store_false",
                   help="skip sdeflow's grid-optimised rows (cached grids, see benchmarks/best_sampler.py)")
    b.add_argument("--n", type=int, default=1000, help="samples per problem")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    b.add_argument("--device", default="cpu")
    b.add_argument("--repeats", type=int, default=1, help="timed repeats after a warm-up (median reported)")
    b.add_argument("--json", default=None, help="write the rows to this JSON file")
    b.add_argument("--list", action="store_true", help="list problems and solvers")
    b.set_defaults(func=_bench)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
