"""A job's own MLflow experiment, and a reused job mirrored as a normal finished run, in a
real MLflow server from real worker processes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.mlflow_support import MlflowServer, mirroring_stack, wait_job_mirrored
from tests.integration.harness import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(
    redis_base: str, mlflow: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    stack = mirroring_stack("sqlite", tmp_path_factory.mktemp("reuse"), redis_base, mlflow.url)
    try:
        stack.start_worker(concurrency=2)
        yield stack
    finally:
        stack.close()


def test_a_reused_job_is_a_finished_run_in_its_own_experiment(stack, mlflow):
    experiment = f"mine-{uuid.uuid4().hex[:8]}"
    body = {
        "name": "reuse-mlflow",
        "experiment": experiment,
        "dataset": {"name": "xor", "n_samples": 64, "seed": 4242},
        "architecture": {"layers": [{"units": 4, "activation": "tanh"}]},
        "hyperparameters": {"learning_rate": 0.5, "epochs": 4, "batch_size": 16},
    }
    first = stack.post("/jobs", body)
    assert stack.wait_job(first["id"]).status == "succeeded"
    trained = wait_job_mirrored(stack, first["id"])
    assert trained.mlflow_experiment_id == mlflow.experiment_id(experiment)
    again = stack.post("/jobs", {**body, "name": "reuse-mlflow-2"})
    assert again["reused_from"] == first["id"]
    copy = wait_job_mirrored(stack, again["id"])
    assert copy.mlflow_experiment_id == trained.mlflow_experiment_id
    assert copy.mlflow_run_id and copy.mlflow_run_id != trained.mlflow_run_id
    run = mlflow.get("runs/get", run_id=copy.mlflow_run_id)["run"]
    assert run["info"]["status"] == "FINISHED"
    for key in ("train_loss", "val_loss"):
        mine = [(m["step"], m["value"]) for m in mlflow.history(copy.mlflow_run_id, key)]
        theirs = [(m["step"], m["value"]) for m in mlflow.history(trained.mlflow_run_id, key)]
        assert sorted(mine) == sorted(theirs) and len(mine) == 4
    assert "model" in mlflow.artifacts(copy.mlflow_run_id)
