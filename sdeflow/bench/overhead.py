r"""Per-step overhead of the fixed-step samplers: sdeflow (and peers) against a hand-written minimal loop.

Every runner integrates the same problem with the same near-free network ``net(x, t) = x`` (the network
returns its input: no kernel), so the time left is the solver's own tensor operations and Python
overhead:

* **sdeflow** — the public ``sdeflow.sample(LinearFlow(), VelocityField(net), solver, x_init=x0,
  steps=S, t_max=0.999, t_min=1e-3, check_finite=False)``; SDE solvers with ``gamma=1`` and a seeded
  ``torch.Generator`` (noise generation included).
* **minimal** — one hand-written loop per update rule (Euler, midpoint, Heun, RK4, Euler-Maruyama,
  stochastic Heun, DDIM/ancestral posterior step, DPM-Solver++(2M)), the leanest a user would write. Like
  ``sample()``, it builds what it needs inside the timed call: its grid, its per-step coefficient floats
  (vectorised, ``.tolist()``; the SDE and prediction rules from the same path-coefficient tables as
  sdeflow) and its ``(batch,)`` time tensors (one tensor expression and one ``unbind``). Every linear
  combination is one scaled copy plus one fused ``add_(alpha=)`` per term (one fused ``add`` where the
  coefficient of ``x`` is 1 on every step), and ``torch.randn`` from a generator for the noise. On this
  problem the ODE drift *is* the network output (:math:`v` on the linear-flow path), so the Runge-Kutta
  loops are the textbook ``x + h f`` updates; SDE and prediction updates are affine in ``(x, n, z)`` and
  folded.
* **peers** — ``torchdiffeq.odeint`` (euler, rk4; fixed grid through ``grid_constructor``),
  ``torchsde.sdeint`` (euler, diagonal noise, ``dt`` grid), diffusers ``EulerDiscreteScheduler`` and
  ``DPMSolverMultistepScheduler`` (order 2, dpmsolver++) step loops as in their docs; each is compared with
  the minimal loop of its update rule. A missing peer is skipped with a note.

Timing: every runner is called at ``S`` and ``S / 4`` steps; per-step time is the difference divided by
``3S / 4`` (fixed per-call costs cancel) and the per-call setup is what is left at ``S / 4``. Runners are
interleaved in every repeat (the machine's load drifts alike for all) and the median over repeats is
reported after one warm-up call each; within a repeat each runner makes one untimed call before its
timed ones, and the order rotates from repeat to repeat (the first runner after the heaviest peer was
measured slow whichever it was). The run has two phases: sdeflow's solvers interleaved with the minimal
loops, then the peers interleaved with the minimal loops of their rules (a peer's ~100 ms calls evict the
caches and slowed the short runner after them by up to ~0.1 us/step). Every ratio is a per-step time over
that of the minimal loop timed in the same phase of the same run.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from typing import Callable

import numpy as np
import torch

__all__ = ["run_overhead", "format_overhead", "MINIMAL", "DEFAULT_SOLVERS", "near_free_net"]

T_MAX, T_MIN, GAMMA = 0.999, 1e-3, 1.0
DEFAULT_SOLVERS = ("euler", "midpoint", "heun", "rk4", "euler_maruyama", "stochastic_heun", "ddim",
                   "ancestral", "dpmpp_2m")


def near_free_net(x, t):
    """The benchmark's network: returns its input (no kernel launched)."""
    return x


# ---- the problem as sdeflow poses it --------------------------------------------------------------------
def _problem():
    from ..fields import VelocityField
    from ..paths import LinearFlow

    return LinearFlow(), VelocityField(near_free_net)


def _is_sde(name: str) -> bool:
    from .. import solvers

    s = solvers.get(name)
    return bool(s.sde)


def _sdeflow_runner(name: str, x0: torch.Tensor, seed: int) -> Callable[[int], torch.Tensor]:
    from ..sample import sample

    path, field = _problem()
    gamma = GAMMA if _is_sde(name) else 0.0

    def run(steps):
        g = torch.Generator(device=x0.device).manual_seed(seed)
        return sample(path, field, name, x_init=x0, steps=steps, t_max=T_MAX, t_min=T_MIN, gamma=gamma,
                      generator=g, check_finite=False).x
    return run


