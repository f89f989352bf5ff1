"""Sharded sampling on torch.distributed (sdeflow.distributed).

One ``torchrun --standalone --nproc_per_node 2`` run of this very file (the ``__main__`` block below is the
worker; gloo on CPU) draws samples with an ODE and an SDE solver, N odd so the two blocks differ in size,
gathers them to rank 0 and writes shards. The tests check that both are bitwise identical to a
single-process run with the same PerSampleNoise, and that a missing or corrupt shard is named on load.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sdeflow as sf
from sdeflow import distributed as sd

D = torch.float64
N = 37  # odd: blocks of 19 and 18 rows
TARGET = sf.eight_gaussians()
RUNS = {  # name -> sample() arguments shared by the worker and the single-process reference
    "ode": dict(solver="heun", steps=12, shape=(2,), dtype=D, field="velocity", path="linear", t_min=1e-3),
    "sde": dict(solver="stochastic_heun", steps=10, shape=(2,), dtype=torch.float32, gamma="reverse",
                field="noise", path="vp", final_denoise=True, chunk_size=5),
    "sra": dict(solver="sra1", steps=6, shape=(2,), dtype=D, gamma=0.7, field="score", path="vp"),
    "x_init": dict(solver="euler", steps=5, dtype=D, field="noise", path="vp", x_init=True),
}
SEED = 11


def _args(name):
    kw = dict(RUNS[name])
    path = {"vp": sf.VP(), "linear": sf.LinearFlow()}[kw.pop("path")]
    field = TARGET.field(kw.pop("field"))
    if kw.pop("x_init", False):  # the same given initial states on every rank
        kw["x_init"] = torch.randn(N, 2, generator=torch.Generator().manual_seed(5), dtype=kw["dtype"])
    return path, field, kw.pop("solver"), kw


def _reference(name):
    path, field, solver, kw = _args(name)
    kw.pop("chunk_size", None)  # the single-process reference integrates all N rows in one batch
    return sf.sample(path, field, solver, n=N if "x_init" not in kw else None, noise=sf.PerSampleNoise(SEED),
                     **kw).x


def _worker(out_dir):
    """Run under torchrun: every rank samples its block; rank 0 keeps the gathered samples."""
    import torch.distributed as dist

    from sdeflow.io import save_tensors

    dist.init_process_group("gloo")
    rank, world = sd.rank_and_world()
    gathered = {}
    for name in RUNS:
        path, field, solver, kw = _args(name)
        out = sd.sample_sharded(path, field, solver, n=N, noise=SEED, gather_to=0,
                                shard_dir=os.path.join(out_dir, name), **kw)
        assert (out.start, out.stop) == sd.block(N, rank, world) and out.local.x.shape[0] == out.stop - out.start
        assert (out.x is not None) == (rank == 0)
        if rank == 0:
            gathered[name] = out.x
    if rank == 0:
        save_tensors(os.path.join(out_dir, "gathered.safetensors"), gathered)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def torchrun_out(tmp_path_factory):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path_factory.mktemp("dist")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.abspath(__file__), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return out


@pytest.mark.parametrize("name", list(RUNS))
def test_two_ranks_gathered_equal_a_single_process_run_bitwise(torchrun_out, name):
    from sdeflow.io import load_tensors

    x = load_tensors(os.path.join(torchrun_out, "gathered.safetensors"))[0][name]
    ref = _reference(name)
    assert x.dtype == ref.dtype and torch.equal(x, ref)


@pytest.mark.parametrize("name", list(RUNS))
def test_two_ranks_shards_reassemble_to_the_single_process_run(torchrun_out, name):
    d = torchrun_out / name
    doc = json.loads((d / sd.MANIFEST).read_text())
    assert doc["n"] == N and doc["world_size"] == 2 and doc["shape"] == [2]
    assert [(s["start"], s["stop"]) for s in doc["shards"]] == [(0, 19), (19, 37)]
    assert torch.equal(sd.load_shards(d), _reference(name))


def _copy(torchrun_out, tmp_path):
    d = tmp_path / "ode"
    shutil.copytree(torchrun_out / "ode", d)
    return d


def test_missing_shard_is_named_with_the_fix(torchrun_out, tmp_path):
    d = _copy(torchrun_out, tmp_path)
    os.remove(d / "shard-00001-of-00002.safetensors")
    with pytest.raises(sd.ShardError, match=r"shard-00001-of-00002\.safetensors \(rank 1, rows 19:37 of n=37\) "
                                            r"is missing.*for_rows\(19\)") as e:
        sd.load_shards(d)
    assert e.value.file.endswith("shard-00001-of-00002.safetensors")


def test_corrupt_shard_is_named_with_the_fix(torchrun_out, tmp_path):
    d = _copy(torchrun_out, tmp_path)
    f = d / "shard-00000-of-00002.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-3] ^= 0x01  # one bit of one sample
    f.write_bytes(bytes(raw))
    with pytest.raises(sd.ShardError, match=r"shard-00000-of-00002\.safetensors \(rank 0, rows 0:19 of n=37\) "
                                            r"is corrupt: its sha256 is"):
        sd.load_shards(d)


def test_missing_or_malformed_manifest_is_reported(torchrun_out, tmp_path):
    d = _copy(torchrun_out, tmp_path)
    doc = json.loads((d / sd.MANIFEST).read_text())
    doc["shards"][1]["start"] = 20
    (d / sd.MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(sd.ShardError, match="manifest .* is malformed .*expected 19:37"):
        sd.load_shards(d)
    os.remove(d / sd.MANIFEST)
    with pytest.raises(sd.ShardError, match="no manifest at .*did not finish"):
        sd.load_shards(d)


# ---- in-process (no process group: rank 0 of 1) ------------------------------------------------------
@given(n=st.integers(0, 10_000), world=st.integers(1, 64))
def test_blocks_are_contiguous_cover_all_rows_and_differ_by_at_most_one(n, world):
    spans = sd.blocks(n, world)
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    sizes = [e - s for s, e in spans]
    assert max(sizes) - min(sizes) <= 1 and sorted(sizes, reverse=True) == sizes


def test_without_a_process_group_it_is_one_rank_holding_everything(tmp_path):
    path, field, solver, kw = _args("sra")
    out = sd.sample_sharded(path, field, solver, n=N, noise=sf.PerSampleNoise(SEED), shard_dir=tmp_path, **kw)
    assert (out.rank, out.world_size, out.start, out.stop) == (0, 1, 0, N)
    assert torch.equal(out.x, _reference("sra")) and torch.equal(sd.load_shards(tmp_path), out.x)
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("kw, msg", [
    (dict(generator=torch.Generator().manual_seed(0)), "does not take generator="),
    (dict(noise=sf.GeneratorNoise(torch.Generator().manual_seed(0))), "gives every block the same normals"),
    (dict(noise=1, n=0), "n must be an integer >= 1"),
])
def test_bad_arguments_are_refused_with_the_fix(kw, msg):
    kw = {"noise": 1, "n": 4, **kw}
    with pytest.raises((sf.SdeflowValueError, sf.SdeflowTypeError), match=msg):
        sd.sample_sharded(sf.VP(), TARGET.field("noise"), "euler", steps=2, shape=(2,), **kw)


def test_gather_rows_checks_the_block_size():
    with pytest.raises(sf.SdeflowValueError, match=r"owns rows 0:5 of n=5 \(5 rows\), but x_local has 4"):
        sd.gather_rows(torch.zeros(4, 2), 5)


if __name__ == "__main__":
    _worker(sys.argv[1])
