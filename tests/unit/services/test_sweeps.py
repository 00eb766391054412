"""Search spaces, samplers, early-stopping rules and sweep progress (SQLite, in-process)."""

from __future__ import annotations

import copy
import itertools
import math
import sqlite3
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from services.db.models import Job, JobMetric, Sweep, utcnow
from services.jobs.recovery import recover
from services.ranking import Objective, best_trial, leaderboard
from services.specs import EarlyStoppingPolicy, ParameterSpec, validate_sweep
from services.sweeps import ahead, scheduler
from services.sweeps.pruning import asha_rule, asha_rungs, median_rule
from services.sweeps.scheduler import (
    advance_and_enqueue,
    advance_sweep,
    cancel_sweep,
    create_sweep,
    sweep_trials,
)
from services.sweeps.space import grid_point, random_point
from tests.conftest import XOR_JOB


def sweep_spec(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "s",
        "base": copy.deepcopy(XOR_JOB),
        "method": "grid",
        "parameters": {
            "hyperparameters.learning_rate": {"values": [0.01, 0.1, 1.0]},
            "architecture.layers.0.units": {"values": [2, 4]},
        },
        "max_concurrency": 2,
    }
    spec.update(changes)
    return spec


def create(sessions, **changes: Any) -> tuple[str, list[str]]:
    with sessions() as session:
        sweep, ids = create_sweep(session, sweep=validate_sweep(sweep_spec(**changes)))
        session.commit()
        return sweep.id, ids


def finish(sessions, job_id: str, status: str = "succeeded", objective: float = 1.0) -> list[str]:
    with sessions() as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(status=status, objective=objective)
        )
        sweep_id = session.get(Job, job_id).sweep_id
        new = advance_sweep(session, sweep_id)
        session.commit()
        return new


def test_grid_point_matches_itertools_product():
    params = {"a": ParameterSpec(values=[1, 2, 3]), "b": ParameterSpec(values=["x", "y"])}
    expected = [
        dict(zip(params, combo, strict=True)) for combo in itertools.product([1, 2, 3], ["x", "y"])
    ]
    assert [grid_point(params, i) for i in range(6)] == expected


def test_random_point_is_reproducible_and_in_range():
    params = {
        "lr": ParameterSpec(distribution="log_uniform", min=1e-4, max=1.0),
        "u": ParameterSpec(distribution="uniform", min=-1, max=1),
        "n": ParameterSpec(distribution="int_uniform", min=2, max=4),
        "c": ParameterSpec(distribution="choice", values=["a", "b"]),
    }
    points = [random_point(params, seed=7, index=i) for i in range(200)]
    assert points == [random_point(params, seed=7, index=i) for i in range(200)]
    assert all(1e-4 <= p["lr"] <= 1 and -1 <= p["u"] <= 1 for p in points)
    assert {p["n"] for p in points} == {2, 3, 4} and {p["c"] for p in points} == {"a", "b"}
    logs = [math.log10(p["lr"]) for p in points]
    assert -2.6 < sum(logs) / len(logs) < -1.4  # log-uniform, not uniform


def test_advance_keeps_max_concurrency_and_finishes(sessions):
    sweep_id, first = create(sessions)
    assert len(first) == 2
    assert finish(sessions, first[0]) and len(finish(sessions, first[1])) == 1
    with sessions() as session:
        trials = sweep_trials(session, sweep_id)
        assert [t.params for t in trials][:3] == [
            {"hyperparameters.learning_rate": 0.01, "architecture.layers.0.units": 2},
            {"hyperparameters.learning_rate": 0.01, "architecture.layers.0.units": 4},
            {"hyperparameters.learning_rate": 0.1, "architecture.layers.0.units": 2},
        ]
        assert trials[2].spec["architecture"]["layers"][0]["units"] == 2
    pending = [t.id for t in trials if t.status == "queued"]
    for value in range(10):
        if not pending:
            break
        pending = pending[1:] + finish(sessions, pending[0], objective=float(value))
    with sessions() as session:
        sweep = session.get(Sweep, sweep_id)
        assert sweep.status == "done" and sweep.n_created == 6
        board = leaderboard(sweep, sweep_trials(session, sweep_id))
        assert [t.objective for t in board] == sorted(t.objective for t in board)


def test_cancel_sweep(sessions):
    sweep_id, first = create(sessions)
    with sessions() as session:
        session.execute(update(Job).where(Job.id == first[0]).values(status="running"))
        sweep, running = cancel_sweep(session, sweep_id)
        session.commit()
    assert running == [first[0]] and sweep.status == "cancelled"
    with sessions() as session:
        assert session.get(Job, first[1]).status == "cancelled"
        assert session.get(Job, first[0]).cancel_requested
        assert advance_sweep(session, sweep_id) == []


