"""The HTTP API: ``create_app(settings=None)`` builds a Flask app (one per process)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, g, request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.errors import APIError, register_error_handlers
from services import tracking
from services.celery_app import Dispatcher
from services.config import Settings
from services.db import make_engine, make_session_factory


@dataclass
class Services:
    """What the views share: settings, the database and the dispatcher."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    dispatcher: Dispatcher


def create_app(settings: Settings | None = None, *, dispatcher: Dispatcher | None = None) -> Flask:
    """Build the API app from ``settings`` (default: the environment)."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.limits.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    engine = make_engine(settings.database_url)
    app.extensions["sweeplab"] = Services(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        dispatcher=dispatcher or Dispatcher(settings),
    )

    @app.teardown_appcontext
    def _close_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()

    register_error_handlers(app)
    from api import health, jobs, openapi, sweeps

    app.register_blueprint(health.bp)
    app.register_blueprint(jobs.bp, url_prefix="/api/v1")
    app.register_blueprint(sweeps.bp, url_prefix="/api/v1")
    app.register_blueprint(openapi.bp, url_prefix="/api/v1")
    return app


def services() -> Services:
    return current_app.extensions["sweeplab"]


def db() -> Session:
    """The request's session (closed at teardown; views commit)."""
    if "db_session" not in g:
        g.db_session = services().sessions()
    return g.db_session


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as inf
        raise ValueError(f"{text} is out of the range of a double")
    return value


def json_body() -> Any:
    """The request's JSON: 415 if not JSON, 413 if too big, 400 if malformed or NaN."""
    if not request.is_json:
        raise APIError(415, "send the body as application/json")
    raw = request.get_data(cache=True)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    # A chunked body (no Content-Length) is cut at the limit, not refused: a body
    # that fills the limit may have gone on, so it is refused here.
    chunked = request.content_length is None
    if limit is not None and (len(raw) >= limit if chunked else len(raw) > limit):
        raise APIError(413, f"request body larger than {limit} bytes")
    try:
        return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as err:
        raise APIError(400, f"malformed JSON: {err}", code="malformed_json") from err


def page_args() -> tuple[str | None, int]:
    """``cursor`` and ``limit`` (1..200, default 50) from the query string."""
    raw = request.args.get("limit", "50")
    if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= 200:
        raise APIError(400, "limit must be an integer from 1 to 200",
                       details=[{"loc": "limit", "msg": "integer from 1 to 200"}])  # fmt: skip
    return request.args.get("cursor") or None, int(raw)


def mlflow_links(kind: str, row: Any) -> Any:
    """``services.tracking.links_for_<kind>(settings, row)``; None when mirroring is off."""
    settings = services().settings
    if not settings.mlflow_tracking_uri:
        return None
    try:
        return getattr(tracking, f"links_for_{kind}")(settings, row)
    except Exception:  # a broken mirror must not break the API
        current_app.logger.exception("links_for_%s failed", kind)
        return None
