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


@pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason="diffusers not installed")
def test_diffusers_ddim_on_its_own_timesteps_equals_our_ddim():
    """DDIM (eta = 0) on the timesteps DDIMScheduler.set_timesteps chooses ("leading": 900, 800, .., 0, then
    alpha = 1) is sdeflow's ddim on those times plus the final denoising: equal to float32 rounding; with
    eta = 1 on the same standard-normal draws, too."""
    from sdeflow.bench.peers import OWN_GRID_PEERS, ddim_sde_noise, own_grid
    from sdeflow.noise import TableNoise

    p = get_problem("eight_gaussians_ddpm")
    x = p.initial(64, 0)
    run = OWN_GRID_PEERS["diffusers:ddim"][1]
    theirs, used, taus = run(p, x, 10)
    assert taus[0] == 900 and taus[-1] == 0 and used == 10
    grid = own_grid(p, taus)
    ours = sample(p.path, p.field(), "ddim", grid=grid, x_init=x, final_denoise=True)
    assert ours.nfe == used
    scale = pathwise_rms(ours.x, 0 * ours.x)
    assert pathwise_rms(theirs, ours.x) < 1e-5 * scale  # diffusers' alphas_cumprod are float32
    z = ddim_sde_noise(p, x, 10, torch.Generator().manual_seed(3))
    theirs, _, _ = run(p, x, 10, noise=z)
    ours = sample(p.path, p.field(), "ddim", grid=grid, x_init=x, final_denoise=True, eta=1.0,
                  noise=TableNoise(list(z)))
    assert pathwise_rms(theirs, ours.x) < 1e-5 * scale


@pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason="diffusers not installed")
def test_diffusers_unipc_equals_sdeflow_unipc():
    """diffusers' UniPC (bh2, order 2) on its own timesteps equals sdeflow's ``unipc`` (default ``variant="bh2"``)
    on those times, to float32 rounding (diffusers' alphas_cumprod are float32); with the corrector disabled its
    predictor (B(h) = e^h - 1, rho = 1/2) is DPM-Solver++(2M), sdeflow's dpmpp_2m. Their last step, into sigma = 0,
    is order 1 (``lower_order_final``), which lands on the data prediction: sdeflow's final_denoise after a grid
    ending at their last timestep, without lowering the orders before it."""
    import diffusers

    from sdeflow.bench.peers import OWN_GRID_PEERS, _CountedEps, _ddpm_config, own_grid

    p = get_problem("eight_gaussians_ddpm")
    x = p.initial(64, 0)
    sch = diffusers.UniPCMultistepScheduler(disable_corrector=list(range(12)), **_ddpm_config(p))
    sch.set_timesteps(12)
    eps, y = _CountedEps(p, 12), x.clone()
    for t in sch.timesteps:
        y = sch.step(eps(y, t), t, y).prev_sample
    grid = own_grid(p, sch.timesteps.tolist())
    ours = sample(p.path, p.field(), "dpmpp_2m", grid=grid, x_init=x, final_denoise=True)
    assert pathwise_rms(y, ours.x) < 1e-5 * pathwise_rms(ours.x, 0 * ours.x)
    for nfe in (5, 10, 40):
        theirs, used, taus = OWN_GRID_PEERS["diffusers:unipc"][1](p, x, nfe)
        mine = sample(p.path, p.field(), "unipc", grid=own_grid(p, taus), x_init=x, final_denoise=True)
        assert used == mine.nfe == nfe and taus[0] == 999
        assert pathwise_rms(theirs, mine.x) < 1e-5 * pathwise_rms(mine.x, 0 * mine.x), nfe
