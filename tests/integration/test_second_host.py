"""A worker on "another host": started from an empty directory of its own, with no file
shared with the first worker or the API, only the database, broker and MLflow URLs (and
the service's tuning) in its environment. It trains jobs on uploaded data (the bytes come
from the database), takes over a job whose worker was killed from that job's checkpoint,
and mirrors its runs to MLflow (artifacts through the server: no shared disk either).

Runs once per database backend (SQLite and PostgreSQL), against one MLflow server.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from services.db import JobCheckpoint, JobMetric
from tests.e2e.mlflow_support import MlflowServer, mirroring_stack, tags, wait_job_mirrored
from tests.integration.harness import CELERY, REPO, Stack, require_postgres, wait_for

pytestmark = pytest.mark.integration

API = "/api/v1"
DEFAULT_EXPERIMENT = "sweeplab"  # where single jobs land (README, "MLflow")
# What the second host's environment holds: the shared services' URLs, its queue, and the
# service's tuning as the harness sets it (SWEEPLAB_RECOVER_SECONDS: look for a dead
# worker's jobs every second, rather than every 30 s).
REMOTE_ENV = (
    "DATABASE_URL",
    "REDIS_URL",
    "MLFLOW_TRACKING_URI",
    "SWEEPLAB_QUEUE",
    "SWEEPLAB_LEASE_SECONDS",
    "SWEEPLAB_CHECKPOINT_EVERY",
    "SWEEPLAB_FLUSH_SECONDS",
    "SWEEPLAB_BLAS_THREADS",
    "SWEEPLAB_MIRROR_CATCH_UP_SECONDS",
    "SWEEPLAB_RECOVER_SECONDS",
)


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
    """The service mirroring to the module's MLflow server; no worker yet."""
    if request.param == "postgresql":
        require_postgres()
    workdir = tmp_path_factory.mktemp(f"stack-{request.param}")
    s = mirroring_stack(request.param, workdir, redis_base, mlflow.url)
    s.env["SWEEPLAB_MIRROR_CATCH_UP_SECONDS"] = "2"
    s.env["SWEEPLAB_RECOVER_SECONDS"] = "1"
    s.env["SWEEPLAB_CHECKPOINT_EVERY"] = "1"  # a checkpoint at every epoch
    try:
        yield s
    finally:
        s.close()


