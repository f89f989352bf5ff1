"""Conditioning: ``model_kwargs`` passed to the network on every call, and how they follow the batch.

``sample(path, field, ..., model_kwargs={"class_labels": y})`` calls the network as
``net(x, t, class_labels=y_rows)``, where ``y_rows`` are the rows of ``y`` that belong to the samples being
evaluated: a **per-sample** argument is a tensor whose first dimension is the number of samples ``n``
(also inside dicts, lists, tuples and named tuples). One function restricts them to rows, :func:`select`: a
block of samples (``chunk_size``, the ranks of :func:`sdeflow.distributed.sample_sharded`; :func:`rows`) or
any rows in any order (the rows a per-sample adaptive solver, ``dopri5`` or ``adaptive_heun_sde`` with
``PerSampleNoise``, still integrates: :attr:`sdeflow.terms.Term.rows`), so sample ``i`` always sees its own
condition. Every other argument (numbers, strings, tensors of another first dimension) is passed unchanged to
every call.
"""

from __future__ import annotations

from typing import Callable

import torch

from .errors import SdeflowTypeError

__all__ = ["check_model_kwargs", "rows", "select", "has_per_sample", "mismatched"]


def check_model_kwargs(model_kwargs) -> dict | None:
    """``model_kwargs`` as a dict (None or empty: None); refuse anything else by name."""
    if model_kwargs is None:
        return None
    if not isinstance(model_kwargs, dict):
        raise SdeflowTypeError(f"model_kwargs must be a dict of keyword arguments for the network (e.g. "
                               f"{{'class_labels': y}}), got {type(model_kwargs).__name__}")
    bad = [k for k in model_kwargs if not isinstance(k, str)]
    if bad:
        raise SdeflowTypeError(f"model_kwargs keys must be argument names (strings), got {bad[0]!r}")
    return dict(model_kwargs) or None


def _per_sample(v, n: int) -> bool:
    return isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == n


def _map(v, n: int, cut: Callable):
    """``v`` with ``cut`` applied to every per-sample tensor in it, through dicts, lists, tuples and named tuples."""
    if isinstance(v, torch.Tensor):
        return cut(v) if _per_sample(v, n) else v
    if isinstance(v, dict):
        return {k: _map(u, n, cut) for k, u in v.items()}
    if isinstance(v, tuple) and hasattr(v, "_make"):  # a named tuple
        return v._make(_map(u, n, cut) for u in v)
    if isinstance(v, (list, tuple)):
        return type(v)(_map(u, n, cut) for u in v)
    return v


def select(model_kwargs: dict | None, n: int, index) -> dict | None:
    """The arguments of the samples ``index`` of ``n``: a ``slice`` (a block of samples, in order) or an int64
    tensor of sample indices (``index_select``: any rows, in that order; moved to each argument's device).
    Per-sample tensors (first dimension ``n``) are restricted; everything else is passed as given."""
    if model_kwargs is None:
        return None
    if isinstance(index, slice):
        return _map(model_kwargs, n, lambda v: v[index])
    return _map(model_kwargs, n, lambda v: v.index_select(0, index.to(v.device)))


def rows(model_kwargs: dict | None, n: int, start: int, stop: int):
    """The arguments of samples ``start:stop`` of ``n`` (:func:`select` on a block; all ``n``: as given)."""
    if model_kwargs is None or (start == 0 and stop == n):
        return model_kwargs
    return select(model_kwargs, n, slice(start, stop))


def has_per_sample(model_kwargs: dict | None, n: int) -> bool:
    """True if ``model_kwargs`` holds a per-sample tensor (first dimension ``n``), at any depth."""
    found = []
    if model_kwargs is not None:
        _map(model_kwargs, n, lambda v: found.append(v))
    return bool(found)


def mismatched(model_kwargs: dict | None, n: int) -> list[str]:
    """The names (``"key"`` or ``"key[i]"`` paths) of tensors in ``model_kwargs`` with at least one dimension whose
    first dimension is neither ``n`` nor 1: passed unchanged to every call, which a network that reads one row
    per sample cannot use (named in the note added to the network's error)."""
    out = []

    def walk(v, name):
        if isinstance(v, torch.Tensor):
            if v.dim() >= 1 and v.shape[0] not in (n, 1):
                out.append(f"{name} (shape {tuple(v.shape)})")
        elif isinstance(v, dict):
            for k, u in v.items():
                walk(u, f"{name}[{k!r}]")
        elif isinstance(v, (list, tuple)):
            for i, u in enumerate(v):
                walk(u, f"{name}[{i}]")

    for k, v in (model_kwargs or {}).items():
        walk(v, f"model_kwargs[{k!r}]")
    return out
