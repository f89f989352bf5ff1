"""A griffe extension for the API reference: render the reStructuredText roles of sdeflow's docstrings.

sdeflow's docstrings write math and cross-references in reST (``:math:`...```, ``.. math::``,
``:class:`~sdeflow.x.Y```, double-backquoted code). mkdocstrings renders docstrings as Markdown, so before
rendering this extension rewrites them: inline math to ``$...$`` and display math to ``$$...$$``
(pymdownx.arithmatex), roles to code spans, double backquotes to single ones. An ``Args:`` entry that
documents several parameters together (``steps / nfe: ...``, ``t_max, t_min: ...``) becomes one entry per
parameter (the first carries the text, the others point to it), so that each gets its type and default from
the signature instead of showing as one required parameter named "steps / nfe". The source is unchanged.
"""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|obj|exc):`(~?)([^`]+)`")
_MATH = re.compile(r":math:`([^`]+)`")
_CODE = re.compile(r"``([^`]+?)``")


def _role(m: re.Match) -> str:
    target = m.group(2)
    if "<" in target and target.endswith(">"):       # :class:`text <target>`
        target = target.split("<")[0].strip()
    elif m.group(1):                                  # ~a.b.C shows C
        target = target.split(".")[-1]
    return f"`{target}`"


_RULE = re.compile(r"^\s*=+( +=+)+\s*$")


def _columns(rule: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"=+", rule)]


def _cells(line: str, cols: list[tuple[int, int]]) -> list[str]:
    """Split a row of a simple table: at runs of two or more spaces when that gives one cell per column
    (tolerates cells wider than their rule), else at the column starts."""
    cells = re.split(r" {2,}", line.strip())
    if len(cells) != len(cols):
        starts = [c[0] for c in cols] + [None]
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:])]
    return [c.replace("|", "\\|") for c in cells]


def _simple_table(lines: list[str], i: int, out: list[str]) -> int:
    """reST simple table (rule, header, rule, rows, rule) at ``lines[i]`` -> Markdown; returns the next index."""
    cols = _columns(lines[i])
    header = _cells(lines[i + 1], cols)
    out += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(cols)]
    j = i + 3
    while j < len(lines) and not _RULE.match(lines[j]):
        if lines[j].strip():
            out.append("| " + " | ".join(_cells(lines[j], cols)) + " |")
        j += 1
    out.append("")
    return j + 1


_SECTION = re.compile(r"^(\s*)(Args|Arguments|Parameters|Keyword Args|Keyword Arguments|Other Parameters):\s*$")
_GROUPED = re.compile(r"^(\s*)([A-Za-z_]\w*(?:\s*[,/]\s*[A-Za-z_]\w*)+)\s*:(.*)$")


def split_grouped_params(text: str) -> str:
    """In Google-style parameter sections, ``a, b / c: text`` -> ``a: text``, ``b: See `a`.``, ``c: ...``."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        m = _SECTION.match(lines[i])
        out.append(lines[i])
        i += 1
        if not m:
            continue
        head = len(m.group(1))
        item = None
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > head):
            line = lines[i]
            indent = len(line) - len(line.lstrip())
            if line.strip() and item is None:
                item = indent
            g = _GROUPED.match(line) if line.strip() and indent == item else None
            if not g:
                out.append(line)
                i += 1
                continue
            names = re.split(r"\s*[,/]\s*", g.group(2).strip())
            out.append(f"{g.group(1)}{names[0]}:{g.group(3)}")
            i += 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > item):
                if not lines[i].strip() and (i + 1 >= len(lines) or len(lines[i + 1]) - len(lines[i + 1].lstrip()) <= item):
                    break
                out.append(lines[i])
                i += 1
            out += [f"{g.group(1)}{name}: See ``{names[0]}`` (documented together)." for name in names[1:]]
    return "\n".join(out)


def rst_to_markdown(text: str) -> str:
    text = split_grouped_params(text)
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if _RULE.match(line) and i + 2 < len(lines) and _RULE.match(lines[i + 2]):
            i = _simple_table(lines, i, out)
            continue
        if stripped.startswith(".. math::"):
            indent = line[: len(line) - len(stripped)]
            body = [stripped[len(".. math::"):].strip()]
            i += 1
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)):
                body.append(lines[i].strip())
                i += 1
            math = " ".join(b for b in body if b)
            out += ["", "$$", math, "$$", ""]   # flush left: arithmatex blocks do not nest in reST-indented lists
            continue
        if line.endswith("::") and not stripped.startswith(".."):   # "text::" introduces a literal block
            line = line[:-1]
        out.append(line)
        i += 1
    text = "\n".join(out)
    text = _MATH.sub(lambda m: f"${m.group(1)}$", text)
    text = _ROLE.sub(_role, text)
    return _CODE.sub(r"`\1`", text)


class RstDocstrings(griffe.Extension):
    def on_object(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
