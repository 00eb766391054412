"""The client's own rules, over a fake transport (the real server: tests/integration/test_cli.py):
a submission retried after a lost answer carries the same Idempotency-Key; ids resolve to a
job or a sweep; pages are followed; error JSON is taken apart."""

from __future__ import annotations

import json

import httpx
import pytest

from client.api import Client, rows_to_table
from client.errors import ApiError, Unreachable

JOB = {"dataset": {"name": "moons"}, "architecture": {"layers": []}, "hyperparameters": {}}


def _client(handler) -> Client:  # type: ignore[no-untyped-def]
    return Client("http://api.test/", "swl_t", transport=httpx.MockTransport(handler), backoff=0)


def test_a_submission_is_sent_again_with_the_same_key_when_no_answer_came() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) < 3:
            raise httpx.ReadTimeout("no answer", request=request)
        return httpx.Response(201, json={"id": "j1", "status": "queued"})

    created = _client(handler).submit(JOB)
    assert created["id"] == "j1"
    assert [r.url.path for r in seen] == ["/api/v1/jobs"] * 3
    keys = {r.headers["Idempotency-Key"] for r in seen}
    assert len(keys) == 1 and len(keys.pop()) == 32
    assert all(r.headers["Authorization"] == "Bearer swl_t" for r in seen)
    assert json.loads(seen[0].content) == JOB


def test_each_submission_has_its_own_key_and_sweeps_go_to_sweeps() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"id": f"x{len(seen)}"})

    api = _client(handler)
    api.submit(JOB)
    api.submit({"base": JOB, "method": "grid", "parameters": {}})
    assert [r.url.path for r in seen] == ["/api/v1/jobs", "/api/v1/sweeps"]
    assert seen[0].headers["Idempotency-Key"] != seen[1].headers["Idempotency-Key"]


def test_a_cancel_without_answer_is_not_sent_twice() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if request.url.path.endswith("/cancel"):
            raise httpx.ReadTimeout("lost", request=request)
        return httpx.Response(200, json={"id": "j", "status": "running", "progress": {}})

    api = _client(handler)
    with pytest.raises(Unreachable):
        api.cancel("j")
    assert sum(r.url.path.endswith("/cancel") for r in calls) == 1


def test_an_id_is_a_job_or_a_sweep_and_the_answer_is_remembered() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path == "/api/v1/sweeps/s1":
            return httpx.Response(200, json={"id": "s1", "n_trials": 2, "counts": {}})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no"}})

    api = _client(handler)
    assert api.get("s1")["id"] == "s1"
    assert api.kind("s1") == "sweep"
    api.get("s1")
    assert paths == ["/api/v1/jobs/s1", "/api/v1/sweeps/s1", "/api/v1/sweeps/s1"]
    with pytest.raises(ApiError) as caught:
        api.get("nope")
    assert (caught.value.status, caught.value.message) == (404, "no job or sweep nope")


def test_pages_are_followed_up_to_the_limit() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        cursor = int(request.url.params.get("cursor") or 0)
        limit = int(request.url.params["limit"])
        items = [{"rank": i} for i in range(cursor, min(cursor + limit, 5))]
        nxt = str(cursor + limit) if cursor + limit < 5 else None
        return httpx.Response(200, json={"items": items, "next_cursor": nxt})

    api = _client(handler)
    assert [r["rank"] for r in api.leaderboard("s")] == [0, 1, 2, 3, 4]
    assert [r["rank"] for r in api.leaderboard("s", limit=3)] == [0, 1, 2]


def test_error_json_and_other_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/weights"):
            return httpx.Response(502, text="bad gateway")
        body = {
            "code": "validation_error",
            "message": "bad",
            "details": [{"loc": "a.b", "msg": "no"}],
        }
        return httpx.Response(422, json={"error": body})

    api = _client(handler)
    with pytest.raises(ApiError) as caught:
        api.submit(JOB)
    assert (caught.value.status, caught.value.code, caught.value.details) == (
        422,
        "validation_error",
        [{"loc": "a.b", "msg": "no"}],
    )
    with pytest.raises(ApiError) as caught:
        api.weights("j")
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        502,
        "http_502",
        "bad gateway",
    )


def test_rows_to_table() -> None:
    rows = [{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.4, "val_accuracy": 0.9}]
    assert rows_to_table(rows) == {
        "epoch": [1, 2],
        "val_loss": [0.5, 0.4],
        "val_accuracy": [None, 0.9],
    }
    assert rows_to_table([]) == {}


def test_predict_sends_many_rows_in_batches_answered_as_one() -> None:
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        rows = json.loads(request.content)["rows"]
        sizes.append(len(rows))
        return httpx.Response(
            200,
            json={
                "job_id": "j",
                "task": "classification",
                "predictions": [int(r[0]) for r in rows],
                "probabilities": [[1.0, 0.0] for _ in rows],
                "classes": [0, 1],
            },
        )

    answer = _client(handler).predict("j", [[float(i)] for i in range(7)], batch=3)
    assert sizes == [3, 3, 1]
    assert answer["predictions"] == list(range(7)) and len(answer["probabilities"]) == 7
