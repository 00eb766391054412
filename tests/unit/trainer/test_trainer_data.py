"""Datasets: every generator and bundled set, the split and the standardization."""

from __future__ import annotations

import numpy as np
import pytest

from services.trainer import SpecError, dataset_from_arrays, fit, load_dataset, load_uploaded
from services.trainer.data import DATASETS

EXPECTED = {
    # name: (task, n_classes, n_features)
    "xor": ("classification", 2, 2),
    "spirals": ("classification", 3, 2),
    "moons": ("classification", 2, 2),
    "circles": ("classification", 2, 2),
    "blobs": ("classification", 3, 2),
    "sine": ("regression", None, 1),
    "digits": ("classification", 10, 64),
    "iris": ("classification", 3, 4),
    "wine": ("classification", 3, 13),
    "breast_cancer": ("classification", 2, 30),
    "diabetes": ("regression", None, 10),
}


def test_every_dataset_is_covered():
    # arrays: the tests of inline data below; uploaded: test_uploaded_rows_split_as_arrays
    assert set(EXPECTED) | {"arrays", "uploaded"} == set(DATASETS)


@pytest.mark.parametrize("labels", [["b", "a", "c"], [3, 1, 2]])
def test_uploaded_rows_split_as_arrays(labels):
    """Rows handed to fit as an 'uploaded' dataset (labels encoded, classes aside) are
    split and standardized bit for bit as the same rows given inline."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = np.array(labels * 13 + labels[:1])
    split = {"validation_split": 0.25, "seed": 5}
    inline = load_dataset({"name": "arrays", "X": X.tolist(), "y": y.tolist(), **split})
    classes, codes = np.unique(y, return_inverse=True)
    facts = {"id": "d1", "task": "classification", "n_rows": 40, "n_features": 3}
    spec = {"name": "uploaded", **split, **facts, "class_counts": np.bincount(codes).tolist()}
    uploaded = load_uploaded(spec, X, codes.astype(np.int64), classes.tolist())
    for key in ("X_train", "X_val", "y_train", "y_val"):
        assert np.array_equal(getattr(inline, key), getattr(uploaded, key))
    assert uploaded.classes == inline.classes and uploaded.n_classes == 3
    with pytest.raises(SpecError, match="come as fit's data"):
        load_dataset(spec)
    with pytest.raises(SpecError, match="class_counts"):
        load_uploaded({**spec, "class_counts": [39, 2]}, X, codes)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dataset_loads_split_and_standardized(name):
    task, n_classes, n_features = EXPECTED[name]
    data = load_dataset({"name": name, "validation_split": 0.25, "seed": 3})
    assert data.task == task and data.n_classes == n_classes and data.n_features == n_features
    n_train, n_val = len(data.X_train), len(data.X_val)
    assert len(data.y_train) == n_train and len(data.y_val) == n_val
    assert n_val == pytest.approx(0.25 * (n_train + n_val), abs=(n_classes or 1))
    assert np.isfinite(data.X_train).all() and np.isfinite(data.X_val).all()
    # standardized with the training statistics only
    assert np.allclose(data.X_train.mean(axis=0), 0, atol=1e-9)
    std = data.X_train.std(axis=0)
    assert np.all((np.abs(std - 1) < 1e-9) | (std == 0))
    if task == "classification":
        assert data.y_train.dtype == np.int64
        assert set(np.unique(data.y_train)) == set(range(n_classes))
        # stratified: each class's share is the same in both parts
        share_train = np.bincount(data.y_train, minlength=n_classes) / n_train
        share_val = np.bincount(data.y_val, minlength=n_classes) / n_val
        assert np.allclose(share_train, share_val, atol=0.05)
    else:
        assert np.isclose(data.y_train.mean(), 0, atol=1e-9)


@pytest.mark.parametrize("name", ["xor", "spirals", "moons", "circles", "blobs", "sine"])
def test_synthetic_options_and_seed(name):
    a = load_dataset({"name": name, "n_samples": 120, "noise": 0.05, "seed": 1})
    b = load_dataset({"name": name, "n_samples": 120, "noise": 0.05, "seed": 1})
    c = load_dataset({"name": name, "n_samples": 120, "noise": 0.05, "seed": 2})
    assert len(a.X_train) + len(a.X_val) == 120
    assert np.array_equal(a.X_train, b.X_train) and np.array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.X_train, c.X_train)


def test_spiral_arms_and_blob_centers():
    assert load_dataset({"name": "spirals", "arms": 5}).n_classes == 5
    blobs = load_dataset({"name": "blobs", "centers": 4, "n_features": 7})
    assert blobs.n_classes == 4 and blobs.n_features == 7


def test_xor_truth_table():
    data = load_dataset(
        {"name": "xor", "n_samples": 4, "noise": 0.0, "validation_split": 0.0, "standardize": False}
    )
    pairs = zip(data.X_train.tolist(), data.y_train.tolist(), strict=True)
    table = {tuple(x): y for x, y in pairs}
    assert table == {(0.0, 0.0): 0, (0.0, 1.0): 1, (1.0, 0.0): 1, (1.0, 1.0): 0}


def test_standardization_uses_training_statistics_only():
    X = [[0.0], [2.0], [4.0], [6.0], [100.0], [200.0]]
    y = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    raw = load_dataset(
        {
            "name": "arrays",
            "X": X,
            "y": y,
            "standardize": False,
            "standardize_targets": False,
            "validation_split": 0.34,
            "seed": 0,
        }
    )
    std = load_dataset({"name": "arrays", "X": X, "y": y, "validation_split": 0.34, "seed": 0})
    mean, sd = raw.X_train.mean(axis=0), raw.X_train.std(axis=0)
    assert np.allclose(std.X_val, (raw.X_val - mean) / sd)
    assert np.allclose(std.feature_mean, mean) and np.allclose(std.feature_std, sd)
    assert np.allclose(std.y_val, (raw.y_val - raw.y_train.mean()) / raw.y_train.std())


def test_arrays_dataset_classification_with_string_labels():
    data = load_dataset(
        {
            "name": "arrays",
            "X": [[i, i % 3] for i in range(30)],
            "y": ["a", "b", "c"] * 10,
            "validation_split": 0.2,
        }
    )
    assert data.task == "classification" and data.n_classes == 3 and data.classes == ["a", "b", "c"]
    assert len(data.X_val) == 6


def test_arrays_dataset_regression_multi_target_and_numpy_input():
    X = np.linspace(0, 1, 20)[:, None]
    y = np.c_[np.sin(X[:, 0]), np.cos(X[:, 0])]
    data = load_dataset({"name": "arrays", "X": X, "y": y, "task": "regression"})
    assert data.task == "regression" and data.n_outputs == 2 and data.y_train.shape[1] == 2


def test_bad_dataset_spec_is_a_spec_error():
    with pytest.raises(SpecError) as err:
        load_dataset({"name": "moons", "arms": 2})
    assert err.value.loc == "dataset.arms"


def test_arrays_dataset_labels_in_a_column_are_classes():
    spec = {"name": "arrays", "X": [[i] for i in range(8)], "y": [[0], [1]] * 4}
    for task in (None, "classification"):
        data = load_dataset({**spec, "task": task} if task else spec)
        assert data.task == "classification" and data.y_train.ndim == 1 and data.n_classes == 2


def test_a_synthetic_split_that_leaves_no_training_row_names_the_field():
    with pytest.raises(SpecError) as err:
        load_dataset({"name": "xor", "n_samples": 4, "noise": 0, "validation_split": 0.9})
    assert err.value.loc == "dataset.validation_split"


@pytest.mark.parametrize(
    "labels", [[-1, 1], [1, 2], [2019, 2020], [0.5, 1.5], ["neg", "pos"], [False, True]], ids=str
)
def test_dataset_from_arrays_encodes_any_two_labels_as_a_binary_task(labels):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 2))
    codes = (X[:, 0] > 0).astype(int)
    y = np.asarray(labels)[codes]
    data = dataset_from_arrays(X[:40], y[:40], X[40:], y[40:], task="classification")
    assert data.n_classes == 2 and data.classes == list(np.asarray(labels))
    assert data.y_train.tolist() == codes[:40].tolist()
    assert data.y_val.tolist() == codes[40:].tolist()
    spec = {
        "dataset": {"name": "digits"},
        "architecture": {"layers": [{"units": 8}]},
        "hyperparameters": {"learning_rate": 0.1, "epochs": 30, "optimizer": "adam"},
    }
    result = fit(spec, data=data)
    assert result.network.layers[-1].n_out == 1  # a sigmoid head
    assert result.history[-1]["train_loss"] > 0 and result.history[-1]["val_accuracy"] > 0.9
    assert set(result.predict(X[40:]).tolist()) <= set(np.asarray(labels).tolist())


def test_dataset_from_arrays_keeps_class_indices_as_they_are():
    """Classes {0, 2} of a 3-class problem stay 0 and 2 (training an existing net on them)."""
    data = dataset_from_arrays(np.zeros((4, 1)), np.array([0, 2, 2, 0]))
    assert data.n_classes == 3 and data.classes is None
    assert data.y_train.tolist() == [0, 2, 2, 0]


def test_dataset_from_arrays_rejects_mismatched_rows():
    with pytest.raises(ValueError, match="one row per entry"):
        dataset_from_arrays(np.zeros((5, 2)), np.zeros(4, int))


@pytest.mark.parametrize("name", ["xor", "moons", "circles", "spirals", "blobs", "sine"])
@pytest.mark.parametrize("n_samples", [4, 7, 33])
@pytest.mark.parametrize("split", [0.05, 0.2, 0.9])
def test_validation_rows_of_a_generated_set_without_generating_it(name, n_samples, split):
    from services.trainer.data import validation_rows
    from services.trainer.spec import parse_dataset

    spec = {"name": name, "n_samples": n_samples, "validation_split": split}
    options = parse_dataset(spec).options
    try:
        expected = len(load_dataset(spec).X_val)
    except SpecError:  # the split leaves no training row
        return
    assert validation_rows(name, options, split) == expected


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer", "digits", "diabetes"])
def test_validation_rows_of_a_bundled_set(name):
    from services.trainer.data import validation_rows

    for split in (0.001, 0.006, 0.2):
        expected = len(load_dataset({"name": name, "validation_split": split}).X_val)
        assert validation_rows(name, {}, split) == expected, split
