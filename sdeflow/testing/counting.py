"""A field wrapper that counts network calls, for checking a solver's NFE accounting."""

from __future__ import annotations

from ..fields import Field

__all__ = ["CountingField"]


class CountingField(Field):
    """Wraps ``inner`` (any :class:`~sdeflow.fields.Field`); ``calls`` counts evaluations of its network (batched
    calls) and ``rows`` the samples they evaluated (a per-sample adaptive solver evaluates only running rows)."""

    def __init__(self, inner: Field):
        self.inner, self.kind, self.calls, self.rows = inner, inner.kind, 0, 0

    @property
    def takes_model_kwargs(self) -> bool:
        return self.inner.takes_model_kwargs

    @property
    def consistency(self) -> bool:
        return self.inner.consistency

    def bind(self, path, model_kwargs=None):
        fn = self.inner.bind(path, model_kwargs) if model_kwargs else self.inner.bind(path)

        def net(x, t):
            self.calls += 1
            self.rows += x.shape[0]
            return fn(x, t)
        return net

    def validate_times(self, t):
        self.inner.validate_times(t)
