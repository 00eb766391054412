"""The database side of the mirror: what one pass reads of a job or a sweep (in
one short transaction), the bookkeeping it writes back, and what lags."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update

from services.db import Job, JobCheckpoint, JobMetric, JobWeights, Sweep
from services.db.models import TERMINAL_STATUSES as TERMINAL
from services.mirror.names import SWEEP_RUN_STATUS, experiment_name, to_ms
from services.mirror.plumbing import session_scope
from services.ranking import best_trial, leaderboard, objective_for
from services.trainer import checkpoint

log = logging.getLogger(__name__)


@dataclass
class JobSnapshot:
    """What one mirror pass needs of a job, read in one short transaction."""

    id: str
    status: str
    name: str | None
    spec: dict[str, Any]
    params: dict[str, Any] | None
    sweep_id: str | None
    trial_index: int | None
    mlflow_run_id: str | None
    mlflow_experiment_id: str | None
    synced_epoch: int
    synced_status: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any] | None
    diagnosis: list[Any] | None
    error: str | None
    prune_reason: str | None
    best_epoch: int | None
    objective: float | None
    attempts: int
    worker: str | None
    epochs: list[tuple[int, int | None, dict[str, Any]]] = field(default_factory=list)
    train_seconds: float | None = None
    sweep_size: int | None = None  # its sweep's n_trials (read by the final pass only)


@dataclass
class SweepSnapshot:
    id: str
    name: str | None
    experiment: str
    status: str
    method: str
    spec: dict[str, Any]
    objective_metric: str
    objective_goal: str
    n_trials: int
    max_concurrency: int
    created_at: datetime | None
    finished_at: datetime | None
    mlflow_run_id: str | None
    mlflow_experiment_id: str | None
    synced_status: str | None


def load_job(session: Any, job_id: str, *, after_epoch: int | None) -> JobSnapshot | None:

    job = session.get(Job, job_id)
    if job is None:
        return None
    snap = JobSnapshot(
        id=job.id,
        status=job.status,
        name=job.name,
        spec=dict(job.spec or {}),
        params=job.params,
        sweep_id=job.sweep_id,
        trial_index=job.trial_index,
        mlflow_run_id=job.mlflow_run_id,
        mlflow_experiment_id=job.mlflow_experiment_id,
        synced_epoch=job.mlflow_synced_epoch or 0,
        synced_status=job.mlflow_synced_status,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        result=job.result,
        diagnosis=job.diagnosis,
        error=job.error,
        prune_reason=job.prune_reason,
        best_epoch=job.best_epoch,
        objective=job.objective,
        attempts=job.attempts,
        worker=job.worker,
        train_seconds=job.train_seconds,
    )
    floor = snap.synced_epoch if after_epoch is None else after_epoch
    rows = session.execute(
        select(JobMetric.epoch, JobMetric.created_at, JobMetric.metrics)
        .where(JobMetric.job_id == job_id, JobMetric.epoch > floor)
        .order_by(JobMetric.epoch)
    )
    snap.epochs = [(epoch, to_ms(created), dict(metrics or {})) for epoch, created, metrics in rows]
    return snap


def load_sweep(session: Any, sweep_id: str) -> SweepSnapshot | None:
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        return None
    return SweepSnapshot(
        id=sweep.id,
        name=sweep.name,
        experiment=experiment_name(sweep.experiment),
        status=sweep.status,
        method=sweep.method,
        spec=dict(sweep.spec or {}),
        objective_metric=sweep.objective_metric,
        objective_goal=sweep.objective_goal,
        n_trials=sweep.n_trials,
        max_concurrency=sweep.max_concurrency,
        created_at=sweep.created_at,
        finished_at=sweep.finished_at,
        mlflow_run_id=sweep.mlflow_run_id,
        mlflow_experiment_id=sweep.mlflow_experiment_id,
        synced_status=sweep.mlflow_synced_status,
    )


def update_job(settings: Any, job_id: str, *, force: bool = False, **values: Any) -> None:
    """Write mirror bookkeeping in its own short transaction (leaves updated_at alone)."""

    stmt = update(Job).where(Job.id == job_id)
    if "mlflow_synced_epoch" in values and not force:  # never move backwards
        stmt = stmt.where(Job.mlflow_synced_epoch < values["mlflow_synced_epoch"])
    with session_scope(settings) as session:
        session.execute(stmt.values(updated_at=Job.updated_at, **values))
        session.commit()


def update_sweep(settings: Any, sweep_id: str, **values: Any) -> None:

    with session_scope(settings) as session:
        session.execute(
            update(Sweep).where(Sweep.id == sweep_id).values(updated_at=Sweep.updated_at, **values)
        )
        session.commit()


def final_weights(settings: Any, job_id: str) -> tuple[str, bytes] | None:
    """Return (artifact name, ``.npz`` bytes) of the job's last stored weights, or None.

    The network the job ended with (``job_weights``, stored when training
    returned) is ``weights.npz``; a job that failed mid-way keeps its latest
    checkpoint's network there instead (``services.jobs.ending``), or has only
    that checkpoint while it is not final: those weights are named
    ``weights_epoch_<k>.npz``.
    """
    with session_scope(settings) as session:
        job = session.get(Job, job_id)
        if job is None:
            return None
        final = session.get(JobWeights, job_id)
        if final is not None:
            name = "weights.npz" if final.epoch >= job.epochs_done else None
            return name or f"weights_epoch_{final.epoch}.npz", bytes(final.data)
        ckpt = session.get(JobCheckpoint, job_id)
        if ckpt is None:
            return None
        blob, epoch, last = bytes(ckpt.data), ckpt.epoch, job.epochs_done
    try:
        npz = checkpoint_weights_npz(blob)
    except Exception:  # a checkpoint we cannot read must not stop the mirror
        log.warning("cannot read the weights of job %s from its checkpoint", job_id, exc_info=True)
        return None
    return ("weights.npz" if epoch >= last else f"weights_epoch_{epoch}.npz"), npz


def checkpoint_weights_npz(blob: bytes) -> bytes:
    """Turn a trainer checkpoint into the ``Network.to_npz_bytes()`` format."""
    return checkpoint.checkpoint_network(blob).to_npz_bytes()


def objective_key(session: Any, job_id: str) -> str | None:
    """The metric a job's ``objective`` is (its sweep's, or its own best epoch's)."""
    job = session.get(Job, job_id)
    return None if job is None else objective_for(session, job).key(job.spec or {})


