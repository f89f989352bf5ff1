"""Step programs (sdeflow.solvers.program): the one definition of the fixed-step updates it expresses.

* the generated loop (``Program.run``, all steps in one function) equals the program interpreted step by
  step (``Program.step``, through ``term.net``) bitwise, with the exact NFE, for every registered solver
  whose step is a program;
* on a user's drift (``sdeflow.solve``: ``CallableTerm`` presents ``A = 0``, ``B = 1``, the drift as the
  network) every explicit Runge-Kutta solver equals the textbook loop over its tableau bitwise;
* a program holds no per-solve state (its carried buffers live in the solve's state dict).
"""

import pytest
import torch

import sdeflow as sf
from sdeflow import solvers
from sdeflow.solvers.explicit_rk import ExplicitRK

from .fixed_step import BATCH, GAMMA, PATH, STEPS, TARGET  # noqa: F401
from .fixed_step import setup as _setup


def _program(name: str):
    s, term, x0, grid, _ = _setup(name)
    state = s.init_state(term, x0, grid)
    return state.get("program") if isinstance(state, dict) else None


PROGRAMS = [n for n in solvers.available(adaptive=False) if _program(n) is not None]
RK = [n for n in solvers.available() if isinstance(solvers.get(n), ExplicitRK)]


def test_the_sweeps_find_the_program_families():
    assert {"euler", "rk4", "ssprk3", "euler_maruyama", "stochastic_heun", "ddim", "ancestral",
            "dpmpp_2m", "dpmpp_3m", "sde_dpmpp_2m"} <= set(PROGRAMS)
    assert {"euler", "heun", "midpoint", "rk4", "ssprk3"} <= set(RK)


@pytest.mark.parametrize("name", PROGRAMS)
def test_generated_loop_equals_stepwise_loop(name):
    """``integrate`` without a callback runs the generated loop; step by step the same program is interpreted
    through ``term.net``: both give bitwise the same state and the exact NFE."""
    s, term, x0, grid, noise = _setup(name)
    term.nfe = 0
    fast = s.integrate(term, x0, grid, noise)[0]
    assert term.nfe == s.nfe_for_steps(STEPS)
    s, slow_term, x0, grid, noise = _setup(name)
    state = s.init_state(slow_term, x0, grid)
    x = x0
    for k in range(STEPS):
        x = s.step(slow_term, k, x, grid[k], grid[k + 1], noise, state)
    assert slow_term.nfe == term.nfe
    assert torch.equal(fast, x)


@pytest.mark.parametrize("name", PROGRAMS)
def test_a_program_holds_no_per_solve_state(name):
    """A program is shared by the solves on one term and grid (``Solver.cached_program``): stepping it leaves
    it as it was; what a step hands to the next (a multistep history) is in the solve's state dict."""
    s, term, x0, grid, noise = _setup(name)
    state = s.init_state(term, x0, grid)
    prog = state["program"]
    before = dict(vars(prog))
    x = x0
    for k in range(STEPS):
        x = s.step(term, k, x, grid[k], grid[k + 1], noise, state)
    assert vars(prog).keys() == before.keys()
    assert all(vars(prog)[key] is v for key, v in before.items())
    if prog.prologue:
        assert set(state["carry"]) == {d for d, _ in prog.prologue}
        assert "carry" in s.carried  # replayed by grad="checkpoint"


def _textbook(tab, drift, x, grid):
    """The explicit RK loop over the tableau's nonzero entries (stage inputs ``x + h sum a_ij k_j``, update
    ``x + h sum b_i k_i``), each a chain of fused adds."""
    def comb(ks, row, h):
        out = None
        for j, a in row:
            out = torch.add(x, ks[j], alpha=h * a) if out is None else out.add_(ks[j], alpha=h * a)
        return x if out is None else out

    for k in range(len(grid) - 1):
        t0, h = grid[k], grid[k + 1] - grid[k]
        ks = []
        for i, c in enumerate(tab.c):
            xi = comb(ks, tab._rows[i], h) if i else x
            ks.append(drift(xi, torch.full((x.shape[0],), t0 + c * h, dtype=x.dtype)))
        x = comb(ks, tab._brow, h)
    return x


@pytest.mark.parametrize("name", RK)
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_runge_kutta_on_a_users_drift_is_the_textbook_loop(name, direction):
    def drift(x, t):
        return torch.sin(2 * x) - x + torch.cos(3 * t)[:, None]

    x0 = torch.randn(32, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    grid = torch.linspace(0.0, 1.0, 7, dtype=torch.float64)
    if direction == "backward":
        grid = grid.flip(0)
    out = sf.solve(drift, None, x0, grid, name)
    tab = solvers.get(name).tableau
    assert torch.equal(out.x, _textbook(tab, drift, x0, grid.tolist()))
    assert out.nfe == 6 * tab.stages


def test_rk_declarations_come_from_the_tableau():
    for name in RK:
        s = solvers.get(name)
        assert (s.order, s.evals_per_step) == (s.tableau.order, s.tableau.evals_per_step)
