"""/api/v1/sweeps: submit, read (counts, best trial, top of the leaderboard), list
trials, page through the leaderboard, cancel.

A sweep reads in a number of queries and bytes that does not grow with its trials:
its counts, its best trial and the top of its leaderboard; the trials and the
whole leaderboard come a page at a time."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask_openapi3 import APIBlueprint, Tag
from sqlalchemy import select
from sqlalchemy.orm import defer

from api.auth import SECURITY
from api.context import db, link, mlflow_links, no_content, principal, reply, services
from api.errors import APIError
from api.jobs import (
    IdempotencyHeader,
    bad_cursor,
    errors,
    idempotency_claim,
    iso_time,
    job_page,
    replay_named,
    replayed,
)
from api.params import LeaderboardQuery, SweepListQuery, SweepPath, TrialListQuery
from services import idempotency, submit
from services.db.models import Job, Sweep
from services.db.pages import BadCursorError
from services.jobs import deletion
from services.jobs.rows import list_jobs
from services.lr_range import range_test_result
from services.ranking import BoardPage, best_trial_in, leaderboard_page
from services.specs import (
    LEADERBOARD_TOP,
    DivergenceCeiling,
    JobPage,
    LeaderboardPage,
    LeaderboardRow,
    SweepCreate,
    SweepLinks,
    SweepObjective,
    SweepPage,
    SweepPublic,
    SweepRangeTest,
    SweepSummary,
    SweepTimings,
    check_sweep,
)
from services.specs.sweep import SweepExtend
from services.sweeps import scheduler
from services.sweeps.ceiling import ceilings
from services.sweeps.lifecycle import SweepStateError
from services.sweeps.range_bounds import tested_parameter
from services.sweeps.scheduler import SweepFinishedError, trial_totals, trial_totals_of

bp = APIBlueprint("sweeps", __name__, abp_tags=[Tag(name="sweeps")], abp_security=SECURITY)


def _row(rank: int, job: Job) -> LeaderboardRow:
    return LeaderboardRow(
        # Trials without an objective value (yet) are listed unranked, last.
        rank=rank if job.objective is not None else None,
        job_id=job.id,
        trial_index=job.trial_index,
        status=job.status,  # type: ignore[arg-type]
        objective=job.objective,
        params=job.params,
        best_epoch=job.best_epoch,
        epochs_done=job.epochs_done,
        prune_reason=job.prune_reason,
    )


def _rows(page: BoardPage) -> list[LeaderboardRow]:
    return [_row(page.first_rank + i, t) for i, t in enumerate(page.trials)]


def sweep_public(sweep: Sweep) -> SweepPublic:
    """The sweep as the API shows it: the top of its leaderboard, never every trial."""
    top = leaderboard_page(db(), sweep, limit=LEADERBOARD_TOP)
    return SweepPublic(
        **_summary_fields(sweep, top),
        leaderboard=_rows(top),
        divergence_ceiling=[DivergenceCeiling(**c.public()) for c in ceilings(db(), sweep)],
        range_test=_range_test(sweep),
        spec=sweep.spec,
    )


def _range_test(sweep: Sweep) -> SweepRangeTest | None:
    """The range test the sweep's learning rate takes its bounds from, if any."""
    tested = tested_parameter(sweep.spec)
    if tested is None or sweep.range_test_id is None:
        return None
    outcome = range_test_result(db(), sweep.range_test_id)
    fixed = sweep.range_bounds or {}
    return SweepRangeTest(
        id=sweep.range_test_id,
        status=outcome.status if outcome is not None else "deleted",
        parameter=tested[0],
        min=fixed.get("min"),
        max=fixed.get("max"),
        suggested_lr=outcome.suggested_lr if outcome is not None else None,
        divergence_lr=outcome.divergence_lr if outcome is not None else None,
        link=link("lr_range_tests.get_range_test", test_id=sweep.range_test_id),
    )


