"""Benchmark problems: a path, an exact or reference field, a target, the sampling window, and the exact or
float64 reference answer from the same initial noise.

Built in: the 2-D mixtures ``eight_gaussians``, ``two_blobs``, ``ring20_wide``, ``eight_gaussians_small``
and the Gaussians ``gaussian2``, ``gaussian16``, ``gaussian64`` (exact probability-flow map), the other regimes
``ring64`` (64 modes), ``narrow_unequal`` (narrow modes of unequal weights and widths), ``aniso16`` /
``aniso64`` (anisotropic mixtures, per-axis stds over two decades) and ``image64`` (an 8x8 Gaussian with a
power-law spectrum), all on the VE
path sigma 80 -> 0.002 with a final step to sigma = 0, integrated in EDM coordinates; and
``eight_gaussians_ddpm``, the 8-mode mixture on DDPM's discrete schedule (``DiscreteVP()``, eps field).

A user problem (any path, any field, samples of the target) is added with :func:`register_problem`::

    from sdeflow.bench import Problem, register_problem
    register_problem(Problem("mine", path=sf.VP(), exact_field=sf.NoiseField(my_net),
                             target_sampler=lambda n, g: my_data(n, g), dim=2))

Without an analytic ``target`` the pathwise reference is a float64 solve of the same field with
``reference_solver`` (default RK4 on 1024 log-SNR steps), and the weak metrics compare to
``target_sampler``'s samples (skipped, with a note, when there is none).
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Callable

import torch

from .. import analytic
from ..analytic import GaussianMixture
from ..errors import SdeflowTypeError, SdeflowValueError, unknown_name
from ..fields import Field
from ..paths import EDM, VE, DiscreteVP, GaussianPath

__all__ = ["Problem", "PROBLEMS", "register_problem", "get_problem"]


@dataclass
class Problem:
    """A sampling problem with a known (exact or reference) answer.

    Args:
        name: registry key (``sdeflow bench --problems name``).
        target: a :class:`~sdeflow.analytic.GaussianMixture` / :class:`~sdeflow.analytic.Gaussian` (exact
            field, exact or float64 reference flow, exact samples); or None with ``exact_field`` given.
        path: the path the field is posed on.
        kind: what ``target``'s exact field predicts (``"data"``, ``"score"``, ...).
        t_max, t_min, final_denoise, integration_path: the sampling window, as in :func:`sdeflow.sample`.
        exact_field: a user field (exact, or a trusted reference network); overrides ``target``'s.
        target_sampler: ``f(n, generator) -> (n, dim)`` exact samples of the distribution an exact sampler
            returns (for the weak metrics) when ``target`` is None.
        dim: event size when ``target`` is None.
        reference_solver: ``(solver, steps, grid)`` of the float64 reference solve when ``target`` is None, or
            ``"dop853"``: SciPy's DOP853 in log-SNR time at ``rtol = atol = reference_rtol``
            (:func:`sdeflow.bench.learned.field_reference`; any field).
        reference_rtol: the tolerance of the ``"dop853"`` reference.
        cache_key: with ``"dop853"``, a string naming the field (e.g. its weights' SHA-256): the references are
            cached on disk under :func:`sdeflow.bench.learned.cache_dir`, keyed by it and the initial noise.
    """

    name: str
    target: GaussianMixture | None = None
    path: GaussianPath | None = None
    kind: str = "data"
    t_max: float = 1.0
    t_min: float | None = None
    final_denoise: bool = True
    integration_path: GaussianPath | None = None
    description: str = ""
    exact_field: Field | None = None
    target_sampler: Callable | None = None
    dim: int | None = None
    reference_solver: tuple | str = ("rk4", 1024, "log_snr")
    reference_rtol: float = 1e-10
    cache_key: str | None = None
    _ref_cache: dict = dc_field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise SdeflowValueError("Problem name must be a non-empty string")
        if not isinstance(self.path, GaussianPath):
            raise SdeflowTypeError(f"Problem {self.name!r}: path must be a GaussianPath (VE(), VP(), ...), got "
                                   f"{type(self.path).__name__}")
        if self.target is None and self.exact_field is None:
            raise SdeflowValueError(f"Problem {self.name!r}: give target= (an analytic GaussianMixture) or "
                                    f"exact_field= (an exact or reference sdeflow Field)")
        if self.target is not None and not isinstance(self.target, GaussianMixture):
            raise SdeflowTypeError(f"Problem {self.name!r}: target must be a sdeflow GaussianMixture/Gaussian; "
                                   f"for another target pass exact_field= and target_sampler=")
        if self.exact_field is not None and not isinstance(self.exact_field, Field):
            raise SdeflowTypeError(f"Problem {self.name!r}: exact_field must be a sdeflow Field (wrap a network: "
                                   f"NoiseField(net), DataField(net), ...), got {type(self.exact_field).__name__}")
        if self.target is None and not (isinstance(self.dim, int) and self.dim >= 1):
            raise SdeflowValueError(f"Problem {self.name!r}: without target=, give dim= (the event size)")
        if isinstance(self.reference_solver, str) and self.reference_solver != "dop853":
            raise SdeflowValueError(f"Problem {self.name!r}: reference_solver must be (solver, steps, grid) or "
                                    f"'dop853', got {self.reference_solver!r}")
        if self.target is not None:
            self.dim = self.target.dim
        if self.t_min is None:
            self.t_min = self.path.t_min

    @property
    def exact(self) -> bool:
        """True when the reference flow and target samples come from an analytic target."""
        return self.target is not None

    def field(self) -> Field:
        """The field the samplers integrate: ``exact_field``, else the target's exact field of ``kind``."""
        return self.exact_field if self.exact_field is not None else self.target.field(self.kind)

    def initial(self, n: int, seed: int, dtype=torch.float64, device="cpu") -> torch.Tensor:
        """``n`` draws of the prior at ``t_max``, reproducible from ``seed``."""
        g = torch.Generator().manual_seed(seed)
        x = self.path.prior_sample((n, self.dim), t=self.t_max, generator=g, dtype=torch.float64)
        return x.to(dtype=dtype, device=device)

    def reference(self, x: torch.Tensor, t_max: float | None = None, t_min: float | None = None) -> torch.Tensor:
        """The probability-flow answer for ``x`` in float64: exact (Gaussian), a DOP853 solve at tolerance
        1e-10 (mixture), or a float64 solve of ``exact_field`` with ``reference_solver`` (user problem; for
        ``"dop853"`` the field's own final denoising step ends it, as it ends the samplers).
        ``t_max`` / ``t_min`` override the problem's window (a peer that chooses its own timesteps); the
        answers for one ``x`` are cached per window."""
        t_max = self.t_max if t_max is None else float(t_max)
        t_min = self.t_min if t_min is None else float(t_min)
        key = (x.data_ptr(), tuple(x.shape), x.dtype)
        if self._ref_cache.get("x") != key:
            self._ref_cache.clear()
            self._ref_cache["x"] = key
        if (t_max, t_min) not in self._ref_cache:
            if self.target is not None and self.exact_field is None:
                ref = self.target.reference_flow(x, self.path, t_max, t_min, final_denoise=self.final_denoise)
            elif self.reference_solver == "dop853":
                from .learned import field_reference

                ref = field_reference(self.field(), self.path, x, t_max, t_min, final_denoise=self.final_denoise,
                                      rtol=self.reference_rtol, cache_key=self.cache_key)
            else:
                from ..sample import sample

                solver, steps, grid = self.reference_solver
                kw = dict(self.sample_kwargs(), t_max=t_max, t_min=t_min)
                ref = sample(self.path, self.field(), solver, steps=steps, grid=grid,
                             x_init=x.to(torch.float64), **kw).x
            self._ref_cache[(t_max, t_min)] = ref
        return self._ref_cache[(t_max, t_min)]

    def target_samples(self, n: int, generator: torch.Generator) -> torch.Tensor | None:
        """``n`` exact samples (float64) of what an exact sampler returns: the marginal at ``t_min``, then
        the exact denoiser if ``final_denoise`` (for a mixture target), or ``target_sampler``'s; None if
        neither is known."""
        if self.target is not None and self.exact_field is None:
            x = self.target.marginal(self.path, self.t_min).sample(n, generator=generator, dtype=torch.float64)
            return self.target.predict(x, float(self.t_min), self.path, "data") if self.final_denoise else x
        if self.target_sampler is not None:
            return torch.as_tensor(self.target_sampler(n, generator)).to(torch.float64).reshape(n, -1)
        return None

    def sample_kwargs(self) -> dict:
        return dict(t_max=self.t_max, t_min=self.t_min, final_denoise=self.final_denoise,
                    integration_path=self.integration_path)


def _ve_edm(name, target, description):
    return Problem(name, target, VE(0.002, 80.0), kind="data", t_max=1.0, t_min=0.0, final_denoise=True,
                   integration_path=EDM(80.0), description=description)


PROBLEMS: dict[str, Problem] = {}


def register_problem(problem: Problem) -> Problem:
    """Add ``problem`` to the registry used by :func:`~sdeflow.bench.run_bench` and ``sdeflow bench
    --problems`` (replacing one of the same name); returns it."""
    if not isinstance(problem, Problem):
        raise SdeflowTypeError(f"register_problem takes a sdeflow.bench.Problem, got {type(problem).__name__}")
    PROBLEMS[problem.name] = problem
    return problem


def _gaussian(d: int) -> analytic.Gaussian:
    """Means spread over [-1, 1], variances 0.1 .. 3.2 (a 32x spread of scales: stiff and slow directions)."""
    return analytic.Gaussian(torch.linspace(-1.0, 1.0, d), torch.logspace(-1.0, 0.5, d))


register_problem(_ve_edm("eight_gaussians", analytic.eight_gaussians(),
                         "the seed articles' 8-mode mixture; VE sigma 80 -> 0.002, then a step to sigma = 0"))
register_problem(_ve_edm("two_blobs", analytic.two_blobs(), "two unequal anisotropic blobs; VE as above"))
register_problem(_ve_edm("ring20_wide", analytic.ring(20, radius=8.0, std=0.4),
                         "20 modes on a circle of radius 8, std 0.4 (another scale and mode count); VE as above"))
register_problem(_ve_edm("eight_gaussians_small", analytic.eight_gaussians(std=0.05, scale=0.5),
                         "the 8-mode layout at a quarter of the scale, std 0.05 (sharper modes); VE as above"))
for _d in (2, 16, 64):
    register_problem(_ve_edm(f"gaussian{_d}", _gaussian(_d),
                             f"a {_d}-dimensional Gaussian with variances 0.1..3.2; exact flow; VE as above"))
# problems of other regimes (issue 14: accuracy that generalises beyond the 8-mode mixture)
register_problem(_ve_edm("ring64", analytic.ring(64, radius=16.0, std=0.3),
                         "64 modes on a circle of radius 16, std 0.3 (many modes, wide); VE as above"))
register_problem(_ve_edm("narrow_unequal", analytic.unequal_modes(),
                         "6 narrow 2-D modes, weights 0.02..0.5 and stds 0.3..0.01 (1.5 decades; the heaviest the "
                         "narrowest); VE as above"))
for _d in (16, 64):
    register_problem(_ve_edm(f"aniso{_d}", analytic.anisotropic_mixture(_d),
                             f"6 modes in {_d}-D, per-axis stds 0.01..1 (two decades) in a random order per mode; "
                             f"VE as above"))
register_problem(_ve_edm("image64", analytic.power_law_gaussian(8),
                         "an 8x8 image-like Gaussian: DCT coefficients of variance ~ (1+|k|)^-2 (mean pixel variance "
                         "0.25), in DCT coordinates (every solver is equivariant under orthogonal maps of the "
                         "state, so the pathwise errors are the pixel basis's); exact flow; VE as above"))
register_problem(Problem("eight_gaussians_ddpm", analytic.eight_gaussians(), DiscreteVP(), kind="noise",
                         t_max=1.0, final_denoise=True,
                         description="the 8-mode mixture behind an exact noise predictor on DDPM's schedule "
                                     "(beta 1e-4..0.02, T = 1000), timestep 999 -> 0, then the final "
                                     "denoising; peers: diffusers' DDPM schedulers"))


def _register_learned():
    from .digits import problem as digits_problem
    from .learned import build_problems

    for p in build_problems():
        register_problem(p)
    register_problem(digits_problem())  # its network is trained (or loaded) on first use only


_register_learned()


def get_problem(name: str) -> Problem:
    if name not in PROBLEMS:
        raise unknown_name("problem", name, PROBLEMS)
    return PROBLEMS[name]
