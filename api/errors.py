"""One error format for every 4xx (and, should it ever happen, 5xx)."""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from flask import Flask, Response, jsonify, request
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

from services.auth import QuotaExceeded
from services.specs import SpecValidationError, validation_error
from services.submit import QueueUnavailable

log = logging.getLogger(__name__)

#: A refused body up to this size is read and dropped before the 413 goes out.
DRAIN_LIMIT = 16 * 2**20
#: Retry-After (seconds) of a 503 while the database or the broker is unreachable.
RETRY_AFTER_UNAVAILABLE = 5

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_active_jobs",
    500: "internal_error",
    503: "unavailable",
}


class APIError(Exception):
    """Raise from a view to answer ``status`` with the error JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message = status, message
        self.code = code or CODES.get(status, "error")
        self.details = details or []
        self.headers = headers or {}


def validation_failed(err: ValidationError) -> NoReturn:
    """flask-openapi3's callback for a request that fails its model.

    A body (JobCreate, SweepCreate) is a 422 whose details name the fields by
    dotted path; a query argument (models named ``...Query``) is a 400 naming it.
    """
    if not err.title.endswith("Query"):
        raise validation_error(err)
    details = [
        {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"].removeprefix("Value error, ")}
        for e in err.errors(include_url=False)
    ]
    raise APIError(400, details[0]["msg"], details=details)


def error_response(
    status: int, message: str, *, code: str | None = None, details: list[Any] | None = None
) -> tuple[Response, int]:
    body = {
        "code": code or CODES.get(status, "error"),
        "message": message,
        "details": details or [],
    }
    return jsonify(error=body), status


def drain_refused_body() -> None:
    """Read and drop what is left of a request body the app refused (413).

    A client such as urllib or requests sends the whole body before it reads
    the answer; a server that answers 413 and closes while the body is still
    coming makes that client fail with a broken pipe instead of showing the
    413. Like nginx's lingering close, read the rest first, up to
    ``DRAIN_LIMIT`` bytes: a declared length over it is not read (the client
    may then see a reset), and a body without a length is read only where the
    server ends the stream itself (gunicorn's ``wsgi.input_terminated``).
    """
    length = request.content_length
    if length is None and not request.environ.get("wsgi.input_terminated"):
        return
    left = DRAIN_LIMIT if length is None else length
    if left > DRAIN_LIMIT:
        return
    stream = request.environ.get("wsgi.input")
    if stream is None:
        return
    try:
        while left > 0:
            chunk = stream.read(min(65536, left))
            if not chunk:
                break
            left -= len(chunk)
    except (OSError, ValueError):
        pass  # the client went away: nothing left to answer


def database_unreachable(err: DBAPIError) -> bool:
    """Whether ``err`` says the database is away (down, restarting, a dropped
    connection), not that the statement is wrong."""
    return isinstance(err, OperationalError | InterfaceError) or bool(err.connection_invalidated)


def unavailable(message: str, code: str) -> tuple[Response, int]:
    """A 503 with Retry-After: the database or the broker is unreachable."""
    response, status = error_response(503, message, code=code)
    response.headers["Retry-After"] = str(RETRY_AFTER_UNAVAILABLE)
    return response, status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(APIError)
    def _api_error(err: APIError):
        if err.status in (401, 413):  # refused before the body was read: read it now
            drain_refused_body()
        response, status = error_response(
            err.status, err.message, code=err.code, details=err.details
        )
        response.headers.update(err.headers)
        return response, status

    @app.errorhandler(QueueUnavailable)
    def _queue_unavailable(err: QueueUnavailable):
        return unavailable(str(err), code="queue_unavailable")

    @app.errorhandler(DBAPIError)
    def _database_error(err: DBAPIError):
        if not database_unreachable(err):
            log.exception("unhandled database error")
            return error_response(500, "internal error")
        log.warning("the database is unavailable: %s", type(err.orig).__name__)
        return unavailable("the database is unavailable; try again shortly", "database_unavailable")

    @app.errorhandler(PoolTimeoutError)
    def _pool_timeout(_err: PoolTimeoutError):
        log.warning("no database connection free in the pool")
        return unavailable("the database is busy; try again shortly", "database_unavailable")

    @app.errorhandler(QuotaExceeded)
    def _quota(err: QuotaExceeded):
        response, status = error_response(429, str(err))
        response.headers["Retry-After"] = str(err.retry_after)
        return response, status

    @app.errorhandler(SpecValidationError)
    def _spec_error(err: SpecValidationError):
        return error_response(422, str(err), details=err.details)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        status = err.code or 500
        message = err.description or err.name
        if status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"request body larger than {limit} bytes"
            drain_refused_body()
        return error_response(status, message)

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal error")
