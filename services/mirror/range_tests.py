"""Learning-rate range tests in MLflow: one run per test, in the test's experiment
(default ``sweeplab``), with the spec and the test's settings as params, the curve as
metrics (``loss``, ``smoothed_loss``, ``learning_rate``, step = the batch's index), the
reading as metrics (``suggested_lr``, ``divergence_lr``, ``min_loss_lr``) and the PNG.

The same protocol as a job's run: the database says what MLflow has
(``lr_range_tests.mlflow_synced_status``); a run is found by its tag before one is
created, so a pass that is redone makes no twin; every point carries a timestamp
taken from the row, so a resent point is the same point; one pass per test at a
time (the mirror lock). A finished test is handed over by :func:`range_test_finished`
(a task, ``sweeplab.mirror_lr_range_test``); the periodic catch-up
(:func:`mirror_lagging`, from ``catch_up.mirror_pending``) mirrors what lags.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select, update

from services.db.models import LrRangeTest
from services.mirror.entities import experiment_id_for, find_run, run_params, run_tags
from services.mirror.links import links_for_job
from services.mirror.names import (
    architecture_string,
    enabled,
    experiment_name,
    flatten_spec,
    get_path,
    to_ms,
)
from services.mirror.plumbing import (
    MirrorBusy,
    mirror_lock,
    mlflow_client,
    send_task,
    session_scope,
)

log = logging.getLogger(__name__)

MIRROR_RANGE_TEST_TASK = "sweeplab.mirror_lr_range_test"
KIND = "lr_range_test"
ID_TAG = "sweeplab.lr_range_test_id"
FINISHED = ("succeeded", "failed")
RUN_STATUS = {"succeeded": "FINISHED", "failed": "FAILED"}
PNG_NAME = "lr_range_test.png"


def range_test_finished(settings: Any, test_id: str) -> None:
    """Hand a finished test to the mirror (a task); returns at once, never raises."""
    if not enabled(settings):
        return
    try:
        send_task(settings, MIRROR_RANGE_TEST_TASK, [test_id], priority=0)
    except Exception:  # the catch-up pass finds it later: the database says it lags
        log.warning("could not enqueue the MLflow mirror of range test %s", test_id, exc_info=True)


def links_for_range_test(settings: Any, test: Any) -> dict[str, Any] | None:
    """The test's MLflow ids and UI links (a test's row has a job's MLflow columns)."""
    return links_for_job(settings, test)


def _snapshot(settings: Any, test_id: str) -> dict[str, Any] | None:
    with session_scope(settings) as session:
        test = session.get(LrRangeTest, test_id)
        snap = None if test is None else {c: getattr(test, c) for c in _COLUMNS}
        session.rollback()
    return snap


_COLUMNS = (
    "id name experiment status spec min_lr max_lr steps smoothing diverge_factor result "
    "suggested_lr divergence_lr error seconds created_at started_at finished_at "
    "mlflow_run_id mlflow_experiment_id mlflow_synced_status"
).split()


def _update(settings: Any, test_id: str, **values: Any) -> None:
    with session_scope(settings) as session:
        session.execute(update(LrRangeTest).where(LrRangeTest.id == test_id).values(**values))
        session.commit()


def mirror_range_test(settings: Any, test_id: str, *, client: Any = None) -> bool:
    """Bring a finished test's run up to date; True when nothing is left to do.
    Raises MirrorBusy, and MLflow's errors as they come (callers retry)."""
    if not enabled(settings):
        return True
    client = client or mlflow_client(settings)
    with mirror_lock(settings, f"lr_range_test:{test_id}"):
        snap = _snapshot(settings, test_id)
        if snap is None or snap["status"] not in FINISHED:
            return True
        if snap["mlflow_synced_status"] == snap["status"]:
            return True
        run_id = _ensure_run(settings, client, snap)
        result = snap["result"] or {}
        client.log_batch(
            run_id,
            metrics=_metrics(snap, result),
            params=run_params(_params(snap)),
            tags=run_tags(_tags(snap)),
            synchronous=True,
        )
        with tempfile.TemporaryDirectory(prefix="sweeplab-mirror-") as tmp:
            for name, data in _artifacts(snap, result).items():
                Path(tmp, name).write_bytes(data)
            client.log_artifacts(run_id, tmp)
        client.set_terminated(run_id, RUN_STATUS[snap["status"]], end_time=_ms(snap, "finished"))
        _update(settings, test_id, mlflow_synced_status=snap["status"])
    return True


def _ms(snap: dict[str, Any], which: str) -> int:
    moment = snap.get(f"{which}_at") or snap.get("started_at") or snap["created_at"]
    return to_ms(moment) or 0


