"""Budgets at submission: the estimator against measured peaks, the 422s over the limits,
and a sweep's every combination checked as a whole job spec."""

from __future__ import annotations

import copy
import glob
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import sklearn.datasets

from services import budgets
from services.config import Limits, Settings
from services.specs import SpecValidationError, validate_job, validate_sweep
from services.trainer import fit, parse_spec
from tests.conftest import XOR_JOB

API = "/api/v1"
REPO = Path(__file__).resolve().parents[3]

#: The estimate is within this factor of the peak tracemalloc measures (numpy reports
#: its buffers to it) for a job whose peak is over 20 MiB; measured 0.99-1.12.
FACTOR = 1.25


def spec(dataset: dict, layers: list[dict], **hp: Any) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "architecture": {"layers": layers},
        "hyperparameters": {"learning_rate": 0.01, "epochs": 1, **hp},
    }


MEASURED = {
    # the batch's buffers dominate: dropout's three arrays per layer, 8,192-row batches
    "wide-batch-dropout": spec(
        {"name": "blobs", "n_samples": 20_000, "n_features": 50, "centers": 5},
        [{"units": 512}, {"units": 512}],
        batch_size=8192,
        dropout=0.3,
    ),
    # full batch, float64, tanh (its derivative's temporaries), Adam
    "full-batch-float64-tanh": spec(
        {"name": "blobs", "n_samples": 30_000, "n_features": 20},
        [{"units": 256, "activation": "tanh"}],
        batch_size=None,
        dtype="float64",
        optimizer="adam",
    ),
    # deep, evaluation chunks of 8,192 validation rows, restore_best's copy
    "deep-eval": spec(
        {"name": "sine", "n_samples": 50_000},
        [{"units": 256}] * 4,
        batch_size=4096,
        optimizer="adam",
        early_stopping={"patience": 3},
    ),
    # the dataset while it is made dominates: 200k x 100 float64
    "big-dataset": spec(
        {"name": "blobs", "n_samples": 200_000, "n_features": 100},
        [{"units": 64}],
        batch_size=256,
    ),
}


def measured_peak(job: dict[str, Any]) -> int:
    tracemalloc.start()
    try:
        fit(job)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", list(MEASURED))
def test_the_estimate_tracks_the_measured_peak(name: str):
    job = MEASURED[name]
    est = budgets.estimate(parse_spec(copy.deepcopy(job)).to_dict())
    peak = measured_peak(job)
    assert peak > 20 << 20
    assert peak / FACTOR <= est.memory_bytes <= peak * FACTOR, (est.parts, peak)


def test_a_bundled_set_is_sized_without_loading_it():
    sklearn.datasets.load_digits()  # its import is the process's, not the job's
    job = spec({"name": "digits"}, [{"units": 64}], epochs=3)
    est = budgets.estimate(parse_spec(copy.deepcopy(job)).to_dict())
    peak = measured_peak(job)
    assert peak / 1.5 <= est.memory_bytes <= peak * 1.5  # small: Python objects count


def test_flops_grow_with_epochs_samples_and_width():
    def flops(**changes: Any) -> float:
        job = spec({"name": "blobs", "n_samples": changes.pop("n", 4000)}, changes.pop("layers"))
        job["hyperparameters"].update(changes)
        return budgets.estimate(parse_spec(job).to_dict()).flops

    base = flops(layers=[{"units": 256}], epochs=10)
    assert flops(layers=[{"units": 256}], epochs=20) == pytest.approx(2 * base)
    assert flops(layers=[{"units": 256}], epochs=10, n=8000) == pytest.approx(2 * base, rel=0.05)
    # ~6 x weights x training rows x epochs dominates a wide net
    weights = 3 * 256 + 256 * 3
    assert base == pytest.approx(6 * weights * 3200 * 10, rel=0.6)