def sweep_summary(sweep: Sweep, totals: tuple[dict[str, int], int] | None = None) -> SweepSummary:
    """The sweep as a list shows it (no spec, no leaderboard); ``totals``: its
    :func:`trial_totals` when the caller read them (a list reads them in one query)."""
    top = leaderboard_page(db(), sweep, limit=1)
    return SweepSummary(**_summary_fields(sweep, top, totals))


def _summary_fields(
    sweep: Sweep, top: BoardPage, totals: tuple[dict[str, int], int] | None = None
) -> dict[str, Any]:
    session = db()
    counts, epochs_done = totals if totals is not None else trial_totals(session, sweep.id)
    best = best_trial_in(session, sweep, top)
    return dict(
        id=sweep.id,
        name=sweep.name,
        experiment=sweep.experiment,
        status=sweep.status,  # type: ignore[arg-type]  # a str column holding a sweep status
        method=sweep.method,
        objective=SweepObjective(metric=sweep.objective_metric, goal=sweep.objective_goal),
        max_concurrency=sweep.max_concurrency,
        n_trials=sweep.n_trials,
        n_created=sweep.n_created,
        counts=counts,
        epochs_done=epochs_done,
        best_trial=_row(best[1], best[0]) if best is not None else None,
        timings=SweepTimings(
            created_at=iso_time(sweep.created_at), finished_at=iso_time(sweep.finished_at)
        ),
        links=SweepLinks(
            self=link("sweeps.get_sweep", sweep_id=sweep.id),
            trials=link("sweeps.list_trials", sweep_id=sweep.id),
            leaderboard=link("sweeps.get_leaderboard", sweep_id=sweep.id),
            cancel=link("sweeps.cancel_sweep", sweep_id=sweep.id),
        ),
        mlflow=mlflow_links("sweep", sweep),
    )


def _sweep_or_404(sweep_id: str, *, spec: bool = True) -> Sweep:
    """The sweep, if the request's user may see it (theirs, or any for an admin);
    without its spec unless ``spec``."""
    stmt = select(Sweep).where(Sweep.id == sweep_id)
    if not spec:
        stmt = stmt.options(defer(Sweep.spec, raiseload=True))
    sweep = db().scalars(stmt).one_or_none()
    if sweep is None or not principal().sees(sweep):
        raise APIError(404, f"no sweep {sweep_id}")
    return sweep


@bp.post(
    "/sweeps",
    operation_id="createSweep",
    summary="Submit a sweep",
    responses={201: SweepPublic, **errors(400, 413, 415, 422, 429, 503)},
)
def create_sweep(body: SweepCreate, header: IdempotencyHeader):
    """Validate a sweep spec, store it (yours) and queue its first trials; 429 with
    Retry-After when they would take you over your budget of active jobs.

    A trial identical to a succeeded job of yours is reused (see POST /jobs); a tpe
    sweep's ``warm_start`` (an earlier sweep of yours with the same objective and
    parameter paths) seeds its model with that sweep's finished trials. An
    ``Idempotency-Key`` works as for POST /jobs."""
    svc = services()
    limits = svc.settings.limits
    claim = idempotency_claim("sweeps")
    if (answer := _replay_sweep(claim)) is not None:
        return answer
    body = submit.prepare_sweep(db(), body, principal=principal(), limits=limits)
    sweep = check_sweep(body, limits)
    try:
        row = submit.submit_sweep(
            db(),
            svc.dispatcher,
            sweep=sweep,
            settings=svc.settings,
            principal=principal(),
            claim=claim,
        )
    except idempotency.KeyTaken:  # a racing request with the key committed first
        if (answer := _replay_sweep(claim)) is not None:
            return answer
        raise
    return reply(sweep_public(row), 201, {"Location": url_for("sweeps.get_sweep", sweep_id=row.id)})


