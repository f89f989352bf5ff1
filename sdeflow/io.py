r"""Safe persistence: grids, solutions and field checkpoints as safetensors files with JSON metadata.

Nothing here ever unpickles: tensors are stored with safetensors (https://huggingface.co/docs/safetensors)
(a flat table of raw buffers plus a JSON header), and metadata is JSON. The one exception,
:func:`load_state_dict`, also reads ``torch.save`` checkpoints of other libraries, through
``torch.load(weights_only=True)`` (PyTorch's restricted unpickler: tensors and plain containers only).

The small API (stable; :mod:`sdeflow.distributed` writes per-rank shards with it):

* :func:`save_tensors` / :func:`load_tensors` — ``dict[str, Tensor]`` plus a JSON-able ``metadata`` dict;
* :func:`save_grid` / :func:`load_grid` — a time grid (float64, validated on load);
* :func:`save_solution` / :func:`load_solution` — a :class:`~sdeflow.solution.Solution` (``x``, ``ts``,
  ``trajectory``, ``nfe``, ``stats``);
* :func:`save_field` / :func:`load_field_state` — a field's network ``state_dict`` plus what it predicts and
  the path it was trained on (:func:`path_from_metadata` rebuilds the built-in paths).

**The file** (``format_version`` 2). A safetensors file whose header metadata holds one string,
``"sdeflow"``: the JSON metadata (``format_version``, the ``kind`` of file for the typed savers, and the
caller's ``metadata``) with a last field ``"sha256"``, a SHA-256 checksum of the text before that field
(closed with ``}``) and of every tensor (name, dtype, shape and little-endian bytes, in name order, each
field prefixed by its 8-byte length). The same tensors and metadata give the same bytes in every run. A
file is written to a temporary name and renamed into place, so an interrupted save never leaves a
half-written file under the final name.

**Metadata** must round-trip exactly, so :func:`save_tensors` accepts only what JSON holds: ``None``,
bools, ints, floats (NaN and +-Inf included: they are written as the ``NaN``/``Infinity`` literals that
Python's ``json`` module reads back, so ``{"v": nan}`` loads as a float NaN), strings, lists and dicts with
string keys. numpy/torch scalars become numbers, tensors of at most 64 elements and tuples become lists, a
``torch.dtype`` its name; anything else (an object, a bigger tensor, an integer key) is refused with
:class:`~sdeflow.errors.SdeflowTypeError` naming the entry. Keys a saver writes itself (``format_version``;
``sha256``; ``kind``, ``nfe``, ``stats``, ``path``, ... for the typed savers) are refused in ``metadata``
rather than silently overwritten. Tensor names must be UTF-8 text other than ``"__metadata__"`` (safetensors' own
header key); tensors must hold data (not on the ``meta`` device), be dense, and have a dtype safetensors
stores (complex128 does not: save ``torch.view_as_real(t)``). Conjugate/negative views are resolved
before writing, and tensors sharing memory (tied weights) are each stored in full.

**Loading checks everything it returns**, and any malformed file raises
:class:`~sdeflow.errors.SdeflowValueError` (or :class:`~sdeflow.errors.SdeflowTypeError` for a wrong
argument type) naming the file, the field at fault and the fix — never another exception type and never
wrong data:

* not a safetensors file at all (a pickle, a ``torch.save`` archive, text), a truncated download, a
  damaged header: refused before any content is interpreted;
* the checksum: a flipped bit anywhere in the tensors or the metadata is reported as a corrupt file
  (files of ``format_version`` 1, written before the checksum existed, load without this check), and so is
  sdeflow metadata found under another header key;
* the metadata: valid JSON (no duplicate keys), an object, a ``format_version`` this sdeflow reads;
* the typed loaders: the file's ``kind`` (a grid is not loaded as a solution), the tensors that kind must
  hold and no others, and their meaning (a grid is 1-D, finite and strictly monotone; a solution's
  ``trajectory`` is ``(len(ts), *x.shape)``; ``nfe`` is an integer >= 0; a field's recorded path is a
  class name with a parameter object, :func:`path_from_metadata` accepts only a built-in path's own
  parameter names).

Safetensors files without sdeflow metadata (weights from other libraries) load with :func:`load_tensors`
and :func:`load_state_dict`. Errors of the file system itself (permission denied, a full disk) are
Python's ``OSError``.

Files of ``format_version`` 1 stored non-finite metadata floats as the strings ``'nan'``, ``'inf'`` and
``'-inf'``; they load as those strings (sdeflow does not guess which strings were numbers).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import secrets
from typing import Any, Mapping

import numpy as np
import torch

from .errors import SdeflowTypeError, SdeflowValueError, check_device

__all__ = ["save_tensors", "load_tensors", "save_grid", "load_grid", "save_solution", "load_solution",
           "save_field", "load_field_state", "load_state_dict", "path_from_metadata", "FORMAT_VERSION"]

Tensor = torch.Tensor
FORMAT_VERSION = 2  # 2: the checksum field "sha256"; NaN/Inf metadata floats as JSON literals
_META_KEY = "sdeflow"  # the safetensors header metadata: {_META_KEY: JSON text ending in , "sha256": "<hex>"}}
_SUM = "sha256"
_SUM_TAIL = re.compile(r', "sha256": "([0-9a-f]{64})"}\Z')
_RESERVED_NAMES = ("__metadata__",)  # safetensors' header key: a tensor of that name makes an unreadable file
_MAX_DEPTH = 64  # nesting of metadata containers (a recursive structure would never end)
_MAX_LIST = 64  # elements of a tensor stored in the metadata (bigger ones belong in the tensor dict)
_MAX_HEADER = 100_000_000  # safetensors refuses to read a longer header: such a file could not be loaded back
_DTYPES = tuple(getattr(torch, n) for n in (
    "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "uint16", "uint32",
    "uint64", "bool", "complex64", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
    if isinstance(getattr(torch, n, None), torch.dtype))
_REMAKE = "save it again with sdeflow.io"
_EDITED = f"the file was not written by sdeflow.io or was edited: {_REMAKE}"


# ---- JSON ------------------------------------------------------------------------------------------
def _jsonable(v, where: str = "metadata", depth: int = 0):
    """Plain JSON values for metadata: numpy/torch scalars become numbers, small tensors and tuples lists;
    anything else is refused (metadata must round-trip). ``where`` names the entry in messages."""
    if depth > _MAX_DEPTH:
        raise SdeflowValueError(f"{where} is nested more than {_MAX_DEPTH} levels deep (a container that holds "
                                f"itself?); store a flatter structure")
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        try:
            str(int(v))
        except ValueError:  # above Python's int <-> str digit limit: JSON could not hold it
            raise SdeflowValueError(f"{where} is an integer too large to write as JSON text; store it as a "
                                    f"string or a tensor") from None
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)  # NaN/Inf kept: written as the JSON literals NaN/Infinity, read back as floats
    if isinstance(v, Tensor):
        if v.layout != torch.strided or v.is_meta or v.numel() > _MAX_LIST:
            raise SdeflowTypeError(f"{where} is a tensor with {v.numel()} elements ({v.layout}, {v.device}); "
                                   f"metadata holds at most {_MAX_LIST} numbers of a dense tensor with data: "
                                   f"put it in the tensor dict instead")
        return _jsonable(v.detach().cpu().resolve_conj().resolve_neg().tolist(), where, depth + 1)
    if isinstance(v, np.ndarray) and v.size <= _MAX_LIST:
        return _jsonable(v.tolist(), where, depth + 1)
    if isinstance(v, Mapping):
        out = {}
        for k, u in v.items():
            if not isinstance(k, str):
                raise SdeflowTypeError(f"{where} has the key {k!r} ({type(k).__name__}); JSON object keys are "
                                       f"strings and a converted key would not load back as {k!r}: use str keys")
            out[k] = _jsonable(u, f"{where}[{k!r}]", depth + 1)
        return out
    if isinstance(v, (list, tuple)):
        return [_jsonable(u, f"{where}[{i}]", depth + 1) for i, u in enumerate(v)]
    if isinstance(v, torch.dtype):
        return str(v)
    text = repr(v)
    text = text if len(text) <= 80 else text[:77] + "..."
    raise SdeflowTypeError(f"{where} = {text} of type {type(v).__name__} is not JSON-serialisable; store "
                           f"numbers, strings, lists or dicts (or tensors in the tensor dict)")


def _no_duplicates(pairs):
    """``object_pairs_hook`` for json.loads: a key given twice is an error, not 'the last one wins'."""
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _parse_json(text: str):
    """Strict JSON (no duplicate keys; NaN/Infinity literals accepted). Raises ValueError for anything
    malformed, nesting too deep included."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _fspath(path, name: str = "path") -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise SdeflowTypeError(f"{name} must be a file name (str or os.PathLike), got {type(path).__name__}")
    path = os.fspath(path)
    if not isinstance(path, str):
        raise SdeflowTypeError(f"{name} must be a text file name, got {type(path).__name__}")
    if "\0" in path:
        raise SdeflowValueError(f"{name} {path!r} contains a NUL character; no file can have that name")
    return path


