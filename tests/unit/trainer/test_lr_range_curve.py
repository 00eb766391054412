"""The range test's reading of its curve: the smoothing, the steepest descent and the
divergence point, against hand computations, a synthetic curve and a real run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from services.trainer import fit, lr_range_test, read_curve, smooth


def test_smoothing_is_the_bias_corrected_ema_computed_by_hand():
    # beta 0.5: a = 0.5, 0.5, 0.375, 1.1875; corrections 1 - 0.5^(i+1) = .5, .75, .875, .9375
    assert smooth([1.0, 0.5, 0.25, 2.0], 0.5) == pytest.approx([1.0, 2 / 3, 3 / 7, 19 / 15])
    assert smooth([3.0, 1.0], 0.0) == [3.0, 1.0]  # beta 0: no smoothing


def test_the_curve_read_by_hand():
    lrs = [10.0**e for e in range(-5, 6)]  # one decade a step: d log(lr) = ln 10
    losses = [1.0, 1.0, 1.0, 1.0, 0.9, 0.8, 0.3, 0.1, 0.08, 0.5, 1.0]
    out = read_curve(lrs, losses, losses, diverge_factor=4.0)
    # minimum at k=8 (0.08); skip min(10, 8 // 2) = 4; slopes over steps 4..8, in units
    # of 1/ln 10: -0.1, (0.3-0.9)/2, (0.1-0.8)/2, (0.08-0.3)/2, -0.02 -> steepest at step 6
    assert out["min_loss_lr"] == 1e3
    assert out["suggested_lr"] == out["steepest_lr"] == 10.0
    # the first loss after the minimum above 4 x 0.08 = 0.32 is 0.5, at step 9
    assert out["divergence_lr"] == 1e4
    assert out["interval"] == pytest.approx([10.0, 1e3 / 3])
    calm = [1.0, 1.0, 1.0, 1.0, 0.9, 0.8, 0.3, 0.1, 0.08, 0.3, 0.31]
    assert read_curve(lrs, calm, calm)["divergence_lr"] is None
    assert read_curve(lrs, calm, calm, nonfinite_lr=1e6)["divergence_lr"] == 1e6


def test_a_synthetic_curve_gives_its_steepest_point_and_its_divergence():
    lrs = np.logspace(-6, 1, 141)  # 0.05 decade a step
    x = np.log(lrs)
    x0, x1 = math.log(1e-3), math.log(1.0)
    # falls fastest at x0 (d/dx of -tanh is steepest at 0), then blows up past x1
    loss = 1.2 - np.tanh(x - x0) + np.exp(2 * (x - x1))
    out = read_curve(list(lrs), list(loss), list(loss), diverge_factor=4.0)
    assert out["suggested_lr"] == pytest.approx(1e-3, rel=1e-9)  # a grid point
    k_min = int(np.argmin(loss))
    above = [k for k in range(k_min + 1, len(lrs)) if loss[k] > 4 * loss[k_min]]
    assert out["divergence_lr"] == lrs[above[0]]
    assert out["suggested_lr"] < out["min_loss_lr"] < out["divergence_lr"]


def test_a_one_step_wobble_is_not_the_steepest_descent():
    # flat at 0.6 with a one-step drop of 0.015 at step 21, then a real descent from
    # step 50 to 95 (0.0055 a step), then a rise: the descent is steeper over the
    # window (5 steps either side), though a one-step slope would pick the drop
    lrs = list(np.logspace(-7, 1, 100))
    s = [0.6] * 21 + [0.585] * 29 + [0.585 - 0.0055 * i for i in range(1, 46)]
    s += [s[-1] + 0.05 * i for i in range(1, 6)]
    assert len(s) == 100 and int(np.argmin(s)) == 94
    out = read_curve(lrs, s, s)
    assert lrs[55] <= out["suggested_lr"] <= lrs[89]


def test_a_real_run_suggests_a_rate_that_trains_below_the_one_that_diverges():
    spec = {
        "dataset": {"name": "digits"},
        "architecture": {"layers": [{"units": 32}]},
        "hyperparameters": {"learning_rate": 0.1, "optimizer": "adam", "epochs": 10},
    }
    result = lr_range_test(spec, lr_min=1e-6, lr_max=10.0, steps=100, smoothing=0.98)
    json.dumps(result, allow_nan=False)
    n = len(result["losses"])
    assert result["smoothed_losses"] == pytest.approx(smooth(result["losses"], 0.98))
    assert result["learning_rates"][0] == pytest.approx(1e-6)
    assert np.diff(np.log(result["learning_rates"])) == pytest.approx(
        [math.log(1e7) / 99] * (n - 1)
    )
    assert result["diverged_lr"] is not None and n < 100  # adam blows up well below 10
    suggested, divergence = result["suggested_lr"], result["divergence_lr"]
    assert 1e-6 <= suggested < divergence <= result["diverged_lr"]
    spec["hyperparameters"]["learning_rate"] = suggested
    good = fit(spec)
    spec["hyperparameters"]["learning_rate"] = 1e-6
    slow = fit(spec)
    assert good.status == "completed"
    assert good.best_metrics["val_loss"] < 0.5 * slow.best_metrics["val_loss"]


def test_bad_settings_are_refused():
    spec = {
        "dataset": {"name": "moons"},
        "architecture": {"layers": [{"units": 4}]},
        "hyperparameters": {"learning_rate": 0.1},
    }
    with pytest.raises(ValueError, match="smoothing"):
        lr_range_test(spec, smoothing=1.0)
    with pytest.raises(ValueError, match="diverge_factor"):
        lr_range_test(spec, diverge_factor=1.0)
    with pytest.raises(ValueError, match="lr_min < lr_max"):
        lr_range_test(spec, lr_min=1.0, lr_max=0.1)


def test_the_interval_stays_inside_the_rates_tried():
    # the minimum at the second step: a tenth of its rate is below the first rate
    lrs = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    losses = [1.0, 0.5, 0.9, 3.0, 9.0, 27.0]
    out = read_curve(lrs, losses, losses)
    assert out["interval"][0] >= lrs[0] and out["interval"][1] <= lrs[-1]
    assert out["interval"][0] <= out["interval"][1]


def test_a_loss_that_rises_from_the_first_step_suggests_nothing():
    """Every rate tried is too high (the loss grows from the first step until it
    diverges): an error that says to lower the lowest rate, not the first rate as a
    suggestion and a "good range" below the rates tried."""
    spec = {
        "dataset": {"name": "moons", "n_samples": 2000, "noise": 0.2, "seed": 0},
        "architecture": {"layers": [{"units": 64}, {"units": 64}]},
        "hyperparameters": {"learning_rate": 0.1, "momentum": 0.9, "batch_size": 32},
    }
    with pytest.raises(ValueError, match="lower the lowest rate"):
        lr_range_test(spec, lr_min=100.0, lr_max=1000.0, steps=100)
    fine = lr_range_test(spec, lr_min=1e-4, lr_max=1000.0, steps=100)
    assert 1e-4 <= fine["suggested_lr"] < fine["divergence_lr"]
    assert 1e-4 <= fine["interval"][0] <= fine["interval"][1] <= fine["learning_rates"][-1]
