"""/api/v1/tokens and /api/v1/me: who you are; create (admin), list and revoke tokens."""

from __future__ import annotations

from flask import url_for
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field

from api.auth import SECURITY
from api.context import db, principal, reply
from api.errors import APIError
from api.jobs import errors
from services import auth

bp = APIBlueprint("tokens", __name__, abp_tags=[Tag(name="tokens")], abp_security=SECURITY)


class Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenCreate(Closed):
    user: str = Field(
        description="the token's user (created if new): 1-100 letters, digits or . _ @ -",
        min_length=1,
        max_length=100,
        pattern=auth.USER_NAME.pattern,
    )
    admin: bool = Field(
        False, description="make a new user an admin (an existing one keeps its role)"
    )
    name: str | None = Field(
        None, description="what the token is for", max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$"
    )


class TokenPublic(Closed):
    id: str
    user: str | None
    admin: bool
    name: str | None
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


class TokenCreated(TokenPublic):
    token: str = Field(description="the token itself: shown this once, stored only as a hash")


class TokenList(Closed):
    items: list[TokenPublic]


class Me(Closed):
    user: str
    admin: bool
    auth: bool = Field(description="false when the server runs with SWEEPLAB_AUTH=off")


class TokenPath(BaseModel):
    token_id: str


@bp.get("/me", operation_id="whoAmI", summary="Who this token is", responses={200: Me, **errors()})
def me():
    """The user the request's token belongs to."""
    who = principal()
    return reply(Me(user=who.name, admin=who.is_admin, auth=who.user_id is not None))


@bp.post(
    "/tokens",
    operation_id="createToken",
    summary="Create a token for a user (admin)",
    responses={201: TokenCreated, **errors(403, 413, 415, 422)},
)
def create_token(body: TokenCreate):
    """Create a token for ``user`` (a new user is created); admins only. The token is
    in the answer this once."""
    if not principal().is_admin:
        raise APIError(403, "only an admin creates tokens; ask yours for one")
    session = db()
    row, token = auth.issue_token(session, user=body.user, admin=body.admin, name=body.name)
    public = auth.token_public(session, row)
    session.commit()
    return reply(
        TokenCreated(**public, token=token), 201, {"Location": url_for("tokens.list_tokens")}
    )


@bp.get(
    "/tokens",
    operation_id="listTokens",
    summary="List tokens (yours; every one for an admin)",
    responses={200: TokenList, **errors()},
)
def list_tokens():
    """List tokens, newest first: yours, or everyone's for an admin. Secrets are never shown."""
    session = db()
    rows = auth.list_tokens(session, principal())
    return reply(TokenList(items=[TokenPublic(**auth.token_public(session, r)) for r in rows]))


@bp.delete(
    "/tokens/<token_id>",
    operation_id="revokeToken",
    summary="Revoke a token",
    responses={200: TokenPublic, **errors(404)},
)
def revoke_token(path: TokenPath):
    """Revoke a token (yours; any for an admin): it stops working at once."""
    session = db()
    try:
        row = auth.revoke_token(session, path.token_id, principal())
    except LookupError as err:
        raise APIError(404, f"no token {path.token_id}") from err
    public = auth.token_public(session, row)
    session.commit()
    return reply(TokenPublic(**public))