def _device(device) -> torch.device:
    """``device`` as a torch.device that exists here (tensors are read on the CPU and moved there)."""
    dev = torch.device("meta") if str(device) == "meta" else check_device(device)
    if dev.type == "meta":
        raise SdeflowValueError("device='meta' would drop the data being loaded; load on 'cpu' (or a GPU) and "
                                "build meta tensors from the shapes if that is what you need")
    if dev.type != "cpu":
        try:
            torch.empty(0, device=dev)
        except (RuntimeError, AssertionError, ValueError) as e:
            raise SdeflowValueError(f"device {device!r} is not available in this process ({e}); load on 'cpu' "
                                    f"or an available device") from None
    return dev


# ---- checksums ---------------------------------------------------------------------------------------
def _frame(h, data) -> None:
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


def _digest(meta_json: str, tensors: Mapping[str, Tensor]) -> str:
    """SHA-256 of the metadata text and of every tensor (name, dtype, shape, bytes), in name order; each
    field is prefixed by its length, so no two different files hash the same text."""
    h = hashlib.sha256(b"sdeflow.io/2\0")
    _frame(h, meta_json.encode("utf-8"))
    for name in sorted(tensors):
        t = tensors[name]
        _frame(h, name.encode("utf-8"))
        _frame(h, str(t.dtype).removeprefix("torch.").encode())
        _frame(h, ",".join(str(s) for s in t.shape).encode())
        buf = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        _frame(h, memoryview(buf))
    return h.hexdigest()


