"""Tokens for the tests: the API wants one on every /api/v1 route (services.auth)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from services.auth import issue_token


def new_token(sessions: sessionmaker[Session], user: str = "admin", *, admin: bool = True) -> str:
    """A fresh token for ``user`` (created if new; an admin unless told otherwise)."""
    with sessions() as session:
        _, token = issue_token(session, user=user, admin=admin, name="tests")
        session.commit()
    return token


def authorize(client: Any, token: str | None) -> Any:
    """Make a Flask test client send ``token`` with every request (None: no token)."""
    if token is None:
        client.environ_base.pop("HTTP_AUTHORIZATION", None)
    else:
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client
