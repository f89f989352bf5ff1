"""Constants the tests of several layers share (importable by name from every layer: ``pythonpath`` in
pyproject.toml). Fixtures live in ``conftest.py``; catalogues with their own page in ``paths_catalogue.py``,
``references.py`` and ``validation_cases.py``."""

from pathlib import Path

import sdeflow as sf

# the checkout (a test file's own depth in tests/ does not matter)
ROOT = Path(__file__).resolve().parents[1]

# the suite's standard target: N(mu, diag(c)) in 2-d, off-centre and anisotropic (variances 4x apart), so that
# a sign, a scale or a swapped coordinate shows; every marginal, field and probability-flow solution is exact
GAUSSIAN = sf.Gaussian([1.0, -0.5], [0.5, 2.0])
