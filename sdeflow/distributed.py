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
  dtype, world size, the rows and digest of every shard). :func:`load_shards` reassembles the N samples
  (or any ``rows=(start, stop)``), trusting nothing it has not checked: the manifest field by field
  (:func:`read_manifest`: strict JSON integers, one shard per rank, rows covering ``0..N`` exactly), the
  shard files' sizes against the declared rows and the result's size against the device's memory before
  anything is read or allocated, then each shard's digest, its single tensor ``"x"`` (shape, dtype) and
  the rank and rows recorded in its own metadata. Every failure is a :class:`ShardError` naming the file
  (the manifest, or the shard with its rank and rows) and how to get it back.

Without an initialised process group every function runs as a single process (rank 0 of 1), so the same
script works under ``python`` and under ``torchrun``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import SdeflowTypeError, SdeflowValueError, check_int
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
    return check_int(name, v, minimum=minimum, error=SdeflowValueError)


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
            integrates its own rows). Likewise ``model_kwargs``: per-sample tensors hold all ``n`` rows and
            each rank passes its own to the network; a ``callback`` with ``for_rows(start, stop)`` is narrowed
            to the rank's rows.

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
    if sample_kwargs.get("model_kwargs") is not None:  # each rank passes its own rows' conditions
        from .conditioning import check_model_kwargs, rows

        sample_kwargs["model_kwargs"] = rows(check_model_kwargs(sample_kwargs["model_kwargs"]), n, start, stop)
    cb = sample_kwargs.get("callback")
    if cb is not None and hasattr(cb, "for_rows"):
        sample_kwargs["callback"] = cb.for_rows(start, stop)
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
_MAX_MANIFEST_BYTES = 64 << 20  # a manifest lists ~150 bytes per rank; anything bigger is not one
_MAX_HEADER_BYTES = 8 + 100_000_000  # safetensors' length prefix and its largest header
_HEX = frozenset("0123456789abcdef")


def _shard_name(rank: int, world: int) -> str:
    return f"shard-{rank:05d}-of-{world:05d}.safetensors"


def _sha256(file: str) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_tensor(file: str, x: Tensor, metadata: dict) -> None:
    """Write ``x`` as the tensor ``"x"`` of an sdeflow.io file of kind ``"shard"`` (from a CPU copy, with
    the file's checksum; written to a temporary name and renamed into place)."""
    from .io import _save

    _save(file, {"x": x}, None, {**metadata, "kind": "shard"}, "save_shards")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtypes() -> dict[str, torch.dtype]:
    from .io import _DTYPES

    return {_dtype_name(d): d for d in _DTYPES}


def save_shards(x_local: Tensor, directory: str | os.PathLike, n: int, *, group=None, dst: int = 0,
                info: dict | None = None) -> str:
    """Write this rank's block to ``directory`` and, on global rank ``dst``, the manifest; call on every rank.

    Each rank writes ``shard-<rank>-of-<world>.safetensors`` (one tensor ``"x"``, always copied to CPU; the
    format, rows, rank, world size and ``n`` in its metadata, covered by the file's checksum) and hashes it;
    the digests are gathered to ``dst`` as uint8 tensors, and ``dst`` writes ``manifest.json``::

        {"format": "sdeflow.shards/1", "n": N, "shape": [event...], "dtype": "float32", "world_size": W,
         "shards": [{"file": ..., "rank": r, "start": a, "stop": b, "sha256": ...}, ...], "info": {...}}

    ``info`` must be JSON-able (as :func:`sdeflow.io.save_tensors` metadata). A barrier follows, so on
    return the manifest exists for every rank (on a shared file system). ``directory`` should be shared by
    the ranks, or collected before :func:`load_shards`. Returns the manifest's path.
    """
    from .io import _fspath, _jsonable

    rank, world, start, stop = _check_local(x_local, n, group)
    directory = _fspath(directory, "directory")
    if info is not None and not isinstance(info, dict):
        raise SdeflowTypeError(f"info must be a dict of JSON-able values (or None), got {type(info).__name__}")
    info = _jsonable(dict(info or {}), "info")
    if _dtype_name(x_local.dtype) not in _dtypes():
        raise SdeflowTypeError(f"x_local has dtype {x_local.dtype}, which a safetensors shard cannot store; convert "
                               f"it (e.g. x_local.double())")
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
        _write_manifest(manifest, n, tuple(x_local.shape[1:]), x_local.dtype, digests, info)
    if world > 1:
        dist.barrier(group)
    return manifest


