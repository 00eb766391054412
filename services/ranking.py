"""Which number ranks a job's epochs and a sweep's trials: one rule for the API,
the sweeps, the workers and the MLflow mirror.

A job's own best epoch is the trainer's (its early-stopping metric and
``min_delta``, else the validation loss; the training loss without a
validation set); a sweep's trials are ranked by the sweep's objective at
their best epoch. An epoch that diverged is never the best.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, case, func, not_, or_, select
from sqlalchemy.orm import Session, load_only

from services.db.models import Job, Sweep
from services.db.pages import BadCursorError, decode_key, encode_key
from services.specs import has_validation
from services.trainer import improves


@dataclass
class Objective:
    """Which number ranks epochs and trials, and which way is better.

    ``min_delta``: an epoch must beat the best by more than this to become the
    best (a job's own early stopping; 0 for a sweep's ranking). ``fallback``:
    without a validation set the training loss stands in for ``val_loss`` (a
    job's own best epoch, as the trainer picks it; never a sweep's ranking,
    where such a trial has no objective).
    """

    metric: str = "val_loss"
    goal: str = "minimize"
    min_delta: float = 0.0
    fallback: bool = False

    def key(self, spec: dict[str, Any]) -> str:
        """The metric the objective's values are for a job of ``spec``."""
        if self.fallback and self.metric == "val_loss" and not has_validation(spec):
            return "train_loss"
        return self.metric

    def better(self, a: float | None, b: float | None) -> bool:
        """Is ``a`` better than ``b`` (None is worst)? The trainer's own best-epoch rule
        (``services.trainer.improves``), so that a job's best epoch is the trainer's."""
        return improves(a, b, "min" if self.goal == "minimize" else "max", self.min_delta)


def job_objective(spec: dict[str, Any]) -> Objective:
    """A job's own best epoch, as the trainer picks it: by its early-stopping metric
    (with ``min_delta``), else by the validation loss (the training loss without a
    validation set); ``spec`` is a normalized job spec."""
    es = (spec.get("hyperparameters") or {}).get("early_stopping")
    if not es:
        return Objective(fallback=True)
    metric = es.get("metric", "val_loss")
    goal = "maximize" if metric.endswith("accuracy") else "minimize"
    return Objective(metric, goal, float(es.get("min_delta") or 0.0))


@dataclass
class Tracker:
    """Latest and best epoch of one run, and the running best objective per epoch.

    As the trainer does, an epoch that diverged (no training loss, a weight
    norm or, with a validation set, the validation loss not finite) is never
    the best; see ``Objective.fallback`` for a job without a validation set.
    ``n_layers`` (0: unknown) is how many weight norms a finite epoch has;
    ``has_validation`` (from the spec: ``services.specs.has_validation``) also
    turns True at the first epoch with a validation loss.
    """

    objective: Objective
    n_layers: int = 0
    has_validation: bool = False
    epochs_done: int = 0
    latest: dict[str, Any] | None = None
    best: dict[str, Any] | None = None
    best_epoch: int | None = None
    best_value: float | None = None
    running_best: dict[int, float | None] = field(default_factory=dict)

    def finite(self, flat: dict[str, Any]) -> bool:
        """Whether ``flat`` (a flattened record) is an epoch the trainer kept training past."""
        return (
            flat.get("train_loss") is not None
            and (not self.has_validation or flat.get("val_loss") is not None)
            and all(f"weight_norm.layer_{i}" in flat for i in range(self.n_layers))
        )

    def update(self, epoch: int, flat: dict[str, Any]) -> None:
        self.epochs_done = max(self.epochs_done, epoch)
        self.latest = flat
        self.has_validation = self.has_validation or flat.get("val_loss") is not None
        value = None
        if self.finite(flat):
            value = flat.get(self.objective.metric)
            fallback = self.objective.fallback and not self.has_validation
            if value is None and self.objective.metric == "val_loss" and fallback:
                value = flat.get("train_loss")
        if self.objective.better(value, self.best_value):
            self.best_value, self.best, self.best_epoch = value, flat, epoch
        self.running_best[epoch] = self.best_value

    def progress(self) -> dict[str, Any]:
        return {
            "epochs_done": self.epochs_done,
            "latest_metrics": self.latest,
            "best_metrics": self.best,
            "best_epoch": self.best_epoch,
            "objective": self.best_value,
        }


def objective_for(session: Session, job: Job) -> Objective:
    """The objective a job is ranked by: its sweep's, or its own best epoch's."""
    sweep = session.get(Sweep, job.sweep_id) if job.sweep_id else None
    if sweep is None:
        return job_objective(job.spec)
    return Objective(sweep.objective_metric, sweep.objective_goal)


def tier(trial: Job) -> int:
    """A trial's tier on the leaderboard: 0 ranked by its objective, 1 diverged (its
    value from before it diverged: never above a trial that did not diverge), 2 no
    objective (diverged at once, skipped, not started)."""
    if trial.objective is None:
        return 2
    return 1 if trial.status == "diverged" else 0


def leaderboard(sweep: Sweep, trials: list[Job]) -> list[Job]:
    """Every trial by :func:`tier`, then objective value best first (ties: lower
    trial index first), then index."""
    sign = 1.0 if sweep.objective_goal == "minimize" else -1.0
    return sorted(
        trials,
        key=lambda t: (
            tier(t),
            0.0 if t.objective is None else sign * t.objective,
            t.trial_index or 0,
        ),
    )


