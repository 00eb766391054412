"""Sweeps: search spaces, samplers (grid, random, Optuna TPE), early stopping, progress.

A sweep never holds more than ``max_concurrency`` trials queued or running.
:func:`advance_sweep` creates the next trials under a row lock on the sweep
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite transactions here begin
IMMEDIATE, which serializes writers) and is called when the sweep is created
and whenever one of its trials ends. TPE proposals come from Optuna's
ask-and-tell interface on an in-memory study rebuilt from the trials in the
database, so Optuna never touches SQLite itself.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.celery_app import Dispatcher
from services.config import Limits, Settings
from services.db.models import ACTIVE_STATUSES, TERMINAL_STATUSES, Job, JobMetric, Sweep, utcnow
from services.jobs import (
    Objective,
    create_job,
    expired_leases,
    fail_exhausted,
    job_objective,
    paginate,
    stale_queued,
)
from services.specs import (
    EarlyStoppingPolicy,
    ParameterSpec,
    SpecValidationError,
    SweepCreate,
    apply_params,
    validate_job,
)

log = logging.getLogger(__name__)

PruneFn = Callable[[Session, int, dict[int, float | None]], str | None]


# --- creating and advancing -----------------------------------------------------------


def create_sweep(
    session: Session, *, sweep: SweepCreate, limits: Limits | None = None
) -> tuple[Sweep, list[str]]:
    """Insert the sweep and its first trials; returns (sweep, job ids to enqueue)."""
    spec = sweep.model_dump(mode="json")
    spec["base"] = sweep.base.model_dump(mode="json", exclude_unset=True)
    now = utcnow()
    row = Sweep(
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
                session, spec=validate_job(spec, limits), name=name, sweep_id=sweep.id,
                trial_index=index, params=params, proposal=proposal,
            )  # fmt: skip
            new_ids.append(job.id)
            active += 1
        except SpecValidationError as err:
            # A combination the per-value checks could not foresee: record it as failed.
            msg = "; ".join(f"{d['loc']}: {d['msg']}" for d in err.details)
            job = create_job(
                session, spec=spec, name=name, sweep_id=sweep.id, trial_index=index,
                params=params, proposal=proposal, status="failed", error=f"invalid spec: {msg}",
            )  # fmt: skip
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


# --- proposing parameters -----------------------------------------------------------------


def _parameters(sweep: Sweep) -> dict[str, ParameterSpec]:
    return {k: ParameterSpec.model_validate(v) for k, v in sweep.spec["parameters"].items()}


def grid_point(parameters: dict[str, ParameterSpec], index: int) -> dict[str, Any]:
    """The ``index``-th point of the grid, in ``itertools.product`` order."""
    point: dict[str, Any] = {}
    for path, param in reversed(list(parameters.items())):
        values = param.values or []
        index, i = divmod(index, len(values))
        point[path] = values[i]
    return {path: point[path] for path in parameters}


def random_point(parameters: dict[str, ParameterSpec], seed: int, index: int) -> dict[str, Any]:
    """A reproducible random point: the generator is seeded by (sweep seed, trial index)."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, index])
    point: dict[str, Any] = {}
    for path, p in parameters.items():
        if p.values is not None:
            point[path] = p.values[int(rng.integers(len(p.values)))]
            continue
        assert p.min is not None and p.max is not None
        if p.distribution == "uniform":
            point[path] = float(rng.uniform(p.min, p.max))
        elif p.distribution == "log_uniform":
            point[path] = float(math.exp(rng.uniform(math.log(p.min), math.log(p.max))))
        else:  # int_uniform, both ends included
            point[path] = int(rng.integers(int(p.min), int(p.max) + 1))
    return point


