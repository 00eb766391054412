"""Which MLflow experiments sweeplab writes into, against a real MLflow server.

sweeplab writes only into experiments it created (tagged ``sweeplab.managed``)
and never restores what a user deleted: an experiment of the sweep's name that
is not ours, or a deleted one, is left as it is, and the runs go to ``"<name>
(sweeplab)"``, created and tagged by sweeplab.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from services.config import Settings
from services.mirror import entities, sync
from services.mirror.entities import EXPERIMENT_TAGS, experiment_id_for, find_run
from tests.conftest import XOR_JOB
from tests.e2e.mlflow_support import MlflowServer

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(settings: Settings, mlflow: MlflowServer, redis_base: str) -> Settings:
    """The unit tests' settings, mirroring to the module's MLflow server."""
    return settings.replace(
        mlflow_tracking_uri=mlflow.url, mlflow_ui_url=mlflow.url, redis_url=redis_base
    )


@pytest.fixture
def mlflow_client(mlflow: MlflowServer) -> MlflowClient:
    entities._experiments.clear()  # no experiment ids remembered from another test
    return MlflowClient(tracking_uri=mlflow.url)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def sweep_body(experiment: str) -> dict[str, Any]:
    return {
        "name": "lr",
        "experiment": experiment,
        "base": XOR_JOB,
        "method": "grid",
        "parameters": {"hyperparameters.learning_rate": {"values": [0.1, 0.5]}},
        "objective": {"metric": "val_loss", "goal": "minimize"},
    }


def mirror_new_sweep(client: Any, settings: Settings, experiment: str) -> tuple[str, str]:
    """Submit a sweep through the API and mirror its parent run: (run id, experiment id)."""
    resp = client.post("/api/v1/sweeps", json=sweep_body(experiment))
    assert resp.status_code == 201, resp.get_json()
    return sync.mirror_sweep(settings, resp.get_json()["id"], finalize=False)


def test_an_experiment_sweeplab_did_not_create_is_not_written_into(
    client: Any, settings: Settings, mlflow_client: MlflowClient
) -> None:
    name = unique("team")
    foreign = mlflow_client.create_experiment(name)  # a colleague's, untagged
    theirs = mlflow_client.create_run(foreign).info.run_id

    run_id, exp_id = mirror_new_sweep(client, settings, name)

    assert exp_id != foreign
    ours = mlflow_client.get_experiment(exp_id)
    assert ours.name == f"{name} (sweeplab)"
    assert ours.tags["sweeplab.managed"] == "true"
    assert mlflow_client.get_run(run_id).info.experiment_id == exp_id
    foreign_exp = mlflow_client.get_experiment(foreign)
    assert "sweeplab.managed" not in foreign_exp.tags
    assert "mlflow.experimentKind" not in foreign_exp.tags  # not even a tag of ours
    runs = mlflow_client.search_runs([foreign], run_view_type=ViewType.ALL)
    assert [r.info.run_id for r in runs] == [theirs]

    # The next sweep of that name, in a fresh process (nothing remembered), goes there too.
    entities._experiments.clear()
    assert mirror_new_sweep(client, settings, name)[1] == exp_id
    # The API's links name the experiment the runs are in.
    sweeps = client.get("/api/v1/sweeps").get_json()
    assert any(exp_id in str(s.get("mlflow")) for s in sweeps["items"])


def test_a_deleted_experiment_stays_deleted(
    client: Any, settings: Settings, mlflow_client: MlflowClient
) -> None:
    name = unique("gone")
    first = experiment_id_for(mlflow_client, settings.mlflow_tracking_uri or "", name)
    assert mlflow_client.get_experiment(first).tags["sweeplab.managed"] == "true"
    mlflow_client.delete_experiment(first)  # the user deleted it in the UI
    entities._experiments.clear()

    run_id, exp_id = mirror_new_sweep(client, settings, name)

    assert mlflow_client.get_experiment(first).lifecycle_stage == "deleted"
    assert exp_id != first
    assert mlflow_client.get_experiment(exp_id).name == f"{name} (sweeplab)"
    assert mlflow_client.get_run(run_id).info.experiment_id == exp_id


def test_stand_in_names_are_skipped_in_turn(mlflow_client: MlflowClient, mlflow: MlflowServer):
    name = unique("busy")
    mlflow_client.create_experiment(name)
    mlflow_client.create_experiment(f"{name} (sweeplab)")  # not ours either
    exp_id = experiment_id_for(mlflow_client, mlflow.url, name)
    exp = mlflow_client.get_experiment(exp_id)
    assert exp.name == f"{name} (sweeplab 2)"
    assert exp.tags["sweeplab.managed"] == "true"


def test_a_deleted_run_is_not_restored(mlflow_client: MlflowClient, mlflow: MlflowServer):
    exp_id = mlflow_client.create_experiment(unique("runs"), tags=EXPERIMENT_TAGS)
    tags = {"sweeplab.job_id": "j-1", "sweeplab.kind": "job"}
    deleted = mlflow_client.create_run(exp_id, tags=tags).info.run_id
    mlflow_client.delete_run(deleted)

    assert find_run(mlflow_client, exp_id, "sweeplab.job_id", "j-1", "job") is None
    assert mlflow_client.get_run(deleted).info.lifecycle_stage == "deleted"

    active = mlflow_client.create_run(exp_id, tags=tags).info.run_id
    assert find_run(mlflow_client, exp_id, "sweeplab.job_id", "j-1", "job") == active
