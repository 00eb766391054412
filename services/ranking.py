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

from sqlalchemy.orm import Session

from services.db.models import Job, Sweep
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
