"""Conditioning (``model_kwargs``) and classifier-free guidance in one doubled batch.

The conditional network here is elementwise in the batch (each row's output depends only on that row's
state, time and label), so slicing the labels with the rows must leave every sample bitwise unchanged, as
``PerSampleNoise`` does for the noise. Guidance in one call on ``[x; x]`` equals the two-call form up to
the rounding of the combination: the tolerance is ``64 NFE eps max|x|`` (a few roundings per evaluation,
amplified by the steps; measured 2e-14 absolute at 12 NFE on |x| ~ 3).
"""

from __future__ import annotations

import pytest
import torch

import sdeflow as sf
from sdeflow import distributed as sd
from sdeflow.errors import SdeflowTypeError, SdeflowValueError

D = torch.float64
EMB = torch.linspace(-2.0, 2.0, 33, dtype=D).reshape(11, 3)  # labels 0..9 and the null label 10


class Net:
    """``eps(x, t | y) = x (1 - t/2) + emb[y] t``: elementwise per row; counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, t, class_labels):
        self.calls += 1
        tt = t.reshape((-1,) + (1,) * (x.dim() - 1))
        return x * (1 - 0.5 * tt) + EMB.to(x.dtype)[class_labels] * tt


LABELS = torch.arange(32) % 10


@pytest.mark.parametrize("solver", ["heun", "dpmpp_2m", "euler_maruyama"])
def test_rows_alone_equal_rows_in_a_batch_bitwise(solver):
    f = sf.NoiseField(Net())
    kw = dict(steps=8, shape=(3,), dtype=D, noise=sf.PerSampleNoise(11), preflight=False)  # bitwise equality, not accuracy
    full = sf.sample(sf.VP(), f, solver, n=32, model_kwargs={"class_labels": LABELS}, **kw).x
    alone = sf.sample(sf.VP(), f, solver, n=8, model_kwargs={"class_labels": LABELS[:8]}, **kw).x
    chunked = sf.sample(sf.VP(), f, solver, n=32, model_kwargs={"class_labels": LABELS}, chunk_size=5, **kw).x
    assert torch.equal(full[:8], alone)
    assert torch.equal(full, chunked)
    # the labels matter: other labels, other samples
    other = sf.sample(sf.VP(), f, solver, n=8, model_kwargs={"class_labels": LABELS[1:9]}, **kw).x
    assert not torch.equal(other, alone)


def test_sharded_ranks_pass_their_own_labels(monkeypatch):
    """Three ranks (rank_and_world patched: no process group) together equal the single-process run."""
    f = sf.NoiseField(Net())
    kw = dict(steps=6, shape=(3,), dtype=D, model_kwargs={"class_labels": LABELS, "scale": 1.0}, preflight=False)

    def net(x, t, class_labels, scale):
        return Net()(x, t, class_labels) * scale

    f = sf.NoiseField(net)
    whole = sf.sample(sf.VP(), f, "heun", n=32, noise=sf.PerSampleNoise(3), **kw).x
    parts = []
    for rank in range(3):
        monkeypatch.setattr(sd, "rank_and_world", lambda group=None, r=rank: (r, 3))
        parts.append(sd.sample_sharded(sf.VP(), f, "heun", n=32, noise=3, gather_to=None, **kw).local.x)
    assert torch.equal(torch.cat(parts), whole)


def test_diffusers_model_takes_labels_without_a_closure():
    """A class-conditional diffusers UNet through from_diffusers: model_kwargs reach ``unet(..., class_labels=)``."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                 block_out_channels=(8, 8), down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, num_class_embeds=11).eval()
    r = sf.from_diffusers(unet, diffusers.DDIMScheduler(clip_sample=False), num_inference_steps=5)
    y = torch.tensor([1, 7, 3])
    z = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = r.sample(x_init=r.x_init(z), model_kwargs={"class_labels": y}).x
        b = r.sample(x_init=r.x_init(z), model_kwargs={"class_labels": y}, chunk_size=1).x
        closure = sf.from_diffusers(lambda x, t: unet(x, t, class_labels=y), diffusers.DDIMScheduler(clip_sample=False),
                                    num_inference_steps=5)
        c = closure.sample(x_init=closure.x_init(z)).x
        g = sf.classifier_free_guidance(r.field, 2.0, null={"class_labels": 10})
        one = sf.sample(r.path, g, r.solver, x_init=r.x_init(z), model_kwargs={"class_labels": y}, **r.kwargs).x
        two_f = sf.classifier_free_guidance(
            sf.from_diffusers(lambda x, t: unet(x, t, class_labels=y), diffusers.DDIMScheduler(clip_sample=False)).field,
            sf.from_diffusers(lambda x, t: unet(x, t, class_labels=torch.full_like(y, 10)),
                              diffusers.DDIMScheduler(clip_sample=False)).field, 2.0)
        two = sf.sample(r.path, two_f, r.solver, x_init=r.x_init(z), **r.kwargs).x
    assert torch.equal(a, c)
    # a batch of one per call: the UNet's float32 kernels may round differently by batch size
    u = torch.finfo(torch.float32).eps / 2
    assert (a - b).abs().max() <= 16 * 5 * u * a.abs().max()
    # the network's rounding differences (batch 2B against B) enter with the weights |1 + w| + |w| = 1 + 2w
    assert (one - two).abs().max() <= 16 * 5 * u * two.abs().max() * (1 + 2 * 2.0)