def _term(name: str, x0: torch.Tensor, steps: int):
    """The coefficient tables sdeflow's sampler uses (the SDE and prediction minimal loops read their floats
    from them, so both compute bitwise the same update): built vectorised, with the time tensors by one
    ``unbind``."""
    from .. import solvers
    from ..grids import make_grid
    from ..terms import FieldTerm

    path, field = _problem()
    solver = solvers.get(name)
    grid = make_grid("uniform", path, steps, T_MAX, T_MIN).numpy()
    times, step_of = solver.eval_times(grid, path)  # t_k + c h_k (numpy), vectorised
    sde = bool(solver.sde)
    g2 = np.full(len(times), GAMMA * GAMMA) if sde else None
    fn = (lambda t: torch.full_like(t, GAMMA * GAMMA)) if sde else None
    term = FieldTerm(path, field, times, x0, gamma2=g2, gamma2_fn=fn, step_of=step_of)
    return term, grid, path


# ---- minimal loops: one per update rule ---------------------------------------------------------------
def _times(grid: torch.Tensor, nodes, x0: torch.Tensor) -> list:
    """The network's ``(batch,)`` time tensors at ``t_k + c h_k`` for every step and node: one tensor
    expression and one ``unbind`` (what a user's script builds per call)."""
    c = torch.tensor(nodes, dtype=torch.float64)
    t = (grid[:-1, None] + (grid[1:] - grid[:-1])[:, None] * c).reshape(-1, 1).to(x0.dtype)
    return t.expand(-1, x0.shape[0]).unbind(0)


_NODES = {"euler": [0.0], "midpoint": [0.0, 0.5], "heun": [0.0, 1.0], "rk4": [0.0, 0.5, 0.5, 1.0]}


def _rk_minimal(stages: str):
    """Textbook explicit RK loops on ``f = net`` (the drift of this problem: :math:`v` on the linear-flow
    path). Built inside the timed call: the uniform grid (``torch.linspace``, as ``grid="uniform"``), the
    step sizes (one ``diff`` and ``tolist``) and the time tensors (:func:`_times`)."""
    def build(x0, steps, seed):
        grid = torch.linspace(T_MAX, T_MIN, steps + 1, dtype=torch.float64)
        hs = torch.diff(grid).tolist()
        tb = _times(grid, _NODES[stages], x0)
        f = near_free_net

        if stages == "euler":
            def loop():
                x = x0
                for k in range(steps):
                    x = torch.add(x, f(x, tb[k]), alpha=hs[k])
                return x
        elif stages == "midpoint":
            def loop():
                x = x0
                for k in range(steps):
                    h = hs[k]
                    k1 = f(x, tb[2 * k])
                    x = torch.add(x, f(torch.add(x, k1, alpha=0.5 * h), tb[2 * k + 1]), alpha=h)
                return x
        elif stages == "heun":
            def loop():
                x = x0
                for k in range(steps):
                    h = hs[k]
                    k1 = f(x, tb[2 * k])
                    k2 = f(torch.add(x, k1, alpha=h), tb[2 * k + 1])
                    x = torch.add(x, k1, alpha=0.5 * h).add_(k2, alpha=0.5 * h)
                return x
        else:  # rk4
            def loop():
                x = x0
                for k in range(steps):
                    h = hs[k]
                    j = 4 * k
                    k1 = f(x, tb[j])
                    k2 = f(torch.add(x, k1, alpha=0.5 * h), tb[j + 1])
                    k3 = f(torch.add(x, k2, alpha=0.5 * h), tb[j + 2])
                    k4 = f(torch.add(x, k3, alpha=h), tb[j + 3])
                    x = torch.add(x, k1, alpha=h / 6).add_(k2, alpha=h / 3).add_(k3, alpha=h / 3).add_(k4, alpha=h / 6)
                return x
        return loop
    return build


def _em_minimal(x0, steps, seed):
    """``x' = (1 + hA) x + hB n + g sqrt(h) z``, z from ``torch.randn``."""
    term, grid, _ = _term("euler_maruyama", x0, steps)
    A, B, g = (np.asarray(v[:steps]) for v in term.affine)
    h = np.diff(grid)
    c = list(zip((1.0 + h * A).tolist(), (h * B).tolist(), (g * np.sqrt(np.abs(h))).tolist()))
    tb = term.time_inputs
    shape, dt, f = x0.shape, x0.dtype, near_free_net

    def loop():
        gen = torch.Generator(device=x0.device).manual_seed(seed)
        x = x0
        for k in range(steps):
            a, b, s = c[k]
            n = f(x, tb[k])
            z = torch.randn(shape, generator=gen, dtype=dt, device=x0.device)
            x = torch.mul(x, a).add_(n, alpha=b).add_(z, alpha=s)
        return x
    return loop


