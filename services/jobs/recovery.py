"""Recovery of lost work: jobs whose worker died, queued jobs whose message was
lost, sweeps that stalled; run periodically by every worker (at most one pass
at a time)."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.celery_app import Dispatcher
from services.config import Settings
from services.db.models import (
    ACTIVE_STATUSES,
    Job,
    Sweep,
)
from services.jobs.lease import expired_leases, fail_exhausted, stale_queued
from services.sweeps.scheduler import advance_and_enqueue


class Recovered(NamedTuple):
    """What one :func:`recover` pass did (job ids)."""

    expired: list[str]  # running jobs of dead workers, sent again
    requeued: list[str]  # queued jobs whose message may have been lost, sent again
    created: list[str]  # new trials of stalled sweeps
    failed: list[str]  # jobs whose workers died ``max_attempts`` times


def recover(
    *, settings: Settings, session_factory: sessionmaker[Session], dispatcher: Dispatcher
) -> Recovered:
    """Re-send jobs whose worker died or whose message was lost; advance stalled sweeps.

    A job's message is lost when its sender died (or Redis failed) between the
    commit and the send, or when Redis lost its data. A sweep stalls if the
    worker that ended its last active trial died before it could create the
    next ones. Every step is idempotent (claims are compare-and-set), so
    running this from several workers at once is harmless.
    """
    with session_factory() as session:
        failed = fail_exhausted(session, max_attempts=settings.max_attempts)
        expired = expired_leases(session, max_attempts=settings.max_attempts)
        requeued = stale_queued(session, older_than=settings.requeue_seconds)
        session.commit()
    dispatcher.enqueue_jobs(expired + requeued)
    with session_factory() as session:
        active = select(Job.id).where(Job.sweep_id == Sweep.id, Job.status.in_(ACTIVE_STATUSES))
        stalled = list(
            session.scalars(select(Sweep.id).where(Sweep.status == "running", ~active.exists()))
        )
        session.commit()
    created: list[str] = []
    for sweep_id in stalled:
        created += advance_and_enqueue(
            settings=settings,
            session_factory=session_factory,
            dispatcher=dispatcher,
            sweep_id=sweep_id,
        )
    return Recovered(expired, requeued, created, [job_id for job_id, _ in failed])
