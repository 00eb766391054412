"""PNG figures: a job's learning curve and its per-layer numbers (``services.reports``
draws a sweep's LR map and report with these).

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


#: The per-layer numbers of an epoch record (``flatten_record``: ``grad_norm.layer_0``, ...).
LAYER_PANELS = (
    ("grad_norm", "gradient norm"),
    ("weight_norm", "weight norm"),
    ("dead_relu_fraction", "dead ReLU fraction"),
)


def _layer_series(history: Sequence[Mapping[str, Any]], key: str) -> dict[int, tuple[list, list]]:
    """``{layer: (epochs, values)}`` of a per-layer metric (non-finite values left out)."""
    prefix = f"{key}.layer_"
    layers = sorted(
        {int(k[len(prefix) :]) for r in history for k in r if k.startswith(prefix)}
        | {i for r in history if isinstance(r.get(key), list) for i in range(len(r[key]))}
    )
    out: dict[int, tuple[list, list]] = {}
    for i in layers:
        epochs, values = [], []
        for r in history:
            value = r.get(f"{prefix}{i}")
            if value is None and isinstance(r.get(key), list) and i < len(r[key]):
                value = r[key][i]  # an unflattened record
            if _finite(value):
                epochs.append(int(r["epoch"]))
                values.append(float(value))  # type: ignore[arg-type]  # a finite number
        if epochs:
            out[i] = (epochs, values)
    return out


def layers_png(history: Sequence[Mapping[str, Any]], title: str = "") -> bytes:
    """Return a PNG of each layer's gradient norm, weight norm and dead ReLU fraction by epoch.

    ``history`` holds per-epoch records, flat (``grad_norm.layer_0``, as the
    database stores them) or not (``grad_norm: [..]``). A layer is a line in
    each panel; a panel with nothing to show says so (no ReLU layer, or an epoch
    that diverged before its gradients).
    """
    fig = Figure(figsize=(13, 4))
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.13, top=0.86, wspace=0.25)
    axes = fig.subplots(1, len(LAYER_PANELS))
    for ax, (key, label) in zip(axes, LAYER_PANELS, strict=True):
        series = _layer_series(history, key)
        for i, (epochs, values) in series.items():
            marker = "." if len(epochs) < 40 else None
            ax.plot(epochs, values, marker=marker, label=f"layer {i}")
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize="medium")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ys = [v for _, values in series.values() for v in values]
        if key == "dead_relu_fraction":
            ax.set_ylim(-0.03, 1.03)
        elif ys and min(ys) > 0 and max(ys) / min(ys) > 100:
            ax.set_yscale("log")  # norms that span decades (vanishing or exploding)
        if series:
            ax.legend(fontsize="small")
        else:
            why = "no ReLU layer" if key == "dead_relu_fraction" else "no finite values"
            ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes)
    if title:
        fig.suptitle(title)
    return _png(fig)


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (100 dpi): the one way every figure here is saved."""
    return _png(fig)
