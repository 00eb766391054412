"""Pictures: a job's curves and per-layer figure, a sweep's learning-rate map and its
report page (the same drawings as the MLflow artifacts, see ``services.reports``)."""

from __future__ import annotations

from typing import Annotated, Any

from flask import Response
from flask_openapi3 import APIBlueprint, Tag
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import load_only

from api.auth import SECURITY
from api.context import db, principal, reply
from api.errors import APIError
from api.jobs import errors
from api.params import JobPath, QueryModel, SweepPath
from services.db.models import Job, Sweep
from services.reports.lr_map import LrMap, NoLearningRateError, build_lr_map
from services.reports.trials import job_history, job_plot_title, sweep_trials

bp = APIBlueprint("plots", __name__, abp_tags=[Tag(name="plots")], abp_security=SECURITY)

PNG = {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}
HTML = {"content": {"text/html": {"schema": {"type": "string"}}}}


class ReportQuery(QueryModel):
    top: Annotated[int, Field(ge=1, le=200, description="leaderboard rows shown")] = 20


def _job(job_id: str) -> tuple[Job, list[dict[str, Any]]]:
    """The job (if the user may see it) and its epochs; 409 while it has none."""
    stmt = select(Job).options(
        load_only(Job.owner_id, Job.spec, Job.params, Job.status, raiseload=True)
    )
    job = db().scalars(stmt.where(Job.id == job_id)).one_or_none()
    if job is None or not principal().sees(job):
        raise APIError(404, f"no job {job_id}")
    history = job_history(db(), job_id)
    if not history:
        raise APIError(409, f"job {job_id} has recorded no epoch yet", code="no_epochs")
    return job, history


def _sweep(sweep_id: str) -> Sweep:
    sweep = db().get(Sweep, sweep_id)
    if sweep is None or not principal().sees(sweep):
        raise APIError(404, f"no sweep {sweep_id}")
    return sweep


def _lr_map(sweep_id: str) -> LrMap:
    sweep = _sweep(sweep_id)
    try:
        return build_lr_map(sweep, sweep_trials(db(), sweep.id))
    except NoLearningRateError as err:
        raise APIError(409, str(err), code="no_learning_rate") from err


def _png(data: bytes) -> Response:
    return Response(data, mimetype="image/png", headers={"Cache-Control": "no-cache"})


@bp.get(
    "/jobs/<job_id>/plots/curves.png",
    operation_id="getJobCurvesPng",
    summary="A job's losses and accuracies by epoch (train and validation), as a PNG",
    responses={200: PNG, **errors(404, 409)},
)
def get_curves_png(path: JobPath):
    """Draw the job's losses and accuracies by epoch; 409 before its first epoch."""
    from services import plots  # late: heavy (matplotlib), loaded by the first picture

    job, history = _job(path.job_id)
    title = job_plot_title(job.spec, job.params, job.status)
    return _png(plots.learning_curve_png(history, title=title))


@bp.get(
    "/jobs/<job_id>/plots/layers.png",
    operation_id="getJobLayersPng",
    summary="A job's gradient norm, weight norm and dead ReLU fraction per layer, as a PNG",
    responses={200: PNG, **errors(404, 409)},
)
def get_layers_png(path: JobPath):
    """Draw each layer's gradient norm, weight norm and dead fraction by epoch."""
    from services import plots  # late: heavy (matplotlib), loaded by the first picture

    job, history = _job(path.job_id)
    title = job_plot_title(job.spec, job.params, job.status)
    return _png(plots.layers_png(history, title=title))


@bp.get(
    "/sweeps/<sweep_id>/lr-map.png",
    operation_id="getSweepLrMapPng",
    summary="A sweep's objective against the learning rate, as a PNG",
    responses={200: PNG, **errors(404, 409)},
)
def get_lr_map_png(path: SweepPath):
    """Draw each trial's objective against its learning rate; 409 if no rate is swept."""
    from services.reports.lr_figure import lr_map_png  # late: heavy (matplotlib)

    return _png(lr_map_png(_lr_map(path.sweep_id)))


@bp.get(
    "/sweeps/<sweep_id>/lr-map.json",
    operation_id="getSweepLrMap",
    summary="The data of a sweep's learning-rate map",
    responses={200: LrMap, **errors(404, 409)},
)
def get_lr_map_json(path: SweepPath):
    """Show the points, combinations and divergence ceilings the LR map draws."""
    return reply(_lr_map(path.sweep_id))


@bp.get(
    "/sweeps/<sweep_id>/report",
    operation_id="getSweepReport",
    summary="A sweep's report: one self-contained HTML page",
    responses={200: HTML, **errors(400, 404)},
)
def get_report(path: SweepPath, query: ReportQuery):
    """Show the leaderboard, LR map, best trial, findings and parameter importance."""
    from services.reports.page import sweep_report  # late: heavy (matplotlib, optuna)

    html = sweep_report(db(), _sweep(path.sweep_id), top=query.top)
    return Response(html, mimetype="text/html")
