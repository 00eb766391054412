"""The scheduler that advances a sweep: never more than ``max_concurrency``
trials queued or running.

:func:`advance_sweep` creates the next trials under a row lock on the sweep
(``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite the write transaction
serializes writers) and is called when the sweep is created and whenever one
of its trials ends.

A sweep is isolated: whatever breaks while one trial is created fails that
trial (its ``error`` says why) and the sweep goes on; when the sweep itself
cannot go on (its sampler fails), it ends, its last trial saying why."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, defer, sessionmaker

from services.celery_app import Dispatcher
from services.config import Limits, Settings
from services.db.models import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    Job,
    Sweep,
    utcnow,
)
from services.db.pages import paginate
from services.jobs.ending import retire_checkpoints
from services.jobs.rows import create_job
from services.mirror import catch_up as mirror
from services.specs import (
    SpecValidationError,
    SweepCreate,
    apply_params,
    validate_job,
)
from services.sweeps.ahead import Prepared, prepare_proposals, sampler_trials
from services.sweeps.ceiling import Ceiling, above, ceilings, skip_queued, skip_values
from services.sweeps.packing import note_trials, trial_units
from services.sweeps.range_bounds import READY, WAITING, resolve, start_for
from services.sweeps.reused import reuse_trial, reused_trials
from services.sweeps.samplers import propose, replays_ahead

log = logging.getLogger(__name__)


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
    start_for(session, row, limits)  # a range test first, if its learning rate takes one
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


def active_count(session: Session, sweep_id: str) -> int:
    """How many of the sweep's trials are queued or running."""
    stmt = (
        select(func.count())
        .select_from(Job)
        .where(Job.sweep_id == sweep_id, Job.status.in_(ACTIVE_STATUSES))
    )
    return int(session.scalar(stmt) or 0)


def _active_and_diverged(session: Session, sweep_id: str) -> tuple[int, bool]:
    """How many of the sweep's trials are queued or running, and whether one diverged
    (one round trip, two index lookups)."""
    mine = Job.sweep_id == sweep_id
    active = select(func.count()).where(mine, Job.status.in_(ACTIVE_STATUSES))
    diverged = select(Job.id).where(mine, Job.status == "diverged").exists()
    row = session.execute(select(active.scalar_subquery(), diverged)).one()
    return int(row[0] or 0), bool(row[1])


def advance_sweep(
    session: Session,
    sweep_id: str,
    *,
    limits: Limits | None = None,
    prepared: Prepared | None = None,
) -> list[str]:
    """Create trials up to ``max_concurrency`` active; mark the sweep done when all ended.

    Returns the ids of new queued trials, to enqueue after the caller commits.
    ``prepared``: TPE proposals made outside the lock (:func:`prepare_proposals`),
    taken while the sweep's ``n_created`` is still theirs.
    """
    sweep = lock_sweep(session, sweep_id)
    if sweep is None or sweep.status != "running":
        return []
    state = resolve(session, sweep)  # the bounds a range test gives, once it has ended
    if state == WAITING:
        return []
    if state != READY:
        _stop(session, sweep, f"the sweep stopped: {state}")
        return []
    ahead: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
    if prepared is not None and prepared.n_created == sweep.n_created:
        ahead = {sweep.n_created + i: p for i, p in enumerate(prepared.proposals)}
    ahead.update(replays_ahead(sweep))  # trials a resume runs again: their own parameters
    # Counted in SQL, not by loading the sweep: a grid or random trial's parameters
    # depend only on its index; only TPE learns from the trials so far.
    active, any_diverged = _active_and_diverged(session, sweep_id)
    # Trials queued above a learning rate that diverged are skipped before they train.
    found = ceilings(session, sweep) if any_diverged else []
    active -= len(skip_queued(session, sweep, found))
    trials: list[Job] | None = None
    new_jobs: list[Job] = []
    while sweep.n_created < sweep.n_trials and active < sweep.max_concurrency:
        index = sweep.n_created
        if trials is None and sweep.method == "tpe" and index not in ahead:
            trials = sampler_trials(session, sweep_id, sweep)
        job, stop = _create_trial(
            session, sweep, index, trials or [], limits, ahead.get(index), found
        )
        if trials is not None:
            trials.append(job)
        sweep.n_created = index + 1
        if job.status == "queued":
            new_jobs.append(job)
            active += 1
        if stop:
            _end(sweep)
            break
    if sweep.n_created >= sweep.n_trials and active == 0:
        _end(sweep)
    sweep.updated_at = utcnow()
    session.flush()
    note_trials(session, sweep, new_jobs)  # which go together: services.sweeps.packing
    return [job.id for job in new_jobs]


