"""Job and sweep spec validation: shapes, limits, the trainer's semantic checks."""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

import pytest

from services.config import Limits
from services.specs import (
    SpecValidationError,
    apply_params,
    validate_job,
    validate_sweep,
)
from tests.conftest import XOR_JOB


def with_change(path: str, value: Any) -> dict[str, Any]:
    return apply_params(XOR_JOB, {path: value})


def error_locs(spec: Any, limits: Limits | None = None) -> list[str]:
    with pytest.raises(SpecValidationError) as info:
        validate_job(spec, limits)
    return [d["loc"] for d in info.value.details]


def test_valid_job_is_normalized_by_the_trainer():
    spec = validate_job(copy.deepcopy(XOR_JOB))
    assert spec["hyperparameters"]["optimizer"] == "sgd"
    assert spec["hyperparameters"]["loss"] == "binary_cross_entropy"
    assert spec["architecture"]["output_activation"] == "sigmoid"
    assert spec["hyperparameters"]["epochs"] == 3


@pytest.mark.parametrize(
    ("path", "value", "loc"),
    [
        ("hyperparameters.learning_rate", 0, "hyperparameters.learning_rate"),
        ("hyperparameters.learning_rate", -1.0, "hyperparameters.learning_rate"),
        ("hyperparameters.learning_rate", "0.1", "hyperparameters.learning_rate"),
        ("hyperparameters.learning_rate", math.nan, "hyperparameters.learning_rate"),
        ("hyperparameters.learning_rate", math.inf, "hyperparameters.learning_rate"),
        ("hyperparameters.optimizer", "adamax", "hyperparameters.optimizer"),
        ("hyperparameters.epochs", True, "hyperparameters.epochs"),
        ("hyperparameters.epochs", 10_001, "hyperparameters.epochs"),
        ("hyperparameters.lr", 0.1, "hyperparameters.lr"),
        ("architecture.layers.0.units", 0, "architecture.layers.0.units"),
        ("architecture.layers.0.units", 4097, "architecture.layers.0.units"),
        ("architecture.layers.0.activation", "swish", "architecture.layers.0.activation"),
        ("architecture.layers", [{"units": 2}] * 21, "architecture.layers"),
        ("architecture.layers", [{"units": 4096}] * 3, "architecture.layers"),
        ("dataset.n_samples", 200_001, "dataset.n_samples"),
        ("dataset.name", "mnist", "dataset.name"),
        ("dataset.arms", 3, "dataset.arms"),  # xor has no arms: the trainer says so
        ("hyperparameters.nesterov", True, "hyperparameters.nesterov"),  # needs momentum
        ("surprise", 1, "surprise"),
    ],
)
def test_bad_job_specs_name_the_field(path: str, value: Any, loc: str):
    assert loc in error_locs(with_change(path, value))


def test_datasets_that_cannot_work_are_refused():
    # A blobs set of 200,000 x 65,536 floats would take a worker's memory (and then the next's).
    spec = with_change("dataset.name", "blobs")
    spec["dataset"].update(n_samples=200_000, n_features=65_536)
    assert error_locs(spec) == ["dataset.n_features"]
    spec["dataset"].update(n_features=2)
    validate_job(spec)
    # A validation split that leaves nothing to train on.
    assert error_locs(with_change("dataset.validation_split", 0.99)) == ["dataset.validation_split"]


def test_seeds_fit_the_database():
    assert error_locs(with_change("hyperparameters.seed", 2**31)) == ["hyperparameters.seed"]
    assert error_locs(with_change("dataset.seed", 10**23)) == ["dataset.seed"]


def test_trainer_messages_do_not_repeat_the_field():
    spec = with_change("hyperparameters.batch_size", 10**23)
    with pytest.raises(SpecValidationError) as info:
        validate_job(spec)
    (detail,) = info.value.details
    assert detail["loc"] == "hyperparameters.batch_size"
    assert not detail["msg"].startswith("hyperparameters.batch_size")


