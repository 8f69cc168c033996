"""Tables and numbers for people: readable in an 80-column terminal and when piped (Rich then assumes 80
columns). A name or a number is never cut: columns of free text wrap between words, and when even that
does not fit, the least useful columns are left out (the caption says which; `--json` has them all).

    >>> num(1978.9), num(3.35), num(41.03), num(8.0, "TB/s"), num(0.000812, "s"), num(None)
    ('1,979', '3.35', '41.0', '8 TB/s', '0.000812 s', 'n/p')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

BORDER_W = 1  # one border character between and around columns (Rich's default box)
PADDING_W = 2  # one space either side of a cell


def num(value: float | None, unit: str = "", digits: int = 3) -> str:
    """`value` to about `digits` significant figures in plain notation (never `1.98e+03`), thousands
    separated, with its unit; `n/p` (not published) for None, `n/a` for a non-finite number."""
    if value is None:
        return "n/p"
    if not math.isfinite(value):
        return "n/a"
    # Whole numbers as they are (8 TB/s, 700 W); others to `digits` significant figures, so a column
    # reads 41.0, 38.4, 0.787 rather than 41, 38.4, 0.787.
    whole = value == int(value)
    decimals = 0 if whole else max(0, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:,.{decimals}f}"
    return f"{text} {unit}" if unit else text


@dataclass(frozen=True)
class Col:
    """One column. Headers may hold a line break (`"BF16\\nTFLOP/s"`) to stay narrow."""

    header: str
    left: bool = False  # names and text left, numbers right
    wrap: bool = False  # free text that may wrap between words; names and numbers never wrap
    drop: int = 0  # 0: always shown; otherwise left out, highest first, while the table is too wide


def _min_width(col: Col, cells: list[str]) -> int:
    """The narrowest the column can be without cutting a word (wrap) or a line (no wrap)."""
    texts = [col.header, *cells]
    pieces = [w for t in texts for w in t.split()] if col.wrap else [ln for t in texts for ln in t.splitlines()]
    return max((cell_len(p) for p in pieces), default=1)


def table_width(cols: Sequence[Col], rows: Sequence[Sequence[str]]) -> int:
    """The narrowest total width (borders included) at which no word of the table is cut."""
    widths = [_min_width(c, [r[i] for r in rows]) for i, c in enumerate(cols)]
    return sum(w + PADDING_W for w in widths) + BORDER_W * (len(cols) + 1)


def fit_table(
    console: Console,
    cols: Sequence[Col],
    rows: Sequence[Sequence[str]],
    title: str | None = None,
    caption: str | None = None,
    show_header: bool = True,
) -> Table:
    """A Rich table of `rows` (one string per column) that fits `console.width`: optional columns are
    left out, highest `drop` first, until it fits, and the caption names them. Cells are plain text
    (no Rich markup), so a `[` in a name prints as itself."""
    keep = list(range(len(cols)))
    for level in sorted({c.drop for c in cols if c.drop}, reverse=True):
        if table_width([cols[i] for i in keep], [[r[i] for i in keep] for r in rows]) <= console.width:
            break
        keep = [i for i in keep if cols[i].drop != level]
    left_out = [cols[i].header.replace("\n", " ") for i in range(len(cols)) if i not in keep]
    if left_out:
        note = f"left out at this width: {', '.join(left_out)} (wider terminal or --json shows them)"
        caption = f"{caption}; {note}" if caption else note
    table = Table(title=title, caption=caption, show_header=show_header)
    for i in keep:
        c = cols[i]
        table.add_column(c.header, justify="left" if c.left else "right", no_wrap=not c.wrap, overflow="fold")
    for r in rows:
        table.add_row(*(Text(r[i]) for i in keep))
    return table
