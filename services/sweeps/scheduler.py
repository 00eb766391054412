"""The scheduler that advances a sweep: never more than ``max_concurrency``
trials queued or running.

:func:`advance_sweep` creates the next trials under a row lock on the sweep
(``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite the write transaction
serializes writers) and is called when the sweep is created and whenever one
of its trials ends."""

from __future__ import annotations

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.celery_app import Dispatcher
from services.config import Limits, Settings
from services.db.models import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    Job,
    JobCheckpoint,
    JobMetric,
    JobWeights,
    Sweep,
    utcnow,
)
from services.db.pages import paginate
from services.jobs.rows import create_job
from services.specs import (
    SpecValidationError,
    SweepCreate,
    apply_params,
    validate_job,
)
from services.sweeps.samplers import propose


def create_sweep(
    session: Session,
    *,
    sweep: SweepCreate,
    limits: Limits | None = None,
    owner_id: str | None = None,
) -> tuple[Sweep, list[str]]:
    """Insert the sweep and its first trials; returns (sweep, job ids to enqueue)."""
    spec = sweep.model_dump(mode="json")
    spec["base"] = sweep.base.model_dump(mode="json", exclude_unset=True)
    now = utcnow()
    row = Sweep(
        owner_id=owner_id,
        name=sweep.name,
        experiment=sweep.experiment,
        status="running",
        method=sweep.method,
        spec=spec,
        objective_metric=sweep.objective.metric,
        objective_goal=str(sweep.objective.goal),
        max_concurrency=sweep.max_concurrency,
        n_trials=sweep.total_trials(),
        n_created=0,
        seed=sweep.seed,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row, advance_sweep(session, row.id, limits=limits)


def lock_sweep(session: Session, sweep_id: str) -> Sweep | None:
    """Load the sweep row for update (a row lock on PostgreSQL)."""
    stmt = select(Sweep).where(Sweep.id == sweep_id).execution_options(populate_existing=True)
    if session.get_bind().dialect.name != "sqlite":
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def sweep_trials(session: Session, sweep_id: str) -> list[Job]:
    stmt = select(Job).where(Job.sweep_id == sweep_id).order_by(Job.trial_index)
    return list(session.scalars(stmt))


def advance_sweep(session: Session, sweep_id: str, *, limits: Limits | None = None) -> list[str]:
    """Create trials up to ``max_concurrency`` active; mark the sweep done when all ended.

    Returns the ids of new queued trials, to enqueue after the caller commits.
    """
    sweep = lock_sweep(session, sweep_id)
    if sweep is None or sweep.status != "running":
        return []
    trials = sweep_trials(session, sweep_id)
    active = sum(t.status in ACTIVE_STATUSES for t in trials)
    new_ids: list[str] = []
    while sweep.n_created < sweep.n_trials and active < sweep.max_concurrency:
        index = sweep.n_created
        params, proposal = propose(sweep, index, trials)
        spec = apply_params(sweep.spec["base"], params)
        name = f"{sweep.name or 'sweep'}-{index}"
        try:
            job = create_job(
                session,
                spec=validate_job(spec, limits),
                name=name,
                sweep_id=sweep.id,
                trial_index=index,
                params=params,
                proposal=proposal,
                owner_id=sweep.owner_id,
            )
            new_ids.append(job.id)
            active += 1
        except SpecValidationError as err:
            # A combination the per-value checks could not foresee: record it as failed.
            msg = "; ".join(f"{d['loc']}: {d['msg']}" for d in err.details)
            job = create_job(
                session,
                spec=spec,
                name=name,
                sweep_id=sweep.id,
                trial_index=index,
                params=params,
                proposal=proposal,
                status="failed",
                error=f"invalid spec: {msg}",
                owner_id=sweep.owner_id,
            )
        trials.append(job)
        sweep.n_created = index + 1
    if sweep.n_created >= sweep.n_trials and active == 0:
        sweep.status = "done"
        sweep.finished_at = utcnow()
    sweep.updated_at = utcnow()
    session.flush()
    return new_ids


def advance_and_enqueue(
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    dispatcher: Dispatcher,
    sweep_id: str,
) -> list[str]:
    """Advance the sweep in its own transaction, then enqueue what it created."""
    with session_factory() as session:
        new_ids = advance_sweep(session, sweep_id, limits=settings.limits)
        session.commit()
    dispatcher.enqueue_jobs(new_ids)
    return new_ids


class SweepFinishedError(Exception):
    """The sweep is already done or cancelled (cancel is then a 409)."""


def cancel_sweep(session: Session, sweep_id: str) -> tuple[Sweep, list[str]]:
    """Cancel queued trials now and flag running ones; returns (sweep, running ids).

    Raises ``LookupError`` for an unknown sweep and :class:`SweepFinishedError`
    when it is no longer running.
    """
    sweep = lock_sweep(session, sweep_id)
    if sweep is None:
        raise LookupError(sweep_id)
    if sweep.status != "running":
        raise SweepFinishedError(sweep.status)
    now = utcnow()
    session.execute(
        update(Job)
        .where(Job.sweep_id == sweep_id, Job.status == "queued")
        .values(status="cancelled", cancel_requested=True, finished_at=now, updated_at=now)
    )
    running = list(
        session.scalars(select(Job.id).where(Job.sweep_id == sweep_id, Job.status == "running"))
    )
    if running:
        session.execute(
            update(Job).where(Job.id.in_(running)).values(cancel_requested=True, updated_at=now)
        )
    sweep.status = "cancelled"
    sweep.finished_at = now
    sweep.updated_at = now
    session.flush()
    return sweep, running


def status_counts(session: Session, sweep_id: str) -> dict[str, int]:
    stmt = select(Job.status, func.count()).where(Job.sweep_id == sweep_id).group_by(Job.status)
    counts = {status: 0 for status in ("queued", "running", *sorted(TERMINAL_STATUSES))}
    counts.update({status: int(n) for status, n in session.execute(stmt)})
    return counts


def list_sweeps(
    session: Session,
    *,
    statuses: list[str] | None = None,
    owner_id: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Sweep], str | None]:
    """Sweeps newest first; ``owner_id`` restricts them to one user's (None: everyone's)."""
    stmt = select(Sweep)
    if owner_id is not None:
        stmt = stmt.where(Sweep.owner_id == owner_id)
    if statuses:
        stmt = stmt.where(Sweep.status.in_(statuses))
    return paginate(session, Sweep, stmt, cursor=cursor, limit=limit)


def delete_sweep(session: Session, sweep_id: str) -> None:
    """Delete a sweep that is over, with its trials and their epochs, checkpoints
    and weights. Raises ``LookupError`` or :class:`SweepRunningError`."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        raise LookupError(sweep_id)
    if sweep.status == "running":
        raise SweepRunningError(sweep_id)
    trials = select(Job.id).where(Job.sweep_id == sweep_id)
    if session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.sweep_id == sweep_id, Job.status.in_(ACTIVE_STATUSES))
    ):
        raise SweepRunningError(sweep_id)  # a cancelled sweep's trial still stopping
    for table in (JobMetric, JobCheckpoint, JobWeights):
        session.execute(delete(table).where(table.job_id.in_(trials)))
    session.execute(delete(Job).where(Job.sweep_id == sweep_id))
    session.execute(delete(Sweep).where(Sweep.id == sweep_id))


class SweepRunningError(Exception):
    """The sweep still runs trials (delete is then a 409: cancel it first)."""
