"""The jobs API and its error handling, with a fake dispatcher (no Redis, no worker)."""

from __future__ import annotations

import copy
import json

import pytest

from services.jobs.execute import execute_job
from tests.conftest import XOR_JOB

API = "/api/v1"


def post_job(client, spec=None):
    return client.post(f"{API}/jobs", json=copy.deepcopy(spec or XOR_JOB))


def error_of(response) -> dict:
    body = response.get_json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"])
    return body["error"]


def test_create_job_queues_it(client, dispatcher):
    response = post_job(client)
    assert response.status_code == 201
    job = response.get_json()
    assert job["status"] == "queued" and job["progress"] == {
        "epoch": 0,
        "epochs": 3,
        "fraction": 0.0,
    }
    assert response.headers["Location"].endswith(job["id"])
    assert job["links"]["self"] == f"{API}/jobs/{job['id']}"
    assert job["spec"]["hyperparameters"]["optimizer"] == "sgd"  # normalized
    assert job["mlflow"] is None
    assert dispatcher.enqueued == [job["id"]]


def test_job_runs_and_reports(client, app, dispatcher):
    job_id = post_job(client).get_json()["id"]
    svc = app.extensions["sweeplab"]
    execute_job(
        settings=svc.settings, session_factory=svc.sessions, dispatcher=dispatcher, job_id=job_id
    )
    job = client.get(f"{API}/jobs/{job_id}").get_json()
    assert job["status"] == "succeeded" and job["progress"]["epoch"] == 3
    assert job["result"]["status"] == "completed" and isinstance(job["diagnosis"], list)
    assert job["latest_metrics"]["epoch"] == 3 and job["best_metrics"]
    assert job["attempts"] == 1 and job["worker"]
    assert job["timings"]["run_seconds"] >= 0
    metrics = client.get(f"{API}/jobs/{job_id}/metrics").get_json()
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    csv = client.get(f"{API}/jobs/{job_id}/metrics?format=csv")
    assert csv.mimetype == "text/csv"
    lines = csv.get_data(as_text=True).strip().splitlines()
    assert lines[0].startswith("epoch,") and "val_loss" in lines[0] and len(lines) == 4
    assert client.get(f"{API}/jobs/{job_id}/metrics?format=xml").status_code == 400
    cancel = client.post(f"{API}/jobs/{job_id}/cancel")
    assert cancel.status_code == 409 and error_of(cancel)["code"] == "conflict"


def test_cancel_queued_and_running(client, app, dispatcher):
    # queued: cancelled at once, nothing to stop
    job_id = post_job(client).get_json()["id"]
    response = client.post(f"{API}/jobs/{job_id}/cancel")
    assert response.status_code == 202 and response.get_json()["status"] == "cancelled"
    assert client.post(f"{API}/jobs/{job_id}/cancel").status_code == 409
    assert client.post(f"{API}/jobs/nope/cancel").status_code == 404
    assert job_id not in dispatcher.cancelled  # no worker had to be told

    # running: a worker claimed it (its lease already expired, so that the run below
    # may take it over); the cancel flags it, tells the workers, and the run stops
    # at its next check (before or at its first epoch boundary), not after 20 epochs.
    from services.jobs.lease import claim_job

    spec = copy.deepcopy(XOR_JOB)
    spec["hyperparameters"]["epochs"] = 20
    job_id = post_job(client, spec).get_json()["id"]
    svc = app.extensions["sweeplab"]
    with svc.sessions() as session:
        assert claim_job(session, job_id=job_id, worker="elsewhere:1", lease_seconds=-1)
        session.commit()
    response = client.post(f"{API}/jobs/{job_id}/cancel")
    assert response.status_code == 202
    flagged = response.get_json()
    assert flagged["status"] == "running" and flagged["cancel_requested"] is True
    assert job_id in dispatcher.cancelled
    status = execute_job(
        settings=svc.settings, session_factory=svc.sessions, dispatcher=dispatcher, job_id=job_id
    )
    assert status == "cancelled"
    job = client.get(f"{API}/jobs/{job_id}").get_json()
    assert job["status"] == "cancelled" and job["progress"]["epoch"] <= 1
    assert client.post(f"{API}/jobs/{job_id}/cancel").status_code == 409


def test_list_jobs_with_filters_and_cursor(client):
    ids = [post_job(client).get_json()["id"] for _ in range(5)]
    client.post(f"{API}/jobs/{ids[0]}/cancel")
    seen, cursor = [], None
    while True:
        url = f"{API}/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url).get_json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids[::-1]
    cancelled = client.get(f"{API}/jobs?status=cancelled").get_json()["items"]
    assert [j["id"] for j in cancelled] == [ids[0]]
    assert len(client.get(f"{API}/jobs?status=queued,cancelled").get_json()["items"]) == 5
    for bad in ("status=bogus", "limit=0", "limit=abc", "cursor=xyz"):
        response = client.get(f"{API}/jobs?{bad}")
        assert response.status_code == 400, bad
        error_of(response)


