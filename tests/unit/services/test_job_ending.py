"""A job that reaches a final state keeps no checkpoint (services.jobs.ending), whichever
path made it final; its final weights stay (SQLite, the trainer in-process)."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select, update

import services.trainer
from services.db.models import TERMINAL_STATUSES, Job, JobCheckpoint, JobWeights, utcnow
from services.jobs.execute import execute_job
from services.jobs.lease import claim_job
from services.jobs.recovery import recover
from services.jobs.rows import create_job, fail_unqueued
from services.specs import trainer_spec, validate_job, validate_sweep
from services.sweeps.scheduler import cancel_sweep, create_sweep
from services.trainer import Network
from tests.conftest import XOR_JOB
from tests.unit.services.test_sweeps import sweep_spec

API = "/api/v1"
REAL_FIT = services.trainer.fit


def make_job(sessions: Any, **hyperparameters: Any) -> str:
    spec = copy.deepcopy(XOR_JOB)
    spec["hyperparameters"].update(hyperparameters)
    with sessions() as session:
        job = create_job(session, spec=validate_job(spec))
        session.commit()
        return job.id


def plant_checkpoint(sessions: Any, job_id: str, epoch: int = 2) -> None:
    """A real checkpoint of the job's spec after ``epoch``, as an earlier attempt left it."""
    with sessions() as session:
        spec = session.get(Job, job_id).spec
        blobs: dict[int, bytes] = {}
        REAL_FIT(
            trainer_spec(spec),
            checkpoint_every=1,
            on_checkpoint=lambda e, b: blobs.setdefault(e, b),
        )
        session.add(JobCheckpoint(job_id=job_id, epoch=epoch, data=blobs[epoch]))
        session.commit()


def final_with_checkpoint(sessions: Any) -> int:
    """How many final jobs still have a checkpoint row (the rule: none)."""
    with sessions() as session:
        return session.scalar(
            select(func.count())
            .select_from(JobCheckpoint)
            .join(Job, Job.id == JobCheckpoint.job_id)
            .where(Job.status.in_(TERMINAL_STATUSES))
        )


def state(sessions: Any, job_id: str) -> tuple[str, JobCheckpoint | None, JobWeights | None]:
    with sessions() as session:
        job = session.get(Job, job_id)
        ckpt, weights = session.get(JobCheckpoint, job_id), session.get(JobWeights, job_id)
        session.expunge_all()
        return job.status, ckpt, weights


def run(settings: Any, sessions: Any, dispatcher: Any, job_id: str) -> str:
    return execute_job(
        settings=settings, session_factory=sessions, dispatcher=dispatcher, job_id=job_id
    )


def watch_checkpoints(monkeypatch: pytest.MonkeyPatch, sessions: Any, seen: set[int], **also):
    """The real trainer, noting the stored checkpoint's epoch at every epoch (so that a
    test sees checkpoints were there while the job ran); ``fail_at`` raises at that epoch."""
    fail_at = also.get("fail_at")

    def fit(spec: Any, **kwargs: Any) -> Any:
        on_epoch = kwargs["on_epoch"]

        def epoch(record: dict) -> Any:
            with sessions() as session:
                seen.update(session.scalars(select(JobCheckpoint.epoch)))
            if record["epoch"] == fail_at:
                raise RuntimeError("the trainer broke")
            return on_epoch(record)

        return REAL_FIT(spec, **dict(kwargs, on_epoch=epoch))

    monkeypatch.setattr(services.trainer, "fit", fit)


def test_a_finished_run_keeps_its_weights_not_its_checkpoint(
    settings, sessions, dispatcher, monkeypatch
):
    settings = settings.replace(checkpoint_every=2, flush_seconds=0.0)
    seen: set[int] = set()
    watch_checkpoints(monkeypatch, sessions, seen)
    job_id = make_job(sessions, epochs=8)
    assert run(settings, sessions, dispatcher, job_id) == "succeeded"
    status, ckpt, weights = state(sessions, job_id)
    assert seen == {2, 4, 6}  # stored while it ran
    assert ckpt is None and weights is not None and weights.epoch == 8  # gone at the end


def test_a_cancelled_run_keeps_no_checkpoint(settings, sessions, dispatcher, monkeypatch):
    settings = settings.replace(checkpoint_every=1, flush_seconds=0.0)
    seen: set[int] = set()
    watch_checkpoints(monkeypatch, sessions, seen)
    job_id = make_job(sessions, epochs=50)
    dispatcher.cancel_requested = lambda jid: 3 in seen
    assert run(settings, sessions, dispatcher, job_id) == "cancelled"
    status, ckpt, weights = state(sessions, job_id)
    assert ckpt is None and weights is not None and 3 in seen