def best_trial(sweep: Sweep, board: list[Job]) -> Job | None:
    """The best finished trial with an objective (succeeded first; else the best of any)."""
    ranked = [t for t in board if t.objective is not None]
    done = [t for t in ranked if t.status == "succeeded"]
    candidates = done or ranked
    return candidates[0] if candidates else None


# -- the same rule in SQL: a sweep's leaderboard a page at a time ---------------------

#: What a leaderboard row shows of a trial (never its spec, result or weights).
BOARD_COLUMNS = (
    Job.id,
    Job.sweep_id,
    Job.trial_index,
    Job.status,
    Job.objective,
    Job.params,
    Job.best_epoch,
    Job.epochs_done,
    Job.prune_reason,
)


def _board_key(sweep: Sweep) -> tuple[Any, Any, Any, Any]:
    """The leaderboard's sort key in SQL: (:func:`tier`, objective, index, id); the
    objective ascending for ``minimize``, descending for ``maximize``."""
    return (
        case((Job.objective.is_(None), 2), (Job.status == "diverged", 1), else_=0),
        Job.objective if sweep.objective_goal == "minimize" else -Job.objective,
        func.coalesce(Job.trial_index, 0),
        Job.id,
    )


def board_order(sweep: Sweep) -> list[Any]:
    """ORDER BY clauses listing a sweep's trials as :func:`leaderboard` does."""
    level, value, index, row_id = _board_key(sweep)
    return [level.asc(), value.asc(), index.asc(), row_id.asc()]


def _after(sweep: Sweep, trial: Job) -> Any:
    """The trials that come after ``trial`` on the leaderboard (a keyset condition)."""
    level, value, index, row_id = _board_key(sweep)
    tie = or_(
        index > (trial.trial_index or 0), and_(index == (trial.trial_index or 0), row_id > trial.id)
    )
    mine_level = tier(trial)
    if trial.objective is None:
        within = tie
    else:
        mine = trial.objective if sweep.objective_goal == "minimize" else -trial.objective
        within = or_(value > mine, and_(value == mine, tie))
    return or_(level > mine_level, and_(level == mine_level, within))


def _board_select(sweep: Sweep) -> Any:
    return (
        select(Job)
        .options(load_only(*BOARD_COLUMNS, raiseload=True))
        .where(Job.sweep_id == sweep.id)
        .order_by(*board_order(sweep))
    )


@dataclass
class BoardPage:
    """A page of a sweep's leaderboard: its trials, the rank of the first, the next cursor."""

    trials: list[Job]
    first_rank: int
    next_cursor: str | None


def leaderboard_page(
    session: Session, sweep: Sweep, *, cursor: str | None = None, limit: int = 10
) -> BoardPage:
    """``limit`` trials of the leaderboard after ``cursor`` (one query, whatever the
    sweep's size). Ranks count every trial listed before; trials without an objective
    come last (``rank`` null in the API). Raises ``BadCursorError``."""
    stmt, rank = _board_select(sweep), 1
    if cursor:
        of, rank, objective, index, row_id, status = decode_key(cursor, 6)
        if not (
            of == sweep.id
            and isinstance(rank, int)
            and rank >= 1
            and (objective is None or isinstance(objective, (int, float)))
            and isinstance(index, int)
            and isinstance(row_id, str)
            and isinstance(status, str)
        ):
            raise BadCursorError("cursor is not one this API handed out")
        last = Job(id=row_id, trial_index=index, objective=objective, status=status)
        stmt = stmt.where(_after(sweep, last))
    rows = list(session.scalars(stmt.limit(limit + 1)))
    more, rows = len(rows) > limit, rows[:limit]
    next_cursor = None
    if more and rows:
        end = rows[-1]
        next_cursor = encode_key(
            [sweep.id, rank + len(rows), end.objective, end.trial_index or 0, end.id, end.status]
        )
    return BoardPage(rows, rank, next_cursor)


def best_trial_in(session: Session, sweep: Sweep, top: BoardPage) -> tuple[Job, int] | None:
    """The best trial as :func:`best_trial` picks it, and its rank; ``top`` is the
    leaderboard's first page (the answer is usually on it: no query then)."""
    ranked = [t for t in top.trials if t.objective is not None]
    if not ranked:
        return None
    done = next(
        (
            i
            for i, t in enumerate(top.trials)
            if t.status == "succeeded" and t.objective is not None
        ),
        None,
    )
    if done is not None:
        return top.trials[done], top.first_rank + done
    if len(ranked) == len(top.trials) and top.next_cursor is not None:
        stmt = _board_select(sweep).where(
            Job.objective.is_not(None), Job.status == "succeeded", _after(sweep, ranked[-1])
        )
        best = session.scalars(stmt.limit(1)).first()
        if best is not None:
            before = (
                select(func.count())
                .select_from(Job)
                .where(
                    Job.sweep_id == sweep.id,
                    Job.objective.is_not(None),
                    not_(_after(sweep, best)),
                    Job.id != best.id,
                )
            )
            return best, int(session.scalar(before) or 0) + 1
    return ranked[0], top.first_rank
