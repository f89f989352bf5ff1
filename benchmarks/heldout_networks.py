"""Held-out learned networks for the budget default (issue: the claims must hold on networks the rule was not
fitted on): ten networks trained here, never part of the suite that chose ``sdeflow.window.default_solver``
and ``budget_end``, each measured like the suite's ``learned_*`` problems.

The networks (``HELDOUT``; the suite's machinery: :class:`sdeflow.bench.learned.NetSpec`, its
:class:`~sdeflow.bench.learned.NoiseLevelMLP`, its training :func:`~sdeflow.bench.learned.train_network`, seeded,
one thread, deterministic; other data, widths, depths and seeds than the suite's):

* ``heldout_checker_edm``: an EDM-preconditioned denoiser (width 96, depth 4) on a 2-D 4x4 checkerboard
  (uniform on the 8 dark unit squares of ``[-2, 2]^2``: sharp edges, flat density);
* ``heldout_aniso32_edm``: the same (width 128, depth 3) on a 32-D anisotropic mixture (10 components, per-axis
  standard deviations log-uniform in 0.02 .. 1);
* ``heldout_rings_ddpm``: a noise predictor (width 96, depth 3) with DDPM's loss on DDPM's schedule on three
  concentric rings (radii 0.5, 1, 1.5, radial std 0.04);
* ``heldout_moons_ddpm``: the same (width 48, depth 4) on two interleaved moons.

``HELDOUT_LATE``, six more, trained to test an intermediate rule of the budget default and then, with the
others, used to re-derive it from 15 evaluations against the peers: EDM denoisers on a 2-D 8-component mixture
of unequal weights and widths (stds 0.03 .. 0.5), a 5x5 grid of sharp modes (std 0.05), a 2-D Swiss roll and
the moons; noise predictors on DDPM's schedule on the mixture and the grid.

EDM networks are posed on ``VE(0.002, 80)`` from sigma 80 to 0.002 then a final step to sigma = 0, integrated
in EDM coordinates; eps networks on ``DiscreteVP()`` from t = 1 to 1/T then the final denoising (diffusers'
DDPM-schedule schedulers run on them), exactly as ``sdeflow.bench.learned.build_problems`` poses the suite's.
The reference is the same network solved by DOP853 in float64 (``reference_solver="dop853"``, cached keyed by
the weights' SHA-256). Weights are cached under ``sdeflow.bench.learned.cache_dir()/heldout`` (never shipped).

Each problem is run by ``benchmarks/generalisation.py``'s :func:`run` (every fixed-step deterministic ODE solver
on the named grids, on the problem's window and the budget's ``+end`` window; the default; every installed
peer; rows stored per problem, resumable) and summarised by its :func:`summarise`; every error is against the
problem's reference over its full window (peers on diffusers' own timesteps included).

    nice -n 5 python benchmarks/heldout_networks.py --out /tmp/heldout --n 500       # all ten networks
    python benchmarks/heldout_networks.py --out /tmp/heldout --table-only --candidates --json /tmp/heldout/s.json
    nice -n 5 python benchmarks/heldout_networks.py --out /tmp/heldout_s2 --net-seed-offset 1   # retrained nets
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import inspect
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import torch  # noqa: E402

import generalisation as gen  # noqa: E402
from sdeflow.bench import learned  # noqa: E402
from sdeflow.bench.learned import NetSpec  # noqa: E402


# ---- held-out data (seeded generators; float64) ------------------------------------------------------------
def checkerboard(n: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform on the 8 dark squares of a 4x4 checkerboard on [-2, 2]^2 (cells (i, j) with i + j even)."""
    x = 4.0 * torch.rand(n, generator=generator, dtype=torch.float64) - 2.0
    row = torch.randint(0, 2, (n,), generator=generator).to(torch.float64) * 2.0  # 0 or 2
    col = torch.floor(x) + 2.0  # 0 .. 3
    y = (row + torch.remainder(col, 2.0)) - 2.0 + torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.stack([x, y], 1)


def aniso32():
    """10 components in 32-D, per-axis stds log-uniform in [0.02, 1], seed 32 (``learned.random_mixture``)."""
    return learned.random_mixture(10, 32, (0.02, 1.0), 32)


def _aniso32(n: int, generator: torch.Generator) -> torch.Tensor:
    return aniso32().sample(n, generator=generator, dtype=torch.float64)


