"""The paths every test sweeps (one place, so a new path is tested everywhere)."""

import torch

import sdeflow as sf


def affine_sqrt():
    return sf.AffinePath(lambda t: 1 - t, lambda t: torch.sqrt(t))


PATHS = {
    "VP": sf.VP,
    "SubVP": sf.SubVP,
    "CosineVP": sf.CosineVP,
    "VE": sf.VE,
    "LinearFlow": sf.LinearFlow,
    "EDM": sf.EDM,
    "AffineSqrt": affine_sqrt,
    "DiscreteVP": sf.DiscreteVP,
}

# paths with alpha(1) = 0 (log-SNR -inf at t = 1): noise/score kinds cannot be converted there
ALPHA_ZERO_AT_1 = {"CosineVP", "LinearFlow", "AffineSqrt"}
