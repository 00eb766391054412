"""Job rows: create, read, list, and the transitions a request makes (cancel).

Helpers flush but never commit: the caller (a route or a task) owns the
transaction. Every status change is a compare-and-set UPDATE, so a message
delivered twice, or a worker that lost its lease, cannot overwrite a result.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, load_only

from services.datasets.store import refers_to
from services.db.models import (
    TERMINAL_STATUSES,
    Job,
    JobMetric,
    utcnow,
)
from services.db.pages import paginate
from services.jobs.ending import retire_checkpoints

log = logging.getLogger(__name__)


class JobFinishedError(Exception):
    """The job is already in a final state (cancel is then a 409)."""


def rowcount(result: Any) -> int:
    """Rows matched by an UPDATE (a ``CursorResult``)."""
    return int(result.rowcount)


def create_job(
    session: Session,
    *,
    spec: dict[str, Any],
    name: str | None = None,
    sweep_id: str | None = None,
    trial_index: int | None = None,
    params: dict[str, Any] | None = None,
    proposal: dict[str, Any] | None = None,
    status: str = "queued",
    error: str | None = None,
    owner_id: str | None = None,
) -> Job:
    """Insert a job (``queued`` unless told otherwise) and flush it."""
    hp = spec.get("hyperparameters") or {}
    now = utcnow()
    job = Job(
        owner_id=owner_id,
        name=name or spec.get("name"),
        status=status,
        sweep_id=sweep_id,
        trial_index=trial_index,
        params=params,
        proposal=proposal,
        spec=spec,
        dataset_id=refers_to(spec),
        epochs_total=int(hp.get("epochs") or 0),
        epochs_done=0,
        error=error,
        cancel_requested=False,
        attempts=0,
        created_at=now,
        updated_at=now,
        finished_at=now if status in TERMINAL_STATUSES else None,
    )
    session.add(job)
    session.flush()
    return job


#: The columns a job shows in a list (never its spec, metrics, result or weights).
SUMMARY_COLUMNS = (
    Job.id,
    Job.owner_id,
    Job.name,
    Job.status,
    Job.sweep_id,
    Job.trial_index,
    Job.params,
    Job.epochs_total,
    Job.epochs_done,
    Job.best_epoch,
    Job.objective,
    Job.error,
    Job.prune_reason,
    Job.cancel_requested,
    Job.attempts,
    Job.worker,
    Job.train_seconds,
    Job.created_at,
    Job.started_at,
    Job.finished_at,
    Job.mlflow_run_id,
    Job.mlflow_experiment_id,
    Job.mlflow_synced_status,
)


def get_job(session: Session, job_id: str, *columns: Any) -> Job | None:
    """The job; with ``columns``, only those are read (any other attribute raises)."""
    if not columns:
        return session.get(Job, job_id)
    stmt = select(Job).options(load_only(*columns, raiseload=True)).where(Job.id == job_id)
    return session.scalars(stmt).one_or_none()


def list_jobs(
    session: Session,
    *,
    statuses: list[str] | None = None,
    sweep_id: str | None = None,
    owner_id: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Job], str | None]:
    """Jobs newest first, their ``SUMMARY_COLUMNS`` only; ``owner_id`` restricts them to
    one user's (None: everyone's)."""
    stmt = select(Job).options(load_only(*SUMMARY_COLUMNS, raiseload=True))
    if owner_id is not None:
        stmt = stmt.where(Job.owner_id == owner_id)
    if statuses:
        stmt = stmt.where(Job.status.in_(statuses))
    if sweep_id:
        stmt = stmt.where(Job.sweep_id == sweep_id)
    return paginate(session, Job, stmt, cursor=cursor, limit=limit)


def job_metrics(session: Session, job_id: str) -> list[JobMetric]:
    stmt = select(JobMetric).where(JobMetric.job_id == job_id).order_by(JobMetric.epoch)
    return list(session.scalars(stmt))


def request_cancel(session: Session, job_id: str) -> Job:
    """Cancel a queued job at once, or flag a running one to stop at its next epoch.

    Raises :class:`JobFinishedError` when the job is already final and
    ``LookupError`` when there is no such job.
    """
    now = utcnow()
    done = rowcount(
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued")
            .values(status="cancelled", cancel_requested=True, finished_at=now, updated_at=now)
        )
    )
    if not done:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running")
            .values(cancel_requested=True, updated_at=now)
        )
    if done:
        retire_checkpoints(session, [job_id])
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise LookupError(job_id)
    if not done and job.status in TERMINAL_STATUSES:
        raise JobFinishedError(job.status)
    return job


def fail_unqueued(session: Session, job_ids: list[str], err: Exception) -> None:
    """Mark jobs whose message could not be sent as failed (if nobody took them).

    The stored error names the cause in words; the broker's own message (hosts,
    ports) goes to the log only."""
    log.warning("jobs %s could not be queued", job_ids, exc_info=err)
    now = utcnow()
    error = "could not be queued: the job queue (Redis) did not accept the message"
    session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.status.in_(("queued", "cancelled")))
        .values(status="failed", error=error, finished_at=now, updated_at=now)
    )
    retire_checkpoints(session, job_ids)