def rings(n: int, generator: torch.Generator) -> torch.Tensor:
    """Three concentric rings, radii 0.5, 1, 1.5 (equal weights), radial noise std 0.04."""
    r = 0.5 * (1 + torch.randint(0, 3, (n,), generator=generator)).to(torch.float64)
    r = r + 0.04 * torch.randn(n, generator=generator, dtype=torch.float64)
    a = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.stack([r * torch.cos(a), r * torch.sin(a)], 1)


def moons(n: int, generator: torch.Generator) -> torch.Tensor:
    """Two interleaved moons (upper: (cos a, sin a); lower: (1 - cos a, 1/2 - sin a); a uniform in [0, pi]),
    noise std 0.05, centred at (1/2, 1/4) and scaled by 1.5."""
    a = math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    k = torch.randint(0, 2, (n,), generator=generator).to(torch.float64)
    x = torch.where(k > 0, 1.0 - torch.cos(a), torch.cos(a))
    y = torch.where(k > 0, 0.5 - torch.sin(a), torch.sin(a))
    pts = torch.stack([x - 0.5, y - 0.25], 1) + 0.05 * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return 1.5 * pts


def mix2d():
    """8 components in 2-D, means 1.5 N(0, I), per-axis stds log-uniform in [0.03, 0.5], seed 52
    (``learned.random_mixture``, means scaled): unequal weights and widths, some modes narrow."""
    m = learned.random_mixture(8, 2, (0.03, 0.5), 52)
    return type(m)(m.weights, 1.5 * m.means, m.var.sqrt())


def _mix2d(n: int, generator: torch.Generator) -> torch.Tensor:
    return mix2d().sample(n, generator=generator, dtype=torch.float64)


def grid25(n: int, generator: torch.Generator) -> torch.Tensor:
    """A 5x5 grid of equal Gaussians (spacing 1, centred, std 0.05): 25 sharp modes."""
    ij = torch.randint(0, 5, (n, 2), generator=generator).to(torch.float64) - 2.0
    return ij + 0.05 * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def swissroll(n: int, generator: torch.Generator) -> torch.Tensor:
    """A 2-D Swiss roll: angle a uniform in [1.5 pi, 4.5 pi], (a cos a, a sin a) / 6, noise std 0.04."""
    a = math.pi * (1.5 + 3.0 * torch.rand(n, generator=generator, dtype=torch.float64))
    pts = torch.stack([a * torch.cos(a), a * torch.sin(a)], 1) / 6.0
    return pts + 0.04 * torch.randn(n, 2, generator=generator, dtype=torch.float64)


DATA = {"checkerboard": checkerboard, "aniso32": _aniso32, "rings": rings, "moons": moons, "mix2d": _mix2d,
        "grid25": grid25, "swissroll": swissroll}

HELDOUT = {s.name: s for s in (
    NetSpec("heldout_checker_edm", "checkerboard", "edm", 2, sigma_data=1.15, hidden=96, depth=4, seed=11,
            description="held out: EDM-preconditioned MLP denoiser (96x4) on a 2-D 4x4 checkerboard; VE sigma 80 "
                        "-> 0.002, then a step to sigma = 0; reference: DOP853 solve of the same network"),
    NetSpec("heldout_aniso32_edm", "aniso32", "edm", 32, sigma_data=1.0, hidden=128, depth=3, seed=21,
            description="held out: EDM-preconditioned MLP denoiser (128x3) on a 32-D anisotropic 10-component "
                        "mixture (stds 0.02 .. 1); VE as above; reference: DOP853 solve of the same network"),
    NetSpec("heldout_rings_ddpm", "rings", "eps", 2, sigma_data=0.8, hidden=96, depth=3, seed=31,
            description="held out: noise-prediction MLP (96x3), DDPM's loss, on three concentric rings; DDPM's "
                        "schedule, 999 -> 0 then the final denoising; reference: DOP853 solve of the same network"),
    NetSpec("heldout_moons_ddpm", "moons", "eps", 2, sigma_data=1.0, hidden=48, depth=4, seed=41, steps=5000,
            description="held out: noise-prediction MLP (48x4), DDPM's loss, on two moons; DDPM's schedule as "
                        "above; reference: DOP853 solve of the same network"),
    # the second group (HELDOUT_LATE): trained to test an intermediate rule, then part of the derivation
    NetSpec("heldout_mix2d_edm", "mix2d", "edm", 2, sigma_data=1.1, hidden=128, depth=3, seed=51, steps=10000,
            description="held out (late): EDM-preconditioned MLP denoiser (128x3, 10000 steps) on a 2-D 8-component "
                        "mixture of unequal weights and widths (stds 0.03 .. 0.5); VE as above"),
    NetSpec("heldout_grid25_edm", "grid25", "edm", 2, sigma_data=1.4, hidden=96, depth=4, seed=61,
            description="held out (late): EDM-preconditioned MLP denoiser (96x4) on a 5x5 grid of sharp modes "
                        "(std 0.05); VE as above"),
    NetSpec("heldout_swissroll_edm", "swissroll", "edm", 2, sigma_data=1.15, hidden=64, depth=4, seed=71,
            description="held out (late): EDM-preconditioned MLP denoiser (64x4) on a 2-D Swiss roll; VE as above"),
    NetSpec("heldout_moons_edm", "moons", "edm", 2, sigma_data=1.0, hidden=96, depth=3, seed=81,
            description="held out (late): EDM-preconditioned MLP denoiser (96x3) on two moons; VE as above"),
    NetSpec("heldout_mix2d_ddpm", "mix2d", "eps", 2, sigma_data=1.1, hidden=128, depth=3, seed=91, steps=10000,
            description="held out (late): noise-prediction MLP (128x3, 10000 steps), DDPM's loss, on the 2-D "
                        "8-component mixture; DDPM's schedule as above"),
    NetSpec("heldout_grid25_ddpm", "grid25", "eps", 2, sigma_data=1.4, hidden=96, depth=4, seed=101,
            description="held out (late): noise-prediction MLP (96x4), DDPM's loss, on the 5x5 grid; DDPM's "
                        "schedule as above"),
)}
#: the networks trained after the budget default's bands were fixed (``--problems`` selects; default: all)
HELDOUT_LATE = tuple(n for n in HELDOUT if HELDOUT[n].seed >= 51)


