"""The run of one job in a worker: claim it, resume from its checkpoint, train
epoch by epoch (recording, renewing the lease, checking cancel and pruning),
finish, and let its sweep start the next trial.

:class:`JobRun` is one attempt at one job; ``services.jobs.execute.execute_job`` is
what a worker runs for one ``run_job`` message.

The infrastructure never fails a job. While the database is away, epochs stay
buffered and their write is retried with backoff as long as the lease holds;
an outage that outlasts the lease, or a warm shutdown (:data:`SHUTDOWN`, set
on SIGTERM by ``worker/shutdown.py``), stops the training at the next
mini-batch and *releases* the job: no attempt counted, and the next claim
resumes it from its checkpoint. Checkpoints come every ``checkpoint_every``
epochs and at the first epoch boundary after ``checkpoint_seconds`` of
training; a job stops with status ``timed_out`` at its wall-clock limit; a job
that makes no progress for ``hung_seconds`` is declared hung (see
:class:`LeaseKeeper`).

At about 450 lines this module is longer than the house's 400 on purpose: it
is one class, :class:`JobRun`, whose steps (epochs, checkpoints, writes that
wait out an outage, stops, release) share one attempt's state (the buffered
epochs, the lease, the stop reason); cut apart, that state would travel
between modules as arguments."""

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
from services.datasets import fit_data
from services.db.models import (
    Job,
    JobCheckpoint,
    JobMetric,
    JobWeights,
    utcnow,
)
from services.jobs.lease import LeaseKeeper
from services.jobs.limits import (
    FLUSH_BACKOFF,
    FLUSH_BACKOFF_MAX,
    SHUTDOWN,
    SHUTDOWN_WRITE_SECONDS,
    TRAINING,
    WRITE_REFUSALS,
    RunLimits,
)
from services.jobs.records import (
    finish_job,
    flat_record,
    jsonable,
    metric_row,
    record_epochs,
    recording_error,
    release_job,
    training_error,
    transient_error,
)
from services.jobs.rows import job_metrics
from services.mirror import catch_up as mirror
from services.models import weights_blob
from services.ranking import Objective, Tracker
from services.specs import has_validation, trainer_spec
from services.sweeps.pruning import PruneFn

log = logging.getLogger(__name__)


def tell_mirror(hook: Callable[[Settings, str], None], settings: Settings, job_id: str) -> None:
    """Call a hook of the MLflow mirror (it returns at once, and does nothing when
    mirroring is off); the mirror must never fail a job."""
    try:
        hook(settings, job_id)
    except Exception:
        log.exception("the MLflow mirror's %s failed for job %s", hook.__name__, job_id)