def _curves(sessions, sweep_id: str, curves: dict[str, list[float]]) -> None:
    with sessions() as session:
        for job_id, values in curves.items():
            for epoch, value in enumerate(values, start=1):
                session.add(
                    JobMetric(
                        job_id=job_id, epoch=epoch, val_loss=value, metrics={"val_loss": value}
                    )
                )
        session.commit()


def test_median_rule(sessions):
    sweep_id, ids = create(sessions, max_concurrency=6)
    a, b, c, me = ids[:4]
    _curves(sessions, sweep_id, {a: [1.0, 0.5, 0.4], b: [1.0, 0.6], c: [0.9, 0.8, 0.7]})
    policy = EarlyStoppingPolicy(policy="median", min_epochs=2, min_peers=2)
    objective = Objective("val_loss", "minimize")
    with sessions() as session:

        def rule(epoch: int, value: float) -> str | None:
            return median_rule(
                session,
                sweep_id=sweep_id,
                job_id=me,
                objective=objective,
                policy=policy,
                epoch=epoch,
                value=value,
            )

        assert rule(1, 5.0) is None  # before min_epochs
        assert rule(2, 0.7) is not None  # median of best-so-far (0.5, 0.6, 0.8) is 0.6
        assert rule(2, 0.55) is None
        assert rule(3, 0.55) is None  # only two peers reached epoch 3: median 0.55
        assert "median" in (rule(3, 0.6) or "")


def test_asha_rule(sessions):
    sweep_id, ids = create(sessions, max_concurrency=6)
    _curves(
        sessions,
        sweep_id,
        {ids[0]: [0.1], ids[1]: [0.2], ids[2]: [0.3], ids[3]: [0.4], ids[4]: [0.5]},
    )
    policy = EarlyStoppingPolicy(policy="asha", min_epochs=1, reduction_factor=3)
    assert asha_rungs(policy, 30) == [1, 3, 9, 27]
    objective = Objective("val_loss", "minimize")
    with sessions() as session:

        def rule(value: float) -> str | None:
            return asha_rule(
                session,
                sweep_id=sweep_id,
                job_id=ids[5],
                objective=objective,
                policy=policy,
                rung=1,
                value=value,
            )

        assert rule(0.15) is None  # 6 trials at the rung: the top 2 go on
        assert rule(0.25) is not None


def test_tpe_proposes_from_optuna_and_concentrates(sessions):
    spec = sweep_spec(
        method="tpe",
        n_trials=40,
        max_concurrency=1,
        n_startup_trials=8,
        seed=3,
        parameters={
            "hyperparameters.learning_rate": {
                "distribution": "log_uniform",
                "min": 1e-4,
                "max": 1.0,
            }
        },
    )
    with sessions() as session:
        sweep, ids = create_sweep(session, sweep=validate_sweep(spec))
        session.commit()
    proposals = []
    pending = ids
    while pending:
        with sessions() as session:
            job = session.get(Job, pending[0])
            lr = job.params["hyperparameters.learning_rate"]
            proposals.append((lr, job.proposal))
        # The objective is best at lr = 1e-2.
        pending = finish(sessions, pending[0], objective=(math.log10(lr) + 2) ** 2)
    assert len(proposals) == 40
    assert all(p["sampler"] == "TPESampler" for _, p in proposals)
    assert [p["startup"] for _, p in proposals] == [True] * 8 + [False] * 32
    late = [abs(math.log10(lr) + 2) for lr, _ in proposals[20:]]
    assert sum(late) / len(late) < 0.6  # random log-uniform would average ~1.0


