"""/api/v1/lr-range-tests: start a learning-rate range test of a job spec, read it,
list them, draw its curve (``services.lr_range``)."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, url_for
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel

from api.auth import SECURITY
from api.context import db, link, principal, reply, services
from api.errors import APIError
from api.jobs import (
    IdempotencyHeader,
    bad_cursor,
    errors,
    idempotency_claim,
    iso_time,
    replay_named,
    replayed,
)
from api.params import PageQuery
from services import idempotency, lr_range
from services.db.models import RANGE_TEST_STATUSES, LrRangeTest
from services.db.pages import BadCursorError
from services.lr_range import start as lr_range_start
from services.lr_range.rows import FINISHED
from services.mirror.range_tests import links_for_range_test, range_test_title
from services.specs import (
    CurvePoint,
    MlflowLinks,
    RangeTestCreate,
    RangeTestLinks,
    RangeTestPage,
    RangeTestPublic,
    RangeTestSummary,
)

bp = APIBlueprint(
    "lr_range_tests", __name__, abp_tags=[Tag(name="lr-range-tests")], abp_security=SECURITY
)

PNG = {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}


class RangeTestPath(BaseModel):
    test_id: str


class RangeTestListQuery(PageQuery):
    KNOWN_STATUSES = RANGE_TEST_STATUSES


def _mlflow(test: LrRangeTest) -> MlflowLinks | None:
    settings = services().settings
    try:
        links = links_for_range_test(settings, test)
    except Exception:  # a broken mirror must not break the API
        current_app.logger.exception("links_for_range_test failed")
        return None
    return None if links is None else MlflowLinks.model_validate(links)


def _summary_fields(test: LrRangeTest) -> dict[str, Any]:
    result = test.result or {}
    return dict(
        id=test.id,
        name=test.name,
        status=test.status,
        min_lr=test.min_lr,
        max_lr=test.max_lr,
        steps=test.steps,
        smoothing=test.smoothing,
        diverge_factor=test.diverge_factor,
        steps_taken=len(result["losses"]) if "losses" in result else None,
        suggested_lr=test.suggested_lr,
        divergence_lr=test.divergence_lr,
        error=test.error,
        created_at=iso_time(test.created_at),
        started_at=iso_time(test.started_at),
        finished_at=iso_time(test.finished_at),
        seconds=test.seconds,
        links=RangeTestLinks(
            self=link("lr_range_tests.get_range_test", test_id=test.id),
            plot=link("lr_range_tests.get_range_test_plot", test_id=test.id),
        ),
        mlflow=_mlflow(test),
    )


def range_test_public(test: LrRangeTest) -> RangeTestPublic:
    """The test as the API shows it: its settings, reading and curve."""
    result = test.result or {}
    curve = None
    if "losses" in result:
        columns = (result["learning_rates"], result["losses"], result["smoothed_losses"])
        curve = [
            CurvePoint(step=i, lr=lr, loss=loss, smoothed_loss=s)
            for i, (lr, loss, s) in enumerate(zip(*columns, strict=True))
        ]
    return RangeTestPublic(
        **_summary_fields(test),
        spec=test.spec,
        experiment=test.experiment,
        min_loss_lr=result.get("min_loss_lr"),
        stopped_lr=result.get("diverged_lr"),
        interval=result.get("interval"),
        curve=curve,
    )


def _replay_test(claim: idempotency.Claim | None) -> Any:
    """The answer to a repeated request: its test as it is now, 202 (None: no replay)."""
    test = replay_named(claim, lambda test_id: lr_range.get_range_test(db(), test_id))
    if test is None:
        return None
    location = url_for("lr_range_tests.get_range_test", test_id=test.id)
    return reply(range_test_public(test), 202, replayed(location))


def _test_or_404(test_id: str) -> LrRangeTest:
    """The test, if the request's user may see it; another user's answers as a missing one."""
    test = lr_range.get_range_test(db(), test_id)
    if test is None or not principal().sees(test):
        raise APIError(404, f"no range test {test_id}")
    return test


@bp.post(
    "/lr-range-tests",
    operation_id="createRangeTest",
    summary="Start a learning-rate range test of a job spec",
    responses={202: RangeTestPublic, **errors(400, 413, 415, 422, 503)},
)
def create_range_test(body: RangeTestCreate, header: IdempotencyHeader):
    """Validate the job spec and the rates, store the test (yours) and queue it. With an
    ``Idempotency-Key`` header, the same key and body again answer the same test (202,
    ``Idempotent-Replayed: true``); another body, 422 ``idempotency_key_reused``."""
    svc = services()
    claim = idempotency_claim("lr_range_tests")
    if (answer := _replay_test(claim)) is not None:
        return answer
    limits = svc.settings.limits
    spec = lr_range_start.prepare_range_test(db(), body.spec, principal=principal(), limits=limits)
    lr_range_start.check_range_test_budget(spec, body.steps, limits)
    try:
        test = lr_range_start.start_range_test(
            db(),
            svc.dispatcher,
            spec=spec,
            owner_id=principal().user_id,
            settings=lr_range.RangeTestSettings(
                body.min_lr, body.max_lr, body.steps, body.smoothing, body.diverge_factor
            ),
            name=body.name or body.spec.name,
            experiment=body.experiment or body.spec.experiment,
            claim=claim,
        )
    except idempotency.KeyTaken:  # a racing request with the key committed first
        if (answer := _replay_test(claim)) is not None:
            return answer
        raise
    # the test as committed (a worker may be running it already: GET shows that)
    location = url_for("lr_range_tests.get_range_test", test_id=test.id)
    return reply(range_test_public(test), 202, {"Location": location})


@bp.get(
    "/lr-range-tests",
    operation_id="listRangeTests",
    summary="List range tests (newest first)",
    responses={200: RangeTestPage, **errors(400)},
)
def list_tests(query: RangeTestListQuery):
    """List your range tests, newest first, filtered by ``status``."""
    try:
        rows, next_cursor = lr_range.list_range_tests(
            db(),
            owner_id=principal().owner_filter,
            statuses=query.statuses(),
            cursor=query.cursor,
            limit=query.limit,
        )
    except BadCursorError as err:
        raise bad_cursor(err) from err
    items = [RangeTestSummary(**_summary_fields(t)) for t in rows]
    return reply(RangeTestPage(items=items, next_cursor=next_cursor))


@bp.get(
    "/lr-range-tests/<test_id>",
    operation_id="getRangeTest",
    summary="Show a range test: status, and once done its curve and suggested rate",
    responses={200: RangeTestPublic, **errors(404)},
)
def get_range_test(path: RangeTestPath):
    """Show one range test."""
    return reply(range_test_public(_test_or_404(path.test_id)))


@bp.get(
    "/lr-range-tests/<test_id>/plot.png",
    operation_id="getRangeTestPlot",
    summary="A range test's loss against the learning rate, as a PNG",
    responses={200: PNG, **errors(404, 409)},
)
def get_range_test_plot(path: RangeTestPath):
    """Draw the test's curve; 409 until it has succeeded."""
    from services.plots_lr import lr_range_png  # late: heavy (matplotlib), the first picture

    test = _test_or_404(path.test_id)
    if test.status not in FINISHED or not (test.result or {}).get("losses"):
        raise APIError(409, f"range test {test.id} has no curve ({test.status})", code="no_curve")
    png = lr_range_png(test.result or {}, title=range_test_title(test))
    return Response(png, mimetype="image/png", headers={"Cache-Control": "no-cache"})
