"""A sweep's life after it stopped: resume, extend, and a TPE sweep warm-started from
an earlier one.

Resume (a cancelled sweep, or one that ended with trials failed or never created)
creates the trials that were never created, as the sampler would have, and runs
again every cancelled or failed trial with its own parameters: each gets a new trial
at the end of the sweep (``Sweep.replays``: index -> the parameters and the trial it
replays), so that the history stays as it was (the cancelled trial, its MLflow run)
and grid and random points continue where they were (``samplers.point_of``). A
replay whose original left a checkpoint takes it over with the epochs up to it, and
its worker continues from there (``reused.carry_checkpoint``). A trial that ended
keeps none today (``services.jobs.ending`` deletes it with the final status), so a
replay mostly trains from the start; either way it ends with the numbers the
uninterrupted run would have given (runs are bit-reproducible).

Extend adds ``n`` trials; the sampler continues from what it has seen (TPE learns
from every trial so far; random points continue their sequence). A grid runs each
point once: it can only be extended by points it has not planned.

All of these flush only; ``services.submit`` commits and enqueues.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.config import Limits
from services.datasets import refers_to
from services.db.models import Dataset, Job, Sweep, utcnow
from services.specs import SpecValidationError, SweepCreate
from services.sweeps.scheduler import active_count, advance_sweep, lock_sweep
from services.sweeps.space import parameters_of

#: trials a resume runs again
REDO_STATUSES = ("cancelled", "failed")


class SweepStateError(Exception):
    """The sweep cannot do this in its state (a 409 with ``code``)."""

    def __init__(self, code: str, message: str, status: int = 409):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def resume_sweep(
    session: Session, sweep_id: str, *, limits: Limits | None = None
) -> tuple[Sweep, list[str]]:
    """Resume a stopped sweep; returns (sweep, ids of new queued trials). Raises
    ``LookupError`` for an unknown sweep, :class:`SweepStateError` when it is running,
    still stopping, or has nothing to resume."""
    sweep = lock_sweep(session, sweep_id)
    if sweep is None:
        raise LookupError(sweep_id)
    if sweep.status == "running":
        raise SweepStateError("sweep_running", f"sweep {sweep_id} is running: nothing to resume")
    _check_dataset(session, sweep)
    stopping = active_count(session, sweep_id)
    if stopping:
        raise SweepStateError(
            "sweep_stopping",
            f"sweep {sweep_id} still has {stopping} trial(s) stopping; resume it once they "
            "have ended (within an epoch)",
        )
    replays = dict(sweep.replays or {})
    replayed = {r["from"] for r in replays.values()}
    redo = [
        t
        for t in session.scalars(
            select(Job)
            .where(Job.sweep_id == sweep_id, Job.status.in_(REDO_STATUSES))
            .order_by(Job.trial_index)
        )
        if t.id not in replayed
    ]
    missing = sweep.n_trials - sweep.n_created
    if not redo and missing <= 0:
        raise SweepStateError(
            "sweep_complete",
            f"sweep {sweep_id} has no trial missing, cancelled or failed: nothing to resume "
            "(extend it for more trials)",
        )
    index = sweep.n_trials
    for trial in redo:
        replays[str(index)] = {
            "params": trial.params,
            "proposal": trial.proposal,
            "from": trial.id,
            "index": trial.trial_index,
        }
        index += 1
    sweep.replays = replays
    _restart(sweep, index)
    return sweep, advance_sweep(session, sweep_id, limits=limits)


def extend_sweep(
    session: Session, sweep_id: str, n_trials: int, *, limits: Limits | None = None
) -> tuple[Sweep, list[str]]:
    """Add ``n_trials`` trials to a sweep (restarting it if it stopped); returns (sweep,
    ids of new queued trials). Raises ``LookupError`` for an unknown sweep and
    :class:`SweepStateError` when a grid has no unused point left or the sweep would
    pass ``max_trials``."""
    limits = limits or Limits()
    sweep = lock_sweep(session, sweep_id)
    if sweep is None:
        raise LookupError(sweep_id)
    _check_dataset(session, sweep)
    if sweep.method == "grid":
        size = math.prod(len(p.values or ()) for p in parameters_of(sweep).values())
        planned = sweep.n_trials - len(sweep.replays or {})  # replays take no new point
        if n_trials > size - planned:
            raise SweepStateError(
                "grid_exhausted",
                f"a grid sweep runs each of its {size} points once and {planned} are planned "
                f"({size - planned} unused); submit a new sweep with more values, or a random "
                "or tpe sweep",
            )
    if sweep.n_trials + n_trials > limits.max_trials:
        raise SweepStateError(
            "too_many_trials",
            f"the sweep would have {sweep.n_trials + n_trials} trials, at most {limits.max_trials}",
            status=422,
        )
    _restart(sweep, sweep.n_trials + n_trials)
    return sweep, advance_sweep(session, sweep_id, limits=limits)


def _check_dataset(session: Session, sweep: Sweep) -> None:
    """A 409 for a sweep whose uploaded dataset was deleted once it stopped (a running
    sweep keeps its dataset from deletion): no new trial could train."""
    dataset_id = refers_to((sweep.spec or {}).get("base") or {})
    if dataset_id is not None and session.get(Dataset, dataset_id) is None:
        raise SweepStateError(
            "dataset_deleted",
            f"sweep {sweep.id} trains on dataset {dataset_id}, which was deleted: no trial "
            "can train on it (upload the data again and submit a new sweep)",
        )


def _restart(sweep: Sweep, n_trials: int) -> None:
    sweep.n_trials = n_trials
    sweep.status = "running"
    sweep.finished_at = None
    sweep.updated_at = utcnow()


def check_warm_start(
    session: Session, sweep: SweepCreate, owner_id: str | None, admin: bool
) -> None:
    """A 422 at ``warm_start`` unless it names a sweep the submitter may see, of the same
    objective, whose search space agrees (the same paths; choices or ranges alike,
    each by the same distribution), for a TPE sweep."""
    source_id = sweep.warm_start
    if source_id is None:
        return

    def refuse(msg: str) -> SpecValidationError:
        return SpecValidationError("invalid warm_start", [{"loc": "warm_start", "msg": msg}])

    if sweep.method != "tpe":
        raise refuse(f"warm_start seeds a tpe sweep's model; this sweep is {sweep.method}")
    source = session.get(Sweep, source_id)
    if source is None or not (admin or (owner_id is not None and source.owner_id == owner_id)):
        raise refuse(f"no sweep {source_id} of yours")
    objective = (sweep.objective.metric, str(sweep.objective.goal))
    if (source.objective_metric, source.objective_goal) != objective:
        raise refuse(
            f"sweep {source_id} ranks by {source.objective_metric} ({source.objective_goal}), "
            f"this one by {objective[0]} ({objective[1]}): their values do not compare"
        )
    theirs: dict[str, Any] = (source.spec or {}).get("parameters") or {}
    if set(theirs) != set(sweep.parameters):
        raise refuse(
            f"the search spaces differ: sweep {source_id} varies {sorted(theirs)}, "
            f"this one {sorted(sweep.parameters)}"
        )
    for path, mine in sweep.parameters.items():
        other = theirs[path]
        kinds = (_kind(mine.model_dump()), _kind(other))
        if kinds[0] != kinds[1]:
            raise refuse(f"parameters.{path}: {kinds[0]} here, {kinds[1]} in sweep {source_id}")


def _kind(param: dict[str, Any]) -> str:
    if param.get("values") is not None:
        return "a choice of values"
    return f"a {param.get('distribution')} range"
