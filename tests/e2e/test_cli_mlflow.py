"""The CLI with MLflow on: `sweeplab open` hands out the links the API gives, and the
best trial's predictions are the same numbers from the CLI, the Python client and the
MLflow model of its run (``mlflow.pyfunc.load_model("runs:/<id>/model")``)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import mlflow.pyfunc as pyfunc
import numpy as np
import pytest
from sklearn.datasets import load_digits

from client import Client
from tests.e2e.mlflow_support import MlflowServer, wait_job_mirrored, wait_mirrored
from tests.integration.cli_support import Server, digits_job, lr_sweep, serve

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, redis_base: str, mlflow: MlflowServer
) -> Iterator[Server]:
    yield from serve(tmp_path_factory, redis_base, mlflow.url)


def test_predictions_agree_between_cli_client_and_mlflow_model(
    server: Server, mlflow: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = lr_sweep([0.03, 0.1, 10.0], digits_job(epochs=5), experiment="cli-e2e")
    (server.workdir / "sweep.json").write_text(json.dumps(spec))
    done = server.cli("submit", "sweep.json", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    sweep = json.loads(done.stdout)
    best = sweep["best_trial"]["job_id"]
    wait_mirrored(server.stack, sweep["id"])
    run_id = wait_job_mirrored(server.stack, best).mlflow_run_id

    # `open`: the sweep's compare view and the best trial's run page, as the API links them
    with Client(server.url, server.stack.token) as api:
        links = api.get(sweep["id"])["mlflow"]
        opened = server.cli("open", sweep["id"])
        assert opened.returncode == 0, opened.stderr
        assert opened.stdout.strip() == links["compare_url"]
        assert "#/compare-runs?runs=" in links["compare_url"]
        run_links = json.loads(server.cli("open", best, "--json").stdout)
        assert run_links["run_id"] == run_id and run_links["mirrored"] is True
        assert server.cli("open", best).stdout.strip() == run_links["run_url"]

        X, _ = load_digits(return_X_y=True)
        rows = X[100:140]
        with open(server.workdir / "rows.csv", "w") as out:
            out.write(",".join(f"p{i}" for i in range(64)) + "\n")
            out.writelines(",".join(repr(float(v)) for v in row) + "\n" for row in rows)
        by_cli = json.loads(server.cli("predict", sweep["id"], "rows.csv", "--json").stdout)
        by_client = api.predict(best, rows.tolist())
        weights = api.weights_npz(best)
    assert by_cli == by_client
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow.url)
    model = pyfunc.load_model(f"runs:/{run_id}/model")
    assert model.predict(rows).tolist() == by_cli["predictions"]
    proba = model.unwrap_python_model().predict_proba(rows)
    assert proba.tolist() == by_cli["probabilities"]
    assert mlflow.artifact_bytes(run_id, "model/artifacts/job.npz") == weights
    assert np.isclose(np.sum(by_cli["probabilities"], axis=1), 1.0, atol=1e-5).all()