def test_guidance_is_one_network_call_per_evaluation_and_equals_two_calls():
    net = Net()
    f = sf.NoiseField(net)
    w = 3.0
    one_field = sf.classifier_free_guidance(f, w, null={"class_labels": 10})
    assert isinstance(one_field, sf.GuidedField)
    kw = dict(nfe=12, n=32, shape=(3,), dtype=D, noise=sf.PerSampleNoise(5), final_denoise=False, preflight=False)
    one = sf.sample(sf.VP(), one_field, "heun", model_kwargs={"class_labels": LABELS}, **kw)
    assert net.calls == 12 == one.nfe == one.stats["network_calls"]
    net.calls = 0
    two_field = sf.classifier_free_guidance(sf.NoiseField(lambda x, t: net(x, t, LABELS)),
                                            sf.NoiseField(lambda x, t: net(x, t, torch.full_like(LABELS, 10))), w)
    two = sf.sample(sf.VP(), two_field, "heun", **kw)
    assert net.calls == 24
    tol = 64 * 12 * torch.finfo(D).eps * two.x.abs().max()
    assert (one.x - two.x).abs().max() <= tol
    # chunked: each chunk doubles its own rows
    net.calls = 0
    ch = sf.sample(sf.VP(), one_field, "heun", model_kwargs={"class_labels": LABELS}, chunk_size=8, **kw)
    assert net.calls == 12 * 4 and torch.equal(ch.x, one.x)


def test_null_condition_forms():
    """A number, one condition for all rows, or one per row: the same guided field."""
    f = sf.NoiseField(Net())
    x = torch.randn(4, 3, dtype=D, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3])
    outs = [sf.classifier_free_guidance(f, 2.0, null={"class_labels": nv}).predict(x, 0.5, sf.VP(),
                                                                                    model_kwargs={"class_labels": y})
            for nv in (10, torch.tensor(10), torch.tensor([10]), torch.full((4,), 10))]
    for o in outs[1:]:
        assert torch.equal(o, outs[0])
    cond = f.predict(x, 0.5, sf.VP(), model_kwargs={"class_labels": y})
    unc = f.predict(x, 0.5, sf.VP(), model_kwargs={"class_labels": torch.full((4,), 10)})
    torch.testing.assert_close(outs[0], 3.0 * cond - 2.0 * unc, rtol=0, atol=1e-14)


def test_refusals_name_the_argument():
    f = sf.NoiseField(Net())
    kw = dict(steps=2, n=4, shape=(3,), dtype=D, preflight=False)
    with pytest.raises(SdeflowTypeError, match="model_kwargs must be a dict"):
        sf.sample(sf.VP(), f, "euler", model_kwargs=[LABELS], **kw)
    oracle = sf.analytic.OracleField(sf.Gaussian([0.0, 0.0, 0.0], 1.0), "noise")
    with pytest.raises(SdeflowTypeError, match="OracleField passes no keyword arguments"):
        sf.sample(sf.VP(), oracle, "euler", model_kwargs={"class_labels": LABELS[:4]}, **kw)
    g = sf.classifier_free_guidance(f, 1.0, null={"class_labels": 10})
    with pytest.raises(SdeflowValueError, match="null names 'class_labels', which is not in model_kwargs"):
        sf.sample(sf.VP(), g, "euler", **kw)
    with pytest.raises(SdeflowValueError, match="null .* is missing"):
        sf.classifier_free_guidance(f, 1.0)
    two_nulls = sf.classifier_free_guidance(f, 1.0, null={"class_labels": torch.tensor([10, 10])})
    with pytest.raises(SdeflowValueError, match=r"null\['class_labels'\] has shape \(2,\)"):
        two_nulls.predict(torch.zeros(4, 3, dtype=D), 0.5, sf.VP(), model_kwargs={"class_labels": LABELS[:4]})
