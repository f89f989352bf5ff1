"""The ``sdeflow`` command (also ``python -m sdeflow``): ``sdeflow bench`` measures error against NFE and
wall time for every solver and the peers (torchdiffeq, torchsde, diffusers) on problems with exact answers;
``--out DIR`` writes the rows (JSON) and work-precision diagrams (PNG)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

__all__ = ["main"]

_DESCRIPTION = ("sdeflow: verified ODE/SDE solvers for diffusion, score-based, flow-matching and energy-based "
                "models. 'sdeflow bench' measures error against NFE and wall time for every solver and the peers "
                "(torchdiffeq, torchsde, diffusers) on problems with exact answers; --out DIR writes the rows "
                "(JSON) and work-precision diagrams (PNG).")

_LEGEND = ("pathwise_rms: RMS distance to the exact / float64 probability-flow reference from the same noise "
           "(pathwise_q99 / pathwise_max: the 99th percentile / largest per-sample distance; own_window_*: "
           "rows on diffusers' own timesteps against the exact flow over their own, shorter window; their "
           "pathwise_* figures, like every row's, are against the problem's window); 'default': sample(path, field, "
           "nfe=N) with every other argument at its default; strong_rms: to a fine reverse-SDE solve on the same "
           "Brownian path; weak_*: mean / covariance error, sliced W2 and MMD between the SDE samples and as many "
           "exact target samples, beside mc_floor (the same metric between two independent exact sets: below it "
           "a difference means nothing). Peers (torchdiffeq:*, diffusers:*, torchsde:*) run in this process on "
           "the same noise, field and Brownian path; 'optimized' rows use grids bought once by "
           "sdeflow.grid_opt.optimize_grid (pilot cost in the JSON). Wall times (wall_s): time.perf_counter "
           "around each call, median of --repeats runs after one untimed warm-up, on this machine under its "
           "current load; the total above is the whole command.")


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v]


def _strs(s: str) -> list[str]:
    return [v for v in s.split(",") if v]


def _write_json(rows, args, name):
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        p = os.path.join(args.out, name)
        with open(p, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"rows written to {p}")


def _overhead_and_scaling(args) -> int:
    """``--overhead`` / ``--scaling``: sdeflow.bench.overhead and sdeflow.bench.scaling, instead of the
    error bench."""
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype or "float32"]
    if args.overhead:
        from .bench.overhead import format_overhead, run_overhead

        notes: list[str] = []
        kw = {} if args.repeats is None else {"repeats": args.repeats}
        if args.n is not None:
            kw["batches"] = (args.n,)
        rows = run_overhead(solvers=args.solvers, notes=notes, dtype=dtype, seed=args.seed, peers=args.peers, **kw)
        print(format_overhead(rows))
        for line in dict.fromkeys(notes):
            print(line)
        _write_json(rows, args, "overhead.json")
    if args.scaling:
        from .bench import scaling

        batches = scaling.FULL_BATCHES if args.full else scaling.QUICK_BATCHES
        kw = {} if args.repeats is None else {"repeats": args.repeats}
        rows = scaling.run_scaling(batches=batches, **kw)
        print(scaling.format_scaling(rows))
        _write_json(rows, args, "scaling.json")
    return 0


def _bench(args) -> int:
    if args.threads is not None and args.threads < 1:
        from .errors import SdeflowValueError

        raise SdeflowValueError(f"--threads must be a positive integer, got {args.threads}")
    threads = args.threads
    if threads is None and not (args.overhead or args.scaling):
        threads = 1
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        if args.overhead or args.scaling:
            return _overhead_and_scaling(args)
        return _error_bench(args)
    finally:
        torch.set_num_threads(before)


def _error_bench(args) -> int:
    from . import solvers as _solvers
    from .bench import FULL, PROBLEMS, QUICK, format_table, run_bench

    if args.list:
        for name, p in PROBLEMS.items():
            print(f"{name:22} d={p.dim:<3} {p.description}")
        print("solvers:", ", ".join(_solvers.available()))
        return 0
    preset = FULL if args.full else QUICK
    pick = lambda v, k: preset[k] if v is None else v  # noqa: E731
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype or "float64"]
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    t0 = time.perf_counter()
    notes: list[str] = []
    rows = run_bench(problems=pick(args.problems, "problems"), solvers=args.solvers, nfes=pick(args.nfe, "nfes"),
                     sde_nfes=pick(args.sde_nfe, "sde_nfes"), grids=args.grids, n=pick(args.n, "n"),
                     seed=args.seed, dtype=dtype, device=args.device, repeats=pick(args.repeats, "repeats"),
                     sde=args.sde, peers=args.peers, optimized=args.optimized, notes=notes, progress=progress)
    wall = time.perf_counter() - t0
    for line in dict.fromkeys(notes):  # skipped peers first: they change what the tables compare
        print(line)
    if notes:
        print()
    print(format_table(rows))
    print(f"\n{len(rows)} rows in {wall:.1f} s ({torch.get_num_threads()} intra-op thread(s), "
          f"{os.cpu_count()} cores). {_LEGEND}")
    paths = []
    if args.json:
        paths.append(args.json)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        paths.append(os.path.join(args.out, "rows.json"))
    for p in paths:
        with open(p, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"rows written to {p}")
    if args.out:
        from .bench.plots import write_plots
        from .errors import SdeflowValueError

        try:
            for p in write_plots(rows, args.out):
                print(f"diagram written to {p}")
        except SdeflowValueError as e:
            print(f"no diagrams: {e}")
    return 0


def _version() -> str:
    from . import __version__

    return (f"sdeflow {__version__} (torch {torch.__version__}, Python {sys.version.split()[0]}, "
            f"{os.path.dirname(os.path.abspath(__file__))})")


class _Version(argparse.Action):
    """``--version``: one unwrapped line (argparse's own version action re-wraps it)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(_version())
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sdeflow", description=_DESCRIPTION)
    parser.add_argument("--version", action=_Version, help="show sdeflow's version, torch's and where it is "
                        "installed, and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    b = sub.add_parser("bench", help="error against NFE and wall time on exact problems (quick by default)",
                       description="Quick by default (eight_gaussians, 1000 samples: about 11 s on 2 idle "
                                   "cores); --full runs every built-in problem (the learned networks included) "
                                   "with more budgets, 4000 samples and 3 timed repeats. Explicit options "
                                   "override the preset. Progress (problem, solver, budget) goes to stderr when "
                                   "it is a terminal.")
    b.add_argument("--full", action="store_true", help="every built-in problem, more budgets, n=4000, 3 repeats")
    b.add_argument("--problems", type=_strs, default=None, help="comma-separated problem names (see --list)")
    b.add_argument("--solvers", type=_strs, default=None, help="comma-separated solver names (default: a "
                   "representative set, sdeflow.bench.run.DEFAULT_SOLVERS)")
    b.add_argument("--nfe", type=_ints, default=None, help="ODE NFE budgets (quick: 10,20,50,100)")
    b.add_argument("--sde-nfe", type=_ints, default=None, help="SDE NFE budgets (quick: 33,65,129: 2^k steps of a "
                   "one-evaluation solver plus the final denoising step)")
    b.add_argument("--grids", type=_strs, default=["karras", "log_snr"],
                   help="named ODE grids (log_snr only for the exponential integrators)")
    b.add_argument("--no-sde", dest="sde", action="store_false", help="skip the SDE solvers")
    b.add_argument("--no-peers", dest="peers", action="store_false",
                   help="skip torchdiffeq / torchsde / diffusers (run in the same process on the same inputs)")
    b.add_argument("--no-optimized", dest="optimized", action="store_false",
                   help="skip sdeflow's grid-optimised rows (cached grids, see benchmarks/best_sampler.py)")
    b.add_argument("--n", "--batch", dest="n", type=int, default=None,
                   help="samples per problem, integrated as one batch (quick: 1000)")
    b.add_argument("--seed", type=int, default=0, help="seed of the initial noise, Brownian path and exact samples")
    b.add_argument("--dtype", choices=["float32", "float64"], default=None,
                   help="float64 for the error bench, float32 for --overhead (defaults)")
    b.add_argument("--device", default="cpu")
    b.add_argument("--repeats", type=int, default=None,
                   help="timed repeats after a warm-up, median reported (quick: 1)")
    b.add_argument("--threads", type=int, default=None,
                   help="intra-op threads (torch.set_num_threads) while the command runs; default 1 for the "
                        "error bench (its 2-D batches gain little from threads and several threads slow it down "
                        "severalfold when the cores are shared, see docs/bench.md), torch's default for "
                        "--overhead and --scaling")
    b.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: only when stderr is a terminal)")
    b.add_argument("--out", default=None, help="directory for rows.json and the work-precision PNGs")
    b.add_argument("--json", default=None, help="also write the rows to this JSON file")
    b.add_argument("--list", action="store_true", help="list problems and solvers")
    b.add_argument("--overhead", action="store_true", help="instead: per-step overhead of the fixed-step solvers "
                   "and peers against a minimal hand-written loop (sdeflow.bench.overhead; --solvers, --dtype, "
                   "--seed, --repeats, --n (one batch size), --no-peers, --out apply)")
    b.add_argument("--scaling", action="store_true", help="instead: wall time and peak memory against batch, NFE "
                   "and dimension (sdeflow.bench.scaling; --full for the larger batches)")
    b.set_defaults(func=_bench)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
