"""A sweep's trial that is identical to a succeeded job of its owner (an earlier trial of
this sweep or any job of theirs) copies that job instead of training (``services.reuse``).

The trials reused while a session advanced sweeps are noted on the session, so that
whoever commits it can hand them to the MLflow mirror (they never pass a worker)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from services import reuse
from services.db.models import Job

_KEY = "sweeplab.reused_trials"


def reuse_trial(session: Session, job: Job) -> bool:
    """Fingerprint the new queued trial ``job`` and, unless its spec says ``"reuse":
    false``, make it a copy of an identical succeeded job; True if it was."""
    job.fingerprint = reuse.fingerprint(job.spec)
    if not reuse.reuse_into(session, job):
        return False
    session.info.setdefault(_KEY, []).append(job.id)
    return True


def reused_trials(session: Session) -> list[str]:
    """The ids of the trials reused in ``session`` since the last call (then forgotten)."""
    return list(session.info.pop(_KEY, []))
