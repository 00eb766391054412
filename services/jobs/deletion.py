"""Deleting a job or a sweep: what still runs is cancelled first, then the rows go
(the job, its epochs, checkpoint and weights; a sweep with all its trials), and
its MLflow runs are marked deleted.

One transaction cancels (queued jobs end ``cancelled``, running ones are flagged,
as ``POST .../cancel`` does), deletes the rows and records the MLflow deletion
(``services.mirror.deletions``); after the commit the running jobs' workers are
told at once (the cancel control message) and a worker is asked to delete the
MLflow runs. A worker still training a deleted job stops at its next epoch
boundary: its writes are compare-and-set on the job's row (``record_epochs``,
``finish_job``, the lease), which is gone, so it ends the attempt as lost
without writing anything, and its sweep is not advanced.

A sweep's trial is not deleted alone (:class:`TrialOfSweepError`): a sweep's
counts, leaderboard and sampler are made of its trials, so a trial goes with its
sweep.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from services.celery_app import Dispatcher
from services.config import Settings
from services.db.models import (
    ACTIVE_STATUSES,
    Job,
    JobCheckpoint,
    JobMetric,
    JobWeights,
    Sweep,
)
from services.jobs.rows import get_job, request_cancel
from services.mirror import deletions as mlflow_deletions
from services.mirror.names import enabled
from services.sweeps.scheduler import cancel_sweep, lock_sweep

log = logging.getLogger(__name__)


class TrialOfSweepError(Exception):
    """The job is a sweep's trial: it is deleted with its sweep (the sweep's id)."""


def delete_job(session: Session, dispatcher: Dispatcher, settings: Settings, job_id: str) -> None:
    """Cancel the job if it is queued or running, delete it with its rows (committed),
    and have its MLflow run deleted. Raises ``LookupError`` or :class:`TrialOfSweepError`."""
    job = get_job(session, job_id, Job.status, Job.sweep_id, Job.mlflow_run_id)
    if job is None:
        raise LookupError(job_id)
    if job.sweep_id is not None:
        raise TrialOfSweepError(job.sweep_id)
    running = [job_id] if job.status == "running" else []
    if job.status in ACTIVE_STATUSES:
        request_cancel(session, job_id)
    if enabled(settings) or job.mlflow_run_id:
        mlflow_deletions.record_deletion(session, "job", job_id, job.mlflow_run_id)
    _delete_jobs(session, [job_id])
    session.commit()
    _after(dispatcher, settings, running)


def delete_sweep(
    session: Session, dispatcher: Dispatcher, settings: Settings, sweep_id: str
) -> None:
    """Cancel the sweep if it runs, delete it with all its trials and their rows
    (committed), and have its MLflow runs (parent and trials) deleted. Raises
    ``LookupError``."""
    sweep = lock_sweep(session, sweep_id)
    if sweep is None:
        raise LookupError(sweep_id)
    if sweep.status == "running":
        cancel_sweep(session, sweep_id)
    trials = list(session.scalars(select(Job.id).where(Job.sweep_id == sweep_id)))
    running = list(
        session.scalars(select(Job.id).where(Job.sweep_id == sweep_id, Job.status == "running"))
    )
    mirrored = session.scalar(
        select(Job.id).where(Job.sweep_id == sweep_id, Job.mlflow_run_id.is_not(None)).limit(1)
    )
    if enabled(settings) or sweep.mlflow_run_id or mirrored:
        mlflow_deletions.record_deletion(session, "sweep", sweep_id, sweep.mlflow_run_id)
    _delete_jobs(session, trials)
    session.execute(delete(Sweep).where(Sweep.id == sweep_id))
    session.commit()
    _after(dispatcher, settings, running)


def _delete_jobs(session: Session, job_ids: list[str]) -> None:
    """Delete the jobs, then their epochs, checkpoints and weights. The foreign keys
    cascade (SQLite enforces them: ``services.db.session``); the explicit deletes
    say so here and cover a database that does not. The job rows go first: on
    PostgreSQL that waits for a worker's write in progress on one of them, which
    then finds no row and writes nothing."""
    for start in range(0, len(job_ids), 500):
        chunk = job_ids[start : start + 500]
        session.execute(
            delete(Job).where(Job.id.in_(chunk)).execution_options(synchronize_session=False)
        )
        for table in (JobMetric, JobCheckpoint, JobWeights):
            session.execute(
                delete(table)
                .where(table.job_id.in_(chunk))
                .execution_options(synchronize_session=False)
            )


def _after(dispatcher: Dispatcher, settings: Settings, running: list[str]) -> None:
    """After the commit: tell the running jobs' workers (the cancel control message; if
    Redis is down, their next write finds no row), and have the MLflow runs deleted."""
    if running:
        try:
            dispatcher.request_cancel(running)
        except Exception:
            log.warning("could not signal the cancel of deleted jobs %s", running, exc_info=True)
            dispatcher.close()
    mlflow_deletions.runs_deleted(settings)
