"""The benchmark loop: every problem x solver x grid x NFE budget, errors against exact references.

* ODE solvers: pathwise RMS error against the exact / float64 reference probability-flow solution from the
  same initial noise (``metric="pathwise_rms"``), on each named grid; every pathwise or strong row also
  carries the tail of the per-sample errors (``error_q99``: 99th percentile, ``error_max``: the worst sample).
  ``solver="default"``: ``sample(path, field, nfe=N, x_init=x)`` with every other argument at its default.
  Grids ``"<grid>+end"``: the same solver and grid on the window the budget chooses
  (:func:`sdeflow.window.budget_end`; ``sigma_end`` records the stop), on problems that end with a denoising
  step.
* SDE solvers, on the reverse SDE (``gamma="reverse"``) in the problem path's own time: the strong error
  (``metric="strong_rms"``) against a fine stochastic-Heun solve driven by the same Brownian path, and the
  weak errors (``row["weak"]``: mean, covariance, sliced W2, MMD) against exact samples of the target; rows
  ``solver="mc_floor"`` give the Monte Carlo floor of the weak metrics (independent exact sets of the same
  size). Grids are uniform in the path's time (for VE: geometric in sigma, uniform in log-SNR) with a
  power-of-two number of steps, so they nest in the fine grid of the :class:`~sdeflow.noise.BrownianPath`.
* Peers (``peer=True``): torchdiffeq and diffusers' EDM schedulers on the ODE of VE problems, diffusers'
  DDPM-schedule schedulers on ``eight_gaussians_ddpm`` (on common timesteps, and DDIM / UniPC on the
  timesteps they choose, each beside sdeflow's ``ddim`` / ``unipc`` on those times), torchsde on the SDE on the same Brownian path (see
  :mod:`sdeflow.bench.peers`); cached grid-optimised UniPC rows (``grid="optimized"``).
* Wall time: ``time.perf_counter`` around each call, median of ``repeats`` timed runs, after one untimed
  warm-up run of each (solver, grid) at its first budget; in the intra-op threads the caller set
  (``sdeflow bench`` sets one, ``--threads``).
* ``progress=True``: a tqdm bar on stderr over the runs, showing (problem, solver, grid, budget).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time

import numpy as np
import torch

from .. import solvers as _solvers
from ..noise import BrownianPath
from ..sample import sample
from .metrics import mc_floor, mmd_bandwidth, pathwise_errors, weak_metrics
from .problems import get_problem

__all__ = ["run_bench", "QUICK", "FULL", "DEFAULT_NFES", "DEFAULT_SDE_NFES", "DEFAULT_SOLVERS"]

DEFAULT_NFES = (10, 20, 50, 100)
# SDE grids have a power-of-two number of steps (they nest in the Brownian path's fine grid), and the
# problems end with a final denoising step: budgets 2^k + 1 are spent in full by the one- and two-evaluation
# solvers (32 Euler-Maruyama or 16 stochastic-Heun steps + 1 = 33). The reverse SDE from sigma = 80 needs
# steps well below the e-folding of sigma: below ~32 uniform steps every solver is far off (g^2 h > sigma^2),
# so the budgets start there.
DEFAULT_SDE_NFES = (33, 65, 129)
DEFAULT_SOLVERS = ("euler", "heun", "midpoint", "rk4", "rk4_38", "lms", "dpmpp_2m", "dpmpp_3m", "exp_3m_exact",
                   "unipc", "unipc(order=3)", "exp_pc", "euler_maruyama", "stochastic_heun", "sra1")
_SDE_FINE_MIN = 256  # fine Brownian grid: at least this many steps and 8x the finest coarse grid

QUICK = dict(problems=("eight_gaussians",), nfes=DEFAULT_NFES, sde_nfes=DEFAULT_SDE_NFES, n=1000, repeats=1)
FULL = dict(problems=("eight_gaussians", "two_blobs", "ring20_wide", "eight_gaussians_small", "gaussian2",
                      "gaussian16", "gaussian64", "ring64", "narrow_unequal", "aniso16", "aniso64", "image64",
                      "eight_gaussians_ddpm", "learned_pinwheel", "learned_mix16", "learned_spiral_ddpm"),
            nfes=(5, 10, 20, 50, 100, 200), sde_nfes=(33, 65, 129, 257, 513, 1025), n=4000, repeats=3)


def _timed(fn, repeats: int, warm: bool = True):
    """``(fn(), median wall time of repeats)``; ``warm``: one untimed run first (first-call costs)."""
    if warm:
        fn()
    times, out = [], None
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times))


class _Progress:
    """A tqdm bar on stderr over the runs of :func:`run_bench`, labelled (problem, solver, grid, budget) before
    each run; inert when disabled. ``leave=False``: the finished bar disappears, the tables stay clean."""

    def __init__(self, enabled: bool, total: int):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="run", file=sys.stderr, leave=False, dynamic_ncols=True)

    def show(self, *label) -> None:
        if self.bar is not None:
            self.bar.set_description_str(" ".join(str(v) for v in label if v is not None))

    def done(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.refresh()  # the final count is drawn even when the last runs came within tqdm's mininterval
            self.bar.close()


def _sample(*args, **kw):
    """``sample`` as a user calls it; a configuration the preflight refuses (``UnstableError``: its answer on an
    exact Gaussian is off by more than itself) is run anyway with ``preflight=False`` so the diagrams show its
    error, and the row says it would be refused (``preflight`` key, marked ``!`` in the tables)."""
    from ..errors import UnstableError

    try:
        return sample(*args, **kw)
    except UnstableError as e:
        sol = sample(*args, preflight=False, **kw)
        sol.stats["preflight"] = str(e)
        return sol


def _refusal(sol) -> dict:
    msg = sol.stats.get("preflight")
    return {"preflight": msg} if msg else {}


def _row(problem, solver, grid, nfe_budget, nfe, errors, metric, wall, **extra):
    """A row; ``errors``: :func:`~sdeflow.bench.metrics.pathwise_errors` (``error`` is its RMS, ``error_q99`` and
    ``error_max`` its tail), or None."""
    e = errors or {}
    return dict(problem=problem.name, solver=solver, grid=grid, nfe_budget=nfe_budget, nfe=nfe, error=e.get("rms"),
                error_q99=e.get("q99"), error_max=e.get("max"), metric=metric, wall_s=wall, **extra)


def _ode_rows(problem, solver, grids, nfes, x, repeats, prog):
    prog.show(problem.name, "reference solve")
    ref = problem.reference(x)
    rows = []
    for grid in grids:
        for i, nfe in enumerate(nfes):
            prog.show(problem.name, solver, grid, f"NFE<={nfe}")
            try:
                sol, wall = _timed(lambda: _sample(problem.path, problem.field(), solver, nfe=nfe, grid=grid,
                                                  x_init=x, **problem.sample_kwargs()), repeats, warm=i == 0)
            except ValueError as e:  # budget below the solver's minimum
                rows.append(_row(problem, solver, grid, nfe, None, None, "pathwise_rms", None, note=str(e)))
            else:
                rows.append(_row(problem, solver, grid, nfe, sol.nfe, pathwise_errors(sol.x, ref), "pathwise_rms",
                                 wall, **_refusal(sol)))
            prog.done()
            if not problem.final_denoise:
                continue
            # the same solver and grid with the window the budget chooses (sdeflow.window.budget_end): no t_min,
            # no final_denoise given; measured against the problem's answer at its data end
            label = f"{grid}+end"
            prog.show(problem.name, solver, label, f"NFE<={nfe}")
            try:
                sol, wall = _timed(lambda: _sample(problem.path, problem.field(), solver, nfe=nfe, grid=grid,
                                                  x_init=x, t_max=problem.t_max,
                                                  integration_path=problem.integration_path), repeats, warm=False)
            except ValueError as e:
                rows.append(_row(problem, solver, label, nfe, None, None, "pathwise_rms", None, note=str(e)))
            else:
                rows.append(_row(problem, solver, label, nfe, sol.nfe, pathwise_errors(sol.x, ref), "pathwise_rms",
                                 wall, sigma_end=_sigma_end(problem.path, sol), **_refusal(sol)))
            prog.done()
    return rows


def _sigma_end(path, sol) -> float:
    """The noise level sigma/alpha where a budget-chosen window stopped."""
    import math

    return math.exp(-0.5 * float(path.log_snr(torch.tensor(sol.stats["t_min"], dtype=torch.float64))))


def _default_rows(problem, nfes, x, repeats, prog):
    """``solver="default"``: ``sample(path, field, nfe=N, x_init=x)`` with every other argument at its default
    (solver, grid, window, final step): what a user gets without choosing, against the problem's reference."""
    ref = problem.reference(x)
    rows = []
    for i, nfe in enumerate(nfes):
        prog.show(problem.name, "default", "default", f"NFE<={nfe}")
        try:
            sol, wall = _timed(lambda: sample(problem.path, problem.field(), nfe=nfe, x_init=x), repeats, warm=i == 0)
        except ValueError as e:  # refused up front (sdeflow.errors.UnstableError), or a budget below the minimum
            rows.append(_row(problem, "default", "default", nfe, None, None, "pathwise_rms", None, note=str(e)))
        else:
            rows.append(_row(problem, "default", "default", nfe, sol.nfe, pathwise_errors(sol.x, ref), "pathwise_rms",
                             wall, sigma_end=_sigma_end(problem.path, sol)))
        prog.done()
    return rows


