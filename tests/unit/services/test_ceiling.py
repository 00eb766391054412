"""Divergence-aware sweeps: a trial at or above a learning rate that diverged (other swept
parameters equal) is skipped, and a diverged trial is never a success to TPE or the board."""

from __future__ import annotations

from typing import Any

import pytest
from optuna.trial import TrialState
from sqlalchemy import select

from services.db.models import Job, Sweep
from services.jobs.execute import run_chain
from services.ranking import best_trial, leaderboard
from services.specs import validate_sweep
from services.sweeps.ceiling import ceilings
from services.sweeps.samplers import tpe_study
from services.sweeps.scheduler import create_sweep

BASE = {
    "name": "sine",
    "dataset": {"name": "sine", "n_samples": 64, "seed": 0},
    "architecture": {"layers": [{"units": 4, "activation": "tanh"}]},
    "hyperparameters": {"learning_rate": 0.1, "epochs": 20, "batch_size": 16},
}


def create(sessions, parameters: dict[str, Any], **changes: Any) -> tuple[str, list[str]]:
    spec = {"name": "ceil", "base": BASE, "method": "grid", "parameters": parameters}
    spec.update(changes)
    with sessions() as session:
        sweep, ids = create_sweep(session, sweep=validate_sweep(spec))
        session.commit()
        return sweep.id, ids


def run_sweep(settings, sessions, dispatcher, sweep_id: str, first: list[str]) -> None:
    """Run every trial in this process, as a worker would, until none is queued."""
    settings = settings.model_copy(update={"chain_seconds": 600})
    pending = list(first)
    while pending:
        run_chain(
            settings=settings, session_factory=sessions, dispatcher=dispatcher, job_id=pending.pop()
        )
        pending += dispatcher.enqueued
        dispatcher.enqueued.clear()


def trials(sessions, sweep_id: str) -> list[Job]:
    with sessions() as session:
        stmt = select(Job).where(Job.sweep_id == sweep_id).order_by(Job.trial_index)
        return list(session.scalars(stmt))


RATES = [0.01, 0.1, 50.0, 100.0, 200.0]


def test_rates_above_one_that_diverged_are_skipped(settings, sessions, dispatcher):
    sweep_id, first = create(
        sessions, {"hyperparameters.learning_rate": {"values": RATES}}, max_concurrency=1
    )
    run_sweep(settings, sessions, dispatcher, sweep_id, first)
    rows = trials(sessions, sweep_id)
    assert [t.status for t in rows] == ["succeeded", "succeeded", "diverged", "skipped", "skipped"]
    ceiling_trial = rows[2]
    for skipped in rows[3:]:
        assert skipped.epochs_done == 0 and skipped.attempts == 0  # never trained
        assert skipped.result == {"skipped_by": ceiling_trial.id, "ceiling": 50.0}
        assert "at or above 50" in skipped.prune_reason and ceiling_trial.id in skipped.prune_reason
    with sessions() as session:
        sweep = session.get(Sweep, sweep_id)
        assert sweep.status == "done"
        (found,) = ceilings(session, sweep)
    assert (found.learning_rate, found.trial_id, found.others) == (50.0, ceiling_trial.id, {})


@pytest.mark.parametrize("method", ["random", "tpe"])
def test_random_and_tpe_sweeps_train_no_rate_at_or_above_one_that_diverged(
    settings, sessions, dispatcher, method
):
    """Sampled rates over a range whose top diverges: once a rate has diverged, every
    later trial at or above it is skipped (it names the trial that set the ceiling)."""
    sweep_id, first = create(
        sessions,
        {
            "hyperparameters.learning_rate": {
                "distribution": "log_uniform",
                "min": 0.01,
                "max": 1000,
            }
        },
        method=method,
        n_trials=14,
        max_concurrency=1,
        seed=3,
    )
    run_sweep(settings, sessions, dispatcher, sweep_id, first)
    rows = trials(sessions, sweep_id)
    assert len(rows) == 14
    rate = {t.id: t.params["hyperparameters.learning_rate"] for t in rows}
    skipped = [t for t in rows if t.status == "skipped"]
    assert skipped, [(rate[t.id], t.status) for t in rows]
    for t in skipped:
        setter = next(r for r in rows if r.id == t.result["skipped_by"])
        assert setter.status == "diverged" and setter.trial_index < t.trial_index
        assert rate[t.id] >= rate[setter.id] == t.result["ceiling"]
        assert t.epochs_done == 0
    for t in rows:  # no trial trained at or above a rate that had diverged before it
        if t.status != "skipped":
            earlier = [r for r in rows if r.status == "diverged" and r.trial_index < t.trial_index]
            assert all(rate[t.id] < rate[d.id] for d in earlier)


