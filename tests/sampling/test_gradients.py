"""Gradients through sample(..., grad=...): no graph by default, checkpointing equal to full backpropagation
(the same operations in the same order: equal to rounding, noise replayed), full backpropagation equal to
central finite differences (their error falls as h^2), and saved-tensor bytes: none for the default,
linear in the steps for "full", and only the carried state per step for "checkpoint"."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import sdeflow as sf

D = torch.float64
PATH = sf.VP()
WINDOW = dict(t_max=0.99, t_min=0.01, preflight=False)


def _net(width: int = 16, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.Tanh(), torch.nn.Linear(width, 2)).to(D)


def _field(net, name=None):
    """The network as a noise predictor, or as a consistency function for a solver that samples one."""
    wrap = sf.ConsistencyField if name and sf.solvers.get(name).requires_consistency else sf.NoiseField
    return wrap(lambda x, t: net(torch.cat([x, t[:, None].to(x.dtype)], -1)))


def _x0(n: int = 6) -> torch.Tensor:
    return torch.randn(n, 2, dtype=D, generator=torch.Generator().manual_seed(1))


class _Shifted(sf.noise.NoiseSource):
    """A user's stateful source sdeflow does not know: its draws are recorded and handed back on replay."""

    def __init__(self):
        self.g = torch.Generator().manual_seed(5)

    def draw(self, k, t0, t1, like, count=1):
        return torch.randn(like.shape, generator=self.g, dtype=like.dtype) + 0.1


# name, options, noise factory (None: ODE)
CASES = [
    ("heun", {}, None),
    ("dpmpp_2m", {}, None),  # a multistep program: carries the previous prediction
    ("unipc", {}, None),  # the generic multistep path: history list and the corrector's previous state
    ("euler_maruyama", {"gamma": "reverse"}, lambda: dict(generator=torch.Generator().manual_seed(3))),
    ("euler_maruyama", {"gamma": "reverse"}, lambda: dict(noise=sf.PerSampleNoise(7))),
    ("stochastic_heun", {"gamma": "reverse"}, lambda: dict(noise=_Shifted())),
    ("sde_dpmpp_2m", {"gamma": "reverse"}, lambda: dict(generator=torch.Generator().manual_seed(4))),
]
IDS = ["heun", "dpmpp_2m", "unipc", "em-generator", "em-per-sample", "stoch_heun-custom-source", "sde_dpmpp_2m"]


