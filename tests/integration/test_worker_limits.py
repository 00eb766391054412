"""A worker process's address-space limit (SWEEPLAB_WORKER_MEMORY_BYTES), in a real worker.

A job that allocates more than its process may gets a MemoryError: the job fails
with an error that says so, and the process lives on to run the next job.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services import budgets
from services.config import Limits
from services.specs import validate_job
from tests.integration.harness import Stack

pytestmark = pytest.mark.integration

LIMIT = 600 << 20  # a pool process maps ~170 MiB of libraries before it trains anything


@pytest.fixture
def small_stack(
    redis_base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Stack]:
    """A SQLite stack whose worker processes may map 600 MiB, and whose budgets are off
    (the API's limits come from the environment the stack is built in)."""
    monkeypatch.setenv("SWEEPLAB_WORKER_MEMORY_BYTES", str(LIMIT))
    monkeypatch.setenv("SWEEPLAB_MAX_JOB_MEMORY_BYTES", "0")
    monkeypatch.setenv("SWEEPLAB_MAX_JOB_FLOPS", "0")
    stack = Stack("sqlite", tmp_path, redis_base)
    try:
        stack.start_worker(concurrency=1)
        yield stack
    finally:
        stack.close()


def too_big() -> dict:
    """~1.1 GiB of training buffers: 40,000-row batches through a 2,048-unit ReLU layer."""
    return {
        "name": "too-big",
        "dataset": {"name": "blobs", "n_samples": 50_000, "n_features": 20},
        "architecture": {"layers": [{"units": 2048}]},
        "hyperparameters": {"learning_rate": 0.01, "epochs": 2, "batch_size": 40_000},
    }


def small() -> dict:
    return {
        "name": "small",
        "dataset": {"name": "xor", "n_samples": 64},
        "architecture": {"layers": [{"units": 4, "activation": "tanh"}]},
        "hyperparameters": {"learning_rate": 0.5, "epochs": 3, "batch_size": 16},
    }


def test_a_job_over_the_limit_fails_and_the_worker_runs_the_next(small_stack: Stack):
    assert small_stack.settings.worker_memory_bytes == LIMIT
    big = small_stack.post("/jobs", too_big())
    job = small_stack.wait_job(big["id"], timeout=120)
    assert job.status == "failed", (job.status, job.error)
    assert "memory" in (job.error or ""), job.error

    worker = small_stack.workers[0]
    assert worker.poll() is None  # the worker lives
    nxt = small_stack.post("/jobs", small())
    assert small_stack.wait_job(nxt["id"], timeout=60).status == "succeeded"
    logs = small_stack.logs()
    # the pool process was not killed and replaced (the OOM killer, or a crash)
    assert "exited with" not in logs and "WorkerLostError" not in logs, logs[-3000:]
    assert worker.poll() is None
    (child,) = pool_processes(worker.pid)
    assert address_space_limit(child) == LIMIT


def test_the_job_fits_without_the_limit():
    """The control: the job is over the limit, not over the machine (~1.1 GiB by the budget)."""
    est = budgets.estimate(validate_job(too_big(), Limits(max_job_memory_bytes=0)))
    assert 1.5 * LIMIT < est.memory_bytes < 4 << 30


def pool_processes(pid: int) -> list[int]:
    """The worker's pool processes (its children)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def address_space_limit(pid: int) -> int | None:
    """The soft RLIMIT_AS of process ``pid`` (None: unlimited)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            soft = line.split()[3]
            return None if soft == "unlimited" else int(soft)
    raise AssertionError("no address-space line")
