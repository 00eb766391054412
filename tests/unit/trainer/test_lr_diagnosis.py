"""The learning-rate findings on runs trained here, and on hand-written histories for
the edges; the per-layer gradient norms of a record.

The trained cases sit far from the thresholds (see the measures each asserts, and
``benchmarks/lr_diagnosis_table.py``), so that last-bit differences between CPUs
cannot move them.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from services.trainer import build_network, diagnose, fit, load_dataset, parse_spec
from services.trainer.build import generators
from services.trainer.epoch import NORM_BATCHES, norm_steps
from services.trainer.lr_findings import HIGH_RISE, LOW_FINAL, LOW_LATE_SHARE, lr_measures

LN2, LN10 = math.log(2), math.log(10)
SGD, MOMENTUM, ADAM = (
    {"optimizer": "sgd"},
    {"optimizer": "sgd", "momentum": 0.9},
    {"optimizer": "adam"},
)


def _spec(dataset: str, hidden: list[int], optimizer: dict, lr: float, seed: int) -> dict:
    """The grid's runs (benchmarks/lr_diagnosis_table.py): 20 epochs, batch 32, ReLU."""
    return {
        "dataset": {"name": dataset, "seed": 0},
        "architecture": {"layers": [{"units": u} for u in hidden]},
        "hyperparameters": {
            **optimizer,
            "learning_rate": lr,
            "epochs": 20,
            "batch_size": 32,
            "seed": seed,
        },
    }


def _finding(result, code: str) -> dict | None:
    json.dumps(result.diagnosis, allow_nan=False)  # the service stores it as JSON
    for f in result.diagnosis:
        assert set(f) == {"code", "message", "evidence", "suggestion"}
    return next((f for f in result.diagnosis if f["code"] == code), None)


def _codes(result) -> list[str]:
    return [f["code"] for f in result.diagnosis]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_issue_s_runs_moons_momentum_at_rates_8_and_3_are_too_high(seed):
    # lr 8: the first epoch blows up (~90x ln 2) and the loss swings by orders of magnitude
    result = fit(_spec("moons", [32], MOMENTUM, 8.0, seed))
    assert result.status == "completed"
    high = _finding(result, "lr_too_high")
    assert high is not None and high["evidence"]["first"] > 30
    assert "learning_rate <= 0.8 (current 8, /10)" in high["suggestion"]
    # the units died in the blow-up: the dead-ReLU finding says the rate did it
    dead = _finding(result, "dead_relus")
    assert dead is not None and dead["evidence"]["caused_by"] == "lr_too_high"
    assert dead["evidence"]["dead_after_spike"] - dead["evidence"]["dead_before_spike"] > 0.3
    assert "learning rate is too high" in dead["message"]

    # lr 3: the loss bounces (0.12 -> 0.45 -> ... -> 1.18 on seed 0, 0.13 -> 3.0 on seed 1)
    result = fit(_spec("moons", [32], MOMENTUM, 3.0, seed))
    high = _finding(result, "lr_too_high")
    assert high is not None and high["evidence"]["rise"] > 3 * HIGH_RISE
    assert high["evidence"]["learning_rate"] == 3.0
    assert "current 3" in high["suggestion"]
    assert "lr_too_low" not in _codes(result)


@pytest.mark.parametrize("seed", [0, 1])
def test_adam_too_fast_on_digits_and_spirals_is_too_high(seed):
    result = fit(_spec("digits", [64], ADAM, 1.0, seed))
    high = _finding(result, "lr_too_high")
    assert high is not None and high["evidence"]["rise"] > 2
    spirals = fit(_spec("spirals", [32, 32], ADAM, 1.0, seed))
    high = _finding(spirals, "lr_too_high")
    assert high is not None and high["evidence"]["first"] > 10  # blew up, never recovered
    # the evidence holds every measure the blow-up rule reads
    assert high["evidence"]["first_over_best"] >= 3 and high["evidence"]["final"] >= 0.1
    underfit = _finding(spirals, "underfitting")
    assert underfit is not None and "raise" not in underfit["suggestion"]


