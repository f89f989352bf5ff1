"""Inversion (data -> noise) and the round trip back, per ODE solver and NFE: the table of
docs/tutorials/editing.md (printed as Markdown).

Problem: VP path, the exact noise field of the two-blob Gaussian mixture (``sdeflow.two_blobs()``, 2-D), 512
data points drawn from it (seed 0), float64, the default window (t from 1e-3 to 1), log-SNR grids. For each
solver and budget: ``z = sdeflow.editing.invert(path, field, x0, solver, nfe=N, grid="log_snr")`` and
``x1 = sample(path, field, solver, grid=z.ts reversed, x_init=z.x)``; reported

* inversion error: ``max |z - z_ref|`` over the samples, with ``z_ref`` the same inversion by rk4 with 4096
  steps (its own error below 1e-9 here: rk4 at 2048 steps differs from it by less than that);
* round-trip error: the median and the max over the samples of ``|x1 - x0|`` (the largest coordinate of each
  sample; data scale: the blobs' stds are 0.3-0.6). Points between the blobs, where the flow map's Jacobian
  is large, set the max.

NFE is per direction (a round trip costs twice). dopri5 chooses its steps (rtol = atol = 1e-3, 1e-5).

    python benchmarks/inversion_roundtrip.py
"""

from __future__ import annotations

import torch

import sdeflow as sf
from sdeflow import editing as ed

torch.set_num_threads(1)
D = torch.float64
PATH = sf.VP()
TARGET = sf.two_blobs()
FIELD = sf.analytic.OracleField(TARGET, "noise")
X0 = TARGET.sample(512, generator=torch.Generator().manual_seed(0), dtype=D)
SOLVERS = ["ddim", "euler", "dpmpp_2m", "exp_multistep", "heun", "midpoint", "dpm_solver_2", "dpmpp_3m", "dpm_solver_3",
           "unipc", "rk4"]
BUDGETS = [10, 20, 50, 100]


def reference(n_steps: int) -> torch.Tensor:
    return ed.invert(PATH, FIELD, X0, "rk4", steps=n_steps, grid="log_snr").x


def row(solver, **kw):
    z = ed.invert(PATH, FIELD, X0, solver, grid="log_snr", **kw)
    x1 = sf.sample(PATH, FIELD, solver, grid=z.ts.tolist()[::-1], x_init=z.x, **{k: v for k, v in kw.items()
                                                                                  if k in ("rtol", "atol")})
    e = (x1.x - X0).abs().amax(1)
    return z.nfe, float((z.x - REF).abs().max()), f"{float(e.median()):.1e} / {float(e.max()):.1e}"


if __name__ == "__main__":
    REF = reference(4096)
    check = float((reference(2048) - REF).abs().max())
    print(f"reference check: rk4 2048 vs 4096 steps differ by {check:.1e}\n")
    print("| solver | order | " + " | ".join(f"NFE {b}" for b in BUDGETS) + " |")
    print("|---|---|" + "---|" * len(BUDGETS))
    for s in SOLVERS:
        cells = []
        for b in BUDGETS:
            try:
                nfe, e_inv, e_rt = row(s, nfe=b)
                cells.append(f"{e_inv:.1e} / {e_rt}" + ("" if nfe == b else f" ({nfe})"))
            except sf.SdeflowValueError:
                cells.append("-")
        print(f"| `{s}` | {sf.solvers.get(s).order:g} | " + " | ".join(cells) + " |")
    cells = []
    for tol in (1e-3, 1e-5):
        nfe, e_inv, e_rt = row("dopri5", rtol=tol, atol=tol)
        cells.append(f"rtol {tol:g}: NFE {nfe}, {e_inv:.1e} / {e_rt}")
    print("| `dopri5` | 5 | " + " | ".join(cells) + " |" + " |" * (len(BUDGETS) - 2))
    print("\ncells: inversion error (max) / round-trip error (median / max); (n): the NFE spent when below the budget")
