r"""Fields: a network wrapped with *what it predicts*.

=================  ===========================================  ==========================
class              the network returns                          kind
=================  ===========================================  ==========================
:class:`ScoreField`     :math:`\nabla_x\log p_t(x)`             ``"score"``
:class:`NoiseField`     :math:`\varepsilon` (DDPM's eps)        ``"noise"``
:class:`DataField`      :math:`x_0` (the denoiser)              ``"data"``
:class:`VelocityField`  :math:`v = \alpha' x_0 + \sigma'\varepsilon` (probability-flow drift)  ``"velocity"``
:class:`VPredictionField`  :math:`\alpha\varepsilon - \sigma x_0` (Salimans & Ho's v)  ``"v"``
:class:`ConsistencyField`  a consistency function: the probability-flow endpoint  ``"data"``
:class:`EnergyField`    a scalar energy :math:`E(x, t)`, score :math:`-\nabla_x E`  ``"score"``
=================  ===========================================  ==========================

Given a path, every field answers as every kind: ``field.score(x, t, path)``, ``.noise``, ``.data``,
``.velocity`` (formulas in :mod:`sdeflow.conversions`). Fields add and scale: ``w1 * f1 + w2 * f2`` is a
:class:`SumField`, and :func:`classifier_free_guidance` builds :math:`(1+w)f_c - w f_u`.

Clipping and dynamic thresholding of the implied data prediction (``clip_data=``, ``thresholding=`` on a
network's field, or :class:`ClippedField` around any field, e.g. a guided one) return the native
prediction consistent with the transformed :math:`\hat x_0` at the same ``x``.

A network is any callable ``net(x, t)`` with ``x`` of shape ``(batch, *event)`` and ``t`` of shape
``(batch,)``; see :mod:`sdeflow.adapters` for networks that expect other time inputs.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from .adapters import FlipTime
from .conversions import check_kind, conversion
from .errors import InputMutationError, SdeflowTypeError, SdeflowValueError
from .paths import GaussianPath, bcast

__all__ = [
    "Field",
    "NetField",
    "ScoreField",
    "NoiseField",
    "DataField",
    "VelocityField",
    "VPredictionField",
    "ConsistencyField",
    "EnergyField",
    "ClippedField",
    "DynamicThresholding",
    "SumField",
    "classifier_free_guidance",
    "GuidedField",
    "doubled_kwargs",
    "FlowScoreField",
    "batch_time",
]

Tensor = torch.Tensor


def batch_time(t, x: Tensor) -> Tensor:
    """``t`` as a ``(batch,)`` tensor in ``x``'s dtype and device (numbers and 0-d tensors expand)."""
    n = x.shape[0]
    if isinstance(t, Tensor):
        if t.dim() == 0:
            return t.to(dtype=x.dtype, device=x.device).expand(n)
        if t.shape != (n,):
            raise SdeflowValueError(f"t must be a number or a (batch,) tensor with batch={n}, got shape "
                                    f"{tuple(t.shape)}")
        return t.to(dtype=x.dtype, device=x.device)
    return torch.full((n,), float(t), dtype=x.dtype, device=x.device)


def _as_kind(field, kind: str, x: Tensor, t, path, model_kwargs: dict | None) -> Tensor:
    """``field.as_kind`` with ``model_kwargs`` only when there are any (a custom field may override the
    four-argument form)."""
    if not model_kwargs:
        return field.as_kind(kind, x, t, path)
    return field.as_kind(kind, x, t, path, model_kwargs)


def _predict(field, x: Tensor, t, path, model_kwargs: dict | None) -> Tensor:
    """``field.predict`` with ``model_kwargs`` only when there are any (fields without conditioning keep the
    three-argument ``predict``)."""
    if not model_kwargs:
        return field.predict(x, t, path)
    if not field.takes_model_kwargs:
        raise SdeflowTypeError(f"{type(field).__name__} does not take model_kwargs (it has no network to pass "
                               f"them to); condition a NetField (NoiseField(net), ...) whose net accepts them")
    return field.predict(x, t, path, model_kwargs=model_kwargs)


