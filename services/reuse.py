"""Reuse of an identical run: a job whose spec, seed, trainer and numpy are those of a
job of the same owner that already succeeded gives the same numbers bit for bit (the
trainer is deterministic), so it is not trained again: it copies that job's rows.

A job's ``fingerprint`` is the SHA-256 of its normalized trainer spec (the seed is in
it; the name, the service's fields ``limits``/``experiment``/``reuse`` and an uploaded
dataset's id are not: the dataset's content hash is), the trainer's source and numpy's
version. It is stored with every job (indexed), so that finding a source is one
indexed query.

Rows are copied, not referenced: the reused job is an ordinary finished job (its
metrics, weights, predict and MLflow routes read its own rows, and deleting the source
takes nothing from it). The copy is done by ``INSERT .. SELECT`` in the database; its
cost is the source's metrics rows and one weights blob (bounded by ``max_params``).
Its best epoch and objective are recomputed from the copied epochs with its own
objective (a trial is ranked by its sweep's), exactly as a run records them.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import exists, insert, literal, select
from sqlalchemy.orm import Session

from services.db.models import Job, JobMetric, JobWeights, utcnow
from services.ranking import Tracker, objective_for
from services.specs import has_validation, trainer_spec

TRAINER_DIR = Path(__file__).resolve().parent / "trainer"


@cache
def trainer_version() -> str:
    """The SHA-256 of the trainer's source: any change to it is another trainer."""
    digest = hashlib.sha256()
    for path in sorted(TRAINER_DIR.rglob("*.py")):
        digest.update(path.relative_to(TRAINER_DIR).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def fingerprint_payload(spec: dict[str, Any]) -> dict[str, Any]:
    """What decides a run's numbers: the normalized trainer spec without its name and an
    uploaded dataset's id (its ``sha256`` names the rows), the trainer, numpy."""
    trainer = trainer_spec(spec)
    trainer.pop("name", None)
    dataset = dict(trainer.get("dataset") or {})
    if dataset.get("name") == "uploaded":
        dataset.pop("id", None)
    trainer["dataset"] = dataset
    return {"spec": trainer, "trainer": trainer_version(), "numpy": np.__version__}


def fingerprint(spec: dict[str, Any]) -> str:
    """The fingerprint of a normalized job ``spec`` (64 hex digits)."""
    text = json.dumps(fingerprint_payload(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def wants_reuse(spec: dict[str, Any]) -> bool:
    return spec.get("reuse") is not False


def find_source(session: Session, *, fingerprint: str, owner_id: str | None) -> Job | None:
    """The oldest succeeded job of ``owner_id`` with this fingerprint and its weights."""
    owner = Job.owner_id.is_(None) if owner_id is None else Job.owner_id == owner_id
    stmt = (
        select(Job)
        .where(
            Job.fingerprint == fingerprint,
            owner,
            Job.status == "succeeded",
            exists().where(JobWeights.job_id == Job.id),
        )
        .order_by(Job.finished_at, Job.id)
        .limit(1)
    )
    return session.scalars(stmt).first()


#: the columns of a learning curve's row that a copy takes
METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy", "metrics")


def copy_epochs(session: Session, source_id: str, job_id: str, up_to: int | None = None) -> None:
    """Copy job ``source_id``'s learning curve (up to epoch ``up_to``) to ``job_id``, in
    the database (``INSERT .. SELECT``)."""
    rows = select(
        literal(job_id), *(getattr(JobMetric, c) for c in METRIC_COLUMNS), JobMetric.created_at
    ).where(JobMetric.job_id == source_id)
    if up_to is not None:
        rows = rows.where(JobMetric.epoch <= up_to)
    session.execute(
        insert(JobMetric).from_select(
            ("job_id", *METRIC_COLUMNS, "created_at"), rows.order_by(JobMetric.epoch)
        )
    )


def copy_results(session: Session, job: Job, source: Job) -> None:
    """Make ``job`` (flushed) a succeeded copy of ``source``: its epochs, weights,
    result and diagnosis, its best epoch and objective by its own objective. Flushes."""
    copy_epochs(session, source.id, job.id)
    session.execute(
        insert(JobWeights).from_select(
            ("job_id", "epoch", "data", "created_at"),
            select(literal(job.id), JobWeights.epoch, JobWeights.data, literal(utcnow())).where(
                JobWeights.job_id == source.id
            ),
        )
    )
    tracker = Tracker(
        objective_for(session, job),
        n_layers=len(job.spec["architecture"]["layers"]) + 1,
        has_validation=has_validation(job.spec),
    )
    rows = session.execute(
        select(JobMetric.epoch, JobMetric.metrics)
        .where(JobMetric.job_id == source.id)
        .order_by(JobMetric.epoch)
    )
    for epoch, metrics in rows:
        tracker.update(epoch, metrics)
    for key, value in tracker.progress().items():
        setattr(job, key, value)
    now = utcnow()
    job.status = "succeeded"
    job.result = source.result
    job.diagnosis = source.diagnosis
    job.train_seconds = 0.0  # nothing was trained (the result keeps the source's seconds)
    job.started_at = job.finished_at = job.updated_at = now
    job.reused_from = source.reused_from or source.id
    session.flush()


def reuse_into(session: Session, job: Job) -> bool:
    """Fill the new ``job`` (flushed, its fingerprint set) from an identical succeeded
    job of its owner if there is one and its spec allows it; True if it was."""
    if not job.fingerprint or not wants_reuse(job.spec):
        return False
    source = find_source(session, fingerprint=job.fingerprint, owner_id=job.owner_id)
    if source is None or source.id == job.id:
        return False
    copy_results(session, job, source)
    return True
