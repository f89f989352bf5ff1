"""Benchmark problems: a target with an exact field, a path, the sampling window, and the exact or
float64 reference answer from the same initial noise.

``register_problem(Problem(...))`` adds a user problem to ``sdeflow bench``.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field

import torch

from .. import analytic
from ..analytic import GaussianMixture
from ..errors import SdeflowValueError, unknown_name
from ..paths import EDM, VE, GaussianPath

__all__ = ["Problem", "PROBLEMS", "register_problem", "get_problem"]


@dataclass
class Problem:
    """A sampling problem with a known answer.

    ``target`` provides the exact field (of ``kind``) and the reference flow; ``path`` is the path the field
    is posed on; samplers integrate from ``t_max`` to ``t_min`` (then a final denoising step if
    ``final_denoise``), in ``integration_path`` coordinates if given.
    """

    name: str
    target: GaussianMixture
    path: GaussianPath
    kind: str = "data"
    t_max: float = 1.0
    t_min: float | None = None
    final_denoise: bool = True
    integration_path: GaussianPath | None = None
    description: str = ""
    _ref_cache: dict = dc_field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if self.t_min is None:
            self.t_min = self.path.t_min

    @property
    def dim(self) -> int:
        return self.target.dim

    def field(self):
        return self.target.field(self.kind)

    def initial(self, n: int, seed: int, dtype=torch.float64, device="cpu") -> torch.Tensor:
        """``n`` draws of the prior at ``t_max``, reproducible from ``seed``."""
        g = torch.Generator().manual_seed(seed)
        x = self.path.prior_sample((n, self.dim), t=self.t_max, generator=g, dtype=torch.float64)
        return x.to(dtype=dtype, device=device)

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """The exact (Gaussian) or float64 high-accuracy (mixture) probability-flow answer for ``x``."""
        key = (x.data_ptr(), tuple(x.shape))
        if key not in self._ref_cache:
            self._ref_cache.clear()
            self._ref_cache[key] = self.target.reference_flow(x, self.path, self.t_max, self.t_min,
                                                              final_denoise=self.final_denoise)
        return self._ref_cache[key]

    def sample_kwargs(self) -> dict:
        return dict(t_max=self.t_max, t_min=self.t_min, final_denoise=self.final_denoise,
                    integration_path=self.integration_path)


def _ve_edm(name, target, description):
    return Problem(name, target, VE(0.002, 80.0), kind="data", t_max=1.0, t_min=0.0, final_denoise=True,
                   integration_path=EDM(80.0), description=description)


PROBLEMS: dict[str, Problem] = {}


def register_problem(problem: Problem) -> Problem:
    """Add ``problem`` to the registry used by ``sdeflow bench --problems``."""
    if not isinstance(problem, Problem):
        raise SdeflowValueError("register_problem takes a sdeflow.bench.Problem")
    PROBLEMS[problem.name] = problem
    return problem


register_problem(_ve_edm("eight_gaussians", analytic.eight_gaussians(),
                         "the seed articles' 8-mode mixture; VE sigma 80 -> 0.002, then a step to sigma = 0"))
register_problem(_ve_edm("two_blobs", analytic.two_blobs(), "two unequal anisotropic blobs; VE as above"))
register_problem(_ve_edm("ring20_wide", analytic.ring(20, radius=8.0, std=0.4),
                         "20 modes on a circle of radius 8, std 0.4 (another scale and mode count); VE as above"))
register_problem(_ve_edm("eight_gaussians_small", analytic.eight_gaussians(std=0.05, scale=0.5),
                         "the 8-mode layout at a quarter of the scale, std 0.05 (sharper modes); VE as above"))
register_problem(_ve_edm("gaussian16", analytic.Gaussian(torch.linspace(-1.0, 1.0, 16),
                                                         torch.logspace(-1.0, 0.5, 16)),
                         "a 16-dimensional Gaussian with variances 0.1..3.2; exact flow"))


def get_problem(name: str) -> Problem:
    if name not in PROBLEMS:
        raise unknown_name("problem", name, PROBLEMS)
    return PROBLEMS[name]
