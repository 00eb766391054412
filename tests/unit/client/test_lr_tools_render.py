"""What the CLI prints of the learning-rate tools: a range test's reading, a sweep's
divergence ceiling and range-test bounds, a trial's learning-rate findings."""

from __future__ import annotations

from client.lrfind import summary
from client.render import ceiling_lines, lr_finding_lines


def test_a_range_tests_reading_and_its_curve():
    curve = [
        {"step": i, "lr": 10 ** (-4 + i / 10), "loss": 2.3 - i / 50, "smoothed_loss": 2.3 - i / 60}
        for i in range(40)
    ]
    test = {
        "id": "t1",
        "status": "succeeded",
        "steps_taken": 40,
        "min_lr": 1e-4,
        "max_lr": 10.0,
        "stopped_lr": 0.8,
        "suggested_lr": 0.05,
        "divergence_lr": 0.6,
        "interval": [0.005, 0.6],
        "curve": curve,
    }
    lines = summary(test)
    assert any("suggested learning rate" in line and "0.05" in line for line in lines)
    assert any("diverge at: 0.6" in line for line in lines)
    assert any("*" in line for line in lines)  # the curve is drawn
    failed = summary({"id": "t2", "status": "failed", "error": "boom"})
    assert failed == ["range test t2 failed: boom"]


def test_the_ceiling_and_the_range_test_bounds_of_a_sweep():
    sweep = {
        "divergence_ceiling": [
            {
                "parameter": "hyperparameters.learning_rate",
                "learning_rate": 3.0,
                "trial_id": "j",
                "trial_index": 2,
                "params": {"hyperparameters.momentum": 0.9},
            }
        ],
        "range_test": {
            "id": "t",
            "status": "succeeded",
            "parameter": "hyperparameters.learning_rate",
            "min": 0.001,
            "max": 0.5,
        },
    }
    first, second = ceiling_lines(sweep)
    assert first.startswith("divergence ceiling: hyperparameters.learning_rate >= 3")
    assert "momentum" in first and "trial 2" in first
    assert second.endswith("[0.001, 0.5]")
    assert ceiling_lines({"divergence_ceiling": [], "range_test": None}) == []


def test_only_the_learning_rate_findings_of_a_diagnosis():
    diagnosis = [
        {"code": "underfitting", "message": "m"},
        {"code": "lr_too_low", "message": "slow", "suggestion": "try 3e-4"},
    ]
    assert lr_finding_lines(diagnosis) == ["lr_too_low: slow (try 3e-4)"]
