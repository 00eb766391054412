"""The job lifecycle: create, claim, record epochs, checkpoint, finish, cancel.

Query helpers flush but never commit: the caller (a route or a task) owns the
transaction. Every status change is a compare-and-set UPDATE, so a message
delivered twice, or a worker that lost its lease, cannot overwrite a result.
:func:`execute_job` is what a worker runs for one ``run_job`` message.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import numbers
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

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
from services.specs import has_validation

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("train_loss", "val_loss", "train_accuracy", "val_accuracy")


class JobFinishedError(Exception):
    """The job is already in a final state (cancel is then a 409)."""


class LeaseHeldError(Exception):
    """Another worker runs this job under a live lease; try again after ``retry_in`` s."""

    def __init__(self, retry_in: float):
        super().__init__(f"job is running elsewhere; lease ends in {retry_in:.1f}s")
        self.retry_in = retry_in


class BadCursorError(ValueError):
    pass


def _rowcount(result: Any) -> int:
    """Rows matched by an UPDATE (a ``CursorResult``)."""
    return int(result.rowcount)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# --- creating, reading, listing -------------------------------------------------


def create_job(
    session: Session,
    *,
    spec: dict[str, Any],
    name: str | None = None,
    sweep_id: str | None = None,
    trial_index: int | None = None,
    params: dict[str, Any] | None = None,
    proposal: dict[str, Any] | None = None,
    status: str = "queued",
    error: str | None = None,
) -> Job:
    """Insert a job (``queued`` unless told otherwise) and flush it."""
    hp = spec.get("hyperparameters") or {}
    now = utcnow()
    job = Job(
        name=name or spec.get("name"),
        status=status,
        sweep_id=sweep_id,
        trial_index=trial_index,
        params=params,
        proposal=proposal,
        spec=spec,
        epochs_total=int(hp.get("epochs") or 0),
        epochs_done=0,
        error=error,
        cancel_requested=False,
        attempts=0,
        created_at=now,
        updated_at=now,
        finished_at=now if status in TERMINAL_STATUSES else None,
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id)


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, row_id = json.loads(raw)
        if not isinstance(stamp, str) or not isinstance(row_id, str):
            raise TypeError("a cursor holds a timestamp and an id")
        created_at = datetime.fromisoformat(stamp)
    except (ValueError, TypeError) as err:
        raise BadCursorError("cursor is not one this API handed out") from err
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=timezone.utc)
    return created_at, row_id


def paginate(session: Session, model: Any, stmt: Any, *, cursor: str | None, limit: int):
    """Newest first, keyset pagination on (created_at, id); returns (rows, next_cursor)."""
    if cursor:
        stamp, row_id = decode_cursor(cursor)
        stmt = stmt.where(
            or_(model.created_at < stamp, and_(model.created_at == stamp, model.id < row_id))
        )
    stmt = stmt.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)
    rows = list(session.scalars(stmt))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None)


def list_jobs(
    session: Session,
    *,
    statuses: list[str] | None = None,
    sweep_id: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Job], str | None]:
    stmt = select(Job)
    if statuses:
        stmt = stmt.where(Job.status.in_(statuses))
    if sweep_id:
        stmt = stmt.where(Job.sweep_id == sweep_id)
    return paginate(session, Job, stmt, cursor=cursor, limit=limit)


def job_metrics(session: Session, job_id: str) -> list[JobMetric]:
    stmt = select(JobMetric).where(JobMetric.job_id == job_id).order_by(JobMetric.epoch)
    return list(session.scalars(stmt))


# --- cancelling -------------------------------------------------------------------


def request_cancel(session: Session, job_id: str) -> Job:
    """Cancel a queued job at once, or flag a running one to stop at its next epoch.

    Raises :class:`JobFinishedError` when the job is already final and
    ``LookupError`` when there is no such job.
    """
    now = utcnow()
    done = _rowcount(
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued")
            .values(status="cancelled", cancel_requested=True, finished_at=now, updated_at=now)
        )
    )
    if not done:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running")
            .values(cancel_requested=True, updated_at=now)
        )
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise LookupError(job_id)
    if not done and job.status in TERMINAL_STATUSES:
        raise JobFinishedError(job.status)
    return job


def fail_unqueued(session: Session, job_ids: list[str], err: Exception) -> None:
    """Mark jobs whose message could not be sent as failed (if nobody took them)."""
    now = utcnow()
    session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.status.in_(("queued", "cancelled")))
        .values(status="failed", error=f"could not be queued: {err}", finished_at=now,
                updated_at=now)
    )  # fmt: skip


# --- the worker's side: claim, record, finish ---------------------------------------


def claim_job(
    session: Session, *, job_id: str, worker: str, lease_seconds: float,
    max_attempts: int | None = None,
) -> Job | None:  # fmt: skip
    """Take a queued job, or a running one whose lease expired; None if neither.

    A job whose workers died ``max_attempts`` times is not taken again
    (:func:`fail_exhausted` ends it); attempts that a clean stop released
    (``Job.released``) do not count.
    """
    now = utcnow()
    takeover = and_(Job.status == "running", Job.lease_expires_at < now)
    if max_attempts is not None:
        takeover = and_(takeover, _lost() < max_attempts)
    claimed = _rowcount(
        session.execute(
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
        )
    )
    if not claimed:
        return None
    return session.get(Job, job_id, populate_existing=True)


def load_checkpoint(session: Session, job_id: str) -> JobCheckpoint | None:
    return session.get(JobCheckpoint, job_id)


@dataclass
class FlushResult:
    owned: bool
    cancel_requested: bool = False


def record_epochs(
    session: Session,
    *,
    job_id: str,
    attempt: int,
    rows: list[dict[str, Any]],
    progress: dict[str, Any],
    lease_seconds: float,
    checkpoint: tuple[int, bytes] | None = None,
) -> FlushResult:
    """Write a batch of epoch rows and the job's progress, renewing the lease.

    ``attempt`` fences the write: a worker whose job was taken over after its
    lease expired finds ``owned=False`` and must stop.
    """
    now = utcnow()
    owned = _rowcount(
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running", Job.attempts == attempt)
            .values(
                lease_expires_at=now + timedelta(seconds=lease_seconds), updated_at=now, **progress
            )
        )
    )
    if not owned:
        return FlushResult(owned=False)
    if rows:
        session.execute(
            insert(JobMetric), [{"job_id": job_id, "created_at": now, **r} for r in rows]
        )
    if checkpoint is not None:
        epoch, data = checkpoint
        session.execute(delete(JobCheckpoint).where(JobCheckpoint.job_id == job_id))
        session.add(JobCheckpoint(job_id=job_id, epoch=epoch, data=data, updated_at=now))
        session.flush()
    flag = session.scalar(select(Job.cancel_requested).where(Job.id == job_id))
    return FlushResult(owned=True, cancel_requested=bool(flag))


def finish_job(session: Session, *, job_id: str, attempt: int, status: str, **values: Any) -> bool:
    """Set the final status if this attempt still owns the running job."""
    now = utcnow()
    return bool(
        _rowcount(
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "running", Job.attempts == attempt)
                .values(
                    status=status, finished_at=now, updated_at=now, lease_expires_at=None, **values
                )
            )
        )
    )


def _lost() -> Any:
    """How many of a job's attempts ended with their worker lost (SQL expression)."""
    return Job.attempts - Job.released


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
            .values(status="failed", finished_at=now, updated_at=now, lease_expires_at=None,
                    error=f"the worker running it was lost {max_attempts} times; giving up")
        )  # fmt: skip
        if _rowcount(done):
            ended.append((job_id, sweep_id))
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


