"""The documentation site: it builds with ``mkdocs build --strict``, and its tables agree with the code.

``docs/concepts/conversions.md`` tabulates every conversion between field kinds and every path's
``(alpha, sigma, t_min)``; each cell is written out here and checked, on every path, against an exact oracle
and against ``Field.as_kind``.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import torch

import sdeflow as sf
from sdeflow.fields import NetField

ROOT = pathlib.Path(__file__).resolve().parents[2]

PATHS = {
    "VP": sf.VP(), "SubVP": sf.SubVP(), "CosineVP": sf.CosineVP(), "VE": sf.VE(), "EDM": sf.EDM(),
    "LinearFlow": sf.LinearFlow(), "AffinePath": sf.AffinePath(lambda t: 1 - t, lambda t: t.sqrt()),
    "DiscreteVP": sf.DiscreteVP(),
}


def _mkdocs_build(site, config=ROOT / "mkdocs.yml"):
    """``mkdocs build --strict`` as the README runs it. Not ``--quiet``: that raises the log level above
    WARNING, and strict mode counts only the warnings it logs, so a quiet strict build passes with warnings."""
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def _warnings(out) -> list[str]:
    return [line for line in (out.stdout + out.stderr).splitlines() if line.lstrip().startswith("WARNING")]


needs_mkdocs = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
    reason="mkdocs/mkdocstrings not installed (pip install -e '.[dev]' installs them)")


@needs_mkdocs
def test_mkdocs_build_strict(tmp_path):
    """The site builds with ``mkdocs build --strict`` and logs no warning at all."""
    out = _mkdocs_build(tmp_path / "site")
    assert out.returncode == 0 and not _warnings(out), (f"mkdocs build --strict failed or warned:\n"
                                                        f"{out.stdout}\n{out.stderr}")
    site = tmp_path / "site"
    assert (site / "index.html").is_file()
    # the API reference: parameters documented together ("steps / nfe: ...") are split, so each shows its own
    # default; only sample's path and field are required
    params = _parameters((site / "api" / "sample" / "index.html").read_text(), "sdeflow.sample.sample")
    assert {"steps", "nfe", "t_max", "t_min", "x_init", "n", "generator", "noise"} <= set(params), params
    assert {name for name, required in params.items() if required} == {"path", "field"}, params
    for page in site.glob("api/**/index.html"):
        grouped = [m for m in re.findall(r'<tr class="doc-section-item">\s*<td>\s*<code>([^<]+)</code>',
                                         page.read_text()) if "," in m or "/" in m]
        assert not grouped, f"{page}: parameters rendered as one name: {grouped}"
    text = (site / "api" / "train" / "index.html").read_text()
    assert "sdeflow.train.fit" in text and "Adam" in text  # fit has a docstring on its page


def _parameters(page: str, anchor: str) -> dict[str, bool]:
    """``{name: required}`` from the parameter table of the object ``anchor`` on a rendered API page."""
    start = page.index(f'id="{anchor}"')
    table = page[page.index("<table", start):page.index("</table>", start)]
    rows = re.findall(r'<tr class="doc-section-item">(.*?)</tr>', table, re.S)
    return {re.search(r"<code>([^<]+)</code>", r).group(1): "<em>required</em>" in r for r in rows}


@needs_mkdocs
def test_mkdocs_build_fails_on_a_warning(tmp_path):
    """The check above can fail: the same build of a copy of the docs with one broken link fails and says why."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    (tmp_path / "docs" / "index.md").write_text((ROOT / "docs" / "index.md").read_text()
                                                + "\n[broken](no_such_page.md)\n")
    config = (ROOT / "mkdocs.yml").read_text().replace("docs_dir: docs", f"docs_dir: {tmp_path / 'docs'}")
    assert config != (ROOT / "mkdocs.yml").read_text()
    (tmp_path / "mkdocs.yml").write_text(config)
    out = _mkdocs_build(tmp_path / "site", tmp_path / "mkdocs.yml")
    assert out.returncode != 0
    assert any("no_such_page.md" in w for w in _warnings(out)), out.stdout + out.stderr


# ---- docs/concepts/conversions.md: the table, cell by cell ---------------------------------------
def _table(kind_from, kind_to, x, n, a, s, da, ds):
    """The cell (row ``kind_from``, column ``kind_to``) of the conversion table, as written in the docs."""
    f = da / a
    g2 = 2 * s * ds - 2 * f * s * s
    det = ds * a - s * da
    cells = {
        ("noise", "noise"): lambda: n,
        ("noise", "data"): lambda: (x - s * n) / a,
        ("noise", "score"): lambda: -n / s,
        ("noise", "velocity"): lambda: f * x + (ds - f * s) * n,
        ("data", "noise"): lambda: (x - a * n) / s,
        ("data", "data"): lambda: n,
        ("data", "score"): lambda: -(x - a * n) / s**2,
        ("data", "velocity"): lambda: ds / s * x + (da - ds / s * a) * n,
        ("score", "noise"): lambda: -s * n,
        ("score", "data"): lambda: (x + s * s * n) / a,
        ("score", "score"): lambda: n,
        ("score", "velocity"): lambda: f * x - 0.5 * g2 * n,
        ("velocity", "noise"): lambda: (a * n - da * x) / det,
        ("velocity", "data"): lambda: (ds * x - s * n) / det,
        ("velocity", "score"): lambda: -(a * n - da * x) / (s * det),
        ("velocity", "velocity"): lambda: n,
    }
    return cells[(kind_from, kind_to)]()


