"""Numerical edges against exact Gaussian answers: sigma -> 0 near t = 0, a huge VE sigma_max, float32 vs
float64, half-precision networks, and 10^6 samples in bounded memory."""

import subprocess
import sys
import textwrap

import pytest
import torch

import sdeflow as sf
from sdeflow.testing import fit_order

D = torch.float64
TARGET = sf.Gaussian([1.0, -0.5], [0.5, 2.0])
U32 = 2.0 ** -24  # float32 unit roundoff
UBF16 = 2.0 ** -8  # bfloat16 unit roundoff (8 significant bits)


def _start(path, n=16, seed=1, dtype=D):
    return TARGET.marginal(path, 1.0).sample(n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---- sigma -> 0 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [sf.VP(), sf.SubVP()], ids=["VP", "SubVP"])
def test_pf_ode_down_to_t_min_1e5_converges_to_the_exact_flow(path):
    """Heun (order 2) to t_min = 1e-5, where sigma is 1e-3 (VP) or 1e-6 (sub-VP): the pathwise error
    against the exact Gaussian flow halves twice per halving of h (slope 2 +- 0.2), i.e. no loss of
    order or blow-up as sigma -> 0."""
    x = _start(path)
    exact = TARGET.flow(x, path, 1.0, 1e-5)
    steps, errs = (16, 32, 64), []
    for n in steps:
        sol = sf.sample(path, TARGET.field("noise"), "heun", steps=n, x_init=x, t_min=1e-5)
        errs.append(float((sol.x - exact).abs().max()))
    fit = fit_order([1 / n for n in steps], errs)
    assert abs(fit.slope - 2) < 0.2, (fit, errs)


@pytest.mark.parametrize("path", [sf.VP(), sf.SubVP()], ids=["VP", "SubVP"])
def test_every_field_kind_agrees_near_sigma_zero(path):
    """Score, noise, data and velocity oracles describe the same drift, so their solves to t_min = 1e-5
    (with a final denoising step at sigma ~ 1e-3 / 1e-6) differ only by rounding: float64 roundoff 1e-16
    amplified by the conversions' 1/sigma(t_min) <= 1e6 over 32 steps stays below 1e-8; a conversion that
    lost accuracy as sigma -> 0 would show O(1e-3) differences."""
    x = _start(path)
    out = {k: sf.sample(path, TARGET.field(k), "heun", steps=32, x_init=x, t_min=1e-5, final_denoise=True).x
           for k in ("noise", "score", "data", "velocity")}
    for k, v in out.items():
        assert torch.isfinite(v).all(), k
        torch.testing.assert_close(v, out["noise"], rtol=0, atol=1e-8, msg=k)


def test_ve_with_sigma_max_1000():
    """VE(0.01, 1000): the prior has sigma 1000 and the data scale is 1. Heun on the Karras grid converges
    to the exact flow at order 2 (slope 2 +- 0.3), and float32 agrees with float64 to
    N * u32 * max|x_init| * 8 (a rounding of each of ~4 operations per stage, 2 stages, at the largest
    state; the flow contracts from 1000 to 1, so earlier roundings only shrink)."""
    path = sf.VE(0.01, 1000.0)
    x = _start(path)
    assert float(x.abs().max()) > 1000
    exact = TARGET.flow(x, path, 1.0, 0.0)
    steps, errs = (32, 64, 128), []
    for n in steps:
        sol = sf.sample(path, TARGET.field("noise"), "heun", steps=n, x_init=x, grid="karras")
        errs.append(float((sol.x - exact).abs().max()))
    fit = fit_order([1 / n for n in steps], errs)
    assert abs(fit.slope - 2) < 0.3, (fit, errs)
    x32 = sf.sample(path, TARGET.field("noise"), "heun", steps=128, x_init=x.float(), grid="karras").x
    assert x32.dtype == torch.float32
    assert float((x32.double() - sol.x).abs().max()) < 128 * U32 * float(x.abs().max()) * 8


