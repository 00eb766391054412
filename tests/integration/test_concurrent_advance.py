"""Two advances of one TPE sweep at once (two trials ending together, on two workers):
both rebuild the sampler outside the write lock; one stores its proposals, the other
finds the sweep moved on (and proposes again under the lock). No trial index twice,
none lost, no outdated proposal stored, never more than ``max_concurrency`` active, on
SQLite and PostgreSQL.

``simultaneous``: both prepare from the same trials, then race for the lock.
``interleaved``: A and B prepare from the same trials, A stores, another trial ends,
B stores: its proposals are outdated and it must propose again for the slot left."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from services.config import Settings
from services.db import Job, Sweep, make_engine, make_session_factory, upgrade
from services.db.models import ACTIVE_STATUSES
from services.specs import validate_sweep
from services.sweeps import scheduler
from tests.conftest import XOR_JOB, FakeDispatcher
from tests.integration.harness import create_pg_database, drop_pg_database, require_postgres

N_TRIALS, CONCURRENCY = 14, 3


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'advance.db'}"
        upgrade(url)
        yield url
        return
    require_postgres()
    url = create_pg_database()
    try:
        upgrade(url)
        yield url
    finally:
        drop_pg_database(url)


def trials_of(sessions, sweep_id: str) -> list[tuple[int, str]]:
    with sessions() as session:
        rows = session.execute(
            select(Job.trial_index, Job.status).where(Job.sweep_id == sweep_id)
        ).all()
    return [(int(i), s) for i, s in rows]


def finish_one(sessions, sweep_id: str, rng: random.Random) -> None:
    with sessions() as session:
        job_id = session.scalar(
            select(Job.id)
            .where(Job.sweep_id == sweep_id, Job.status.in_(ACTIVE_STATUSES))
            .order_by(Job.trial_index)
            .limit(1)
        )
        if job_id is not None:
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(status="succeeded", objective=rng.random(), epochs_done=3)
            )
            session.commit()


@pytest.mark.parametrize("order", ["simultaneous", "interleaved"])
def test_two_advances_at_once_create_each_trial_once(database_url: str, order: str, monkeypatch):
    settings = Settings.from_env({}).replace(database_url=database_url, mlflow_tracking_uri=None)
    engines = [make_engine(database_url) for _ in range(3)]
    main, first, second = [make_session_factory(e) for e in engines]
    spec = {
        "name": "race",
        "base": dict(XOR_JOB),
        "method": "tpe",
        "n_trials": N_TRIALS,
        # startup proposals depend on the trial index only: an outdated one stored at
        # another index would repeat a learning rate (caught below)
        "n_startup_trials": N_TRIALS if order == "interleaved" else 2,
        "max_concurrency": CONCURRENCY,
        "parameters": {
            "hyperparameters.learning_rate": {
                "distribution": "log_uniform",
                "min": 0.01,
                "max": 1.0,
            }
        },
    }
    with main() as session:
        sweep, _ = scheduler.create_sweep(session, sweep=validate_sweep(spec))
        session.commit()
        sweep_id = sweep.id

    rng, errors = random.Random(0), []
    prepared_at: dict[str, list[int | None]] = {"first": [], "second": []}
    first_prepared, second_prepared, ended = (threading.Event() for _ in range(3))
    both_prepared = threading.Barrier(2, timeout=20)
    prepare = scheduler.prepare_proposals

    def prepare_then_wait(sessions: Any, sid: str) -> Any:
        ahead = prepare(sessions, sid)
        me = threading.current_thread().name
        prepared_at[me].append(None if ahead is None else ahead.n_created)
        if order == "simultaneous":
            both_prepared.wait()
        elif me == "first":
            first_prepared.set()
            second_prepared.wait(20)
        else:
            second_prepared.set()
            ended.wait(20)  # A has stored, and one more trial ended since
        return ahead

    def advance(sessions: Any) -> None:
        try:
            scheduler.advance_and_enqueue(
                settings=settings,
                session_factory=sessions,
                dispatcher=FakeDispatcher(),  # type: ignore[arg-type]
                sweep_id=sweep_id,
            )
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    monkeypatch.setattr(scheduler, "prepare_proposals", prepare_then_wait)
    try:
        for _ in range(2 * N_TRIALS):
            with main() as session:
                if session.scalar(select(Sweep.status).where(Sweep.id == sweep_id)) != "running":
                    break
            for event in (first_prepared, second_prepared, ended):
                event.clear()
            a = threading.Thread(target=advance, args=(first,), name="first")
            b = threading.Thread(target=advance, args=(second,), name="second")
            finish_one(main, sweep_id, rng)
            if order == "simultaneous":
                finish_one(main, sweep_id, rng)
                a.start()
                b.start()
            else:
                a.start()
                b.start()
                a.join(60)  # A stored while B waits with its proposals
                finish_one(main, sweep_id, rng)
                ended.set()
            a.join(60)
            b.join(60)
            assert errors == []
            trials = trials_of(main, sweep_id)
            indices = sorted(i for i, _ in trials)
            assert indices == list(range(len(indices)))  # each index once, none skipped
            active = sum(s in ACTIVE_STATUSES for _, s in trials)
            assert active == min(CONCURRENCY, N_TRIALS - (len(trials) - active))
        with main() as session:
            done = session.get(Sweep, sweep_id)
            assert done.status == "done" and done.n_created == N_TRIALS
            rates = session.scalars(select(Job.params).where(Job.sweep_id == sweep_id)).all()
            assert len(rates) == N_TRIALS
            # an outdated proposal is never stored (it would repeat the winner's)
            assert len({r["hyperparameters.learning_rate"] for r in rates}) == N_TRIALS
    finally:
        for engine in engines:
            engine.dispose()
    # the race did happen: both prepared ahead, from the same trials
    pairs = list(zip(prepared_at["first"], prepared_at["second"], strict=True))
    assert any(x is not None and x == y for x, y in pairs)
