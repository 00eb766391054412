"""Idempotency keys, reuse of an identical succeeded job, and a sweep's resume, extend
and warm start, through HTTP with real Celery workers on Redis and a real database
(SQLite and PostgreSQL; see ``conftest.stack``)."""

from __future__ import annotations

import io
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from services.db.models import Job, Sweep
from tests.auth_support import authorize
from tests.integration.harness import Stack, wait_for

pytestmark = pytest.mark.integration


def spec(seed: int, *, epochs: int = 4, lr: float = 0.5, n_samples: int = 64) -> dict[str, Any]:
    """A tiny job; ``seed`` keeps it apart from the other tests' jobs (no reuse across)."""
    return {
        "name": f"reuse-{seed}",
        "dataset": {"name": "xor", "n_samples": n_samples, "seed": seed},
        "architecture": {"layers": [{"units": 4, "activation": "tanh"}]},
        "hyperparameters": {"learning_rate": lr, "epochs": epochs, "batch_size": 16},
    }


def unique_seed() -> int:
    return 10_000 + uuid.uuid4().int % 1_000_000


def post_in_threads(stack: Stack, path: str, body: dict, key: str, n: int = 6) -> list[Any]:
    def post(_: int) -> tuple[int, dict]:
        client = authorize(stack.app.test_client(), stack.token)
        response = client.post(f"/api/v1{path}", json=body, headers={"Idempotency-Key": key})
        return response.status_code, response.get_json()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(post, range(n)))


def test_concurrent_duplicate_posts_create_one_job_and_one_sweep(stack: Stack):
    seed = unique_seed()
    answers = post_in_threads(stack, "/jobs", spec(seed), f"job-{seed}")
    assert {status for status, _ in answers} == {201}, answers
    assert len({body["id"] for _, body in answers}) == 1
    with stack.sessions() as session:
        n = session.scalar(select(func.count()).select_from(Job).where(Job.name == f"reuse-{seed}"))
    assert n == 1
    stack.wait_job(answers[0][1]["id"])
    sweep = {
        "name": f"idem-{seed}",
        "base": spec(seed + 1),
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": [0.1, 0.5]}},
    }
    answers = post_in_threads(stack, "/sweeps", sweep, f"sweep-{seed}")
    assert {status for status, _ in answers} == {201}, answers
    assert len({body["id"] for _, body in answers}) == 1
    with stack.sessions() as session:
        n = session.scalar(
            select(func.count()).select_from(Sweep).where(Sweep.name == f"idem-{seed}")
        )
    assert n == 1
    assert stack.wait_sweep(answers[0][1]["id"])["counts"]["succeeded"] == 2
    other = stack.client.post(
        "/api/v1/jobs", json=spec(seed, lr=0.4), headers={"Idempotency-Key": f"job-{seed}"}
    )
    assert other.status_code == 422
    assert other.get_json()["error"]["code"] == "idempotency_key_reused"


def test_an_identical_job_is_reused_not_trained(stack: Stack):
    body = spec(unique_seed())
    first = stack.post("/jobs", body)
    assert stack.wait_job(first["id"]).status == "succeeded"
    again = stack.post("/jobs", {**body, "name": "renamed"})
    assert again["reused_from"] == first["id"] and again["status"] == "succeeded"
    job = stack.job(again["id"])
    assert job.attempts == 0 and job.worker is None  # no worker touched it
    original = stack.get(f"/jobs/{first['id']}")
    for key in ("result", "diagnosis", "best_metrics", "best_epoch", "objective"):
        assert again[key] == original[key], key
    assert (
        stack.get(f"/jobs/{again['id']}/metrics")["epochs"]
        == (stack.get(f"/jobs/{first['id']}/metrics")["epochs"])
    )
    mine = stack.client.get(f"/api/v1/jobs/{again['id']}/weights")
    theirs = stack.client.get(f"/api/v1/jobs/{first['id']}/weights")
    assert mine.status_code == theirs.status_code == 200
    with np.load(io.BytesIO(mine.data)) as a, np.load(io.BytesIO(theirs.data)) as b:
        assert [n for n in a.files if n.startswith("W")] and set(a.files) == set(b.files)
        for name in b.files:
            if name != "spec":
                assert np.array_equal(a[name], b[name]), name
    rows = [[0.0, 1.0], [1.0, 1.0]]
    predicted = stack.client.post(f"/api/v1/jobs/{again['id']}/predict", json={"rows": rows})
    assert predicted.status_code == 200
    trained = stack.post("/jobs", {**body, "reuse": False})
    assert trained["reused_from"] is None
    assert stack.wait_job(trained["id"]).status == "succeeded"
    assert stack.get(f"/jobs/{trained['id']}")["objective"] == original["objective"]


