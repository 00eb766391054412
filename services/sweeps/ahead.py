"""Proposals made ahead of the lock: a TPE sweep's sampler is rebuilt from its trials
and asked for the next trials in a read transaction, so that no writer waits on it;
the scheduler then only stores them under its lock (see ``scheduler.advance_sweep``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, load_only, sessionmaker

from services.db.models import ACTIVE_STATUSES, TERMINAL_STATUSES, Job, Sweep
from services.db.session import begin_read
from services.sweeps.samplers import in_space, propose
from services.sweeps.space import parameters_of

log = logging.getLogger(__name__)


def sampler_trials(session: Session, sweep_id: str, sweep: Sweep | None = None) -> list[Job]:
    """The sweep's trials with what a sampler reads of them (no spec, no result); with
    ``sweep``, first the finished trials of the sweep it warm-starts from (those whose
    parameters lie in its space), which its TPE model learns from as its own."""
    stmt = (
        select(Job)
        .options(load_only(*SAMPLER_COLUMNS))
        .where(Job.sweep_id == sweep_id)
        .order_by(Job.trial_index)
    )
    warm = warm_trials(session, sweep) if sweep is not None else []
    return warm + list(session.scalars(stmt))


SAMPLER_COLUMNS = (Job.trial_index, Job.status, Job.params, Job.objective, Job.epochs_done)


def warm_trials(session: Session, sweep: Sweep) -> list[Job]:
    """The finished trials of the sweep ``sweep`` warm-starts from (``warm_start`` in its
    spec) whose parameters are points of its space; none without a warm start."""
    source = (sweep.spec or {}).get("warm_start")
    if not source or sweep.method != "tpe":
        return []
    stmt = (
        select(Job)
        .options(load_only(*SAMPLER_COLUMNS))
        .where(Job.sweep_id == source, Job.status.in_(TERMINAL_STATUSES))
        .order_by(Job.trial_index)
    )
    parameters = parameters_of(sweep)
    return [t for t in session.scalars(stmt) if in_space(parameters, t.params)]


#: sweep id -> its method, read once per process (it never changes)
_METHODS: dict[str, str] = {}


def _method_of(sessions: sessionmaker[Session], sweep_id: str) -> str | None:
    method = _METHODS.get(sweep_id)
    if method is None:
        with sessions() as session:
            begin_read(session)
            method = session.scalar(select(Sweep.method).where(Sweep.id == sweep_id))
            session.rollback()
        if method is not None:
            if len(_METHODS) >= 1024:
                _METHODS.clear()
            _METHODS[sweep_id] = method
    return method


@dataclass
class Prepared:
    """TPE proposals worked out in a read transaction, for the trials from index
    ``n_created`` on: used under the lock only if no trial was created meanwhile."""

    n_created: int
    proposals: list[tuple[dict[str, Any], dict[str, Any]]]


def prepare_proposals(sessions: sessionmaker[Session], sweep_id: str) -> Prepared | None:
    """Rebuild a TPE sweep's sampler from its trials and ask it for the trials the
    next advance will create, all in a read transaction: a writer (another worker
    recording epochs, finishing a trial) never waits on it. None for grid and random
    sweeps (their parameters depend on the index only), or when anything fails (the
    advance then proposes under its lock, with the usual error handling)."""
    try:
        if _method_of(sessions, sweep_id) != "tpe":
            return None
        with sessions() as session:
            begin_read(session)
            sweep = session.get(Sweep, sweep_id)
            if sweep is None or sweep.status != "running":
                return None
            trials = sampler_trials(session, sweep_id, sweep)
            active = sum(t.status in ACTIVE_STATUSES for t in trials)
            n_new = min(sweep.max_concurrency - active, sweep.n_trials - sweep.n_created)
            proposals = []
            for index in range(sweep.n_created, sweep.n_created + max(n_new, 0)):
                params, proposal = propose(sweep, index, trials)
                proposals.append((params, proposal))
                # pending for the next proposal's constant liar, as it will be once created
                trials.append(Job(trial_index=index, status="queued", params=params))
            prepared = Prepared(sweep.n_created, proposals)
            session.rollback()
        return prepared
    except Exception:  # the advance proposes under its lock instead
        log.warning("sweep %s: proposals not prepared ahead", sweep_id, exc_info=True)
        return None
