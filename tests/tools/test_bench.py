"""`sdeflow bench` internals: weak metrics sit at their Monte Carlo floor for exact samples and see a known
bias; a user-registered problem (a network field, a sampler, no analytic target) runs, and its fine float64
reference agrees with the exact flow; SDE rows carry strong and weak errors beside the floor."""

import math
from pathlib import Path

import pytest
import torch

import sdeflow as sf
from sdeflow.bench import Problem, get_problem, mc_floor, register_problem, run_bench, weak_metrics
from sdeflow.bench.metrics import mmd_bandwidth, pathwise_errors

N = 1000


def _exact(seed):
    p = get_problem("gaussian2")
    return p.target_samples(N, torch.Generator().manual_seed(seed))


def test_weak_metrics_at_the_floor_for_exact_samples_and_see_a_known_bias():
    p = get_problem("gaussian2")
    ref = _exact(1)
    bw = mmd_bandwidth(ref)
    g = torch.Generator().manual_seed(2)
    floor = mc_floor(lambda m: p.target_samples(m, g), N, bw, pairs=8)
    # the mean error of two independent sets is |v|, v ~ N(0, 2C/N): its RMS is sqrt(2 tr C / N) exactly
    C = torch.cov(ref.T)
    se_mean = math.sqrt(2 * float(C.trace()) / N)
    same = weak_metrics(_exact(3), ref, bw)
    assert same["mean"] < 4 * se_mean  # P(chi2_1 > 16) < 1e-4
    for k, v in same.items():
        assert v < 4 * floor[k], (k, v, floor[k])  # at the floor (RMS of 8 exact pairs)
    # a known bias: mean shifted by delta, spread scaled by 1.5
    delta = torch.tensor([0.3, -0.4], dtype=torch.float64)
    x = _exact(3)
    biased = weak_metrics(x.mean(0) + delta + 1.5 * (x - x.mean(0)), ref, bw)
    assert abs(biased["mean"] - 0.5) < 4 * se_mean  # |delta| = 0.5, up to sampling error
    cov_excess = float((1.25 * C).norm())  # (1.5^2 - 1) C
    assert abs(biased["cov"] - cov_excess) < 0.3 * cov_excess
    for k in ("sliced_w2", "mmd"):
        assert biased[k] > 5 * floor[k], (k, biased[k], floor[k])


MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
C2 = torch.tensor([0.05, 2.0], dtype=torch.float64)
PATH = sf.VP()


def _eps_net(x, t):  # the closed-form noise predictor of N(MU, diag(C2)) on VP, as a user network
    a, s = PATH.alpha(t).to(x.dtype)[:, None], PATH.sigma(t).to(x.dtype)[:, None]
    return s * (x - a * MU) / (a * a * C2 + s * s)


def test_registered_custom_problem_runs_with_its_reference_and_sampler():
    prob = register_problem(Problem("test_custom_vp", path=PATH, exact_field=sf.NoiseField(_eps_net), dim=2,
                                    target_sampler=lambda n, g: MU + C2.sqrt() * torch.randn(
                                        n, 2, generator=g, dtype=torch.float64)))
    x = prob.initial(64, 0)
    exact = sf.Gaussian(MU, C2).reference_flow(x, PATH, prob.t_max, prob.t_min, final_denoise=True)
    assert float((prob.reference(x) - exact).abs().max()) < 1e-8  # RK4, 1024 steps, float64
    notes = []
    rows = run_bench(problems=["test_custom_vp"], solvers=["heun", "euler_maruyama"], nfes=[10, 40],
                     sde_nfes=[32], n=64, optimized=False, notes=notes)
    heun = [r for r in rows if r["solver"] == "heun" and r["grid"] == "karras"]
    assert len(heun) == 2 and heun[1]["error"] < heun[0]["error"] / 4  # second order: 4x NFE, ~16x less
    # the same solver and grid on the window the budget chooses (sdeflow.window.budget_end): it stops earlier
    # with less budget, and finishes with the denoising step the problem's answer ends with
    ends = [r for r in rows if r["solver"] == "heun" and r["grid"] == "karras+end"]
    assert len(ends) == 2 and ends[0]["sigma_end"] > ends[1]["sigma_end"] > 0 and ends[1]["nfe"] <= 40
    sde = [r for r in rows if r["metric"] == "strong_rms"]
    assert {r["solver"] for r in sde} >= {"euler_maruyama", "torchsde:euler"}
    assert all(set(r["weak"]) == {"mean", "cov", "sliced_w2", "mmd"} for r in sde)
    assert any(r["solver"] == "mc_floor" for r in rows)
    assert any("ODE peers skipped on test_custom_vp" in n for n in notes)  # VP: not posed in EDM form


