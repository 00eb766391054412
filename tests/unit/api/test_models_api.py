"""GET /jobs/<id>/weights and POST /jobs/<id>/predict: the download's keys, predictions
equal to the trainer's own for the same spec, labels as the user gave them (an uploaded
CSV's strings), 404 for what the user may not see, 409 without weights, 422 naming the
row (every answer checked against the OpenAPI document)."""

from __future__ import annotations

import copy
import io
import json

import numpy as np
import pytest
from sqlalchemy import update

from services.datasets import fit_data
from services.db.models import JobWeights
from services.models import MODELS
from services.specs import trainer_spec
from services.trainer import Network, fit
from tests.auth_support import authorize, new_token
from tests.reports_support import run_all
from tests.unit.api.contract import contract_client

API = "/api/v1"
IRIS_JOB = {
    "name": "iris",
    "dataset": {"name": "iris"},
    "architecture": {"layers": [{"units": 8}]},
    "hyperparameters": {"learning_rate": 0.1, "epochs": 3},
}
SINE_JOB = {
    "dataset": {"name": "sine", "n_samples": 100},
    "architecture": {"layers": [{"units": 6, "activation": "tanh"}]},
    "hyperparameters": {"learning_rate": 0.05, "epochs": 3},
}
CSV = b"size,weight,kind\n" + b"".join(
    f"{i % 7 * 0.5 + (i % 2) * 3},{(i % 3) * 100 + i},{['setosa', 'virginica'][i % 2]}\n".encode()
    for i in range(40)
)


@pytest.fixture(autouse=True)
def _fresh_models():
    MODELS.clear()  # each test's database is new: ids never repeat, but keep it honest
    yield
    MODELS.clear()


@pytest.fixture
def api(app, admin_token):
    return authorize(contract_client(app), admin_token)


def trained(api, app, dispatcher, body) -> dict:
    job = api.post(f"{API}/jobs", json=copy.deepcopy(body)).get_json()
    run_all(app, dispatcher)
    job = api.get(f"{API}/jobs/{job['id']}").get_json()
    assert job["status"] == "succeeded", job
    return job


def trainers_result(app, job: dict):
    """The same training again in-process: bit for bit the job's (runs are reproducible)."""
    svc = app.extensions["sweeplab"]
    return fit(trainer_spec(job["spec"]), data=fit_data(job["spec"], svc.sessions, svc.settings))


def error(response) -> tuple[int, str, list[str]]:
    body = response.get_json()["error"]
    return response.status_code, body["code"], [d["loc"] for d in body["details"]]


def test_weights_and_predictions_of_a_classifier(api, app, dispatcher):
    queued = api.post(f"{API}/jobs", json=copy.deepcopy(IRIS_JOB)).get_json()
    assert error(api.get(f"{API}/jobs/{queued['id']}/weights"))[:2] == (409, "no_weights")
    refused = api.post(f"{API}/jobs/{queued['id']}/predict", json={"rows": [[1, 2, 3, 4]]})
    assert error(refused)[:2] == (409, "no_weights")

    job = trained(api, app, dispatcher, IRIS_JOB)
    response = api.get(f"{API}/jobs/{job['id']}/weights")
    assert response.status_code == 200 and response.mimetype == "application/octet-stream"
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="job-{job["id"]}.npz"'
    )
    with np.load(io.BytesIO(response.data), allow_pickle=False) as z:
        got = {key: z[key] for key in z.files}
    assert set(got) == {
        "W1",
        "b1",
        "W2",
        "b2",
        "spec",
        "architecture",
        "feature_mean",
        "feature_std",
        "classes",
    }
    assert got["W1"].shape == (4, 8) and got["b1"].shape == (8,) and got["W2"].shape == (8, 3)
    assert json.loads(str(got["spec"])) == job["spec"] and got["classes"].tolist() == [0, 1, 2]

    result = trainers_result(app, job)
    np.testing.assert_array_equal(got["W2"], result.network.layers[1].params["W"])
    np.testing.assert_array_equal(got["feature_mean"], result.data.feature_mean)
    X = np.random.default_rng(1).normal(4.0, 2.0, size=(50, 4))
    answer = api.post(f"{API}/jobs/{job['id']}/predict", json={"rows": X.tolist()})
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["job_id"] == job["id"] and body["task"] == "classification"
    assert body["predictions"] == result.predict(X).tolist()
    assert body["classes"] == [0, 1, 2]
    proba = np.array(body["probabilities"])
    assert proba.shape == (50, 3)
    expected = result.network.predict((X - result.data.feature_mean) / result.data.feature_std)
    np.testing.assert_array_equal(proba, expected.astype(np.float64))


def test_a_regression_answers_numbers_in_the_targets_units(api, app, dispatcher):
    job = trained(api, app, dispatcher, SINE_JOB)
    with np.load(io.BytesIO(api.get(f"{API}/jobs/{job['id']}/weights").data)) as z:
        assert {"target_mean", "target_std"} <= set(z.files) and "classes" not in z.files
    X = np.linspace(-3, 3, 13)[:, None]
    body = api.post(f"{API}/jobs/{job['id']}/predict", json={"rows": X.tolist()}).get_json()
    assert body["task"] == "regression"
    assert body["probabilities"] is None and body["classes"] is None
    assert body["predictions"] == trainers_result(app, job).predict(X).tolist()


