"""Learning curves drawn in a terminal with plain characters (no colour, no Unicode)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

MARKERS = "*o+x#@"
LABEL_WIDTH = 10


def _finite(value: object, log: bool) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if not math.isfinite(number) or (log and number <= 0):
        return None
    return math.log10(number) if log else number


def draw_chart(
    series: Mapping[str, Sequence[float | None]],
    *,
    x: Sequence[int] | None = None,
    width: int = 60,
    height: int = 15,
    log_y: bool = False,
    x_label: str = "epoch",
) -> list[str]:
    """Lines of text plotting each series against ``x`` (default 1, 2, ...).

    Each series gets a marker (``*``, ``o``, ``+``, ...; a later series wins a shared
    cell); missing and non-finite values (a diverged epoch) are left out, and so are
    values <= 0 with ``log_y``. The y axis is labelled at its top, middle and bottom.
    """
    n = max((len(v) for v in series.values()), default=0)
    xs = list(x) if x is not None else list(range(1, n + 1))
    points = {
        name: [
            (xs[i], y)
            for i, value in enumerate(values[: len(xs)])
            if (y := _finite(value, log_y)) is not None
        ]
        for name, values in series.items()
    }
    ys = [y for pts in points.values() for _, y in pts]
    if not ys:
        return ["(no finite values to draw)"]
    y_lo, y_hi = min(ys), max(ys)
    if y_hi == y_lo:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    x_lo, x_hi = min(xs), max(xs)
    x_span = (x_hi - x_lo) or 1
    grid = [[" "] * width for _ in range(height)]
    for k, pts in enumerate(points.values()):
        mark = MARKERS[k % len(MARKERS)]
        for px, py in pts:
            col = round((px - x_lo) / x_span * (width - 1))
            row = round((y_hi - py) / (y_hi - y_lo) * (height - 1))
            grid[row][col] = mark

    def label(row: int) -> str:
        value = y_hi - (y_hi - y_lo) * row / (height - 1)
        text = f"{10**value:.4g}" if log_y else f"{value:.4g}"
        return text.rjust(LABEL_WIDTH)

    marked = {0, (height - 1) // 2, height - 1}
    lines = [
        (label(r) if r in marked else " " * LABEL_WIDTH) + " |" + "".join(cells).rstrip()
        for r, cells in enumerate(grid)
    ]
    lines.append(" " * LABEL_WIDTH + " +" + "-" * width)
    left, right = str(x_lo), str(x_hi)
    lines.append(" " * (LABEL_WIDTH + 2) + left + right.rjust(width - len(left)))
    legend = "  ".join(f"{MARKERS[k % len(MARKERS)]} {name}" for k, name in enumerate(points))
    scale = ", log scale" if log_y else ""
    lines.append(" " * (LABEL_WIDTH + 2) + f"{legend}   ({x_label}{scale})")
    return lines
