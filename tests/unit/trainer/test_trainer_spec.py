"""Spec validation: defaults, inference of the output head, and every bad case."""

from __future__ import annotations

import copy
import json

import pytest

from services.trainer import SpecError, parse_spec

from .conftest import make_spec

MINIMAL = {
    "dataset": {"name": "digits"},
    "architecture": {"layers": [{"units": 64}]},
    "hyperparameters": {"learning_rate": 0.1},
}


def test_minimal_spec_gets_defaults_and_is_json_serializable():
    spec = parse_spec(MINIMAL)
    d = spec.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["architecture"]["output_activation"] == "softmax"
    assert d["architecture"]["initializer"] == "he"
    assert d["architecture"]["layers"] == [{"units": 64, "activation": "relu"}]
    hp = d["hyperparameters"]
    assert hp["loss"] == "cross_entropy" and hp["optimizer"] == "sgd"
    assert hp["batch_size"] == 32 and hp["dtype"] == "float32" and hp["early_stopping"] is None
    assert hp["lr_schedule"] == {"name": "constant", "warmup_epochs": 0}
    assert d["dataset"]["validation_split"] == 0.2
    assert parse_spec(d).to_dict() == d  # normalized specs are fixed points


def test_issue_example_spec_parses():
    spec = {
        "name": "digits-64-relu",
        "dataset": {"name": "digits", "validation_split": 0.2, "seed": 0},
        "architecture": {
            "layers": [{"units": 64, "activation": "relu"}],
            "output_activation": "softmax",
            "initializer": "he",
        },
        "hyperparameters": {
            "learning_rate": 0.1,
            "optimizer": "sgd",
            "momentum": 0.0,
            "nesterov": False,
            "batch_size": 32,
            "epochs": 30,
            "loss": "cross_entropy",
            "lr_schedule": {"name": "constant"},
            "l2": 0.0,
            "dropout": 0.0,
            "gradient_clip_norm": None,
            "early_stopping": None,
            "seed": 0,
            "dtype": "float32",
        },
    }
    assert parse_spec(spec).name == "digits-64-relu"


@pytest.mark.parametrize(
    "dataset, output, loss",
    [
        ({"name": "digits"}, "softmax", "cross_entropy"),
        ({"name": "moons"}, "sigmoid", "binary_cross_entropy"),
        ({"name": "breast_cancer"}, "sigmoid", "binary_cross_entropy"),
        ({"name": "spirals", "arms": 2}, "sigmoid", "binary_cross_entropy"),
        ({"name": "spirals", "arms": 4}, "softmax", "cross_entropy"),
        ({"name": "sine"}, "linear", "mse"),
        ({"name": "diabetes"}, "linear", "mse"),
        (
            {"name": "arrays", "X": [[0], [1], [2], [3]], "y": [0, 1, 0, 1]},
            "sigmoid",
            "binary_cross_entropy",
        ),
        ({"name": "arrays", "X": [[0], [1], [2], [3]], "y": [0.5, 1.5, 0.1, 2.0]}, "linear", "mse"),
    ],
)
def test_output_head_is_inferred_from_the_task(dataset, output, loss):
    spec = parse_spec({**MINIMAL, "dataset": dataset})
    assert spec.architecture.output_activation == output
    assert spec.hyperparameters.loss == loss


def test_explicit_softmax_on_binary_task_gives_cross_entropy():
    spec = parse_spec(
        {
            **MINIMAL,
            "dataset": {"name": "moons"},
            "architecture": {"layers": [], "output_activation": "softmax"},
        }
    )
    assert spec.hyperparameters.loss == "cross_entropy"


def test_adamw_defaults_weight_decay_to_torch_value():
    spec = parse_spec(make_spec(hyperparameters={"optimizer": "adamw"}))
    assert spec.hyperparameters.weight_decay == 0.01
    assert parse_spec(make_spec()).hyperparameters.weight_decay == 0.0


def _set(path, value):
    def mutate(spec):
        node = spec
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value

    return mutate


_DELETE = object()
NAN, INF = float("nan"), float("inf")