def _write_manifest(manifest: str, n: int, shape: tuple, dtype: torch.dtype, digests: list[str], info: dict) -> None:
    """Write ``manifest.json`` for ``len(digests)`` ranks (atomically: a temporary file renamed into place)."""
    world = len(digests)
    doc = {"format": FORMAT, "n": n, "shape": list(shape), "dtype": _dtype_name(dtype), "world_size": world,
           "shards": [{"file": _shard_name(r, world), "rank": r, "start": s, "stop": e, "sha256": d}
                      for r, ((s, e), d) in enumerate(zip(blocks(n, world), digests))],
           "info": info}
    tmp = manifest + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, manifest)


def _write_shards(x: Tensor, directory: str | os.PathLike, world_size: int, info: dict | None = None) -> str:
    """Write all ``world_size`` shards of ``x`` and the manifest from one process, exactly as ``world_size``
    ranks running :func:`save_shards` would (for tests and for re-sharding a tensor on one machine)."""
    n = x.shape[0]
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    digests = []
    for r, (s, e) in enumerate(blocks(n, world_size)):
        file = os.path.join(directory, _shard_name(r, world_size))
        _write_tensor(file, x[s:e], {"format": FORMAT, "n": n, "rank": r, "world_size": world_size, "start": s,
                                     "stop": e})
        digests.append(_sha256(file))
    manifest = os.path.join(directory, MANIFEST)
    _write_manifest(manifest, n, tuple(x.shape[1:]), x.dtype, digests, dict(info or {}))
    return manifest


