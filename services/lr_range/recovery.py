"""Recovery of range tests whose message was lost (its sender died between the commit
and the send, Redis lost its data) or whose worker died elsewhere: part of every
worker's periodic recover pass (``worker/tasks.py``)."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from services.celery_app import RUN_RANGE_TEST, Dispatcher
from services.config import Settings
from services.db.models import LrRangeTest, utcnow
from services.lr_range.rows import fail_unstarted
from services.mirror.range_tests import range_test_finished

log = logging.getLogger(__name__)


def recover_range_tests(
    *, settings: Settings, session_factory: sessionmaker[Session], dispatcher: Dispatcher
) -> dict[str, list[str]]:
    """Send again the tests whose message is gone: queued ones older than
    ``requeue_seconds`` and running ones whose lease ran out, unless their message still
    waits in the queue (or was just delivered); fail those whose workers were lost
    ``max_attempts`` times. Idempotent: a copy of a message is a no-op (the claim)."""
    now = utcnow()
    lapsed = and_(LrRangeTest.status == "running", LrRangeTest.lease_expires_at < now)
    stale = and_(
        LrRangeTest.status == "queued",
        LrRangeTest.created_at < now - timedelta(seconds=settings.requeue_seconds),
    )
    with session_factory() as session:
        rows = session.execute(
            select(LrRangeTest.id, LrRangeTest.status, LrRangeTest.attempts).where(
                or_(lapsed, stale)
            )
        ).all()
        exhausted = [
            r.id for r in rows if r.status == "running" and r.attempts >= settings.max_attempts
        ]
        failed = [
            test_id
            for test_id in exhausted
            if fail_unstarted(
                session,
                test_id,
                f"the workers running it were lost {settings.max_attempts} times (a crash or "
                "out of memory); the workers' logs have the details",
            )
        ]
        session.commit()
    for test_id in failed:
        range_test_finished(settings, test_id)
    candidates = [r.id for r in rows if r.id not in set(exhausted)]
    if not candidates:
        return {"sent": [], "failed": failed, "waiting": []}
    waiting = dispatcher.waiting_job_ids(fresh_seconds=settings.lease_seconds, task=RUN_RANGE_TEST)
    if waiting is None:
        log.warning("recover: the queue is too long to scan; no range test is sent again")
        return {"sent": [], "failed": failed, "waiting": candidates}
    lost = [test_id for test_id in candidates if test_id not in waiting]
    dispatcher.enqueue_range_tests(lost)
    return {"sent": lost, "failed": failed, "waiting": [t for t in candidates if t in waiting]}
