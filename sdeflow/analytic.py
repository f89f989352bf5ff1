r"""Exact oracles: Gaussian and Gaussian-mixture targets under every Gaussian path.

A mixture :math:`\sum_k \pi_k \mathcal N(\mu_k, \mathrm{diag}(c_k))` stays a mixture under
:math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon`, with components
:math:`\mathcal N(\alpha_t\mu_k, \alpha_t^2 c_k + \sigma_t^2)`. With responsibilities
:math:`r_k(x)` every field is exact and computed directly (stable at :math:`\alpha\to0` and
:math:`\sigma\to0`):

* score :math:`-\sum_k r_k (x - \alpha\mu_k)/V_k`,
* data :math:`E[x_0|x] = \sum_k r_k(\mu_k + \alpha c_k (x-\alpha\mu_k)/V_k)`,
* noise :math:`E[\varepsilon|x] = \sum_k r_k\,\sigma (x-\alpha\mu_k)/V_k`,
* velocity :math:`\alpha' E[x_0|x] + \sigma' E[\varepsilon|x]`.

For one Gaussian the probability-flow ODE is solved exactly by
:math:`x_t = m_t + \sqrt{V_t/V_s}\,(x_s - m_s)` (:meth:`Gaussian.flow`); for a mixture,
:meth:`GaussianMixture.reference_flow` integrates it in float64 with SciPy's DOP853 in log-SNR time on
variance-preserving coordinates (every path's flow is that one up to time change and scale;
:func:`flow_in_log_snr`, which also serves any other denoiser, e.g. a network's).
"""

from __future__ import annotations

import math

import torch

from .conversions import check_kind, kind_uw
from .errors import SdeflowValueError
from .fields import Field, batch_time
from .paths import GaussianPath

__all__ = ["GaussianMixture", "Gaussian", "OracleField", "ConsistencyOracle", "eight_gaussians", "two_blobs", "ring",
           "unequal_modes", "anisotropic_mixture", "power_law_gaussian", "flow_in_log_snr"]

Tensor = torch.Tensor

_LAM_CLAMP = 60.0  # |log-SNR| beyond which the flow is frozen to within exp(-30)


def _per_sample(c: Tensor, x: Tensor) -> Tensor:
    """Coefficient (scalar or (batch,)) shaped to broadcast against (batch, K, d)."""
    c = c.to(x.dtype)
    return c.reshape(-1, 1, 1) if c.dim() else c


def flow_in_log_snr(denoise, x: Tensor, path: GaussianPath, t_from: float, t_to: float, *, rtol: float = 1e-10,
                    atol: float = 1e-10, chunk: int = 512) -> Tensor:
    r"""The probability-flow map of ``path`` from ``t_from`` to ``t_to`` driven by a denoiser, in float64.

    Solved with SciPy's DOP853 in log-SNR time :math:`\lambda` on variance-preserving coordinates
    :math:`\hat x = x/\sqrt{\alpha^2+\sigma^2}`, where the ODE reads
    :math:`d\hat x/d\lambda = \tfrac12\hat\alpha\,(E[x_0|\hat x] - \hat\alpha\hat x)`,
    :math:`\hat\alpha^2 = \mathrm{sigmoid}(\lambda)`, :math:`\hat\sigma^2 = 1 - \hat\alpha^2` (every
    Gaussian path's flow is this one up to time change and scale). Endpoints with :math:`|\lambda| > 60` are
    clamped (the flow moves by less than :math:`e^{-30}` beyond). ``denoise(x_hat, lam, alpha_hat,
    sigma_hat)`` returns :math:`E[x_0|\hat x]` for a float64 ``(rows, *event)`` block at log-SNR ``lam``
    (floats); the samples are integrated in blocks of ``chunk`` rows (one DOP853 solve each, its error norm
    over the block). Returns float64 on the CPU, in ``path``'s coordinates at ``t_to``.
    """
    from scipy.integrate import solve_ivp

    lam0 = float(path.log_snr(float(t_from)))
    lam1 = float(path.log_snr(float(t_to)))
    lam0c = min(max(lam0, -_LAM_CLAMP), _LAM_CLAMP)
    lam1c = min(max(lam1, -_LAM_CLAMP), _LAM_CLAMP)
    xd = x.detach().to(torch.float64).cpu()
    xh = xd / float(path.scale(float(t_from)))
    out = torch.empty_like(xh)

    def rhs(lam, y, shape):
        xt = torch.from_numpy(y).reshape(shape)
        ah = 1.0 / math.sqrt(1.0 + math.exp(-lam)) if lam > -700 else 0.0
        sh = 1.0 / math.sqrt(1.0 + math.exp(lam)) if lam < 700 else 0.0
        x0 = denoise(xt, float(lam), ah, sh).to(torch.float64)
        return (0.5 * ah * (x0 - ah * xt)).reshape(-1).numpy()

    for i in range(0, xh.shape[0], chunk):
        blk = xh[i:i + chunk]
        if lam1c == lam0c:
            out[i:i + chunk] = blk
            continue
        sol = solve_ivp(rhs, (lam0c, lam1c), blk.reshape(-1).numpy(), method="DOP853", rtol=rtol,
                        atol=atol, args=(blk.shape,))
        if not sol.success:
            raise RuntimeError(f"reference solve failed: {sol.message}")
        out[i:i + chunk] = torch.from_numpy(sol.y[:, -1]).reshape(blk.shape)
    return out * float(path.scale(float(t_to)))


