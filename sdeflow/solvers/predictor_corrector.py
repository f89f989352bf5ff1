r"""Predictor-corrector sampling (Song et al. 2021, "Score-Based Generative Modeling through SDEs", Alg. 1, 4, 5).

Each step from :math:`s` to :math:`t < s` is

* **predictor** — one Euler-Maruyama step of the reverse-time dynamics
  :math:`dx = [v - \tfrac{\gamma^2}{2} s]\,dt + \gamma\,d\bar W` (``gamma="reverse"``: the reverse SDE;
  Song et al.'s "reverse diffusion" predictor is the same step to first order), then
* **corrector** — ``corrector_steps`` = :math:`M` unadjusted Langevin steps at the new time :math:`t`,
  targeting :math:`p_t` with the field's score :math:`s = s_\theta(x, t)`:

  .. math:: x \leftarrow x + \epsilon\, s + \sqrt{2\epsilon}\, z,\qquad
            \epsilon = 2\,a\,\big(r\,\lVert z\rVert / \lVert s\rVert\big)^2,\quad z\sim N(0, I),

  the signal-to-noise rule: the drift moves :math:`x` by :math:`\sqrt 2\, r` times the noise's length.

``snr`` = :math:`r`: Song et al. use :math:`r = 0.16` for VE SDEs (their CIFAR-10 setting); a much smaller
:math:`r` such as 0.01 is commonly used with VP SDEs (not checked here against the released configurations);
the default is 0.16. ``alpha`` = :math:`a`: 1 in their
VE Algorithm 4; their VP Algorithm 5 uses DDPM's :math:`\alpha_i = 1 - \beta_i` (>= 0.98 at 1000 steps), which
a user passes as a number.

``norm`` chooses the norms in the ratio: ``"sample"`` (per sample, as in the paper's algorithms) or
``"batch"`` (the per-sample norms averaged over the batch, as in Song et al.'s released code). Both are
tensor operations (no host synchronisation). In low dimension the per-sample ratio is heavy-tailed: where
:math:`\lVert s\rVert \to 0` (near a mode) the step :math:`\epsilon` explodes, so rare samples are thrown
far out (in 2-D the jump's tail is :math:`P(D > y)\propto r^4/y^2`); the batch rule, one step size per
batch (about :math:`2 a r^2 V_t` for a Gaussian of variance :math:`V_t`), does not have that tail but makes a
sample depend on its batch. ``norm="batch"`` is the default (see docs/families.md for measurements).

Evaluations per step: :math:`1 + M`; standard normals per step: :math:`1 + M`. The predictor is first order;
the corrector's step is set by ``snr``, not by the step size, so the sampler does not converge to the
reverse SDE as :math:`h \to 0` (its Langevin bias, about :math:`a r^2` relative in the variance of a
Gaussian, stays): it declares no strong or weak order.
"""

from __future__ import annotations

import math

import torch

from ..errors import SdeflowValueError, check_int
from .base import SDESolver, add_noise

__all__ = ["PredictorCorrector", "langevin_correct"]

Tensor = torch.Tensor


def _norms(v: Tensor, norm: str) -> Tensor:
    """Per-sample Euclidean norms, shape ``(batch, 1, ..., 1)`` (``norm="batch"``: their batch mean)."""
    n = torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1)
    if norm == "batch":
        n = n.mean().expand(v.shape[0])
    return n.reshape((v.shape[0],) + (1,) * (v.dim() - 1))


def langevin_correct(x: Tensor, score: Tensor, z: Tensor, snr: float, alpha: float = 1.0,
                     norm: str = "batch") -> Tensor:
    r"""One Langevin corrector step :math:`x + \epsilon s + \sqrt{2\epsilon} z` with
    :math:`\epsilon = 2 a (r\lVert z\rVert/\lVert s\rVert)^2` (per sample or batch-averaged norms)."""
    ratio = _norms(z, norm) / _norms(score, norm)
    eps = (2.0 * alpha * snr * snr) * ratio.square()
    return torch.addcmul(torch.addcmul(x, eps, score), eps.mul(2.0).sqrt_(), z)


class PredictorCorrector(SDESolver):
    __doc__ = __doc__
    name = "pc"
    order = 1  # the predictor's; see the module docstring
    strong_order = None
    weak_order = None
    strong_order_additive = None
    weak_order_additive = None
    sde_type = "ito"
    needs = "prediction"  # the corrector asks the field for its score (``term.predict``)
    targets = ("drift", "score")

    def __init__(self, snr: float = 0.16, corrector_steps: int = 1, alpha: float = 1.0, norm: str = "batch"):
        check_int("corrector_steps", corrector_steps, minimum=0, error=SdeflowValueError)
        for nm, v in (("snr", snr), ("alpha", alpha)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
                raise SdeflowValueError(f"{nm} must be a finite number > 0, got {v!r}")
        if norm not in ("sample", "batch"):
            raise SdeflowValueError(f"norm must be 'sample' (per-sample norms, the paper's algorithm) or 'batch' "
                                    f"(batch-averaged norms, the released code), got {norm!r}")
        self.snr, self.alpha, self.norm = float(snr), float(alpha), norm
        # batch-averaged norms couple the samples of a batch (sdeflow.testing checks the declaration)
        self.batch_independent = norm == "sample"
        self.corrector_steps = corrector_steps
        self.evals_per_step = 1 + corrector_steps
        self.normals_per_step = 1 + corrector_steps

    def nodes(self):
        """The predictor's evaluation at the step's start, then ``M`` corrector evaluations at its end."""
        return [0.0] + [1.0] * self.corrector_steps

    def step(self, term, k, x, t0, t1, noise, state):
        M = self.corrector_steps
        j = k * (1 + M)
        h = t1 - t0
        zs = noise.draw(k, t0, t1, term.noise_like(x), count=1 + M)
        zs = (zs,) if M == 0 else zs
        out = torch.add(x, term.drift(j, x), alpha=h)
        if term.is_sde:
            add_noise(out, term.diffusion(j, x), zs[0], math.sqrt(abs(h)))
        for i in range(1, M + 1):
            s = term.predict(j + i, out, "score")
            out = langevin_correct(out, s, zs[i], self.snr, self.alpha, self.norm)
        return out

    def __repr__(self):
        return (f"PredictorCorrector(snr={self.snr:g}, corrector_steps={self.corrector_steps}, "
                f"alpha={self.alpha:g}, norm={self.norm!r})")
