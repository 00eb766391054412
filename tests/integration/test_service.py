"""Jobs and sweeps through HTTP, real Celery workers on Redis, and a real database.

Runs once per database backend (SQLite and PostgreSQL); see ``conftest.stack``.
"""

from __future__ import annotations

import math
import os
import signal
import time
from datetime import timezone
from typing import Any

import pytest

from services.trainer import fit
from tests.integration.harness import Stack, peak_overlap, wait_for

pytestmark = pytest.mark.integration


def job_spec(
    *,
    epochs: int = 5,
    dataset: str = "xor",
    n_samples: int = 64,
    units: int = 4,
    lr: float = 0.5,
    batch: int = 16,
    name: str = "it",
) -> dict[str, Any]:
    return {
        "name": name,
        "dataset": {"name": dataset, "n_samples": n_samples, "seed": 0},
        "architecture": {"layers": [{"units": units, "activation": "tanh"}]},
        "hyperparameters": {"learning_rate": lr, "epochs": epochs, "batch_size": batch},
    }


def slow_spec(epochs: int, **changes: Any) -> dict[str, Any]:
    """Epochs of roughly 0.05-0.1 s on one core."""
    return job_spec(epochs=epochs, dataset="blobs", n_samples=40_000, units=32, lr=0.05, **changes)


def cancel_spec(epochs: int, **changes: Any) -> dict[str, Any]:
    """Epochs of roughly 0.2-0.4 s: long enough that "within one epoch" can be told apart
    from the fixed cost of a request, a Redis flag and a commit."""
    return job_spec(epochs=epochs, dataset="blobs", n_samples=160_000, units=32, lr=0.05, **changes)


# Epochs a cancelled job may still record after the cancel: the one in flight, and one
# that had ended but was not yet flushed when the test read the count.
MAX_EPOCHS_AFTER_CANCEL = 2