def _grads(net, name, opts, noise, mode, steps=8, x0=None, **kw):
    """Samples and the gradients of sum(x^2) with respect to x_init and the network's parameters."""
    x = (_x0() if x0 is None else x0).clone().requires_grad_(True)
    net.zero_grad()
    out = sf.sample(PATH, _field(net, name), name, x_init=x, steps=steps, grad=mode, **WINDOW, **opts,
                    **(noise() if noise else {}), **kw).x
    (out ** 2).sum().backward()
    return out.detach(), [x.grad.clone()] + [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("name,opts,noise", CASES, ids=IDS)
def test_default_builds_no_graph_and_gives_the_same_samples(name, opts, noise):
    net = _net()
    x = _x0()
    out = sf.sample(PATH, _field(net, name), name, x_init=x, steps=8, **WINDOW, **opts, **(noise() if noise else {})).x
    assert not out.requires_grad and out.grad_fn is None  # though every parameter requires grad
    ref, _ = _grads(net, name, opts, noise, "full", x0=x)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize("name,opts,noise", CASES, ids=IDS)
def test_checkpoint_equals_full_backpropagation(name, opts, noise):
    """The checkpointed segments run the same tensor operations in the same order as full backpropagation,
    with the same noise: samples equal bitwise, gradients to rounding."""
    net = _net()
    out_f, g_f = _grads(net, name, opts, noise, "full")
    out_c, g_c = _grads(net, name, opts, noise, "checkpoint")
    torch.testing.assert_close(out_c, out_f, rtol=0, atol=0)
    for a, b in zip(g_c, g_f):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert all(bool(g.abs().sum() > 0) for g in g_f)


def test_checkpoint_replays_the_generator_noise_and_leaves_the_generator_where_the_solve_left_it(monkeypatch):
    net = _net()
    gen = torch.Generator().manual_seed(3)
    x = _x0().requires_grad_(True)
    out = sf.sample(PATH, _field(net), "stochastic_heun", x_init=x, steps=8, gamma="reverse", generator=gen,
                    grad="checkpoint", **WINDOW).x
    after_solve = gen.get_state()
    (out ** 2).sum().backward()
    assert torch.equal(gen.get_state(), after_solve)  # rewound for each recomputation, then put back
    # the check is sensitive: stochastic Heun evaluates the network at a noisy stage, so recomputing with the
    # generator's next draws (no replay) changes the gradients (Euler-Maruyama's additive noise would not:
    # its backward never reads the normals)
    noise = CASES[3][2]
    _, g_full = _grads(net, "stochastic_heun", {"gamma": "reverse"}, noise, "full")
    monkeypatch.setattr(sf.GeneratorNoise, "set_state", lambda self, state: None)  # no rewinding
    _, g_bad = _grads(net, "stochastic_heun", {"gamma": "reverse"}, noise, "checkpoint")
    assert not torch.allclose(g_bad[0], g_full[0], rtol=1e-6, atol=0)


def test_checkpoint_with_chunks_trajectory_and_final_denoise():
    net = _net()
    kw = dict(chunk_size=4, return_trajectory=True, final_denoise=True)
    x_f = _x0(10).requires_grad_(True)
    x_c = _x0(10).requires_grad_(True)
    sol_f = sf.sample(PATH, _field(net), "dpmpp_2m", x_init=x_f, steps=6, grad="full", **WINDOW, **kw)
    sol_c = sf.sample(PATH, _field(net), "dpmpp_2m", x_init=x_c, steps=6, grad="checkpoint", **WINDOW, **kw)
    torch.testing.assert_close(sol_c.trajectory.detach(), sol_f.trajectory.detach(), rtol=0, atol=0)
    sol_f.trajectory.square().sum().backward()
    sol_c.trajectory.square().sum().backward()
    torch.testing.assert_close(x_c.grad, x_f.grad, rtol=1e-12, atol=1e-14)


def test_explicit_mode_builds_a_graph_inside_no_grad_and_default_accepts_x_init_there():
    net = _net()
    x = _x0().requires_grad_(True)
    with torch.no_grad():
        out = sf.sample(PATH, _field(net), "heun", x_init=x, steps=4, grad="full", **WINDOW).x
        plain = sf.sample(PATH, _field(net), "heun", x_init=x, steps=4, **WINDOW).x  # autograd is off: no error
    assert out.requires_grad and not plain.requires_grad
    with pytest.raises(sf.GradientError, match="x_init requires grad"):
        sf.sample(PATH, _field(net), "heun", x_init=x, steps=4, **WINDOW)
    with pytest.raises(sf.GradientError, match="'torchdiffeq:rk4' runs its own loop"):
        sf.sample(PATH, _field(net), "torchdiffeq:rk4", x_init=x, steps=4, grad="checkpoint", **WINDOW)


# ---- full backpropagation against central differences ------------------------------------------------
@pytest.mark.parametrize("name,opts,noise", [CASES[0], CASES[1], CASES[3]], ids=["heun", "dpmpp_2m", "em-generator"])
def test_full_backpropagation_matches_central_differences(name, opts, noise):
    """Directional derivatives of L = sum(x^2) along a random direction of the parameters and of x_init: the
    central difference (L(+h) - L(-h)) / 2h differs from the autograd value by C h^2 (+ rounding ~ 1e-16 L / h,
    far below at these h), so its error falls 4x per halving of h: the fitted slope is 2 only if the autograd
    value is the exact derivative of the discrete solve (an error in it would show as a floor)."""
    net = _net()
    params = list(net.parameters())
    _, g = _grads(net, name, opts, noise, "full")
    gen = torch.Generator().manual_seed(11)
    v = [torch.randn(p.shape, dtype=D, generator=gen) for p in params]
    u = torch.randn(6, 2, dtype=D, generator=gen)
    norm = math.sqrt(sum(float((t ** 2).sum()) for t in v))
    v = [t / norm for t in v]
    u = u / float(u.norm())
    x0 = _x0()

    def loss(eps_p: float, eps_x: float) -> float:
        with torch.no_grad():
            saved = [p.clone() for p in params]
            for p, d in zip(params, v):
                p.add_(d, alpha=eps_p)
            out = sf.sample(PATH, _field(net), name, x_init=x0 + eps_x * u, steps=8, **WINDOW, **opts,
                            **(noise() if noise else {})).x
            for p, s in zip(params, saved):
                p.copy_(s)
        return float((out ** 2).sum())

    exact = {"params": sum(float((a * b).sum()) for a, b in zip(g[1:], v)), "x_init": float((g[0] * u).sum())}
    hs = [0.01, 0.005, 0.0025]  # the h^2 regime of this loss (about 1e-4 relative error at h = 0.01)
    for which, exact_value in exact.items():
        errs = []
        for h in hs:
            e = (h, 0.0) if which == "params" else (0.0, h)
            fd = (loss(*e) - loss(-e[0], -e[1])) / (2 * h)
            errs.append(abs(fd - exact_value))
        slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
        assert 1.8 < slope < 2.2, (which, errs, slope)
        assert errs[-1] < 1e-3 * abs(exact_value), (which, errs, exact_value)


# ---- memory: bytes autograd keeps for the backward pass -------------------------------------------
def saved_bytes(net, name, steps, mode, **opts) -> int:
    """Bytes of the distinct storages autograd saves for backward during one solve (through
    torch.autograd.graph.saved_tensors_hooks: deterministic, any device). Under "checkpoint" these are the
    segments' inputs (the state and the carried tensors of every step); the activations inside a segment
    are not kept (they are recomputed in backward)."""
    seen, total = set(), [0]

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in seen:
            seen.add(s.data_ptr())
            total[0] += s.nbytes()
        return t

    x = _x0(64).requires_grad_(mode is not None)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = sf.sample(PATH, _field(net, name), name, x_init=x, steps=steps, grad=mode, **WINDOW, **opts)
    del out
    return total[0]


@pytest.mark.parametrize("name,opts,carried", [("heun", {}, 1), ("dpmpp_2m", {}, 2),
                                              ("euler_maruyama", {"gamma": "reverse"}, 1)])
def test_saved_bytes_flat_for_checkpoint_linear_for_full(name, opts, carried):
    narrow, wide = _net(8), _net(256)
    state = 64 * 2 * 8  # one (64, 2) float64 tensor
    n = 8
    for net in (narrow, wide):
        assert saved_bytes(net, name, n, None, **opts) == 0
        full = [saved_bytes(net, name, s, "full", **opts) for s in (n, 2 * n)]
        assert 1.9 < full[1] / full[0] <= 2.0  # every step's activations
        ck = [saved_bytes(net, name, s, "checkpoint", **opts) for s in (n, 2 * n)]
        # per step exactly the state and the carried tensors; the activations (what is left) are flat
        assert ck[1] - ck[0] == n * carried * state
        act = [c - s * carried * state for c, s in zip(ck, (n, 2 * n))]
        assert act[0] == act[1]
    # the network's width changes what "full" keeps, not what "checkpoint" keeps
    assert saved_bytes(wide, name, n, "full", **opts) > 10 * saved_bytes(narrow, name, n, "full", **opts)
    assert saved_bytes(wide, name, n, "checkpoint", **opts) == saved_bytes(narrow, name, n, "checkpoint", **opts)


def peak_live_bytes(net, name, steps, mode, **opts) -> int:
    """Peak live tensor bytes over the forward and backward passes (sdeflow.bench.scaling.LiveBytes: every
    storage an operation creates, until its last tensor is freed; exact and deterministic)."""
    from sdeflow.bench.scaling import LiveBytes

    x = _x0(64).requires_grad_(mode is not None)
    with LiveBytes() as mem:
        out = sf.sample(PATH, _field(net, name), name, x_init=x, steps=steps, grad=mode, **WINDOW, **opts).x
        if mode is not None:
            out.square().sum().backward()
    del out
    net.zero_grad(set_to_none=True)
    return mem.peak


@pytest.mark.parametrize("name,opts,carried", [("heun", {}, 1), ("dpmpp_2m", {}, 2),
                                              ("euler_maruyama", {"gamma": "reverse"}, 1)])
def test_peak_memory_of_forward_and_backward(name, opts, carried):
    """Twice the steps: "full" keeps every step's activations (the peak doubles, minus the fixed part);
    "checkpoint" adds only the carried state per step (plus the per-step float tables, a few bytes); None adds
    nothing but those tables."""
    net = _net(256)
    state = 64 * 2 * 8
    n = 8
    none = [peak_live_bytes(net, name, s, None, **opts) for s in (n, 2 * n)]
    full = [peak_live_bytes(net, name, s, "full", **opts) for s in (n, 2 * n)]
    ck = [peak_live_bytes(net, name, s, "checkpoint", **opts) for s in (n, 2 * n)]
    assert none[1] - none[0] < state
    assert full[1] - full[0] > 0.9 * full[0] - none[0]
    assert n * carried * state <= ck[1] - ck[0] < n * carried * state + state


def test_checkpoint_with_an_integration_path():
    net = _net()
    g = {mode: _grads(net, "dpmpp_2m", {"integration_path": sf.LinearFlow()}, None, mode)[1]
         for mode in ("full", "checkpoint")}
    for a, b in zip(g["checkpoint"], g["full"]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sf.solvers.available())
def test_every_solver_either_checkpoints_exactly_or_is_refused_by_name(name):
    """Every registered solver: "checkpoint" equals "full" (4 steps, seeded noise), or, for the adaptive solvers
    and the backends that run their own loops, GradientError naming grad="full"."""
    s = sf.solvers.get(name)
    opts = {"gamma": "reverse"} if s.sde else {}
    noise = lambda: {"generator": torch.Generator().manual_seed(3)}  # noqa: E731 - ancestral draws too
    net = _net()
    if s.adaptive or not s.planned:
        with pytest.raises(sf.GradientError, match="grad='full'"):
            _grads(net, name, opts, noise, "checkpoint", steps=4 if not s.adaptive else None)
        return
    out_f, g_f = _grads(net, name, opts, noise, "full", steps=4)
    out_c, g_c = _grads(net, name, opts, noise, "checkpoint", steps=4)
    torch.testing.assert_close(out_c, out_f, rtol=0, atol=0)
    for a, b in zip(g_c, g_f):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
