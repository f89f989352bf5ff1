"""The command line: `sdeflow bench` prints its tables and writes JSON rows and work-precision PNGs."""

import json

import pytest

from sdeflow.cli import main


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
    ode = [r for r in rows if r["solver"] == "heun"]
    assert [r["nfe_budget"] for r in ode] == [10, 20]
    assert all(r["nfe"] is None or r["nfe"] <= r["nfe_budget"] for r in rows)
    assert any(r.get("peer") for r in rows) and any(r["grid"] == "optimized" for r in rows)
    assert ode[1]["error"] < ode[0]["error"]  # more evaluations, smaller error


def test_bench_list(capsys):
    assert main(["bench", "--list"]) == 0
    assert "eight_gaussians" in capsys.readouterr().out
