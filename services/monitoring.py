"""What ``/metrics`` reads from the database when it is scraped."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.db.models import JOB_STATUSES, Job


def job_totals(session: Session) -> tuple[dict[str, int], int]:
    """Jobs by status (every status, 0 where none) and the epochs they have trained
    (the sum of ``epochs_done``), in one grouped query over ``jobs``."""
    stmt = select(Job.status, func.count(), func.coalesce(func.sum(Job.epochs_done), 0)).group_by(
        Job.status
    )
    counts = dict.fromkeys(JOB_STATUSES, 0)
    epochs = 0
    for status, count, done in session.execute(stmt):
        counts[status] = int(count)
        epochs += int(done)
    return counts, epochs
