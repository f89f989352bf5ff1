r"""Safe persistence: grids, solutions and field checkpoints as safetensors files with JSON metadata.

Nothing here ever unpickles: tensors are stored with safetensors (https://huggingface.co/docs/safetensors)
(a flat table of raw buffers plus a JSON header), and metadata is JSON. A file that is not a safetensors
file (a pickle, a ``torch.save`` archive, a truncated download) is refused with
:class:`~sdeflow.errors.SdeflowValueError` before any of its content is interpreted. The one exception,
:func:`load_state_dict`, also reads ``torch.save`` checkpoints of other libraries, through
``torch.load(weights_only=True)`` (PyTorch's restricted unpickler: tensors and plain containers only).

The small API (stable; :mod:`sdeflow.distributed` writes per-rank shards with it):

* :func:`save_tensors` / :func:`load_tensors` — ``dict[str, Tensor]`` plus a JSON-able ``metadata`` dict;
* :func:`save_grid` / :func:`load_grid` — a time grid (float64, validated on load);
* :func:`save_solution` / :func:`load_solution` — a :class:`~sdeflow.solution.Solution` (``x``, ``ts``,
  ``trajectory``, ``nfe``, ``stats``);
* :func:`save_field` / :func:`load_field_state` — a field's network ``state_dict`` plus what it predicts and
  the path it was trained on (:func:`path_from_metadata` rebuilds the built-in paths).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import numpy as np
import torch

from .errors import SdeflowTypeError, SdeflowValueError

__all__ = ["save_tensors", "load_tensors", "save_grid", "load_grid", "save_solution", "load_solution",
           "save_field", "load_field_state", "load_state_dict", "path_from_metadata", "FORMAT_VERSION"]

Tensor = torch.Tensor
FORMAT_VERSION = 1
_META_KEY = "sdeflow"  # the safetensors header holds {_META_KEY: json.dumps(metadata)}


# ---- JSON ------------------------------------------------------------------------------------------
def _jsonable(v):
    """Plain JSON values for metadata: numpy/torch scalars become numbers, small tensors lists; anything
    else is refused (metadata must round-trip)."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else repr(f)  # JSON has no NaN/Inf; stored as "nan"/"inf"
    if isinstance(v, Tensor) and v.numel() <= 64:
        return _jsonable(v.detach().cpu().tolist())
    if isinstance(v, np.ndarray) and v.size <= 64:
        return _jsonable(v.tolist())
    if isinstance(v, Mapping):
        return {str(k): _jsonable(u) for k, u in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(u) for u in v]
    if isinstance(v, torch.dtype):
        return str(v)
    raise SdeflowTypeError(f"metadata value {v!r} of type {type(v).__name__} is not JSON-serialisable; "
                           f"store numbers, strings, lists or dicts (or tensors in the tensor dict)")


def _fspath(path) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise SdeflowTypeError(f"path must be a file name (str or os.PathLike), got {type(path).__name__}")
    return os.fspath(path)


# ---- tensors ---------------------------------------------------------------------------------------
def save_tensors(path, tensors: Mapping[str, Tensor], metadata: Mapping[str, Any] | None = None) -> None:
    """Write ``tensors`` (names -> tensors, any device: stored from CPU copies) and JSON ``metadata``."""
    from safetensors.torch import save_file

    path = _fspath(path)
    if not isinstance(tensors, Mapping):
        raise SdeflowTypeError(f"tensors must be a dict of name -> torch.Tensor, got {type(tensors).__name__}")
    out, seen = {}, set()
    for k, v in tensors.items():
        if not isinstance(k, str):
            raise SdeflowTypeError(f"tensor names must be strings, got {k!r}")
        if not isinstance(v, Tensor):
            raise SdeflowTypeError(f"tensors[{k!r}] must be a torch.Tensor, got {type(v).__name__}")
        v = v.detach().to("cpu").contiguous()
        if v.numel() and v.data_ptr() in seen:  # safetensors refuses shared storage (tied weights)
            v = v.clone()
        seen.add(v.data_ptr())
        out[k] = v
    meta = {"format_version": FORMAT_VERSION}
    meta.update(_jsonable(dict(metadata or {})))
    save_file(out, path, metadata={_META_KEY: json.dumps(meta)})


def load_tensors(path, *, device="cpu") -> tuple[dict[str, Tensor], dict]:
    """Read a file written by :func:`save_tensors`: ``(tensors, metadata)``. Never unpickles; anything
    but a safetensors file raises :class:`~sdeflow.errors.SdeflowValueError`."""
    from safetensors import safe_open

    path = _fspath(path)
    if not os.path.isfile(path):
        raise SdeflowValueError(f"no file at {path!r}")
    try:
        with safe_open(path, framework="pt", device=str(device)) as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for malformed headers
        raise SdeflowValueError(f"{path!r} is not a safetensors file ({type(e).__name__}: {e}); sdeflow loads "
                                f"only safetensors files and never unpickles. If this is a torch.save "
                                f"checkpoint of weights, use sdeflow.io.load_state_dict") from None
    try:
        meta = json.loads(header.get(_META_KEY, "{}"))
    except json.JSONDecodeError as e:
        raise SdeflowValueError(f"{path!r} has malformed sdeflow metadata: {e}") from None
    return tensors, meta


def _expect(meta: dict, kind: str, path: str) -> None:
    if meta.get("kind") != kind:
        raise SdeflowValueError(f"{path!r} holds {meta.get('kind', 'plain tensors')!r}, not a {kind}; load it "
                                f"with the matching sdeflow.io function (or load_tensors)")


