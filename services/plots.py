"""PNG figures for the MLflow mirror: a job's learning curve, a sweep's LR curve.

Matplotlib runs headless (Agg) through the object API: no pyplot, so no global
figure state shared between threads.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pairs = [(int(r["epoch"]), float(r[key])) for r in history if _finite(r.get(key))]
    return [e for e, _ in pairs], [v for _, v in pairs]


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def learning_curve_png(history: Sequence[Mapping[str, Any]], title: str = "") -> bytes:
    """Return a PNG of train/validation loss and, if present, accuracy per epoch.

    ``history`` is a list of per-epoch records (``epoch``, ``train_loss``,
    ``val_loss``, ``train_accuracy``, ``val_accuracy``); missing or non-finite
    values are skipped, so a diverged run still plots up to its last good epoch.
    """
    has_acc = any(
        _finite(r.get("train_accuracy")) or _finite(r.get("val_accuracy")) for r in history
    )
    # Fixed margins: constrained layout doubles the drawing time of these small figures.
    fig = Figure(figsize=(10 if has_acc else 5.5, 4))
    fig.subplots_adjust(
        left=0.08 if has_acc else 0.14, right=0.98, bottom=0.13, top=0.88, wspace=0.22
    )
    axes = fig.subplots(1, 2 if has_acc else 1, squeeze=False)[0]
    panels = [("loss", axes[0])] + ([("accuracy", axes[1])] if has_acc else [])
    for name, ax in panels:
        for split, style in (("train", "-"), ("val", "--")):
            epochs, values = _series(history, f"{split}_{name}")
            if epochs:
                ax.plot(
                    epochs,
                    values,
                    style,
                    marker="." if len(epochs) < 40 else None,
                    label=f"{split} {name}",
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ys = [v for line in ax.get_lines() for v in line.get_ydata()]
        if name == "loss" and ys and min(ys) > 0 and max(ys) / min(ys) > 100:
            ax.set_yscale("log")  # a loss that spans decades (or blows up) stays readable
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if title:
        fig.suptitle(title)
    return _png(fig)


def lr_sweep_png(
    trials: Sequence[Mapping[str, Any]], objective: str, goal: str = "minimize"
) -> bytes:
    """Return a PNG of the final objective against the learning rate (log x axis).

    Each trial is ``{"learning_rate": float, "objective": float | None,
    "diverged": bool}``; diverged trials (or trials without a finite
    objective) are marked with a red cross along the top of the plot.
    """
    ok = sorted(
        (float(t["learning_rate"]), float(t["objective"]))
        for t in trials
        if not t.get("diverged") and _finite(t.get("objective"))
    )
    bad = sorted(
        float(t["learning_rate"])
        for t in trials
        if t.get("diverged") or not _finite(t.get("objective"))
    )
    fig = Figure(figsize=(6.5, 4.2))
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.13, top=0.91)
    ax = fig.subplots()
    if ok:
        xs, ys = zip(*ok, strict=True)
        ax.plot(xs, ys, "o-", color="tab:blue", label=f"final {objective}")
        best = (min if goal.startswith("min") else max)(ok, key=lambda p: p[1])
        ax.plot(
            [best[0]],
            [best[1]],
            "*",
            color="tab:green",
            markersize=16,
            label=f"best: lr={best[0]:g}",
        )
    if bad:
        top = max((y for _, y in ok), default=1.0)
        ax.plot(
            bad,
            [top] * len(bad),
            "x",
            color="tab:red",
            markersize=11,
            mew=2.5,
            linestyle="none",
            label="diverged",
        )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel(f"final {objective}")
    ax.set_title(f"{objective} vs learning rate")
    ax.grid(True, alpha=0.3)
    if ok or bad:
        ax.legend()
    return _png(fig)