class Field:
    """Base class. Subclasses set ``kind`` and implement :meth:`predict` (the native prediction)."""

    kind: str = "score"
    #: whether the field passes ``model_kwargs`` (conditioning: class labels, text embeddings, ...) to its
    #: network(s) as keyword arguments: ``predict(..., model_kwargs=)`` and ``bind(path, model_kwargs)``
    takes_model_kwargs: bool = False
    #: whether the field is a consistency function (its data prediction is the probability-flow endpoint, exact
    #: along every trajectory; :class:`ConsistencyField`): what the ``"consistency"`` sampler requires
    consistency: bool = False

    # ---- the native prediction ----------------------------------------------------------------
    def predict(self, x: Tensor, t, path: GaussianPath) -> Tensor:
        """The field's own prediction (of kind ``self.kind``) at ``(x, t)``. Fields that take conditioning
        also accept ``model_kwargs=`` (a dict passed to the network as keyword arguments)."""
        raise NotImplementedError

    def bind(self, path: GaussianPath, model_kwargs: dict | None = None) -> Callable[[Tensor, Tensor], Tensor]:
        """A fast callable ``(x, t_batch) -> native prediction`` for the samplers' inner loops
        (``model_kwargs``: conditioning passed to the network on every call, for fields that take it)."""
        if model_kwargs:
            return lambda x, t: self.predict(x, t, path, model_kwargs=model_kwargs)
        return lambda x, t: self.predict(x, t, path)

    def validate_times(self, times: np.ndarray) -> None:
        """Raise if the network cannot be evaluated at ``times`` (checked once, before sampling)."""

    # ---- every kind ---------------------------------------------------------------------------
    def as_kind(self, kind: str, x: Tensor, t, path: GaussianPath, model_kwargs: dict | None = None) -> Tensor:
        """The prediction converted to ``kind`` (``"score"``, ``"noise"``, ``"data"``, ``"velocity"``, ``"v"``)."""
        check_kind(kind)
        tb = batch_time(t, x)
        n = _predict(self, x, tb, path, model_kwargs)
        if kind == self.kind:
            return n
        P, Q = conversion(self.kind, kind, *path.coefficients(tb))
        return bcast(P, x) * x + bcast(Q, x) * n

    def score(self, x, t, path, model_kwargs=None):
        return self.as_kind("score", x, t, path, model_kwargs)

    def noise(self, x, t, path, model_kwargs=None):
        return self.as_kind("noise", x, t, path, model_kwargs)

    def data(self, x, t, path, model_kwargs=None):
        return self.as_kind("data", x, t, path, model_kwargs)

    def velocity(self, x, t, path, model_kwargs=None):
        return self.as_kind("velocity", x, t, path, model_kwargs)

    # ---- algebra ------------------------------------------------------------------------------
    def _terms(self) -> list[tuple[float, "Field"]]:
        return [(1.0, self)]

    def __mul__(self, w):
        if not isinstance(w, (int, float)):
            return NotImplemented
        return SumField([(float(w) * c, f) for c, f in self._terms()])

    __rmul__ = __mul__

    def __neg__(self):
        return self * -1.0

    def __add__(self, other):
        if not isinstance(other, Field):
            return NotImplemented
        return SumField(self._terms() + other._terms())

    def __sub__(self, other):
        if not isinstance(other, Field):
            return NotImplemented
        return self + (-other)


class NetField(Field):
    r"""A network predicting ``kind``. ``flip_time=True`` adapts a network trained with ``t = 0`` at the
    noise end (see :class:`sdeflow.adapters.FlipTime`; velocities change sign). ``dtype`` (e.g.
    ``torch.float16``/``torch.bfloat16``) is the network's own dtype: its inputs ``x`` and ``t`` are cast to
    it, its outputs back to the solver state's (which stays float32 or float64).

    ``clip_data=(lo, hi)`` (or ``c`` for ``(-c, c)``) clamps the implied data prediction :math:`\hat x_0`;
    ``thresholding=True`` (or a :class:`DynamicThresholding`) applies Imagen's dynamic thresholding to it.
    Either way the field returns the native prediction consistent with the transformed :math:`\hat x_0`
    (see :class:`ClippedField`, which does the same around any field).

    Conditioning: ``sample(..., model_kwargs={"class_labels": y})`` calls ``net(x, t, class_labels=y)``
    (per-sample tensors sliced to the rows being integrated)."""

    takes_model_kwargs = True

    def __init__(self, net: Callable, kind: str, *, flip_time: bool = False, dtype: torch.dtype | None = None,
                 clip_data=None, thresholding=None):
        if not callable(net):
            raise SdeflowTypeError(f"net must be callable as net(x, t), got {type(net).__name__}")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise SdeflowTypeError(f"dtype must be a floating torch.dtype (the network's), got {dtype!r}")
        self.kind = check_kind(kind)
        self.flip_time = bool(flip_time)
        self.dtype = dtype
        self.net = FlipTime(net, negate=(kind == "velocity")) if flip_time else net
        self._fn = self.net if dtype is None else self._cast
        self.transform = data_transform(clip_data, thresholding)

    def _cast(self, x, t, **model_kwargs):
        out = self.net(x.to(self.dtype), t.to(self.dtype), **model_kwargs)
        return out.to(x.dtype) if isinstance(out, torch.Tensor) else out

    def predict(self, x, t, path, model_kwargs: dict | None = None):
        tb = batch_time(t, x)
        n = self._fn(x, tb, **model_kwargs) if model_kwargs else self._fn(x, tb)
        return n if self.transform is None else transform_native(self.kind, self.transform, x, tb, n, path)

    def bind(self, path, model_kwargs: dict | None = None):
        fn = self._fn
        if model_kwargs:
            net, kw = self._fn, dict(model_kwargs)

            def fn(x, t):
                return net(x, t, **kw)
        if self.transform is None:
            return fn
        kind, tr = self.kind, self.transform
        return lambda x, t: transform_native(kind, tr, x, t, fn(x, t), path)

    def validate_times(self, times):
        inner = getattr(self.net, "validate_times", None)
        if inner is not None:
            inner(times)

    def __repr__(self):
        extra = "" if self.transform is None else f", {self.transform!r}"
        return f"{type(self).__name__}({self.net!r}{extra})"


