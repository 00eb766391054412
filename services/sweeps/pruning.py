"""Pruning: median stopping and ASHA, checked at a trial's epoch boundaries
against its peers' stored epochs."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.db.models import (
    Job,
    JobMetric,
    Sweep,
)
from services.ranking import Objective, objective_for
from services.specs import (
    EarlyStoppingPolicy,
)

PruneFn = Callable[[Session, int, dict[int, float | None]], str | None]


#: The median rule's peer query runs at most this often per trial (ASHA's at its rungs).
MEDIAN_CHECK_SECONDS = 0.1


#: sweep id -> (objective, early-stopping policy): what a trial needs of its sweep,
#: read once per process (a sweep's objective and policy never change).
_SWEEP_RULES: dict[str, tuple[Objective, EarlyStoppingPolicy | None]] = {}
_SWEEP_RULES_MAX = 256


def sweep_rules(session: Session, sweep_id: str) -> tuple[Objective, EarlyStoppingPolicy | None]:
    """A sweep's objective and pruning policy (cached per process); LookupError if gone."""
    rules = _SWEEP_RULES.get(sweep_id)
    if rules is None:
        row = session.execute(
            select(Sweep.objective_metric, Sweep.objective_goal, Sweep.spec).where(
                Sweep.id == sweep_id
            )
        ).one_or_none()
        if row is None:
            raise LookupError(sweep_id)
        raw = (row.spec or {}).get("early_stopping")
        policy = EarlyStoppingPolicy.model_validate(raw) if raw else None
        rules = (Objective(row.objective_metric, row.objective_goal), policy)
        if len(_SWEEP_RULES) >= _SWEEP_RULES_MAX:
            _SWEEP_RULES.pop(next(iter(_SWEEP_RULES)))
        _SWEEP_RULES[sweep_id] = rules
    return rules


def policy_for(session: Session, job: Job) -> tuple[Objective, PruneFn | None]:
    """The objective a job is ranked by, and its sweep's pruning rule (if any)."""
    if not job.sweep_id:
        return objective_for(session, job), None
    try:
        objective, policy = sweep_rules(session, job.sweep_id)
    except LookupError:
        return objective_for(session, job), None
    if policy is None:
        return objective, None
    sweep_id = job.sweep_id
    state: dict[str, float] = {"checked": 0, "queried_at": -math.inf}
    epochs_total = job.epochs_total
    job_id = job.id

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
                session,
                sweep_id=sweep_id,
                job_id=job_id,
                objective=objective,
                policy=policy,
                epoch=epoch,
                value=running_best.get(epoch),
            )
        rungs = asha_rungs(policy, epochs_total)
        due = [r for r in rungs if state["checked"] < r <= epoch]
        state["checked"] = epoch
        for rung in due:
            reason = asha_rule(
                session,
                sweep_id=sweep_id,
                job_id=job_id,
                objective=objective,
                policy=policy,
                rung=rung,
                value=running_best.get(rung),
            )
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
