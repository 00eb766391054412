"""The datasets API: upload in each way, dedupe, access, delete, and jobs and sweeps
that train on stored data (their specs hold a reference, never rows)."""

from __future__ import annotations

import io

from services.db.models import Dataset, Job, LrRangeTest, Sweep
from services.jobs.execute import execute_job
from tests.auth_support import authorize, new_token
from tests.unit.api.contract import contract_client

API = "/api/v1"
CSV = b"x1,x2,label\n" + b"".join(
    f"{i % 7 * 0.5},{i % 3},{'ab'[i % 2]}\n".encode() for i in range(40)
)


def job_on(dataset_id: str, **dataset) -> dict:
    return {
        "dataset": {"name": "uploaded", "id": dataset_id, **dataset},
        "architecture": {"layers": [{"units": 4}]},
        "hyperparameters": {"learning_rate": 0.1, "epochs": 2},
    }


def upload(client, data=CSV, name="data.csv", **form):
    files = {"file": (io.BytesIO(data), name), **form}
    return client.post(f"{API}/datasets", data=files, content_type="multipart/form-data")


def test_upload_answers_shape_task_and_classes_once_per_content(client):
    first = upload(client, name="mine.csv")
    assert first.status_code == 201, first.get_json()
    body = first.get_json()
    assert (body["n_rows"], body["n_features"], body["task"]) == (40, 2, "classification")
    assert body["classes"] == ["a", "b"] and body["class_counts"] == [20, 20]
    assert len(body["sha256"]) == 64 and body["size_bytes"] > 0 and body["name"] == "mine.csv"
    raw = client.post(f"{API}/datasets?name=again", data=CSV, content_type="text/csv")
    assert raw.status_code == 200 and raw.get_json()["id"] == body["id"]
    assert client.get(f"{API}/datasets/{body['id']}").get_json() == body
    listed = client.get(f"{API}/datasets").get_json()
    assert [d["id"] for d in listed["items"]] == [body["id"]] and "classes" not in listed["items"][
        0
    ]


def test_refusals_name_row_and_column_and_size(client, app):
    bad = CSV.replace(b"0.5,1,b", b"0.5,one,b", 1)
    answer = upload(client, bad)
    assert answer.status_code == 422
    assert answer.get_json()["error"]["details"] == [
        {"loc": 'file.row 3.column "x2"', "msg": '"one" is not a number'}
    ]
    options = upload(client, task="sometimes")
    assert options.status_code == 422 and options.get_json()["error"]["details"][0]["loc"] == "task"
    svc = app.extensions["sweeplab"]
    svc.settings = svc.settings.replace(
        limits=svc.settings.limits.model_copy(update={"max_dataset_bytes": 100})
    )
    too_big = client.post(f"{API}/datasets", data=CSV, content_type="text/csv")
    assert (
        too_big.status_code == 413
        and "SWEEPLAB_MAX_DATASET_BYTES" in too_big.get_json()["error"]["message"]
    )


def test_a_job_trains_on_a_dataset_that_cannot_go_while_it_is_queued(client, app, dispatcher):
    dataset_id = upload(client).get_json()["id"]
    created = client.post(f"{API}/jobs", json=job_on(dataset_id, validation_split=0.25))
    assert created.status_code == 201, created.get_json()
    spec = created.get_json()["spec"]["dataset"]
    assert spec["name"] == "uploaded" and spec["id"] == dataset_id and "X" not in spec
    assert client.delete(f"{API}/datasets/{dataset_id}").status_code == 409
    svc = app.extensions["sweeplab"]
    status = execute_job(
        settings=svc.settings,
        session_factory=svc.sessions,
        dispatcher=dispatcher,
        job_id=created.get_json()["id"],
    )
    assert status == "succeeded"
    job = client.get(f"{API}/jobs/{created.get_json()['id']}").get_json()
    assert job["result"]["dataset"]["n_train"] == 30 and job["result"]["dataset"]["n_val"] == 10
    assert client.delete(f"{API}/datasets/{dataset_id}").status_code == 204
    assert client.get(f"{API}/datasets/{dataset_id}").status_code == 404
    unknown = client.post(f"{API}/jobs", json=job_on(dataset_id))
    assert unknown.status_code == 422
    assert unknown.get_json()["error"]["details"][0]["loc"] == "dataset.id"