# ---- tensors ---------------------------------------------------------------------------------------
def _prepare(tensors) -> dict[str, Tensor]:
    """Checked CPU, dense, contiguous, resolved copies (one storage per tensor) ready for safetensors."""
    if not isinstance(tensors, Mapping):
        raise SdeflowTypeError(f"tensors must be a dict of name -> torch.Tensor, got {type(tensors).__name__}")
    out, storages = {}, set()
    for k, v in tensors.items():
        if not isinstance(k, str):
            raise SdeflowTypeError(f"tensor names must be strings, got {k!r} ({type(k).__name__})")
        if k in _RESERVED_NAMES:
            raise SdeflowValueError(f"tensor name {k!r} is reserved: safetensors keeps the file's metadata under "
                                    f"that header key, so the file could not be read back; rename the tensor")
        try:
            k.encode("utf-8")
        except UnicodeEncodeError:
            raise SdeflowValueError(f"tensor name {k!r} is not valid UTF-8 text (a lone surrogate?); safetensors "
                                    f"names are UTF-8: rename the tensor") from None
        if not isinstance(v, Tensor):
            raise SdeflowTypeError(f"tensors[{k!r}] must be a torch.Tensor, got {type(v).__name__}")
        if v.is_meta:
            raise SdeflowValueError(f"tensors[{k!r}] is on the meta device: it has a shape {tuple(v.shape)} but no "
                                    f"data to save; materialise it first (e.g. module.to_empty(device='cpu'), then "
                                    f"initialise or load the weights)")
        if v.layout != torch.strided:
            raise SdeflowTypeError(f"tensors[{k!r}] has layout {v.layout}; safetensors stores dense tensors: save "
                                   f"{k}.to_dense(), or its indices and values as two tensors")
        if v.dtype not in _DTYPES:
            hint = " (save torch.view_as_real(t), a float64 tensor)" if v.dtype == torch.complex128 else ""
            raise SdeflowTypeError(f"tensors[{k!r}] has dtype {v.dtype}, which safetensors cannot store{hint}; "
                                   f"supported: {', '.join(str(d).removeprefix('torch.') for d in _DTYPES)}")
        v = v.detach().to("cpu").resolve_conj().resolve_neg().contiguous()
        if v.numel():
            key = v.untyped_storage().data_ptr()
            if key in storages:  # safetensors refuses shared storage (tied weights, overlapping views)
                v = v.clone()
                key = v.untyped_storage().data_ptr()
            storages.add(key)
        out[k] = v
    return out


def _signed(body: str, tensors: Mapping[str, Tensor]) -> str:
    """The metadata text with its checksum as the last field: ``{...body..., "sha256": "<hex>"}``."""
    return body[:-1] + f', "{_SUM}": "{_digest(body, tensors)}"}}'


