"""No avoidable warnings from sdeflow's own code, and dtypes followed rather than imposed.

torch warns once per process ("Converting a tensor with requires_grad=True to a scalar") when a float() reads a
tensor that requires grad; ``torch.set_warn_always(True)`` makes it warn every time, so these tests see it
whichever test triggered it first. Only that message is turned into an error: third-party warnings (torchsde's
Brownian interval, numpy deprecations inside diffusers) are not sdeflow's to fix here.
"""

import warnings

import pytest
import torch

import sdeflow as sf
from sdeflow.grid_opt import network_dtype, optimize_grid

from shared import ROOT

_REQUIRES_GRAD = "Converting a tensor with requires_grad=True to a scalar"


@pytest.fixture
def strict_grad_warning():
    before = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=_REQUIRES_GRAD)
        yield
    torch.set_warn_always(before)


def _net(dtype):
    torch.manual_seed(0)
    return sf.train.mlp(2, hidden=16, depth=1).to(dtype)  # parameters require grad, as a trained network's do


def test_the_guard_catches_the_warning(strict_grad_warning):
    """The fixture turns the warning into an error (so the tests below can fail)."""
    with pytest.raises(UserWarning, match="requires_grad"):
        float(torch.ones(2, requires_grad=True).sum())


@pytest.mark.parametrize("name", sf.solvers.available())
def test_sampling_a_network_with_parameters_does_not_warn(name, strict_grad_warning):
    """Every solver (adaptive ones read error norms as floats) on a network whose parameters require grad."""
    s = sf.solvers.get(name)
    kw = dict(gamma="reverse") if s.sde else {}
    kw.update(nfe=2000) if s.adaptive else kw.update(steps=4)
    wrap = sf.ConsistencyField if s.requires_consistency else sf.NoiseField
    sol = sf.sample(sf.VP(), wrap(_net(torch.float64)), name, n=8, shape=(2,), dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0), preflight=False, **kw)  # 4 steps: warnings only
    assert torch.isfinite(sol.x).all()


def test_optimize_grid_follows_a_float32_network(strict_grad_warning):
    """The README's snippet with a float32 network: the pilots run in the network's dtype (it used to crash:
    'mat1 and mat2 must have the same dtype'), without the requires_grad warning, and the grid samples."""
    net = _net(torch.float32)
    field = sf.NoiseField(net)
    g = optimize_grid(sf.VP(), field, "unipc", nfe=8, shape=(2,), final_denoise=True, n_pilot=16, n_validation=16,
                      maxfev=20, generator=torch.Generator().manual_seed(0))
    assert g.error_optimized <= g.error_start  # the optimiser keeps its best point
    sol = sf.sample(sf.VP(), field, "unipc", grid=g.grid, n=32, shape=(2,), final_denoise=True)
    assert sol.x.dtype == torch.float32 and sol.nfe == 8
    assert all(p.grad is None for p in net.parameters())  # nothing was differentiated


def test_optimize_grid_names_dtype_when_the_network_refuses_it():
    field = sf.NoiseField(_net(torch.float32))
    with pytest.raises(sf.SdeflowTypeError, match="dtype="):
        optimize_grid(sf.VP(), field, "unipc", nfe=6, shape=(2,), dtype=torch.float64, n_pilot=4, n_validation=4,
                      maxfev=2)
    with pytest.raises(sf.SdeflowTypeError, match="float32 or torch.float64"):
        optimize_grid(sf.VP(), field, "unipc", nfe=6, shape=(2,), dtype=torch.float16)


def test_network_dtype_looks_through_fields_and_adapters():
    net32 = _net(torch.float32)
    assert network_dtype(sf.NoiseField(net32)) == torch.float32
    assert network_dtype(sf.VelocityField(net32, flip_time=True)) == torch.float32
    assert network_dtype(sf.NoiseField(sf.ColumnTime(_net(torch.float64)))) == torch.float64
    guided = sf.classifier_free_guidance(sf.NoiseField(net32), sf.NoiseField(_net(torch.float32)), 2.0)
    assert network_dtype(guided) == torch.float32
    assert network_dtype(sf.two_blobs().field("noise")) is None  # an exact oracle: optimize_grid uses float64
    mixed = sf.SumField([(0.5, sf.NoiseField(net32)), (0.5, sf.NoiseField(_net(torch.float64)))])
    assert network_dtype(mixed) is None


def test_pytest_ignores_only_named_third_party_warnings():
    """Each "ignore" filter of the pytest configuration names a message and a third-party module: no blanket
    filter can hide sdeflow's own warnings."""
    import re

    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"filterwarnings = \[(.*?)\n\]", text, re.S).group(1)
    filters = re.findall(r'^\s*"([^"]*)"', block, re.M)
    assert filters
    for f in filters:
        action, message, category, module = f.split(":")[:4]
        assert action == "ignore" and message and category and module and not module.startswith("sdeflow"), f