def test_inline_arrays_become_one_stored_dataset(client, app):
    inline = {
        "dataset": {
            "name": "arrays",
            "X": [[0, 0], [0, 1], [1, 0], [1, 1]] * 3,
            "y": [0, 1, 1, 0] * 3,
        },
        "architecture": {"layers": [{"units": 3}]},
        "hyperparameters": {"learning_rate": 0.1, "epochs": 2},
    }
    ids = {
        client.post(f"{API}/jobs", json=inline).get_json()["spec"]["dataset"]["id"] for _ in "ab"
    }
    sweep = client.post(
        f"{API}/sweeps",
        json={
            "base": inline,
            "method": "grid",
            "parameters": {"hyperparameters.learning_rate": {"values": [0.1, 0.2, 0.3]}},
        },
    )
    assert sweep.status_code == 201, sweep.get_json()
    with app.extensions["sweeplab"].sessions() as session:
        trials = session.query(Job).filter(Job.sweep_id == sweep.get_json()["id"]).all()
        assert {t.spec["dataset"]["id"] for t in trials} == ids and len(ids) == 1
        assert all("X" not in t.spec["dataset"] and t.dataset_id in ids for t in trials)
        assert session.query(Dataset).count() == 1
    varied = client.post(
        f"{API}/sweeps",
        json={"base": inline, "method": "grid", "parameters": {"dataset.id": {"values": ["a"]}}},
    )
    assert varied.status_code == 422
    assert varied.get_json()["error"]["details"][0]["loc"] == "parameters.dataset.id"


def test_users_see_only_their_own_datasets(client, app):
    dataset_id = upload(client).get_json()["id"]  # the admin's
    alice = authorize(
        contract_client(app), new_token(app.extensions["sweeplab"].sessions, "alice", admin=False)
    )
    assert alice.get(f"{API}/datasets/{dataset_id}").status_code == 404
    assert alice.delete(f"{API}/datasets/{dataset_id}").status_code == 404
    assert alice.get(f"{API}/datasets").get_json()["items"] == []
    refused = alice.post(f"{API}/jobs", json=job_on(dataset_id))
    assert (
        refused.status_code == 422
        and refused.get_json()["error"]["details"][0]["loc"] == "dataset.id"
    )
    # the same bytes uploaded by alice are her own dataset (one blob underneath)
    hers = upload(alice).get_json()
    assert (
        hers["id"] != dataset_id
        and hers["sha256"] == client.get(f"{API}/datasets/{dataset_id}").get_json()["sha256"]
    )


def test_a_queued_range_test_keeps_its_dataset(client, app):
    dataset_id = upload(client).get_json()["id"]
    test = client.post(f"{API}/lr-range-tests", json={"spec": job_on(dataset_id), "steps": 20})
    assert test.status_code == 202, test.get_json()
    refused = client.delete(f"{API}/datasets/{dataset_id}")
    assert refused.status_code == 409 and "range test" in refused.get_json()["error"]["message"]
    sessions = app.extensions["sweeplab"].sessions
    with sessions() as session:  # the test ends (how does not matter here)
        session.get(LrRangeTest, test.get_json()["id"]).status = "succeeded"
        session.commit()
    assert client.delete(f"{API}/datasets/{dataset_id}").status_code == 204


def test_a_stopped_sweep_whose_dataset_was_deleted_cannot_resume_or_extend(client, app):
    dataset_id = upload(client).get_json()["id"]
    sweep = {
        "base": job_on(dataset_id),
        "method": "random",
        "parameters": {
            "hyperparameters.learning_rate": {"distribution": "log_uniform", "min": 0.01, "max": 1}
        },
        "n_trials": 3,
        "max_concurrency": 3,
    }
    created = client.post(f"{API}/sweeps", json=sweep)
    assert created.status_code == 201, created.get_json()
    sweep_id = created.get_json()["id"]
    assert client.delete(f"{API}/datasets/{dataset_id}").status_code == 409  # it runs
    assert client.post(f"{API}/sweeps/{sweep_id}/cancel").status_code == 202
    assert client.delete(f"{API}/datasets/{dataset_id}").status_code == 204
    sessions = app.extensions["sweeplab"].sessions
    with sessions() as session:
        before = session.query(Job).filter(Job.sweep_id == sweep_id).count()
    for url, body in (
        (f"{API}/sweeps/{sweep_id}/resume", None),
        (f"{API}/sweeps/{sweep_id}/extend", {"n_trials": 2}),
    ):
        answer = client.post(url, json=body)
        assert answer.status_code == 409, answer.get_json()
        error = answer.get_json()["error"]
        assert error["code"] == "dataset_deleted" and dataset_id in error["message"]
    with sessions() as session:  # no trial created that could only fail
        assert session.query(Job).filter(Job.sweep_id == sweep_id).count() == before
        assert session.get(Sweep, sweep_id).status == "cancelled"