def test_missing_required_fields():
    spec = copy.deepcopy(XOR_JOB)
    del spec["hyperparameters"]["learning_rate"]
    assert error_locs(spec) == ["hyperparameters.learning_rate"]
    assert error_locs([1, 2]) == [""]


def test_limits_are_configurable():
    spec = with_change("hyperparameters.epochs", 50)
    validate_job(spec)
    assert error_locs(spec, Limits(max_epochs=10)) == ["hyperparameters.epochs"]
    assert error_locs(XOR_JOB, Limits(max_params=10)) == ["architecture.layers"]


def test_apply_params_follows_dotted_paths_and_list_indices():
    base = {"a": {"b": [{"c": 1}, {"c": 2}]}}
    out = apply_params(base, {"a.b.1.c": 5, "a.d": 3, "e.f": 4})
    assert out == {"a": {"b": [{"c": 1}, {"c": 5}], "d": 3}, "e": {"f": 4}}
    assert base == {"a": {"b": [{"c": 1}, {"c": 2}]}}
    with pytest.raises(IndexError):
        apply_params(base, {"a.b.2.c": 1})


def sweep(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "lr",
        "base": copy.deepcopy(XOR_JOB),
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": [0.01, 0.1, 1.0]}},
        "objective": {"metric": "val_loss", "goal": "minimize"},
        "max_concurrency": 2,
    }
    spec.update(changes)
    return spec


def sweep_locs(spec: Any, limits: Limits | None = None) -> list[str]:
    with pytest.raises(SpecValidationError) as info:
        validate_sweep(spec, limits)
    return [d["loc"] for d in info.value.details]


def test_valid_sweeps():
    assert validate_sweep(sweep()).total_trials() == 3
    grid = sweep(
        parameters={
            "hyperparameters.learning_rate": {"values": [0.1, 1.0]},
            "architecture.layers.0.units": {"values": [2, 4, 8]},
        }
    )
    assert validate_sweep(grid).total_trials() == 6
    rnd = sweep(
        method="tpe",
        n_trials=7,
        parameters={
            "hyperparameters.learning_rate": {"distribution": "log_uniform", "min": 1e-3, "max": 1},
            "architecture.layers.0.units": {"distribution": "int_uniform", "min": 2, "max": 8},
            "hyperparameters.optimizer": {"distribution": "choice", "values": ["sgd", "adam"]},
        },
    )
    model = validate_sweep(rnd)
    assert model.total_trials() == 7
    assert model.objective.goal == "minimize"