class _SDESetup:
    """What every SDE row of a problem shares: the fine grid, the Brownian path, the fine reference solve,
    exact target samples and the weak-metric floor."""

    def __init__(self, problem, x, sde_nfes, seed, notes):
        self.problem, self.x = problem, x
        # the finest coarse grid: the largest power of two of steps within the largest budget (one evaluation
        # per step, no final step); the fine grid is 8x that (budgets 2^k and 2^k + 1 share it)
        top = 1 << (int(max(sde_nfes)).bit_length() - 1)
        fine = _SDE_FINE_MIN
        while fine < 8 * top:
            fine *= 2
        self.fine = fine
        self.grid = np.linspace(problem.t_max, problem.t_min, fine + 1)
        self.bm = BrownianPath(self.grid, generator=torch.Generator().manual_seed(seed + 1))
        self.ref = sample(problem.path, problem.field(), "stochastic_heun", grid=self.grid, x_init=x,
                          gamma="reverse", noise=self.bm, final_denoise=problem.final_denoise).x
        n = x.shape[0]
        g = torch.Generator().manual_seed(seed + 2)
        self.exact = problem.target_samples(n, g)
        if self.exact is None:
            notes.append(f"weak metrics skipped on {problem.name}: no exact target samples (give the Problem a "
                         f"target or a target_sampler)")
            self.floor = None
        else:
            self.bandwidth = mmd_bandwidth(self.exact)
            self.floor = mc_floor(lambda m: problem.target_samples(m, g), n, self.bandwidth)

    def coarse(self, steps: int) -> np.ndarray | None:
        """The sub-grid with the largest power of two of steps not above ``steps`` (None if < 1)."""
        if steps < 1:
            return None
        steps = 1 << (int(steps).bit_length() - 1)
        return self.grid[:: self.fine // steps]

    def row(self, solver, nfe_budget, y, nfe, wall, **extra):
        weak = None if self.exact is None else weak_metrics(y, self.exact, self.bandwidth)
        return _row(self.problem, solver, "uniform", nfe_budget, nfe, pathwise_errors(y, self.ref), "strong_rms",
                    wall, weak=weak, **extra)


def _sde_steps(solver: str, nfe: int, final_denoise: bool) -> int:
    """Steps of an SDE row: the largest power of two within the budget (0: the budget buys no step)."""
    steps = _solvers.get(solver).max_steps(nfe - (1 if final_denoise else 0))
    return 0 if steps < 1 else 1 << (int(steps).bit_length() - 1)


def _sde_rows(setup, solver, nfes, repeats, prog):
    p = setup.problem
    rows, warm = [], True
    for nfe in nfes:
        grid = setup.coarse(_sde_steps(solver, nfe, p.final_denoise))
        if grid is None:
            continue
        prog.show(p.name, solver, "uniform", f"NFE<={nfe}")
        try:
            sol, wall = _timed(lambda: _sample(p.path, p.field(), solver, grid=grid, x_init=setup.x, gamma="reverse",
                                              noise=setup.bm, final_denoise=p.final_denoise), repeats, warm)
        except ValueError as e:  # refused up front (e.g. an unstable step: sdeflow.errors.UnstableError)
            rows.append(_row(p, solver, "uniform", nfe, None, None, "strong_rms", None, note=str(e)))
            prog.done()
            continue
        warm = False
        rows.append(setup.row(solver, nfe, sol.x, sol.nfe, wall, **_refusal(sol)))
        prog.done()
    return rows


def _floor_rows(setup, nfes):
    if setup.floor is None:
        return []
    return [_row(setup.problem, "mc_floor", "exact", nfe, None, None, "mc_floor", None, weak=setup.floor)
            for nfe in nfes]


def _sde_peer_rows(setup, nfes, repeats, notes, prog):
    from .peers import available_peers, run_sde_peer, sde_peer_steps

    names, skipped = available_peers(sde=True)
    notes.extend(skipped)
    rows = []
    for name in names:
        warm = True
        for nfe in nfes:
            grid = setup.coarse(sde_peer_steps(name, nfe, setup.problem.final_denoise))
            if grid is None:
                continue
            prog.show(setup.problem.name, name, "uniform", f"NFE<={nfe}")
            (y, used), wall = _timed(lambda: run_sde_peer(name, setup.problem, setup.x, grid, setup.bm, nfe),
                                     repeats, warm)
            warm = False
            rows.append(setup.row(name, nfe, y, used, wall, peer=True))
            prog.done()
    return rows


def _ddim_sde_rows(setup, nfes, repeats, seed, prog):
    """DDIM with eta = 1 (DDPM's ancestral sampler) on the timesteps ``DDIMScheduler.set_timesteps(nfe)``
    chooses: diffusers and sdeflow's ``ddim(eta=1)`` on the same times and the same standard-normal draws
    (``TableNoise``); weak metrics only (their grid is not a sub-grid of the Brownian path: no strong error)."""
    from ..noise import TableNoise
    from .peers import OWN_GRID_PEERS, ddim_sde_noise, own_grid

    p = setup.problem
    if setup.exact is None:
        return []
    _, run, _, label = OWN_GRID_PEERS["diffusers:ddim"]
    rows = []
    for i, nfe in enumerate(nfes):
        prog.show(p.name, "ddim(eta=1) and diffusers:ddim(eta=1)", label, f"NFE<={nfe}")
        z = ddim_sde_noise(p, setup.x, nfe, torch.Generator().manual_seed(seed + 3))
        (y, used, taus), wall = _timed(lambda: run(p, setup.x, nfe, noise=z), repeats, warm=i == 0)
        weak = weak_metrics(y, setup.exact, setup.bandwidth)
        rows.append(_row(p, "diffusers:ddim(eta=1)", label, nfe, used, None, "strong_rms", wall, weak=weak,
                         peer=True))
        grid = own_grid(p, taus)
        sol, wall = _timed(lambda: _sample(p.path, p.field(), "ddim", grid=grid, x_init=setup.x, eta=1.0,
                                          noise=TableNoise(list(z)), final_denoise=p.final_denoise), repeats,
                           warm=i == 0)
        rows.append(_row(p, "ddim(eta=1)", label, nfe, sol.nfe, None, "strong_rms", wall,
                         weak=weak_metrics(sol.x, setup.exact, setup.bandwidth)))
        prog.done(2)
    return rows


_GRIDS_FILE = os.path.join(os.path.dirname(__file__), "optimized_grids.json")


def _cached_grids(problem, nfes) -> list[dict]:
    if not os.path.exists(_GRIDS_FILE):
        return []
    with open(_GRIDS_FILE) as f:
        cached = json.load(f)["grids"]
    return [c for c in cached if c["problem"] == problem.name and c["nfe"] in nfes]


def _optimized_rows(problem, nfes, x, repeats, prog):
    """sdeflow's best sampler: ``exp_pc`` on grids bought once with ``optimize_grid`` (cached in
    ``optimized_grids.json``, regenerated by ``benchmarks/best_sampler.py``); the pilot cost is in the row."""
    cached = _cached_grids(problem, nfes)
    if not cached:
        return []
    ref = problem.reference(x)
    rows, warmed = [], set()
    for c in cached:
        label = c["solver"] + "".join(f"({k}={v})" for k, v in c["options"].items())
        prog.show(problem.name, label, "optimized", f"NFE<={c['nfe']}")
        sol, wall = _timed(lambda: _sample(problem.path, problem.field(), c["solver"], grid=c["grid"], x_init=x,
                                          final_denoise=c.get("final_denoise", problem.final_denoise),
                                          integration_path=problem.integration_path, **c["options"]), repeats,
                           warm=label not in warmed)
        warmed.add(label)
        rows.append(_row(problem, label, "optimized", c["nfe"], sol.nfe, pathwise_errors(sol.x, ref), "pathwise_rms",
                         wall, pilot_network_calls=c["pilot_network_calls"]))
        prog.done()
    return rows


def _ode_peer_names(problem, notes=None) -> list[str]:
    """The ODE peers that run on ``problem`` (installed and applicable); ``notes`` collects the skipped."""
    from .peers import DDPM_PEERS, applicable, available_peers, ddpm_applicable

    notes = [] if notes is None else notes
    if ddpm_applicable(problem):
        names = [n for n, (lib, _) in DDPM_PEERS.items() if importlib.util.find_spec(lib) is not None]
        if not names:
            notes.append("skipped diffusers DDPM-schedule peers: diffusers is not installed "
                         "(pip install 'sdeflow[bench]')")
        return names
    if applicable(problem):
        names, skipped = available_peers()
        notes.extend(skipped)
        return names
    notes.append(f"ODE peers skipped on {problem.name}: they are posed in EDM form on VE problems, or on "
                 f"DDPM's default schedule (DiscreteVP())")
    return []


def _peer_rows(problem, nfes, x, repeats, notes, prog):
    from .peers import DDPM_PEERS, ddpm_applicable, run_peer

    names = _ode_peer_names(problem, notes)
    if not names:
        return []
    if ddpm_applicable(problem):
        run = lambda name, nfe: DDPM_PEERS[name][1](problem, x, nfe)  # noqa: E731
        grid_of = lambda name: "ddpm_linspace"  # noqa: E731
    else:
        run = lambda name, nfe: run_peer(name, problem, x, nfe)  # noqa: E731
        grid_of = lambda name: "adaptive" if "dopri" in name else "karras"  # noqa: E731
    ref = problem.reference(x)
    rows = []
    for name in names:
        grid = grid_of(name)
        for i, nfe in enumerate(nfes):
            prog.show(problem.name, name, grid, f"NFE<={nfe}")
            out, wall = _timed(lambda: run(name, nfe), repeats, warm=i == 0)
            if out is None:
                rows.append(_row(problem, name, grid, nfe, None, None, "pathwise_rms", None, peer=True))
            else:
                rows.append(_row(problem, name, grid, nfe, out[1], pathwise_errors(out[0], ref), "pathwise_rms", wall,
                                 peer=True))
            prog.done()
    if ddpm_applicable(problem):
        rows += _own_grid_rows(problem, nfes, x, repeats, prog)
    return rows


def _own_grid_rows(problem, nfes, x, repeats, prog):
    """diffusers' DDIM and UniPC on the timesteps their ``set_timesteps(nfe)`` chooses, each beside sdeflow's
    matching solver on exactly those times (same window, noise and field). ``error`` (and its tail) is measured,
    as every other row's, against the problem's reference over the problem's window: their window is part of
    the sampler, so these rows compare with the others in the same tables. ``own_window = {rms, q99, max}``
    measures the same samples against the exact flow over their own window (the faithfulness check: the same
    algorithm on the same times, peer beside sdeflow)."""
    from .peers import OWN_GRID_PEERS, own_grid

    full = problem.reference(x)
    rows = []
    for name, (_, run, ours, label) in OWN_GRID_PEERS.items():
        for i, nfe in enumerate(nfes):
            prog.show(problem.name, f"{name} and {ours}", label, f"NFE<={nfe}")
            out, wall = _timed(lambda: run(problem, x, nfe), repeats, warm=i == 0)
            if out is None:
                rows.append(_row(problem, name, label, nfe, None, None, "pathwise_rms", None, peer=True))
                prog.done(2)
                continue
            y, used, taus = out
            grid = own_grid(problem, taus)
            own = problem.reference(x, t_max=grid[0], t_min=grid[-1])
            rows.append(_row(problem, name, label, nfe, used, pathwise_errors(y, full), "pathwise_rms", wall, peer=True,
                             own_window=pathwise_errors(y, own)))
            sol, wall = _timed(lambda: _sample(problem.path, problem.field(), ours, grid=grid, x_init=x,
                                              final_denoise=problem.final_denoise), repeats, warm=i == 0)
            rows.append(_row(problem, ours, label, nfe, sol.nfe, pathwise_errors(sol.x, full), "pathwise_rms", wall,
                             own_window=pathwise_errors(sol.x, own)))
            prog.done(2)
    return rows


def _planned_runs(problem, solvers, grids, nfes, sde_nfes, sde, peers, optimized) -> int:
    """How many rows :func:`run_bench` times on ``problem`` (the progress bar's total; mc_floor rows are not
    runs). Mirrors the loops below; ``tests/tools/test_bench.py`` checks it against the rows."""
    from .peers import OWN_GRID_PEERS, SDE_PEERS, ddpm_applicable, sde_peer_steps

    count = 0
    for solver in solvers:
        s = _solvers.get(solver)
        if not s.sde:
            count += len(_ode_grids(s, grids)) * len(nfes) * (2 if problem.final_denoise else 1)
    if any(not _solvers.get(s).sde for s in solvers):
        count += len(nfes)  # the default sampler
    if optimized:
        count += len(_cached_grids(problem, nfes))
    if peers:
        names = _ode_peer_names(problem)
        count += len(names) * len(nfes)
        if names and ddpm_applicable(problem):
            count += 2 * len(OWN_GRID_PEERS) * len(nfes)
    sde_solvers = [s for s in solvers if _solvers.get(s).sde]
    if sde and sde_solvers:
        fd = problem.final_denoise
        count += sum(1 for s in sde_solvers for nfe in sde_nfes if _sde_steps(s, nfe, fd) >= 1)
        if peers:
            installed = [n for n, (lib, _) in SDE_PEERS.items() if importlib.util.find_spec(lib) is not None]
            count += sum(1 for n in installed for nfe in sde_nfes if sde_peer_steps(n, nfe, fd) >= 1)
            if (ddpm_applicable(problem) and importlib.util.find_spec("diffusers") is not None
                    and _has_target_samples(problem)):
                count += 2 * len(sde_nfes)
    return count


def _has_target_samples(problem) -> bool:
    """Whether ``problem.target_samples`` returns samples (not None), without drawing any."""
    return (problem.target is not None and problem.exact_field is None) or problem.target_sampler is not None


def _ode_grids(s, grids) -> tuple:
    """The named grids an ODE solver runs on: ``log_snr`` only for the exponential integrators."""
    return grids if s.needs == "prediction" else tuple(g for g in grids if g != "log_snr") or grids


def run_bench(problems=QUICK["problems"], solvers=None, nfes=DEFAULT_NFES, sde_nfes=DEFAULT_SDE_NFES,
              grids=("karras", "log_snr"), n: int = 1000, seed: int = 0, dtype=torch.float64, device="cpu",
              repeats: int = 1, sde: bool = True, peers: bool = True, optimized: bool = True,
              notes: list | None = None, progress: bool = False) -> list[dict]:
    """Rows of ``{problem, solver, grid, nfe_budget, nfe, error, error_q99, error_max, metric, wall_s}``
    (``error`` the RMS over samples, ``error_q99`` / ``error_max`` the 99th percentile and maximum of the
    per-sample errors, against the problem's reference; rows on diffusers' own timesteps add ``own_window =
    {rms, q99, max}`` against the exact flow over their own window; ``solver="default"`` rows run ``sample``'s defaults); SDE rows add
    ``weak={mean, cov, sliced_w2, mmd}``, peers ``peer=True``, optimised grids ``pilot_network_calls``;
    ``solver="mc_floor"`` rows hold the weak metrics' Monte Carlo floor. ``notes`` collects lines on skipped
    peers and metrics. ``solvers=None`` runs ``DEFAULT_SOLVERS``; ``grids`` apply to the ODE solvers
    (``log_snr`` only to the exponential integrators). ``progress``: a tqdm bar on stderr showing (problem,
    solver, grid, budget) of the run in progress (``sdeflow bench`` turns it on when stderr is a terminal).
    ``nfe`` is what a row spent: at most ``nfe_budget``; SDE rows take the largest power of two of steps
    within the budget (see ``DEFAULT_SDE_NFES`` for budgets spent in full)."""
    solvers = DEFAULT_SOLVERS if solvers is None else tuple(solvers)
    grids = tuple(grids)
    notes = [] if notes is None else notes
    problems = [get_problem(p) for p in problems]
    prog = _Progress(progress, sum(_planned_runs(p, solvers, grids, nfes, sde_nfes, sde, peers, optimized)
                                   for p in problems) if progress else 0)
    rows = []
    try:
        for problem in problems:
            rows += _problem_rows(problem, solvers, grids, nfes, sde_nfes, n, seed, dtype, device, repeats, sde,
                                  peers, optimized, notes, prog)
    finally:
        prog.close()
    return rows


def _problem_rows(problem, solvers, grids, nfes, sde_nfes, n, seed, dtype, device, repeats, sde, peers, optimized,
                  notes, prog) -> list[dict]:
    x = problem.initial(n, seed, dtype=dtype, device=device)
    sde_solvers = [s for s in solvers if _solvers.get(s).sde]
    rows = []
    for solver in solvers:
        s = _solvers.get(solver)
        if not s.sde:
            rows += _ode_rows(problem, solver, _ode_grids(s, grids), nfes, x, repeats, prog)
    if any(not _solvers.get(s).sde for s in solvers):
        rows += _default_rows(problem, nfes, x, repeats, prog)
    if optimized:
        rows += _optimized_rows(problem, nfes, x, repeats, prog)
    if peers:
        rows += _peer_rows(problem, nfes, x, repeats, notes, prog)
    if sde and sde_solvers:
        prog.show(problem.name, "SDE reference solve and exact samples")
        setup = _SDESetup(problem, x, sde_nfes, seed, notes)
        for solver in sde_solvers:
            rows += _sde_rows(setup, solver, sde_nfes, repeats, prog)
        if peers:
            rows += _sde_peer_rows(setup, sde_nfes, repeats, notes, prog)
            from .peers import ddpm_applicable

            if ddpm_applicable(problem) and importlib.util.find_spec("diffusers") is not None:
                rows += _ddim_sde_rows(setup, sde_nfes, repeats, seed, prog)
        rows += _floor_rows(setup, sde_nfes)
    return rows
