"""Per-sample ``model_kwargs`` under per-sample adaptive steps: the network gets the labels of the rows it evaluates.

``dopri5`` (``per_sample=True``) and ``adaptive_heun_sde`` with ``PerSampleNoise`` step every sample on its own
and drop finished rows from the batched evaluation; the per-sample arguments follow them
(:attr:`sdeflow.terms.Term.rows`, :func:`sdeflow.conditioning.select`). The network here is a class-conditional
exact field: label ``y`` selects the Gaussian mixture ``ring(5)`` shifted by ``SHIFT[y]``, and each row's output
is that mixture's exact prediction (elementwise formulas and small per-row reductions: each row is computed on
its own). So, given its label:

* a sample's result is bitwise the same alone, inside a batch of 100 with mixed labels, and in chunks;
* it is bitwise the solve of its own label's unconditional exact field (the same arithmetic row by row), and it
  is that label's exact probability-flow endpoint (SciPy DOP853 at 1e-12) up to an error that follows the
  solver's tolerance, far from the other labels' flows.
"""

from __future__ import annotations

import collections

import pytest
import torch

import sdeflow as sf
from sdeflow.analytic import GaussianMixture, ring
from sdeflow.conditioning import has_per_sample, rows, select
from sdeflow.errors import SdeflowValueError

D = torch.float64
N, TOL = 100, 1e-5
SHIFT = torch.tensor([[-6.0, 0.0], [-2.0, 1.0], [2.0, 0.0], [6.0, 1.0]], dtype=D)  # label y -> mean shift
BASE = ring(5)
TARGETS = [GaussianMixture(torch.ones(5), BASE.means + s, 0.25) for s in SHIFT]
LABELS = torch.randint(0, len(TARGETS), (N,), generator=torch.Generator().manual_seed(5))

CASES = {  # name -> (path, field kind, final_denoise)
    "VP noise": (sf.VP, "noise", False),
    "VE data, final denoise": (lambda: sf.VE(sigma_min=0.002, sigma_max=80.0), "data", True),
}


class Labelled:
    """``net(x, t, class_labels=y)``: row ``i`` is ``TARGETS[y_i]``'s exact ``kind`` prediction at ``(x_i, t_i)``.
    Records the rows of every call and checks that the labels come with exactly the rows evaluated."""

    def __init__(self, path, kind):
        self.path, self.kind, self.rows = path, kind, []

    def __call__(self, x, t, class_labels):
        assert class_labels.shape == (x.shape[0],), (tuple(class_labels.shape), tuple(x.shape))
        self.rows.append(x.shape[0])
        out = torch.empty_like(x)
        for y, target in enumerate(TARGETS):
            m = class_labels == y
            if bool(m.any()):
                out[m] = target.predict(x[m], t[m], self.path, self.kind)
        return out


def _field(name):
    mk_path, kind, fd = CASES[name]
    path = mk_path()
    mk = sf.NoiseField if kind == "noise" else sf.DataField
    net = Labelled(path, kind)
    return path, mk(net), net, kind, fd


def _x_init(path, n=N):
    return path.prior_sample((n, 2), generator=torch.Generator().manual_seed(9), dtype=D)


@pytest.mark.parametrize("name", list(CASES))
def test_a_labelled_sample_is_bitwise_the_same_alone_in_a_mixed_batch_and_chunked(name):
    path, field, net, kind, fd = _field(name)
    x1 = _x_init(path)
    kw = dict(rtol=TOL, atol=TOL, final_denoise=fd)
    full = sf.sample(path, field, "dopri5", x_init=x1, model_kwargs={"class_labels": LABELS}, **kw)
    # finished rows left the batched evaluation, and their labels with them (Labelled checks every call)
    assert min(net.rows) < N and full.stats["evaluations_total"] == sum(net.rows) - fd * N
    for i in (0, 1, 57, N - 1):
        alone = sf.sample(path, field, "dopri5", x_init=x1[i:i + 1], model_kwargs={"class_labels": LABELS[i:i + 1]},
                          **kw)
        assert torch.equal(alone.x[0], full.x[i]), (i, (alone.x[0] - full.x[i]).abs().max())
        assert int(alone.stats["evaluations"][0]) == int(full.stats["evaluations"][i])
    chunked = sf.sample(path, field, "dopri5", x_init=x1, model_kwargs={"class_labels": LABELS}, chunk_size=37, **kw)
    assert torch.equal(chunked.x, full.x)
    # the labels matter: the same noise with other labels gives other samples
    other = sf.sample(path, field, "dopri5", x_init=x1, model_kwargs={"class_labels": (LABELS + 1) % 4}, **kw)
    assert bool(((other.x - full.x).abs().amax(1) > 1.0).all())


