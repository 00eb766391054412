"""A learning-rate range test mirrored to a real MLflow server: its run (in the test's
experiment) holds the params, the curve as metrics by step, the suggested and
divergence rates, and the PNG; a pass that is redone (the catch-up, after the
database lost what it knew of the run) finds the same run and duplicates nothing."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import update

from services.db.models import LrRangeTest
from services.lr_range import create_range_test
from services.lr_range.start import enqueue_range_test
from services.mirror import catch_up
from tests.e2e.mlflow_support import MlflowServer, mirroring_stack, params, tags
from tests.integration.harness import Stack, wait_for

pytestmark = pytest.mark.e2e

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPEC = {
    "dataset": {"name": "digits"},
    "architecture": {"layers": [{"units": 32}]},
    "hyperparameters": {"learning_rate": 0.01, "optimizer": "adam", "batch_size": 32},
}


@pytest.fixture(scope="module")
def stack(
    redis_base: str, mlflow: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    s = mirroring_stack("sqlite", tmp_path_factory.mktemp("lr-range"), redis_base, mlflow.url)
    try:
        s.start_worker(concurrency=2)
        yield s
    finally:
        s.close()


def _row(stack: Stack, test_id: str) -> LrRangeTest:
    with stack.sessions() as session:
        row = session.get(LrRangeTest, test_id)
        assert row is not None
        return row


def _wait_mirrored(stack: Stack, test_id: str) -> LrRangeTest:
    def done() -> LrRangeTest | None:
        row = _row(stack, test_id)
        return row if row.status != "queued" and row.mlflow_synced_status == row.status else None

    try:
        return wait_for(done, 90, f"the MLflow mirror of range test {test_id}", interval=0.25)
    except AssertionError:
        print(stack.logs())
        raise


def test_a_range_test_has_its_run_curve_and_png_in_mlflow(stack: Stack, mlflow: MlflowServer):
    experiment = f"e2e-lr-{uuid.uuid4().hex[:8]}"
    body = {"spec": copy.deepcopy(SPEC), "steps": 120, "experiment": experiment}
    test = stack.post("/lr-range-tests", body)
    row = _wait_mirrored(stack, test["id"])
    done = stack.get(f"/lr-range-tests/{test['id']}")
    assert done["status"] == "succeeded"
    links = done["mlflow"]
    assert links["mirrored"] and links["run_id"] == row.mlflow_run_id
    assert links["experiment_id"] == mlflow.experiment_id(experiment)

    (run,) = mlflow.runs(links["experiment_id"])
    run_id = run["info"]["run_id"]
    assert run_id == row.mlflow_run_id and run["info"]["status"] == "FINISHED"
    assert tags(run)["sweeplab.kind"] == "lr_range_test"
    assert tags(run)["sweeplab.lr_range_test_id"] == test["id"]
    assert tags(run)["sweeplab.dataset"] == "digits"
    p = params(run)
    assert p["range_test.steps"] == "120" and p["range_test.min_lr"] == "1e-06"
    assert p["hyperparameters.optimizer"] == "adam"
    assert "hyperparameters.learning_rate" not in p  # the test sweeps it
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics["suggested_lr"] == pytest.approx(done["suggested_lr"])
    assert metrics["divergence_lr"] == pytest.approx(done["divergence_lr"])
    assert metrics["steps_taken"] == done["steps_taken"]
    for key, field in (
        ("loss", "loss"),
        ("smoothed_loss", "smoothed_loss"),
        ("learning_rate", "lr"),
    ):
        history = sorted(mlflow.history(run_id, key), key=lambda m: m["step"])
        assert [m["step"] for m in history] == list(range(done["steps_taken"]))
        assert [m["value"] for m in history] == pytest.approx([c[field] for c in done["curve"]])

    assert {"lr_range_test.png", "lr_range_test.json", "spec.json"} <= set(mlflow.artifacts(run_id))
    png = mlflow.artifact_bytes(run_id, "lr_range_test.png")
    assert png[:8] == PNG_MAGIC
    assert png == stack.client.get(done["links"]["plot"]).data  # the API's drawing

    # The database forgets the run (a crash after create_run, say): the catch-up finds the
    # run by its tag and logs the same points again, which MLflow keeps once.
    with stack.sessions() as session:
        session.execute(
            update(LrRangeTest)
            .where(LrRangeTest.id == test["id"])
            .values(mlflow_run_id=None, mlflow_synced_status=None)
        )
        session.commit()
    counts = catch_up.mirror_pending(stack.settings)
    assert counts["failed"] == 0 and counts["done"] >= 1
    assert _row(stack, test["id"]).mlflow_run_id == run_id
    assert [r["info"]["run_id"] for r in mlflow.runs(links["experiment_id"])] == [run_id]
    assert len(mlflow.history(run_id, "loss")) == done["steps_taken"]


def test_a_failed_range_test_has_a_failed_run_with_its_error(stack: Stack, mlflow: MlflowServer):
    experiment = f"e2e-lr-{uuid.uuid4().hex[:8]}"
    spec = copy.deepcopy(SPEC)
    spec["hyperparameters"]["optimizer"] = "lbfgs"  # stored as is: the trainer refuses it
    spec["experiment"] = experiment  # the spec's experiment, the test naming none
    with stack.sessions() as session:
        test = create_range_test(session, spec=spec, owner_id=None)
        session.commit()
        test_id = test.id
    enqueue_range_test(stack.app.extensions["sweeplab"].dispatcher, test_id)
    row = _wait_mirrored(stack, test_id)
    assert row.status == "failed" and row.error
    (run,) = mlflow.runs(mlflow.experiment_id(experiment))
    assert run["info"]["run_id"] == row.mlflow_run_id and run["info"]["status"] == "FAILED"
    assert tags(run)["sweeplab.status"] == "failed"
    assert row.error in tags(run)["mlflow.note.content"]
    assert mlflow.artifacts(row.mlflow_run_id) == ["spec.json"]  # no curve, no PNG
