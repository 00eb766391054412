"""A warm shutdown against a real worker: SIGTERM mid-job stops the job at a batch
boundary, releases it without counting an attempt, and the next worker resumes it
from its checkpoint to the uninterrupted run's curve, bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.trainer import fit
from tests.integration.harness import CELERY, REPO, Stack, wait_for

pytestmark = pytest.mark.integration


def slow_spec(epochs: int) -> dict[str, Any]:
    """Epochs of roughly 0.05-0.1 s on one core (as test_service's)."""
    return {
        "name": "warm-shutdown",
        "dataset": {"name": "blobs", "n_samples": 40_000, "seed": 0},
        "architecture": {"layers": [{"units": 32, "activation": "tanh"}]},
        "hyperparameters": {"learning_rate": 0.05, "epochs": epochs, "batch_size": 16},
    }


def start_worker(stack: Stack) -> subprocess.Popen[bytes]:
    """A worker as ``Stack.start_worker`` starts it, with worker.shutdown included
    (``-I``: a no-op once worker.app includes it)."""
    name = f"ws{len(stack.workers)}-{uuid.uuid4().hex[:6]}"
    log = stack.workdir / f"w-{name}.log"
    argv = [CELERY, "-A", "worker.app", "worker", "-I", "worker.shutdown", "-c", "2"]
    argv += ["-P", "prefork", "-Q", stack.queue, "-n", f"{name}@%h", "-l", "INFO"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=stack.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.workers.append(proc)
    wait_for(
        lambda: b" ready." in log.read_bytes() or proc.poll() is not None, 60, f"worker {name}"
    )
    assert proc.poll() is None, log.read_text()[-3000:]
    return proc


@pytest.fixture
def stack(redis_base: str, tmp_path: Path) -> Iterator[Stack]:
    s = Stack("sqlite", tmp_path, redis_base)
    try:
        yield s
    finally:
        s.close()


@pytest.mark.parametrize("target", ["main process", "process group"])
def test_sigterm_releases_the_job_and_the_next_worker_resumes_it(stack: Stack, target: str):
    # "main process": what Docker does (docker compose stop); "process group": make down
    spec = slow_spec(40)
    worker = start_worker(stack)
    job_id = stack.post("/jobs", spec)["id"]
    wait_for(lambda: stack.job(job_id).epochs_done >= 6, 60, "six epochs")
    sent = time.monotonic()
    if target == "main process":
        worker.send_signal(signal.SIGTERM)
    else:
        os.killpg(worker.pid, signal.SIGTERM)
    worker.wait(timeout=60)
    stopped_in = time.monotonic() - sent
    job = stack.job(job_id)
    print(f"[{target}] SIGTERM to exit: {stopped_in:.1f} s; stopped after epoch {job.epochs_done}")
    assert job.status == "running", stack.logs()
    assert job.attempts == 1 and job.released == 1 and job.worker is None  # no attempt lost
    assert job.epochs_done < 40 and stopped_in < 30

    start_worker(stack)  # its first recover pass sends the released job again
    done = stack.wait_job(job_id, timeout=120)
    assert done.status == "succeeded", done.error
    assert done.attempts == 2 and done.released == 1
    assert stack.epochs(job_id) == list(range(1, 41))  # every epoch once
    curve = [e["metrics"]["val_loss"] for e in stack.get(f"/jobs/{job_id}/metrics")["epochs"]]
    reference = fit(spec)  # one BLAS thread, like the workers (OMP_NUM_THREADS=1 in the suite)
    assert curve == [r["val_loss"] for r in reference.history]
