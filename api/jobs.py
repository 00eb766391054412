"""/api/v1/jobs: submit, read, list, learning curves, cancel."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

from flask import Response, request, url_for
from flask_openapi3 import APIBlueprint, Tag
from flask_openapi3.types import ResponseDict
from pydantic import Field

from api.auth import SECURITY
from api.context import (
    db,
    json_body,
    link,
    mlflow_links,
    no_content,
    principal,
    reply,
    services,
)
from api.errors import APIError
from api.params import JobListQuery, JobPath, MetricsQuery, QueryModel
from services import idempotency, submit
from services.db.models import Job
from services.db.pages import BadCursorError
from services.jobs import deletion
from services.jobs import rows as job_rows
from services.jobs.rows import JobFinishedError, job_metrics
from services.specs import (
    ErrorResponse,
    JobCreate,
    JobLinks,
    JobPage,
    JobPublic,
    JobSummary,
    JobTimings,
    MetricRow,
    MetricsPublic,
    Progress,
)

bp = APIBlueprint("jobs", __name__, abp_tags=[Tag(name="jobs")], abp_security=SECURITY)


def errors(*codes: int) -> ResponseDict:
    """The error answers a route can give (all in the ErrorResponse format); every
    route behind a token may also answer 401, and 503 (with Retry-After) while the
    database or the broker is unreachable."""
    return dict.fromkeys(sorted({401, *codes, 503}), ErrorResponse)


def iso_time(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _seconds(start: Any, end: Any) -> float | None:
    return (end - start).total_seconds() if start is not None and end is not None else None


def job_public(job: Job) -> JobPublic:
    """The job as the API shows it."""
    return JobPublic(
        **_summary_fields(job),
        spec=job.spec,
        latest_metrics=job.latest_metrics,
        best_metrics=job.best_metrics,
        result=job.result,
        diagnosis=job.diagnosis,
        reused_from=job.reused_from,
    )


def job_summary(job: Job) -> JobSummary:
    """The job as a list shows it (from ``services.jobs.rows.SUMMARY_COLUMNS`` only)."""
    return JobSummary(**_summary_fields(job))


def _summary_fields(job: Job) -> dict[str, Any]:
    total = job.epochs_total
    return dict(
        id=job.id,
        name=job.name,
        status=job.status,
        sweep_id=job.sweep_id,
        trial_index=job.trial_index,
        params=job.params,
        progress=Progress(
            epoch=job.epochs_done,
            epochs=total,
            fraction=round(job.epochs_done / total, 4) if total else None,
        ),
        best_epoch=job.best_epoch,
        objective=job.objective,
        error=job.error,
        prune_reason=job.prune_reason,
        cancel_requested=job.cancel_requested,
        timings=JobTimings(
            created_at=iso_time(job.created_at),
            started_at=iso_time(job.started_at),
            finished_at=iso_time(job.finished_at),
            queued_seconds=_seconds(job.created_at, job.started_at),
            run_seconds=_seconds(job.started_at, job.finished_at),
            train_seconds=job.train_seconds,
        ),
        attempts=job.attempts,
        worker=job.worker,
        links=JobLinks(
            self=link("jobs.get_job", job_id=job.id),
            metrics=link("jobs.get_metrics", job_id=job.id),
            cancel=link("jobs.cancel_job", job_id=job.id),
            sweep=link("sweeps.get_sweep", sweep_id=job.sweep_id) if job.sweep_id else None,
        ),
        mlflow=mlflow_links("job", job),
    )


def job_page(rows: list[Job], next_cursor: str | None) -> JobPage:
    return JobPage(items=[job_summary(j) for j in rows], next_cursor=next_cursor)


def _job_or_404(job_id: str, *columns: Any) -> Job:
    """The job, if the request's user may see it (theirs, or any for an admin): another
    user's job answers exactly as a job that does not exist. With ``columns``, only
    those are read (the owner is always)."""
    job = job_rows.get_job(db(), job_id, *((Job.owner_id, *columns) if columns else ()))
    if job is None or not principal().sees(job):
        raise APIError(404, f"no job {job_id}")
    return job


#: the request header that makes a POST idempotent (the IETF draft's, Stripe's)
IDEMPOTENCY_HEADER = "Idempotency-Key"


class IdempotencyHeader(QueryModel):  # QueryModel: its schema is built once, not per request
    """The headers a POST that creates a resource reads (documented in OpenAPI)."""

    idempotency_key: str | None = Field(
        None,
        alias="Idempotency-Key",
        description="up to 255 printable ASCII characters (a UUID, say): the same key with "
        "the same body answers the resource it created (201, Idempotent-Replayed: true), with "
        "another body a 422 idempotency_key_reused; keys last SWEEPLAB_IDEMPOTENCY_SECONDS",
    )


def idempotency_claim(scope: str, body: Any = None) -> idempotency.Claim | None:
    """The request's Idempotency-Key for a resource of ``scope`` (400 if malformed), with
    ``body`` as what the request asks (by default its JSON body)."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    problem = idempotency.key_problem(key)
    if problem:
        raise APIError(400, problem, details=[{"loc": IDEMPOTENCY_HEADER, "msg": problem}])
    return idempotency.make_claim(
        key,
        owner_id=principal().user_id,
        scope=scope,
        body=json_body() if body is None else body,
        ttl_seconds=services().settings.idempotency_seconds,
    )


