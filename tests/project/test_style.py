"""One style, kept by ruff (``[tool.ruff]`` in pyproject.toml): the tree is clean, and the check can fail."""

import shutil
import subprocess
import sys

import pytest

from shared import ROOT



def _ruff(*args, cwd=ROOT):
    cmd = [shutil.which("ruff")] if shutil.which("ruff") else [sys.executable, "-m", "ruff"]
    return subprocess.run([*cmd, "check", "--no-cache", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def ruff_available():
    try:
        out = _ruff("--version")
    except (FileNotFoundError, subprocess.TimeoutExpired):
        out = None
    if out is None or "ruff" not in (out.stdout + out.stderr).lower():
        pytest.fail("ruff is part of the dev extra (pip install -e '.[dev]'); install it to run the style check")


def test_the_tree_passes_ruff(ruff_available):
    out = _ruff(".")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


def test_the_check_fails_on_a_violation(ruff_available, tmp_path):
    """The same configuration, on a file with an unused import and a redefinition: ruff must refuse it."""
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (tmp_path / "bad.py").write_text("import math\n\n\ndef f():\n    return 1\n\n\ndef f():\n    return 2\n")
    out = _ruff(".", cwd=tmp_path)
    assert out.returncode != 0 and "F401" in out.stdout and "F811" in out.stdout, out.stdout
