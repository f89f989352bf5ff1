"""Solvers, one per module, found by name.

``get("heun")``, ``get(Heun)`` or ``get(Heun())`` give a solver instance; ``available()`` lists the names
with what each declares. Modules in this package (and its subpackages) are imported on first use, and
every :class:`~sdeflow.solvers.base.Solver` subclass with a ``name`` is registered: adding a solver is
adding a module.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..errors import SdeflowTypeError, SdeflowValueError, unknown_name
from .base import ODESolver, SDESolver, Solver

__all__ = ["Solver", "ODESolver", "SDESolver", "get", "available", "registry", "describe", "parse_spec"]

_REGISTRY: dict[str, type] = {}
_LOADED = False


def _load():
    global _LOADED
    if _LOADED:
        return
    for mod in pkgutil.walk_packages(__path__, prefix=__name__ + "."):
        if not mod.name.rsplit(".", 1)[-1].startswith("_"):
            importlib.import_module(mod.name)
    stack = [Solver]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            stack.append(sub)
            if sub.__dict__.get("name"):
                _REGISTRY.setdefault(sub.name, sub)
    _LOADED = True


def registry() -> dict[str, type]:
    """Name -> solver class, for every registered solver."""
    _load()
    return dict(_REGISTRY)


def available(*, sde: bool | None = None, needs: str | None = None, adaptive: bool | None = None,
              backends: bool = False) -> list[str]:
    """Registered solver names, filtered by what they declare.

    ``sde``: only SDE (True) or ODE (False) solvers; ``needs``: ``"drift"`` (usable from :func:`sdeflow.solve`)
    or ``"prediction"`` (exponential integrators, DDIM, DDPM: :func:`sdeflow.sample` only); ``adaptive``:
    only adaptive (True) or fixed-step (False) solvers. ``backends=True`` adds every torchdiffeq and torchsde
    method as ``"torchdiffeq:<method>"`` / ``"torchsde:<method>"``.
    """
    _load()
    out = []
    for n, c in _REGISTRY.items():
        if n.endswith(":"):
            if backends:
                out += [n + m for m in c.methods()]
            continue
        out.append(n)
    return sorted(n for n in out if _matches(n, sde, needs, adaptive))


def _matches(name: str, sde, needs, adaptive) -> bool:
    if sde is None and needs is None and adaptive is None:
        return True
    s = get(name)
    return ((sde is None or s.sde == sde) and (needs is None or s.needs == needs)
            and (adaptive is None or s.adaptive == adaptive))


def describe(name: str) -> dict:
    """The declarations of a solver: orders, evaluations per step, what it needs."""
    solver = get(name)
    keys = ("name", "order", "strong_order", "weak_order", "strong_order_additive", "weak_order_additive",
            "evals_per_step", "sde", "sde_type", "needs", "adaptive")
    return {k: getattr(solver, k) for k in keys}


def parse_spec(spec: str) -> tuple[str, dict]:
    """``"unipc(order=3)" -> ("unipc", {"order": 3})``: a name with options as the benchmark rows label them
    (``name(key=value)...``, one option per parenthesis, values Python literals or bare words); a plain name has
    no options."""
    import ast
    import re

    m = re.fullmatch(r"\s*([\w:.-]+)\s*((?:\(\s*\w+\s*=[^()]*\))*)\s*", spec)
    if m is None:
        raise SdeflowValueError(f"cannot read the solver {spec!r}: write a name, optionally with options as "
                                f"name(key=value), e.g. 'unipc(order=3)'")
    options = {}
    for key, value in re.findall(r"\(\s*(\w+)\s*=([^()]*)\)", m.group(2)):
        if "," in value or not value.strip():
            raise SdeflowValueError(f"cannot read the solver {spec!r}: one option per parenthesis, each with a "
                                    f"value, e.g. 'unipc(order=3)(variant=bh1)'")
        try:
            options[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            options[key] = value.strip()  # a bare word: a string option (variant=bh1)
    return m.group(1), options


def get(solver, **options) -> Solver:
    """A solver instance from a name, a class or an instance (``options`` go to the constructor). A name may
    carry options, ``"unipc(order=3)"`` (:func:`parse_spec`); ``options`` given here override them."""
    if isinstance(solver, str) and "(" in solver:
        name, spec_options = parse_spec(solver)
        return get(name, **{**spec_options, **options})
    if isinstance(solver, Solver):
        if options:
            raise SdeflowTypeError("solver options can only be given with a solver name or class")
        return solver
    if isinstance(solver, type) and issubclass(solver, Solver):
        return solver(**options)
    if isinstance(solver, str):
        _load()
        if ":" in solver:  # backend methods, e.g. "torchdiffeq:dopri5"
            backend, method = solver.split(":", 1)
            key = backend + ":"
            if key in _REGISTRY:
                return _REGISTRY[key](method, **options)
            raise unknown_name("solver backend", backend, [k[:-1] for k in _REGISTRY if k.endswith(":")])
        if solver not in _REGISTRY:
            raise unknown_name("solver", solver, [k for k in _REGISTRY if not k.endswith(":")])
        return _REGISTRY[solver](**options)
    raise SdeflowTypeError(f"solver must be a name (e.g. 'heun'), a Solver class or instance; got "
                           f"{type(solver).__name__}")
