"""The command line: ``python -m sdeflow`` / ``sdeflow``, ``--version`` and ``--help``; ``sdeflow bench`` prints
its tables and writes JSON rows and work-precision PNGs, with progress on a terminal, on one thread."""

import json
import subprocess
import sys

import pytest
import torch

import sdeflow
from sdeflow.cli import main

from shared import ROOT


def test_bench_quick_subset(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "bench"
    assert main(["bench", "--solvers", "heun,euler_maruyama", "--nfe", "10,20", "--sde-nfe", "32", "--n", "64",
                 "--out", str(out)]) == 0  # peers and cached optimised grids are on by default
    text = capsys.readouterr().out
    for table in ("[pathwise_rms]", "[strong_rms]", "[weak_mean]", "[weak_cov]", "[weak_sliced_w2]", "[weak_mmd]"):
        assert table in text
    assert "mc_floor" in text and "torchsde:euler" in text
    for name in ("pathwise_rms", "strong_rms", "weak_sliced_w2"):
        png = out / f"eight_gaussians_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads((out / "rows.json").read_text())
    assert all({"problem", "solver", "grid", "nfe_budget", "nfe", "error", "metric", "wall_s"} <= set(r) for r in rows)
    ode = [r for r in rows if r["solver"] == "heun" and r["grid"] == "karras"]  # (karras+end: the budget's window)
    assert [r["nfe_budget"] for r in ode] == [10, 20]
    assert [r["nfe_budget"] for r in rows if r["solver"] == "heun" and r["grid"] == "karras+end"] == [10, 20]
    assert all(r["nfe"] is None or r["nfe"] <= r["nfe_budget"] for r in rows)
    assert any(r.get("peer") for r in rows) and any(r["grid"] == "optimized" for r in rows)
    assert ode[1]["error"] is not None
    if ode[0]["error"] is None:  # heun's 4 steps are refused up front (preflight): the row says why
        assert "cannot integrate" in ode[0]["note"]
    else:
        assert ode[1]["error"] < ode[0]["error"]  # more evaluations, smaller error


def test_bench_list(capsys):
    assert main(["bench", "--list"]) == 0
    assert "eight_gaussians" in capsys.readouterr().out


def _run(*args, **kw):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, **kw)


def test_python_m_sdeflow_and_version():
    """``python -m sdeflow`` is the command; ``--version`` names sdeflow's version (one source: pyproject reads
    ``sdeflow.__version__``), torch's and where the package was imported from."""
    out = _run("-m", "sdeflow", "--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"sdeflow {sdeflow.__version__} (torch {torch.__version__}")
    assert out.stdout.rstrip("\n").endswith(f"{ROOT / 'sdeflow'})") and out.stdout.count("\n") == 1  # one line
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'version = { attr = "sdeflow.__version__" }' in pyproject
    out = _run("-m", "sdeflow", "bench", "--list")
    assert out.returncode == 0 and "eight_gaussians" in out.stdout, out.stderr
    out = _run("-m", "sdeflow")  # no command: usage and an error, not a traceback
    assert out.returncode == 2 and "usage: sdeflow" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("argv", [["--help"], ["bench", "--help"]])
def test_help_is_plain_text(argv, capsys):
    """No reST markup (double backquotes, roles) in ``--help``."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "usage: sdeflow" in text
    assert "`" not in text and ":func:" not in text and ":mod:" not in text, text


def test_lazy_submodules_are_attributes():
    """``sdeflow.metrics`` and ``sdeflow.grid_opt`` work after a bare ``import sdeflow`` (imported on first
    use, so ``import sdeflow`` does not pay for them)."""
    code = ("import sys, sdeflow\n"
            "assert 'sdeflow.grid_opt' not in sys.modules and 'sdeflow.bench' not in sys.modules\n"
            "assert callable(sdeflow.metrics.sliced_w2) and callable(sdeflow.grid_opt.optimize_grid)\n"
            "assert sdeflow.testing.check_solver and sdeflow.bench.run_bench and sdeflow.distributed\n"
            "assert {'metrics', 'grid_opt', 'testing', 'bench'} <= set(dir(sdeflow))\n"
            "try:\n    sdeflow.no_such_module\nexcept AttributeError as e:\n    print('AttributeError', e)\n")
    out = _run("-c", code)
    assert out.returncode == 0, out.stderr
    assert "AttributeError module 'sdeflow' has no attribute 'no_such_module'" in out.stdout


def test_bench_runs_on_one_thread_by_default_and_restores(capsys):
    before = torch.get_num_threads()
    assert main(["bench", "--solvers", "euler", "--nfe", "10", "--no-sde", "--no-peers", "--no-optimized",
                 "--n", "16"]) == 0
    assert "(1 intra-op thread(s)" in capsys.readouterr().out
    assert torch.get_num_threads() == before
    assert main(["bench", "--solvers", "euler", "--nfe", "10", "--no-sde", "--no-peers", "--no-optimized",
                 "--n", "16", "--threads", "2"]) == 0
    assert "(2 intra-op thread(s)" in capsys.readouterr().out
    assert torch.get_num_threads() == before
    with pytest.raises(sdeflow.SdeflowValueError, match="--threads"):
        main(["bench", "--threads", "0"])


def test_bench_progress_on_stderr_only_when_asked_or_a_terminal(capsys):
    argv = ["bench", "--solvers", "heun,euler_maruyama", "--nfe", "10", "--sde-nfe", "17", "--n", "16",
            "--no-peers", "--no-optimized"]
    assert main(argv) == 0  # capsys' stderr is not a terminal: quiet
    assert capsys.readouterr().err == ""
    assert main(argv + ["--progress"]) == 0
    err = capsys.readouterr().err
    for label in ("eight_gaussians heun karras NFE<=10", "eight_gaussians heun karras+end NFE<=10",
                  "eight_gaussians default default NFE<=10", "eight_gaussians euler_maruyama uniform NFE<=17", "4/4"):
        # (problem, solver, grid, budget), and the count reaches the planned total (heun on the problem's window
        # and on the budget's, sample()'s default, EM)
        assert label in err, err
