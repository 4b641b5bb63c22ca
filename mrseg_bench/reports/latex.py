"""LaTeX tables (booktabs; scaled to the line width when wider, but never below ``MIN_SCALE``,
so body text stays at least footnote size; tables are split or transposed upstream so they
fit) and a structure checker standing in for a TeX engine when none is installed.

Cells: ``mean $\\pm$ std`` (no ± with one seed), ``\\textbf{...}`` on the best value per
column, ``$^{\\dagger}$`` when p < alpha against the method under study, ``---`` where the
method lacks the capability. Every piece of text (method names, captions, labels of columns)
goes through ``escape_latex``, which also transliterates other non-ASCII text (``é`` -> ``e``;
a character with no ASCII form -> ``?``). A transposed table (``Table.transposed``) has one
column per method and one row per quantity.
"""

from __future__ import annotations

import re
import unicodedata

from .cells import Cell, table_cells
from .tables import Table

_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"$<$",
    ">": r"$>$",
    "±": r"$\pm$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "†": r"$^{\dagger}$",
    "—": "---",
    "–": "--",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "×": r"$\times$",
}
_SPECIAL_RE = re.compile("|".join(re.escape(k) for k in _SPECIAL) + r"|[^\x00-\x7f]")


def _ascii(ch: str) -> str:
    """``é`` -> ``e`` (NFKD without combining marks); no ASCII form -> ``?``."""
    plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode("ascii")
    return escape_latex(plain) if plain else "?"


def escape_latex(text: str) -> str:
    """Escape LaTeX special characters and transliterate other non-ASCII ones (one pass, so
    replacements are never re-escaped)."""
    return _SPECIAL_RE.sub(lambda m: _SPECIAL.get(m.group(0)) or _ascii(m.group(0)), str(text))


def _cell(c: Cell) -> str:
    if c.missing:
        return "---"
    if c.text:
        return escape_latex(c.value)
    body = c.value + (f"{{\\scriptsize$\\pm${c.spread}}}" if c.spread else "")
    if c.best:
        body = f"\\textbf{{{body}}}"
    if c.significant:
        body += "$^{\\dagger}$"
    return body


def header(label: str, higher_is_better: bool | None) -> str:
    arrow = {True: r" $\uparrow$", False: r" $\downarrow$", None: ""}[higher_is_better]
    return escape_latex(label) + arrow


def _label(name: str) -> str:
    return "tab:" + re.sub(r"[^A-Za-z0-9:.\-]+", "-", name)


MIN_SCALE = 0.8  # 10 pt body text at 0.8 is 8 pt, footnote size
# shrink only if too wide, and never below MIN_SCALE (a table wider than that overflows instead)
FIT_WIDTH = (f"\\ifdim\\width>{1 / MIN_SCALE:g}\\linewidth {MIN_SCALE:g}\\width"
             r"\else\ifdim\width>\linewidth\linewidth\else\width\fi\fi")


LONG_LABEL = 24  # row labels longer than this wrap in a column of LABEL_WIDTH


LABEL_WIDTH = "2.3cm"


def _first_column(labels: list[str]) -> str:
    """``l``, or a wrapping ``p`` column when a row label (method plus overrides) is long."""
    return f"p{{{LABEL_WIDTH}}}" if max((len(m) for m in labels), default=0) > LONG_LABEL else "l"