def start_remote_worker(stack: Stack, home: Path, concurrency: int = 2) -> subprocess.Popen:
    """``celery -A worker.app worker`` as services/stack starts it, from ``home`` (empty,
    outside the repository), with only the shared services' URLs and the tuning in its
    environment: no PYTHONPATH, the package comes from the installed distribution."""
    home.mkdir(parents=True)
    assert not any(home.iterdir()) and REPO not in home.parents
    venv_bin = str(Path(sys.executable).parent)
    env = {"PATH": f"{venv_bin}:/usr/bin:/bin", "HOME": str(home)}
    env.update({key: stack.env[key] for key in REMOTE_ENV})
    name = f"remote{len(stack.workers)}-{uuid.uuid4().hex[:6]}"
    log = stack.workdir / f"w-{name}.log"  # the test reads it; the worker writes stdout
    argv = [CELERY, "-A", "worker.app", "worker", "--concurrency", str(concurrency)]
    argv += ["-P", "prefork", "-Q", f"{stack.queue},{stack.queue}.control", "-n", f"{name}@%h"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    stack.workers.append(proc)
    wait_for(
        lambda: b" ready." in log.read_bytes() or proc.poll() is not None, 60, f"worker {name}"
    )
    assert proc.poll() is None, log.read_text()[-3000:]
    return proc


def stop_worker(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    os.killpg(proc.pid, sig)
    proc.wait(timeout=60)


def ran_on(stack: Stack, job_id: str, proc: subprocess.Popen) -> bool:
    """Whether the job's last attempt ran in one of ``proc``'s processes (while it lives)."""
    pid = int(str(stack.job(job_id).worker).rsplit(":", 1)[1])
    return os.getpgid(pid) == proc.pid


def clouds_csv(n: int, n_features: int, seed: int) -> bytes:
    """Two overlapping clouds (the loss keeps falling for a while), labels as text."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    X = rng.normal(0.0, 1.0, (n, n_features)) + np.where(labels[:, None] == 1, 0.7, -0.7)
    header = ",".join(f"f{i}" for i in range(n_features)) + ",label"
    rows = [
        ",".join(map(repr, x)) + (",yes" if c else ",no")
        for x, c in zip(X.tolist(), labels, strict=True)
    ]
    return ("\n".join([header, *rows]) + "\n").encode()


def upload(stack: Stack, data: bytes) -> dict[str, Any]:
    # The raw body (a multipart body this large would sit in an unclosed temporary file
    # of the test client's, werkzeug.test.stream_encode_multipart).
    response = stack.client.post(
        f"{API}/datasets?target=label&name=clouds.csv", data=data, content_type="text/csv"
    )
    assert response.status_code in (200, 201), response.get_json()
    return response.get_json()


def spec_on(dataset_id: str, *, epochs: int, units: int, lr: float = 0.05) -> dict[str, Any]:
    return {
        "name": "second-host",
        "dataset": {"name": "uploaded", "id": dataset_id, "validation_split": 0.2, "seed": 1},
        "architecture": {"layers": [{"units": units, "activation": "tanh"}]},
        "hyperparameters": {"learning_rate": lr, "epochs": epochs, "batch_size": 16},
    }


def metric_rows(stack: Stack, job_id: str) -> list[dict[str, Any]]:
    """The job's epochs as stored, timing aside (the only number a rerun may change)."""
    with stack.sessions() as session:
        rows = session.scalars(
            select(JobMetric).where(JobMetric.job_id == job_id).order_by(JobMetric.epoch)
        )
        return [{k: v for k, v in row.metrics.items() if k != "seconds"} for row in rows]


def assert_mirrored(stack: Stack, mlflow: MlflowServer, job_id: str) -> None:
    """The job's run is in MLflow, final, with every epoch's val_loss and its artifacts."""
    job = wait_job_mirrored(stack, job_id)
    exp_id = mlflow.experiment_id(DEFAULT_EXPERIMENT)
    runs = mlflow.runs(exp_id, f"tags.`sweeplab.job_id` = '{job_id}'")
    assert len(runs) == 1 and runs[0]["info"]["run_id"] == job.mlflow_run_id
    assert runs[0]["info"]["status"] == "FINISHED" and tags(runs[0])["sweeplab.job_id"] == job_id
    history = sorted(
        (int(m["step"]), m["value"]) for m in mlflow.history(job.mlflow_run_id, "val_loss")
    )
    stored = [(r["epoch"], r["val_loss"]) for r in metric_rows(stack, job_id)]
    assert [s for s, _ in history] == [e for e, _ in stored]
    assert all(
        math.isclose(h, s, rel_tol=1e-6) for (_, h), (_, s) in zip(history, stored, strict=True)
    )
    assert "history.csv" in mlflow.artifacts(job.mlflow_run_id)


def test_a_worker_elsewhere_trains_on_uploaded_data_and_mirrors(
    stack: Stack, mlflow: MlflowServer, tmp_path_factory: pytest.TempPathFactory
):
    remote = start_remote_worker(stack, tmp_path_factory.mktemp("host-b") / "home")
    try:
        dataset = upload(stack, clouds_csv(600, 4, seed=5))
        ids = [
            stack.post("/jobs", spec_on(dataset["id"], epochs=15, units=8, lr=lr))["id"]
            for lr in (0.05, 0.2)
        ]
        for job_id in ids:
            done = stack.wait_job(job_id)
            assert done.status == "succeeded", done.error
            assert ran_on(stack, job_id, remote) and done.attempts == 1
            rows = metric_rows(stack, job_id)
            assert [r["epoch"] for r in rows] == list(range(1, 16))
            assert all(math.isfinite(r["val_loss"]) for r in rows)
            assert rows[-1]["val_loss"] < rows[0]["val_loss"]
            assert rows[-1]["val_accuracy"] > 0.7  # the clouds are 1.4 sd apart: ~0.76 at best
            assert_mirrored(stack, mlflow, job_id)
    finally:
        stop_worker(remote)


def test_a_worker_elsewhere_resumes_a_killed_workers_checkpoint(
    stack: Stack, mlflow: MlflowServer, tmp_path_factory: pytest.TempPathFactory
):
    dataset = upload(stack, clouds_csv(24_000, 8, seed=6))
    spec = spec_on(dataset["id"], epochs=30, units=32)
    local = stack.start_worker(concurrency=1)  # worker A, in the repository
    job_id = stack.post("/jobs", spec)["id"]

    def checkpointed() -> int:
        with stack.sessions() as session:
            row = session.get(JobCheckpoint, job_id)
            return row.epoch if row is not None and row.epoch >= 3 else 0

    wait_for(checkpointed, 60, "a checkpoint at epoch 3")
    assert ran_on(stack, job_id, local)
    stop_worker(local, signal.SIGKILL)  # the whole host goes: no warm shutdown, no release
    killed_at = time.monotonic()
    killed = stack.job(job_id)
    assert killed.status == "running" and killed.epochs_done < 30, "killed too late"
    with stack.sessions() as session:
        at = session.get(JobCheckpoint, job_id).epoch
        kept = {
            row.epoch: row.id
            for row in session.scalars(select(JobMetric).where(JobMetric.job_id == job_id))
        }
    assert set(range(1, at + 1)) <= set(kept)

    remote = start_remote_worker(stack, tmp_path_factory.mktemp("host-b2") / "home")
    reference_id = stack.post("/jobs", spec)["id"]  # the same spec, never interrupted
    wait_for(lambda: stack.job(job_id).attempts == 2, 60, "the other host to take the job")
    taken_in = time.monotonic() - killed_at
    done = stack.wait_job(job_id, timeout=120)
    assert done.status == "succeeded", done.error
    assert done.attempts == 2 and ran_on(stack, job_id, remote)
    print(
        f"[{stack.backend}] worker A killed after epoch {killed.epochs_done} (checkpoint at "
        f"{at}); the other host took the job {taken_in:.1f} s later (lease 3 s)"
    )
    reference = stack.wait_job(reference_id, timeout=120)
    assert reference.status == "succeeded" and reference.attempts == 1
    # Resumed from epoch `at`: the rows up to it are worker A's, untouched; the rest are
    # new (not replayed from epoch 1); and the curve is the undisturbed run's, bit for bit.
    with stack.sessions() as session:
        now = {
            row.epoch: row.id
            for row in session.scalars(select(JobMetric).where(JobMetric.job_id == job_id))
        }
    assert sorted(now) == list(range(1, 31))
    assert all(now[e] == kept[e] for e in range(1, at + 1))
    last_kept = max(kept[e] for e in range(1, at + 1))
    assert all(now[e] > last_kept for e in range(at + 1, 31))
    assert metric_rows(stack, job_id) == metric_rows(stack, reference_id)
    assert_mirrored(stack, mlflow, job_id)
    with stack.sessions() as session:
        assert session.get(JobCheckpoint, job_id) is None  # final: its checkpoint is gone