def _end(sweep: Sweep) -> None:
    """Mark the sweep done (trials still running finish; no new one is created)."""
    if sweep.status == "running":
        sweep.status = "done"
        sweep.finished_at = utcnow()


def _create_trial(
    session: Session,
    sweep: Sweep,
    index: int,
    trials: list[Job],
    limits: Limits | None,
    proposed: tuple[dict[str, Any], dict[str, Any]] | None = None,
    found: list[Ceiling] | None = None,
) -> tuple[Job, bool]:
    """Create trial ``index``: queued, skipped above a divergence ceiling (``found``), or
    failed with the reason; (trial, sweep must end).

    Each attempt runs in a savepoint, so that a failed INSERT (a value PostgreSQL
    refuses) leaves the sweep's transaction usable. An outage of the database is
    not the trial's fault: it propagates and the caller's transaction rolls back.
    """
    name = f"{sweep.name or 'sweep'}-{index}"
    try:
        params, proposal = proposed or propose(sweep, index, trials)
    except Exception as err:  # the sampler or the stored spec: every later trial would fail too
        log.exception("sweep %s: no parameters for trial %d; the sweep ends", sweep.id, index)
        reason = f"the sweep stopped: no parameters for trial {index}: {_describe(err)}"
        return _failed_trial(session, sweep, index, name, None, None, None, reason), True
    spec: Any = None
    try:
        ceiling = above(params, found or [])
        with session.begin_nested():
            spec = apply_params(sweep.spec["base"], params)
            job = create_job(
                session,
                spec=validate_job(spec, limits),
                name=name,
                sweep_id=sweep.id,
                trial_index=index,
                params=params,
                proposal=proposal,
                owner_id=sweep.owner_id,
                status="queued" if ceiling is None else "skipped",
            )
            if ceiling is not None:
                for key, value in skip_values(ceiling, float(params[ceiling.path])).items():
                    setattr(job, key, value)
            else:  # identical to a succeeded job of its owner: a copy of it
                reuse_trial(session, job)
        return job, False
    except SpecValidationError as err:
        # A combination the checks at submission could not foresee.
        msg = "; ".join(f"{d['loc']}: {d['msg']}" for d in err.details)
        reason = f"invalid spec: {msg}"
    except DBAPIError as err:
        if _outage(err):
            raise
        log.exception("sweep %s: trial %d could not be stored", sweep.id, index)
        reason = f"could not create the trial: {_describe(err)}"
    except Exception as err:  # anything else fails this trial only
        log.exception("sweep %s: trial %d could not be created", sweep.id, index)
        reason = f"could not create the trial: {_describe(err)}"
    return _failed_trial(session, sweep, index, name, spec, params, proposal, reason), False


def _failed_trial(
    session: Session,
    sweep: Sweep,
    index: int,
    name: str,
    spec: Any,
    params: dict[str, Any] | None,
    proposal: dict[str, Any] | None,
    reason: str,
) -> Job:
    """Insert trial ``index`` as failed with ``reason``; without its spec and parameters
    if they cannot be stored either."""
    fields: dict[str, Any] = dict(
        name=name,
        sweep_id=sweep.id,
        trial_index=index,
        status="failed",
        error=reason[:2000],
        owner_id=sweep.owner_id,
    )
    if isinstance(spec, dict):
        try:
            with session.begin_nested():
                return create_job(session, spec=spec, params=params, proposal=proposal, **fields)
        except DBAPIError as err:
            if _outage(err):
                raise
        except Exception:
            pass
    with session.begin_nested():
        return create_job(session, spec={}, **fields)


def _outage(err: DBAPIError) -> bool:
    """True when the database is away (not a value it refused)."""
    return err.connection_invalidated or isinstance(err, (OperationalError, InterfaceError))


def _describe(err: BaseException) -> str:
    text = " ".join(str(err).split())[:500]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def advance_and_enqueue(
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    dispatcher: Dispatcher,
    sweep_id: str,
    keep: bool = False,
) -> list[str]:
    """Advance the sweep in its own transaction, then enqueue what it created.

    ``keep``: the first new trial (or pack of trials) is not sent; the caller runs it
    at once (returned first all the same; :func:`advance_and_send` says which). Its
    rows are committed as queued before the caller claims them, so if the caller dies
    in between, the recover pass finds them queued without a message and sends them.

    If advancing raises anyway (outside one trial's creation), the sweep ends with
    a failed trial that says why, unless the database is away: that is no fault of
    the sweep, and the error propagates (the next recover pass tries again).
    """
    return advance_and_send(
        settings=settings,
        session_factory=session_factory,
        dispatcher=dispatcher,
        sweep_id=sweep_id,
        keep=keep,
    )[0]


