"""Sharded sampling on torch.distributed (sdeflow.distributed).

One ``torchrun --standalone --nproc_per_node 2`` run of this very file (the ``__main__`` block below is the
worker; gloo on CPU) draws samples with an ODE and an SDE solver, N odd so the two blocks differ in size,
gathers them to rank 0 and writes shards. The tests check that both are bitwise identical to a
single-process run with the same PerSampleNoise, and that a missing or corrupt shard is named on load.
"""

import json
import math
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
# name -> sample() arguments shared by the worker and the single-process reference; coarse grids on purpose (the
# test is bitwise equality, not accuracy): the preflight's verdict on them is tested in tests/sampling/test_trust.py
RUNS = {
    "ode": dict(preflight=False, solver="heun", steps=12, shape=(2,), dtype=D, field="velocity", path="linear", t_min=1e-3),
    "sde": dict(preflight=False, solver="stochastic_heun", steps=10, shape=(2,), dtype=torch.float32, gamma="reverse",
                field="noise", path="vp", final_denoise=True, chunk_size=5),
    "sra": dict(preflight=False, solver="sra1", steps=6, shape=(2,), dtype=D, gamma=0.7, field="score", path="vp"),
    "x_init": dict(preflight=False, solver="euler", steps=5, dtype=D, field="noise", path="vp", x_init=True),
    # per-sample step control: each rank's rows take the steps they take in one process
    "dopri5": dict(solver="dopri5", rtol=1e-4, atol=1e-4, shape=(2,), dtype=torch.float32, field="data", path="vp",
                   final_denoise=True, chunk_size=6),
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
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))  # workers import this checkout's sdeflow
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
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
    with pytest.raises(sd.ShardError, match=r"manifest .* is malformed: rows 19:20 of n=37 are in no shard \(a gap "
                                            r"before shards\[1\] \(shard-00001-of-00002.safetensors, rows 20:37\)\)"):
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


# ---- issue 13: manifests and shard files are checked field by field ------------------------------------------
X37 = torch.randn(N, 2, generator=torch.Generator().manual_seed(3), dtype=D)  # 3 ranks: rows 0:13, 13:25, 25:37
S = [sd._shard_name(r, 3) for r in range(3)]


@pytest.fixture
def run(tmp_path):
    sd._write_shards(X37, tmp_path / "run", 3, info={"note": "three ranks", "err": float("nan")})
    return tmp_path / "run"


def _edit(d, fn):
    doc = json.loads((d / sd.MANIFEST).read_text())
    new = fn(doc)  # an edit changes doc in place (returning None or a tuple of results) or returns a new document
    doc = doc if new is None or isinstance(new, tuple) else new
    (d / sd.MANIFEST).write_text(json.dumps(doc))


def _set(path, value):
    """An edit setting doc[path[0]][path[1]]... = value (value None deletes the key)."""
    def fn(doc):
        node = doc
        for k in path[:-1]:
            node = node[k]
        if value is None:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return fn


def test_one_process_writes_what_three_ranks_would_and_reads_any_rows(run):
    assert torch.equal(sd.load_shards(run), X37) and sd.load_shards(run).dtype == D
    doc, directory = sd.read_manifest(run / sd.MANIFEST)
    assert directory == str(run) and [(s["start"], s["stop"]) for s in doc["shards"]] == sd.blocks(N, 3)
    assert math.isnan(doc["info"]["err"])
    for a, b in [(0, 37), (5, 30), (13, 25), (12, 13), (36, 37), (3, 3), (12, 12), (13, 13), (37, 37)]:
        assert torch.equal(sd.load_shards(run, rows=(a, b)), X37[a:b])
    os.remove(run / S[2])  # rows held by the other shards still load; a slice touching rank 2 names it
    assert torch.equal(sd.load_shards(run, rows=(0, 25)), X37[:25])
    with pytest.raises(sd.ShardError, match=r"shard-00002-of-00003.safetensors \(rank 2, rows 25:37 of n=37\) is "
                                            r"missing"):
        sd.load_shards(run, rows=(0, 26))
    _edit(run, _set(["shape"], [1, 2]))  # even an empty slice has its shape checked against a shard
    with pytest.raises(sd.ShardError, match=r"holds \(13, 2\) torch.float64, the manifest declares \(13, 1, 2\)"):
        sd.load_shards(run, rows=(3, 3))
    _edit(run, _set(["shape"], [2]))
    _edit(run, lambda doc: doc["shards"].reverse())  # the order of the entries does not matter
    assert torch.equal(sd.load_shards(run, rows=(0, 25)), X37[:25])


