"""What a run writes: its epochs (one row each, batched), its latest checkpoint,
and its final status, each only while it still owns the job."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Table, delete, insert, update
from sqlalchemy.exc import (
    DBAPIError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session

from services.db.models import (
    Job,
    JobCheckpoint,
    JobMetric,
    JobWeights,
    utcnow,
)
from services.jobs.ending import drop_checkpoint, retire_checkpoints
from services.jobs.rows import rowcount
from services.trainer import flatten_record

METRIC_COLUMNS = ("train_loss", "val_loss", "train_accuracy", "val_accuracy")

# A job's ``error`` is read by people and shown in MLflow: a few lines at most.
MAX_ERROR_CHARS = 500
# Errors whose message is the trainer's word on the spec or the data (SpecError
# is a ValueError): kept, type and message. Anything else may carry SQL, hosts
# or paths in its text; the job says what failed in words, the log the rest.
TRAINER_ERRORS = (ValueError, TypeError, ArithmeticError, RuntimeError, LookupError)


def clip_error(text: str) -> str:
    """``text`` on one line of printable characters, at most MAX_ERROR_CHARS long."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    if len(flat) <= MAX_ERROR_CHARS:
        return flat
    return flat[: MAX_ERROR_CHARS - 1].rstrip() + "\u2026"


def training_error(err: BaseException) -> str:
    """What a job's ``error`` says about an exception out of the training (the
    trainer, or the epoch callback that records its epochs)."""
    if _database_error(err):
        return (
            "the database was unavailable while recording epochs; the worker's log has the details"
        )
    if isinstance(err, MemoryError):
        return "the training ran out of memory"
    if isinstance(err, TRAINER_ERRORS) and not isinstance(err, OSError):
        return clip_error(f"{type(err).__name__}: {err}")
    return (
        f"the training stopped on an unexpected {type(err).__name__}; "
        "the worker's log has the details"
    )


def recording_error(err: BaseException) -> str:
    """What a job's ``error`` says when its final epochs could not be written."""
    if _database_error(err):
        return (
            "the database was unavailable while recording the final epochs; "
            "the worker's log has the details"
        )
    return (
        f"recording the final epochs failed on an unexpected {type(err).__name__}; "
        "the worker's log has the details"
    )


def _database_error(err: BaseException) -> bool:
    """An error of SQLAlchemy or of a DB-API driver (sqlite3, psycopg: their
    exceptions derive from a class named ``Error`` in a module with ``Error``
    and ``OperationalError``), whose text holds SQL, parameters or hosts."""
    if isinstance(err, SQLAlchemyError):
        return True
    module = type(err).__module__.split(".")[0]
    return module in {"sqlite3", "psycopg", "psycopg2"}


def transient_error(err: BaseException) -> bool:
    """Whether ``err`` says the database is away or busy (down, restarting, a dropped
    connection, a full pool, SQLite's "database is locked"), not that the write is
    wrong: the infrastructure's fault, which a running job waits out."""
    if isinstance(err, OperationalError | InterfaceError | PoolTimeoutError):
        return True
    return isinstance(err, DBAPIError) and bool(err.connection_invalidated)


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


def flat_record(record: dict[str, Any]) -> dict[str, Any]:

    return jsonable(flatten_record(record))


#: The hot writes of a run (each epoch flush, the finish) go through SQLAlchemy Core
#: on the tables: the ORM's bulk-update bookkeeping cost ~0.2 ms a statement, and no
#: Job object of these sessions needs refreshing.
JOBS: Table = Job.__table__  # type: ignore[assignment]  # a Table, typed FromClause
METRICS: Table = JobMetric.__table__  # type: ignore[assignment]
WEIGHTS: Table = JobWeights.__table__  # type: ignore[assignment]


def metric_row(epoch: int, flat: dict[str, Any]) -> dict[str, Any]:
    row = {"epoch": epoch, "metrics": flat}
    for name in METRIC_COLUMNS:
        value = flat.get(name)
        row[name] = value if isinstance(value, int | float) else None
    return row


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
    # One statement renews the lease, writes the progress and reads the cancel flag.
    flag = (
        session.connection()
        .execute(
            update(JOBS)
            .where(JOBS.c.id == job_id, JOBS.c.status == "running", JOBS.c.attempts == attempt)
            .values(
                lease_expires_at=now + timedelta(seconds=lease_seconds), updated_at=now, **progress
            )
            .returning(JOBS.c.cancel_requested)
        )
        .scalar()
    )
    if flag is None:
        return FlushResult(owned=False)
    if rows:
        session.connection().execute(
            insert(METRICS), [{"job_id": job_id, "created_at": now, **r} for r in rows]
        )
    if checkpoint is not None:
        epoch, data = checkpoint
        session.execute(delete(JobCheckpoint).where(JobCheckpoint.job_id == job_id))
        session.add(JobCheckpoint(job_id=job_id, epoch=epoch, data=data, updated_at=now))
        session.flush()
    return FlushResult(owned=True, cancel_requested=bool(flag))


def finish_job(
    session: Session,
    *,
    job_id: str,
    attempt: int,
    status: str,
    weights: JobWeights | None = None,
    checkpoint_stored: bool = True,
    **values: Any,
) -> bool:
    """Set the final status if this attempt still owns the running job; then store its
    final ``weights`` and delete its checkpoint (see ``services.jobs.ending``).

    ``checkpoint_stored=False`` says that no attempt of the job stored a checkpoint
    (a short first attempt): nothing to delete then, and no earlier weights."""
    if values.get("error") is not None:
        values["error"] = clip_error(str(values["error"]))
    now = utcnow()
    owned = _update_owned(
        session,
        job_id,
        attempt,
        status=status,
        finished_at=now,
        updated_at=now,
        lease_expires_at=None,
        **values,
    )
    if owned and weights is not None:
        row = {"job_id": job_id, "epoch": weights.epoch, "data": weights.data, "created_at": now}
        if checkpoint_stored or attempt > 1:
            session.connection().execute(delete(WEIGHTS).where(WEIGHTS.c.job_id == job_id))
            drop_checkpoint(session, job_id)
        session.connection().execute(insert(WEIGHTS).values(**row))
    elif owned:
        retire_checkpoints(session, [job_id])
    return owned


def _update_owned(session: Session, job_id: str, attempt: int, **values: Any) -> bool:
    """Compare-and-set: write ``values`` if ``attempt`` still owns the running job."""
    owned = update(JOBS).where(
        JOBS.c.id == job_id, JOBS.c.status == "running", JOBS.c.attempts == attempt
    )
    return bool(rowcount(session.connection().execute(owned.values(**values))))


def release_job(session: Session, *, job_id: str, attempt: int) -> bool:
    """Hand the running job back without counting this attempt as a lost worker.

    Its lease ends now (the next claim may take it at once and resumes from its
    checkpoint), ``released`` grows by one (see ``claim_job``) and it has no
    worker any more (so that ``make down`` does not release it a second time).
    False if this attempt no longer owns the job.
    """
    now = utcnow()
    return _update_owned(
        session,
        job_id,
        attempt,
        lease_expires_at=now,
        released=Job.released + 1,
        worker=None,
        updated_at=now,
    )
