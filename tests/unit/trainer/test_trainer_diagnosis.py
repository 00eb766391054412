"""Diagnosis: each finding provoked on purpose, a healthy run gives none; the lr range test."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.trainer import build_network, diagnose, fit, load_dataset, lr_range_test


def _spec(dataset, architecture, **hp):
    hyper = {"learning_rate": 0.01, "optimizer": "adam", "epochs": 30}
    hyper.update(hp)
    if isinstance(architecture, list):
        architecture = {"layers": architecture}
    return {"dataset": dataset, "architecture": architecture, "hyperparameters": hyper}


def _codes(result):
    for finding in result.diagnosis:
        assert set(finding) == {"code", "message", "evidence", "suggestion"}
        assert finding["message"] and finding["suggestion"]
    json.dumps(result.diagnosis, allow_nan=False)
    return [f["code"] for f in result.diagnosis]


def test_healthy_run_has_no_findings():
    assert _codes(fit(_spec({"name": "moons"}, [{"units": 32}], epochs=40))) == []


def test_learning_rate_ten_diverges():
    result = fit(_spec({"name": "digits"}, [{"units": 64}], optimizer="sgd", learning_rate=10.0))
    assert _codes(result)[0] == "diverged"
    assert result.diagnosis[0]["evidence"]["epoch"] == result.diverged_epoch


def test_tiny_learning_rate_is_not_learning():
    result = fit(
        _spec({"name": "moons"}, [{"units": 32}], optimizer="sgd", learning_rate=1e-7, epochs=10)
    )
    assert "not_learning" in _codes(result)
    assert result.diagnosis[0]["evidence"]["relative_improvement"] < 0.01


def test_deep_sigmoid_network_has_vanishing_gradients():
    arch = {"layers": [{"units": 32, "activation": "sigmoid"}] * 8, "initializer": "xavier"}
    result = fit(_spec({"name": "moons"}, arch, optimizer="sgd", learning_rate=0.1, epochs=5))
    assert "vanishing_gradients" in _codes(result)


def test_huge_initialization_has_exploding_gradients():
    arch = {"layers": [{"units": 64}] * 8, "initializer": "normal", "init_std": 1.0}
    result = fit(_spec({"name": "moons"}, arch, optimizer="sgd", learning_rate=1e-6, epochs=5))
    assert "exploding_gradients" in _codes(result)


def test_dead_relus():
    spec = _spec({"name": "moons"}, [{"units": 32}], epochs=5)
    data = load_dataset(spec["dataset"])
    net = build_network(spec, data)
    net.layers[0].params["b"][:24] = -50.0  # 24 of 32 units can never fire
    result = fit(spec, data=data, network=net)
    assert "dead_relus" in _codes(result)
    finding = next(f for f in result.diagnosis if f["code"] == "dead_relus")
    assert finding["evidence"]["dead_relu_fraction"][0] == pytest.approx(0.75)


def test_tiny_dataset_and_big_network_overfit():
    result = fit(
        _spec(
            {"name": "moons", "n_samples": 40, "noise": 0.4, "validation_split": 0.5},
            [{"units": 128}, {"units": 128}],
            epochs=150,
            batch_size=None,
        )
    )
    assert "overfitting" in _codes(result)


def test_linear_model_on_spirals_underfits():
    result = fit(_spec({"name": "spirals"}, [], epochs=30))
    assert _codes(result) == ["underfitting"]


def test_regression_underfitting_uses_r2():
    history = [
        {"epoch": e, "train_loss": 0.9 - 0.1 * e, "val_loss": 0.9 - 0.1 * e} for e in range(1, 4)
    ]
    codes = [f["code"] for f in diagnose(history, task="regression", baseline_loss=1.0)]
    assert codes == ["underfitting"]
    assert diagnose(history, task="regression", baseline_loss=10.0) == []


def test_lr_range_test_finds_divergence_and_suggests_a_rate():
    spec = _spec({"name": "digits"}, [{"units": 64}], optimizer="sgd", learning_rate=0.1)
    result = lr_range_test(spec, lr_min=1e-5, lr_max=100.0, steps=80)
    n = len(result["learning_rates"])
    assert 5 < n <= 80 and len(result["losses"]) == len(result["smoothed_losses"]) == n
    rates = result["learning_rates"]
    assert rates[0] == pytest.approx(1e-5) and all(np.diff(rates) > 0)
    assert result["diverged_lr"] is not None and result["diverged_lr"] <= 100.0
    low, high = result["interval"]
    assert low <= result["suggested_lr"] <= high < result["diverged_lr"]
    assert 1e-3 < result["suggested_lr"] < 10.0
    assert min(result["smoothed_losses"]) < 0.8 * result["smoothed_losses"][0]
    json.dumps(result, allow_nan=False)


def test_lr_range_test_without_divergence():
    spec = _spec({"name": "moons"}, [{"units": 16}], optimizer="sgd")
    result = lr_range_test(spec, lr_min=1e-6, lr_max=1e-2, steps=20)
    assert result["diverged_lr"] is None and len(result["losses"]) == 20
