"""Safe persistence: round trips of grids, solutions and field checkpoints; malicious pickles are refused."""

import json
import math
import os
import pickle

import numpy as np
import pytest
import torch

import sdeflow as sf
from sdeflow import io

from validation_files import same

D = torch.float64


def test_tensors_round_trip_with_metadata(tmp_path):
    t = {"a": torch.randn(3, 2, dtype=D), "b": torch.arange(4), "h": torch.ones(2, dtype=torch.bfloat16),
         "view": torch.randn(4, 4).t()}  # non-contiguous
    t["tied"] = t["a"]
    io.save_tensors(tmp_path / "t.safetensors", t, {"rank": 3, "note": "shard", "xs": (1.5, 2)})
    back, meta = io.load_tensors(tmp_path / "t.safetensors")
    assert set(back) == set(t)
    for k in t:
        assert back[k].dtype == t[k].dtype and torch.equal(back[k], t[k])
    assert meta["rank"] == 3 and meta["note"] == "shard" and meta["xs"] == [1.5, 2]
    assert meta["format_version"] == io.FORMAT_VERSION


def test_metadata_must_be_json(tmp_path):
    with pytest.raises(sf.SdeflowTypeError, match="not JSON-serialisable"):
        io.save_tensors(tmp_path / "t.safetensors", {"a": torch.zeros(1)}, {"obj": object()})
    with pytest.raises(sf.SdeflowTypeError, match=r"tensors\['a'\] must be a torch.Tensor"):
        io.save_tensors(tmp_path / "t.safetensors", {"a": [1.0]})


def test_grid_round_trip(tmp_path):
    g = sf.grids.karras(sf.VP(), 7, 1.0, 1e-3)
    io.save_grid(tmp_path / "g.safetensors", g)
    back = io.load_grid(tmp_path / "g.safetensors")
    assert back.dtype == D and torch.equal(back, g)
    with pytest.raises(ValueError, match="strictly monotone"):
        io.save_grid(tmp_path / "bad.safetensors", [1.0, 0.5, 0.7])


def test_solution_round_trip(tmp_path):
    target = sf.Gaussian([1.0, -0.5], [0.5, 2.0])
    sol = sf.sample(sf.VP(), target.field("noise"), "heun", steps=16, n=5, shape=2, dtype=D, noise=7,
                    return_trajectory=True)
    io.save_solution(tmp_path / "s.safetensors", sol)
    back = io.load_solution(tmp_path / "s.safetensors")
    assert torch.equal(back.x, sol.x) and torch.equal(back.ts, sol.ts)
    assert torch.equal(back.trajectory, sol.trajectory)
    assert back.nfe == sol.nfe and back.stats == sol.stats
    with pytest.raises(ValueError, match="not a grid"):
        io.load_grid(tmp_path / "s.safetensors")


def test_field_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    field = sf.NoiseField(sf.ColumnTime(net))  # the module is found through the time adapter
    io.save_field(tmp_path / "f.safetensors", field, sde_path=sf.VP(0.2, 15.0), metadata={"epochs": 3})
    state, meta = io.load_field_state(tmp_path / "f.safetensors")
    net2 = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    net2.load_state_dict(state)
    x = torch.randn(4, 3)
    assert torch.equal(net2(x), net(x))
    assert meta["field_kind"] == "noise" and meta["epochs"] == 3 and meta["module_class"] == "Sequential"
    p = io.path_from_metadata(meta)
    assert isinstance(p, sf.VP) and (p.beta_min, p.beta_max) == (0.2, 15.0)
    io.save_field(tmp_path / "d.safetensors", net, sde_path=sf.DiscreteVP(T=50))
    _, meta = io.load_field_state(tmp_path / "d.safetensors")
    assert torch.equal(io.path_from_metadata(meta).betas, sf.DiscreteVP(T=50).betas)
    assert set(io.load_state_dict(tmp_path / "d.safetensors")) == set(net.state_dict())


