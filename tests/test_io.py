"""Safe persistence: round trips of grids, solutions and field checkpoints; malicious pickles are refused."""

import os
import pickle

import pytest
import torch

import sdeflow as sf
from sdeflow import io

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
    sol = sf.sample(sf.VP(), target.field("noise"), "heun", steps=4, n=5, shape=2, dtype=D, noise=7,
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
