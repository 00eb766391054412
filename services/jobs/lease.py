"""Who runs a job: the claim (compare-and-set), the lease its owner renews, the
takeover of an expired lease, and the jobs whose workers died too often."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.db.models import (
    Job,
    utcnow,
)
from services.holders import died_here
from services.jobs.ending import retire_checkpoints
from services.jobs.rows import rowcount

log = logging.getLogger(__name__)

# After a renewal that failed (the database away), the next try comes this soon,
# then twice as late each time, up to a third of the lease.
RENEW_BACKOFF = 1.0
# The exit status of a worker process that gave up on a hung job.
EXIT_HUNG = 75


class LeaseHeldError(Exception):
    """Another worker runs this job under a live lease; try again after ``retry_in`` s.

    ``holder`` is the lease holder's ``host:pid`` (see :func:`worker_name`)."""

    def __init__(self, retry_in: float, holder: str | None = None):
        super().__init__(f"job is running elsewhere; lease ends in {retry_in:.1f}s")
        self.retry_in, self.holder = retry_in, holder

    @property
    def holder_died_here(self) -> bool:
        """Whether the holder was a process of this host that no longer exists (killed,
        out of memory): its job is taken over at once (:func:`take_job`)."""
        return died_here(self.holder)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_job(
    session: Session,
    *,
    job_id: str,
    worker: str,
    lease_seconds: float,
    max_attempts: int | None = None,
    dead_holder: tuple[str, int] | None = None,
) -> Job | None:
    """Take a queued job, or a running one whose lease expired; None if neither.

    A job whose workers died ``max_attempts`` times is not taken again
    (:func:`fail_exhausted` ends it); attempts that a clean stop released
    (``Job.released``) do not count. ``dead_holder`` (worker name, attempt): also
    take the job from that attempt, whose process is known to be gone, without
    waiting for its lease (:func:`take_job`).
    """
    now = utcnow()
    lapsed = Job.lease_expires_at < now
    if dead_holder is not None:
        lapsed = or_(lapsed, and_(Job.worker == dead_holder[0], Job.attempts == dead_holder[1]))
    takeover = and_(Job.status == "running", lapsed)
    if max_attempts is not None:
        takeover = and_(takeover, _lost() < max_attempts)
    # One statement: the compare-and-set, and the claimed row back (RETURNING).
    return session.scalars(
        update(Job)
        .where(
            Job.id == job_id,
            or_(Job.status == "queued", takeover),
        )
        .values(
            status="running",
            worker=worker,
            attempts=Job.attempts + 1,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            started_at=func.coalesce(Job.started_at, now),
            updated_at=now,
        )
        .returning(Job),
        execution_options={"synchronize_session": False, "populate_existing": True},
    ).one_or_none()


def take_job(
    session: Session,
    *,
    job_id: str,
    worker: str,
    lease_seconds: float,
    max_attempts: int | None = None,
) -> Job | None:
    """:func:`claim_job`, and a job whose holder died on this host (killed, out of
    memory) taken over at once: Celery sends its message again as soon as the
    process is gone, and its lease would otherwise keep it waiting up to
    ``lease_seconds`` while a process idles. The takeover is a compare-and-set
    on the dead attempt (its worker name and number): one claimant wins."""
    job = claim_job(
        session,
        job_id=job_id,
        worker=worker,
        lease_seconds=lease_seconds,
        max_attempts=max_attempts,
    )
    if job is not None:
        return job
    current = session.get(Job, job_id, populate_existing=True)
    if current is None or current.status != "running" or current.worker is None:
        return None
    if not LeaseHeldError(0, holder=current.worker).holder_died_here:
        return None
    return claim_job(
        session,
        job_id=job_id,
        worker=worker,
        lease_seconds=lease_seconds,
        max_attempts=max_attempts,
        dead_holder=(current.worker, current.attempts),
    )


def _lost() -> Any:
    """How many of a job's attempts ended with their worker lost (SQL expression)."""
    return Job.attempts - Job.released


def renew_lease(session: Session, *, job_id: str, attempt: int, lease_seconds: float) -> bool:
    """Push this attempt's lease forward; False if the job is no longer its own."""
    return bool(
        rowcount(
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "running", Job.attempts == attempt)
                .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
            )
        )
    )


def expired_leases(session: Session, *, max_attempts: int | None = None) -> list[str]:
    """Ids of running jobs whose worker stopped renewing its lease (and may retry)."""
    stmt = select(Job.id).where(Job.status == "running", Job.lease_expires_at < utcnow())
    if max_attempts is not None:
        stmt = stmt.where(_lost() < max_attempts)
    return list(session.scalars(stmt))