def test_inline_arrays_keep_to_the_dataset_size_limit(client, app):
    svc = app.extensions["sweeplab"]
    svc.settings = svc.settings.replace(
        limits=svc.settings.limits.model_copy(update={"max_dataset_bytes": 2_000})
    )
    rows = 200  # 200 x 2 float64 alone are 3,200 bytes stored
    inline = {
        "dataset": {
            "name": "arrays",
            "X": [[i % 3, i % 5] for i in range(rows)],
            "y": [0, 1] * 100,
        },
        "architecture": {"layers": [{"units": 3}]},
        "hyperparameters": {"learning_rate": 0.1, "epochs": 2},
    }
    for url, body in (
        (f"{API}/jobs", inline),
        (
            f"{API}/sweeps",
            {
                "base": inline,
                "method": "grid",
                "parameters": {"hyperparameters.learning_rate": {"values": [0.1, 0.2]}},
            },
        ),
    ):
        answer = client.post(url, json=body)
        assert answer.status_code == 422, answer.get_json()
        detail = answer.get_json()["error"]["details"][0]
        assert detail["loc"].endswith("dataset") and "SWEEPLAB_MAX_DATASET_BYTES" in detail["msg"]
    with svc.sessions() as session:
        assert session.query(Dataset).count() == 0  # nothing stored
    small = dict(inline, dataset={"name": "arrays", "X": [[0, 0], [1, 1]] * 4, "y": [0, 1] * 4})
    assert client.post(f"{API}/jobs", json=small).status_code == 201


def test_a_generators_option_on_an_uploaded_dataset_is_a_422(client):
    dataset_id = upload(client).get_json()["id"]
    answer = client.post(f"{API}/jobs", json=job_on(dataset_id, n_samples=5, noise=0.1))
    assert answer.status_code == 422, answer.get_json()
    assert [d["loc"] for d in answer.get_json()["error"]["details"]] == [
        "dataset.n_samples",
        "dataset.noise",
    ]
    fine = client.post(f"{API}/jobs", json=job_on(dataset_id, validation_split=0.3, seed=4))
    assert fine.status_code == 201, fine.get_json()


def test_a_validation_split_that_gives_no_row_is_a_422_when_asked_for(client):
    # 40 rows of 20 classes (2 rows each): a stratified split keeps them all for training
    rows = b"".join(f"{i * 0.1},{i % 3},c{i // 2}\n".encode() for i in range(40))
    dataset_id = upload(client, b"x1,x2,label\n" + rows).get_json()["id"]
    asked = client.post(f"{API}/jobs", json=job_on(dataset_id, validation_split=0.2))
    assert asked.status_code == 422, asked.get_json()
    detail = asked.get_json()["error"]["details"][0]
    assert detail["loc"] == "dataset.validation_split" and "no validation row" in detail["msg"]
    sweep = {
        "base": job_on(dataset_id, validation_split=0.2),
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": [0.1, 0.2]}},
    }
    refused = client.post(f"{API}/sweeps", json=sweep)
    assert refused.status_code == 422, refused.get_json()
    assert refused.get_json()["error"]["details"][0]["loc"] == "base.dataset.validation_split"
    # left at its default, or 0: the job trains without validation, as before
    assert client.post(f"{API}/jobs", json=job_on(dataset_id)).status_code == 201
    assert (
        client.post(f"{API}/jobs", json=job_on(dataset_id, validation_split=0)).status_code == 201
    )
    # a split that does give rows is taken
    assert (
        client.post(f"{API}/jobs", json=job_on(dataset_id, validation_split=0.5)).status_code == 201
    )