@pytest.mark.parametrize("seed", [0, 1])
def test_tiny_rates_are_too_low(seed):
    for dataset, hidden, optimizer in (("digits", [64], SGD), ("moons", [32], ADAM)):
        result = fit(_spec(dataset, hidden, optimizer, 1e-4, seed))
        low = _finding(result, "lr_too_low")
        assert low is not None, (dataset, _codes(result))
        assert low["evidence"]["final"] > 1.5 * LOW_FINAL
        assert low["evidence"]["late_share"] > 1.5 * LOW_LATE_SHARE
        assert "0.0003 to 0.001 (current 0.0001, x3 to x10)" in low["suggestion"]
        assert "lr_too_high" not in _codes(result)


@pytest.mark.parametrize("seed", [0, 1])
def test_good_rates_get_no_learning_rate_finding(seed):
    for dataset, hidden, optimizer, lr in (
        ("moons", [32], MOMENTUM, 0.1),
        ("digits", [64], SGD, 0.1),
        ("digits", [64], ADAM, 1e-3),
        ("spirals", [32, 32], ADAM, 0.01),
    ):
        result = fit(_spec(dataset, hidden, optimizer, lr, seed))
        codes = _codes(result)
        assert "lr_too_high" not in codes and "lr_too_low" not in codes, (dataset, lr, codes)


# --- hand-written histories: the edges ---------------------------------------------------


def _history(losses, lr=0.1, **extra) -> list[dict]:
    return [
        {"epoch": e, "train_loss": v, "val_loss": None, "learning_rate": lr, **extra}
        for e, v in enumerate(losses, start=1)
    ]


def _lr_codes(history, **kwargs) -> list[str]:
    codes = [f["code"] for f in diagnose(history, **kwargs)]
    return [c for c in codes if c.startswith("lr_")]


def test_a_diverged_run_is_left_to_the_divergence_finding():
    history = _history([0.6, 0.3, 5.0, 40.0]) + [
        {"epoch": 5, "train_loss": None, "val_loss": None, "learning_rate": 0.1}
    ]
    findings = diagnose(history, status="diverged", diverged_epoch=5, reference_loss=LN2)
    assert [f["code"] for f in findings][0] == "diverged"
    assert not [f for f in findings if f["code"].startswith("lr_")]
    # a loss flat before it diverged is not a rate too low
    flat = _history([0.7, 0.7, 0.7, 0.7]) + [
        {"epoch": 5, "train_loss": None, "val_loss": None, "learning_rate": 0.1}
    ]
    findings = diagnose(flat, status="diverged", diverged_epoch=5, reference_loss=LN2)
    assert [f["code"] for f in findings] == ["diverged", "not_learning"]
    assert "too high" in findings[1]["message"] and "Lower" in findings[1]["suggestion"]
    # a non-finite loss in a record (not what fit records) is no measure either
    assert lr_measures(_history([0.6, float("nan"), 0.5, 0.4]), LN2) is None


def test_short_runs():
    assert lr_measures(_history([0.6, 5.0]), LN2) is None  # two epochs say nothing
    assert _lr_codes(_history([0.6, 0.3, 5.0]), reference_loss=LN2) == ["lr_too_high"]
    # four epochs of a slow, steady fall: too short to call the rate low
    slow = [0.70, 0.69, 0.68, 0.67]
    assert _lr_codes(_history(slow), reference_loss=LN2) == []
    assert _lr_codes(_history(slow + [0.66]), reference_loss=LN2) == ["lr_too_low"]


def test_a_constant_loss_is_not_learning_but_names_no_rate():
    findings = diagnose(_history([0.7] * 10), reference_loss=LN2)
    assert [f["code"] for f in findings] == ["not_learning"]


def test_a_loss_bouncing_below_the_spike_threshold_is_too_high():
    bouncing = [0.5, 0.3, 0.6, 0.33, 0.62, 0.31, 0.6, 0.32, 0.61]  # climbs of < 0.35 x ln 2
    m = lr_measures(_history(bouncing), 1.0)
    assert m is not None and m["rise"] < HIGH_RISE and m["sign_changes"] == 1.0
    (high,) = [f for f in diagnose(_history(bouncing, lr=0.9), reference_loss=1.0)]
    assert high["code"] == "lr_too_high" and high["evidence"]["divide_by"] == 3
    assert "learning_rate <= 0.3 (current 0.9, /3)" in high["suggestion"]