def advance_and_send(
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    dispatcher: Dispatcher,
    sweep_id: str,
    keep: bool = False,
) -> tuple[list[str], list[str]]:
    """:func:`advance_and_enqueue`: (the new trials' ids, the ids of the trial or pack
    kept for the caller when ``keep``, else [])."""
    prepared = prepare_proposals(session_factory, sweep_id)
    try:
        with session_factory() as session:
            new_ids = advance_sweep(session, sweep_id, limits=settings.limits, prepared=prepared)
            session.commit()
            reused = reused_trials(session)
            units = trial_units(session, new_ids, settings.pack_processes)
    except DBAPIError as err:
        if _outage(err):
            raise
        _stop_sweep(session_factory, sweep_id, err)
        return [], []
    except Exception as err:
        _stop_sweep(session_factory, sweep_id, err)
        return [], []
    for job_id in reused:  # finished at once: the mirror learns of them here
        mirror_reused(settings, job_id)
    kept = units.pop(0) if keep and units else []
    dispatcher.enqueue_units(units)
    return kept + [job_id for unit in units for job_id in unit], kept


def mirror_reused(settings: Settings, job_id: str) -> None:
    """Hand a reused trial to the MLflow mirror (its catch-up finds it otherwise)."""
    try:
        mirror.job_finished(settings, job_id)
    except Exception:
        log.warning("trial %s: not handed to the mirror; the catch-up will", job_id)


def _stop_sweep(session_factory: sessionmaker[Session], sweep_id: str, err: Exception) -> None:
    """End a sweep that cannot advance; its next trial, failed, carries the reason."""
    log.error("sweep %s could not advance; it ends", sweep_id, exc_info=err)
    with session_factory() as session:
        sweep = lock_sweep(session, sweep_id)
        if sweep is None or sweep.status != "running":
            return
        _stop(session, sweep, f"the sweep stopped: it could not advance: {_describe(err)}")
        session.commit()


def _stop(session: Session, sweep: Sweep, reason: str) -> None:
    """End the sweep; the trial it could not create next is failed with ``reason``."""
    index = sweep.n_created
    if index < sweep.n_trials:
        name = f"{sweep.name or 'sweep'}-{index}"
        _failed_trial(session, sweep, index, name, None, None, None, reason)
        sweep.n_created = index + 1
    _end(sweep)
    sweep.updated_at = utcnow()
    session.flush()


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
    queued = list(
        session.scalars(select(Job.id).where(Job.sweep_id == sweep_id, Job.status == "queued"))
    )
    session.execute(
        update(Job)
        .where(Job.id.in_(queued), Job.status == "queued")
        .values(status="cancelled", cancel_requested=True, finished_at=now, updated_at=now)
    )
    retire_checkpoints(session, queued)
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
    return trial_totals(session, sweep_id)[0]


def trial_totals(session: Session, sweep_id: str) -> tuple[dict[str, int], int]:
    """The sweep's trials by status, and the epochs they trained (one query)."""
    return trial_totals_of(session, [sweep_id])[sweep_id]


def trial_totals_of(
    session: Session, sweep_ids: list[str]
) -> dict[str, tuple[dict[str, int], int]]:
    """:func:`trial_totals` for each of ``sweep_ids`` (one query for them all)."""
    stmt = (
        select(Job.sweep_id, Job.status, func.count(), func.coalesce(func.sum(Job.epochs_done), 0))
        .where(Job.sweep_id.in_(sweep_ids))
        .group_by(Job.sweep_id, Job.status)
    )
    statuses = ("queued", "running", *sorted(TERMINAL_STATUSES))
    totals = {sweep_id: (dict.fromkeys(statuses, 0), 0) for sweep_id in sweep_ids}
    for sweep_id, status, n, done in session.execute(stmt):
        key = str(sweep_id)  # never None: the query selects by sweep
        counts, epochs = totals[key]
        counts[status] = int(n)
        totals[key] = (counts, epochs + int(done))
    return totals


def list_sweeps(
    session: Session,
    *,
    statuses: list[str] | None = None,
    owner_id: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Sweep], str | None]:
    """Sweeps newest first, without their specs (any access to one raises); ``owner_id``
    restricts them to one user's (None: everyone's)."""
    stmt = select(Sweep).options(defer(Sweep.spec, raiseload=True))
    if owner_id is not None:
        stmt = stmt.where(Sweep.owner_id == owner_id)
    if statuses:
        stmt = stmt.where(Sweep.status.in_(statuses))
    return paginate(session, Sweep, stmt, cursor=cursor, limit=limit)
