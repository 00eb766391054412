"""What a run writes: its epochs (one row each, batched), its latest checkpoint,
and its final status, each only while it still owns the job."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from services.db.models import (
    Job,
    JobCheckpoint,
    JobMetric,
    utcnow,
)
from services.jobs.rows import rowcount
from services.trainer import flatten_record

METRIC_COLUMNS = ("train_loss", "val_loss", "train_accuracy", "val_accuracy")


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
    owned = rowcount(
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
        rowcount(
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "running", Job.attempts == attempt)
                .values(
                    status=status, finished_at=now, updated_at=now, lease_expires_at=None, **values
                )
            )
        )
    )