BAD = [
    # (path to set, value, expected loc)
    ("hyperparameters.learning_rate", 0, "hyperparameters.learning_rate"),
    ("hyperparameters.learning_rate", -0.1, "hyperparameters.learning_rate"),
    ("hyperparameters.learning_rate", NAN, "hyperparameters.learning_rate"),
    ("hyperparameters.learning_rate", INF, "hyperparameters.learning_rate"),
    ("hyperparameters.learning_rate", "0.1", "hyperparameters.learning_rate"),
    ("hyperparameters.learning_rate", True, "hyperparameters.learning_rate"),
    ("hyperparameters.learning_rate", _DELETE, "hyperparameters.learning_rate"),
    ("hyperparameters.optimizer", "adagrad", "hyperparameters.optimizer"),
    ("hyperparameters.momentum", 1.0, "hyperparameters.momentum"),
    ("hyperparameters.momentum", -0.5, "hyperparameters.momentum"),
    ("hyperparameters.nesterov", "yes", "hyperparameters.nesterov"),
    ("hyperparameters.nesterov", True, "hyperparameters.nesterov"),  # momentum 0
    ("hyperparameters.batch_size", 0, "hyperparameters.batch_size"),
    ("hyperparameters.batch_size", 2.5, "hyperparameters.batch_size"),
    ("hyperparameters.epochs", 0, "hyperparameters.epochs"),
    ("hyperparameters.epochs", None, "hyperparameters.epochs"),
    ("hyperparameters.loss", "hinge", "hyperparameters.loss"),
    ("hyperparameters.l2", -1.0, "hyperparameters.l2"),
    ("hyperparameters.dropout", 1.0, "hyperparameters.dropout"),
    ("hyperparameters.gradient_clip_norm", 0, "hyperparameters.gradient_clip_norm"),
    ("hyperparameters.seed", -1, "hyperparameters.seed"),
    ("hyperparameters.dtype", "float16", "hyperparameters.dtype"),
    ("hyperparameters.betas", [0.9], "hyperparameters.betas"),
    ("hyperparameters.betas", [0.9, 1.5], "hyperparameters.betas.1"),
    ("hyperparameters.eps", 0.0, "hyperparameters.eps"),
    ("hyperparameters.weight_decay", 0.1, "hyperparameters.weight_decay"),  # sgd
    ("hyperparameters.lr_schedule", {"name": "cyclic"}, "hyperparameters.lr_schedule.name"),
    (
        "hyperparameters.lr_schedule",
        {"name": "step", "step_size": 0},
        "hyperparameters.lr_schedule.step_size",
    ),
    (
        "hyperparameters.lr_schedule",
        {"name": "step", "gamma": NAN},
        "hyperparameters.lr_schedule.gamma",
    ),
    (
        "hyperparameters.lr_schedule",
        {"name": "constant", "gamma": 0.5},
        "hyperparameters.lr_schedule.gamma",
    ),
    (
        "hyperparameters.lr_schedule",
        {"name": "cosine", "warmup_epochs": -1},
        "hyperparameters.lr_schedule.warmup_epochs",
    ),
    ("hyperparameters.lr_schedule", "cosine", "hyperparameters.lr_schedule"),
    ("hyperparameters.early_stopping", {"patience": 0}, "hyperparameters.early_stopping.patience"),
    ("hyperparameters.early_stopping", {"metric": "f1"}, "hyperparameters.early_stopping.metric"),
    (
        "hyperparameters.early_stopping",
        {"min_delta": -1},
        "hyperparameters.early_stopping.min_delta",
    ),
    ("hyperparameters.early_stopping", {"patiense": 3}, "hyperparameters.early_stopping.patiense"),
    ("hyperparameters.learning_rte", 0.1, "hyperparameters.learning_rte"),
    ("hyperparameters", [], "hyperparameters"),
    ("architecture.layers", _DELETE, "architecture.layers"),
    ("architecture.layers", {"units": 3}, "architecture.layers"),
    ("architecture.layers.0.units", 0, "architecture.layers.0.units"),
    ("architecture.layers.0.units", -4, "architecture.layers.0.units"),
    ("architecture.layers.0.units", "16", "architecture.layers.0.units"),
    ("architecture.layers.0.units", 10**9, "architecture.layers.0.units"),
    ("architecture.layers.0.activation", "gelu", "architecture.layers.0.activation"),
    ("architecture.layers.0.activation", "softmax", "architecture.layers.0.activation"),
    ("architecture.layers.0.size", 3, "architecture.layers.0.size"),
    ("architecture.output_activation", "swish", "architecture.output_activation"),
    ("architecture.initializer", "orthogonal", "architecture.initializer"),
    ("architecture.init_std", 0, "architecture.init_std"),
    ("architecture.depth", 3, "architecture.depth"),
    ("dataset.name", "mnist", "dataset.name"),
    ("dataset.name", _DELETE, "dataset.name"),
    ("dataset.validation_split", 1.0, "dataset.validation_split"),
    ("dataset.validation_split", -0.1, "dataset.validation_split"),
    ("dataset.n_samples", 0, "dataset.n_samples"),
    ("dataset.noise", -1.0, "dataset.noise"),
    ("dataset.noise", NAN, "dataset.noise"),
    ("dataset.arms", 3, "dataset.arms"),  # moons has no arms
    ("dataset.seed", 1.5, "dataset.seed"),
    ("dataset.standardize", 1, "dataset.standardize"),
    ("extra", 1, "extra"),
    ("dataset", _DELETE, "dataset"),
    ("name", 42, "name"),
]


@pytest.mark.parametrize("path, value, loc", BAD, ids=lambda v: v if isinstance(v, str) else None)
def test_bad_spec_names_the_path(path, value, loc):
    spec = copy.deepcopy(make_spec())
    _set(path, value)(spec)
    with pytest.raises(SpecError) as err:
        parse_spec(spec)
    assert err.value.loc == loc
    assert isinstance(err.value, ValueError)
    assert str(err.value).startswith(loc + ":")