def fail_exhausted(session: Session, *, max_attempts: int) -> list[tuple[str, str | None]]:
    """Fail running jobs whose lease expired after ``max_attempts`` attempts.

    Returns (job id, sweep id) of each: a job that kills its worker every time
    (say, out of memory) must end, not travel from worker to worker forever.
    """
    now = utcnow()
    stmt = select(Job.id, Job.sweep_id).where(
        Job.status == "running", Job.lease_expires_at < now, _lost() >= max_attempts
    )
    rows = [(job_id, sweep_id) for job_id, sweep_id in session.execute(stmt)]
    ended = []
    for job_id, sweep_id in rows:
        done = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running", Job.lease_expires_at < now)
            .values(
                status="failed",
                finished_at=now,
                updated_at=now,
                lease_expires_at=None,
                error=f"the worker running it was lost {max_attempts} times; giving up",
            )
        )
        if rowcount(done):
            ended.append((job_id, sweep_id))
    retire_checkpoints(session, [job_id for job_id, _ in ended])  # final: see jobs.ending
    return ended


def stale_queued(session: Session, *, older_than: float) -> list[str]:
    """Ids of jobs queued for ``older_than`` seconds, their clock reset so that each
    is picked at most once per period. Sending their message again is harmless:
    the claim is a compare-and-set, so a duplicate finds nothing to do.
    """
    cutoff = utcnow() - timedelta(seconds=older_than)
    ids = list(
        session.scalars(select(Job.id).where(Job.status == "queued", Job.updated_at < cutoff))
    )
    if ids:
        session.execute(
            update(Job).where(Job.id.in_(ids), Job.status == "queued").values(updated_at=utcnow())
        )
    return ids


class LeaseKeeper:
    """Renew a job's lease from a background thread while the trainer works.

    The lease is also renewed at each flush, but one epoch can outlast it (a big
    dataset, a slow machine); without this, another worker would take over a
    live job. The thread wakes every third of the lease, so it costs one small
    UPDATE every ~20 s and nothing on the training path.

    A renewal that fails because the database is away is tried again (sooner,
    backing off) and does not lose the lease: ``valid_until`` (monotonic clock)
    says until when the last successful renewal holds it, and the run decides
    what to do once it has passed. ``lost`` is set only when the database says
    that another attempt owns the job.

    Renewal also depends on progress: the run sets ``progress_at`` at each
    mini-batch; after ``hung_seconds`` without progress the job is declared
    hung, renewals stop, ``hung`` is set and ``on_hung`` runs (by default the
    process exits, so that Celery's pool replaces it and the job's expired
    lease sends it to another worker, or fails it after its attempts).
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        job_id: str,
        attempt: int,
        lease_seconds: float,
        hung_seconds: float | None = None,
        on_hung: Callable[[LeaseKeeper], None] | None = None,
    ):
        self.sessions, self.job_id, self.attempt = sessions, job_id, attempt
        self.lease_seconds = lease_seconds
        self.hung_seconds = hung_seconds
        self.on_hung = on_hung or exit_hung_process
        self.lost = threading.Event()
        self.hung = threading.Event()
        now = time.monotonic()
        self.valid_until = now + lease_seconds  # the claim has just set the lease
        self.progress_at = now
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{job_id[:8]}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.lease_seconds)

    def renewed(self, started: float) -> None:
        """A write that began at ``started`` (monotonic) renewed the lease."""
        self.valid_until = max(self.valid_until, started + self.lease_seconds)

    def expired(self) -> bool:
        """Whether the lease may have run out (no renewal got through in time)."""
        return time.monotonic() > self.valid_until

    def check(self) -> bool:
        """Renew once, now; True if the database answered (the lease renewed, or ``lost``
        set). A write that failed while this answers was refused for its own sake."""
        started = time.monotonic()
        try:
            owned = self._renew()
        except Exception:
            return False
        if owned:
            self.renewed(started)
        else:
            self.lost.set()
        return True

    def _renew(self) -> bool:
        """One renewal in its own transaction: True if this attempt still owns the job."""
        with self.sessions() as session:
            owned = renew_lease(
                session, job_id=self.job_id, attempt=self.attempt, lease_seconds=self.lease_seconds
            )
            session.commit()
        return owned

    def _loop(self) -> None:
        tick = self.lease_seconds / 3
        delay, failures = tick, 0
        while not self._stop.wait(delay):
            if self._hung():
                return
            started = time.monotonic()
            try:
                owned = self._renew()
            except Exception:  # the database is busy or away: try again soon
                failures += 1
                delay = min(tick, RENEW_BACKOFF * 2 ** (failures - 1))
                log.warning(
                    "could not renew the lease of job %s (try %d); it holds for %.1f s more",
                    self.job_id,
                    failures,
                    max(0.0, self.valid_until - time.monotonic()),
                    exc_info=failures == 1,
                )
                continue
            if not owned:
                self.lost.set()
                return
            self.renewed(started)
            delay, failures = tick, 0

    def _hung(self) -> bool:
        if self.hung_seconds is None:
            return False
        idle = time.monotonic() - self.progress_at
        if idle <= self.hung_seconds:
            return False
        self.hung.set()
        log.error(
            "job %s is hung: no training progress for %.0f s (limit %.0f s); "
            "its lease is no longer renewed and this worker process exits",
            self.job_id,
            idle,
            self.hung_seconds,
        )
        self.on_hung(self)
        return True


def exit_hung_process(keeper: LeaseKeeper) -> None:
    """End this process at once (its pool replaces it): a hung job may be stuck in a
    call (BLAS, a lock, a socket) that no exception raised from here would interrupt."""
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(EXIT_HUNG)