def test_unknown_ids_are_404(client):
    for url in (
        f"{API}/jobs/nope",
        f"{API}/jobs/nope/metrics",
        f"{API}/sweeps/nope",
        f"{API}/sweeps/nope/trials",
        f"{API}/nowhere",
    ):
        response = client.get(url)
        assert response.status_code == 404, url
        assert error_of(response)["code"] == "not_found"
    assert client.post(f"{API}/sweeps/nope/cancel").status_code == 404


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        ("{not json", "application/json", 400, "malformed_json"),
        ('{"a": NaN}', "application/json", 400, "malformed_json"),
        ('{"a": Infinity}', "application/json", 400, "malformed_json"),
        ('{"a": -Infinity}', "application/json", 400, "malformed_json"),
        ('{"a": 1e400}', "application/json", 400, "malformed_json"),
        ("", "application/json", 400, "malformed_json"),
        ("name=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        ("[1, 2]", "application/json", 422, "validation_error"),
        ("null", "application/json", 422, "validation_error"),
    ],
)
def test_bad_bodies(client, body, content_type, status, code):
    response = client.post(f"{API}/jobs", data=body, content_type=content_type)
    assert response.status_code == status
    assert error_of(response)["code"] == code


def test_nan_in_a_real_spec_is_rejected(client):
    text = json.dumps(XOR_JOB).replace('"learning_rate": 0.5', '"learning_rate": NaN')
    assert client.post(f"{API}/jobs", data=text, content_type="application/json").status_code == 400


def test_body_over_one_mib_is_413(client):
    spec = copy.deepcopy(XOR_JOB)
    spec["name"] = "x" * (1024 * 1024)
    response = client.post(f"{API}/jobs", json=spec)
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("path", "value", "loc"),
    [
        ("hyperparameters.learning_rate", 0, "hyperparameters.learning_rate"),
        ("hyperparameters.optimizer", "adamax", "hyperparameters.optimizer"),
        ("architecture.layers", [{"units": 0}], "architecture.layers.0.units"),
        (
            "architecture.layers",
            [{"units": 8, "activation": "gelu"}],
            "architecture.layers.0.activation",
        ),
        ("hyperparameters.epochs", 10_001, "hyperparameters.epochs"),
        ("hyperparameters.epochs", "10", "hyperparameters.epochs"),
        ("dataset.n_samples", 10**6, "dataset.n_samples"),
        ("architecture.layers", [{"units": 10}] * 21, "architecture.layers"),
        ("architecture.layers", [{"units": 4096}] * 3, "architecture.layers"),
        ("dataset.colour", "red", "dataset.colour"),
    ],
)
def test_invalid_specs_are_422_naming_the_field(client, path, value, loc):
    spec = copy.deepcopy(XOR_JOB)
    section, key = path.split(".")
    spec[section][key] = value
    response = client.post(f"{API}/jobs", json=spec)
    assert response.status_code == 422
    assert loc in [d["loc"] for d in error_of(response)["details"]]


def test_chunked_body_over_one_mib_is_413(client):
    """Without a Content-Length the body is cut at the limit; that must not pass as JSON."""
    import io

    body = json.dumps({**XOR_JOB, "name": "x" * (2 * 1024 * 1024)}).encode()
    response = client.post(
        f"{API}/jobs",
        input_stream=io.BytesIO(body),
        content_type="application/json",
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"
    small = json.dumps(XOR_JOB).encode()
    response = client.post(
        f"{API}/jobs",
        input_stream=io.BytesIO(small),
        content_type="application/json",
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=abc",
        "limit=%C2%B2",
        "limit=%D9%A3",
        "limit=-1",
        "limit=" + "9" * 30,
        "cursor=garbage",
        "cursor=WzEsMl0",
        "status=bogus",
    ],
)
def test_bad_list_arguments_are_400_naming_them(client, query):
    response = client.get(f"{API}/jobs?{query}")
    assert response.status_code == 400
    assert error_of(response)["details"][0]["loc"] == query.split("=")[0]


def test_method_not_allowed_is_json(client):
    response = client.delete(f"{API}/jobs")
    assert response.status_code == 405
    error_of(response)


def test_health(client):
    assert client.get("/healthz").get_json() == {"status": "ok", "service": "sweeplab"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"database": "ok", "redis": "ok"}


def test_readyz_reports_a_dead_redis(client, dispatcher):
    def down():
        raise ConnectionError("no redis")

    dispatcher.ping = down
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["redis"].startswith("error")


def test_broker_down_is_503_and_the_job_is_not_stranded(client, dispatcher):
    def down(job_ids):
        raise ConnectionError("redis is down")

    dispatcher.enqueue_jobs = down
    response = post_job(client)
    assert response.status_code == 503
    assert error_of(response)["code"] == "queue_unavailable"
    (job,) = client.get(f"{API}/jobs").get_json()["items"]
    assert job["status"] == "failed" and "could not be queued" in job["error"]
