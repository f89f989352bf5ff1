r"""Sharded sampling on torch.distributed: every rank draws a contiguous block of the N samples.

Launch one process per device with ``torchrun`` (``torchrun --standalone --nproc_per_node 2 script.py``;
gloo on CPU, nccl on GPU), initialise the process group, then on every rank::

    from sdeflow import distributed as sd
    out = sd.sample_sharded(path, field, "heun", steps=50, n=100_000, shape=(2,), noise=sd_seed,
                            gather_to=0, shard_dir="samples/")
    # rank 0: out.x holds all N samples; every rank: out.local is its own block's Solution

Rank ``r`` of ``W`` takes the sample indices :func:`block` ``(N, r, W)`` = ``[start, stop)``: the first
``N mod W`` ranks take ``ceil(N / W)`` rows, the others ``floor(N / W)``. It runs :func:`sdeflow.sample` on
its rows with ``noise.for_rows(start)``; with :class:`~sdeflow.noise.PerSampleNoise` the prior draw and
every Brownian increment of sample ``i`` depend only on ``(seed, i, step)``, so the union of the blocks is
bitwise identical to the single-process ``sample(..., n=N, noise=PerSampleNoise(seed))`` whenever the
field computes each row independently of the others in its batch (the analytic oracles do; a network's
matrix products may pick batch-size dependent kernels, see ``docs/scaling.md``).

Results leave the ranks in one of two ways (both without pickle):

* :func:`gather_rows` — pad each block to ``ceil(N / W)`` rows, ``torch.distributed.gather`` to one rank,
  trim and concatenate (block sizes are known from ``N`` and ``W``, so nothing else is exchanged).
* :func:`save_shards` — each rank writes ``shard-<rank>-of-<W>.safetensors`` (:mod:`sdeflow.io`); the
  SHA-256 digests travel as uint8 tensors to rank 0, which writes ``manifest.json`` (N, event shape,
  dtype, world size, the rows and digest of every shard). :func:`load_shards` checks every shard against
  the manifest and reassembles the N samples, raising :class:`ShardError` that names a missing or corrupt
  file and how to get it back.

Without an initialised process group every function runs as a single process (rank 0 of 1), so the same
script works under ``python`` and under ``torchrun``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist

from .errors import SdeflowTypeError, SdeflowValueError
from .noise import NoiseSource, as_noise_source
from .sample import sample
from .solution import Solution

__all__ = ["block", "blocks", "rank_and_world", "sample_sharded", "ShardedSample", "gather_rows",
           "save_shards", "load_shards", "read_manifest", "ShardError", "MANIFEST", "FORMAT"]

Tensor = torch.Tensor

MANIFEST = "manifest.json"
FORMAT = "sdeflow.shards/1"


class ShardError(SdeflowValueError):
    """A sharded sample set cannot be reassembled: missing or corrupt shard, or a bad manifest.

    ``file`` names the offending file (None when the problem is the manifest as a whole).
    """

    def __init__(self, message: str, *, file: str | None = None):
        super().__init__(message)
        self.file = file


# ---- who takes which rows ---------------------------------------------------------------------------
def _check_count(name: str, v, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise SdeflowValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def block(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of rank ``rank`` among ``world_size``: contiguous, sizes differ by at most 1
    (the first ``n mod world_size`` ranks take one more)."""
    n = _check_count("n", n, 0)
    world_size = _check_count("world_size", world_size, 1)
    rank = _check_count("rank", rank, 0)
    if rank >= world_size:
        raise SdeflowValueError(f"rank={rank} must be below world_size={world_size}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def blocks(n: int, world_size: int) -> list[tuple[int, int]]:
    """:func:`block` for every rank."""
    return [block(n, r, world_size) for r in range(world_size)]


def rank_and_world(group=None) -> tuple[int, int]:
    """``(rank, world_size)`` in ``group`` (the default group if None); ``(0, 1)`` without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        if group is not None:
            raise SdeflowValueError("group was given but torch.distributed is not initialised; call "
                                    "torch.distributed.init_process_group first (torchrun sets the environment)")
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def _is_dst(dst: int, group) -> bool:
    """Whether this process is global rank ``dst`` (torch.distributed's ``dst`` is a global rank)."""
    if not (dist.is_available() and dist.is_initialized()):
        return dst == 0
    return dist.get_rank() == dst


# ---- sampling -----------------------------------------------------------------------------------------
@dataclass
class ShardedSample:
    """The outcome of :func:`sample_sharded` on one rank.

    Attributes:
        local: this rank's :class:`~sdeflow.solution.Solution` (rows ``start:stop``; trajectory and stats
            are local).
        start, stop: the global sample indices of this rank's rows.
        rank, world_size, n: this rank, the number of ranks, the total number of samples.
        x: all ``n`` samples on the ``gather_to`` rank, else None.
        manifest: the manifest's path when ``shard_dir`` was given (on every rank), else None.
    """

    local: Solution
    start: int
    stop: int
    rank: int
    world_size: int
    n: int
    x: Tensor | None = None
    manifest: str | None = None


def sample_sharded(path, field, solver=None, *, n: int, noise, group=None, gather_to: int | None = 0,
                   shard_dir: str | os.PathLike | None = None, x_init: Tensor | None = None,
                   **sample_kwargs) -> ShardedSample:
    """Draw ``n`` samples across the ranks of ``group``; call it on every rank with the same arguments.

    Args:
        path, field, solver, sample_kwargs: as for :func:`sdeflow.sample` (``steps``/``nfe``, ``grid``,
            ``gamma``, ``shape``, ``dtype``, ``device``, ``chunk_size``, ...); ``device`` is this rank's
            device (``f"cuda:{local_rank}"`` with nccl).
        n: total number of samples (at least the number of ranks).
        noise: :class:`~sdeflow.noise.PerSampleNoise` or an integer seed (a source whose ``for_rows``
            gives each block its own rows' noise). ``generator=`` is refused: a generator's normals depend
            on the batch layout, so ranks would repeat or differ from a single-process run.
        group: the process group (default: the default group; none initialised: a single process).
        gather_to: global rank that receives all ``n`` samples in ``.x`` (None: no gather).
        shard_dir: also write per-rank safetensors shards and a manifest there (see :func:`save_shards`).
        x_init: optional initial states for all ``n`` samples (every rank passes the same tensor and
            integrates its own rows).

    Returns:
        a :class:`ShardedSample`.
    """
    if "generator" in sample_kwargs:
        raise SdeflowValueError("sample_sharded does not take generator=: a torch.Generator's normals depend on "
                                "the batch layout, so ranks would repeat each other's noise; pass "
                                "noise=PerSampleNoise(seed) (or an integer seed)")
    n = _check_count("n", n, 1)
    src = as_noise_source(noise, None, sample_kwargs.get("device") or "cpu")
    if type(src).for_rows is NoiseSource.for_rows:
        raise SdeflowValueError(f"noise={src!r} gives every block the same normals (its for_rows ignores the row "
                                f"offset); pass noise=PerSampleNoise(seed) (or an integer seed)")
    rank, world = rank_and_world(group)
    if n < world:
        raise SdeflowValueError(f"n={n} is below the number of ranks ({world}); every rank needs at least one "
                                f"sample: raise n or launch fewer processes")
    start, stop = block(n, rank, world)
    if x_init is not None:
        if not isinstance(x_init, Tensor) or x_init.dim() < 1 or x_init.shape[0] != n:
            shape = tuple(x_init.shape) if isinstance(x_init, Tensor) else type(x_init).__name__
            raise SdeflowValueError(f"x_init must hold all n={n} initial states, shape (n, *event); got {shape}")
        local = sample(path, field, solver, x_init=x_init[start:stop], noise=src.for_rows(start), **sample_kwargs)
    else:
        local = sample(path, field, solver, n=stop - start, noise=src.for_rows(start), **sample_kwargs)
    local.stats.update(rank=rank, world_size=world, rows=(start, stop))
    out = ShardedSample(local=local, start=start, stop=stop, rank=rank, world_size=world, n=n)
    if shard_dir is not None:
        info = {k: v for k, v in local.stats.items() if isinstance(v, (str, int, float, bool)) and k not in
                ("rank", "network_calls")}
        info["noise"] = repr(src)
        out.manifest = save_shards(local.x, shard_dir, n, group=group, info=info)
    if gather_to is not None:
        out.x = gather_rows(local.x, n, dst=gather_to, group=group)
    return out


# ---- gather ---------------------------------------------------------------------------------------------
def _check_local(x_local, n: int, group) -> tuple[int, int, int, int]:
    if not isinstance(x_local, Tensor) or x_local.dim() < 1:
        raise SdeflowTypeError(f"x_local must be a tensor of shape (rows, *event), got "
                               f"{type(x_local).__name__}")
    n = _check_count("n", n, 1)
    rank, world = rank_and_world(group)
    start, stop = block(n, rank, world)
    if x_local.shape[0] != stop - start:
        raise SdeflowValueError(f"rank {rank} of {world} owns rows {start}:{stop} of n={n} ({stop - start} rows), "
                                f"but x_local has {x_local.shape[0]}; pass this rank's block (see block())")
    return rank, world, start, stop


def _gather_padded(t: Tensor, rows: int, dst: int, group) -> list[Tensor] | None:
    """``torch.distributed.gather`` of ``t`` padded to ``rows`` rows; the list of padded blocks on ``dst``."""
    pad = t.new_zeros((rows,) + tuple(t.shape[1:]))
    pad[: t.shape[0]] = t
    if _is_dst(dst, group):
        bufs = [torch.empty_like(pad) for _ in range(dist.get_world_size(group))]
        dist.gather(pad, bufs, dst=dst, group=group)
        return bufs
    dist.gather(pad, None, dst=dst, group=group)
    return None


def gather_rows(x_local: Tensor, n: int, *, dst: int = 0, group=None) -> Tensor | None:
    """Concatenate every rank's block (rows :func:`block` ``(n, rank, world)``) on global rank ``dst``.

    Blocks of unequal size are padded to ``ceil(n / world)`` rows for ``torch.distributed.gather`` (gloo
    and nccl) and trimmed on arrival. Returns the ``(n, *event)`` tensor on ``dst`` and None elsewhere.
    Call it on every rank.
    """
    rank, world, start, stop = _check_local(x_local, n, group)
    if world == 1:
        return x_local
    spans = blocks(n, world)
    bufs = _gather_padded(x_local.contiguous(), spans[0][1] - spans[0][0], dst, group)
    if bufs is None:
        return None
    return torch.cat([b[: e - s] for b, (s, e) in zip(bufs, spans)])


# ---- shards on disk ---------------------------------------------------------------------------------------
def _shard_name(rank: int, world: int) -> str:
    return f"shard-{rank:05d}-of-{world:05d}.safetensors"


def _sha256(file: str) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_tensor(file: str, x: Tensor, metadata: dict) -> None:
    """Write ``x`` as the tensor ``"x"`` of a safetensors file (:func:`sdeflow.io.save_tensors`, from a
    CPU copy), atomically: a temporary file renamed into place."""
    from .io import save_tensors

    tmp = file + ".tmp"
    save_tensors(tmp, {"x": x}, {**metadata, "kind": "shard"})
    os.replace(tmp, file)


def _read_tensor(file: str) -> Tensor:
    from .io import load_tensors

    return load_tensors(file)[0]["x"]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def save_shards(x_local: Tensor, directory: str | os.PathLike, n: int, *, group=None, dst: int = 0,
                info: dict | None = None) -> str:
    """Write this rank's block to ``directory`` and, on global rank ``dst``, the manifest; call on every rank.

    Each rank writes ``shard-<rank>-of-<world>.safetensors`` (one tensor ``"x"``, always copied to CPU; the
    rows and ``n`` in its metadata) and hashes it; the digests are gathered to ``dst`` as uint8 tensors,
    and ``dst`` writes ``manifest.json``::

        {"format": "sdeflow.shards/1", "n": N, "shape": [event...], "dtype": "float32", "world_size": W,
         "shards": [{"file": ..., "rank": r, "start": a, "stop": b, "sha256": ...}, ...], "info": {...}}

    A barrier follows, so on return the manifest exists for every rank (on a shared file system).
    ``directory`` should be shared by the ranks, or collected before :func:`load_shards`. Returns the
    manifest's path.
    """
    rank, world, start, stop = _check_local(x_local, n, group)
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    file = os.path.join(directory, _shard_name(rank, world))
    _write_tensor(file, x_local, {"format": FORMAT, "n": n, "rank": rank, "world_size": world,
                                  "start": start, "stop": stop})
    digest = _sha256(file)
    if world == 1:
        digests = [digest]
    else:
        t = torch.tensor(list(bytes.fromhex(digest)), dtype=torch.uint8, device=x_local.device)[None]
        bufs = _gather_padded(t, 1, dst, group)
        digests = None if bufs is None else [bytes(b[0].cpu().tolist()).hex() for b in bufs]
    manifest = os.path.join(directory, MANIFEST)
    if digests is not None:
        spans = blocks(n, world)
        doc = {"format": FORMAT, "n": n, "shape": list(x_local.shape[1:]), "dtype": _dtype_name(x_local.dtype),
               "world_size": world,
               "shards": [{"file": _shard_name(r, world), "rank": r, "start": s, "stop": e, "sha256": d}
                          for r, ((s, e), d) in enumerate(zip(spans, digests))],
               "info": dict(info or {})}
        tmp = manifest + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
        os.replace(tmp, manifest)
    if world > 1:
        dist.barrier(group)
    return manifest


def read_manifest(location: str | os.PathLike) -> tuple[dict, str]:
    """The manifest (checked for structure) and the directory of its shards; ``location`` is the shard
    directory or the manifest file."""
    location = os.fspath(location)
    file = os.path.join(location, MANIFEST) if os.path.isdir(location) else location
    directory = os.path.dirname(file) or "."
    if not os.path.isfile(file):
        raise ShardError(f"no manifest at {file}: the sharded run did not finish (rank 0 writes {MANIFEST} after "
                         f"every shard is saved); re-run sample_sharded(..., shard_dir=...) or point load_shards "
                         f"at the directory holding {MANIFEST}", file=file)
    try:
        with open(file) as f:
            doc = json.load(f)
        if doc.get("format") != FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT!r}")
        n, world = int(doc["n"]), int(doc["world_size"])
        shape = [int(s) for s in doc["shape"]]
        dtype = getattr(torch, str(doc["dtype"]), None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"unknown dtype {doc['dtype']!r}")
        shards = doc["shards"]
        if len(shards) != world:
            raise ValueError(f"{len(shards)} shards listed for world_size {world}")
        for r, (sh, (s, e)) in enumerate(zip(shards, blocks(n, world))):
            if (int(sh["rank"]), int(sh["start"]), int(sh["stop"])) != (r, s, e):
                raise ValueError(f"shard {r} lists rows {sh['start']}:{sh['stop']}, expected {s}:{e}")
            if not isinstance(sh["file"], str) or os.path.basename(sh["file"]) != sh["file"]:
                raise ValueError(f"shard {r}'s file must be a bare file name, got {sh['file']!r}")
            str(sh["sha256"])
    except (ValueError, KeyError, TypeError) as e:
        raise ShardError(f"manifest {file} is malformed ({e}); it was not written by save_shards or was edited: "
                         f"re-run sample_sharded(..., shard_dir=...)", file=file) from e
    doc["_dtype"], doc["_shape"] = dtype, tuple(shape)
    return doc, directory


def load_shards(location: str | os.PathLike, *, device=None) -> Tensor:
    """Reassemble the ``(n, *event)`` samples written by :func:`save_shards` / :func:`sample_sharded`.

    Every shard named in the manifest must exist, match its SHA-256 digest, and hold rows of the declared
    shape and dtype; otherwise :class:`ShardError` names the file and the fix. ``device``: where to put the
    result (default CPU, where safetensors loads).
    """
    doc, directory = read_manifest(location)
    parts = []
    for sh in doc["shards"]:
        file = os.path.join(directory, sh["file"])
        rows = f"rank {sh['rank']}, rows {sh['start']}:{sh['stop']} of n={doc['n']}"
        regen = (f"regenerate exactly these rows on one process with sdeflow.sample(..., n={sh['stop'] - sh['start']}, "
                 f"noise=PerSampleNoise(seed).for_rows({sh['start']})) and the run's other arguments")
        if not os.path.isfile(file):
            raise ShardError(f"shard {file} ({rows}) is missing: copy it from the machine that ran rank "
                             f"{sh['rank']}, re-run the sharded sampling, or {regen}", file=file)
        got = _sha256(file)
        if got != sh["sha256"]:
            raise ShardError(f"shard {file} ({rows}) is corrupt: its sha256 is {got}, the manifest records "
                             f"{sh['sha256']}; copy an intact file from the machine that ran rank {sh['rank']}, "
                             f"re-run the sharded sampling, or {regen}", file=file)
        x = _read_tensor(file)
        want = (sh["stop"] - sh["start"],) + doc["_shape"]
        if tuple(x.shape) != want or x.dtype != doc["_dtype"]:
            raise ShardError(f"shard {file} ({rows}) holds {tuple(x.shape)} {x.dtype}, the manifest declares "
                             f"{want} {doc['_dtype']}; the file belongs to another run: re-run the sharded "
                             f"sampling", file=file)
        parts.append(x)
    x = torch.cat(parts)
    return x if device is None else x.to(device)
