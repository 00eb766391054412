"""A job's own MLflow experiment, and a reused job mirrored as a normal finished run, in a
real MLflow server from real worker processes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.mlflow_support import (
    MlflowServer,
    mirroring_stack,
    tags,
    wait_job_mirrored,
    wait_mirrored,
)
from tests.integration.harness import Stack, wait_for

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


def test_a_resumed_sweep_is_finished_in_mlflow_with_every_trial(stack, mlflow):
    seed = 5000 + uuid.uuid4().int % 100_000
    body = {
        "name": f"resume-mlflow-{seed}",
        "experiment": f"resumed-{seed}",
        "base": {
            "dataset": {"name": "xor", "n_samples": 2000, "seed": seed},
            "architecture": {"layers": [{"units": 4, "activation": "tanh"}]},
            "hyperparameters": {"learning_rate": 0.1, "epochs": 40, "batch_size": 16},
        },
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": [0.05, 0.1, 0.2]}},
        "max_concurrency": 1,
    }
    sweep = stack.post("/sweeps", body)
    wait_for(
        lambda: stack.get(f"/sweeps/{sweep['id']}")["counts"]["running"] == 1, 30, "a trial runs"
    )
    stack.post(f"/sweeps/{sweep['id']}/cancel", {})
    stack.wait_sweep(sweep["id"])
    wait_mirrored(stack, sweep["id"])
    parent = stack.get(f"/sweeps/{sweep['id']}")["mlflow"]["run_id"]
    assert mlflow.get("runs/get", run_id=parent)["run"]["info"]["status"] == "KILLED"
    stack.post(f"/sweeps/{sweep['id']}/resume", {})
    done = stack.wait_sweep(sweep["id"], timeout=180)
    assert done["status"] == "done" and done["counts"]["succeeded"] == 3
    wait_mirrored(stack, sweep["id"])
    assert mlflow.get("runs/get", run_id=parent)["run"]["info"]["status"] == "FINISHED"
    runs = mlflow.runs(mlflow.experiment_id(f"resumed-{seed}"))
    children = {
        tags(r)["sweeplab.job_id"]: r["info"]["status"]
        for r in runs
        if tags(r).get("mlflow.parentRunId") == parent
    }
    trials = {t.id: t.status for t in stack.sweep_jobs(sweep["id"])}
    assert set(children) == set(trials)  # the cancelled trials' runs and their replays'
    assert sorted(children.values()).count("FINISHED") == 3
    best = done["best_trial"]
    parent_run = mlflow.get("runs/get", run_id=parent)["run"]
    assert tags(parent_run)["sweeplab.best_job_id"] == best["job_id"]
    metrics = {m["key"]: m["value"] for m in parent_run["data"]["metrics"]}
    assert metrics["best_val_loss"] == best["objective"]
