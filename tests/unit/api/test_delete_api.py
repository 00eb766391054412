"""DELETE /jobs/<id> and /sweeps/<id>: cancel first, then every row goes; the MLflow runs
are queued for deletion and survive MLflow being down (SQLite, fake dispatcher)."""

from __future__ import annotations

import copy
import socket
from typing import Any

import pytest
from sqlalchemy import func, select

import services.trainer
from api import create_app
from services.db.models import (
    Job,
    JobCheckpoint,
    JobMetric,
    JobWeights,
    MlflowDeletion,
    Sweep,
)
from services.jobs.execute import execute_job
from services.jobs.lease import claim_job
from services.jobs.records import record_epochs
from services.mirror.catch_up import carry_out_deletions
from tests.auth_support import authorize, new_token
from tests.conftest import XOR_JOB

API = "/api/v1"
REAL_FIT = services.trainer.fit


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rows_of(sessions: Any, job_id: str) -> dict[str, int]:
    with sessions() as session:
        return {
            table.__tablename__: session.scalar(
                select(func.count())
                .select_from(table)
                .where((table.id if table is Job else table.job_id) == job_id)
            )
            for table in (Job, JobMetric, JobCheckpoint, JobWeights)
        }


NONE = {"jobs": 0, "job_metrics": 0, "job_checkpoints": 0, "job_weights": 0}


def sweep_body(n: int = 4) -> dict[str, Any]:
    return {
        "name": "lr",
        "base": copy.deepcopy(XOR_JOB),
        "method": "grid",
        "parameters": {
            "hyperparameters.learning_rate": {"values": [0.1 * (i + 1) for i in range(n)]}
        },
        "max_concurrency": 2,
    }


def test_deleting_a_finished_job_removes_every_row(client, app, dispatcher):
    svc = app.extensions["sweeplab"]
    job_id = client.post(f"{API}/jobs", json=XOR_JOB).get_json()["id"]
    execute_job(
        settings=svc.settings, session_factory=svc.sessions, dispatcher=dispatcher, job_id=job_id
    )
    before = rows_of(svc.sessions, job_id)
    assert before["job_metrics"] == 3 and before["job_weights"] == 1
    response = client.delete(f"{API}/jobs/{job_id}")
    assert response.status_code == 204 and response.get_data() == b""
    assert rows_of(svc.sessions, job_id) == NONE
    assert client.get(f"{API}/jobs/{job_id}").status_code == 404
    assert client.delete(f"{API}/jobs/{job_id}").status_code == 404  # gone: twice is a 404
    assert client.delete(f"{API}/jobs/nope").status_code == 404


def test_a_queued_job_is_cancelled_then_deleted(client, app, dispatcher):
    svc = app.extensions["sweeplab"]
    job_id = client.post(f"{API}/jobs", json=XOR_JOB).get_json()["id"]
    assert client.delete(f"{API}/jobs/{job_id}").status_code == 204
    assert rows_of(svc.sessions, job_id) == NONE
    assert dispatcher.cancelled == set()  # nobody runs it: nobody to tell
    # its message, still queued, finds nothing to do
    assert (
        execute_job(
            settings=svc.settings,
            session_factory=svc.sessions,
            dispatcher=dispatcher,
            job_id=job_id,
        )
        == "missing"
    )


def test_a_running_job_is_cancelled_then_deleted(client, app, dispatcher):
    svc = app.extensions["sweeplab"]
    job_id = client.post(f"{API}/jobs", json=XOR_JOB).get_json()["id"]
    with svc.sessions() as session:  # a worker runs it: two epochs and a checkpoint
        claim_job(session, job_id=job_id, worker="w", lease_seconds=60)
        rows = [{"epoch": e, "metrics": {"train_loss": 1.0}} for e in (1, 2)]
        owned = record_epochs(
            session,
            job_id=job_id,
            attempt=1,
            rows=rows,
            progress={},
            lease_seconds=60,
            checkpoint=(2, b"state"),
        )
        assert owned.owned
        session.commit()
    assert rows_of(svc.sessions, job_id)["job_checkpoints"] == 1
    assert client.delete(f"{API}/jobs/{job_id}").status_code == 204
    assert rows_of(svc.sessions, job_id) == NONE
    assert dispatcher.cancelled == {job_id}  # its worker is told at once
    with svc.sessions() as session:  # and its next write finds no job: nothing comes back
        late = record_epochs(
            session,
            job_id=job_id,
            attempt=1,
            rows=[{"epoch": 3, "metrics": {}}],
            progress={},
            lease_seconds=60,
            checkpoint=(3, b"state"),
        )
        session.commit()
    assert not late.owned and rows_of(svc.sessions, job_id) == NONE