def _user_metadata(metadata, reserved: tuple[str, ...], who: str) -> dict:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise SdeflowTypeError(f"metadata must be a dict of JSON-able values (or None), got "
                               f"{type(metadata).__name__}")
    meta = _jsonable(metadata)
    for k in ("format_version", _SUM) + reserved:
        if k in meta:
            raise SdeflowValueError(f"metadata key {k!r} is reserved: {who} writes it itself, so your value would "
                                    f"be lost; rename the key")
    return meta


def _save(path, tensors, metadata, fixed: dict, who: str) -> None:
    """Validate, checksum and write atomically (a temporary file renamed into place)."""
    from safetensors.torch import save_file

    file = _fspath(path)
    out = _prepare(tensors)
    meta = {"format_version": FORMAT_VERSION, **_user_metadata(metadata, tuple(fixed), who), **fixed}
    try:
        body = json.dumps(meta, allow_nan=True)
    except ValueError as e:  # e.g. an integer beyond the digit limit inside a value _jsonable let through
        raise SdeflowValueError(f"metadata cannot be written as JSON ({e}); store simpler values") from None
    if os.path.isdir(file):
        raise SdeflowValueError(f"path {file!r} is a directory; give a file name such as "
                                f"{os.path.join(file, 'data.safetensors')!r}")
    parent = os.path.dirname(os.path.abspath(file))
    if not os.path.isdir(parent):
        raise SdeflowValueError(f"path {file!r}: the directory {parent!r} does not exist; create it first "
                                f"(os.makedirs({parent!r}, exist_ok=True))")
    header = {_META_KEY: _signed(body, out)}  # one key: safetensors writes its metadata map in random order
    size = len(header[_META_KEY]) + sum(len(k) + 100 for k in out)  # + per tensor: name, dtype, shape, offsets
    if size > _MAX_HEADER // 2:
        raise SdeflowValueError(f"metadata of {len(body)} characters and {len(out)} tensors would make a header of "
                                f"about {size} bytes, near safetensors' limit of {_MAX_HEADER} (a file it could not "
                                f"read back); store long lists as tensors, or split the tensors over several files")
    tmp = f"{file}.{secrets.token_hex(4)}.tmp"
    try:
        try:
            save_file(out, tmp, metadata=header)
        except (OSError, MemoryError):
            raise
        except Exception as e:  # safetensors reports I/O failures (a full disk, permissions) as its own type
            raise OSError(f"could not write {file!r}: {e}") from e
        os.replace(tmp, file)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_tensors(path, tensors: Mapping[str, Tensor], metadata: Mapping[str, Any] | None = None) -> None:
    """Write ``tensors`` (names -> tensors, any device: stored from CPU copies) and JSON ``metadata``.

    ``metadata`` values must be JSON-able (see the module notes: NaN/Inf floats round-trip, tuples and small
    tensors become lists); the keys ``format_version`` and ``sha256`` are reserved. Refused with
    :class:`~sdeflow.errors.SdeflowValueError` / :class:`~sdeflow.errors.SdeflowTypeError` before anything
    is written: a tensor named ``"__metadata__"``, a meta-device or sparse tensor, a dtype safetensors cannot
    store, metadata that would not load back as given, a directory or a path in a missing directory. A
    failure of the file system while writing raises ``OSError`` and leaves any previous file in place.
    """
    _save(path, tensors, metadata, {}, "save_tensors")


def _not_safetensors(file: str, e: Exception) -> SdeflowValueError:
    msg = str(e).splitlines()[0] if str(e) else ""
    return SdeflowValueError(f"{file!r} is not a safetensors file, or it is truncated or corrupt ({type(e).__name__}: "
                             f"{msg}); sdeflow loads only safetensors files and never unpickles. If this is a "
                             f"torch.save checkpoint of weights, use sdeflow.io.load_state_dict; if it is a damaged "
                             f"copy, copy it again")


def _check_file(file: str) -> None:
    if not os.path.exists(file):
        where = "" if os.path.isabs(file) else f" (relative to the working directory {os.getcwd()!r})"
        raise SdeflowValueError(f"no file at {file!r}{where}; check the name")
    if not os.path.isfile(file):
        raise SdeflowValueError(f"{file!r} is not a regular file (a directory?); give the path of the file itself")


