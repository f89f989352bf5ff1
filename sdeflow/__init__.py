"""sdeflow: verified ODE/SDE solvers for diffusion, score-based, flow-matching and energy-based models.

The layers (data flows down): paths (:mod:`sdeflow.paths`) -> fields (:mod:`sdeflow.fields`) -> solvers
(:mod:`sdeflow.solvers`) -> samplers (:func:`sample`, :func:`solve`), with exact oracles
(:mod:`sdeflow.analytic`) as ground truth. Time runs from 0 (data) to 1 (noise).
"""

from . import (analytic, conversions, gradients, grids, io, langevin, likelihood, losses, noise, paths, solvers,
               stability, train, window)
from .adapters import ColumnTime, FlipTime, IndexTime, SigmaTime, from_diffusers, from_k_diffusion
from .analytic import Gaussian, GaussianMixture, eight_gaussians, ring, two_blobs
from .errors import (BudgetError, GradientError, InputMutationError, NonFiniteError, SdeflowTypeError,
                     SdeflowValueError, SingularityError, UnstableError)
from .fields import (ClippedField, ConsistencyField, DataField, DynamicThresholding, EnergyField, Field,
                     FlowScoreField, GuidedField, NoiseField, ScoreField, SumField, VelocityField, VPredictionField,
                     classifier_free_guidance)
from .likelihood import LikelihoodResult, log_likelihood
from .noise import BrownianPath, GeneratorNoise, PerSampleNoise, TableNoise
from .paths import EDM, VE, VP, AffinePath, CosineVP, DiscreteVP, GaussianPath, LinearFlow, SubVP
from .sample import sample
from . import conditioning, editing
from .editing import Inpaint, inpaint, invert, sdedit
from .solution import Solution
from .solve import solve

__version__ = "0.1.0"  # the one place (pyproject.toml reads it)

# modules with heavier imports, loaded on first attribute access: ``sdeflow.metrics`` works without an import
_LAZY_MODULES = ("metrics", "grid_opt", "testing", "bench", "distributed", "cli", "integrations")

__all__ = [
    "sample", "solve", "Solution", "log_likelihood", "LikelihoodResult", "invert", "sdedit", "inpaint", "Inpaint",
    "GaussianPath", "VP", "CosineVP", "SubVP", "VE", "EDM", "LinearFlow", "AffinePath", "DiscreteVP",
    "Field", "ScoreField", "NoiseField", "DataField", "VelocityField", "VPredictionField", "EnergyField", "SumField",
    "ConsistencyField",
    "FlowScoreField", "ClippedField", "DynamicThresholding", "classifier_free_guidance", "GuidedField",
    "FlipTime", "ColumnTime", "IndexTime", "SigmaTime", "from_diffusers", "from_k_diffusion",
    "Gaussian", "GaussianMixture", "eight_gaussians", "two_blobs", "ring",
    "GeneratorNoise", "PerSampleNoise", "BrownianPath", "TableNoise",
    "NonFiniteError", "SdeflowValueError", "SdeflowTypeError", "SingularityError", "UnstableError",
    "InputMutationError", "BudgetError", "GradientError",
    "analytic", "conditioning", "conversions", "editing", "gradients", "grids", "io", "langevin", "likelihood",
    "losses", "noise", "paths", "solvers", "stability", "train", "window",
]


def __getattr__(name: str):
    if name in _LAZY_MODULES:
        import importlib

        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'sdeflow' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_MODULES))
