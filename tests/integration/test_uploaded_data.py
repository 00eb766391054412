"""Uploaded data through HTTP and real Celery workers: a CSV uploaded once trains jobs,
a sweep over inline arrays stores its data once and its trials refer to it, and a
dataset cannot go while a job or sweep trains on it.

Runs once per database backend (SQLite and PostgreSQL); see ``conftest.stack``.
"""

from __future__ import annotations

import io
import math
import uuid
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from services.db import Job
from services.db.models import Dataset, Sweep
from services.trainer import fit
from tests.integration.harness import Stack, wait_for

pytestmark = pytest.mark.integration

API = "/api/v1"


def blobs(n: int, seed: int) -> tuple[list[list[float]], list[str]]:
    """Two well separated clouds in 3 dimensions, labelled "low" and "high" (text)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    X = rng.normal(0.0, 1.0, (n, 3)) + np.where(labels[:, None] == 1, 3.0, -3.0)
    return X.tolist(), ["high" if c else "low" for c in labels]


def as_csv(X: list[list[float]], y: list[str]) -> bytes:
    """A CSV with a header; ``repr`` writes each float so that it reads back exactly."""
    rows = ["f1,f2,f3,kind"] + [",".join(map(repr, x)) + f",{c}" for x, c in zip(X, y, strict=True)]
    return ("\n".join(rows) + "\n").encode()


def upload_csv(stack: Stack, data: bytes, name: str = "clouds.csv") -> dict[str, Any]:
    response = stack.client.post(
        f"{API}/datasets",
        data={"file": (io.BytesIO(data), name), "target": "kind"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def spec_on(dataset: dict[str, Any], *, epochs: int, lr: float = 0.1) -> dict[str, Any]:
    return {
        "name": "uploaded-it",
        "dataset": {**dataset, "validation_split": 0.25, "seed": 3},
        "architecture": {"layers": [{"units": 8, "activation": "tanh"}]},
        "hyperparameters": {"learning_rate": lr, "epochs": epochs, "batch_size": 16},
    }


def reference_fit(spec: dict[str, Any]):
    """The same training in this process, with one BLAS thread like the workers."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return fit(spec)
    with threadpool_limits(limits=1):
        return fit(spec)


def n_datasets(stack: Stack) -> int:
    with stack.sessions() as session:
        return session.scalar(select(func.count()).select_from(Dataset))


def curve(stack: Stack, job_id: str) -> list[dict[str, Any]]:
    return [e["metrics"] for e in stack.get(f"/jobs/{job_id}/metrics")["epochs"]]


def test_an_uploaded_csv_trains_a_job(stack: Stack):
    X, y = blobs(400, seed=11)
    shown = upload_csv(stack, as_csv(X, y))
    assert (shown["n_rows"], shown["n_features"], shown["task"]) == (400, 3, "classification")
    assert shown["classes"] == ["high", "low"] and sum(shown["class_counts"]) == 400
    assert shown["feature_names"] == ["f1", "f2", "f3"]
    spec = spec_on({"name": "uploaded", "id": shown["id"]}, epochs=12)
    job = stack.post("/jobs", spec)
    stored = job["spec"]["dataset"]
    assert stored["name"] == "uploaded" and stored["id"] == shown["id"] and "X" not in stored
    done = stack.wait_job(job["id"])
    assert done.status == "succeeded", done.error
    assert done.epochs_done == 12 and stack.epochs(job["id"]) == list(range(1, 13))

    records = curve(stack, job["id"])
    assert all(math.isfinite(r[k]) for r in records for k in ("train_loss", "val_loss"))
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    assert records[-1]["val_accuracy"] >= 0.95  # the clouds are 6 standard deviations apart
    # The stored rows train as the same rows inline would: the same computation, bit for bit.
    inline = spec_on({"name": "arrays", "X": X, "y": y}, epochs=12)
    reference = reference_fit(inline).history
    assert [r["val_loss"] for r in records] == [r["val_loss"] for r in reference]
    assert [r["train_loss"] for r in records] == [r["train_loss"] for r in reference]


def test_a_sweep_over_inline_arrays_stores_them_once(stack: Stack):
    X, y = blobs(120, seed=uuid.uuid4().int % 10_000)  # data no other test stored
    before = n_datasets(stack)
    sweep = stack.post(
        "/sweeps",
        {
            "name": "inline-lr",
            "base": spec_on({"name": "arrays", "X": X, "y": y}, epochs=300),
            "method": "grid",
            "max_concurrency": 1,
            "parameters": {"hyperparameters.learning_rate": {"values": [0.01, 0.05, 0.1, 0.3]}},
            "objective": {"metric": "val_loss", "goal": "minimize"},
        },
    )
    dataset_id = sweep["spec"]["base"]["dataset"]["id"]
    # The sweep runs (four trials of ~0.1 s one after the other): its data stays.
    refused = stack.client.delete(f"{API}/datasets/{dataset_id}")
    assert stack.get(f"/sweeps/{sweep['id']}")["status"] == "running"  # still, after it
    assert refused.status_code == 409, refused.get_json()
    assert n_datasets(stack) == before + 1
    with stack.sessions() as session:
        base = session.get(Sweep, sweep["id"]).spec["base"]["dataset"]
    assert base["name"] == "uploaded" and base["id"] == dataset_id
    assert "X" not in base and "y" not in base

    done = stack.wait_sweep(sweep["id"])
    assert done["status"] == "done" and done["counts"]["succeeded"] == 4
    trials = stack.sweep_jobs(sweep["id"])
    assert len(trials) == 4 and {t.status for t in trials} == {"succeeded"}
    for trial in trials:
        ds = trial.spec["dataset"]
        assert ds["name"] == "uploaded" and ds["id"] == dataset_id
        assert "X" not in ds and "y" not in ds
        assert trial.dataset_id == dataset_id
    assert n_datasets(stack) == before + 1  # the trials did not store it again

    assert stack.client.delete(f"{API}/datasets/{dataset_id}").status_code == 204
    assert stack.client.get(f"{API}/datasets/{dataset_id}").status_code == 404
    assert stack.get(f"/sweeps/{sweep['id']}")["counts"]["succeeded"] == 4  # still shown


def test_a_dataset_in_use_cannot_be_deleted_until_its_job_ends(stack: Stack):
    X, y = blobs(2000, seed=uuid.uuid4().int % 10_000)
    dataset_id = upload_csv(stack, as_csv(X, y), name="in-use.csv")["id"]
    job = stack.post("/jobs", spec_on({"name": "uploaded", "id": dataset_id}, epochs=1000))
    path = f"{API}/datasets/{dataset_id}"
    status = stack.job(job["id"]).status
    assert status in ("queued", "running")
    assert stack.client.delete(path).status_code == 409, status
    # a couple of seconds of training: long enough to be seen running
    wait_for(lambda: stack.job(job["id"]).epochs_done >= 1, 30, "the job to train")
    refused = stack.client.delete(path)
    assert stack.job(job["id"]).status == "running"  # still, after the refusal
    assert refused.status_code == 409, refused.get_json()
    assert "used by a queued or running job" in refused.get_json()["error"]["message"]
    done = stack.wait_job(job["id"], timeout=120)
    assert done.status == "succeeded", done.error
    assert stack.client.delete(path).status_code == 204
    assert stack.client.get(path).status_code == 404
    with stack.sessions() as session:
        assert session.get(Dataset, dataset_id) is None
        assert session.get(Job, job["id"]).dataset_id is None  # the job stays, unlinked
    assert stack.get(f"/jobs/{job['id']}")["status"] == "succeeded"
