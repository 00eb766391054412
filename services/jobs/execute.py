"""What a worker runs for one ``run_job`` message: claim the job, resume it from its
checkpoint, run it (:class:`services.jobs.run.JobRun`), and let its sweep start the
next trial, which the same process may run at once (:func:`run_chain`); and for one
``run_pack`` message, the same for trials trained together (:func:`run_pack_chain`,
``services.jobs.pack_run``)."""

from __future__ import annotations

import time

from sqlalchemy.orm import Session, sessionmaker

from services.celery_app import Dispatcher
from services.config import Settings
from services.db.models import TERMINAL_STATUSES, Job, utcnow
from services.jobs.lease import LeaseHeldError, take_job, worker_name
from services.jobs.limits import SHUTDOWN, RunLimits
from services.jobs.pack_run import execute_pack
from services.jobs.records import finish_job, load_checkpoint
from services.jobs.run import JobRun
from services.sweeps.pruning import policy_for
from services.sweeps.scheduler import advance_and_send

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
    from the start, the next trial (or pack of trials) its sweep created, in this
    process, and so on.

    A sweep of short trials spends more time in the broker's round trip and the
    prefork pool's hand-over (~3-9 ms per trial on 2 cores) than in training; a trial
    run here skips both. Its row is committed queued before it is claimed: if this
    process dies in between, the recover pass sends it (``requeue_seconds``). A chained
    trial that cannot run here (a warm shutdown, an error) is sent to the queue.
    Returns the status of ``job_id``; raises :class:`LeaseHeldError` for it only.
    """
    return _chain(settings, session_factory, dispatcher, [job_id], worker)[job_id]


def run_pack_chain(
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    dispatcher: Dispatcher,
    job_ids: list[str],
    worker: str | None = None,
) -> dict[str, str]:
    """Train the trials ``job_ids`` together (:func:`services.jobs.pack_run.execute_pack`),
    let their sweep advance once, and chain what it creates next as :func:`run_chain`
    does. Returns each trial's status ("released" ones are for the caller to send)."""
    return _chain(settings, session_factory, dispatcher, list(job_ids), worker)


def _chain(
    settings: Settings,
    session_factory: sessionmaker[Session],
    dispatcher: Dispatcher,
    first: list[str],
    worker: str | None,
) -> dict[str, str]:
    deadline = time.monotonic() + settings.chain_seconds
    statuses, unit = _run_unit(
        settings, session_factory, dispatcher, first, worker, settings.chain_seconds > 0
    )
    while unit:
        current, unit = unit, []
        if SHUTDOWN.requested or time.monotonic() >= deadline:
            dispatcher.enqueue_units([current])
            break
        try:
            chained, unit = _run_unit(settings, session_factory, dispatcher, current, worker, True)
        except LeaseHeldError:  # a re-sent copy got to it first: its holder runs it
            continue
        except BaseException:
            dispatcher.enqueue_units([current])  # harmless if it had been claimed already
            raise
        released = [job_id for job_id, status in chained.items() if status == RELEASED]
        if released:
            dispatcher.enqueue_units([released])
    return statuses


def _run_unit(
    settings: Settings,
    session_factory: sessionmaker[Session],
    dispatcher: Dispatcher,
    unit: list[str],
    worker: str | None,
    keep_next: bool,
) -> tuple[dict[str, str], list[str]]:
    """One trial (:func:`_execute`) or one pack; (statuses, the next unit kept)."""
    if len(unit) == 1:
        status, kept = _execute(
            settings=settings,
            session_factory=session_factory,
            dispatcher=dispatcher,
            job_id=unit[0],
            worker=worker,
            keep_next=keep_next,
        )
        return {unit[0]: status}, kept
    statuses, sweep_id = execute_pack(
        settings=settings,
        session_factory=session_factory,
        dispatcher=dispatcher,
        job_ids=unit,
        worker=worker,
    )
    ended = any(status in TERMINAL_STATUSES for status in statuses.values())
    return statuses, _advance(settings, session_factory, dispatcher, sweep_id, keep_next, ended)


def _advance(
    settings: Settings,
    session_factory: sessionmaker[Session],
    dispatcher: Dispatcher,
    sweep_id: str | None,
    keep_next: bool,
    ended: bool,
) -> list[str]:
    """Let the sweep of trials that ended advance; the unit kept for this process."""
    if not sweep_id or not ended:
        return []
    keep = keep_next and not SHUTDOWN.requested
    return advance_and_send(
        settings=settings,
        session_factory=session_factory,
        dispatcher=dispatcher,
        sweep_id=sweep_id,
        keep=keep,
    )[1]


def _execute(
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    dispatcher: Dispatcher,
    job_id: str,
    worker: str | None = None,
    limits: RunLimits | None = None,
    keep_next: bool = False,
) -> tuple[str, list[str]]:
    """:func:`execute_job`, and the ids of the sweep's next trial (or pack) when
    ``keep_next`` asked to keep it (not sent: the caller runs it or sends it)."""
    if SHUTDOWN.requested:  # this worker is stopping: leave the job to the next one
        return RELEASED, []
    with session_factory() as session:
        job = take_job(
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
                return "missing", []
            if current.status in TERMINAL_STATUSES:
                return "finished", []
            lease = current.lease_expires_at or utcnow()
            if lease < utcnow():  # not claimable although expired: no attempts left
                return "exhausted", []  # the recover task fails it
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
    ended = status not in ("lost", RELEASED)
    return status, _advance(settings, session_factory, dispatcher, sweep_id, keep_next, ended)