def named_by(claim: idempotency.Claim | None) -> str | None:
    """The id of the resource the request's key already names (a 422 with the code
    ``idempotency_key_reused`` if it came with another body)."""
    if claim is None:
        return None
    try:
        return idempotency.lookup(db(), claim)
    except idempotency.KeyReused as err:
        raise APIError(
            422,
            str(err),
            code="idempotency_key_reused",
            details=[{"loc": IDEMPOTENCY_HEADER, "msg": str(err)}],
        ) from err


def replayed(location: str) -> dict[str, str]:
    """The headers of an answer to a request whose key named an existing resource."""
    return {"Location": location, "Idempotent-Replayed": "true"}


def replay_named(claim: idempotency.Claim | None, fetch: Callable[[str], Any]) -> Any:
    """The resource a repeated request's key names (``fetch(id)``), as it is now; None
    if the key names none, or its resource was deleted (the key is then forgotten)."""
    resource_id = named_by(claim)
    if resource_id is None or claim is None:
        return None
    found = fetch(resource_id)
    if found is None:
        idempotency.forget(db(), claim)
    return found


def _replay_job(claim: idempotency.Claim | None) -> Any:
    """The answer to a repeated request: its job as it is now, 201 (None: no replay)."""
    job = replay_named(claim, lambda job_id: job_rows.get_job(db(), job_id))
    if job is None:
        return None
    return reply(job_public(job), 201, replayed(url_for("jobs.get_job", job_id=job.id)))


def bad_cursor(err: Exception) -> APIError:
    return APIError(400, str(err), details=[{"loc": "cursor", "msg": str(err)}])


@bp.post(
    "/jobs",
    operation_id="createJob",
    summary="Submit a job",
    responses={201: JobPublic, **errors(400, 413, 415, 422, 429, 503)},
)
def create_job(body: JobCreate, header: IdempotencyHeader):
    """Validate a job spec, store the job (yours) and queue it; 429 with Retry-After when
    your queued and running jobs are at the budget (SWEEPLAB_MAX_ACTIVE_JOBS).

    An identical job of yours that succeeded (same spec and seed, trainer and numpy) is
    reused unless the spec says ``"reuse": false``: the job is answered finished, a copy
    of it (``reused_from``). With an ``Idempotency-Key`` header, the same key and body
    again answer the same job (201, ``Idempotent-Replayed: true``); another body, 422
    ``idempotency_key_reused``. Keys last SWEEPLAB_IDEMPOTENCY_SECONDS (24 h)."""
    svc = services()
    claim = idempotency_claim("jobs")
    if (answer := _replay_job(claim)) is not None:
        return answer
    spec = submit.prepare_job(db(), body, principal=principal(), limits=svc.settings.limits)
    try:
        job = submit.submit_job(
            db(),
            svc.dispatcher,
            spec=spec,
            principal=principal(),
            settings=svc.settings,
            claim=claim,
        )
    except idempotency.KeyTaken:  # a racing request with the key committed first
        if (answer := _replay_job(claim)) is not None:
            return answer
        raise
    return reply(job_public(job), 201, {"Location": url_for("jobs.get_job", job_id=job.id)})