def test_queued_trials_above_a_new_ceiling_are_skipped_before_they_train(
    settings, sessions, dispatcher
):
    sweep_id, first = create(
        sessions,
        {"hyperparameters.learning_rate": {"values": [50.0, 100.0, 200.0]}},
        max_concurrency=3,
    )
    assert len(first) == 3  # all queued at once
    settings = settings.model_copy(update={"chain_seconds": 0})
    run_chain(settings=settings, session_factory=sessions, dispatcher=dispatcher, job_id=first[0])
    assert [t.status for t in trials(sessions, sweep_id)] == ["diverged", "skipped", "skipped"]
    # their messages, delivered later, find nothing to do
    for job_id in first[1:]:
        assert (
            run_chain(
                settings=settings, session_factory=sessions, dispatcher=dispatcher, job_id=job_id
            )
            == "finished"
        )


def test_the_ceiling_holds_per_combination_of_the_other_parameters(settings, sessions, dispatcher):
    parameters = {
        "hyperparameters.learning_rate": {"values": [0.1, 50.0, 100.0]},
        "architecture.layers.0.units": {"values": [4, 8]},
    }
    sweep_id, first = create(sessions, parameters, max_concurrency=1)
    run_sweep(settings, sessions, dispatcher, sweep_id, first)
    rows = trials(sessions, sweep_id)
    with sessions() as session:
        found = ceilings(session, session.get(Sweep, sweep_id))
    by_units = {c.others["architecture.layers.0.units"]: c for c in found}
    for t in rows:
        units, rate = (
            t.params["architecture.layers.0.units"],
            t.params["hyperparameters.learning_rate"],
        )
        ceiling = by_units.get(units)
        if t.status == "skipped":
            assert ceiling is not None and rate >= ceiling.learning_rate
            assert t.result["skipped_by"] == ceiling.trial_id
        else:
            assert ceiling is None or rate <= ceiling.learning_rate
    assert {t.status for t in rows} >= {"succeeded", "diverged", "skipped"}


def test_skip_above_divergence_false_trains_every_rate(settings, sessions, dispatcher):
    sweep_id, first = create(
        sessions,
        {"hyperparameters.learning_rate": {"values": RATES}},
        max_concurrency=1,
        skip_above_divergence=False,
    )
    run_sweep(settings, sessions, dispatcher, sweep_id, first)
    statuses = [t.status for t in trials(sessions, sweep_id)]
    assert "skipped" not in statuses and statuses.count("diverged") >= 2
    with sessions() as session:
        assert ceilings(session, session.get(Sweep, sweep_id)) == []


def _study_trials(goal: str, trials_: list[Job]):
    sweep = Sweep(
        id="s",
        seed=0,
        objective_goal=goal,
        spec={
            "parameters": {
                "hyperparameters.learning_rate": {
                    "min": 1e-4,
                    "max": 10.0,
                    "distribution": "log_uniform",
                }
            }
        },
    )
    study, _, _ = tpe_study(sweep, trials_, len(trials_))
    return study.get_trials(deepcopy=False)


def test_tpe_hears_a_diverged_or_skipped_trial_as_the_worst_finished_value():
    lr = "hyperparameters.learning_rate"
    rows = [
        Job(trial_index=0, status="succeeded", objective=0.3, params={lr: 0.01}, epochs_done=5),
        Job(trial_index=1, status="succeeded", objective=0.5, params={lr: 0.1}, epochs_done=5),
        Job(trial_index=2, status="diverged", objective=0.1, params={lr: 5.0}, epochs_done=2),
        Job(trial_index=3, status="skipped", objective=None, params={lr: 8.0}, epochs_done=0),
    ]
    told = _study_trials("minimize", rows)
    assert [(t.state, t.value) for t in told[2:]] == [(TrialState.COMPLETE, 0.5)] * 2
    told = _study_trials("maximize", rows)
    assert [(t.state, t.value) for t in told[2:]] == [(TrialState.COMPLETE, 0.3)] * 2
    # before any trial succeeded: a failure, not a value
    told = _study_trials("minimize", rows[2:])
    assert [t.state for t in told] == [TrialState.FAIL, TrialState.FAIL]


def test_a_diverged_trial_never_ranks_above_one_that_did_not_diverge():
    sweep = Sweep(objective_goal="minimize")
    rows = [
        Job(id="a", trial_index=0, objective=0.5, status="succeeded"),
        Job(id="b", trial_index=1, objective=0.01, status="diverged"),
        Job(id="c", trial_index=2, objective=0.7, status="pruned"),
        Job(id="d", trial_index=3, objective=None, status="skipped"),
    ]
    board = leaderboard(sweep, rows)
    assert [t.id for t in board] == ["a", "c", "b", "d"]
    assert best_trial(sweep, board).id == "a"