def render_latex(table: Table) -> str:
    """A complete ``table`` float: short caption, label, the booktabs tabular scaled down to
    the line width when wider (``resizebox``, needs ``graphicx``), then the table's notes in
    ``footnotesize`` (they wrap at the line width). Needs ``booktabs`` and ``graphicx``."""
    cells = table_cells(table)
    names = [escape_latex(m) + (f"$^{{{escape_latex(table.marks[m])}}}$" if m in table.marks else "")
             for m in table.methods]
    body = []
    if table.transposed:
        head = ["Quantity"] + names
        for j, col in enumerate(table.columns):
            body.append(" & ".join([header(col.label, col.higher_is_better)]
                                   + [_cell(row[j]) for row in cells]) + r" \\")
        spec = "l" + "r" * len(table.methods)
    else:
        head = ["Method"] + [header(c.label, c.higher_is_better) for c in table.columns]
        spec_p = _first_column(table.methods) != "l"
        for m, name, row in zip(table.methods, names, cells, strict=True):
            if table.reference_rows and m == table.reference_rows[0]:
                body.append(r"\midrule")  # reference rows (oracle) below the methods
            if spec_p:  # wrap: break after _ = , as well as at spaces
                name = r"\raggedright " + re.sub(r"(\\_|=)", r"\1\\allowbreak{}", name)
            body.append(" & ".join([name] + [_cell(c) for c in row]) + r" \\")
        spec = _first_column(table.methods) + "".join("l" if c.text else "r" for c in table.columns)
    lines = [
        r"\begin{table}[htbp]",
        r"\centering",
        r"\setlength{\tabcolsep}{2.5pt}",
        f"\\caption{{{escape_latex(table.caption)}}}",
        f"\\label{{{_label(table.name)}}}",
        f"\\resizebox{{{FIT_WIDTH}}}{{!}}{{%",
        f"\\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(head) + r" \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}}",
    ]
    if table.notes:
        lines += [r"\par\smallskip", r"{\footnotesize\raggedright " + " ".join(escape_latex(n) for n in table.notes)
                  + r"\par}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# structure check (no TeX engine here; see reports/README in the module docstring of report.py)

_BEGIN_END = re.compile(r"\\(begin|end)\{([^}]*)\}")


def _strip_escapes(text: str) -> str:
    """Remove escaped characters and line breaks so braces/&/$ can be counted."""
    return re.sub(r"\\\\|\\[{}&%$#_]", "", text)


def _strip_comments(text: str) -> str:
    return "\n".join(re.sub(r"(?<!\\)%.*$", "", line) for line in text.splitlines())


def _count_columns(spec: str) -> int:
    spec = re.sub(r"[pmb]\{[^}]*\}", "p", spec)
    spec = re.sub(r"@\{[^}]*\}|!\{[^}]*\}|>\{[^}]*\}|<\{[^}]*\}", "", spec)
    return sum(ch in "lcrpX" for ch in spec)


def check_latex(text: str) -> list[str]:
    """Problems that would stop a LaTeX table from compiling or look wrong; [] when fine.

    Checks: balanced braces; matching and well-nested ``\\begin``/``\\end``; every tabular has
    booktabs ``\\toprule``, ``\\midrule``, ``\\bottomrule`` in that order; every row has as many
    cells as the column spec; no unescaped ``_ ^ # &`` outside math and tabular cells, no
    unbalanced ``$``; ASCII only.
    """
    problems: list[str] = []
    body = _strip_comments(text)
    flat = _strip_escapes(body)
    depth = 0
    for i, ch in enumerate(flat):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            problems.append(f"unbalanced '}}' near offset {i}")
            depth = 0
    if depth:
        problems.append(f"{depth} unclosed '{{'")
    stack: list[str] = []
    for m in _BEGIN_END.finditer(body):
        kind, env = m.groups()
        if kind == "begin":
            stack.append(env)
        elif not stack or stack[-1] != env:
            problems.append(f"\\end{{{env}}} without matching \\begin (open: {stack})")
        else:
            stack.pop()
    if stack:
        problems.append(f"unclosed environment(s): {stack}")
    tabulars = list(re.finditer(r"\\begin\{tabular\}\{((?:[^{}]|\{[^{}]*\})*)\}(.*?)\\end\{tabular\}",
                                body, flags=re.S))
    if "\\begin{tabular}" in body and not tabulars:
        problems.append("tabular without a column spec")
    for t in tabulars:
        ncols = _count_columns(t.group(1))
        inner = t.group(2)
        pos = [inner.find(r) for r in ("\\toprule", "\\midrule", "\\bottomrule")]
        if min(pos) < 0:
            problems.append("tabular lacks a booktabs rule (\\toprule, \\midrule, \\bottomrule)")
        elif not pos[0] < pos[1] < pos[2]:
            problems.append("booktabs rules out of order")
        rows_text = re.sub(r"\\(toprule|midrule|bottomrule)(\[[^]]*\])?", "", inner)
        rows = [r.strip() for r in re.split(r"\\\\", rows_text)]
        for k, row in enumerate(r for r in rows if r):
            cells = len(re.findall(r"(?<!\\)&", row)) + 1
            if cells != ncols:
                problems.append(f"row {k + 1} has {cells} cells, column spec has {ncols}: {row[:60]!r}")
    # text-mode specials: remove \label{..} (underscores allowed there) and math segments
    textual = re.sub(r"\\label\{[^}]*\}", "", body)
    textual = re.sub(r"\\\\|\\[{}&%$#_^]", "", textual)
    if textual.count("$") % 2:
        problems.append("unbalanced '$' (math mode left open)")
    outside_math = "".join(textual.split("$")[::2])
    outside_tab = re.sub(r"\\begin\{tabular\}.*?\\end\{tabular\}", "", outside_math, flags=re.S)
    for ch, where in (("_", outside_math), ("^", outside_math), ("#", outside_math), ("&", outside_tab)):
        if ch in where:
            problems.append(f"unescaped {ch!r} in text mode")
    bad = sorted({c for c in text if ord(c) > 127})
    if bad:
        problems.append(f"non-ASCII characters {''.join(bad)!r} (escape them)")
    return problems
