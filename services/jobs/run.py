"""The run of one job in a worker: claim it, resume from its checkpoint, train
epoch by epoch (recording, renewing the lease, checking cancel and pruning),
finish, and let its sweep start the next trial.

:func:`execute_job` is what a worker runs for one ``run_job`` message."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.orm import Session, sessionmaker

from services import trainer
from services.celery_app import Dispatcher
from services.config import Settings
from services.db.models import (
    TERMINAL_STATUSES,
    Job,
    JobCheckpoint,
    JobMetric,
    JobWeights,
    utcnow,
)
from services.jobs.lease import LeaseHeldError, LeaseKeeper, claim_job, worker_name
from services.jobs.records import (
    finish_job,
    flat_record,
    jsonable,
    load_checkpoint,
    metric_row,
    record_epochs,
    recording_error,
    training_error,
)
from services.jobs.rows import job_metrics
from services.mirror import catch_up as mirror
from services.ranking import Objective, Tracker
from services.specs import has_validation
from services.sweeps.pruning import PruneFn, policy_for
from services.sweeps.scheduler import advance_and_enqueue

log = logging.getLogger(__name__)


def tell_mirror(hook: Callable[[Settings, str], None], settings: Settings, job_id: str) -> None:
    """Call a hook of the MLflow mirror (it returns at once, and does nothing when
    mirroring is off); the mirror must never fail a job."""
    try:
        hook(settings, job_id)
    except Exception:
        log.exception("the MLflow mirror's %s failed for job %s", hook.__name__, job_id)


class JobRun:
    """One attempt at one job, wired to the trainer through ``on_epoch``."""

    def __init__(
        self,
        *,
        settings: Settings,
        session_factory: sessionmaker[Session],
        dispatcher: Dispatcher,
        job: Job,
        objective: Objective,
        prune: PruneFn | None,
    ):
        self.settings = settings
        self.sessions = session_factory
        self.dispatcher = dispatcher
        self.job_id = job.id
        self.attempt = job.attempts
        self.spec = job.spec
        self.tracker = Tracker(
            objective,
            n_layers=len(job.spec["architecture"]["layers"]) + 1,
            has_validation=has_validation(job.spec),
        )
        # The epochs before the checkpoint, which a resumed fit needs (checkpoints
        # do not carry the history: the database has it).
        self.history: list[dict[str, Any]] | None = None
        self.prune = prune
        self.buffer: list[dict[str, Any]] = []
        self.pending_checkpoint: tuple[int, bytes] | None = None
        self.stop_reason: str | None = None  # "cancelled" | "pruned" | "lost"
        self.prune_reason: str | None = None
        self.last_flush = time.monotonic()
        self.redis_ok = True
        self.lease = LeaseKeeper(
            sessions=session_factory,
            job_id=job.id,
            attempt=job.attempts,
            lease_seconds=settings.lease_seconds,
        )

    def on_epoch(self, record: dict[str, Any]) -> bool:
        if self.lease.lost.is_set():  # another worker owns the job now
            self.stop_reason = "lost"
            return True
        epoch = int(record["epoch"])
        flat = flat_record(record)
        self.tracker.update(epoch, flat)
        self.buffer.append(metric_row(epoch, flat))
        if self._cancel_flag():
            self.stop_reason = "cancelled"
        if self.prune is not None and self.stop_reason is None:
            self._check_prune()
        if self.stop_reason or time.monotonic() - self.last_flush >= self.settings.flush_seconds:
            self.flush()
        return self.stop_reason is not None

    def on_checkpoint(self, epoch: int, blob: bytes) -> None:
        self.pending_checkpoint = (epoch, blob)

    def _cancel_flag(self) -> bool:
        if not self.redis_ok:
            return False
        try:
            return self.dispatcher.cancel_requested(self.job_id)
        except Exception:  # Redis down: the database flag is still read at each flush
            log.warning("cancel flag unreadable in Redis; relying on the database")
            self.redis_ok = False
            return False

    def _check_prune(self) -> None:
        """The sweep's pruning rule at this epoch boundary, against the peers' stored epochs."""
        assert self.prune is not None
        try:
            with self.sessions() as session:
                reason = self.prune(session, self.tracker.epochs_done, self.tracker.running_best)
                session.rollback()
        except Exception:  # the database is checked again at the next boundary
            log.warning("pruning check failed for job %s", self.job_id, exc_info=True)
            return
        if reason:
            self.stop_reason, self.prune_reason = "pruned", reason

    def flush(self) -> None:
        """Write buffered epochs (and the latest checkpoint); check cancel."""
        with self.sessions() as session:
            result = record_epochs(
                session,
                job_id=self.job_id,
                attempt=self.attempt,
                rows=self.buffer,
                progress=self.tracker.progress(),
                lease_seconds=self.settings.lease_seconds,
                checkpoint=self.pending_checkpoint,
            )
            if not result.owned:
                session.rollback()
                self.stop_reason = "lost"
                return
            if result.cancel_requested and self.stop_reason is None:
                self.stop_reason = "cancelled"
            session.commit()
        self.buffer, self.pending_checkpoint = [], None
        self.last_flush = time.monotonic()
        tell_mirror(mirror.job_progressed, self.settings, self.job_id)

    def restore(self, session: Session, checkpoint: JobCheckpoint | None) -> bytes | None:
        """Drop epochs past the checkpoint (they will be replayed) and rebuild the tracker."""
        keep = checkpoint.epoch if checkpoint is not None else 0
        session.execute(
            delete(JobMetric).where(JobMetric.job_id == self.job_id, JobMetric.epoch > keep)
        )
        rows = job_metrics(session, self.job_id)
        for row in rows:
            self.tracker.update(row.epoch, row.metrics)
        self.history = [row.metrics for row in rows] if checkpoint is not None else None
        progress = self.tracker.progress()
        session.execute(
            update(Job).where(Job.id == self.job_id).values(**progress, updated_at=utcnow())
        )
        return checkpoint.data if checkpoint is not None else None

    def run(self, resume_from: bytes | None) -> str:
        """Train, then record the outcome; returns the final status (or "lost")."""

        values: dict[str, Any] = {}
        with self.lease:
            return self._run(trainer.fit, resume_from, values)

    def _run(
        self, fit: Callable[..., Any], resume_from: bytes | None, values: dict[str, Any]
    ) -> str:
        try:
            result = fit(
                self.spec,
                on_epoch=self.on_epoch,
                resume_from=resume_from,
                history=self.history if resume_from is not None else None,
                checkpoint_every=self.settings.checkpoint_every,
                on_checkpoint=self.on_checkpoint,
            )
        except Exception as err:  # a trainer error fails the job, with its message
            log.exception("job %s failed", self.job_id)
            status, weights = "failed", None
            values["error"] = training_error(err)
        else:
            weights = JobWeights(
                job_id=self.job_id, epoch=len(result.history), data=result.network.to_npz_bytes()
            )
            status = {"diverged": "diverged", "stopped": self.stop_reason or "cancelled"}.get(
                result.status, "succeeded"
            )
            values["result"] = jsonable(result.summary())
            values["diagnosis"] = jsonable(result.diagnosis)
            values["train_seconds"] = float(result.seconds)
        if self.stop_reason == "lost":
            return "lost"
        if self.buffer or self.pending_checkpoint:
            try:
                self.flush()
            except Exception as err:
                log.exception("final flush failed for job %s", self.job_id)
                status, values["error"] = "failed", recording_error(err)
            if self.stop_reason == "lost":
                return "lost"
        if status == "pruned":
            values["prune_reason"] = self.prune_reason
        with self.sessions() as session:
            owned = finish_job(
                session,
                job_id=self.job_id,
                attempt=self.attempt,
                status=status,
                **self.tracker.progress(),
                **values,
            )
            if owned and weights is not None:
                session.merge(weights)
            session.commit()
        if not owned:
            return "lost"
        tell_mirror(mirror.job_finished, self.settings, self.job_id)
        return status


def execute_job(
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    dispatcher: Dispatcher,
    job_id: str,
    worker: str | None = None,
) -> str:
    """Claim ``job_id``, train it (resuming from its checkpoint) and record the outcome.

    Returns the final status, "missing", "finished" (nothing to do) or "lost".
    Raises :class:`LeaseHeldError` when another worker holds a live lease on it.
    """
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
                return "missing"
            if current.status in TERMINAL_STATUSES:
                return "finished"
            lease = current.lease_expires_at or utcnow()
            if lease < utcnow():  # not claimable although expired: no attempts left
                return "exhausted"  # the recover task fails it
            raise LeaseHeldError(max(0.5, (lease - utcnow()).total_seconds() + 0.5))
        objective, prune = policy_for(session, job)
        run = JobRun(
            settings=settings,
            session_factory=session_factory,
            dispatcher=dispatcher,
            job=job,
            objective=objective,
            prune=prune,
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
    if sweep_id and status != "lost":
        advance_and_enqueue(
            settings=settings,
            session_factory=session_factory,
            dispatcher=dispatcher,
            sweep_id=sweep_id,
        )
    return status
