"""`sweeplab token create|list|revoke`: API tokens, over HTTP (admins create them)."""

from __future__ import annotations

from typing import Annotated

import typer

from client.render import tokens_table
from client.shell import client, emit_json, out, say

token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="print the API's JSON only")]


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    user: Annotated[str, typer.Option(help="the token's user (created if new)")],
    admin: Annotated[bool, typer.Option("--admin", help="a new user is an admin")] = False,
    name: Annotated[str | None, typer.Option(help="what the token is for")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a token for a user (admins only); shown this once."""
    created = client(ctx).create_token(user, admin=admin, name=name)
    if as_json:
        emit_json(created)
        return
    out.print(created["token"], markup=False)
    say(f"token {created['id']} for {created.get('user')}: shown this once, keep it")


@token_app.command("list")
def token_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Your tokens (every one for an admin), never their secrets."""
    items = client(ctx).tokens()
    if as_json:
        emit_json({"items": items})
    else:
        out.print(tokens_table(items))


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, token_id: str, as_json: JsonFlag = False) -> None:
    """Revoke a token by its id."""
    revoked = client(ctx).revoke_token(token_id)
    if as_json:
        emit_json(revoked)
    else:
        out.print(f"token {revoked['id']} revoked at {revoked.get('revoked_at')}")
