"""A job's trained model out (services.models): the stored weights keep the data's
statistics and labels, the download's keys, and predictions that are the trainer's own
(``TrainResult.predict``), for raw rows, with or without stored statistics."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from services.models import (
    DataStats,
    ModelCache,
    check_rows,
    trained_model,
    weights_blob,
)
from services.specs import SpecValidationError
from services.trainer import Network, fit, load_dataset

IRIS = {
    "dataset": {"name": "iris"},
    "architecture": {"layers": [{"units": 8}]},
    "hyperparameters": {"learning_rate": 0.1, "epochs": 4},
}
#: one sigmoid unit (binary cross-entropy): probabilities are [1 - p, p]
MOONS_SIGMOID = {
    "dataset": {"name": "moons", "n_samples": 120},
    "architecture": {"layers": [{"units": 6}], "output_activation": "sigmoid"},
    "hyperparameters": {"learning_rate": 0.3, "epochs": 4},
}
SINE = {
    "dataset": {"name": "sine", "n_samples": 120},
    "architecture": {"layers": [{"units": 8, "activation": "tanh"}]},
    "hyperparameters": {"learning_rate": 0.05, "epochs": 4},
}
#: string labels given inline, features far from standardized, no standardization asked
WORDS = {
    "dataset": {
        "name": "arrays",
        "X": [[float(i), float(i % 5) * 10.0] for i in range(60)],
        "y": ["cat" if i % 3 else "dog" for i in range(60)],
        "standardize": False,
    },
    "architecture": {"layers": [{"units": 4}]},
    "hyperparameters": {"learning_rate": 0.01, "epochs": 3},
}


def raw_rows(n_features: int, n: int = 33, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(3.0, 2.0, size=(n, n_features))


def npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {key: z[key] for key in z.files}


@pytest.mark.parametrize(
    "spec", [IRIS, MOONS_SIGMOID, SINE, WORDS], ids=lambda s: s["dataset"]["name"]
)
def test_predictions_are_the_trainers_own(spec):
    result = fit(spec)
    model = trained_model(spec, weights_blob(result.network, result.data))
    X = raw_rows(model.n_features)
    answer = model.predict(X.tolist())
    expected = result.predict(X)
    assert answer.predictions == expected.tolist()  # bit for bit: the same computation
    if model.task == "classification":
        assert answer.classes == list(result.data.classes)
        proba = np.array(answer.probabilities)
        assert proba.shape == (len(X), len(answer.classes))
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
        picked = [answer.classes[i] for i in proba.argmax(axis=1)]
        assert picked == answer.predictions
    else:
        assert answer.probabilities is None and answer.classes is None
        assert all(isinstance(v, float) for v in answer.predictions)


def test_string_labels_round_trip():
    result = fit(WORDS)
    model = trained_model(WORDS, weights_blob(result.network, result.data))
    answer = model.predict(raw_rows(2).tolist())
    assert answer.classes == ["cat", "dog"]
    assert set(answer.predictions) <= {"cat", "dog"}
    assert npz(model.npz_bytes())["classes"].tolist() == ["cat", "dog"]


def test_the_stored_blob_keeps_the_network_and_adds_the_statistics():
    result = fit(IRIS)
    blob = weights_blob(result.network, result.data)
    back = Network.from_npz_bytes(blob)
    assert back.params_flat.tobytes() == result.network.params_flat.tobytes()
    stored = npz(blob)
    assert set(stored) == {
        "layer_0.W",
        "layer_0.b",
        "layer_1.W",
        "layer_1.b",
        "architecture",
        "data.feature_mean",
        "data.feature_std",
        "data.meta",
    }
    assert json.loads(str(stored["data.meta"])) == {"classes": [0, 1, 2]}
    np.testing.assert_array_equal(stored["data.feature_mean"], result.data.feature_mean)


def test_the_downloads_keys_shapes_and_spec():
    for spec, extra in (
        (IRIS, {"feature_mean", "feature_std", "classes"}),
        (SINE, {"feature_mean", "feature_std", "target_mean", "target_std"}),
        (WORDS, {"classes"}),  # not standardized: no statistics
    ):
        result = fit(spec)
        model = trained_model(spec, weights_blob(result.network, result.data))
        got = npz(model.npz_bytes())
        assert set(got) == {"W1", "b1", "W2", "b2", "spec", "architecture"} | extra
        sizes = result.network.sizes
        assert got["W1"].shape == (sizes[0], sizes[1]) and got["b1"].shape == (sizes[1],)
        assert got["W2"].shape == (sizes[1], sizes[2]) and got["b2"].shape == (sizes[2],)
        np.testing.assert_array_equal(got["W2"], result.network.layers[1].params["W"])
        assert got["spec"].shape == () and json.loads(str(got["spec"])) == spec
        assert json.loads(str(got["architecture"]))["sizes"] == sizes
        if "feature_mean" in extra:
            np.testing.assert_array_equal(got["feature_std"], result.data.feature_std)
        if "target_mean" in extra:
            assert float(got["target_mean"]) == float(result.data.target_mean)


def test_weights_without_statistics_get_them_recomputed_from_the_dataset():
    result = fit(SINE)
    legacy = result.network.to_npz_bytes()  # as stored before the statistics were kept
    calls = []

    def recompute():
        calls.append(1)
        return load_dataset(SINE["dataset"])

    model = trained_model(SINE, legacy, recompute)
    X = raw_rows(1)
    assert calls == [1]
    assert model.predict(X.tolist()).predictions == result.predict(X).tolist()
    assert DataStats.of(result.data).arrays().keys() == model.stats.arrays().keys()


def test_rows_of_another_width_are_a_422_naming_them():
    assert check_rows([[1, 2], [3, 4.5]], 2).dtype == np.float64
    with pytest.raises(SpecValidationError) as err:
        check_rows([[1.0, 2.0], [1.0], [1.0, 2.0, 3.0]], 2)
    assert err.value.details == [
        {"loc": "rows.1", "msg": "expected 2 features, got 1"},
        {"loc": "rows.2", "msg": "expected 2 features, got 3"},
    ]


def test_the_cache_keeps_the_latest_models():
    cache = ModelCache(max_entries=2)
    loads = []

    def loader(name):
        def load():
            loads.append(name)
            return name

        return load

    for key in ("a", "b", "a", "c", "b"):
        cache.get((key,), loader(key))  # type: ignore[arg-type]
    assert loads == ["a", "b", "c", "b"]  # "b" was the least recent when "c" came


def test_the_cache_is_bounded_by_the_parameters_bytes():
    result = fit(IRIS)
    model = trained_model(IRIS, weights_blob(result.network, result.data))
    size = model.network.params_flat.nbytes
    cache = ModelCache(max_entries=10, max_bytes=2 * size)
    for key in range(3):
        cache.get((key,), lambda: model)
    loads = []
    cache.get((0,), lambda: loads.append(0) or model)  # gone: only two fit
    cache.get((2,), lambda: loads.append(2) or model)  # kept
    assert loads == [0]
