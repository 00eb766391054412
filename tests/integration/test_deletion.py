"""DELETE of a job and of a sweep while real Celery workers train them: the workers stop at
their next epoch, do not crash, write nothing back, and go on with other work."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from services.db import Job, JobCheckpoint, JobMetric, JobWeights, Sweep
from tests.integration.harness import Stack, require_postgres, wait_for

pytestmark = pytest.mark.integration


def spec(epochs: int, n_samples: int = 40_000) -> dict[str, Any]:
    """Epochs of roughly 0.05-0.1 s on one core."""
    return {
        "name": "deleted",
        "dataset": {"name": "blobs", "n_samples": n_samples, "seed": 0},
        "architecture": {"layers": [{"units": 32, "activation": "tanh"}]},
        "hyperparameters": {"learning_rate": 0.05, "epochs": epochs, "batch_size": 16},
    }


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def stack(
    request: pytest.FixtureRequest, redis_base: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    if request.param == "postgresql":
        require_postgres()
    s = Stack(request.param, tmp_path_factory.mktemp(f"deletion-{request.param}"), redis_base)
    try:
        s.start_worker(concurrency=2)
        yield s
    finally:
        s.close()


def rows(stack: Stack, job_ids: list[str]) -> int:
    """Rows of these jobs in every table that holds a job's data."""
    with stack.sessions() as session:
        total = session.scalar(select(func.count()).select_from(Job).where(Job.id.in_(job_ids)))
        for table in (JobMetric, JobCheckpoint, JobWeights):
            total += session.scalar(
                select(func.count()).select_from(table).where(table.job_id.in_(job_ids))
            )
        return total


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def training_process(stack: Stack, job_id: str) -> int:
    """The pid of the worker process that trains the job (its ``worker`` is host:pid)."""
    return int(stack.job(job_id).worker.rsplit(":", 1)[1])


def idle(pid: int, window: float = 0.5) -> bool:
    """Whether the process spends (almost) no CPU over ``window`` seconds: it trains no
    more (an epoch of these jobs is all CPU)."""
    before = cpu_seconds(pid)
    time.sleep(window)
    return cpu_seconds(pid) - before < 0.1 * window


def stays_gone(stack: Stack, job_ids: list[str], seconds: float = 2.0) -> None:
    """No row of the jobs comes back for a while (a late write would re-create some)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert rows(stack, job_ids) == 0
        time.sleep(0.1)


def test_deleting_a_running_job_stops_its_worker_cleanly(stack: Stack):
    job_id = stack.post("/jobs", spec(epochs=2000))["id"]
    wait_for(lambda: len(stack.epochs(job_id)) >= 3, 60, "the job to train a few epochs")
    pid = training_process(stack, job_id)
    assert not idle(pid)  # it trains
    assert stack.client.delete(f"/api/v1/jobs/{job_id}").status_code == 204
    assert rows(stack, [job_id]) == 0
    wait_for(lambda: idle(pid), 10, "the worker to stop training the deleted job")
    stays_gone(stack, [job_id])
    os.kill(pid, 0)  # the same process, alive: it did not crash
    assert all(w.poll() is None for w in stack.workers)
    assert "Traceback" not in stack.logs()
    after = stack.post("/jobs", spec(epochs=3, n_samples=400))["id"]  # and it goes on
    assert stack.wait_job(after).status == "succeeded"


def test_deleting_a_running_sweep_removes_every_trial_for_good(stack: Stack):
    body = {
        "name": "deleted-sweep",
        "base": spec(epochs=2000),
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": [0.01, 0.02, 0.03, 0.04]}},
        "max_concurrency": 2,
    }
    sweep_id = stack.post("/sweeps", body)["id"]

    def running() -> list[str]:
        trials = [j for j in stack.sweep_jobs(sweep_id) if j.status == "running"]
        ids = [j.id for j in trials if len(stack.epochs(j.id)) >= 2]
        return ids if len(ids) == 2 else []

    trials = wait_for(running, 60, "two trials training")
    pids = [training_process(stack, t) for t in trials]
    every = [j.id for j in stack.sweep_jobs(sweep_id)]
    assert stack.client.delete(f"/api/v1/sweeps/{sweep_id}").status_code == 204
    with stack.sessions() as session:
        assert session.get(Sweep, sweep_id) is None
    for pid in pids:
        wait_for(lambda p=pid: idle(p), 10, f"worker process {pid} to stop training")
        os.kill(pid, 0)
    stays_gone(stack, every)
    with stack.sessions() as session:  # and no trial was created after the sweep went
        count = select(func.count()).select_from(Job).where(Job.sweep_id == sweep_id)
        assert session.scalar(count) == 0
    assert "Traceback" not in stack.logs()
    after = stack.post("/jobs", spec(epochs=3, n_samples=400))["id"]
    assert stack.wait_job(after).status == "succeeded"