def test_problem_rejects_bad_input():
    from sdeflow.errors import SdeflowTypeError, SdeflowValueError

    with pytest.raises(SdeflowValueError, match="target= .* or"):
        Problem("bad", path=PATH)
    with pytest.raises(SdeflowTypeError, match="exact_field must be a sdeflow Field"):
        Problem("bad", path=PATH, exact_field=_eps_net, dim=2)
    with pytest.raises(SdeflowValueError, match="dim="):
        Problem("bad", path=PATH, exact_field=sf.NoiseField(_eps_net))
    with pytest.raises(SdeflowTypeError, match="register_problem takes"):
        register_problem("gaussian2")
    with pytest.raises(SdeflowValueError, match="reference_solver must be"):
        Problem("bad", path=PATH, exact_field=sf.NoiseField(_eps_net), dim=2, reference_solver="dop54")


def test_tampered_network_weights_are_refused(tmp_path, monkeypatch):
    """A weight file whose tensors no longer match the manifest's SHA-256 is refused with the fix."""
    import shutil

    from safetensors.torch import load_file, save_file

    from sdeflow.bench import learned
    from sdeflow.errors import SdeflowValueError

    shutil.copytree(learned._DIR, tmp_path / "networks")
    monkeypatch.setattr(learned, "_DIR", str(tmp_path / "networks"))
    monkeypatch.setattr(learned, "MANIFEST", str(tmp_path / "networks" / "manifest.json"))
    monkeypatch.setattr(learned, "_LOADED", {})
    learned.load_network("learned_pinwheel")  # the copy loads
    monkeypatch.setattr(learned, "_LOADED", {})
    f = tmp_path / "networks" / "learned_pinwheel.safetensors"
    from safetensors import safe_open

    with safe_open(str(f), "pt") as h:
        meta = h.metadata()
    tensors = load_file(str(f))
    k = sorted(tensors)[0]
    tensors[k] = tensors[k].clone()
    tensors[k].view(-1)[0] += 1e-3
    save_file(tensors, str(f), metadata=meta)
    with pytest.raises(SdeflowValueError, match="do not match their recorded SHA-256.*train_bench_networks"):
        learned.load_network("learned_pinwheel")
    (tmp_path / "networks" / "learned_mix16.safetensors").unlink()
    with pytest.raises(SdeflowValueError, match="are missing"):
        learned.load_network("learned_mix16")


def test_sde_budgets_are_spent_and_headed_by_what_is_spent(one_thread):
    """The default SDE budgets 2^k + 1 buy 2^k one-evaluation or 2^(k-1) two-evaluation steps plus the final
    denoising step: those rows spend exactly their budget (they used to spend 17 of "NFE<=32"), torchsde's SRK
    (3 evaluations per step) spends less and never more; each column's heading is the most any row spent."""
    from sdeflow.bench import format_table
    from sdeflow.bench.run import DEFAULT_SDE_NFES

    rows = run_bench(problems=["eight_gaussians"], solvers=["euler_maruyama", "stochastic_heun", "sra1"],
                     nfes=[10], sde_nfes=DEFAULT_SDE_NFES, n=32, optimized=False)
    sde = [r for r in rows if r["metric"] == "strong_rms"]
    assert {r["solver"] for r in sde} >= {"euler_maruyama", "stochastic_heun", "sra1", "torchsde:euler",
                                          "torchsde:srk"}
    for r in sde:
        if r["solver"] == "torchsde:srk":
            assert r["nfe_budget"] * 3 // 4 - 1 < r["nfe"] < r["nfe_budget"]
        else:
            assert r["nfe"] == r["nfe_budget"], r
    for b in DEFAULT_SDE_NFES:
        assert max(r["nfe"] for r in sde if r["nfe_budget"] == b) == b
    strong = format_table(rows).split("[strong_rms]")[1].splitlines()[1]
    assert strong.split()[3:] == [f"NFE<={b}" for b in DEFAULT_SDE_NFES]