def _energy_row(kind_to, x, gradE, a, s, da, ds):
    f = da / a
    g2 = 2 * s * ds - 2 * f * s * s
    return {"noise": s * gradE, "data": (x - s * s * gradE) / a, "score": -gradE,
            "velocity": f * x + 0.5 * g2 * gradE}[kind_to]


KINDS = ("noise", "data", "score", "velocity")


@pytest.mark.parametrize("pname", list(PATHS))
def test_conversion_table(pname, one_thread):
    path = PATHS[pname]
    g = torch.Generator().manual_seed(1)
    target = sf.Gaussian(torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([0.3, 2.0], dtype=torch.float64))
    t = 0.4  # a DiscreteVP knot (400/1000) and an interior point of every path
    x = torch.randn(16, 2, generator=g, dtype=torch.float64) * 1.5
    a, s, da, ds = (c.reshape(()) for c in path.coefficients(torch.tensor(t, dtype=torch.float64)))
    for frm in KINDS:
        n = target.predict(x, t, path, frm)
        field = NetField(lambda x_, t_, k=frm: target.predict(x_, t_, path, k), frm)
        for to in KINDS:
            exact = target.predict(x, t, path, to)
            torch.testing.assert_close(_table(frm, to, x, n, a, s, da, ds), exact, rtol=1e-10, atol=1e-10,
                                       msg=f"docs table cell {frm} -> {to} on {pname}")
            torch.testing.assert_close(field.as_kind(to, x, t, path), exact, rtol=1e-10, atol=1e-10)
    # energy row: E = |x - alpha mu|^2 / (2 V) is the Gaussian's energy at t (score -grad E)
    m, V = target.moments(path, t)
    energy = sf.EnergyField(lambda x_, t_: ((x_ - m) ** 2 / (2 * V)).sum(-1))
    gradE = (x - m) / V
    for to in KINDS:
        exact = target.predict(x, t, path, to)
        torch.testing.assert_close(_energy_row(to, x, gradE, a, s, da, ds), exact, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(energy.as_kind(to, x, t, path), exact, rtol=1e-10, atol=1e-10)


def test_path_table():
    """The (alpha, sigma, default t_min) columns of the path table."""
    t = torch.tensor([0.1, 0.4, 0.7], dtype=torch.float64)

    def vp_alpha(t, bmin=0.1, bmax=20.0):
        return torch.exp(-(bmin * t + 0.5 * (bmax - bmin) * t**2) / 2)

    phi = lambda t, s=0.008: math.pi / 2 * (t + s) / (1 + s)  # noqa: E731
    expected = {
        "VP": (vp_alpha(t), (1 - vp_alpha(t) ** 2).sqrt(), 1e-3),
        "SubVP": (vp_alpha(t), 1 - vp_alpha(t) ** 2, 1e-3),
        "CosineVP": (torch.cos(phi(t)) / math.cos(phi(0.0)), (1 - (torch.cos(phi(t)) / math.cos(phi(0.0))) ** 2).sqrt(), 1e-3),
        "VE": (torch.ones_like(t), 0.01 * (50 / 0.01) ** t, 0.0),
        "EDM": (torch.ones_like(t), 80 * t, 0.002 / 80),
        "LinearFlow": (1 - t, t, 0.0),
        "AffinePath": (1 - t, t.sqrt(), 1e-3),
    }
    for name, (alpha, sigma, t_min) in expected.items():
        a, s, _, _ = PATHS[name].coefficients(t)
        torch.testing.assert_close(a, alpha, rtol=1e-12, atol=1e-12, msg=name)
        torch.testing.assert_close(s, sigma, rtol=1e-12, atol=1e-12, msg=name)
        assert PATHS[name].t_min == pytest.approx(t_min), name
    dvp = PATHS["DiscreteVP"]
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    knots = torch.tensor([1, 400, 1000], dtype=torch.float64) / 1000
    a, s, _, _ = dvp.coefficients(knots)
    torch.testing.assert_close(a, abar[[0, 399, 999]].sqrt(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s, (1 - abar[[0, 399, 999]]).sqrt(), rtol=1e-12, atol=1e-12)
    assert dvp.t_min == pytest.approx(1 / 1000)


def test_api_reference_covers_every_solver_module():
    """Each solver module has a docstring and appears on docs/api/solvers.md."""
    page = (ROOT / "docs" / "api" / "solvers.md").read_text()
    missing_doc, missing_page = [], []
    for f in sorted((ROOT / "sdeflow" / "solvers").glob("*.py")):
        if f.stem == "__init__":
            continue
        if not ast.get_docstring(ast.parse(f.read_text())):
            missing_doc.append(f.name)
        if f"::: sdeflow.solvers.{f.stem}\n" not in page:
            missing_page.append(f.stem)
    assert not missing_doc, f"solver modules without a module docstring: {missing_doc}"
    assert not missing_page, f"add these modules to docs/api/solvers.md: {missing_page}"


def test_rst_docstrings_extension():
    """The API reference's griffe extension turns reST math, roles, literals and simple tables into Markdown."""
    spec = importlib.util.spec_from_file_location("rst_docstrings", ROOT / "docs" / "api" / "rst_docstrings.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = ("Step :math:`x' = x + h f` (see :class:`~sdeflow.solvers.heun.Heun`, :func:`sdeflow.sample`);\n"
            "``steps`` steps, as in::\n\n    run()\n\n.. math:: a = b\n   + c\n\n"
            "====  =====\nkind  value\n====  =====\ndata  :math:`x_0`\n====  =====\n")
    out = mod.rst_to_markdown(text)
    assert "$x' = x + h f$" in out and "`Heun`" in out and "`sdeflow.sample`" in out and "`steps`" in out
    assert "as in:\n" in out and "\n\n$$\na = b + c\n$$\n\n" in out
    assert "| kind | value |" in out and "| data | $x_0$ |" in out
    assert ":math:" not in out and ":class:" not in out and "``" not in out
    grouped = ("Args:\n    path: the path.\n    steps / nfe: steps, or a budget\n        (continued).\n"
               "    t_max, t_min: the ends.\n\nReturns:\n    a, b: not a parameter section.\n")
    assert mod.split_grouped_params(grouped) == (
        "Args:\n    path: the path.\n    steps: steps, or a budget\n        (continued).\n"
        "    nfe: See ``steps`` (documented together).\n    t_max: the ends.\n"
        "    t_min: See ``t_max`` (documented together).\n\nReturns:\n    a, b: not a parameter section.\n")


SNIPPET_PAGES = ["index.md", "concepts/layers.md", "concepts/reverse-dynamics.md", "concepts/choosing-a-solver.md"]


@pytest.mark.parametrize("page", SNIPPET_PAGES)
def test_page_code_runs(page, one_thread):
    """The Python blocks on the home and concept pages run as written (each page in a fresh namespace)."""
    text = (ROOT / "docs" / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, f"no python block on {page}"
    ns: dict = {}
    for block in blocks:
        exec(compile(block, f"docs/{page}", "exec"), ns)  # noqa: S102 - the docs' own examples


def test_api_index_lists_every_top_level_name():
    page = (ROOT / "docs" / "api" / "index.md").read_text()
    missing = [name for name in sf.__all__ if f"`{name}`" not in page]
    assert not missing, f"add to docs/api/index.md: {missing}"


def test_readme_commands_install_what_they_use_and_ci_runs_the_test_command():
    """README command 1 installs the extra with the peers and plots its table needs; command 2 is exactly what
    ``.ci/run`` runs; docs/index.md shows the same two commands."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    assert block in (ROOT / "docs" / "index.md").read_text()
    bench_cmd, test_cmd = (line.split("  #")[0].strip() for line in block.strip().splitlines())
    assert bench_cmd.startswith("pip install torch==2.13.0 && ") and bench_cmd.endswith(" && sdeflow bench")
    assert test_cmd.startswith("pip install torch==2.13.0 && ")
    assert test_cmd in (ROOT / ".ci" / "run").read_text().splitlines()
    extra = re.search(r'pip install "\.\[(\w+)\]"', bench_cmd).group(1)
    deps = re.search(rf"^{extra} = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert "diffusers" in deps and "matplotlib" in deps, deps


def test_readme_headline_is_the_best_of_its_full_table():
    """The README's headline table is what ``benchmarks/readme_figures.py`` computes from the README's own full
    table (sdeflow's best against the best peer at each budget), so the two cannot drift apart. A cell marked
    ``!`` is a configuration the preflight refuses, run anyway (its error counts)."""
    spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "benchmarks" / "readme_figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    readme = (ROOT / "README.md").read_text()
    full = re.search(r"```\n\[pathwise_rms\]\n(.*?)```", readme, re.S).group(1).splitlines()
    budgets = [int(h.split("<=")[1]) for h in full[0].split() if h.startswith("NFE<=")]
    rows = []
    for line in full[2:]:
        problem, solver, grid, *cells = line.split()
        for b, c in zip(budgets, cells):
            rows.append(dict(problem=problem, solver=solver, grid=grid, nfe_budget=b, metric="pathwise_rms",
                             error=None if c == "-" else float(c.rstrip("!")), peer=":" in solver))
    table = mod.headline(rows)
    assert table in readme, f"README headline differs from its full table; expected:\n{table}"
