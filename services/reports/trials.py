"""The rows the figures and the report read: only the columns they need."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.db.models import Job, JobMetric, Sweep
from services.mirror.names import run_name


@dataclass(frozen=True)
class TrialRow:
    """What the LR map, the diagnosis counts and the importance read of one trial."""

    id: str
    trial_index: int | None
    status: str
    objective: float | None
    params: Mapping[str, Any]
    reason: str | None
    diagnosis: list[Any] | None = None


def sweep_trials(session: Session, sweep_id: str, *, diagnosis: bool = False) -> list[TrialRow]:
    """Every trial of the sweep (its diagnosis too if asked), by trial index; one query."""
    columns: list[Any] = [
        Job.id,
        Job.trial_index,
        Job.status,
        Job.objective,
        Job.params,
        Job.prune_reason,
        Job.error,
    ]
    if diagnosis:
        columns.append(Job.diagnosis)
    stmt = select(*columns).where(Job.sweep_id == sweep_id).order_by(Job.trial_index, Job.id)
    return [
        TrialRow(
            id=row.id,
            trial_index=row.trial_index,
            status=row.status,
            objective=row.objective,
            params=row.params or {},
            reason=row.prune_reason or row.error,
            diagnosis=row.diagnosis if diagnosis else None,
        )
        for row in session.execute(stmt)
    ]


def job_history(session: Session, job_id: str) -> list[dict[str, Any]]:
    """The job's epoch records as the database holds them (flat: ``grad_norm.layer_0``)."""
    stmt = (
        select(JobMetric.epoch, JobMetric.metrics)
        .where(JobMetric.job_id == job_id)
        .order_by(JobMetric.epoch)
    )
    return [{**(metrics or {}), "epoch": epoch} for epoch, metrics in session.execute(stmt)]


def job_plot_title(spec: Mapping[str, Any], params: Mapping[str, Any] | None, status: str) -> str:
    """The title of a job's figures: its run name (``lr=0.01 bs=32``) and its status."""
    return f"{run_name(spec, params)} ({status})"


def swept_parameters(sweep: Sweep) -> dict[str, Any]:
    """The sweep's ``parameters`` (dotted path -> its spec), in the sweep's order."""
    return dict((sweep.spec or {}).get("parameters") or {})


def learning_rate_path(parameters: Mapping[str, Any]) -> str | None:
    """The swept parameter that is the learning rate: the first whose path ends in it."""
    return next(
        (p for p in parameters if p == "learning_rate" or p.endswith(".learning_rate")), None
    )