class ScoreField(NetField):
    r"""``net(x, t)`` predicts the score :math:`\nabla_x \log p_t(x)`."""

    def __init__(self, net, *, flip_time: bool = False, dtype: torch.dtype | None = None, clip_data=None,
                 thresholding=None):
        super().__init__(net, "score", flip_time=flip_time, dtype=dtype, clip_data=clip_data,
                         thresholding=thresholding)


class NoiseField(NetField):
    r"""``net(x, t)`` predicts the noise :math:`\varepsilon` (DDPM's epsilon)."""

    def __init__(self, net, *, flip_time: bool = False, dtype: torch.dtype | None = None, clip_data=None,
                 thresholding=None):
        super().__init__(net, "noise", flip_time=flip_time, dtype=dtype, clip_data=clip_data,
                         thresholding=thresholding)


class DataField(NetField):
    r"""``net(x, t)`` predicts the clean data :math:`x_0` (a denoiser)."""

    def __init__(self, net, *, flip_time: bool = False, dtype: torch.dtype | None = None, clip_data=None,
                 thresholding=None):
        super().__init__(net, "data", flip_time=flip_time, dtype=dtype, clip_data=clip_data,
                         thresholding=thresholding)


class VelocityField(NetField):
    r"""``net(x, t)`` predicts the probability-flow velocity :math:`dx/dt` (flow matching)."""

    def __init__(self, net, *, flip_time: bool = False, dtype: torch.dtype | None = None, clip_data=None,
                 thresholding=None):
        super().__init__(net, "velocity", flip_time=flip_time, dtype=dtype, clip_data=clip_data,
                         thresholding=thresholding)


class VPredictionField(NetField):
    r"""``net(x, t)`` predicts Salimans & Ho's (2022) :math:`v = \alpha\varepsilon - \sigma x_0` (diffusers'
    ``prediction_type="v_prediction"``; kind ``"v"``). Not the probability-flow velocity
    (:class:`VelocityField`): on a VP path :math:`\hat x_0 = \alpha x - \sigma v`,
    :math:`\hat\varepsilon = \sigma x + \alpha v`."""

    def __init__(self, net, *, flip_time: bool = False, dtype: torch.dtype | None = None, clip_data=None,
                 thresholding=None):
        super().__init__(net, "v", flip_time=flip_time, dtype=dtype, clip_data=clip_data,
                         thresholding=thresholding)


class ConsistencyField(NetField):
    r"""``net(x, t)`` is a consistency function (Song et al. 2023): it maps a state at ``t`` to the end of its
    probability-flow trajectory at the sampling window's end :math:`t_N` (``f(x, t_N) = x``), e.g. a trained
    consistency model in its preconditioned form :math:`c_{skip}(\sigma) x + c_{out}(\sigma) F(c_{in} x,
    c_{noise})` with :math:`\sigma = \sigma(t)`. Sample it with the ``"consistency"`` sampler
    (:mod:`sdeflow.solvers.consistency`): ``sample(path, ConsistencyField(net), "consistency", grid=[...])``
    ending at the model's boundary (on :class:`~sdeflow.paths.EDM` its :math:`\epsilon = \sigma_{min}`:
    ``t_min = 0.002 / sigma_max``, the path's default). Its kind is ``"data"`` (the endpoint is its estimate of
    the sample); it is not a denoiser :math:`E[x_0|x_t]`, so the ODE/SDE samplers give no guarantee with it.
    ``clip_data`` clamps its output (diffusers' ``clip_denoised``)."""

    consistency = True

    def __init__(self, net, *, flip_time: bool = False, dtype: torch.dtype | None = None, clip_data=None,
                 thresholding=None):
        super().__init__(net, "data", flip_time=flip_time, dtype=dtype, clip_data=clip_data,
                         thresholding=thresholding)


