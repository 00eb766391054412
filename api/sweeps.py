"""/api/v1/sweeps: submit, read (counts, best trial, leaderboard), list trials, cancel."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request, url_for

from api import db, json_body, mlflow_links, page_args, services
from api.errors import APIError, queue_unavailable
from api.jobs import _iso, job_public, status_filter
from services import jobs as job_service
from services import sweeps as sweep_service
from services.db.models import SWEEP_STATUSES, Job, Sweep
from services.specs import validate_sweep

bp = Blueprint("sweeps", __name__)


def _row(rank: int, job: Job) -> dict[str, Any]:
    return {
        # Trials without an objective value (yet) are listed unranked, last.
        "rank": rank if job.objective is not None else None,
        "job_id": job.id,
        "trial_index": job.trial_index,
        "status": job.status,
        "objective": job.objective,
        "params": job.params,
        "best_epoch": job.best_epoch,
        "epochs_done": job.epochs_done,
        "prune_reason": job.prune_reason,
    }


def sweep_public(sweep: Sweep, *, full: bool = True) -> dict[str, Any]:
    """The sweep as the API shows it (see ``services.specs.SweepPublic``)."""
    session = db()
    trials = sweep_service.sweep_trials(session, sweep.id)
    board = sweep_service.leaderboard(sweep, trials)
    best = sweep_service.best_trial(sweep, board)
    return {
        "id": sweep.id,
        "name": sweep.name,
        "experiment": sweep.experiment,
        "status": sweep.status,
        "method": sweep.method,
        "objective": {"metric": sweep.objective_metric, "goal": sweep.objective_goal},
        "max_concurrency": sweep.max_concurrency,
        "n_trials": sweep.n_trials,
        "n_created": sweep.n_created,
        "counts": sweep_service.status_counts(session, sweep.id),
        "best_trial": _row(board.index(best) + 1, best) if best is not None else None,
        "leaderboard": [_row(i + 1, t) for i, t in enumerate(board)] if full else [],
        "spec": sweep.spec,
        "timings": {
            "created_at": _iso(sweep.created_at),
            "finished_at": _iso(sweep.finished_at),
        },
        "links": {
            "self": url_for("sweeps.get_sweep", sweep_id=sweep.id),
            "trials": url_for("sweeps.list_trials", sweep_id=sweep.id),
            "cancel": url_for("sweeps.cancel_sweep", sweep_id=sweep.id),
        },
        "mlflow": mlflow_links("sweep", sweep),
    }


def _sweep_or_404(sweep_id: str) -> Sweep:
    sweep = db().get(Sweep, sweep_id)
    if sweep is None:
        raise APIError(404, f"no sweep {sweep_id}")
    return sweep


@bp.post("/sweeps")
def create_sweep():
    """Validate a sweep spec, store it and queue its first trials."""
    svc = services()
    spec = validate_sweep(json_body(), svc.settings.limits)
    session = db()
    sweep, job_ids = sweep_service.create_sweep(session, sweep=spec, limits=svc.settings.limits)
    session.commit()
    try:
        svc.dispatcher.enqueue_jobs(job_ids)
    except Exception as err:  # the broker is down: stop the sweep rather than strand it
        sweep_service.cancel_sweep(session, sweep.id)
        job_service.fail_unqueued(session, job_ids, err)
        session.commit()
        raise queue_unavailable(err) from err
    return sweep_public(sweep), 201, {"Location": url_for("sweeps.get_sweep", sweep_id=sweep.id)}


@bp.get("/sweeps")
def list_sweeps():
    """List sweeps, newest first (``status`` filter); leaderboards are left out."""
    cursor, limit = page_args()
    raw = request.args.get("status")
    statuses = [s for s in (raw or "").split(",") if s] or None
    if statuses and set(statuses) - set(SWEEP_STATUSES):
        raise APIError(400, f"unknown status; known: {', '.join(SWEEP_STATUSES)}",
                       details=[{"loc": "status", "msg": "unknown status"}])  # fmt: skip
    try:
        rows, next_cursor = sweep_service.list_sweeps(
            db(), statuses=statuses, cursor=cursor, limit=limit
        )
    except job_service.BadCursorError as err:
        raise APIError(400, str(err), details=[{"loc": "cursor", "msg": str(err)}]) from err
    return {"items": [sweep_public(s, full=False) for s in rows], "next_cursor": next_cursor}


@bp.get("/sweeps/<sweep_id>")
def get_sweep(sweep_id: str):
    """Show a sweep: status, counts, best trial and the leaderboard."""
    return sweep_public(_sweep_or_404(sweep_id))


@bp.get("/sweeps/<sweep_id>/trials")
def list_trials(sweep_id: str):
    """List a sweep's trials (jobs), newest first."""
    _sweep_or_404(sweep_id)
    cursor, limit = page_args()
    try:
        rows, next_cursor = job_service.list_jobs(
            db(), statuses=status_filter(), sweep_id=sweep_id, cursor=cursor, limit=limit
        )
    except job_service.BadCursorError as err:
        raise APIError(400, str(err), details=[{"loc": "cursor", "msg": str(err)}]) from err
    return {"items": [job_public(j) for j in rows], "next_cursor": next_cursor}


@bp.post("/sweeps/<sweep_id>/cancel")
def cancel_sweep(sweep_id: str):
    """Cancel a sweep: queued trials never start, running ones stop within an epoch."""
    session = db()
    try:
        sweep, running = sweep_service.cancel_sweep(session, sweep_id)
    except LookupError as err:
        raise APIError(404, f"no sweep {sweep_id}") from err
    except sweep_service.SweepFinishedError as err:
        raise APIError(409, f"sweep {sweep_id} already finished ({err})") from err
    session.commit()
    try:
        services().dispatcher.request_cancel(running)
    except Exception:  # the database flag still reaches the workers at their next flush
        services().dispatcher.close()
    return sweep_public(sweep), 202
