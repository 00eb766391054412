"""One error format for every 4xx (and, should it ever happen, 5xx)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from services.specs import SpecValidationError

log = logging.getLogger(__name__)

CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    500: "internal_error",
    503: "unavailable",
}


class APIError(Exception):
    """Raise from a view to answer ``status`` with the error JSON."""

    def __init__(
        self, status: int, message: str, *, code: str | None = None,
        details: list[dict[str, str]] | None = None,
    ):  # fmt: skip
        super().__init__(message)
        self.status, self.message = status, message
        self.code = code or CODES.get(status, "error")
        self.details = details or []


def queue_unavailable(err: Exception) -> APIError:
    """The 503 for a submission whose message the broker did not take."""
    return APIError(
        503,
        f"the job queue is unavailable ({type(err).__name__}); try again",
        code="queue_unavailable",
    )


def error_response(
    status: int, message: str, *, code: str | None = None, details: list[Any] | None = None
) -> tuple[Response, int]:
    body = {
        "code": code or CODES.get(status, "error"),
        "message": message,
        "details": details or [],
    }
    return jsonify(error=body), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(APIError)
    def _api_error(err: APIError):
        return error_response(err.status, err.message, code=err.code, details=err.details)

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
        return error_response(status, message)

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal error")
