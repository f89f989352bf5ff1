"""Hypothesis strategies for sdeflow objects: targets, paths, time grids, fields and solvers.

Every function returns a ``hypothesis`` strategy; hypothesis is imported when one is called (it is a test
dependency: ``import sdeflow`` never needs it). Example::

    from hypothesis import given
    from sdeflow.testing import strategies as sst

    @given(target=sst.gaussians(max_dim=4), path=sst.paths(), solver=sst.solvers(sde=False, adaptive=False))
    def test_my_property(target, path, solver): ...

Parameters are drawn from ranges where every path is well posed (log-SNR strictly decreasing, finite
coefficients on ``[0, 1]``) and targets are well conditioned (standard deviations in ``[0.2, 2]``).
"""

from __future__ import annotations

import math

import torch

__all__ = ["gaussians", "mixtures", "targets", "paths", "vp_paths", "subvp_paths", "ve_paths", "cosine_paths",
           "affine_paths", "time_grids", "fields", "solvers", "PATH_KINDS"]

PATH_KINDS = ("vp", "subvp", "cosine", "ve", "linear", "affine")


def _st():
    try:
        from hypothesis import strategies as st
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("sdeflow.testing.strategies needs hypothesis: pip install hypothesis") from e
    return st


def _floats(lo, hi):
    return _st().floats(lo, hi, allow_nan=False, allow_infinity=False)


def _vectors(d, lo, hi):
    return _st().lists(_floats(lo, hi), min_size=d, max_size=d)


def gaussians(min_dim: int = 1, max_dim: int = 8, *, mean_bound: float = 2.0, std_range=(0.2, 2.0)):
    """:class:`sdeflow.Gaussian` targets ``N(mu, diag(c))`` of dimension in ``[min_dim, max_dim]``."""
    from ..analytic import Gaussian

    st = _st()

    @st.composite
    def build(draw):
        d = draw(st.integers(min_dim, max_dim))
        mu = draw(_vectors(d, -mean_bound, mean_bound))
        std = draw(_vectors(d, *std_range))
        return Gaussian(mu, torch.tensor(std, dtype=torch.float64) ** 2)
    return build()


def mixtures(min_dim: int = 1, max_dim: int = 8, *, max_components: int = 4, mean_bound: float = 3.0,
             std_range=(0.2, 2.0), isotropic: bool = False):
    """:class:`sdeflow.GaussianMixture` targets with 1..``max_components`` components (weights >= 0.05,
    diagonal or, with ``isotropic``, per-component isotropic standard deviations)."""
    from ..analytic import GaussianMixture

    st = _st()

    @st.composite
    def build(draw):
        d = draw(st.integers(min_dim, max_dim))
        k = draw(st.integers(1, max_components))
        w = draw(_vectors(k, 0.05, 1.0))
        means = [draw(_vectors(d, -mean_bound, mean_bound)) for _ in range(k)]
        stds = draw(_vectors(k, *std_range)) if isotropic else [draw(_vectors(d, *std_range)) for _ in range(k)]
        return GaussianMixture(w, means, stds)
    return build()


def targets(min_dim: int = 1, max_dim: int = 8):
    """A Gaussian or a mixture."""
    return _st().one_of(gaussians(min_dim, max_dim), mixtures(min_dim, max_dim))


def vp_paths(beta_min=(0.01, 1.0), beta_max=(5.0, 25.0)):
    """:class:`sdeflow.VP` with ``beta_min`` and ``beta_max`` drawn from the given ranges."""
    from ..paths import VP

    return _st().builds(VP, _floats(*beta_min), _floats(*beta_max))


def subvp_paths(beta_min=(0.01, 1.0), beta_max=(5.0, 25.0)):
    """:class:`sdeflow.SubVP` with ``beta_min`` and ``beta_max`` drawn from the given ranges."""
    from ..paths import SubVP

    return _st().builds(SubVP, _floats(*beta_min), _floats(*beta_max))


def ve_paths(sigma_min=(0.005, 0.1), sigma_max=(5.0, 80.0)):
    """:class:`sdeflow.VE` with ``sigma_min`` and ``sigma_max`` drawn from the given ranges."""
    from ..paths import VE

    return _st().builds(VE, _floats(*sigma_min), _floats(*sigma_max))