@pytest.mark.parametrize("name", list(CASES))
def test_each_sample_reaches_its_own_labels_target(name):
    """Row by row the solve of its label's unconditional exact field (bitwise), and the endpoint of that label's
    exact probability flow (SciPy DOP853 at 1e-12) up to the solver's error, which follows the tolerance (100x
    tighter: the largest and the median error over the samples at least 10x smaller), while every other
    label's flow ends O(1) away (the shifts are 4 apart): the error to its own is below 1e-3 of that distance."""
    path, field, _, kind, fd = _field(name)
    x1 = _x_init(path)
    errs = {}
    for tol in (1e-7, 1e-9):
        sol = sf.sample(path, field, "dopri5", x_init=x1, model_kwargs={"class_labels": LABELS}, rtol=tol, atol=tol,
                        final_denoise=fd)
        t_max, t_min = float(sol.ts[0]), float(sol.ts[-1 - fd])
        errs[tol] = torch.zeros(N, dtype=D)
        for y, target in enumerate(TARGETS):
            rows = LABELS == y
            exact = target.reference_flow(x1[rows], path, t_max, t_min, final_denoise=fd, rtol=1e-12, atol=1e-12)
            errs[tol][rows] = (sol.x[rows] - exact).abs().amax(1)
            if tol != 1e-7:
                continue
            own = sf.sample(path, target.field(kind), "dopri5", x_init=x1[rows], rtol=tol, atol=tol, final_denoise=fd)
            assert torch.equal(own.x, sol.x[rows]), y
            for z, wrong in enumerate(TARGETS):
                if z != y:
                    far = wrong.reference_flow(x1[rows], path, t_max, t_min, final_denoise=fd, rtol=1e-8, atol=1e-8)
                    dist = (sol.x[rows] - far).abs().amax(1)
                    assert bool((errs[tol][rows] < 1e-3 * dist).all()), (y, z, float(dist.min()))
    for stat in (torch.amax, torch.median):  # over the samples (one sample's error can cancel at one tolerance)
        assert float(stat(errs[1e-9])) < 0.1 * float(stat(errs[1e-7])), stat


def test_adaptive_heun_sde_per_sample_noise_follows_the_labels():
    """``adaptive_heun_sde`` with ``PerSampleNoise`` (every sample on its own Brownian path): a labelled sample is
    bitwise the same alone, in the mixed batch and chunked, and bitwise its label's unconditional exact field's."""
    path, field, net, kind, _ = _field("VP noise")
    kw = dict(gamma="reverse", rtol=2e-2, atol=2e-3, t_min=1e-3, shape=(2,), dtype=D)
    full = sf.sample(path, field, "adaptive_heun_sde", n=N, noise=sf.PerSampleNoise(3),
                     model_kwargs={"class_labels": LABELS}, **kw)
    assert min(net.rows) < N
    assert int(full.stats["evaluations"].max()) > int(full.stats["evaluations"].min())
    for i in (0, 33, N - 1):
        noise = sf.PerSampleNoise(3).for_rows(i)
        alone = sf.sample(path, field, "adaptive_heun_sde", n=1, noise=noise,
                          model_kwargs={"class_labels": LABELS[i:i + 1]}, **kw)
        assert torch.equal(alone.x[0], full.x[i]), i
        own = sf.sample(path, TARGETS[int(LABELS[i])].field(kind), "adaptive_heun_sde", n=1, noise=noise, **kw)
        assert torch.equal(own.x[0], full.x[i]), i
    chunked = sf.sample(path, field, "adaptive_heun_sde", n=N, noise=sf.PerSampleNoise(3), chunk_size=37,
                        model_kwargs={"class_labels": LABELS}, **kw)
    assert torch.equal(chunked.x, full.x)


