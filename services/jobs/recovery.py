"""Recovery of lost work: jobs whose worker died, queued jobs whose message was
lost, sweeps that stalled; run periodically by every worker (at most one pass
at a time)."""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)


class Recovered(NamedTuple):
    """What one :func:`recover` pass did (job ids)."""

    expired: list[str]  # running jobs of dead workers, sent again
    requeued: list[str]  # queued jobs whose message may have been lost, sent again
    created: list[str]  # new trials of stalled sweeps
    failed: list[str]  # jobs whose workers died ``max_attempts`` times
    waiting: list[str]  # expired or stale, but their message still waits: not sent


def recover(
    *, settings: Settings, session_factory: sessionmaker[Session], dispatcher: Dispatcher
) -> Recovered:
    """Re-send jobs whose worker died or whose message was lost; advance stalled sweeps.

    A job's message is lost when its sender died (or Redis failed) between the
    commit and the send, or when Redis lost its data. A sweep stalls if the
    worker that ended its last active trial died before it could create the
    next ones. Every step is idempotent (claims are compare-and-set), so
    running this from several workers at once is harmless; still, a job is sent
    again only when its message is really gone (:func:`_send_lost`), so that copies
    do not pile up in a long queue.

    A failure while one stalled sweep advances is logged and the other sweeps
    still advance.
    """
    with session_factory() as session:
        failed = fail_exhausted(session, max_attempts=settings.max_attempts)
        expired = expired_leases(session, max_attempts=settings.max_attempts)
        stale = stale_queued(session, older_than=settings.requeue_seconds)
        session.commit()
    expired, requeued, waiting = _send_lost(settings, dispatcher, expired, stale)
    with session_factory() as session:
        active = select(Job.id).where(Job.sweep_id == Sweep.id, Job.status.in_(ACTIVE_STATUSES))
        stalled = list(
            session.scalars(select(Sweep.id).where(Sweep.status == "running", ~active.exists()))
        )
        session.commit()
    created: list[str] = []
    for sweep_id in stalled:
        try:
            created += advance_and_enqueue(
                settings=settings,
                session_factory=session_factory,
                dispatcher=dispatcher,
                sweep_id=sweep_id,
            )
        except Exception:  # one sweep (or an outage) must not stop the others
            log.exception("recover: sweep %s could not advance; the others go on", sweep_id)
    return Recovered(expired, requeued, created, [job_id for job_id, _ in failed], waiting)


def _send_lost(
    settings: Settings, dispatcher: Dispatcher, expired: list[str], stale: list[str]
) -> tuple[list[str], list[str], list[str]]:
    """Send ``run_job`` again for the jobs whose message is gone: not in the queue, not
    just delivered to a worker. Returns (expired sent, stale sent, still waiting).

    An expired lease's job has no message left once its worker died holding it (a
    copy that Celery requeued was dropped while the lease lived); a stale queued
    job's message may wait behind a backlog, or have been lost with Redis's data.
    """
    if not expired and not stale:
        return [], [], []
    # A live worker claims a job moments after it receives it: a message it holds
    # longer than a lease is a dead worker's.
    waiting = dispatcher.waiting_job_ids(fresh_seconds=settings.lease_seconds)
    if waiting is None:
        log.warning("recover: the queue is too long to scan; nothing is sent again this pass")
        return [], [], expired + stale
    lost_expired = [job_id for job_id in expired if job_id not in waiting]
    lost_stale = [job_id for job_id in stale if job_id not in waiting]
    dispatcher.enqueue_jobs(lost_expired + lost_stale)
    return lost_expired, lost_stale, [j for j in expired + stale if j in waiting]