# ---- grids -----------------------------------------------------------------------------------------
def save_grid(path, grid, metadata: Mapping[str, Any] | None = None) -> None:
    """Save a monotone time grid (stored float64)."""
    from .grids import check_grid

    g = check_grid(grid, "grid", decreasing=None, unit=False)
    save_tensors(path, {"grid": g}, {**dict(metadata or {}), "kind": "grid"})


def load_grid(path) -> Tensor:
    """The float64 grid saved by :func:`save_grid` (validated again: 1-D, finite, strictly monotone)."""
    from .grids import check_grid

    tensors, meta = load_tensors(path)
    _expect(meta, "grid", _fspath(path))
    return check_grid(tensors["grid"], "grid", decreasing=None, unit=False)


# ---- solutions -------------------------------------------------------------------------------------
def save_solution(path, solution, metadata: Mapping[str, Any] | None = None) -> None:
    """Save a :class:`~sdeflow.solution.Solution`: tensors ``x``, ``ts``, ``trajectory``; ``nfe`` and
    ``stats`` as JSON (stats values must be JSON-able: numbers, strings, lists, dicts)."""
    from .solution import Solution

    if not isinstance(solution, Solution):
        raise SdeflowTypeError(f"solution must be an sdeflow Solution, got {type(solution).__name__}")
    tensors = {"x": solution.x, "ts": solution.ts}
    if solution.trajectory is not None:
        tensors["trajectory"] = solution.trajectory
    meta = {**dict(metadata or {}), "kind": "solution", "nfe": int(solution.nfe), "stats": solution.stats}
    save_tensors(path, tensors, meta)


def load_solution(path, *, device="cpu"):
    """The :class:`~sdeflow.solution.Solution` saved by :func:`save_solution`."""
    from .solution import Solution

    tensors, meta = load_tensors(path, device=device)
    _expect(meta, "solution", _fspath(path))
    return Solution(x=tensors["x"], ts=tensors["ts"], trajectory=tensors.get("trajectory"),
                    nfe=int(meta.get("nfe", 0)), stats=dict(meta.get("stats", {})))


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


def save_field(path, field, *, sde_path=None, metadata: Mapping[str, Any] | None = None) -> None:
    """Save a field's network weights (``state_dict``) with what it predicts and the path it was trained
    on (``sde_path``: a :class:`~sdeflow.paths.GaussianPath`; its class and parameters go to the metadata,
    a :class:`~sdeflow.paths.DiscreteVP`'s betas to the tensors)."""
    from .paths import DiscreteVP, GaussianPath

    module = _module_of(field)
    tensors = {f"state.{k}": v for k, v in module.state_dict().items()}
    meta = {**dict(metadata or {}), "kind": "field", "field_class": type(field).__name__,
            "field_kind": getattr(field, "kind", None), "flip_time": bool(getattr(field, "flip_time", False)),
            "module_class": type(module).__name__}
    if sde_path is not None:
        if not isinstance(sde_path, GaussianPath):
            raise SdeflowTypeError(f"sde_path must be a GaussianPath, got {type(sde_path).__name__}")
        meta["path"] = {"class": type(sde_path).__name__, "params": sde_path._params(), "repr": repr(sde_path)}
        if isinstance(sde_path, DiscreteVP):
            tensors["path.betas"] = sde_path.betas
    save_tensors(path, tensors, meta)


def load_field_state(path, *, device="cpu") -> tuple[dict[str, Tensor], dict]:
    """``(state_dict, metadata)`` of a checkpoint written by :func:`save_field`; load the weights with
    ``net.load_state_dict(state_dict)`` and rebuild the path with :func:`path_from_metadata`."""
    tensors, meta = load_tensors(path, device=device)
    _expect(meta, "field", _fspath(path))
    state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    if "path.betas" in tensors and "path" in meta:
        meta["path"]["betas"] = tensors["path.betas"]
    return state, meta


def path_from_metadata(meta: Mapping[str, Any]):
    """Rebuild the built-in :class:`~sdeflow.paths.GaussianPath` recorded by :func:`save_field`."""
    from . import paths as P

    info = meta.get("path") if isinstance(meta, Mapping) else None
    if not info:
        raise SdeflowValueError("the metadata records no path; save the field with save_field(..., sde_path=)")
    cls, params = info["class"], dict(info.get("params", {}))
    if cls == "DiscreteVP":
        return P.DiscreteVP(info["betas"])
    if cls == "AffinePath" or cls not in P.__all__:
        raise SdeflowValueError(f"path {info.get('repr', cls)} cannot be rebuilt from metadata (user functions "
                                f"are not stored); construct it again in code")
    return getattr(P, cls)(**params)


def load_state_dict(path, *, device="cpu") -> dict[str, Tensor]:
    """Weights from a safetensors file or a ``torch.save`` checkpoint, loaded with
    ``torch.load(weights_only=True)``: a pickle that names anything but tensors and plain containers is
    refused (:class:`~sdeflow.errors.SdeflowValueError`), never executed."""
    path = _fspath(path)
    with open(path, "rb") as fh:
        head = fh.read(16)
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: u64 header size then a JSON header
        try:
            tensors, meta = load_tensors(path, device=device)
        except SdeflowValueError:
            pass
        else:
            if meta.get("kind") == "field":
                return {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
            return tensors
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise SdeflowValueError(f"{path!r} was refused: it is neither a safetensors file nor a weights-only "
                                f"torch checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
                                f"sdeflow never unpickles arbitrary objects") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not (isinstance(obj, Mapping) and all(isinstance(v, Tensor) for v in obj.values())):
        raise SdeflowValueError(f"{path!r} does not hold a state_dict (a dict of name -> tensor)")
    return dict(obj)
