"""Damaged files for the io and distributed rows of the validation table (tests/validation_cases.py).

Each helper writes its files when the row runs, in a temporary directory of this process (removed at exit;
processes running the suite side by side never share files). docs/errors.md shows that directory as
``<tmp>`` (:func:`shown`), so its messages do not change from run to run.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile

import torch

from sdeflow import distributed as sd
from sdeflow import io

_DIR: str | None = None


def path(name: str) -> str:
    """``name`` in this process's directory of validation files."""
    global _DIR
    if _DIR is None:
        _DIR = tempfile.mkdtemp(prefix="sdeflow-validation-")
        atexit.register(shutil.rmtree, _DIR, True)
    return os.path.join(_DIR, name)


def shown(message: str) -> str:
    """``message`` with this process's directory written ``<tmp>`` (for the docs table)."""
    return message.replace(_DIR, "<tmp>") if _DIR else message


def grid(name: str = "grid.safetensors") -> str:
    f = path(name)
    io.save_grid(f, [1.0, 0.5, 0.0])
    return f


def pickled() -> str:
    """A torch.save checkpoint (a pickle inside a zip archive)."""
    f = path("weights.pt")
    torch.save({"w": torch.zeros(2)}, f)
    return f


def damaged(how: str) -> str:
    """A grid file damaged in one way: 'truncated', 'bit' (one flipped bit of the data)."""
    f = grid(f"{how}.safetensors")
    raw = bytearray(open(f, "rb").read())
    if how == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        raw[-1] ^= 0x01
    with open(f, "wb") as fh:
        fh.write(bytes(raw))
    return f


def raw(name: str, tensors: dict, meta, *, sign: bool = True) -> str:
    """A safetensors file with this sdeflow metadata (a dict, signed as sdeflow.io signs it, or raw text)."""
    from safetensors.torch import save_file

    f = path(name)
    text = meta if isinstance(meta, str) else json.dumps(meta)
    if sign and isinstance(meta, dict):
        text = io._signed(text, tensors)
    save_file(tensors, f, metadata={"sdeflow": text})
    return f


G = {"grid": torch.tensor([1.0, 0.0], dtype=torch.float64)}
SOL = {"x": torch.zeros(3, 2), "ts": torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)}


def solution(name: str, tensors=None, **meta) -> str:
    return raw(name, SOL if tensors is None else tensors,
               {"format_version": 2, "kind": "solution", "nfe": 2, "stats": {}, **meta})


# ---- shards ----------------------------------------------------------------------------------------
X = torch.arange(37 * 2, dtype=torch.float64).reshape(37, 2)  # 3 ranks: rows 0:13, 13:25, 25:37


def run(name: str, edit=None) -> str:
    """A complete 3-rank shard directory, its manifest changed by ``edit(doc)`` (in place)."""
    d = path(name)
    shutil.rmtree(d, ignore_errors=True)
    sd._write_shards(X, d, 3)
    if edit is not None:
        m = os.path.join(d, sd.MANIFEST)
        with open(m) as f:
            doc = json.load(f)
        doc = edit(doc) or doc
        with open(m, "w") as f:
            json.dump(doc, f)
    return d


def replace_shard(name: str, rank: int, tensors: dict, **meta) -> str:
    """A run whose shard ``rank`` is replaced by a file with these tensors (the manifest's digest updated)."""
    d = run(name)
    f = os.path.join(d, sd._shard_name(rank, 3))
    s, e = sd.block(37, rank, 3)
    io.save_tensors(f, tensors, {"kind": "shard", "format": sd.FORMAT, "n": 37, "rank": rank, "world_size": 3,
                                 "start": s, "stop": e, **meta})
    m = os.path.join(d, sd.MANIFEST)
    with open(m) as fh:
        doc = json.load(fh)
    doc["shards"][rank]["sha256"] = sd._sha256(f)
    with open(m, "w") as fh:
        json.dump(doc, fh)
    return d


def without_shard(name: str, rank: int) -> str:
    d = run(name)
    os.remove(os.path.join(d, sd._shard_name(rank, 3)))
    return d


def flipped_shard(name: str, rank: int) -> str:
    d = run(name)
    f = os.path.join(d, sd._shard_name(rank, 3))
    data = bytearray(open(f, "rb").read())
    data[-1] ^= 0x01
    with open(f, "wb") as fh:
        fh.write(bytes(data))
    return d


def huge(doc):
    """n = 10**12 with consistent blocks: only the shard files' sizes give the claim away."""
    doc["n"] = 10 ** 12
    for r, sh in enumerate(doc["shards"]):
        sh["start"], sh["stop"] = sd.block(10 ** 12, r, 3)

