"""Accuracy that generalises (issue 14): on every problem of the suite, at each budget, the best peer, sdeflow's
best named configuration, and the default ``sample(path, field, nfe=N, x_init=x)``.

For each problem it runs :func:`sdeflow.bench.run_bench` (ODE only: every fixed-step, deterministic ODE solver
of the registry on the named grids, each on the problem's window and, ``+end``, on the window the budget
chooses; the default; every installed peer) and stores the rows (``--out DIR/rows_<problem>.json``, one file
per problem, so runs resume and can be split over processes). Then it prints, per budget, a Markdown table:

* best peer: the smallest RMS over the peer rows and the smallest worst-sample error (each with its peer;
  diffusers' DDIM / UniPC on their own timesteps by their errors against the problem's window);
* best named: the best sdeflow row on a named grid (``grid`` in the named grids, with or without ``+end``);
  rows on diffusers' own timesteps are not named grids and are left out;
* default: the ``solver="default"`` row;

with the ratios best named / best peer, default / best peer and default / best named (RMS; and the worst
sample). ``--candidates``
lists, per budget, each (solver, grid) on the budget's window (the configurations a budget default can be)
by its worst ratio to the best named configuration over the problems: how ``sdeflow.window.default_solver``
was chosen. ``--json FILE`` writes the summary rows.

    python benchmarks/generalisation.py --out results/gen --n 500            # run (resumes), then the tables
    python benchmarks/generalisation.py --out results/gen --table-only --candidates
    python benchmarks/generalisation.py --out results/gen --rerun-default      # after changing the default
    python benchmarks/generalisation.py --out results/gen --add-optimized      # + cached optimize_grid rows
    python benchmarks/generalisation.py --peer-pairs results/gen,results/heldout,results/heldout_seed1

``--peer-pairs`` (the issue on learned networks: the default within 1.5x of the best peer, RMS and worst
sample): over the trained networks of several stored runs, the cases and pairs of cases no named configuration
serves within 1.5x of the best peer (:func:`peer_pairs`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402

from sdeflow import solvers as _solvers  # noqa: E402

SUITE = ("eight_gaussians", "two_blobs", "ring20_wide", "ring64", "eight_gaussians_small", "narrow_unequal",
         "gaussian16", "gaussian64", "aniso16", "aniso64", "image64", "eight_gaussians_ddpm", "learned_pinwheel",
         "learned_mix16", "learned_spiral_ddpm")
GRIDS = ("log_snr", "karras", "uniform", "quadratic")
NFES = (10, 20, 50)


def ode_solvers() -> tuple:
    """Every registered fixed-step deterministic ODE solver (``ancestral`` is stochastic, ``dopri5``
    adaptive: neither takes a budget of fixed steps; ``consistency`` samples only a consistency function, not
    a denoiser's field)."""
    out = []
    for name in _solvers.available():
        s = _solvers.get(name)
        if s.sde or s.adaptive or s.requires_consistency or name == "ancestral":
            continue
        out.append(name)
    return tuple(out) + ("unipc(order=3)",)  # UniPC-3, the authors' third-order predictor (a peer's setting)


def run(problems, out, n, seed, nfes, solvers, grids, peers=True):
    from sdeflow.bench import run_bench

    os.makedirs(out, exist_ok=True)
    for p in problems:
        f = os.path.join(out, f"rows_{p}.json")
        if os.path.exists(f):
            print(f"{p}: {f} exists, kept", file=sys.stderr)
            continue
        notes = []
        rows = run_bench(problems=[p], solvers=solvers, nfes=nfes, grids=grids, n=n, seed=seed, sde=False,
                         peers=peers, optimized=False, notes=notes, repeats=1)
        with open(f + ".tmp", "w") as fh:
            json.dump(dict(problem=p, n=n, seed=seed, nfes=list(nfes), solvers=list(solvers), grids=list(grids),
                           notes=notes, rows=rows), fh)
        os.replace(f + ".tmp", f)
        print(f"{p}: {len(rows)} rows -> {f}", file=sys.stderr)


def _replace_rows(problems, out, nfes, make_rows, drop, what):
    """In each stored run ``rows_<problem>.json`` under ``out``, replace the rows ``drop(row)`` selects by
    ``make_rows(problem, nfes, x, repeats, progress)`` on the run's own initial noise."""
    from sdeflow.bench.problems import get_problem
    from sdeflow.bench.run import _Progress

    for p in problems:
        f = os.path.join(out, f"rows_{p}.json")
        with open(f) as fh:
            data = json.load(fh)
        prob = get_problem(p)
        x = prob.initial(data["n"], data["seed"], dtype=torch.float64)
        new = make_rows(prob, list(nfes), x, 1, _Progress(False, 0))
        data["rows"] = [r for r in data["rows"] if not drop(r)] + new
        with open(f + ".tmp", "w") as fh:
            json.dump(data, fh)
        os.replace(f + ".tmp", f)
        print(f"{p}: {len(new)} {what} rows", file=sys.stderr)


def rerun_default(problems, out, n, seed, nfes):
    """Replace the ``default`` rows of stored runs by a fresh run of today's default (after changing it)."""
    from sdeflow.bench.run import _default_rows

    _replace_rows(problems, out, nfes, _default_rows, lambda r: r["solver"] == "default", "default")


def add_optimized(problems, out, nfes):
    """Add the rows of the cached ``optimize_grid`` grids (``sdeflow/bench/optimized_grids.json``: ``exp_pc`` on a
    grid bought with 256 pilot samples of another seed) to stored runs, on the same noise."""
    from sdeflow.bench.run import _optimized_rows

    _replace_rows(problems, out, nfes, _optimized_rows, lambda r: r["grid"] == "optimized", "optimised-grid")


def _errs(r):
    """(rms, worst) of a row against the problem's window (``error``; runs stored before the own-timestep rows
    measured ``error`` over their own window keep the problem's in ``problem_window``)."""
    if r.get("problem_window"):
        return r["problem_window"]["rms"], r["problem_window"]["max"]
    return r["error"], r["error_max"]


def _ok(v):
    return v is not None and math.isfinite(v)


def summarise(out, problems, nfes, grids):
    named = set(grids) | {g + "+end" for g in grids}
    summary = []
    for p in problems:
        f = os.path.join(out, f"rows_{p}.json")
        if not os.path.exists(f):
            continue
        rows = json.load(open(f))["rows"]
        for nfe in nfes:
            rs = [r for r in rows if r["nfe_budget"] == nfe and r["metric"] == "pathwise_rms"]
            peers = [r for r in rs if r.get("peer") and _ok(_errs(r)[0])]
            ours = [r for r in rs if not r.get("peer") and r["grid"] in named and r["solver"] != "default"
                    and _ok(r["error"]) and not r.get("preflight")]  # refused configurations are not offered
            dflt = [r for r in rs if r["solver"] == "default" and _ok(r["error"])]
            opt = [r for r in rs if r["grid"] == "optimized" and _ok(r["error"])]
            s = dict(problem=p, nfe=nfe)
            if opt:
                bo = min(opt, key=lambda r: r["error"])
                s.update(optimized_rms=bo["error"], optimized_max=bo["error_max"],
                         pilot_network_calls=bo.get("pilot_network_calls"))
            if peers:
                bp = min(peers, key=lambda r: _errs(r)[0])
                bw = min(peers, key=lambda r: _errs(r)[1])
                s.update(peer_rms=_errs(bp)[0], peer_rms_by=bp["solver"], peer_max=_errs(bw)[1],
                         peer_max_by=bw["solver"])
            if ours:
                bn = min(ours, key=lambda r: r["error"])
                bnw = min(ours, key=lambda r: r["error_max"])
                s.update(named_rms=bn["error"], named_rms_by=f"{bn['solver']}/{bn['grid']}",
                         named_max=bnw["error_max"], named_max_by=f"{bnw['solver']}/{bnw['grid']}")
            if dflt:
                d = dflt[0]
                s.update(default_rms=d["error"], default_max=d["error_max"], default_sigma_end=d.get("sigma_end"))
            summary.append(s)
    return summary


def _f(v, digits=3):
    return "-" if v is None else f"{v:.{digits}g}"


def _ratio(a, b):
    return None if a is None or b is None or not b else a / b


def table(summary, nfes):
    lines = []
    for nfe in nfes:
        lines.append(f"\n**NFE {nfe}**\n")
        lines.append("| problem | best peer: RMS, worst | best named: RMS, worst | named / peer: RMS, worst "
                     "| default / peer: RMS, worst | default / named: RMS, worst | optimised grid / peer: RMS, worst |")
        lines.append("|---|---|---|---|---|---|---|")
        for s in summary:
            if s["nfe"] != nfe:
                continue
            peer = (f"{_f(s.get('peer_rms'))} ({s.get('peer_rms_by')}), {_f(s.get('peer_max'))} "
                    f"({s.get('peer_max_by')})") if "peer_rms" in s else "- (no peer)"
            named = (f"{_f(s.get('named_rms'))} ({s.get('named_rms_by')}), {_f(s.get('named_max'))} "
                     f"({s.get('named_max_by')})")
            np_ = (f"{_f(_ratio(s.get('named_rms'), s.get('peer_rms')), 2)}, "
                   f"{_f(_ratio(s.get('named_max'), s.get('peer_max')), 2)}")
            dn = (f"{_f(_ratio(s.get('default_rms'), s.get('named_rms')), 3)}, "
                  f"{_f(_ratio(s.get('default_max'), s.get('named_max')), 3)}")
            dp = (f"{_f(_ratio(s.get('default_rms'), s.get('peer_rms')), 2)}, "
                  f"{_f(_ratio(s.get('default_max'), s.get('peer_max')), 2)}")
            op = (f"{_f(_ratio(s.get('optimized_rms'), s.get('peer_rms')), 2)}, "
                  f"{_f(_ratio(s.get('optimized_max'), s.get('peer_max')), 2)}") if "optimized_rms" in s else "-"
            lines.append(f"| `{s['problem']}` | {peer} | {named} | {np_} | {dp} | {dn} | {op} |")
    return "\n".join(lines)


def _family(problem) -> str:
    """The path family a default may depend on: the linear-beta VP schedules (DDPM's discrete one and ``VP``),
    or the others (log-SNR grids): ``sdeflow.window.default_configuration``'s split."""
    from sdeflow.bench.problems import get_problem
    from sdeflow.paths import VP, DiscreteVP

    return "VP schedules" if type(get_problem(problem).path) in (DiscreteVP, VP) else "other paths"


def candidates(out, problems, nfes, grids, top=8, target=1.5):
    """Per budget and path family: each named configuration (solver, grid, window: the path's, or the budget's
    ``+end``) by its worst and geometric-mean RMS ratio to the best named configuration over the problems (a
    refused configuration counts as infinite); then the pairs of problems of the family with the same dimension
    that no configuration serves within ``target`` of the best named on both. Such a pair shows that no default
    choosing among the named configurations from what a sampler is given (path, field kind, budget, shape) can
    be within ``target`` on every problem."""
    fams = {}
    for p in problems:
        fams.setdefault(_family(p), []).append(p)
    return "\n".join(_candidates(out, fam, ps, nfes, grids, top, target) for fam, ps in fams.items())


def _config_ratios(out, problems, nfe, grids, summ):
    """``{(solver, grid label): {problem: RMS / best named RMS}}`` over the named configurations."""
    named = set(grids) | {g + "+end" for g in grids}
    ratios = {}
    for p in problems:
        f = os.path.join(out, f"rows_{p}.json")
        if not os.path.exists(f) or "named_rms" not in summ.get((p, nfe), {}):
            continue
        best = summ[(p, nfe)]["named_rms"]
        for r in json.load(open(f))["rows"]:
            if (r["nfe_budget"] == nfe and r["metric"] == "pathwise_rms" and not r.get("peer")
                    and r["grid"] in named and r["solver"] != "default"):
                e = r["error"] if _ok(r["error"]) and not r.get("preflight") else math.inf
                ratios.setdefault((r["solver"], r["grid"]), {})[p] = e / best
    return ratios


def _candidates(out, family, problems, nfes, grids, top, target):
    from sdeflow.bench.problems import get_problem

    summ = {(s["problem"], s["nfe"]): s for s in summarise(out, problems, nfes, grids)}
    lines = []
    for nfe in nfes:
        ratios = _config_ratios(out, problems, nfe, grids, summ)
        n_prob = max((len(v) for v in ratios.values()), default=0)
        ranked = sorted(((max(v.values()), math.exp(sum(math.log(x) for x in v.values()) / len(v))
                          if all(math.isfinite(x) for x in v.values()) else math.inf, k, max(v, key=v.get))
                         for k, v in ratios.items() if len(v) == n_prob), key=lambda t: t[0])
        lines.append(f"\n{family}, NFE {nfe}: (solver, grid[+end]), worst / geometric-mean RMS ratio to the best "
                     f"named over {n_prob} problems")
        for worst, gm, (solver, grid), where in ranked[:top]:
            lines.append(f"  {solver:14s} {grid:14s} worst {worst:6.3f} ({where})  geo-mean {gm:6.3f}")
        probs = sorted({p for v in ratios.values() for p in v})
        for dim in sorted({get_problem(p).dim for p in probs}):
            group = [p for p in probs if get_problem(p).dim == dim]
            worst, (solver, grid) = min((max(v.get(p, math.inf) for p in group), k) for k, v in ratios.items())
            lines.append(f"  dim {dim} ({len(group)} problems): the best single configuration, {solver}/{grid}, "
                         f"is within {worst:.2f}x of the best named on each")
        for i, a in enumerate(probs):
            for b in probs[i + 1:]:
                if get_problem(a).dim != get_problem(b).dim:
                    continue
                both = min((max(v[a], v[b]), k) for k, v in ratios.items() if a in v and b in v)
                if both[0] > target:
                    lines.append(f"  no configuration within {target}x on both {a} and {b} (dim "
                                 f"{get_problem(a).dim}): the best serves them at {both[0]:.2f}x "
                                 f"({both[1][0]}/{both[1][1]})")
    return "\n".join(lines)


def peer_pairs(dirs, nfes, grids=GRIDS, target=1.5) -> str:
    """On the trained networks (problems named ``learned_*``, ``heldout_*``, ``digits_*``) of the stored runs in
    ``dirs`` (several seeds, several networks; each run is one (network, noise) case), per budget and path family
    (DDPM-schedule networks, the others): for every named configuration (every solver on a named grid, with or
    without ``+end``) its ratio to the best peer, the larger of RMS and worst sample; the cases no configuration
    serves within ``target`` alone, and the pairs of cases no configuration serves within ``target`` on both.
    Such a pair shows that no default choosing among the named configurations is within ``target`` of the best
    peer, in RMS and worst sample, on every network (two seeds of one network: on every noise draw)."""
    import itertools

    named = set(grids) | {g + "+end" for g in grids}
    lines = []
    for nfe in nfes:
        fams = {}
        for d in dirs:
            for f in sorted(os.listdir(d)):
                if not (f.startswith("rows_") and f.endswith(".json")):
                    continue
                data = json.load(open(os.path.join(d, f)))
                p = data["problem"]
                if not p.startswith(("learned_", "heldout_", "digits_")):
                    continue
                rs = [r for r in data["rows"] if r["nfe_budget"] == nfe and r["metric"] == "pathwise_rms"]
                peers = [r for r in rs if r.get("peer") and _ok(_errs(r)[0]) and _ok(_errs(r)[1])]
                if not peers:
                    continue
                pr, pw = min(_errs(r)[0] for r in peers), min(_errs(r)[1] for r in peers)
                if not (pr > 0 and pw > 0):
                    continue  # a peer exact to rounding: no ratio
                case = f"{p} (seed {data['seed']})"
                fam = "DDPM's schedule" if "_ddpm" in p or p.startswith("digits_") else "VE/EDM"
                for r in rs:
                    if r.get("peer") or r["solver"] == "default" or r["grid"] not in named:
                        continue
                    ok = _ok(r["error"]) and not r.get("preflight")
                    ratio = max(r["error"] / pr, r["error_max"] / pw) if ok else math.inf
                    fams.setdefault(fam, {}).setdefault((r["solver"], r["grid"]), {})[case] = ratio
        for fam, ratios in fams.items():
            cases = sorted({c for v in ratios.values() for c in v})
            cfgs = [k for k, v in ratios.items() if len(v) == len(cases)]
            if not cfgs:
                continue
            worst, best = min((max(ratios[k].values()), k) for k in cfgs)
            lines.append(f"\n{fam}, NFE {nfe}: {len(cases)} network cases, {len(cfgs)} named configurations; the best "
                         f"single one over all, {best[0]}/{best[1]}, is within {worst:.2f}x of the best peer "
                         f"(max of RMS and worst-sample ratios)")
            for c in cases:
                v, k = min((ratios[k][c], k) for k in cfgs)
                if v > target:
                    lines.append(f"  alone: {c}: the best configuration is {v:.2f}x ({k[0]}/{k[1]})")
            pairs = []
            for a, b in itertools.combinations(cases, 2):
                v, k = min((max(ratios[k][a], ratios[k][b]), k) for k in cfgs)
                if v > target:
                    pairs.append(f"  no configuration within {target}x on both {a} and {b}: the best serves them at "
                                 f"{v:.2f}x ({k[0]}/{k[1]})")
            lines += pairs or [f"  every pair of cases has a configuration within {target}x on both"]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/generalisation")
    ap.add_argument("--problems", default=",".join(SUITE))
    ap.add_argument("--nfe", default=",".join(map(str, NFES)))
    ap.add_argument("--grids", default=",".join(GRIDS))
    ap.add_argument("--solvers", default=None, help="default: every fixed-step deterministic ODE solver")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--rerun-default", action="store_true", help="re-run only the default rows of stored runs")
    ap.add_argument("--add-optimized", action="store_true",
                    help="add the cached optimize_grid rows (optimized_grids.json) to stored runs")
    ap.add_argument("--candidates", action="store_true")
    ap.add_argument("--json", default=None, help="write the summary rows here")
    ap.add_argument("--peer-pairs", default=None, metavar="DIR,DIR,...",
                    help="only: the trained-network cases and pairs of the stored runs in these directories that no "
                         "named configuration serves within 1.5x of the best peer (RMS and worst sample)")
    a = ap.parse_args(argv)
    if a.peer_pairs:
        print(peer_pairs(a.peer_pairs.split(","), tuple(int(v) for v in a.nfe.split(","))))
        return
    torch.set_num_threads(1)
    problems = tuple(p for p in a.problems.split(",") if p)
    nfes = tuple(int(v) for v in a.nfe.split(","))
    grids = tuple(a.grids.split(","))
    solvers = tuple(a.solvers.split(",")) if a.solvers else ode_solvers()
    if a.rerun_default:
        rerun_default(problems, a.out, a.n, a.seed, nfes)
    elif a.add_optimized:
        add_optimized(problems, a.out, nfes)
    elif not a.table_only:
        run(problems, a.out, a.n, a.seed, nfes, solvers, grids)
    summary = summarise(a.out, problems, nfes, grids)
    print(table(summary, nfes))
    if a.candidates:
        print(candidates(a.out, problems, nfes, grids))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(summary, fh, indent=1)


if __name__ == "__main__":
    main()
