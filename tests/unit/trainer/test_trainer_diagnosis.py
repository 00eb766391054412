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


def test_a_loss_that_is_zero_from_the_start_is_not_flat_learning():
    flat_zero = [{"epoch": e, "train_loss": 0.0, "val_loss": None} for e in range(1, 6)]
    assert "not_learning" not in [f["code"] for f in diagnose(flat_zero, task="regression")]
    flat = [{"epoch": e, "train_loss": 0.7, "val_loss": None} for e in range(1, 6)]
    assert "not_learning" in [f["code"] for f in diagnose(flat, task="regression")]


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


def test_a_completely_dead_layer_is_not_advised_a_higher_rate():
    """A dead layer passes no gradient: not_learning must not say "raise the learning
    rate" while dead_relus says to lower it."""
    spec = _spec({"name": "moons"}, [{"units": 16}, {"units": 16}], epochs=5)
    data = load_dataset(spec["dataset"])
    net = build_network(spec, data)
    net.layers[1].params["b"][:] = -50.0  # the second layer can never fire
    result = fit(spec, data=data, network=net)
    codes = _codes(result)
    assert "not_learning" in codes and "dead_relus" in codes
    for finding in result.diagnosis:
        assert "raise the learning rate" not in finding["suggestion"].lower(), finding
    flat = next(f for f in result.diagnosis if f["code"] == "not_learning")
    assert "completely dead" in flat["message"] and "dead_relus" in flat["suggestion"]


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


def _history(train, val):
    return [
        {"epoch": e, "train_loss": t, "val_loss": v, "train_accuracy": 0.95}
        for e, (t, v) in enumerate(zip(train, val, strict=True), start=1)
    ]


def _overfit_codes(train, val):
    return [f["code"] for f in diagnose(_history(train, val)) if f["code"] == "overfitting"]


def test_overfitting_needs_a_sustained_rise_above_a_falling_training_loss():
    falling = [1.0, 0.6, 0.4, 0.3, 0.22, 0.16, 0.12, 0.09]
    assert _overfit_codes(falling, [0.9, 0.6, 0.45, 0.44, 0.48, 0.53, 0.58, 0.64]) == [
        "overfitting"
    ]
    # overfit, then flat (the validation loss drifting down a little): still overfit
    plateau_train = [1.0, 0.6, 0.4, 0.3, 0.2, 0.12, 0.09, 0.08, 0.077, 0.076]
    plateau_val = [0.9, 0.6, 1.0, 1.4, 1.55, 1.587, 1.5867, 1.5853, 1.5844, 1.5837]
    assert _overfit_codes(plateau_train, plateau_val) == ["overfitting"]
    # a loss spike (an Adam instability) recovering at the end: not overfitting
    spike_train = [1.0, 0.5, 0.2, 0.05, 0.02, 0.0095, 0.0095, 0.113, 0.05, 0.01]
    spike_val = [0.9, 0.4, 0.2, 0.1, 0.09, 0.085, 0.086, 0.241, 0.148, 0.094]
    assert _overfit_codes(spike_train, spike_val) == []
    # validation below the training loss, wobbling (dropout, noise): not overfitting
    assert _overfit_codes([0.29] * 8, [0.19, 0.2, 0.21, 0.19, 0.22, 0.2, 0.21, 0.213]) == []
    # one noisy last epoch after a flat stretch
    assert _overfit_codes(falling, [0.9, 0.6, 0.45, 0.44, 0.45, 0.44, 0.45, 0.6]) == []
    # a run that blew up: both losses rise together
    blown = [1e33, 1e11, 1.2e11, 1.4e11, 1.6e11, 1.8e11, 2e11, 2.1e11]
    assert _overfit_codes(blown, [6e10, 1e11, 1.2e11, 1.4e11, 1.6e11, 1.8e11, 2e11, 2.1e11]) == []
    # a rise of a thousandth at 100% accuracy
    tiny = [0.1, 0.05, 0.03, 0.02, 0.015, 0.012, 0.011, 0.0108]
    assert (
        _overfit_codes(tiny, [0.0017, 0.0015, 0.0016, 0.0018, 0.0022, 0.0025, 0.0026, 0.0027]) == []
    )


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


def test_lr_range_test_clips_gradients_as_fit_does():
    spec = _spec({"name": "digits"}, [{"units": 32}], optimizer="sgd")
    plain = lr_range_test(spec, lr_min=1e-3, lr_max=10.0, steps=30)
    spec["hyperparameters"]["gradient_clip_norm"] = 0.01
    clipped = lr_range_test(spec, lr_min=1e-3, lr_max=10.0, steps=30)
    assert clipped["losses"][0] == plain["losses"][0]  # the same first batch, before any update
    assert clipped["losses"][1:] != plain["losses"][1 : len(clipped["losses"])]


def test_lr_range_test_without_divergence():
    spec = _spec({"name": "moons"}, [{"units": 16}], optimizer="sgd")
    result = lr_range_test(spec, lr_min=1e-6, lr_max=1e-2, steps=20)
    assert result["diverged_lr"] is None and len(result["losses"]) == 20
