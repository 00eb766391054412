"""Bearer tokens on every /api/v1 route but health, readiness, the OpenAPI document
and its docs page; the request's principal for the views (``api.context.principal``)."""

from __future__ import annotations

from flask import g, request

from api.context import db, services
from api.errors import APIError
from services.auth import LOCAL, authenticate

#: Endpoints anyone may call: liveness, readiness, the document and its page.
PUBLIC_BLUEPRINTS = frozenset({"health", "docs"})
SECURITY_SCHEMES = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}]
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="sweeplab"'}


def authenticate_request() -> None:
    """A ``before_request`` hook: set ``g.principal`` or answer 401."""
    if request.endpoint is None or request.blueprint in PUBLIC_BLUEPRINTS:
        return  # no such route (the document is public: a 404 reveals nothing), or public
    settings = services().settings
    if not settings.auth:
        g.principal = LOCAL
        return
    scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise APIError(
            401,
            "this route needs a token: send Authorization: Bearer <token>",
            headers=CHALLENGE,
        )
    session = db()
    principal = authenticate(session, token.strip())
    if principal is None:
        raise APIError(401, "the token is not valid (unknown or revoked)", headers=CHALLENGE)
    session.commit()  # last_used_at
    g.principal = principal
