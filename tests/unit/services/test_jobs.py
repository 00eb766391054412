"""The job lifecycle against a real (SQLite) database, with the trainer in-process."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from services import jobs
from services.db.models import Job, JobCheckpoint, JobMetric, utcnow
from services.specs import validate_job
from tests.conftest import XOR_JOB


def make_job(sessions, dataset: str | None = None, **changes) -> str:
    spec = copy.deepcopy(XOR_JOB)
    if dataset:
        spec["dataset"]["name"] = dataset
    for key, value in changes.items():
        spec["hyperparameters"][key] = value
    with sessions() as session:
        job = jobs.create_job(session, spec=validate_job(spec))
        session.commit()
        return job.id


def run(settings, sessions, dispatcher, job_id: str) -> str:
    return jobs.execute_job(
        settings=settings, session_factory=sessions, dispatcher=dispatcher, job_id=job_id
    )


def epochs_of(sessions, job_id: str) -> list[int]:
    with sessions() as session:
        stmt = select(JobMetric.epoch).where(JobMetric.job_id == job_id).order_by(JobMetric.epoch)
        return list(session.scalars(stmt))


def test_claim_is_compare_and_set(sessions):
    job_id = make_job(sessions)
    with sessions() as session:
        first = jobs.claim_job(session, job_id=job_id, worker="a", lease_seconds=60)
        second = jobs.claim_job(session, job_id=job_id, worker="b", lease_seconds=60)
        session.commit()
    assert first is not None and first.worker == "a" and first.attempts == 1
    assert second is None
    with sessions() as session:  # an expired lease can be taken over
        session.execute(update(Job).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        third = jobs.claim_job(session, job_id=job_id, worker="b", lease_seconds=60)
        session.commit()
    assert third is not None and third.worker == "b" and third.attempts == 2
    with sessions() as session:  # the first owner is fenced off
        result = jobs.record_epochs(
            session, job_id=job_id, attempt=1, rows=[], progress={}, lease_seconds=60
        )
    assert not result.owned


def test_run_records_every_epoch_once(settings, sessions, dispatcher):
    job_id = make_job(sessions, epochs=5)
    assert run(settings, sessions, dispatcher, job_id) == "succeeded"
    assert epochs_of(sessions, job_id) == [1, 2, 3, 4, 5]
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job.epochs_done == 5 and job.attempts == 1
        assert job.result["status"] == "completed"
        assert job.best_epoch is not None and job.objective is not None
        assert job.finished_at >= job.started_at >= job.created_at
    # A duplicate delivery of the message is a no-op.
    assert run(settings, sessions, dispatcher, job_id) == "finished"
    assert epochs_of(sessions, job_id) == [1, 2, 3, 4, 5]
    assert run(settings, sessions, dispatcher, "nope") == "missing"


def test_trainer_exception_fails_the_job_with_its_message(settings, sessions, dispatcher,
                                                          monkeypatch):  # fmt: skip
    import services.trainer

    def boom(*_args, **_kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(services.trainer, "fit", boom)
    job_id = make_job(sessions)
    assert run(settings, sessions, dispatcher, job_id) == "failed"
    with sessions() as session:
        assert session.get(Job, job_id).error == "RuntimeError: kaboom"


def test_divergence_is_a_status(settings, sessions, dispatcher):
    job_id = make_job(sessions, "sine", learning_rate=50.0, epochs=20)
    assert run(settings, sessions, dispatcher, job_id) == "diverged"


def test_cancel_flag_stops_within_an_epoch(settings, sessions, dispatcher):
    job_id = make_job(sessions, epochs=50)
    calls = {"n": 0}

    def cancel_after_two(jid: str) -> bool:
        calls["n"] += 1
        return calls["n"] >= 2

    dispatcher.cancel_requested = cancel_after_two
    assert run(settings, sessions, dispatcher, job_id) == "cancelled"
    assert epochs_of(sessions, job_id) == [1, 2]


def test_request_cancel(sessions):
    queued = make_job(sessions)
    with sessions() as session:
        assert jobs.request_cancel(session, queued).status == "cancelled"
        session.commit()
    with sessions() as session, pytest.raises(jobs.JobFinishedError):
        jobs.request_cancel(session, queued)
    running = make_job(sessions)
    with sessions() as session:
        jobs.claim_job(session, job_id=running, worker="w", lease_seconds=60)
        job = jobs.request_cancel(session, running)
        assert job.status == "running" and job.cancel_requested
    with sessions() as session, pytest.raises(LookupError):
        jobs.request_cancel(session, "nope")


def test_resume_from_checkpoint_replays_identical_epochs(settings, sessions, dispatcher):
    reference = make_job(sessions, epochs=6)
    run(settings, sessions, dispatcher, reference)
    job_id = make_job(sessions, epochs=6)

    # A worker that dies during epoch 5: epoch 4's checkpoint was still pending
    # (checkpoints ride along with the next flush), so it resumes from epoch 3.
    calls = {"n": 0}

    def die_after_four(jid: str) -> bool:
        calls["n"] += 1
        if calls["n"] == 5:
            raise SystemExit("worker killed")
        return False

    dispatcher.cancel_requested = die_after_four
    with pytest.raises(SystemExit):
        run(settings, sessions, dispatcher, job_id)
    assert epochs_of(sessions, job_id) == [1, 2, 3, 4]
    with sessions() as session:
        assert session.get(JobCheckpoint, job_id).epoch == 3
        session.execute(update(Job).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    dispatcher.cancel_requested = lambda jid: False
    assert run(settings, sessions, dispatcher, job_id) == "succeeded"
    assert epochs_of(sessions, job_id) == [1, 2, 3, 4, 5, 6]
    with sessions() as session:

        def curve(jid):
            rows = session.scalars(select(JobMetric).where(JobMetric.job_id == jid)
                                   .order_by(JobMetric.epoch))  # fmt: skip
            return [(r.train_loss, r.val_loss) for r in rows]

        assert curve(job_id) == curve(reference)
        assert session.get(Job, job_id).attempts == 2


def test_live_lease_means_retry_later(settings, sessions, dispatcher):
    job_id = make_job(sessions)
    with sessions() as session:
        jobs.claim_job(session, job_id=job_id, worker="elsewhere", lease_seconds=30)
        session.commit()
    with pytest.raises(jobs.LeaseHeldError) as info:
        run(settings, sessions, dispatcher, job_id)
    assert 25 < info.value.retry_in <= 31


def test_cursor_roundtrip_and_pagination(sessions):
    ids = [make_job(sessions) for _ in range(5)]
    seen: list[str] = []
    cursor = None
    with sessions() as session:
        while True:
            rows, cursor = jobs.list_jobs(session, cursor=cursor, limit=2)
            seen += [r.id for r in rows]
            if cursor is None:
                break
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    with pytest.raises(jobs.BadCursorError):
        jobs.decode_cursor("!!!")


def test_jsonable():
    import numpy as np

    raw = {"a": np.float32(1.5), "b": [np.int64(2), float("nan")], "c": np.bool_(True)}
    assert jobs.jsonable(raw) == {"a": 1.5, "b": [2, None], "c": True}
