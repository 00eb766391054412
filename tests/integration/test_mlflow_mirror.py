"""The MLflow mirror against a real MLflow server, real workers, Redis, SQLite and PostgreSQL.

Everything is read back through MLflow's REST API, as any client would.
"""

from __future__ import annotations

import io
import json
import math
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from services.db import Job, JobMetric
from services.mirror import sync
from services.mirror.catch_up import mirror_finished, mirror_pending
from services.mirror.plumbing import finished_keys
from tests.e2e.mlflow_support import (
    MlflowServer,
    mirroring_stack,
    params,
    tags,
    wait_job_mirrored,
    wait_mirrored,
)
from tests.integration.harness import Stack, require_postgres, wait_for

pytestmark = pytest.mark.integration

TRACKING_MODE = "workflowType=machine_learning"  # links open the UI's "Model training" mode
DEFAULT_EXPERIMENT = "sweeplab"  # where single jobs land (README, "MLflow")
# The README's mapping of job statuses to MLflow run statuses.
RUN_STATUS = {
    "succeeded": "FINISHED",
    "diverged": "FAILED",
    "failed": "FAILED",
    "cancelled": "KILLED",
    "pruned": "KILLED",
    "timed_out": "KILLED",
}
LRS = [0.01, 0.1, 10.0]  # 10.0 diverges on digits in the first epoch


def trial_spec(epochs: int = 6, **hp: Any) -> dict[str, Any]:
    return {
        "name": "digits-16",
        "dataset": {"name": "digits", "validation_split": 0.2, "seed": 0},
        "architecture": {"layers": [{"units": 16, "activation": "relu"}]},
        "hyperparameters": {"learning_rate": 0.1, "batch_size": 32, "epochs": epochs, **hp},
    }


