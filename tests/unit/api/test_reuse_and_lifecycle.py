"""Idempotency-Key on POST, reuse of an identical succeeded job, a sweep's resume and
extend, a warm-started TPE sweep, a job's MLflow experiment (the routes, with jobs run
in this process)."""

from __future__ import annotations

import copy
import io

import numpy as np
from sqlalchemy import select

from services.db.models import Job, JobCheckpoint, JobMetric, JobWeights, utcnow
from services.jobs.execute import execute_job
from services.specs import trainer_spec
from services.trainer import fit, flatten_record
from tests.conftest import XOR_JOB
from tests.unit.api.test_sweeps_api import API, drain, sweep_body


def run_queued(app, dispatcher, done: set[str] | None = None) -> None:
    svc = app.extensions["sweeplab"]
    done = done if done is not None else set()
    while pending := [j for j in dispatcher.enqueued if j not in done]:
        for job_id in pending:
            execute_job(
                settings=svc.settings,
                session_factory=svc.sessions,
                dispatcher=dispatcher,
                job_id=job_id,
            )
            done.add(job_id)


def job_body(**hyper):
    body = copy.deepcopy(XOR_JOB)
    body["hyperparameters"].update(hyper)
    return body


def test_the_same_key_and_body_answer_the_same_job(client, dispatcher):
    headers = {"Idempotency-Key": "k-1"}
    first = client.post(f"{API}/jobs", json=job_body(), headers=headers)
    assert first.status_code == 201
    again = client.post(f"{API}/jobs", json=job_body(), headers=headers)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert len(dispatcher.enqueued) == 1  # nothing new queued
    # the same object with its keys in another order is the same request
    reordered = dict(reversed(list(job_body().items())))
    assert (
        client.post(f"{API}/jobs", json=reordered, headers=headers).get_json()["id"]
        == (first.get_json()["id"])
    )
    other = client.post(f"{API}/jobs", json=job_body(learning_rate=0.3), headers=headers)
    assert other.status_code == 422
    error = other.get_json()["error"]
    assert error["code"] == "idempotency_key_reused" and error["details"][0]["loc"] == (
        "Idempotency-Key"
    )
    # another key: another job; the key is per resource kind
    fresh = client.post(f"{API}/jobs", json=job_body(), headers={"Idempotency-Key": "k-2"})
    assert fresh.status_code == 201 and fresh.get_json()["id"] != first.get_json()["id"]
    bad = client.post(f"{API}/jobs", json=job_body(), headers={"Idempotency-Key": "a b"})
    assert bad.status_code == 400


def test_a_key_expires(client, app, dispatcher):
    app.extensions["sweeplab"].settings = app.extensions["sweeplab"].settings.replace(
        idempotency_seconds=1e-6
    )
    headers = {"Idempotency-Key": "short"}
    first = client.post(f"{API}/jobs", json=job_body(), headers=headers).get_json()
    second = client.post(f"{API}/jobs", json=job_body(learning_rate=0.2), headers=headers)
    assert second.status_code == 201 and second.get_json()["id"] != first["id"]