def test_progress_total_is_the_number_of_runs(one_thread):
    """The progress bar's total (planned before the run) is the number of timed rows it then produces, on a
    VE problem with every kind of row and on the DDPM-schedule problem with diffusers' own-timestep rows."""
    import importlib.util

    from sdeflow.bench.run import _planned_runs

    configs = [dict(problems=["eight_gaussians"], solvers=["heun", "dpmpp_2m", "euler_maruyama", "sra1"],
                    nfes=[10, 20], sde_nfes=[5, 17])]
    if importlib.util.find_spec("diffusers") is not None:
        configs.append(dict(problems=["eight_gaussians_ddpm"], solvers=["euler", "euler_maruyama"], nfes=[10],
                            sde_nfes=[9]))
    for cfg in configs:
        rows = run_bench(n=16, **cfg)
        runs = [r for r in rows if r["solver"] != "mc_floor"]
        planned = _planned_runs(get_problem(cfg["problems"][0]), cfg["solvers"], ("karras", "log_snr"), cfg["nfes"],
                                cfg["sde_nfes"], True, True, True)
        assert planned == len(runs), (cfg["problems"], planned, len(runs))
        assert any(r["grid"] == "optimized" for r in runs) or cfg["problems"] == ["eight_gaussians_ddpm"]


# ---- learned-network problems ---------------------------------------------------------------------------------
LEARNED = ("learned_pinwheel", "learned_mix16", "learned_spiral_ddpm")


@pytest.fixture
def ref_cache(tmp_path, monkeypatch):
    """References cached in a fresh directory (never the user's cache), and problems' in-memory caches cleared."""
    monkeypatch.setenv("SDEFLOW_CACHE", str(tmp_path))
    for name in LEARNED:
        get_problem(name)._ref_cache.clear()
    yield tmp_path
    for name in LEARNED:
        get_problem(name)._ref_cache.clear()


def test_learned_problems_are_registered_in_full_only():
    from sdeflow.bench import FULL, QUICK

    for name in LEARNED:
        p = get_problem(name)
        assert p.exact_field is not None and p.target is None and p.reference_solver == "dop853"
        assert name in FULL["problems"] and name not in QUICK["problems"]
    assert QUICK["problems"] == ("eight_gaussians",)


def test_shipped_networks_match_their_checksum_and_recorded_errors(one_thread, ref_cache):
    """The shipped weights load (their SHA-256 is checked on load), and the recorded check (Heun, 20 NFE, Karras,
    64 samples, against the DOP853 reference) is reproduced: the same network, the same reference. The second
    reference comes from the disk cache and is identical."""
    from sdeflow.bench import learned

    manifest = learned._manifest()
    for name in LEARNED:
        entry = manifest[name]
        net = learned.load_network(name)
        assert learned.tensor_sha256({k: v.float() for k, v in net.F.state_dict().items()}) == entry["sha256"]
        got = learned.check_errors(get_problem(name))
        for k in ("rms", "q99", "max"):
            assert got[k] == pytest.approx(entry["check"][k], rel=1e-6), (name, k)
    assert len(list(ref_cache.glob("bench/ref-*.safetensors"))) == len(LEARNED)
    p = get_problem("learned_pinwheel")
    x = p.initial(learned.CHECK["n"], learned.CHECK["seed"])
    first = p.reference(x)
    p._ref_cache.clear()
    assert torch.equal(p.reference(x), first)


def test_training_is_deterministic_and_matches_the_recorded_probe(one_thread):
    """Training twice gives bitwise the same weights (seeded generators, one thread); a short retraining of
    every shipped spec reproduces the validation loss recorded when the weights were written (the training code
    has not changed since; float32 rounding on another CPU moves it by far less than the 1e-3 allowed)."""
    from sdeflow.bench import learned

    manifest = learned._manifest()
    shas = set()
    for name in LEARNED:
        probe = manifest[name]["probe"]
        net, info = learned.train_network(name, steps=probe["steps"])
        assert info["val_loss"] == pytest.approx(probe["val_loss"], rel=1e-3), name
        if name == "learned_pinwheel":
            shas.add(learned.tensor_sha256(net.F.state_dict()))
            shas.add(learned.tensor_sha256(learned.train_network(name, steps=probe["steps"])[0].F.state_dict()))
    assert len(shas) == 1