def _sheun_minimal(x0, steps, seed):
    """Stochastic Heun with the drift affine in ``(x, n)``: predictor and corrector folded."""
    term, grid, _ = _term("stochastic_heun", x0, steps)
    A, B, g = (np.asarray(v[:2 * steps]).reshape(steps, 2) for v in term.affine)
    h = np.diff(grid)
    sq = np.sqrt(np.abs(h))
    c = list(zip(*(v.tolist() for v in (
        1 + h * A[:, 0], h * B[:, 0], g[:, 0] * sq, 1 + 0.5 * h * A[:, 0], 0.5 * h * B[:, 0],
        0.5 * h * A[:, 1], 0.5 * h * B[:, 1], 0.5 * (g[:, 0] + g[:, 1]) * sq))))
    tb = term.time_inputs
    shape, dt, f = x0.shape, x0.dtype, near_free_net

    def loop():
        gen = torch.Generator(device=x0.device).manual_seed(seed)
        x = x0
        for k in range(steps):
            p0, p1, p2, q0, q1, q2, q3, q4 = c[k]
            n0 = f(x, tb[2 * k])
            z = torch.randn(shape, generator=gen, dtype=dt, device=x0.device)
            pred = torch.mul(x, p0).add_(n0, alpha=p1).add_(z, alpha=p2)
            n1 = f(pred, tb[2 * k + 1])
            x = torch.mul(x, q0).add_(n0, alpha=q1).add_(pred, alpha=q2).add_(n1, alpha=q3).add_(z, alpha=q4)
        return x
    return loop


def _posterior_minimal(variance: str):
    """DDIM (eta = 0) / DDPM ancestral: ``x' = alpha_t x0 + c eps (+ sd z)``, folded to ``A x + B n``."""
    name = "ddim" if variance == "none" else "ancestral"

    def build(x0, steps, seed):
        term, grid, path = _term(name, x0, steps)
        t = torch.as_tensor(grid)
        a, s, _, _ = path.coefficients(t)
        a1, s1, lam = a[1:].numpy(), s[1:].numpy(), path.log_snr(t).numpy()
        Pd, Qd = (v[:steps] for v in term.coeff_arrays("data"))
        Pe, Qe = (v[:steps] for v in term.coeff_arrays("noise"))
        if variance == "none":
            v = np.zeros(steps)
        else:  # math.expm1 (numpy's can differ in the last bit)
            v = s1 * s1 * -np.array([math.expm1(d) for d in (lam[:-1] - lam[1:]).tolist()])
        cc = np.sqrt(np.maximum(s1 * s1 - v, 0.0))
        A = a1 * Pd + cc * Pe
        fused = bool(np.all(A == 1.0))
        c = list(zip(A.tolist(), (a1 * Qd + cc * Qe).tolist(), np.sqrt(v).tolist()))
        tb, shape, dt, f = term.time_inputs, x0.shape, x0.dtype, near_free_net

        def loop():
            gen = torch.Generator(device=x0.device).manual_seed(seed)
            x = x0
            for k in range(steps):
                A, B_, sd = c[k]
                if fused:  # A = 1 on every step (DDIM on the linear-flow path): one fused add
                    x = torch.add(x, f(x, tb[k]), alpha=B_)
                else:
                    x = torch.mul(x, A).add_(f(x, tb[k]), alpha=B_)
                if sd > 0.0:
                    x.add_(torch.randn(shape, generator=gen, dtype=dt, device=x0.device), alpha=sd)
            return x
        return loop
    return build