@pytest.mark.parametrize(
    "spec, loc",
    [
        (
            {
                **MINIMAL,
                "dataset": {"name": "digits"},
                "hyperparameters": {"learning_rate": 0.1, "loss": "binary_cross_entropy"},
            },
            "hyperparameters.loss",
        ),
        (
            {
                **MINIMAL,
                "dataset": {"name": "digits"},
                "architecture": {"layers": [], "output_activation": "sigmoid"},
            },
            "architecture.output_activation",
        ),
        (
            {
                **MINIMAL,
                "dataset": {"name": "sine"},
                "hyperparameters": {"learning_rate": 0.1, "loss": "cross_entropy"},
            },
            "hyperparameters.loss",
        ),
        (
            {
                **MINIMAL,
                "dataset": {"name": "sine"},
                "architecture": {"layers": [], "output_activation": "softmax"},
            },
            "architecture.output_activation",
        ),
        (
            {
                **MINIMAL,
                "dataset": {"name": "digits", "validation_split": 0},
                "hyperparameters": {"learning_rate": 0.1, "early_stopping": {"metric": "val_loss"}},
            },
            "hyperparameters.early_stopping.metric",
        ),
        (
            {
                **MINIMAL,
                "dataset": {"name": "sine"},
                "hyperparameters": {
                    "learning_rate": 0.1,
                    "early_stopping": {"metric": "val_accuracy"},
                },
            },
            "hyperparameters.early_stopping.metric",
        ),
        ({**MINIMAL, "dataset": {"name": "arrays", "X": [[1, 2], [3]], "y": [0, 1]}}, "dataset.X"),
        (
            {**MINIMAL, "dataset": {"name": "arrays", "X": [[1], [2], [3]], "y": [0, 1]}},
            "dataset.y",
        ),
        (
            {**MINIMAL, "dataset": {"name": "arrays", "X": [[1], [float("nan")]], "y": [0, 1]}},
            "dataset.X",
        ),
        ({**MINIMAL, "dataset": {"name": "arrays", "X": [[1], [2]], "y": [1, 1]}}, "dataset.y"),
        ({**MINIMAL, "dataset": {"name": "arrays", "y": [1, 1]}}, "dataset.X"),
        # one-hot rows, ragged rows, strings as regression targets
        (
            {
                **MINIMAL,
                "dataset": {
                    "name": "arrays",
                    "X": [[0], [1], [2], [3]],
                    "y": [[1, 0], [0, 1], [0, 1], [1, 0]],
                },
            },
            "dataset.y",
        ),
        (
            {
                **MINIMAL,
                "dataset": {"name": "arrays", "X": [[0], [1], [2]], "y": [[1, 2], [3], [4, 5]]},
            },
            "dataset.y",
        ),
        (
            {
                **MINIMAL,
                "dataset": {
                    "name": "arrays",
                    "X": [[0], [1], [2], [3]],
                    "y": ["a", "b", "a", "b"],
                    "task": "regression",
                },
            },
            "dataset.y",
        ),
        # 0.9 of 2 + 2 rows, split per class, leaves no training row
        (
            {
                **MINIMAL,
                "dataset": {
                    "name": "arrays",
                    "X": [[0], [1], [2], [3]],
                    "y": [0, 1, 0, 1],
                    "validation_split": 0.9,
                },
            },
            "dataset.validation_split",
        ),
        # 0.1 of 2 + 2 rows, split per class, leaves no validation row to stop on
        (
            {
                "dataset": {
                    "name": "arrays",
                    "X": [[0], [1], [2], [3]],
                    "y": [0, 1, 0, 1],
                    "validation_split": 0.1,
                },
                "architecture": {"layers": []},
                "hyperparameters": {"learning_rate": 0.1, "early_stopping": {"patience": 2}},
            },
            "hyperparameters.early_stopping.metric",
        ),
        ({**MINIMAL, "dataset": {"name": "iris", "noise": 0.1}}, "dataset.noise"),
        (
            {
                **MINIMAL,
                "architecture": {"layers": []},
                "hyperparameters": {"learning_rate": 0.1, "dropout": 0.5},
            },
            "hyperparameters.dropout",
        ),
        ("not a dict", ""),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_inconsistent_spec_names_the_path(spec, loc):
    with pytest.raises(SpecError) as err:
        parse_spec(spec)
    assert err.value.loc == loc


def test_error_message_lists_allowed_values():
    with pytest.raises(SpecError, match="sgd, rmsprop, adam, adamw"):
        parse_spec(make_spec(hyperparameters={"optimizer": "adagrad"}))
    with pytest.raises(SpecError, match="allowed: .*learning_rate"):
        parse_spec(make_spec(hyperparameters={"learning_rte": 1}))


def test_registries_reject_unknown_names_with_the_known_ones():
    from services.trainer.activations import get_activation
    from services.trainer.initializers import get_initializer
    from services.trainer.losses import get_loss
    from services.trainer.optimizers import get_optimizer

    for getter in (get_activation, get_initializer, get_loss, get_optimizer):
        with pytest.raises(ValueError, match="known: "):
            getter("nope")
