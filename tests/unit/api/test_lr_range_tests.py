"""/api/v1/lr-range-tests: start, read, list, plot; the worker's function that runs a
test (in-process here; tests/integration runs it in a real worker), its claim and its
failures. Every answer is checked against the OpenAPI document (the contract client)."""

from __future__ import annotations

import copy
import socket
import subprocess
import sys

import pytest
from sqlalchemy import update

from services.db.models import LrRangeTest
from services.jobs.lease import LeaseHeldError, worker_name
from services.lr_range import range_test_result
from services.lr_range.rows import claim_range_test
from services.lr_range.run import execute_range_test
from tests.auth_support import authorize, new_token
from tests.conftest import XOR_JOB, FakeDispatcher
from tests.unit.api.contract import contract_client

API = "/api/v1"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DIGITS_ADAM = {
    "dataset": {"name": "digits"},
    "architecture": {"layers": [{"units": 32}]},
    "hyperparameters": {"learning_rate": 0.01, "optimizer": "adam", "batch_size": 32},
}


def body(**fields):
    return {"spec": copy.deepcopy(DIGITS_ADAM), **fields}


def run(app, settings, test_id: str) -> str:
    return execute_range_test(
        settings=settings, session_factory=app.extensions["sweeplab"].sessions, test_id=test_id
    )


def test_the_same_idempotency_key_and_body_answer_the_same_test(client, dispatcher):
    """A client's retried POST (``sweeplab lr-find`` sends a key) starts one test."""
    headers = {"Idempotency-Key": "find-1"}
    first = client.post(f"{API}/lr-range-tests", json=body(steps=50), headers=headers)
    assert first.status_code == 202
    again = client.post(f"{API}/lr-range-tests", json=body(steps=50), headers=headers)
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert dispatcher.range_tests == [first.get_json()["id"]]  # queued once
    other = client.post(f"{API}/lr-range-tests", json=body(steps=60), headers=headers)
    assert other.status_code == 422
    assert other.get_json()["error"]["code"] == "idempotency_key_reused"
    # the key is per resource kind: the same key on POST /jobs is another request
    job = client.post(f"{API}/jobs", json=DIGITS_ADAM, headers=headers)
    assert job.status_code == 201
    fresh = client.post(
        f"{API}/lr-range-tests", json=body(steps=50), headers={"Idempotency-Key": "find-2"}
    )
    assert fresh.status_code == 202 and fresh.get_json()["id"] != first.get_json()["id"]
    assert len(dispatcher.range_tests) == 2


def test_a_test_is_queued_run_and_read(client, app, settings, dispatcher):
    response = client.post(f"{API}/lr-range-tests", json=body(steps=120, name="digits adam"))
    assert response.status_code == 202
    test = response.get_json()
    assert response.headers["Location"].endswith(f"/lr-range-tests/{test['id']}")
    assert test["status"] == "queued" and test["curve"] is None
    assert test["name"] == "digits adam" and test["experiment"] is None
    assert (test["min_lr"], test["max_lr"], test["steps"]) == (1e-6, 10.0, 120)
    assert (test["smoothing"], test["diverge_factor"]) == (0.98, 4.0)
    assert test["spec"]["hyperparameters"]["optimizer"] == "adam"  # normalized
    assert dispatcher.range_tests == [test["id"]] and dispatcher.enqueued == []
    queued = client.get(test["links"]["plot"])
    assert queued.status_code == 409 and queued.get_json()["error"]["code"] == "no_curve"

    assert run(app, settings, test["id"]) == "succeeded"
    done = client.get(test["links"]["self"]).get_json()
    assert done["status"] == "succeeded" and done["error"] is None
    curve = done["curve"]
    assert len(curve) == done["steps_taken"] <= 120
    assert [p["step"] for p in curve] == list(range(len(curve)))
    assert curve[0]["lr"] == pytest.approx(1e-6)
    assert all(a["lr"] < b["lr"] for a, b in zip(curve, curve[1:], strict=False))
    assert 1e-6 <= done["suggested_lr"] <= 10.0
    assert done["divergence_lr"] is not None and done["suggested_lr"] < done["divergence_lr"]
    low, high = done["interval"]
    assert low <= done["min_loss_lr"] and done["stopped_lr"] >= done["divergence_lr"]
    assert done["seconds"] > 0 and done["mlflow"] is None  # mirroring off here

    png = client.get(done["links"]["plot"])
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert png.data[:8] == PNG_MAGIC and len(png.data) > 5_000

    page = client.get(f"{API}/lr-range-tests").get_json()
    assert [t["id"] for t in page["items"]] == [test["id"]] and page["next_cursor"] is None
    assert "curve" not in page["items"][0]
    assert page["items"][0]["suggested_lr"] == done["suggested_lr"]
    assert client.get(f"{API}/lr-range-tests?status=queued").get_json()["items"] == []

    # a redelivered message is a no-op; the reading a sweep waits on
    assert run(app, settings, test["id"]) == "finished"
    with app.extensions["sweeplab"].sessions() as session:
        outcome = range_test_result(session, test["id"])
    assert outcome is not None and outcome.done and outcome.status == "succeeded"
    assert outcome.suggested_lr == done["suggested_lr"]
    assert outcome.divergence_lr == done["divergence_lr"]