def optuna_distributions(parameters: dict[str, ParameterSpec]) -> dict[str, Any]:
    """Optuna distributions; choices are indices into ``values`` (any JSON value works)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    dists: dict[str, Any] = {}
    for path, p in parameters.items():
        if p.values is not None:
            dists[path] = CategoricalDistribution(list(range(len(p.values))))
            continue
        assert p.min is not None and p.max is not None
        if p.distribution == "int_uniform":
            dists[path] = IntDistribution(int(p.min), int(p.max))
        else:
            dists[path] = FloatDistribution(p.min, p.max, log=p.distribution == "log_uniform")
    return dists


def _to_optuna(parameters: dict[str, ParameterSpec], params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for path, p in parameters.items():
        value = params[path]
        out[path] = p.values.index(value) if p.values is not None else value
    return out


def tpe_study(sweep: Sweep, trials: list[Job], index: int):  # -> optuna.Study
    """An in-memory Optuna study holding every trial so far, with a TPE sampler."""
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    parameters = _parameters(sweep)
    dists = optuna_distributions(parameters)
    startup = sweep.spec.get("n_startup_trials")
    sampler = optuna.samplers.TPESampler(
        seed=(sweep.seed * 100_003 + index) & 0xFFFFFFFF,
        n_startup_trials=10 if startup is None else startup,
        constant_liar=True,  # trials still running count as pending, not as unknowns
    )
    direction = optuna.study.StudyDirection.MINIMIZE
    if sweep.objective_goal == "maximize":
        direction = optuna.study.StudyDirection.MAXIMIZE
    study = optuna.create_study(direction=direction, sampler=sampler)
    for trial in trials:
        if not trial.params:
            continue
        value = trial.objective if trial.objective is not None else None
        if trial.status in ACTIVE_STATUSES:
            state, value = TrialState.RUNNING, None
        elif trial.status == "pruned":
            state = TrialState.PRUNED
        elif trial.status in ("succeeded", "diverged") and value is not None:
            state = TrialState.COMPLETE
        else:
            state, value = TrialState.FAIL, None
        intermediate = {trial.epochs_done: value} if value is not None and trial.epochs_done else {}
        study.add_trial(
            create_trial(
                params=_to_optuna(parameters, trial.params),
                distributions=dists,
                value=value if state == TrialState.COMPLETE else None,
                state=state,
                intermediate_values=intermediate if state == TrialState.PRUNED else {},
            )
        )
    return study, dists, parameters


def propose(sweep: Sweep, index: int, trials: list[Job]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parameters for trial ``index`` and a note on where they came from."""
    parameters = _parameters(sweep)
    if sweep.method == "grid":
        return grid_point(parameters, index), {"method": "grid", "index": index}
    if sweep.method == "random":
        return random_point(parameters, sweep.seed, index), {"method": "random", "index": index}
    study, dists, parameters = tpe_study(sweep, trials, index)
    trial = study.ask(dists)
    params = {
        path: (p.values[trial.params[path]] if p.values is not None else trial.params[path])
        for path, p in parameters.items()
    }
    finished = sum(t.status in TERMINAL_STATUSES for t in trials)
    startup = sweep.spec.get("n_startup_trials")
    startup = 10 if startup is None else startup
    proposal = {
        "method": "tpe",
        "sampler": type(study.sampler).__name__,
        "index": index,
        "history": len(study.trials) - 1,
        "finished": finished,
        "startup": finished < startup,
    }
    return params, proposal


# --- early stopping --------------------------------------------------------------------------


#: The median rule's peer query runs at most this often per trial (ASHA's at its rungs).
MEDIAN_CHECK_SECONDS = 0.1


def policy_for(session: Session, job: Job) -> tuple[Objective, PruneFn | None]:
    """The objective a job is ranked by, and its sweep's pruning rule (if any)."""
    if not job.sweep_id:
        return job_objective(job.spec), None
    sweep = session.get(Sweep, job.sweep_id)
    if sweep is None:
        return job_objective(job.spec), None
    objective = Objective(sweep.objective_metric, sweep.objective_goal)
    raw = sweep.spec.get("early_stopping")
    if not raw:
        return objective, None
    policy = EarlyStoppingPolicy.model_validate(raw)
    state: dict[str, float] = {"checked": 0, "queried_at": -math.inf}
    epochs_total = job.epochs_total
    job_id, sweep_id = job.id, job.sweep_id

    def prune(session: Session, epoch: int, running_best: dict[int, float | None]) -> str | None:
        """Called at each epoch boundary: ASHA at its rungs, the median rule at
        most every ``MEDIAN_CHECK_SECONDS`` (its query reads every peer's epochs)."""
        if policy.policy == "median":
            if epoch < policy.min_epochs or epoch >= epochs_total:
                return None
            now = time.monotonic()
            if now - state["queried_at"] < MEDIAN_CHECK_SECONDS:
                return None
            state["queried_at"] = now
            return median_rule(
                session, sweep_id=sweep_id, job_id=job_id, objective=objective,
                policy=policy, epoch=epoch, value=running_best.get(epoch),
            )  # fmt: skip
        rungs = asha_rungs(policy, epochs_total)
        due = [r for r in rungs if state["checked"] < r <= epoch]
        state["checked"] = epoch
        for rung in due:
            reason = asha_rule(
                session, sweep_id=sweep_id, job_id=job_id, objective=objective,
                policy=policy, rung=rung, value=running_best.get(rung),
            )  # fmt: skip
            if reason:
                return reason
        return None

    return objective, prune


def peer_values(
    session: Session, *, sweep_id: str, job_id: str, objective: Objective, epoch: int
) -> list[float]:
    """Each other trial's best objective up to ``epoch``, for trials that reached it."""
    column = getattr(JobMetric, objective.metric)
    best = func.min(column) if objective.goal == "minimize" else func.max(column)
    stmt = (
        select(JobMetric.job_id, best)
        .join(Job, Job.id == JobMetric.job_id)
        .where(Job.sweep_id == sweep_id, Job.id != job_id, JobMetric.epoch <= epoch)
        .group_by(JobMetric.job_id)
        .having(func.max(JobMetric.epoch) >= epoch)
    )
    return [float(v) for _, v in session.execute(stmt) if v is not None]