def renew_lease(session: Session, *, job_id: str, attempt: int, lease_seconds: float) -> bool:
    """Push this attempt's lease forward; False if the job is no longer its own."""
    return bool(
        _rowcount(
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "running", Job.attempts == attempt)
                .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
            )
        )
    )


class LeaseKeeper:
    """Renew a job's lease from a background thread while the trainer works.

    The lease is also renewed at each flush, but one epoch can outlast it (a big
    dataset, a slow machine); without this, another worker would take over a
    live job. The thread wakes every third of the lease, so it costs one small
    UPDATE every ~20 s and nothing on the training path.
    """

    def __init__(self, *, sessions: sessionmaker[Session], job_id: str, attempt: int,
                 lease_seconds: float):  # fmt: skip
        self.sessions, self.job_id, self.attempt = sessions, job_id, attempt
        self.lease_seconds = lease_seconds
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{job_id[:8]}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.lease_seconds)

    def _loop(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                with self.sessions() as session:
                    owned = renew_lease(session, job_id=self.job_id, attempt=self.attempt,
                                        lease_seconds=self.lease_seconds)  # fmt: skip
                    session.commit()
            except Exception:  # the database is busy or away: try again next tick
                log.warning("could not renew the lease of job %s", self.job_id, exc_info=True)
                continue
            if not owned:
                self.lost.set()
                return


# --- running one job ---------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Plain JSON types (numpy scalars and arrays too), non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    if hasattr(value, "tolist"):  # numpy arrays and numpy.bool_
        return jsonable(value.tolist())
    return str(value)


def _flatten(record: dict[str, Any]) -> dict[str, Any]:
    from services.trainer import flatten_record

    return jsonable(flatten_record(record))


@dataclass
class Objective:
    """Which number ranks epochs and trials, and which way is better.

    ``min_delta``: an epoch must beat the best by more than this to become the
    best (a job's own early stopping; 0 for a sweep's ranking). ``fallback``:
    without a validation set the training loss stands in for ``val_loss`` (a
    job's own best epoch, as the trainer picks it; never a sweep's ranking,
    where such a trial has no objective).
    """

    metric: str = "val_loss"
    goal: str = "minimize"
    min_delta: float = 0.0
    fallback: bool = False

    def key(self, spec: dict[str, Any]) -> str:
        """The metric the objective's values are for a job of ``spec``."""
        if self.fallback and self.metric == "val_loss" and not has_validation(spec):
            return "train_loss"
        return self.metric

    def better(self, a: float | None, b: float | None) -> bool:
        """Is ``a`` strictly better than ``b`` (None is worst)?"""
        if a is None:
            return False
        if b is None:
            return True
        return a < b - self.min_delta if self.goal == "minimize" else a > b + self.min_delta


def job_objective(spec: dict[str, Any]) -> Objective:
    """A job's own best epoch, as the trainer picks it: by its early-stopping metric
    (with ``min_delta``), else by the validation loss (the training loss without a
    validation set); ``spec`` is a normalized job spec."""
    es = (spec.get("hyperparameters") or {}).get("early_stopping")
    if not es:
        return Objective(fallback=True)
    metric = es.get("metric", "val_loss")
    goal = "maximize" if metric.endswith("accuracy") else "minimize"
    return Objective(metric, goal, float(es.get("min_delta") or 0.0))


@dataclass
class Tracker:
    """Latest and best epoch of one run, and the running best objective per epoch.

    As the trainer does, an epoch that diverged (no training loss, a weight
    norm or, with a validation set, the validation loss not finite) is never
    the best; see ``Objective.fallback`` for a job without a validation set.
    ``n_layers`` (0: unknown) is how many weight norms a finite epoch has;
    ``has_validation`` (from the spec: ``services.specs.has_validation``) also
    turns True at the first epoch with a validation loss.
    """

    objective: Objective
    n_layers: int = 0
    has_validation: bool = False
    epochs_done: int = 0
    latest: dict[str, Any] | None = None
    best: dict[str, Any] | None = None
    best_epoch: int | None = None
    best_value: float | None = None
    running_best: dict[int, float | None] = field(default_factory=dict)

    def finite(self, flat: dict[str, Any]) -> bool:
        """Whether ``flat`` (a flattened record) is an epoch the trainer kept training past."""
        return (
            flat.get("train_loss") is not None
            and (not self.has_validation or flat.get("val_loss") is not None)
            and all(f"weight_norm.layer_{i}" in flat for i in range(self.n_layers))
        )

    def update(self, epoch: int, flat: dict[str, Any]) -> None:
        self.epochs_done = max(self.epochs_done, epoch)
        self.latest = flat
        self.has_validation = self.has_validation or flat.get("val_loss") is not None
        value = None
        if self.finite(flat):
            value = flat.get(self.objective.metric)
            fallback = self.objective.fallback and not self.has_validation
            if value is None and self.objective.metric == "val_loss" and fallback:
                value = flat.get("train_loss")
        if self.objective.better(value, self.best_value):
            self.best_value, self.best, self.best_epoch = value, flat, epoch
        self.running_best[epoch] = self.best_value

    def progress(self) -> dict[str, Any]:
        return {
            "epochs_done": self.epochs_done,
            "latest_metrics": self.latest,
            "best_metrics": self.best,
            "best_epoch": self.best_epoch,
            "objective": self.best_value,
        }


def metric_row(epoch: int, flat: dict[str, Any]) -> dict[str, Any]:
    row = {"epoch": epoch, "metrics": flat}
    for name in METRIC_COLUMNS:
        value = flat.get(name)
        row[name] = value if isinstance(value, int | float) else None
    return row


def notify_tracking(settings: Settings, hook: str, job_id: str) -> None:
    """Tell the MLflow mirror (when enabled) through ``services.tracking.<hook>``; never raise."""
    if not settings.mlflow_tracking_uri:
        return
    from services import tracking  # late: the mirror builds on jobs and sweeps

    try:
        getattr(tracking, hook)(settings, job_id)
    except Exception:  # the mirror must never fail a job
        log.exception("tracking.%s failed for job %s", hook, job_id)


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
        prune: Callable[[Session, int, dict[int, float | None]], str | None] | None,
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
        self.lease = LeaseKeeper(sessions=session_factory, job_id=job.id, attempt=job.attempts,
                                 lease_seconds=settings.lease_seconds)  # fmt: skip

    def on_epoch(self, record: dict[str, Any]) -> bool:
        if self.lease.lost.is_set():  # another worker owns the job now
            self.stop_reason = "lost"
            return True
        epoch = int(record["epoch"])
        flat = _flatten(record)
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
        notify_tracking(self.settings, "job_progressed", self.job_id)

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
        from services.trainer import fit

        values: dict[str, Any] = {}
        with self.lease:
            return self._run(fit, resume_from, values)

    def _run(self, fit: Callable[..., Any], resume_from: bytes | None,
             values: dict[str, Any]) -> str:  # fmt: skip
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
            values["error"] = f"{type(err).__name__}: {err}"
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
                status, values["error"] = "failed", f"recording metrics failed: {err}"
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
        notify_tracking(self.settings, "job_finished", self.job_id)
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
    from services import sweeps

    with session_factory() as session:
        job = claim_job(
            session, job_id=job_id, worker=worker or worker_name(),
            lease_seconds=settings.lease_seconds, max_attempts=settings.max_attempts,
        )  # fmt: skip
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
        objective, prune = sweeps.policy_for(session, job)
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
        sweeps.advance_and_enqueue(
            settings=settings, session_factory=session_factory, dispatcher=dispatcher,
            sweep_id=sweep_id,
        )  # fmt: skip
    return status