def _dpmpp2m_minimal(x0, steps, seed):
    """DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2): ``D = P x + Q n``,
    ``x' = (s_t/s_s) x + a_t(1 - e^{-h})[(1 + 1/2r) D - 1/2r D_prev]`` (first step order 1). The weights come
    from sdeflow's one definition of them (:func:`~sdeflow.solvers.exp_multistep.dpmpp_2m_weights`): the
    baseline is the loop around them, hand-written."""
    from ..solvers.ddim import neg_expm1
    from ..solvers.exp_multistep import dpmpp_2m_weights

    term, grid, path = _term("dpmpp_2m", x0, steps)
    t = torch.as_tensor(grid)
    a, s, _, _ = path.coefficients(t)
    a1, ratio, lam = a[1:].numpy(), (s[1:] / s[:-1]).numpy(), (0.5 * path.log_snr(t)).numpy()
    P, Q = (v[:steps] for v in term.coeff_arrays("data"))
    h = lam[1:] - lam[:-1]
    e = -a1 * -neg_expm1(h)  # math.expm1, as sdeflow's tables
    r = np.ones(steps)
    r[1:] = (lam[1:-1] - lam[:-2]) / h[1:]
    w0, w1 = dpmpp_2m_weights(e, r)
    w0[0], w1[0] = e[0], 0.0  # first step: order 1
    c = list(zip(P.tolist(), Q.tolist(), ratio.tolist(), w0.tolist(), w1.tolist()))
    fused = bool(np.all(P == 1.0))
    tb, f = term.time_inputs, near_free_net

    def loop():
        x, d_prev = x0, None
        for k in range(steps):
            p, q, lin, w0, w1 = c[k]
            # D = x + q n in one fused add where p = 1 on every step (the linear-flow path)
            d = torch.add(x, f(x, tb[k]), alpha=q) if fused else torch.mul(x, p).add_(f(x, tb[k]), alpha=q)
            x = torch.mul(x, lin).add_(d, alpha=w0)
            if d_prev is not None:
                x.add_(d_prev, alpha=w1)
            d_prev = d
        return x
    return loop


MINIMAL: dict[str, Callable] = {
    "euler": _rk_minimal("euler"), "midpoint": _rk_minimal("midpoint"), "heun": _rk_minimal("heun"),
    "rk4": _rk_minimal("rk4"), "euler_maruyama": _em_minimal, "stochastic_heun": _sheun_minimal,
    "ddim": _posterior_minimal("none"), "ancestral": _posterior_minimal("posterior"),
    "dpmpp_2m": _dpmpp2m_minimal,
}


class _Sized:
    """A minimal loop, built inside every timed call (its grid, coefficient floats and time tensors cost
    per-step time the way a user's script pays it)."""

    def __init__(self, build, x0, seed):
        self.build, self.x0, self.seed = build, x0, seed

    def __call__(self, steps):
        return self.build(self.x0, steps, self.seed)()


# ---- peers ------------------------------------------------------------------------------------------------
def _peer_runners(x0: torch.Tensor, notes: list) -> dict[str, tuple[str, Callable]]:
    """``peer name -> (minimal loop it is compared with, runner(steps))``."""
    out = {}
    f = near_free_net
    try:
        import torchdiffeq

        def td(method):
            def run(steps):
                def grid(func, y0, t):
                    return torch.linspace(float(t[0]), float(t[-1]), steps + 1, dtype=t.dtype, device=t.device)
                t = torch.tensor([T_MAX, T_MIN], dtype=x0.dtype)
                return torchdiffeq.odeint(lambda t, x: f(x, t), x0, t, method=method,
                                          options={"grid_constructor": grid})[-1]
            return run
        out["torchdiffeq:euler"] = ("euler", td("euler"))
        out["torchdiffeq:rk4"] = ("rk4", td("rk4"))
    except ImportError:
        notes.append("torchdiffeq not installed: its rows are skipped")
    try:
        import torchsde

        class _SDE(torch.nn.Module):
            noise_type, sde_type = "diagonal", "ito"

            def __init__(self):
                super().__init__()
                self.gval = torch.full_like(x0, GAMMA)

            def f(self, t, y):
                return f(y, t)

            def g(self, t, y):
                return self.gval

        sde = _SDE()

        def ts_run(steps):
            t = torch.tensor([0.0, T_MAX - T_MIN], dtype=x0.dtype)
            return torchsde.sdeint(sde, x0, t, dt=(T_MAX - T_MIN) / steps, method="euler")[-1]
        out["torchsde:euler"] = ("euler_maruyama", ts_run)
    except ImportError:
        notes.append("torchsde not installed: its rows are skipped")
    try:
        import diffusers

        def df(make, base):
            def run(steps):
                sch = make()
                sch.set_timesteps(steps)
                x = x0 * sch.init_noise_sigma
                for t in sch.timesteps:
                    n = f(sch.scale_model_input(x, t), t)
                    x = sch.step(n, t, x).prev_sample
                return x
            return base, run
        out["diffusers:EulerDiscrete"] = df(lambda: diffusers.EulerDiscreteScheduler(), "euler")
        out["diffusers:DPMSolverMultistep"] = df(
            lambda: diffusers.DPMSolverMultistepScheduler(solver_order=2, algorithm_type="dpmsolver++"),
            "dpmpp_2m")
    except ImportError:
        notes.append("diffusers not installed: its rows are skipped")
    return out


