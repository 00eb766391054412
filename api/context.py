"""What the views share: the app's services, the request's session and body, and
the JSON rules (strict parsing, answers serialized by their models)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from flask import current_app, g, request, url_for
from flask.json.provider import DefaultJSONProvider
from flask.wrappers import Request, Response
from pydantic import BaseModel
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.errors import APIError
from services.auth import Principal
from services.celery_app import Dispatcher
from services.config import Settings
from services.mirror.links import links_for_job, links_for_sweep
from services.specs import MlflowLinks


@dataclass
class Services:
    """What the views share: settings, the database and the dispatcher.

    ``sessions`` write (BEGIN IMMEDIATE on SQLite); ``read_sessions`` only read
    (a deferred BEGIN: under WAL they never block a writer)."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    dispatcher: Dispatcher
    read_sessions: sessionmaker[Session]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as inf
        raise ValueError(f"{text} is out of the range of a double")
    return value


class StrictJSON(DefaultJSONProvider):
    """Request bodies are JSON as RFC 8259 has it: no NaN, no Infinity, no 1e400."""

    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return json.loads(s, parse_constant=_reject_constant, parse_float=_finite_float)
        except RecursionError as err:
            raise ValueError("nested too deeply") from err


class APIRequest(Request):
    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        if e is None:
            raise APIError(415, "send the body as application/json")
        raise APIError(400, f"malformed JSON: {e}", code="malformed_json") from e


def services() -> Services:
    return current_app.extensions["sweeplab"]


def principal() -> Principal:
    """Who the request acts for (set by ``api.auth.authenticate_request``)."""
    return g.principal


#: Requests that only read: their session never takes SQLite's write lock.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def db() -> Session:
    """The request's session (closed at teardown; views commit): a read session
    for GET and HEAD, a write session otherwise."""
    if "db_session" not in g:
        svc = services()
        read = request.method in READ_METHODS
        g.db_session = (svc.read_sessions if read else svc.sessions)()
    return g.db_session


def json_body() -> Any:
    """The request's JSON: 415 if not JSON, 413 if too big, 400 if malformed or NaN,
    422 if not an object. Parsed once: the framework's validation reads the cache."""
    if not request.is_json:
        raise APIError(415, "send the body as application/json")
    raw = request.get_data(cache=True)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    # A chunked body (no Content-Length) is cut at the limit, not refused: a body
    # that fills the limit may have gone on, so it is refused here.
    chunked = request.content_length is None
    if limit is not None and (len(raw) >= limit if chunked else len(raw) > limit):
        raise APIError(413, f"request body larger than {limit} bytes")
    data = request.get_json()
    if not isinstance(data, dict):
        raise APIError(
            422,
            "the body must be a JSON object",
            details=[{"loc": "", "msg": "expected a JSON object"}],
        )
    return data


def no_content() -> Response:
    """An empty 204 answer (no body, so no content type either)."""
    response = Response(status=204)
    del response.headers["Content-Type"]
    return response


def reply(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    """A response serialized by its model (which refuses undeclared fields), by
    pydantic's own JSON encoder (several times faster than dumping to a dict that
    ``json.dumps`` then walks again); non-finite floats become null."""
    body = model.model_dump_json()
    return Response(body, status=status, headers=headers, mimetype="application/json")


def link(endpoint: str, **values: str) -> str:
    """``url_for(endpoint, **values)`` for the links of every row of a page: the route's
    URL is built once per request with placeholders, then filled in (ids are hex, so
    nothing needs quoting); url_for itself costs ~25 us, four times a row."""
    templates = g.setdefault("url_templates", {})
    key = (endpoint, *sorted(values))
    template = templates.get(key)
    if template is None:
        placeholders: dict[str, Any] = {name: f"__{name}__" for name in values}
        template = url_for(endpoint, **placeholders)
        templates[key] = template
    for name, value in values.items():
        template = template.replace(f"__{name}__", value)
    return template


def mlflow_links(kind: str, row: Any) -> MlflowLinks | None:
    """The row's MLflow links; None when mirroring is off (or the mirror is broken)."""
    settings = services().settings
    if not settings.mlflow_tracking_uri:
        return None
    find = links_for_job if kind == "job" else links_for_sweep
    try:
        links = find(settings, row)
    except Exception:  # a broken mirror must not break the API
        current_app.logger.exception("links_for_%s failed", kind)
        return None
    return None if links is None else MlflowLinks.model_validate(links)