# ---- precisions ------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver, kw", [(None, {}), (None, {"gamma": "reverse"})], ids=["heun", "stochastic_heun"])
def test_float32_within_rounding_of_float64_for_the_default_samplers(solver, kw):
    """The default samplers (heun for the ODE, stochastic_heun for the SDE, same PerSampleNoise normals)
    in float32 and float64 differ by accumulated float32 rounding only: at most
    N * u32 * max|x| * 8 (two stages of about 4 rounded operations per step, a Gaussian flow amplifying
    errors by at most sqrt(max c / min c) = 2). Coefficient tables are float64 in both."""
    path, n = sf.VP(), 50
    x = _start(path, n=64)
    a = sf.sample(path, TARGET.field("noise"), solver, steps=n, x_init=x, noise=sf.PerSampleNoise(2), **kw)
    b = sf.sample(path, TARGET.field("noise"), solver, steps=n, x_init=x.float(), noise=sf.PerSampleNoise(2), **kw)
    assert a.stats["solver"] == b.stats["solver"] == ("heun" if not kw else "stochastic_heun")
    scale = max(float(a.x.abs().max()), float(x.abs().max()))
    assert float((a.x - b.x.double()).abs().max()) < n * U32 * scale * 8


def _low_precision_net(dtype):
    """A network computing in ``dtype``: it rounds its inputs to ``dtype`` and returns ``dtype`` values."""
    exact = TARGET.field("noise")

    def net(x, t):
        return exact.predict(x.to(dtype).to(x.dtype), t.to(dtype).to(t.dtype), sf.VP()).to(dtype)
    return sf.NoiseField(net)


def test_bfloat16_network_error_is_bfloat16_sized():
    """Policy: the network receives x and t in the solver state's dtype and may compute in any precision;
    its output is cast to x's dtype for the update. A bf16 network's sample differs from the same float64
    solve by about its unit roundoff u = 2^-8 (rms within [u/10, 4u]): far above float32 rounding, so the
    bf16 computation really happened, and not amplified by the solver."""
    x = _start(sf.VP(), n=128)
    ref = sf.sample(sf.VP(), TARGET.field("noise"), "heun", steps=50, x_init=x).x
    out = sf.sample(sf.VP(), _low_precision_net(torch.bfloat16), "heun", steps=50, x_init=x).x
    assert out.dtype == D
    rms = float((out - ref).pow(2).mean().sqrt())
    assert UBF16 / 10 < rms < 4 * UBF16, rms


def test_autocast_network_runs_in_bfloat16_and_state_stays_float32():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))

    def model(x, t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(torch.cat([x, t[:, None]], 1))
        assert out.dtype == torch.bfloat16
        return out

    sol = sf.sample(sf.VP(), sf.NoiseField(model), "heun", steps=16, n=8, shape=2, noise=0)
    assert sol.x.dtype == torch.float32 and torch.isfinite(sol.x).all()


# ---- 10^6 samples ----------------------------------------------------------------------------------
_MILLION = textwrap.dedent("""
    import resource, torch, sdeflow as sf
    torch.set_num_threads(1)
    field = sf.NoiseField(lambda x, t: 0.5 * x)  # near free: the cost is the noise and the update
    kw = dict(steps=1, n=10**6, shape=(2,), noise=sf.PerSampleNoise(0), gamma="reverse", preflight=False)
    sf.sample(sf.VP(), field, "euler_maruyama", **{**kw, "n": 1000})  # warm up
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seen = []
    counting = sf.NoiseField(lambda x, t: seen.append(x.shape[0]) or 0.5 * x)
    chunked = sf.sample(sf.VP(), counting, "euler_maruyama", chunk_size=2**14, **kw).x
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    whole = sf.sample(sf.VP(), field, "euler_maruyama", **kw).x
    print(max(seen), (peak - base) / 1024, bool(torch.equal(chunked, whole)), bool(torch.isfinite(whole).all()))
""")


def test_a_million_samples_in_bounded_memory():
    """10^6 2-D float32 samples (8 MB of output) with chunk_size=2^14: the field never sees more than a
    chunk, the peak memory grows by less than 8 outputs' worth (64 MB: the output, its concatenation, and
    chunk-sized temporaries; unchunked it is about 40 outputs), and the result is bitwise the unchunked
    one (PerSampleNoise). Runs in a subprocess so the peak RSS is this solve's."""
    res = subprocess.run([sys.executable, "-c", _MILLION], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    max_rows, peak_mb, equal, finite = res.stdout.split()
    assert int(max_rows) == 2 ** 14
    assert float(peak_mb) < 64, peak_mb
    assert equal == "True" and finite == "True"