def test_noise_on_a_small_loss_and_a_bad_initialization_are_no_spikes():
    wobble = [0.5, 0.2, 0.1, 0.05, 0.08, 0.04, 0.06, 0.03, 0.035]
    assert _lr_codes(_history(wobble), reference_loss=LN2) == []
    # a loss far above the reference (a huge initialization) at a tiny rate
    huge = [5000.0, 5003.0, 4999.0, 5004.0, 5001.0, 5002.0]
    assert "lr_too_high" not in _lr_codes(_history(huge), reference_loss=LN2)


def test_the_rate_named_is_the_spike_epoch_s_under_a_schedule():
    history = _history([0.6, 0.3, 0.2, 1.5, 0.4, 0.3])
    for r, lr in zip(history, [0.1, 0.5, 1.0, 2.0, 1.0, 0.5], strict=True):
        r["learning_rate"] = lr
    (high,) = [f for f in diagnose(history, reference_loss=LN2) if f["code"] == "lr_too_high"]
    assert high["evidence"]["rise_epoch"] == 4 and high["evidence"]["learning_rate"] == 2.0
    assert "(current 2, /10)" in high["suggestion"]


def test_a_slow_fall_with_unhealthy_gradients_is_not_put_down_to_the_rate():
    slow = [2.3, 2.25, 2.2, 2.15, 2.1, 2.05, 2.0]
    assert _lr_codes(_history(slow), reference_loss=LN10) == ["lr_too_low"]
    vanishing = _history(slow, grad_norm=[1e-7, 1.0])
    codes = [f["code"] for f in diagnose(vanishing, reference_loss=LN10)]
    assert "vanishing_gradients" in codes and "lr_too_low" not in codes
    dead = _history(slow, dead_relu_fraction=[0.9, None])
    assert "lr_too_low" not in [f["code"] for f in diagnose(dead, reference_loss=LN10)]


def test_regression_measures_against_the_target_variance():
    slow = [0.95, 0.93, 0.91, 0.89, 0.87, 0.85]
    assert _lr_codes(_history(slow), task="regression", baseline_loss=1.0) == ["lr_too_low"]
    # explained: the same fall on a target of variance 10 leaves under half of it
    assert _lr_codes(_history(slow), task="regression", baseline_loss=10.0) == []


# --- gradient norms: the mean over evenly spaced mini-batches -----------------------------


def test_norm_steps_are_evenly_spaced_full_size_batches():
    full = [(s, s + 32) for s in range(0, 32 * 100, 32)]
    assert norm_steps(full) == [11, 24, 36, 49, 61, 74, 86, 99]  # (j + 1) * 100 // 8 - 1
    short_last = [(s, s + 32) for s in range(0, 32 * 5, 32)] + [(160, 170)]
    assert norm_steps(short_last) == [0, 1, 2, 3, 4]  # the 10-row batch is left out
    assert norm_steps([(0, 7)]) == [0]


def test_grad_norm_is_the_mean_over_the_measured_batches_of_the_first_epoch():
    # epoch 1 of fit replayed by hand: plain SGD on moons, 16 batches of 10 rows, the
    # gradient of each measured batch from Network.loss_and_grads
    spec = _spec("moons", [8, 4], SGD, 0.3, 0)
    spec["dataset"].update(n_samples=200)
    spec["hyperparameters"].update(batch_size=10, epochs=1, dtype="float64")
    result = fit(spec)
    parsed = parse_spec(spec)
    data = load_dataset(parsed.dataset)
    init_rng, train_rng = generators(parsed.hyperparameters.seed)
    net = build_network(parsed, data, init_rng)
    X, Y = data.X_train, net.encode_targets(data.y_train)
    perm = train_rng.permutation(len(X))
    bounds = [(s, min(s + 10, len(X))) for s in range(0, len(X), 10)]
    measured = set(norm_steps(bounds))
    assert len(bounds) == 16 and len(measured) == NORM_BATCHES
    sums = np.zeros(len(net.layers))
    for i, (s, e) in enumerate(bounds):
        net.loss_and_grads(X[perm[s:e]], Y[perm[s:e]])
        if i in measured:
            sums += net.grad_norms()
        net.params_flat -= 0.3 * net.grads_flat
    expected = sums / NORM_BATCHES
    assert result.history[0]["grad_norm"] == pytest.approx(expected, rel=1e-9)
    assert result.history[0]["weight_norm"] == pytest.approx(net.weight_norms(), rel=1e-9)