class GaussianMixture:
    """A mixture of Gaussians with diagonal covariances.

    Args:
        weights: ``(K,)`` non-negative, normalised here.
        means: ``(K, d)``.
        stds: a number, ``(K,)`` (isotropic per component) or ``(K, d)`` (diagonal).
    """

    def __init__(self, weights, means, stds):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() != 2:
            raise SdeflowValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        K, d = means.shape
        weights = torch.as_tensor(weights, dtype=torch.float64).flatten()
        if weights.shape != (K,) or (weights < 0).any() or weights.sum() <= 0:
            raise SdeflowValueError(f"weights must be {K} non-negative numbers with a positive sum")
        stds = torch.as_tensor(stds, dtype=torch.float64)
        if stds.dim() == 0:
            stds = stds.expand(K, d)
        elif stds.shape == (K,):
            stds = stds[:, None].expand(K, d)
        elif stds.shape != (K, d):
            raise SdeflowValueError(f"stds must be a number, (K,)=({K},) or (K, d)=({K}, {d}); got "
                                    f"{tuple(stds.shape)}")
        if not (stds > 0).all():
            raise SdeflowValueError("stds must be > 0")
        self.weights = weights / weights.sum()
        self.means = means
        self.var = (stds ** 2).contiguous()
        self._cache: dict = {}

    # ---- basic properties ---------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def mean(self) -> Tensor:
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        m = self.mean()
        second = torch.einsum("k,ki,kj->ij", self.weights, self.means, self.means) + torch.diag(
            self.weights @ self.var)
        return second - torch.outer(m, m)

    def _params(self, dtype, device):
        key = (dtype, device)
        if key not in self._cache:
            self._cache[key] = (torch.log(self.weights).to(dtype=dtype, device=device),
                                self.means.to(dtype=dtype, device=device),
                                self.var.to(dtype=dtype, device=device))
        return self._cache[key]

    def _check_x(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != self.dim:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise SdeflowValueError(f"this {self.dim}-D oracle takes x of shape (batch, {self.dim}) (or (batch, ..., "
                                    f"{self.dim}) for its predictions), got {got}; sample with shape=({self.dim},)")

    def marginal(self, path: GaussianPath, t: float) -> "GaussianMixture":
        """The mixture of ``x_t`` under ``path``."""
        a, s, _, _ = (float(c) for c in path.coefficients(float(t)))
        return GaussianMixture(self.weights, a * self.means, (a * a * self.var + s * s).sqrt())

    # ---- sampling and density at t = 0 --------------------------------------------------------
    def sample(self, n: int, *, generator: torch.Generator | None = None, dtype=torch.float32,
               device=None, return_components: bool = False):
        """``n`` samples (and, with ``return_components``, the component index of each)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = (self.means[k] + self.var[k].sqrt() * z).to(dtype=dtype, device=device)
        return (x, k.to(device)) if return_components else x

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of the data distribution, ``(batch,)``."""
        self._check_x(x)
        logw, mu, var = self._params(x.dtype, x.device)
        diff = x[:, None, :] - mu[None]
        logn = -0.5 * ((diff * diff / var + torch.log(2 * math.pi * var)).sum(-1))
        return torch.logsumexp(logw + logn, dim=1)

    def log_prob_t(self, x: Tensor, t, path: GaussianPath) -> Tensor:
        """Log-density of the marginal :math:`p_t` at ``x`` (``t`` a number or ``(batch,)``)."""
        self._check_x(x)
        a, s, _, _ = path.coefficients(batch_time(t, x))
        logw, mu, var = self._params(x.dtype, x.device)
        a, s = _per_sample(a, x), _per_sample(s, x)
        diff = x[:, None, :] - a * mu[None]
        V = a * a * var + s * s
        logn = -0.5 * ((diff * diff / V + torch.log(2 * math.pi * V)).sum(-1))
        return torch.logsumexp(logw + logn, dim=1)

    # ---- exact fields -------------------------------------------------------------------------
    def posterior(self, x: Tensor, alpha, sigma) -> tuple[Tensor, Tensor, Tensor]:
        r"""``(E[x_0|x], E[eps|x], score)`` for :math:`x = \alpha x_0 + \sigma\varepsilon`;
        ``alpha``, ``sigma`` are numbers or ``(batch,)`` tensors."""
        self._check_x(x)
        logw, mu, var = self._params(x.dtype, x.device)
        a = _per_sample(torch.as_tensor(alpha, dtype=x.dtype, device=x.device), x)
        s = _per_sample(torch.as_tensor(sigma, dtype=x.dtype, device=x.device), x)
        diff = x[:, None, :] - a * mu[None]
        V = a * a * var + s * s
        z = diff / V
        logn = -0.5 * ((diff * z + torch.log(2 * math.pi * V)).sum(-1))
        r = torch.softmax(logw + logn, dim=1)[..., None]
        x0 = (r * (mu[None] + a * var * z)).sum(1)
        eps = (r * (s * z)).sum(1)
        score = -(r * z).sum(1)
        return x0, eps, score

    def predict(self, x: Tensor, t, path: GaussianPath, kind: str = "score") -> Tensor:
        """The exact field of ``kind`` at ``(x, t)`` under ``path``. ``x`` is ``(batch, dim)``, or
        ``(batch, ..., dim)``: each trailing ``dim``-vector is an independent draw (a product of mixtures)."""
        check_kind(kind)
        tb = batch_time(t, x)
        if isinstance(x, Tensor) and x.dim() > 2 and x.shape[-1] == self.dim:
            rows = x.shape[1:-1].numel()
            flat = self.predict(x.reshape(-1, self.dim), tb.repeat_interleave(rows), path, kind)
            return flat.reshape(x.shape)
        a, s, da, ds = path.coefficients(tb)
        x0, eps, score = self.posterior(x, a, s)
        if kind == "score":
            return score
        if kind == "data":
            return x0
        if kind == "noise":
            return eps
        u, w = kind_uw(kind, a, s, da, ds)  # velocity, v: u x0 + w eps
        return u.to(x.dtype).reshape(-1, 1) * x0 + w.to(x.dtype).reshape(-1, 1) * eps

    def score(self, x, t, path):
        return self.predict(x, t, path, "score")

    def noise(self, x, t, path):
        return self.predict(x, t, path, "noise")

    def data(self, x, t, path):
        return self.predict(x, t, path, "data")

    def velocity(self, x, t, path):
        return self.predict(x, t, path, "velocity")

    def field(self, kind: str = "score") -> "OracleField":
        """This target's exact field as a :class:`~sdeflow.fields.Field` predicting ``kind``."""
        return OracleField(self, kind)

    # ---- reference probability-flow solution --------------------------------------------------
    def reference_flow(self, x: Tensor, path: GaussianPath, t_from: float, t_to: float, *,
                       final_denoise: bool = False, rtol: float = 1e-10, atol: float = 1e-10,
                       chunk: int = 512) -> Tensor:
        r"""The probability-flow map from ``t_from`` to ``t_to`` of ``x``, in float64: :func:`flow_in_log_snr`
        (SciPy's DOP853 in log-SNR time on variance-preserving coordinates) with the mixture's exact posterior
        mean. ``final_denoise`` applies the exact denoiser at ``t_to`` (the samplers' final step). Returns
        float64 on ``x``'s device.
        """
        mix = self
        res = flow_in_log_snr(lambda xh, lam, ah, sh: mix.posterior(xh, ah, sh)[0], x, path, t_from, t_to,
                              rtol=rtol, atol=atol, chunk=chunk)
        if final_denoise:
            res = self.predict(res, float(t_to), path, "data")
        return res.to(x.device)

    def __repr__(self):
        return f"{type(self).__name__}(K={self.n_components}, d={self.dim})"


class Gaussian(GaussianMixture):
    r"""One Gaussian :math:`\mathcal N(\mu, \mathrm{diag}(c))`, with the exact probability-flow solution."""

    def __init__(self, mean, var):
        mean = torch.as_tensor(mean, dtype=torch.float64).flatten()
        var = torch.as_tensor(var, dtype=torch.float64)
        if var.dim() == 0:
            var = var.expand_as(mean)
        if var.shape != mean.shape or not (var > 0).all():
            raise SdeflowValueError(f"var must be positive with mean's shape {tuple(mean.shape)}")
        super().__init__([1.0], mean[None], var.sqrt()[None])

    @property
    def mu(self) -> Tensor:
        return self.means[0]

    @property
    def c(self) -> Tensor:
        return self.var[0]

    def posterior(self, x: Tensor, alpha, sigma) -> tuple[Tensor, Tensor, Tensor]:
        r"""The mixture's posterior with one component, in closed form (no softmax): with
        :math:`r = (x - \alpha\mu)/V`, :math:`V = \alpha^2 c + \sigma^2`: :math:`E[x_0|x] = \mu + \alpha c\,r`,
        :math:`E[\varepsilon|x] = \sigma r`, score :math:`-r`."""
        self._check_x(x)
        _, mu, var = self._params(x.dtype, x.device)
        a = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        a, s = (v.reshape(-1, 1) if v.dim() else v for v in (a, s))
        mu, var = mu[0], var[0]
        r = (x - a * mu) / (a * a * var + s * s)
        return mu + a * var * r, s * r, -r

    def moments(self, path: GaussianPath, t: float) -> tuple[Tensor, Tensor]:
        """``(m_t, V_t)`` of the marginal at ``t``: :math:`m = \\alpha\\mu`, :math:`V = \\alpha^2 c+\\sigma^2`."""
        a, s, _, _ = (float(v) for v in path.coefficients(float(t)))
        return a * self.mu, a * a * self.c + s * s

    def flow(self, x: Tensor, path: GaussianPath, t_from: float, t_to: float) -> Tensor:
        r"""Exact probability-flow map :math:`x_t = m_t + \sqrt{V_t/V_s}(x_s - m_s)`."""
        ms, Vs = self.moments(path, t_from)
        mt, Vt = self.moments(path, t_to)
        ms, Vs, mt, Vt = (v.to(dtype=x.dtype, device=x.device) for v in (ms, Vs, mt, Vt))
        return mt + torch.sqrt(Vt / Vs) * (x - ms)

    def reference_flow(self, x, path, t_from, t_to, *, final_denoise: bool = False, **kw):
        out = self.flow(x.to(torch.float64), path, t_from, t_to)
        return self.predict(out, float(t_to), path, "data") if final_denoise else out

    def consistency_field(self, path: GaussianPath, t_end: float = 0.0) -> "ConsistencyOracle":
        r"""This target's exact consistency function on ``path`` (Song et al. 2023) as a field: the
        probability-flow map :math:`f(x, t) = m_e + \sqrt{V_e/V_t}\,(x - m_t)` from any ``t`` to ``t_end``
        (the sampling window's end, where :math:`f(x, t_{end}) = x`); for the ``"consistency"`` sampler."""
        return ConsistencyOracle(self, path, t_end)


class OracleField(Field):
    """The exact field of a :class:`GaussianMixture` (or :class:`Gaussian`), predicting ``kind``."""

    def __init__(self, target: GaussianMixture, kind: str = "score"):
        self.target = target
        self.kind = check_kind(kind)

    def predict(self, x, t, path):
        return self.target.predict(x, t, path, self.kind)

    def bind(self, path):
        target, kind = self.target, self.kind
        return lambda x, t: target.predict(x, t, path, kind)

    def __repr__(self):
        return f"OracleField({self.target!r}, kind={self.kind!r})"


class ConsistencyOracle(Field):
    """The exact consistency function of a :class:`Gaussian` on ``path`` towards ``t_end``
    (:meth:`Gaussian.consistency_field`): kind ``"data"``, ``consistency = True``."""

    kind = "data"
    consistency = True

    def __init__(self, target: Gaussian, path: GaussianPath, t_end: float = 0.0):
        self.target, self.path, self.t_end = target, path, float(t_end)

    def predict(self, x, t, path):
        tb = batch_time(t, x)
        a, s, _, _ = self.path.coefficients(tb.to(torch.float64))
        _, mu, var = self.target._params(x.dtype, x.device)
        mu, var = mu[0], var[0]
        a, s = a.to(x.dtype).reshape(-1, 1), s.to(x.dtype).reshape(-1, 1)
        me, Ve = self.target.moments(self.path, self.t_end)
        me, Ve = me.to(dtype=x.dtype, device=x.device), Ve.to(dtype=x.dtype, device=x.device)
        return me + torch.sqrt(Ve / (a * a * var + s * s)) * (x - a * mu)

    def __repr__(self):
        return f"ConsistencyOracle({self.target!r}, {self.path!r}, t_end={self.t_end:g})"


# ---- built-in targets -----------------------------------------------------------------------------
def eight_gaussians(std: float = 0.25, scale: float = 2.0) -> GaussianMixture:
    """The seed articles' 8-mode mixture: centres (±2, 0), (0, ±2), (±2, ±2), std 0.25, equal weights."""
    centres = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0],
                            [1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)
    return GaussianMixture(torch.ones(8), scale * centres, std)


