"""Sweeps trained to the end in-process, for the tests of the pictures and the report."""

from __future__ import annotations

import copy
from typing import Any

from services.jobs.execute import execute_job
from tests.conftest import XOR_JOB

API = "/api/v1"
RELU_XOR = {
    **copy.deepcopy(XOR_JOB),
    "architecture": {"layers": [{"units": 4, "activation": "relu"}]},
}
#: 1e4 diverges on this network in its first epochs; the others train.
RATES = [0.03, 0.3, 3.0, 1e4]


def lr_sweep_body(**changes: Any) -> dict[str, Any]:
    """A grid over the learning rate and the batch size: 8 trials, 2 of them diverge."""
    body = {
        "name": "lr-map",
        "experiment": "pictures",
        "base": copy.deepcopy(RELU_XOR),
        "method": "grid",
        "parameters": {
            "hyperparameters.learning_rate": {"values": RATES},
            "hyperparameters.batch_size": {"values": [16, 32]},
        },
        "objective": {"metric": "val_loss", "goal": "minimize"},
        "max_concurrency": 8,
    }
    body.update(changes)
    return body


def run_all(app: Any, dispatcher: Any) -> None:
    """Train every job the fake dispatcher was handed (and those they lead to)."""
    svc = app.extensions["sweeplab"]
    done: set[str] = set()
    while pending := [j for j in dispatcher.enqueued if j not in done]:
        for job_id in pending:
            execute_job(
                settings=svc.settings,
                session_factory=svc.sessions,
                dispatcher=dispatcher,
                job_id=job_id,
            )
            done.add(job_id)


def finished_sweep(client: Any, app: Any, dispatcher: Any, body: dict[str, Any]) -> dict:
    """Submit ``body`` and train the sweep to its end; its answer."""
    response = client.post(f"{API}/sweeps", json=body)
    assert response.status_code == 201, response.get_json()
    run_all(app, dispatcher)
    sweep = client.get(f"{API}/sweeps/{response.get_json()['id']}").get_json()
    assert sweep["status"] == "done", sweep
    return sweep
