"""/api/v1/jobs: submit, read, list, learning curves, cancel."""

from __future__ import annotations

import csv
import io
from typing import Any

from flask import Blueprint, Response, request, url_for

from api import db, json_body, mlflow_links, page_args, services
from api.errors import APIError, queue_unavailable
from services import jobs as job_service
from services.db.models import JOB_STATUSES, Job
from services.specs import validate_job
from services.sweeps import advance_and_enqueue

bp = Blueprint("jobs", __name__)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _seconds(start: Any, end: Any) -> float | None:
    return (end - start).total_seconds() if start is not None and end is not None else None


def job_public(job: Job) -> dict[str, Any]:
    """The job as the API shows it (see ``services.specs.JobPublic``)."""
    links = {
        "self": url_for("jobs.get_job", job_id=job.id),
        "metrics": url_for("jobs.get_metrics", job_id=job.id),
        "cancel": url_for("jobs.cancel_job", job_id=job.id),
    }
    if job.sweep_id:
        links["sweep"] = url_for("sweeps.get_sweep", sweep_id=job.sweep_id)
    total = job.epochs_total
    return {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "sweep_id": job.sweep_id,
        "trial_index": job.trial_index,
        "params": job.params,
        "spec": job.spec,
        "progress": {
            "epoch": job.epochs_done,
            "epochs": total,
            "fraction": round(job.epochs_done / total, 4) if total else None,
        },
        "latest_metrics": job.latest_metrics,
        "best_metrics": job.best_metrics,
        "best_epoch": job.best_epoch,
        "objective": job.objective,
        "result": job.result,
        "diagnosis": job.diagnosis,
        "error": job.error,
        "prune_reason": job.prune_reason,
        "cancel_requested": job.cancel_requested,
        "timings": {
            "created_at": _iso(job.created_at),
            "started_at": _iso(job.started_at),
            "finished_at": _iso(job.finished_at),
            "queued_seconds": _seconds(job.created_at, job.started_at),
            "run_seconds": _seconds(job.started_at, job.finished_at),
            "train_seconds": job.train_seconds,
        },
        "attempts": job.attempts,
        "worker": job.worker,
        "links": links,
        "mlflow": mlflow_links("job", job),
    }


def _job_or_404(job_id: str) -> Job:
    job = job_service.get_job(db(), job_id)
    if job is None:
        raise APIError(404, f"no job {job_id}")
    return job


def status_filter() -> list[str] | None:
    raw = request.args.get("status")
    if not raw:
        return None
    statuses = [s.strip() for s in raw.split(",") if s.strip()]
    unknown = sorted(set(statuses) - set(JOB_STATUSES))
    if unknown:
        message = f"unknown status {', '.join(unknown)}; known: {', '.join(JOB_STATUSES)}"
        raise APIError(400, message, details=[{"loc": "status", "msg": "unknown status"}])
    return statuses


@bp.post("/jobs")
def create_job():
    """Validate a job spec, store the job and queue it."""
    spec = validate_job(json_body(), services().settings.limits)
    session = db()
    job = job_service.create_job(session, spec=spec)
    session.commit()
    try:
        services().dispatcher.enqueue_jobs([job.id])
    except Exception as err:  # the broker is down: do not leave a job nobody will run
        job_service.fail_unqueued(session, [job.id], err)
        session.commit()
        raise queue_unavailable(err) from err
    return job_public(job), 201, {"Location": url_for("jobs.get_job", job_id=job.id)}


@bp.get("/jobs")
def list_jobs():
    """List jobs, newest first, filtered by ``status`` and ``sweep``."""
    cursor, limit = page_args()
    try:
        rows, next_cursor = job_service.list_jobs(
            db(), statuses=status_filter(), sweep_id=request.args.get("sweep"),
            cursor=cursor, limit=limit,
        )  # fmt: skip
    except job_service.BadCursorError as err:
        raise APIError(400, str(err), details=[{"loc": "cursor", "msg": str(err)}]) from err
    return {"items": [job_public(j) for j in rows], "next_cursor": next_cursor}


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):
    """Show one job."""
    return job_public(_job_or_404(job_id))


@bp.get("/jobs/<job_id>/metrics")
def get_metrics(job_id: str):
    """Show the learning curve, one row per epoch (JSON, or CSV with ?format=csv)."""
    _job_or_404(job_id)
    rows = job_service.job_metrics(db(), job_id)
    fmt = request.args.get("format", "json")
    if fmt == "csv":
        columns = sorted({k for r in rows for k in r.metrics} - {"epoch"})
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["epoch", *columns])
        for r in rows:
            writer.writerow([r.epoch, *("" if r.metrics.get(c) is None else r.metrics[c]
                                        for c in columns)])  # fmt: skip
        return Response(out.getvalue(), mimetype="text/csv")
    if fmt != "json":
        raise APIError(
            400, "format is json or csv", details=[{"loc": "format", "msg": "json or csv"}]
        )
    return {"job_id": job_id, "epochs": [{"epoch": r.epoch, "metrics": r.metrics} for r in rows]}


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str):
    """Cancel a queued job, or ask a running one to stop at its next epoch."""
    session = db()
    try:
        job = job_service.request_cancel(session, job_id)
    except LookupError as err:
        raise APIError(404, f"no job {job_id}") from err
    except job_service.JobFinishedError as err:
        raise APIError(409, f"job {job_id} already finished ({err})") from err
    session.commit()
    svc = services()
    if job.status == "running":
        try:
            svc.dispatcher.request_cancel([job.id])
        except Exception:  # the database flag still reaches the worker at its next flush
            svc.dispatcher.close()
    elif job.sweep_id:  # a queued trial ended: the sweep may start the next one
        advance_and_enqueue(settings=svc.settings, session_factory=svc.sessions,
                            dispatcher=svc.dispatcher, sweep_id=job.sweep_id)  # fmt: skip
    return job_public(job), 202
