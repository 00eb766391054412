"""A sweep is isolated: whatever breaks while it advances fails one trial (or ends that
sweep, with the reason in its last trial), and every other sweep keeps advancing."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from sqlalchemy import update

from services.db.models import Job, Sweep
from services.jobs import recovery
from services.jobs.recovery import recover
from services.specs import validate_sweep
from services.sweeps import scheduler
from services.sweeps.scheduler import advance_sweep, create_sweep, sweep_trials
from tests.conftest import XOR_JOB


def create(sessions, **changes: Any) -> tuple[str, list[str]]:
    spec: dict[str, Any] = {
        "name": "iso",
        "base": copy.deepcopy(XOR_JOB),
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": [0.01, 0.1, 1.0]}},
        "max_concurrency": 1,
        **changes,
    }
    with sessions() as session:
        sweep, ids = create_sweep(session, sweep=validate_sweep(spec))
        session.commit()
        return sweep.id, ids


def corrupt(sessions, sweep_id: str, change) -> None:
    with sessions() as session:
        sweep = session.get(Sweep, sweep_id)
        spec = copy.deepcopy(sweep.spec)
        change(spec)
        session.execute(update(Sweep).where(Sweep.id == sweep_id).values(spec=spec))
        session.commit()


def end_trials(sessions, sweep_id: str, status: str = "succeeded") -> None:
    with sessions() as session:
        session.execute(
            update(Job)
            .where(Job.sweep_id == sweep_id, Job.status.in_(["queued", "running"]))
            .values(status=status, objective=1.0)
        )
        session.commit()


def state(sessions, sweep_id: str) -> tuple[str, list[tuple[str, str | None]]]:
    with sessions() as session:
        sweep = session.get(Sweep, sweep_id)
        return sweep.status, [(t.status, t.error) for t in sweep_trials(session, sweep_id)]


def test_a_trial_that_cannot_be_built_fails_alone(settings, sessions, dispatcher):
    # The base no longer merges with the parameters (not a validation error: a TypeError).
    sweep_id, first = create(sessions)
    corrupt(sessions, sweep_id, lambda spec: spec["base"].update(hyperparameters=7))
    end_trials(sessions, sweep_id)
    done = recover(settings=settings, session_factory=sessions, dispatcher=dispatcher)
    assert done.created == []
    status, trials = state(sessions, sweep_id)
    assert status == "done"  # every trial was tried; none could be built
    assert [s for s, _ in trials] == ["succeeded", "failed", "failed"]
    assert all(e and e.startswith("could not create the trial: ") for _, e in trials[1:])


def test_a_sweep_whose_sampler_fails_ends_with_the_reason(settings, sessions, dispatcher):
    sweep_id, _ = create(sessions)
    other_id, _ = create(sessions)
    corrupt(sessions, sweep_id, lambda spec: spec["parameters"].update(x={"values": "oops"}))
    end_trials(sessions, sweep_id)
    end_trials(sessions, other_id)
    done = recover(settings=settings, session_factory=sessions, dispatcher=dispatcher)
    status, trials = state(sessions, sweep_id)
    assert status == "done"
    assert [s for s, _ in trials] == ["succeeded", "failed"]  # no trial after the stop
    assert trials[1][1].startswith("the sweep stopped: no parameters for trial 1: ")
    # The sweep listed beside it advanced in the same pass.
    assert len(done.created) == 1
    assert state(sessions, other_id)[1][-1] == ("queued", None)


def test_an_error_outside_one_trial_ends_that_sweep_only(
    settings, sessions, dispatcher, monkeypatch: pytest.MonkeyPatch
):
    bad_id, _ = create(sessions)
    good_id, _ = create(sessions)
    end_trials(sessions, bad_id)
    end_trials(sessions, good_id)
    real = scheduler._active_and_diverged  # the first read advance_sweep makes of a sweep's trials

    def broken(session, sweep_id: str):
        if sweep_id == bad_id:
            raise RuntimeError("boom")
        return real(session, sweep_id)

    monkeypatch.setattr(scheduler, "_active_and_diverged", broken)
    done = recover(settings=settings, session_factory=sessions, dispatcher=dispatcher)
    monkeypatch.undo()
    assert len(done.created) == 1
    status, trials = state(sessions, bad_id)
    assert status == "done" and trials[-1] == (
        "failed",
        "the sweep stopped: it could not advance: RuntimeError: boom",
    )
    assert state(sessions, good_id)[1][-1] == ("queued", None)


def test_recover_goes_on_when_one_sweep_raises(
    settings, sessions, dispatcher, monkeypatch: pytest.MonkeyPatch
):
    # Even an error that escapes advance_and_enqueue (the database away for one
    # sweep) stops only that sweep's advance in this pass.
    ids = [create(sessions)[0] for _ in range(3)]
    for sweep_id in ids:
        end_trials(sessions, sweep_id)
    real = recovery.advance_and_enqueue

    def flaky(**kwargs: Any) -> list[str]:
        if kwargs["sweep_id"] == ids[0]:
            raise ConnectionError("database away")
        return real(**kwargs)

    monkeypatch.setattr(recovery, "advance_and_enqueue", flaky)
    done = recover(settings=settings, session_factory=sessions, dispatcher=dispatcher)
    assert len(done.created) == 2
    assert state(sessions, ids[0])[0] == "running"  # untouched: the next pass tries again


def test_an_insert_the_database_refuses_fails_that_trial(
    settings, sessions, dispatcher, monkeypatch: pytest.MonkeyPatch
):
    sweep_id, _ = create(sessions, max_concurrency=2)
    end_trials(sessions, sweep_id)
    real = scheduler.create_job
    calls = {"n": 0}

    def refuse_once(session, **kwargs: Any) -> Job:
        calls["n"] += 1
        job = real(session, **kwargs)
        if calls["n"] == 1:  # flushed inside the savepoint, then refused
            raise ValueError("a value the database refused")
        return job

    monkeypatch.setattr(scheduler, "create_job", refuse_once)
    with sessions() as session:
        new = advance_sweep(session, sweep_id)
        session.commit()
    monkeypatch.undo()
    status, trials = state(sessions, sweep_id)
    assert [s for s, _ in trials] == ["succeeded", "succeeded", "failed"]
    assert trials[2][1] == "could not create the trial: ValueError: a value the database refused"
    assert new == [] and status == "done"
