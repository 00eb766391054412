"""The PNG of a learning-rate range test: the loss and its smoothed curve against the
rate (log scale), the suggested rate and the point where the loss starts to diverge.

Matplotlib headless (Agg) through the object API, as in ``services.plots``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure

from services.plots import png_bytes


def lr_range_png(result: Mapping[str, Any], title: str = "") -> bytes:
    """Return a PNG of a range test's curve.

    ``result`` is what the trainer's ``lr_range_test`` returns (``learning_rates``,
    ``losses``, ``smoothed_losses``, ``suggested_lr``, ``divergence_lr``,
    ``min_loss_lr``). The y axis runs from the lowest loss to the larger of 1.5 x
    the first smoothed loss and 4 x its minimum, so that the blow-up at the end does not
    flatten the part that matters.
    """
    lrs = list(result.get("learning_rates") or [])
    losses = list(result.get("losses") or [])
    smoothed = list(result.get("smoothed_losses") or [])
    fig = Figure(figsize=(7, 4.5))
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.12, top=0.88)
    ax = fig.subplots()
    ax.plot(lrs, losses, color="0.6", linewidth=0.8, alpha=0.8, label="loss (batch)")
    ax.plot(lrs, smoothed, color="C0", linewidth=2, label="smoothed loss")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.grid(True, which="major", alpha=0.3)
    marks = (
        ("suggested_lr", "C2", "suggested (steepest descent)"),
        ("divergence_lr", "C3", "loss starts to diverge"),
    )
    for key, color, label in marks:
        value = result.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            ax.axvline(value, color=color, linestyle="--", label=f"{label}: {value:.3g}")
    finite = [v for v in smoothed if math.isfinite(v)]
    if finite:
        low = min(finite + [v for v in losses if math.isfinite(v)])
        top = max(finite[0] * 1.5, min(finite) * 4)
        ax.set_ylim(max(0.0, low - 0.05 * (top - low)), top)
    right = max(lrs[-1], result.get("divergence_lr") or 0) if lrs else 0
    if lrs and right > lrs[0]:  # one point (a loss not finite at the second step): autoscale
        ax.set_xlim(lrs[0], right)
    ax.legend(fontsize="small", loc="upper left")
    if title:
        fig.suptitle(title)
    return png_bytes(fig)
