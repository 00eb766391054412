"""503 with Retry-After while the database or the broker is unreachable, never a 500."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from api import create_app
from tests.conftest import XOR_JOB, FakeDispatcher


def free_port() -> int:
    """A loopback port that nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def app_without_database(settings: Any, dispatcher: FakeDispatcher):
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/sweeplab"
    app = create_app(settings.replace(database_url=url), dispatcher=dispatcher)  # type: ignore[arg-type]
    app.config["TESTING"] = True
    yield app
    app.extensions["sweeplab"].engine.dispose()


def assert_unavailable(response: Any, code: str) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert int(response.headers["Retry-After"]) > 0
    body = response.get_json()["error"]
    assert body["code"] == code
    assert "postgres" not in body["message"] and "127.0.0.1" not in body["message"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/v1/jobs", XOR_JOB),
        ("get", "/api/v1/jobs", None),
        ("get", "/api/v1/jobs/abc", None),
        ("get", "/api/v1/sweeps", None),
        ("get", "/api/v1/me", None),
    ],
)
def test_database_unreachable_is_a_503(app_without_database, method: str, path: str, body: Any):
    client = app_without_database.test_client()
    headers = {"Authorization": "Bearer swl_" + "0" * 32 + "_" + "s" * 32}
    response = getattr(client, method)(path, json=body, headers=headers)
    assert_unavailable(response, "database_unavailable")


def test_database_unreachable_without_tokens_too(settings: Any, dispatcher: FakeDispatcher):
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/sweeplab"
    app = create_app(settings.replace(database_url=url, auth=False), dispatcher=dispatcher)  # type: ignore[arg-type]
    try:
        assert_unavailable(
            app.test_client().post("/api/v1/jobs", json=XOR_JOB), "database_unavailable"
        )
        assert app.test_client().get("/readyz").status_code == 503  # as before
    finally:
        app.extensions["sweeplab"].engine.dispose()


def test_broker_unreachable_is_a_503_with_retry_after(client, dispatcher: FakeDispatcher):
    def refuse(_job_ids: Any) -> None:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    dispatcher.enqueue_jobs = refuse  # type: ignore[method-assign]
    response = client.post("/api/v1/jobs", json=XOR_JOB)
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert response.get_json()["error"]["code"] == "queue_unavailable"


def test_every_protected_route_declares_503(app):
    spec = app.api_doc
    checked = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if (
                not isinstance(operation, dict)
                or operation.get("security") == []
                or path.endswith(("healthz", "readyz"))
            ):
                continue
            if "401" in operation.get("responses", {}):
                assert "503" in operation["responses"], f"{method.upper()} {path}"
                checked += 1
    assert checked >= 10


def _refuse(*_args: Any) -> None:
    raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


def test_a_retry_after_a_503_submits_again(client, dispatcher: FakeDispatcher):
    """The 503 says "try again": the same Idempotency-Key then makes a new job, not the
    one that could not be queued."""
    headers = {"Idempotency-Key": "retry-me"}
    dispatcher.enqueue_jobs = _refuse  # type: ignore[method-assign]
    first = client.post("/api/v1/jobs", json=XOR_JOB, headers=headers)
    assert first.status_code == 503
    del dispatcher.enqueue_jobs  # the broker is back
    again = client.post("/api/v1/jobs", json=XOR_JOB, headers=headers)
    assert again.status_code == 201 and "Idempotent-Replayed" not in again.headers
    assert again.get_json()["status"] == "queued" and dispatcher.enqueued == [
        again.get_json()["id"]
    ]


SWEEP = {
    "name": "more",
    "base": XOR_JOB,
    "method": "random",
    "n_trials": 2,
    "max_concurrency": 2,
    "parameters": {"hyperparameters.learning_rate": {"values": [0.1, 0.3]}},
}


def test_an_extend_the_broker_refuses_leaves_the_running_sweep_alone(client, dispatcher):
    """Only the new trials fail: the trials the sweep was training are not cancelled."""
    sweep = client.post("/api/v1/sweeps", json=dict(SWEEP, max_concurrency=4)).get_json()
    dispatcher.enqueue_units = _refuse  # type: ignore[method-assign]
    refused = client.post(
        f"/api/v1/sweeps/{sweep['id']}/extend",
        json={"n_trials": 2},
        headers={"Idempotency-Key": "more-1"},
    )
    assert refused.status_code == 503
    after = client.get(f"/api/v1/sweeps/{sweep['id']}").get_json()
    assert after["status"] == "running"
    trials = client.get(f"/api/v1/sweeps/{sweep['id']}/trials").get_json()["items"]
    statuses = sorted((t["trial_index"], t["status"]) for t in trials)
    assert statuses == [(0, "queued"), (1, "queued"), (2, "failed"), (3, "failed")]
    assert dispatcher.cancelled == set()


def test_cancelling_a_queued_trial_while_the_broker_is_down_is_not_a_500(client, dispatcher):
    body = dict(SWEEP, method="grid", max_concurrency=1)
    del body["n_trials"]
    sweep = client.post("/api/v1/sweeps", json=body).get_json()
    first = client.get(f"/api/v1/sweeps/{sweep['id']}/trials").get_json()["items"][0]
    dispatcher.enqueue_units = _refuse  # type: ignore[method-assign]
    dispatcher.enqueue_jobs = _refuse  # type: ignore[method-assign]
    response = client.post(f"/api/v1/jobs/{first['id']}/cancel")
    assert response.status_code < 300, response.get_data(as_text=True)
    assert client.get(f"/api/v1/jobs/{first['id']}").get_json()["status"] == "cancelled"