def test_a_run_that_fails_keeps_its_checkpoints_network_as_its_weights(
    settings, sessions, dispatcher, monkeypatch
):
    settings = settings.replace(checkpoint_every=2, flush_seconds=0.0)
    seen: set[int] = set()
    watch_checkpoints(monkeypatch, sessions, seen, fail_at=5)
    job_id = make_job(sessions, epochs=8)
    assert run(settings, sessions, dispatcher, job_id) == "failed"
    status, ckpt, weights = state(sessions, job_id)
    assert ckpt is None and seen == {2}  # epoch 4's rode with the final write
    assert weights is not None and weights.epoch == 4  # the last weights it reached
    net = Network.from_npz_bytes(weights.data)
    assert net.sizes[1] == 4 and np.isfinite(net.params_flat).all()


def test_cancelling_a_queued_job_through_the_api_drops_its_checkpoint(client, app):
    sessions = app.extensions["sweeplab"].sessions
    job_id = client.post(f"{API}/jobs", json=XOR_JOB).get_json()["id"]
    plant_checkpoint(sessions, job_id)  # none today: the rule holds whatever comes later
    assert client.post(f"{API}/jobs/{job_id}/cancel").status_code == 202
    status, ckpt, weights = state(sessions, job_id)
    assert status == "cancelled" and ckpt is None
    assert weights is not None and weights.epoch == 2
    assert final_with_checkpoint(sessions) == 0


def test_a_job_cancelled_between_attempts_ends_without_its_checkpoint(
    settings, sessions, dispatcher
):
    job_id = make_job(sessions, epochs=6)
    with sessions() as session:  # an attempt that died after epoch 2, then a cancel
        claim_job(session, job_id=job_id, worker="w", lease_seconds=60)
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(cancel_requested=True, lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    plant_checkpoint(sessions, job_id)
    assert run(settings, sessions, dispatcher, job_id) == "cancelled"
    status, ckpt, weights = state(sessions, job_id)
    assert ckpt is None and weights is not None and weights.epoch == 2


def test_a_job_failed_by_recovery_keeps_no_checkpoint(settings, sessions, dispatcher):
    job_id, other = make_job(sessions, epochs=6), make_job(sessions, epochs=6)
    for jid in (job_id, other):
        with sessions() as session:
            claim_job(session, job_id=jid, worker="w", lease_seconds=60)
            session.commit()
        plant_checkpoint(sessions, jid)
    with sessions() as session:  # its workers were lost max_attempts times; other's once
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                attempts=settings.max_attempts, lease_expires_at=utcnow() - timedelta(seconds=1)
            )
        )
        session.commit()
    recovered = recover(settings=settings, session_factory=sessions, dispatcher=dispatcher)
    assert recovered.failed == [job_id]
    status, ckpt, weights = state(sessions, job_id)
    assert status == "failed" and ckpt is None and weights is not None and weights.epoch == 2
    status, ckpt, _ = state(sessions, other)  # still running: it resumes from it
    assert status == "running" and ckpt is not None


def test_jobs_that_could_not_be_queued_keep_no_checkpoint(sessions):
    job_id = make_job(sessions)
    plant_checkpoint(sessions, job_id)
    with sessions() as session:
        fail_unqueued(session, [job_id], RuntimeError("redis away"))
        session.commit()
    assert state(sessions, job_id)[:2] == ("failed", None)


def test_cancelling_a_sweep_drops_its_queued_trials_checkpoints(sessions):
    with sessions() as session:
        sweep, ids = create_sweep(session, sweep=validate_sweep(sweep_spec()))
        session.commit()
    running, queued = ids
    with sessions() as session:
        claim_job(session, job_id=running, worker="w", lease_seconds=60)
        session.commit()
    for jid in ids:
        plant_checkpoint(sessions, jid)
    with sessions() as session:
        cancel_sweep(session, sweep.id)
        session.commit()
    assert state(sessions, queued)[:2] == ("cancelled", None)
    status, ckpt, _ = state(sessions, running)  # flagged: its worker ends it (and drops it)
    assert status == "running" and ckpt is not None
    assert final_with_checkpoint(sessions) == 0
