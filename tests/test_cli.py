"""The command line: `sdeflow bench` prints its table and writes JSON rows."""

import json

from sdeflow.cli import main


def test_bench_quick_subset(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["bench", "--solvers", "heun,euler_maruyama", "--nfe", "10,20", "--sde-nfe", "16", "--n", "64",
                 "--json", str(out)]) == 0  # peers and cached optimised grids are on by default
    text = capsys.readouterr().out
    assert "[pathwise_rms]" in text and "[strong_rms]" in text and "heun" in text
    rows = json.loads(out.read_text())
    ode = [r for r in rows if r["solver"] == "heun"]
    assert [r["nfe_budget"] for r in ode] == [10, 20]
    assert all(r["nfe"] is None or r["nfe"] <= r["nfe_budget"] for r in rows)
    assert any(r.get("peer") for r in rows) and any(r["grid"] == "optimized" for r in rows)
    assert ode[1]["error"] < ode[0]["error"]  # more evaluations, smaller error


def test_bench_list(capsys):
    assert main(["bench", "--list"]) == 0
    assert "eight_gaussians" in capsys.readouterr().out
