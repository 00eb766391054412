"""What ``train_accuracy`` means in each ``train_metrics`` mode.

Default ("after_epoch"): with the epoch's final weights, on a fixed sample of
``TRAIN_SAMPLE_ROWS`` training rows (the whole set when it is no larger),
drawn once from the spec's seed and recorded in ``TrainResult.train_metrics``.
"running": over the epoch's batches, each before its update. Neither mode
changes what is trained.
"""

from __future__ import annotations

import numpy as np
import pytest

from services.trainer import dataset_from_arrays, fit
from services.trainer.epoch_metrics import TRAIN_SAMPLE_ROWS, train_sample

from .conftest import make_spec, strip_seconds

N_TRAIN = 3000


def _big_data():
    """More training rows than the sample holds: a noisy two-feature rule."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((N_TRAIN + 500, 2))
    y = (X[:, 0] * X[:, 1] + 0.3 * rng.standard_normal(len(X)) > 0).astype(int)
    return dataset_from_arrays(X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:], y[N_TRAIN:])


def _spec(**hp):
    return make_spec(
        architecture={"layers": [{"units": 16}, {"units": 8}]},
        hyperparameters={"epochs": 3, "batch_size": 64, "seed": 3, **hp},
    )


def _accuracy(result, rows) -> float:
    """The final network's accuracy on ``rows`` of the training set, outside ``fit``."""
    data = result.data
    assert data is not None
    X, y = data.X_train[rows], data.y_train[rows]
    O = result.network.forward(X)
    return float(np.mean(result.network.predict_labels(O) == y))


def test_the_sample_is_fixed_sorted_distinct_and_drawn_from_the_seed():
    rows = train_sample(N_TRAIN, TRAIN_SAMPLE_ROWS, 3)
    assert rows is not None and len(rows) == TRAIN_SAMPLE_ROWS == 1024
    assert np.all(np.diff(rows) > 0) and rows[0] >= 0 and rows[-1] < N_TRAIN
    expected = np.sort(np.random.default_rng(3).choice(N_TRAIN, 1024, replace=False))
    assert np.array_equal(rows, expected)
    assert not np.array_equal(rows, train_sample(N_TRAIN, TRAIN_SAMPLE_ROWS, 4))
    assert train_sample(TRAIN_SAMPLE_ROWS, TRAIN_SAMPLE_ROWS, 3) is None  # the whole set


def test_default_train_accuracy_is_the_final_weights_on_the_recorded_sample():
    result = fit(_spec(), data=_big_data())
    info = result.train_metrics
    assert info == {
        "mode": "after_epoch",
        "sample_rows": 1024,
        "training_rows": N_TRAIN,
        "sample_seed": 3,
    }
    assert result.summary()["train_metrics"] == info
    rows = train_sample(info["training_rows"], info["sample_rows"], info["sample_seed"])
    # recomputed outside fit (bias added apart, not in the product): a near-tie
    # may round the other way, one row at most here
    got = result.history[-1]["train_accuracy"]
    assert abs(got - _accuracy(result, rows)) <= 1 / 1024
    # a share of the sample's 1,024 rows, not of the whole set's 3,000
    assert round(got * 1024) == pytest.approx(got * 1024, abs=1e-9)
    assert abs(got - _accuracy(result, slice(None))) < 0.05  # and close to the whole set's


def test_a_set_no_larger_than_the_sample_is_measured_whole():
    result = fit(make_spec(hyperparameters={"epochs": 2}))
    data = result.data
    assert data is not None and len(data.X_train) <= TRAIN_SAMPLE_ROWS
    info = result.train_metrics
    assert info["sample_rows"] == info["training_rows"] == len(data.X_train)
    got = result.history[-1]["train_accuracy"]
    assert abs(got - _accuracy(result, slice(None))) <= 1 / len(data.X_train)


def test_dead_units_are_counted_on_the_sample_rows():
    result = fit(_spec(), data=_big_data())
    info, net, data = result.train_metrics, result.network, result.data
    assert data is not None
    rows = train_sample(info["training_rows"], info["sample_rows"], info["sample_seed"])
    X = data.X_train[rows]
    dead = []
    for layer in net.layers[:-1]:
        X = layer.activation.forward(X @ layer.params["W"] + layer.params["b"])
        dead.append(float(1.0 - (X > 0).any(axis=0).mean()))
    assert result.history[-1]["dead_relu_fraction"] == pytest.approx(dead + [None])


def test_the_mode_changes_no_trained_number():
    data = _big_data()
    default, running = fit(_spec(), data=data), fit(_spec(train_metrics="running"), data=data)
    assert running.train_metrics == {"mode": "running"}
    assert default.network.params_flat.tobytes() == running.network.params_flat.tobytes()
    for a, b in zip(default.history, running.history, strict=True):
        for key in ("train_loss", "val_loss", "val_accuracy", "grad_norm", "weight_norm"):
            assert a[key] == b[key], key


def test_the_same_spec_twice_and_a_resumed_run_give_the_same_records():
    data = _big_data()
    blobs: dict[int, bytes] = {}
    full = fit(
        _spec(epochs=4),
        data=data,
        checkpoint_every=2,
        on_checkpoint=lambda e, b: blobs.setdefault(e, b),
    )
    again = fit(_spec(epochs=4), data=data)
    resumed = fit(_spec(epochs=4), data=data, resume_from=blobs[2], history=full.history[:2])
    assert strip_seconds(again.history) == strip_seconds(full.history)
    assert strip_seconds(resumed.history) == strip_seconds(full.history)
    assert resumed.train_metrics == full.train_metrics


def test_underfitting_is_diagnosed_from_the_sampled_accuracy():
    """A linear model cannot learn the product rule: about chance on the sample."""
    spec = make_spec(
        architecture={"layers": []},
        hyperparameters={"epochs": 3, "batch_size": 64, "learning_rate": 0.05},
    )
    result = fit(spec, data=_big_data())
    last = result.history[-1]
    assert last["train_accuracy"] < 0.8
    underfit = [d for d in result.diagnosis if d["code"] == "underfitting"]
    assert underfit and underfit[0]["evidence"]["train_accuracy"] == last["train_accuracy"]