def test_a_cancelled_sweep_resumes_to_completion(stack: Stack):
    seed = unique_seed()
    body = {
        "name": f"resume-{seed}",
        "base": spec(seed, epochs=40, n_samples=2000),
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": [0.05, 0.1, 0.2, 0.4]}},
        "max_concurrency": 1,
    }
    sweep = stack.post("/sweeps", body)
    wait_for(
        lambda: stack.get(f"/sweeps/{sweep['id']}")["counts"]["running"] == 1, 30, "a trial runs"
    )
    stack.post(f"/sweeps/{sweep['id']}/cancel", {})
    cancelled = stack.wait_sweep(sweep["id"])
    # the cancel stopped the sweep before its end: its running trial was cancelled, or
    # (when the cancel came during that trial's last epoch) it ended and no other began
    left = cancelled["counts"]["cancelled"] + cancelled["n_trials"] - cancelled["n_created"]
    assert cancelled["status"] == "cancelled" and left >= 1, cancelled
    assert cancelled["counts"]["succeeded"] < 4
    resumed = stack.post(f"/sweeps/{sweep['id']}/resume", {})
    assert resumed["status"] == "running"
    done = stack.wait_sweep(sweep["id"], timeout=180)
    assert done["status"] == "done" and done["counts"]["succeeded"] == 4
    rates = sorted(
        t.params["hyperparameters.learning_rate"]
        for t in stack.sweep_jobs(sweep["id"])
        if t.status == "succeeded"
    )
    assert rates == [0.05, 0.1, 0.2, 0.4]
    again = stack.client.post(f"/api/v1/sweeps/{sweep['id']}/resume")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "sweep_complete"


def test_an_extended_sweep_and_a_warm_started_tpe_sweep(stack: Stack):
    seed = unique_seed()
    space = {
        "hyperparameters.learning_rate": {"distribution": "log_uniform", "min": 0.01, "max": 2}
    }
    body = {
        "name": f"tpe-{seed}",
        "base": spec(seed),
        "method": "tpe",
        "n_trials": 3,
        "n_startup_trials": 2,
        "parameters": space,
    }
    source = stack.post("/sweeps", body)
    assert stack.wait_sweep(source["id"])["counts"]["succeeded"] == 3
    extended = stack.post(f"/sweeps/{source['id']}/extend", {"n_trials": 2})
    assert extended["n_trials"] == 5 and extended["status"] == "running"
    done = stack.wait_sweep(source["id"])
    assert done["status"] == "done" and done["counts"]["succeeded"] == 5
    trials = stack.sweep_jobs(source["id"])
    assert [t.proposal["startup"] for t in trials[3:]] == [False, False]  # TPE went on learning
    warm = stack.post("/sweeps", {**body, "name": f"warm-{seed}", "warm_start": source["id"]})
    assert stack.wait_sweep(warm["id"])["counts"]["succeeded"] == 3
    first = stack.sweep_jobs(warm["id"])[0]
    assert first.proposal["history"] == 5 and first.proposal["startup"] is False
    bad = stack.client.post(
        "/api/v1/sweeps", json={**body, "warm_start": source["id"], "method": "random"}
    )
    assert bad.status_code == 422
    assert bad.get_json()["error"]["details"][0]["loc"] == "warm_start"