def test_the_issue_examples_are_refused():
    wide_batch = spec(
        {"name": "sine", "n_samples": 200_000},
        [{"units": 4096}, {"units": 1}] * 10,
        batch_size=200_000,
        dtype="float64",
        dropout=0.5,
    )
    with pytest.raises(SpecValidationError) as info:
        validate_job(wide_batch)
    (detail,) = info.value.details
    assert detail["loc"] == "hyperparameters.batch_size"
    assert "GiB of memory" in detail["msg"] and "limit of 4.00 GiB" in detail["msg"]
    est = budgets.estimate(parse_spec(wide_batch).to_dict())
    assert 280 << 30 < est.memory_bytes < 340 << 30  # the issue's ~320 GB

    months = spec(
        {"name": "blobs", "n_samples": 200_000, "n_features": 100},
        [{"units": 1024}] * 5,
        epochs=10_000,
    )
    with pytest.raises(SpecValidationError) as info:
        validate_job(months)
    (detail,) = info.value.details
    assert detail["loc"] == "hyperparameters.epochs"
    assert "TFLOP" in detail["msg"] and "hours at 50 GFLOP/s" in detail["msg"]


def test_the_limits_come_from_the_environment_and_zero_turns_them_off():
    limits = Settings.from_env(
        {"SWEEPLAB_MAX_JOB_MEMORY_BYTES": "1000", "SWEEPLAB_MAX_JOB_FLOPS": "1e3"}
    ).limits
    assert (limits.max_job_memory_bytes, limits.max_job_flops) == (1000, 1e3)
    with pytest.raises(SpecValidationError) as info:
        validate_job(XOR_JOB, limits)
    memory, flops = info.value.details
    assert "MiB of memory" in memory["msg"] and "limit of 0.0 MiB" in memory["msg"]
    assert "TFLOP" in flops["msg"] and flops["loc"] == "hyperparameters.epochs"
    assert validate_job(XOR_JOB, Limits(max_job_memory_bytes=0, max_job_flops=0))


def test_the_examples_and_the_readme_specs_fit_with_a_wide_margin():
    limits = Limits()
    for path in sorted(glob.glob(str(REPO / "examples" / "*.json"))):
        data = json.loads(Path(path).read_text())
        jobs = [data] if "base" not in data else None
        if jobs is None:
            sweep = validate_sweep(data)
            assert sweep.total_trials() >= 1
            jobs = [data["base"]]
        for job in jobs:
            est = budgets.estimate(validate_job(job))
            assert est.memory_bytes < limits.max_job_memory_bytes / 100, path
            assert est.flops < limits.max_job_flops / 1000, path


# --- through the API -------------------------------------------------------------------


def test_a_job_over_its_memory_budget_is_422(client):
    body = copy.deepcopy(XOR_JOB)
    body["dataset"] = {"name": "blobs", "n_samples": 200_000, "n_features": 20}
    body["architecture"]["layers"] = [{"units": 4096}]
    body["hyperparameters"]["batch_size"] = 150_000
    response = client.post(f"{API}/jobs", json=body)
    assert response.status_code == 422, response.get_json()
    (detail,) = response.get_json()["error"]["details"]
    assert detail["loc"] == "hyperparameters.batch_size"
    assert "over the limit of 4.00 GiB" in detail["msg"]


def test_a_job_over_its_compute_budget_is_422(client):
    body = copy.deepcopy(XOR_JOB)
    body["dataset"] = {"name": "blobs", "n_samples": 200_000, "n_features": 100}
    body["architecture"]["layers"] = [{"units": 1024}] * 5
    body["hyperparameters"].update(epochs=10_000, batch_size=256)
    response = client.post(f"{API}/jobs", json=body)
    assert response.status_code == 422, response.get_json()
    (detail,) = response.get_json()["error"]["details"]
    assert detail["loc"] == "hyperparameters.epochs"
    assert "TFLOP" in detail["msg"] and "hours" in detail["msg"]


def sweep_body(**changes: Any) -> dict[str, Any]:
    body = {
        "name": "s",
        "base": copy.deepcopy(XOR_JOB),
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": [0.01, 0.1]}},
    }
    body.update(changes)
    return body