def energy_and_score(energy: Callable[[Tensor], Tensor], x: Tensor, *, create_graph: bool = False,
                     name: str = "the energy network", user: str = "EnergyField",
                     hint: str = " (for a network returning the score itself use ScoreField)") -> tuple[Tensor, Tensor]:
    r"""The energies :math:`E(x)`, shape ``(batch,)``, and the score :math:`-\nabla_x E` (autograd, on a detached
    copy of ``x`` unless ``create_graph`` and ``x`` requires grad). ``energy`` must return one energy per sample,
    ``(batch,)`` or ``(batch, 1)``, differentiable in ``x``; errors name ``energy`` as ``name`` and the caller
    as ``user`` (:class:`EnergyField`, :func:`sdeflow.langevin.mala`)."""
    with torch.enable_grad():
        xr = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
        try:
            e = energy(xr)
        except RuntimeError as err:
            if "leaf Variable that requires grad is being used in an in-place operation" not in str(err):
                raise
            raise InputMutationError(
                f"{name} modified its input x in place (x.mul_(), x += ..., x[...] = ...): {user} takes the score as "
                f"the gradient of the energy at x, and x must stay as it was. Work on a copy (x = x.clone() first, "
                f"or out-of-place ops)") from err
        if not isinstance(e, Tensor) or e.shape not in ((x.shape[0],), (x.shape[0], 1)):
            got = tuple(e.shape) if isinstance(e, Tensor) else type(e).__name__
            raise SdeflowValueError(f"{name} returned {got}; {user} needs one energy per sample, shape "
                                    f"({x.shape[0]},) or ({x.shape[0]}, 1){hint}")
        if not e.requires_grad:
            raise SdeflowValueError(f"{name}'s output does not depend on x (no autograd graph back to its input: a "
                                    f"detach(), torch.no_grad() or a constant inside it?); {user} needs E "
                                    f"differentiable in x")
        (g,) = torch.autograd.grad(e.sum(), xr, create_graph=create_graph, allow_unused=True)
    if g is None:
        raise SdeflowValueError(f"{name}'s output does not depend on x (its gradient with respect to x is "
                                f"undefined); {user} needs E differentiable in x")
    return e.reshape(x.shape[0]), -g


class EnergyField(Field):
    r"""A scalar energy :math:`E`; its score is :math:`-\nabla_x E` (autograd).

    ``net(x, t)`` (or ``net(x)`` with ``time=False``) returns one energy per sample, shape ``(batch,)``
    or ``(batch, 1)``. At sampling time no graph is kept (``create_graph=False``): the gradient is taken
    on a detached copy of ``x``. Pass ``create_graph=True`` to differentiate through the score.
    """

    kind = "score"
    takes_model_kwargs = True

    def __init__(self, net: Callable, *, time: bool = True, create_graph: bool = False):
        if not callable(net):
            raise SdeflowTypeError(f"net must be callable as net(x, t), got {type(net).__name__}")
        self.net = net
        self.time = bool(time)
        self.create_graph = bool(create_graph)

    def energy(self, x: Tensor, t=None) -> Tensor:
        """Per-sample energy, shape ``(batch,)``."""
        e = self.net(x, batch_time(t, x)) if self.time else self.net(x)
        return e.reshape(x.shape[0], -1).sum(-1) if e.dim() > 1 else e

    def _score(self, x: Tensor, t: Tensor, **model_kwargs) -> Tensor:
        net = (lambda y: self.net(y, t, **model_kwargs)) if self.time else (lambda y: self.net(y, **model_kwargs))
        return energy_and_score(net, x, create_graph=self.create_graph)[1]

    def predict(self, x, t, path=None, model_kwargs: dict | None = None):
        return self._score(x, batch_time(t, x), **(model_kwargs or {}))

    def bind(self, path, model_kwargs: dict | None = None):
        if model_kwargs:
            kw = dict(model_kwargs)
            return lambda x, t: self._score(x, t, **kw)
        return self._score

    def __repr__(self):
        return f"EnergyField({self.net!r})"