def median_rule(
    session: Session,
    *,
    sweep_id: str,
    job_id: str,
    objective: Objective,
    policy: EarlyStoppingPolicy,
    epoch: int,
    value: float | None,
) -> str | None:
    """Stop when the best value so far is worse than the median of the peers' at this epoch."""
    if epoch < policy.min_epochs:
        return None
    peers = peer_values(session, sweep_id=sweep_id, job_id=job_id, objective=objective, epoch=epoch)
    if len(peers) < policy.min_peers:
        return None
    median = statistics.median(peers)
    if value is not None and not objective.better(median, value):
        return None
    shown = "none" if value is None else f"{value:.6g}"
    return (
        f"median stopping at epoch {epoch}: best {objective.metric} {shown} is worse than "
        f"the median {median:.6g} of {len(peers)} other trials at that epoch"
    )


def asha_rungs(policy: EarlyStoppingPolicy, epochs_total: int) -> list[int]:
    """Rung epochs ``min_epochs * reduction_factor**k`` below the last epoch."""
    rungs, r = [], policy.min_epochs
    while r < epochs_total:
        rungs.append(r)
        r *= policy.reduction_factor
    return rungs


def asha_rule(
    session: Session,
    *,
    sweep_id: str,
    job_id: str,
    objective: Objective,
    policy: EarlyStoppingPolicy,
    rung: int,
    value: float | None,
) -> str | None:
    """Asynchronous successive halving: continue only in the top 1/eta at this rung."""
    peers = peer_values(session, sweep_id=sweep_id, job_id=job_id, objective=objective, epoch=rung)
    n = len(peers) + 1
    keep = max(1, n // policy.reduction_factor)
    better = sum(objective.better(p, value) for p in peers)
    if value is not None and better < keep:
        return None
    shown = "none" if value is None else f"{value:.6g}"
    return (
        f"asha rung at epoch {rung}: best {objective.metric} {shown} ranks {better + 1} of {n}, "
        f"only the top {keep} continue (reduction factor {policy.reduction_factor})"
    )


# --- reading ------------------------------------------------------------------------------


def status_counts(session: Session, sweep_id: str) -> dict[str, int]:
    stmt = select(Job.status, func.count()).where(Job.sweep_id == sweep_id).group_by(Job.status)
    counts = {status: 0 for status in ("queued", "running", *sorted(TERMINAL_STATUSES))}
    counts.update({status: int(n) for status, n in session.execute(stmt)})
    return counts


def leaderboard(sweep: Sweep, trials: list[Job]) -> list[Job]:
    """Every trial: those with an objective value best first (ties: lower trial
    index first), then those without one (diverged at once, not started) by index."""
    sign = 1.0 if sweep.objective_goal == "minimize" else -1.0
    ranked = sorted(
        (t for t in trials if t.objective is not None),
        key=lambda t: (sign * t.objective, t.trial_index or 0),  # type: ignore[operator]
    )
    unranked = sorted((t for t in trials if t.objective is None), key=lambda t: t.trial_index or 0)
    return ranked + unranked


def best_trial(sweep: Sweep, board: list[Job]) -> Job | None:
    """The best finished trial with an objective (succeeded first; else the best of any)."""
    ranked = [t for t in board if t.objective is not None]
    done = [t for t in ranked if t.status == "succeeded"]
    candidates = done or ranked
    return candidates[0] if candidates else None


def list_sweeps(
    session: Session, *, statuses: list[str] | None = None, cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Sweep], str | None]:  # fmt: skip
    stmt = select(Sweep)
    if statuses:
        stmt = stmt.where(Sweep.status.in_(statuses))
    return paginate(session, Sweep, stmt, cursor=cursor, limit=limit)


class Recovered(NamedTuple):
    """What one :func:`recover` pass did (job ids)."""

    expired: list[str]  # running jobs of dead workers, sent again
    requeued: list[str]  # queued jobs whose message may have been lost, sent again
    created: list[str]  # new trials of stalled sweeps
    failed: list[str]  # jobs whose workers died ``max_attempts`` times


def recover(
    *, settings: Settings, session_factory: sessionmaker[Session], dispatcher: Dispatcher
) -> Recovered:
    """Re-send jobs whose worker died or whose message was lost; advance stalled sweeps.

    A job's message is lost when its sender died (or Redis failed) between the
    commit and the send, or when Redis lost its data. A sweep stalls if the
    worker that ended its last active trial died before it could create the
    next ones. Every step is idempotent (claims are compare-and-set), so
    running this from several workers at once is harmless.
    """
    with session_factory() as session:
        failed = fail_exhausted(session, max_attempts=settings.max_attempts)
        expired = expired_leases(session, max_attempts=settings.max_attempts)
        requeued = stale_queued(session, older_than=settings.requeue_seconds)
        session.commit()
    dispatcher.enqueue_jobs(expired + requeued)
    with session_factory() as session:
        active = select(Job.id).where(Job.sweep_id == Sweep.id, Job.status.in_(ACTIVE_STATUSES))
        stalled = list(
            session.scalars(select(Sweep.id).where(Sweep.status == "running", ~active.exists()))
        )
        session.commit()
    created: list[str] = []
    for sweep_id in stalled:
        created += advance_and_enqueue(
            settings=settings, session_factory=session_factory, dispatcher=dispatcher,
            sweep_id=sweep_id,
        )  # fmt: skip
    return Recovered(expired, requeued, created, [job_id for job_id, _ in failed])