def test_guidance_in_one_call_follows_the_running_rows():
    """Classifier-free guidance (one call on ``[x; x]`` with ``[labels of the rows; null]``) under per-sample
    steps: a sample is bitwise the same alone and in the mixed batch."""
    path = sf.VP()
    null = len(TARGETS) - 1  # any label serves as the "null" condition of this test

    guided = sf.classifier_free_guidance(sf.NoiseField(Labelled(path, "noise")), 1.5, null={"class_labels": null})
    x1 = _x_init(path, 40)
    kw = dict(rtol=TOL, atol=TOL)
    full = sf.sample(path, guided, "dopri5", x_init=x1, model_kwargs={"class_labels": LABELS[:40]}, **kw)
    for i in (0, 21, 39):
        alone = sf.sample(path, guided, "dopri5", x_init=x1[i:i + 1], model_kwargs={"class_labels": LABELS[i:i + 1]},
                          **kw)
        assert torch.equal(alone.x[0], full.x[i]), i


def test_shared_arguments_reach_every_call_whole():
    """A tensor whose first dimension is not the number of samples is shared, even when it equals a chunk's rows
    or the rows still running: the per-sample arguments are told apart on the whole batch."""
    path = sf.VP()
    table = torch.arange(10, dtype=D).reshape(10, 1)  # 10 rows: the chunk size, not n
    seen = []

    def net(x, t, class_labels, table):
        seen.append(table.shape[0])
        return Labelled(path, "noise")(x, t, class_labels)

    sol = sf.sample(path, sf.NoiseField(net), "dopri5", x_init=_x_init(path, 40), chunk_size=10, rtol=TOL, atol=TOL,
                    model_kwargs={"class_labels": LABELS[:40], "table": table})
    assert set(seen) == {10} and sol.stats["chunks"] == 4


def test_labels_with_the_wrong_number_of_rows_are_named():
    """Labels for 3 samples when 4 are drawn are shared arguments (not one per sample): the network's size error
    carries a note naming them and the number of samples."""
    field = sf.NoiseField(lambda x, t, class_labels: x + SHIFT[class_labels])  # torch's own size error
    with pytest.raises(RuntimeError, match="size of tensor") as err:
        sf.sample(sf.VP(), field, "dopri5", n=4, shape=(2,), dtype=D, model_kwargs={"class_labels": LABELS[:3]})
    notes = " ".join(getattr(err.value, "__notes__", []))
    if hasattr(err.value, "add_note"):  # Python >= 3.11
        assert "model_kwargs['class_labels'] (shape (3,))" in notes and "n=4" in notes, notes


def test_per_sample_steps_take_per_sample_model_kwargs():
    """The refusal ("per-sample model_kwargs ... cannot follow dopri5's per-sample steps") is gone: both per-sample
    solvers run with one label per sample and evaluate fewer rows as samples finish."""
    path = sf.VP()
    for solver, extra in (("dopri5", {}), ("adaptive_heun_sde", {"noise": sf.PerSampleNoise(1), "gamma": "reverse"})):
        net = Labelled(path, "noise")
        try:
            sf.sample(path, sf.NoiseField(net), solver, n=16, shape=(2,), dtype=D,
                      model_kwargs={"class_labels": LABELS[:16]}, **extra)
        except SdeflowValueError as e:  # pragma: no cover - the old refusal
            pytest.fail(f"{solver}: {e}")
        assert min(net.rows) < 16 == max(net.rows), solver


def test_select_restricts_per_sample_tensors_at_any_depth():
    """One definition for chunks (a block) and running rows (an index): per-sample tensors inside dicts, lists
    and named tuples are restricted, everything else passed as given."""
    Pair = collections.namedtuple("Pair", "emb scale")
    y, e, shared = torch.arange(5), torch.arange(10.0).reshape(5, 2), torch.ones(2)
    kw = {"y": y, "c": Pair(e, 3.0), "l": [e, shared], "s": "text"}
    idx = torch.tensor([4, 0, 2])
    out = select(kw, 5, idx)
    assert torch.equal(out["y"], y[idx]) and torch.equal(out["c"].emb, e[idx]) and out["c"].scale == 3.0
    assert type(out["c"]) is Pair and torch.equal(out["l"][0], e[idx]) and out["l"][1] is shared
    assert out["s"] == "text"
    block = rows(kw, 5, 1, 3)
    assert torch.equal(block["c"].emb, e[1:3]) and torch.equal(block["y"], select(kw, 5, torch.arange(1, 3))["y"])
    assert rows(kw, 5, 0, 5) is kw
    assert has_per_sample(kw, 5) and not has_per_sample({"l": [shared]}, 5)