def test_sweeps_take_an_idempotency_key(client, dispatcher):
    headers = {"Idempotency-Key": "sweep-1"}
    first = client.post(f"{API}/sweeps", json=sweep_body(), headers=headers)
    again = client.post(f"{API}/sweeps", json=sweep_body(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.get_json().keys() == first.get_json().keys()
    assert len(dispatcher.enqueued) == 2
    other = client.post(f"{API}/sweeps", json=sweep_body(name="x"), headers=headers)
    assert other.status_code == 422
    assert other.get_json()["error"]["code"] == "idempotency_key_reused"


def test_an_identical_succeeded_job_is_reused(client, app, dispatcher):
    first = client.post(f"{API}/jobs", json=job_body(), headers={"Idempotency-Key": "a"})
    first_id = first.get_json()["id"]
    run_queued(app, dispatcher)
    original = client.get(f"{API}/jobs/{first_id}").get_json()
    assert original["status"] == "succeeded" and original["reused_from"] is None
    body = job_body()
    body["name"] = "another name"  # the name does not change the numbers
    body["experiment"] = "elsewhere"
    reused = client.post(f"{API}/jobs", json=body)
    assert reused.status_code == 201
    copy_ = reused.get_json()
    assert copy_["reused_from"] == first_id and copy_["status"] == "succeeded"
    assert len(dispatcher.enqueued) == 1  # not trained again
    for key in ("result", "diagnosis", "best_metrics", "latest_metrics", "best_epoch"):
        assert copy_[key] == original[key], key
    assert copy_["objective"] == original["objective"]
    assert copy_["spec"]["experiment"] == "elsewhere"
    metrics = client.get(f"{API}/jobs/{copy_['id']}/metrics").get_json()["epochs"]
    assert metrics == client.get(f"{API}/jobs/{first_id}/metrics").get_json()["epochs"]
    assert len(metrics) == 3
    weights = client.get(f"{API}/jobs/{copy_['id']}/weights")
    assert weights.status_code == 200
    with (
        np.load(io.BytesIO(weights.data)) as mine,
        np.load(io.BytesIO(client.get(f"{API}/jobs/{first_id}/weights").data)) as theirs,
    ):
        for name in theirs.files:
            if name != "spec":
                assert np.array_equal(mine[name], theirs[name]), name
    # a reuse of the reuse names the job that trained
    assert client.post(f"{API}/jobs", json=job_body()).get_json()["reused_from"] == first_id
    # "reuse": false trains; another seed is another job
    trained = client.post(f"{API}/jobs", json={**job_body(), "reuse": False}).get_json()
    assert trained["reused_from"] is None and trained["status"] == "queued"
    other_seed = client.post(f"{API}/jobs", json=job_body(seed=1)).get_json()
    assert other_seed["reused_from"] is None
    svc = app.extensions["sweeplab"]
    with svc.sessions() as session:
        rows = session.query(JobMetric).filter(JobMetric.job_id == copy_["id"]).count()
        assert rows == 3
        assert session.get(JobWeights, copy_["id"]) is not None
        fingerprints = {j.id: j.fingerprint for j in session.query(Job)}
    assert fingerprints[copy_["id"]] == fingerprints[first_id]
    assert fingerprints[trained["id"]] == fingerprints[first_id]
    assert fingerprints[other_seed["id"]] != fingerprints[first_id]


def test_a_trial_identical_to_a_succeeded_job_is_reused(client, app, dispatcher):
    job = client.post(f"{API}/jobs", json=job_body(learning_rate=0.1)).get_json()
    run_queued(app, dispatcher)
    sweep = client.post(f"{API}/sweeps", json=sweep_body()).get_json()
    sweep = drain(app, dispatcher, client, sweep["id"])
    assert sweep["status"] == "done" and sweep["counts"]["succeeded"] == 4
    trials = client.get(f"{API}/sweeps/{sweep['id']}/trials").get_json()["items"]
    by_lr = {t["params"]["hyperparameters.learning_rate"]: t["id"] for t in trials}
    reused = client.get(f"{API}/jobs/{by_lr[0.1]}").get_json()
    assert reused["reused_from"] == job["id"]
    assert reused["objective"] is not None
    assert all(
        client.get(f"{API}/jobs/{by_lr[lr]}").get_json()["reused_from"] is None
        for lr in (0.01, 1.0, 3.0)
    )
    # the same sweep again trains nothing: every trial is a copy
    queued = len(dispatcher.enqueued)
    again = client.post(f"{API}/sweeps", json=sweep_body()).get_json()
    assert again["status"] == "done" and again["counts"]["succeeded"] == 4
    assert len(dispatcher.enqueued) == queued
    assert [r["objective"] for r in again["leaderboard"]] == [
        r["objective"] for r in sweep["leaderboard"]
    ]


def test_resume_a_cancelled_sweep(client, app, dispatcher):
    body = sweep_body(base={**job_body(), "reuse": False})
    sweep = client.post(f"{API}/sweeps", json=body).get_json()
    sweep_id = sweep["id"]
    running = client.post(f"{API}/sweeps/{sweep_id}/resume")
    assert running.status_code == 409 and running.get_json()["error"]["code"] == "sweep_running"
    cancelled = client.post(f"{API}/sweeps/{sweep_id}/cancel").get_json()
    assert cancelled["counts"]["cancelled"] == 2 and cancelled["n_created"] == 2
    resumed = client.post(f"{API}/sweeps/{sweep_id}/resume")
    assert resumed.status_code == 202
    answer = resumed.get_json()
    assert answer["status"] == "running" and answer["n_trials"] == 6
    assert answer.keys() == client.get(f"{API}/sweeps/{sweep_id}").get_json().keys()
    done = drain(app, dispatcher, client, sweep_id)
    assert done["status"] == "done"
    assert done["counts"]["succeeded"] == 4 and done["counts"]["cancelled"] == 2
    trials = client.get(f"{API}/sweeps/{sweep_id}/trials?limit=100").get_json()["items"]
    succeeded = sorted(
        t["params"]["hyperparameters.learning_rate"] for t in trials if t["status"] == "succeeded"
    )
    assert succeeded == [0.01, 0.1, 1.0, 3.0]  # every grid point once
    again = client.post(f"{API}/sweeps/{sweep_id}/resume")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "sweep_complete"
    assert client.post(f"{API}/sweeps/nope/resume").status_code == 404


def test_extend_a_random_sweep_and_not_a_grid(client, app, dispatcher):
    body = sweep_body(
        method="random",
        n_trials=2,
        parameters={
            "hyperparameters.learning_rate": {"distribution": "log_uniform", "min": 0.01, "max": 1}
        },
    )
    sweep = client.post(f"{API}/sweeps", json=body).get_json()
    done = drain(app, dispatcher, client, sweep["id"])
    assert done["status"] == "done"
    extended = client.post(f"{API}/sweeps/{sweep['id']}/extend", json={"n_trials": 2})
    assert extended.status_code == 202 and extended.get_json()["n_trials"] == 4
    done = drain(app, dispatcher, client, sweep["id"])
    assert done["status"] == "done" and done["counts"]["succeeded"] == 4
    trials = client.get(f"{API}/sweeps/{sweep['id']}/trials").get_json()["items"]
    rates = [t["params"]["hyperparameters.learning_rate"] for t in trials]
    assert len(set(rates)) == 4  # the sequence continued, not repeated
    grid = client.post(f"{API}/sweeps", json=sweep_body()).get_json()
    refused = client.post(f"{API}/sweeps/{grid['id']}/extend", json={"n_trials": 1})
    assert refused.status_code == 409
    assert refused.get_json()["error"]["code"] == "grid_exhausted"
    assert client.post(f"{API}/sweeps/{grid['id']}/extend", json={"n_trials": 0}).status_code == 422
    too_many = client.post(f"{API}/sweeps/{sweep['id']}/extend", json={"n_trials": 100_000})
    assert too_many.status_code == 422 and too_many.get_json()["error"]["code"] == "too_many_trials"


def tpe_body(**changes):
    body = sweep_body(
        method="tpe",
        n_trials=3,
        n_startup_trials=2,
        parameters={
            "hyperparameters.learning_rate": {"distribution": "log_uniform", "min": 0.01, "max": 3}
        },
    )
    body.update(changes)
    return body


def test_warm_start_a_tpe_sweep(client, app, dispatcher):
    source = client.post(f"{API}/sweeps", json=tpe_body()).get_json()
    drain(app, dispatcher, client, source["id"])
    warm = client.post(f"{API}/sweeps", json=tpe_body(warm_start=source["id"], seed=5))
    assert warm.status_code == 201
    warm_id = warm.get_json()["id"]
    assert warm.get_json()["spec"]["warm_start"] == source["id"]
    done = drain(app, dispatcher, client, warm_id)
    assert done["status"] == "done"
    first = client.get(f"{API}/sweeps/{warm_id}/trials?limit=100").get_json()["items"][-1]
    job = client.get(f"{API}/jobs/{first['id']}").get_json()
    # its first trial already knows the earlier sweep's 3 finished trials: past startup
    with app.extensions["sweeplab"].sessions() as session:
        proposal = session.get(Job, job["id"]).proposal
    assert proposal["history"] == 3 and proposal["startup"] is False
    bad = client.post(
        f"{API}/sweeps",
        json=tpe_body(
            warm_start=source["id"],
            parameters={
                "hyperparameters.momentum": {"distribution": "uniform", "min": 0, "max": 0.9}
            },
        ),
    )
    assert bad.status_code == 422
    assert bad.get_json()["error"]["details"][0]["loc"] == "warm_start"
    missing = client.post(f"{API}/sweeps", json=tpe_body(warm_start="nope"))
    assert missing.status_code == 422
    grid = client.post(f"{API}/sweeps", json=sweep_body(warm_start=source["id"]))
    assert grid.status_code == 422


def test_a_job_names_its_experiment(client):
    job = client.post(f"{API}/jobs", json={**job_body(), "experiment": "mine"}).get_json()
    assert job["spec"]["experiment"] == "mine"
    bad = client.post(f"{API}/jobs", json={**job_body(), "experiment": ""})
    assert bad.status_code == 422


def test_a_replay_continues_from_its_originals_checkpoint(client, app, dispatcher):
    """A cancelled trial that kept a checkpoint (planted here: today a final trial keeps
    none) is continued by its replay from that epoch, to the uninterrupted run's numbers."""
    base = {**job_body(), "reuse": False}
    sweep = client.post(f"{API}/sweeps", json=sweep_body(base=base, max_concurrency=1)).get_json()
    first = dispatcher.enqueued[0]
    client.post(f"{API}/sweeps/{sweep['id']}/cancel")
    svc = app.extensions["sweeplab"]
    with svc.sessions() as session:
        spec = session.get(Job, first).spec
    blobs: dict[int, bytes] = {}
    reference = fit(
        trainer_spec(spec), checkpoint_every=1, on_checkpoint=lambda e, b: blobs.setdefault(e, b)
    )
    with svc.sessions() as session:
        for record in reference.history[:2]:
            flat = {**flatten_record(record), "planted": 1.0}
            session.add(
                JobMetric(job_id=first, epoch=record["epoch"], metrics=flat, created_at=utcnow())
            )
        session.add(JobCheckpoint(job_id=first, epoch=2, data=blobs[2], updated_at=utcnow()))
        session.commit()
    assert client.post(f"{API}/sweeps/{sweep['id']}/resume").status_code == 202
    done = drain(app, dispatcher, client, sweep["id"])
    assert done["status"] == "done" and done["counts"]["succeeded"] == 4
    with svc.sessions() as session:
        replay = session.scalars(
            select(Job).where(Job.sweep_id == sweep["id"], Job.trial_index == 4)
        ).one()
        assert replay.proposal["replays"] == first and replay.status == "succeeded"
        rows = session.scalars(
            select(JobMetric).where(JobMetric.job_id == replay.id).order_by(JobMetric.epoch)
        ).all()
        assert session.get(JobCheckpoint, first) is None  # moved to the replay, then gone
    # epochs 1-2 were taken over (not trained again), epoch 3 trained from the checkpoint
    assert [r.metrics.get("planted") for r in rows] == [1.0, 1.0, None]
    assert rows[2].metrics["val_loss"] == flatten_record(reference.history[2])["val_loss"]
    assert rows[2].metrics["train_loss"] == flatten_record(reference.history[2])["train_loss"]


def test_resume_and_extend_take_an_idempotency_key(client, app, dispatcher):
    body = sweep_body(
        method="random",
        n_trials=2,
        parameters={
            "hyperparameters.learning_rate": {"distribution": "log_uniform", "min": 0.01, "max": 1}
        },
    )
    sweep = client.post(f"{API}/sweeps", json=body).get_json()
    url = f"{API}/sweeps/{sweep['id']}"
    key = {"Idempotency-Key": "extend-1"}
    first = client.post(f"{url}/extend", json={"n_trials": 3}, headers=key)
    again = client.post(f"{url}/extend", json={"n_trials": 3}, headers=key)
    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["n_trials"] == first.get_json()["n_trials"] == 5  # extended once
    other = client.post(f"{url}/extend", json={"n_trials": 1}, headers=key)
    assert other.status_code == 422
    assert other.get_json()["error"]["code"] == "idempotency_key_reused"
    client.post(f"{url}/cancel")
    key = {"Idempotency-Key": "resume-1"}
    resumed = client.post(f"{url}/resume", headers=key)
    retried = client.post(f"{url}/resume", headers=key)  # a retry: not a 409 sweep_running
    assert resumed.status_code == retried.status_code == 202
    assert retried.get_json()["id"] == sweep["id"]
    assert client.post(f"{url}/resume").status_code == 409  # without the key: it runs
