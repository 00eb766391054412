"""What a worker runs for one ``run_job`` message: claim the job, resume it from its
checkpoint, run it (:class:`services.jobs.run.JobRun`), and let its sweep start the
next trial, which the same process may run at once (:func:`run_chain`)."""

from __future__ import annotations

import time

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

# the status of a job that a warm shutdown stopped and handed back
RELEASED = "released"


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
    return _execute(
        settings=settings,
        session_factory=session_factory,
        dispatcher=dispatcher,
        job_id=job_id,
        worker=worker,
        limits=limits,
    )[0]


def run_chain(
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    dispatcher: Dispatcher,
    job_id: str,
    worker: str | None = None,
) -> str:
    """Run ``job_id`` as :func:`execute_job` does; then, for ``settings.chain_seconds``
    from the start, the next trial its sweep created, in this process, and so on.

    A sweep of short trials spends more time in the broker's round trip and the
    prefork pool's hand-over (~3-9 ms per trial on 2 cores) than in training; a trial
    run here skips both. Its row is committed queued before it is claimed: if this
    process dies in between, the recover pass sends it (``requeue_seconds``). A chained
    trial that cannot run here (a warm shutdown, an error) is sent to the queue.
    Returns the status of ``job_id``; raises :class:`LeaseHeldError` for it only.
    """
    deadline = time.monotonic() + settings.chain_seconds
    status, next_id = _execute(
        settings=settings,
        session_factory=session_factory,
        dispatcher=dispatcher,
        job_id=job_id,
        worker=worker,
        keep_next=settings.chain_seconds > 0,
    )
    while next_id is not None:
        current, next_id = next_id, None
        if SHUTDOWN.requested or time.monotonic() >= deadline:
            dispatcher.enqueue_jobs([current])
            break
        try:
            chained, next_id = _execute(
                settings=settings,
                session_factory=session_factory,
                dispatcher=dispatcher,
                job_id=current,
                worker=worker,
                keep_next=True,
            )
        except LeaseHeldError:  # a re-sent copy got to it first: its holder runs it
            continue
        except BaseException:
            dispatcher.enqueue_jobs([current])  # harmless if it had been claimed already
            raise
        if chained == RELEASED:
            dispatcher.enqueue_jobs([current])
    return status


def _execute(
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    dispatcher: Dispatcher,
    job_id: str,
    worker: str | None = None,
    limits: RunLimits | None = None,
    keep_next: bool = False,
) -> tuple[str, str | None]:
    """:func:`execute_job`, and the id of the sweep's next trial when ``keep_next`` asked
    to keep it (not sent: the caller runs it or sends it)."""
    if SHUTDOWN.requested:  # this worker is stopping: leave the job to the next one
        return RELEASED, None
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
                return "missing", None
            if current.status in TERMINAL_STATUSES:
                return "finished", None
            lease = current.lease_expires_at or utcnow()
            if lease < utcnow():  # not claimable although expired: no attempts left
                return "exhausted", None  # the recover task fails it
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
    next_id = None
    if sweep_id and status not in ("lost", RELEASED):
        keep = keep_next and not SHUTDOWN.requested
        new_ids = advance_and_enqueue(
            settings=settings,
            session_factory=session_factory,
            dispatcher=dispatcher,
            sweep_id=sweep_id,
            keep=keep,
        )
        next_id = new_ids[0] if keep and new_ids else None
    return status, next_id