def two_blobs() -> GaussianMixture:
    """Two unequal blobs: weights 0.3/0.7 at (-2, 0) and (1.5, 1), stds 0.5 and (0.3, 0.6)."""
    return GaussianMixture([0.3, 0.7], [[-2.0, 0.0], [1.5, 1.0]], [[0.5, 0.5], [0.3, 0.6]])


def ring(n_modes: int = 8, radius: float = 2.0, std: float = 0.25, dim: int = 2) -> GaussianMixture:
    """``n_modes`` equal-weight isotropic modes on a circle of ``radius`` in the first two coordinates."""
    if n_modes < 1 or dim < 2:
        raise SdeflowValueError("ring needs n_modes >= 1 and dim >= 2")
    ang = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
    means = torch.zeros(n_modes, dim, dtype=torch.float64)
    means[:, 0], means[:, 1] = radius * torch.cos(ang), radius * torch.sin(ang)
    return GaussianMixture(torch.ones(n_modes), means, std)


def unequal_modes(n_modes: int = 6, weight_range: tuple = (0.02, 0.5), std_range: tuple = (0.01, 0.3),
                  spread: float = 2.0, seed: int = 0) -> GaussianMixture:
    """``n_modes`` narrow isotropic 2-D modes of unequal weights and widths: weights geometric over
    ``weight_range`` and standard deviations geometric over ``std_range`` (1.5 decades by default), paired in
    reverse (the heaviest mode the narrowest), centres drawn once from ``N(0, spread^2)`` by a generator seeded
    with ``seed`` (deterministic)."""
    if n_modes < 2:
        raise SdeflowValueError("unequal_modes needs n_modes >= 2")
    g = torch.Generator().manual_seed(int(seed))
    means = spread * torch.randn(n_modes, 2, generator=g, dtype=torch.float64)
    w = torch.logspace(math.log10(weight_range[0]), math.log10(weight_range[1]), n_modes, dtype=torch.float64)
    s = torch.logspace(math.log10(std_range[1]), math.log10(std_range[0]), n_modes, dtype=torch.float64)
    return GaussianMixture(w, means, s)


