"""The drawing of a sweep's learning-rate map (``services.reports.lr_map`` has its data).

Matplotlib's object API (no pyplot), Agg. Callers that may never draw import this
module late (the API, the mirror's sync): matplotlib loads with the first picture.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from services.plots import png_bytes
from services.reports.lr_map import LrMap, LrPoint

#: One colour per combination, never the crosses' red nor the best star's gold.
PALETTE = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
    "tab:gray",
    "navy",
)
DIVERGED_COLOUR = "tab:red"
#: The diverged zone's opacity where one combination's ceiling is below, and where all are.
ZONE_ALPHA = (0.06, 0.2)
#: More combinations than this: the legend names the kinds of marks only.
LEGEND_COMBINATIONS = 10


def _on_line(p: LrPoint) -> bool:
    return p.status == "succeeded" and p.objective is not None


#: How each kind of trial off the lines is marked.
MARKS: dict[str, dict[str, Any]] = {
    "diverged": {"marker": "x", "ms": 11, "mew": 2.5},
    "pruned": {"marker": "v", "ms": 8, "alpha": 0.6},
    "skipped": {"marker": "s", "mfc": "none", "ms": 9, "mew": 1.5},
    "failed": {"marker": "o", "mfc": "none", "ms": 8, "mew": 1.5},
}


def _mark(p: LrPoint) -> str | None:
    """How ``p`` is marked off the lines (None: it is on its line)."""
    if p.status in ("diverged", "pruned", "skipped"):
        return p.status
    return None if _on_line(p) else "failed"


def lr_map_png(data: LrMap, title: str = "") -> bytes:
    """Draw the LR map of :func:`build_lr_map` (log-scaled rate on x, the objective on y)."""
    fig = Figure(figsize=(10, 5))
    fig.subplots_adjust(left=0.09, right=0.7, bottom=0.12, top=0.9)  # the legend on the right
    ax = fig.subplots()
    metric = data.objective.metric
    colours = {c.label: PALETTE[i % len(PALETTE)] for i, c in enumerate(data.combinations)}
    ys = [p.objective for p in data.points if p.objective is not None and p.status != "diverged"]
    rates = [p.learning_rate for p in data.points] + [c.learning_rate for c in data.ceilings]
    if not rates:
        ax.text(
            0.5, 0.5, "no trial has ended yet", ha="center", va="center", transform=ax.transAxes
        )
        ax.set_axis_off()
        fig.suptitle(title or f"{metric} vs learning rate")
        return png_bytes(fig)
    low, high = min(rates) / 2, max(rates) * 2
    if ys:
        span = (max(ys) - min(ys)) or abs(max(ys)) or 1.0
        top = max(ys) + 0.08 * span  # the band the trials without a fair value sit in
    else:
        top = 1.0
    _shade_zones(ax, data, colours, high)  # under everything else
    for combo in data.combinations:
        line = [
            (p.learning_rate, p.objective)
            for p in data.points
            if p.combination == combo.label and p.status == "succeeded" and p.objective is not None
        ]
        if line:
            ax.plot(
                [x for x, _ in line],
                [y for _, y in line],
                "o-",
                color=colours[combo.label],
                label=(combo.label or f"{metric} per trial")
                if len(data.combinations) <= LEGEND_COMBINATIONS
                else None,
            )
    marks: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    for p in data.points:  # one artist per kind of mark and colour: fast for 1,000 trials
        kind = _mark(p)
        if kind is not None:
            y = p.objective if p.objective is not None and kind in ("pruned", "failed") else top
            colour = DIVERGED_COLOUR if kind == "diverged" else colours[p.combination]
            xs, ys_ = marks.setdefault((kind, colour), ([], []))
            xs.append(p.learning_rate)
            ys_.append(y)
    for (kind, colour), (xs, ys_) in marks.items():
        ax.plot(xs, ys_, ls="none", **MARKS[kind], color=colour)
    if data.best is not None and data.best.objective is not None:
        ax.plot(
            [data.best.learning_rate],
            [data.best.objective],
            "*",
            color="gold",
            mec="black",
            ms=17,
            label=f"best: lr={data.best.learning_rate:g}",
        )
    _legend(ax, data)
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    if ys and min(ys) > 0 and max(ys) / min(ys) > 100:
        ax.set_yscale("log")
    ax.set_xlabel(f"{data.learning_rate_parameter} (log scale)")
    ax.set_ylabel(f"best {metric} of each trial")
    ax.grid(True, alpha=0.3)
    fig.suptitle(title or f"{metric} vs learning rate")
    return png_bytes(fig)


def _shade_zones(ax: Any, data: LrMap, colours: Mapping[str, str], high: float) -> None:
    """Shade the diverged zone: red from the lowest ceiling up, deeper where more
    combinations are above theirs (ZONE_ALPHA from none to all); each ceiling a dotted
    line in its combination's colour (while there are few enough to tell apart)."""
    if not data.ceilings:
        return
    every = min((c.learning_rate for c in data.ceilings if c.combination is None), default=None)
    own = [c.learning_rate for c in data.ceilings if c.combination is not None]
    n = max(len(data.combinations), 1)

    def share(rate: float) -> float:
        if every is not None and rate >= every:
            return 1.0
        return min(1.0, sum(r <= rate for r in own) / n)

    edges = sorted({c.learning_rate for c in data.ceilings} | {high})
    low_alpha, high_alpha = ZONE_ALPHA
    for start, end in zip(edges, edges[1:], strict=False):
        alpha = low_alpha + (high_alpha - low_alpha) * share(start)
        ax.axvspan(start, end, color=DIVERGED_COLOUR, alpha=alpha, lw=0)
    if len(data.ceilings) <= LEGEND_COMBINATIONS:
        for c in data.ceilings:
            edge = DIVERGED_COLOUR if c.combination is None else colours.get(c.combination, "grey")
            ax.axvline(c.learning_rate, color=edge, ls=":", lw=1.5)


def _legend(ax: Any, data: LrMap) -> None:
    """The lines (up to LEGEND_COMBINATIONS), then one entry per kind of mark shown."""
    statuses = {p.status for p in data.points}
    kinds = [
        (
            "diverged" in statuses,
            Line2D([], [], ls="none", marker="x", color=DIVERGED_COLOUR, ms=9, mew=2),
            "diverged",
        ),
        (
            "pruned" in statuses,
            Line2D([], [], ls="none", marker="v", color="grey"),
            "pruned (early epoch)",
        ),
        (
            "skipped" in statuses,
            Line2D([], [], ls="none", marker="s", mfc="none", mec="grey"),
            "skipped (above the ceiling)",
        ),
        (
            bool(statuses & {"failed", "timed_out"}),
            Line2D([], [], ls="none", marker="o", mfc="none", mec="grey"),
            "failed / timed out",
        ),
        (
            bool(data.ceilings),
            Line2D([], [], color=DIVERGED_COLOUR, alpha=0.25, lw=8),
            "diverged zone (above the ceiling)",
        ),
    ]
    handles, labels = ax.get_legend_handles_labels()
    if len(data.combinations) > LEGEND_COMBINATIONS:
        handles.insert(0, Line2D([], [], ls="-", marker="o", color="grey"))
        labels.insert(0, f"{len(data.combinations)} combinations, a line each")
    for shown, handle, label in kinds:
        if shown:
            handles.append(handle)
            labels.append(label)
    if handles:
        ax.legend(handles, labels, fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
