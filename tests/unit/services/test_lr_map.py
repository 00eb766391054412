"""The learning-rate map's data (the JSON answer) and its drawing, and a job's figures."""

from __future__ import annotations

import io
import math
import struct
import types

import numpy as np
import pytest

from services import plots
from services.reports.lr_figure import ZONE_ALPHA, lr_map_png
from services.reports.lr_map import NoLearningRateError, build_lr_map, sweep_ceilings
from services.reports.trials import TrialRow

LR, BS = "hyperparameters.learning_rate", "hyperparameters.batch_size"


def sweep(parameters=None, goal="minimize", ceiling=None):
    parameters = parameters or {LR: {"values": [0.01, 0.1, 1.0, 10.0]}, BS: {"values": [16, 64]}}
    row = types.SimpleNamespace(
        id="s1",
        spec={"parameters": parameters},
        objective_metric="val_loss",
        objective_goal=goal,
    )
    if ceiling is not None:
        row.divergence_ceiling = ceiling
    return row


def trial(i, lr, bs, status="succeeded", objective=None, reason=None):
    return TrialRow(
        id=f"j{i}",
        trial_index=i,
        status=status,
        objective=objective,
        params={LR: lr, BS: bs},
        reason=reason,
    )


TRIALS = [
    trial(0, 0.01, 16, objective=0.9),
    trial(1, 0.1, 16, objective=0.3),
    trial(2, 1.0, 16, "diverged", objective=5.0),
    trial(3, 10.0, 16, "skipped", reason="above the ceiling set by j2"),
    trial(4, 0.01, 64, "pruned", objective=1.2, reason="below the median"),
    trial(5, 0.1, 64, objective=0.4),
    trial(6, 1.0, 64, objective=0.5),
    trial(7, 10.0, 64, "diverged"),
    trial(8, 3.0, 64, "diverged"),
    trial(9, 0.3, 64, "cancelled"),  # cancelled by a user: not on the map
    trial(10, 0.3, 16, "running", objective=0.2),  # not ended: not on the map
]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_the_map_holds_every_ended_trial_by_combination():
    data = build_lr_map(sweep(), TRIALS)
    body = data.model_dump(mode="json")
    assert body["learning_rate_parameter"] == LR and body["other_parameters"] == [BS]
    assert body["objective"] == {"metric": "val_loss", "goal": "minimize"}
    assert [c["label"] for c in body["combinations"]] == ["bs=16", "bs=64"]
    assert body["combinations"][1]["params"] == {BS: 64}
    points = {p["job_id"]: p for p in body["points"]}
    assert set(points) == {f"j{i}" for i in range(9)}  # cancelled and running left out
    assert points["j3"]["status"] == "skipped" and "ceiling" in points["j3"]["reason"]
    assert points["j4"] == {
        "job_id": "j4",
        "trial_index": 4,
        "learning_rate": 0.01,
        "log10_learning_rate": -2.0,
        "objective": 1.2,
        "status": "pruned",
        "combination": "bs=64",
        "reason": "below the median",
    }
    assert points["j7"]["objective"] is None and points["j7"]["status"] == "diverged"
    # by combination, then by rate
    assert [(p["combination"], p["learning_rate"]) for p in body["points"]] == sorted(
        (p["combination"], p["learning_rate"]) for p in body["points"]
    )
    # the best finished trial, never a diverged one with a better number
    assert body["best"]["job_id"] == "j1"
    assert build_lr_map(sweep(goal="maximize"), TRIALS).best.job_id == "j0"


def test_the_smallest_rate_that_diverged_sets_the_ceiling():
    """As the sweep skips (services.sweeps.ceiling); the same zone when it skips nothing."""
    data = build_lr_map(sweep(), TRIALS)
    assert [c.model_dump() for c in data.ceilings] == [
        {
            "combination": "bs=16",
            "learning_rate": 1.0,
            "log10_learning_rate": 0.0,
            "trial_id": "j2",
            "source": "sweep",
        },
        {
            "combination": "bs=64",
            "learning_rate": 3.0,
            "log10_learning_rate": math.log10(3.0),
            "trial_id": "j8",
            "source": "sweep",
        },
    ]
    off = sweep()
    off.spec["skip_above_divergence"] = False
    derived = build_lr_map(off, TRIALS).ceilings
    assert [c.source for c in derived] == ["derived", "derived"]
    assert [c.learning_rate for c in derived] == [c.learning_rate for c in data.ceilings]


@pytest.mark.parametrize(
    "kept, expected",
    [
        (0.5, [(None, 0.5, None)]),
        ({"learning_rate": 0.5, "trial_id": "j2"}, [(None, 0.5, "j2")]),
        (
            {
                "bs=16": {"learning_rate": 1.0, "trial_id": "j2"},
                '{"hyperparameters.batch_size": 64}': 3,
            },
            [("bs=16", 1.0, "j2"), ("bs=64", 3.0, None)],
        ),
        (
            [{"params": {BS: 64}, "learning_rate": 3.0, "trial_id": "j8"}, {"combination": "x=1"}],
            [("bs=64", 3.0, "j8")],
        ),
        ({}, []),  # the sweep keeps ceilings and has none yet: nothing derived
    ],
)
def test_a_ceiling_the_sweep_keeps_wins(kept, expected):
    data = build_lr_map(sweep(ceiling=kept), TRIALS)
    assert [(c.combination, c.learning_rate, c.trial_id) for c in data.ceilings] == expected
    assert all(c.source == "sweep" for c in data.ceilings)