class _Evil:
    """Unpickling this would create a marker file (a stand-in for os.system)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_malicious_pickle_is_refused_and_never_executed(tmp_path, writer):
    marker = tmp_path / "pwned"
    evil = {"weight": torch.zeros(2), "payload": _Evil(str(marker))}
    f = tmp_path / "evil.pt"
    if writer == "pickle":
        with open(f, "wb") as fh:
            pickle.dump(evil, fh)
    else:
        torch.save(evil, f)
    assert not marker.exists()
    for load in (io.load_tensors, io.load_field_state, io.load_solution, io.load_grid, io.load_state_dict):
        with pytest.raises(sf.SdeflowValueError, match="never unpickle|refused|not a safetensors"):
            load(f)
        assert not marker.exists()


def test_plain_torch_checkpoint_of_weights_loads(tmp_path):
    net = torch.nn.Linear(2, 2)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "w.pt")
    sd = io.load_state_dict(tmp_path / "w.pt")
    assert all(torch.equal(sd[k], v) for k, v in net.state_dict().items())


def test_missing_or_truncated_file(tmp_path):
    with pytest.raises(sf.SdeflowValueError, match="no file"):
        io.load_tensors(tmp_path / "nope.safetensors")
    io.save_tensors(tmp_path / "t.safetensors", {"a": torch.zeros(100)})
    data = (tmp_path / "t.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(sf.SdeflowValueError, match="not a safetensors file"):
        io.load_tensors(tmp_path / "cut.safetensors")
    assert os.path.exists(tmp_path / "t.safetensors")


# ---- issue 13: metadata round-trips exactly or is refused at save time ----------------------------------
def _raw(f, tensors, meta=None, *, sign=True, header=None):
    """A safetensors file with the given sdeflow metadata (a dict, or raw JSON text), optionally with a
    valid checksum: what a program imitating sdeflow.io could write."""
    from safetensors.torch import save_file

    text = meta if isinstance(meta, str) or meta is None else json.dumps(meta)
    h = dict(header or {})
    if text is not None:
        h["sdeflow"] = io._signed(text, tensors) if sign and isinstance(meta, dict) else text
    save_file(tensors, f, metadata=h or None)
    return f


def test_nan_and_inf_metadata_round_trip_as_floats(tmp_path):
    meta = {"v": float("nan"), "w": [float("inf"), -float("inf")], "z": -0.0, "s": "nan",
            "deep": {"a": (1, torch.tensor([0.5, float("nan")]))}, "np": np.float32(0.25), "b": np.bool_(True)}
    io.save_tensors(tmp_path / "t.safetensors", {"a": torch.zeros(1)}, meta)
    _, back = io.load_tensors(tmp_path / "t.safetensors")
    assert isinstance(back["v"], float) and math.isnan(back["v"])
    assert back["w"] == [math.inf, -math.inf] and math.copysign(1.0, back["z"]) == -1.0
    assert back["s"] == "nan"  # a string stays a string
    assert back["deep"]["a"][0] == 1 and back["deep"]["a"][1][0] == 0.5 and math.isnan(back["deep"]["a"][1][1])
    assert back["np"] == 0.25 and back["b"] is True


def test_solution_stats_with_nan_round_trip(tmp_path):
    sol = sf.Solution(x=torch.zeros(2, 1), ts=torch.tensor([1.0, 0.0], dtype=D), nfe=3,
                      stats={"err": float("nan"), "steps": 2})
    io.save_solution(tmp_path / "s.safetensors", sol)
    back = io.load_solution(tmp_path / "s.safetensors")
    assert math.isnan(back.stats["err"]) and back.stats["steps"] == 2


@pytest.mark.parametrize("meta, exc, msg", [
    ({1: "a"}, sf.SdeflowTypeError, r"metadata has the key 1 \(int\); JSON object keys are strings"),
    ({"t": torch.zeros(65)}, sf.SdeflowTypeError, r"metadata\['t'\] is a tensor with 65 elements"),
    ({"t": torch.zeros(2, device="meta")}, sf.SdeflowTypeError, r"metadata\['t'\] is a tensor"),
    ({"c": 1 + 2j}, sf.SdeflowTypeError, r"metadata\['c'\] = \(1\+2j\) of type complex is not JSON"),
    ({"format_version": 3}, sf.SdeflowValueError, "metadata key 'format_version' is reserved: save_tensors"),
    ([("a", 1)], sf.SdeflowTypeError, "metadata must be a dict"),
])
def test_metadata_that_would_not_round_trip_is_refused(tmp_path, meta, exc, msg):
    with pytest.raises(exc, match=msg):
        io.save_tensors(tmp_path / "t.safetensors", {"a": torch.zeros(1)}, meta)
    assert not os.listdir(tmp_path)  # nothing written


def test_recursive_metadata_is_refused(tmp_path):
    loop = []
    loop.append(loop)
    with pytest.raises(sf.SdeflowValueError, match="nested more than 64 levels"):
        io.save_tensors(tmp_path / "t.safetensors", {}, {"loop": loop})


@pytest.mark.parametrize("save, key", [
    (lambda f, m: io.save_grid(f, [1.0, 0.0], m), "kind"),
    (lambda f, m: io.save_solution(f, sf.Solution(x=torch.zeros(1, 1), ts=torch.ones(1, dtype=D)), m), "nfe"),
    (lambda f, m: io.save_solution(f, sf.Solution(x=torch.zeros(1, 1), ts=torch.ones(1, dtype=D)), m), "stats"),
    (lambda f, m: io.save_field(f, torch.nn.Linear(1, 1), sde_path=sf.VP(), metadata=m), "path"),
])
def test_typed_savers_refuse_the_keys_they_write(tmp_path, save, key):
    with pytest.raises(sf.SdeflowValueError, match=f"metadata key '{key}' is reserved"):
        save(tmp_path / "x.safetensors", {key: 1})


# ---- issue 13: tensors that cannot be stored faithfully are refused at save time ----------------------
@pytest.mark.parametrize("tensors, exc, msg", [
    ({"__metadata__": torch.zeros(1)}, sf.SdeflowValueError, "tensor name '__metadata__' is reserved"),
    ({"w": torch.zeros(2, 3, device="meta")}, sf.SdeflowValueError, r"tensors\['w'\] is on the meta device"),
    ({"s": torch.eye(2).to_sparse()}, sf.SdeflowTypeError, r"tensors\['s'\] has layout torch.sparse_coo"),
    ({"c": torch.zeros(2, dtype=torch.complex128)}, sf.SdeflowTypeError, "complex128.*view_as_real"),
    ({"\ud800": torch.zeros(1)}, sf.SdeflowValueError, "not valid UTF-8"),
    ({3: torch.zeros(1)}, sf.SdeflowTypeError, "tensor names must be strings"),
])
def test_unstorable_tensors_are_refused_before_writing(tmp_path, tensors, exc, msg):
    with pytest.raises(exc, match=msg):
        io.save_tensors(tmp_path / "t.safetensors", tensors)
    assert not os.listdir(tmp_path)


def test_meta_module_checkpoint_is_refused_naming_the_weight(tmp_path):
    with torch.device("meta"):
        net = torch.nn.Linear(2, 2)
    with pytest.raises(sf.SdeflowValueError, match=r"tensors\['state.weight'\] is on the meta device"):
        io.save_field(tmp_path / "f.safetensors", net)


def test_lazy_views_and_shared_memory_are_saved_by_value(tmp_path):
    z = torch.tensor([1 + 2j, -3 - 1j], dtype=torch.complex64)
    a = torch.arange(4.0)
    t = {"conj": z.conj(), "neg": z.conj().imag, "p": a[1:], "q": a[:2], "r": a}
    assert t["conj"].is_conj() and t["neg"].is_neg()
    io.save_tensors(tmp_path / "t.safetensors", t)
    back, _ = io.load_tensors(tmp_path / "t.safetensors")
    for k, v in t.items():
        assert torch.equal(back[k], v.resolve_conj().resolve_neg()), k
    assert torch.equal(back["conj"], torch.tensor([1 - 2j, -3 + 1j], dtype=torch.complex64))


def test_save_is_atomic(tmp_path, monkeypatch):
    f = tmp_path / "t.safetensors"
    io.save_tensors(f, {"a": torch.ones(3)})
    import safetensors.torch

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        io.save_tensors(f, {"a": torch.zeros(3)})
    monkeypatch.undo()
    assert torch.equal(io.load_tensors(f)[0]["a"], torch.ones(3)) and os.listdir(tmp_path) == ["t.safetensors"]
    with pytest.raises(sf.SdeflowValueError, match="is a directory"):
        io.save_tensors(tmp_path, {"a": torch.ones(1)})
    with pytest.raises(sf.SdeflowValueError, match="the directory .*absent' does not exist; create it first"):
        io.save_tensors(tmp_path / "absent" / "t.safetensors", {"a": torch.ones(1)})
    import safetensors

    def full(tensors, filename, metadata=None):
        raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device")
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OSError, match="could not write .*No space left on device"):
        io.save_tensors(f, {"a": torch.zeros(3)})
    monkeypatch.undo()
    assert torch.equal(io.load_tensors(f)[0]["a"], torch.ones(3)) and os.listdir(tmp_path) == ["t.safetensors"]


# ---- issue 13: every damaged file is refused; nothing wrong is ever returned --------------------------------


def test_every_single_byte_flip_or_truncation_is_refused(tmp_path):
    """Exhaustively: each byte of a small solution file XORed with 0x01 (one bit) and with 0xFF, and each
    truncation, either raises SdeflowValueError or (a flip in header padding) loads the exact original."""
    sol = sf.Solution(x=torch.tensor([[0.5, -1.0]], dtype=D), ts=torch.tensor([1.0, 0.0], dtype=D), nfe=2,
                      stats={"solver": "euler", "err": float("nan")})
    f = tmp_path / "s.safetensors"
    io.save_solution(f, sol)
    raw = f.read_bytes()
    ref = io.load_tensors(f)
    g = tmp_path / "bad.safetensors"
    refused = kept = 0
    variants = [bytes(raw[:i]) + bytes([raw[i] ^ m]) + raw[i + 1:] for i in range(len(raw)) for m in (0x01, 0xFF)]
    variants += [raw[:i] for i in range(len(raw))] + [raw + b" ", raw + b"\0" * 8]
    for v in variants:
        g.write_bytes(v)
        try:
            got = io.load_tensors(g)
        except sf.SdeflowValueError:
            refused += 1
            continue
        assert same(got, ref), f"wrong data from a damaged file (variant {variants.index(v)})"
        kept += 1
    padding = raw[8:8 + int.from_bytes(raw[:8], "little")].count(b" ")  # JSON whitespace a flip may keep valid
    assert kept <= 2 * padding, (refused, kept)


def test_legacy_files_without_checksum_still_load(tmp_path):
    """format_version 1 (before the checksum): loads, non-finite floats stay the strings they were saved as."""
    f = _raw(tmp_path / "old.safetensors", {"grid": torch.tensor([1.0, 0.0], dtype=D)},
             {"format_version": 1, "kind": "grid", "v": "nan"}, sign=False)
    assert torch.equal(io.load_grid(f), torch.tensor([1.0, 0.0], dtype=D))
    assert io.load_tensors(f)[1]["v"] == "nan"
    # a file of another library (no sdeflow metadata at all) loads as plain tensors
    g = _raw(tmp_path / "foreign.safetensors", {"w": torch.ones(2)}, None, header={"format": "pt"})
    assert io.load_tensors(g)[1] == {} and set(io.load_state_dict(g)) == {"w"}


G2 = {"grid": torch.tensor([1.0, 0.0], dtype=D)}


@pytest.mark.parametrize("make, load, msg", [
    (lambda f: _raw(f, G2, "[1, 2]"), io.load_grid, "malformed sdeflow metadata: a JSON list, not an object"),
    (lambda f: _raw(f, G2, '{"format_version": 2, "kind": "grid", "kind": "grid"}'), io.load_grid,
     "not valid JSON: duplicate key 'kind'"),
    (lambda f: _raw(f, G2, "[" * 100_000 + "]" * 100_000), io.load_tensors, "nested too deeply"),
    (lambda f: _raw(f, G2, None, header={"sdeflox": io._signed('{"format_version": 2}', G2)}), io.load_tensors,
     "holds sdeflow metadata under the header key 'sdeflox' instead of 'sdeflow'"),
    (lambda f: _raw(f, G2, {"kind": "grid"}), io.load_grid, "field 'format_version' must be an integer >= 1, got None"),
    (lambda f: _raw(f, G2, {"format_version": True, "kind": "grid"}), io.load_grid, "'format_version' must be an int"),
    (lambda f: _raw(f, G2, {"format_version": 99, "kind": "grid"}), io.load_grid, "written by a newer sdeflow"),
    (lambda f: _raw(f, G2, {"format_version": 2, "kind": "grid"}, sign=False), io.load_grid,
     "format_version 2 but its checksum field 'sha256' is missing or damaged"),
    (lambda f: _raw(f, G2, json.dumps({"sha256": io._digest('{"format_version": 2, "kind": "grid"}', G2),
                                       "format_version": 2, "kind": "grid"})), io.load_grid,
     "checksum field 'sha256' is missing or damaged"),
    (lambda f: _raw(f, G2, io._signed('{"format_version": 2, "kind": "grid", "note": 2}', G2)
                    .replace('"note": 2', '"note": 3')),
     io.load_grid, "is corrupt: its tensors or metadata do not match the SHA-256 checksum"),
    (lambda f: _raw(f, G2, {"format_version": 2}), io.load_grid,
     r"holds plain tensors \(no sdeflow kind\), not a grid"),
    (lambda f: _raw(f, G2, {"format_version": 2, "kind": "grid"}), io.load_solution,
     r"holds a 'grid', not a solution; load the file with the matching function \(load_grid\)"),
    (lambda f: _raw(f, G2, {"format_version": 2, "kind": ["grid"]}), io.load_grid, r"holds a \['grid'\], not a grid"),
    (lambda f: _raw(f, {"g": G2["grid"]}, {"format_version": 2, "kind": "grid"}), io.load_grid,
     r"is a grid file with no tensor 'grid' \(it holds \['g'\]\)"),
    (lambda f: _raw(f, {**G2, "extra": torch.ones(1)}, {"format_version": 2, "kind": "grid"}), io.load_grid,
     "with an unknown tensor 'extra'"),
    (lambda f: _raw(f, {"grid": torch.tensor([1.0, 1.0], dtype=D)}, {"format_version": 2, "kind": "grid"}),
     io.load_grid, "stored tensor 'grid' is not a valid grid: grid must be strictly monotone"),
    (lambda f: _raw(f, {"grid": torch.tensor([1, 0])}, {"format_version": 2, "kind": "grid"}), io.load_grid,
     "grid must be a floating tensor"),
])
def test_malformed_files_are_refused_naming_the_file_and_field(tmp_path, make, load, msg):
    f = make(tmp_path / "bad.safetensors")
    with pytest.raises((sf.SdeflowValueError, sf.SdeflowTypeError), match=msg) as e:
        load(f)
    assert str(f) in str(e.value) or load is io.path_from_metadata


SOL = {"x": torch.zeros(3, 2), "ts": torch.tensor([1.0, 0.5, 0.0], dtype=D)}
SM = {"format_version": 2, "kind": "solution", "nfe": 2, "stats": {}}


@pytest.mark.parametrize("tensors, meta, msg", [
    ({"x": torch.zeros(3, 2)}, SM, "no tensor 'ts'"),
    ({**SOL, "trajectory": torch.zeros(2, 3, 2)}, SM, r"'trajectory' has shape \(2, 3, 2\), but len\(ts\) = 3"),
    ({**SOL, "x": torch.tensor(1.0)}, SM, r"tensor 'x' must have shape \(batch, \*event\)"),
    ({**SOL, "ts": torch.zeros(3, 1, dtype=D)}, SM, "tensor 'ts' must be a 1-D floating tensor"),
    (SOL, {**SM, "nfe": -1}, "metadata field 'nfe' must be an integer >= 0, got -1"),
    (SOL, {**SM, "nfe": True}, "metadata field 'nfe' must be an integer >= 0, got True"),
    (SOL, {k: v for k, v in SM.items() if k != "nfe"}, "metadata field 'nfe' must be an integer >= 0, got None"),
    (SOL, {**SM, "stats": [1]}, r"metadata field 'stats' must be an object, got \[1\]"),
])
def test_malformed_solution_files(tmp_path, tensors, meta, msg):
    f = _raw(tmp_path / "s.safetensors", tensors, meta)
    with pytest.raises(sf.SdeflowValueError, match=msg):
        io.load_solution(f)


FM = {"format_version": 2, "kind": "field", "field_class": "NoiseField", "field_kind": "noise", "flip_time": False,
      "module_class": "Linear"}
W = {"state.weight": torch.ones(1, 1)}


@pytest.mark.parametrize("tensors, meta, msg", [
    (W, {**FM, "flip_time": "no"}, "metadata field 'flip_time' must be true or false"),
    (W, {k: v for k, v in FM.items() if k != "field_kind"}, None),  # field_kind null is allowed (a bare module)
    (W, {**FM, "module_class": None}, "metadata field 'module_class' must be a class name"),
    (W, {**FM, "path": ["VP"]}, r"metadata\['path'\] must be an object"),
    (W, {**FM, "path": {"class": 3}}, r"metadata\['path'\] must name the path's class under 'class'"),
    (W, {**FM, "path": {"class": "DiscreteVP", "params": {"T": 2}}}, "recorded path is DiscreteVP but the tensor "
                                                                     "'path.betas' is missing"),
    ({**W, "path.betas": torch.full((2,), 0.1, dtype=D)}, FM, "holds the tensor 'path.betas' but records no path"),
    ({**W, "bias": torch.ones(1)}, FM, "unknown tensor 'bias'"),
])
def test_malformed_field_checkpoints(tmp_path, tensors, meta, msg):
    f = _raw(tmp_path / "f.safetensors", tensors, meta)
    if msg is None:
        assert set(io.load_field_state(f)[0]) == {"weight"}
        return
    with pytest.raises(sf.SdeflowValueError, match=msg):
        io.load_field_state(f)


@pytest.mark.parametrize("meta, exc, msg", [
    ({"path": {"class": "VP", "params": {"foo": 1}}}, sf.SdeflowTypeError,
     r"meta\['path'\] has the parameter 'foo', which VP does not take \(it takes beta_min, beta_max\)"),
    ({"path": {"class": "LinearFlow", "params": {"x": 1}}}, sf.SdeflowTypeError, "LinearFlow does not take"),
    ({"path": {"class": "VP", "params": {"beta_min": "nan"}}}, sf.SdeflowTypeError,
     r"meta\['path'\] = VP\(\*\*\{'beta_min': 'nan'\}\) cannot be rebuilt: beta_min must be a real number"),
    ({"path": {"class": "VE", "params": {"sigma_min": 2.0, "sigma_max": 1.0}}}, sf.SdeflowValueError,
     "cannot be rebuilt: sigma_max must be > sigma_min"),
    ({"path": {"class": "VP", "params": [0.1, 20]}}, sf.SdeflowValueError, "must hold an object .* under 'params'"),
    ({"path": {"class": "Tensor"}}, sf.SdeflowValueError, r"names the class 'Tensor', which is not a built-in path "
                                                           r"\(known: CosineVP, "),
    ({"path": {"class": "GaussianPath"}}, sf.SdeflowValueError, "'GaussianPath', which is not a built-in path"),
    ({"path": {"class": "AffinePath", "params": {}, "repr": "AffinePath(name='x')"}}, sf.SdeflowValueError,
     "cannot be rebuilt from metadata"),
    ({"path": {"class": "DiscreteVP", "params": {"T": 2}}}, sf.SdeflowValueError, "holds no 'betas' table"),
    ({"path": {"class": "DiscreteVP", "params": {"T": 3}, "betas": torch.full((2,), 0.1)}}, sf.SdeflowValueError,
     r"has the parameter T=3, which disagrees with the 2 stored betas"),
    ({"path": {"class": "DiscreteVP", "params": {}, "betas": torch.full((2,), 2.0)}}, sf.SdeflowValueError,
     "cannot be rebuilt: betas must be a non-empty table"),
    ({}, sf.SdeflowValueError, "the metadata records no path"),
    (["path"], sf.SdeflowTypeError, "meta must be the metadata dict"),
])
def test_path_from_metadata_refuses_what_it_cannot_rebuild(meta, exc, msg):
    with pytest.raises(exc, match=msg):
        io.path_from_metadata(meta)


def test_path_from_metadata_rebuilds_every_built_in_path(tmp_path):
    for p in (sf.VP(0.2, 10.0), sf.SubVP(), sf.CosineVP(0.01), sf.VE(0.02, 30.0), sf.EDM(40.0), sf.LinearFlow(),
              sf.DiscreteVP(T=7)):
        io.save_field(tmp_path / "f.safetensors", torch.nn.Linear(1, 1), sde_path=p)
        q = io.path_from_metadata(io.load_field_state(tmp_path / "f.safetensors")[1])
        assert type(q) is type(p) and repr(q) == repr(p)


def test_load_state_dict_reports_a_damaged_safetensors_file_and_refuses_other_kinds(tmp_path):
    io.save_grid(tmp_path / "g.safetensors", [1.0, 0.0])
    with pytest.raises(sf.SdeflowValueError, match="holds an sdeflow 'grid', not weights; load the file with "
                                                   "load_grid"):
        io.load_state_dict(tmp_path / "g.safetensors")
    io.save_field(tmp_path / "f.safetensors", torch.nn.Linear(2, 2))
    raw = bytearray((tmp_path / "f.safetensors").read_bytes())
    raw[-1] ^= 1
    (tmp_path / "f.safetensors").write_bytes(bytes(raw))
    with pytest.raises(sf.SdeflowValueError, match="is corrupt: its tensors or metadata do not match"):
        io.load_state_dict(tmp_path / "f.safetensors")
    torch.save({1: torch.zeros(1)}, tmp_path / "k.pt")
    with pytest.raises(sf.SdeflowValueError, match="does not hold a state_dict"):
        io.load_state_dict(tmp_path / "k.pt")


def test_paths_and_devices_are_checked(tmp_path):
    with pytest.raises(sf.SdeflowValueError, match="not a regular file"):
        io.load_tensors(tmp_path)
    with pytest.raises(sf.SdeflowTypeError, match="path must be a file name"):
        io.load_grid(3)
    io.save_tensors(tmp_path / "t.safetensors", {"a": torch.ones(1)})
    with pytest.raises(sf.SdeflowValueError, match="is not a device torch knows"):
        io.load_tensors(tmp_path / "t.safetensors", device="gpu7")
    with pytest.raises(sf.SdeflowValueError, match="device='meta' would drop the data"):
        io.load_solution(tmp_path / "t.safetensors", device="meta")


def test_a_header_safetensors_could_not_read_back_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "_MAX_HEADER", 2000)  # safetensors' real limit is 10**8 bytes
    io.save_tensors(tmp_path / "ok.safetensors", {"a": torch.zeros(1)}, {"s": "x" * 500})
    with pytest.raises(sf.SdeflowValueError, match="near safetensors' limit of 2000 .*store long lists as tensors"):
        io.save_tensors(tmp_path / "t.safetensors", {"a": torch.zeros(1)}, {"s": "x" * 1000})
    assert os.listdir(tmp_path) == ["ok.safetensors"]
