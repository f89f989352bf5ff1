"""Every tutorial script under docs/tutorials runs (with --small) and its own checks pass.

The scripts assert what theory says (exact oracles, Monte Carlo bands of four standard errors, declared
orders), so running them is a test. Each runs in a fresh interpreter (a tutorial may register a solver or a
bench problem) with one intra-op thread, which is fastest for these small problems on a shared machine.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared import ROOT

TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.py"))


def test_every_tutorial_page_includes_its_script():
    """Each tutorial .md includes a script that exists, and each script is shown on a page."""
    pages = sorted((ROOT / "docs" / "tutorials").glob("*.md"))
    shown = set()
    for page in pages:
        for line in page.read_text().splitlines():
            if line.startswith('--8<-- "docs/tutorials/'):
                name = line.split('"')[1]
                assert (ROOT / name).is_file(), f"{page.name} includes missing {name}"
                shown.add(name)
    assert shown == {f"docs/tutorials/{p.name}" for p in TUTORIALS}


@pytest.mark.parametrize("script", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs(script):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    out = subprocess.run([sys.executable, str(script), "--small"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, f"{script.name} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
