"""The sweeps API and the OpenAPI document."""

from __future__ import annotations

import copy

import pytest

from services.jobs.execute import execute_job
from tests.conftest import XOR_JOB

API = "/api/v1"


def sweep_body(**changes):
    body = {
        "name": "lr-sweep",
        "experiment": "xor",
        "base": copy.deepcopy(XOR_JOB),
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": [0.01, 0.1, 1.0, 3.0]}},
        "objective": {"metric": "val_loss", "goal": "minimize"},
        "max_concurrency": 2,
    }
    body.update(changes)
    return body


def drain(app, dispatcher, client, sweep_id):
    svc = app.extensions["sweeplab"]
    done = set()
    while pending := [j for j in dispatcher.enqueued if j not in done]:
        for job_id in pending:
            execute_job(
                settings=svc.settings,
                session_factory=svc.sessions,
                dispatcher=dispatcher,
                job_id=job_id,
            )
            done.add(job_id)
    return client.get(f"{API}/sweeps/{sweep_id}").get_json()


def test_grid_sweep_end_to_end(client, app, dispatcher):
    response = client.post(f"{API}/sweeps", json=sweep_body())
    assert response.status_code == 201
    sweep = response.get_json()
    assert sweep["status"] == "running" and sweep["n_trials"] == 4
    assert sweep["counts"]["queued"] == 2 and len(dispatcher.enqueued) == 2
    sweep = drain(app, dispatcher, client, sweep["id"])
    assert sweep["status"] == "done" and sweep["counts"]["succeeded"] == 4
    board = sweep["leaderboard"]
    assert [row["rank"] for row in board] == [1, 2, 3, 4]
    assert [row["objective"] for row in board] == sorted(row["objective"] for row in board)
    assert sweep["best_trial"]["job_id"] == board[0]["job_id"]
    trials = client.get(f"{API}/sweeps/{sweep['id']}/trials").get_json()["items"]
    assert sorted(t["params"]["hyperparameters.learning_rate"] for t in trials) == [
        0.01,
        0.1,
        1.0,
        3.0,
    ]
    assert all(t["sweep_id"] == sweep["id"] for t in trials)
    listed = client.get(f"{API}/jobs?sweep={sweep['id']}&limit=3").get_json()
    assert len(listed["items"]) == 3 and listed["next_cursor"]
    assert client.get(f"{API}/sweeps").get_json()["items"][0]["id"] == sweep["id"]


def test_cancel_sweep(client, dispatcher):
    sweep = client.post(f"{API}/sweeps", json=sweep_body()).get_json()
    response = client.post(f"{API}/sweeps/{sweep['id']}/cancel")
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "cancelled" and body["counts"]["cancelled"] == 2
    assert client.get(f"{API}/sweeps?status=cancelled").get_json()["items"][0]["id"] == sweep["id"]
    again = client.post(f"{API}/sweeps/{sweep['id']}/cancel")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "conflict"


def test_cancelling_a_queued_trial_starts_the_next(client, dispatcher):
    sweep = client.post(f"{API}/sweeps", json=sweep_body()).get_json()
    first = dispatcher.enqueued[0]
    client.post(f"{API}/jobs/{first}/cancel")
    assert len(dispatcher.enqueued) == 3
    assert client.get(f"{API}/sweeps/{sweep['id']}").get_json()["n_created"] == 3


def test_bad_sweeps_are_422(client):
    bad = sweep_body(parameters={"hyperparameters.learning_rate": {"values": [0.1, 0]}})
    response = client.post(f"{API}/sweeps", json=bad)
    assert response.status_code == 422
    details = response.get_json()["error"]["details"]
    assert details[0]["loc"] == "parameters.hyperparameters.learning_rate.values.1"
    response = client.post(f"{API}/sweeps", json=sweep_body(method="random"))
    assert response.status_code == 422
    response = client.post(f"{API}/sweeps", json=sweep_body(method="random", n_trials=1001))
    assert response.status_code == 422