class JobRun:
    """One attempt at one job, wired to the trainer through ``on_epoch``, ``interrupt``
    and ``checkpoint_due``."""

    def __init__(
        self,
        *,
        settings: Settings,
        session_factory: sessionmaker[Session],
        dispatcher: Dispatcher,
        job: Job,
        objective: Objective,
        prune: PruneFn | None,
        limits: RunLimits | None = None,
        on_hung: Callable[[LeaseKeeper], None] | None = None,
    ):
        self.settings = settings
        self.limits = limits = limits or RunLimits.from_settings(settings)
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
        self.checkpoint_stored = False  # by this attempt (perhaps rolled back: then too)
        # "cancelled" | "pruned" | "timed_out" | "released" | "lost"
        self.stop_reason: str | None = None
        self.release_reason = ""
        self.prune_reason: str | None = None
        self.max_seconds = limits.for_job(job.spec)
        self.seconds_before = 0.0  # training time of earlier attempts, up to the checkpoint
        self.started = self.checkpoint_at = self.last_flush = time.monotonic()
        self.flush_failures, self.retry_at, self.refusals = 0, 0.0, 0
        self.redis_ok = True
        self.lease = LeaseKeeper(
            sessions=session_factory,
            job_id=job.id,
            attempt=job.attempts,
            lease_seconds=settings.lease_seconds,
            hung_seconds=limits.hung_seconds,
            on_hung=on_hung,
        )

    # ------------------------------------------------------------------ the trainer's hooks

    def interrupt(self) -> bool:
        """Before each mini-batch: record progress; stop on a warm shutdown, a lost
        lease, or a lease that ran out while the database was away."""
        now = time.monotonic()
        lease = self.lease
        lease.progress_at = now
        if SHUTDOWN.requested:
            self.stop_reason, self.release_reason = "released", "a warm shutdown"
        elif lease.lost.is_set() or lease.hung.is_set():
            self.stop_reason = "lost"
        elif now > lease.valid_until:
            self.stop_reason = "released"
            self.release_reason = "the database was unreachable for longer than the lease"
        else:
            return False
        return True

    def on_epoch(self, record: dict[str, Any]) -> bool:
        self.lease.progress_at = time.monotonic()
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
        if self.stop_reason is None and self.training_seconds() >= self.max_seconds:
            self.stop_reason = "timed_out"
        if self.stop_reason or time.monotonic() - self.last_flush >= self.settings.flush_seconds:
            self.try_flush()
        return self.stop_reason is not None

    def checkpoint_due(self, _epoch: int) -> bool:
        """A checkpoint by time (beside every ``checkpoint_every`` epochs)."""
        if self.stop_reason is not None:  # cancelled, pruned, timed out, lost: no resume
            return False
        return time.monotonic() - self.checkpoint_at >= self.limits.checkpoint_seconds

    def on_checkpoint(self, epoch: int, blob: bytes) -> None:
        self.pending_checkpoint = (epoch, blob)
        self.checkpoint_at = time.monotonic()

    def training_seconds(self) -> float:
        return self.seconds_before + time.monotonic() - self.started

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

    # ------------------------------------------------------------------ writes

    def _write_epochs(self, session: Session) -> bool:
        """Buffered epochs and the latest checkpoint into ``session``; False (and the
        run stops) if this attempt no longer owns the job."""
        started = time.monotonic()
        self.checkpoint_stored = self.checkpoint_stored or self.pending_checkpoint is not None
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
            self.stop_reason = "lost"
            return False
        self.lease.renewed(started)
        if result.cancel_requested and self.stop_reason is None:
            self.stop_reason = "cancelled"
        return True

    def flush(self) -> None:
        """Write buffered epochs (and the latest checkpoint); check cancel. Raises
        what the database raised."""
        with self.sessions() as session:
            if not self._write_epochs(session):
                session.rollback()
                return
            session.commit()
        self.buffer, self.pending_checkpoint = [], None
        self.last_flush = time.monotonic()
        tell_mirror(mirror.job_progressed, self.settings, self.job_id)

    def try_flush(self) -> bool:
        """:meth:`flush`, unless a failed one asked to wait; while the database is away
        the epochs stay buffered and the next try backs off (the lease keeper, and
        ``interrupt``, decide when the job must be released)."""
        now = time.monotonic()
        if now < self.retry_at:
            return False
        try:
            self.flush()
        except Exception as err:
            if not transient_error(err) or self._refused():
                raise
            self.flush_failures += 1
            delay = min(FLUSH_BACKOFF_MAX, FLUSH_BACKOFF * 2 ** (self.flush_failures - 1))
            self.retry_at = now + delay
            log.warning(
                "job %s: the database is unavailable (%s); %d epoch(s) buffered, next try "
                "in %.1f s",
                self.job_id,
                type(err).__name__,
                len(self.buffer),
                delay,
                exc_info=self.flush_failures == 1,
            )
            return False
        self.flush_failures, self.retry_at, self.refusals = 0, 0.0, 0
        return True

    def _refused(self) -> bool:
        """After a write failed with what looks like an outage: whether the database
        answers anyway (a renewal of the lease, now), for the WRITE_REFUSALS-th time in
        a row; then the write itself is at fault."""
        if self.lease.check():
            self.refusals += 1
        return self.refusals >= WRITE_REFUSALS

    def persist(self, write: Callable[[Session], bool], patience: float) -> bool | None:
        """Run ``write(session)`` and commit, retrying with backoff for up to ``patience``
        seconds while the database is away. ``write``'s answer (False: not owned, it
        rolled back), or None if the database stayed away."""
        deadline = time.monotonic() + patience
        delay = FLUSH_BACKOFF
        while True:
            self.lease.progress_at = time.monotonic()  # waiting on the database is not hung
            try:
                with self.sessions() as session:
                    done = write(session)
                    if done:
                        session.commit()
                    else:
                        session.rollback()
                return done
            except Exception as err:
                if not transient_error(err) or self._refused():
                    raise
                if self.lease.lost.is_set():
                    return False
                if time.monotonic() + delay > deadline:
                    log.error(
                        "job %s: the database stayed unavailable for %.0f s; giving up on "
                        "this attempt (its lease runs out, and the job resumes elsewhere)",
                        self.job_id,
                        patience,
                    )
                    return None
                log.warning("job %s: final write failed (%s); retrying", self.job_id, err)
                time.sleep(delay)
                delay = min(FLUSH_BACKOFF_MAX, delay * 2)

    def restore(self, session: Session, checkpoint: JobCheckpoint | None) -> bytes | None:
        """Drop epochs past the checkpoint (they will be replayed) and rebuild the tracker."""
        keep = checkpoint.epoch if checkpoint is not None else 0
        session.execute(
            delete(JobMetric).where(JobMetric.job_id == self.job_id, JobMetric.epoch > keep)
        )
        rows = job_metrics(session, self.job_id)
        for row in rows:
            self.tracker.update(row.epoch, row.metrics)
            seconds = (row.metrics or {}).get("seconds")
            if isinstance(seconds, int | float):
                self.seconds_before += float(seconds)
        self.history = [row.metrics for row in rows] if checkpoint is not None else None
        progress = self.tracker.progress()
        session.execute(
            update(Job).where(Job.id == self.job_id).values(**progress, updated_at=utcnow())
        )
        return checkpoint.data if checkpoint is not None else None

    # ------------------------------------------------------------------ the run

    def run(self, resume_from: bytes | None) -> str:
        """Train, then record the outcome; returns the final status, "released" or "lost"."""

        values: dict[str, Any] = {}
        self.started = self.checkpoint_at = time.monotonic()
        TRAINING.set()
        try:
            with self.lease:
                return self.train_and_record(trainer.fit, resume_from, values)
        finally:
            TRAINING.clear()

    def train_and_record(
        self, fit: Callable[..., Any], resume_from: bytes | None, values: dict[str, Any]
    ) -> str:
        """Train with ``fit`` (``trainer.fit``, or a pack's stand-in that hands over its
        trial's result: ``services.jobs.pack_run``) and record the outcome."""
        try:
            result = fit(
                trainer_spec(self.spec),
                data=fit_data(self.spec, self.sessions, self.settings),  # datasets: uploaded rows
                on_epoch=self.on_epoch,
                resume_from=resume_from,
                history=self.history if resume_from is not None else None,
                checkpoint_every=self.settings.checkpoint_every,
                on_checkpoint=self.on_checkpoint,
                checkpoint_due=self.checkpoint_due,
                interrupt=self.interrupt,
            )
        except Exception as err:  # a trainer error fails the job, with its message
            log.exception("job %s failed", self.job_id)
            status, weights = "failed", None
            values["error"] = training_error(err)
        else:
            weights = JobWeights(  # with the data's statistics and labels (services.models)
                job_id=self.job_id,
                epoch=len(result.history),
                data=weights_blob(result.network, result.data),
            )
            status = {"diverged": "diverged", "stopped": self.stop_reason or "cancelled"}.get(
                result.status, "succeeded"
            )
            values["result"] = jsonable(result.summary())
            values["diagnosis"] = jsonable(result.diagnosis)
            values["train_seconds"] = float(result.seconds)
        if self.stop_reason == "lost" or self.lease.hung.is_set():
            return "lost"
        if self.stop_reason == "released":
            return self._release()
        if status == "pruned":
            values["prune_reason"] = self.prune_reason
        if status == "timed_out":
            values["diagnosis"] = [self._timed_out(), *values.get("diagnosis", [])]
        try:
            owned = self.persist(
                lambda session: self._finish(session, status, values, weights),
                self.limits.final_write_seconds,
            )
        except Exception as err:  # not the database being away: a write that cannot succeed
            log.exception("final flush failed for job %s", self.job_id)
            values["error"], self.buffer, self.pending_checkpoint = recording_error(err), [], None
            status, weights = "failed", None
            owned = self.persist(
                lambda session: self._finish(session, status, values, weights),
                self.limits.final_write_seconds,
            )
        if not owned:
            return "lost"
        tell_mirror(mirror.job_finished, self.settings, self.job_id)
        return status

    def _finish(
        self, session: Session, status: str, values: dict[str, Any], weights: JobWeights | None
    ) -> bool:
        if weights is not None:
            self.pending_checkpoint = None  # finish_job would delete it at once
        if (self.buffer or self.pending_checkpoint) and not self._write_epochs(session):
            return False
        return finish_job(  # stores the weights and deletes the checkpoint (jobs.ending)
            session,
            job_id=self.job_id,
            attempt=self.attempt,
            status=status,
            weights=weights,
            checkpoint_stored=self.checkpoint_stored,
            **self.tracker.progress(),
            **values,
        )

    def _release(self) -> str:
        """Write what is buffered and hand the job back (no attempt counted)."""
        patience = self.limits.final_write_seconds
        if SHUTDOWN.requested:
            patience = min(patience, SHUTDOWN_WRITE_SECONDS)

        def release(session: Session) -> bool:
            if (self.buffer or self.pending_checkpoint) and not self._write_epochs(session):
                return False
            return release_job(session, job_id=self.job_id, attempt=self.attempt)

        if not self.persist(release, patience):
            return "lost"
        log.warning(
            "job %s released after %s; it resumes from its checkpoint",
            self.job_id,
            self.release_reason,
        )
        return "released"

    def _timed_out(self) -> dict[str, Any]:
        """The diagnosis entry of a job stopped at its wall-clock limit."""
        done, total = self.tracker.epochs_done, self.spec["hyperparameters"].get("epochs")
        return {
            "code": "timed_out",
            "message": (
                f"stopped at the wall-clock limit of {self.max_seconds:g} s of training, "
                f"after epoch {done} of {total}"
            ),
            "evidence": {
                "limit_seconds": self.max_seconds,
                "training_seconds": round(self.training_seconds(), 3),
                "epochs_done": done,
                "epochs": total,
            },
            "suggestion": (
                "fewer epochs, a smaller network or dataset, or a larger "
                "hyperparameters.max_seconds (up to the server's limit)"
            ),
        }
