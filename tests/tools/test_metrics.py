"""Sample metrics against closed forms."""

import math

import torch

import sdeflow as sf
from sdeflow.metrics import mmd2, mode_weights, moment_errors, sliced_w2

D = torch.float64


def test_sliced_w2_of_shifted_gaussians():
    """For X and X + s (same samples), every projection is shifted by theta.s: SW2^2 = E (theta.s)^2 = |s|^2/d."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 3, generator=g, dtype=D)
    s = torch.tensor([1.0, -2.0, 0.5], dtype=D)
    P = 4000
    got = sliced_w2(x, x + s, n_projections=P)
    want = float(s.norm()) / math.sqrt(3)
    # in 3-D, theta.s = |s| u with u uniform on [-1, 1]: Var (theta.s)^2 = |s|^4 (1/5 - 1/9); delta method
    se = float(s.norm() ** 2) * math.sqrt(4.0 / 45.0) / math.sqrt(P) / (2 * want)
    assert abs(got - want) < 4 * se
    assert sliced_w2(x, x) == 0.0


def test_sliced_w2_handles_unequal_sizes():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3000, 2, generator=g, dtype=D)
    y = torch.randn(1000, 2, generator=g, dtype=D)
    assert sliced_w2(x, y) < 0.1  # same law: empirical distance of order n^-1/2
    assert sliced_w2(x, y + 3.0) > 2.0


def test_mmd_is_small_for_equal_laws_and_large_otherwise():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(500, 2, generator=g, dtype=D), torch.randn(500, 2, generator=g, dtype=D)
    # unbiased: mean zero under equal laws; its sd is O(1/n)
    assert abs(mmd2(x, y)) < 0.01 and mmd2(x, y + 1.0) > 0.1


def test_mode_weights_and_moments():
    target = sf.eight_gaussians()
    x = target.sample(80000, generator=torch.Generator().manual_seed(3), dtype=D)
    w = mode_weights(x, target.means)
    assert torch.all((w - 0.125).abs() < 4 * math.sqrt(0.125 * 0.875 / 80000))
    err = moment_errors(x, target.mean(), target.covariance())
    assert err["mean"] < 4 * math.sqrt(float(torch.trace(target.covariance())) / 80000)