def reference_fit(spec: dict[str, Any]):
    """The uninterrupted run, with one BLAS thread like the workers (same numbers)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return fit(spec)
    with threadpool_limits(limits=1):
        return fit(spec)


def assert_every_epoch_once(stack: Stack, job_id: str) -> None:
    job = stack.job(job_id)
    assert stack.epochs(job_id) == list(range(1, job.epochs_done + 1))


def running_intervals(stack: Stack, sweep_id: str) -> list[tuple[float, float]]:
    return [
        (j.started_at.timestamp(), j.finished_at.timestamp())
        for j in stack.sweep_jobs(sweep_id)
        if j.started_at is not None
    ]


def test_job_runs_and_records_every_epoch(stack: Stack):
    job = stack.post("/jobs", job_spec(epochs=8))
    assert job["status"] == "queued"
    done = stack.wait_job(job["id"])
    assert done.status == "succeeded", done.error
    assert done.epochs_done == 8 and done.attempts == 1 and done.worker
    assert_every_epoch_once(stack, job["id"])
    shown = stack.get(f"/jobs/{job['id']}")
    assert shown["progress"]["epoch"] == 8 and shown["result"]["status"] == "completed"
    reference = reference_fit(job_spec(epochs=8))
    curve = stack.get(f"/jobs/{job['id']}/metrics")["epochs"]
    assert [e["metrics"]["val_loss"] for e in curve] == [r["val_loss"] for r in reference.history]


def test_grid_sweep_leaderboard_and_concurrency(stack: Stack):
    sweep = stack.post(
        "/sweeps",
        {
            "name": "grid",
            "base": job_spec(epochs=20, dataset="blobs", n_samples=2000, units=8),
            "method": "grid",
            "max_concurrency": 2,
            "parameters": {
                "hyperparameters.learning_rate": {"values": [0.001, 0.01, 0.1, 0.3, 1.0]}
            },
            "objective": {"metric": "val_loss", "goal": "minimize"},
        },
    )
    done = stack.wait_sweep(sweep["id"])
    assert done["status"] == "done" and done["counts"]["succeeded"] == 5
    objectives = [row["objective"] for row in done["leaderboard"]]
    assert len(objectives) == 5 and objectives == sorted(objectives)
    assert done["best_trial"]["job_id"] == done["leaderboard"][0]["job_id"]
    for job in stack.sweep_jobs(sweep["id"]):
        assert job.epochs_done == 20
        assert_every_epoch_once(stack, job.id)
    peak = peak_overlap(running_intervals(stack, sweep["id"]))
    print(f"[{stack.backend}] grid sweep, max_concurrency 2: peak {peak} trials running")
    assert 1 <= peak <= 2


def test_max_concurrency_one_is_never_exceeded(stack: Stack):
    # Two worker processes are idle, but the sweep allows only one trial at a time.
    sweep = stack.post(
        "/sweeps",
        {
            "base": job_spec(epochs=10, dataset="blobs", n_samples=2000, units=8),
            "method": "random",
            "n_trials": 4,
            "max_concurrency": 1,
            "parameters": {
                "hyperparameters.learning_rate": {
                    "distribution": "log_uniform",
                    "min": 0.01,
                    "max": 0.5,
                }
            },
        },
    )
    done = stack.wait_sweep(sweep["id"])
    assert done["counts"]["succeeded"] == 4
    peak = peak_overlap(running_intervals(stack, sweep["id"]))
    print(f"[{stack.backend}] random sweep, max_concurrency 1: peak {peak} trials running")
    assert peak == 1


def test_median_pruning_prunes_the_hopeless(stack: Stack):
    sweep = stack.post(
        "/sweeps",
        {
            "base": slow_spec(15),
            "method": "grid",
            "max_concurrency": 2,
            "parameters": {
                "hyperparameters.learning_rate": {"values": [0.1, 0.05, 0.08, 1e-6, 2e-6]}
            },
            "early_stopping": {"policy": "median", "min_epochs": 2, "min_peers": 2},
        },
    )
    done = stack.wait_sweep(sweep["id"], timeout=180)
    jobs = stack.sweep_jobs(sweep["id"])
    pruned = [j for j in jobs if j.status == "pruned"]
    assert pruned, [(j.status, j.params) for j in jobs]
    for job in pruned:
        assert job.params["hyperparameters.learning_rate"] < 1e-5
        assert job.prune_reason and job.prune_reason.startswith("median stopping at epoch 2:")
        # checked at every epoch boundary: when the hopeless trials start, two peers
        # have finished, so the rule stops them at its first epoch (min_epochs)
        assert job.epochs_done == 2
        assert_every_epoch_once(stack, job.id)
    assert done["counts"]["pruned"] == len(pruned)
    assert {j.status for j in jobs[:3]} == {"succeeded"}


def test_asha_prunes_at_its_rung_epochs(stack: Stack):
    sweep = stack.post(
        "/sweeps",
        {
            "base": slow_spec(15),
            "method": "grid",
            "max_concurrency": 2,
            "parameters": {"hyperparameters.learning_rate": {"values": [0.1, 0.05, 1e-6, 2e-6]}},
            "early_stopping": {"policy": "asha", "min_epochs": 2, "reduction_factor": 3},
        },
    )
    stack.wait_sweep(sweep["id"], timeout=180)
    jobs = stack.sweep_jobs(sweep["id"])
    pruned = [j for j in jobs if j.status == "pruned"]
    assert {j.params["hyperparameters.learning_rate"] for j in pruned} >= {1e-6, 2e-6}
    for job in pruned:  # rungs 2 and 6 of 15 epochs
        assert job.epochs_done in (2, 6), (job.epochs_done, job.prune_reason)
        assert job.prune_reason.startswith(f"asha rung at epoch {job.epochs_done}:")
        assert_every_epoch_once(stack, job.id)


def test_tpe_sweep_proposes_from_optuna(stack: Stack):
    sweep = stack.post(
        "/sweeps",
        {
            "base": job_spec(epochs=5),
            "method": "tpe",
            "n_trials": 6,
            "n_startup_trials": 2,
            "max_concurrency": 2,
            "seed": 1,
            "parameters": {
                "hyperparameters.learning_rate": {
                    "distribution": "log_uniform",
                    "min": 0.01,
                    "max": 1,
                },
                "architecture.layers.0.units": {"distribution": "int_uniform", "min": 2, "max": 8},
            },
            "objective": {"metric": "val_accuracy"},
        },
    )
    done = stack.wait_sweep(sweep["id"])
    assert done["counts"]["succeeded"] == 6 and done["objective"]["goal"] == "maximize"
    objectives = [row["objective"] for row in done["leaderboard"]]
    assert objectives == sorted(objectives, reverse=True)
    jobs = stack.sweep_jobs(sweep["id"])
    assert all(j.proposal["sampler"] == "TPESampler" for j in jobs)
    assert [j.proposal["startup"] for j in jobs][:2] == [True, True]
    assert not jobs[-1].proposal["startup"]  # the model-based part of TPE was used
    for job in jobs:
        lr = job.params["hyperparameters.learning_rate"]
        units = job.params["architecture.layers.0.units"]
        assert 0.01 <= lr <= 1 and 2 <= units <= 8 and isinstance(units, int)
        assert job.spec["architecture"]["layers"][0]["units"] == units


def _cancel_latency(stack: Stack, job_id: str, cancelled_at: float) -> float:
    job = stack.job(job_id)
    return job.finished_at.replace(tzinfo=timezone.utc).timestamp() - cancelled_at


def _epoch_seconds(stack: Stack, job_id: str) -> float:
    rows = stack.get(f"/jobs/{job_id}/metrics")["epochs"]
    return max(r["metrics"]["seconds"] for r in rows)


def test_cancel_stops_a_running_job_within_an_epoch(stack: Stack):
    job = stack.post("/jobs", cancel_spec(500))
    wait_for(lambda: stack.job(job["id"]).epochs_done >= 3, 60, "three epochs")
    recorded = stack.job(job["id"]).epochs_done
    cancelled_at = time.time()
    response = stack.client.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 202
    done = stack.wait_job(job["id"], timeout=60)
    assert done.status == "cancelled" and done.epochs_done < 500
    assert_every_epoch_once(stack, job["id"])
    # Counted in epochs, not seconds (a loaded machine stretches both alike): the
    # epoch in flight when the cancel came, at most one recorded but not yet flushed.
    assert done.epochs_done <= recorded + MAX_EPOCHS_AFTER_CANCEL
    latency, epoch = (
        _cancel_latency(stack, job["id"], cancelled_at),
        _epoch_seconds(stack, job["id"]),
    )
    print(
        f"[{stack.backend}] cancel took {latency:.3f}s, {done.epochs_done - recorded} "
        f"epochs; slowest epoch {epoch:.3f}s"
    )
    assert stack.client.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 409


def test_cancel_sweep_stops_running_and_never_starts_queued(stack: Stack):
    sweep = stack.post(
        "/sweeps",
        {
            "base": cancel_spec(500),
            "method": "grid",
            "max_concurrency": 2,
            "parameters": {"hyperparameters.learning_rate": {"values": [0.01, 0.02, 0.03, 0.04]}},
        },
    )
    wait_for(
        lambda: sum(j.epochs_done >= 2 for j in stack.sweep_jobs(sweep["id"])) == 2,
        60,
        "two running trials",
    )
    recorded = {j.id: j.epochs_done for j in stack.sweep_jobs(sweep["id"])}
    stack.client.post(f"/api/v1/sweeps/{sweep['id']}/cancel")
    done = stack.wait_sweep(sweep["id"], timeout=60)
    assert done["status"] == "cancelled"
    jobs = stack.sweep_jobs(sweep["id"])
    assert len(jobs) == 2 and {j.status for j in jobs} == {"cancelled"}
    for job in jobs:
        assert job.epochs_done <= recorded[job.id] + MAX_EPOCHS_AFTER_CANCEL
    # Whatever would start a trial (the recover pass advances every running sweep)
    # starts none for a cancelled sweep: run it now rather than sleep and hope.
    from services.celery_app import Dispatcher
    from services.jobs.recovery import recover

    dispatcher = Dispatcher(stack.settings)
    try:
        recover(settings=stack.settings, session_factory=stack.sessions, dispatcher=dispatcher)
    finally:
        dispatcher.close()
    assert len(stack.sweep_jobs(sweep["id"])) == 2  # nothing new was started


def test_killed_worker_process_job_resumes_elsewhere(stack: Stack):
    spec = slow_spec(40)
    job = stack.post("/jobs", spec)
    wait_for(lambda: stack.job(job["id"]).epochs_done >= 8, 60, "eight epochs")
    victim = int(stack.job(job["id"]).worker.rsplit(":", 1)[1])
    os.kill(victim, signal.SIGKILL)
    done = stack.wait_job(job["id"], timeout=120)
    assert done.status == "succeeded", done.error
    assert done.attempts == 2 and int(done.worker.rsplit(":", 1)[1]) != victim
    assert_every_epoch_once(stack, job["id"])
    assert done.epochs_done == 40
    # Resumed from a checkpoint: the curve is the uninterrupted run's, bit for bit.
    reference = [r["val_loss"] for r in reference_fit(spec).history]
    curve = [e["metrics"]["val_loss"] for e in stack.get(f"/jobs/{job['id']}/metrics")["epochs"]]
    assert curve == reference
    assert all(math.isfinite(v) for v in curve)


def test_a_queued_job_whose_message_was_lost_is_sent_again(stack: Stack):
    # As if its sender died between the commit and the send: a row, and no message.
    from datetime import timedelta

    from sqlalchemy import update

    from services.celery_app import Dispatcher
    from services.db.models import Job, utcnow
    from services.jobs.recovery import recover
    from services.jobs.rows import create_job
    from services.specs import validate_job

    with stack.sessions() as session:
        job_id = create_job(session, spec=validate_job(job_spec(epochs=6))).id
        session.commit()
    # nobody knows about it: no message waits in the queue (and the workers, which
    # take a message at once, have none)
    import redis

    with redis.Redis.from_url(stack.redis_url) as r:
        assert r.llen(stack.queue) == 0
    assert stack.job(job_id).status == "queued"
    with stack.sessions() as session:
        stale = utcnow() - timedelta(seconds=stack.settings.requeue_seconds + 1)
        session.execute(update(Job).where(Job.id == job_id).values(updated_at=stale))
        session.commit()
    dispatcher = Dispatcher(stack.settings)
    try:
        done = recover(
            settings=stack.settings, session_factory=stack.sessions, dispatcher=dispatcher
        )
    finally:
        dispatcher.close()
    assert job_id in done.requeued
    finished = stack.wait_job(job_id)
    assert finished.status == "succeeded" and finished.attempts == 1
    assert_every_epoch_once(stack, job_id)