@bp.get(
    "/jobs",
    operation_id="listJobs",
    summary="List jobs (newest first)",
    responses={200: JobPage, **errors(400)},
)
def list_jobs(query: JobListQuery):
    """List jobs, newest first, filtered by ``status`` and ``sweep``."""
    try:
        rows, next_cursor = job_rows.list_jobs(
            db(),
            statuses=query.statuses(),
            sweep_id=query.sweep or None,
            owner_id=principal().owner_filter,
            cursor=query.cursor,
            limit=query.limit,
        )
    except BadCursorError as err:
        raise bad_cursor(err) from err
    return reply(job_page(rows, next_cursor))


@bp.get(
    "/jobs/<job_id>",
    operation_id="getJob",
    summary="Show a job",
    responses={200: JobPublic, **errors(404)},
)
def get_job(path: JobPath):
    """Show one job."""
    return reply(job_public(_job_or_404(path.job_id)))


@bp.get(
    "/jobs/<job_id>/metrics",
    operation_id="getJobMetrics",
    summary="Learning curve, one row per epoch (JSON, or CSV with ?format=csv)",
    responses={200: MetricsPublic, **errors(400, 404)},
)
def get_metrics(path: JobPath, query: MetricsQuery):
    """Show the learning curve, one row per epoch (JSON, or CSV with ?format=csv)."""
    _job_or_404(path.job_id, Job.id)
    rows = job_metrics(db(), path.job_id)
    if query.format == "csv":
        columns = sorted({k for r in rows for k in r.metrics} - {"epoch"})
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["epoch", *columns])
        for r in rows:
            writer.writerow(
                [r.epoch, *("" if r.metrics.get(c) is None else r.metrics[c] for c in columns)]
            )
        return Response(out.getvalue(), mimetype="text/csv")
    epochs = [MetricRow(epoch=r.epoch, metrics=r.metrics) for r in rows]
    return reply(MetricsPublic(job_id=path.job_id, epochs=epochs))


@bp.post(
    "/jobs/<job_id>/cancel",
    operation_id="cancelJob",
    summary="Cancel a job",
    responses={202: JobPublic, **errors(404, 409)},
)
def cancel_job(path: JobPath):
    """Cancel a queued job, or ask a running one to stop at its next epoch."""
    svc = services()
    _job_or_404(path.job_id)
    try:
        job = submit.cancel_job(
            db(),
            job_id=path.job_id,
            settings=svc.settings,
            session_factory=svc.sessions,
            dispatcher=svc.dispatcher,
        )
    except LookupError as err:
        raise APIError(404, f"no job {path.job_id}") from err
    except JobFinishedError as err:
        raise APIError(409, f"job {path.job_id} already finished ({err})") from err
    return reply(job_public(job), 202)


@bp.delete(
    "/jobs/<job_id>",
    operation_id="deleteJob",
    summary="Delete a job (cancelling it first if it is queued or running)",
    responses={204: None, **errors(404, 409)},
)
def delete_job(path: JobPath):
    """Delete a job with its learning curve, checkpoint and weights, and mark its MLflow
    run deleted (later, if MLflow is down: nothing is lost). A queued or running job is
    cancelled first; its worker stops at its next epoch. A sweep's trial is deleted with
    its sweep only: 409 (delete the sweep). Another user's job is a 404."""
    svc = services()
    _job_or_404(path.job_id, Job.id)
    try:
        deletion.delete_job(db(), svc.dispatcher, svc.settings, path.job_id)
    except LookupError as err:
        raise APIError(404, f"no job {path.job_id}") from err
    except deletion.TrialOfSweepError as err:
        raise APIError(
            409, f"job {path.job_id} is a trial of sweep {err}: delete the sweep instead"
        ) from err
    return no_content()
