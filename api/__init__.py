"""The HTTP API: ``create_app(settings=None)`` builds a Flask app (one per process).

Routes are declared with flask-openapi3: a view's ``body``, ``query`` and
``path`` arguments are pydantic models that the framework validates and that
the OpenAPI document (``/api/v1/openapi.json``) is generated from. One
blueprint per resource (``health``, ``jobs``, ``sweeps``, ``openapi``); what
they share is in ``api.context``.
"""

from __future__ import annotations

from flask import current_app, g, request
from flask_openapi3 import Info

from api import (
    datasets,
    health,
    jobs,
    lr_range_tests,
    metrics,
    models,
    openapi,
    plots,
    sweeps,
    tokens,
)
from api.auth import SECURITY_SCHEMES, authenticate_request
from api.context import APIRequest, Services, StrictJSON, json_body, services
from api.errors import register_error_handlers, validation_failed
from api.openapi import API_PREFIX, SweeplabAPI
from services.celery_app import Dispatcher
from services.config import Settings
from services.db import make_engine, make_session_factory
from services.specs import LIMITS_IN_FORCE, ErrorResponse


def create_app(
    settings: Settings | None = None, *, dispatcher: Dispatcher | None = None
) -> SweeplabAPI:
    """Build the API app from ``settings`` (default: the environment)."""
    settings = settings or Settings.from_env()
    app = SweeplabAPI(
        __name__,
        info=Info(
            title="sweeplab",
            version="1",
            description=(
                "Train feed-forward networks with sweeplab's NumPy trainer: jobs and sweeps."
            ),
        ),
        validation_error_status=422,
        validation_error_model=ErrorResponse,
        validation_error_callback=validation_failed,
        security_schemes=SECURITY_SCHEMES,  # type: ignore[arg-type]
        doc_ui=False,  # api.openapi serves the document and the reference page
        static_folder=None,
    )
    app.request_class = APIRequest
    app.json = StrictJSON(app)
    app.config["MAX_CONTENT_LENGTH"] = settings.limits.max_body_bytes
    engine = make_engine(settings.database_url)
    app.extensions["sweeplab"] = Services(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        dispatcher=dispatcher or Dispatcher(settings),
        read_sessions=make_session_factory(engine, read=True),
    )
    metrics.init_app(app)  # first: a refused request is timed too
    app.before_request(authenticate_request)
    app.before_request(_before_request)
    app.teardown_request(_teardown_request)

    @app.teardown_appcontext
    def _close_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()

    register_error_handlers(app)
    app.register_api(health.bp)
    app.register_api(jobs.bp, url_prefix=API_PREFIX)
    app.register_api(sweeps.bp, url_prefix=API_PREFIX)
    app.register_api(datasets.bp, url_prefix=API_PREFIX)
    app.register_api(tokens.bp, url_prefix=API_PREFIX)
    app.register_api(openapi.bp, url_prefix=API_PREFIX)
    app.register_api(plots.bp, url_prefix=API_PREFIX)
    app.register_api(lr_range_tests.bp, url_prefix=API_PREFIX)
    app.register_api(models.bp, url_prefix=API_PREFIX)
    app.register_api(metrics.bp)
    return app


def _before_request() -> None:
    # Bodies are validated by flask-openapi3 before the view runs, without a
    # pydantic context: the app's limits reach the spec models this way.
    g.limits_token = LIMITS_IN_FORCE.set(services().settings.limits)
    view = current_app.view_functions.get(request.endpoint or "")
    if view is not None and "body" in getattr(view, "__annotations__", {}):
        json_body()


def _teardown_request(_exc: BaseException | None) -> None:
    token = g.pop("limits_token", None)
    if token is not None:
        LIMITS_IN_FORCE.reset(token)