def _replay_sweep(claim: idempotency.Claim | None) -> Any:
    """The answer to a repeated request: its sweep as it is now, 201 (None: no replay)."""
    sweep = replay_named(claim, lambda sweep_id: db().get(Sweep, sweep_id))
    if sweep is None:
        return None
    return reply(sweep_public(sweep), 201, replayed(url_for("sweeps.get_sweep", sweep_id=sweep.id)))


@bp.post(
    "/sweeps/<sweep_id>/resume",
    operation_id="resumeSweep",
    summary="Resume a cancelled or stopped sweep",
    responses={202: SweepPublic, **errors(404, 409, 429)},
)
def resume_sweep(path: SweepPath, header: IdempotencyHeader):
    """Continue a cancelled sweep, or one that ended with trials failed or never
    created: the missing trials are created, and each cancelled or failed trial runs
    again with its parameters (a new trial at the end). 409 ``sweep_running`` while
    it runs, ``sweep_stopping`` while cancelled trials are still stopping,
    ``sweep_complete`` when nothing is missing, ``dataset_deleted`` when the uploaded
    dataset it trains on was deleted."""
    return _restart(path.sweep_id, None)


@bp.post(
    "/sweeps/<sweep_id>/extend",
    operation_id="extendSweep",
    summary="Add trials to a sweep",
    responses={202: SweepPublic, **errors(404, 409, 422, 429)},
)
def extend_sweep(path: SweepPath, body: SweepExtend, header: IdempotencyHeader):
    """Add ``n_trials`` trials (the sampler continues from what it has seen), starting
    the sweep again if it had ended. A grid runs each point once: 409
    ``grid_exhausted`` when it has fewer unused points; 409 ``dataset_deleted`` when
    the uploaded dataset it trains on was deleted; 422 ``too_many_trials`` past
    SWEEPLAB_MAX_TRIALS."""
    return _restart(path.sweep_id, body.n_trials)


def _restart(sweep_id: str, n_trials: int | None) -> Any:
    """Resume (``n_trials`` None) or extend the sweep. With an Idempotency-Key, the same
    key for the same sweep and count answers the sweep again (202) without doing it twice
    (a client's retry of an extend must not add its trials twice)."""
    svc = services()
    _sweep_or_404(sweep_id, spec=False)
    scope = "resume" if n_trials is None else "extend"
    claim = idempotency_claim(scope, {"sweep": sweep_id, "n_trials": n_trials})
    if (answer := _replay_restart(claim)) is not None:
        return answer
    try:
        sweep = submit.restart_sweep(
            db(),
            svc.dispatcher,
            sweep_id=sweep_id,
            settings=svc.settings,
            principal=principal(),
            n_trials=n_trials,
            claim=claim,
        )
    except idempotency.KeyTaken:  # a racing request with the key did it first
        if (answer := _replay_restart(claim)) is not None:
            return answer
        raise
    except LookupError as err:
        raise APIError(404, f"no sweep {sweep_id}") from err
    except SweepStateError as err:
        loc = "n_trials" if n_trials is not None else "sweep"
        raise APIError(
            err.status, err.message, code=err.code, details=[{"loc": loc, "msg": err.message}]
        ) from err
    return reply(sweep_public(sweep), 202)


def _replay_restart(claim: idempotency.Claim | None) -> Any:
    sweep = replay_named(claim, lambda sweep_id: db().get(Sweep, sweep_id))
    if sweep is None:
        return None
    return reply(sweep_public(sweep), 202, {"Idempotent-Replayed": "true"})


@bp.get(
    "/sweeps",
    operation_id="listSweeps",
    summary="List sweeps (newest first)",
    responses={200: SweepPage, **errors(400)},
)
def list_sweeps(query: SweepListQuery):
    """List sweeps, newest first (``status`` filter): summaries, without specs or
    leaderboards."""
    try:
        rows, next_cursor = scheduler.list_sweeps(
            db(),
            statuses=query.statuses(),
            owner_id=principal().owner_filter,
            cursor=query.cursor,
            limit=query.limit,
        )
    except BadCursorError as err:
        raise bad_cursor(err) from err
    totals = trial_totals_of(db(), [s.id for s in rows])
    items = [sweep_summary(s, totals[s.id]) for s in rows]
    return reply(SweepPage(items=items, next_cursor=next_cursor))