class SumField(Field):
    r"""A weighted sum :math:`\sum_i w_i f_i` of fields (guidance, products of experts).

    The sum is taken in the components' common kind when they share one and either the weights sum to 1
    (then every kind gives the same field) or the kind is ``"score"``/``"noise"`` (no ``x`` term);
    otherwise in score space, :math:`\sum_i w_i\nabla\log p_i`, the product of experts. ``kind`` forces
    the space.
    """

    def __init__(self, terms: Sequence[tuple[float, Field]], kind: str | None = None):
        terms = [(float(w), f) for w, f in terms]
        if not terms:
            raise SdeflowValueError("SumField needs at least one (weight, field) term")
        for _, f in terms:
            if not isinstance(f, Field):
                raise SdeflowTypeError(f"SumField terms must be Fields, got {type(f).__name__}")
        self.terms = terms
        if kind is None:
            kinds = {f.kind for _, f in terms}
            total = sum(w for w, _ in terms)
            if len(kinds) == 1 and (kinds <= {"score", "noise"} or math.isclose(total, 1.0, abs_tol=1e-12)):
                kind = kinds.pop()
            else:
                kind = "score"
        self.kind = check_kind(kind)

    def _terms(self):
        return list(self.terms)

    @property
    def takes_model_kwargs(self) -> bool:
        return all(f.takes_model_kwargs for _, f in self.terms)

    def predict(self, x, t, path, model_kwargs: dict | None = None):
        tb = batch_time(t, x)
        out = None
        for w, f in self.terms:
            v = _as_kind(f, self.kind, x, tb, path, model_kwargs)
            out = w * v if out is None else out + w * v
        return out

    def validate_times(self, times):
        for _, f in self.terms:
            f.validate_times(times)

    def __repr__(self):
        return " + ".join(f"{w:g}*{f!r}" for w, f in self.terms)


def classifier_free_guidance(cond: Field, uncond: Field | float | None = None, scale: float | None = None, *,
                             null: dict | None = None) -> Field:
    r"""Classifier-free guidance :math:`(1 + w) f(x \mid c) - w f(x \mid arnothing)` (Ho & Salimans 2022).

    Two forms:

    * ``classifier_free_guidance(field, scale, null={"class_labels": 10})``: one conditional network, the
      condition from ``sample(..., model_kwargs=...)`` and the null condition ``null`` given by you; every
      evaluation is **one** network call on a doubled batch (:class:`GuidedField`).
    * ``classifier_free_guidance(cond, uncond, scale)``: two fields (e.g. two networks, or closures over the
      two conditions); two network calls per evaluation (a :class:`SumField`).

    The weights sum to 1, so the guided field is the same whichever kind the field(s) predict.
    """
    from .errors import check_number

    if isinstance(uncond, Field):
        if null is not None:
            raise SdeflowValueError("give either an unconditional field (uncond) or null= (the null condition of "
                                    "one conditional field), not both")
        if scale is None:
            raise SdeflowValueError("scale (the guidance weight w, 0 for no guidance) is missing")
        w = check_number("scale", scale, hint="the guidance weight w, 0 for no guidance")
        return SumField([(1.0 + w, cond), (-w, uncond)])
    if uncond is not None:
        if scale is not None:
            raise SdeflowTypeError(f"uncond must be a Field (the unconditional field), got {type(uncond).__name__}")
        scale = uncond
    if null is None:
        raise SdeflowValueError("null (the null condition, e.g. null={'class_labels': 10}) is missing: with one "
                                "conditional field, guidance needs the model_kwargs of the unconditional half; or "
                                "pass two fields, classifier_free_guidance(cond, uncond, scale)")
    if scale is None:
        raise SdeflowValueError("scale (the guidance weight w, 0 for no guidance) is missing")
    return GuidedField(cond, scale, null)


def _per_sample(v, n: int) -> bool:
    return isinstance(v, Tensor) and v.dim() >= 1 and v.shape[0] == n


def _null_rows(name: str, nv, v: Tensor) -> Tensor:
    """The null condition ``nv`` of model argument ``name`` as rows like the condition ``v``."""
    if isinstance(nv, (int, float, bool)):
        return torch.full_like(v, nv)
    if not isinstance(nv, Tensor):
        raise SdeflowTypeError(f"null[{name!r}] must be a number or a tensor (one condition for every sample), got "
                               f"{type(nv).__name__}")
    nv = nv.to(device=v.device, dtype=v.dtype)
    if nv.shape == v.shape:
        return nv
    if nv.shape == v.shape[1:] or (nv.dim() == v.dim() and nv.shape[0] == 1 and nv.shape[1:] == v.shape[1:]):
        return nv.reshape((1,) + tuple(v.shape[1:])).expand_as(v)
    raise SdeflowValueError(f"null[{name!r}] has shape {tuple(nv.shape)}, but the condition model_kwargs[{name!r}] "
                            f"has shape {tuple(v.shape)}: give one condition, shape {tuple(v.shape[1:])} (or "
                            f"(1, ...)), or one per sample, shape {tuple(v.shape)}")


