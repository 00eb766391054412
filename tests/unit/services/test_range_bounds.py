"""A sweep whose learning rate says ``range_test: true`` runs an LR range test of its base
spec first and samples between suggested / 10 and the divergence point."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from sqlalchemy import select, update

from services.db.models import Job, LrRangeTest, Sweep
from services.lr_range import range_test_result
from services.lr_range.run import execute_range_test
from services.specs import SpecValidationError, validate_sweep
from services.sweeps.range_bounds import bounds
from services.sweeps.scheduler import advance_sweep, create_sweep
from services.sweeps.waiting import advance_waiting

LR = "hyperparameters.learning_rate"
BASE = {
    "dataset": {"name": "moons", "n_samples": 256, "seed": 0},
    "architecture": {"layers": [{"units": 16, "activation": "relu"}]},
    "hyperparameters": {"learning_rate": 0.1, "optimizer": "sgd", "epochs": 2, "batch_size": 32},
}


def sweep_spec(method: str = "random", **param: Any) -> dict[str, Any]:
    return {
        "name": "rt",
        "base": copy.deepcopy(BASE),
        "method": method,
        "n_trials": 4,
        "parameters": {LR: {"distribution": "log_uniform", "range_test": True, **param}},
        "max_concurrency": 2,
    }


@pytest.mark.parametrize(
    ("spec", "loc"),
    [
        (sweep_spec("grid"), f"parameters.{LR}"),
        (
            {
                **sweep_spec(),
                "parameters": {
                    "hyperparameters.momentum": {
                        "distribution": "uniform",
                        "range_test": True,
                        "min": 0.0,
                        "max": 0.9,
                    }
                },
            },
            "parameters.hyperparameters.momentum",
        ),
        (sweep_spec(min=1.0, max=0.1), f"parameters.{LR}"),
        (
            {**sweep_spec(), "parameters": {LR: {"values": [0.1], "range_test": True}}},
            f"parameters.{LR}",
        ),
    ],
)
def test_a_range_test_goes_with_one_continuous_learning_rate(spec, loc):
    with pytest.raises(SpecValidationError) as err:
        validate_sweep(spec)
    assert any(d["loc"].startswith(loc) for d in err.value.details), err.value.details


def test_the_bounds_rule_and_its_fallbacks():
    assert bounds(0.05, 2.0, 1e-6, 10.0) == (0.005, 2.0)
    assert bounds(None, 2.0, 1e-6, 10.0) == (1e-6, 2.0)  # the loss never fell
    assert bounds(0.05, None, 1e-6, 10.0) == (0.005, 10.0)  # it never diverged
    assert bounds(30.0, 2.0, 1e-6, 10.0) == (0.02, 2.0)  # descent right at the edge


def _create(sessions, spec) -> tuple[str, list[str], str]:
    with sessions() as session:
        sweep, ids = create_sweep(session, sweep=validate_sweep(spec))
        session.commit()
        assert sweep.range_test_id is not None
        return sweep.id, ids, sweep.range_test_id


def test_the_sweep_waits_for_its_test_then_samples_within_its_bounds(
    settings, sessions, dispatcher
):
    sweep_id, first, test_id = _create(
        sessions,
        sweep_spec(
            min=1e-4,
            max=100.0,
        ),
    )
    assert first == []  # nothing trains before the test has ended
    with sessions() as session:
        test = session.get(LrRangeTest, test_id)
        assert (test.status, test.min_lr, test.max_lr) == ("queued", 1e-4, 100.0)
        assert advance_sweep(session, sweep_id) == []  # still waiting
        session.commit()
    assert execute_range_test(settings=settings, session_factory=sessions, test_id=test_id) == (
        "succeeded"
    )
    created = advance_waiting(
        settings=settings, session_factory=sessions, dispatcher=dispatcher, test_id=test_id
    )
    assert len(created) == 2 and dispatcher.enqueued == created
    with sessions() as session:
        outcome = range_test_result(session, test_id)
        sweep = session.get(Sweep, sweep_id)
        low, high = bounds(outcome.suggested_lr, outcome.divergence_lr, 1e-4, 100.0)
        assert sweep.range_bounds["min"] == low and sweep.range_bounds["max"] == high
        assert low < high
        rates = [j.params[LR] for j in session.scalars(select(Job).where(Job.sweep_id == sweep_id))]
    assert rates and all(low <= r <= high for r in rates)


def test_a_failed_test_ends_the_sweep_with_its_reason(settings, sessions, dispatcher):
    sweep_id, _, test_id = _create(sessions, sweep_spec())
    with sessions() as session:
        session.execute(
            update(LrRangeTest)
            .where(LrRangeTest.id == test_id)
            .values(status="failed", error="boom")
        )
        session.commit()
    advance_waiting(
        settings=settings, session_factory=sessions, dispatcher=dispatcher, test_id=test_id
    )
    with sessions() as session:
        sweep = session.get(Sweep, sweep_id)
        (trial,) = session.scalars(select(Job).where(Job.sweep_id == sweep_id))
    assert sweep.status == "done" and trial.status == "failed"
    assert trial.error == f"the sweep stopped: its range test {test_id} failed: boom"