def test_learned_reference_is_tight(one_thread, ref_cache):
    """The DOP853 reference at rtol 1e-10 against one at 1e-8: the worst sample moves by less than 1% of the RMS
    error of the best of three high-order samplers at 100 NFE (the reference is far tighter than what it
    measures), and it does move (the tolerance is honoured)."""
    from sdeflow.bench.learned import field_reference

    for name in LEARNED:
        p = get_problem(name)
        x = p.initial(64, 1)
        ref = p.reference(x)
        loose = field_reference(p.field(), p.path, x, p.t_max, p.t_min, final_denoise=True, rtol=1e-8)
        moved = float((loose - ref).norm(dim=1).max())
        best = min(float((sf.sample(p.path, p.field(), s, nfe=100, grid="log_snr", x_init=x,
                                    **p.sample_kwargs()).x - ref).norm(dim=1).pow(2).mean().sqrt())
                   for s in ("dpmpp_3m", "unipc", "dpmpp_2m"))
        assert 0 < moved < 0.01 * best, (name, moved, best)


def test_learned_problems_give_rows_with_tail_metrics_and_peers(one_thread, ref_cache):
    """A learned EDM problem and the learned DDPM-schedule one run through the bench: every pathwise row has its
    RMS, 99th percentile and worst sample (RMS <= max, q99 <= max), the peers run on the same network (EDM-form
    peers on VE, diffusers' DDPM schedulers on DiscreteVP, own-timestep rows against the problem's window and their own),
    the default sampler has rows, weak metrics are skipped with a note, and the tables print the tails."""
    import importlib.util

    from sdeflow.bench import format_table
    from sdeflow.bench.run import _planned_runs

    notes = []
    cfg = dict(solvers=["dpmpp_2m", "euler_maruyama"], nfes=[10], sde_nfes=[9])
    rows = run_bench(problems=["learned_pinwheel", "learned_spiral_ddpm"], n=32, notes=notes, **cfg)
    for name in ("learned_pinwheel", "learned_spiral_ddpm"):
        mine = [r for r in rows if r["problem"] == name]
        planned = _planned_runs(get_problem(name), cfg["solvers"], ("karras", "log_snr"), cfg["nfes"],
                                cfg["sde_nfes"], True, True, True)
        assert planned == len(mine)
        measured = [r for r in mine if r["error"] is not None]
        assert {r["metric"] for r in measured} == {"pathwise_rms", "strong_rms"}
        for r in measured:
            assert 0 < r["error"] <= r["error_max"] and 0 < r["error_q99"] <= r["error_max"], r
        assert any(r["solver"] == "default" for r in mine)
        assert any(r["solver"].startswith("torchdiffeq:" if name == "learned_pinwheel" else "diffusers:")
                   for r in measured) or importlib.util.find_spec("diffusers") is None
        assert any(f"weak metrics skipped on {name}" in n for n in notes)
    if importlib.util.find_spec("diffusers") is not None:
        own = [r for r in rows if r.get("own_window")]
        assert {r["solver"] for r in own} == {"diffusers:ddim", "ddim", "diffusers:unipc", "unipc"}
        assert all(r["problem"] == "learned_spiral_ddpm" for r in own)
        # ``error`` is against the problem's window, like every row's (the window is part of the sampler):
        # recomputed for sdeflow's unipc on UniPC's own timesteps; ``own_window`` against the shorter window
        from sdeflow.bench.peers import OWN_GRID_PEERS, own_grid

        p = get_problem("learned_spiral_ddpm")
        x = p.initial(32, seed=0)
        taus = OWN_GRID_PEERS["diffusers:unipc"][1](p, x, 10)[2]
        grid = own_grid(p, taus)
        y = sf.sample(p.path, p.field(), "unipc", grid=grid, x_init=x, final_denoise=True).x
        row = next(r for r in own if r["solver"] == "unipc" and r["nfe_budget"] == 10)
        assert row["error"] == pytest.approx(pathwise_errors(y, p.reference(x))["rms"], rel=1e-9)
        own_ref = p.reference(x, t_max=grid[0], t_min=grid[-1])
        assert row["own_window"]["rms"] == pytest.approx(pathwise_errors(y, own_ref)["rms"], rel=1e-9)
    text = format_table(rows)
    for table in ("[pathwise_rms]", "[pathwise_q99]", "[pathwise_max]", "[strong_rms]"):
        assert table in text