def doubled_kwargs(model_kwargs: dict | None, null: dict, n: int) -> dict:
    """The model arguments of a doubled batch ``[conditional rows; null rows]`` of ``2 n`` rows: per-sample
    tensors (first dimension ``n``) are stacked with their null rows (``null``'s entry, broadcast) or with
    themselves (arguments without a null entry); other arguments are shared."""
    kw = dict(model_kwargs or {})
    missing = [k for k in null if k not in kw]
    if missing:
        raise SdeflowValueError(f"null names {missing[0]!r}, which is not in model_kwargs (given: {sorted(kw)}); "
                                f"pass the condition with sample(..., model_kwargs={{{missing[0]!r}: ...}})")
    out = {}
    for k, v in kw.items():
        if k in null:
            if not _per_sample(v, n):
                raise SdeflowValueError(f"model_kwargs[{k!r}] must hold one condition per sample (first dimension "
                                        f"{n}) to be guided, got "
                                        f"{tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__}")
            out[k] = torch.cat([v, _null_rows(k, null[k], v)])
        else:
            out[k] = torch.cat([v, v]) if _per_sample(v, n) else v
    return out


class GuidedField(Field):
    r"""Classifier-free guidance of one conditional field in one network call per evaluation:

    .. math:: f_w(x \mid c) = (1 + w)\, f(x \mid c) - w\, f(x \mid arnothing),

    with :math:`[f(x \mid c); f(x \mid arnothing)]` = one call of the network on the batch
    ``[x; x]`` at ``[t; t]`` with model arguments ``[c; null]`` (:func:`doubled_kwargs`), split in halves
    (what diffusers' pipelines do). The condition :math:`c` comes from ``sample(..., model_kwargs=...)``;
    ``null`` maps each guided argument to its null condition (a number, one condition broadcast to every
    sample, or one per sample); arguments not in ``null`` are the same in both halves. Equal to the two-call
    ``classifier_free_guidance(cond, uncond, scale)`` to rounding (the network sees a batch twice as large).
    Clipping on ``field`` applies to each half before they are combined, as in the two-call form.
    """

    takes_model_kwargs = True

    def __init__(self, field: Field, scale: float, null: dict):
        from .errors import check_number

        if not isinstance(field, Field):
            raise SdeflowTypeError(f"field must be a sdeflow Field (e.g. NoiseField(net)), got {type(field).__name__}")
        if not field.takes_model_kwargs:
            raise SdeflowTypeError(f"{type(field).__name__} does not pass model_kwargs to a network, so it cannot be "
                                   f"guided by a null condition; wrap the network, e.g. NoiseField(net)")
        if not isinstance(null, dict) or not null or not all(isinstance(k, str) for k in null):
            raise SdeflowTypeError(f"null must be a non-empty dict of model arguments (e.g. {{'class_labels': 10}}), "
                                   f"got {null!r}")
        self.field, self.kind, self.null = field, field.kind, dict(null)
        self.scale = check_number("scale", scale, hint="the guidance weight w, 0 for no guidance")

    def _combine(self, both: Tensor, n: int) -> Tensor:
        w = self.scale
        return torch.add((1.0 + w) * both[:n], both[n:], alpha=-w)

    def predict(self, x, t, path, model_kwargs: dict | None = None):
        n = x.shape[0]
        tb = batch_time(t, x)
        kw = doubled_kwargs(model_kwargs, self.null, n)
        return self._combine(self.field.predict(torch.cat([x, x]), torch.cat([tb, tb]), path, model_kwargs=kw), n)

    def bind(self, path, model_kwargs: dict | None = None):
        fns: dict = {}
        field = self.field

        def fn(x, t):
            n = x.shape[0]
            inner = fns.get(n)
            if inner is None:
                inner = fns[n] = field.bind(path, doubled_kwargs(model_kwargs, self.null, n))
            return self._combine(inner(torch.cat([x, x]), torch.cat([t, t])), n)
        return fn

    def validate_times(self, times):
        self.field.validate_times(times)

    def __repr__(self):
        return f"GuidedField({self.field!r}, scale={self.scale:g}, null={sorted(self.null)})"


