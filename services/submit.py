"""Submitting and cancelling: commit the rows, then talk to the queue, and compensate when it fails.

These are the units of work behind the API's ``POST`` routes. Unlike the row
operations in ``services.jobs.rows`` and ``services.sweeps.scheduler`` (which only flush),
each function here commits: a message must leave only after its rows are
committed, and a row whose message could not leave must not stay queued.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from services.auth import LOCAL, Principal, check_quota
from services.celery_app import Dispatcher
from services.config import Settings
from services.db.models import Job, Sweep
from services.jobs.rows import create_job, fail_unqueued, request_cancel
from services.specs import SweepCreate
from services.sweeps import scheduler
from services.sweeps.scheduler import advance_and_enqueue, create_sweep


class QueueUnavailable(RuntimeError):
    """The broker did not take a submission's messages; its rows were failed or cancelled."""

    def __init__(self, cause: Exception):
        super().__init__(f"the job queue is unavailable ({type(cause).__name__}); try again")
        self.cause = cause


def submit_job(
    session: Session,
    dispatcher: Dispatcher,
    *,
    spec: dict,
    principal: Principal = LOCAL,
    settings: Settings | None = None,
) -> Job:
    """Store a job (normalized ``spec``) owned by ``principal`` and queue it.

    Raises :class:`services.auth.QuotaExceeded` when the owner already has their
    budget of active jobs, and :class:`QueueUnavailable` after failing the job if
    the broker is down, so that no job is left queued that nobody will run.
    """
    if settings is not None:
        check_quota(session, principal, 1, settings.limits.max_active_jobs)
    job = create_job(session, spec=spec, owner_id=principal.user_id)
    session.commit()
    try:
        dispatcher.enqueue_jobs([job.id])
    except Exception as err:
        fail_unqueued(session, [job.id], err)
        session.commit()
        raise QueueUnavailable(err) from err
    return job


def submit_sweep(
    session: Session,
    dispatcher: Dispatcher,
    *,
    sweep: SweepCreate,
    settings: Settings,
    principal: Principal = LOCAL,
) -> Sweep:
    """Store a sweep owned by ``principal`` and its first trials, and queue them.

    Its first trials (up to ``max_concurrency``) count against the owner's budget
    of active jobs (:class:`services.auth.QuotaExceeded`). Raises
    :class:`QueueUnavailable` after cancelling the sweep and failing its trials
    if the broker is down, rather than strand them.
    """
    first = min(sweep.max_concurrency, sweep.total_trials())
    check_quota(session, principal, first, settings.limits.max_active_jobs)
    row, job_ids = create_sweep(
        session, sweep=sweep, limits=settings.limits, owner_id=principal.user_id
    )
    session.commit()
    try:
        dispatcher.enqueue_jobs(job_ids)
    except Exception as err:
        scheduler.cancel_sweep(session, row.id)
        fail_unqueued(session, job_ids, err)
        session.commit()
        raise QueueUnavailable(err) from err
    return row


def cancel_job(
    session: Session,
    *,
    job_id: str,
    settings: Settings,
    session_factory: sessionmaker[Session],
    dispatcher: Dispatcher,
) -> Job:
    """Cancel a queued job, or ask a running one to stop at its next epoch.

    A queued trial that ends this way frees a place in its sweep, which may
    start its next trial. Raises ``LookupError`` for an unknown id and
    ``services.jobs.rows.JobFinishedError`` for a finished job.
    """
    job = request_cancel(session, job_id)
    session.commit()
    if job.status == "running":
        signal_cancel(dispatcher, [job.id])
    elif job.sweep_id:
        advance_and_enqueue(
            settings=settings,
            session_factory=session_factory,
            dispatcher=dispatcher,
            sweep_id=job.sweep_id,
        )
    return job


def cancel_sweep(session: Session, *, sweep_id: str, dispatcher: Dispatcher) -> Sweep:
    """Cancel a sweep: queued trials never start, running ones stop within an epoch.

    Raises ``LookupError`` for an unknown id and
    ``services.sweeps.scheduler.SweepFinishedError`` for a finished sweep.
    """
    sweep, running = scheduler.cancel_sweep(session, sweep_id)
    session.commit()
    signal_cancel(dispatcher, running)
    return sweep


def signal_cancel(dispatcher: Dispatcher, job_ids: list[str]) -> None:
    """Tell running workers at once; if Redis is down, the database flag still
    reaches them at their next flush."""
    try:
        dispatcher.request_cancel(job_ids)
    except Exception:
        dispatcher.close()
