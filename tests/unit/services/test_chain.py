"""A worker process runs the trial its sweep creates next without the broker's round trip
(:func:`services.jobs.execute.run_chain`), for ``chain_seconds``, and sends what it cannot run."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select

from services.db.models import Job, Sweep
from services.jobs import execute
from services.jobs.execute import run_chain
from services.jobs.limits import SHUTDOWN
from services.specs import validate_sweep
from services.sweeps.scheduler import create_sweep
from tests.conftest import XOR_JOB

RATES = [0.01, 0.03, 0.1, 0.3, 1.0]


def create(sessions, **changes: Any) -> tuple[str, list[str]]:
    spec: dict[str, Any] = {
        "name": "chain",
        "base": copy.deepcopy(XOR_JOB),
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": RATES}},
        "max_concurrency": 1,
        **changes,
    }
    with sessions() as session:
        sweep, ids = create_sweep(session, sweep=validate_sweep(spec))
        session.commit()
        return sweep.id, ids


def trials(sessions, sweep_id: str) -> list[tuple[int, str]]:
    with sessions() as session:
        stmt = select(Job.trial_index, Job.status).where(Job.sweep_id == sweep_id)
        return sorted(session.execute(stmt.order_by(Job.trial_index)).tuples())


def chain(settings, sessions, dispatcher, job_id: str, seconds: float) -> str:
    settings = settings.model_copy(update={"chain_seconds": seconds})
    return run_chain(
        settings=settings, session_factory=sessions, dispatcher=dispatcher, job_id=job_id
    )


def test_one_message_runs_the_whole_sweep_when_its_trials_are_short(settings, sessions, dispatcher):
    sweep_id, first = create(sessions)
    assert chain(settings, sessions, dispatcher, first[0], seconds=60) == "succeeded"
    assert trials(sessions, sweep_id) == [(i, "succeeded") for i in range(len(RATES))]
    assert dispatcher.enqueued == []  # no trial went through the broker
    with sessions() as session:
        assert session.get(Sweep, sweep_id).status == "done"


def test_without_chaining_the_next_trial_is_sent(settings, sessions, dispatcher):
    sweep_id, first = create(sessions)
    assert chain(settings, sessions, dispatcher, first[0], seconds=0) == "succeeded"
    assert trials(sessions, sweep_id) == [(0, "succeeded"), (1, "queued")]
    with sessions() as session:
        second = session.scalar(select(Job.id).where(Job.trial_index == 1))
    assert dispatcher.enqueued == [second]


def test_a_kept_trial_is_sent_when_the_time_is_up(settings, sessions, dispatcher, monkeypatch):
    sweep_id, first = create(sessions)
    clock = iter([0.0, 1.0, 100.0])  # the deadline set, trial 1 within it, trial 2 past it
    monkeypatch.setattr(execute, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    assert chain(settings, sessions, dispatcher, first[0], seconds=5) == "succeeded"
    assert trials(sessions, sweep_id)[:3] == [(0, "succeeded"), (1, "succeeded"), (2, "queued")]
    with sessions() as session:
        third = session.scalar(select(Job.id).where(Job.trial_index == 2))
    assert dispatcher.enqueued == [third]


def test_a_warm_shutdown_sends_the_kept_trial(settings, sessions, dispatcher, monkeypatch):
    sweep_id, first = create(sessions)
    real = execute._execute

    def then_shutdown(**kwargs: Any) -> tuple[str, str | None]:
        out = real(**kwargs)
        monkeypatch.setattr(SHUTDOWN, "requested", True)
        return out

    monkeypatch.setattr(execute, "_execute", then_shutdown)
    assert chain(settings, sessions, dispatcher, first[0], seconds=60) == "succeeded"
    assert trials(sessions, sweep_id)[:2] == [(0, "succeeded"), (1, "queued")]
    with sessions() as session:
        second = session.scalar(select(Job.id).where(Job.trial_index == 1))
    assert dispatcher.enqueued == [second]
