"""The fewest steps the preflight probe accepts, per SDE solver and path (reverse SDE, noise field, default
window, uniform grid in the path's time): the table in docs/reliability.md.

    python benchmarks/min_steps.py
"""

from __future__ import annotations

import torch

import sdeflow as sf

SOLVERS = ["euler_maruyama", "stochastic_heun", "sra1", "pc", "sde_dpmpp_2m"]
PATHS = {"VP": sf.VP, "SubVP": sf.SubVP, "CosineVP": sf.CosineVP, "VE": sf.VE, "EDM": sf.EDM,
         "LinearFlow": sf.LinearFlow}
CAP = 4096


def accepted(path, solver: str, steps: int) -> bool:
    field = sf.Gaussian(torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)).field("noise")
    try:
        sf.sample(path, field, solver, steps=steps, n=1, shape=(2,), dtype=torch.float64, gamma="reverse",
                  generator=torch.Generator().manual_seed(0))
    except sf.UnstableError:
        return False
    return True


def min_steps(path, solver: str) -> int | None:
    """The smallest accepted step count (doubling, then bisection; acceptance is monotone in practice)."""
    hi = 1
    while not accepted(path, solver, hi):
        if hi >= CAP:
            return None
        hi *= 2
    lo = hi // 2  # refused (or 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if accepted(path, solver, mid) else (mid, hi)
    return hi


def main() -> None:
    torch.set_num_threads(1)
    print("| solver | " + " | ".join(PATHS) + " |")
    print("|---|" + "---|" * len(PATHS))
    for s in SOLVERS:
        cells = []
        for make in PATHS.values():
            m = min_steps(make(), s)
            cells.append(f">{CAP}" if m is None else str(m))
        print(f"| `{s}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