# ---- training, cached outside the repository ----------------------------------------------------------------
def _weights_file(spec: NetSpec) -> str:
    """Keyed by the spec's training configuration and the source of its data generator."""
    h = hashlib.sha256(json.dumps(spec.config(), sort_keys=True).encode())
    h.update(inspect.getsource(DATA[spec.data]).encode())
    if spec.data in ("aniso32", "mix2d"):
        h.update(inspect.getsource(aniso32 if spec.data == "aniso32" else mix2d).encode())
    return os.path.join(learned.cache_dir(), "heldout", f"{spec.name}-{h.hexdigest()[:16]}.safetensors")


def network(spec: NetSpec, log=print) -> tuple[torch.nn.Module, str, dict]:
    """``(net, sha256, info)``: the spec's network in float64 (frozen), trained on first use (seeded, one
    thread) and cached under ``cache_dir()/heldout``."""
    from sdeflow.io import load_tensors, save_tensors

    learned.DATASETS.update(DATA)  # train_network draws its data from learned.DATASETS[spec.data]
    file = _weights_file(spec)
    if os.path.exists(file):
        state, meta = load_tensors(file)
        F = learned.NoiseLevelMLP(spec.dim, spec.hidden, spec.depth)
        F.load_state_dict(state)
        info = meta["info"]
    else:
        net, info = learned.train_network(spec)
        F = net.F
        state = {k: v.detach().clone() for k, v in F.state_dict().items()}
        os.makedirs(os.path.dirname(file), exist_ok=True)
        save_tensors(file + ".tmp", state, metadata={"config": spec.config(), "info": info})
        os.replace(file + ".tmp", file)
    sha = learned.tensor_sha256(F.state_dict())
    log(f"{spec.name}: {info['steps']} steps, {info['seconds']} s, validation loss {info['val_loss']:.4f}, "
        f"sha256 {sha[:12]} ({file})")
    path = spec.path()
    net = learned.EDMDenoiser(F, spec.sigma_data, path) if spec.param == "edm" else learned.EpsNet(F, path)
    return net.to(torch.float64).eval().requires_grad_(False), sha, info


def problem(spec: NetSpec, log=print):
    """The spec's ``sdeflow.bench.Problem``, posed as ``sdeflow.bench.learned.build_problems`` poses the suite's."""
    from sdeflow.bench.problems import Problem
    from sdeflow.fields import DataField, NoiseField
    from sdeflow.paths import EDM

    net, sha, _ = network(spec, log)
    field = (DataField if spec.param == "edm" else NoiseField)(net, dtype=torch.float64)
    common = dict(exact_field=field, dim=spec.dim, description=spec.description, reference_solver="dop853",
                  cache_key=sha)
    if spec.param == "edm":
        return Problem(spec.name, path=spec.path(), t_max=1.0, t_min=0.0, final_denoise=True,
                       integration_path=EDM(learned.VE_SIGMA_MAX), **common)
    return Problem(spec.name, path=spec.path(), t_max=1.0, final_denoise=True, **common)