@bp.get(
    "/sweeps/<sweep_id>",
    operation_id="getSweep",
    summary="Show a sweep with the top of its leaderboard",
    responses={200: SweepPublic, **errors(404)},
)
def get_sweep(path: SweepPath):
    """Show a sweep: status, counts, best trial and the top of the leaderboard (its
    size does not grow with the trials; ``links`` page through them)."""
    return reply(sweep_public(_sweep_or_404(path.sweep_id)))


@bp.get(
    "/sweeps/<sweep_id>/leaderboard",
    operation_id="getLeaderboard",
    summary="A sweep's leaderboard, a page at a time",
    responses={200: LeaderboardPage, **errors(400, 404)},
)
def get_leaderboard(path: SweepPath, query: LeaderboardQuery):
    """List a sweep's trials best first (trials without an objective last, unranked)."""
    sweep = _sweep_or_404(path.sweep_id, spec=False)
    try:
        page = leaderboard_page(db(), sweep, cursor=query.cursor, limit=query.limit)
    except BadCursorError as err:
        raise bad_cursor(err) from err
    return reply(
        LeaderboardPage(sweep_id=sweep.id, items=_rows(page), next_cursor=page.next_cursor)
    )


@bp.get(
    "/sweeps/<sweep_id>/trials",
    operation_id="listTrials",
    summary="List a sweep's trials",
    responses={200: JobPage, **errors(400, 404)},
)
def list_trials(path: SweepPath, query: TrialListQuery):
    """List a sweep's trials (jobs), newest first."""
    _sweep_or_404(path.sweep_id, spec=False)
    try:
        rows, next_cursor = list_jobs(
            db(),
            statuses=query.statuses(),
            sweep_id=path.sweep_id,
            owner_id=principal().owner_filter,
            cursor=query.cursor,
            limit=query.limit,
        )
    except BadCursorError as err:
        raise bad_cursor(err) from err
    return reply(job_page(rows, next_cursor))


@bp.post(
    "/sweeps/<sweep_id>/cancel",
    operation_id="cancelSweep",
    summary="Cancel a sweep",
    responses={202: SweepPublic, **errors(404, 409)},
)
def cancel_sweep(path: SweepPath):
    """Cancel a sweep: queued trials never start, running ones stop within an epoch."""
    _sweep_or_404(path.sweep_id)
    try:
        sweep = submit.cancel_sweep(db(), sweep_id=path.sweep_id, dispatcher=services().dispatcher)
    except LookupError as err:
        raise APIError(404, f"no sweep {path.sweep_id}") from err
    except SweepFinishedError as err:
        raise APIError(409, f"sweep {path.sweep_id} already finished ({err})") from err
    return reply(sweep_public(sweep), 202)


@bp.delete(
    "/sweeps/<sweep_id>",
    operation_id="deleteSweep",
    summary="Delete a sweep with all its trials (cancelling it first if it runs)",
    responses={204: None, **errors(404)},
)
def delete_sweep(path: SweepPath):
    """Delete a sweep with its trials and their learning curves, checkpoints and weights,
    and mark its MLflow runs (the parent and every trial's) deleted (later, if MLflow is
    down: nothing is lost). A running sweep is cancelled first: queued trials never
    start, running ones stop at their next epoch. Another user's sweep is a 404."""
    svc = services()
    _sweep_or_404(path.sweep_id, spec=False)
    try:
        deletion.delete_sweep(db(), svc.dispatcher, svc.settings, path.sweep_id)
    except LookupError as err:
        raise APIError(404, f"no sweep {path.sweep_id}") from err
    return no_content()