def test_a_trial_over_the_budget_is_422_at_its_value(client):
    base = copy.deepcopy(XOR_JOB)
    base["dataset"] = {"name": "blobs", "n_samples": 200_000, "n_features": 20}
    base["architecture"]["layers"] = [{"units": 4096}]
    body = sweep_body(
        base=base,
        parameters={"hyperparameters.batch_size": {"values": [32, 256, 150_000]}},
    )
    response = client.post(f"{API}/sweeps", json=body)
    assert response.status_code == 422, response.get_json()
    (detail,) = response.get_json()["error"]["details"]
    assert detail["loc"] == "parameters.hyperparameters.batch_size.values.2"
    assert "150000" in detail["msg"] and "GiB of memory" in detail["msg"]


def test_a_random_sweep_is_checked_at_its_bounds(client):
    base = copy.deepcopy(XOR_JOB)
    base["dataset"] = {"name": "blobs", "n_samples": 200_000, "n_features": 20}
    base["architecture"]["layers"] = [{"units": 64}, {"units": 256}]
    body = sweep_body(
        base=base,
        method="random",
        n_trials=5,
        parameters={
            "hyperparameters.batch_size": {
                "distribution": "int_uniform",
                "min": 32,
                "max": 150_000,
            },
            "architecture.layers.0.units": {"distribution": "int_uniform", "min": 8, "max": 64},
        },
    )
    response = client.post(f"{API}/sweeps", json=body)
    assert response.status_code == 201, response.get_json()
    # each bound fits on the base (batch 16, or 64 units); both at their maxima do not
    body["parameters"]["architecture.layers.0.units"]["max"] = 4096
    response = client.post(f"{API}/sweeps", json=body)
    assert response.status_code == 422, response.get_json()
    (detail,) = response.get_json()["error"]["details"]
    assert detail["loc"] == "parameters.hyperparameters.batch_size"
    assert "hyperparameters.batch_size=150000" in detail["msg"]
    assert "architecture.layers.0.units=4096" in detail["msg"]


def test_a_bad_combination_is_422_naming_the_trial(client):
    """Swept ``architecture.layers`` with ``[]`` beside ``architecture.layers.0.units``:
    each value is fine on the base, the first grid point is not (it was a 500)."""
    body = sweep_body(
        parameters={
            "architecture.layers": {"values": [[], [{"units": 8}]]},
            "architecture.layers.0.units": {"values": [4, 16]},
        }
    )
    response = client.post(f"{API}/sweeps", json=body)
    assert response.status_code == 422, response.get_json()
    (detail,) = response.get_json()["error"]["details"]
    assert detail["loc"] == "parameters.architecture.layers.0.units"
    assert "architecture.layers=[]" in detail["msg"]
    assert "architecture.layers.0.units=4" in detail["msg"]
    # the same grid without the empty value is fine
    body["parameters"]["architecture.layers"]["values"] = [[{"units": 8}], [{"units": 2}]]
    assert client.post(f"{API}/sweeps", json=body).status_code == 201


def test_an_invalid_combination_names_the_value_that_breaks_it(client):
    """Each value is valid on the base, one pair is not: Nesterov without momentum."""
    base = copy.deepcopy(XOR_JOB)
    base["hyperparameters"]["momentum"] = 0.9
    body = sweep_body(
        base=base,
        parameters={
            "hyperparameters.momentum": {"values": [0.9, 0.0]},
            "hyperparameters.nesterov": {"values": [True, False]},
        },
    )
    response = client.post(f"{API}/sweeps", json=body)
    assert response.status_code == 422, response.get_json()
    (detail,) = response.get_json()["error"]["details"]
    assert detail["loc"] == "parameters.hyperparameters.nesterov.values.0"
    assert "hyperparameters.momentum=0.0, hyperparameters.nesterov=True" in detail["msg"]
    assert "needs momentum > 0" in detail["msg"]


def test_every_grid_point_is_checked_within_the_trials_limit():
    values = list(range(1, 33))  # 32 x 31 = 992 trials, each one a full job spec
    data = sweep_body(
        parameters={
            "architecture.layers.0.units": {"values": values},
            "hyperparameters.epochs": {"values": values[:31]},
        }
    )
    assert validate_sweep(data).total_trials() == 992