# ---- the measurement --------------------------------------------------------------------------------------
def _timed(fn, steps) -> float:
    gc.disable()  # no collection pauses inside a timed call
    try:
        t0 = time.perf_counter()
        fn(steps)
        return time.perf_counter() - t0
    finally:
        gc.enable()


def _time_phase(runners: dict, steps: int, small: int, repeats: int, reduce):
    """Per-step time and per-call setup of each runner, interleaved over ``repeats`` (order rotating)."""
    for fn in runners.values():  # warm-up (and first build of the minimal loops)
        fn(steps)
        fn(small)
    samples = {key: ([], []) for key in runners}
    order = list(runners.items())
    for r in range(repeats):
        # the order rotates with the repeat: no runner is always the first after a heavier one
        for key, fn in order[r % len(order):] + order[:r % len(order)]:
            fn(small)  # untimed: every runner is timed warm, not cold after a heavier one
            samples[key][0].append(_timed(fn, steps))
            samples[key][1].append(_timed(fn, small))
    per_step, setup = {}, {}
    for key, (big, sm) in samples.items():
        tb, ts = reduce(big), reduce(sm)
        per_step[key] = (tb - ts) / (steps - small)
        setup[key] = ts - small * per_step[key]
    return per_step, setup


def run_overhead(solvers=None, batches=(1, 65536), steps: int = 400, repeats: int = 5, peers: bool = True,
                 notes: list | None = None, dtype: torch.dtype = torch.float32, dim: int = 2,
                 seed: int = 0, stat: str = "median", verbose: bool = False) -> list[dict]:
    """Per-step time of each fixed-step solver (through ``sdeflow.sample``) and of each peer, as a ratio to
    the minimal loop of the same update rule, at each batch size (see the module docstring).

    Returns JSON-able rows: ``runner`` (``"sdeflow"``, ``"minimal"`` or ``"peer"``), ``solver`` (the peer's
    name for peers), ``baseline`` (the minimal loop compared with), ``batch``, ``dim``, ``dtype``, ``steps``,
    ``us_per_step``, ``setup_ms`` (per-call cost beyond the steps), ``ratio`` (per-step time / the minimal
    loop's; None without one) and for sdeflow ``max_abs_diff`` to the minimal loop's output (they compute
    the same update). ``notes`` (a list) receives lines about skipped peers. ``stat``: ``"median"`` of the
    interleaved repeats, or ``"min"`` (robust when other processes load the machine).
    """
    if stat not in ("median", "min"):
        raise ValueError(f"stat must be 'median' or 'min', got {stat!r}")
    reduce = statistics.median if stat == "median" else min
    from .. import solvers as _solvers

    notes = [] if notes is None else notes
    names = list(DEFAULT_SOLVERS if solvers is None else solvers)
    for n in names:
        s = _solvers.get(n)
        if s.adaptive:
            raise ValueError(f"{n!r} is adaptive: the per-step overhead is measured for fixed-step solvers")
    small = max(steps // 4, 1)
    if small >= steps:
        raise ValueError(f"steps must be at least 2, got {steps}")
    rows = []
    for batch in batches:
        gen = torch.Generator().manual_seed(seed)
        x0 = torch.randn((batch, dim), generator=gen, dtype=dtype)
        runners: dict[tuple[str, str], Callable] = {}
        base_of: dict[tuple[str, str], str | None] = {}
        for n in names:
            runners[("sdeflow", n)] = _sdeflow_runner(n, x0, seed)
            base_of[("sdeflow", n)] = n if n in MINIMAL else None
            if n in MINIMAL:
                runners[("minimal", n)] = _Sized(MINIMAL[n], x0, seed)
                base_of[("minimal", n)] = n
            else:
                notes.append(f"{n}: no minimal loop written for this update rule; per-step time only")
        if peers:
            for pname, (base, run) in _peer_runners(x0, notes if batch == batches[0] else []).items():
                if base not in MINIMAL:
                    continue
                if ("minimal", base) not in runners:
                    runners[("minimal", base)] = _Sized(MINIMAL[base], x0, seed)
                    base_of[("minimal", base)] = base
                runners[("peer", pname)] = run
                base_of[("peer", pname)] = base
        # Two phases, each interleaving its runners with the minimal loops it is compared with: sdeflow's
        # solvers, then the peers. A peer's long calls (torchsde: ~100 ms) evict caches and slow whichever
        # short runner follows; phases keep that out of the sdeflow/minimal comparison, and every ratio is
        # still taken against a minimal loop timed in the same phase.
        per_step, setup, minimal_of = {}, {}, {}
        phase_sdeflow = [k for k in runners if k[0] != "peer"]
        phase_peers = [k for k in runners if k[0] == "peer"]
        phase_peers += sorted({("minimal", base_of[k]) for k in phase_peers})
        for phase in (phase_sdeflow, phase_peers):
            if not any(k[0] != "minimal" for k in phase):
                continue
            ps, su = _time_phase({k: runners[k] for k in phase}, steps, small, repeats, reduce)
            for k in phase:
                if k[0] == "minimal":
                    per_step.setdefault(k, ps[k])  # the row reports the first phase's minimal loop
                    setup.setdefault(k, su[k])
                else:
                    per_step[k], setup[k] = ps[k], su[k]
                    base = base_of[k]
                    if base is not None:
                        minimal_of[k] = ps[("minimal", base)]
        for key in runners:
            kind, name = key
            base = base_of[key]
            mkey = ("minimal", base) if base is not None else None
            row = {"runner": kind, "solver": name, "baseline": base, "batch": int(batch), "dim": dim,
                   "dtype": str(dtype).replace("torch.", ""), "steps": steps, "stat": stat,
                   "us_per_step": per_step[key] * 1e6, "setup_ms": setup[key] * 1e3,
                   "ratio": (per_step[key] / per_step[mkey] if kind == "minimal" else
                             per_step[key] / minimal_of[key] if key in minimal_of else None)}
            if kind == "sdeflow" and mkey in runners:
                a, b = runners[key](small), runners[mkey](small)
                row["max_abs_diff"] = float((a - b).abs().max())
            rows.append(row)
            if verbose:
                print(_format_row(row), flush=True)
    return rows


def _format_row(r: dict) -> str:
    ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
    diff = f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else ""
    return (f"{r['runner']:8s} {r['solver']:30s} {r['batch']:>7d} {r['dtype']:8s} {r['us_per_step']:10.2f} "
            f"{ratio:>7s} {r['setup_ms']:9.2f} {diff:>9s}")


def format_overhead(rows: list[dict]) -> str:
    """A plain-text table of :func:`run_overhead` rows (per-step microseconds, ratio to the minimal loop)."""
    head = (f"{'runner':8s} {'solver':30s} {'batch':>7s} {'dtype':8s} {'us/step':>10s} {'ratio':>7s} "
            f"{'setup ms':>9s} {'max diff':>9s}")
    return "\n".join([head, "-" * len(head)] + [_format_row(r) for r in rows])


def format_overhead_markdown(rows: list[dict]) -> str:
    """The sdeflow and peer ratios as a Markdown table, one column per batch size."""
    batches = sorted({r["batch"] for r in rows})
    keys = [(r["runner"], r["solver"]) for r in rows if r["runner"] != "minimal"]
    keys = list(dict.fromkeys(keys))
    out = ["| runner | solver | " + " | ".join(f"batch {b}: us/step (ratio)" for b in batches) + " |",
           "|---|---|" + "---|" * len(batches)]
    for kind, name in keys:
        cells = []
        for b in batches:
            r = next((r for r in rows if (r["runner"], r["solver"], r["batch"]) == (kind, name, b)), None)
            if r is None:
                cells.append("-")
            else:
                ratio = "" if r["ratio"] is None else f" ({r['ratio']:.2f}x)"
                cells.append(f"{r['us_per_step']:.1f}{ratio}")
        out.append(f"| {kind} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(out)