def cosine_paths(s=(0.001, 0.05)):
    """:class:`sdeflow.CosineVP` with offset ``s`` drawn from the range."""
    from ..paths import CosineVP

    return _st().builds(CosineVP, _floats(*s))


def affine_paths(power=(0.5, 2.0)):
    r""":class:`sdeflow.AffinePath` with :math:`\alpha = 1 - t`, :math:`\sigma = t^p` (``p`` drawn from
    ``power``), with closed-form derivatives (:math:`p = 1` is the linear flow)."""
    from ..paths import AffinePath

    st = _st()

    def make(p):
        return AffinePath(lambda t: 1 - t, lambda t: t ** p, lambda t: -torch.ones_like(t),
                          lambda t: p * t ** (p - 1), name=f"AffinePath(1 - t, t^{p:.3g})")
    return st.builds(make, _floats(*power))


def paths(kinds=PATH_KINDS):
    """Any of the path families in ``kinds`` (``"vp"``, ``"subvp"``, ``"cosine"``, ``"ve"``, ``"linear"``,
    ``"affine"``) with random parameters. Paths whose ``alpha(1) = 0`` (cosine, linear, affine) have an
    infinite log-SNR at ``t = 1``: integrate from ``t_max < 1`` there, or use velocity/data fields."""
    from ..errors import unknown_name
    from ..paths import LinearFlow

    st = _st()
    table = {"vp": vp_paths, "subvp": subvp_paths, "cosine": cosine_paths, "ve": ve_paths,
             "linear": lambda: st.just(LinearFlow()), "affine": affine_paths}
    for k in kinds:
        if k not in table:
            raise unknown_name("path kind", k, table)
    return st.one_of(*(table[k]() for k in kinds))


def time_grids(min_steps: int = 1, max_steps: int = 32, *, t_max: float = 1.0, t_min: float = 1e-2,
               min_ratio: float = 0.05):
    """Strictly decreasing time grids from ``t_max`` to ``t_min`` (sdeflow's sampling direction) with
    ``min_steps..max_steps`` steps; no step is shorter than ``min_ratio`` times the uniform step, so a grid
    never holds repeated or nearly repeated times. Returned as a list of floats."""
    st = _st()
    if not (0.0 <= t_min < t_max <= 1.0):
        from ..errors import SdeflowValueError
        raise SdeflowValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")

    @st.composite
    def build(draw):
        n = draw(st.integers(min_steps, max_steps))
        w = draw(_vectors(n, min_ratio, 1.0))
        total = sum(w)
        out, acc = [t_max], 0.0
        for wi in w[:-1]:
            acc += wi / total
            out.append(t_max - (t_max - t_min) * acc)
        out.append(t_min)
        return out
    return build()


def fields(target, kinds=("score", "noise", "data", "velocity"), *, max_perturbation: float = 0.0):
    """Fields of ``target`` (a target, or a strategy of targets): its exact field of a drawn kind, or, when
    ``max_perturbation > 0``, possibly that field plus a smooth perturbation of sup norm at most
    ``max_perturbation`` (:class:`~sdeflow.testing.fields.PerturbedField`)."""
    from .fields import PerturbedField

    st = _st()
    tstrat = target if isinstance(target, st.SearchStrategy) else st.just(target)

    @st.composite
    def build(draw):
        tg = draw(tstrat)
        f = tg.field(draw(st.sampled_from(list(kinds))))
        if max_perturbation > 0 and draw(st.booleans()):
            f = PerturbedField(f, draw(_floats(0.0, max_perturbation)), draw(_floats(0.5, 3.0)),
                               draw(_floats(0.0, 2 * math.pi)), draw(_floats(0.0, 3.0)))
        return f
    return build()


def solvers(*, sde: bool | None = None, adaptive: bool | None = None, needs: str | None = None,
            exclude=(), instances: bool = False):
    """Names of registered solvers (:func:`sdeflow.solvers.available` with the same filters), minus
    ``exclude``; ``instances=True`` gives solver instances instead."""
    from .. import solvers as _solvers

    names = [n for n in _solvers.available(sde=sde, adaptive=adaptive, needs=needs) if n not in exclude]
    if not names:
        from ..errors import SdeflowValueError
        raise SdeflowValueError(f"no registered solver matches sde={sde}, adaptive={adaptive}, needs={needs}")
    st = _st().sampled_from(names)
    return st.map(_solvers.get) if instances else st