class FlowScoreField(Field):
    r"""A velocity network and a score network driving the SDE with constant :math:`\gamma`,

    .. math:: dx = \big[v_\theta(x, t) - \tfrac{\gamma^2}{2} s_\phi(x, t)\big]\,dt + \gamma\, d\bar W
              \quad (t: 1 \to 0),

    the flow + score SDE of "A Gentle Intro to Diffusion Models" (B. V. Do; Holderrieth et al. 2025, Thm. 15),
    in sdeflow's time (t = 1 noise). Use it as ``sample(path, FlowScoreField(v, s, gamma), solver,
    gamma=gamma)`` with the same ``gamma``.

    The field's kind is ``"velocity"``; its prediction is the one velocity :math:`n` that the sampler's affine
    conversion turns into the pair's drift. A velocity :math:`n` has reverse-family drift
    :math:`P x + Q n` with :math:`Q = 1 + \gamma^2/g_t^2`, :math:`P = -(\gamma^2/g_t^2) f_t`
    (:func:`sdeflow.conversions.conversion`), so

    .. math:: n = w_t\, v_\theta + (1 - w_t)\,(f_t x - \tfrac{g_t^2}{2} s_\phi), \qquad
              w_t = \frac{g_t^2}{g_t^2 + \gamma^2},

    a convex mix, at each time, of the two networks written as velocities (a :class:`SumField` in velocity
    space whose weights depend on ``t``). It is computed as :math:`n = (v - \tfrac{\gamma^2}{2}s - P x)/Q`
    from the same conversion tables, so it stays finite where :math:`g_t^2` or :math:`f_t` is infinite
    (the linear flow at t = 1) and the drift is exact. With ``gamma = 0`` it is the velocity network itself.
    When the two networks agree (the exact pair of one path), ``n`` is that velocity for every ``gamma``;
    for two trained networks ``n`` depends on ``gamma``, so a ``FlowScoreField`` is meant for the ``gamma``
    it was built with (other kinds, e.g. ``final_denoise``'s data prediction, are converted from ``n``).
    ``gamma`` is in the training path's time: do not combine with ``integration_path``.
    """

    kind = "velocity"

    def __init__(self, velocity: Field, score: Field, gamma: float):
        for nm, f in (("velocity", velocity), ("score", score)):
            if not isinstance(f, Field):
                raise SdeflowTypeError(f"{nm} must be a sdeflow Field (e.g. {nm.capitalize()}Field(net)), got "
                                       f"{type(f).__name__}")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not (gamma >= 0 and
                                                                                   math.isfinite(gamma)):
            raise SdeflowValueError(f"gamma must be a finite number >= 0 (the constant noise level), got {gamma!r}")
        self.velocity_field, self.score_field, self.gamma = velocity, score, float(gamma)

    @property
    def takes_model_kwargs(self) -> bool:
        return self.velocity_field.takes_model_kwargs and self.score_field.takes_model_kwargs

    def predict(self, x, t, path, model_kwargs: dict | None = None):
        tb = batch_time(t, x)
        v = _as_kind(self.velocity_field, "velocity", x, tb, path, model_kwargs)
        if self.gamma == 0.0:
            return v
        g2 = self.gamma * self.gamma
        s = _as_kind(self.score_field, "score", x, tb, path, model_kwargs)
        P, Q = conversion("velocity", "drift", *path.coefficients(tb), gamma2=g2)
        return (torch.add(v, s, alpha=-0.5 * g2) - bcast(P, x) * x) / bcast(Q, x)

    def validate_times(self, times):
        self.velocity_field.validate_times(times)
        self.score_field.validate_times(times)

    def __repr__(self):
        return f"FlowScoreField({self.velocity_field!r}, {self.score_field!r}, gamma={self.gamma:g})"


# ---- clipping and dynamic thresholding of the data prediction ------------------------------------------
class DynamicThresholding:
    r"""Dynamic thresholding of a data prediction (Saharia et al. 2022, "Imagen", Sec. 2.3): per sample,

    .. math:: s = \min\big(\max(q_r(|\hat x_0|), 1), s_{max}\big), \qquad \hat x_0 \mapsto
              \mathrm{clamp}(\hat x_0, -s, s) / s,

    with :math:`q_r` the ``ratio`` quantile of the sample's absolute values (all its entries). diffusers'
    ``thresholding=True`` with ``dynamic_thresholding_ratio=ratio`` and ``sample_max_value=max_value``
    (``max_value = 1`` is plain clipping to ``[-1, 1]``). Half-precision inputs are thresholded in float32.
    """

    def __init__(self, ratio: float = 0.995, max_value: float = 1.0):
        from .errors import check_number

        self.ratio = check_number("ratio", ratio, gt=0.0, le=1.0, hint="the quantile of |x0|, e.g. 0.995")
        self.max_value = check_number("max_value", max_value, ge=1.0,
                                      hint="the largest threshold s (1 is plain clipping to [-1, 1])")

    def __call__(self, x0: Tensor) -> Tensor:
        flat = x0.reshape(x0.shape[0], -1)
        if flat.dtype not in (torch.float32, torch.float64):
            flat = flat.float()
        s = torch.quantile(flat.abs(), self.ratio, dim=1).clamp(min=1.0, max=self.max_value).unsqueeze(1)
        return (torch.maximum(torch.minimum(flat, s), -s) / s).reshape(x0.shape).to(x0.dtype)

    def __repr__(self):
        return f"DynamicThresholding(ratio={self.ratio:g}, max_value={self.max_value:g})"


class _Clip:
    def __init__(self, lo: float, hi: float):
        self.lo, self.hi = lo, hi

    def __call__(self, x0: Tensor) -> Tensor:
        return x0.clamp(self.lo, self.hi)

    def __repr__(self):
        return f"clip_data=({self.lo:g}, {self.hi:g})"


