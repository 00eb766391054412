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
