"""Faults never fail a running job: a database outage (shorter or longer than the
lease), a warm shutdown, checkpoints by time, the wall-clock limit, hung jobs.

The outage is real as far as the run can tell: every statement on the engine
raises SQLAlchemy's OperationalError while it lasts (lease renewals included)."""

from __future__ import annotations

import copy
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

import services.trainer
from services.db.models import Job, JobCheckpoint, JobMetric, JobWeights
from services.jobs import lease as job_lease
from services.jobs import run as job_run
from services.jobs.execute import execute_job
from services.jobs.limits import SHUTDOWN, RunLimits
from services.jobs.rows import create_job
from services.specs import SpecValidationError, trainer_spec, validate_job
from tests.conftest import XOR_JOB
from tests.integration.harness import wait_for

REAL_FIT = services.trainer.fit


@pytest.fixture(autouse=True)
def _no_shutdown():
    SHUTDOWN.clear()
    yield
    SHUTDOWN.clear()


class Outage:
    """Every statement on ``engine`` fails (as a database that went away) while ``down``."""

    def __init__(self, engine: Any):
        self.until = 0.0
        self.refused = 0
        event.listen(engine, "before_cursor_execute", self._hook)

    def start(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds

    @property
    def down(self) -> bool:
        return time.monotonic() < self.until

    def _hook(self, _conn: Any, _cursor: Any, statement: str, params: Any, *_args: Any) -> None:
        if self.down:
            self.refused += 1
            raise OperationalError(statement, params, sqlite3.OperationalError("server closed"))


def make_job(sessions: Any, **hyperparameters: Any) -> str:
    spec = copy.deepcopy(XOR_JOB)
    spec["hyperparameters"].update(hyperparameters)
    with sessions() as session:
        job = create_job(session, spec=validate_job(spec))
        session.commit()
        return job.id


def run(settings: Any, sessions: Any, dispatcher: Any, job_id: str, **limits: float) -> str:
    return execute_job(
        settings=settings,
        session_factory=sessions,
        dispatcher=dispatcher,
        job_id=job_id,
        limits=RunLimits(**limits),
    )


def slow_fit(
    monkeypatch: pytest.MonkeyPatch,
    per_batch: float = 0.003,
    at_batch: Callable[[int], None] | None = None,
    checkpoints: list[int] | None = None,
) -> None:
    """The real trainer, slowed down per mini-batch (so that time passes while it
    trains), with ``at_batch(n)`` called before the n-th batch of the run."""
    calls = {"n": 0}

    def fit(spec: Any, **kwargs: Any) -> Any:
        interrupt, on_checkpoint = kwargs["interrupt"], kwargs["on_checkpoint"]

        def slowly() -> bool:
            calls["n"] += 1
            if at_batch is not None:
                at_batch(calls["n"])
            time.sleep(per_batch)
            return interrupt()

        def checkpoint(epoch: int, blob: bytes) -> None:
            if checkpoints is not None:
                checkpoints.append(epoch)
            on_checkpoint(epoch, blob)

        return REAL_FIT(spec, **dict(kwargs, interrupt=slowly, on_checkpoint=checkpoint))

    monkeypatch.setattr(services.trainer, "fit", fit)


def curve(sessions: Any, job_id: str) -> list[tuple[int, float | None]]:
    with sessions() as session:
        stmt = select(JobMetric.epoch, JobMetric.train_loss).where(JobMetric.job_id == job_id)
        return [tuple(row) for row in session.execute(stmt.order_by(JobMetric.epoch))]  # type: ignore[misc]


def job_row(sessions: Any, job_id: str) -> Job:
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def engine_of(sessions: Any) -> Any:
    return sessions.kw["bind"]


def test_a_short_outage_is_waited_out(settings, sessions, dispatcher, monkeypatch):
    outage = Outage(engine_of(sessions))
    slow_fit(monkeypatch, at_batch=lambda n: n == 12 and outage.start(1.2))
    job_id = make_job(sessions, epochs=30)
    assert run(settings, sessions, dispatcher, job_id) == "succeeded"
    assert outage.refused >= 2  # flushes (and renewals) were refused, then went through
    epochs = [epoch for epoch, _ in curve(sessions, job_id)]
    assert epochs == list(range(1, 31))  # every epoch once
    job = job_row(sessions, job_id)
    assert job.attempts == 1 and job.error is None


def test_an_outage_longer_than_the_lease_releases_the_job(
    settings, sessions, dispatcher, monkeypatch
):
    reference = make_job(sessions, epochs=60)
    assert run(settings, sessions, dispatcher, reference) == "succeeded"

    settings = settings.replace(lease_seconds=0.6)
    outage = Outage(engine_of(sessions))
    # ~10 ms a batch, 4 batches an epoch: the outage starts in epoch 6 and outlasts the lease
    slow_fit(monkeypatch, per_batch=0.01, at_batch=lambda n: n == 22 and outage.start(2.0))
    job_id = make_job(sessions, epochs=60)
    assert run(settings, sessions, dispatcher, job_id, final_write_seconds=30) == "released"
    job = job_row(sessions, job_id)
    assert job.status == "running" and job.attempts == 1 and job.released == 1
    assert job.worker is None and job.error is None

    slow_fit(monkeypatch, per_batch=0.0)
    assert run(settings, sessions, dispatcher, job_id) == "succeeded"
    job = job_row(sessions, job_id)
    assert job.attempts - job.released == 1  # the outage cost no attempt
    assert curve(sessions, job_id) == curve(sessions, reference)  # resumed bit for bit


def test_a_warm_shutdown_releases_the_job_and_counts_no_attempt(
    settings, sessions, dispatcher, monkeypatch
):
    reference = make_job(sessions, epochs=20)
    assert run(settings, sessions, dispatcher, reference) == "succeeded"

    slow_fit(monkeypatch, at_batch=lambda n: n == 31 and SHUTDOWN.set())  # mid-epoch
    job_id = make_job(sessions, epochs=20)
    assert run(settings, sessions, dispatcher, job_id) == "released"
    job = job_row(sessions, job_id)
    assert job.status == "running" and job.attempts == 1 and job.released == 1
    epochs = [epoch for epoch, _ in curve(sessions, job_id)]
    assert epochs and epochs == list(range(1, len(epochs) + 1)) and len(epochs) < 20
    waiting = make_job(sessions)
    assert run(settings, sessions, dispatcher, waiting) == "released"  # none starts now
    assert job_row(sessions, waiting).status == "queued"

    SHUTDOWN.clear()
    slow_fit(monkeypatch, per_batch=0.0)
    assert run(settings, sessions, dispatcher, job_id) == "succeeded"
    job = job_row(sessions, job_id)
    assert job.attempts == 2 and job.released == 1
    assert curve(sessions, job_id) == curve(sessions, reference)


def test_checkpoints_come_by_time_too(settings, sessions, dispatcher, monkeypatch):
    settings = settings.replace(checkpoint_every=0)  # none by epochs
    checkpoints: list[int] = []
    stored: set[int] = set()  # the epochs of the checkpoint row, seen while it trains
    current = {"job": ""}

    def look(_n: int) -> None:
        with sessions() as session:
            row = session.get(JobCheckpoint, current["job"])
            if row is not None:
                stored.add(row.epoch)

    slow_fit(monkeypatch, per_batch=0.01, at_batch=look, checkpoints=checkpoints)  # ~40 ms/epoch
    current["job"] = job_id = make_job(sessions, epochs=12)
    assert run(settings, sessions, dispatcher, job_id, checkpoint_seconds=3600) == "succeeded"
    assert checkpoints == [] and stored == set()
    current["job"] = job_id = make_job(sessions, epochs=12)
    assert run(settings, sessions, dispatcher, job_id, checkpoint_seconds=0.1) == "succeeded"
    assert 2 <= len(checkpoints) < 11 and checkpoints == sorted(set(checkpoints))
    assert stored and stored <= set(checkpoints)  # stored while it ran
    with sessions() as session:  # and deleted with the final status; the weights stay
        assert session.get(JobCheckpoint, job_id) is None
        assert session.get(JobWeights, job_id).epoch == 12


def test_the_wall_clock_limit_ends_the_job_timed_out(settings, sessions, dispatcher, monkeypatch):
    settings = settings.replace(checkpoint_every=0)
    slow_fit(monkeypatch, per_batch=0.01)
    job_id = make_job(sessions, epochs=500)
    assert run(settings, sessions, dispatcher, job_id, max_job_seconds=0.3) == "timed_out"
    job = job_row(sessions, job_id)
    assert job.status == "timed_out" and job.finished_at is not None
    assert job.diagnosis[0]["code"] == "timed_out"
    assert "wall-clock limit of 0.3 s" in job.diagnosis[0]["message"]
    done = len(curve(sessions, job_id))
    assert 1 <= done < 500
    with sessions() as session:  # final: never resumed, so no checkpoint; its weights stay
        assert session.get(JobCheckpoint, job_id) is None
        assert session.get(JobWeights, job_id).epoch == done


def test_a_spec_may_lower_the_limit_but_not_raise_it():
    limits = RunLimits(max_job_seconds=100.0)
    assert limits.for_job({"hyperparameters": {}}) == 100.0
    assert limits.for_job({"limits": {"max_seconds": 30}}) == 30.0
    assert limits.for_job({"limits": {"max_seconds": 1000}}) == 100.0
    # the spec takes it (and keeps it out of the trainer's part)
    spec = validate_job({**copy.deepcopy(XOR_JOB), "limits": {"max_seconds": 30}})
    assert spec["limits"] == {"max_seconds": 30.0} and "limits" not in trainer_spec(spec)
    with pytest.raises(SpecValidationError) as info:
        validate_job({**copy.deepcopy(XOR_JOB), "limits": {"max_seconds": 0}})
    assert info.value.details[0]["loc"] == "limits.max_seconds"
    assert RunLimits.from_env({"SWEEPLAB_MAX_JOB_SECONDS": "7"}).max_job_seconds == 7.0
    assert RunLimits.from_env({}).checkpoint_seconds == 60.0


def test_a_hung_job_stops_renewing_and_its_process_exits(
    settings, sessions, dispatcher, monkeypatch, caplog
):
    settings = settings.replace(lease_seconds=0.3)
    exits: list[str] = []
    monkeypatch.setattr(job_lease, "exit_hung_process", lambda keeper: exits.append(keeper.job_id))
    keepers: list[job_lease.LeaseKeeper] = []

    class Recorded(job_lease.LeaseKeeper):
        def __init__(self, **kwargs: Any):
            super().__init__(**kwargs)
            keepers.append(self)

    monkeypatch.setattr(job_run, "LeaseKeeper", Recorded)

    def stuck_fit(spec: Any, *, interrupt: Callable[[], bool], **_kwargs: Any) -> Any:
        interrupt()  # one batch, then nothing
        wait_for(lambda: exits, 30, "the hung job to be noticed")
        raise AssertionError("unreachable in a real worker: its process has exited")

    monkeypatch.setattr(services.trainer, "fit", stuck_fit)
    job_id = make_job(sessions)
    with caplog.at_level(logging.ERROR, logger="services.jobs.lease"):
        assert run(settings, sessions, dispatcher, job_id, hung_seconds=0.5) == "lost"
    assert exits == [job_id] and keepers[0].hung.is_set()
    assert "is hung" in caplog.text
    job = job_row(sessions, job_id)
    assert job.status == "running" and job.attempts == 1  # its lease runs out: recovery's turn
