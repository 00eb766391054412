"""POST /sweeps with a ``range_test`` learning rate: the test is stored and sent with the
sweep, and GET /sweeps/<id> shows it, then the bounds it gave."""

from __future__ import annotations

from services.lr_range.run import execute_range_test
from services.sweeps.waiting import advance_waiting
from tests.conftest import XOR_JOB

API = "/api/v1"
LR = "hyperparameters.learning_rate"


def test_a_range_test_sweep_shows_its_test_then_its_bounds(app, client, dispatcher):
    body = {
        "base": XOR_JOB,
        "method": "random",
        "n_trials": 3,
        "parameters": {LR: {"distribution": "log_uniform", "range_test": True}},
    }
    created = client.post(f"{API}/sweeps", json=body)
    assert created.status_code == 201, created.get_json()
    sweep = created.get_json()
    test = sweep["range_test"]
    assert (test["status"], test["parameter"], test["min"], test["max"]) == (
        "queued",
        LR,
        None,
        None,
    )
    assert dispatcher.range_tests == [test["id"]] and dispatcher.enqueued == []
    assert client.get(test["link"]).get_json()["min_lr"] == 1e-6  # the test's default bounds

    services = app.extensions["sweeplab"]
    execute_range_test(
        settings=services.settings, session_factory=services.sessions, test_id=test["id"]
    )
    advance_waiting(
        settings=services.settings,
        session_factory=services.sessions,
        dispatcher=dispatcher,
        test_id=test["id"],
    )
    shown = client.get(f"{API}/sweeps/{sweep['id']}").get_json()
    fixed = shown["range_test"]
    assert fixed["status"] == "succeeded"
    assert fixed["min"] < fixed["max"] and fixed["max"] <= 10.0
    assert shown["n_created"] == 2 and len(dispatcher.enqueued) == 2
