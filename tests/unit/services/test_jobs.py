"""The job lifecycle against a real (SQLite) database, with the trainer in-process."""

from __future__ import annotations

import copy
import io
import os
import socket
import subprocess
import sys
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import select, update

from services.db.models import Job, JobCheckpoint, JobMetric, JobWeights, utcnow
from services.db.pages import BadCursorError, decode_cursor
from services.jobs import run as job_run
from services.jobs.execute import execute_job
from services.jobs.lease import (
    LeaseHeldError,
    LeaseKeeper,
    claim_job,
    expired_leases,
    fail_exhausted,
    take_job,
    worker_name,
)
from services.jobs.records import jsonable, record_epochs
from services.jobs.rows import JobFinishedError, create_job, list_jobs, request_cancel
from services.ranking import Objective, Tracker
from services.specs import has_validation, validate_job
from tests.conftest import XOR_JOB
from tests.integration.harness import wait_for


def make_job(sessions, dataset: str | None = None, **changes) -> str:
    spec = copy.deepcopy(XOR_JOB)
    if dataset:
        spec["dataset"]["name"] = dataset
    for key, value in changes.items():
        spec["hyperparameters"][key] = value
    with sessions() as session:
        job = create_job(session, spec=validate_job(spec))
        session.commit()
        return job.id


def run(settings, sessions, dispatcher, job_id: str) -> str:
    return execute_job(
        settings=settings, session_factory=sessions, dispatcher=dispatcher, job_id=job_id
    )


def epochs_of(sessions, job_id: str) -> list[int]:
    with sessions() as session:
        stmt = select(JobMetric.epoch).where(JobMetric.job_id == job_id).order_by(JobMetric.epoch)
        return list(session.scalars(stmt))


