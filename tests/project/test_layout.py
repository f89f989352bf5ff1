"""The tests' own layout (tests/README.md): every test file sits in a layer's folder, every folder is a
package listed in the README, and every test path the documentation names exists."""

import re

from shared import ROOT

TESTS = ROOT / "tests"


def _layers():
    readme = (TESTS / "README.md").read_text()
    return re.findall(r"^\| `(\w+)/` \|", readme, re.M)


def test_every_test_file_is_in_a_layer_folder_listed_in_the_readme():
    layers = _layers()
    assert {"paths", "fields", "solvers", "sampling", "tools", "project"} <= set(layers)
    flat = sorted(p.name for p in TESTS.glob("test_*.py"))
    assert not flat, f"move these into a layer's folder (tests/README.md): {flat}"
    folders = sorted(p.name for p in TESTS.iterdir() if p.is_dir() and any(p.glob("test_*.py")))
    assert folders == sorted(layers), "tests/README.md lists the folders that hold tests"


def test_every_layer_folder_is_a_package():
    """Two layers may hold test modules of the same name only as packages (pytest's default import mode)."""
    assert (TESTS / "__init__.py").is_file()
    missing = [d for d in _layers() if not (TESTS / d / "__init__.py").is_file()]
    assert not missing, f"add __init__.py to tests/{missing}"


def test_test_paths_named_in_the_documentation_exist():
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted(TESTS.rglob("*.md")),
             *sorted((ROOT / "docs").rglob("*.md"))]
    stale = []
    for page in pages:
        for name in re.findall(r"tests/[\w/]+\.(?:py|md)\b", page.read_text()):
            if not (ROOT / name).is_file():
                stale.append(f"{page.relative_to(ROOT)}: {name}")
    assert not stale, "\n".join(stale)
