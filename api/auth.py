"""Bearer tokens on every /api/v1 route but health, readiness, the OpenAPI document
and its docs page; the request's principal for the views (``api.context.principal``)."""

from __future__ import annotations

from dataclasses import replace

from flask import current_app, g, request
from sqlalchemy.exc import DBAPIError

from api.context import READ_METHODS, db, services
from api.errors import APIError
from services.auth import LOCAL, RECENT, Principal, authenticate, record_use, use_due
from services.db.models import utcnow

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
    token = token.strip()
    RECENT.seconds = settings.auth_cache_seconds
    principal = RECENT.get(token)  # checked by this process a moment ago: no query
    if principal is None:
        session = db()
        principal = authenticate(session, token)
        if principal is None:
            raise APIError(401, "the token is not valid (unknown or revoked)", headers=CHALLENGE)
        session.commit()  # the view's reads start a fresh snapshot
        RECENT.put(token, principal)
    if use_due(principal):
        _record_use(principal)
        RECENT.put(token, replace(principal, last_used_at=utcnow()))
    g.principal = principal


def _record_use(principal: Principal) -> None:
    """Record the token's use (at most once a minute): in the request's own write
    transaction for a write, else in a short transaction of its own, so that a read
    request stays a read (it never takes SQLite's write lock for its whole length)."""
    assert principal.token_id is not None
    if request.method not in READ_METHODS:
        record_use(db(), principal.token_id)
        return
    try:
        with services().sessions() as session:
            record_use(session, principal.token_id)
            session.commit()
    except DBAPIError:  # bookkeeping: a busy database must not fail the read itself
        current_app.logger.warning("could not record the use of token %s", principal.token_id)
