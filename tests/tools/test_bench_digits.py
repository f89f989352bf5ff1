"""The digits_unet bench problem (sdeflow.bench.digits): a trained diffusers UNet inside ``sdeflow bench``."""

import importlib.util
import subprocess
import sys

import pytest
import torch

import sdeflow as sf
from sdeflow.bench import digits, run_bench

needs_deps = pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("diffusers", "sklearn")),
                                reason="the digits problem needs diffusers and scikit-learn (the dev extra)")


def test_registering_the_problem_imports_neither_diffusers_nor_sklearn():
    code = ("import sys, sdeflow.bench as b; p = b.get_problem('digits_unet'); "
            "assert p.dim == 64 and p.t_min == 1 / p.path.T; "
            "print(sorted(m for m in ('diffusers', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@needs_deps
def test_the_problem_path_is_the_training_schedulers():
    from sdeflow.integrations.diffusers import path_from_scheduler

    assert torch.equal(digits.ddpm_path().alphas_cumprod, path_from_scheduler(digits.scheduler()).alphas_cumprod)


@pytest.fixture(scope="module")
def quick_unet(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("digits"))
    state = torch.get_rng_state()
    unet, path = digits.trained_model(cache, config=digits.QUICK_CONFIG, steps=10, batch=16, verbose=False)
    assert torch.equal(torch.get_rng_state(), state), "training must leave the global RNG as it was"
    return unet, cache


@needs_deps
def test_the_trained_network_is_cached_and_reloaded(quick_unet):
    unet, cache = quick_unet
    again, _ = digits.trained_model(cache, config=digits.QUICK_CONFIG, steps=10, batch=16, verbose=False)
    for (k, a), (_, b) in zip(unet.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(sf.SdeflowValueError, match="unknown training argument"):
        digits.trained_model(cache, config=digits.QUICK_CONFIG, epochs=3)


@needs_deps
def test_work_precision_on_the_trained_network(quick_unet):
    """Errors against the float64 reference fall as the budget grows (Heun is second order; DPM-Solver++(2M)
    too), the labels reach the network, and the first use inside a no-grad solve works."""
    unet, _ = quick_unet
    prob = sf.bench.register_problem(digits.problem(unet=unet, name="digits_unet_test", reference_steps=64))
    with torch.no_grad():
        rows = run_bench(problems=[prob.name], solvers=["heun", "dpmpp_2m"], nfes=(10, 40), n=4, sde=False,
                         peers=False, optimized=False)
    err = {(r["solver"], r["nfe_budget"]): r["error"] for r in rows
           if r["metric"] == "pathwise_rms" and r["grid"] == "karras" and r["error"] is not None}
    for s in ("heun", "dpmpp_2m"):
        assert torch.isfinite(torch.tensor(err[s, 10])) and err[s, 40] < err[s, 10] / 2, err


@needs_deps
def test_labels_given_as_model_kwargs_follow_their_rows(quick_unet):
    """With ``model_kwargs={"class_labels": ...}`` each sample keeps its label wherever it is evaluated: the
    per-sample steps of dopri5 (finished rows leave the batch) and chunks give a sample what it gets alone with
    its label, up to the UNet's own rounding across batch sizes (convolutions are not bitwise invariant to the
    batch: the solver adds no coupling, docs/reliability.md), far below what another label changes."""
    unet, _ = quick_unet
    field = digits.DigitsField(unet=unet)
    path = digits.ddpm_path()
    x = torch.randn((6, 64), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    labels = torch.tensor([3, 7, 1, 3, 0, 9])
    # a short window: dopri5 stops every row at each of DDPM's knots inside it (7 here, not 1000)
    kw = dict(t_max=0.012, t_min=0.005, final_denoise=True, rtol=1e-7, atol=1e-7)
    diffs = []
    with torch.no_grad():
        batch = sf.sample(path, field, "dopri5", x_init=x, model_kwargs={"class_labels": labels}, **kw)
        assert batch.stats["evaluations"].unique().numel() > 1  # rows finish apart: the evaluations shrink
        chunked = sf.sample(path, field, "dopri5", x_init=x, model_kwargs={"class_labels": labels}, chunk_size=4,
                            **kw)
        for i in (4,):
            alone = sf.sample(path, field, "dopri5", x_init=x[i:i + 1],
                              model_kwargs={"class_labels": labels[i:i + 1]}, **kw)
            diffs.append(max(float((alone.x[0] - batch.x[i]).abs().max()),
                             float((alone.x[0] - chunked.x[i]).abs().max())))
        # the same noise with another label is another sample: the labels reach the network
        other = sf.sample(path, field, "dopri5", x_init=x[4:5], model_kwargs={"class_labels": labels[1:2]}, **kw)
        changed = float((other.x[0] - batch.x[4]).abs().max())
    assert max(diffs) < 1e-3 * changed, (diffs, changed)
