"""Fixed-step samplers under torch.compile: no graph breaks inside the loop, and compiled equals eager.

The loop is a solver's ``integrate`` on a prebuilt term (what ``sdeflow.sample(..., check_finite=False)``
runs after its setup). Normals come from a TableNoise: ``torch.randn(generator=...)`` is not traceable by
dynamo (a graph break per draw), so a captured SDE loop takes its normals as inputs.
"""

import os
import shutil

import pytest
import torch

import sdeflow as sf
from sdeflow import solvers
from sdeflow.testing.checks import oracle_field

from .fixed_step import BATCH, GAMMA, PATH, STEPS, TARGET  # noqa: F401
from .fixed_step import setup as _setup


def _loop(name: str):
    s, term, x0, gl, noise = _setup(name)

    def run(x):
        return s.integrate(term, x, gl, noise)[0]

    state = s.init_state(term, x0, gl)  # setup: path tables may leave torch (tolist) once per solve

    def steps(x):
        for k in range(STEPS):
            x = s.step(term, k, x, gl[k], gl[k + 1], noise, state)
        return x
    run.term = term
    return run, x0, steps


def _programs(name: str):
    """The step programs (sdeflow.solvers.program) of two setups of the solver on one sampler's term and grid
    (None, None: its fixed steps are not a program)."""
    s, term, x0, gl, _ = _setup(name)
    states = [s.init_state(term, x0, gl) for _ in range(2)]
    return [st.get("program") if isinstance(st, dict) else None for st in states]


#: every registered fixed-step solver whose step is a program: these trace into one graph; the others run a
#: Python step with per-step bookkeeping (histories, stage layouts, churn) and are not claimed traceable
_SETUPS = {n: _programs(n) for n in solvers.available(adaptive=False)}
PROGRAMS = [n for n, (p, _) in _SETUPS.items() if p is not None]
#: those whose setup is cached on the term (Solver.cached_program): a whole solve compiles as one graph. The
#: others (prediction solvers) tabulate the path with numpy and .tolist() in every setup, which dynamo cannot
#: trace; their steps are one graph (test_no_graph_breaks_in_fixed_step_loop)
CACHED = [n for n in PROGRAMS if _SETUPS[n][0] is _SETUPS[n][1]]


def test_the_program_sweep_finds_the_program_families():
    assert {"euler", "rk4", "euler_maruyama", "stochastic_heun", "ddim", "ancestral", "dpmpp_2m"} <= set(PROGRAMS)


@pytest.mark.parametrize("name", PROGRAMS)
def test_no_graph_breaks_in_fixed_step_loop(name):
    """The steps trace into one graph (no host syncs, no Python branches on tensor values)."""
    torch._dynamo.reset()
    _, x0, steps = _loop(name)
    ex = torch._dynamo.explain(steps)(x0)
    assert ex.graph_break_count == 0, [str(r.reason)[:200] for r in ex.break_reasons]
    assert ex.graph_count == 1


@pytest.mark.parametrize("name", CACHED)
def test_compiled_loop_equals_eager(name):
    """Dynamo's graph run by the aot_eager backend (no C compiler needed) reproduces the eager loop."""
    torch._dynamo.reset()
    run, x0, _ = _loop(name)
    eager = run(x0)
    compiled = torch.compile(run, backend="aot_eager", fullgraph=True)(x0)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-6)


def _c_compiler() -> bool:
    cc = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    return cc is not None


@pytest.mark.slow
@pytest.mark.skipif(not _c_compiler(), reason="torch.compile's CPU backend (inductor) needs a C++ compiler; "
                                                "none found (set CXX or install g++)")
@pytest.mark.skipif(os.environ.get("SDEFLOW_TEST_INDUCTOR", "0") != "1",
                    reason="inductor compiles C++ kernels (about 40 s on 2 busy cores): set "
                           "SDEFLOW_TEST_INDUCTOR=1 to run it")
def test_inductor_compiled_euler_equals_eager():
    torch._dynamo.reset()
    run, x0, _ = _loop("euler")
    compiled = torch.compile(run, fullgraph=True)(x0)
    torch.testing.assert_close(compiled, run(x0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", PROGRAMS)
def test_large_states_alternate_two_buffers_bitwise(name):
    """Above 64 kB the generated loop writes each new state into one of two buffers (no allocation per
    step); the result is bitwise the step-by-step path's (return_trajectory forces it), the user's x_init is
    never written, and with grad="full" the loop falls back to allocating (autograd works)."""

    target = sf.Gaussian(torch.tensor([1.0, -1.0]), torch.tensor([0.5, 2.0]))
    x0 = torch.randn(16384, 2, generator=torch.Generator().manual_seed(0))
    keep = x0.clone()
    gamma = 1.0 if solvers.get(name).sde else 0.0
    kw = dict(x_init=x0, steps=5, t_min=1e-2, gamma=gamma, check_finite=False,
              preflight=False)  # five steps: the test is bitwise equality of two loops, not accuracy
    field = oracle_field(solvers.get(name), target, "noise", PATH, 1e-2)
    fast = sf.sample(PATH, field, name, generator=torch.Generator().manual_seed(1), **kw).x
    slow = sf.sample(PATH, field, name, generator=torch.Generator().manual_seed(1),
                     return_trajectory=True, **kw).x
    assert torch.equal(fast, slow)
    assert torch.equal(x0, keep)
    lin = torch.nn.Linear(2, 2)
    wrap = sf.ConsistencyField if solvers.get(name).requires_consistency else sf.NoiseField
    out = sf.sample(PATH, wrap(lambda x, t: lin(x)), name, generator=torch.Generator().manual_seed(1),
                    grad="full", **kw).x
    out.sum().backward()
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()