def test_a_tests_experiment_is_its_own_or_its_specs(client):
    named = body()
    named["spec"]["experiment"] = "lr-finding"
    test = client.post(f"{API}/lr-range-tests", json=named).get_json()
    assert test["experiment"] == "lr-finding"  # the spec's, the test naming none
    mine = client.post(f"{API}/lr-range-tests", json={**named, "experiment": "mine"})
    assert mine.get_json()["experiment"] == "mine"


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"min_lr": 1.0, "max_lr": 0.5}, "max_lr"),
        ({"min_lr": 0.1, "max_lr": 0.1}, "max_lr"),
        ({"min_lr": 0.0}, "min_lr"),
        ({"steps": 9}, "steps"),
        ({"steps": 2001}, "steps"),
        ({"smoothing": 1.0}, "smoothing"),
        ({"diverge_factor": 1.0}, "diverge_factor"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_bounds_are_a_422_naming_the_field(client, dispatcher, fields, loc):
    response = client.post(f"{API}/lr-range-tests", json=body(**fields))
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert loc in [d["loc"] for d in error["details"]]
    assert dispatcher.range_tests == []


def test_a_bad_job_spec_is_a_422_under_spec(client):
    bad = body()
    bad["spec"]["hyperparameters"]["learning_rate"] = -1
    response = client.post(f"{API}/lr-range-tests", json=bad)
    assert response.status_code == 422
    locs = [d["loc"] for d in response.get_json()["error"]["details"]]
    assert locs == ["spec.hyperparameters.learning_rate"]
    semantic = body()
    semantic["spec"]["architecture"]["output_activation"] = "linear"
    semantic["spec"]["hyperparameters"]["loss"] = "binary_cross_entropy"
    response = client.post(f"{API}/lr-range-tests", json=semantic)
    assert response.status_code == 422
    assert all(d["loc"].startswith("spec.") for d in response.get_json()["error"]["details"])
    assert client.post(f"{API}/lr-range-tests", json={"min_lr": 1e-3}).status_code == 422


def test_another_users_test_is_a_404(app, settings):
    sessions = app.extensions["sweeplab"].sessions
    alice = authorize(contract_client(app), new_token(sessions, "alice", admin=False))
    bob = authorize(contract_client(app), new_token(sessions, "bob", admin=False))
    root = authorize(contract_client(app), new_token(sessions, "root", admin=True))
    test = alice.post(f"{API}/lr-range-tests", json={"spec": copy.deepcopy(XOR_JOB)}).get_json()
    assert test["name"] == XOR_JOB["name"]  # the spec's, when the test has none
    run(app, settings, test["id"])
    for url in (
        f"{API}/lr-range-tests/{test['id']}",
        f"{API}/lr-range-tests/{test['id']}/plot.png",
    ):
        assert alice.get(url).status_code == 200, url
        response = bob.get(url)
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"
        assert root.get(url).status_code == 200
    assert bob.get(f"{API}/lr-range-tests").get_json()["items"] == []
    assert [t["id"] for t in alice.get(f"{API}/lr-range-tests").get_json()["items"]] == [test["id"]]
    assert [t["id"] for t in root.get(f"{API}/lr-range-tests").get_json()["items"]] == [test["id"]]
    missing = alice.get(f"{API}/lr-range-tests/{'0' * 32}")
    assert missing.status_code == 404


def test_a_test_that_raises_is_failed_with_its_error(client, app, settings):
    test = client.post(f"{API}/lr-range-tests", json=body()).get_json()
    sessions = app.extensions["sweeplab"].sessions
    with sessions() as session:  # a spec the trainer refuses (stored before a change, say)
        spec = copy.deepcopy(test["spec"])
        spec["hyperparameters"]["optimizer"] = "lbfgs"
        session.execute(update(LrRangeTest).where(LrRangeTest.id == test["id"]).values(spec=spec))
        session.commit()
    assert run(app, settings, test["id"]) == "failed"
    failed = client.get(test["links"]["self"]).get_json()
    assert failed["status"] == "failed" and "optimizer" in failed["error"]
    assert failed["curve"] is None and failed["suggested_lr"] is None
    assert client.get(test["links"]["plot"]).status_code == 409


def test_a_test_running_elsewhere_is_left_alone(client, app, settings):
    test = client.post(f"{API}/lr-range-tests", json=body()).get_json()
    with app.extensions["sweeplab"].sessions() as session:
        claimed = claim_range_test(
            session, test_id=test["id"], worker="elsewhere:1", lease_seconds=60, max_attempts=5
        )
        session.commit()
    assert claimed is not None and claimed.attempts == 1
    with pytest.raises(LeaseHeldError) as held:
        run(app, settings, test["id"])
    assert held.value.holder == "elsewhere:1" and held.value.retry_in > 60
    assert client.get(test["links"]["self"]).get_json()["status"] == "running"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _claim_as(app, test_id: str, worker: str, *, lease_seconds: float = 60) -> None:
    with app.extensions["sweeplab"].sessions() as session:
        assert claim_range_test(
            session, test_id=test_id, worker=worker, lease_seconds=lease_seconds, max_attempts=5
        )
        session.commit()


def test_a_test_whose_worker_died_on_this_host_is_taken_over_at_once(client, app, settings):
    test = client.post(f"{API}/lr-range-tests", json=body()).get_json()
    _claim_as(app, test["id"], f"{socket.gethostname()}:{_dead_pid()}")  # lease: 15 min
    assert run(app, settings, test["id"]) == "succeeded"
    with app.extensions["sweeplab"].sessions() as session:
        row = session.get(LrRangeTest, test["id"])
        assert row is not None and row.attempts == 2 and row.worker == worker_name()


def test_a_test_whose_workers_were_lost_too_often_is_failed(client, app, settings):
    test = client.post(f"{API}/lr-range-tests", json=body()).get_json()
    dead = f"{socket.gethostname()}:{_dead_pid()}"
    with app.extensions["sweeplab"].sessions() as session:
        session.execute(
            update(LrRangeTest)
            .where(LrRangeTest.id == test["id"])
            .values(status="running", worker=dead, attempts=settings.max_attempts)
        )
        session.commit()
    assert run(app, settings, test["id"]) == "failed"
    failed = client.get(test["links"]["self"]).get_json()
    assert failed["status"] == "failed" and f"lost {settings.max_attempts} times" in failed["error"]


def test_a_test_over_the_flop_budget_is_a_422_at_steps(settings):
    """A full-batch spec passes its own budget with 20 batches; a test trains `steps`."""
    from api import create_app

    limits = settings.limits.model_copy(update={"max_job_flops": 5e9})
    app = create_app(settings.replace(limits=limits), dispatcher=FakeDispatcher())  # type: ignore[arg-type]
    try:
        client = authorize(contract_client(app), new_token(app.extensions["sweeplab"].sessions))
        spec = copy.deepcopy(DIGITS_ADAM)
        spec["hyperparameters"]["batch_size"] = None  # full batch: one batch an epoch
        assert client.post(f"{API}/jobs", json=spec).status_code == 201
        assert client.post(f"{API}/lr-range-tests", json={"spec": spec}).status_code == 202
        response = client.post(f"{API}/lr-range-tests", json={"spec": spec, "steps": 2000})
        assert response.status_code == 422
        (detail,) = response.get_json()["error"]["details"]
        assert detail["loc"] == "steps" and "the test needs about" in detail["msg"]
    finally:
        app.extensions["sweeplab"].engine.dispose()


class DownDispatcher(FakeDispatcher):
    def enqueue_range_tests(self, test_ids):
        raise ConnectionError("redis is down")


def test_a_test_whose_message_cannot_leave_is_failed_and_503(settings):
    from api import create_app

    app = create_app(settings, dispatcher=DownDispatcher())  # type: ignore[arg-type]
    try:
        client = authorize(contract_client(app), new_token(app.extensions["sweeplab"].sessions))
        response = client.post(f"{API}/lr-range-tests", json=body())
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "queue_unavailable"
        (test,) = client.get(f"{API}/lr-range-tests").get_json()["items"]
        assert test["status"] == "failed" and "queue" in test["error"]
    finally:
        app.extensions["sweeplab"].engine.dispose()