def test_a_worker_training_a_deleted_job_stops_and_writes_nothing(
    client, app, dispatcher, monkeypatch
):
    svc = app.extensions["sweeplab"]
    job_id = client.post(
        f"{API}/jobs",
        json={**XOR_JOB, "hyperparameters": {**XOR_JOB["hyperparameters"], "epochs": 50}},
    ).get_json()["id"]
    seen: list[int] = []

    def fit(spec: Any, **kwargs: Any) -> Any:
        on_epoch = kwargs["on_epoch"]

        def epoch(record: dict) -> Any:
            seen.append(record["epoch"])
            if record["epoch"] == 3:  # the user deletes it while it trains
                assert client.delete(f"{API}/jobs/{job_id}").status_code == 204
            return on_epoch(record)

        return REAL_FIT(spec, **dict(kwargs, on_epoch=epoch))

    monkeypatch.setattr(services.trainer, "fit", fit)
    status = execute_job(
        settings=svc.settings, session_factory=svc.sessions, dispatcher=dispatcher, job_id=job_id
    )
    assert status == "lost" and seen == [1, 2, 3]  # it stopped at that epoch
    assert rows_of(svc.sessions, job_id) == NONE


def test_a_trial_goes_with_its_sweep_only(client, app, dispatcher):
    sweep_id = client.post(f"{API}/sweeps", json=sweep_body()).get_json()["id"]
    trial = client.get(f"{API}/sweeps/{sweep_id}/trials").get_json()["items"][0]["id"]
    response = client.delete(f"{API}/jobs/{trial}")
    assert response.status_code == 409
    assert f"sweep {sweep_id}" in response.get_json()["error"]["message"]
    assert client.get(f"{API}/jobs/{trial}").status_code == 200


def test_deleting_a_running_sweep_cancels_it_and_removes_every_trial(client, app, dispatcher):
    svc = app.extensions["sweeplab"]
    sweep_id = client.post(f"{API}/sweeps", json=sweep_body()).get_json()["id"]
    first, second = dispatcher.enqueued[-2:]  # max_concurrency 2
    execute_job(
        settings=svc.settings, session_factory=svc.sessions, dispatcher=dispatcher, job_id=first
    )  # done; the sweep queued its third trial
    with svc.sessions() as session:
        claim_job(session, job_id=second, worker="w", lease_seconds=60)
        session.commit()
        trials = list(session.scalars(select(Job.id).where(Job.sweep_id == sweep_id)))
    assert len(trials) == 3
    assert client.delete(f"{API}/sweeps/{sweep_id}").status_code == 204
    assert dispatcher.cancelled == {second}
    for trial in trials:
        assert rows_of(svc.sessions, trial) == NONE
    with svc.sessions() as session:
        assert session.get(Sweep, sweep_id) is None
    assert client.get(f"{API}/sweeps/{sweep_id}").status_code == 404
    assert client.delete(f"{API}/sweeps/{sweep_id}").status_code == 404


@pytest.fixture
def mirrored(settings, dispatcher):
    """An app whose settings mirror to an MLflow that does not answer (and a broker that
    is not there either: the hook that asks a worker to delete the runs fails quietly)."""
    settings = settings.replace(
        mlflow_tracking_uri=f"http://127.0.0.1:{closed_port()}",
        redis_url=f"redis://127.0.0.1:{closed_port()}/0",
    )
    app = create_app(settings, dispatcher=dispatcher)  # type: ignore[arg-type]
    svc = app.extensions["sweeplab"]
    client = authorize(app.test_client(), new_token(svc.sessions))
    yield client, svc
    svc.engine.dispose()


def test_with_mlflow_down_the_run_deletions_wait(mirrored):
    client, svc = mirrored
    job_id = client.post(f"{API}/jobs", json=XOR_JOB).get_json()["id"]
    sweep_id = client.post(f"{API}/sweeps", json=sweep_body()).get_json()["id"]
    with svc.sessions() as session:  # as the mirror left them
        session.get(Job, job_id).mlflow_run_id = "r-job"
        session.get(Sweep, sweep_id).mlflow_run_id = "r-sweep"
        session.commit()
    assert client.delete(f"{API}/jobs/{job_id}").status_code == 204
    assert client.delete(f"{API}/sweeps/{sweep_id}").status_code == 204

    def pending() -> list[tuple[str, str, str | None, int, bool]]:
        with svc.sessions() as session:
            rows = session.scalars(select(MlflowDeletion).order_by(MlflowDeletion.id))
            return [(r.kind, r.entity_id, r.run_id, r.attempts, bool(r.last_error)) for r in rows]

    assert pending() == [
        ("job", job_id, "r-job", 0, False),
        ("sweep", sweep_id, "r-sweep", 0, False),
    ]
    counts = carry_out_deletions(svc.settings)
    assert counts["runs"] == 0 and counts["failed"] >= 1 and counts["left"] == 2
    assert pending()[0][3:] == (1, True)  # tried, the error noted; kept for the next pass


def test_without_mirroring_nothing_waits_for_mlflow(client, app):
    svc = app.extensions["sweeplab"]
    job_id = client.post(f"{API}/jobs", json=XOR_JOB).get_json()["id"]
    assert client.delete(f"{API}/jobs/{job_id}").status_code == 204
    with svc.sessions() as session:
        assert session.scalar(select(func.count()).select_from(MlflowDeletion)) == 0