@pytest.mark.parametrize("metric", ["val_loss", "val_accuracy"])
def test_a_validation_objective_without_a_validation_set_is_422(client, metric):
    base = copy.deepcopy(XOR_JOB)
    base["dataset"]["validation_split"] = 0
    body = sweep_body(base=base, objective={"metric": metric})
    response = client.post(f"{API}/sweeps", json=body)
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert error["details"][0]["loc"] == "objective.metric"
    assert "validation set" in error["details"][0]["msg"]
    # sweeping the split itself, or ranking by a training metric, is fine
    body["parameters"]["dataset.validation_split"] = {"values": [0.2]}
    assert client.post(f"{API}/sweeps", json=body).status_code == 201
    # ... unless one of the swept values leaves a trial without validation rows
    body["parameters"]["dataset.validation_split"] = {"values": [0.2, 0]}
    response = client.post(f"{API}/sweeps", json=body)
    assert response.status_code == 422
    detail = response.get_json()["error"]["details"][0]
    assert detail["loc"] == "parameters.dataset.validation_split.values.1"
    ok = sweep_body(base=base, objective={"metric": metric.replace("val_", "train_")})
    assert client.post(f"{API}/sweeps", json=ok).status_code == 201


def test_openapi_document(client):
    doc = client.get(f"{API}/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    schemas = doc["components"]["schemas"]
    assert {"JobCreate", "SweepCreate", "JobPublic", "SweepPublic", "ErrorResponse"} <= set(schemas)
    job = schemas["JobCreate"]
    assert job["additionalProperties"] is False
    assert set(job["required"]) == {"dataset", "architecture", "hyperparameters"}
    assert doc["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]
    refs = []

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs and all(r.removeprefix("#/components/schemas/") in schemas for r in refs)


def test_responses_match_the_models_the_openapi_document_publishes(client, app, dispatcher):
    """What the API sends is what its OpenAPI document promises (JobPublic, SweepPublic, ...)."""
    from services.specs import JobPage, JobPublic, MetricsPublic, SweepPage, SweepPublic

    created = client.post(f"{API}/sweeps", json=sweep_body()).get_json()
    SweepPublic.model_validate(created)
    done = drain(app, dispatcher, client, created["id"])
    SweepPublic.model_validate(done)
    assert done["leaderboard"] and done["best_trial"] is not None
    SweepPage.model_validate(client.get(f"{API}/sweeps").get_json())
    jobs = client.get(f"{API}/jobs?sweep={created['id']}").get_json()
    JobPage.model_validate(jobs)
    job_id = jobs["items"][0]["id"]
    JobPublic.model_validate(client.get(f"{API}/jobs/{job_id}").get_json())
    MetricsPublic.model_validate(client.get(f"{API}/jobs/{job_id}/metrics").get_json())
    schemas = client.get(f"{API}/openapi.json").get_json()["components"]["schemas"]
    assert {"JobPublic", "SweepPublic", "JobPage", "SweepPage", "MetricsPublic"} <= set(schemas)


def test_an_accuracy_objective_over_a_swept_regression_dataset_is_422(client):
    base = {
        "dataset": {"name": "moons"},
        "architecture": {"layers": [{"units": 4}]},
        "hyperparameters": {"learning_rate": 0.1, "epochs": 2},
    }
    body = sweep_body(
        base=base,
        parameters={"dataset.name": {"values": ["moons", "diabetes"]}},
        objective={"metric": "val_accuracy"},
    )
    response = client.post(f"{API}/sweeps", json=body)
    assert response.status_code == 422
    detail = response.get_json()["error"]["details"][0]
    assert detail["loc"] == "parameters.dataset.name.values.1" and "regression" in detail["msg"]


def test_broker_down_is_503_and_the_sweep_is_not_stranded(client, dispatcher):
    def down(job_ids):
        raise ConnectionError("redis is down")

    dispatcher.enqueue_jobs = down
    response = client.post(f"{API}/sweeps", json=sweep_body())
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "queue_unavailable"
    (sweep,) = client.get(f"{API}/sweeps").get_json()["items"]
    assert sweep["status"] == "cancelled"
    trials = client.get(f"{API}/sweeps/{sweep['id']}/trials").get_json()["items"]
    assert len(trials) == 2 and all(t["status"] == "failed" for t in trials)
