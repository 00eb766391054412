"""The MLflow ids and UI links the API shows for a job or a sweep (read from the database only)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import object_session

from services.db import Job
from services.mirror.names import enabled, ui_links
from services.ranking import board_order

#: How many trials a sweep's compare link holds: the top of its leaderboard (a
#: link, and an answer of the API, that does not grow with the sweep).
COMPARE_TRIALS = 20

#: The links of a job or sweep that has no MLflow run yet (mirroring is on).
NOT_YET_MIRRORED = {
    "experiment_id": None,
    "run_id": None,
    "run_url": None,
    "experiment_url": None,
    "compare_url": None,
    "mirrored": False,
}


def links_for_job(settings: Any, job: Any) -> dict[str, Any] | None:
    """Return the job's MLflow ids and UI links; None when mirroring is off, and
    ``NOT_YET_MIRRORED`` while the job has no run yet.

    Reads only the database row: no call to MLflow.
    """
    if not enabled(settings):
        return None
    if not job.mlflow_run_id or not job.mlflow_experiment_id:
        return dict(NOT_YET_MIRRORED)
    ui = settings.mlflow_ui_url or settings.mlflow_tracking_uri
    links = ui_links(ui, job.mlflow_experiment_id, job.mlflow_run_id, [job.mlflow_run_id])
    links["mirrored"] = job.mlflow_synced_status == job.status
    return links


def links_for_sweep(settings: Any, sweep: Any) -> dict[str, Any] | None:
    """Return the sweep's MLflow ids and UI links (compare = its best trials, the top
    ``COMPARE_TRIALS`` of its leaderboard); None when mirroring is off,
    ``NOT_YET_MIRRORED`` while the sweep has no run yet.

    ``sweep`` must be attached to a session (the trials' run ids are read
    from the database, in leaderboard order).
    """
    if not enabled(settings):
        return None
    if not sweep.mlflow_experiment_id:
        return dict(NOT_YET_MIRRORED)

    session = object_session(sweep)
    trial_runs: list[str] = []
    if session is not None:
        trial_runs = list(
            session.scalars(
                select(Job.mlflow_run_id)
                .where(Job.sweep_id == sweep.id, Job.mlflow_run_id.is_not(None))
                .order_by(*board_order(sweep))
                .limit(COMPARE_TRIALS)
            )
        )
    ui = settings.mlflow_ui_url or settings.mlflow_tracking_uri
    links = ui_links(ui, sweep.mlflow_experiment_id, sweep.mlflow_run_id, trial_runs)
    # True once the parent run is closed, hence every trial mirrored and in compare_url.
    links["mirrored"] = sweep.mlflow_synced_status == sweep.status
    return links
