"""Deleting jobs and sweeps marks their MLflow runs deleted (a real MLflow server, real
workers, Redis, SQLite and PostgreSQL), also when MLflow was down at the time of the deletion."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from services.db import MlflowDeletion
from tests.e2e.mlflow_support import MlflowServer, mirroring_stack, tags, wait_job_mirrored
from tests.e2e.mlflow_support import wait_mirrored as wait_sweep_mirrored
from tests.integration.harness import Stack, require_postgres, wait_for

pytestmark = pytest.mark.integration


def job_spec(epochs: int = 3, lr: float = 0.1) -> dict[str, Any]:
    """A single job (its run goes to the default experiment)."""
    return {
        "name": "to-delete",
        "dataset": {"name": "xor", "n_samples": 64, "seed": 0},
        "architecture": {"layers": [{"units": 4, "activation": "tanh"}]},
        "hyperparameters": {"learning_rate": lr, "epochs": epochs, "batch_size": 16},
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """This module's MLflow server (a test stops and starts it)."""
    mlflow = MlflowServer(tmp_path_factory.mktemp("mlflow-deletion"))
    mlflow.start()
    try:
        yield mlflow
    finally:
        mlflow.stop()


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def stack(
    request: pytest.FixtureRequest,
    redis_base: str,
    server: MlflowServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    if request.param == "postgresql":
        require_postgres()
    workdir = tmp_path_factory.mktemp(f"deletion-{request.param}")
    s = mirroring_stack(request.param, workdir, redis_base, server.url)
    s.env["SWEEPLAB_MIRROR_CATCH_UP_SECONDS"] = "2"
    try:
        s.start_worker(concurrency=2)
        yield s
    finally:
        s.close()


def stage(server: MlflowServer, run_id: str) -> str:
    return server.get("runs/get", run_id=run_id)["run"]["info"]["lifecycle_stage"]


def wait_deleted(server: MlflowServer, run_ids: list[str], timeout: float = 60) -> None:
    wait_for(
        lambda: all(stage(server, r) == "deleted" for r in run_ids),
        timeout,
        f"runs {run_ids} deleted in MLflow",
        interval=0.25,
    )


def pending(stack: Stack) -> list[str]:
    with stack.sessions() as session:
        return list(session.scalars(select(MlflowDeletion.entity_id)))


def test_a_deleted_jobs_run_is_deleted_in_mlflow(stack: Stack, server: MlflowServer):
    job = stack.post("/jobs", job_spec())
    stack.wait_job(job["id"])
    run_id = wait_job_mirrored(stack, job["id"]).mlflow_run_id
    assert run_id and stage(server, run_id) == "active"
    keep = stack.post("/jobs", job_spec(lr=0.2))  # another job's run stays
    stack.wait_job(keep["id"])
    kept = wait_job_mirrored(stack, keep["id"]).mlflow_run_id
    assert stack.client.delete(f"/api/v1/jobs/{job['id']}").status_code == 204
    wait_deleted(server, [run_id])
    assert stage(server, kept) == "active"


def test_a_deleted_sweeps_runs_are_deleted_in_mlflow(stack: Stack, server: MlflowServer):
    experiment = f"del-sweep-{uuid.uuid4().hex[:8]}"
    body = {
        "name": "lr",
        "experiment": experiment,
        "base": job_spec(),
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": [0.05, 0.1, 0.2]}},
        "max_concurrency": 2,
    }
    sweep = stack.post("/sweeps", body)
    stack.wait_sweep(sweep["id"])
    wait_sweep_mirrored(stack, sweep["id"])
    runs = server.runs(server.experiment_id(experiment))
    assert sorted(tags(r)["sweeplab.kind"] for r in runs) == ["job", "job", "job", "sweep"]
    assert stack.client.delete(f"/api/v1/sweeps/{sweep['id']}").status_code == 204
    wait_deleted(server, [r["info"]["run_id"] for r in runs])


def test_a_deletion_while_mlflow_is_down_is_carried_out_later(stack: Stack, server: MlflowServer):
    job = stack.post("/jobs", job_spec())
    stack.wait_job(job["id"])
    run_id = wait_job_mirrored(stack, job["id"]).mlflow_run_id
    assert run_id
    server.stop()
    try:
        assert stack.client.delete(f"/api/v1/jobs/{job['id']}").status_code == 204
        assert job["id"] in pending(stack)  # kept until MLflow has it
        # the workers try (the oldest pending deletion first), fail, and keep them all
        wait_for(lambda: _attempted(stack), 30, "a failed attempt at a deletion")
        assert job["id"] in pending(stack)
    finally:
        server.start()
    wait_deleted(server, [run_id], timeout=120)  # the catch-up carries it out


def _attempted(stack: Stack) -> bool:
    """Whether a pending deletion has been tried and failed."""
    with stack.sessions() as session:
        rows = session.scalars(select(MlflowDeletion).where(MlflowDeletion.attempts >= 1))
        return any(row.last_error for row in rows)
