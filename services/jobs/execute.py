"""What a worker runs for one ``run_job`` message: claim the job, resume it from its
checkpoint, run it (:class:`services.jobs.run.JobRun`), and let its sweep start the
next trial."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from services.celery_app import Dispatcher
from services.config import Settings
from services.db.models import TERMINAL_STATUSES, Job, utcnow
from services.jobs.lease import LeaseHeldError, claim_job, worker_name
from services.jobs.limits import SHUTDOWN, RunLimits
from services.jobs.records import finish_job, load_checkpoint
from services.jobs.run import JobRun
from services.sweeps.pruning import policy_for
from services.sweeps.scheduler import advance_and_enqueue


def execute_job(
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    dispatcher: Dispatcher,
    job_id: str,
    worker: str | None = None,
    limits: RunLimits | None = None,
) -> str:
    """Claim ``job_id``, train it (resuming from its checkpoint) and record the outcome.

    Returns the final status, "missing", "finished" (nothing to do), "lost", or
    "released" (a warm shutdown or a long database outage stopped it: the job
    is handed back without counting an attempt, and its message should be too).
    Raises :class:`LeaseHeldError` when another worker holds a live lease on it.
    """
    if SHUTDOWN.requested:  # this worker is stopping: leave the job to the next one
        return "released"
    with session_factory() as session:
        job = claim_job(
            session,
            job_id=job_id,
            worker=worker or worker_name(),
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
        )
        if job is None:
            current = session.get(Job, job_id)
            session.commit()
            if current is None:
                return "missing"
            if current.status in TERMINAL_STATUSES:
                return "finished"
            lease = current.lease_expires_at or utcnow()
            if lease < utcnow():  # not claimable although expired: no attempts left
                return "exhausted"  # the recover task fails it
            retry_in = max(0.5, (lease - utcnow()).total_seconds() + 0.5)
            raise LeaseHeldError(retry_in, holder=current.worker)
        objective, prune = policy_for(session, job)
        run = JobRun(
            settings=settings,
            session_factory=session_factory,
            dispatcher=dispatcher,
            job=job,
            objective=objective,
            prune=prune,
            limits=limits,
        )
        resume_from = None
        if job.attempts > 1:
            resume_from = run.restore(session, load_checkpoint(session, job_id))
        cancelled = job.cancel_requested
        sweep_id = job.sweep_id
        session.commit()
    if cancelled:
        with session_factory() as session:
            finish_job(session, job_id=job_id, attempt=run.attempt, status="cancelled")
            session.commit()
        status = "cancelled"
    else:
        status = run.run(resume_from)
    if sweep_id and status not in ("lost", "released"):
        advance_and_enqueue(
            settings=settings,
            session_factory=session_factory,
            dispatcher=dispatcher,
            sweep_id=sweep_id,
        )
    return status