def _strict_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_manifest(location: str | os.PathLike) -> tuple[dict, str]:
    """The manifest and the directory of its shards; ``location`` is the shard directory or the manifest file.

    Checked before any shard is touched (each failure a :class:`ShardError` naming the manifest, the field
    and the fix): a JSON object (no duplicate keys) of format ``sdeflow.shards/1``; ``n`` and
    ``world_size`` integers >= 1 (JSON integers: ``"19"`` or ``19.0`` are refused, not converted);
    ``shape`` a list of integers >= 0; ``dtype`` a dtype safetensors stores; ``info`` an object; one
    ``shards`` entry per rank, each with a bare ``file`` name, a ``rank``, rows ``start <= stop`` within
    ``[0, n]`` and a 64-digit hex ``sha256``. No two entries may claim the same rank or name the same file;
    the rows must cover ``0..n`` exactly (a gap or an overlap is named), and each rank's rows must be its
    :func:`block`.
    """
    from .io import _fspath, _parse_json

    location = _fspath(location, "location")
    file = os.path.join(location, MANIFEST) if os.path.isdir(location) else location
    directory = os.path.dirname(file) or "."
    if not os.path.isfile(file):
        raise ShardError(f"no manifest at {file}: the sharded run did not finish (rank 0 writes {MANIFEST} after "
                         f"every shard is saved); re-run sample_sharded(..., shard_dir=...) or point load_shards "
                         f"at the directory holding {MANIFEST}", file=file)

    def bad(what: str) -> ShardError:
        return ShardError(f"manifest {file} is malformed: {what}; it was not written by save_shards or was edited: "
                          f"restore it from the run, or re-run sample_sharded(..., shard_dir=...)", file=file)

    size = os.path.getsize(file)
    if size > _MAX_MANIFEST_BYTES:
        raise bad(f"{size} bytes, more than the {_MAX_MANIFEST_BYTES} bytes any manifest can need")
    try:
        with open(file, "rb") as f:
            doc = _parse_json(f.read().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise bad(f"not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise bad(f"a JSON {type(doc).__name__}, not an object of named fields")
    fmt = doc.get("format")
    if fmt != FORMAT:
        if isinstance(fmt, str) and fmt.startswith("sdeflow.shards/"):
            raise ShardError(f"manifest {file} has format {fmt!r}, written by a newer sdeflow (this one reads "
                             f"{FORMAT!r}): upgrade sdeflow to load it", file=file)
        raise bad(f"'format' is {fmt!r}, expected {FORMAT!r}")

    def integer(where: str, v, lo: int, hi: int | None = None) -> int:
        if not _strict_int(v) or v < lo or (hi is not None and v > hi):
            rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise bad(f"{where} must be an integer {rng}, got {v!r} ({type(v).__name__})")
        return v

    n = integer("'n'", doc.get("n"), 1)
    world = integer("'world_size'", doc.get("world_size"), 1)
    shape = doc.get("shape")
    if not isinstance(shape, list):
        raise bad(f"'shape' must be the list of event sizes, got {shape!r}")
    shape = tuple(integer(f"shape[{i}]", s, 0) for i, s in enumerate(shape))
    dtype = _dtypes().get(doc.get("dtype")) if isinstance(doc.get("dtype"), str) else None
    if dtype is None:
        raise bad(f"'dtype' must name a dtype such as 'float32', got {doc.get('dtype')!r}")
    if not isinstance(doc.get("info", {}), dict):
        raise bad(f"'info' must be an object, got {doc.get('info')!r}")
    shards = doc.get("shards")
    if not isinstance(shards, list) or len(shards) != world:
        got = f"{len(shards)} entries" if isinstance(shards, list) else repr(shards)
        raise bad(f"'shards' must list one entry per rank (world_size={world}), got {got}")
    by_rank, by_file = {}, {}
    for i, sh in enumerate(shards):
        where = f"shards[{i}]"
        if not isinstance(sh, dict):
            raise bad(f"{where} must be an object, got {sh!r}")
        name = sh.get("file")
        if not (isinstance(name, str) and name not in ("", ".", "..") and "\0" not in name
                and os.path.basename(name) == name and not (os.altsep and os.altsep in name)):
            raise bad(f"{where}.file must be a bare file name (in the manifest's directory), got {name!r}")
        r = integer(f"{where}.rank", sh.get("rank"), 0, world - 1)
        s = integer(f"{where}.start", sh.get("start"), 0, n)
        e = integer(f"{where}.stop", sh.get("stop"), s, n)
        digest = sh.get("sha256")
        if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= _HEX):
            raise bad(f"{where}.sha256 must be 64 lowercase hex digits, got {digest!r}")
        if r in by_rank:
            j = by_rank[r]
            raise bad(f"shards[{j}] ({shards[j]['file']}) and {where} ({name}) both claim rank {r}; each rank "
                      f"writes exactly one shard")
        if name in by_file:
            raise bad(f"shards[{by_file[name]}] and {where} both name the file {name}")
        by_rank[r], by_file[name] = i, i
    pos, last = 0, None
    for i in sorted(range(world), key=lambda i: (shards[i]["start"], shards[i]["stop"])):
        s, e = shards[i]["start"], shards[i]["stop"]
        desc = f"shards[{i}] ({shards[i]['file']}, rows {s}:{e})"
        if s > pos:
            raise bad(f"rows {pos}:{s} of n={n} are in no shard (a gap before {desc})")
        if s < pos and e > s:
            j = last
            raise bad(f"shards[{j}] ({shards[j]['file']}, rows {shards[j]['start']}:{shards[j]['stop']}) and {desc} "
                      f"overlap on rows {s}:{min(e, pos)}")
        if e > pos:
            pos, last = e, i
    if pos < n:
        raise bad(f"rows {pos}:{n} of n={n} are in no shard (the rows must cover 0..n exactly)")
    for i, sh in enumerate(shards):
        if (sh["start"], sh["stop"]) != block(n, sh["rank"], world):
            s, e = block(n, sh["rank"], world)
            raise bad(f"shards[{i}] ({sh['file']}) lists rows {sh['start']}:{sh['stop']} for rank {sh['rank']}, but "
                      f"save_shards gives rank {sh['rank']} of {world} the rows {s}:{e} (see block())")
    doc["_dtype"], doc["_shape"] = dtype, shape
    return doc, directory


def _physical_memory(device: torch.device) -> int | None:
    """Bytes of memory of ``device`` (the machine's RAM for the CPU), or None if unknown."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[1])
        if device.type == "cpu":
            return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError, RuntimeError):
        return None
    return None


def _gib(b: int) -> str:
    return f"{b / 2 ** 30:.3g} GiB" if b >= 2 ** 20 else f"{b} bytes"


def load_shards(location: str | os.PathLike, *, device=None, rows: tuple[int, int] | None = None) -> Tensor:
    """Reassemble the ``(n, *event)`` samples written by :func:`save_shards` / :func:`sample_sharded`.

    ``location``: the shard directory or its manifest, checked by :func:`read_manifest`. ``rows``: an
    optional ``(start, stop)`` to read only those rows (only the shards that hold them are opened).
    ``device``: where to put the result (default CPU, where safetensors loads).

    Before anything is read or allocated, every needed shard must exist with a size that fits the rows the
    manifest declares (their bytes plus at most a safetensors header), and the result (``rows x prod(shape)
    x itemsize`` bytes) must fit in the device's memory; so a manifest claiming, say, ``n = 10**12`` rows is
    refused at once, with the estimate, and no call hashes more than the declared data. Then each
    shard must match its SHA-256 digest, hold exactly one tensor ``"x"`` of the declared shape and dtype, and
    record in its own (checksummed) metadata the rank, rows, ``n`` and world size the manifest gives it.
    Every failure raises :class:`ShardError` naming the file, the rank and rows, and the fix.
    """
    from .io import _device

    doc, directory = read_manifest(location)
    n, shape, dtype = doc["n"], doc["_shape"], doc["_dtype"]
    dev = _device("cpu" if device is None else device)
    if rows is None:
        a, b = 0, n
    else:
        if not (isinstance(rows, (tuple, list)) and len(rows) == 2 and all(_strict_int(v) for v in rows)):
            raise SdeflowTypeError(f"rows must be a pair of integers (start, stop), got {rows!r}")
        a, b = rows
        if not 0 <= a <= b <= n:
            raise SdeflowValueError(f"rows=({a}, {b}) must satisfy 0 <= start <= stop <= n={n}")
    row_bytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    wanted = sorted((sh for sh in doc["shards"] if sh["start"] < b and sh["stop"] > a), key=lambda sh: sh["start"])
    if not wanted:  # an empty slice: its shape and dtype are still checked against a shard's content
        wanted = [min((sh for sh in doc["shards"] if sh["stop"] > sh["start"]), key=lambda sh: abs(sh["start"] - a))]
    files = {}
    for sh in wanted:  # 1. every shard is there and big enough: nothing read or allocated yet
        file, rows_of, regen = _describe(directory, sh, n)
        if not os.path.isfile(file):
            raise ShardError(f"shard {file} ({rows_of}) is missing: copy it from the machine that ran rank "
                             f"{sh['rank']}, re-run the sharded sampling, or {regen}", file=file)
        need, size = (sh["stop"] - sh["start"]) * row_bytes, os.path.getsize(file)
        if not need <= size <= need + _MAX_HEADER_BYTES:  # (an oversized file would take long to hash)
            raise ShardError(f"shard {file} ({rows_of}) is {size} bytes, but the manifest declares "
                             f"{sh['stop'] - sh['start']} rows of shape {shape} {dtype}, {_gib(need)} (plus a header "
                             f"of at most 100 MB): the manifest's n, shape or dtype was edited or "
                             f"the file belongs to another run; nothing was read or allocated. Restore the manifest, "
                             f"re-run the sharded sampling, or {regen}", file=file)
        files[sh["rank"]] = file
    total = (b - a) * row_bytes
    avail = _physical_memory(dev)
    if avail is not None and total > avail:
        raise ShardError(f"rows {a}:{b} of {os.path.join(directory, MANIFEST)} need {_gib(total)} ({b - a} rows of "
                         f"shape {shape} {dtype}), more than the {_gib(avail)} of memory of {dev}; nothing was "
                         f"allocated: read a slice at a time with load_shards(..., rows=(start, stop))")
    out = torch.empty((b - a,) + shape, dtype=dtype, device=dev)
    for sh in wanted:  # 2. verify and copy each shard into its rows
        x = _read_shard(files[sh["rank"]], sh, doc, directory)
        s, e = max(sh["start"], a), min(sh["stop"], b)
        if e > s:
            out[s - a:e - a] = x[s - sh["start"]:e - sh["start"]]
    return out


def _describe(directory: str, sh: dict, n: int) -> tuple[str, str, str]:
    """The shard's path, its 'rank r, rows a:b of n=N' label, and how to regenerate its rows."""
    file = os.path.join(directory, sh["file"])
    rows = f"rank {sh['rank']}, rows {sh['start']}:{sh['stop']} of n={n}"
    regen = (f"regenerate exactly these rows on one process with sdeflow.sample(..., n={sh['stop'] - sh['start']}, "
             f"noise=PerSampleNoise(seed).for_rows({sh['start']})) and the run's other arguments")
    return file, rows, regen


def _read_shard(file: str, sh: dict, doc: dict, directory: str) -> Tensor:
    """The verified rows of one shard (on the CPU)."""
    from .io import _read

    file, rows, regen = _describe(directory, sh, doc["n"])
    got = _sha256(file)
    if got != sh["sha256"]:
        raise ShardError(f"shard {file} ({rows}) is corrupt: its sha256 is {got}, the manifest records "
                         f"{sh['sha256']}; copy an intact file from the machine that ran rank {sh['rank']}, "
                         f"re-run the sharded sampling, or {regen}", file=file)
    try:  # the whole file matched the manifest's digest, so its own checksum need not be recomputed
        tensors, meta, _ = _read(file, "cpu", verify=False)
    except (SdeflowValueError, SdeflowTypeError) as e:
        raise ShardError(f"shard {file} ({rows}) cannot be read: {e}", file=file) from None
    if set(tensors) != {"x"}:
        raise ShardError(f"shard {file} ({rows}) holds the tensors {sorted(tensors)}, but a shard holds exactly one "
                         f"tensor 'x': the file was not written by save_shards; re-run the sharded sampling, or "
                         f"{regen}", file=file)
    own = tuple(meta.get(k) for k in ("kind", "format", "rank", "start", "stop", "n", "world_size"))
    want = ("shard", FORMAT, sh["rank"], sh["start"], sh["stop"], doc["n"], doc["world_size"])
    if own != want or not all(_strict_int(v) for v in own[2:]):
        raise ShardError(f"shard {file} records rank {own[2]!r}, rows {own[3]!r}:{own[4]!r} of n={own[5]!r} "
                         f"(world_size {own[6]!r}), but the manifest lists it as {rows} (world_size "
                         f"{doc['world_size']}): the file was renamed or comes from another run, or the manifest "
                         f"was edited; restore the run's files, or {regen}", file=file)
    x = tensors["x"]
    want_shape = (sh["stop"] - sh["start"],) + doc["_shape"]
    if tuple(x.shape) != want_shape or x.dtype != doc["_dtype"]:
        raise ShardError(f"shard {file} ({rows}) holds {tuple(x.shape)} {x.dtype}, the manifest declares "
                         f"{want_shape} {doc['_dtype']}; the file belongs to another run: re-run the sharded "
                         f"sampling", file=file)
    return x
