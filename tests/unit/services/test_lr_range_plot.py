"""The range test's PNG: drawn for a whole curve, one without divergence, and one point."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.image import imread

from services.mirror.range_tests import range_test_title
from services.plots_lr import lr_range_png
from services.trainer import read_curve, smooth


def _curve(n: int, blow_up: bool) -> dict:
    lrs = list(np.logspace(-6, 1, n))
    x = np.log(lrs)
    loss = 1.0 - 0.8 * np.tanh(x + 7) + (np.exp(x - 0.5) if blow_up else 0.0)
    losses = [float(v) for v in loss]
    smoothed = smooth(losses, 0.9)
    return {
        "learning_rates": lrs,
        "losses": losses,
        "smoothed_losses": smoothed,
        **read_curve(lrs, losses, smoothed),
    }


def test_the_png_is_drawn_for_curves_with_and_without_divergence():
    for result in (_curve(100, True), _curve(100, False), _curve(1, False)):
        png = lr_range_png(result, title="LR range test")
        image = imread(io.BytesIO(png), format="png")
        assert image.shape[:2] == (450, 700)  # 7 x 4.5 inches at 100 dpi
    assert _curve(100, True)["divergence_lr"] is not None
    assert _curve(100, False)["divergence_lr"] is None


def test_the_title_names_data_optimizer_and_batch():
    spec = {
        "dataset": {"name": "moons"},
        "hyperparameters": {"optimizer": "adam", "batch_size": None},
    }
    assert range_test_title({"spec": spec}) == "LR range test: moons, adam, batch full"
