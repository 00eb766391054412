"""The pure parts of the MLflow mirror: params, metrics, names, links, plots."""

from __future__ import annotations

import json
import struct
import types
import urllib.parse

import pytest

from services import plots
from services.mirror import catch_up, sync
from services.mirror.entities import draws_learning_curve
from services.mirror.links import links_for_job
from services.mirror.names import (
    MAX_PARAM_VALUE,
    architecture_string,
    epoch_metrics,
    flatten_spec,
    history_csv,
    n_outputs,
    run_name,
    ui_links,
)

SPEC = {
    "name": "digits-64-relu",
    "dataset": {"name": "digits", "validation_split": 0.2, "seed": 0},
    "architecture": {
        "layers": [{"units": 64, "activation": "relu"}, {"units": 32, "activation": "tanh"}],
        "output_activation": "softmax",
        "initializer": "he",
    },
    "hyperparameters": {
        "learning_rate": 0.01,
        "optimizer": "sgd",
        "batch_size": 32,
        "epochs": 30,
        "lr_schedule": {"name": "step", "milestones": [10, 20]},
        "gradient_clip_norm": None,
        "nesterov": False,
    },
}


def test_flatten_spec_uses_dotted_keys_and_indexes_layers():
    params = flatten_spec(SPEC)
    assert params["hyperparameters.learning_rate"] == "0.01"
    assert params["architecture.layers.0.units"] == "64"
    assert params["architecture.layers.1.activation"] == "tanh"
    assert params["hyperparameters.lr_schedule.name"] == "step"
    assert params["hyperparameters.lr_schedule.milestones"] == "[10,20]"
    assert params["hyperparameters.gradient_clip_norm"] == "None"
    assert params["hyperparameters.nesterov"] == "False"
    assert all(isinstance(v, str) for v in params.values())


def test_flatten_spec_cuts_long_values_to_mlflow_limit():
    spec = {"dataset": {"name": "arrays", "X": [[float(i)] * 10 for i in range(2000)]}}
    params = flatten_spec(spec)
    assert len(params) == 2  # one value for the whole array, not thousands of params
    assert len(params["dataset.X"]) <= MAX_PARAM_VALUE
    assert params["dataset.X"].endswith("[truncated]")


def test_epoch_metrics_flattens_per_layer_lists_and_drops_non_finite():
    record = {
        "epoch": 3,
        "train_loss": 0.5,
        "val_loss": None,
        "learning_rate": 0.01,
        "grad_norm": [1.0, 2.0],
        "dead_relu_fraction": [0.1, None],
        "seconds": 0.02,
        "weird": float("nan"),
    }
    metrics = epoch_metrics(record)
    assert metrics == {
        "train_loss": 0.5,
        "learning_rate": 0.01,
        "grad_norm.layer_0": 1.0,
        "grad_norm.layer_1": 2.0,
        "dead_relu_fraction.layer_0": 0.1,
        "seconds": 0.02,
    }


def test_epoch_metrics_accepts_already_flat_rows():
    flat = {"train_loss": 1.0, "grad_norm.layer_0": 3.0, "epoch": 1}
    assert epoch_metrics(flat) == {"train_loss": 1.0, "grad_norm.layer_0": 3.0}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (None, "lr=0.01 bs=32"),
        ({"hyperparameters.learning_rate": 0.1}, "lr=0.1 bs=32"),
        ({"hyperparameters.learning_rate": 0.000316227766}, "lr=0.0003162 bs=32"),
        ({"architecture.layers.0.units": 128}, "lr=0.01 bs=32 units0=128"),
        ({"hyperparameters.optimizer": "adam"}, "lr=0.01 bs=32 opt=adam"),
        ({"hyperparameters.batch_size": None}, "lr=0.01 bs=full"),
        (
            {
                "architecture.layers": [
                    {"units": 16, "activation": "relu"},
                    {"units": 32, "activation": "tanh"},
                ]
            },
            "lr=0.01 bs=32 layers=16relu-32tanh",
        ),
        (
            {"dataset.noise": [0.1] * 20},  # long values are cut at 40 characters
            "lr=0.01 bs=32 noise=[" + "0.1," * 9 + "0.…",
        ),
    ],
)
def test_run_name(params, expected):
    assert run_name(SPEC, params) == expected


def test_architecture_string():
    assert architecture_string(SPEC, 10) == "64-relu > 32-tanh > 10-softmax"
    assert architecture_string(SPEC) == "64-relu > 32-tanh > softmax"
    spec = {"architecture": {"layers": [{"units": 8, "activation": "relu"}]}}
    assert architecture_string(spec, 1) == "8-relu > 1-auto"


def test_n_outputs_from_the_trainer_result():
    snap = types.SimpleNamespace(result={"architecture": {"sizes": [64, 32, 10]}}, spec={})
    assert n_outputs(snap) == 10
    digits = {"dataset": {"task": "classification", "n_classes": 10}}
    assert n_outputs(types.SimpleNamespace(result=digits, spec=SPEC)) == 10
    moons = {"dataset": {"task": "classification", "n_classes": 2}}
    binary = {"architecture": {"output_activation": "sigmoid"}}
    assert n_outputs(types.SimpleNamespace(result=moons, spec=binary)) == 1
    assert n_outputs(types.SimpleNamespace(result=None, spec={})) is None