def test_recover_resends_expired_and_advances_stalled_sweeps(settings, sessions, dispatcher):
    sweep_id, first = create(sessions)
    with sessions() as session:  # one trial's worker died; the other ended without advancing
        session.execute(
            update(Job)
            .where(Job.id == first[0])
            .values(status="running", lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        session.execute(update(Job).where(Job.id == first[1]).values(status="succeeded"))
        session.commit()
    done = recover(settings=settings, session_factory=sessions, dispatcher=dispatcher)
    assert done.expired == [first[0]] and done.created == []  # one active trial: not stalled
    with sessions() as session:
        session.execute(update(Job).where(Job.id == first[0]).values(status="failed"))
        session.commit()
    done = recover(settings=settings, session_factory=sessions, dispatcher=dispatcher)
    assert done.expired == [] and len(done.created) == 2
    assert dispatcher.enqueued == [first[0], *done.created]


def test_recover_resends_a_trial_whose_message_was_lost(settings, sessions, dispatcher):
    # The worker that created the next trial died before it could send its message.
    sweep_id, first = create(sessions)
    dispatcher.enqueued.clear()
    settings = settings.replace(requeue_seconds=60)
    assert not any(recover(settings=settings, session_factory=sessions, dispatcher=dispatcher))
    with sessions() as session:  # ... and a minute has gone by
        session.execute(
            update(Job)
            .where(Job.id == first[0])
            .values(updated_at=utcnow() - timedelta(seconds=61))
        )
        session.commit()
    done = recover(settings=settings, session_factory=sessions, dispatcher=dispatcher)
    assert done.requeued == [first[0]] and dispatcher.enqueued == [first[0]]
    # Sent once per period, not at every pass.
    done = recover(settings=settings, session_factory=sessions, dispatcher=dispatcher)
    assert done.requeued == [] and dispatcher.enqueued == [first[0]]


def test_recover_fails_a_job_that_keeps_killing_its_worker(settings, sessions, dispatcher):
    sweep_id, first = create(sessions)
    dispatcher.enqueued.clear()
    with sessions() as session:
        session.execute(
            update(Job)
            .where(Job.id == first[0])
            .values(
                status="running",
                attempts=settings.max_attempts,
                lease_expires_at=utcnow() - timedelta(seconds=1),
            )
        )
        session.commit()
    done = recover(settings=settings, session_factory=sessions, dispatcher=dispatcher)
    assert done.failed == [first[0]] and done.expired == []
    with sessions() as session:
        job = session.get(Job, first[0])
        assert job.status == "failed" and "lost 5 times" in job.error


def test_leaderboard_lists_every_trial_unranked_last():
    sweep = Sweep(objective_goal="maximize")
    trials = [
        Job(id="a", trial_index=0, objective=0.5, status="succeeded"),
        Job(id="b", trial_index=1, objective=None, status="diverged"),
        Job(id="c", trial_index=2, objective=0.9, status="succeeded"),
        Job(id="d", trial_index=3, objective=0.7, status="diverged"),
    ]
    board = leaderboard(sweep, trials)
    assert [t.id for t in board] == ["c", "a", "d", "b"]  # a diverged trial ranks below
    assert best_trial(sweep, board).id == "c"
    assert best_trial(sweep, [trials[1]]) is None


def test_tpe_proposals_are_made_outside_the_write_lock(settings, sessions, dispatcher, monkeypatch):
    """The sampler is rebuilt and asked in a read transaction: another process writes
    meanwhile (SQLite, a busy timeout of 0.2 s); under the lock the proposals are
    only stored, each trial index once. A proposal made for an ``n_created`` that
    moved on is not used: the advance proposes under its lock instead."""
    spec = sweep_spec(
        method="tpe",
        n_trials=6,
        max_concurrency=2,
        parameters={
            "hyperparameters.learning_rate": {"distribution": "log_uniform", "min": 1e-3, "max": 1}
        },
    )
    with sessions() as session:
        sweep, first = create_sweep(session, sweep=validate_sweep(spec))
        session.commit()
        sweep_id = sweep.id
    with sessions() as session:
        session.execute(
            update(Job).where(Job.id.in_(first)).values(status="succeeded", objective=1)
        )
        session.commit()
    path = settings.database_url.removeprefix("sqlite:///")
    writes: list[str] = []
    real_propose = scheduler.propose

    def propose_while_another_writes(*args: Any) -> Any:
        other = sqlite3.connect(path, timeout=0.2, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("UPDATE sweeps SET updated_at = updated_at")
            other.execute("COMMIT")
            writes.append("ok")
        except sqlite3.OperationalError as err:
            writes.append(str(err))
        finally:
            other.close()
        return real_propose(*args)

    monkeypatch.setattr(ahead, "propose", propose_while_another_writes)  # ahead of the lock
    monkeypatch.setattr(scheduler, "propose", propose_while_another_writes)  # under it
    new = advance_and_enqueue(
        settings=settings, session_factory=sessions, dispatcher=dispatcher, sweep_id=sweep_id
    )
    assert len(new) == 2 and writes == ["ok", "ok"]  # proposed once each, never locked out
    with sessions() as session:
        indices = [j.trial_index for j in sweep_trials(session, sweep_id)]
    assert indices == [0, 1, 2, 3]

    stale = scheduler.prepare_proposals(sessions, sweep_id)  # none due: 2 active
    assert stale is not None and stale.proposals == []
    with sessions() as session:
        session.execute(update(Job).where(Job.id.in_(new)).values(status="succeeded", objective=1))
        session.commit()
    prepared = scheduler.prepare_proposals(sessions, sweep_id)
    assert prepared is not None and len(prepared.proposals) == 2
    prepared.n_created -= 1  # as if another advance had created a trial meanwhile
    writes.clear()
    with sessions() as session:
        made = advance_sweep(session, sweep_id, prepared=prepared)
        session.commit()
    assert len(made) == 2 and len(writes) == 2  # proposed again, under the lock
    with sessions() as session:
        indices = [j.trial_index for j in sweep_trials(session, sweep_id)]
    assert indices == [0, 1, 2, 3, 4, 5]
