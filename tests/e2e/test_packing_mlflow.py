"""A packed sweep in a real MLflow server, from real worker processes: each trial of a pack
has its own child run under the sweep's parent run, with its own curve and model."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.e2e.mlflow_support import MlflowServer, mirroring_stack, tags, wait_mirrored
from tests.integration.harness import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(
    redis_base: str, mlflow: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    stack = mirroring_stack("sqlite", tmp_path_factory.mktemp("packing"), redis_base, mlflow.url)
    try:
        stack.start_worker(concurrency=2)
        yield stack
    finally:
        stack.close()


def test_each_trial_of_a_pack_is_its_own_child_run(stack, mlflow):
    experiment = f"packed-{uuid.uuid4().hex[:8]}"
    body = {
        "name": "packed-mlflow",
        "experiment": experiment,
        "base": {
            "reuse": False,
            "dataset": {"name": "moons", "n_samples": 400, "seed": 1},
            "architecture": {"layers": [{"units": 16}, {"units": 16}]},
            "hyperparameters": {"learning_rate": 0.1, "epochs": 5, "batch_size": 32},
        },
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": [0.01, 0.03, 0.1, 0.3]}},
        "max_concurrency": 4,
        "packing": 4,
    }
    sweep = stack.post("/sweeps", body)
    done = stack.wait_sweep(sweep["id"], timeout=120)
    assert done["counts"]["succeeded"] == 4
    trials = stack.sweep_jobs(sweep["id"])
    assert len({t.worker for t in trials}) == 1  # one pack, one process
    wait_mirrored(stack, sweep["id"])
    parent = stack.get(f"/sweeps/{sweep['id']}")["mlflow"]["run_id"]
    runs = mlflow.runs(mlflow.experiment_id(experiment))
    children = {
        tags(r)["sweeplab.job_id"]: r for r in runs if tags(r).get("mlflow.parentRunId") == parent
    }
    assert set(children) == {t.id for t in trials}
    for trial in trials:
        run = children[trial.id]
        assert run["info"]["status"] == "FINISHED"
        curve = sorted(
            (m["step"], m["value"]) for m in mlflow.history(run["info"]["run_id"], "val_loss")
        )
        page = stack.get(f"/jobs/{trial.id}/metrics")["epochs"]
        assert curve == [(e["epoch"], e["metrics"]["val_loss"]) for e in page]
        assert "model" in mlflow.artifacts(run["info"]["run_id"])