def _read(path, device="cpu", *, verify: bool = True) -> tuple[dict[str, Tensor], dict, str]:
    """``(tensors, metadata, file name)`` of a safetensors file, checked (see :func:`load_tensors`)."""
    from safetensors import safe_open

    file = _fspath(path)
    dev = _device(device)
    _check_file(file)
    with open(file, "rb"):  # unreadable (permissions): the OSError Python users expect, not 'corrupt'
        pass
    try:
        with safe_open(file, framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except MemoryError:
        raise
    except Exception as e:  # safetensors raises its own error types for malformed headers
        raise _not_safetensors(file, e) from None
    meta = _metadata(file, header)
    if meta.get("format_version", 1) >= 2:  # the checksum is the text's last field (see _signed)
        m = _SUM_TAIL.search(header[_META_KEY])
        if m is None or meta.pop(_SUM, None) != m.group(1):
            raise SdeflowValueError(f"{file!r} is format_version {meta['format_version']} but its checksum field "
                                    f"'{_SUM}' is missing or damaged: the header was damaged or edited; copy the file "
                                    f"again or {_REMAKE}")
        if verify and _digest(header[_META_KEY][:m.start()] + "}", tensors) != m.group(1):
            raise SdeflowValueError(f"{file!r} is corrupt: its tensors or metadata do not match the SHA-256 checksum "
                                    f"recorded when it was saved (a damaged copy, a failing disk, or an edited "
                                    f"file); nothing was loaded: copy the file again or re-create it")
    if dev.type != "cpu":
        tensors = {k: v.to(dev) for k, v in tensors.items()}
    return tensors, meta, file


def _metadata(file: str, header: Mapping[str, str]) -> dict:
    """The sdeflow metadata of a safetensors header ({} for a file without any), checked for structure."""
    if _META_KEY not in header:
        for key, text in header.items():  # sdeflow's text under another name: a damaged header, not a foreign file
            if isinstance(text, str) and (text.startswith('{"format_version"') or _SUM_TAIL.search(text)):
                raise SdeflowValueError(f"{file!r} holds sdeflow metadata under the header key {key!r} instead of "
                                        f"{_META_KEY!r}: the header is damaged; copy the file again or {_REMAKE}")
        return {}
    try:
        meta = _parse_json(header[_META_KEY])
    except ValueError as e:
        raise SdeflowValueError(f"{file!r} has malformed sdeflow metadata (not valid JSON: {e}); the file was "
                                f"damaged or edited: copy it again or {_REMAKE}") from None
    if not isinstance(meta, dict):
        raise SdeflowValueError(f"{file!r} has malformed sdeflow metadata: a JSON {type(meta).__name__}, not an "
                                f"object of named fields; {_EDITED}")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SdeflowValueError(f"{file!r}: its sdeflow metadata field 'format_version' must be an integer >= 1, "
                                f"got {version!r}; {_EDITED}")
    if version > FORMAT_VERSION:
        raise SdeflowValueError(f"{file!r} was written by a newer sdeflow (format_version {version}; this one reads "
                                f"up to {FORMAT_VERSION}): upgrade sdeflow to load this file")
    return meta


def load_tensors(path, *, device="cpu") -> tuple[dict[str, Tensor], dict]:
    """Read a file written by :func:`save_tensors`: ``(tensors, metadata)``.

    Never unpickles. The file must be a readable safetensors file whose checksum (if it has one: every file
    this sdeflow writes does) matches, with metadata that is a JSON object; otherwise
    :class:`~sdeflow.errors.SdeflowValueError` names the file, what is wrong and the fix. A safetensors
    file of another library (no sdeflow metadata) gives its tensors and ``{}``. ``device``: where the
    tensors go (read on the CPU, moved after the check).
    """
    tensors, meta, _ = _read(path, device)
    return tensors, meta


_LOADERS = {"grid": "load_grid", "solution": "load_solution", "field": "load_field_state",
            "shard": "sdeflow.distributed.load_shards on its directory"}


def _typed(path, kind: str, device, required=(), optional=(), prefix: str | None = None):
    """Read a file of ``kind`` and check it holds the ``required`` tensors and nothing unknown."""
    tensors, meta, file = _read(path, device)
    got = meta.get("kind")
    if got != kind:
        what = "plain tensors (no sdeflow kind)" if got is None else f"a {got!r}"
        use = _LOADERS.get(got, "load_tensors") if isinstance(got, str) else "load_tensors"
        raise SdeflowValueError(f"{file!r} holds {what}, not a {kind}; load the file with the matching function "
                                f"({use}), or save a {kind} with sdeflow.io.save_{kind}")
    missing = [k for k in required if k not in tensors]
    unknown = sorted(k for k in tensors if k not in required and k not in optional
                     and not (prefix is not None and k.startswith(prefix)))
    if missing or unknown:
        problem = f"no tensor {missing[0]!r}" if missing else f"an unknown tensor {unknown[0]!r}"
        raise SdeflowValueError(f"{file!r} is a {kind} file with {problem} (it holds {sorted(tensors)}); "
                                f"{_EDITED}")
    return tensors, meta, file


def _bad_field(file: str, field: str, need: str, got) -> SdeflowValueError:
    return SdeflowValueError(f"{file!r}: metadata field {field!r} must be {need}, got {got!r}; {_EDITED}")


# ---- grids -----------------------------------------------------------------------------------------
def save_grid(path, grid, metadata: Mapping[str, Any] | None = None) -> None:
    """Save a monotone time grid (stored float64); the metadata key ``kind`` is reserved."""
    from .grids import check_grid

    g = check_grid(grid, "grid", decreasing=None, unit=False)
    _save(path, {"grid": g}, metadata, {"kind": "grid"}, "save_grid")


def load_grid(path) -> Tensor:
    """The float64 grid saved by :func:`save_grid` (validated again: 1-D, finite, strictly monotone)."""
    from .grids import check_grid

    tensors, _, file = _typed(path, "grid", "cpu", ("grid",))
    try:
        return check_grid(tensors["grid"], "grid", decreasing=None, unit=False)
    except (SdeflowValueError, SdeflowTypeError) as e:
        raise type(e)(f"{file!r}: the stored tensor 'grid' is not a valid grid: {e}. The file was edited or "
                      f"written by another program: {_REMAKE}") from None


# ---- solutions -------------------------------------------------------------------------------------
def save_solution(path, solution, metadata: Mapping[str, Any] | None = None) -> None:
    """Save a :class:`~sdeflow.solution.Solution`: tensors ``x``, ``ts``, ``trajectory``; ``nfe`` and
    ``stats`` as JSON (stats values must be JSON-able: numbers, strings, lists, dicts). The metadata keys
    ``kind``, ``nfe`` and ``stats`` are reserved."""
    from .solution import Solution

    if not isinstance(solution, Solution):
        raise SdeflowTypeError(f"solution must be an sdeflow Solution, got {type(solution).__name__}")
    tensors = {"x": solution.x, "ts": solution.ts}
    if solution.trajectory is not None:
        tensors["trajectory"] = solution.trajectory
    stats = _jsonable(solution.stats, "solution.stats")
    _save(path, tensors, metadata, {"kind": "solution", "nfe": int(solution.nfe), "stats": stats}, "save_solution")


def load_solution(path, *, device="cpu"):
    """The :class:`~sdeflow.solution.Solution` saved by :func:`save_solution` (``x`` is ``(batch, *event)``,
    ``ts`` 1-D floating, ``trajectory`` absent or ``(len(ts), *x.shape)``, ``nfe`` an integer >= 0, ``stats``
    an object)."""
    from .solution import Solution

    tensors, meta, file = _typed(path, "solution", device, ("x", "ts"), ("trajectory",))
    x, ts, traj = tensors["x"], tensors["ts"], tensors.get("trajectory")
    if x.dim() < 1:
        raise SdeflowValueError(f"{file!r}: tensor 'x' must have shape (batch, *event), got (); {_EDITED}")
    if ts.dim() != 1 or not ts.is_floating_point():
        raise SdeflowValueError(f"{file!r}: tensor 'ts' must be a 1-D floating tensor of times, got shape "
                                f"{tuple(ts.shape)} {ts.dtype}; {_EDITED}")
    if traj is not None and tuple(traj.shape) != (ts.numel(),) + tuple(x.shape):
        raise SdeflowValueError(f"{file!r}: tensor 'trajectory' has shape {tuple(traj.shape)}, but len(ts) = "
                                f"{ts.numel()} and x has shape {tuple(x.shape)} need {(ts.numel(),) + tuple(x.shape)}; "
                                f"{_EDITED}")
    nfe, stats = meta.get("nfe"), meta.get("stats")
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 0:
        raise _bad_field(file, "nfe", "an integer >= 0", nfe)
    if not isinstance(stats, dict):
        raise _bad_field(file, "stats", "an object", stats)
    return Solution(x=x, ts=ts, trajectory=traj, nfe=nfe, stats=stats)


# ---- fields ----------------------------------------------------------------------------------------
def _module_of(field) -> torch.nn.Module:
    if isinstance(field, torch.nn.Module):
        return field
    net = getattr(field, "net", None)
    while net is not None and not isinstance(net, torch.nn.Module):  # through time adapters
        net = getattr(net, "net", None)
    if net is None:
        raise SdeflowTypeError(f"cannot find a torch.nn.Module in {type(field).__name__}; save_field needs a "
                               f"Field wrapping an nn.Module (or the module itself)")
    return net


_FIELD_KEYS = ("kind", "field_class", "field_kind", "flip_time", "module_class", "path")


def save_field(path, field, *, sde_path=None, metadata: Mapping[str, Any] | None = None) -> None:
    """Save a field's network weights (``state_dict``) with what it predicts and the path it was trained
    on (``sde_path``: a :class:`~sdeflow.paths.GaussianPath`; its class and parameters go to the metadata,
    a :class:`~sdeflow.paths.DiscreteVP`'s betas to the tensors). The metadata keys ``kind``,
    ``field_class``, ``field_kind``, ``flip_time``, ``module_class`` and ``path`` are reserved."""
    from .paths import DiscreteVP, GaussianPath

    module = _module_of(field)
    tensors = {f"state.{k}": v for k, v in module.state_dict().items()}
    fixed = {"kind": "field", "field_class": type(field).__name__, "field_kind": getattr(field, "kind", None),
             "flip_time": bool(getattr(field, "flip_time", False)), "module_class": type(module).__name__}
    if sde_path is not None:
        if not isinstance(sde_path, GaussianPath):
            raise SdeflowTypeError(f"sde_path must be a GaussianPath, got {type(sde_path).__name__}")
        fixed["path"] = {"class": type(sde_path).__name__, "params": _jsonable(sde_path._params(), "sde_path params"),
                         "repr": repr(sde_path)}
        if isinstance(sde_path, DiscreteVP):
            tensors["path.betas"] = sde_path.betas
    _save(path, tensors, metadata, fixed, "save_field")


def _path_info(info, where: str) -> tuple[str, dict]:
    """``(class name, params)`` of a recorded path, checked for structure."""
    if not isinstance(info, Mapping):
        raise SdeflowValueError(f"{where} must be an object {{'class': ..., 'params': {{...}}}}, got {info!r}")
    cls, params = info.get("class"), info.get("params", {})
    if not isinstance(cls, str):
        raise SdeflowValueError(f"{where} must name the path's class under 'class', got {cls!r}")
    if not isinstance(params, Mapping):
        raise SdeflowValueError(f"{where} must hold an object of parameter names -> values under 'params', got "
                                f"{params!r}")
    return cls, dict(params)


def load_field_state(path, *, device="cpu") -> tuple[dict[str, Tensor], dict]:
    """``(state_dict, metadata)`` of a checkpoint written by :func:`save_field`; load the weights with
    ``net.load_state_dict(state_dict)`` and rebuild the path with :func:`path_from_metadata` (a
    :class:`~sdeflow.paths.DiscreteVP`'s betas are added to ``metadata['path']['betas']``)."""
    tensors, meta, file = _typed(path, "field", device, (), ("path.betas",), prefix="state.")
    for key, need, ok in (("field_class", "a class name", lambda v: isinstance(v, str)),
                          ("module_class", "a class name", lambda v: isinstance(v, str)),
                          ("field_kind", "a kind name or null", lambda v: v is None or isinstance(v, str)),
                          ("flip_time", "true or false", lambda v: isinstance(v, bool))):
        if not ok(meta.get(key)):
            raise _bad_field(file, key, need, meta.get(key))
    state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    betas = tensors.get("path.betas")
    if "path" in meta:
        try:
            cls, _ = _path_info(meta["path"], "metadata['path']")
        except SdeflowValueError as e:
            raise SdeflowValueError(f"{file!r}: {e}; the file was edited: {_REMAKE}") from None
        if (cls == "DiscreteVP") != (betas is not None):
            raise SdeflowValueError(f"{file!r}: the recorded path is {cls} but the tensor 'path.betas' is "
                                    f"{'missing' if betas is None else 'present'} (a DiscreteVP, and only a "
                                    f"DiscreteVP, stores its betas there); {_EDITED}")
        if betas is not None:
            meta["path"]["betas"] = betas
    elif betas is not None:
        raise SdeflowValueError(f"{file!r} holds the tensor 'path.betas' but records no path; {_EDITED}")
    return state, meta


def _rebuildable() -> dict[str, type]:
    from . import paths as P

    out = {}
    for name in P.__all__:
        cls = getattr(P, name, None)
        if isinstance(cls, type) and issubclass(cls, P.GaussianPath) and cls not in (P.GaussianPath, P.AffinePath):
            out[name] = cls
    return out


def path_from_metadata(meta: Mapping[str, Any]):
    """Rebuild the built-in :class:`~sdeflow.paths.GaussianPath` recorded by :func:`save_field`.

    ``meta['path']`` must name a built-in path class with an object of that class's own constructor
    parameters (a name it does not take raises :class:`~sdeflow.errors.SdeflowTypeError`, a bad value the
    constructor's own error). A :class:`~sdeflow.paths.AffinePath` cannot be rebuilt (its functions are
    code, not data): construct it again.
    """
    from . import paths as P

    if not isinstance(meta, Mapping):
        raise SdeflowTypeError(f"meta must be the metadata dict returned by load_field_state, got "
                               f"{type(meta).__name__}")
    info = meta.get("path")
    if info is None:
        raise SdeflowValueError("the metadata records no path; save the field with save_field(..., sde_path=)")
    name, params = _path_info(info, "meta['path']")
    known = _rebuildable()
    if name == "AffinePath":
        raise SdeflowValueError(f"path {info.get('repr', name)} cannot be rebuilt from metadata (user functions "
                                f"are not stored); construct it again in code")
    if name not in known:
        raise SdeflowValueError(f"meta['path'] names the class {name!r}, which is not a built-in path (known: "
                                f"{', '.join(sorted(known))}); construct the path in code")
    cls = known[name]
    if cls is P.DiscreteVP:
        betas = info.get("betas")
        if betas is None:
            raise SdeflowValueError("meta['path'] describes a DiscreteVP but holds no 'betas' table: read the "
                                    "metadata with load_field_state, which adds them from the tensor 'path.betas'")
        build = lambda: P.DiscreteVP(betas)  # noqa: E731
    else:
        takes = [p.name for p in inspect.signature(cls).parameters.values()
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        for k in params:
            if k not in takes:
                raise SdeflowTypeError(f"meta['path'] has the parameter {k!r}, which {name} does not take (it takes "
                                       f"{', '.join(takes) or 'no parameters'}); the metadata was edited or written "
                                       f"by another sdeflow version: fix the key or construct the path in code")
        build = lambda: cls(**params)  # noqa: E731
    try:
        path = build()
    except (TypeError, ValueError) as e:  # the constructor's own check of values that came from a file
        err = SdeflowTypeError if isinstance(e, TypeError) else SdeflowValueError
        raise err(f"meta['path'] = {name}(**{params!r}) cannot be rebuilt: {e}") from e
    if cls is P.DiscreteVP and "T" in params and params["T"] != path.T:
        raise SdeflowValueError(f"meta['path'] has the parameter T={params['T']!r}, which disagrees with the "
                                f"{path.T} stored betas; the metadata was edited: construct the path in code")
    return path


# ---- foreign weights -----------------------------------------------------------------------------------
def load_state_dict(path, *, device="cpu") -> dict[str, Tensor]:
    """Weights from a safetensors file or a ``torch.save`` checkpoint, loaded with
    ``torch.load(weights_only=True)``: a pickle that names anything but tensors and plain containers is
    refused (:class:`~sdeflow.errors.SdeflowValueError`), never executed.

    A safetensors file is checked as by :func:`load_tensors` (a damaged one is reported as such, not tried
    as a pickle); an sdeflow field checkpoint gives its ``state_dict``; an sdeflow grid, solution or shard is
    refused (it holds no weights).
    """
    file = _fspath(path)
    dev = _device(device)
    _check_file(file)
    with open(file, "rb") as fh:
        head = fh.read(16)
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: u64 header size then a JSON header
        tensors, meta, _ = _read(file, dev)
        kind = meta.get("kind")
        if kind == "field":
            return {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
        if kind is not None:
            use = _LOADERS.get(kind, "load_tensors") if isinstance(kind, str) else "load_tensors"
            raise SdeflowValueError(f"{file!r} holds an sdeflow {kind!r}, not weights; load the file with {use}")
        return tensors
    try:
        obj = torch.load(file, map_location=dev, weights_only=True)
    except MemoryError:
        raise
    except Exception as e:
        raise SdeflowValueError(f"{file!r} was refused: it is neither a safetensors file nor a weights-only "
                                f"torch checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
                                f"sdeflow never unpickles arbitrary objects") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not (isinstance(obj, Mapping) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())):
        raise SdeflowValueError(f"{file!r} does not hold a state_dict (a dict of name -> tensor); it holds a "
                                f"{type(obj).__name__}")
    return dict(obj)