def test_an_uploaded_csvs_string_labels_round_trip(api, app, dispatcher):
    files = {"file": (io.BytesIO(CSV), "flowers.csv")}
    dataset = api.post(f"{API}/datasets", data=files, content_type="multipart/form-data")
    assert dataset.status_code == 201, dataset.get_json()
    spec = {
        "dataset": {"name": "uploaded", "id": dataset.get_json()["id"]},
        "architecture": {"layers": [{"units": 4}]},
        "hyperparameters": {"learning_rate": 0.1, "epochs": 5},
    }
    job = trained(api, app, dispatcher, spec)
    with np.load(io.BytesIO(api.get(f"{API}/jobs/{job['id']}/weights").data)) as z:
        assert z["classes"].tolist() == ["setosa", "virginica"]
    X = [[0.5, 1.0], [3.5, 150.0], [1.0, 30.0], [5.0, 240.0]]
    body = api.post(f"{API}/jobs/{job['id']}/predict", json={"rows": X}).get_json()
    assert body["classes"] == ["setosa", "virginica"]
    assert body["predictions"] == trainers_result(app, job).predict(np.array(X)).tolist()
    assert set(body["predictions"]) <= {"setosa", "virginica"}


def test_weights_stored_without_statistics_get_them_from_the_dataset(
    api, app, dispatcher, sessions
):
    job = trained(api, app, dispatcher, IRIS_JOB)
    X = np.random.default_rng(2).normal(4.0, 2.0, size=(20, 4)).tolist()
    before = api.post(f"{API}/jobs/{job['id']}/predict", json={"rows": X}).get_json()
    with sessions() as session:  # as a job finished before the statistics were kept
        blob = session.get(JobWeights, job["id"]).data
        legacy = Network.from_npz_bytes(blob).to_npz_bytes()
        session.execute(
            update(JobWeights).where(JobWeights.job_id == job["id"]).values(data=legacy, epoch=2)
        )
        session.commit()
    after = api.post(f"{API}/jobs/{job['id']}/predict", json={"rows": X}).get_json()
    assert after == before


def test_another_users_job_or_an_unknown_one_is_a_404(app, dispatcher):
    sessions = app.extensions["sweeplab"].sessions
    alice = authorize(contract_client(app), new_token(sessions, "alice", admin=False))
    bob = authorize(contract_client(app), new_token(sessions, "bob", admin=False))
    job = trained(alice, app, dispatcher, IRIS_JOB)
    rows = {"rows": [[5.0, 3.0, 1.5, 0.2]]}
    assert alice.post(f"{API}/jobs/{job['id']}/predict", json=rows).status_code == 200
    for client, job_id in ((bob, job["id"]), (alice, "0" * 32)):
        assert error(client.get(f"{API}/jobs/{job_id}/weights"))[:2] == (404, "not_found")
        assert error(client.post(f"{API}/jobs/{job_id}/predict", json=rows))[:2] == (
            404,
            "not_found",
        )


def test_rows_that_do_not_fit_are_a_422_naming_them(api, app, dispatcher):
    job = trained(api, app, dispatcher, IRIS_JOB)
    url = f"{API}/jobs/{job['id']}/predict"
    cases = [
        ({"rows": []}, ["rows"]),
        ({}, ["rows"]),
        ({"rows": [[1, 2, 3, 4]], "extra": 1}, ["extra"]),
        ({"rows": [[1, 2, 3, 4], [1, 2, 3]]}, ["rows.1"]),
        ({"rows": [[1, 2, 3, 4], [1, 2, 3, 4, 5], [1], [9] * 4]}, ["rows.1", "rows.2"]),
        ({"rows": [[1, 2, 3, 4], []]}, ["rows.1"]),
        ({"rows": [[1, "2", 3, 4]]}, ["rows.0.1"]),
        ({"rows": [[1, 2, 3, True]]}, ["rows.0.3"]),
        ({"rows": [1, 2, 3, 4]}, ["rows.0", "rows.1", "rows.2", "rows.3"]),
        ({"rows": [[0.0] * 4] * 10_001}, ["rows"]),
    ]
    for body, locs in cases:
        status, code, got = error(api.post(url, json=body))
        assert (status, code) == (422, "validation_error"), body
        assert got == locs, (body, got)
    assert api.post(url, json={"rows": [[0.0] * 4] * 10_000}).status_code == 200


def test_a_diverged_jobs_weights_answer_nulls_not_a_server_error(api, app, dispatcher, sessions):
    body = {
        "dataset": {"name": "xor", "n_samples": 64, "seed": 0},
        "architecture": {"layers": [{"units": 4, "activation": "relu"}]},
        "hyperparameters": {"learning_rate": 1e4, "epochs": 3, "batch_size": 16},
    }
    job = api.post(f"{API}/jobs", json=body).get_json()
    run_all(app, dispatcher)
    assert api.get(f"{API}/jobs/{job['id']}").get_json()["status"] == "diverged"
    assert api.get(f"{API}/jobs/{job['id']}/weights").status_code == 200
    answer = api.post(f"{API}/jobs/{job['id']}/predict", json={"rows": [[0.0, 1.0]]})
    assert answer.status_code == 200, answer.get_json()
    with sessions() as session:  # weights that are not finite (a divergence's last step)
        net = Network.from_npz_bytes(session.get(JobWeights, job["id"]).data)
        net.params_flat[:] = np.nan
        session.execute(
            update(JobWeights)
            .where(JobWeights.job_id == job["id"])
            .values(data=net.to_npz_bytes(), epoch=99)
        )
        session.commit()
    answer = api.post(f"{API}/jobs/{job['id']}/predict", json={"rows": [[0.0, 1.0]]})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["probabilities"] == [[None, None]]  # not finite: null
    assert answer.get_json()["predictions"] == [None]  # and no made-up class