def anisotropic_mixture(dim: int = 16, n_modes: int = 6, std_range: tuple = (0.01, 1.0), spread: float = 1.5,
                        seed: int = 0) -> GaussianMixture:
    """``n_modes`` equal-weight modes in ``dim`` dimensions with diagonal covariances whose per-axis standard
    deviations span ``std_range`` geometrically (two decades by default), each mode's axes in its own random
    order, centres drawn from ``N(0, spread^2 I)``; all from a generator seeded with ``seed`` (deterministic)."""
    if dim < 1 or n_modes < 1:
        raise SdeflowValueError("anisotropic_mixture needs dim >= 1 and n_modes >= 1")
    g = torch.Generator().manual_seed(int(seed))
    means = spread * torch.randn(n_modes, dim, generator=g, dtype=torch.float64)
    axis = torch.logspace(math.log10(std_range[0]), math.log10(std_range[1]), dim, dtype=torch.float64)
    stds = torch.stack([axis[torch.randperm(dim, generator=g)] for _ in range(n_modes)])
    return GaussianMixture(torch.ones(n_modes), means, stds)


def power_law_gaussian(side: int = 8, exponent: float = 2.0, pixel_var: float = 0.25) -> Gaussian:
    r"""An image-like Gaussian: ``side`` x ``side`` pixels whose 2-D DCT coefficients are independent with
    variances :math:`\propto (1+|k|)^{-\text{exponent}}` over the frequencies :math:`k = (k_x, k_y)`,
    :math:`0 \le k_x, k_y < \text{side}` (natural images' spectra fall off about so), scaled to a mean pixel
    variance ``pixel_var``, zero mean. Returned in DCT coordinates, a diagonal Gaussian of dimension
    ``side**2`` (the orthonormal DCT maps it to the pixel-space Gaussian with the same spectrum; every sampler
    here is equivariant under orthogonal maps of the state, so its pathwise errors are the same in either
    basis)."""
    k = torch.arange(side, dtype=torch.float64)
    r = torch.sqrt(k[:, None] ** 2 + k[None, :] ** 2).flatten()
    var = (1.0 + r) ** (-float(exponent))
    var = var * (pixel_var * side * side / var.sum())
    return Gaussian(torch.zeros(side * side, dtype=torch.float64), var)