@pytest.mark.parametrize("edit, msg", [
    (lambda doc: [doc], "a JSON list, not an object of named fields"),
    (_set(["shards", 1, "start"], "13"), r"shards\[1\]\.start must be an integer in \[0, 37\], got '13' \(str\)"),
    (_set(["n"], 37.0), r"'n' must be an integer >= 1, got 37.0 \(float\)"),
    (_set(["n"], None), r"'n' must be an integer >= 1, got None"),
    (_set(["shards", 0, "rank"], False), r"shards\[0\]\.rank must be an integer in \[0, 2\], got False \(bool\)"),
    (_set(["shards", 2, "rank"], 1), rf"shards\[1\] \({S[1]}\) and shards\[2\] \({S[2]}\) both claim rank 1; each "
                                     r"rank writes exactly one shard"),
    (lambda doc: doc["shards"].__setitem__(2, dict(doc["shards"][1])), rf"shards\[1\] \({S[1]}\) and shards\[2\] "
                                                                        rf"\({S[1]}\) both claim rank 1"),
    (_set(["shards", 2, "file"], S[1]), rf"shards\[1\] and shards\[2\] both name the file {S[1]}"),
    (_set(["shards", 2, "start"], 26), rf"rows 25:26 of n=37 are in no shard \(a gap before shards\[2\] \({S[2]}, "
                                       r"rows 26:37\)\)"),
    (_set(["shards", 1, "stop"], 26), rf"shards\[1\] \({S[1]}, rows 13:26\) and shards\[2\] \({S[2]}, rows 25:37\) "
                                      r"overlap on rows 25:26"),
    (_set(["n"], 38), r"rows 37:38 of n=38 are in no shard \(the rows must cover 0..n exactly\)"),
    (lambda doc: (doc["shards"][0].update(stop=12), doc["shards"][1].update(start=12)),
     rf"shards\[0\] \({S[0]}\) lists rows 0:12 for rank 0, but save_shards gives rank 0 of 3 the rows 0:13"),
    (_set(["shards", 0, "sha256"], "ABC"), r"shards\[0\]\.sha256 must be 64 lowercase hex digits"),
    (_set(["shards", 0, "file"], "../" + S[0]), r"shards\[0\]\.file must be a bare file name"),
    (_set(["shards", 0, "file"], None), r"shards\[0\]\.file must be a bare file name.*got None"),
    (_set(["shards", 0], [0, 13]), r"shards\[0\] must be an object"),
    (_set(["format"], "npy"), "'format' is 'npy', expected 'sdeflow.shards/1'"),
    (_set(["format"], "sdeflow.shards/2"), "written by a newer sdeflow"),
    (_set(["dtype"], "float128"), "'dtype' must name a dtype such as 'float32', got 'float128'"),
    (_set(["dtype"], "nn"), "'dtype' must name a dtype"),
    (_set(["shape"], ["2"]), r"shape\[0\] must be an integer >= 0, got '2'"),
    (_set(["shape"], 2), "'shape' must be the list of event sizes"),
    (_set(["world_size"], 4), r"'shards' must list one entry per rank \(world_size=4\), got 3 entries"),
    (_set(["info"], [1]), "'info' must be an object"),
])
def test_malformed_manifests_are_named_field_by_field(run, edit, msg):
    _edit(run, edit)
    with pytest.raises(sd.ShardError, match=r"manifest .*manifest.json is malformed: " + msg if "newer" not in msg
                       else msg) as e:
        sd.load_shards(run)
    assert e.value.file == str(run / sd.MANIFEST)


