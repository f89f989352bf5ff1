"""Memory held by a solve does not grow with the number of steps unless a trajectory is requested.

Measured by live tensor bytes accounting (sdeflow.bench.scaling.LiveBytes: every storage an operation
creates, until its last tensor is freed), which is exact and deterministic, so the bounds below cannot flake.
"""

import pytest
import torch

from sdeflow.bench.scaling import LiveBytes, peak_bytes

BATCH, DIM = 1000, 2
STATE = BATCH * DIM * 4  # one float32 state


def test_live_bytes_counts_allocations_and_frees():
    with LiveBytes() as mem:
        a = torch.zeros(1000)  # 4000 bytes
        b = a[:10]  # a view: no new storage
        c = torch.ones(500)  # 2000 bytes
        del c
        d = torch.empty(250)  # 1000 bytes, after c was freed
        a.add_(1.0)  # in place: nothing new
    assert mem.peak == 6000 and mem.live == 5000
    del a, b, d


@pytest.mark.parametrize("solver", ["heun", "euler_maruyama", "dpmpp_2m"])
def test_peak_memory_does_not_grow_with_steps(solver):
    short, long = peak_bytes(BATCH, 4, DIM, solver), peak_bytes(BATCH, 32, DIM, solver)
    # the stage tensors of one step, whatever the number of steps: the only per-step memory is the float
    # tables (times and coefficients, a few bytes per step), less than one state over 28 more steps
    assert long - short < STATE


def test_trajectory_memory_grows_one_state_per_step():
    short = peak_bytes(BATCH, 4, DIM, "heun", return_trajectory=True)
    long = peak_bytes(BATCH, 32, DIM, "heun", return_trajectory=True)
    assert long - short >= 28 * STATE  # the stacked trajectory alone holds 28 more states
