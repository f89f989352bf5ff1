r"""Fields for tests: an exact field plus a bounded, smooth perturbation.

:class:`PerturbedField` predicts :math:`f(x, t) + a\,\sin(\omega x + \phi + \kappa t)` elementwise, so its
distance to the exact field ``f`` is at most ``a`` everywhere (sup norm per coordinate) while staying smooth:
a stand-in for a trained network with a known error bound. Solvers' convergence orders hold for it too
(smooth drift); only the limit moves by O(a).
"""

from __future__ import annotations

from ..fields import Field, batch_time

__all__ = ["PerturbedField"]


class PerturbedField(Field):
    """``inner`` plus ``amplitude * sin(frequency * x + phase + time_frequency * t)`` (same kind as inner)."""

    def __init__(self, inner: Field, amplitude: float, frequency: float = 1.0, phase: float = 0.0,
                 time_frequency: float = 1.0):
        self.inner, self.kind = inner, inner.kind
        self.amplitude, self.frequency = float(amplitude), float(frequency)
        self.phase, self.time_frequency = float(phase), float(time_frequency)

    def perturbation(self, x, t):
        tb = batch_time(t, x).reshape((-1,) + (1,) * (x.dim() - 1))
        return self.amplitude * (self.frequency * x + self.phase + self.time_frequency * tb).sin()

    def predict(self, x, t, path):
        return self.inner.predict(x, t, path) + self.perturbation(x, t)

    def bind(self, path):
        fn = self.inner.bind(path)
        return lambda x, t: fn(x, t) + self.perturbation(x, t)

    def validate_times(self, t):
        self.inner.validate_times(t)

    def __repr__(self):
        return (f"PerturbedField({self.inner!r}, amplitude={self.amplitude:g}, frequency={self.frequency:g}, "
                f"phase={self.phase:g})")
