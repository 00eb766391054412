"""What a job's final state does to what it stored: its checkpoint goes.

A checkpoint is there to resume a job that has not ended; once a job is final
(``succeeded``, ``failed``, ``diverged``, ``cancelled``, ``pruned``,
``timed_out``: none of them is ever resumed) it is dead weight, rewritten
every few epochs and never read again. Every path that makes a job final
calls one of these in the transaction that writes the final status, so a
final job never keeps one. Its final weights stay (``job_weights``); a job
that ends without them (its training failed, or it ended between attempts:
cancelled before a new attempt started, failed after its workers were lost
too often) keeps its checkpoint's network instead, at the checkpoint's epoch,
so that the last weights it reached still reach MLflow.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session

from services.db.models import TERMINAL_STATUSES, Job, JobCheckpoint, JobWeights, utcnow
from services.trainer import checkpoint

log = logging.getLogger(__name__)


def drop_checkpoint(session: Session, job_id: str) -> None:
    """Delete the checkpoint of a job that ended with its final weights stored."""
    session.execute(
        delete(JobCheckpoint)
        .where(JobCheckpoint.job_id == job_id)
        .execution_options(synchronize_session=False)
    )


def retire_checkpoints(session: Session, job_ids: Collection[str]) -> None:
    """Delete the checkpoints of jobs that have just ended; a job among them without
    final weights gets its checkpoint's network as its weights first. Only the final
    ones of ``job_ids`` are touched (one that a worker claimed meanwhile keeps its own)."""
    if not job_ids:
        return
    ids = select(Job.id).where(Job.id.in_(list(job_ids)), Job.status.in_(TERMINAL_STATUSES))
    orphans = select(JobCheckpoint.job_id, JobCheckpoint.epoch, JobCheckpoint.data).where(
        JobCheckpoint.job_id.in_(ids),
        ~exists().where(JobWeights.job_id == JobCheckpoint.job_id),
    )
    for job_id, epoch, blob in session.execute(orphans).all():
        npz = _network_npz(job_id, bytes(blob))
        if npz is not None:
            session.add(JobWeights(job_id=job_id, epoch=epoch, data=npz, created_at=utcnow()))
    session.flush()
    session.execute(
        delete(JobCheckpoint)
        .where(JobCheckpoint.job_id.in_(ids))
        .execution_options(synchronize_session=False)
    )


def _network_npz(job_id: str, blob: bytes) -> bytes | None:
    """The checkpoint's network as ``Network.to_npz_bytes()``; None (and a warning) if
    it cannot be read: the checkpoint goes all the same."""
    try:
        return checkpoint.checkpoint_network(blob).to_npz_bytes()
    except Exception:
        log.warning("job %s: its checkpoint's weights cannot be read", job_id, exc_info=True)
        return None
