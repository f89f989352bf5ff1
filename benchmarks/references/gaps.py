"""How far sdeflow's closest sampler is from each stored reference output (tests/data/references/).

    python benchmarks/references/gaps.py            # print the markdown tables
    python benchmarks/references/gaps.py --write    # also replace them in tests/data/references/PROVENANCE.md

Needs only the stored files and sdeflow (not the reference code). For every case, ``tests/references.py``'s
``closest`` names sdeflow's closest sampler and whether it should reproduce the reference to rounding; this
runs it on the case's grid, initial state and recorded noise and reports ``max |x - x_ref|`` (absolute, and
relative to ``max |x_ref|``), grouped by configuration over the two problems.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import references as R  # noqa: E402


def measure() -> list[dict]:
    rows = []
    for name in R.names():
        case = R.load(name)
        how = R.closest(case["meta"])
        try:
            x = R.run_sdeflow(case, how)
            abs_err = float((x - case["out"]).abs().max())
            rel = R.rel_error(x, case["out"])
            err = None
        except Exception as e:  # a gap can also be an error: report it
            abs_err = rel = float("nan")
            err = f"{type(e).__name__}: {e}".split("\n")[0][:120]
        config = name.split("/", 2)[2].rsplit("/n", 1)[0]
        rows.append(dict(name=name, config=config, steps=case["meta"]["steps"], how=how, abs=abs_err, rel=rel,
                         error=err))
    return rows


def _fmt(v: float) -> str:
    return "error" if v != v else f"{v:.1e}"


def _solver(how) -> str:
    opts = ", ".join(f"{k}={v!r}" for k, v in {**how.options, **how.sample}.items())
    s = f"`{how.solver}`" + (f" ({opts})" if opts else "")
    return s + (", last step by final_denoise" if how.denoise_last else "")


def tables(rows: list[dict]) -> tuple[str, str]:
    equal = [r for r in rows if r["how"].equal]
    gaps = [r for r in rows if not r["how"].equal]
    worst = max(equal, key=lambda r: r["rel"])
    summary = [f"{len(equal)} cases reproduced to rounding by sdeflow's sampler (the `equal` cases of "
               f"`tests/solvers/test_references.py`): largest relative difference {worst['rel']:.1e} "
               f"(`{worst['name']}`).", "",
               "| reference / configuration | sdeflow sampler | cases | max relative difference |", "|---|---|---|---|"]
    groups: dict = {}
    for r in equal:
        key = (r["name"].split("/")[1], r["config"])
        groups.setdefault(key, []).append(r)
    for (ref, config), rs in groups.items():
        summary.append(f"| {ref} `{config}` | {_solver(rs[0]['how'])} | {len(rs)} | "
                       f"{max(r['rel'] for r in rs):.1e} |")
    if not gaps:
        return "\n".join(summary), "None: every stored case is reproduced to rounding."
    steps = sorted({r["steps"] for r in gaps})
    lines = ["| reference / configuration | closest sdeflow sampler | " + " | ".join(f"n={s}" for s in steps)
             + " | gaps |", "|---|---|" + "---|" * len(steps) + "---|"]
    groups = {}
    for r in gaps:
        key = (r["name"].split("/")[1], r["config"])
        groups.setdefault(key, []).append(r)
    for (ref, config), rs in groups.items():
        cells = []
        for s in steps:
            sel = [r for r in rs if r["steps"] == s]
            if not sel:
                cells.append("")
                continue
            a = max(r["abs"] for r in sel)
            rel = max(r["rel"] for r in sel)
            cells.append(f"{_fmt(a)} ({_fmt(rel)})")
        lines.append(f"| {ref} `{config}` | {_solver(rs[0]['how'])} | " + " | ".join(cells)
                     + " | " + ", ".join(rs[0]["how"].gaps) + " |")
    used = [g for g in R.GAPS if any(g in r["how"].gaps for r in gaps)]
    lines += ["", "Cells: max |x - x_ref| over both problems (relative to max |x_ref|); `error`: sdeflow raised.",
              ""] + [f"- **{g}**: {R.GAPS[g]}" for g in used]
    return "\n".join(summary), "\n".join(lines)


def replace_block(text: str, key: str, body: str) -> str:
    start, end = f"<!-- BEGIN generated:{key} -->", f"<!-- END generated:{key} -->"
    pat = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    block = f"{start}\n{body}\n{end}"
    return pat.sub(lambda _: block, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + block + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", action="store_true", help="replace the tables in PROVENANCE.md")
    ap.add_argument("--json", default=None, help="also write every case's figures here")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = measure()
    summary, gaps = tables(rows)
    print(summary, "\n\n", gaps, sep="")
    if a.json:
        with open(a.json, "w") as f:
            json.dump([{k: v for k, v in r.items() if k != "how"} | {"sdeflow": _solver(r["how"]),
                       "equal": r["how"].equal} for r in rows], f, indent=1)
    if a.write:
        prov = os.path.join(R.DATA, "PROVENANCE.md")
        text = open(prov).read()
        text = replace_block(text, "equal", summary)
        text = replace_block(text, "gaps", gaps)
        with open(prov, "w") as f:
            f.write(text)
        print(f"wrote {prov}")


if __name__ == "__main__":
    main()