def test_history_csv_has_one_row_per_epoch():
    history = [
        {"epoch": 1, "train_loss": 1.0, "grad_norm": [0.5]},
        {"epoch": 2, "train_loss": 0.5, "val_loss": 0.7, "grad_norm": [0.4]},
    ]
    lines = history_csv(history).splitlines()
    assert lines[0] == "epoch,grad_norm.layer_0,train_loss,val_loss"
    assert lines[1:] == ["1,0.5,1.0,", "2,0.4,0.5,0.7"]


def test_ui_links_point_at_runs_and_compare_views():
    links = ui_links("http://127.0.0.1:5000/", "7", "abc", ["abc", "def"])
    mode = "workflowType=machine_learning"  # the UI's "Model training" mode, not GenAI
    assert links["run_url"] == f"http://127.0.0.1:5000/#/experiments/7/runs/abc?{mode}"
    assert links["experiment_url"] == f"http://127.0.0.1:5000/#/experiments/7/runs?{mode}"
    base, query = links["compare_url"].split("#/compare-runs?")
    assert base == "http://127.0.0.1:5000/"
    parsed = urllib.parse.parse_qs(query)
    assert json.loads(parsed["runs"][0]) == ["abc", "def"]
    assert json.loads(parsed["experiments"][0]) == ["7"]
    assert parsed["workflowType"] == ["machine_learning"]
    assert "[" not in query and '"' not in query  # URL-encoded


def _settings(uri="http://127.0.0.1:5000", ui=None):
    return types.SimpleNamespace(mlflow_tracking_uri=uri, mlflow_ui_url=ui)


def test_links_for_job_uses_the_ui_url_and_needs_a_run():
    job = types.SimpleNamespace(
        mlflow_run_id="r1", mlflow_experiment_id="3", status="running", mlflow_synced_status=None
    )
    links = links_for_job(_settings(ui="http://mlflow.example"), job)
    assert (
        links["run_url"]
        == "http://mlflow.example/#/experiments/3/runs/r1?workflowType=machine_learning"
    )
    assert links["mirrored"] is False
    assert links_for_job(_settings(uri=None), job) is None
    unsynced = types.SimpleNamespace(mlflow_run_id=None, mlflow_experiment_id=None)
    pending = links_for_job(_settings(), unsynced)  # on, but no run yet
    assert pending == {**dict.fromkeys(pending, None), "mirrored": False}
    assert links_for_job(_settings(uri=None), unsynced) is None


class _Untouchable:
    """Settings with mirroring off and nothing else: reading any other field (the
    database, Redis, the Celery queue) fails the test."""

    mlflow_tracking_uri = None
    mlflow_ui_url = None

    def __getattr__(self, name):
        raise AssertionError(f"a hook read settings.{name} with mirroring off")


@pytest.mark.parametrize(
    ("hook", "expected"),
    [
        (catch_up.job_progressed, None),
        (catch_up.job_finished, None),
        (sync.mirror_job, True),  # nothing left to do
        (catch_up.mirror_pending, {"done": 0, "busy": 0, "failed": 0, "left": 0}),
    ],
    ids=["job_progressed", "job_finished", "mirror_job", "mirror_pending"],
)
def test_each_hook_is_a_no_op_when_mirroring_is_off(hook, expected):
    import threading

    threads = set(threading.enumerate())
    background = catch_up._mirrorer
    args = (_Untouchable(),) if hook is catch_up.mirror_pending else (_Untouchable(), "job-x")
    assert hook(*args) == expected
    assert catch_up._mirrorer is background  # no mirror thread was started
    assert set(threading.enumerate()) <= threads


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_learning_curve_png_draws_loss_and_accuracy():
    history = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_accuracy": 1 - 1 / (e + 1)}
        for e in range(1, 11)
    ]
    history.append({"epoch": 11, "train_loss": None, "val_loss": None})
    width, height = _png_size(plots.learning_curve_png(history, title="lr=0.1"))
    assert width > height > 100


@pytest.mark.parametrize(
    "sweep_id, sweep_size, train_seconds, plotted",
    [
        (None, None, 0.001, True),  # a single job: always
        ("s", 8, 0.001, True),  # a small sweep (the demo's): every trial
        ("s", 100, 0.001, True),
        ("s", 101, 0.001, False),  # a large sweep of tiny trials: no 0.1 s drawing each
        ("s", 1000, 0.999, False),
        ("s", 1000, 1.0, True),  # unless the trial trained a second or more
    ],
)
def test_which_runs_get_a_learning_curve_png(sweep_id, sweep_size, train_seconds, plotted):
    snap = types.SimpleNamespace(
        sweep_id=sweep_id, sweep_size=sweep_size, train_seconds=train_seconds
    )
    assert draws_learning_curve(snap) is plotted  # type: ignore[arg-type]