def test_generalisation_problems_are_registered_in_full_on_the_ve_window():
    """The problems of other regimes (issue 14) run in ``--full`` on the same VE sigma 80 -> 0.002 + final
    denoise window in EDM coordinates as the other oracle problems, with their analytic targets' exact fields
    and references (the Gaussian's closed-form flow)."""
    from sdeflow import analytic
    from sdeflow.bench import FULL, QUICK

    dims = {"ring64": 2, "narrow_unequal": 2, "aniso16": 16, "aniso64": 64, "image64": 64}
    for name, d in dims.items():
        p = get_problem(name)
        assert name in FULL["problems"] and name not in QUICK["problems"]
        assert p.dim == d and p.target is not None and p.exact_field is None and p.kind == "data"
        assert type(p.path).__name__ == "VE"
        assert float(p.path.sigma(torch.tensor([1.0], dtype=torch.float64))[0]) == pytest.approx(80.0, rel=1e-12)
        assert (p.t_max, p.t_min, p.final_denoise, type(p.integration_path).__name__) == (1.0, 0.0, True, "EDM")
    p = get_problem("image64")
    assert isinstance(p.target, analytic.Gaussian)
    x = p.initial(8, 0)
    torch.testing.assert_close(p.reference(x), p.target.predict(p.target.flow(x, p.path, 1.0, 0.0), 0.0, p.path,
                                                                "data"))


def test_peer_pairs_reports_the_network_cases_no_named_configuration_serves_together(tmp_path):
    """benchmarks/generalisation.py --peer-pairs: with two named configurations each within 1.5x of the best peer
    on one stored case only (RMS or worst sample), the pair of cases is reported with the better common ratio;
    with a third within 1.5x on both, every pair is served. Non-network problems are left out."""
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import generalisation

    def row(solver, grid, rms, worst, peer=False):
        return dict(problem="", solver=solver, grid=grid, nfe_budget=20, nfe=20, error=rms, error_max=worst,
                    metric="pathwise_rms", peer=peer)

    def store(d, problem, seed, rows):
        d.mkdir(exist_ok=True)
        (d / f"rows_{problem}.json").write_text(json.dumps(dict(problem=problem, seed=seed, rows=rows)))

    peer = row("torchdiffeq:rk4", "karras", 1.0, 1.0, peer=True)
    store(tmp_path / "s0", "heldout_a_edm", 0, [peer, row("a", "karras", 1.0, 1.0), row("b", "log_snr+end", 1.0, 3.0)])
    store(tmp_path / "s1", "heldout_a_edm", 1, [peer, row("a", "karras", 2.0, 1.0), row("b", "log_snr+end", 1.0, 1.0)])
    store(tmp_path / "s1", "gaussian16", 1, [peer, row("a", "karras", 9.0, 9.0), row("b", "log_snr+end", 9.0, 9.0)])
    dirs = [str(tmp_path / "s0"), str(tmp_path / "s1")]
    text = generalisation.peer_pairs(dirs, (20,))
    assert "VE/EDM, NFE 20: 2 network cases, 2 named configurations" in text
    assert ("no configuration within 1.5x on both heldout_a_edm (seed 0) and heldout_a_edm (seed 1): the best serves "
            "them at 2.00x (a/karras)") in text
    store(tmp_path / "s1", "heldout_a_edm", 1, [peer, row("a", "karras", 2.0, 1.0), row("b", "log_snr+end", 1.0, 1.0),
                                                row("c", "uniform", 1.2, 1.4)])
    store(tmp_path / "s0", "heldout_a_edm", 0, [peer, row("a", "karras", 1.0, 1.0), row("b", "log_snr+end", 1.0, 3.0),
                                                row("c", "uniform", 1.4, 1.1)])
    assert "every pair of cases has a configuration within 1.5x on both" in generalisation.peer_pairs(dirs, (20,))