@pytest.mark.parametrize(
    ("changes", "loc"),
    [
        ({"method": "random"}, "n_trials"),
        ({"method": "grid", "n_trials": 5}, "n_trials"),
        (
            {
                "method": "random",
                "n_trials": 2,
                "parameters": {
                    "hyperparameters.learning_rate": {
                        "distribution": "uniform",
                        "min": 0.1,
                        "max": 1,
                    }
                },
                "seed": 10**23,
            },
            "seed",
        ),
        ({"method": "tpe", "n_trials": 2, "n_startup_trials": 10**23}, "n_startup_trials"),
        ({"max_concurrency": 10**23}, "max_concurrency"),
        (
            {
                "method": "grid",
                "parameters": {
                    "hyperparameters.learning_rate": {
                        "distribution": "uniform",
                        "min": 0.1,
                        "max": 1,
                    }
                },
            },
            "parameters.hyperparameters.learning_rate",
        ),
        ({"parameters": {"": {"values": [1]}}}, "parameters"),
        (
            {"parameters": {"hyperparameters..seed": {"values": [1]}}},
            "parameters.hyperparameters..seed",
        ),
        (
            {"parameters": {"hyperparameters.nope": {"values": [1]}}},
            "parameters.hyperparameters.nope.values.0",
        ),
        (
            {"parameters": {"hyperparameters.learning_rate.x": {"values": [1]}}},
            "parameters.hyperparameters.learning_rate.x",
        ),
        (
            {"parameters": {"architecture.layers.0.units": {"values": [4, "four"]}}},
            "parameters.architecture.layers.0.units.values.1",
        ),
        ({"method": "bayes"}, "method"),
        (
            {"parameters": {"hyperparameters.learning_rate": {"values": [0.1, -1.0]}}},
            "parameters.hyperparameters.learning_rate.values.1",
        ),
        (
            {"parameters": {"architecture.layers.3.units": {"values": [2]}}},
            "parameters.architecture.layers.3.units",
        ),
        (
            {
                "parameters": {"hyperparameters.learning_rate": {"values": [0.1]}},
                "max_concurrency": 0,
            },
            "max_concurrency",
        ),
        ({"method": "random", "n_trials": 1001}, "n_trials"),
        (
            {
                "method": "random",
                "n_trials": 3,
                "parameters": {
                    "hyperparameters.learning_rate": {
                        "distribution": "log_uniform",
                        "min": 0,
                        "max": 1,
                    }
                },
            },
            "parameters.hyperparameters.learning_rate",
        ),
        (
            {
                "method": "random",
                "n_trials": 3,
                "parameters": {
                    "hyperparameters.learning_rate": {
                        "distribution": "uniform",
                        "min": 1,
                        "max": 0.5,
                    }
                },
            },
            "parameters.hyperparameters.learning_rate",
        ),
        ({"objective": {"metric": "f1"}}, "objective.metric"),
        ({"early_stopping": {"policy": "hyperband"}}, "early_stopping.policy"),
        ({"extra": 1}, "extra"),
        ({"base": {"dataset": {"name": "xor"}}}, "base.architecture"),
    ],
)
def test_bad_sweeps_name_the_field(changes: dict[str, Any], loc: str):
    assert loc in sweep_locs(sweep(**changes))


def test_grid_size_is_limited():
    values = {"values": list(range(1, 40))}
    spec = sweep(
        parameters={"architecture.layers.0.units": values, "hyperparameters.epochs": values}
    )
    assert sweep_locs(spec) == ["parameters"]
    assert len(list(itertools.product(values["values"], values["values"]))) > 1000


def test_names_match_the_trainer_tables():
    from typing import get_args

    from services import specs
    from services.trainer.activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS
    from services.trainer.data import DATASETS
    from services.trainer.initializers import INITIALIZERS
    from services.trainer.losses import LOSSES
    from services.trainer.optimizers import OPTIMIZERS
    from services.trainer.schedules import SCHEDULE_OPTIONS

    assert set(get_args(specs.ACTIVATIONS)) == set(HIDDEN_ACTIVATIONS)
    assert set(get_args(specs.OUTPUT_ACTIVATIONS)) == set(OUTPUT_ACTIVATIONS)
    assert set(get_args(specs.DATASET_NAMES)) == set(DATASETS)
    assert set(get_args(specs.INITIALIZER_NAMES)) == set(INITIALIZERS)
    assert set(get_args(specs.LOSS_NAMES)) == set(LOSSES)
    assert set(get_args(specs.OPTIMIZER_NAMES)) == set(OPTIMIZERS)
    assert set(get_args(specs.SCHEDULE_NAMES)) == set(SCHEDULE_OPTIONS)


def test_dataset_options_cover_the_trainer():
    from services.specs import DatasetSpec
    from services.trainer.data import DATASETS

    options = {key for info in DATASETS.values() for key in info.options}
    assert options <= set(DatasetSpec.model_fields)


def test_accuracy_objective_on_a_regression_task_is_rejected():
    spec = {
        "base": {
            "dataset": {"name": "sine"},
            "architecture": {"layers": [{"units": 8, "activation": "tanh"}]},
            "hyperparameters": {"learning_rate": 0.01, "epochs": 3},
        },
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": [0.01, 0.1]}},
        "objective": {"metric": "val_accuracy"},
    }
    with pytest.raises(SpecValidationError) as err:
        validate_sweep(spec)
    assert err.value.details[0]["loc"] == "objective.metric"
    spec["objective"] = {"metric": "val_loss"}
    assert validate_sweep(spec).experiment == "sweeplab"  # the default experiment, shown