def _ensure_run(settings: Any, client: Any, snap: dict[str, Any]) -> str:
    if snap["mlflow_run_id"]:
        return str(snap["mlflow_run_id"])
    exp_id = snap["mlflow_experiment_id"] or experiment_id_for(
        client,
        settings.mlflow_tracking_uri,
        experiment_name(snap["experiment"] or snap["spec"].get("experiment")),
    )
    run_id = find_run(client, exp_id, ID_TAG, snap["id"], KIND)
    if run_id is None:
        run = client.create_run(
            exp_id,
            start_time=_ms(snap, "started"),
            tags={"sweeplab.kind": KIND, ID_TAG: snap["id"]},
            run_name=snap["name"] or f"lr range test {snap['id'][:8]}",
        )
        run_id = run.info.run_id
    _update(settings, snap["id"], mlflow_run_id=run_id, mlflow_experiment_id=exp_id)
    return str(run_id)


def _params(snap: dict[str, Any]) -> dict[str, str]:
    params = flatten_spec(snap["spec"])
    params.pop("hyperparameters.learning_rate", None)  # not used: the test sweeps it
    for key in ("min_lr", "max_lr", "steps", "smoothing", "diverge_factor"):
        params[f"range_test.{key}"] = repr(snap[key])
    return params


def _tags(snap: dict[str, Any]) -> dict[str, Any]:
    note = [f"sweeplab learning-rate range test `{snap['id']}`: **{snap['status']}**"]
    if snap["error"]:
        note.append(f"\n\nError:\n\n```\n{snap['error']}\n```")
    return {
        "sweeplab.status": snap["status"],
        "sweeplab.dataset": get_path(snap["spec"], "dataset.name"),
        "sweeplab.architecture": architecture_string(snap["spec"]),
        "mlflow.note.content": "".join(note),
    }


def _metrics(snap: dict[str, Any], result: dict[str, Any]) -> list[Any]:
    from mlflow.entities import Metric  # late: heavy (mlflow)

    start = _ms(snap, "started")
    out = []
    columns = (
        ("learning_rate", "learning_rates"),
        ("loss", "losses"),
        ("smoothed_loss", "smoothed_losses"),
    )
    for key, column in columns:
        for step, value in enumerate(result.get(column) or []):
            if math.isfinite(value):
                out.append(Metric(key, float(value), start + step, step))
    end = _ms(snap, "finished")
    for key in ("suggested_lr", "divergence_lr", "min_loss_lr"):
        value = result.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            out.append(Metric(key, float(value), end, 0))
    if result.get("losses"):
        out.append(Metric("steps_taken", float(len(result["losses"])), end, 0))
    return out


def _artifacts(snap: dict[str, Any], result: dict[str, Any]) -> dict[str, bytes]:
    files = {"spec.json": json.dumps(snap["spec"], indent=2, sort_keys=True).encode()}
    if result.get("losses"):
        from services.plots_lr import lr_range_png  # late: heavy (matplotlib)

        files["lr_range_test.json"] = json.dumps(result, indent=2).encode()
        files[PNG_NAME] = lr_range_png(result, title=range_test_title(snap))
    return files


def range_test_title(test: Any) -> str:
    """The PNG's title: the dataset, the optimizer, the batch size (as the API draws it)."""
    spec = test["spec"] if isinstance(test, dict) else test.spec
    hp = spec.get("hyperparameters") or {}
    return (
        f"LR range test: {get_path(spec, 'dataset.name')}, {hp.get('optimizer', 'sgd')}, "
        f"batch {hp.get('batch_size') or 'full'}"
    )


def mirror_lagging(settings: Any, limit: int = 500) -> dict[str, int]:
    """Mirror the finished tests MLflow lacks; return counts (done, busy, failed)."""
    counts = {"done": 0, "busy": 0, "failed": 0}
    if not enabled(settings):
        return counts
    with session_scope(settings) as session:
        ids = session.scalars(
            select(LrRangeTest.id)
            .where(
                LrRangeTest.status.in_(FINISHED),
                or_(
                    LrRangeTest.mlflow_synced_status.is_(None),
                    LrRangeTest.mlflow_synced_status != LrRangeTest.status,
                ),
            )
            .order_by(LrRangeTest.created_at)
            .limit(limit)
        ).all()
        session.rollback()
    for test_id in ids:
        try:
            mirror_range_test(settings, test_id)
            counts["done"] += 1
        except MirrorBusy:
            counts["busy"] += 1
        except Exception:
            counts["failed"] += 1
            log.warning("mirror of range test %s failed", test_id, exc_info=True)
            break  # MLflow is likely down: the next pass tries again
    return counts