def sweep_spec(experiment: str, base: dict[str, Any], lrs: list[float]) -> dict[str, Any]:
    return {
        "name": f"lr-{experiment}",
        "experiment": experiment,
        "base": base,
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": lrs}},
        "objective": {"metric": "val_loss", "goal": "minimize"},
        "max_concurrency": 2,
    }


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def stack(
    request: pytest.FixtureRequest,
    redis_base: str,
    mlflow: MlflowServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The service on one database backend, mirroring to the module's MLflow server."""
    if request.param == "postgresql":
        require_postgres()
    workdir = tmp_path_factory.mktemp(f"stack-{request.param}")
    s = mirroring_stack(request.param, workdir, redis_base, mlflow.url)
    s.env["SWEEPLAB_MIRROR_CATCH_UP_SECONDS"] = "2"
    try:
        s.start_worker(concurrency=2)
        yield s
    finally:
        s.close()


# Expectations are written from the stored spec and history and the documented naming
# rules, never with the mirror's own helpers (names.flatten_spec, epoch_metrics,
# run_name): a bug in those must fail here.


def expected_params(spec: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """One param per leaf of the spec, by dotted path, layers by index; numbers as
    Python writes them, None and booleans by name, a list of plain values as JSON."""
    out: dict[str, str] = {}
    for key, value in spec.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(expected_params(value, f"{path}."))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for i, item in enumerate(value):
                out.update(expected_params(item, f"{path}.{i}."))
        elif isinstance(value, list | dict):
            out[path] = json.dumps(value, separators=(",", ":"))
        else:
            out[path] = value if isinstance(value, str) else repr(value)
    return out


def expected_run_name(lr: float, batch_size: int = 32) -> str:
    """``lr=<rate> bs=<batch size>``, the rate to 4 significant digits."""
    return f"lr={lr:.4g} bs={batch_size}"


def db_rows(stack: Stack, job_id: str) -> list[JobMetric]:
    with stack.sessions() as session:
        return list(
            session.query(JobMetric).filter(JobMetric.job_id == job_id).order_by(JobMetric.epoch)
        )


def assert_run_mirrors_job(
    mlflow: MlflowServer,
    run: dict[str, Any],
    job: Job,
    stack: Stack,
    architecture: str = "16-relu > 10-softmax",
):
    """Params, every metric point once, tags, status and artifacts of one job's run."""
    run_id = run["info"]["run_id"]
    logged = params(run)
    assert logged == expected_params(job.spec)
    hp = job.spec["hyperparameters"]
    assert logged["dataset.name"] == job.spec["dataset"]["name"]
    assert logged["architecture.layers.0.activation"] == "relu"
    assert logged["hyperparameters.learning_rate"] == repr(hp["learning_rate"])
    assert logged["hyperparameters.batch_size"] == "32"
    assert logged["hyperparameters.epochs"] == str(hp["epochs"])
    rows = db_rows(stack, job.id)
    assert [r.epoch for r in rows] == list(range(1, job.epochs_done + 1))
    # every finite number the database holds for an epoch (per-layer ones as
    # grad_norm.layer_0, ...), at that epoch's step
    expected: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in row.metrics.items():
            if key != "epoch" and isinstance(value, int | float) and math.isfinite(value):
                expected.setdefault(key, []).append((row.epoch, value))
    if job.status != "diverged":  # a diverged epoch has no finite losses or norms
        assert "grad_norm.layer_0" in expected and "val_loss" in expected
    for key, points in expected.items():
        got = sorted((int(m["step"]), m["value"]) for m in mlflow.history(run_id, key))
        assert [step for step, _ in got] == [step for step, _ in points], key  # each once
        assert [v for _, v in got] == pytest.approx([v for _, v in points]), key
    # the number the API ranks the job by, as one more metric (at its best epoch)
    best = [m for m in run["data"].get("metrics", []) if m["key"].startswith("best_")]
    if job.objective is None:
        assert best == []
    else:
        assert [(m["key"], m["value"]) for m in best] == [("best_val_loss", job.objective)]
        assert [int(m["step"]) for m in mlflow.history(run_id, "best_val_loss")] == [job.best_epoch]
    t = tags(run)
    assert t["sweeplab.job_id"] == job.id
    assert t["sweeplab.status"] == job.status
    assert t["sweeplab.architecture"] == architecture
    assert t["mlflow.runName"] == expected_run_name(hp["learning_rate"])
    codes = [d["code"] for d in job.diagnosis or []]
    assert t["sweeplab.diagnosis"] == (",".join(codes) or "healthy")
    assert run["info"]["status"] == RUN_STATUS[job.status]
    files = mlflow.artifacts(run_id)
    for name in ("spec.json", "history.csv", "diagnosis.json"):
        assert name in files, files
    # the PNG: every run here (single jobs, and sweeps of at most 100 trials)
    assert "learning_curve.png" in files and "layers.png" in files, files
    # Every trial whose training returned (diverged ones too) has the weights it ended with.
    assert "weights.npz" in files, files
    csv = mlflow.artifact_bytes(run_id, "history.csv").decode().splitlines()
    assert len(csv) == job.epochs_done + 1
    assert mlflow.artifact_bytes(run_id, "learning_curve.png")[:4] == b"\x89PNG"


def test_sweep_mirrors_parent_and_every_trial(stack: Stack, mlflow: MlflowServer):
    experiment = f"it-{uuid.uuid4().hex[:8]}"
    sweep = stack.post("/sweeps", sweep_spec(experiment, trial_spec(), LRS))
    stack.wait_sweep(sweep["id"])
    wait_mirrored(stack, sweep["id"])
    jobs = stack.sweep_jobs(sweep["id"])
    assert sorted(j.status for j in jobs) == ["diverged", "succeeded", "succeeded"]

    exp_id = mlflow.experiment_id(experiment)
    runs = mlflow.runs(exp_id)
    parents = [r for r in runs if tags(r).get("sweeplab.kind") == "sweep"]
    children = [r for r in runs if tags(r).get("sweeplab.kind") == "job"]
    assert len(parents) == 1 and len(children) == len(jobs) == len(runs) - 1
    parent = parents[0]
    parent_id = parent["info"]["run_id"]
    by_job = {tags(r)["sweeplab.job_id"]: r for r in children}
    assert set(by_job) == {j.id for j in jobs}
    for job in jobs:
        run = by_job[job.id]
        assert tags(run)["mlflow.parentRunId"] == parent_id
        assert tags(run)["sweeplab.sweep_id"] == sweep["id"]
        assert run["info"]["run_id"] == job.mlflow_run_id
        assert_run_mirrors_job(mlflow, run, job, stack)
    diverged = next(j for j in jobs if j.status == "diverged")
    assert tags(by_job[diverged.id])["sweeplab.diverged"] == "true"
    assert by_job[diverged.id]["info"]["status"] == "FAILED"

    # The parent: the best trial's params and objective, the LR plot, FINISHED.
    best = min((j for j in jobs if j.status == "succeeded"), key=lambda j: j.objective or 0.0)
    assert parent["info"]["status"] == "FINISHED"
    assert tags(parent)["sweeplab.best_job_id"] == best.id
    assert params(parent)["hyperparameters.learning_rate"] == repr(
        best.spec["hyperparameters"]["learning_rate"]
    )
    metrics = {m["key"]: m["value"] for m in parent["data"]["metrics"]}
    assert metrics["best_val_loss"] == pytest.approx(best.objective)
    assert len(mlflow.history(parent_id, "best_val_loss")) == 1
    assert {"lr_map.png", "lr_map.json", "report.html"} <= set(mlflow.artifacts(parent_id))

    # The API hands out working links.
    shown = stack.get(f"/sweeps/{sweep['id']}")["mlflow"]
    assert shown["experiment_id"] == exp_id and shown["run_id"] == parent_id
    assert shown["experiment_url"].endswith(f"/#/experiments/{exp_id}/runs?{TRACKING_MODE}")
    for job in jobs:
        assert job.mlflow_run_id in shown["compare_url"]
    job_links = stack.get(f"/jobs/{best.id}")["mlflow"]
    assert job_links["run_url"].endswith(
        f"/#/experiments/{exp_id}/runs/{best.mlflow_run_id}?{TRACKING_MODE}"
    )

    # Weights: a real .npz of the trained network.
    best_run = str(best.mlflow_run_id)
    weights = next(f for f in mlflow.artifacts(best_run) if f.endswith(".npz"))
    with np.load(io.BytesIO(mlflow.artifact_bytes(best_run, weights))) as z:
        assert z["layer_0.W"].shape == (64, 16) and z["layer_1.W"].shape == (16, 10)


def test_single_job_is_a_run_in_the_default_experiment(stack: Stack, mlflow: MlflowServer):
    job = stack.post("/jobs", trial_spec(epochs=4, learning_rate=0.05))
    stack.wait_job(job["id"])
    done = wait_job_mirrored(stack, job["id"])
    exp_id = mlflow.experiment_id(DEFAULT_EXPERIMENT)
    runs = mlflow.runs(exp_id, f"tags.`sweeplab.job_id` = '{job['id']}'")
    assert len(runs) == 1
    assert "mlflow.parentRunId" not in tags(runs[0])
    assert tags(runs[0])["mlflow.runName"] == "lr=0.05 bs=32"
    assert_run_mirrors_job(mlflow, runs[0], done, stack)
    links = stack.get(f"/jobs/{job['id']}")["mlflow"]
    assert links["run_id"] == runs[0]["info"]["run_id"] and links["experiment_id"] == exp_id


def test_mirror_is_complete_and_unique_after_mlflow_outage(
    redis_base: str, tmp_path_factory: pytest.TempPathFactory
):
    """Stop MLflow mid-sweep, start it again: every run once, every point once."""
    var = tmp_path_factory.mktemp("mlflow-outage")
    server = MlflowServer(var)
    server.start()
    stack = mirroring_stack("sqlite", tmp_path_factory.mktemp("outage"), redis_base, server.url)
    try:
        stack.start_worker(concurrency=2)
        experiment = f"outage-{uuid.uuid4().hex[:8]}"
        # Trials of a few seconds each, so that the mirror runs while they train.
        base = {
            "name": "blobs",
            "dataset": {"name": "blobs", "n_samples": 20_000, "seed": 0},
            "architecture": {"layers": [{"units": 32, "activation": "relu"}]},
            "hyperparameters": {"learning_rate": 0.05, "batch_size": 32, "epochs": 40},
        }
        sweep = stack.post("/sweeps", sweep_spec(experiment, base, [0.01, 0.02, 0.05, 0.1]))

        def first_run_mirrored() -> bool:
            return any(j.mlflow_run_id for j in stack.sweep_jobs(sweep["id"]))

        wait_for(first_run_mirrored, 90, "the first run in MLflow", interval=0.1)
        server.stop()  # MLflow goes away mid-sweep; training must go on
        down_at = time.monotonic()
        before = sum(j.epochs_done for j in stack.sweep_jobs(sweep["id"]))

        def trained_on() -> bool:
            jobs = stack.sweep_jobs(sweep["id"])
            done = len(jobs) == 4 and all(j.status not in ("queued", "running") for j in jobs)
            return done or sum(j.epochs_done for j in jobs) >= before + 20

        wait_for(trained_on, 60, "training to go on without MLflow", interval=0.2)
        assert time.monotonic() - down_at < 60
        server.start()
        stack.wait_sweep(sweep["id"], timeout=300)
        wait_mirrored(stack, sweep["id"], timeout=300)

        jobs = stack.sweep_jobs(sweep["id"])
        exp_id = server.experiment_id(experiment)
        runs = server.runs(exp_id)
        assert len([r for r in runs if tags(r)["sweeplab.kind"] == "sweep"]) == 1
        children = [r for r in runs if tags(r)["sweeplab.kind"] == "job"]
        assert sorted(tags(r)["sweeplab.job_id"] for r in children) == sorted(j.id for j in jobs)
        by_job = {tags(r)["sweeplab.job_id"]: r for r in children}
        for job in jobs:
            assert_run_mirrors_job(server, by_job[job.id], job, stack, "32-relu > 3-softmax")
    finally:
        stack.close()
        server.stop()


def test_catch_up_mirrors_jobs_finished_while_mirroring_was_off(
    stack: Stack, mlflow: MlflowServer, tmp_path: Path
):
    """A job whose mirror never ran (message lost) is picked up by mirror_pending."""
    job = stack.post("/jobs", trial_spec(epochs=3, learning_rate=0.02))
    stack.wait_job(job["id"])
    wait_job_mirrored(stack, job["id"])
    # Forget the mirror in the database only: the catch-up must find the run, not add one.
    with stack.sessions() as session:
        row = session.get(Job, job["id"])
        assert row is not None
        row.mlflow_run_id = row.mlflow_experiment_id = row.mlflow_synced_status = None
        row.mlflow_synced_epoch = 0
        session.commit()
    sync._confirmed.clear()

    def caught_up() -> dict | None:
        # "busy": a mirror task of the worker still holds the job's lock (the
        # periodic ticker retries then too); anything else must be final
        counts = mirror_pending(stack.settings)
        return None if counts["busy"] else counts

    counts = wait_for(caught_up, 30, "the catch-up to find the job's lock free", interval=0.5)
    assert counts["failed"] == 0 and counts["left"] == 0, counts
    exp_id = mlflow.experiment_id(DEFAULT_EXPERIMENT)
    runs = mlflow.runs(exp_id, f"tags.`sweeplab.job_id` = '{job['id']}'")
    assert len(runs) == 1
    assert_run_mirrors_job(mlflow, runs[0], stack.job(job["id"]), stack)


def test_workers_catch_up_by_themselves_when_a_hook_was_lost(stack: Stack, mlflow: MlflowServer):
    """No restart, no hook: each worker's ticker sends the catch-up pass (every 2 s here,
    60 s by default), as after a job finished while Redis was away."""
    job = stack.post("/jobs", trial_spec(epochs=3, learning_rate=0.03))
    stack.wait_job(job["id"])
    wait_job_mirrored(stack, job["id"])
    with stack.sessions() as session:  # as if its job_finished hook had never been sent
        row = session.get(Job, job["id"])
        assert row is not None
        row.mlflow_synced_status, row.mlflow_synced_epoch = None, 0
        session.commit()
    mirrored = wait_job_mirrored(stack, job["id"], timeout=30)
    assert mirrored.mlflow_synced_epoch == 3
    exp_id = mlflow.experiment_id(DEFAULT_EXPERIMENT)
    runs = mlflow.runs(exp_id, f"tags.`sweeplab.job_id` = '{job['id']}'")
    assert len(runs) == 1
    assert_run_mirrors_job(mlflow, runs[0], stack.job(job["id"]), stack)


def test_short_jobs_are_mirrored_in_batches_from_the_finished_set(
    stack: Stack, mlflow: MlflowServer
):
    """A short job's hook only adds it to a Redis set; ``mirror_finished`` drains the set
    (here in this process, the set filled by hand as the hooks would) and leaves it empty."""
    jobs = [stack.post("/jobs", trial_spec(epochs=2, learning_rate=lr)) for lr in (0.01, 0.02)]
    for job in jobs:
        stack.wait_job(job["id"])
        wait_job_mirrored(stack, job["id"])
    with stack.sessions() as session:  # forget the final mirror in the database
        for job in jobs:
            row = session.get(Job, job["id"])
            assert row is not None
            row.mlflow_synced_status = None
        session.commit()
    members, guard = finished_keys(stack.settings)
    r = redis.Redis.from_url(stack.redis_url)
    r.sadd(members, *[job["id"] for job in jobs])
    deadline = time.monotonic() + 30
    while r.scard(members) and time.monotonic() < deadline:
        mirror_finished(stack.settings)  # a job comes back while the worker's catch-up holds it
    # A job that came back was noted again: the worker's own mirror_finished task may
    # hold the guard while it mirrors it; it lets go when its pass ends (the guard would
    # otherwise last 60 s).
    wait_for(lambda: not r.scard(members) and not r.exists(guard), 20, "the guard let go")
    for job in jobs:
        row = wait_job_mirrored(stack, job["id"])
        assert row.mlflow_synced_status == row.status == "succeeded"
        runs = mlflow.runs(
            mlflow.experiment_id(DEFAULT_EXPERIMENT), f"tags.`sweeplab.job_id` = '{job['id']}'"
        )
        assert len(runs) == 1  # the run is found again, never a second one
        assert_run_mirrors_job(mlflow, runs[0], stack.job(job["id"]), stack)