def data_transform(clip_data=None, thresholding=None) -> Callable[[Tensor], Tensor] | None:
    """The transform of the data prediction that ``clip_data`` / ``thresholding`` ask for (None: none)."""
    from .errors import check_number

    if clip_data is not None and thresholding not in (None, False):
        raise SdeflowValueError("give clip_data or thresholding, not both (dynamic thresholding with "
                                "max_value=1 already clips to [-1, 1])")
    if clip_data is not None:
        if isinstance(clip_data, (int, float)) and not isinstance(clip_data, bool):
            c = check_number("clip_data", clip_data, gt=0.0, hint="a range (lo, hi) or c for (-c, c)")
            return _Clip(-c, c)
        try:
            lo, hi = clip_data
        except (TypeError, ValueError):
            raise SdeflowTypeError(f"clip_data must be a pair (lo, hi) or a number c for (-c, c), got "
                                   f"{clip_data!r}") from None
        lo = check_number("clip_data[0]", lo)
        hi = check_number("clip_data[1]", hi)
        if not lo < hi:
            raise SdeflowValueError(f"clip_data must be (lo, hi) with lo < hi, got {clip_data!r}")
        return _Clip(lo, hi)
    if thresholding is None or thresholding is False:
        return None
    if thresholding is True:
        return DynamicThresholding()
    if isinstance(thresholding, DynamicThresholding):
        return thresholding
    raise SdeflowTypeError(f"thresholding must be True (ratio 0.995, max_value 1) or a DynamicThresholding(ratio, "
                           f"max_value), got {type(thresholding).__name__}")


def transform_native(kind: str, transform, x: Tensor, t: Tensor, n: Tensor, path: GaussianPath) -> Tensor:
    r"""The native prediction ``n`` of ``kind`` whose implied data prediction is replaced by
    ``transform(x0)``: :math:`n' = P x + Q\,T(\hat x_0)` with :math:`\hat x_0 = P_0 x + Q_0 n` (two
    conversions at ``(x, t)``, :mod:`sdeflow.conversions`)."""
    co = path.coefficients(t)
    if kind == "data":
        return transform(n)
    P, Q = conversion(kind, "data", *co)
    x0 = transform(bcast(P.to(x.dtype), x) * x + bcast(Q.to(x.dtype), x) * n)
    P, Q = conversion("data", kind, *co)
    return bcast(P.to(x.dtype), x) * x + bcast(Q.to(x.dtype), x) * x0


class ClippedField(Field):
    r"""Any field (a guided :class:`SumField`, an oracle, ...) with its data prediction clipped
    (``clip_data=(lo, hi)``, diffusers' ``clip_sample`` with ``clip_sample_range``) or dynamically thresholded
    (``thresholding=True`` or a :class:`DynamicThresholding`; diffusers' ``thresholding``).

    The native prediction is replaced by the one consistent with the transformed :math:`\hat x_0` at the
    same ``x`` (for a noise field :math:`\hat\varepsilon' = (x - \alpha\,T(\hat x_0))/\sigma`; diffusers'
    DDIM with ``use_clipped_model_output=True``, and what its DPM-Solver and UniPC schedulers do). Cost: two
    conversions per evaluation. The transformed field is no longer the exact probability-flow of the
    network: the ODE it drives is that of a different (clipped) denoiser, with the same ends where the
    clipping is inactive. Where :math:`\sigma = 0` a non-data kind cannot be rebuilt (the conversion divides
    by :math:`\sigma`).
    """

    def __init__(self, field: Field, *, clip_data=None, thresholding=None):
        if not isinstance(field, Field):
            raise SdeflowTypeError(f"field must be a sdeflow Field, got {type(field).__name__}")
        self.field = field
        self.kind = field.kind
        self.transform = data_transform(clip_data, thresholding)
        if self.transform is None:
            raise SdeflowValueError("ClippedField needs clip_data=(lo, hi) or thresholding=True / "
                                    "DynamicThresholding(...)")

    @property
    def takes_model_kwargs(self) -> bool:
        return self.field.takes_model_kwargs

    def predict(self, x, t, path, model_kwargs: dict | None = None):
        tb = batch_time(t, x)
        n = _predict(self.field, x, tb, path, model_kwargs)
        return transform_native(self.kind, self.transform, x, tb, n, path)

    def bind(self, path, model_kwargs: dict | None = None):
        fn = self.field.bind(path, model_kwargs) if model_kwargs else self.field.bind(path)
        kind, tr = self.kind, self.transform
        return lambda x, t: transform_native(kind, tr, x, t, fn(x, t), path)

    def validate_times(self, times):
        self.field.validate_times(times)

    def __repr__(self):
        return f"ClippedField({self.field!r}, {self.transform!r})"