def test_unreadable_ceilings_are_left_out():
    combos = {"bs=16": {BS: 16}}
    assert sweep_ceilings(None, combos) is None
    assert sweep_ceilings({"bs=16": "high", "bs=99": 1.0}, combos) == []
    assert sweep_ceilings(-1.0, combos) == []
    assert sweep_ceilings(float("nan"), combos) == []


def test_a_sweep_without_a_learning_rate_has_no_map():
    with pytest.raises(NoLearningRateError, match="does not sweep a learning rate"):
        build_lr_map(sweep({BS: {"values": [16, 32]}}), TRIALS)
    # any path that ends in learning_rate is the rate
    other = sweep({"training.optimizer.learning_rate": {"values": [0.1]}})
    rows = [TrialRow("a", 0, "succeeded", 0.5, {"training.optimizer.learning_rate": 0.1}, None)]
    data = build_lr_map(other, rows)
    assert data.learning_rate_parameter == "training.optimizer.learning_rate"
    assert data.combinations[0].label == "" and data.points[0].combination == ""


def _pixels_near(png: bytes, rgb: tuple[float, float, float], tol: float = 0.02) -> np.ndarray:
    from matplotlib import image

    pixels = image.imread(io.BytesIO(png), format="png")[..., :3]
    return np.all(np.abs(pixels - np.array(rgb)) < tol, axis=-1)


def _tint(colour: str, alpha: float = 0.1) -> tuple[float, float, float]:
    from matplotlib import colors

    r, g, b = colors.to_rgb(colour)
    return (1 - alpha + alpha * r, 1 - alpha + alpha * g, 1 - alpha + alpha * b)


def test_the_png_marks_diverged_trials_and_shades_the_zone_above_the_ceiling():
    finished = [t for t in TRIALS if t.status == "succeeded"]
    plain = lr_map_png(build_lr_map(sweep(), finished))
    width, height = png_size(plain)
    assert width > 500 and height > 300
    assert not _pixels_near(plain, _tint("tab:red", 1.0)).any()  # nothing red: nothing diverged
    one_zone = [*finished, trial(7, 10.0, 64, "diverged")]
    drawn = lr_map_png(build_lr_map(sweep(ceiling=5.0), one_zone))
    red = _pixels_near(drawn, _tint("tab:red", 1.0))
    assert red.sum() > 50  # the cross (and its legend entry)
    zone = _pixels_near(drawn, _tint("tab:red", ZONE_ALPHA[1]), tol=0.01)
    assert zone.sum() > 2000  # the shaded zone, right of the ceiling
    cols = np.flatnonzero(zone.sum(axis=0) > 50)
    assert cols.min() > width * 0.3 and cols.max() < width * 0.75  # inside the axes' right part
    unshaded = lr_map_png(build_lr_map(sweep(ceiling={}), one_zone))
    assert _pixels_near(unshaded, _tint("tab:red", ZONE_ALPHA[1]), tol=0.01).sum() < zone.sum() / 10


def test_the_png_of_a_sweep_with_nothing_ended_says_so():
    data = build_lr_map(sweep(), [trial(0, 0.1, 16, "running")])
    assert data.points == [] and data.best is None
    assert png_size(lr_map_png(data))[0] > 100


def test_many_combinations_draw_fast_enough():
    rows = [
        trial(i, 10 ** (-3 + (i % 25) / 6), 16 + i // 25, objective=1 + (i % 25) / 10)
        for i in range(1000)
    ]
    data = build_lr_map(sweep({LR: {}, BS: {}}), rows)
    assert len(data.combinations) == 40 and len(data.points) == 1000
    assert png_size(lr_map_png(data))[0] > 500


def test_a_jobs_figures_are_pngs():
    history = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "val_loss": 1.2 / e,
            "train_accuracy": 1 - 1 / (e + 1),
            "val_accuracy": 0.9 - 1 / (e + 1),
            "grad_norm.layer_0": 0.5 / e,
            "grad_norm.layer_1": 0.1 / e,
            "weight_norm.layer_0": 1 + e / 10,
            "weight_norm.layer_1": 2 + e / 10,
            "dead_relu_fraction.layer_0": 0.05 * e,
        }
        for e in range(1, 8)
    ]
    history.append({"epoch": 8, "train_loss": None, "val_loss": None})  # diverged
    width, height = png_size(plots.learning_curve_png(history, title="lr=0.1"))
    assert width > height > 100
    width, height = png_size(plots.layers_png(history, title="lr=0.1"))
    assert width > 2 * height > 200
    # unflattened records draw the same lines
    records = [
        {
            "epoch": 1,
            "grad_norm": [0.5, 0.1],
            "weight_norm": [1.0, 2.0],
            "dead_relu_fraction": [0.1, None],
        }
    ]
    assert plots._layer_series(records, "grad_norm") == {0: ([1], [0.5]), 1: ([1], [0.1])}
    assert plots._layer_series(records, "dead_relu_fraction") == {0: ([1], [0.1])}
    assert png_size(plots.layers_png([{"epoch": 1}]))[0] > 100  # nothing to show: says so


def test_the_zone_deepens_where_more_combinations_diverged():
    drawn = lr_map_png(build_lr_map(sweep(), TRIALS))  # ceilings: bs=16 at 1.0, bs=64 at 3.0
    low, high = ZONE_ALPHA
    half = _pixels_near(drawn, _tint("tab:red", low + (high - low) / 2), tol=0.008)
    full = _pixels_near(drawn, _tint("tab:red", high), tol=0.008)
    assert half.sum() > 2000 and full.sum() > 2000
    # one combination above its ceiling from 1.0, both from 3.0: the deeper band is right
    half_cols = np.flatnonzero(half.sum(axis=0) > 50)
    full_cols = np.flatnonzero(full.sum(axis=0) > 50)
    assert full_cols.min() > half_cols.max() - 3