def test_claim_is_compare_and_set(sessions):
    job_id = make_job(sessions)
    with sessions() as session:
        first = claim_job(session, job_id=job_id, worker="a", lease_seconds=60)
        second = claim_job(session, job_id=job_id, worker="b", lease_seconds=60)
        session.commit()
    assert first is not None and first.worker == "a" and first.attempts == 1
    assert second is None
    with sessions() as session:  # an expired lease can be taken over
        session.execute(update(Job).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        third = claim_job(session, job_id=job_id, worker="b", lease_seconds=60)
        session.commit()
    assert third is not None and third.worker == "b" and third.attempts == 2
    with sessions() as session:  # the first owner is fenced off
        result = record_epochs(
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
        weights = session.get(JobWeights, job_id)
        assert weights.epoch == 5
        with np.load(io.BytesIO(weights.data)) as arrays:
            # One hidden layer and the output: W and b each, and the architecture.
            assert {"layer_0.W", "layer_0.b", "layer_1.W", "layer_1.b"} <= set(arrays.files)
            assert arrays["layer_0.W"].shape == (2, 4)
    # A duplicate delivery of the message is a no-op.
    assert run(settings, sessions, dispatcher, job_id) == "finished"
    assert epochs_of(sessions, job_id) == [1, 2, 3, 4, 5]
    assert run(settings, sessions, dispatcher, "nope") == "missing"


def test_trainer_exception_fails_the_job_with_its_message(
    settings, sessions, dispatcher, monkeypatch
):
    import services.trainer

    def boom(*_args, **_kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(services.trainer, "fit", boom)
    job_id = make_job(sessions)
    assert run(settings, sessions, dispatcher, job_id) == "failed"
    with sessions() as session:
        assert session.get(Job, job_id).error == "RuntimeError: kaboom"
        assert session.get(JobWeights, job_id) is None


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
        assert request_cancel(session, queued).status == "cancelled"
        session.commit()
    with sessions() as session, pytest.raises(JobFinishedError):
        request_cancel(session, queued)
    running = make_job(sessions)
    with sessions() as session:
        claim_job(session, job_id=running, worker="w", lease_seconds=60)
        job = request_cancel(session, running)
        assert job.status == "running" and job.cancel_requested
    with sessions() as session, pytest.raises(LookupError):
        request_cancel(session, "nope")


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
            rows = session.scalars(
                select(JobMetric).where(JobMetric.job_id == jid).order_by(JobMetric.epoch)
            )
            return [(r.train_loss, r.val_loss) for r in rows]

        assert curve(job_id) == curve(reference)
        assert session.get(Job, job_id).attempts == 2


def test_live_lease_means_retry_later(settings, sessions, dispatcher):
    job_id = make_job(sessions)
    with sessions() as session:
        claim_job(session, job_id=job_id, worker="elsewhere", lease_seconds=30)
        session.commit()
    with pytest.raises(LeaseHeldError) as info:
        run(settings, sessions, dispatcher, job_id)
    assert 25 < info.value.retry_in <= 31


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_job_whose_holder_died_on_this_host_is_taken_over_at_once(settings, sessions, dispatcher):
    """Killed (or out of memory) holding a 10-minute lease: the copy Celery sends again
    takes the job over now, from its checkpoint, not when the lease runs out."""
    host = socket.gethostname()
    job_id = make_job(sessions)
    dead = f"{host}:{_dead_pid()}"
    with sessions() as session:
        assert claim_job(session, job_id=job_id, worker=dead, lease_seconds=600)
        session.commit()
    assert run(settings, sessions, dispatcher, job_id) == "succeeded"
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and (job.attempts, job.worker) == (2, worker_name())


@pytest.mark.parametrize("holder", ["alive", "elsewhere"])
def test_a_live_or_remote_holder_keeps_its_lease(settings, sessions, dispatcher, holder):
    """Only a holder known to be gone is taken over early: a live process of this host,
    or any process of another host, keeps the job until its lease runs out."""
    worker = (
        f"{socket.gethostname()}:{os.getpid()}" if holder == "alive" else f"other:{_dead_pid()}"
    )
    job_id = make_job(sessions)
    with sessions() as session:
        assert claim_job(session, job_id=job_id, worker=worker, lease_seconds=600)
        session.commit()
    with pytest.raises(LeaseHeldError):
        run(settings, sessions, dispatcher, job_id)
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and (job.attempts, job.worker) == (1, worker)


def test_one_claimant_takes_a_dead_holders_job(sessions):
    """The takeover is a compare-and-set on the dead attempt: a second claimant that saw
    the same dead holder gets nothing."""
    job_id = make_job(sessions)
    dead = (f"{socket.gethostname()}:{_dead_pid()}", 1)
    with sessions() as session:
        assert claim_job(session, job_id=job_id, worker=dead[0], lease_seconds=600)
        session.commit()
        first = claim_job(session, job_id=job_id, worker="a:1", lease_seconds=600, dead_holder=dead)
        session.commit()
        second = claim_job(
            session, job_id=job_id, worker="b:2", lease_seconds=600, dead_holder=dead
        )
        session.commit()
    assert first is not None and second is None
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and (job.attempts, job.worker) == (2, "a:1")


def test_a_dead_holder_that_used_its_attempts_is_not_taken_over(settings, sessions):
    """A job that kills its worker every time is left for the recover pass to fail."""
    job_id = make_job(sessions)
    dead = f"{socket.gethostname()}:{_dead_pid()}"
    with sessions() as session:
        assert claim_job(session, job_id=job_id, worker=dead, lease_seconds=600)
        session.execute(update(Job).where(Job.id == job_id).values(attempts=3))
        session.commit()
        assert (
            take_job(session, job_id=job_id, worker="a:1", lease_seconds=600, max_attempts=3)
            is None
        )
        assert take_job(session, job_id=job_id, worker="a:1", lease_seconds=600, max_attempts=4)


class FakeResult:
    """What ``run_job`` reads from the trainer's ``TrainResult``."""

    def __init__(self, status: str):
        self.status, self.seconds, self.diagnosis, self.history = status, 0.0, [], []
        self.network = self
        self.data = None  # no statistics: the weights are stored as the network's npz

    def to_npz_bytes(self) -> bytes:
        return b"final weights"

    def summary(self) -> dict:
        return {"status": self.status}


def test_lease_outlives_a_slow_epoch(settings, sessions, dispatcher, monkeypatch):
    """An epoch longer than the lease must not let another worker take the job over."""
    import services.trainer

    settings = settings.replace(lease_seconds=1.5, flush_seconds=0.0)
    job_id = make_job(sessions)
    stolen: list[object] = []

    def lease_expiry():
        with sessions() as session:
            return session.get(Job, job_id).lease_expires_at

    def slow_fit(spec, *, on_epoch, **_kwargs):
        for epoch in (1, 2):
            # The epoch lasts until the lease it started under has run out (however
            # slowly this machine runs today): only a renewal keeps the job.
            ends = lease_expiry() + timedelta(seconds=0.1)
            wait_for(
                lambda ends=ends: utcnow() > ends,
                30,
                "the epoch's first lease to run out",
                interval=0.05,
            )
            with sessions() as session:
                stolen.append(claim_job(session, job_id=job_id, worker="thief", lease_seconds=60))
                session.commit()
            on_epoch({"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 1.0 / epoch})
        return FakeResult(status="completed")

    monkeypatch.setattr(services.trainer, "fit", slow_fit)
    assert run(settings, sessions, dispatcher, job_id) == "succeeded"
    assert stolen == [None, None]
    assert epochs_of(sessions, job_id) == [1, 2]
    with sessions() as session:
        assert session.get(Job, job_id).attempts == 1


def test_a_lost_lease_stops_the_run(settings, sessions, dispatcher, monkeypatch):
    import services.trainer

    settings = settings.replace(lease_seconds=0.3, flush_seconds=60.0)
    job_id = make_job(sessions)
    asked_to_stop: list[bool] = []
    keepers: list[LeaseKeeper] = []

    class Recorded(LeaseKeeper):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            keepers.append(self)

    monkeypatch.setattr(job_run, "LeaseKeeper", Recorded)

    def fit(spec, *, on_epoch, **_kwargs):
        with sessions() as session:  # an operator (or a bug) hands the job to someone else
            session.execute(update(Job).where(Job.id == job_id).values(attempts=Job.attempts + 1))
            session.commit()
        # the epoch goes on until the lease keeper has noticed (an event, not a sleep)
        wait_for(lambda: keepers and keepers[0].lost.is_set(), 30, "the lease keeper to notice")
        asked_to_stop.append(bool(on_epoch({"epoch": 1, "train_loss": 1.0, "val_loss": 1.0})))
        return FakeResult(status="stopped")

    monkeypatch.setattr(services.trainer, "fit", fit)
    assert run(settings, sessions, dispatcher, job_id) == "lost"
    assert asked_to_stop == [True] and epochs_of(sessions, job_id) == []


def test_cursor_roundtrip_and_pagination(sessions):
    ids = [make_job(sessions) for _ in range(5)]
    seen: list[str] = []
    cursor = None
    with sessions() as session:
        while True:
            rows, cursor = list_jobs(session, cursor=cursor, limit=2)
            seen += [r.id for r in rows]
            if cursor is None:
                break
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    with pytest.raises(BadCursorError):
        decode_cursor("!!!", "jobs")


def test_jsonable():
    import numpy as np

    raw = {"a": np.float32(1.5), "b": [np.int64(2), float("nan")], "c": np.bool_(True)}
    assert jsonable(raw) == {"a": 1.5, "b": [2, None], "c": True}


def test_down_releases_the_jobs_its_workers_held(settings, sessions):
    """`make down` ends the leases of the stopped worker's jobs: the next recover pass
    finds them at once; jobs of other processes keep theirs."""
    from services import stack

    host = worker_name().rsplit(":", 1)[0]
    with sessions() as session:
        ids = [create_job(session, spec=validate_job(copy.deepcopy(XOR_JOB))).id for _ in range(3)]
        session.commit()
        for job_id, pid in zip(ids, (101, 102, 999), strict=True):
            assert claim_job(session, job_id=job_id, worker=f"{host}:{pid}", lease_seconds=600)
        session.commit()
        assert expired_leases(session) == []
    env = {"DATABASE_URL": settings.database_url}
    assert stack.release_jobs_of([101, 102, 7], env) == 2
    with sessions() as session:
        assert sorted(expired_leases(session)) == sorted(ids[:2])
    # a clean stop is not a lost worker: stopped again and again, the job goes on
    for _ in range(3):
        with sessions() as session:
            taken = claim_job(
                session, job_id=ids[0], worker=f"{host}:101", lease_seconds=600, max_attempts=2
            )
            session.commit()
            assert taken is not None
        assert stack.release_jobs_of([101], env) == 1
        with sessions() as session:
            assert fail_exhausted(session, max_attempts=2) == []
            assert ids[0] in expired_leases(session, max_attempts=2)
            session.commit()
    with sessions() as session:
        job = session.get(Job, ids[0])
        assert job is not None and (job.attempts, job.released, job.status) == (4, 4, "running")


def _submit(sessions, spec: dict) -> str:
    with sessions() as session:
        job = create_job(session, spec=validate_job(spec))
        session.commit()
        return job.id


@pytest.mark.parametrize(
    "early_stopping",
    [
        {"metric": "val_loss", "patience": 3, "min_delta": 0.02},
        {"metric": "val_accuracy", "patience": 4, "min_delta": 0.01},
    ],
    ids=["val_loss", "val_accuracy"],
)
def test_a_jobs_best_epoch_is_the_one_its_early_stopping_restores(
    settings, sessions, dispatcher, early_stopping
):
    """best_epoch, best_metrics and objective describe the weights the job hands back."""
    from services.trainer import fit

    hyper = {
        "learning_rate": 0.1,
        "epochs": 40,
        "early_stopping": {**early_stopping, "restore_best": True},
    }
    spec = {
        "dataset": {"name": "moons", "n_samples": 300, "noise": 0.25},
        "architecture": {"layers": [{"units": 16}]},
        "hyperparameters": hyper,
    }
    local = fit(spec)
    job_id = _submit(sessions, spec)
    assert run(settings, sessions, dispatcher, job_id) == "succeeded"
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert job.best_epoch == local.best_epoch == job.result["best_epoch"]
        assert job.objective == local.history[local.best_epoch - 1][early_stopping["metric"]]


def test_a_diverged_epoch_is_never_the_best(settings, sessions, dispatcher):
    spec = {
        "dataset": {"name": "sine", "n_samples": 200},
        "architecture": {"layers": [{"units": 16}] * 3},
        "hyperparameters": {"learning_rate": 1e5, "epochs": 3, "batch_size": None},
    }
    job_id = _submit(sessions, spec)
    assert run(settings, sessions, dispatcher, job_id) == "diverged"
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.epochs_done == 1
        assert job.best_epoch is None and job.objective is None and job.best_metrics is None


def test_tracker_falls_back_to_the_training_loss_only_without_a_validation_set():
    finite = {"train_loss": 0.5, "weight_norm.layer_0": 1.0, "weight_norm.layer_1": 2.0}
    diverged = {"train_loss": 0.4, "weight_norm.layer_0": 1.0}  # a weight norm not finite
    without = Tracker(Objective(fallback=True), n_layers=2, has_validation=False)
    without.update(1, finite)
    without.update(2, diverged)
    assert (without.best_epoch, without.best_value) == (1, 0.5)
    # a sweep ranks by its metric alone: a trial without validation rows has no value
    trial = Tracker(Objective(), n_layers=2, has_validation=False)
    trial.update(1, finite)
    assert trial.best_epoch is None and trial.best_value is None
    with_val = Tracker(Objective(), n_layers=2, has_validation=True)
    with_val.update(1, finite)  # val_loss not finite: the epoch that diverged
    assert with_val.best_epoch is None and with_val.running_best == {1: None}
    with_val.update(2, {**finite, "val_loss": 0.7})
    assert (with_val.best_epoch, with_val.best_value) == (2, 0.7)


def test_has_validation_follows_the_split_the_trainer_makes():
    spec = copy.deepcopy(XOR_JOB)
    assert has_validation(spec)
    spec["dataset"]["validation_split"] = 0
    assert not has_validation(spec)
    arrays = {"name": "arrays", "X": [[0], [1], [2], [3]], "y": [0, 1, 0, 1]}
    assert not has_validation({"dataset": {**arrays, "validation_split": 0.1}})
    assert has_validation({"dataset": {**arrays, "validation_split": 0.5}})
    # generated sets so small (or so many classes) that 0.2 rounds to no row per class
    for dataset in (
        {"name": "xor", "n_samples": 4},
        {"name": "blobs", "n_samples": 2000, "centers": 1000},
    ):
        spec = validate_job(
            {
                "dataset": dataset,
                "architecture": {"layers": []},
                "hyperparameters": {"learning_rate": 0.1},
            }
        )
        assert not has_validation(spec), dataset
    assert has_validation(
        validate_job(
            {
                "dataset": {"name": "moons", "n_samples": 40},
                "architecture": {"layers": []},
                "hyperparameters": {"learning_rate": 0.1},
            }
        )
    )
