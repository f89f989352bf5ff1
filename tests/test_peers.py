"""Peers in `sdeflow bench` are posed correctly: each converges to the same float64 reference as ours as its
budget grows, never exceeds its budget, and diffusers' DPM-Solver++(2M) on the Karras grid is the same
algorithm as ours, so the two agree to rounding (a check of both adapters at once); torchsde's Euler and SRK
(SRA1 for additive noise) on sdeflow's Brownian path equal our Euler-Maruyama and SRA1 on it."""

import importlib.util

import numpy as np
import pytest
import torch

from sdeflow import sample
from sdeflow.bench import get_problem, pathwise_rms
from sdeflow.bench.peers import PEERS, available_peers, run_peer, run_sde_peer
from sdeflow.noise import BrownianPath
from sdeflow.bench.run import run_bench

PROBLEM = get_problem("two_blobs")
X = PROBLEM.initial(64, 0)
REF = PROBLEM.reference(X)


@pytest.mark.parametrize("name", list(PEERS))
def test_peer_converges_within_its_budget(name):
    if importlib.util.find_spec(PEERS[name][0]) is None:
        pytest.skip(f"{PEERS[name][0]} not installed")
    errs = []
    for nfe in (25, 200):
        out = run_peer(name, PROBLEM, X, nfe)
        if out is None:
            errs.append(float("inf"))
            continue
        x, used = out
        assert used <= nfe
        errs.append(pathwise_rms(x, REF))
    # every peer is at least first order: 8x the evaluations cut the error at least 4x (Euler: 8x in theory)
    assert errs[1] < 0.25 * errs[0] or errs[1] < 1e-4, errs


@pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason="diffusers not installed")
def test_diffusers_dpmpp_2m_equals_ours_on_the_same_grid():
    nfe = 12
    theirs, used = run_peer("diffusers:edm_dpmpp_2m", PROBLEM, X, nfe)
    ours = sample(PROBLEM.path, PROBLEM.field(), "dpmpp_2m", nfe=nfe, grid="karras", x_init=X,
                  **PROBLEM.sample_kwargs())
    assert used == ours.nfe == nfe
    # diffusers keeps its sigmas in float32: agreement to float32 rounding of the grid
    assert pathwise_rms(theirs, ours.x) < 1e-4 * (1 + pathwise_rms(ours.x, 0 * ours.x))


def test_bench_rows_hold_peers_and_the_optimised_sampler():
    notes = []
    rows = run_bench(problems=["eight_gaussians"], solvers=["unipc"], nfes=[10], n=64, sde=False, notes=notes)
    names = {r["solver"] for r in rows}
    assert "unipc" in names and any(r["grid"] == "optimized" and r["pilot_network_calls"] > 0 for r in rows)
    ok, skipped = available_peers()
    assert {r["solver"] for r in rows if r.get("peer")} == set(ok)
    assert all(line in notes for line in skipped)
    assert all(r["nfe"] is None or r["nfe"] <= r["nfe_budget"] for r in rows)


@pytest.mark.parametrize("peer, ours, per_step", [("torchsde:euler", "euler_maruyama", 1), ("torchsde:srk", "sra1", 3)])
def test_torchsde_on_our_brownian_path_equals_our_solver(peer, ours, per_step):
    fine = np.linspace(PROBLEM.t_max, PROBLEM.t_min, 65)
    bm = BrownianPath(fine, generator=torch.Generator().manual_seed(1))
    grid = fine[::2]  # 32 steps, a sub-grid of the Brownian path's
    mine = sample(PROBLEM.path, PROBLEM.field(), ours, grid=grid, x_init=X, gamma="reverse", noise=bm,
                  final_denoise=True)
    theirs, used = run_sde_peer(peer, PROBLEM, X, grid, bm, per_step * 32 + 1)
    assert used == per_step * 32 + 1
    assert run_sde_peer(peer, PROBLEM, X, grid, bm, per_step * 32) is None  # over budget: refused
    # the same update on the same increments: equal to float64 rounding, accumulated over 32 steps
    assert pathwise_rms(theirs, mine.x) < 1e-7 * pathwise_rms(mine.x, 0 * mine.x)


@pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason="diffusers not installed")
def test_diffusers_ddpm_dpmpp_2m_equals_ours_on_the_same_timesteps():
    from sdeflow.bench.peers import DDPM_PEERS, ddpm_applicable, ddpm_timesteps

    p = get_problem("eight_gaussians_ddpm")
    assert ddpm_applicable(p) and not ddpm_applicable(PROBLEM)
    x = p.initial(64, 0)
    theirs, used = DDPM_PEERS["diffusers:dpmpp_2m"][1](p, x, 12)
    grid = [(t + 1) / 1000 for t in ddpm_timesteps(12)]  # diffusers' timestep tau is sdeflow's t = (tau + 1) / T
    ours = sample(p.path, p.field(), "dpmpp_2m", grid=grid, x_init=x, final_denoise=True)
    assert used == ours.nfe == 12
    assert pathwise_rms(theirs, ours.x) < 1e-4 * (1 + pathwise_rms(ours.x, 0 * ours.x))  # float32 sigmas
