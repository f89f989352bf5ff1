"""Adaptive ODE solvers on heterogeneous batches: error against the exact flow versus work and wall time.

    python benchmarks/adaptive_per_sample.py                    # 200 samples, rtol = atol in 1e-3 1e-5 1e-7
    python benchmarks/adaptive_per_sample.py --n 100 --tols 1e-4 --json out.json --plot docs/img/x.png
    python benchmarks/adaptive_per_sample.py --overhead         # per-sample vs shared step, batch 1 .. 2000

Every method integrates the same probability-flow ODE ``dx/dt = v(x, t)`` in the path's own time ``t`` (one Python
function ``v``, counted), from the same initial states, from ``t_max`` to ``t_min``:

* ``sdeflow per-sample``: ``sdeflow.sample(..., "dopri5")`` (every sample its own step size; finished rows leave
  the batched evaluation);
* ``sdeflow shared``: ``dopri5(per_sample=False)`` (one step size from the worst sample's error);
* ``torchdiffeq``: ``torchdiffeq.odeint(v, x, [t_max, t_min], method="dopri5")`` (one step size from the RMS over
  the whole batch);
* ``torchode``: ``torchode.Dopri5`` with its ``IntegralController`` and ``AutoDiffAdjoint`` (every sample its own
  step size; all rows evaluated until the last finishes). torchode is not a dependency: it is used when importable
  (e.g. ``pip install --target /tmp/torchode_pkg torchode torchtyping "typeguard<3" --no-deps`` and
  ``--torchode-path /tmp/torchode_pkg``), else its rows are left out.

Problems (float64, states from the exact marginal at ``t_max``): 2-D mixtures whose components' widths range from
0.01 to 0.8 (samples heading for a narrow component are stiffer near ``t_min``) on VE (sigma 80 -> 0.002) and VP
(t 1 -> 1e-3), a 16-D mixture on VP, and the VE problem with a small MLP (2 hidden layers of 64) added to the exact
noise prediction. Exact oracles: ``v`` from :class:`sdeflow.GaussianMixture`. Reference: SciPy's DOP853 at
rtol = atol = 1e-12 on the same ``v``.

Reported per method and tolerance: RMS error over all entries; the worst sample's error; batched calls of ``v``;
row evaluations (the samples ``v`` was evaluated on, summed over calls: the work); wall time (best of
``--repeats``, after a warm-up; noisy on a shared machine, the evaluations are the figure to compare); and batch
invariance: the largest difference between 4 samples solved alone and the same samples inside the batch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch

import sdeflow as sf
from sdeflow.analytic import GaussianMixture

D = torch.float64


# ---- problems -------------------------------------------------------------------------------------------
def hetero2d() -> GaussianMixture:
    """Six components on a circle of radius 2, widths 0.01 .. 0.8 (geometric)."""
    k = torch.arange(6, dtype=D)
    means = 2.0 * torch.stack([torch.cos(2 * math.pi * k / 6), torch.sin(2 * math.pi * k / 6)], 1)
    return GaussianMixture(torch.ones(6), means, 0.01 * (80.0 ** (k / 5)))


def hetero16d() -> GaussianMixture:
    g = torch.Generator().manual_seed(4)
    K = 8
    return GaussianMixture(torch.ones(K), 2.0 * torch.randn(K, 16, generator=g, dtype=D),
                           0.02 * (30.0 ** (torch.arange(K, dtype=D) / (K - 1))))


class MLP(torch.nn.Module):
    """(x, log sigma) -> a correction to the noise prediction, scaled by 0.05 (fixed random weights)."""

    def __init__(self, dim: int):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(dim + 1, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64),
                                       torch.nn.SiLU(), torch.nn.Linear(64, dim)).to(D)

    def forward(self, x, t_feature):
        return 0.05 * self.net(torch.cat([x, t_feature[:, None]], 1))


def make_velocity(path, target, mlp=None):
    """``v(x, t)`` for ``t`` a number or ``(batch,)``: the probability-flow velocity from the (exact, or exact + MLP)
    noise prediction, ``v = (da/a) x + (ds - da s / a) eps``."""

    def v(x, t):
        tb = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0]) if not torch.is_tensor(t) or t.dim() == 0 else t
        tb = tb.to(x.dtype)
        a, s, da, ds = (c.to(x.dtype)[:, None] for c in path.coefficients(tb))
        eps = target.noise(x, tb, path)
        if mlp is not None:
            eps = eps + mlp(x / torch.sqrt(a * a + s * s), torch.log(s[:, 0]))
        return (da / a) * x + (ds - da * s / a) * eps
    return v


PROBLEMS = {  # name -> (path, target, t_max, t_min, mlp?)
    "VE 2-D mixture (exact)": (lambda: sf.VE(sigma_min=0.002, sigma_max=80.0), hetero2d, 1.0, 0.0, False),
    "VP 2-D mixture (exact)": (lambda: sf.VP(), hetero2d, 1.0, 1e-3, False),
    "VP 16-D mixture (exact)": (lambda: sf.VP(), hetero16d, 1.0, 1e-3, False),
    "VE 2-D mixture + MLP": (lambda: sf.VE(sigma_min=0.002, sigma_max=80.0), hetero2d, 1.0, 0.0, True),
}


class Counted:
    """Counts batched calls and the rows they evaluated."""

    def __init__(self, fn):
        self.fn, self.calls, self.rows = fn, 0, 0

    def __call__(self, x, t):
        self.calls += 1
        self.rows += x.shape[0]
        return self.fn(x, t)


# ---- methods ----------------------------------------------------------------------------------------------
def run_sdeflow(per_sample):
    def run(path, v, x, t_max, t_min, tol):
        field = sf.VelocityField(lambda x, t: v(x, t))
        with torch.no_grad():
            return sf.sample(path, field, "dopri5", x_init=x, t_max=t_max, t_min=t_min, rtol=tol, atol=tol,
                             per_sample=per_sample, preflight=False).x
    return run


def run_torchdiffeq(path, v, x, t_max, t_min, tol):
    import torchdiffeq

    with torch.no_grad():
        # its initial-step probe evaluates beyond t_min: clamped to the window (as sdeflow's terms do)
        out = torchdiffeq.odeint(lambda t, y: v(y, t.clamp(t_min, t_max).expand(y.shape[0])), x,
                                 torch.tensor([t_max, t_min], dtype=D), method="dopri5", rtol=tol, atol=tol)
    return out[-1]


def run_torchode(path, v, x, t_max, t_min, tol):
    import torchode as to

    term = to.ODETerm(lambda t, y: v(y, t.clamp(t_min, t_max)))
    solver = to.AutoDiffAdjoint(to.Dopri5(term=term), to.IntegralController(atol=tol, rtol=tol, term=term))
    n = x.shape[0]
    problem = to.InitialValueProblem(y0=x, t_start=torch.full((n,), t_max, dtype=D),
                                     t_end=torch.full((n,), t_min, dtype=D))
    with torch.no_grad():
        sol = solver.solve(problem)
    return sol.ys[:, -1]


def reference(v, x, t_max, t_min):
    from scipy.integrate import solve_ivp

    shape = x.shape

    def rhs(t, y):
        xt = torch.from_numpy(y).reshape(shape)
        return v(xt, torch.full((shape[0],), t, dtype=D)).reshape(-1).numpy()

    sol = solve_ivp(rhs, (t_max, t_min), x.reshape(-1).numpy(), method="DOP853", rtol=1e-12, atol=1e-12)
    assert sol.success, sol.message
    return torch.from_numpy(sol.y[:, -1]).reshape(shape)


def overhead(batches=(1, 16, 200, 2000), tol=1e-5, repeats=3):
    """Per-sample against shared-step ``dopri5`` on the VE 2-D problem (near-free exact field): wall time, calls and
    time per batched call at each batch size (the cost of per-sample control and compaction)."""
    mk_path, mk_target, t_max, t_min, _ = PROBLEMS["VE 2-D mixture (exact)"]
    path, target = mk_path(), mk_target()
    v0 = make_velocity(path, target)
    out = []
    for n in batches:
        x = target.marginal(path, t_max).sample(n, generator=torch.Generator().manual_seed(1), dtype=D)
        for per_sample in (True, False):
            run = run_sdeflow(per_sample)
            run(path, v0, x[:8], t_max, t_min, tol)
            best = math.inf
            for _ in range(repeats):
                v = Counted(v0)
                t0 = time.perf_counter()
                run(path, v, x, t_max, t_min, tol)
                best = min(best, time.perf_counter() - t0)
            out.append(dict(batch=n, per_sample=per_sample, seconds=best, calls=v.calls, row_evaluations=v.rows,
                            ms_per_call=1e3 * best / v.calls))
            r = out[-1]
            print(f"batch {n:5d}  {'per-sample' if per_sample else 'shared    '}  {best:6.3f} s  calls {v.calls:4d}  "
                  f"row evals {v.rows:7d}  {r['ms_per_call']:.2f} ms/call", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--tols", nargs="*", type=float, default=[1e-3, 1e-5, 1e-7])
    ap.add_argument("--problems", nargs="*", default=list(PROBLEMS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--torchode-path", default=None, help="a directory holding torchode (put first on sys.path)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None, help="write the error-versus-evaluations figure here (matplotlib)")
    ap.add_argument("--overhead", action="store_true", help="only the per-sample vs shared-step overhead at batch "
                    "sizes 1, 16, 200, 2000")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if a.overhead:
        return overhead()
    if a.torchode_path:
        sys.path.insert(0, a.torchode_path)
    methods = {"sdeflow per-sample": run_sdeflow(True), "sdeflow shared": run_sdeflow(False),
               "torchdiffeq": run_torchdiffeq}
    try:
        import torchode  # noqa: F401
        methods["torchode"] = run_torchode
    except ImportError:
        print("torchode not importable: its rows are left out (see --torchode-path)")
    rows = []
    for name in a.problems:
        mk_path, mk_target, t_max, t_min, with_mlp = PROBLEMS[name]
        path, target = mk_path(), mk_target()
        mlp = MLP(target.dim) if with_mlp else None
        v0 = make_velocity(path, target, mlp)
        x = target.marginal(path, t_max).sample(a.n, generator=torch.Generator().manual_seed(1), dtype=D)
        with torch.no_grad():
            exact = reference(v0, x, t_max, t_min)
        for run in methods.values():  # warm-up (first-call costs are not the method's)
            run(path, v0, x[:8], t_max, t_min, max(a.tols))
        for tol in a.tols:
            for mname, run in methods.items():
                best = math.inf
                for _ in range(a.repeats):
                    v = Counted(v0)
                    t0 = time.perf_counter()
                    out = run(path, v, x, t_max, t_min, tol)
                    best = min(best, time.perf_counter() - t0)
                err = (out - exact).pow(2).mean().sqrt().item()
                worst = (out - exact).abs().amax(1).max().item()
                alone = torch.cat([run(path, v0, x[i:i + 1], t_max, t_min, tol) for i in range(4)])
                inv = (alone - out[:4]).abs().max().item()
                rows.append(dict(problem=name, method=mname, tol=tol, n=a.n, rms_error=err, worst_sample_error=worst,
                                 calls=v.calls, row_evaluations=v.rows, seconds=best, alone_vs_batch=inv))
                print(f"{name:26s} {mname:19s} tol {tol:.0e}  rms {err:.2e}  worst {worst:.2e}  calls {v.calls:5d}  "
                      f"row evals {v.rows:7d}  {best:6.2f} s  alone-vs-batch {inv:.1e}", flush=True)
    print()
    print(markdown(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    if a.plot:
        plot(rows, a.plot)
    return rows


def markdown(rows) -> str:
    out = ["| problem | rtol = atol | method | RMS error | worst sample | calls | row evaluations | wall s | "
           "alone vs batch |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['problem']} | {r['tol']:.0e} | {r['method']} | {r['rms_error']:.2e} | "
                   f"{r['worst_sample_error']:.2e} | {r['calls']} | {r['row_evaluations']} | {r['seconds']:.2f} | "
                   f"{r['alone_vs_batch']:.1e} |")
    return "\n".join(out)


def plot(rows, file):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = list(dict.fromkeys(r["problem"] for r in rows))
    fig, axes = plt.subplots(2, len(problems), figsize=(4.2 * len(problems), 7.0), squeeze=False)
    for j, p in enumerate(problems):
        for m in dict.fromkeys(r["method"] for r in rows):
            rs = [r for r in rows if r["problem"] == p and r["method"] == m]
            per_sample = [r["row_evaluations"] / r["n"] for r in rs]
            axes[0, j].loglog(per_sample, [r["rms_error"] for r in rs], "o-", label=m)
            axes[1, j].loglog([r["seconds"] for r in rs], [r["rms_error"] for r in rs], "o-", label=m)
        axes[0, j].set_title(p, fontsize=9)
        axes[0, j].set_xlabel("evaluations per sample (row evaluations / n)")
        axes[1, j].set_xlabel("wall time, s (1 thread, shared machine)")
        axes[0, j].set_ylabel("RMS error vs exact flow")
        axes[1, j].set_ylabel("RMS error vs exact flow")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(file, dpi=90)


if __name__ == "__main__":
    main()