def register(names, log=print) -> None:
    from sdeflow.bench.problems import register_problem

    with learned.deterministic():
        for name in names:
            register_problem(problem(HELDOUT[name], log))


# ---- the table -----------------------------------------------------------------------------------------------
def heldout_table(summary, nfes) -> str:
    """Per budget: best peer, best named sdeflow and default (RMS, worst sample), and the ratios
    default / peer, default / named, named / peer (RMS, worst)."""
    f, r = gen._f, gen._ratio
    lines = []
    for nfe in nfes:
        lines += [f"\n**NFE {nfe}**\n",
                  "| problem | best peer: RMS, worst | best named: RMS, worst | default: RMS, worst (sigma_end) "
                  "| default / peer | default / named | named / peer |",
                  "|---|---|---|---|---|---|---|"]
        for s in summary:
            if s["nfe"] != nfe:
                continue
            g = s.get
            peer = (f"{f(g('peer_rms'))} ({g('peer_rms_by')}), {f(g('peer_max'))} ({g('peer_max_by')})"
                    if "peer_rms" in s else "- (no peer)")
            named = f"{f(g('named_rms'))} ({g('named_rms_by')}), {f(g('named_max'))} ({g('named_max_by')})"
            dflt = f"{f(g('default_rms'))}, {f(g('default_max'))} ({f(g('default_sigma_end'), 2)})"

            def rr(a, b):
                return f"{f(r(g(a + '_rms'), g(b + '_rms')), 3)}, {f(r(g(a + '_max'), g(b + '_max')), 3)}"
            lines.append(f"| `{s['problem']}` | {peer} | {named} | {dflt} | {rr('default', 'peer')} "
                         f"| {rr('default', 'named')} | {rr('named', 'peer')} |")
    return "\n".join(lines)


def default_configs(names, nfes) -> str:
    """What the default ran at each budget on each problem: ``default_configuration``'s solver (with its
    options), grid and window (the budget's stop or the path's end)."""
    from sdeflow.bench.problems import get_problem
    from sdeflow.window import default_configuration

    lines = []
    for name in names:
        p = get_problem(name)
        cfgs = [default_configuration(n, p.path, p.kind) for n in nfes]
        lines.append(f"{name}: " + "; ".join(
            f"NFE {n}: {c.solver}{''.join(f'({k}={v})' for k, v in c.options)}/{c.grid}/{c.window}"
            for n, c in zip(nfes, cfgs)))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/heldout")
    ap.add_argument("--problems", default=",".join(HELDOUT))
    ap.add_argument("--nfe", default=",".join(map(str, gen.NFES)))
    ap.add_argument("--grids", default=",".join(gen.GRIDS))
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--net-seed-offset", type=int, default=0,
                    help="k > 0: retrain every network from its seed + k (named <name>_s<k+1>): is a gap the "
                         "network's or its data's?")
    ap.add_argument("--train-only", action="store_true", help="train (or load) the networks and stop")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--candidates", action="store_true",
                    help="rank each (solver, grid) on the budget's window by its ratio to the best named (as "
                         "generalisation.py --candidates) over the held-out problems")
    ap.add_argument("--json", default=None, help="write the summary rows here")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    names = tuple(p for p in a.problems.split(",") if p)
    if a.net_seed_offset:
        for name in names:
            HELDOUT[f"{name}_s{a.net_seed_offset + 1}"] = dataclasses.replace(
                HELDOUT[name], name=f"{name}_s{a.net_seed_offset + 1}", seed=HELDOUT[name].seed + a.net_seed_offset)
        names = tuple(f"{n}_s{a.net_seed_offset + 1}" for n in names)
    nfes = tuple(int(v) for v in a.nfe.split(","))
    grids = tuple(a.grids.split(","))
    t0 = time.perf_counter()
    register(names, log=lambda s: print(s, file=sys.stderr))
    if a.train_only:
        return
    if not a.table_only:
        for name in names:  # one problem at a time: its wall time
            t1 = time.perf_counter()
            gen.run([name], a.out, a.n, a.seed, nfes, gen.ode_solvers(), grids)
            print(f"{name}: {time.perf_counter() - t1:.0f} s", file=sys.stderr)
        print(f"total {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    summary = gen.summarise(a.out, names, nfes, grids)
    print(heldout_table(summary, nfes))
    print("\nthe default's configuration:\n" + default_configs(names, nfes))
    if a.candidates:
        print(gen.candidates(a.out, names, nfes, grids))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(summary, fh, indent=1)


if __name__ == "__main__":
    main()
