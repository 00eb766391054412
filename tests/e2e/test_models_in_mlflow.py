"""Trained models in a real MLflow server, from real worker processes.

A job on an uploaded CSV with text labels succeeds; its run holds an MLflow model, and
``mlflow.pyfunc.load_model("runs:/<run_id>/model").predict(X)`` answers exactly what
``POST /jobs/<id>/predict`` answers (labels as the user gave them, and the
probabilities through ``predict_proba``), from a DataFrame or an array. A small sweep's
best trial, as the API picks it, is marked on its parent run (``sweeplab.best_trial_id``,
``sweeplab.best_run_id``) and on its own run (``sweeplab.best=true``), on no other.
"""

from __future__ import annotations

import copy
import json
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator

import mlflow.pyfunc as pyfunc
import numpy as np
import pandas as pd
import pytest

from tests.e2e.mlflow_support import (
    MlflowServer,
    mirroring_stack,
    tags,
    wait_job_mirrored,
    wait_mirrored,
)
from tests.integration.harness import Stack
from tests.integration.test_uploaded_data import as_csv, blobs, spec_on, upload_csv
from tests.reports_support import RELU_XOR

pytestmark = pytest.mark.e2e

API = "/api/v1"
HISTORY = "mlflow.log-model.history"  # the run's logged models, as the UI reads them


@pytest.fixture(scope="module")
def stack(
    redis_base: str, mlflow: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    stack = mirroring_stack("sqlite", tmp_path_factory.mktemp("models"), redis_base, mlflow.url)
    try:
        stack.start_worker(concurrency=2)
        yield stack
    finally:
        stack.close()


def test_the_runs_model_answers_what_the_predict_route_answers(stack, mlflow, monkeypatch):
    X, y = blobs(160, seed=21)
    shown = upload_csv(stack, as_csv(X, y), name="clouds-mlflow.csv")
    job = stack.post("/jobs", spec_on({"name": "uploaded", "id": shown["id"]}, epochs=5))
    done = stack.wait_job(job["id"])
    assert done.status == "succeeded", done.error
    mirrored = wait_job_mirrored(stack, job["id"])
    run_id = mirrored.mlflow_run_id
    assert sorted(_files(mlflow, run_id, "model")) == [
        "model/MLmodel",
        "model/artifacts/job.npz",
        "model/model.py",
        "model/python_env.yaml",
        "model/requirements.txt",
    ]
    history = json.loads(tags(mlflow.get("runs/get", run_id=run_id)["run"])[HISTORY])
    assert [(h["run_id"], h["artifact_path"]) for h in history] == [(run_id, "model")]
    weights = stack.client.get(f"{API}/jobs/{job['id']}/weights").data
    assert mlflow.artifact_bytes(run_id, "model/artifacts/job.npz") == weights

    rows = np.random.default_rng(4).normal(0.0, 4.0, size=(250, 3))
    answer = stack.client.post(f"{API}/jobs/{job['id']}/predict", json={"rows": rows.tolist()})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow.url)
    model = pyfunc.load_model(f"runs:/{run_id}/model")
    for given in (rows, pd.DataFrame(rows, columns=["f1", "f2", "f3"])):
        assert model.predict(given).tolist() == body["predictions"]
    assert set(body["predictions"]) == {"high", "low"}
    proba = model.unwrap_python_model().predict_proba(rows)
    assert proba.tolist() == body["probabilities"]


def _files(mlflow: MlflowServer, run_id: str, path: str) -> list[str]:
    """Every file under ``path`` of the run's artifacts (the listing is one level a call)."""
    query = urllib.parse.urlencode({"run_id": run_id, "path": path})
    with urllib.request.urlopen(f"{mlflow.url}/api/2.0/mlflow/artifacts/list?{query}") as resp:
        listing = json.load(resp)
    out = []
    for entry in listing.get("files", []):
        if entry.get("is_dir"):
            out += _files(mlflow, run_id, entry["path"])
        else:
            out.append(entry["path"])
    return out


def test_a_sweeps_best_trial_is_marked_on_its_parent_run(stack, mlflow):
    body = {
        "name": f"best-{uuid.uuid4().hex[:6]}",
        "experiment": f"best-{uuid.uuid4().hex[:8]}",
        "base": copy.deepcopy(RELU_XOR),
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": [0.01, 0.1, 0.5, 1.0]}},
        "objective": {"metric": "val_loss", "goal": "minimize"},
        "max_concurrency": 2,
    }
    sweep = stack.post("/sweeps", body)
    stack.wait_sweep(sweep["id"])
    wait_mirrored(stack, sweep["id"])
    sweep = stack.get(f"/sweeps/{sweep['id']}")
    best_id = sweep["best_trial"]["job_id"]
    runs = mlflow.runs(sweep["mlflow"]["experiment_id"])
    parent = next(r for r in runs if tags(r).get("sweeplab.kind") == "sweep")
    children = {tags(r)["sweeplab.job_id"]: r for r in runs if tags(r).get("mlflow.parentRunId")}
    assert len(children) == 4
    best_run = children[best_id]["info"]["run_id"]
    assert tags(parent)["sweeplab.best_trial_id"] == best_id
    assert tags(parent)["sweeplab.best_run_id"] == best_run
    marked = {
        job_id for job_id, run in children.items() if tags(run).get("sweeplab.best") == "true"
    }
    assert marked == {best_id}
    assert all(tags(r)["sweeplab.status"] == "succeeded" for r in children.values())
    for run in children.values():  # every succeeded trial is a model
        assert "model" in mlflow.artifacts(run["info"]["run_id"])
    logs = "".join(p.read_text() for p in stack.workdir.glob("w*.log"))
    assert "cannot mark the best trial" not in logs  # marked as trials ended, not only at the end