def sweep_trials(settings: Any, sweep_id: str) -> list[dict[str, Any]]:

    with session_scope(settings) as session:
        jobs = session.scalars(
            select(Job).where(Job.sweep_id == sweep_id).order_by(Job.trial_index)
        ).all()
        sweep = session.get(Sweep, sweep_id)
        best = best_trial(sweep, leaderboard(sweep, list(jobs))) if sweep is not None else None
        return [
            {
                "id": j.id,
                "status": j.status,
                "spec": j.spec,
                "params": j.params,
                "objective": j.objective,
                "run_id": j.mlflow_run_id,
                "synced_status": j.mlflow_synced_status,
                "trial_index": j.trial_index,
                "best_metrics": j.best_metrics,
                "best": j is best,
            }
            for j in jobs
        ]


def job_sweep_id(settings: Any, job_id: str) -> str | None:
    """Return the sweep a job belongs to (None for a single job or an unknown id)."""
    with session_scope(settings) as session:
        job = session.get(Job, job_id)
        return job.sweep_id if job is not None else None


def sweep_size(session: Any, sweep_id: str | None) -> int | None:
    """How many trials a sweep has (None for a single job)."""
    if not sweep_id:
        return None
    return session.scalar(select(Sweep.n_trials).where(Sweep.id == sweep_id))


def sweep_ids_of(settings: Any, job_ids: list[str]) -> set[str]:
    """The sweeps these jobs belong to."""
    with session_scope(settings) as session:
        stmt = select(Job.sweep_id).where(Job.id.in_(job_ids), Job.sweep_id.is_not(None))
        return {sweep_id for sweep_id in session.scalars(stmt.distinct()) if sweep_id}


def sweep_mirror_final(settings: Any, sweep_id: str) -> bool | None:
    """Return True when the sweep's mirror is closed, False when it should be, None if not yet.

    None means the sweep still runs trials (a later trial's end brings us back).
    False means the sweep has ended, or is about to (every trial is final and
    none is left to create), but its parent run is not closed yet.
    """

    with session_scope(settings) as session:
        sweep = session.get(Sweep, sweep_id)
        if sweep is None:
            return True
        if sweep.status in SWEEP_RUN_STATUS:
            return sweep.mlflow_synced_status == sweep.status
        statuses = list(session.scalars(select(Job.status).where(Job.sweep_id == sweep_id)))
        if sweep.n_created >= sweep.n_trials and all(s in TERMINAL for s in statuses):
            return False
        return None


def lagging(settings: Any, limit: int = 500) -> tuple[list[str], list[str]]:
    """Return the ids of jobs and sweeps whose mirror is behind the database."""

    with session_scope(settings) as session:
        jobs = session.scalars(
            select(Job.id)
            .where(
                or_(
                    and_(
                        Job.status.in_(TERMINAL),
                        or_(
                            Job.mlflow_synced_status.is_(None),
                            Job.mlflow_synced_status != Job.status,
                        ),
                    ),
                    and_(Job.status == "running", Job.mlflow_synced_epoch < Job.epochs_done),
                )
            )
            .order_by(Job.created_at)
            .limit(limit)
        ).all()
        sweeps = session.scalars(
            select(Sweep.id)
            .where(
                Sweep.status.in_(list(SWEEP_RUN_STATUS)),
                or_(
                    Sweep.mlflow_synced_status.is_(None),
                    Sweep.mlflow_synced_status != Sweep.status,
                ),
            )
            .order_by(Sweep.created_at)
            .limit(limit)
        ).all()
        session.rollback()
    return list(jobs), list(sweeps)
