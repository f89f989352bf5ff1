"""A user-written solver that declares the wrong order, caught by sdeflow.testing in a few lines.

``SloppyMidpoint`` means to be the explicit midpoint method, x' = x + h f(x + h/2 f(x, t), t + h/2) (order 2),
but its stage takes a full step, x + h f(x, t), where the half step belongs. It still runs, still lands near
the right samples, and still declares order 2 -- only its measured order (1) gives it away.

Run: python examples/testing_wrong_order.py
"""

import torch

import sdeflow as sf
from sdeflow.solvers import ODESolver
from sdeflow.testing import assert_ode_order, assert_order, ode_order


class SloppyMidpoint(ODESolver):
    """x' = x + h f(x + h f(x, t), t + h/2): the midpoint method with a bug (should be h/2 in the stage)."""

    order = 2  # what the author believes
    evals_per_step = 2

    def nodes(self):
        return [0.0, 0.5]  # the two evaluations of a step, as fractions of it

    def step(self, term, k, x, t0, t1, noise, state):
        h = t1 - t0
        f0 = term.drift(2 * k, x)
        return x + h * term.drift(2 * k + 1, x + h * f0)  # bug: h * f0 instead of 0.5 * h * f0


class Midpoint(SloppyMidpoint):
    """The same solver with the bug fixed."""

    def step(self, term, k, x, t0, t1, noise, state):
        h = t1 - t0
        return x + h * term.drift(2 * k + 1, x + 0.5 * h * term.drift(2 * k, x))


STEPS = (16, 32, 64, 128)  # halving step sizes; errors are fitted as C h^p


def main():
    # 1. the test a user would write: measure the order on the exact Gaussian flow, compare with the claim
    bad = ode_order(SloppyMidpoint(), steps=STEPS)  # errors per level, fitted slope ± stderr, declared order
    try:
        assert_order(bad)  # the same as assert_ode_order(SloppyMidpoint(), steps=STEPS)
    except AssertionError as e:
        print("caught:\n" + str(e))
    else:
        raise SystemExit("the wrong order was not caught")
    # 2. the fixed solver passes the same check, on another path and field kind
    good = assert_ode_order(Midpoint(), steps=STEPS, path=sf.VE(), kind="data")
    print("\nfixed:\n" + str(good))
    return bad, good


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
