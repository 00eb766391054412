"""What a new trial takes over from an earlier job instead of starting from nothing.

Its results, when it is identical to a succeeded job of its owner (an earlier trial of
this sweep or any job of theirs): it copies that job instead of training
(``services.reuse``). Its checkpoint, when it replays a trial a resume runs again
(``services.sweeps.lifecycle``) and that trial left one: the checkpoint moves to the
replay with the epochs up to it, and the worker continues from there.

The trials reused while a session advanced sweeps are noted on the session, so that
whoever commits it can hand them to the MLflow mirror (they never pass a worker)."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.orm import Session

from services import reuse
from services.db.models import Job, JobCheckpoint, utcnow

_KEY = "sweeplab.reused_trials"


def reuse_trial(session: Session, job: Job) -> bool:
    """Fingerprint the new queued trial ``job`` and, unless its spec says ``"reuse":
    false``, make it a copy of an identical succeeded job; True if it was. A replay
    that is not reused takes over its original's checkpoint, if there is one."""
    job.fingerprint = reuse.fingerprint(job.spec)
    if not reuse.reuse_into(session, job):
        original = (job.proposal or {}).get("replays")
        if original:
            carry_checkpoint(session, job, original)
        return False
    session.info.setdefault(_KEY, []).append(job.id)
    return True


def carry_checkpoint(session: Session, job: Job, original_id: str) -> bool:
    """Move the checkpoint of trial ``original_id`` to its replay ``job`` (new, queued),
    with the epochs up to it (copied: the original keeps its curve); True if there was
    one. Its worker then resumes from it, as after a clean stop (``make down``)."""
    checkpoint = session.get(JobCheckpoint, original_id)
    if checkpoint is None:
        return False
    reuse.copy_epochs(session, original_id, job.id, up_to=checkpoint.epoch)
    session.add(
        JobCheckpoint(
            job_id=job.id, epoch=checkpoint.epoch, data=checkpoint.data, updated_at=utcnow()
        )
    )
    # as a job a clean stop released at its checkpoint: an attempt before, not a lost
    # worker, so that its worker resumes (a first attempt starts afresh)
    job.attempts, job.released = 1, 1
    session.flush()
    session.execute(
        delete(JobCheckpoint)
        .where(JobCheckpoint.job_id == original_id)
        .execution_options(synchronize_session=False)
    )
    session.expunge(checkpoint)
    return True


def reused_trials(session: Session) -> list[str]:
    """The ids of the trials reused in ``session`` since the last call (then forgotten)."""
    return list(session.info.pop(_KEY, []))