def test_manifest_json_must_be_strict(run):
    text = (run / sd.MANIFEST).read_text()
    (run / sd.MANIFEST).write_text(text.replace('"n": 37', '"n": 37, "n": 12', 1))
    with pytest.raises(sd.ShardError, match="not valid JSON \\(duplicate key 'n'\\)"):
        sd.load_shards(run)
    (run / sd.MANIFEST).write_bytes(b"\xff\xfe{}")
    with pytest.raises(sd.ShardError, match="not valid JSON"):
        sd.load_shards(run)
    (run / sd.MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(sd.ShardError, match="nested too deeply"):
        sd.load_shards(run)


def _rewrite(run, rank, tensors, meta):
    """Replace rank's shard by a file with these tensors/metadata and record its digest in the manifest."""
    from sdeflow import io

    f = run / S[rank]
    io.save_tensors(f, tensors, meta)
    _edit(run, _set(["shards", rank, "sha256"], sd._sha256(str(f))))


META1 = {"kind": "shard", "format": sd.FORMAT, "n": N, "rank": 1, "world_size": 3, "start": 13, "stop": 25}


@pytest.mark.parametrize("tensors, meta, msg", [
    ({"y": X37[13:25]}, META1, r"holds the tensors \['y'\], but a shard holds exactly one tensor 'x'"),
    ({"x": X37[13:25], "extra": X37[:1]}, META1, r"holds the tensors \['extra', 'x'\]"),
    ({"x": X37[13:25].float()}, META1, r"holds \(12, 2\) torch.float32, the manifest declares \(12, 2\) torch.float64"),
    ({"x": torch.zeros(12, 3, dtype=D)}, META1, r"holds \(12, 3\) torch.float64, the manifest declares \(12, 2\)"),
    ({"x": X37[13:25]}, {**META1, "start": 12}, r"records rank 1, rows 12:25 of n=37 \(world_size 3\), but the "
                                                r"manifest lists it as rank 1, rows 13:25 of n=37"),
    ({"x": X37[13:25]}, {**META1, "rank": "1"}, "records rank '1'"),
    ({"x": X37[13:25]}, {k: v for k, v in META1.items() if k != "kind"}, "records rank 1"),
])
def test_shard_files_are_checked_against_the_manifest(run, tensors, meta, msg):
    _rewrite(run, 1, tensors, meta)
    with pytest.raises(sd.ShardError, match=msg) as e:
        sd.load_shards(run)
    assert e.value.file == str(run / S[1])


def test_swapped_shard_files_are_named_even_with_matching_digests(run):
    """Renaming rank 1's and rank 2's files (12 rows each) into each other's place, and swapping the digests
    in the manifest, would silently exchange their rows; each file's own metadata says which rows it holds."""
    os.rename(run / S[1], run / "tmp")
    os.rename(run / S[2], run / S[1])
    os.rename(run / "tmp", run / S[2])
    _edit(run, lambda doc: (doc["shards"][1].update(sha256=sd._sha256(str(run / S[1]))),
                            doc["shards"][2].update(sha256=sd._sha256(str(run / S[2])))))
    with pytest.raises(sd.ShardError, match=rf"{S[1]} records rank 2, rows 25:37 of n=37 \(world_size 3\), but the "
                                            r"manifest lists it as rank 1, rows 13:25"):
        sd.load_shards(run)


def test_shard_that_is_not_an_sdeflow_file_is_named(run):
    (run / S[0]).write_bytes(b"\0" * 400)
    _edit(run, _set(["shards", 0, "sha256"], sd._sha256(str(run / S[0]))))
    with pytest.raises(sd.ShardError, match=rf"shard .*{S[0]} \(rank 0, rows 0:13 of n=37\) cannot be read: .*is not "
                                            r"a safetensors file"):
        sd.load_shards(run)


def test_huge_claims_are_refused_before_allocating(run, monkeypatch):
    """n = 10**12 rows (consistent blocks) is refused from the file sizes, with the estimate, before any
    allocation; a result larger than the machine's memory is refused with the slice to read instead."""
    big = 10 ** 12
    _edit(run, lambda doc: (doc.update(n=big), [sh.update(zip(("start", "stop"), sd.block(big, r, 3)))
                                                for r, sh in enumerate(doc["shards"])]))
    with pytest.raises(sd.ShardError, match=rf"{S[0]} \(rank 0, rows 0:333333333334 of n=1000000000000\) is \d+ "
                                            r"bytes, but the manifest declares 333333333334 rows of shape \(2,\) "
                                            r"torch.float64, 4.97e\+03 GiB.*nothing was read or allocated"):
        sd.load_shards(run)
    sd._write_shards(X37, run, 3)
    with open(run / S[1], "r+b") as f:  # a 200 MB file (sparse on disk) in place of a 12-row shard: not hashed
        f.truncate(200 << 20)
    with pytest.raises(sd.ShardError, match=rf"{S[1]} \(rank 1, rows 13:25 of n=37\) is 209715200 bytes, but the "
                                            r"manifest declares 12 rows .*nothing was read or allocated"):
        sd.load_shards(run)
    sd._write_shards(X37, run, 3)
    monkeypatch.setattr(sd, "_physical_memory", lambda device: 100)
    with pytest.raises(sd.ShardError, match=r"rows 0:37 of .*manifest.json need 592 bytes \(37 rows of shape \(2,\) "
                                            r"torch.float64\), more than the 100 bytes of memory of cpu; nothing was "
                                            r"allocated: read a slice at a time with load_shards\(..., rows="):
        sd.load_shards(run)
    assert torch.equal(sd.load_shards(run, rows=(30, 36)), X37[30:36])  # 96 bytes fit


@pytest.mark.parametrize("rows, exc, msg", [
    ((5, 40), sf.SdeflowValueError, r"rows=\(5, 40\) must satisfy 0 <= start <= stop <= n=37"),
    ((6, 5), sf.SdeflowValueError, "must satisfy"),
    ((1.0, 2), sf.SdeflowTypeError, "rows must be a pair of integers"),
    (3, sf.SdeflowTypeError, "rows must be a pair of integers"),
])
def test_rows_argument_is_checked(run, rows, exc, msg):
    with pytest.raises(exc, match=msg):
        sd.load_shards(run, rows=rows)


def test_save_shards_checks_info_and_location(tmp_path):
    with pytest.raises(sf.SdeflowTypeError, match=r"info\['f'\] = .* is not JSON-serialisable"):
        sd.save_shards(torch.zeros(2, 1), tmp_path, 2, info={"f": object()})
    with pytest.raises(sf.SdeflowTypeError, match="directory must be a file name"):
        sd.save_shards(torch.zeros(2, 1), 3, 2)
    with pytest.raises(sf.SdeflowTypeError, match="location must be a file name"):
        sd.load_shards(None)
    assert not os.listdir(tmp_path)


if __name__ == "__main__":
    _worker(sys.argv[1])
