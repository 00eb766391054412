"""A sweep that stopped because it could not advance resumes: the trial it could not
create is created at the end with the grid point it was to take."""

from __future__ import annotations

import pytest

from services.jobs.recovery import recover
from services.sweeps import lifecycle, scheduler
from services.sweeps.scheduler import sweep_trials
from tests.unit.services.test_sweep_isolation import create, end_trials, state


def test_a_sweep_stopped_by_an_error_resumes_every_grid_point(
    settings, sessions, dispatcher, monkeypatch: pytest.MonkeyPatch
):
    sweep_id, _ = create(sessions)
    end_trials(sessions, sweep_id)
    real = scheduler._active_and_diverged

    def broken(session, sid: str):
        if sid == sweep_id:
            raise RuntimeError("boom")
        return real(session, sid)

    monkeypatch.setattr(scheduler, "_active_and_diverged", broken)
    recover(settings=settings, session_factory=sessions, dispatcher=dispatcher)
    monkeypatch.undo()
    status, trials = state(sessions, sweep_id)
    assert status == "done" and [s for s, _ in trials] == ["succeeded", "failed"]
    with sessions() as session:
        sweep, created = lifecycle.resume_sweep(session, sweep_id, limits=settings.limits)
        session.commit()
        assert sweep.status == "running" and sweep.n_trials == 4 and len(created) == 1
    for _ in range(3):
        end_trials(sessions, sweep_id)
        recover(settings=settings, session_factory=sessions, dispatcher=dispatcher)
    with sessions() as session:
        trials = sweep_trials(session, sweep_id)
        done = sorted(
            t.params["hyperparameters.learning_rate"] for t in trials if t.status == "succeeded"
        )
        replay = trials[-1]
    assert state(sessions, sweep_id)[0] == "done"
    assert done == [0.01, 0.1, 1.0]  # each point once: the failed one's point came last
    assert replay.trial_index == 3 and replay.proposal["index"] == 1
    with sessions() as session, pytest.raises(lifecycle.SweepStateError) as err:
        lifecycle.resume_sweep(session, sweep_id)
    assert err.value.code == "sweep_complete"
