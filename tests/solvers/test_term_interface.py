"""The term interface: solvers read only what ``sdeflow.terms.Term`` declares, and per-solve state (the evaluation
count, the check flag, the accepted-step hook) belongs to each solve, not to the term it runs on."""

import pathlib
import re

import numpy as np
import pytest
import torch

import sdeflow as sf
from sdeflow import solvers
from sdeflow.runner import run
from sdeflow.terms import CallableTerm, FieldTerm, RunContext, Term

ROOT = pathlib.Path(sf.__file__).parent
# every ``term.<name>`` and ``getattr(term, "<name>"...)`` (the latter is how undeclared reads used to hide)
_READ = re.compile(r"\bterm\.([A-Za-z_]\w*)|getattr\(\s*term\s*,\s*[\"'](\w+)[\"']")


def _reads(source: str) -> set:
    return {m.group(1) or m.group(2) for m in _READ.finditer(source)}


def _undeclared(files) -> dict:
    out: dict = {}
    for p in files:
        for name in _reads(p.read_text()):
            if name.startswith("_") or not hasattr(Term, name):
                out.setdefault(name, []).append(p.name)
    return out


def test_solvers_read_only_declared_term_attributes():
    """Every attribute or method a solver (or the runner, solve and sample) asks of a term is declared, public,
    on the Term base class."""
    files = sorted((ROOT / "solvers").glob("*.py")) + [ROOT / f for f in ("runner.py", "solve.py", "sample.py",
                                                                          "stability.py", "gradients.py")]
    assert len(files) > 15
    assert _undeclared(files) == {}


def test_the_interface_check_can_fail(tmp_path):
    """The scan sees plain reads, getattr reads and private reads."""
    f = tmp_path / "fake_solver.py"
    f.write_text("def step(term, x):\n    a = term.not_declared_anywhere\n    b = getattr(term, 'also_missing', 0)\n"
                 "    return term._private + term.drift(0, x)\n")
    assert set(_undeclared([f])) == {"not_declared_anywhere", "also_missing", "_private"}


def test_term_base_defaults_serve_a_minimal_term():
    """A term defining only its drift presents the documented defaults (what a generic solver falls back on)."""

    class Minimal(Term):
        def drift(self, j, x):
            self.nfe += 1
            return -x

    t = Minimal()
    assert (t.affine, t.is_sde, t.additive, t.noise_type, t.piecewise, t.max_nfe, t.span, t.kind) == (
        None, False, True, "diagonal", False, None, None, None)
    assert t.fast_parts(torch.zeros(1)) is None and t.on_accept is None and t.interval is None
    assert isinstance(t.context, RunContext) and t.nfe == 0
    with pytest.raises(sf.errors.SdeflowTypeError, match="field on a Gaussian path"):
        t.predict(0, torch.zeros(1), "data")
    x = torch.ones(3, 2)
    out, _ = solvers.get("euler").integrate(t, x, [1.0, 0.5, 0.0])
    assert t.nfe == 2 and torch.equal(out, x * 2.25)  # x' = -x backwards in time
    assert Minimal().context is not t.context  # every term its own


def _field_term(solver, grid, x):
    path = sf.VP()
    target = sf.Gaussian(torch.zeros(2, dtype=torch.float64), torch.full((2,), 0.5, dtype=torch.float64))
    times, step_of = solver.eval_times(np.asarray(grid), path)
    return FieldTerm(path, target.field("noise"), times, x, step_of=step_of)


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m"])
def test_reused_term_counts_each_solve_on_its_own(name):
    """Two solves on one term: each its own context and count (fast loop, then step by step), the first's count
    kept; a cached step program (Runge-Kutta's) is built once and found again by the second solve."""
    s = solvers.get(name)
    grid = np.linspace(1.0, 1e-2, 6).tolist()
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    term = _field_term(s, grid, x)
    first, _, _ = run(s, term, x, grid, None)
    ctx1 = term.context
    prog = s.init_state(term, x, grid).get("program")
    steps = []
    second, _, _ = run(s, term, x, grid, None, step_callback=lambda k, xk: steps.append(k))  # the stepwise path
    assert steps == list(range(5))
    assert term.context is not ctx1
    assert ctx1.nfe == term.nfe == s.nfe_for_steps(5)
    assert torch.equal(first, second)
    if name != "dpmpp_2m":
        assert s.init_state(term, x, grid)["program"] is prog


def test_adaptive_solves_on_one_term_count_separately_and_leave_no_hook():
    s = solvers.get("dopri5", rtol=1e-5, atol=1e-7, per_sample=False)
    grid = [1.0, 1e-2]
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    term = _field_term(s, grid, x)
    term.span = (1e-2, 1.0)
    run(s, term, x, grid, None)
    n1, ctx1 = term.nfe, term.context
    accepted = []
    run(s, term, x, grid, None, step_callback=lambda i, xk, t: accepted.append(i))
    assert accepted and n1 > 0 and ctx1.nfe == n1 and term.nfe == n1  # the hook costs no evaluation here
    assert term.on_accept is None and ctx1.on_accept is None


def test_solve_check_flag_is_per_solve():
    """``run(check=)`` sets the checks of its solve only; None keeps the term's setting."""
    x = torch.ones(2, 2)
    term = CallableTerm(lambda x, t: -x, None, np.array([1.0, 0.5]), x, step_of=np.array([0, 1]))
    s = solvers.get("euler")
    run(s, term, x, [1.0, 0.5, 0.0], None, check=True)
    assert term.check is True and term.nfe == 2
    term.check = False
    run(s, term, x, [1.0, 0.5, 0.0], None)
    assert term.check is False and term.nfe == 2
