"""Conditioning: ``model_kwargs`` passed to the network on every call, and how they follow the batch.

``sample(path, field, ..., model_kwargs={"class_labels": y})`` calls the network as
``net(x, t, class_labels=y_rows)``, where ``y_rows`` are the rows of ``y`` that belong to the samples being
integrated: a **per-sample** argument is a tensor whose first dimension is the number of samples ``n``
(also inside dicts, lists and tuples); it is sliced with ``chunk_size`` and by
:func:`sdeflow.distributed.sample_sharded`, so sample ``i`` always sees its own condition. Every other
argument (numbers, strings, tensors of another first dimension) is passed unchanged to every call.
"""

from __future__ import annotations

import torch

from .errors import SdeflowTypeError

__all__ = ["check_model_kwargs", "rows"]


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


def rows(model_kwargs: dict | None, n: int, start: int, stop: int):
    """The arguments of samples ``start:stop`` of ``n``: per-sample tensors (first dimension ``n``) sliced,
    recursively through dicts, lists and tuples; everything else as given."""
    if model_kwargs is None or (start == 0 and stop == n):
        return model_kwargs

    def cut(v):
        if isinstance(v, torch.Tensor):
            return v[start:stop] if v.dim() >= 1 and v.shape[0] == n else v
        if isinstance(v, dict):
            return {k: cut(u) for k, u in v.items()}
        if isinstance(v, (list, tuple)) and not hasattr(v, "_fields"):
            return type(v)(cut(u) for u in v)
        return v

    return {k: cut(v) for k, v in model_kwargs.items()}


def has_per_sample(model_kwargs: dict | None, n: int) -> bool:
    """True if ``model_kwargs`` holds a per-sample tensor (first dimension ``n``), at any depth."""
    def per(v):
        if isinstance(v, torch.Tensor):
            return v.dim() >= 1 and v.shape[0] == n
        if isinstance(v, dict):
            return any(per(u) for u in v.values())
        if isinstance(v, (list, tuple)):
            return any(per(u) for u in v)
        return False

    return model_kwargs is not None and per(model_kwargs)
